"""Fault injection: real training processes killed at random moments end where an
uninterrupted run ends, bit for bit.

Each trial starts ``syn2co-train run`` as a process group of its own (the training process and
its two DataLoader workers), kills it, and resumes. SIGKILL gives no chance to react: what
survives is what was on disk, so these trials check that every write is atomic and that a
resume rebuilds every random stream. Some kills wait for a checkpoint's temporary file to
appear, so that they land inside ``torch.save``; the others come at random times. The signals a
scheduler sends (SIGTERM, SIGUSR1) and Ctrl-C (SIGINT), sent to the whole group, must each end
the run with a checkpoint and the exit code 128 + the signal number.

Then the faults of a cluster, each ending in one line with nothing lost: a disk full at the
start or during the run (a tmpfs where this runs as root, else a file size limit), a signal
at start-up, a flipped bit in a checkpoint, a diverging run.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.checkpoint import named_tensors
from reference_trainer.cli import app
from reference_trainer.config import save_config
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


# --------------------------------------------------------------------------------------------
# Faults a cluster brings: a full disk, a signal at start-up, a flipped bit, a diverging run
# --------------------------------------------------------------------------------------------


def error_lines(stderr: bytes) -> list[str]:
    """The ``error:`` and ``interrupted:`` lines of a run's stderr (there must be no traceback)."""
    text = stderr.decode()
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith(("error:", "interrupted:"))]


def run_to_end(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "reference_trainer.cli", *args],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
        check=False,
        **kwargs,
    )


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of a given size (root only); skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` bytes free."""
    filler = folder / "filler"
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        while shutil.disk_usage(folder).free > leave:
            fh.write(b"\0" * min(1 << 20, max(4096, shutil.disk_usage(folder).free - leave)))
            fh.flush()
    return filler


def test_a_fresh_run_on_a_full_disk_is_refused_before_it_writes(small_fs: Any) -> None:
    fs = small_fs("256k")
    run = fs / "run"
    done = run_to_end(run_args(run))
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert f"--out {run}: not enough free space: the run's checkpoints need about" in line
    assert "free on its file system" in line
    assert list(fs.iterdir()) == []  # no directory, no empty .lock


@pytest.mark.parametrize("room", ["none", "part of a checkpoint"])
def test_a_disk_that_fills_during_the_run_costs_nothing(
    small_fs: Any, tmp_path: Path, reference: Path, room: str
) -> None:
    """The disk fills while the run trains: it stops in one line naming the file it could not
    write, its last checkpoint intact; freed, the run resumes and ends as if nothing happened.
    With a tmpfs (root) the disk really fills (ENOSPC), leaving no room (the write is refused
    before it starts) or room for part of a checkpoint (torch.save fails half-way); elsewhere
    the child's file size limit (RLIMIT_FSIZE: EFBIG) stands in for it."""
    try:
        fs = small_fs("16m")
    except pytest.skip.Exception:
        if room != "none":
            raise
        fs = None
    run = (fs or tmp_path) / "run"
    first = run_to_end([*run_args(run), "--stop-at", "3"])
    assert first.returncode == 0, first.stderr.decode()
    checkpoint = (run / "checkpoint.pt").read_bytes()
    if fs is not None:
        process = start(run, resume=True)
        try:
            wait_for(lambda: logged_steps(run) > 3, process)
            # part of a checkpoint: more than the size it is estimated at, less than it takes
            filler = fill(fs, leave=0 if room == "none" else len(checkpoint) - 40_000)
            _, err = process.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        filler.unlink()
        expected = "No space left on device"
    else:
        limit = len(checkpoint) // 2  # config and logs fit, a checkpoint does not

        def limit_files() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        # no workers: the limit would also stop them passing batches through shared memory
        args = [*run_args(run), "--resume", str(run), "--workers", "0"]
        process = subprocess.Popen(
            [sys.executable, "-m", "reference_trainer.cli", *args],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=limit_files,
            start_new_session=True,
        )
        try:
            _, err = process.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        expected = "File too large"
    assert process.returncode == 1, err.decode()
    (line,) = error_lines(err)
    assert f"cannot write {run}" in line and expected in line, line
    assert temporaries(run) == []
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # whole, and a checkpoint
    assert 3 <= state["step"] < STEPS
    if state["step"] == 3:
        assert (run / "checkpoint.pt").read_bytes() == checkpoint
    finish(run)
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)


def test_eval_on_a_full_disk_is_refused_before_it_computes(small_fs: Any, reference: Path) -> None:
    fs = small_fs("1m")
    fill(fs, leave=16 * 1024)
    out = fs / "knn.json"
    done = run_to_end(["eval", "knn", str(reference), "--out", str(out), "--workers", "0"])
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert f"--out: cannot write the kNN results to {out}: No space left on device" in line
    assert "knn" not in done.stderr.decode().split("error:")[0]  # no progress: nothing computed
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_at_start_up_leaves_a_run_that_continues(
    tmp_path: Path, reference: Path, sig: signal.Signals
) -> None:
    """The signal comes as soon as ``config.yaml`` appears. The run exits with 128 + its number
    and one line, either with a checkpoint (it had started its first step) or with a directory
    that starts again in place; the job script of the docs then finishes the run exactly."""
    run = tmp_path / "run"
    process = start(run, resume=False)
    wait_for(lambda: (run / "config.yaml").exists(), process, every=0.001)
    os.killpg(process.pid, sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err.decode()
    (line,) = error_lines(err)
    if (run / "checkpoint.pt").exists():
        assert f"{sig.name} at step" in line and "checkpoint saved" in line, line
        again = [*run_args(run), "--resume", str(run)]
    else:
        assert f"{sig.name} before the run's first step" in line, line
        assert "start it again in place with the same command or --resume" in line, line
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"]
        again = run_args(run)  # the docs' job script: no checkpoint, the same command
    done = run_to_end(again)
    assert done.returncode == 0, done.stderr.decode()
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)


def test_a_signal_before_the_first_step_exits_with_its_code_and_starts_again(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the process signals itself right after writing ``config.yaml`` (a real
    signal, through the installed handler); ``--resume`` then starts the run again in place."""
    from reference_trainer import engine

    def save_then_signal(*args: Any, **kwargs: Any) -> None:
        save_config(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(engine, "save_config", save_then_signal)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, run_args(run))
    assert result.exit_code == 138, result.output
    assert "interrupted: SIGUSR1 before the run's first step" in " ".join(result.output.split())
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)


def test_a_signal_before_the_directory_is_claimed_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reference_trainer import engine

    build = engine.build_components

    def build_then_signal(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        return build(*args, **kwargs)

    monkeypatch.setattr(engine, "build_components", build_then_signal)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, run_args(run))
    assert result.exit_code == 143, result.output
    assert "SIGTERM before the run started: nothing was written" in " ".join(result.output.split())
    assert not run.exists()


def test_a_flipped_bit_stops_the_resume_and_the_good_copy_finishes_exactly(
    tmp_path: Path, reference: Path
) -> None:
    run = tmp_path / "run"
    first = run_to_end([*run_args(run), "--stop-at", "4"])
    assert first.returncode == 0, first.stderr.decode()
    path = run / "checkpoint.pt"
    good = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    flipped = bytearray(good)
    flipped[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0x10
    path.write_bytes(bytes(flipped))
    done = run_to_end([*run_args(run), "--resume", str(run)])
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert f"{path} is corrupt: its record {info.filename} does not match the checksum" in line
    assert path.read_bytes() == bytes(flipped) and logged_steps(run) == 4  # nothing written
    path.write_bytes(good)  # another copy
    finish(run)
    assert_same_state(reference, run, ("method.queue1.keys",))
    assert records(run) == records(reference)


def test_a_diverging_run_stops_with_a_finite_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*run_args(run), "--lr", "1000", "--warmup-steps", "0", "--steps", "40"]
    done = run_to_end(args)
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert "NaN or infinite" in line and "lower --lr" in line
    assert temporaries(run) == [] and holder(run) is None
    if (run / "checkpoint.pt").exists():
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert f"the last good checkpoint is {run / 'checkpoint.pt'} (step {state['step']})" in line
        for name, tensor in named_tensors(state):
            assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), name
        export = run_to_end(["export", str(run)])
        assert export.returncode == 0, export.stderr.decode()
    else:
        assert "no checkpoint was written yet" in line
