"""Every image mode PIL opens becomes the right 8-bit RGB, on every path that decodes files.

Each case is a real file written with PIL (or, for a 16-bit colour PNG, with zlib by the PNG
specification) whose exact RGB pixels the test computes plainly. The files are read through
the image-folder dataset, the GPU loader's worker (both with and without worker decoding),
the evaluation dataset wrapping a user's plain ``(PIL image, label)`` items, and the synthetic
set's near-duplicate hash.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from reference_trainer.data import EvalDataset, build_dataset
from reference_trainer.data.gpu_loader import RawImageDataset
from reference_trainer.data.rgb import to_rgb
from reference_trainer.synth import dhash

Array = np.ndarray[Any, Any]

# One row of 16-bit grey values and their 8-bit RGB: v * 255 / 65535 = v / 257, rounded.
GREY16 = np.array([[0, 257, 1000, 32768, 40000, 65535]], np.uint16)
GREY16_AS_8 = np.array([[0, 1, 4, 128, 156, 255]], np.uint8)


def _grey(values: Array) -> Array:
    """Grey ``(H, W)`` uint8 repeated into RGB ``(H, W, 3)``."""
    return np.repeat(values[..., None], 3, axis=2)


def _png_16bit_rgb(path: Path, pixels: Array) -> None:
    """A 48-bit RGB PNG (colour type 2, bit depth 16), which PIL cannot write."""
    h, w, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _write(path: Path, mode: str, data: Array, fmt: str, width: int | None = None) -> None:
    """Raw bytes of ``data`` as one image row of ``mode``, saved as ``fmt``."""
    size = (width or data.shape[1], 1)
    Image.frombytes(mode, size, data.tobytes()).save(path, fmt)


def _palette(path: Path, fmt: str, transparency: int | None) -> None:
    image = Image.frombytes("P", (4, 1), bytes([0, 1, 2, 1]))
    image.putpalette([10, 20, 30, 200, 100, 0, 255, 255, 255] + [0] * (253 * 3))
    kw = {} if transparency is None else {"transparency": transparency}
    image.save(path, fmt, **kw)


CMYK = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [100, 50, 25, 128], [0, 0, 0, 255]]], np.uint8)
RGBA = np.array([[[10, 20, 30, 0], [200, 100, 0, 128], [1, 2, 3, 255]]], np.uint8)
FLOATS = np.array([[0.0, 0.25, 0.5, 1.0, 2.0, -1.0, np.nan]], np.float32)
INTS = np.array([[0, 257, 32768, 65535, 70000, -5]], np.int32)

# name -> (writes the file, the RGB pixels it must load as)
CASES: dict[str, tuple[Callable[[Path], None], Array]] = {
    "16-bit grey PNG (I;16)": (
        lambda p: Image.fromarray(GREY16).save(p, "PNG"),
        _grey(GREY16_AS_8),
    ),
    "16-bit grey TIFF, little-endian (I;16)": (
        lambda p: _write(p, "I;16", GREY16.astype("<u2"), "TIFF"),
        _grey(GREY16_AS_8),
    ),
    "16-bit grey TIFF, big-endian (I;16B)": (
        lambda p: _write(p, "I;16B", GREY16.astype(">u2"), "TIFF"),
        _grey(GREY16_AS_8),
    ),
    "16-bit PGM (I)": (
        lambda p: Image.fromarray(GREY16).save(p, "PPM"),
        _grey(GREY16_AS_8),
    ),
    "32-bit integer TIFF (I), clipped to 16 bits": (
        lambda p: Image.fromarray(INTS).save(p, "TIFF"),
        _grey(np.array([[0, 1, 128, 255, 255, 0]], np.uint8)),
    ),
    "float TIFF in [0, 1] (F)": (
        lambda p: Image.fromarray(FLOATS).save(p, "TIFF"),
        # rint: 63.75 -> 64, 127.5 -> 128 (half to even); NaN -> 0
        _grey(np.array([[0, 64, 128, 255, 255, 0, 0]], np.uint8)),
    ),
    "48-bit colour PNG": (
        lambda p: _png_16bit_rgb(
            p, np.array([[[0, 257, 65535], [257 * 200, 257 * 7, 257 * 99]]], np.uint16)
        ),
        np.array([[[0, 1, 255], [200, 7, 99]]], np.uint8),
    ),
    "palette PNG (P)": (
        lambda p: _palette(p, "PNG", None),
        np.array([[[10, 20, 30], [200, 100, 0], [255, 255, 255], [200, 100, 0]]], np.uint8),
    ),
    "palette PNG with a transparent entry (P + tRNS)": (
        lambda p: _palette(p, "PNG", 0),
        np.array([[[10, 20, 30], [200, 100, 0], [255, 255, 255], [200, 100, 0]]], np.uint8),
    ),
    "palette GIF with a transparent entry": (
        lambda p: _palette(p, "GIF", 1),
        np.array([[[10, 20, 30], [200, 100, 0], [255, 255, 255], [200, 100, 0]]], np.uint8),
    ),
    "grey + alpha PNG (LA): alpha dropped": (
        lambda p: _write(p, "LA", np.array([[[7, 0], [99, 128], [250, 255]]], np.uint8), "PNG"),
        _grey(np.array([[7, 99, 250]], np.uint8)),
    ),
    "RGBA PNG: alpha dropped": (
        lambda p: _write(p, "RGBA", RGBA, "PNG"),
        RGBA[..., :3],
    ),
    "CMYK TIFF": (
        lambda p: _write(p, "CMYK", CMYK, "TIFF"),
        # (255 - c) * (255 - k) / 255, rounded
        np.rint(
            (255.0 - CMYK[..., :3].astype(np.float64)) * (255.0 - CMYK[..., 3:]) / 255.0
        ).astype(np.uint8),
    ),
    "1-bit PNG": (
        lambda p: _write(p, "1", np.packbits([1, 0, 1, 1, 0, 0, 0, 1]), "PNG", width=8),
        _grey(np.array([[255, 0, 255, 255, 0, 0, 0, 255]], np.uint8)),
    ),
    "8-bit grey PNG (L)": (
        lambda p: _write(p, "L", np.array([[0, 77, 255]], np.uint8), "PNG"),
        _grey(np.array([[0, 77, 255]], np.uint8)),
    ),
}


EXTENSIONS = {"PNG": "png", "TIFF": "tif", "PGM": "pgm", "GIF": "gif"}


def _extension(name: str) -> str:
    return next(ext for word, ext in EXTENSIONS.items() if word in name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One class folder per case (in the order of CASES), each with its single file."""
    root = tmp_path_factory.mktemp("modes")
    for k, (name, (write, _)) in enumerate(CASES.items()):
        (root / f"{k:02d}").mkdir()
        write(root / f"{k:02d}" / f"image.{_extension(name)}")
    return root


def _case(folder: Path, name: str) -> tuple[int, Array]:
    return list(CASES).index(name), CASES[name][1]


@pytest.mark.parametrize("name", list(CASES))
def test_image_folder_loads_the_exact_rgb_pixels(folder: Path, name: str) -> None:
    index, expected = _case(folder, name)
    item = build_dataset("imagefolder", folder, "train", strict=True)[index]
    assert item.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(item.image), expected)


@pytest.mark.parametrize("decode_in_worker", [False, True], ids=["bytes", "worker-decode"])
@pytest.mark.parametrize("name", list(CASES))
def test_gpu_loader_worker_decodes_the_same_pixels(
    folder: Path, name: str, decode_in_worker: bool
) -> None:
    index, expected = _case(folder, name)
    dataset = build_dataset("imagefolder", folder, "train", strict=True)
    item = RawImageDataset(dataset, decode_in_worker=decode_in_worker)[index]
    assert not item.encoded and item.fallback  # not a JPEG: PIL in the worker
    np.testing.assert_array_equal(item.data.permute(1, 2, 0).numpy(), expected)


class PlainPairs(torch.utils.data.Dataset[tuple[Image.Image, int]]):
    """A user's dataset of ``(PIL image as opened, label)`` pairs, modes untouched."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image = Image.open(self.paths[index])
        image.load()
        return image, index


def test_plain_pil_items_of_any_mode_are_converted_before_the_transforms(folder: Path) -> None:
    paths = sorted(p for p in folder.rglob("image.*"))
    seen = EvalDataset(PlainPairs(paths), lambda image: torch.from_numpy(np.array(image)))
    for index, (_, expected) in enumerate(CASES.values()):
        np.testing.assert_array_equal(seen[index].image.numpy(), expected)


def test_near_duplicate_hash_reads_16_bit_images_like_their_8_bit_version() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64) ** 1.3 / 65535**0.3).astype(np.uint16)
    eight = np.rint(ramp.astype(np.float64) / 257).astype(np.uint8)
    wide = Image.fromarray(ramp)
    assert wide.mode == "I;16"
    assert dhash(wide) == dhash(Image.fromarray(eight))
    assert np.asarray(to_rgb(wide)).max() == 255  # not clipped to white: the ramp survives
    assert len(np.unique(np.asarray(to_rgb(wide)))) > 200


def test_to_rgb_keeps_rgb_images_and_unpremultiplies_alpha() -> None:
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image
    assert to_rgb(Image.new("La", (1, 1), (100, 128))).getpixel((0, 0)) == (199, 199, 199)
    assert to_rgb(Image.new("RGBa", (1, 1), (50, 50, 50, 128))).getpixel((0, 0)) == (99, 99, 99)
