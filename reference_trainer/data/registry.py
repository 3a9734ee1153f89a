"""The registry of dataset formats: ``--dataset NAME`` -> how to build it.

A format is one :class:`DatasetFormat` record: its name, a one-line summary, a builder from a
:class:`DatasetRequest` to an :class:`~reference_trainer.data.base.ImageDataset`, whether it
reads files under a root directory (``--data``), and whether its validation split lives in a
directory of its own (``--val-data``, with the training split's classes). Every part of the
trainer that needs a dataset (pretraining, the mixing of real and synthetic images, kNN and
linear evaluation, the CLI's ``--dataset`` choices) goes through here, so adding a format is one
:func:`register_dataset` call. The built-in formats are registered by
:mod:`reference_trainer.data.datasets`.

Raw bytes for the GPU input path are a property of the dataset a builder returns: a
:class:`~reference_trainer.data.base.FileImageDataset` (items that are image files, e.g. an
:class:`~reference_trainer.data.datasets.ImageFolderDataset`) has its files read as bytes and
decoded on the device; any other dataset travels as decoded pixels.

Example:
    >>> from reference_trainer.data import ArrayImageDataset, build_dataset
    >>> import numpy as np
    >>> fmt = register_dataset(DatasetFormat(
    ...     "zeros", "Four black images.", lambda request: ArrayImageDataset(
    ...         np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1], ["a", "b"]),
    ...     needs_root=False))
    >>> len(build_dataset("zeros", None, "train"))
    4
    >>> unregister_dataset("zeros").name
    'zeros'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import ImageDataset

__all__ = [
    "DATASETS",
    "DatasetFormat",
    "DatasetRequest",
    "dataset_names",
    "get_dataset",
    "register_dataset",
    "unregister_dataset",
]


@dataclass(frozen=True)
class DatasetRequest:
    """What a builder is asked for.

    Attributes:
        root: The directory given for this split (``--data``, or ``--val-data`` for the
            validation split of a format with ``separate_val``); None for formats that read
            no files.
        split: ``train``, ``val`` or ``test`` (formats may accept more, e.g. STL-10's
            ``unlabeled``).
        img_size: The run's image side (formats that make their images use it; the others
            keep their native size, the transforms resize).
        strict: Raise on the first unreadable file instead of substituting the next item.
        download: Fetch the files first where the format can.
        classes: Class names in label order to use instead of the ones found (a separate
            validation directory gets the training split's).
        size: Number of items, for formats that make their images (None: their default).
        seed: Seed of formats that make their images.
        num_classes: Classes of formats that make their images.
    """

    root: Path | None
    split: str
    img_size: int = 32
    strict: bool = False
    download: bool = False
    classes: tuple[str, ...] | None = None
    size: int | None = None
    seed: int = 0
    num_classes: int = 10


@dataclass(frozen=True)
class DatasetFormat:
    """One ``--dataset`` choice.

    Attributes:
        name: The name users pass to ``--dataset``.
        summary: One line for the docs and messages.
        build: The builder: a :class:`DatasetRequest` to a dataset of
            :class:`~reference_trainer.data.base.LoadedImage` items. It raises
            :class:`~reference_trainer.data.base.DatasetNotFoundError` (one line naming the
            expected layout) when files are missing.
        needs_root: The format reads files under ``--data`` (the CLI asks for it).
        separate_val: The validation split is a directory of its own (``--val-data``), whose
            labels follow the training split's classes; otherwise both splits live under
            ``--data``.
    """

    name: str
    summary: str
    build: Callable[[DatasetRequest], ImageDataset]
    needs_root: bool = True
    separate_val: bool = False


#: Every registered format by name, in registration order.
DATASETS: dict[str, DatasetFormat] = {}


def register_dataset(fmt: DatasetFormat) -> DatasetFormat:
    """Add a format (its name must be new, or the same record again).

    Raises:
        ValueError: The name is taken by another record, or is empty.
    """
    if not fmt.name or fmt.name != fmt.name.strip():
        raise ValueError(f"register_dataset: expected a non-empty name, got {fmt.name!r}")
    existing = DATASETS.get(fmt.name)
    if existing is not None and existing != fmt:
        raise ValueError(f"register_dataset: dataset name {fmt.name!r} is already registered")
    DATASETS[fmt.name] = fmt
    return fmt


def unregister_dataset(name: str) -> DatasetFormat:
    """Remove a format (e.g. one a test added); returns its record."""
    return DATASETS.pop(get_dataset(name).name)


def dataset_names() -> tuple[str, ...]:
    """The names ``--dataset`` accepts."""
    return tuple(DATASETS)


def get_dataset(name: str) -> DatasetFormat:
    """The format registered as ``name``.

    Raises:
        KeyError: No format has that name (the message lists the known ones).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}") from None
