"""A run directory belongs to one run: locked while it trains, never mixed with another run's
files, and cleaned of what a killed run left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.runlock import holder

from .conftest import child_env, tiny_run, train_command, wait_for


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error:"), output
    return lines[-1]


@pytest.mark.slow
def test_a_second_run_on_a_running_directory_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen(
        train_command(run, "--steps", "100000", "--checkpoint-every", "100000"),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists(), first)  # it trains
        result = runner.invoke(app, [*tiny_run(run), "--steps", "2"])
        line = one_line_error(result.output)
        assert result.exit_code == 1
        assert f"--out {run} is in use by another run (PID {first.pid}" in line
        logged = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in logged] == list(range(1, len(logged) + 1))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # the lock died with its process; the run had no checkpoint yet: nothing to resume, and
    # a new run does not append to its logs
    assert holder(run) is None
    result = runner.invoke(app, [*tiny_run(run), "--steps", "2"])
    assert result.exit_code == 1
    assert "stopped before its first checkpoint" in one_line_error(result.output)


def test_logs_without_a_checkpoint_are_never_appended_to(runner: CliRunner, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    result = runner.invoke(app, [*tiny_run(run), "--steps", "2"])
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert f"--out {run} holds metrics.jsonl of a run that stopped before its first" in line
    assert "start over with an empty --out" in line
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'


def test_resume_removes_the_temporaries_of_interrupted_writes(
    runner: CliRunner, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert runner.invoke(app, [*tiny_run(run, "--steps", "4"), "--stop-at", "2"]).exit_code == 0
    stale = run / ".checkpoint.pt.k3j_x9q2.tmp"  # what a kill during torch.save leaves
    stale.write_bytes(b"\0" * 1_000_000)
    kept = [run / ".checkpoint.pt.tmp", run / "notes.tmp", run / "checkpoint.pt.k3j_x9q2.tmp"]
    for path in kept:  # not the atomic writer's pattern: not ours to remove
        path.write_text("keep")
    result = runner.invoke(app, ["run", "--resume", str(run), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert all(path.read_text() == "keep" for path in kept)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4


def test_tensorboard_shows_each_step_once_after_a_resume(runner: CliRunner, tmp_path: Path) -> None:
    """A run logs steps 5-6 after its step-4 checkpoint, then dies; the resume logs 5-8."""
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = tiny_run(run, "--steps", "8", "--log-every", "1")
    assert runner.invoke(app, [*args, "--stop-at", "4"]).exit_code == 0
    shutil.copy(run / "checkpoint.pt", tmp_path / "step4.pt")
    time.sleep(1.1)  # event files are named by the second they were opened in
    resume = ["run", "--resume", str(run), "--out", str(run)]
    assert runner.invoke(app, [*resume, "--stop-at", "6"]).exit_code == 0
    shutil.copy(tmp_path / "step4.pt", run / "checkpoint.pt")  # the step-6 one never made it
    time.sleep(1.1)
    assert runner.invoke(app, resume).exit_code == 0

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in logged] == [r["step"] for r in lines] == list(range(1, 9))
    assert [value for _, value in logged] == pytest.approx([r["loss"] for r in lines], rel=1e-6)
