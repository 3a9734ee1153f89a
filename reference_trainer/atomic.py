"""Crash-safe file writes: a reader sees the previous complete file or the new one, never a part.

Used for checkpoints, synthetic images and their manifest, and plots, so that a run killed at
any moment (or a full disk) never leaves a truncated file that a resume would trust.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: The errors of a full file system: no space left, the user's quota, the per-file size limit.
SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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


def free_bytes(path: Path) -> int | None:
    """Free space for an unprivileged user on the file system that holds ``path`` (or would:
    its nearest existing ancestor), or None when it cannot be told."""
    folder = path
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def human_bytes(n: float) -> str:
    """A byte count for people.

    Example:
        >>> human_bytes(0), human_bytes(1536), human_bytes(3.2e9)
        ('0 B', '1.5 KB', '3.2 GB')
    """
    value = float(n)
    if abs(value) < 1000:
        return f"{value:.0f} B"
    units = ("KB", "MB", "GB", "TB")
    index = 0
    value /= 1000
    while abs(value) >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{value:.1f} {units[index]}"


#: What a full file system's message ends with (a caller that knows better replaces it).
RETRY_HINT = "; free some space (or write elsewhere) and rerun"


def space_error(path: Path, needed: int | None, cause: OSError | None = None) -> OSError:
    """The one-line ``OSError`` of a write of ``path`` that does not fit: the path, the space it
    needs (when known) and the space free on its file system."""
    code = cause.errno if cause is not None and cause.errno is not None else errno.ENOSPC
    reason = (cause.strerror if cause is not None else None) or os.strerror(code)
    if code == errno.EFBIG:
        return OSError(
            code,
            f"cannot write {path}: {reason} (beyond the file size limit of this process, "
            f"ulimit -f, or of its file system); raise the limit or write elsewhere, and rerun",
        )
    free = free_bytes(path.parent)
    parts = [f"cannot write {path}: {reason}"]
    if needed is not None:
        parts.append(f"it needs about {human_bytes(needed)}")
    if free is not None:
        parts.append(f"{human_bytes(free)} free on its file system")
    return OSError(code, "; ".join(parts) + RETRY_HINT)


def write_error(path: Path, cause: OSError, needed: int | None = None) -> OSError:
    """``cause`` (raised while writing ``path``) as a one-line ``OSError`` of the same type that
    names the path (and, for a full file system, the space needed and free)."""
    if cause.errno in SPACE_ERRORS:
        return space_error(path, needed, cause)
    reason = cause.strerror or str(cause)
    return OSError(cause.errno or errno.EIO, f"cannot write {path}: {reason}")


def write_atomic(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    sync_dir: bool = True,
    size: int | None = None,
) -> None:
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
        size: The bytes about to be written, when known: a file system with less free space
            is refused before anything is written.

    Raises:
        OSError: The file cannot be written (full disk, quota, read-only file system,
            permissions): one line naming ``path`` and, for a full file system, the space it
            needs and the space free. The previous file is intact.
    """
    if size is not None:
        free = free_bytes(path.parent)
        if free is not None and free < size:
            raise space_error(path, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _plain_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e, size) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise write_error(path, e, size) from None
        raise
    if sync_dir:
        fsync_dir(path.parent)


#: The free space :func:`unwritable_reason` asks for when the size is not known: room for a
#: results file or two (a full file system is caught before the work, not after it).
MIN_FREE_BYTES = 1 << 20


def unwritable_reason(path: Path, size: int = MIN_FREE_BYTES) -> str | None:
    """Why ``path`` could not be written now, or None when it can.

    Tries the real thing without leaving a trace: an anonymous temporary file in the directory
    that would hold ``path`` (or in its nearest existing ancestor, where the missing folders
    would be made). So a read-only mount, missing permissions (also for root, through the
    filesystem's own answer) and a file where a folder should be are all caught before any
    work is done; so is a file system with less than ``size`` bytes free.

    Args:
        path: The file about to be written.
        size: The free space it needs.

    Returns:
        A short reason (``"Permission denied"``, ``"Read-only file system"``,
        ``"<p> is not a directory"``, ``"<path> is a directory"``, ``"No space left on
        device (...)"``), or None.
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
    free = free_bytes(folder)
    if free is not None and free < size:
        return (
            f"{os.strerror(errno.ENOSPC)} ({human_bytes(free)} free, about {human_bytes(size)} "
            f"needed)"
        )
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
