"""One run per run directory: an advisory lock held for the lifetime of the training process.

The lock is ``fcntl.flock`` on ``RUN/.lock``. The kernel releases it when the process ends,
however it ends (SIGKILL and out-of-memory kills included), so a dead run never leaves a stale
lock; forked children (DataLoader workers) do not keep it. The file itself stays and only says
who held it last (``PID@host``). ``flock`` works
between processes on one machine and, on Linux, on NFS (emulated with byte-range locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from .errors import ConfigError

__all__ = ["LOCK_NAME", "RunLock", "check_free", "holder"]

LOCK_NAME = ".lock"

#: Descriptors of the locks this process holds. A forked child (a DataLoader worker) closes its
#: copies at once: a flock belongs to the open file, so a worker outliving its killed parent
#: would otherwise keep the directory locked.
_held: set[int] = set()


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """The exclusive lock of one run directory, taken with :meth:`acquire`.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> lock = RunLock(run).acquire()
        >>> holder(run) == f"{os.getpid()}@{socket.gethostname()}"
        True
        >>> lock.release(); holder(run) is None
        True
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting and write this process's ``PID@host`` into it.

        Raises:
            ConfigError: Another process holds it (the message names the directory and it).
        """
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read(fd)
            os.close(fd)
            raise ConfigError(_in_use(self.run_dir, who)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _held.add(fd)
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is not None and self._fd in _held:  # not in a forked child
            _held.discard(self._fd)
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: Path) -> str | None:
    """``PID@host`` of the process holding ``run_dir``'s lock, or None when it is free."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file: never locked
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_free(run_dir: Path) -> None:
    """Raise the one-line error of :meth:`RunLock.acquire` if another process holds the lock."""
    who = holder(run_dir)
    if who is not None:
        raise ConfigError(_in_use(run_dir, who))


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 256, 0).decode(errors="replace").strip()
    return ""


def _in_use(run_dir: Path, who: str) -> str:
    pid, _, host = who.partition("@")
    where = f"PID {pid}" + (f" on {host}" if host else "")
    return (
        f"--out {run_dir} is in use by another run ({where}); wait for it to end, stop it, "
        f"or choose another --out"
    )
