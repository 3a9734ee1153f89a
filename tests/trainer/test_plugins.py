"""A method and a dataset format defined in this file alone train through ``syn2co-train``.

No file of the trainer knows them: the method is a registered
:class:`~reference_trainer.methods.Method` subclass (alignment and uniformity, Wang and Isola,
2020), the format a registered :class:`~reference_trainer.data.DatasetFormat` whose dataset
reads image files listed in a CSV file, so the GPU input path reads its raw bytes too. This is
the example the "Adding a method" page of the docs walks through.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from typer.testing import CliRunner

from reference_trainer.cli import app, main
from reference_trainer.data import (
    DatasetFormat,
    DatasetNotFoundError,
    DatasetRequest,
    FileImageDataset,
    LoadedImage,
    read_rgb_image,
    register_dataset,
    unregister_dataset,
)
from reference_trainer.errors import ConfigError
from reference_trainer.heads import mlp
from reference_trainer.methods import (
    Embeddings,
    Heads,
    LossDirection,
    Method,
    MethodOutput,
    MethodPreset,
    MethodSettings,
    StepContext,
    head_widths,
    register,
    unregister,
)
from reference_trainer.plugins import ENTRY_POINT_GROUP, load_plugins

from .conftest import TINY_DEIT, TINY_RESNET, tiny_run, write_image_folder

# --------------------------------------------------------------------------------------------
# A method
# --------------------------------------------------------------------------------------------


class AlignUniform(Method):
    """Alignment of the two views plus uniformity of each view on the sphere (t = 2)."""

    name = "toy-align-uniform"
    summary = "Alignment and uniformity on the hypersphere (Wang and Isola, 2020)."
    preset = MethodPreset(
        base_lr=1e-3,
        lr_reference_batch=256,
        weight_decay=0.0,
        warmup_fraction=0.0,
        clip_grad=0.0,
        drop_path=0.0,
        proj_hidden=None,
        proj_dim=32,
    )
    momentum_target = False  # no EMA target
    bank = "none"  # no negatives to synthesise from

    @classmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        hidden, dim = head_widths(settings, feature_dim)
        return Heads(projector=mlp(feature_dim, hidden, dim, 2, last_bn=False, bn=False))

    @classmethod
    def create(
        cls, settings: MethodSettings, *, tags: bool, generator: torch.Generator | None
    ) -> Self:
        return cls()

    def forward(self, embeddings: Embeddings, ctx: StepContext) -> MethodOutput:
        z1, z2 = (F.normalize(z.float(), dim=1) for z in embeddings.online)
        align = (z1 - z2).pow(2).sum(dim=1).mean()

        def uniformity(z: Tensor) -> Tensor:  # log E[exp(-2 |zi - zj|^2)] over pairs
            sq = torch.pdist(z).pow(2)
            return torch.logsumexp(-2 * sq, dim=0) - math.log(sq.numel())

        loss = align + (uniformity(z1) + uniformity(z2)) / 2
        own = torch.eye(z1.shape[0], dtype=torch.bool, device=z1.device)  # for the diagnostics
        return MethodOutput(loss, (LossDirection(z1, z2, z2.detach(), None, own),))


# --------------------------------------------------------------------------------------------
# A dataset format
# --------------------------------------------------------------------------------------------


class ListedImages(FileImageDataset):
    """Image files listed in ``root/<split>.csv``, one ``file,class`` line each."""

    def __init__(self, root: Path, split: str, *, strict: bool) -> None:
        listing = root / f"{split}.csv"
        if not listing.is_file():
            raise DatasetNotFoundError(f"toy-listed {split} split: expected {listing}")
        rows = [line.split(",") for line in listing.read_text().splitlines() if line]
        self.root, self.strict = root, strict
        self.files = [file for file, _ in rows]
        self.classes = tuple(sorted({name for _, name in rows}))
        self._targets = np.array([self.classes.index(name) for _, name in rows], dtype=np.int64)

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        return self._targets

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        return str(self.root / self.files[index])

    def __getitem__(self, index: int) -> LoadedImage:
        item, skipped = self.first_readable(
            index, lambda path, j: LoadedImage(read_rgb_image(path), int(self._targets[j]))
        )
        return item._replace(skipped=skipped)


def build_listed(request: DatasetRequest) -> ListedImages:
    assert request.root is not None  # needs_root: the trainer asks for --data first
    return ListedImages(request.root, request.split, strict=request.strict)


LISTED = DatasetFormat("toy-listed", "Image files listed in DATA/<split>.csv.", build_listed)


@pytest.fixture
def plugins() -> Iterator[None]:
    register(AlignUniform)
    register_dataset(LISTED)
    yield
    unregister(AlignUniform.name)
    unregister_dataset(LISTED.name)


def write_listing(root: Path) -> Path:
    """``root/train.csv`` and ``root/val.csv`` over an image folder, one unreadable file."""
    write_image_folder(root / "images", classes=3, per_class=12)
    (root / "images" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not an image")
    files = sorted(p.relative_to(root) for p in (root / "images").rglob("*.*"))
    lines = [f"{f},{f.parent.name}" for f in files]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "val.csv").write_text("\n".join(line for line in lines if "broken" not in line) + "\n")
    return root


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "loader"), [(TINY_DEIT, "cpu"), (TINY_RESNET, "gpu")])
def test_a_method_and_a_format_from_this_file_train_and_evaluate(
    plugins: None, tmp_path: Path, arch: list[str], loader: str
) -> None:
    root = write_listing(tmp_path / "listed")
    run = tmp_path / "run"
    args = tiny_run(run, "--method", "toy-align-uniform", "--steps", "4", arch=arch)
    args += ["--dataset", "toy-listed", "--data", str(root), "--loader", loader]
    output = invoke(args)
    assert "unreadable images skipped" in output  # the shared substitution, on either path
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert "hardness/positive/mean" in records[0]
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["target"] is None and state["config"]["method"] == "toy-align-uniform"
    invoke(["eval", "knn", str(run), "--k", "3", "--workers", "0"])
    knn = json.loads((run / "eval_knn.json").read_text())
    assert 0 <= knn["pretrained"]["top1"]["3"] <= 100


def test_registered_names_are_choices(plugins: None) -> None:
    from reference_trainer.config import TrainConfig

    cfg = TrainConfig().updated({"method": "toy-align-uniform", "dataset": "toy-listed"})
    assert (cfg.method, cfg.dataset) == ("toy-align-uniform", "toy-listed")


def test_without_the_plugin_the_names_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*tiny_run(tmp_path / "run"), "--method", "toy-align-uniform"])
    assert result.exit_code == 1 and "must be one of moby" in result.output


def test_a_method_without_a_bank_refuses_synthetic_negatives(plugins: None, tmp_path: Path) -> None:
    args = [*tiny_run(tmp_path / "run"), "--method", "toy-align-uniform", "--negatives", "synco-v2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "synthetic negatives need a bank of negatives" in result.output


def test_an_installed_plugin_is_loaded_before_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package names its module under the entry-point group: syn2co-train imports it first,
    so its names are listed in ``run --help`` and accepted; a module that fails to import is
    named in one line."""
    (tmp_path / "toy_plugin.py").write_text(
        "from reference_trainer.data import register_dataset\n"
        "from reference_trainer.methods import register\n"
        "from tests.trainer.test_plugins import LISTED, AlignUniform\n"
        "register(AlignUniform)\n"
        "register_dataset(LISTED)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = [importlib.metadata.EntryPoint("toy", "toy_plugin", ENTRY_POINT_GROUP)]

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return entries

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(sys, "argv", ["syn2co-train", "run", "--help"])
    monkeypatch.setenv("COLUMNS", "300")
    try:
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        help_text = capsys.readouterr().out
        assert "toy-align-uniform" in help_text and "toy-listed" in help_text
    finally:
        unregister(AlignUniform.name)
        unregister_dataset(LISTED.name)
    entries[:] = [importlib.metadata.EntryPoint("broken", "no_such_module", ENTRY_POINT_GROUP)]
    with pytest.raises(ConfigError, match=r"plug-in 'broken' \(no_such_module\) failed to load"):
        load_plugins()
