"""One run per run directory: the lock of :mod:`reference_trainer.locks` on ``RUN/.lock``, held
for the lifetime of the training process.

The lock ends with its process, however it ends, and DataLoader workers do not keep it (see
:mod:`reference_trainer.locks`). The file stays after the run and says who held it last
(``PID@host``).
"""

from __future__ import annotations

from pathlib import Path

from . import locks
from .errors import ConfigError

__all__ = ["LOCK_NAME", "RunLock", "check_free", "holder"]

LOCK_NAME = ".lock"


class RunLock:
    """The exclusive lock of one run directory, taken with :meth:`acquire`.

    Example:
        >>> import os, socket, tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> lock = RunLock(run).acquire()
        >>> holder(run) == f"{os.getpid()}@{socket.gethostname()}"
        True
        >>> lock.release(); holder(run) is None
        True
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = locks.FileLock(run_dir / LOCK_NAME)

    def acquire(self) -> RunLock:
        """Take the lock without waiting and write this process's ``PID@host`` into it.

        Returns:
            This lock.

        Raises:
            ConfigError: Another process holds it (the message names the directory and it).
        """
        try:
            self._lock.acquire()
        except locks.Locked as e:
            raise ConfigError(_in_use(self.run_dir, e.holder)) from None
        return self

    def release(self, *, remove: bool = False) -> None:
        """Let go of the lock (the file stays: it names the last holder).

        Args:
            remove: Also delete the lock file (a claim that failed removes the file it made).
        """
        self._lock.release(remove=remove)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: Path) -> str | None:
    """``PID@host`` of the process holding ``run_dir``'s lock, or None when it is free.

    Args:
        run_dir: The run directory.

    Returns:
        The holder, or None.
    """
    return locks.holder(run_dir / LOCK_NAME)


def check_free(run_dir: Path) -> None:
    """Raise the one-line error of :meth:`RunLock.acquire` if another process holds the lock.

    Args:
        run_dir: The run directory.

    Raises:
        ConfigError: The lock is held.
    """
    who = holder(run_dir)
    if who is not None:
        raise ConfigError(_in_use(run_dir, who))


def _in_use(run_dir: Path, who: str) -> str:
    return (
        f"--out {run_dir} is in use by another run ({locks.describe_holder(who)}); wait for it "
        f"to end, stop it, or choose another --out"
    )
