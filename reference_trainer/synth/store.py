"""The output directory of ``syn2co-train synth``: its layout, its lock, how images are written,
and what a rerun does with what it finds there.

::

    OUT/<folder>/000000.png ...   the images, one folder per class
    OUT/manifest.jsonl            one JSON line per finished image
    OUT/duplicates.json           the near-duplicate report
    OUT/.synth.lock               the lock of the job writing OUT

**One job per directory.** A job creates ``OUT`` and takes its lock (:mod:`reference_trainer.locks`)
before it reads anything there, and holds it to the end; a second job on the same ``OUT`` stops
at once, before loading its model, with one line naming the holder. A job that ends without
having written anything leaves neither a lock file nor the folders it created.

**How an image is written.** Encoded in memory, written to ``OUT/<folder>/.<name>.tmp`` (a new
file, never through a link) and fsynced; then its manifest line is appended and fsynced; then
the temporary file is renamed to ``<name>``. So every listed image is complete (under its name
or, after a kill between the last two steps, as its temporary file), and a file with an image's
name that the manifest does not list was not written by synth. A write that fails (full disk,
file-size limit, read-only filesystem) stops the run with one line naming the file; the
manifest is cut back to its last whole line and lists exactly the finished images.

**What a run does with what it finds**, under the lock, before making anything. Synth deletes
only its own temporary files, and only regular files inside ``OUT`` reached without following a
symbolic link; it never deletes or overwrites a file it did not write:

- a malformed or truncated manifest line is dropped;
- a listed image that is missing is taken from its complete temporary file when there is one,
  else its line is forgotten and the image made again;
- synth's temporary files (``.<index>.png.tmp`` and ``.<index>.png.<random>.tmp`` in class
  folders, ``.manifest.jsonl.<random>.tmp`` and ``.duplicates.json.<random>.tmp`` in ``OUT``)
  are deleted;
- a file with a name synth gives images (``000123.png``: six digits or more) in a class folder
  that the manifest does not list stops the run with one line naming it. Synth did not write it
  (see above), so it is not synth's to delete or overwrite; left in place it would take the
  place of one of synth's images, and the trainer would read it as one, with no manifest line
  to say where it came from. Move it out of ``OUT`` (or delete it) and rerun;
- anything else synth did not write (other files and folders in class folders, hidden files,
  files in ``OUT`` itself) is left alone; the files in class folders and folders that are links
  are named in a note, since the trainer reads class folders whole;
- symbolic links inside ``OUT`` are never followed: a link where synth must read or write (a
  class folder of the manifest or of this run, a listed image, the manifest, the duplicate
  report) stops the run with one line; a linked folder synth does not need is left alone.
  (``OUT`` itself may be a link: the user named it.)

A non-empty ``OUT`` without a manifest was not made by synth: it is refused, and nothing, not
even a lock file, is written into it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..atomic import remove_stale_temporaries, write_atomic
from ..errors import ConfigError
from ..locks import FileLock, Locked, describe_holder
from . import _files
from .jobs import ImageJob

__all__ = [
    "DUPLICATES_NAME",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "OutputDir",
    "Recovery",
    "open_output",
    "read_manifest",
]

#: Name of the manifest file in the output directory (one JSON object per line).
MANIFEST_NAME = "manifest.jsonl"
#: Name of the near-duplicate report in the output directory.
DUPLICATES_NAME = "duplicates.json"
#: Name of the lock file in the output directory.
LOCK_NAME = ".synth.lock"

#: The names synth gives images: the index in six digits or more (:attr:`ImageJob.name`).
_IMAGE = r"(?:\d{6}|[1-9]\d{6,})\.png"
_IMAGE_NAME = re.compile(_IMAGE)
#: Synth's temporary files in a class folder: ``.<image>.tmp`` (see the module docstring) and
#: ``.<image>.<random>.tmp`` (:func:`reference_trainer.atomic.write_atomic`'s pattern).
_TEMPORARY = re.compile(rf"\.{_IMAGE}(?:\.[A-Za-z0-9_]+)?\.tmp")
_LISTED_IN_NOTES = 3


def _temporary(name: str) -> str:
    return f".{name}.tmp"


@dataclass
class Recovery:
    """What a run found in its output directory and put right.

    Attributes:
        dropped_lines: Malformed, truncated or repeated manifest lines dropped.
        missing_files: Manifest lines forgotten because their image is gone.
        restored_files: Listed images renamed into place from their temporary file.
        removed_files: Synth's temporary files deleted.
        left_alone: Files in class folders and linked folders that synth did not write,
            relative to the output directory.
    """

    dropped_lines: int = 0
    missing_files: int = 0
    restored_files: int = 0
    removed_files: int = 0
    left_alone: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """What was put right, in words.

        Returns:
            A comma-separated list (``""`` when nothing was).
        """
        parts = []
        if self.dropped_lines:
            parts.append(f"dropped {self.dropped_lines} incomplete manifest line(s)")
        if self.missing_files:
            parts.append(f"forgot {self.missing_files} manifest line(s) whose file is missing")
        if self.restored_files:
            parts.append(f"restored {self.restored_files} listed image(s) from temporary files")
        if self.removed_files:
            parts.append(f"removed {self.removed_files} unfinished temporary file(s)")
        return ", ".join(parts)

    def note(self) -> str:
        """The files left alone, in words.

        Returns:
            One line (``""`` when there are none).
        """
        if not self.left_alone:
            return ""
        shown = ", ".join(self.left_alone[:_LISTED_IN_NOTES])
        more = len(self.left_alone) - _LISTED_IN_NOTES
        return (
            f"left alone {len(self.left_alone)} file(s) that syn2co-train synth did not write "
            f"({shown}{f' and {more} more' if more > 0 else ''}); the trainer reads every image "
            "in the class folders"
        )


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    file, cls = entry.get("file"), entry.get("class")
    if not isinstance(file, str) or not isinstance(cls, str):
        return False
    parts = file.split("/")
    return (
        len(parts) == 2
        and all(p not in ("", ".", "..") and not p.startswith(".") for p in parts)
        and isinstance(entry.get("index"), int)
        and isinstance(entry.get("seed"), int)
    )


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """The complete, well-formed lines of ``out/manifest.jsonl``.

    A line that does not parse (a run killed while appending it) is left out; files are not
    checked.

    Args:
        out: A synth output directory.

    Returns:
        The lines, parsed (``[]`` when there is no manifest).
    """
    path = out / MANIFEST_NAME
    if not path.is_file():
        return []
    entries: list[dict[str, Any]] = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if _valid_entry(entry):
            entries.append(entry)
    return entries


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class OutputDir:
    """The output directory of one job, locked for the job's lifetime (:func:`open_output`).

    Attributes:
        out: The directory, as the user named it.
        entries: The manifest's lines by file, once :meth:`recover` has read them; :meth:`add`
            adds to it.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = FileLock(out / LOCK_NAME)
        self._created: list[Path] = []  # OUT and its parents that this job made, outermost first
        self._created_folders: list[Path] = []
        self._dir: int | None = None
        self._folders: dict[str, int] = {}
        self._manifest: int | None = None

    # ----------------------------------------------------------------------------------------
    # Opening and closing
    # ----------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory if needed and take its lock, then check again that it is a
        synth directory (another process may have written to it meanwhile).

        Raises:
            ConfigError: Not a synth directory, another job holds it, or it cannot be created.
        """
        self._refuse_foreign()
        try:
            self._make_directories()
            self._take_lock()
            self._refuse_foreign()
            self._dir = _files.open_folder(self.out, follow=True)
        except OSError as e:
            self.close()
            raise _files.cannot("open", self.out, e) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the files, remove the empty folders this job created, and let go of the lock.

        A directory without a manifest (nothing was written, or it is not synth's) does not
        keep the lock file, and is removed, when empty, if this job created it.
        """
        for fd in [self._manifest, *self._folders.values(), self._dir]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._manifest, self._folders, self._dir = None, {}, None
        for folder in reversed(self._created_folders):
            with contextlib.suppress(OSError):  # only an empty folder can be removed
                folder.rmdir()
        self._created_folders = []
        unused = not os.path.lexists(self.out / MANIFEST_NAME)
        self._lock.release(remove=unused)
        if unused:
            for directory in reversed(self._created):
                try:
                    directory.rmdir()  # fails when another job's lock (or anything) is in it
                except OSError:
                    break
        self._created = []

    def _refuse_foreign(self) -> None:
        out = self.out
        if os.path.lexists(out) and not out.exists():
            raise ConfigError(f"--out {out} is a symbolic link to nothing: fix it or remove it")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        if out.is_dir() and not os.path.lexists(out / MANIFEST_NAME):
            try:
                visible = [name for name in os.listdir(out) if not name.startswith(".")]
            except OSError as e:
                raise _files.cannot("read", out, e) from None
            if visible:
                raise ConfigError(
                    f"--out {out} is not empty and holds no {MANIFEST_NAME}: it was not made by "
                    "syn2co-train synth; choose a new or empty directory"
                )

    def _make_directories(self) -> None:
        missing: list[Path] = []
        directory = self.out
        while not os.path.lexists(directory) and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:  # another job made it just now
                continue
            except OSError as e:
                raise _files.cannot("create", directory, e, "choose another --out") from None
            self._created.append(directory)

    def _take_lock(self) -> None:
        for _ in range(10):
            try:
                self._lock.acquire()
                return
            except Locked as e:
                raise ConfigError(
                    f"--out {self.out}: another syn2co-train synth ({describe_holder(e.holder)}) "
                    "is writing to this directory; wait for it to end, or choose another --out"
                ) from None
            except FileNotFoundError:  # a job that wrote nothing removed the directory
                self._make_directories()
            except OSError as e:
                raise _files.cannot("write", self._lock.path, e, "choose another --out") from None
        raise ConfigError(f"--out {self.out} keeps disappearing: is another program removing it?")

    # ----------------------------------------------------------------------------------------
    # Reading what is there
    # ----------------------------------------------------------------------------------------

    def recover(self) -> tuple[dict[str, dict[str, Any]], Recovery]:
        """Read the manifest and make the directory consistent with it (module docstring).

        Everything is checked before anything is changed, so a refused run changes nothing.

        Returns:
            The manifest's entries by file (also :attr:`entries`) and what was put right.

        Raises:
            ConfigError: A file synth did not write where its images go, or a symbolic link
                where it must read or write.
        """
        out = self.out
        for name in (MANIFEST_NAME, DUPLICATES_NAME):
            found = _files.kind(out / name)
            if found not in (None, "file"):
                raise ConfigError(
                    f"--out {out}: {name} is {_files.WHAT[found]}, not a file syn2co-train synth "
                    "wrote; put the file itself there (or remove it), then rerun"
                )
        recovery = Recovery()
        raw, entries = self._read_lines(recovery)
        restore = self._check_listed(entries, recovery)
        remove = self._scan_folders(entries, restore, recovery)
        root = os.path.realpath(out)
        for folder, name in restore:
            self._restore(root, folder, name)
            recovery.restored_files += 1
        for folder, name in remove:
            recovery.removed_files += self._remove(root, folder, name)
        recovery.removed_files += len(
            remove_stale_temporaries(out, (MANIFEST_NAME, DUPLICATES_NAME))
        )
        rewritten = b"".join(_line(e) for e in entries.values())
        if rewritten != raw:
            try:
                write_atomic(out / MANIFEST_NAME, lambda f: f.write(rewritten))
            except OSError as e:
                raise _files.cannot("write", out / MANIFEST_NAME, e) from None
        self.entries = entries
        return entries, recovery

    def _read_lines(self, recovery: Recovery) -> tuple[bytes, dict[str, dict[str, Any]]]:
        path = self.out / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError as e:
            raise _files.cannot("read", path, e) from None
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        entries: dict[str, dict[str, Any]] = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                recovery.dropped_lines += 1
                continue
            if not _valid_entry(entry) or entry["file"] in entries:
                recovery.dropped_lines += 1
                continue
            entries[entry["file"]] = entry
        return raw, entries

    def _check_listed(
        self, entries: dict[str, dict[str, Any]], recovery: Recovery
    ) -> list[tuple[str, str]]:
        """Check each listed image; forget the missing ones. Returns the images to restore
        from their temporary file, as ``(folder, name)``."""
        restore: list[tuple[str, str]] = []
        for file in list(entries):
            folder, name = file.split("/")
            found = _files.kind(self.out / folder)
            if found not in (None, "folder"):
                raise ConfigError(
                    f"--out {self.out}: {folder} is {_files.WHAT[found]}, not a class folder, "
                    f"and {MANIFEST_NAME} lists images in it; syn2co-train synth follows no "
                    "link inside --out: put the folder itself there, then rerun"
                )
            image = _files.kind(self.out / file) if found else None
            if image == "file":
                continue
            if image is not None:
                raise ConfigError(
                    f"--out {self.out}: {file} is {_files.WHAT[image]}, not the image that "
                    f"{MANIFEST_NAME} lists; put the image itself there (or remove it and its "
                    "manifest line), then rerun"
                )
            if found and _files.kind(self.out / folder / _temporary(name)) == "file":
                restore.append((folder, name))
                continue
            del entries[file]
            recovery.missing_files += 1
        return restore

    def _scan_folders(
        self,
        entries: Mapping[str, Any],
        restore: list[tuple[str, str]],
        recovery: Recovery,
    ) -> list[tuple[str, str]]:
        """Sort what the class folders hold that the manifest does not list. Returns synth's
        temporary files to delete, as ``(folder, name)``; refuses stray images."""
        restoring = {(folder, _temporary(name)) for folder, name in restore}
        remove: list[tuple[str, str]] = []
        strays: list[str] = []
        for top in _entries(self.out):
            if top.name.startswith("."):
                continue
            if top.is_symlink():
                recovery.left_alone.append(f"{top.name} (a symbolic link)")
                continue
            if not top.is_dir(follow_symlinks=False):
                continue
            for item in _entries(Path(top.path)):
                relative = f"{top.name}/{item.name}"
                if relative in entries:
                    continue
                if _TEMPORARY.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                    if (top.name, item.name) not in restoring:
                        remove.append((top.name, item.name))
                elif _IMAGE_NAME.fullmatch(item.name):
                    strays.append(relative)
                elif not item.name.startswith("."):
                    recovery.left_alone.append(relative)
        if strays:
            more = f" and {len(strays) - 1} more" if len(strays) > 1 else ""
            raise ConfigError(
                f"--out {self.out}: {strays[0]}{more} not listed in {MANIFEST_NAME}: "
                "syn2co-train synth did not write it and neither deletes nor overwrites it; "
                "move it out of --out (or delete it), then rerun"
            )
        return remove

    def _restore(self, root: str, folder: str, name: str) -> None:
        path = self.out / folder
        try:
            fd = self._inside(root, path)
            try:
                if _files.kind(name, dir_fd=fd) is None:
                    os.rename(_temporary(name), name, src_dir_fd=fd, dst_dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise _files.cannot("restore", path / name, e) from None

    def _remove(self, root: str, folder: str, name: str) -> int:
        path = self.out / folder
        try:
            fd = self._inside(root, path)
            try:
                return int(_files.remove_file(fd, name))
            finally:
                os.close(fd)
        except OSError as e:
            raise _files.cannot("remove", path / name, e) from None

    @staticmethod
    def _inside(root: str, folder: Path) -> int:
        """Open ``folder`` if it is a real folder inside the output directory."""
        fd = _files.open_folder(folder)
        if not _files.inside(root, folder):
            os.close(fd)
            raise ConfigError(f"{folder} is outside --out {root}: left alone")
        return fd

    # ----------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------

    def check_folders(self, folders: Iterable[str]) -> None:
        """Refuse class folders that synth could not write into: links and files.

        Args:
            folders: The folders this run will write images into.

        Raises:
            ConfigError: One line naming the first such folder.
        """
        for folder in sorted(set(folders)):
            found = _files.kind(self.out / folder)
            if found not in (None, "folder"):
                raise ConfigError(
                    f"--out {self.out}: {folder} is {_files.WHAT[found]}; syn2co-train synth "
                    "writes only into real folders inside --out: put a folder there (or "
                    "choose another --out), then rerun"
                )

    def add(self, job: ImageJob, image: Image.Image, entry: Mapping[str, Any]) -> None:
        """Write one image and its manifest line (module docstring: how an image is written).

        Args:
            job: The image's job (where it goes).
            image: The image.
            entry: Its manifest line.

        Raises:
            ConfigError: One line naming the file that could not be written; the manifest
                still lists exactly the images finished before.
        """
        data = _encode_png(image)
        folder = self._folder(job.folder)
        path = self.out / job.file
        if _files.kind(job.name, dir_fd=folder) is not None:
            raise ConfigError(
                f"--out {self.out}: {job.file} appeared during this run, not written by "
                "syn2co-train synth; move it out of --out, then rerun"
            )
        temporary = _temporary(job.name)
        try:
            _files.write_new(folder, temporary, data)
        except OSError as e:
            raise _files.cannot("write", path, e, self._kept()) from None
        try:
            self._append(_line(entry))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
        try:
            os.rename(temporary, job.name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError as e:
            raise _files.cannot("write", path, e, "rerun to finish it and continue") from None
        self.entries[job.file] = dict(entry)

    def ensure_manifest(self) -> None:
        """Create an empty manifest when there is none, which marks the directory as synth's.

        Raises:
            ConfigError: It cannot be created.
        """
        self._manifest_fd()

    def write_duplicates(self, report: Mapping[str, Any]) -> Path:
        """Write the near-duplicate report.

        Args:
            report: Its content (JSON).

        Returns:
            Its path.

        Raises:
            ConfigError: It cannot be written.
        """
        path = self.out / DUPLICATES_NAME
        text = (json.dumps(report, indent=2) + "\n").encode()
        try:
            write_atomic(path, lambda f: f.write(text))
        except OSError as e:
            raise _files.cannot("write", path, e) from None
        return path

    def _kept(self) -> str:
        if not self.entries:
            return "no image was finished"
        return (
            f"{MANIFEST_NAME} lists the {len(self.entries)} image(s) finished before it: rerun "
            "to continue"
        )

    def _folder(self, folder: str) -> int:
        fd = self._folders.get(folder)
        if fd is not None:
            return fd
        path = self.out / folder
        try:
            path.mkdir()
            self._created_folders.append(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise _files.cannot("create", path, e) from None
        try:
            fd = _files.open_folder(path)
        except OSError as e:
            if _files.is_link_error(e):
                self.check_folders([folder])
            raise _files.cannot("open", path, e) from None
        self._folders[folder] = fd
        return fd

    def _manifest_fd(self) -> int:
        if self._manifest is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                self._manifest = os.open(MANIFEST_NAME, flags, 0o666, dir_fd=self._dir)
            except OSError as e:
                raise _files.cannot("write", self.out / MANIFEST_NAME, e) from None
        return self._manifest

    def _append(self, line: bytes) -> None:
        fd = self._manifest_fd()
        try:
            _files.append_durably(fd, line)
        except OSError as e:
            raise _files.cannot("write", self.out / MANIFEST_NAME, e, self._kept()) from None


@contextlib.contextmanager
def open_output(out: Path) -> Iterator[OutputDir]:
    """The output directory ``out``, created if needed and locked while the block runs.

    Args:
        out: The directory (``--out``).

    Yields:
        The opened directory; call :meth:`OutputDir.recover` before anything else.

    Raises:
        ConfigError: As :meth:`OutputDir.open`.
    """
    store = OutputDir(out)
    store.open()
    try:
        yield store
    finally:
        store.close()


def _line(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False).encode() + b"\n"


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise _files.cannot("read", folder, e) from None
