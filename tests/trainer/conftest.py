"""Shared fixtures of the trainer tests: tiny models, tiny image folders, a CLI runner."""

from __future__ import annotations

import json
import os
import pickle
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner


def tiny_deit(depth: int) -> list[str]:
    """A DeiT of ``depth`` blocks of width 32: a few CPU steps per second."""
    return [
        "--arch",
        "deit_s",
        "--depth",
        str(depth),
        "--embed-dim",
        "32",
        "--num-heads",
        "2",
        "--proj-hidden",
        "64",
        "--proj-dim",
        "32",
    ]


#: One block (timm gives the only block no drop-path).
TINY_DEIT = tiny_deit(1)
#: Two blocks, so that the second one has drop-path (rate = the preset's: 0.2 MoBY, 0.1 MoCo v3).
TINY_DEIT_2 = tiny_deit(2)
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


def train_command(run: Path, *extra: str) -> list[str]:
    """``syn2co-train run`` of the tiny model as a real process (this checkout's code)."""
    return [sys.executable, "-m", "reference_trainer.cli", *tiny_run(run, *extra)]


def child_env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's packages."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def wait_for(
    condition: Callable[[], bool],
    process: subprocess.Popen[bytes],
    seconds: float = 120,
    every: float = 0.05,
) -> None:
    """Poll ``condition`` every ``every`` seconds until it holds; fail if ``process`` ends first
    or time runs out."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def records(run: Path) -> list[dict[str, Any]]:
    """The metrics lines without the wall-clock throughput (the only field allowed to differ)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "img_per_s"} for line in lines]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested checkpoint (dicts, lists, tuples), keyed by its path."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}{key}.")
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, item in enumerate(value):
            out |= flatten(item, f"{prefix}{i}.")
        return out
    return {prefix.rstrip("."): value}


def assert_same_state(a: Path, b: Path, parts: tuple[str, ...] = ()) -> None:
    """Two run directories hold bit-identical checkpoints (the config's paths aside)."""
    sa = torch.load(a / "checkpoint.pt", weights_only=False)
    sb = torch.load(b / "checkpoint.pt", weights_only=False)
    for state in (sa, sb):
        del state["config"]["out"], state["config"]["resume"], state["config"]["stop_at"]
    fa, fb = flatten(sa), flatten(sb)
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        other = fb[key]
        same = (
            value.dtype == other.dtype and torch.equal(value, other)
            if isinstance(value, torch.Tensor)
            else value == other
        )
        assert same, f"{key} differs"
    # what is compared is what matters: each part of the run is there
    for part in ("online.", "target.", "optimizer.state.", "sampler.", "rng.0.torch", *parts):
        assert any(k.startswith(part) for k in fa), part


#: Ports the tests' rendezvous draw from: below the kernel's ephemeral range (32768 and up by
#: default), so the system never hands one out by itself (to a connect() or a bind to port 0)
#: between the check here and the bind of rank 0's store; below torchrun's default 29500 too.
_PORTS = range(20_000, 29_000)


def free_port() -> int:
    """A free port for a rendezvous, from this pytest worker's own slice of ``_PORTS`` (parallel
    workers never draw the same one)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = len(_PORTS) // workers
    first = _PORTS.start + (worker % workers) * size
    start = random.randrange(size)
    for offset in range(size):
        port = first + (start + offset) % size
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still in TIME_WAIT
            return port
    raise RuntimeError(f"no free port in {first}-{first + size - 1}")


def become_rank(rank: int, port: int, world_size: int = 2) -> None:
    """Give this process the environment ``torchrun`` gives ``rank`` on this machine."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


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


def write_cifar100(root: Path, train: int = 40, test: int = 16) -> Path:
    """CIFAR-100 in its python format (``root/cifar-100-python``: ``train``, ``test``,
    ``meta``), random pixels, labels cycling through the 100 fine classes."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", train), ("test", test)):
        batch = {
            "fine_labels": [i % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with (folder / "meta").open("wb") as fh:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, fh, protocol=2)
    return root


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
