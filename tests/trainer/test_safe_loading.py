"""Every file a user may have been handed is read without running what it holds.

Each loader gets a malicious file: a pickle whose ``__reduce__`` would create a marker file
when unpickled. The command must fail in one line naming the file, and the marker must not
exist. A control proves each payload real: unpickled the unsafe way, it does create its marker.
"""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.checkpoint import CheckpointError
from reference_trainer.cli import app
from reference_trainer.data.base import DatasetFileError
from reference_trainer.data.datasets import build_dataset
from reference_trainer.pretrained import load_backbone

from .conftest import TINY_RESNET, child_env, tiny_run, write_cifar10, write_cifar100


class RunsCode:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error:"), output
    return lines[-1]


def unsafe_load_creates_marker(path: Path, marker: Path, how: str) -> bool:
    """The control: the payload does run when the file is unpickled the unsafe way."""
    code = {
        "torch": f"import torch; torch.load({str(path)!r}, weights_only=False)",
        "pickle": f"import pickle; pickle.load(open({str(path)!r}, 'rb'), encoding='latin1')",
    }[how]
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=False)
    return marker.exists()


# --------------------------------------------------------------------------------------------
# Checkpoints: run --resume, eval knn/linear, export, demo, load_backbone
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("good") / "run"
    result = CliRunner().invoke(app, [*tiny_run(run), "--steps", "2"])
    assert result.exit_code == 0, result.output
    return run


def poisoned_run(tmp_path: Path, good_run: Path, marker: Path) -> Path:
    """A copy of a real run whose checkpoint carries the payload inside its config."""
    run = tmp_path / "poisoned"
    shutil.copytree(good_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["note"] = RunsCode(marker)
    torch.save(state, run / "checkpoint.pt")  # a valid zip with valid checksums
    return run


COMMANDS = {
    "run --resume": lambda run: ["run", "--resume", str(run)],
    "eval knn": lambda run: ["eval", "knn", str(run), "--workers", "0", "--k", "5"],
    "eval linear": lambda run: ["eval", "linear", str(run), "--workers", "0", "--epochs", "1"],
    "export": lambda run: ["export", str(run)],
    "demo": lambda run: ["demo", "--out", str(run), "--steps", "2", "--workers", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_checkpoint_that_would_run_code_is_refused(
    runner: CliRunner, tmp_path: Path, good_run: Path, command: str
) -> None:
    marker = tmp_path / "pwned"
    run = poisoned_run(tmp_path, good_run, marker)
    before = sorted(p.name for p in run.iterdir())
    result = runner.invoke(app, COMMANDS[command](run))
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert str(run / "checkpoint.pt") in line and "posix.system" in line, line
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    assert unsafe_load_creates_marker(run / "checkpoint.pt", marker, "torch")


def test_load_backbone_refuses_a_checkpoint_that_would_run_code(
    tmp_path: Path, good_run: Path
) -> None:
    marker = tmp_path / "pwned"
    run = poisoned_run(tmp_path, good_run, marker)
    with pytest.raises(CheckpointError, match="refused, nothing of it was run"):
        load_backbone(run)
    assert not marker.exists()


def test_a_checkpoint_without_its_entries_is_one_line(
    runner: CliRunner, tmp_path: Path, good_run: Path
) -> None:
    """No ``KeyError: 'config'`` traceback: the file is named, and what it lacks."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    torch.save({"format": 1, "step": 2, "online": {}}, run / "checkpoint.pt")
    for args in (["eval", "knn", str(run)], ["export", str(run)], ["run", "--resume", str(run)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "no valid 'config' entry" in one_line_error(result.output)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--negatives", "synco-v2", "--generator", "both"],
        ["--method", "simclr", "--negatives", "synco-v1"],  # LARS
        ["--method", "mocov2", "--precision", "fp16"],  # a queue; the loss scaler's state
    ],
    ids=["moby-generators", "simclr-lars", "mocov2-fp16"],
)
def test_checkpoints_hold_tensors_and_plain_values_only(tmp_path: Path, extra: list[str]) -> None:
    """What a run saves loads under ``weights_only=True`` with no global beyond PyTorch's own
    allowlist, so that nothing ever needs the unsafe loader."""
    run = tmp_path / "run"
    arch = TINY_RESNET if "--method" in extra else None
    args = tiny_run(run, "--steps", "2", *extra, **({"arch": arch} if arch else {}))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert torch.serialization.get_unsafe_globals_in_checkpoint(run / "checkpoint.pt") == []
    torch.load(run / "checkpoint.pt", weights_only=True)


# --------------------------------------------------------------------------------------------
# CIFAR python batches
# --------------------------------------------------------------------------------------------


def poison(path: Path, marker: Path, key: str) -> None:
    """Rewrite a CIFAR file with the payload under ``key`` (its other entries kept)."""
    with path.open("rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    data[key] = RunsCode(marker)
    with path.open("wb") as fh:
        pickle.dump(data, fh, protocol=2)


@pytest.mark.parametrize(
    ("kind", "file", "key"),
    [
        ("cifar10", "cifar-10-batches-py/batches.meta", "label_names"),
        ("cifar10", "cifar-10-batches-py/data_batch_1", "data"),
        ("cifar100", "cifar-100-python/meta", "fine_label_names"),
        ("cifar100", "cifar-100-python/train", "fine_labels"),
    ],
)
def test_a_cifar_file_that_would_run_code_is_refused(
    runner: CliRunner, tmp_path: Path, kind: str, file: str, key: str
) -> None:
    root = (write_cifar10 if kind == "cifar10" else write_cifar100)(tmp_path / "data")
    marker = tmp_path / "pwned"
    poison(root / file, marker, key)
    out = tmp_path / "run"
    result = runner.invoke(app, [*tiny_run(out), "--dataset", kind, "--data", str(root)])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert str(root / file) in line and "posix.system" in line and "refused" in line, line
    assert not marker.exists()
    assert not out.exists()
    assert unsafe_load_creates_marker(root / file, marker, "pickle")


def test_eval_refuses_a_cifar_file_that_would_run_code(
    runner: CliRunner, tmp_path: Path, good_run: Path
) -> None:
    root = write_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    poison(root / "cifar-10-batches-py/batches.meta", marker, "label_names")
    args = ["eval", "knn", str(good_run), "--dataset", "cifar10", "--data", str(root)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "knn.json"), "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert "batches.meta" in one_line_error(result.output)
    assert not marker.exists() and not (tmp_path / "knn.json").exists()


def test_cifar_batches_of_numpy_1_and_2_still_load(tmp_path: Path) -> None:
    """The published archive was pickled with numpy 1 (``numpy.core``), files written today
    with numpy 2 (``numpy._core``): both hold only what the restricted unpickler allows."""
    root = write_cifar10(tmp_path / "data")
    folder = root / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        path = folder / name
        raw = path.read_bytes()
        assert b"numpy._core.multiarray" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    dataset = build_dataset("cifar10", root, "test")
    reference = pickle.loads((folder / "test_batch").read_bytes(), encoding="latin1")
    assert len(dataset) == 16
    first = np.asarray(dataset[0].image)
    assert np.array_equal(first.transpose(2, 0, 1).reshape(-1), reference["data"][0])


def test_a_cifar_file_naming_another_module_is_refused_before_import(tmp_path: Path) -> None:
    """The unpickler refuses by name, before anything is imported or looked up."""
    root = write_cifar10(tmp_path / "data")
    meta = root / "cifar-10-batches-py" / "batches.meta"
    # GLOBAL of a module that does not exist: an import would fail with ModuleNotFoundError
    meta.write_bytes(b"\x80\x02cno_such_module_xyz\nrun\nq\x00)\x81q\x01.")
    with pytest.raises(DatasetFileError, match=r"no_such_module_xyz\.run, which a CIFAR batch"):
        build_dataset("cifar10", root, "train")
    assert "no_such_module_xyz" not in sys.modules
