"""File operations of the output directory that cannot leave it: every one is made relative to
an open directory (``dir_fd``) on a name without ``/``, never through a symbolic link."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, one_line

FileKind = Literal["file", "folder", "link", "other"]

#: Words for a :data:`FileKind` in messages.
WHAT: dict[FileKind, str] = {
    "file": "a file",
    "folder": "a folder",
    "link": "a symbolic link",
    "other": "a special file",
}


def kind(path: Path | str, *, dir_fd: int | None = None) -> FileKind | None:
    """What is at ``path``, without following a link there.

    Args:
        path: A path, or a name in ``dir_fd``.
        dir_fd: The directory ``path`` is relative to.

    Returns:
        The kind, or None when nothing is there.

    Raises:
        ConfigError: ``path`` cannot be inspected (one line naming it).
    """
    try:
        mode = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise cannot("read", path, e) from None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def cannot(action: str, path: Path | str, error: BaseException, hint: str = "") -> ConfigError:
    """The one-line error of a failed file operation.

    Args:
        action: What was tried (``write``, ``read``, ``create``, ...).
        path: The file or folder, as the user knows it.
        error: The ``OSError``.
        hint: What to do, appended after ``; ``.

    Returns:
        ``cannot ACTION PATH: REASON[; HINT]``.
    """
    reason = error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)
    return ConfigError(f"cannot {action} {path}: {reason}" + (f"; {hint}" if hint else ""))


def open_folder(path: Path, *, follow: bool = False) -> int:
    """Open a folder to work inside it.

    Args:
        path: The folder.
        follow: Allow ``path`` itself to be a symbolic link (only for the directory the user
            named).

    Returns:
        A descriptor of the folder.

    Raises:
        OSError: ``ELOOP`` or ``ENOTDIR`` when it is a link (without ``follow``) or no folder.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    return os.open(path, flags)


def is_link_error(error: OSError) -> bool:
    """Whether ``error`` says that a path was a symbolic link or not a folder.

    Args:
        error: The error of :func:`open_folder` or of an ``O_NOFOLLOW`` open.

    Returns:
        True for ``ELOOP`` and ``ENOTDIR``.
    """
    return error.errno in (errno.ELOOP, errno.ENOTDIR)


def inside(root: str, folder: Path) -> bool:
    """Whether ``folder``, links resolved, is ``root`` or below it.

    Args:
        root: The output directory, links resolved (:func:`os.path.realpath`).
        folder: A folder about to be worked in.

    Returns:
        True when it is.
    """
    real = os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def remove_file(folder: int, name: str) -> bool:
    """Delete the regular file ``name`` of the open folder; anything else is left.

    Args:
        folder: The folder's descriptor.
        name: A name in it.

    Returns:
        Whether a file was deleted.
    """
    if kind(name, dir_fd=folder) != "file":
        return False
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    return True


def write_new(folder: int, name: str, data: bytes) -> None:
    """Write ``data`` to a new file ``name`` of the open folder and make it durable.

    The file must not exist (nor a link of that name): nothing is overwritten. On failure the
    part written is deleted.

    Args:
        folder: The folder's descriptor.
        name: The new file's name.
        data: Its content.

    Raises:
        OSError: The file exists or cannot be written (``ENOSPC``, ``EFBIG``, ``EROFS``, ...).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o666, dir_fd=folder)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
        raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write part of it, e.g. up to a size limit).

    Args:
        fd: An open file.
        data: What to write.

    Raises:
        OSError: A write failed.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_durably(fd: int, data: bytes) -> None:
    """Append ``data`` to the file open as ``fd`` (``O_APPEND``), all of it or none of it.

    Args:
        fd: The file, opened for appending.
        data: Whole lines.

    Raises:
        OSError: The write or the fsync failed; the file was cut back to its previous end, so
            that no partial line is left for the next line to be glued onto.
    """
    end = os.fstat(fd).st_size
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise
