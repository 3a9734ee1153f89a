"""What a batch job's log shows, and how a run stops when its input or one of its ranks does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from reference_trainer import engine
from reference_trainer.cli import app
from reference_trainer.data.pipeline import TrainData
from reference_trainer.engine import Interrupted, TrainSummary, train

from .conftest import assert_same_state, become_rank, free_port, records, tiny_run
from .test_ddp import config as two_rank_config


def test_progress_lines_without_a_terminal(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, tiny_run(tmp_path / "run", "--steps", "7", "--log-every", "1", "--progress-every", "3")
    )
    assert result.exit_code == 0, result.output
    lines = re.findall(r"^step (\d+)/7 \(\d+%\) \| epoch \d+ \| loss \d", result.output, re.M)
    assert lines == ["3", "6", "7"]  # every 3 steps, and the last


@pytest.mark.parametrize("main", [True, False])
def test_only_the_main_rank_prints_the_summary(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, main: bool
) -> None:
    summary = TrainSummary(tmp_path, 4, 4, 1.0, 10.0, 1.0, 0, main)
    monkeypatch.setattr(engine, "train", lambda cfg, console: summary)
    result = runner.invoke(app, tiny_run(tmp_path / "run", "--steps", "4"))
    assert result.exit_code == 0, result.output
    assert ("pretraining done" in result.output) is main


def test_a_worker_dying_while_a_batch_is_awaited_keeps_the_last_step(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error PyTorch raises when a worker is killed (e.g. by the out-of-memory killer)."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    common = ["--steps", "6", "--log-every", "4", "--checkpoint-every", "100"]
    assert runner.invoke(app, tiny_run(straight, *common)).exit_code == 0

    real_iterate = TrainData.iterate

    def dying(self: TrainData, step: int) -> Iterator[Any]:
        batches = real_iterate(self, step)
        for _ in range(3):
            yield next(batches)
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")

    with monkeypatch.context() as patch:
        patch.setattr(TrainData, "iterate", dying)
        result = runner.invoke(app, tiny_run(run, *common))
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: a DataLoader worker died (DataLoader worker (pid(s) 4242)")
    assert "checkpoint saved at step 3" in line
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    assert runner.invoke(app, ["run", "--resume", str(run)]).exit_code == 0
    assert_same_state(straight, run)
    assert records(run) == records(straight)


# --------------------------------------------------------------------------------------------
# Several ranks: a signal reaching one rank stops all of them at the same step
# --------------------------------------------------------------------------------------------


def rank_main(rank: int, port: int, root: str) -> None:
    become_rank(rank, port)
    outcome: dict[str, Any] = {}
    try:
        # a long run of the tiny two-rank model: it stops on the signal only
        cfg = two_rank_config(Path(root) / "run", "moby").updated(
            {"steps": 10_000, "log_every": 4, "checkpoint_every": 10_000}
        )
        train(cfg, show_progress=False)
    except Interrupted as e:
        outcome = {"signum": e.signum, "message": str(e)}
    (Path(root) / f"rank{rank}.json").write_text(json.dumps(outcome))


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_at_one_boundary(tmp_path: Path) -> None:
    ctx = mp.start_processes(
        rank_main, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=False
    )
    deadline = time.monotonic() + 300
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 4):
            assert time.monotonic() < deadline, "the ranks did not start training"
            time.sleep(0.05)
        os.kill(ctx.pids()[1], signal.SIGTERM)  # the rank that does not write
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "the ranks did not stop together"
    finally:
        for pid in ctx.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [o["signum"] for o in outcomes] == [signal.SIGTERM, signal.SIGTERM]
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"]
    assert step % 4 == 0  # the first --log-every boundary after the signal
    assert all(f"SIGTERM at step {step};" in o["message"] for o in outcomes)
    assert [r["step"] for r in records(tmp_path / "run")] == list(range(1, step + 1))
