"""SimCLR: presets, heads, NT-Xent with extra positives against plain references, the in-batch
bank of the synthetic negatives, and 2 gloo ranks against one process."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from reference_trainer.config import TrainConfig
from reference_trainer.heads import GlobalBatchNorm1d
from reference_trainer.methods import Embeddings, StepContext
from reference_trainer.methods.simclr import FeatureScale, SimCLR
from reference_trainer.resolve import resolve
from syn2co.negatives import NegativeSpec

B, D, TAU = 5, 8, 0.5


def data(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference(z1: Tensor, z2: Tensor, groups: list[int], tau: float) -> Tensor:
    """SupCon's L_out over the 2B anchors, in float64, one anchor at a time: anchor a's
    positives are the other view of its row and both views of every other row of its group;
    its softmax runs over every embedding but itself."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    b = z1.shape[0]
    row_group = groups + groups  # the group of each of the 2B embeddings
    losses = []
    for a in range(2 * b):
        others = [c for c in range(2 * b) if c != a]
        logits = torch.stack([z[a] @ z[c] for c in others]) / tau
        log_prob = logits - torch.logsumexp(logits, dim=0)
        positives = [i for i, c in enumerate(others) if row_group[c] == row_group[a]]
        losses.append(-log_prob[positives].mean())
    return torch.stack(losses).mean()


def test_recipe_by_image_size() -> None:
    cifar = resolve(
        TrainConfig(method="simclr", arch="resnet18", batch_size=512), train_size=50_000
    )
    assert (cifar.config.optimizer, cifar.config.temperature, cifar.lr) == (
        "lars",
        0.5,
        1.0 * 512 / 256,
    )
    # SimCLR's README command for CIFAR-10 decays weights by 1e-4 (the paper's ImageNet: 1e-6)
    assert cifar.config.weight_decay == 1e-4 and cifar.warmup_steps == 10 * (50_000 // 512)
    large = TrainConfig(method="simclr", arch="resnet50", batch_size=4096, img_size=224)
    imagenet = resolve(large, train_size=1_281_167)
    assert (imagenet.config.temperature, imagenet.lr) == (0.1, 0.3 * 4096 / 256)
    assert (imagenet.config.proj_hidden, imagenet.config.proj_dim) == (None, 128)
    assert imagenet.config.weight_decay == 1e-6
    short = resolve(TrainConfig(method="simclr", arch="resnet18", steps=5), train_size=640)
    assert short.warmup_steps == 5  # ten epochs of warmup, capped at the run


def test_projector_is_simclr_v1s() -> None:
    plan = resolve(TrainConfig(method="simclr", arch="resnet50"), train_size=100)
    heads = SimCLR.heads(2048, plan.method_settings())
    assert heads.predictor is None
    first, bn1, relu, second, bn2, scale = heads.projector
    assert (
        isinstance(first, nn.Linear) and first.bias is None and first.weight.shape == (2048, 2048)
    )
    assert isinstance(bn1, GlobalBatchNorm1d) and bn1.affine and isinstance(relu, nn.ReLU)
    assert (
        isinstance(second, nn.Linear) and second.bias is None and second.weight.shape == (128, 2048)
    )
    assert isinstance(bn2, GlobalBatchNorm1d) and not bn2.affine  # no shift ...
    assert isinstance(scale, FeatureScale) and scale.weight.shape == (128,)  # ... but a scale


@pytest.mark.parametrize(
    "groups",
    [
        [0, 1, 2, 3, 4],  # every row alone: plain NT-Xent
        [0, 1, 2, 3, 3],  # a generated pair in the last two rows: four positive views
        [0, 1, 1, 3, 3],  # two pairs
    ],
)
def test_loss_matches_a_plain_reference(groups: list[int]) -> None:
    z1, z2 = data(1, B, D).requires_grad_(), data(2, B, D).requires_grad_()
    method = SimCLR(temperature=TAU, spec=None)
    ctx = StepContext(False, groups=torch.tensor(groups))
    out = method(Embeddings((z1, z2)), ctx)
    expected = reference(z1, z2, groups, TAU)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    got = torch.autograd.grad(out.loss, (z1, z2))
    want = torch.autograd.grad(reference(z1, z2, groups, TAU), (z1, z2))
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-6)
    plain = method(Embeddings((z1, z2)), StepContext(False))
    assert (plain.loss.item() == pytest.approx(out.loss.item())) is (len(set(groups)) == B)


def test_synthetic_negatives_skip_the_anchor_and_all_its_positives() -> None:
    """With a pool of one (the hardest entry) and the perturbed type, each synthetic negative is
    norm(n + 0.01 q) for the most similar embedding n that is neither the anchor, nor its other
    view, nor a view of its pair's other image: made the most similar on purpose here."""
    z1 = data(3, B, D)
    z2 = z1 + 0.01 * data(4, B, D)  # each positive the closest
    z1[4] = z1[3] + 0.02 * data(5, D)  # row 4 is row 3's pair: closer still
    z2[4] = z1[4] + 0.01 * data(6, D)
    groups = [0, 1, 2, 3, 3]
    spec = NegativeSpec(n_hard=1, perturbed=1)
    method = SimCLR(temperature=TAU, spec=spec)
    ctx = StepContext(True, torch.Generator().manual_seed(0), groups=torch.tensor(groups))
    out = method(Embeddings((z1, z2)), ctx)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    row_group = groups + groups
    # the directions keep each anchor's cosines to its synthetic negatives: (B, 1) per view
    cosines = torch.cat([d.synthetic for d in out.directions if d.synthetic is not None])
    assert cosines.shape == (2 * B, 1)
    for a in range(2 * B):
        allowed = [
            c for c in range(2 * B) if row_group[c] != row_group[a] and c != (a + B) % (2 * B)
        ]
        allowed = [c for c in allowed if c != a]
        n = z[max(allowed, key=lambda c: float(z[a] @ z[c]))]
        expected = z[a] @ F.normalize(n + 0.01 * z[a], dim=0)
        assert cosines[a, 0].item() == pytest.approx(expected.item(), abs=1e-6)


def test_bank_size_is_both_views_less_two() -> None:
    assert SimCLR.bank_size(batch_size=64, queue_size=4096) == 126
    big = TrainConfig(method="simclr", arch="resnet18", negatives="synco-v2", batch_size=64)
    assert resolve(big, train_size=1000).spec.n_hard == 126  # type: ignore[union-attr]


WORLD = 2
GROUPS = [[0, 1, 2, 2], [0, 1, 2, 3]]  # per rank: a pair on rank 0 only


def run_rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = len(GROUPS[rank])
        rows = slice(rank * local, (rank + 1) * local)
        z1 = data(7, WORLD * local, D)[rows].clone().requires_grad_()
        z2 = data(8, WORLD * local, D)[rows].clone().requires_grad_()
        ctx = StepContext(False, groups=torch.tensor(GROUPS[rank]))
        loss = SimCLR(temperature=TAU, spec=None)(Embeddings((z1, z2)), ctx).loss
        loss.backward()
        torch.save((loss.detach(), z1.grad, z2.grad), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_match_one_process_with_both_halves() -> None:
    """Different rows on each rank, a pair on one rank only: the mean of the ranks' losses is
    the one-process loss, and each rank's gradient (summed through the gather, then averaged
    over ranks as DDP does) is the one-process gradient of its rows."""
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        mp.start_processes(run_rank, args=(init, tmp), nprocs=WORLD, start_method="spawn")
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(WORLD)]
    local = len(GROUPS[0])
    z1 = data(7, WORLD * local, D).requires_grad_()
    z2 = data(8, WORLD * local, D).requires_grad_()
    groups = [g + r * local for r in range(WORLD) for g in GROUPS[r]]
    single = SimCLR(temperature=TAU, spec=None)(
        Embeddings((z1, z2)), StepContext(False, groups=torch.tensor(groups))
    ).loss
    single.backward()
    assert torch.stack([r[0] for r in ranks]).mean().item() == pytest.approx(
        single.item(), rel=1e-6
    )
    assert z1.grad is not None and z2.grad is not None
    for r, (_, g1, g2) in enumerate(ranks):
        rows = slice(r * local, (r + 1) * local)
        assert torch.allclose(g1 / WORLD, z1.grad[rows], atol=1e-6)
        assert torch.allclose(g2 / WORLD, z2.grad[rows], atol=1e-6)
