"""Shared fixtures of the trainer tests: tiny models, tiny image folders, a CLI runner."""

from __future__ import annotations

import random
from pathlib import Path

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


def write_fake_imagenet(root: Path, per_class: int = 1, distractors: int = 3) -> Path:
    """An ImageNet-like root: ``train/`` and ``val/`` with a folder for each ImageNet-100 WordNet
    id (8 px PNGs) plus ``distractors`` other classes that ImageNet-100 must ignore."""
    from reference_trainer.data import imagenet100_classes

    rng = random.Random(1)
    wnids = list(imagenet100_classes()) + [f"n9999999{i}" for i in range(distractors)]
    for split in ("train", "val"):
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = tuple(rng.randrange(256) for _ in range(3))
                Image.new("RGB", (8, 8), colour).save(folder / f"{wnid}_{i}.png")
    return root
