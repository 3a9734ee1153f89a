"""The scripts in ``examples/`` run end to end on a tiny image folder of real PNG and JPEG files.

Each script runs in its own process, as a user would start it, for a few steps with a small
batch; the test checks that it trained with synthetic negatives (the count it reports) and that
every loss it printed is a finite number. The lightly and pytorch-metric-learning examples need
the ``examples`` extra and are skipped where their library is not installed; the latter must
also print that pytorch-metric-learning's loss and gradient equal syn2co's.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _write_image_folder(root: Path, classes: tuple[str, ...], per_class: int, seed: int) -> Path:
    """``root/<class>/<i>.png|jpg``: a filled shape per class on a coloured background."""
    g = random.Random(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (32, 32), tuple(g.randrange(256) for _ in range(3)))
            box = (g.randrange(4, 10), g.randrange(4, 10), g.randrange(20, 28), g.randrange(20, 28))
            fill = tuple(g.randrange(256) for _ in range(3))
            draw = ImageDraw.Draw(image)
            (draw.ellipse if c == 0 else draw.rectangle)(box, fill=fill)
            image.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("images")
    classes = ("circles", "squares")
    train = _write_image_folder(base / "train", classes, per_class=8, seed=0)
    val = _write_image_folder(base / "val", classes, per_class=4, seed=1)
    return train, val


def _run(script: str, *args: str, reports: str) -> str:
    """Run an example with the tiny settings; it must report ``reports`` and finite losses."""
    # the checkout first, then whatever this process sees (the skip conditions check it)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--steps", "3", "--batch-size", "8", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    output = result.stdout
    assert reports in output, output
    losses = [float(v) for v in re.findall(r"step \d+/\d+ loss (\S+)", output)]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses), output
    return output


@pytest.mark.slow
def test_moco_v2_cifar10_example(image_folders: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = image_folders
    out = tmp_path / "backbone.pt"
    output = _run(
        "moco_v2_cifar10.py",
        *("--data", str(train), "--val-data", str(val), "--queue-size", "1024"),
        *("--workers", "0", "--out", str(out)),
        reports="16 images, 3 steps of batch 8, synthetic negatives per query: 960",
    )
    accuracy = float(re.search(r"kNN top-1 \(k=20\): (\S+) %", output)[1])  # type: ignore[index]
    assert 0.0 <= accuracy <= 100.0
    assert out.stat().st_size > 1_000_000  # a ResNet-18's weights


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lightly") is None, reason="needs lightly")
def test_lightly_moco_example(image_folders: tuple[Path, Path]) -> None:
    train, _ = image_folders
    _run(
        "lightly_moco.py",
        *("--data", str(train), "--bank-size", "512", "--workers", "0"),
        reports="16 images, 3 steps, synthetic negatives per query: 576",
    )


@pytest.mark.slow
def test_simclr_example(image_folders: tuple[Path, Path]) -> None:
    train, _ = image_folders
    _run(
        "simclr_synthetic_negatives.py",
        *("--data", str(train), "--workers", "0"),
        reports="16 images, 3 steps of batch 8, synthetic negatives per anchor: 576",
    )


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_metric_learning") is None,
    reason="needs pytorch-metric-learning",
)
def test_pml_example_gives_exactly_our_loss(image_folders: tuple[Path, Path]) -> None:
    train, _ = image_folders
    output = _run(
        "pml_ntxent.py",
        *("--data", str(train), "--queue-size", "256", "--workers", "0"),
        reports="16 images, 3 steps of batch 8, synthetic negatives per query: 576",
    )
    match = re.search(
        r"PML NT-Xent over the pairs (\S+), syn2co info_nce (\S+): loss differs by (\S+), "
        r"gradient by at most (\S+); with labels instead: (\S+)",
        output,
    )
    assert match, output
    pml, ours, _, grad, labelled = (float(v.rstrip(",;")) for v in match.groups())
    assert abs(pml - ours) < 1e-5 and grad < 1e-5
    assert abs(labelled - ours) > 1e-3  # the labelled route is a different loss


def test_make_shapes_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            *(sys.executable, str(EXAMPLES / "make_shapes_folder.py")),
            *(str(tmp_path / "shapes"), "--train", "20", "--val", "10"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    train = sorted((tmp_path / "shapes" / "train").rglob("*.png"))
    assert len(train) == 20 and len({p.parent.name for p in train}) == 10
    assert len(list((tmp_path / "shapes" / "val").rglob("*.png"))) == 10


def test_examples_page_shows_every_script() -> None:
    page = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
    for script in sorted(EXAMPLES.glob("*.py")):
        assert f'--8<-- "examples/{script.name}"' in page, f"docs/examples.md lacks {script.name}"
    assert "_OUTPUT" not in page, "an output left to paste"
