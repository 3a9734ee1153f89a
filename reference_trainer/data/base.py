"""What every trainer dataset returns, and the errors it raises.

Every dataset of the trainer (image folders, the torchvision formats and the built-in procedural
set) is a map-style :class:`ImageDataset` whose items are :class:`LoadedImage` tuples, so the
engine treats them all alike. ``LoadedImage`` unpacks as ``(image, label, skipped)``: ``skipped``
names the files that could not be read and were replaced by the next readable item, which lets
the main process count and name unreadable files even when items are loaded in DataLoader
worker processes (the paths travel with the batch).
"""

from __future__ import annotations

import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image
from torch.utils.data import Dataset

from ..errors import one_line

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_ENV",
    "CorruptImageError",
    "DatasetError",
    "DatasetFileError",
    "DatasetNotFoundError",
    "FileImageDataset",
    "ImageDataset",
    "LoadedImage",
    "check_image_pixels",
    "max_image_pixels",
]

#: The environment variable that sets the largest image (width x height, in pixels) the datasets
#: decode; ``0`` or ``none`` lifts the limit. DataLoader workers inherit it.
MAX_IMAGE_PIXELS_ENV = "SYN2CO_MAX_IMAGE_PIXELS"
#: The default limit: 64 megapixels (8192 x 8192), above any photo of the usual datasets; a
#: larger file (a decompression bomb: a few KB of PNG can hold gigabytes of pixels) is treated as
#: unreadable, so a 13000 x 13000 PNG is not decoded into 0.5 GB at every epoch.
DEFAULT_MAX_IMAGE_PIXELS = 2**26

T = TypeVar("T")


class LoadedImage(NamedTuple):
    """One dataset item.

    Attributes:
        image: The image, always an RGB ``PIL.Image.Image`` (grayscale sources are converted).
        label: Class index in ``[0, num_classes)``, or ``-1`` for unlabelled items (STL-10's
            unlabelled split).
        skipped: Paths of unreadable files that were substituted by this item (empty unless an
            image-folder dataset met corrupt files in non-strict mode).
    """

    image: Image.Image
    label: int
    skipped: tuple[str, ...] = ()


class DatasetError(ValueError):
    """Base class of the data package's errors (a ``ValueError``, one line of text)."""


class DatasetNotFoundError(DatasetError):
    """The dataset's directory or files are missing, or an image folder holds no images.

    The message is one line that names the path and the expected layout.
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class DatasetFileError(DatasetError):
    """A dataset file is there but cannot be read: truncated, corrupt or of another format.

    Args:
        path: The file.
        problem: What is wrong with it, e.g. ``"is truncated: ..."``.

    Attributes:
        path: The file.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        super().__init__(one_line(f"{self.path} {problem}"))

    def __reduce__(self) -> tuple[type[DatasetFileError], tuple[str, str]]:
        return (type(self), (self.path, str(self)[len(self.path) + 1 :]))


class CorruptImageError(DatasetError):
    """An image file could not be read or decoded (raised in strict mode).

    Args:
        path: The file that failed.
        reason: Why, e.g. ``"OSError: image file is truncated"``. When it is ``None`` the first
            argument is taken as an already formatted message: that is how PyTorch's DataLoader
            re-raises a worker's exception in the main process, keeping the type.

    Attributes:
        path: The file that failed ("" when re-raised from a DataLoader worker).
        reason: Why it failed.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str | None = None) -> None:
        if reason is None:
            self.path = ""
            self.reason = str(path)
            super().__init__(str(path))
            return
        self.path = os.fspath(path)
        self.reason = one_line(reason)
        super().__init__(one_line(f"cannot read image {self.path}: {self.reason}"))

    def __reduce__(self) -> tuple[type[CorruptImageError], tuple[str, str | None]]:
        if self.path:
            return (type(self), (self.path, self.reason))
        return (type(self), (self.reason, None))


class ImageDataset(Dataset[LoadedImage], ABC):
    """A map-style labelled image dataset returning :class:`LoadedImage` items.

    Subclasses set ``classes`` (the class names, index = label) and implement ``__len__``,
    ``__getitem__`` and ``targets``.
    """

    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    @abstractmethod
    def targets(self) -> npt.NDArray[np.int64]:
        """Labels of all items, shape ``(len(self),)``, read without decoding any image."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @abstractmethod
    def __getitem__(self, index: int) -> LoadedImage:
        """Item ``index`` as a :class:`LoadedImage`."""


class FileImageDataset(ImageDataset):
    """An :class:`ImageDataset` whose items are image files (the GPU input path reads their
    bytes and decodes them on the device).

    Subclasses set ``root`` and ``strict`` and implement :meth:`path` (with the other
    :class:`ImageDataset` members); :meth:`first_readable` is the one place that substitutes
    unreadable files, for the CPU path's decoding and the GPU path's reading alike.
    """

    root: Path
    strict: bool
    _unreadable: dict[int, str]  # index -> why, per process (made on first use)

    @abstractmethod
    def path(self, index: int) -> str:
        """The file of item ``index``."""

    def first_readable(
        self, index: int, read: Callable[[str, int], T]
    ) -> tuple[T, tuple[str, ...]]:
        """``read(path, j)`` of item ``index``, or of the next readable item.

        In non-strict mode an item whose ``read`` raises is replaced by the next one
        (``index + 1, index + 2, ...``, wrapping around) and its path is returned among the
        skipped ones; in strict mode the first failure raises. Failures are remembered per
        process (a bad file is not read again) but reported every time it is substituted.

        Args:
            index: The item asked for.
            read: Reads item ``j`` from its ``path`` (any exception means unreadable).

        Returns:
            ``(read's result, paths of the unreadable files substituted)``.

        Raises:
            CorruptImageError: In strict mode when the file is unreadable; in non-strict mode
                only when no file of the dataset is readable.
        """
        n = len(self)
        i = check_index(index, n)
        bad: dict[int, str] = vars(self).setdefault("_unreadable", {})
        skipped: list[str] = []
        for step in range(n):
            j = (i + step) % n
            path = self.path(j)
            reason = bad.get(j)
            if reason is None:
                try:
                    return read(path, j), tuple(skipped)
                except Exception as exc:  # PIL and the decoders raise many types
                    reason = (
                        exc.reason
                        if isinstance(exc, CorruptImageError)
                        else f"{type(exc).__name__}: {exc}"
                    )
                    bad[j] = reason
                    if self.strict:
                        raise CorruptImageError(path, reason) from exc
            if self.strict:
                raise CorruptImageError(path, reason)
            skipped.append(path)
        raise CorruptImageError(self.root, f"none of the {n} image files could be read")


def max_image_pixels() -> int | None:
    """The largest image the datasets decode, in pixels: ``$SYN2CO_MAX_IMAGE_PIXELS`` or
    :data:`DEFAULT_MAX_IMAGE_PIXELS`; None when the variable lifts the limit (``0``/``none``).

    Raises:
        DatasetError: The variable is not a whole number (one line).
    """
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    if text.lower() in ("0", "none"):
        return None
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise DatasetError(
            f"{MAX_IMAGE_PIXELS_ENV}={text}: expected a number of pixels (e.g. 200000000), or 0 "
            f"for no limit"
        )
    return value or None


def check_image_pixels(path: str, size: tuple[int, int], limit: int | None) -> None:
    """Refuse an image of more than ``limit`` pixels before it is decoded.

    Raises:
        CorruptImageError: Naming the file, its size and how to raise the limit.
    """
    width, height = size
    if limit is not None and width * height > limit:
        raise CorruptImageError(
            path,
            f"{width}x{height} is {width * height} pixels, more than the limit of {limit}; "
            f"set {MAX_IMAGE_PIXELS_ENV} to a larger number (or 0 for no limit) to read it",
        )


def image_size_from_header(path: str, fh: Any, limit: int | None) -> tuple[int, int]:
    """The width and height an image file declares, read from its header only.

    PIL's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, set to our limit) warns above
    the limit, which is refused here anyway, and raises above twice it: that becomes the same
    one-line refusal.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as header:
                return header.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = found.group(1) if found else "too many"
        raise CorruptImageError(
            path,
            f"{pixels} pixels, more than the limit of {limit}; set {MAX_IMAGE_PIXELS_ENV} to a "
            f"larger number (or 0 for no limit) to read it",
        ) from None


def check_index(index: int, length: int) -> int:
    """Return ``index`` as a plain int after checking ``0 <= index < length``.

    Raises:
        IndexError: When the index is out of range (negative indices are not accepted).
    """
    i = int(index)
    if not 0 <= i < length:
        raise IndexError(f"index {i} out of range for a dataset of {length} items")
    return i


def as_class_names(classes: Sequence[str]) -> tuple[str, ...]:
    """Return the class names as a tuple of str, checking that they are unique."""
    names = tuple(str(c) for c in classes)
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {list(names)}")
    return names
