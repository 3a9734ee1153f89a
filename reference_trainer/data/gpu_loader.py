"""The GPU input path: raw file bytes from DataLoader workers, decoding and augmentation on device.

The CPU path decodes each JPEG with PIL and augments it in a DataLoader worker (about 80 pairs/s
per core at 224 px on an H100 host, short of what a compiled DeiT-S step consumes). Here the
workers only read files:

1. :class:`RawImageDataset` returns each image's encoded JPEG bytes (no decoding), its label,
   source tag and seed. Files that are not JPEGs the device decoder can take (PNG, CMYK or
   12-bit JPEGs, arithmetic coding, truncated files, ...) are decoded in the worker with PIL
   and travel as pixels, named in ``fallback``; unreadable files are replaced by the next
   readable item, named in ``skipped``, by the dataset's own
   :meth:`~reference_trainer.data.base.FileImageDataset.first_readable`. Datasets whose items
   are not files (the built-in set, CIFAR arrays) travel as pixels too.
2. :func:`collate_raw` packs a batch into one uint8 buffer (one shared-memory transfer per
   batch instead of one per image) as a :class:`RawBatch`.
3. :class:`GpuTwoViewPipeline` decodes the JPEGs of a batch with one
   ``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA: the hardware decoder
   for baseline JPEGs on A100/H100; libjpeg-turbo on CPU), falls back to PIL for files the
   device decoder rejects (bisecting the failed batch, remembering the names), then runs
   :class:`~reference_trainer.data.gpu_augment.GpuTwoViewAugment` on the decoded images of
   different sizes and returns a :class:`GpuTwoViewBatch` on the device.

**Seeds.** Keys are the ``(index, seed)`` pairs of
:class:`~reference_trainer.data.pipeline.StepSeededBatches` (``seed = view_seed(run seed, step,
index)``). The augmentation parameters of a batch are drawn from a CPU ``torch.Generator``
seeded with :func:`batch_seed` of the batch's seeds, so they depend only on the run seed, the
step and the batch's indices: not on the number of workers, and a resumed run (the sampler
resumes at the same step with the same indices) draws the same views. Unlike the CPU path, an
image's views depend on its position in the batch, so changing the number of ranks (which
changes the shards) changes the views; each rank's batch gets its own seed.

Usage (how a training loop selects it with ``--loader gpu``, see :func:`resolve_loader`)::

    loader = raw_loader(dataset, StepSeededBatches(sampler, cfg.seed), workers=cfg.workers)
    pipeline = GpuTwoViewPipeline(augmentation_config(cfg.augmentation, cfg.img_size), device)
    for batch in pipeline.iterate(loader):  # GpuTwoViewBatch on the device
        trainer.train_step(batch.view1, batch.view2, batch.sources)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode, decode_jpeg

from syn2co.samplers import MixedDataset

from ..seeds import hashed_seed_of_ints
from .base import (
    CorruptImageError,
    FileImageDataset,
    check_image_pixels,
    image_size_from_header,
    max_image_pixels,
)
from .gpu_augment import GpuTwoViewAugment, JitterOrder, ViewParams
from .rgb import open_rgb, to_rgb
from .transforms import AugmentationConfig, TwoViewBatch, _unpack

__all__ = [
    "DecodeStats",
    "DecodedBatch",
    "GpuTwoViewBatch",
    "GpuTwoViewPipeline",
    "RawBatch",
    "RawImageDataset",
    "RawSample",
    "batch_seed",
    "collate_raw",
    "decode_batch",
    "gpu_decode_available",
    "jpeg_device_decodable",
    "raw_loader",
    "resolve_loader",
]

# Start-of-frame markers nvJPEG and libjpeg decode: baseline, extended and progressive Huffman.
_SOF_OK = frozenset({0xC0, 0xC1, 0xC2})
# Every other start-of-frame marker (lossless, arithmetic coding, hierarchical).
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


# --------------------------------------------------------------------------------------------
# JPEG header check (in the workers: cheap, no decoding)
# --------------------------------------------------------------------------------------------


def jpeg_device_decodable(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> bool:
    """Whether ``data`` is a complete JPEG that the device decoder should take.

    True for baseline, extended or progressive Huffman JPEGs with 8-bit samples and 1 or 3
    components (not an Adobe RGB-transform-0 file) that end with the EOI marker (trailing zero
    padding allowed). Everything else (other formats, CMYK, 12-bit, arithmetic coding,
    lossless, truncated files) goes to PIL, which decodes it or reports it unreadable exactly
    like the CPU path. Only the marker segments before the first scan are read.

    Args:
        data: The file's bytes.

    Returns:
        True when the file should be decoded on the device.
    """
    buf = (data.data if isinstance(data, np.ndarray) else memoryview(data)).cast("B")
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return False
    end, stop = n, max(2, n - 4096)  # up to 4 KiB of zero padding after EOI
    while end > stop and buf[end - 1] == 0:
        end -= 1
    if buf[end - 2] != 0xFF or buf[end - 1] != 0xD9:
        return False
    pos, frame_ok, adobe_rgb = 2, False, False
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return False
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9):
            return False
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2 or pos + 2 + length > n:
            return False
        if marker == 0xDA:  # start of scan: the header is complete
            return frame_ok and not adobe_rgb
        if marker in _SOF_OTHER:
            return False
        if marker in _SOF_OK:
            if length < 8:
                return False
            precision = buf[pos + 4]
            height = (buf[pos + 5] << 8) | buf[pos + 6]
            width = (buf[pos + 7] << 8) | buf[pos + 8]
            components = buf[pos + 9]
            frame_ok = precision == 8 and height > 0 and width > 0 and components in (1, 3)
            if not frame_ok:
                return False
        if marker == 0xEE and length >= 14 and bytes(buf[pos + 4 : pos + 9]) == b"Adobe":
            adobe_rgb = buf[pos + 15] == 0  # transform 0: RGB or CMYK samples, not YCbCr
        pos += 2 + length
    return False


def _decode_pil(data: bytes) -> Tensor:
    """Decode any image PIL reads to RGB like ``read_rgb_image``: uint8 ``(3, H, W)``."""
    rgb = open_rgb(io.BytesIO(data))
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def _decode_jpeg_cpu(data: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = decode_jpeg(data, mode=ImageReadMode.RGB)
    assert isinstance(out, Tensor)
    return out


# --------------------------------------------------------------------------------------------
# The dataset of raw items and its collate
# --------------------------------------------------------------------------------------------


class RawSample(NamedTuple):
    """One raw item.

    Attributes:
        data: Encoded JPEG bytes, uint8 ``(N,)`` (``encoded``), or RGB pixels uint8
            ``(3, H, W)``.
        encoded: Whether ``data`` still has to be decoded (on the device).
        label: Class index (``-1`` unlabelled).
        seed: The key's augmentation seed (the index itself for plain integer keys).
        source: 0 real, 1 synthetic.
        name: The file's path ("" when the item is not a file).
        skipped: Unreadable files this item replaced.
        fallback: This item's file when it was decoded with PIL (not a device JPEG).
    """

    data: Tensor
    encoded: bool
    label: int
    seed: int
    source: int = 0
    name: str = ""
    skipped: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()


class RawImageDataset(Dataset[RawSample]):
    """Raw items of a training dataset, keyed by ``(index, seed)`` or by index.

    Args:
        base: A :class:`~reference_trainer.data.base.FileImageDataset` (image files, e.g. an
            image folder), a ``syn2co.samplers.MixedDataset`` (of such datasets or anything
            else), or any dataset whose items ``TwoViewDataset`` accepts (:class:`LoadedImage`,
            ``(image, label)``; these travel as pixels).
        decode_in_worker: Decode JPEGs in the worker too (libjpeg-turbo via
            ``torchvision.io.decode_jpeg``): for a CPU device, where decoding in the main
            process would be serial.

    Items are :class:`RawSample`. Unreadable files are replaced by the next readable item of
    the same dataset (wrapping around) and named in ``skipped``, or raise
    :class:`~reference_trainer.data.base.CorruptImageError` when it is ``strict``: the
    dataset's own rule (:meth:`~reference_trainer.data.base.FileImageDataset.first_readable`).
    """

    def __init__(self, base: Dataset[Any], *, decode_in_worker: bool = False) -> None:
        self.base = base
        self.decode_in_worker = decode_in_worker
        self._len = len(base)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: int | tuple[int, int]) -> RawSample:
        if isinstance(key, tuple | list):
            index, seed = int(key[0]), int(key[1])
        else:
            index = seed = int(key)
        base = self.base
        if isinstance(base, FileImageDataset):
            return self._from_files(base, index, seed, 0)
        if isinstance(base, MixedDataset):
            real = index < base.real_size
            part = base.real if real else base.synthetic
            source = 0 if real else 1
            if isinstance(part, FileImageDataset):
                local = index if real else index - base.real_size
                return self._from_files(part, local, seed, source)
        image, label, skipped, source = _unpack(base[index])
        if isinstance(image, Image.Image):
            pixels = torch.from_numpy(np.asarray(to_rgb(image)).copy()).permute(2, 0, 1)
        elif image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
            pixels = image
        else:
            raise TypeError(
                f"expected an RGB PIL image or a uint8 (3, H, W) tensor, got {image.dtype} "
                f"{tuple(image.shape)}"
            )
        return RawSample(pixels, False, label, seed, source, "", skipped)

    def _from_files(self, files: FileImageDataset, index: int, seed: int, source: int) -> RawSample:
        sample, skipped = files.first_readable(
            index, lambda path, j: self._read(path, int(files.targets[j]), seed, source)
        )
        return sample._replace(skipped=skipped)

    def _read(self, path: str, label: int, seed: int, source: int) -> RawSample:
        data = np.fromfile(path, dtype=np.uint8)
        limit = max_image_pixels()  # refused from the header, before any decoder sees it
        check_image_pixels(
            path, image_size_from_header(path, io.BytesIO(data.tobytes()), limit), limit
        )
        raw = torch.from_numpy(data)
        if jpeg_device_decodable(data):
            if not self.decode_in_worker:
                return RawSample(raw, True, label, seed, source, path)
            try:
                return RawSample(_decode_jpeg_cpu(raw), False, label, seed, source, path)
            except RuntimeError:
                pass  # let PIL decide, as the CPU path would
        pixels = _decode_pil(data.tobytes())
        return RawSample(pixels, False, label, seed, source, path, (), (path,))


class RawBatch(NamedTuple):
    """A collated batch of raw items, packed into one buffer.

    Attributes:
        buffer: uint8 ``(N,)``: every item's bytes (encoded) or CHW pixels, concatenated.
        offsets: int64 ``(B + 1,)``: item ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``.
        shapes: int64 ``(B, 3)``: ``(3, H, W)`` of pixel items, zeros for encoded ones.
        labels: int64 ``(B,)``.
        seeds: int64 ``(B,)``: the keys' seeds (see :func:`batch_seed`).
        sources: int64 ``(B,)``: 0 real, 1 synthetic.
        names: File path per item ("" when not a file).
        skipped: Unreadable files substituted in this batch.
        fallback: Files of this batch decoded with PIL in the workers.
    """

    buffer: Tensor
    offsets: Tensor
    shapes: Tensor
    labels: Tensor
    seeds: Tensor
    sources: Tensor
    names: list[str]
    skipped: list[str]
    fallback: list[str]

    @property
    def size(self) -> int:
        """Number of items ``B``."""
        return int(self.labels.shape[0])

    @property
    def encoded(self) -> list[bool]:
        """Per item: whether it holds encoded bytes (True) or pixels."""
        return [bool(c == 0) for c in self.shapes[:, 0].tolist()]

    def item(self, i: int) -> Tensor:
        """Item ``i``: a view of ``buffer``, uint8 ``(N,)`` bytes or ``(3, H, W)`` pixels."""
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        data = self.buffer[start:stop]
        c, h, w = (int(v) for v in self.shapes[i])
        return data if c == 0 else data.view(c, h, w)


def collate_raw(samples: Sequence[RawSample]) -> RawBatch:
    """Pack :class:`RawSample` items into a :class:`RawBatch` (one buffer for all bytes).

    Args:
        samples: ``B >= 1`` items.

    Returns:
        The packed batch.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    flats = [s.data.reshape(-1) if s.encoded else s.data.contiguous().view(-1) for s in samples]
    sizes = torch.tensor([f.numel() for f in flats], dtype=torch.int64)
    offsets = torch.zeros(len(samples) + 1, dtype=torch.int64)
    torch.cumsum(sizes, 0, out=offsets[1:])
    shapes = torch.tensor(
        [(0, 0, 0) if s.encoded else tuple(s.data.shape) for s in samples], dtype=torch.int64
    )
    return RawBatch(
        buffer=torch.cat(flats),
        offsets=offsets,
        shapes=shapes.reshape(-1, 3),
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        seeds=torch.tensor([s.seed for s in samples], dtype=torch.int64),
        sources=torch.tensor([s.source for s in samples], dtype=torch.int64),
        names=[s.name for s in samples],
        skipped=[p for s in samples for p in s.skipped],
        fallback=[p for s in samples for p in s.fallback],
    )


def batch_seed(seeds: Tensor | Sequence[int]) -> int:
    """The generator seed of a batch: a stable 63-bit hash of its items' seeds, in order."""
    return hashed_seed_of_ints(torch.as_tensor(seeds, dtype=torch.int64))


def raw_loader(
    dataset: Dataset[Any],
    batch_sampler: Sampler[list[Any]] | Iterable[list[Any]],
    *,
    workers: int,
    decode_in_worker: bool = False,
    prefetch_factor: int = 4,
    generator: torch.Generator | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader[RawSample]:
    """A DataLoader of :class:`RawBatch` for :class:`GpuTwoViewPipeline`.

    Args:
        dataset: The training dataset (wrapped in :class:`RawImageDataset`).
        batch_sampler: Yields lists of keys, e.g. ``StepSeededBatches(sampler, seed)``.
        workers: DataLoader worker processes (they only read files and run the PIL fallback).
        decode_in_worker: Decode JPEGs in the workers (for a CPU device).
        prefetch_factor: Batches loaded ahead per worker.
        generator: The stream the workers' base seed is drawn from (default: the global one).
        worker_init_fn: Called in each worker at its start.

    Returns:
        The loader (not pinned: the JPEG bytes are read by the decoder on the host).
    """
    return DataLoader(
        RawImageDataset(dataset, decode_in_worker=decode_in_worker),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate_raw,
        generator=generator,
        worker_init_fn=worker_init_fn,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )


# --------------------------------------------------------------------------------------------
# Decoding on the device
# --------------------------------------------------------------------------------------------


class DecodedBatch(NamedTuple):
    """A raw batch decoded on the device.

    Attributes:
        images: ``B`` uint8 tensors ``(3, H_i, W_i)`` on the device.
        labels: int64 ``(B,)`` (CPU).
        sources: int64 ``(B,)`` (CPU).
        skipped: Unreadable files substituted (the workers' and the device decoder's).
        fallback: Files decoded with PIL (in the workers, or here after the device failed).
        device_decoded: How many images the device decoder decoded.
    """

    images: list[Tensor]
    labels: Tensor
    sources: Tensor
    skipped: list[str]
    fallback: list[str]
    device_decoded: int


def _device_decode(datas: list[Tensor], device: torch.device) -> list[Tensor | None]:
    """Decode a list of JPEGs with one call; bisect to isolate files that make it fail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        assert isinstance(out, list)
        return list(out)
    except RuntimeError:
        if len(datas) == 1:
            return [None]
        mid = len(datas) // 2
        return _device_decode(datas[:mid], device) + _device_decode(datas[mid:], device)


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def decode_batch(
    batch: RawBatch, device: torch.device | str, *, known_bad: set[str] | None = None
) -> DecodedBatch:
    """Decode the JPEGs of a batch on ``device`` in one call and move the pixel items there.

    A JPEG the device decoder rejects (the failing call is bisected to find it) is decoded
    with PIL on the host and named in ``fallback``; if PIL fails too, the item is replaced by
    the next decodable item of the batch (its image, label and source) and named in
    ``skipped``. Names of rejected files are added to ``known_bad``, whose files go straight
    to PIL next time.

    Args:
        batch: A collated raw batch.
        device: Where to decode.
        known_bad: Names of files the device decoder rejected before (updated in place).

    Returns:
        The decoded batch (images on ``device``, labels and sources on the CPU).

    Raises:
        CorruptImageError: When no item of the batch can be decoded.
    """
    device = torch.device(device)
    known_bad = set() if known_bad is None else known_bad
    n = batch.size
    encoded = batch.encoded
    items = [batch.item(i) for i in range(n)]
    images: list[Tensor | None] = [None] * n
    on_device = [i for i in range(n) if encoded[i] and batch.names[i] not in known_bad]
    device_decoded = 0
    if on_device:
        decoded = _device_decode([items[i] for i in on_device], device)
        for i, image in zip(on_device, decoded, strict=True):
            images[i] = image
            device_decoded += image is not None
    fallback, skipped = list(batch.fallback), list(batch.skipped)
    pixels = [i for i in range(n) if not encoded[i]]
    for i in range(n):
        if encoded[i] and images[i] is None:  # rejected by the device decoder
            name = batch.names[i]
            known_bad.add(name)
            try:
                items[i] = _decode_pil(items[i].numpy().tobytes())
            except Exception:  # unreadable: substituted below
                skipped.append(name)
                continue
            fallback.append(name)
            pixels.append(i)
    if pixels:  # one host-to-device copy for every pixel item
        flat = torch.cat([items[i].reshape(-1) for i in pixels])
        moved = torch.split(_to_device(flat, device), [items[i].numel() for i in pixels])
        for i, part in zip(pixels, moved, strict=True):
            images[i] = part.view(items[i].shape)
    labels, sources = batch.labels.clone(), batch.sources.clone()
    good = [i for i in range(n) if images[i] is not None]
    if not good:
        raise CorruptImageError(", ".join(batch.names[:3]), "no image of the batch is readable")
    for i in range(n):
        if images[i] is None:
            j = next((k for k in good if k > i), good[0])
            images[i], labels[i], sources[i] = images[j], labels[j], sources[j]
    return DecodedBatch(
        [im for im in images if im is not None], labels, sources, skipped, fallback, device_decoded
    )


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


class GpuTwoViewBatch(NamedTuple):
    """A training batch made on the device (the fields of :class:`TwoViewBatch` + ``fallback``).

    Attributes:
        view1: float32 ``(B, 3, S, S)`` on the device.
        view2: float32 ``(B, 3, S, S)`` on the device.
        labels: int64 ``(B,)`` on the device.
        skipped: Unreadable files substituted in this batch.
        sources: int64 ``(B,)`` on the device: 0 real, 1 synthetic.
        fallback: Files decoded with PIL instead of the device decoder.
    """

    view1: Tensor
    view2: Tensor
    labels: Tensor
    skipped: list[str]
    sources: Tensor
    fallback: list[str]

    def two_view(self) -> TwoViewBatch:
        """The same batch as a :class:`TwoViewBatch` (without ``fallback``)."""
        return TwoViewBatch(self.view1, self.view2, self.labels, self.skipped, self.sources)


@dataclass
class DecodeStats:
    """Counts since the pipeline was built.

    Attributes:
        images: Images decoded and augmented.
        device_decoded: Images decoded by the device decoder.
        fallback: Images decoded with PIL (workers or host).
        skipped: Unreadable files substituted.
    """

    images: int = 0
    device_decoded: int = 0
    fallback: int = 0
    skipped: int = 0


class GpuTwoViewPipeline:
    """Raw batches in, two augmented views on the device out.

    Args:
        cfg: The augmentation (``AugmentationConfig.for_size(cfg)`` for an int).
        device: Where to decode and augment.
        jitter_order: See :class:`GpuTwoViewAugment`.

    Call:
        batch: A :class:`RawBatch` from :func:`raw_loader`.

    Returns:
        A :class:`GpuTwoViewBatch` on ``device``, its parameters drawn from a generator seeded
        with :func:`batch_seed` of the batch's seeds (:attr:`last_params` keeps them).
    """

    def __init__(
        self,
        cfg: AugmentationConfig | int,
        device: torch.device | str,
        *,
        jitter_order: JitterOrder = "random",
    ) -> None:
        self.augment = GpuTwoViewAugment(cfg, jitter_order=jitter_order)
        self.device = torch.device(device)
        self.stats = DecodeStats()
        self.known_bad: set[str] = set()
        self.last_params: tuple[ViewParams, ViewParams] | None = None

    @property
    def cfg(self) -> AugmentationConfig:
        return self.augment.cfg

    def __call__(self, batch: RawBatch) -> GpuTwoViewBatch:
        decoded = decode_batch(batch, self.device, known_bad=self.known_bad)
        generator = torch.Generator().manual_seed(batch_seed(batch.seeds))
        views = self.augment(decoded.images, generator)
        self.last_params = views.params
        self.stats.images += batch.size
        self.stats.device_decoded += decoded.device_decoded
        self.stats.fallback += len(decoded.fallback)
        self.stats.skipped += len(decoded.skipped)
        return GpuTwoViewBatch(
            views.view1,
            views.view2,
            _to_device(decoded.labels, self.device),
            decoded.skipped,
            _to_device(decoded.sources, self.device),
            decoded.fallback,
        )

    def iterate(
        self, loader: Iterable[RawBatch], *, overlap: bool = True
    ) -> Iterator[GpuTwoViewBatch]:
        """The loader's batches, decoded and augmented on the device.

        Args:
            loader: Raw batches, e.g. from :func:`raw_loader`.
            overlap: On CUDA, prepare batch ``t + 1`` on a side stream as soon as batch ``t``
                is handed out, so that its decoding and augmentation can run while the
                caller's step ``t`` runs (the usual prefetcher pattern: the caller's stream
                waits for the side stream, and the batch's memory is recorded on it). No
                effect on other devices.

        Yields:
            :class:`GpuTwoViewBatch` on the device, in the loader's order.
        """
        if not (overlap and self.device.type == "cuda"):
            for batch in loader:
                yield self(batch)
            return
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        it = iter(loader)

        def prepare() -> GpuTwoViewBatch | None:
            batch = next(it, None)
            if batch is None:
                return None
            side.wait_stream(torch.cuda.current_stream(self.device))  # buffers freed before
            with torch.cuda.stream(side):
                return self(batch)

        ready = prepare()
        while ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(side)
            for t in (ready.view1, ready.labels, ready.sources):  # view2 shares view1's storage
                t.record_stream(current)
            upcoming = prepare()  # enqueued before the caller's step: runs alongside it
            yield ready
            ready = upcoming

    def __repr__(self) -> str:
        return f"GpuTwoViewPipeline({self.augment.cfg}, device={self.device})"


# --------------------------------------------------------------------------------------------
# Choosing the loader
# --------------------------------------------------------------------------------------------

_probe_cache: dict[str, bool] = {}


def gpu_decode_available(device: torch.device | str) -> bool:
    """Whether ``decode_jpeg(..., device=device)`` works here (tried once per device, cached)."""
    device = torch.device(device)
    key = str(device)
    if key not in _probe_cache:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(buf, "JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        try:
            _probe_cache[key] = _device_decode([data], device)[0] is not None
        except Exception:  # no CUDA, no nvJPEG, ...
            _probe_cache[key] = False
    return _probe_cache[key]


def resolve_loader(
    choice: Literal["gpu", "cpu", "auto"] | str, device: torch.device | str
) -> Literal["gpu", "cpu"]:
    """The input path for ``--loader``: ``auto`` is ``gpu`` on a CUDA device with nvJPEG.

    Args:
        choice: ``gpu``, ``cpu`` or ``auto``.
        device: The training device.

    Returns:
        ``"gpu"`` or ``"cpu"``.

    Raises:
        ValueError: Unknown ``choice``.
    """
    if choice == "cpu":
        return "cpu"
    if choice == "gpu":
        return "gpu"
    if choice == "auto":
        device = torch.device(device)
        return "gpu" if device.type == "cuda" and gpu_decode_available(device) else "cpu"
    raise ValueError(f"--loader must be gpu, cpu or auto, got {choice!r}")
