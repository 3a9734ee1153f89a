"""The hardness diagnostics of a step measure the banks its loss used: the queues are read
before they take the step's own keys (a bank is a view of its queue, and the step's keys hold
each query's positive)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from rich.console import Console

from reference_trainer.config import TrainConfig
from reference_trainer.diagnostics import hardness
from reference_trainer.engine import Trainer


@pytest.mark.parametrize("method", ["moby", "mocov2"])
def test_hardness_reads_the_banks_before_the_step_enqueues(tmp_path: Path, method: str) -> None:
    cfg = TrainConfig.from_dict(
        {
            "method": method,
            "arch": "deit_s",
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "proj_hidden": 32,
            "proj_dim": 16,
            "batch_size": 16,
            "queue_size": 16,  # each step replaces the whole queue
            "builtin_size": 64,
            "steps": 2,
            "workers": 0,
            "negatives": "synco-v2",
            "out": str(tmp_path / "run"),
        }
    )
    trainer = Trainer(cfg, torch.device("cpu"), Console(quiet=True))
    try:
        batch = next(trainer.data.iterate(0))
        banks_before = {b.data_ptr(): b.detach().clone() for b in trainer.parts.method.buffers()}
        result = trainer.train_step(batch.view1, batch.view2, measure_hardness=True)
        direction = result.output.directions[0]
        before = banks_before[direction.bank.data_ptr()]  # the queue this direction read
        assert not torch.equal(before, direction.bank)  # the step's keys replaced the queue
        expected = hardness(
            dataclasses.replace(direction, bank=before), trainer.spec, None, generated=False
        )
        assert result.hardness == pytest.approx(expected)
        after = hardness(direction, trainer.spec, None, generated=False)
        assert after["hardness/hard_real/mean"] != pytest.approx(
            expected["hardness/hard_real/mean"]
        )
    finally:
        trainer.close()
