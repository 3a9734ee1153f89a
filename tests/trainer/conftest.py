"""Shared fixtures of the trainer tests: tiny models, tiny image folders, a CLI runner."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

#: A model small enough for a few CPU steps per second: one block of width 32.
TINY_DEIT = [
    "--arch",
    "deit_s",
    "--depth",
    "1",
    "--embed-dim",
    "32",
    "--num-heads",
    "2",
    "--proj-hidden",
    "64",
    "--proj-dim",
    "32",
]
TINY_SWIN = [
    "--arch",
    "swin_t",
    "--depth",
    "1",
    "--embed-dim",
    "16",
    "--num-heads",
    "1",
    "--proj-hidden",
    "64",
    "--proj-dim",
    "32",
]
#: A ResNet-18 with one block per stage and stage widths 8-16-32-64 (CIFAR stem at 32 px).
TINY_RESNET = [
    "--arch",
    "resnet18",
    "--depth",
    "1",
    "--embed-dim",
    "8",
    "--proj-hidden",
    "64",
    "--proj-dim",
    "32",
]
TINY_DATA = ["--dataset", "builtin", "--builtin-size", "96", "--img-size", "32", "--workers", "0"]


def tiny_run(out: Path, *extra: str, arch: list[str] = TINY_DEIT) -> list[str]:
    return [
        "run",
        "--out",
        str(out),
        *arch,
        *TINY_DATA,
        "--batch-size",
        "16",
        "--queue-size",
        "64",
        "--log-every",
        "2",
        "--checkpoint-every",
        "100",
        "--hardness-every",
        "2",
        *extra,
    ]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 32) -> Path:
    """Real JPEG and PNG files in ``root/<class>/``: a coloured shape per class."""
    rng = random.Random(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
            draw = ImageDraw.Draw(img)
            x, y = rng.randrange(4, 12), rng.randrange(4, 12)
            box = (x, y, x + 14, y + 14)
            fill = tuple(rng.randrange(256) for _ in range(3))
            [draw.ellipse, draw.rectangle, draw.polygon][c % 3](
                box if c % 3 < 2 else [(x, y + 14), (x + 7, y), (x + 14, y + 14)], fill=fill
            )
            img.save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, Path]:
    return write_image_folder(tmp_path / "train"), write_image_folder(tmp_path / "val", per_class=4)


def write_cifar10(root: Path, per_batch: int = 8, test: int = 16) -> Path:
    """CIFAR-10 in its python format (``root/cifar-10-batches-py``: five training batches, a
    test batch, ``batches.meta``), with ``per_batch`` images per batch: a bright square on a
    dark ground whose corner depends on the class, so the classes can be told apart."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def batch(n: int, first_label: int) -> dict[str, object]:
        labels = [(first_label + i) % 10 for i in range(n)]
        images = rng.integers(0, 60, (n, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            y, x = 4 + 2 * (label // 5), 2 + 5 * (label % 5)
            images[i, :, y : y + 12, x : x + 8] = 200 + 5 * label
        return {"batch_label": "fake", "labels": labels, "data": images.reshape(n, -1)}

    for k in range(1, 6):
        with (folder / f"data_batch_{k}").open("wb") as fh:
            pickle.dump(batch(per_batch, k), fh, protocol=2)
    with (folder / "test_batch").open("wb") as fh:
        pickle.dump(batch(test, 0), fh, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": names, "num_vis": 3072}, fh, protocol=2)
    return root
