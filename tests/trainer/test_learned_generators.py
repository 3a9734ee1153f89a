"""The trainer's jointly learned generators: frozen encoder, exact resume, pictures."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from torch import Tensor, nn

from reference_trainer.learned_generators import LearnedGenerators

SIDE = 16


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=SIDE,
        patch_size=4,
        depth=1,
        embed_dim=32,
        num_heads=2,
    )


def bn_encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 32), nn.BatchNorm1d(32))


def joint(mode: str = "both", seed: int = 0) -> LearnedGenerators:
    return LearnedGenerators(
        mode,  # type: ignore[arg-type]
        image_size=SIDE,
        total_steps=10,
        latent_dim=16,
        width=4,
        batch_fraction=0.5,
        lr=1e-3,
        seed=seed,
    )


def real_batch(n: int = 8, seed: int = 0) -> Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, Tensor)}


@pytest.mark.parametrize("make_encoder", [tiny_vit, bn_encoder])
@pytest.mark.parametrize("mode", ["hard-samples", "hard-pairs", "both"])
def test_generator_step_leaves_the_encoder_bit_identical(make_encoder, mode: str) -> None:  # type: ignore[no-untyped-def]
    encoder = make_encoder().train()
    before = snapshot(encoder)
    flags = [p.requires_grad for p in encoder.parameters()]
    j = joint(mode)
    gen_before = snapshot(j)
    metrics = j.generator_step(encoder, real_batch(), 0, encoder=encoder)
    assert all(p.grad is None for p in encoder.parameters())
    assert [p.requires_grad for p in encoder.parameters()] == flags
    after = snapshot(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert any(not torch.equal(v, gen_before[k]) for k, v in snapshot(j).items())
    want = {"hard-samples": "gen/sample_contrastive", "hard-pairs": "gen/pair_similarity"}
    for mode_key, key in want.items():
        assert (key in metrics) == (mode in (mode_key, "both"))
    assert all(v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert j.metrics is metrics


def test_generator_step_without_the_encoder_module_still_writes_no_encoder_grad() -> None:
    encoder = tiny_vit()
    j = joint("both")
    j.generator_step(lambda x: encoder(x), real_batch(), 3)
    assert all(p.grad is None for p in encoder.parameters())


def test_state_dict_round_trip_gives_an_identical_next_step() -> None:
    encoder = tiny_vit()
    a = joint("both", seed=1)
    for step in range(2):
        a.generator_step(encoder, real_batch(seed=step), step, encoder=encoder)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = joint("both", seed=7)  # another initialisation and seed: the state restores both
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert b.seed == 1
    assert all(torch.equal(v, snapshot(a)[k]) for k, v in snapshot(b).items())
    ma = a.generator_step(encoder, real_batch(seed=2), 2, encoder=encoder)
    mb = b.generator_step(encoder, real_batch(seed=2), 2, encoder=encoder)
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    opt_a, opt_b = a.optimizers["pairs"].state_dict(), b.optimizers["pairs"].state_dict()
    for i, state in opt_a["state"].items():
        assert torch.equal(state["exp_avg"], opt_b["state"][i]["exp_avg"])
    # A fresh run without the state would have stepped differently.
    c = joint("both", seed=7)
    c.generator_step(encoder, real_batch(seed=2), 2, encoder=encoder)
    assert any(not torch.equal(v, sa[k]) for k, v in snapshot(c).items())


def test_state_of_another_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode 'hard-pairs'"):
        joint("hard-pairs").load_state_dict(joint("both").state_dict())


def test_sampling_is_seeded_by_step_detached_and_leaves_the_global_rng_alone() -> None:
    j = joint("both")
    rng = torch.get_rng_state()
    first, again, other = j.sample(3, 5), j.sample(3, 5), j.sample(3, 6)
    assert torch.equal(torch.get_rng_state(), rng)
    for x, y, z in zip(first, again, other, strict=True):
        assert x is not None and y is not None and z is not None
        assert x.shape == (3, 3, SIDE, SIDE) and not x.requires_grad
        assert torch.equal(x, y) and not torch.equal(x, z)
    only_pairs = joint("hard-pairs").sample(2, 0)
    assert only_pairs.images is None and only_pairs.pair_a is not None
    only_samples = joint("hard-samples").sample(2, 0)
    assert only_samples.pair_a is None and only_samples.pair_b is None


@pytest.mark.parametrize(("mode", "extra"), [("hard-samples", 4), ("hard-pairs", 4), ("both", 8)])
def test_extend_views_appends_detached_generated_rows(mode: str, extra: int) -> None:
    j = joint(mode)
    view_a, view_b = real_batch(8, seed=1), real_batch(8, seed=2)
    a, b = j.extend_views(view_a, view_b, 0)
    assert a.shape == b.shape == (8 + extra, 3, SIDE, SIDE)
    assert not a.requires_grad and not b.requires_grad
    assert torch.equal(a[:8], view_a) and torch.equal(b[:8], view_b)
    assert j.count(8) == 4 and j.count(1) == 2


@pytest.mark.parametrize(
    ("mode", "samples", "pairs"), [("hard-samples", 4, 0), ("hard-pairs", 0, 4), ("both", 4, 4)]
)
def test_extend_views_grouped_gives_two_views_of_every_generated_image(
    mode: str, samples: int, pairs: int
) -> None:
    """For a multi-positive loss: a row per generated image with two augmented views of it, and
    the two images of each pair in one group (four positive views per pair)."""
    j = joint(mode)
    view_a, view_b = real_batch(8, seed=1), real_batch(8, seed=2)
    a, b, groups = j.extend_views_grouped(view_a, view_b, 0)
    assert a.shape == b.shape == (8 + samples + 2 * pairs, 3, SIDE, SIDE)
    assert not a.requires_grad and not b.requires_grad
    assert torch.equal(a[:8], view_a) and torch.equal(b[:8], view_b)
    first_pair = 8 + samples
    expected = list(range(first_pair + pairs)) + list(range(first_pair, first_pair + pairs))
    assert groups.tolist() == expected
    generated = j.sample(4, 0)
    images = torch.cat([x for x in generated if x is not None])  # samples, images a, images b
    views = j.two_views(images, 0)
    assert torch.equal(a[8:], views[0]) and torch.equal(b[8:], views[1])
    assert not torch.equal(a[8:], b[8:])  # two different augmentations of each image


def test_the_pair_target_follows_the_schedule() -> None:
    j = joint("hard-pairs")
    assert j.target_similarity(0) == pytest.approx(0.9)
    assert j.target_similarity(10) == pytest.approx(0.5)
    metrics = j.generator_step(tiny_vit(), real_batch(), 5)
    assert metrics["gen/pair_target"].item() == pytest.approx(0.7)
    assert -1 <= metrics["gen/pair_similarity"].item() <= 1


def test_save_grid_writes_a_png(tmp_path: Path) -> None:
    path = joint("both").save_grid(tmp_path / "grids" / "step_0.png", n=8)
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        # 8 samples then 8 pairs (16 images): 3 rows of 8 tiles of 16 px with 1 px padding
        assert image.size == (8 * (SIDE + 1) + 1, 3 * (SIDE + 1) + 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "gan"}, "mode"),
        ({"batch_fraction": 0.0}, "batch_fraction"),
        ({"similarity_end": -1.5}, "similarity_end"),
        ({"pixel_weight": -1.0}, "pixel_weight"),
        ({"temperature": 0.0}, "temperature"),
        ({"mean": (0.5,)}, "mean"),
        ({"pair_design": "triple"}, "pair_design"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"mode": "both", "image_size": SIDE, "total_steps": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        LearnedGenerators(**args)  # type: ignore[arg-type]


def test_twin_pair_design_starts_from_identical_images() -> None:
    j = LearnedGenerators(
        "hard-pairs",
        image_size=SIDE,
        total_steps=5,
        latent_dim=8,
        width=4,
        pair_design="twin",
        pair_spread=0.0,
    )
    batch = j.sample(2, 0)
    assert batch.pair_a is not None and batch.pair_b is not None
    assert torch.equal(batch.pair_a, batch.pair_b)
