"""SimCLR on a ResNet in a real 2-process gloo DDP run agrees with one process on the global batch.

Each rank reads its own shard of every global batch; the backbone's batch norm pools its
statistics over both ranks (global BN), NT-Xent gathers every rank's embeddings with their
gradient, and LARS adapts each layer from the averaged gradients, so the two runs compute the
same losses and the same updates up to the order of floating-point reductions. With per-rank
batch norm or a gather without gradient they would not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from reference_trainer.config import TrainConfig
from reference_trainer.engine import train

from .test_ddp import free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def config(out: Path) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "arch": "resnet18",
            "depth": 1,
            "embed_dim": 8,
            "proj_hidden": 64,
            "proj_dim": 32,
            "method": "simclr",
            "dataset": "builtin",
            "builtin_size": 64,
            "img_size": 32,
            "workers": 0,
            "batch_size": 16,
            "steps": 4,
            # deterministic synthetic negatives: the single hardest entry, perturbed
            "n_hard": 1,
            "perturbed": 4,
            "log_every": 1,
            "checkpoint_every": 100,
            "lr": 0.5,
            "warmup_steps": 0,
            "out": str(out),
        }
    )


def rank_main(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    train(config(Path(root) / "ddp"), show_progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp-simclr")
    mp.start_processes(rank_main, args=(free_port(), str(root)), nprocs=2, start_method="spawn")
    train(config(root / "single"), show_progress=False)
    return root


def test_two_ranks_match_one_process(runs: Path) -> None:
    losses = {
        name: [json.loads(line)["loss"] for line in (runs / name / "metrics.jsonl").open()]
        for name in ("single", "ddp")
    }
    assert len(losses["single"]) == 4
    assert losses["ddp"] == pytest.approx(losses["single"], rel=2e-5)
    a = torch.load(runs / "ddp" / "checkpoint.pt", weights_only=False)
    b = torch.load(runs / "single" / "checkpoint.pt", weights_only=False)
    assert a["world_size"] == 2 and a["step"] == b["step"] == 4
    floats = [k for k, v in b["online"].items() if v.is_floating_point()]
    diff = sum(float(((a["online"][k] - b["online"][k]) ** 2).sum()) for k in floats)
    norm = sum(float((b["online"][k] ** 2).sum()) for k in floats)
    assert (diff / norm) ** 0.5 < 1e-4
    # the backbone's running statistics are the global batch's on both
    key = "encoder.backbone.bn1.running_var"
    assert torch.allclose(a["online"][key], b["online"][key], rtol=1e-4)
