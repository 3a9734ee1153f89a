"""The file lock of run and synth directories (reference_trainer.locks), held by real processes:
refused while held, named by its holder, released by the kernel when the holder is killed, and
not kept by forked children."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reference_trainer import locks
from reference_trainer.errors import ConfigError
from reference_trainer.locks import FileLock, Locked, describe_holder, holder

from .conftest import child_env

#: Takes the lock on argv[1] and prints a PID once it holds it: its own, or with "fork" the PID
#: of a child it forked afterwards (as a DataLoader starts its workers), which outlives it.
HOLD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from reference_trainer.locks import FileLock

    lock = FileLock(Path(sys.argv[1])).acquire()
    if sys.argv[2] == "fork":
        child = os.fork()
        if child == 0:
            time.sleep(300)
            os._exit(0)
        print(child, flush=True)
    else:
        print(os.getpid(), flush=True)
    time.sleep(300)
    """
)


Hold = Callable[..., tuple["subprocess.Popen[bytes]", int]]


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    """Start holders of ``tmp_path/.lock``; kill them (and their children) at the end."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(mode: str = "plain") -> tuple[subprocess.Popen[bytes], int]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(tmp_path / ".lock"), mode],
            env=child_env(),
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        pid = int(process.stdout.readline())  # printed once it holds the lock
        started.append((process, pid))
        return process, pid

    yield start
    for process, pid in started:
        for target in {process.pid, pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        process.wait()


def test_a_held_lock_is_refused_and_names_its_holder(tmp_path: Path, hold: Hold) -> None:
    path = tmp_path / ".lock"
    process, _ = hold()
    who = f"{process.pid}@{socket.gethostname()}"
    with pytest.raises(Locked) as refused:
        FileLock(path).acquire()
    assert refused.value.holder == who and refused.value.path == path
    assert describe_holder(who) == f"PID {process.pid} on {socket.gethostname()}"
    assert holder(path) == who
    assert path.read_text() == who + "\n"  # readable by anyone, e.g. with cat


def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path: Path, hold: Hold) -> None:
    path = tmp_path / ".lock"
    process, _ = hold()
    assert holder(path) is not None
    process.send_signal(signal.SIGKILL)  # no handler, no cleanup: only the kernel can release
    process.wait()
    assert holder(path) is None
    lock = FileLock(path).acquire()
    assert holder(path) == f"{os.getpid()}@{socket.gethostname()}"
    lock.release()
    assert holder(path) is None


def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path, hold: Hold) -> None:
    path = tmp_path / ".lock"
    process, child = hold("fork")
    process.send_signal(signal.SIGKILL)
    process.wait()
    os.kill(child, 0)  # the forked child still runs, holding a copy of every descriptor...
    lock = FileLock(path).acquire()  # ...but not the lock
    lock.release()


def test_in_one_process_too_a_second_lock_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with FileLock(path) as first:
        assert first.held
        with pytest.raises(Locked):
            FileLock(path).acquire()
    assert not first.held
    FileLock(path).acquire().release(remove=True)
    assert not path.exists()


def test_a_lock_file_deleted_by_its_holder_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder deletes the lock file on release just after another process opened it: that
    process must not hold the deleted file while a third one locks a new file of that name."""
    path = tmp_path / ".lock"
    first = FileLock(path).acquire()
    opened = locks._open

    def holder_leaves_after_open(file: Path, flags: int) -> int:
        fd = opened(file, flags)
        if first.held:
            first.release(remove=True)
        return fd

    monkeypatch.setattr(locks, "_open", holder_leaves_after_open)
    second = FileLock(path).acquire()
    monkeypatch.undo()
    assert path.exists() and holder(path) == f"{os.getpid()}@{socket.gethostname()}"
    with pytest.raises(Locked):
        FileLock(path).acquire()
    second.release()


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    (tmp_path / ".lock").symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        FileLock(tmp_path / ".lock").acquire()
    assert target.read_text() == "mine"
