"""Crash-safe file writes: a reader sees the previous complete file or the new one, never a part.

Used for checkpoints, synthetic images and their manifest, and plots, so that a run killed at
any moment (or a full disk) never leaves a truncated file that a resume would trust.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic with respect to threads)
    os.umask(mask)
    return mask


def _plain_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave: the existing file's, or 0o666 - umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, sync_dir: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a hidden temporary file beside it, fsync,
    then rename over ``path``.

    The temporary file is named ``.<name>.<random>.tmp`` (so a folder scan can recognise and
    remove one left by a killed process) and is removed if ``write`` raises. The file gets the
    permissions a plain ``open(path, "w")`` gives: those of the file it replaces, or
    ``0o666`` minus the umask for a new one (``0o644`` under the usual umask ``022``), not the
    owner-only ``0o600`` of a temporary file.

    Args:
        path: The file to write; its directory is created if missing.
        write: Writes the whole content to the binary file it is given.
        sync_dir: Also fsync the directory so that the rename itself survives a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _plain_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def unwritable_reason(path: Path) -> str | None:
    """Why ``path`` could not be written now, or None when it can.

    Tries the real thing without leaving a trace: an anonymous temporary file in the directory
    that would hold ``path`` (or in its nearest existing ancestor, where the missing folders
    would be made). So a read-only mount, missing permissions (also for root, through the
    filesystem's own answer) and a file where a folder should be are all caught before any
    work is done.

    Args:
        path: The file about to be written.

    Returns:
        A short reason (``"Permission denied"``, ``"Read-only file system"``,
        ``"<p> is not a directory"``, ``"<path> is a directory"``), or None.
    """
    if path.is_dir():
        return f"{path} is a directory"
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def remove_stale_temporaries(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files that :func:`write_atomic` left for ``names`` in ``directory``.

    A process killed during a write (SIGKILL, power loss) leaves its ``.<name>.<random>.tmp``
    behind; call this where no other process writes those files (the run directory under its
    lock). Only files of exactly that pattern are removed.

    Returns:
        The removed files.
    """
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(name) for name in names) + r")\.[A-Za-z0-9_]+\.tmp"
    )
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and pattern.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
