"""Exclusive file locks that end with their process: one job per directory.

A lock is ``fcntl.flock`` on a file inside the directory it guards (``RUN/.lock`` for a training
run, ``OUT/.synth.lock`` for a synthetic image folder), taken without waiting: a second job is
refused at once and told who holds the directory. ``flock`` because

- the kernel releases it when the process ends, however it ends (SIGKILL and out-of-memory kills
  included), so a dead job never leaves a stale lock and nothing needs a timeout or a PID check;
- it belongs to the open file, which forked children (DataLoader workers) share; they close
  their copies at once (:func:`os.register_at_fork`), so a worker outliving its killed parent
  cannot keep the directory locked, and programs started with ``exec`` never get it
  (``O_CLOEXEC``);
- it works between processes on one machine and, on Linux, on NFS (emulated with byte-range
  locks).

The file holds its holder's ``PID@host`` so that a refused job can say who is in the way. Its
holder may delete it on release (``remove=True``, for a directory that would otherwise be left
holding nothing but the lock file): a process that locked the file just as it was deleted sees
that the name no longer leads to the file it locked and starts over, so two processes never
both hold the lock. A lock file that is a symbolic link is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import ConfigError

__all__ = ["FileLock", "Locked", "describe_holder", "holder"]

#: Descriptors of the locks this process holds, closed in forked children (see the module
#: docstring): a flock is shared by every copy of its descriptor.
_held: set[int] = set()

#: How often a refused process reads the holder's ``PID@host`` again while it is still empty
#: (the holder writes it right after locking), 5 ms apart.
_HOLDER_READS = 20
#: Attempts to lock a file that keeps being deleted under us by its holders.
_ATTEMPTS = 100


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class Locked(Exception):
    """The lock is held by another process.

    Attributes:
        path: The lock file.
        holder: The holder's ``PID@host`` (``""`` when it could not be read).
    """

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {describe_holder(holder)}")
        self.path = path
        self.holder = holder


class FileLock:
    """An exclusive, non-blocking lock on the file ``path``, taken with :meth:`acquire`.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / ".lock"
        >>> lock = FileLock(path).acquire()
        >>> holder(path) == f"{os.getpid()}@{socket.gethostname()}"
        True
        >>> lock.release(remove=True); path.exists()
        False
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (never in a forked child)."""
        return self._fd is not None and self._fd in _held

    def acquire(self) -> FileLock:
        """Take the lock without waiting and write this process's ``PID@host`` into the file.

        The file is created if missing; its directory must exist.

        Returns:
            This lock.

        Raises:
            Locked: Another process holds it.
            ConfigError: The lock file is a symbolic link.
            OSError: The file cannot be created or opened (``FileNotFoundError`` when the
                directory is gone).
        """
        for _ in range(_ATTEMPTS):
            fd = _open(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _read_holder(fd)
                os.close(fd)
                raise Locked(self.path, who) from None
            except BaseException:
                os.close(fd)
                raise
            if _names_file(self.path, fd):
                break
            os.close(fd)  # its holder deleted it between our open and flock: lock the new one
        else:  # pragma: no cover - needs another process deleting the file 100 times in a row
            raise OSError(errno.EAGAIN, "the lock file keeps being replaced", str(self.path))
        with contextlib.suppress(OSError):  # a full disk: the lock holds, only unnamed
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _held.add(fd)
        return self

    def release(self, *, remove: bool = False) -> None:
        """Let go of the lock; a no-op when it is not held (or in a forked child).

        Args:
            remove: Also delete the lock file (still holding the lock, so that no other
                process holds the file being deleted).
        """
        fd, self._fd = self._fd, None
        if fd is None or fd not in _held:
            return
        _held.discard(fd)
        try:
            if remove and _names_file(self.path, fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> str | None:
    """Who holds the lock on ``path``.

    Args:
        path: The lock file.

    Returns:
        The holder's ``PID@host`` (``"unknown"`` when the file does not say), or None when the
        lock is free or the file does not exist.
    """
    try:
        fd = _open(path, os.O_RDONLY)
    except (OSError, ConfigError):  # no lock file (or not a plain one): nobody holds it
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(holder: str) -> str:
    """``PID@host`` in words.

    Example:
        >>> describe_holder("4242@node7")
        'PID 4242 on node7'
    """
    pid, _, host = holder.partition("@")
    if not pid:
        return "a process that did not give its PID"
    return f"PID {pid}" + (f" on {host}" if host else "")


def _open(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link, not a lock file: remove it (nothing follows it)"
            ) from None
        raise


def _names_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    then = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino)


def _read_holder(fd: int) -> str:
    for _ in range(_HOLDER_READS):
        with contextlib.suppress(OSError):
            text = os.pread(fd, 256, 0).decode(errors="replace").strip()
            if text:
                return text
        time.sleep(0.005)
    return ""
