"""The trainer's datasets: image folders, the torchvision formats and the built-in set.

:func:`build_dataset` is the single entry point. Every dataset is an
:class:`~reference_trainer.data.base.ImageDataset` of
:class:`~reference_trainer.data.base.LoadedImage` items ``(RGB PIL image, label, skipped)``
with ``classes`` and ``num_classes``.

The torchvision formats (CIFAR-10/100, STL-10, MNIST, Fashion-MNIST) are read by small readers of
their published file formats, from the directory layout torchvision uses, so that a missing file
gives a one-line :class:`~reference_trainer.data.base.DatasetNotFoundError` naming what is
expected where. ``download=True`` asks torchvision to fetch the files first.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from reference_trainer.data.base import (
    CorruptImageError,
    DatasetFileError,
    DatasetNotFoundError,
    FileImageDataset,
    ImageDataset,
    LoadedImage,
    as_class_names,
    check_image_pixels,
    check_index,
    image_size_from_header,
    max_image_pixels,
)
from reference_trainer.data.builtin import ProceduralShapes
from reference_trainer.data.registry import (
    DATASETS,
    DatasetFormat,
    DatasetRequest,
    register_dataset,
)
from reference_trainer.data.rgb import open_rgb, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "ImageArray",
    "ImageFolderDataset",
    "build_dataset",
    "imagenet100_classes",
    "read_rgb_image",
]

#: File name endings (lower case) that :class:`ImageFolderDataset` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)

_SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test"})

# Default lengths of the built-in procedural set per split.
_BUILTIN_DEFAULT_SIZES = {"train": 10_000, "val": 2_000, "test": 2_000}

_Uint8Array = npt.NDArray[np.uint8]
_Int64Array = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


class _PathTable:
    """File paths packed in two numpy arrays (utf-8 bytes + offsets).

    A Python list of a million str is touched (reference counts) by every forked DataLoader
    worker, which copies its memory page by page; numpy buffers are not.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        return self._data[start:end].tobytes().decode("utf-8", "surrogateescape")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_class_folder(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """All image files under ``folder`` (recursively, following links), sorted by path."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not _is_hidden(f) and f.lower().endswith(extensions)
        )
    return sorted(found)


def read_rgb_image(path: str) -> Image.Image:
    """Open, fully decode and convert an image file to 8-bit RGB (16-bit, palette, CMYK, ...:
    see :mod:`reference_trainer.data.rgb`).

    An image of more pixels than :func:`~reference_trainer.data.base.max_image_pixels`
    (``$SYN2CO_MAX_IMAGE_PIXELS``, 64 megapixels by default) is refused from its header,
    before it is decoded.

    Raises:
        CorruptImageError: When the file cannot be opened or decoded (missing, truncated,
            not an image, larger than the pixel limit, ...).
    """
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # PIL's own guard follows ours (see image_size_from_header)
    try:
        with open(path, "rb") as fh:
            check_image_pixels(path, image_size_from_header(path, fh, limit), limit)
            fh.seek(0)
            rgb = open_rgb(fh)
    except CorruptImageError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
    return rgb


class ImageFolderDataset(FileImageDataset):
    """Images in ``root/<class>/<file>`` (``root`` is one split, e.g. ``train/``).

    Class folders are the sorted non-hidden subdirectories of ``root``; files are searched
    recursively inside each, sorted by path, and kept when their name ends with one of
    ``extensions`` (case-insensitive).

    Unreadable files: in non-strict mode item ``i`` is replaced by the next readable item
    ``i+1, i+2, ...`` (wrapping around) and the failed paths are returned in
    ``LoadedImage.skipped``; the label is the substitute's own. In strict mode the first failure
    raises :class:`CorruptImageError`. Failures are remembered per process so that a bad file is
    not decoded again, but it is reported every time it is substituted.

    Args:
        root: The split directory.
        strict: Raise on unreadable files instead of substituting them.
        classes: Class names to use, in label order, instead of the folders found; give the
            training set's ``classes`` to a validation folder so labels agree even if it lacks
            a class. Every folder found must be among them.
        extensions: Accepted file name endings.
        split: Only used in error messages.
        other_folders: ``"error"``: every class folder must be among ``classes``; ``"ignore"``:
            folders not among ``classes`` are skipped (a subset of a larger dataset).

    Raises:
        DatasetNotFoundError: When ``root`` is missing or not a directory, holds no class
            folders, looks like a dataset root with split folders (``train/``, ``val/``), or no
            image file is found.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        strict: bool = False,
        classes: Sequence[str] | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        split: str = "train",
        other_folders: Literal["error", "ignore"] = "error",
    ) -> None:
        self.root = Path(root)
        self.strict = strict
        self.extensions = tuple(e.lower() for e in extensions)
        max_image_pixels()  # a bad $SYN2CO_MAX_IMAGE_PIXELS: one line now, not one per image
        where = f"{split} image folder {self.root}"
        if not self.root.exists():
            raise DatasetNotFoundError(
                f"{where} does not exist (expected {self.root}/<class>/<image files>)"
            )
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"{where} is not a directory")
        folders = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not _is_hidden(p.name)
        )
        if not folders:
            raise DatasetNotFoundError(
                f"{where} has no class folders (expected {self.root}/<class>/<image files>)"
            )
        if set(folders) <= _SPLIT_FOLDER_NAMES and len(folders) <= 3:
            hint = split if split in folders else ("train" if "train" in folders else folders[0])
            raise DatasetNotFoundError(
                f"{where} holds split folders ({', '.join(folders)}), not class folders: "
                f"pass the split directory itself, e.g. {self.root / hint}"
            )
        if classes is None:
            self.classes = as_class_names(folders)
        else:
            self.classes = as_class_names(classes)
            unknown = sorted(set(folders) - set(self.classes))
            if unknown and other_folders == "error":
                raise DatasetNotFoundError(
                    f"{where} has class folders not among the given classes: {unknown[:5]}"
                )
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            files = _scan_class_folder(folder, self.extensions)
            paths.extend(files)
            labels.extend([label] * len(files))
        if not paths:
            raise DatasetNotFoundError(
                f"{where} has {len(folders)} class folders but no image files "
                f"(accepted endings: {' '.join(self.extensions)})"
            )
        self._paths = _PathTable(paths)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._unreadable = {}  # index -> reason, per process

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def targets(self) -> _Int64Array:
        """Labels of all items, shape ``(len(self),)``."""
        return self._labels

    def path(self, index: int) -> str:
        """File path of item ``index``."""
        return self._paths[check_index(index, len(self))]

    def __getitem__(self, index: int) -> LoadedImage:
        """Item ``index`` (or its substitute): ``LoadedImage(RGB image, label, skipped)``.

        Raises:
            CorruptImageError: In strict mode when the file is unreadable; in non-strict mode
                only when no file of the dataset is readable.
        """
        item, skipped = self.first_readable(
            index, lambda path, j: LoadedImage(read_rgb_image(path), int(self._labels[j]))
        )
        return item._replace(skipped=skipped)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={str(self.root)!r}, items={len(self)}, "
            f"classes={self.num_classes}, strict={self.strict})"
        )


# --------------------------------------------------------------------------------------------
# In-memory (or memory-mapped) arrays: the torchvision formats
# --------------------------------------------------------------------------------------------


class ImageArray(Protocol):
    """What :class:`ArrayImageDataset` needs of its images: a numpy array or a lazy stand-in."""

    @property
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def ndim(self) -> int: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


class ArrayImageDataset(ImageDataset):
    """Images held in a uint8 array, ``(N, H, W, 3)`` RGB or ``(N, H, W)`` grayscale.

    Grayscale images are converted to RGB by repeating the channel. The array may be a
    ``numpy.memmap`` (STL-10's unlabelled split is 2.7 GB).

    Args:
        images: uint8 array, ``(N, H, W, 3)`` or ``(N, H, W)`` (anything that indexes like one,
            see :class:`ImageArray`).
        labels: int array ``(N,)``; ``-1`` marks unlabelled items.
        classes: Class names in label order.
        name: Shown by ``repr``.
    """

    def __init__(
        self,
        images: ImageArray,
        labels: npt.ArrayLike,
        classes: Sequence[str],
        *,
        name: str = "array",
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        if images.ndim == 4 and images.shape[3] != 3:
            raise ValueError(f"colour images must have 3 channels last, got {images.shape}")
        label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(label_array) != len(images):
            raise ValueError(f"{len(images)} images but {len(label_array)} labels")
        self.images = images
        self._labels = label_array
        self.classes = as_class_names(classes)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> _Int64Array:
        """Labels of all items, shape ``(len(self),)``."""
        return self._labels

    def __getitem__(self, index: int) -> LoadedImage:
        """Item ``index``: ``LoadedImage(RGB image, label, ())``."""
        i = check_index(index, len(self))
        pixels = np.ascontiguousarray(self.images[i])
        if pixels.ndim == 2:
            image = to_rgb(Image.fromarray(pixels, "L"))
        else:
            image = Image.fromarray(pixels, "RGB")
        return LoadedImage(image, int(self._labels[i]), ())

    def __repr__(self) -> str:
        return f"ArrayImageDataset({self.name}, items={len(self)}, classes={self.num_classes})"


def _canonical_split(kind: str, split: str) -> str:
    """Map ``val`` to ``test`` for the torchvision formats (they have no separate val split)."""
    allowed = {"train", "val", "test"}
    if kind == "stl10":
        allowed |= {"unlabeled", "train+unlabeled"}
    if split not in allowed:
        raise ValueError(f"{kind} has no split {split!r}; expected one of {sorted(allowed)}")
    return "test" if split == "val" else split


def _first_dir_with(candidates: Sequence[Path], files: Sequence[str]) -> Path | None:
    for folder in candidates:
        if all((folder / f).is_file() for f in files):
            return folder
    return None


_FETCH_AGAIN = "delete it and extract or download it again"


#: The only globals a CIFAR python batch names: numpy arrays (``_reconstruct``, ``ndarray``,
#: ``dtype``; ``numpy.core`` in files written by numpy 1, ``numpy._core`` by numpy 2) and the
#: ``bytes`` of Python 3 pickles (``_codecs.encode``).
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the data of a CIFAR batch and nothing else: any other global (a function a
    crafted file would call, such as ``os.system``) is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never does"
            )
        return super().find_class(module, name)


def _unpickle(path: Path, kind: str) -> dict[str, Any]:
    """A CIFAR python batch: a pickled dict (keys as str), read with an unpickler that builds
    dicts, lists, strings, numbers and numpy arrays only (see :class:`_BatchUnpickler`)."""
    try:
        with path.open("rb") as fh:
            data = _BatchUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise DatasetFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        if "CIFAR batch never does" in str(exc):
            raise DatasetFileError(
                path,
                f"is not a {kind} python batch: {exc}; refused, nothing of it was run "
                f"({_FETCH_AGAIN})",
            ) from None
        raise DatasetFileError(
            path,
            f"is truncated or corrupt, not a {kind} python batch "
            f"({type(exc).__name__}: {exc}); {_FETCH_AGAIN}",
        ) from None
    except Exception as exc:  # a cut pickle ends with EOFError, a corrupt one with anything
        raise DatasetFileError(
            path,
            f"is truncated or corrupt, not a {kind} python batch "
            f"({type(exc).__name__}: {exc}); {_FETCH_AGAIN}",
        ) from None
    if not isinstance(data, dict):
        raise DatasetFileError(path, f"is not a {kind} python batch (not a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _check_labels(
    path: Path, labels: npt.NDArray[np.int64], num_classes: int, count: int, what: str
) -> None:
    """Labels of a file: one per image, each in ``[0, num_classes)``."""
    if len(labels) != count:
        raise DatasetFileError(path, f"holds {len(labels)} labels for {count} {what}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFileError(
            path,
            f"holds labels outside [0, {num_classes}) (from {labels.min()} to {labels.max()}); "
            f"{_FETCH_AGAIN}",
        )


def _torchvision_download(kind: str, root: Path, split: str) -> None:
    """Fetch a torchvision format into ``root`` (the layout our readers expect)."""
    from torchvision import datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    train = split != "test"
    if kind == "cifar10":
        tvd.CIFAR10(str(root), train=train, download=True)
    elif kind == "cifar100":
        tvd.CIFAR100(str(root), train=train, download=True)
    elif kind == "stl10":
        tvd.STL10(str(root), split=split, download=True)
    elif kind == "mnist":
        tvd.MNIST(str(root), train=train, download=True)
    elif kind == "fashion-mnist":
        tvd.FashionMNIST(str(root), train=train, download=True)


def _load_cifar(kind: str, root: Path, split: str) -> ArrayImageDataset:
    if kind == "cifar10":
        folder_name, label_key, names_key, meta_name = (
            "cifar-10-batches-py",
            "labels",
            "label_names",
            "batches.meta",
        )
        batch_names = (
            [f"data_batch_{k}" for k in range(1, 6)] if split == "train" else ["test_batch"]
        )
        expected = (
            "data_batch_1..5, batches.meta" if split == "train" else "test_batch, batches.meta"
        )
        archive = "the 'CIFAR-10 python version' archive extracted"
    else:
        folder_name, label_key, names_key, meta_name = (
            "cifar-100-python",
            "fine_labels",
            "fine_label_names",
            "meta",
        )
        batch_names = ["train"] if split == "train" else ["test"]
        expected = f"{batch_names[0]}, meta"
        archive = "the 'CIFAR-100 python version' archive extracted"
    files = [*batch_names, meta_name]
    folder = _first_dir_with([root / folder_name, root], files)
    if folder is None:
        raise DatasetNotFoundError(
            f"{kind} {split} split not found: expected {root / folder_name}/{{{expected}}} "
            f"({archive}; or pass download=True)"
        )
    num_classes = 10 if kind == "cifar10" else 100
    meta_path = folder / meta_name
    meta = _unpickle(meta_path, kind)
    classes = [str(c) for c in meta.get(names_key, [])]
    if len(classes) != num_classes:
        raise DatasetFileError(
            meta_path, f"is not the {kind} meta file ({num_classes} names under {names_key!r})"
        )
    chunks: list[_Uint8Array] = []
    labels: list[_Int64Array] = []
    for name in batch_names:
        path = folder / name
        batch = _unpickle(path, kind)
        if "data" not in batch or label_key not in batch:
            raise DatasetFileError(path, f"is not a {kind} python batch (no data or {label_key})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetFileError(
                path, f"holds data of shape {data.shape}, not (N, 3072) rows of 32x32 RGB images"
            )
        batch_labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        _check_labels(path, batch_labels, num_classes, len(data), "images")
        chunks.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    images = np.ascontiguousarray(np.concatenate(chunks).transpose(0, 2, 3, 1))
    return ArrayImageDataset(images, labels, classes, name=f"{kind} {split} from {folder}")


_MNIST_CLASSES = {
    "mnist": tuple(
        f"{d} - {w}"
        for d, w in enumerate(
            ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
        )
    ),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read an IDX file of unsigned bytes (plain or ``.gz``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # cut short: EOFError; mangled: OSError
            raise DatasetFileError(
                path, f"is truncated or corrupt: gzip says {exc}; {_FETCH_AGAIN}"
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetFileError(path, "is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(path, f"is truncated: {len(raw)} bytes, shorter than its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    size, expected = len(raw) - header, int(np.prod(shape))
    if size != expected:
        problem = "is truncated" if size < expected else "is too long"
        raise DatasetFileError(
            path,
            f"{problem}: its header says {shape}, {expected} bytes, but it holds {size}; "
            f"{_FETCH_AGAIN}",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _load_mnist(kind: str, root: Path, split: str) -> ArrayImageDataset:
    folder_name = "MNIST" if kind == "mnist" else "FashionMNIST"
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    candidates = [root / folder_name / "raw", root / folder_name, root]
    paths: list[Path] = []
    for stem in stems:
        found = next(
            (
                folder / name
                for folder in candidates
                for name in (stem, stem + ".gz")
                if (folder / name).is_file()
            ),
            None,
        )
        if found is None:
            raise DatasetNotFoundError(
                f"{kind} {split} split not found: expected {root / folder_name / 'raw'}/"
                f"{{{stems[0]}, {stems[1]}}} (the IDX files, optionally .gz, as torchvision "
                f"lays them out; or pass download=True)"
            )
        paths.append(found)
    images = _read_idx(paths[0])
    labels = _read_idx(paths[1])
    if images.ndim != 3:
        raise DatasetFileError(paths[0], f"holds shape {images.shape}, not (N, H, W) images")
    if labels.ndim != 1:
        raise DatasetFileError(paths[1], f"holds shape {labels.shape}, not (N,) labels")
    _check_labels(paths[1], labels.astype(np.int64), 10, len(images), f"images in {paths[0]}")
    return ArrayImageDataset(
        images, labels, _MNIST_CLASSES[kind], name=f"{kind} {split} from {paths[0].parent}"
    )


def _load_stl10(root: Path, split: str) -> ArrayImageDataset:
    layouts: dict[str, list[tuple[str, str | None]]] = {
        "train": [("train_X.bin", "train_y.bin")],
        "test": [("test_X.bin", "test_y.bin")],
        "unlabeled": [("unlabeled_X.bin", None)],
        "train+unlabeled": [("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None)],
    }
    parts = layouts[split]
    files = [name for pair in parts for name in pair if name is not None]
    files.append("class_names.txt")
    folder = _first_dir_with([root / "stl10_binary", root], files)
    if folder is None:
        raise DatasetNotFoundError(
            f"stl10 {split} split not found: expected {root / 'stl10_binary'}/"
            f"{{{', '.join(files)}}} (the 'STL-10 binary' archive extracted; "
            f"or pass download=True)"
        )
    side = 96
    chunks: list[_Uint8Array] = []
    labels: list[_Int64Array] = []
    for x_name, y_name in parts:
        x = np.memmap(folder / x_name, dtype=np.uint8, mode="r")
        if x.size % (3 * side * side):
            raise DatasetFileError(
                folder / x_name,
                f"is truncated: {x.size} bytes, not a whole number of 96x96 RGB images "
                f"({3 * side * side} bytes each); {_FETCH_AGAIN}",
            )
        # Stored column-major per image: (N, C, W, H) -> (N, H, W, C).
        chunks.append(x.reshape(-1, 3, side, side).transpose(0, 3, 2, 1))
        if y_name is None:
            labels.append(np.full(len(chunks[-1]), -1, dtype=np.int64))
        else:
            y = np.fromfile(folder / y_name, dtype=np.uint8).astype(np.int64) - 1
            _check_labels(folder / y_name, y, 10, len(chunks[-1]), f"images in {x_name}")
            labels.append(y)
    classes = [
        line.strip()
        for line in (folder / "class_names.txt").read_text().splitlines()
        if line.strip()
    ]
    images: ImageArray = chunks[0] if len(chunks) == 1 else _ConcatImages(chunks)
    return ArrayImageDataset(
        images,
        np.concatenate(labels),
        classes,
        name=f"stl10 {split} from {folder}",
    )


class _ConcatImages:
    """Index several image arrays as one without copying (for memory-mapped STL-10)."""

    def __init__(self, parts: Sequence[_Uint8Array]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in parts])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.parts[0].dtype

    @property
    def ndim(self) -> int:
        return self.parts[0].ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.ends[-1]), *self.parts[0].shape[1:])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> _Uint8Array:
        k = int(np.searchsorted(self.ends, index, side="right"))
        start = 0 if k == 0 else int(self.ends[k - 1])
        item: _Uint8Array = self.parts[k][index - start]
        return item


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def imagenet100_classes() -> tuple[str, ...]:
    """The 100 WordNet ids of ImageNet-100 (CMC's list, shipped as ``data/imagenet100.txt``),
    sorted, which is their label order."""
    text = (Path(__file__).parent / "imagenet100.txt").read_text()
    wnids = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    return tuple(sorted(wnids))


def _imagenet100(root: Path, split: str, strict: bool) -> ImageFolderDataset:
    """ImageNet-100 from an ImageNet-1K root (``root/train/<wnid>/``, ``root/val/<wnid>/``)."""
    split = "val" if split in ("val", "test") else split
    if split != "train" and split != "val":
        raise ValueError(f"imagenet100 has no split {split!r}; expected train or val")
    folder = root / split
    classes = imagenet100_classes()
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"imagenet100 {split} split not found: expected {folder}/<wnid>/<images> under the "
            f"ImageNet root {root} (pass the root, the folder holding train/ and val/)"
        )
    missing = [c for c in classes if not (folder / c).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet100 {split}: {len(missing)} of its 100 class folders are missing from "
            f"{folder}, e.g. {', '.join(missing[:3])}; for a subset whose folders hold only the "
            f"classes to train on, pass --dataset imagefolder --data {root / 'train'} "
            f"--val-data {root / 'val'}"
        )
    return ImageFolderDataset(
        folder, strict=strict, classes=classes, split=split, other_folders="ignore"
    )


def build_dataset(
    kind: str,
    root: str | os.PathLike[str] | None,
    split: str = "train",
    *,
    img_size: int = 32,
    strict: bool = False,
    download: bool = False,
    classes: Sequence[str] | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    num_classes: int = 10,
) -> ImageDataset:
    """Build a dataset of :class:`LoadedImage` items, of any registered format
    (:mod:`reference_trainer.data.registry`).

    Args:
        kind: A registered format; built in: ``imagefolder``, ``imagenet100``, ``cifar10``,
            ``cifar100``, ``stl10``, ``mnist``, ``fashion-mnist``, ``builtin``.
        root: ``imagefolder``: the split directory itself (``root/<class>/<file>``). Torchvision
            formats: the directory holding the extracted archive (torchvision's ``root``).
            ``imagenet100``: the ImageNet-1K root holding ``train/`` and ``val/`` with one
            folder per WordNet id; the 100 classes of :func:`imagenet100_classes` are kept, in
            sorted order, and every other folder is ignored. ``builtin``: ignored (may be
            ``None``).
        split: ``train``, ``val`` or ``test`` (``val`` means ``test`` for the torchvision
            formats); STL-10 adds ``unlabeled`` and ``train+unlabeled`` (label ``-1``). For
            ``imagefolder`` it only appears in messages.
        img_size: Image side of the ``builtin`` set; the other kinds keep their native size
            (transforms resize).
        strict: ``imagefolder``: raise :class:`CorruptImageError` on an unreadable file
            instead of substituting it.
        download: Torchvision formats: let torchvision download the archive into ``root``.
        classes: ``imagefolder``: class names in label order (pass the training set's
            ``classes`` for the validation folder).
        num_samples: ``builtin``: length (default 10,000 for train, 2,000 for val/test).
        seed: ``builtin``: base seed.
        num_classes: ``builtin``: number of classes (2 to 12).

    Returns:
        The dataset, with ``classes`` and ``num_classes``.

    Raises:
        ValueError: Unknown ``kind`` or ``split``, or a missing ``root``.
        DatasetNotFoundError: Missing directory or files, or an empty image folder (one line
            naming the path and the expected layout).
    """
    fmt = DATASETS.get(kind)
    if fmt is None:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {list(DATASETS)}")
    if fmt.needs_root and root is None:
        raise ValueError(f"dataset kind {kind!r} needs a root directory")
    request = DatasetRequest(
        root=None if root is None else Path(root).expanduser(),
        split=split,
        img_size=img_size,
        strict=strict,
        download=download,
        classes=None if classes is None else tuple(classes),
        size=num_samples,
        seed=seed,
        num_classes=num_classes,
    )
    return fmt.build(request)


# --------------------------------------------------------------------------------------------
# The built-in formats
# --------------------------------------------------------------------------------------------


def _root(request: DatasetRequest) -> Path:
    assert request.root is not None  # the registry refuses a missing root before building
    return request.root


def _builtin(request: DatasetRequest) -> ImageDataset:
    split = request.split
    n = request.size if request.size is not None else _BUILTIN_DEFAULT_SIZES.get(split, 2_000)
    return ProceduralShapes(
        n, request.img_size, seed=request.seed, num_classes=request.num_classes, split=split
    )


def _imagefolder(request: DatasetRequest) -> ImageDataset:
    return ImageFolderDataset(
        _root(request), strict=request.strict, classes=request.classes, split=request.split
    )


def _torchvision_format(request: DatasetRequest, kind: str) -> ImageDataset:
    """A torchvision format: its split names, an optional download, its reader."""
    root, split = _root(request), _canonical_split(kind, request.split)
    if request.download:
        _torchvision_download(kind, root, split)
    if kind in ("cifar10", "cifar100"):
        return _load_cifar(kind, root, split)
    if kind in ("mnist", "fashion-mnist"):
        return _load_mnist(kind, root, split)
    return _load_stl10(root, split)


register_dataset(
    DatasetFormat(
        "builtin",
        "procedural shapes made on the fly, no files (--builtin-size images, 10 classes)",
        _builtin,
        needs_root=False,
    )
)
register_dataset(
    DatasetFormat(
        "imagefolder",
        "image files in DIR/<class>/ (--data: the train directory, --val-data: the val one)",
        _imagefolder,
        separate_val=True,
    )
)
register_dataset(
    DatasetFormat(
        "imagenet100",
        "the 100 ImageNet-1K classes of CMC (--data: the ImageNet root with train/ and val/)",
        lambda request: _imagenet100(_root(request), request.split, request.strict),
    )
)
for _kind, _files in (
    ("cifar10", "CIFAR-10's python batches"),
    ("cifar100", "CIFAR-100's python batches"),
    ("stl10", "STL-10's binary files"),
    ("mnist", "MNIST's IDX files"),
    ("fashion-mnist", "Fashion-MNIST's IDX files"),
):
    register_dataset(
        DatasetFormat(
            _kind,
            f"{_files} under --data, as torchvision lays them out",
            functools.partial(_torchvision_format, kind=_kind),
        )
    )
