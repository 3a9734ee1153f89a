"""Crash-safe file writes: a reader sees the previous complete file or the new one, never a part.

Used for checkpoints, synthetic images and their manifest, and plots, so that a run killed at
any moment (or a full disk) never leaves a truncated file that a resume would trust.
"""

from __future__ import annotations

import contextlib
import os
import re
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


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, sync_dir: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a hidden temporary file beside it, fsync,
    then rename over ``path``.

    The temporary file is named ``.<name>.<random>.tmp`` (so a folder scan can recognise and
    remove one left by a killed process) and is removed if ``write`` raises.

    Args:
        path: The file to write; its directory is created if missing.
        write: Writes the whole content to the binary file it is given.
        sync_dir: Also fsync the directory so that the rename itself survives a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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
