"""Properties of the hard pool and the six synthetic-negative strategies."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from syn2co import negatives as neg
from syn2co.negatives import (
    SYNCO_V1,
    SYNCO_V2,
    SYNCO_V2_CONFIG,
    NegativeSpec,
    add_noise,
    adversarial,
    extrapolate,
    hardest,
    hardest_indices,
    interpolate,
    mixup,
    mochi,
    perturb,
    positive_mask,
    synthesize,
)

STRATEGY_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "interpolated": interpolate,
    "extrapolated": extrapolate,
    "mixed": mixup,
    "noisy": add_noise,
    "perturbed": perturb,
    "adversarial": adversarial,
}


def unit(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_cosine(q: torch.Tensor, c: float, seed: int = 1) -> torch.Tensor:
    """Unit vectors (B, D) whose cosine with each row of q is exactly c."""
    r = unit(*q.shape, seed=seed, dtype=q.dtype)
    r = F.normalize(r - (r * q).sum(-1, keepdim=True) * q, dim=-1)
    return c * q + math.sqrt(1 - c * c) * r


# ---------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", list(STRATEGY_FNS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_strategy_contract(name: str, dtype: torch.dtype) -> None:
    q = unit(6, 32, dtype=dtype).requires_grad_()
    hard = unit(6, 10, 32, seed=1, dtype=dtype)
    out = STRATEGY_FNS[name](q, hard, 7, generator=gen())
    assert out.shape == (6, 7, 32)
    assert out.dtype == dtype and out.device == q.device
    assert not out.requires_grad and out.grad_fn is None
    norms = out.float().norm(dim=-1)
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2
    assert torch.allclose(norms, torch.ones_like(norms), atol=tol)


@pytest.mark.parametrize("name", list(STRATEGY_FNS))
def test_strategy_deterministic_for_a_generator(name: str) -> None:
    q, hard = unit(4, 16), unit(4, 9, 16, seed=1)
    fn = STRATEGY_FNS[name]
    a, b = fn(q, hard, 5, generator=gen(3)), fn(q, hard, 5, generator=gen(3))
    assert torch.equal(a, b)
    if name not in ("perturbed", "adversarial"):  # coefficients drawn: a new seed differs
        assert not torch.equal(a, fn(q, hard, 5, generator=gen(4)))


@pytest.mark.parametrize("name", list(STRATEGY_FNS))
def test_zero_count_gives_empty(name: str) -> None:
    out = STRATEGY_FNS[name](unit(3, 8), unit(3, 4, 8), 0)
    assert out.shape == (3, 0, 8)


@pytest.mark.parametrize("name", list(STRATEGY_FNS))
def test_unnormalised_inputs_are_normalised(name: str) -> None:
    q, hard = unit(4, 16), unit(4, 1, 16, seed=1)
    a = STRATEGY_FNS[name](q, hard, 3, generator=gen())
    b = STRATEGY_FNS[name](5 * q, 0.1 * hard, 3, generator=gen())
    assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------------------- exact formulas


def test_interpolate_exact() -> None:
    q, hard = unit(5, 12), unit(5, 1, 12, seed=1)
    out = interpolate(q, hard, 2, alpha=(0.3, 0.3))
    ref = F.normalize(0.3 * q + 0.7 * hard[:, 0], dim=-1)
    assert torch.allclose(out, ref[:, None].expand(-1, 2, -1), atol=1e-6)


def test_extrapolate_exact() -> None:
    q, hard = unit(5, 12), unit(5, 1, 12, seed=1)
    out = extrapolate(q, hard, 2, beta=(1.25, 1.25))
    ref = F.normalize(q + 1.25 * (hard[:, 0] - q), dim=-1)
    assert torch.allclose(out, ref[:, None].expand(-1, 2, -1), atol=1e-6)


def test_mixup_exact_with_two_copies() -> None:
    # Pool of one entry: both picks are n, so any weight gives n itself.
    q, hard = unit(3, 12), unit(3, 1, 12, seed=1)
    assert torch.allclose(mixup(q, hard, 4, generator=gen()), hard.expand(-1, 4, -1), atol=1e-6)


def test_noise_exact_for_zero_sigma() -> None:
    q, hard = unit(3, 12), unit(3, 1, 12, seed=1)
    assert torch.allclose(add_noise(q, hard, 2, sigma=0.0), hard.expand(-1, 2, -1), atol=1e-6)


def test_perturb_is_one_autograd_step_on_q_dot_n() -> None:
    q, hard = unit(5, 16), unit(5, 1, 16, seed=1)
    n = hard[:, 0].clone().requires_grad_()
    (grad,) = torch.autograd.grad((q * n).sum(), n)
    ref = F.normalize(n.detach() + 0.05 * grad, dim=-1)
    out = perturb(q, hard, 3, delta=0.05)
    assert torch.allclose(out, ref[:, None].expand(-1, 3, -1), atol=1e-6)


def infonce_reference(
    q: torch.Tensor, k: torch.Tensor, bank: torch.Tensor, s: torch.Tensor, tau: float
) -> torch.Tensor:
    """Plain InfoNCE of one query (D,) with s (D,) appended to its negatives."""
    logits = torch.cat([(q @ k)[None], bank @ q, (s @ q)[None]]) / tau
    return -(logits[0] - torch.logsumexp(logits, 0))


def test_adversarial_one_step_is_signed_gradient_step() -> None:
    q, hard = unit(4, 16), unit(4, 1, 16, seed=1)
    n = hard[:, 0].clone().requires_grad_()
    (grad,) = torch.autograd.grad((q * n).sum(), n)
    ref = F.normalize(n.detach() + 0.03 * grad.sign(), dim=-1)
    out = adversarial(q, hard, 2, eta=0.03)
    assert torch.allclose(out, ref[:, None].expand(-1, 2, -1), atol=1e-6)


@pytest.mark.parametrize(("steps", "tau"), [(1, 0.2), (3, 0.07), (5, 1.0)])
def test_adversarial_steps_follow_infonce_gradient_signs(steps: int, tau: float) -> None:
    # Reference: iterate autograd on the InfoNCE loss of q with a random positive and bank,
    # take the sign, step, renormalise.
    d = 16
    q, hard = unit(3, d), unit(3, 1, d, seed=1)
    k, bank = unit(3, d, seed=2), unit(20, d, seed=3)
    refs = []
    for i in range(3):
        s = hard[i, 0].clone()
        for _ in range(steps):
            s.requires_grad_()
            (g,) = torch.autograd.grad(infonce_reference(q[i], k[i], bank, s, tau), s)
            s = F.normalize(s.detach() + 0.05 * g.sign(), dim=0)
        refs.append(s)
    out = adversarial(q, hard, 1, eta=0.05, steps=steps)
    assert torch.allclose(out[:, 0], torch.stack(refs), atol=1e-5)


# --------------------------------------------------------------------- coefficients in range


def ratio(out: torch.Tensor) -> torch.Tensor:
    """For outputs in the plane of e1, e2: the e1 weight of a normalised (w, 1-w) mix."""
    return out[..., 0] / (out[..., 0] + out[..., 1])


E1, E2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])


@given(lo=st.floats(0, 1), width=st.floats(0, 1), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_interpolate_coefficients_in_range(lo: float, width: float, seed: int) -> None:
    hi = min(1.0, lo + width)
    out = interpolate(E1[None], E2[None, None], 200, generator=gen(seed), alpha=(lo, hi))
    a = ratio(out[0])
    assert a.min() >= lo - 1e-5 and a.max() <= hi + 1e-5


def test_coefficients_cover_their_default_range() -> None:
    a = ratio(interpolate(E1[None], E2[None, None], 4000, generator=gen())[0])
    assert a.min() < 0.01 and a.max() > 0.49 and abs(a.mean() - 0.25) < 0.01
    # q + b(n - q) = (1 - b, b): the e2 weight over the sum of weights is b.
    out = extrapolate(E1[None], E2[None, None], 4000, generator=gen())[0]
    b = out[:, 1] / (out[:, 0] + out[:, 1])
    assert b.min() >= 1 - 1e-5 and b.max() <= 1.5 + 1e-5
    assert b.min() < 1.01 and b.max() > 1.49 and abs(b.mean() - 1.25) < 0.01


def test_mixup_coefficients_and_picks() -> None:
    hard = torch.stack([E1, E2])[None]  # pool {e1, e2}
    w = ratio(mixup(E1[None], hard, 4000, generator=gen(), gamma=(0.2, 0.3))[0])
    in_lo = (w >= 0.2 - 1e-5) & (w <= 0.3 + 1e-5)  # (n, n') = (e1, e2)
    in_hi = (w >= 0.7 - 1e-5) & (w <= 0.8 + 1e-5)  # (e2, e1)
    same = (w < 1e-6) | (w > 1 - 1e-6)  # both picks equal
    assert bool((in_lo | in_hi | same).all())
    # Independent uniform picks with replacement: each case about 1/4, 1/4, 1/2.
    for frac, want in ((in_lo, 0.25), (in_hi, 0.25), (same, 0.5)):
        assert abs(frac.float().mean().item() - want) < 0.03


def test_picks_are_uniform_with_replacement_over_the_pool() -> None:
    # Pool of 4 orthogonal directions, noise-free: each output is one pool entry.
    pool = torch.eye(4)[None]
    out = add_noise(unit(1, 4), pool, 8000, generator=gen(), sigma=0.0)[0]
    which = out.argmax(dim=1)
    assert torch.allclose(out.max(dim=1).values, torch.ones(8000))
    freq = torch.bincount(which, minlength=4).float() / 8000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 6))
@settings(max_examples=20, deadline=None)
def test_every_sample_comes_from_its_own_pool(seed: int, n: int) -> None:
    # With fixed coefficients each output must equal the formula applied to some pool entry
    # of the same query (never another query's pool).
    q, hard = unit(3, 8, seed=seed), unit(3, n, 8, seed=seed + 1)
    out = interpolate(q, hard, 10, generator=gen(seed), alpha=(0.2, 0.2))
    candidates = F.normalize(0.2 * q[:, None] + 0.8 * hard, dim=-1)  # (B, N, D)
    dist = torch.cdist(out, candidates)  # (B, count, N)
    assert float(dist.min(dim=2).values.max()) < 1e-5


# ------------------------------------------------------------------------ hardness ordering


def cosines(q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bd,bmd->bm", q.double(), out.double())


@pytest.mark.parametrize("c", [-0.5, 0.0, 0.5, 0.9])
def test_interpolate_and_perturb_raise_extrapolate_lowers(c: float) -> None:
    q = unit(64, 128)
    hard = with_cosine(q, c)[:, None]
    up_i = cosines(q, interpolate(q, hard, 16, generator=gen()))
    up_p = cosines(q, perturb(q, hard, 16))
    down = cosines(q, extrapolate(q, hard, 16, generator=gen()))
    assert bool((up_i >= c - 1e-6).all()) and bool((up_p > c).all())
    assert bool((down <= c + 1e-6).all()) and float(down.mean()) < c - 0.01


def test_adversarial_raises_cosine_and_more_steps_raise_it_more() -> None:
    q = unit(256, 128)
    hard = with_cosine(q, 0.3)[:, None]
    one = cosines(q, adversarial(q, hard, 1)).mean()
    five = cosines(q, adversarial(q, hard, 1, steps=5)).mean()
    assert 0.3 < float(one) < float(five)


def test_noise_with_sigma_01_makes_negatives_easier_at_d256() -> None:
    # Cosine 0.5 -> about 0.26 (||n + sigma eps|| ~ sqrt(1 + sigma^2 D)).
    q = unit(128, 256)
    hard = with_cosine(q, 0.5)[:, None]
    c = cosines(q, add_noise(q, hard, 64, generator=gen(), sigma=0.1)).mean()
    assert abs(float(c) - 0.5 / math.sqrt(1 + 0.01 * 256)) < 0.01


# ----------------------------------------------------------------------------- hard pool


def brute_force_topk(
    q: torch.Tensor, bank: torch.Tensor, n: int, exclude: torch.Tensor | None
) -> list[set[int]]:
    out = []
    for i in range(q.shape[0]):
        scores = []
        for j in range(bank.shape[0]):
            if exclude is not None and bool(exclude[i, j]):
                continue
            cos = float(q[i].double() @ bank[j].double()) / float(
                bank[j].double().norm() * q[i].double().norm()
            )
            scores.append((cos, j))
        out.append({j for _, j in sorted(scores, reverse=True)[:n]})
    return out


@given(seed=st.integers(0, 2**16), k=st.integers(2, 40), frac=st.floats(0.0, 0.6))
@settings(max_examples=40, deadline=None)
def test_hardest_matches_brute_force_and_never_returns_excluded(
    seed: int, k: int, frac: float
) -> None:
    q = torch.randn(5, 6, generator=gen(seed))
    bank = torch.randn(k, 6, generator=gen(seed + 1)) * 3  # unnormalised on purpose
    exclude = torch.rand(5, k, generator=gen(seed + 2)) < frac
    available = k - int(exclude.sum(1).max())
    if available < 1:
        return
    n = max(1, available // 2)
    idx = hardest_indices(q, bank, n, exclude=exclude)
    assert not bool(exclude.gather(1, idx).any())
    assert [set(r.tolist()) for r in idx] == brute_force_topk(q, bank, n, exclude)
    pool = hardest(q, bank, n, exclude=exclude)
    assert torch.allclose(pool, F.normalize(bank[idx], dim=-1), atol=1e-6)


def test_hardest_sorted_hardest_first_and_detached() -> None:
    q, bank = unit(4, 8).requires_grad_(), unit(50, 8, seed=1).requires_grad_()
    pool = hardest(q, bank, 10)
    assert not pool.requires_grad
    c = torch.einsum("bd,bnd->bn", q.detach(), pool)
    assert bool((c[:, :-1] >= c[:, 1:] - 1e-6).all())


def test_hardest_with_precomputed_similarity_and_per_query_bank() -> None:
    q, bank = unit(4, 8), unit(30, 8, seed=1)
    ref = hardest_indices(q, bank, 5)
    logits = neg.similarity(q, bank) / 0.2  # any positive scale gives the same pool
    assert torch.equal(hardest_indices(q, bank, 5, similarity=logits), ref)
    per_query = bank[None].expand(4, -1, -1).contiguous()
    assert torch.equal(hardest_indices(q, per_query, 5), ref)
    assert torch.allclose(hardest(q, per_query, 5), hardest(q, bank, 5))


def test_positive_mask_excludes_the_positive_of_in_batch_keys() -> None:
    mask = positive_mask(3, world_size=2, rank=1)
    assert mask.shape == (3, 6) and mask.sum() == 3
    assert mask[torch.arange(3), torch.arange(3) + 3].all()
    # With keys equal to the queries, the hardest in-batch entry would be the positive itself.
    keys = unit(6, 8)
    q = keys[3:]
    assert torch.equal(hardest_indices(q, keys, 1)[:, 0], torch.arange(3, 6))
    assert not bool(mask.gather(1, hardest_indices(q, keys, 5, exclude=mask)).any())


# ----------------------------------------------------------------------------- synthesize


def test_synthesize_equals_the_six_functions_in_order() -> None:
    q, bank = unit(5, 16), unit(200, 16, seed=1)
    spec = NegativeSpec(
        n_hard=20,
        interpolated=3,
        extrapolated=2,
        mixed=4,
        noisy=1,
        perturbed=2,
        adversarial=3,
        adversarial_steps=2,
        sigma=0.05,
    )
    g = gen(7)
    pool = hardest(q, bank, spec.n_hard)
    parts = [
        interpolate(q, pool, 3, generator=g, alpha=spec.alpha),
        extrapolate(q, pool, 2, generator=g, beta=spec.beta),
        mixup(q, pool, 4, generator=g, gamma=spec.gamma),
        add_noise(q, pool, 1, generator=g, sigma=spec.sigma),
        perturb(q, pool, 2, generator=g, delta=spec.delta),
        adversarial(q, pool, 3, generator=g, eta=spec.eta, steps=2),
    ]
    out = synthesize(q, bank, spec, generator=gen(7))
    assert out.shape == (5, spec.total, 16)
    assert torch.allclose(out, torch.cat(parts, dim=1), atol=1e-6)
    for name, where in spec.slices().items():
        assert out[:, where].shape[1] == spec.counts[name]


def test_synthesize_reproduces_pinned_values() -> None:
    # Values written down from an earlier release: a change in the order in which the strategies
    # consume the generator, or in their arithmetic, changes them (by ~0.1, not ~1e-7).
    q, bank = unit(4, 16), unit(64, 16, seed=1)
    spec = NegativeSpec(
        n_hard=8,
        interpolated=2,
        extrapolated=2,
        mixed=2,
        noisy=2,
        perturbed=2,
        adversarial=2,
        adversarial_steps=2,
        sigma=0.1,
    )
    g = gen(5)
    out = synthesize(q, bank, spec, generator=g)
    first = [0.1705635, -0.3445761, 0.3980997, -0.2647508, -0.0501317, -0.1185401]
    first += [0.1860658, -0.2326809, 0.2089332, -0.2852907, -0.1531522, -0.1531522]
    torch.testing.assert_close(out[0, :, 0], torch.tensor(first), atol=1e-6, rtol=0)
    last = [0.5210182, 0.5862569, 0.4210338, 0.017409, 0.3344791, -0.2192914]
    last += [-0.0383731, 0.1396793, -0.3139606, 0.0487978, -0.288597, 0.0902134]
    torch.testing.assert_close(out[3, :, 5], torch.tensor(last), atol=1e-6, rtol=0)
    cos = torch.einsum("bd,bmd->bm", q, out)[1]
    expected = [0.5262936, 0.5751796, -0.0348509, 0.1448326, 0.3884419, 0.4418857]
    expected += [0.2712043, 0.1897575, 0.2946392, 0.3101549, 0.2372652, 0.2957109]
    torch.testing.assert_close(cos, torch.tensor(expected), atol=1e-6, rtol=0)
    # the generator is left where it was: the next draw is pinned too
    assert abs(float(torch.rand(1, generator=g)) - 0.8192240595817566) < 1e-7

    g = gen(9)
    exclude = positive_mask(1, world_size=64).expand(4, -1)  # bank row 0 for every query
    out = synthesize(q, bank, SYNCO_V1.replace(n_hard=16), generator=g, exclude=exclude)
    assert out.shape == (4, 960, 16)
    expected = [-0.5502619, 0.2445102, -0.2693555, 0.1872306, 0.33424]
    expected += [-0.1697737, -0.2300986, -0.2094333, 0.0700548, -0.0703678]
    torch.testing.assert_close(out[2, ::96, 3], torch.tensor(expected), atol=1e-6, rtol=0)
    assert abs(float(torch.rand(1, generator=g)) - 0.006259918212890625) < 1e-7


def test_synthesize_with_similarity_and_exclude() -> None:
    keys = unit(8, 16)
    q = F.normalize(keys + 0.1 * unit(8, 16, seed=5), dim=-1)
    mask = positive_mask(8)
    spec = NegativeSpec(n_hard=4, perturbed=6)
    sim = neg.similarity(q, keys)
    a = synthesize(q, keys, spec, exclude=mask, generator=gen(), similarity=sim.detach())
    b = synthesize(q, keys, spec, exclude=mask, generator=gen())
    assert torch.allclose(a, b, atol=1e-6)
    # perturb: each output is norm(n + delta q) for a pool entry n, never the positive.
    cand = F.normalize(keys[None] + 0.01 * q[:, None], dim=-1)  # (B, K, D)
    nearest = torch.cdist(a, cand).argmin(dim=2)  # (B, 6) which key was perturbed
    assert not bool(mask.gather(1, nearest).any())


def test_synthesize_keeps_dtype_under_bf16_and_empty_spec() -> None:
    q, bank = unit(3, 8, dtype=torch.bfloat16), unit(20, 8, seed=1)
    assert synthesize(q, bank, SYNCO_V2.replace(n_hard=10)).dtype == torch.bfloat16
    assert synthesize(q, bank, NegativeSpec(n_hard=5)).shape == (3, 0, 8)


def test_synthesize_does_not_loop_over_the_batch() -> None:
    # Count kernel launches via the profiler-free route: the number of distinct aten calls
    # does not grow with the batch size.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            self.calls += 1
            return func(*args, **(kwargs or {}))

    calls = []
    for b in (2, 64):
        with Count() as c:
            synthesize(
                unit(b, 8), unit(100, 8, seed=1), SYNCO_V2.replace(n_hard=16), generator=gen()
            )
        calls.append(c.calls)
    assert calls[0] == calls[1]


# ---------------------------------------------------------------------------------- specs


def test_presets() -> None:
    assert SYNCO_V1.n_hard == 1024 and list(SYNCO_V1.counts.values()) == [256, 256, 256, 64, 64, 64]
    assert SYNCO_V1.sigma == 0.01
    assert SYNCO_V2.n_hard == 256 and list(SYNCO_V2.counts.values()) == [128, 128, 128, 64, 64, 64]
    assert SYNCO_V2.sigma == 0.1
    assert list(SYNCO_V2_CONFIG.counts.values()) == [128] * 6 and SYNCO_V2_CONFIG.total == 768
    m = mochi(1024, 512, 256)
    assert (m.n_hard, m.mixed, m.interpolated, m.total) == (1024, 512, 256, 768)
    assert m.alpha == (0.0, 0.5)


def test_spec_is_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        SYNCO_V2.n_hard = 3  # type: ignore[misc]
    assert NegativeSpec(alpha=(0, 0.5)) == NegativeSpec(alpha=(0.0, 0.5))
    assert hash(NegativeSpec(alpha=[0, 0.5])) == hash(NegativeSpec())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"n_hard": 0}, ValueError, "n_hard"),
        ({"mixed": -1}, ValueError, "mixed"),
        ({"noisy": 1.5}, TypeError, "noisy"),
        ({"alpha": (0.6, 0.2)}, ValueError, "alpha"),
        ({"alpha": (0.0, 1.5)}, ValueError, "alpha"),
        ({"beta": (0.5, 1.5)}, ValueError, "beta"),
        ({"gamma": (0.0, 2.0)}, ValueError, "gamma"),
        ({"sigma": -0.1}, ValueError, "sigma"),
        ({"delta": float("nan")}, ValueError, "delta"),
        ({"eta": float("inf")}, ValueError, "eta"),
        ({"adversarial_steps": 0}, ValueError, "adversarial_steps"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        NegativeSpec(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown field"):
        SYNCO_V2.replace(n_hrd=3)


# ------------------------------------------------------------------------------- bad input


BAD_INPUT = [
    # (description, call, exception, words that must appear in the message)
    (
        "query rank",
        lambda: interpolate(unit(8), unit(1, 2, 8), 1),
        ValueError,
        r"query: expected shape \(B, D\), got \(8\)",
    ),
    (
        "hard rank",
        lambda: interpolate(unit(2, 8), unit(2, 8), 1),
        ValueError,
        r"hard: expected shape \(B, N, D\), got \(2, 8\)",
    ),
    (
        "mismatched D",
        lambda: mixup(unit(2, 8), unit(2, 3, 7), 1),
        ValueError,
        "hard.*D=8.*got \\(2, 3, 7\\)",
    ),
    (
        "mismatched B",
        lambda: perturb(unit(2, 8), unit(3, 3, 8), 1),
        ValueError,
        "hard.*B=2.*got \\(3, 3, 8\\)",
    ),
    (
        "negative count",
        lambda: add_noise(unit(2, 8), unit(2, 3, 8), -1),
        ValueError,
        "count: expected an int >= 0, got -1",
    ),
    (
        "float count",
        lambda: add_noise(unit(2, 8), unit(2, 3, 8), 2.0),
        TypeError,
        "count: expected an int",
    ),
    (
        "integer dtype",
        lambda: extrapolate(torch.ones(2, 8, dtype=torch.long), unit(2, 3, 8), 1),
        TypeError,
        "query: expected a floating-point tensor.*torch.int64",
    ),
    (
        "nan query",
        lambda: adversarial(torch.full((2, 8), float("nan")), unit(2, 3, 8), 1),
        ValueError,
        "query: expected finite values",
    ),
    (
        "inf bank",
        lambda: hardest(unit(2, 8), torch.full((5, 8), float("inf")), 1),
        ValueError,
        "bank: expected finite values",
    ),
    (
        "n_hard too large",
        lambda: hardest(unit(2, 8), unit(5, 8), 6),
        ValueError,
        "n_hard: expected at most K=5",
    ),
    (
        "n_hard vs exclude",
        lambda: hardest(
            unit(2, 8), unit(5, 8), 5, exclude=positive_mask(1, world_size=5).expand(2, -1)
        ),
        ValueError,
        "n_hard: expected at most 4",
    ),
    (
        "exclude dtype",
        lambda: hardest(unit(2, 8), unit(5, 8), 1, exclude=torch.zeros(2, 5)),
        TypeError,
        "exclude: expected a boolean mask",
    ),
    (
        "exclude shape",
        lambda: hardest(unit(2, 8), unit(5, 8), 1, exclude=torch.zeros(2, 4, dtype=torch.bool)),
        ValueError,
        r"exclude: expected shape \(B, K\) = \(2, 5\), got \(2, 4\)",
    ),
    (
        "similarity shape",
        lambda: hardest(unit(2, 8), unit(5, 8), 1, similarity=torch.zeros(2, 4)),
        ValueError,
        "similarity: expected shape",
    ),
    (
        "alpha range",
        lambda: interpolate(unit(2, 8), unit(2, 3, 8), 1, alpha=(0.0, 2.0)),
        ValueError,
        "alpha: expected 0.0 <= lo <= hi <= 1.0",
    ),
    (
        "beta range",
        lambda: extrapolate(unit(2, 8), unit(2, 3, 8), 1, beta=(0.5, 1.0)),
        ValueError,
        "beta: expected 1.0 <= lo",
    ),
    (
        "sigma",
        lambda: add_noise(unit(2, 8), unit(2, 3, 8), 1, sigma=-1.0),
        ValueError,
        "sigma: expected a number in",
    ),
    (
        "steps",
        lambda: adversarial(unit(2, 8), unit(2, 3, 8), 1, steps=0),
        ValueError,
        "steps: expected an int >= 1",
    ),
    (
        "generator type",
        lambda: mixup(unit(2, 8), unit(2, 3, 8), 1, generator=0),
        TypeError,
        "generator: expected a torch.Generator",
    ),
    (
        "not a tensor",
        lambda: interpolate([[1.0]], unit(1, 1, 1), 1),
        TypeError,
        "query: expected a torch.Tensor, got list",
    ),
    (
        "spec type",
        lambda: synthesize(unit(2, 8), unit(5, 8), {"n_hard": 2}),
        TypeError,
        "spec: expected a NegativeSpec",
    ),
    (
        "empty bank",
        lambda: hardest(unit(2, 8), torch.zeros(0, 8), 1),
        ValueError,
        "bank: expected a non-empty",
    ),
]


@pytest.mark.parametrize(("what", "call", "exc", "words"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_names_the_argument(
    what: str, call: Callable[[], object], exc: type[Exception], words: str
) -> None:
    with pytest.raises(exc, match=words):
        call()


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4)


@given(qs=shapes, hs=shapes, count=st.integers(-3, 3), name=st.sampled_from(list(STRATEGY_FNS)))
@settings(max_examples=150, deadline=None)
def test_fuzzed_shapes_raise_clear_errors_or_work(
    qs: list[int], hs: list[int], count: int, name: str
) -> None:
    # Any shapes: either a valid result, or a ValueError/TypeError naming the argument.
    q, h = torch.randn(tuple(qs)), torch.randn(tuple(hs))
    try:
        out = STRATEGY_FNS[name](q, h, count)
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in {"query", "hard", "count"}
    else:
        assert len(qs) == 2 and len(hs) == 3 and count >= 0
        assert out.shape == (qs[0], count, qs[1])


# ------------------------------------------------------------------------- vanishing samples


VANISHING = {
    # (query, spec): with each query's pool its antipode -q, every sample's unnormalised vector
    # is exactly 0: the midpoint of q and -q, one step of size 1 from -q towards q, and (at
    # D = 4, entries +-0.5, so sign(q) = 2q) a signed step of 0.5 from -q.
    "interpolated": (unit(3, 8), NegativeSpec(n_hard=1, interpolated=4, alpha=(0.5, 0.5))),
    "perturbed": (unit(3, 8), NegativeSpec(n_hard=1, perturbed=3, delta=1.0)),
    "adversarial": (
        torch.tensor([[0.5, -0.5, 0.5, 0.5], [-0.5, -0.5, 0.5, -0.5]]),
        NegativeSpec(n_hard=1, adversarial=3, eta=0.5),
    ),
}


@pytest.mark.parametrize("name", list(VANISHING))
def test_a_vanishing_sample_becomes_its_hard_negative(name: str) -> None:
    from tests.syn2co.test_synthetic_logits import assert_paths_agree

    q, spec = VANISHING[name]
    bank = -q[:, None, :]  # per-query bank: the antipode
    out = synthesize(q, bank, spec, generator=gen())
    assert torch.allclose(out, bank.expand_as(out), atol=1e-6)  # unit, the hard negative
    logits = neg.synthetic_logits(q, bank, spec, generator=gen())
    torch.testing.assert_close(logits, -torch.ones(logits.shape), atol=1e-6, rtol=0)
    assert_paths_agree(q, bank, spec, seed=0)


def test_a_vanishing_mix_becomes_its_first_pick() -> None:
    from tests.syn2co.test_synthetic_logits import assert_paths_agree

    # pool {n, -n}: a mix at c = 0.5 of two different picks vanishes, of the same pick is n
    q = unit(4, 8)
    n = unit(1, 8, seed=1)
    bank = torch.cat([n, -n])
    exclude = torch.zeros(4, 2, dtype=torch.bool)
    spec = NegativeSpec(n_hard=2, mixed=16, gamma=(0.5, 0.5))
    out = synthesize(q, bank, spec, generator=gen(3), exclude=exclude)
    first = torch.randint(2, (4, 32), generator=gen(3))[:, :16]  # each sample's first pick
    pool = hardest(q, bank, 2)
    assert torch.allclose(out, pool.gather(1, first[:, :, None].expand(-1, -1, 8)), atol=1e-6)
    assert_paths_agree(q, bank, spec, seed=3)


def test_one_dimensional_embeddings_give_unit_samples() -> None:
    from tests.syn2co.test_synthetic_logits import assert_paths_agree

    q = torch.tensor([[1.0], [-2.0], [0.5]])
    bank = torch.tensor([[1.0], [-1.0], [3.0], [-0.5]])
    spec = SYNCO_V2_CONFIG.replace(
        n_hard=4, alpha=(0.0, 1.0), gamma=(0.0, 1.0), delta=1.0, eta=1.0, adversarial_steps=2
    )
    out = synthesize(q, bank, spec, generator=gen(1))
    assert bool((out.abs() == 1).all())  # +-1: never a zero vector
    assert_paths_agree(q, bank, spec, seed=1)


# ----------------------------------------------------------------- counts and non-finite input


def test_counts_may_be_numpy_integers() -> None:
    np = pytest.importorskip("numpy")
    spec = NegativeSpec(n_hard=np.int64(8), interpolated=np.int64(3), mixed=np.int32(2))
    assert spec == NegativeSpec(n_hard=8, interpolated=3, mixed=2)
    assert type(spec.n_hard) is int and type(spec.interpolated) is int
    assert hash(spec) == hash(NegativeSpec(n_hard=8, interpolated=3, mixed=2))
    assert SYNCO_V2.replace(noisy=np.int16(5)).noisy == 5
    assert interpolate(unit(2, 4), unit(2, 3, 4), np.int64(2)).shape == (2, 2, 4)
    with pytest.raises(TypeError, match="interpolated: expected an int"):
        NegativeSpec(interpolated=np.float64(3.0))


@pytest.mark.parametrize("seed", range(6))
def test_nan_in_a_row_no_sample_picks_is_reported_on_every_seed(seed: int) -> None:
    # A pool of two rows, the second NaN, one sample: half of the draws never touch it. The
    # whole pool (or bank) is checked, so every seed reports it the same way.
    q = unit(1, 8)
    hard = torch.stack([unit(8, seed=1), torch.full((8,), float("nan"))])[None]
    for name, fn in STRATEGY_FNS.items():
        with pytest.raises(ValueError, match="hard: expected finite values, got 8 NaN"):
            fn(q, hard, 1, generator=gen(seed))
        del name
    bank = torch.cat([unit(1, 8, seed=2), torch.full((1, 8), float("nan")), unit(6, 8, seed=3)])
    for make in (synthesize, neg.synthetic_logits):
        with pytest.raises(ValueError, match="bank: expected finite values, got 8 NaN"):
            make(q, bank, SYNCO_V2.replace(n_hard=2), generator=gen(seed))
