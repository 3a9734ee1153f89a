"""Tests of the GPU input path (data.gpu_loader): raw bytes, device decoding, fallbacks, seeds.

Everything runs on CPU tensors (``decode_jpeg(..., device="cpu")``, libjpeg-turbo); the CUDA
test at the end runs only where a GPU is present. Decoding tolerance: on the CPU both
torchvision and PIL use libjpeg-turbo with the same settings, so decoded pixels are equal; the
test allows ``DECODE_TOL = 1`` grey level. nvJPEG (CUDA) uses its own IDCT and chroma
upsampling: its test allows a mean absolute difference of ``CUDA_DECODE_MEAN_TOL`` levels.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import decode_jpeg

from reference_trainer.data import gpu_loader
from reference_trainer.data.base import CorruptImageError
from reference_trainer.data.builtin import ProceduralShapes
from reference_trainer.data.datasets import ImageFolderDataset
from reference_trainer.data.gpu_augment import GpuTwoViewAugment
from reference_trainer.data.gpu_loader import (
    GpuTwoViewPipeline,
    RawImageDataset,
    batch_seed,
    collate_raw,
    decode_batch,
    jpeg_device_decodable,
    raw_loader,
    resolve_loader,
)
from reference_trainer.data.pipeline import StepSeededBatches
from syn2co.samplers import MixedDataset, MixedSourceBatchSampler

DECODE_TOL = 1
CUDA_DECODE_MEAN_TOL = 3.0


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels(seed: int, h: int, w: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w)[None, :, None] * rng.random(3)
    return np.clip(0.5 * ramp + 0.5 * rng.random((h, w, 3)) * 255, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray[Any, Any], **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _without_quantization_tables(data: bytes) -> bytes:
    """A baseline JPEG without its DQT segments: a valid header, but nothing can decode it."""
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] != 0xDB:
            out += data[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[pos:])


def _folder(root: Path, extra: bool = True) -> Path:
    """Two classes of JPEGs of varied sizes; with ``extra`` a PNG, a CMYK JPEG, a grayscale
    and a progressive JPEG, a corrupt file and a truncated JPEG."""
    for c in range(2):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            (d / f"{i}.jpg").write_bytes(
                _jpeg(_pixels(10 * c + i, 30 + 7 * i, 40 + 5 * c), quality=90)
            )
    if extra:
        a = _pixels(99, 36, 28)
        Image.fromarray(a).save(root / "class_0" / "4_png.png")
        Image.fromarray(a).convert("CMYK").save(root / "class_0" / "5_cmyk.jpg")
        Image.fromarray(a[..., 0]).save(root / "class_0" / "6_gray.jpg")
        (root / "class_0" / "7_progressive.jpg").write_bytes(_jpeg(a, progressive=True))
        (root / "class_1" / "4_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
        full = (root / "class_1" / "0.jpg").read_bytes()
        (root / "class_1" / "5_truncated.jpg").write_bytes(full[: len(full) // 2])
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "train")


# --------------------------------------------------------------------------------------------
# JPEG check and raw items
# --------------------------------------------------------------------------------------------


def test_jpeg_device_decodable() -> None:
    a = _pixels(0, 20, 24)
    base = _jpeg(a)
    assert jpeg_device_decodable(base)
    assert jpeg_device_decodable(np.frombuffer(base, dtype=np.uint8))
    assert jpeg_device_decodable(_jpeg(a, progressive=True))
    assert jpeg_device_decodable(_jpeg(a[..., 0]))  # grayscale: decoded as RGB
    assert jpeg_device_decodable(base + b"\x00" * 7)  # zero padding after EOI
    assert not jpeg_device_decodable(base[: len(base) // 2])  # truncated
    assert not jpeg_device_decodable(b"\xff\xd8\xff")
    assert not jpeg_device_decodable(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    buf = io.BytesIO()
    Image.fromarray(a).convert("CMYK").save(buf, "JPEG")
    assert not jpeg_device_decodable(buf.getvalue())  # 4 components


def test_raw_dataset_returns_bytes_and_decodes_the_rest_with_pil(folder: Path) -> None:
    ds = ImageFolderDataset(folder)
    raw = RawImageDataset(ds)
    names = [Path(ds.path(i)).name for i in range(len(ds))]
    items = {name: raw[(i, 1000 + i)] for i, name in enumerate(names)}
    for name in ("0.jpg", "6_gray.jpg", "7_progressive.jpg"):
        item = items[name]
        assert item.encoded and item.data.ndim == 1 and not item.fallback
        assert bytes(item.data.numpy()) == Path(item.name).read_bytes()
    for name in ("4_png.png", "5_cmyk.jpg"):
        item = items[name]
        assert not item.encoded and item.data.shape == (3, 36, 28)
        assert [Path(p).name for p in item.fallback] == [name]
        ref = np.asarray(Image.open(item.name).convert("RGB"))
        assert np.array_equal(item.data.permute(1, 2, 0).numpy(), ref)
    # corrupt and truncated files are replaced by the next readable one (wrapping around)
    corrupt = items["4_corrupt.jpg"]
    assert [Path(p).name for p in corrupt.skipped] == ["4_corrupt.jpg", "5_truncated.jpg"]
    assert Path(corrupt.name).name == "0.jpg" and corrupt.label == 0
    assert corrupt.seed == 1000 + names.index("4_corrupt.jpg")
    assert raw[5].seed == 5  # plain integer keys
    strict = RawImageDataset(ImageFolderDataset(folder, strict=True))
    with pytest.raises(CorruptImageError, match="4_corrupt"):
        strict[names.index("4_corrupt.jpg")]


def test_collate_packs_one_buffer(folder: Path) -> None:
    raw = RawImageDataset(ImageFolderDataset(folder))
    items = [raw[(i, i)] for i in range(len(raw))]
    batch = collate_raw(items)
    assert batch.buffer.dtype == torch.uint8 and batch.buffer.ndim == 1
    assert batch.size == len(items)
    for i, item in enumerate(items):
        assert torch.equal(batch.item(i), item.data)
        assert batch.encoded[i] == item.encoded
    assert sorted(Path(p).name for p in batch.fallback) == ["4_png.png", "5_cmyk.jpg"]
    assert len(batch.skipped) == 3  # corrupt + truncated (twice: both substituted)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def test_decode_matches_pil(folder: Path) -> None:
    ds = ImageFolderDataset(folder)
    raw = RawImageDataset(ds)
    batch = collate_raw([raw[(i, i)] for i in range(len(raw))])
    decoded = decode_batch(batch, "cpu")
    assert decoded.device_decoded == sum(batch.encoded)
    for i, image in enumerate(decoded.images):
        ref = np.asarray(Image.open(batch.names[i]).convert("RGB")).astype(np.int16)
        assert image.shape == (3, *ref.shape[:2]) and image.dtype == torch.uint8
        assert np.abs(image.permute(1, 2, 0).numpy().astype(np.int16) - ref).max() <= DECODE_TOL


def test_device_rejections_are_bisected_named_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JPEG the device decoder rejects (e.g. a chroma subsampling nvJPEG lacks) goes to PIL."""
    raw = RawImageDataset(ImageFolderDataset(_folder(tmp_path / "train", extra=False)))
    batch = collate_raw([raw[(i, i)] for i in range(8)])  # 8 plain JPEGs
    poison = bytes(batch.item(5).numpy())
    real_decode = decode_jpeg
    calls: list[int] = []

    def picky(datas: list[torch.Tensor], **kw: Any) -> Any:
        calls.append(len(datas))
        if any(bytes(d.numpy()) == poison for d in datas):
            raise RuntimeError("Error while decoding JPEG images: unsupported")
        return real_decode(datas, **kw)

    monkeypatch.setattr(gpu_loader, "decode_jpeg", picky)
    known: set[str] = set()
    decoded = decode_batch(batch, "cpu", known_bad=known)
    assert decoded.fallback == [batch.names[5]] and known == {batch.names[5]}
    assert decoded.device_decoded == 7 and not decoded.skipped
    assert len(calls) <= 1 + 2 * 3  # one call, then a bisection of depth log2(8)
    ref = np.asarray(Image.open(batch.names[5]).convert("RGB"))
    assert np.array_equal(decoded.images[5].permute(1, 2, 0).numpy(), ref)
    calls.clear()
    again = decode_batch(batch, "cpu", known_bad=known)
    assert calls == [7] and again.fallback == [batch.names[5]]  # straight to PIL


def test_undecodable_jpeg_is_replaced_within_the_batch(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train", extra=False)
    bad = root / "class_0" / "9_no_tables.jpg"
    bad.write_bytes(_without_quantization_tables((root / "class_0" / "0.jpg").read_bytes()))
    assert jpeg_device_decodable(bad.read_bytes())  # passes the header check in the worker
    ds = ImageFolderDataset(root)
    raw = RawImageDataset(ds)
    batch = collate_raw([raw[(i, i)] for i in range(len(ds))])
    i = batch.names.index(str(bad))
    decoded = decode_batch(batch, "cpu")
    assert decoded.skipped == [str(bad)] and decoded.fallback == []
    assert decoded.images[i] is decoded.images[i + 1]  # the next item of the batch
    assert decoded.labels[i] == batch.labels[i + 1]
    pipe = GpuTwoViewPipeline(16, "cpu")
    out = pipe(batch)
    assert out.skipped == [str(bad)] and pipe.stats.skipped == 1
    assert out.view1.shape == (len(ds), 3, 16, 16)


# --------------------------------------------------------------------------------------------
# The pipeline through a DataLoader: seeds, workers, resume, sources
# --------------------------------------------------------------------------------------------


def _views(loader: Any, pipe: GpuTwoViewPipeline, n: int) -> list[torch.Tensor]:
    out = []
    for batch in pipe.iterate(loader):
        out.append(
            torch.cat(
                [
                    batch.view1,
                    batch.view2,
                    batch.labels[:, None, None, None].float().expand(-1, 3, 16, 1),
                ],
                3,
            )
        )
        if len(out) == n:
            break
    return out


def test_views_do_not_depend_on_workers_and_resume_exactly(tmp_path: Path) -> None:
    ds = ImageFolderDataset(_folder(tmp_path / "train", extra=False))
    pipe = GpuTwoViewPipeline(16, "cpu")

    def sampler() -> MixedSourceBatchSampler:
        return MixedSourceBatchSampler(len(ds), 0, 4, 0.0, seed=3, rank=0, world_size=1)

    s0 = sampler()
    serial = _views(raw_loader(ds, StepSeededBatches(s0, 3), workers=0), pipe, 2)
    s1 = sampler()
    parallel = _views(raw_loader(ds, StepSeededBatches(s1, 3), workers=2), pipe, 2)
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(serial[0][:, :, :, :16], serial[1][:, :, :, :16])
    # resume after one batch: the second batch is the same
    first = sampler()
    it = iter(first)
    next(it)
    state = first.state_dict()
    resumed = sampler()
    resumed.load_state_dict(state)
    again = _views(raw_loader(ds, StepSeededBatches(resumed, 3), workers=0), pipe, 1)
    torch.testing.assert_close(again[0], serial[1], atol=0, rtol=0)


def test_mixed_sources_and_non_file_datasets(tmp_path: Path) -> None:
    real = ImageFolderDataset(_folder(tmp_path / "real", extra=False))
    synthetic = ProceduralShapes(6, 24, seed=0)  # not files: travels as pixels
    mixed: Dataset[Any] = MixedDataset(real, synthetic)
    raw = RawImageDataset(mixed)
    batch = collate_raw([raw[(i, i)] for i in (0, 3, 8, 12)])
    assert batch.sources.tolist() == [0, 0, 1, 1]
    assert batch.encoded == [True, True, False, False]
    out = GpuTwoViewPipeline(16, "cpu")(batch)
    assert out.sources.tolist() == [0, 0, 1, 1] and out.view2.shape == (4, 3, 16, 16)
    assert out.two_view().view1 is out.view1


def test_pipeline_is_decode_then_seeded_augment(folder: Path) -> None:
    raw = RawImageDataset(ImageFolderDataset(folder))
    batch = collate_raw([raw[(i, 7 * i)] for i in range(len(raw))])
    pipe = GpuTwoViewPipeline(24, "cpu")
    out = pipe(batch)
    decoded = decode_batch(batch, "cpu")
    expected = GpuTwoViewAugment(24)(
        decoded.images, torch.Generator().manual_seed(batch_seed(batch.seeds))
    )
    torch.testing.assert_close(out.view1, expected.view1, atol=0, rtol=0)
    assert pipe.last_params is not None and len(pipe.last_params[0]) == batch.size
    assert pipe.stats.fallback == 2 and pipe.stats.skipped == 3


def test_batch_seed_is_stable_and_order_sensitive() -> None:
    assert batch_seed([1, 2, 3]) == batch_seed(torch.tensor([1, 2, 3]))
    assert batch_seed([1, 2, 3]) != batch_seed([3, 2, 1])
    assert 0 <= batch_seed([2**62, -5]) < 2**63


def test_resolve_loader() -> None:
    assert resolve_loader("cpu", "cpu") == "cpu"
    assert resolve_loader("gpu", "cpu") == "gpu"
    assert resolve_loader("auto", "cpu") == "cpu"
    with pytest.raises(ValueError, match="--loader"):
        resolve_loader("fast", "cpu")


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decode_and_augment_agree_with_cpu(folder: Path) -> None:
    raw = RawImageDataset(ImageFolderDataset(folder))
    batch = collate_raw([raw[(i, i)] for i in range(len(raw))])
    cpu = decode_batch(batch, "cpu")
    cuda = decode_batch(batch, "cuda")
    assert cuda.device_decoded == cpu.device_decoded
    for a, b in zip(cpu.images, cuda.images, strict=True):
        assert b.is_cuda and a.shape == b.shape
        assert (a.float() - b.cpu().float()).abs().mean() <= CUDA_DECODE_MEAN_TOL
    aug = GpuTwoViewAugment(32)
    ref = aug(cpu.images, torch.Generator().manual_seed(0))
    # same pixels on both devices: only float rounding differs (cuDNN may use TF32 for the blur)
    on_gpu = aug([im.cuda() for im in cpu.images], params=ref.params)
    torch.testing.assert_close(on_gpu.view1.cpu(), ref.view1, atol=2e-2, rtol=0)
    torch.testing.assert_close(on_gpu.view2.cpu(), ref.view2, atol=2e-2, rtol=0)
    out = GpuTwoViewPipeline(32, "cuda")(batch)
    assert out.view1.is_cuda and out.sources.is_cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_overlapped_iteration_gives_the_same_batches(folder: Path) -> None:
    ds = ImageFolderDataset(folder)
    pipe = GpuTwoViewPipeline(32, "cuda")

    def run(overlap: bool) -> list[torch.Tensor]:
        sampler = MixedSourceBatchSampler(len(ds), 0, 4, 0.0, seed=1, rank=0, world_size=1)
        loader = raw_loader(ds, StepSeededBatches(sampler, 1), workers=0)
        out = []
        for batch in pipe.iterate(loader, overlap=overlap):
            # work on the caller's stream while the next batch is prepared on the side stream
            torch.randn(2048, 2048, device="cuda") @ torch.randn(2048, 2048, device="cuda")
            out.append(torch.cat([batch.view1, batch.view2]).cpu())
        return out

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_the_raw_path_refuses_images_beyond_the_pixel_limit_from_their_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU input path reads bytes: a JPEG (device-decodable) or PNG beyond the limit is
    refused from its header, before any decoder sees it, as on the CPU path."""
    from reference_trainer.data.base import MAX_IMAGE_PIXELS_ENV

    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(folder / "0.jpg", quality=90)
    Image.new("RGB", (40, 30), (4, 5, 6)).save(folder / "1.png")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000")
    for decode_in_worker in (False, True):
        raw = RawImageDataset(
            ImageFolderDataset(folder.parent, strict=True), decode_in_worker=decode_in_worker
        )
        for i in range(2):
            with pytest.raises(CorruptImageError, match="40x30 is 1200 pixels, more than"):
                raw[i]
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1200")
    assert all(RawImageDataset(ImageFolderDataset(folder.parent))[i].label == 0 for i in (0, 1))
