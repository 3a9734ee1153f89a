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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "CorruptImageError",
    "DatasetError",
    "DatasetFileError",
    "DatasetNotFoundError",
    "ImageDataset",
    "LoadedImage",
]


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


class DatasetError(ValueError):
    """Base class of the data package's errors (a ``ValueError``, one line of text)."""


class DatasetNotFoundError(DatasetError):
    """The dataset's directory or files are missing, or an image folder holds no images.

    The message is one line that names the path and the expected layout.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


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
        super().__init__(_one_line(f"{self.path} {problem}"))

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
        self.reason = _one_line(reason)
        super().__init__(_one_line(f"cannot read image {self.path}: {self.reason}"))

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
