"""MoCo v2: the loss against a plain reference, the queue, the encoding and shuffle BN."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from reference_trainer.build import build_networks
from reference_trainer.config import TrainConfig
from reference_trainer.methods import Embeddings, Networks, StepContext, get_method
from reference_trainer.methods.mocov2 import SHUFFLE_BN_SPLITS, MoCoV2, shuffled_keys
from reference_trainer.models import frozen_batch_norm_statistics
from reference_trainer.resolve import resolve
from reference_trainer.seeds import hashed_seed
from syn2co.negatives import NegativeSpec, synthesize

B, D, K = 6, 8, 16


def data(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def batch_centred(x: Tensor) -> Tensor:
    """A key encoder whose output depends on the rest of its batch, as batch norm does."""
    return x - x.mean(dim=0, keepdim=True)


def method(spec: NegativeSpec | None = None) -> MoCoV2:
    return MoCoV2(D, K, temperature=0.2, spec=spec, generator=torch.Generator().manual_seed(0))


def reference_loss(q: Tensor, k: Tensor, bank: Tensor, extra: Tensor | None, tau: float) -> Tensor:
    """MoCo's logits [q.k+, q.queue, q.synthetic] / tau, label 0, written out plainly."""
    q, k, bank = (F.normalize(t.double(), dim=-1) for t in (q, k, bank))
    columns = [(q * k).sum(-1, keepdim=True), q @ bank.T]
    if extra is not None:
        columns.append(torch.einsum("bd,bmd->bm", q, F.normalize(extra.double(), dim=-1)))
    logits = torch.cat(columns, dim=1) / tau
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def test_preset_is_moco_v2s_recipe() -> None:
    r = resolve(TrainConfig(method="mocov2", arch="resnet50", batch_size=512), train_size=10_000)
    assert r.method is get_method("mocov2")
    c = r.config
    assert (c.optimizer, r.lr, c.weight_decay, r.warmup_steps) == ("sgd", 0.03 * 2, 1e-4, 0)
    assert (c.temperature, c.momentum, r.preset.ema_schedule, c.queue_size) == (
        0.2,
        0.999,
        "constant",
        65536,
    )
    assert (c.proj_hidden, c.proj_dim) == (None, 128)  # hidden: the backbone's width


def test_heads_are_a_two_layer_mlp_without_bn() -> None:
    plan = resolve(TrainConfig(method="mocov2", arch="resnet50"), train_size=100)
    heads = MoCoV2.heads(2048, plan.method_settings())
    assert heads.predictor is None
    layers = [type(m).__name__ for m in heads.projector]
    assert layers == ["Linear", "ReLU", "Linear"]
    assert heads.projector[0].weight.shape == (2048, 2048)
    assert heads.projector[2].weight.shape == (128, 2048)


def test_loss_matches_a_plain_reference_then_keys_enter_the_queue() -> None:
    m = method()
    q, k = data(1, B, D).requires_grad_(), data(2, B, D)
    bank = m.queue.bank.clone()
    out = m(Embeddings((q,), (k,)), StepContext(negatives_active=False))
    assert out.loss.item() == pytest.approx(reference_loss(q, k, bank, None, 0.2).item(), rel=1e-6)
    out.loss.backward()
    assert q.grad is not None and bool(q.grad.abs().sum() > 0)
    m.update(Embeddings((q.detach(),), (k,)), None)
    assert torch.allclose(m.queue.bank[:B], F.normalize(k, dim=1), atol=1e-6)
    assert torch.equal(m.queue.bank[B:], bank[B:])


def test_synthetic_negatives_come_from_the_queue() -> None:
    spec = NegativeSpec(n_hard=4, interpolated=3, mixed=2, noisy=1)
    m = method(spec)
    q, k = data(3, B, D), data(4, B, D)
    out = m(Embeddings((q,), (k,)), StepContext(True, torch.Generator().manual_seed(7)))
    extra = synthesize(q, m.queue.bank, spec, generator=torch.Generator().manual_seed(7))
    expected = reference_loss(q, k, m.queue.bank, extra, 0.2)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    (direction,) = out.directions
    assert direction.synthetic is not None and direction.synthetic.shape == (B, 6)  # cosines


class Recorder:
    """A fake network that records the batches it is called on; row-wise, so the rows of its
    output do not depend on which other rows share a call."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.calls: list[int] = []

    def online(self, *views: Tensor) -> list[Tensor]:
        self.calls.extend(v.shape[0] for v in views)
        return [self.scale * v.flatten(1)[:, :D] for v in views]

    def target(self, views: Sequence[Tensor]) -> list[Tensor]:
        return self.online(*views)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_encode_queries_view_1_and_keys_view_2(batch_norm: bool) -> None:
    online, target = Recorder(1.0), Recorder(-1.0)
    nets = Networks(online.online, target.target, batch_norm, step=3, seed=0)
    rows = 2 * SHUFFLE_BN_SPLITS
    view1, view2 = data(5, rows, 3, 4, 4), data(6, rows, 3, 4, 4)
    emb = method().encode(nets, (view1, view2))
    (q,), target_out = emb.online, emb.target
    assert target_out is not None
    (k,) = target_out
    assert torch.equal(q, view1.flatten(1)[:, :D])  # nothing of view 2 in the queries
    assert torch.equal(k, -view2.flatten(1)[:, :D])  # keys back in their rows after the shuffle
    expected_calls = [2] * SHUFFLE_BN_SPLITS if batch_norm else [rows]
    assert online.calls == expected_calls and target.calls == expected_calls


def test_shuffled_keys_put_random_groups_through_the_encoder() -> None:
    images = data(7, 12, 5)
    keys = shuffled_keys(
        batch_centred, images, splits=3, generator=torch.Generator().manual_seed(3)
    )
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    expected = torch.empty_like(images)
    for group in order.chunk(3):
        expected[group] = batch_centred(images[group])
    assert torch.allclose(keys, expected)
    assert not torch.allclose(keys, batch_centred(images))  # the groups matter


def norm_statistics(module: torch.nn.Module) -> list[Tensor]:
    return [
        b.clone()
        for m in module.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]


def test_shuffle_bn_moves_the_running_statistics_once_per_forward() -> None:
    """In one process the queries and the shuffled keys go through the encoders in
    SHUFFLE_BN_SPLITS groups; the batch-norm running statistics move once per step, by the
    first group's batch, as the first GPU of a run on SHUFFLE_BN_SPLITS GPUs moves them."""
    cfg = TrainConfig.from_dict(
        {"method": "mocov2", "arch": "resnet18", "depth": 1, "embed_dim": 8, "proj_dim": 8}
    )
    plan = resolve(cfg, train_size=64)
    torch.manual_seed(0)
    online, target = build_networks(plan.config, plan.method, plan.method_settings())
    assert target is not None
    reference_online, reference_target = copy.deepcopy(online), copy.deepcopy(target)
    rows, steps = 2 * SHUFFLE_BN_SPLITS, 3
    mocov2 = method()
    for step in range(steps):
        view1, view2 = data(10 + step, rows, 3, 32, 32), data(20 + step, rows, 3, 32, 32)
        nets = Networks(
            online,
            lambda views: target(views),
            True,
            step=step,
            seed=0,
            frozen_statistics=lambda: frozen_batch_norm_statistics(online, target),
        )
        embeddings = mocov2.encode(nets, (view1, view2))
        embeddings.online[0].square().sum().backward()  # the restored statistics keep autograd
        # the plain reference: one forward of the first group of each encoder
        first = rows // SHUFFLE_BN_SPLITS
        reference_online(view1[:first])
        order = torch.randperm(
            rows, generator=torch.Generator().manual_seed(hashed_seed("shuffle-bn", 0, step))
        )
        with torch.no_grad():
            reference_target((view2[order[:first]],))
    for got, want in zip(
        norm_statistics(online) + norm_statistics(target),
        norm_statistics(reference_online) + norm_statistics(reference_target),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    tracked = [
        m.num_batches_tracked for m in online.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert tracked and all(int(n) == steps for n in tracked)  # one update per step, not 8


WORLD, LOCAL = 2, 4


def run_rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        images = data(8, WORLD * LOCAL, 5)[rank * LOCAL : (rank + 1) * LOCAL]
        gen = torch.Generator().manual_seed(11)  # seeded alike on every rank
        keys = shuffled_keys(batch_centred, images, splits=1, generator=gen)
        torch.save(keys, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_shuffle_like_one_process_with_two_groups() -> None:
    """Each rank encodes a random half of the global batch: what one process computes with two
    groups and the same permutation; every rank gets back the keys of its own images."""
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        mp.start_processes(run_rank, args=(init, tmp), nprocs=WORLD, start_method="spawn")
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(WORLD)]
    everything = data(8, WORLD * LOCAL, 5)
    single = shuffled_keys(
        batch_centred, everything, splits=WORLD, generator=torch.Generator().manual_seed(11)
    )
    assert torch.allclose(torch.cat(ranks), single, atol=1e-6)
