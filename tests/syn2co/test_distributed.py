"""Two real gloo processes with different inputs per rank against one process holding both.

Symmetric inputs hide real bugs (a wrong rank offset, a missing gradient reduction), so each
rank gets its own slice of random data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from syn2co import distributed
from syn2co.losses import moco_v3_loss, nt_xent, nt_xent_mask
from syn2co.negatives import NegativeSpec, positive_mask, synthesize
from syn2co.queue import NegativeQueue

WORLD, B, D = 2, 3, 8


def data(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def simclr_like(local: torch.Tensor, everyone: torch.Tensor) -> torch.Tensor:
    """A loss of local rows against all rows, needing gradients through other ranks' rows."""
    logits = F.normalize(local, dim=1) @ F.normalize(everyone, dim=1).T / 0.5
    return torch.logsumexp(logits, dim=1).mean()


def spec() -> NegativeSpec:
    # n_hard=1 and perturbation only: deterministic, so ranks and one process can be compared.
    return NegativeSpec(n_hard=1, perturbed=2)


def run_rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        out: dict[str, Any] = {"rank": distributed.rank(), "world": distributed.world_size()}
        q_all, k_all = data(0, WORLD * B, D), data(1, WORLD * B, D)
        sl = slice(rank * B, (rank + 1) * B)

        # gather without gradient
        out["gathered"] = distributed.gather(k_all[sl])

        # MoCo v3 with synthetic negatives from the in-batch keys (positive masked)
        q = q_all[sl].clone().requires_grad_()
        keys = distributed.gather(k_all[sl])
        mask = positive_mask(B, world_size=WORLD, rank=rank)
        extra = synthesize(q, keys, spec(), exclude=mask)
        loss = moco_v3_loss(q, k_all[sl], extra_negatives=extra)
        loss.backward()
        out["moco_loss"], out["moco_grad"], out["extra"] = loss.detach(), q.grad, extra
        # the same with the keys gathered once by the caller: the loss gathers nothing
        gathered = distributed.gather_rows(k_all[sl])
        out["moco_gathered_loss"] = moco_v3_loss(q, gathered, extra_negatives=extra).detach()

        # SimCLR's NT-Xent, plain and with synthetic negatives from the masked in-batch bank
        v1_all, v2_all = data(6, WORLD * B, D), data(7, WORLD * B, D)
        for name, synthetic in (("ntxent", False), ("ntxent_syn", True)):
            z1, z2 = v1_all[sl].clone().requires_grad_(), v2_all[sl].clone().requires_grad_()
            anchors = torch.cat([z1, z2])
            embeddings = distributed.gather_rows(anchors, grad=True)
            extra = None
            if synthetic:
                exclude = nt_xent_mask(B, world_size=WORLD, rank=rank)
                extra = synthesize(anchors, embeddings.rows.detach(), spec(), exclude=exclude)
            loss = nt_xent(z1, z2, embeddings=embeddings, extra_negatives=extra)
            loss.backward()
            out[name] = (loss.detach(), z1.grad, z2.grad)
        z1, z2 = v1_all[sl].clone().requires_grad_(), v2_all[sl].clone().requires_grad_()
        loss = nt_xent(z1, z2)  # gathers by itself
        loss.backward()
        out["ntxent_self"] = (loss.detach(), z1.grad, z2.grad)

        # gather_with_grad
        z_all = data(2, WORLD * B, D)
        z = z_all[sl].clone().requires_grad_()
        simclr_like(z, distributed.gather_with_grad(z)).backward()
        out["simclr_grad"] = z.grad

        # all_reduce_with_grad: a global mean that backpropagates into every rank's rows
        w = data(3, WORLD * B, D)[sl].clone().requires_grad_()
        total = distributed.all_reduce_with_grad(w.sum(0))
        centered = w - total / (WORLD * B)
        (centered.pow(2) * data(4, WORLD * B, D)[sl]).sum().backward()
        out["reduce_grad"] = w.grad

        # queue: every rank enqueues its own keys, all ranks end with the same bank
        queue = NegativeQueue(10, D, generator=torch.Generator().manual_seed(5))
        for step in range(4):
            queue.enqueue(data(10 + step, WORLD * B, D)[sl])
        out["queue"] = queue.state_dict()
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(run_rank, args=(init_file, tmp), nprocs=WORLD, start_method="spawn")
        return [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(WORLD)]


pytestmark = pytest.mark.distributed


def test_rank_and_world_size(ranks: list[dict[str, Any]]) -> None:
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world"] for r in ranks} == {2}
    assert distributed.rank() == 0 and distributed.world_size() == 1  # no group here


def test_gather_concatenates_in_rank_order(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        assert torch.equal(r["gathered"], data(1, WORLD * B, D))


def test_moco_v3_two_ranks_equal_one_process(ranks: list[dict[str, Any]]) -> None:
    q = data(0, WORLD * B, D).requires_grad_()
    k = data(1, WORLD * B, D)
    extra = synthesize(q, k, spec(), exclude=positive_mask(WORLD * B))
    loss = moco_v3_loss(q, k, extra_negatives=extra)
    loss.backward()
    assert q.grad is not None
    # rank losses average to the global mean; DDP averages gradients over ranks
    mean_loss = sum(r["moco_loss"] for r in ranks) / WORLD
    assert torch.allclose(mean_loss, loss, atol=1e-6)
    grads = torch.cat([r["moco_grad"] / WORLD for r in ranks])
    assert torch.allclose(grads, q.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r["extra"] for r in ranks]), extra, atol=1e-6)
    for r in ranks:
        assert torch.allclose(r["moco_gathered_loss"], r["moco_loss"], atol=1e-7)


@pytest.mark.parametrize("name", ["ntxent", "ntxent_self", "ntxent_syn"])
def test_nt_xent_two_ranks_equal_one_process(ranks: list[dict[str, Any]], name: str) -> None:
    z1, z2 = data(6, WORLD * B, D).requires_grad_(), data(7, WORLD * B, D).requires_grad_()
    extra = None
    if name == "ntxent_syn":
        anchors = torch.cat([z1, z2]).detach()
        extra = synthesize(anchors, anchors, spec(), exclude=nt_xent_mask(WORLD * B))
    loss = nt_xent(z1, z2, extra_negatives=extra)
    loss.backward()
    assert z1.grad is not None and z2.grad is not None
    # each rank's 2B anchors see all 2 * WORLD * B embeddings: the rank means average to the
    # global mean, and each rank's gradients (summed over ranks' losses) / WORLD are the slice
    assert torch.allclose(sum(r[name][0] for r in ranks) / WORLD, loss, atol=1e-6)
    assert torch.allclose(torch.cat([r[name][1] / WORLD for r in ranks]), z1.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r[name][2] / WORLD for r in ranks]), z2.grad, atol=1e-6)


def test_gather_with_grad_two_ranks_equal_one_process(ranks: list[dict[str, Any]]) -> None:
    z = data(2, WORLD * B, D).requires_grad_()
    loss = sum(simclr_like(z[r * B : (r + 1) * B], z) for r in range(WORLD)) / WORLD
    loss.backward()
    assert z.grad is not None
    grads = torch.cat([r["simclr_grad"] / WORLD for r in ranks])
    assert torch.allclose(grads, z.grad, atol=1e-6)
    # without the all-reduce in backward, only local terms would count: make sure they differ
    local_only = torch.zeros_like(z)
    for r in range(WORLD):
        zr = z.detach()[r * B : (r + 1) * B].clone().requires_grad_()
        others = torch.cat([z.detach()[: r * B], zr, z.detach()[(r + 1) * B :]])
        simclr_like(zr, others).backward()
        assert zr.grad is not None
        local_only[r * B : (r + 1) * B] = zr.grad / WORLD
    assert not torch.allclose(local_only, z.grad, atol=1e-4)


def test_queue_two_ranks_equal_one_process(ranks: list[dict[str, Any]]) -> None:
    queue = NegativeQueue(10, D, generator=torch.Generator().manual_seed(5))
    for step in range(4):
        queue.enqueue(data(10 + step, WORLD * B, D))
    for r in ranks:
        assert torch.allclose(r["queue"]["keys"], queue.keys, atol=1e-6)
        assert int(r["queue"]["ptr"]) == int(queue.ptr)
        assert int(r["queue"]["count"]) == int(queue.count)


def test_all_reduce_with_grad_two_ranks_equal_one_process(ranks: list[dict[str, Any]]) -> None:
    w = data(3, WORLD * B, D).requires_grad_()
    weights = data(4, WORLD * B, D)
    ((w - w.mean(0)).pow(2) * weights).sum().backward()
    assert w.grad is not None
    # each rank's loss is its share of the sum, so its gradients add up without averaging
    assert torch.allclose(torch.cat([r["reduce_grad"] for r in ranks]), w.grad, atol=1e-5)
