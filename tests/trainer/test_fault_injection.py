"""Fault injection: real training processes killed at random moments end where an
uninterrupted run ends, bit for bit.

Each trial starts ``syn2co-train run`` as a process group of its own (the training process and
its two DataLoader workers), kills it, and resumes. SIGKILL gives no chance to react: what
survives is what was on disk, so these trials check that every write is atomic and that a
resume rebuilds every random stream. Some kills wait for a checkpoint's temporary file to
appear, so that they land inside ``torch.save``; the others come at random times. The signals a
scheduler sends (SIGTERM, SIGUSR1) and Ctrl-C (SIGINT), sent to the whole group, must each end
the run with a checkpoint and the exit code 128 + the signal number.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.runlock import holder

from .conftest import TINY_DEIT_2, assert_same_state, child_env, records, wait_for

pytestmark = pytest.mark.slow

STEPS = 14


def run_args(out: Path) -> list[str]:
    """MoBY with its drop-path (a depth of 2), synthetic negatives, two workers, and a
    checkpoint every step, so that kills often come close to (or inside) a write."""
    return [
        "run",
        "--out",
        str(out),
        *TINY_DEIT_2,
        "--negatives",
        "synco-v2",
        "--dataset",
        "builtin",
        "--builtin-size",
        "256",  # 4 steps an epoch: the run crosses epoch boundaries
        "--img-size",
        "32",
        "--batch-size",
        "64",  # steps of tens of milliseconds, so that the kills land before the end
        "--queue-size",
        "256",
        "--steps",
        str(STEPS),
        "--workers",
        "2",
        "--log-every",
        "1",
        "--hardness-every",
        "3",
        "--checkpoint-every",
        "1",
    ]


def start(out: Path, *, resume: bool) -> subprocess.Popen[bytes]:
    args = run_args(out) + (["--resume", str(out)] if resume else [])
    return subprocess.Popen(
        [sys.executable, "-m", "reference_trainer.cli", *args],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the workers get the group's signals
    )


def temporaries(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def checkpoint_identity(run: Path) -> tuple[int, int] | None:
    """Which file ``checkpoint.pt`` is: every save renames a new one into place. The inode
    alone is not enough (a file system may give the next file the inode just freed), so its
    modification time in nanoseconds goes with it."""
    try:
        st = os.stat(run / "checkpoint.pt")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def tensorboard_steps(run: Path) -> list[int] | None:
    """The steps TensorBoard shows for the loss (None without tensorboard installed)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars("loss")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(app, run_args(out))
    assert result.exit_code == 0, result.output
    return out


def finish(run: Path) -> None:
    """Resume until the run is done; nothing of the kills is left behind."""
    process = start(run, resume=True)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()
    assert temporaries(run) == []
    assert holder(run) is None


def test_sigkill_at_random_moments_then_resume_is_bit_exact(
    tmp_path: Path, reference: Path
) -> None:
    rng = random.Random(20240611)
    run = tmp_path / "run"
    inside_a_write = []
    for trial in range(4):
        before = checkpoint_identity(run)
        done = torch.load(run / "checkpoint.pt", weights_only=False)["step"] if trial else 0
        process = start(run, resume=trial > 0)
        # this process has trained a step and saved it (so it already removed the temporaries
        # of the previous kill: any temporary from now on is its own)
        wait_for(lambda: checkpoint_identity(run) not in (None, before), process, every=0.005)  # noqa: B023
        if trial % 2 == 0:  # as soon as a checkpoint is being written
            # (a write of these tiny models takes milliseconds: poll often)
            wait_for(
                lambda: any(".checkpoint.pt." in n for n in temporaries(run)), process, every=0.001
            )
        else:  # at a random moment within the next three steps (counted in steps, not
            # seconds, so that a slow machine cannot let the run reach its end first)
            target = done + 1 + rng.randint(0, 2)
            wait_for(lambda: logged_steps(run) >= target, process)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.1))
        if process.poll() is not None:
            break  # it finished before the kill
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        inside_a_write.append(any(".checkpoint.pt." in n for n in temporaries(run)))
        assert holder(run) is None  # the lock died with the process
        state = torch.load(run / "checkpoint.pt", weights_only=False)  # never a torn file
        assert done < state["step"] < STEPS
    assert len(inside_a_write) >= 3, "too few kills landed before the run ended"
    assert any(inside_a_write), "no kill landed inside a checkpoint write"
    finish(run)
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)
    steps = tensorboard_steps(run)
    assert steps is None or steps == list(range(1, STEPS + 1))


def test_stop_signals_to_the_process_group_checkpoint_and_resume_exactly(
    tmp_path: Path, reference: Path
) -> None:
    """SIGTERM, then SIGUSR1, then SIGINT to the whole group (workers included), as a
    scheduler or a terminal sends them; each stop writes a checkpoint at the step it reached."""
    run = tmp_path / "run"
    for i, sig in enumerate((signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)):
        process = start(run, resume=i > 0)
        done = torch.load(run / "checkpoint.pt", weights_only=False)["step"] if i else 0
        wait_for(lambda: logged_steps(run) > done, process)  # noqa: B023
        os.killpg(process.pid, sig)
        _, err = process.communicate(timeout=120)
        message = err.decode()
        assert process.returncode == 128 + sig, message
        assert "DataLoader worker" not in message and "Traceback" not in message, message
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        assert f"{sig.name} at step {state['step']}; checkpoint saved" in message
        assert done < state["step"] < STEPS
        assert logged_steps(run) == state["step"]  # the log holds every step up to the stop
    finish(run)
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)
