"""A real 2-process gloo DDP run of the trainer agrees with one process on the global batch.

Each rank reads its own shard of every global batch (different images per rank), the heads'
BatchNorm pools statistics over both ranks, MoBY enqueues the keys of both ranks and MoCo v3
gathers them, so the two runs compute the same losses and the same updates up to the order
of floating-point reductions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from reference_trainer.config import TrainConfig
from reference_trainer.engine import train

from .conftest import become_rank, free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def config(out: Path, method: str) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "arch": "deit_s",
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "proj_hidden": 64,
            "proj_dim": 32,
            "method": method,
            "dataset": "builtin",
            "builtin_size": 64,
            "img_size": 32,
            "workers": 0,
            "batch_size": 16,
            "steps": 4,
            "queue_size": 64,
            "drop_path": 0.0,
            # deterministic synthetic negatives: the single hardest entry, perturbed
            "n_hard": 1,
            "perturbed": 4,
            "log_every": 1,
            "checkpoint_every": 100,
            "lr": 1e-3,
            "warmup_steps": 0,
            "out": str(out),
        }
    )


def rank_main(rank: int, port: int, root: str) -> None:
    become_rank(rank, port)
    for method in ("moby", "mocov3"):
        train(config(Path(root) / f"ddp-{method}", method), show_progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    mp.start_processes(rank_main, args=(free_port(), str(root)), nprocs=2, start_method="spawn")
    for method in ("moby", "mocov3"):
        train(config(root / f"single-{method}", method), show_progress=False)
    return root


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["moby", "mocov3"])
def test_two_ranks_match_one_process(runs: Path, method: str) -> None:
    a = torch.load(runs / f"ddp-{method}" / "checkpoint.pt", weights_only=False)
    b = torch.load(runs / f"single-{method}" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4 and a["world_size"] == 2
    # AdamW normalises each update, so a 1e-7 difference in a near-zero gradient can move a
    # weight by up to lr per step: compare the weights as a whole, not one by one.
    floats = [k for k, v in b["online"].items() if v.is_floating_point()]
    diff = sum(float(((a["online"][k] - b["online"][k]) ** 2).sum()) for k in floats)
    norm = sum(float((b["online"][k] ** 2).sum()) for k in floats)
    assert (diff / norm) ** 0.5 < 2e-3
    for k, v in b["online"].items():
        assert torch.equal(a["online"][k], v) or v.is_floating_point(), k
    if method == "moby":
        assert torch.allclose(a["method"]["queue1.keys"], b["method"]["queue1.keys"], atol=1e-4)
        assert int(a["method"]["queue1.count"]) == int(b["method"]["queue1.count"]) == 4 * 16


def test_logged_loss_is_the_global_batch_loss(runs: Path) -> None:
    for method in ("moby", "mocov3"):
        single, ddp = losses(runs / f"single-{method}"), losses(runs / f"ddp-{method}")
        assert len(single) == len(ddp) == 4
        # identical weights at step 1 and identical data: only reduction order differs
        assert ddp == pytest.approx(single, rel=2e-5), method
