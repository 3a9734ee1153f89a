"""Jointly learned generators: the sign of each objective, the gradient paths, the schedule."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import Tensor, nn

from syn2co.generators import (
    ConvGenerator,
    HardSampleGenerator,
    ImageGenerator,
    PairGenerator,
    discriminator_loss,
    encoder_inputs,
    feature_matching_loss,
    frozen,
    generator_adversarial_loss,
    generator_step,
    hard_sample_loss,
    in_batch_info_nce,
    pair_similarity,
    pair_similarity_schedule,
    positive_pair_loss,
    scale_grad,
    shared_negatives,
)
from syn2co.losses import info_nce


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread (and do not fight the other test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp_generator(latent: int = 8, side: int = 4) -> nn.Module:
    """A cheap image generator for training tests: latents (B, Z) -> images (B, 3, side, side)."""
    return nn.Sequential(
        nn.Linear(latent, 32),
        nn.Tanh(),
        nn.Linear(32, 3 * side * side),
        nn.Unflatten(1, (3, side, side)),
    )


def linear_encoder(side: int = 4, dim: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, dim))


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- the signs of the objectives


def test_hard_sample_steps_raise_the_encoders_loss_on_generated_samples(one_thread: None) -> None:
    torch.manual_seed(0)
    gen = HardSampleGenerator(mlp_generator(), latent_dim=8)
    encoder = linear_encoder()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    z = gen.latents(64, generator=torch.Generator().manual_seed(1))
    noise = rand(2, 64, 3, 4, 4, seed=2) * 0.3

    def encoder_loss() -> float:
        with torch.no_grad():
            x = gen(z)
            return in_batch_info_nce(encoder(x + noise[0]), encoder(x + noise[1])).item()

    def objective() -> Tensor:
        x = gen(z)
        return hard_sample_loss(encoder(x + noise[0]), encoder(x + noise[1]), fidelity_weight=0.0)

    before = encoder_loss()
    for _ in range(10):
        generator_step(objective, opt, frozen_modules=encoder)
    after = encoder_loss()
    assert after > before + 0.5, (before, after)


def test_hard_sample_loss_is_the_negated_contrastive_loss_plus_weighted_fidelity() -> None:
    a, b, real = rand(8, 5, seed=1), rand(8, 5, seed=2), rand(20, 5, seed=3)
    logits = rand(8, seed=4)
    nce = in_batch_info_nce(a, b, temperature=0.3)
    fid = feature_matching_loss(torch.cat([a, b]), real)
    adv = generator_adversarial_loss(logits)
    got = hard_sample_loss(
        a,
        b,
        temperature=0.3,
        real_features=real,
        discriminator_logits=logits,
        contrastive_weight=2.0,
        fidelity_weight=0.5,
        adversarial_weight=0.25,
    )
    torch.testing.assert_close(got, -2.0 * nce + 0.5 * fid + 0.25 * adv)
    torch.testing.assert_close(hard_sample_loss(a, b, temperature=0.3), -nce)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), target=st.floats(-0.95, 0.95))
def test_pair_loss_moves_the_similarity_towards_the_target_from_both_sides(
    seed: int, target: float
) -> None:
    """The mean similarity moves towards the target; with per_pair, every pair's does."""
    for per_pair in (False, True):
        a = rand(6, 8, seed=seed).requires_grad_()
        b = rand(6, 8, seed=seed + 1).requires_grad_()
        before = F.cosine_similarity(a, b).detach()
        positive_pair_loss(a, b, target, per_pair=per_pair).backward()
        assert a.grad is not None and b.grad is not None
        with torch.no_grad():
            after = F.cosine_similarity(a - 1e-3 * a.grad, b - 1e-3 * b.grad)
        if per_pair:
            far = (before - target).abs() > 0.02
            assert ((after - target).abs() < (before - target).abs())[far].all()
            assert ((after - before) * (target - before) > 0)[far].all()
        elif abs(before.mean() - target) > 0.02:
            assert abs(after.mean() - target) < abs(before.mean() - target)
            assert (after.mean() - before.mean()) * (target - before.mean()) > 0


@pytest.mark.parametrize("target", [1.0, -0.5])
def test_pair_generator_steps_follow_a_target_above_or_below(
    target: float, one_thread: None
) -> None:
    torch.manual_seed(0)
    pairs = PairGenerator(mlp_generator(), latent_dim=8, spread=0.5)
    encoder = linear_encoder()
    opt = torch.optim.Adam(pairs.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)

    def measure() -> float:
        with torch.no_grad():
            a, b = pairs.sample(256, generator=torch.Generator().manual_seed(9))
            return pair_similarity(encoder(a), encoder(b)).item()

    def objective() -> Tensor:
        a, b = pairs.sample(64, generator=rng)
        return positive_pair_loss(encoder(a), encoder(b), target)

    before = measure()
    for _ in range(20):
        generator_step(objective, opt, frozen_modules=encoder)
    after = measure()
    assert abs(after - target) < abs(before - target) - 0.02, (before, after)


def test_positive_pair_similarity_follows_its_schedule(one_thread: None) -> None:
    """A tiny pair generator under a fixed random linear encoder tracks the decreasing target."""
    torch.manual_seed(0)
    pairs = PairGenerator(mlp_generator(), latent_dim=8, spread=0.3)
    encoder = linear_encoder(seed=1)
    opt = torch.optim.Adam(pairs.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(1)
    total = 300
    measured: dict[int, tuple[float, float]] = {}
    for step in range(total + 1):
        target = pair_similarity_schedule(step, total, start=0.9, end=0.5, kind="cosine")
        if step in (100, 150, 200, 250, 300):
            with torch.no_grad():
                a, b = pairs.sample(512, generator=torch.Generator().manual_seed(99))
                measured[step] = (target, pair_similarity(encoder(a), encoder(b)).item())

        def objective(target: float = target) -> Tensor:
            a, b = pairs.sample(64, generator=rng)
            return positive_pair_loss(encoder(a), encoder(b), target)

        generator_step(objective, opt, frozen_modules=encoder)
    for step, (target, similarity) in measured.items():
        assert abs(similarity - target) < 0.1, (step, target, similarity)
    assert measured[300][1] < measured[100][1] - 0.2  # it really went down with the target


# ---------------------------------------------------------------------------- gradient paths


class BNEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16))
        self.head = nn.Linear(16, 8)
        self.head.bias.requires_grad_(False)  # a flag that must come back as it was

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.body(x))
        return out


@pytest.mark.parametrize("freeze", [True, False])
def test_generator_step_gives_the_encoder_no_gradient(freeze: bool) -> None:
    torch.manual_seed(0)
    gen = HardSampleGenerator(mlp_generator(), latent_dim=8)
    encoder = BNEncoder().train()
    flags = {n: p.requires_grad for n, p in encoder.named_parameters()}
    before, gen_before = snapshot(encoder), snapshot(gen)
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)

    def objective() -> Tensor:
        x = gen.sample(16)
        return hard_sample_loss(encoder(x), encoder(x.flip(0)), real_features=rand(16, 8))

    generator_step(objective, opt, frozen_modules=encoder if freeze else (), restore_buffers=True)
    assert all(p.grad is None for p in encoder.parameters())
    assert {n: p.requires_grad for n, p in encoder.named_parameters()} == flags
    after = snapshot(encoder)
    if freeze:  # the BatchNorm statistics restored as well
        assert all(torch.equal(before[k], after[k]) for k in before)
    else:
        assert all(torch.equal(p, before[n]) for n, p in encoder.named_parameters())
    assert all(p.grad is not None for p in gen.parameters())
    assert any(not torch.equal(v, gen_before[k]) for k, v in snapshot(gen).items())


def test_frozen_restores_flags_after_an_exception_and_keeps_the_input_gradient() -> None:
    encoder = BNEncoder()
    flags = [p.requires_grad for p in encoder.parameters()]
    x = rand(4, 3, 4, 4).requires_grad_()
    inside: list[bool] = []

    def run() -> None:
        with frozen(encoder, encoder.head, restore_buffers=True):
            inside.extend(p.requires_grad for p in encoder.parameters())
            encoder(x).sum().backward()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run()
    assert inside and not any(inside)
    assert [p.requires_grad for p in encoder.parameters()] == flags
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())


def test_encoder_step_gives_the_generators_no_gradient() -> None:
    torch.manual_seed(0)
    samples = HardSampleGenerator(mlp_generator(), latent_dim=8)
    pairs = PairGenerator(mlp_generator(), latent_dim=8)
    encoder = linear_encoder()
    real_a, real_b = rand(8, 3, 4, 4, seed=1), rand(8, 3, 4, 4, seed=2)
    x = samples.sample(4)
    pa, pb = pairs.sample(3)
    view_a, view_b = encoder_inputs(real_a, real_b, samples=(x + 0.1, x - 0.1), pairs=(pa, pb))
    assert view_a.shape == (15, 3, 4, 4) and not view_a.requires_grad
    torch.testing.assert_close(view_a[:8], real_a)
    torch.testing.assert_close(view_b[12:], pb.detach())
    q, k = encoder(view_a), encoder(view_b)
    extra = shared_negatives(encoder(samples.sample(5)), 15)
    loss = info_nce(q, k, extra_negatives=extra)
    loss.backward()
    assert all(p.grad is None for p in samples.parameters())
    assert all(p.grad is None for p in pairs.parameters())
    assert all(p.grad is not None for p in encoder.parameters())


def test_generator_step_refuses_a_frozen_module_it_would_train() -> None:
    gen = HardSampleGenerator(mlp_generator(), latent_dim=8)
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="frozen_modules"):
        generator_step(lambda: gen.sample(2).sum(), opt, frozen_modules=gen)
    with pytest.raises(ValueError, match="objective"):
        generator_step(lambda: gen.sample(2).detach().sum(), opt)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(-4.0, 4.0), seed=st.integers(0, 1000))
def test_scale_grad_is_identity_forward_and_scales_the_gradient_exactly(
    scale: float, seed: int
) -> None:
    x = rand(3, 5, seed=seed).requires_grad_()
    w = rand(3, 5, seed=seed + 1)
    y = scale_grad(x, scale)
    assert torch.equal(y, x)
    (y.pow(2) * w).sum().backward()
    assert x.grad is not None
    plain = x.detach().clone().requires_grad_()
    (plain.pow(2) * w).sum().backward()
    assert plain.grad is not None
    assert torch.equal(x.grad, plain.grad * scale)


def test_scale_grad_minus_one_reverses_the_gradient_through_a_network() -> None:
    torch.manual_seed(0)
    g, e = nn.Linear(4, 6), nn.Linear(6, 2)
    z = rand(5, 4)
    e(g(z)).pow(2).sum().backward()
    plain = {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}
    g.zero_grad(), e.zero_grad()
    e(scale_grad(g(z), -1.0)).pow(2).sum().backward()
    for n, p in g.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(p.grad, -plain[n], rtol=0, atol=0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in e.parameters())


# -------------------------------------------------------------------------------- generators


@pytest.mark.parametrize("size", [16, 32, 64])
def test_conv_generator_shapes_range_and_determinism(size: int) -> None:
    torch.manual_seed(0)
    g = ConvGenerator(8, size, channels=3, width=4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(5)) * 50  # saturate the tanh
    x = g(z)
    assert x.shape == (3, 3, size, size)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    pixels = x * std[:, None, None] + mean[:, None, None]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    z2 = torch.randn(3, 8, generator=torch.Generator().manual_seed(5)) * 50
    assert torch.equal(g(z2), x)
    # GroupNorm: a sample does not depend on the rest of its batch
    torch.testing.assert_close(g(z[:1]), x[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("size", "base"), [(4, 4), (8, 4), (96, 6), (224, 7), (50, 25)])
def test_conv_generator_grows_from_the_smallest_base_grid(size: int, base: int) -> None:
    g = ConvGenerator(4, size, channels=1, width=2)
    assert g.base_size == base
    assert g(torch.zeros(1, 4)).shape == (1, 1, size, size)


def test_default_normalisation_gives_minus_one_to_one_and_is_an_image_generator() -> None:
    g = ConvGenerator(4, 8, width=4)
    x = g(torch.randn(16, 4) * 100)
    assert x.min() >= -1 and x.max() <= 1
    assert isinstance(g, ImageGenerator)
    assert isinstance(nn.Linear(2, 2), ImageGenerator)  # any module qualifies
    assert set(g.state_dict()) == {k for k in g.state_dict() if not k.startswith(("mean", "std"))}


def test_pair_generator_designs() -> None:
    torch.manual_seed(0)
    g = ConvGenerator(6, 8, width=4)
    shared = PairGenerator(g, spread=0.4)
    assert isinstance(shared.spread, nn.Parameter)
    base, e_a, e_b = rand(3, 6, seed=1), rand(3, 6, seed=2), rand(3, 6, seed=3)
    za, zb = shared.codes(base, (e_a, e_b))
    torch.testing.assert_close(za, base + 0.4 * e_a)
    torch.testing.assert_close(zb, base + 0.4 * e_b)
    xa, xb = shared(base, (e_a, e_b))
    torch.testing.assert_close(xa, g(za), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(xa, xb)
    # Two generators starting identical share the base code: identical images, similarity 1.
    twin = PairGenerator(g, copy.deepcopy(g), learn_spread=False)
    assert not isinstance(twin.spread, nn.Parameter) and float(twin.spread) == 0.0
    ta, tb = twin.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ta, tb)
    assert "spread" in twin.state_dict() and "second.project.weight" in twin.state_dict()
    # ... and the pair loss gives the second generator its own gradient.
    positive_pair_loss(ta.flatten(1), tb.flatten(1), 0.5).backward()


def test_generator_holders_count_and_infer_the_latent_size() -> None:
    g = HardSampleGenerator(ConvGenerator(5, 8, width=4), batch_fraction=0.25)
    assert g.latent_dim == 5
    assert [g.count(b) for b in (0, 1, 8, 10, 64)] == [0, 1, 2, 3, 16]
    assert HardSampleGenerator(nn.Linear(3, 3), latent_dim=3, batch_fraction=0).count(10) == 0
    a = g.sample(4, generator=torch.Generator().manual_seed(0))
    b = g.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------ pure objectives


def test_pair_similarity_schedule_decreases_from_start_to_end() -> None:
    for kind in ("cosine", "linear"):
        values = [pair_similarity_schedule(s, 100, 0.9, 0.5, kind=kind) for s in range(0, 121, 10)]  # type: ignore[arg-type]
        assert values[0] == 0.9 and values[10] == values[-1] == 0.5
        assert all(x >= y for x, y in itertools.pairwise(values))
    assert pair_similarity_schedule(50, 100, kind="linear") == pytest.approx(0.7)
    assert pair_similarity_schedule(50, 100) == pytest.approx(0.7)  # cosine midpoint
    assert pair_similarity_schedule(25, 100) > pair_similarity_schedule(25, 100, kind="linear")


def ref_in_batch(a: Tensor, b: Tensor, tau: float) -> Tensor:
    a, b = F.normalize(a.double(), dim=-1), F.normalize(b.double(), dim=-1)
    logits = a @ b.T / tau
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@settings(max_examples=20, deadline=None)
@given(b=st.integers(2, 9), d=st.integers(1, 6), seed=st.integers(0, 1000), tau=st.floats(0.05, 2))
def test_in_batch_info_nce_matches_the_formula(b: int, d: int, seed: int, tau: float) -> None:
    x, y = rand(b, d, seed=seed), rand(b, d, seed=seed + 1)
    got = in_batch_info_nce(x, y, temperature=tau)
    torch.testing.assert_close(got.double(), ref_in_batch(x, y, tau), rtol=1e-4, atol=1e-4)


def test_in_batch_info_nce_sends_gradient_to_the_negatives() -> None:
    a, b = rand(4, 3, seed=1).requires_grad_(), rand(4, 3, seed=2).requires_grad_()
    # with the positives' direction held, only the negatives' gradient remains
    in_batch_info_nce(a, b).backward()
    assert a.grad is not None and b.grad is not None
    assert (a.grad.norm(dim=1) > 0).all() and (b.grad.norm(dim=1) > 0).all()
    assert math.isclose(
        in_batch_info_nce(torch.ones(5, 2), torch.ones(5, 2)).item(), math.log(5), rel_tol=1e-6
    )


def ref_feature_matching(x: Tensor, y: Tensor) -> Tensor:
    x, y = x.double().flatten(1), y.double().flatten(1)
    mean = (x.mean(0) - y.mean(0)).pow(2).mean()
    cov = (torch.cov(x.T, correction=1) - torch.cov(y.T, correction=1)).pow(2).mean()
    return mean + cov


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 7), m=st.integers(2, 7), f=st.integers(1, 24), seed=st.integers(0, 1000))
def test_feature_matching_matches_mean_and_covariance_in_both_branches(
    n: int, m: int, f: int, seed: int
) -> None:
    """F <= N + M forms the covariances; F > N + M goes through Gram matrices: same value."""
    x, y = rand(n, f, seed=seed) * 2 + 1, rand(m, f, seed=seed + 1)
    got = feature_matching_loss(x, y)
    torch.testing.assert_close(got.double(), ref_feature_matching(x, y), rtol=1e-4, atol=1e-5)


def test_feature_matching_of_images_and_its_gradient_path() -> None:
    fake = rand(6, 3, 4, 4, seed=1).requires_grad_()
    real = rand(9, 3, 4, 4, seed=2).requires_grad_()
    loss = feature_matching_loss(fake, real)
    torch.testing.assert_close(
        loss.double(), ref_feature_matching(fake.detach(), real.detach()), rtol=1e-4, atol=1e-6
    )
    loss.backward()
    assert fake.grad is not None and real.grad is None
    same = rand(32, 10, seed=3)
    assert feature_matching_loss(same, same).item() < 1e-10


def test_gan_losses_match_their_formulas() -> None:
    fake, real = rand(6, seed=1), rand(5, 1, seed=2)
    torch.testing.assert_close(
        generator_adversarial_loss(fake), -torch.log(torch.sigmoid(fake)).mean()
    )
    want = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(discriminator_loss(real, fake), want)


# ----------------------------------------------------------------------------- bad input

E = rand(4, 8)
G = ConvGenerator(4, 8, width=2)

BAD: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (lambda: in_batch_info_nce(E, E, temperature=0.0), ValueError, "temperature"),
    (lambda: in_batch_info_nce(E[:1], E[:1]), ValueError, "encoder_out_a.*B >= 2"),
    (lambda: in_batch_info_nce(E, rand(4, 7)), ValueError, "encoder_out_b"),
    (lambda: hard_sample_loss(E, E, fidelity_weight=-1.0), ValueError, "fidelity_weight"),
    (lambda: hard_sample_loss(E, E, contrastive_weight=-1.0), ValueError, "contrastive_weight"),
    (lambda: hard_sample_loss(E, E, adversarial_weight=-0.1), ValueError, "adversarial_weight"),
    (lambda: hard_sample_loss(E, E, fake_features=E), ValueError, "real_features"),
    (lambda: hard_sample_loss(E, E * float("nan")), ValueError, "encoder_out_b"),
    (lambda: positive_pair_loss(E, E, 1.5), ValueError, "target_similarity"),
    (lambda: positive_pair_loss(E, E, "high"), TypeError, "target_similarity"),
    (lambda: positive_pair_loss(E, E[:3], 0.5), ValueError, "encoder_out_b"),
    (lambda: positive_pair_loss(E[0], E[0], 0.5), ValueError, "encoder_out_a"),
    (lambda: pair_similarity_schedule(0, 10, start=1.2), ValueError, "start"),
    (lambda: pair_similarity_schedule(0, 10, end=-2), ValueError, "end"),
    (lambda: pair_similarity_schedule(0, 10, kind="step"), ValueError, "kind"),  # type: ignore[arg-type]
    (lambda: pair_similarity_schedule(-1, 10), ValueError, "step"),
    (lambda: feature_matching_loss(E, rand(4, 7)), ValueError, "real_features"),
    (lambda: feature_matching_loss(E[:1], E), ValueError, "fake_features.*at least 2"),
    (lambda: feature_matching_loss(E, E, mean_weight=-1), ValueError, "mean_weight"),
    (lambda: feature_matching_loss(E.long(), E), TypeError, "fake_features"),
    (lambda: generator_adversarial_loss(rand(2, 3)), ValueError, "fake_logits"),
    (lambda: scale_grad(E, float("inf")), ValueError, "scale"),
    (lambda: scale_grad([1.0], 2.0), TypeError, "x"),  # type: ignore[arg-type]
    (lambda: ConvGenerator(0, 8), ValueError, "latent_dim"),
    (lambda: ConvGenerator(4, 2), ValueError, "image_size"),
    (lambda: ConvGenerator(4, 8, std=0.0), ValueError, r"std\[0\]"),
    (lambda: ConvGenerator(4, 8, mean=(0.5, 0.5)), ValueError, "mean"),
    (lambda: G(rand(2, 5)), ValueError, "latent.*Z=4"),
    (lambda: HardSampleGenerator(lambda z: z), TypeError, "generator"),  # type: ignore[arg-type]
    (lambda: HardSampleGenerator(nn.Linear(3, 3)), ValueError, "latent_dim"),
    (lambda: HardSampleGenerator(G, batch_fraction=-0.1), ValueError, "batch_fraction"),
    (
        lambda: HardSampleGenerator(nn.Linear(3, 3), latent_dim=3).sample(2),
        ValueError,
        "generator: expected an image batch",
    ),
    (lambda: PairGenerator(G, spread=0.0), ValueError, "spread"),
    (lambda: PairGenerator(G, nn.Linear(4, 4)).sample(2), ValueError, "second"),
    (
        lambda: PairGenerator(G).codes(rand(2, 4), (rand(2, 4), rand(3, 4))),
        ValueError,
        r"noise\[1\]",
    ),
    (lambda: encoder_inputs(E, E, samples=(rand(2, 7), rand(2, 7))), ValueError, r"samples\[0\]"),
    (lambda: encoder_inputs(E, E, pairs=(rand(2, 8), rand(3, 8))), ValueError, r"pairs\[1\]"),
    (lambda: encoder_inputs(E, rand(4, 7)), ValueError, "view_b"),
    (lambda: shared_negatives(E, 0), ValueError, "batch_size"),
    (lambda: frozen(object()).__enter__(), TypeError, r"modules\[0\]"),  # type: ignore[arg-type]
    (lambda: generator_step(lambda: E.sum(), "adam"), TypeError, "optimizer"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_input_names_the_argument(
    call: Callable[[], Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()
