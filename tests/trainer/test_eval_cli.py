"""eval, export and plot on a finished run: options checked first, read-only runs, progress
lines without a terminal, timm's view of an export, file permissions."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from rich.console import Console
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.data import build_dataset, eval_transform
from reference_trainer.data.transforms import eval_resize_side
from reference_trainer.evaluate.protocols import MOCOV3, SYNCO_V2
from reference_trainer.pretrained import load_backbone, timm_crop_pct
from reference_trainer.progress import EvalProgress

from .conftest import tiny_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run of the tiny DeiT on the built-in set (96 train, 64 val images),
    written under umask 022."""
    run = tmp_path_factory.mktemp("eval") / "run"
    previous = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, [*tiny_run(run), "--steps", "2"])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return run


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def as_json(settings: Any) -> Any:
    """Settings as their JSON record reads back (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def cli_env() -> dict[str, str]:
    """This checkout's code first, for the subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# --------------------------------------------------------------------------------------------
# Bad options: one line naming the option, before the checkpoint or any data is read
# --------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["eval", "knn", "{run}", "--k", "0"], "--k: expected an int >= 1, got 0"),
    (["eval", "knn", "{run}", "--k", "20", "--k", "-3"], "--k: expected an int >= 1, got -3"),
    (
        ["eval", "knn", "{run}", "--temperature", "0"],
        "--temperature: expected a number in (0.0, inf], got 0.0",
    ),
    (
        ["eval", "knn", "{run}", "--temperature", "nan"],
        "--temperature: expected a finite number in (0.0, inf]",
    ),
    (["eval", "knn", "{run}", "--batch-size", "0"], "--batch-size: expected an int >= 1, got 0"),
    (["eval", "knn", "{run}", "--workers", "-1"], "--workers: expected an int >= 0, got -1"),
    (["eval", "knn", "{run}", "--log-every", "0"], "--log-every: expected an int >= 1, got 0"),
    (["eval", "knn", "{run}", "--device", "gpu"], "--device: expected auto, cpu, cuda or cuda:N"),
    (["eval", "linear", "{run}", "--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
    (["eval", "linear", "{run}", "--epochs", "-5"], "--epochs: expected an int >= 1, got -5"),
    (["eval", "linear", "{run}", "--lr", "0"], "--base-lr: expected a number in (0.0, inf]"),
    (["eval", "linear", "{run}", "--base-lr", "-1"], "--base-lr: expected a number in (0.0"),
    (["eval", "linear", "{run}", "--lr-reference-batch", "0"], "--lr-reference-batch: expected"),
    (["eval", "linear", "{run}", "--batch-size", "0"], "--batch-size: expected an int >= 1"),
    (["eval", "linear", "{run}", "--weight-decay", "-0.1"], "--weight-decay: expected a number"),
    (["eval", "linear", "{run}", "--momentum", "1"], "--momentum: expected a number in [0.0, 1.0)"),
    (["eval", "linear", "{run}", "--momentum", "0", "--nesterov"], "--nesterov: needs a momentum"),
    (["eval", "linear", "{run}", "--warmup-epochs", "-1"], "--warmup-epochs: expected a number"),
    (["eval", "linear", "{run}", "--epochs", "5", "--warmup-epochs", "5"], "in [0.0, 5.0)"),
    (["eval", "linear", "{run}", "--label-smoothing", "1.5"], "--label-smoothing: expected"),
    (["eval", "linear", "{run}", "--clip-grad", "-1"], "--clip-grad: expected a number in [0.0"),
    (["eval", "linear", "{run}", "--drop-path", "1"], "--drop-path: expected a number in [0.0"),
    (["eval", "linear", "{run}", "--warmup-lr-fraction", "2"], "--warmup-lr-fraction: expected"),
    (["eval", "linear", "{run}", "--min-lr-fraction", "-0.1"], "--min-lr-fraction: expected"),
    (
        ["eval", "linear", "{run}", "--schedule", "epoch", "--warmup-epochs", "1"],
        "--warmup-epochs: the per-epoch schedule has no warmup, got 1.0",
    ),
    (
        ["eval", "linear", "{run}", "--protocol", "synco-v2", "--epochs", "3"],
        "--warmup-epochs: expected a number in [0.0, 3.0), got 5 (the value of --protocol "
        "synco-v2; set --warmup-epochs)",
    ),
    (["eval", "linear", "{run}", "--seed", "-1"], "--seed: expected an int >= 0, got -1"),
    (["eval", "linear", "{run}", "--lr-milestones", "0"], "--lr-milestones: expected an int >= 1"),
    (["eval", "linear", "{run}", "--lr-decay", "0"], "--lr-decay: expected a number in (0.0, 1.0]"),
    (
        ["eval", "linear", "{run}", "--schedule", "multistep"],
        "--lr-milestones: the multistep schedule needs at least one, got none",
    ),
    (
        ["eval", "linear", "{run}", "--protocol", "mocov2", "--warmup-epochs", "1"],
        "--warmup-epochs: the multistep schedule has no warmup, got 1.0",
    ),
    (["eval", "knn", "{run}", "--shards", "0"], "--shards: expected an int >= 1, got 0"),
    (["eval", "knn", "{run}", "--seed", "-2"], "--seed: expected an int >= 0, got -2"),
    (["eval", "linear", "{run}", "--workers", "-2"], "--workers: expected an int >= 0, got -2"),
    (["eval", "linear", "{run}", "--device", "tpu:0"], "--device: expected auto, cpu, cuda"),
]


@pytest.mark.parametrize(
    ("args", "words"), BAD_OPTIONS, ids=[" ".join(a[:2] + a[3:]) for a, _ in BAD_OPTIONS]
)
def test_bad_eval_options_fail_in_one_line_before_any_reading(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], words: str
) -> None:
    import reference_trainer.data.pipeline as pipeline
    import reference_trainer.pretrained as pretrained

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("read the checkpoint or the data before checking the options")

    monkeypatch.setattr(pretrained, "load_run", must_not_run)
    monkeypatch.setattr(pipeline, "dataset_for", must_not_run)
    before = sorted(p.name for p in run_dir.iterdir())
    for run in (run_dir, run_dir.parent / "no-such-run"):  # the options come first
        result = CliRunner().invoke(app, [a.format(run=run) for a in args])
        assert result.exit_code == 1, result.output
        assert words in one_line_error(result.output)
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written


def test_a_missing_run_is_one_line(tmp_path: Path) -> None:
    for args in (["eval", "knn"], ["eval", "linear"], ["export"], ["plot"]):
        result = CliRunner().invoke(app, [*args, str(tmp_path / "nope")])
        assert result.exit_code == 1
        assert f"{tmp_path / 'nope'} does not exist" in one_line_error(result.output)
    assert list(tmp_path.iterdir()) == []


def test_k_larger_than_the_training_set_is_clamped_with_a_warning(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "knn.json"
    result = CliRunner().invoke(
        app,
        ["eval", "knn", str(run_dir), "--k", "5", "--k", "500", "--k", "96", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "k > 96 training images: using k=96 for 500" in " ".join(result.output.split())
    assert set(json.loads(out.read_text())["pretrained"]["top1"]) == {"5", "96"}


def test_probe_options_reach_the_probe(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "linear.json"
    options = ["--epochs", "2", "--lr", "0.3", "--lr-reference-batch", "64", "--batch-size", "32"]
    options += ["--momentum", "0.8", "--no-nesterov", "--weight-decay", "1e-4"]
    options += ["--warmup-epochs", "0.5", "--no-batchnorm", "--out", str(out)]
    result = CliRunner().invoke(app, ["eval", "linear", str(run_dir), *options])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["settings"] == {
        "mode": "cached",
        "epochs": 2,
        "batch_size": 32,
        "base_lr": 0.3,
        "lr_reference_batch": 64,
        "momentum": 0.8,
        "nesterov": False,
        "weight_decay": 1e-4,
        "warmup_epochs": 0.5,
        "batchnorm": False,
        "warmup_lr_fraction": None,
        "min_lr_fraction": 0.0,
        "schedule": "step",
        "label_smoothing": 0.0,
        "clip_grad": 0.0,
        "head_init": "normal",
        "backbone_mode": "eval",
        "drop_path": None,
        "lr_milestones": [],
        "lr_decay": 0.1,
        "interpolation": "bicubic",
    }
    assert saved["lr"] == pytest.approx(0.3 * 32 / 64) and saved["batchnorm"] is False
    # 96 images in batches of 32: 3 steps per epoch, the warmup's 2 steps (round(1.5)) end at
    # the peak, and the last step of epoch 1 is the first of the cosine over the other 4
    assert saved["history"][0]["lr"] == pytest.approx(0.15)
    defaults = CliRunner().invoke(
        app, ["eval", "linear", str(run_dir), "--epochs", "1", "--out", str(out)]
    )
    assert defaults.exit_code == 0, defaults.output
    saved = json.loads(out.read_text())
    assert saved["settings"]["batchnorm"] is True and saved["settings"]["nesterov"] is True
    assert saved["lr"] == pytest.approx(0.1 * 256 / 512)


def test_a_protocol_supplies_the_settings_and_each_option_overrides_one(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "linear.json"
    options = ["--protocol", "synco-v2", "--mode", "cached", "--epochs", "2", "--batch-size"]
    options += ["32", "--warmup-epochs", "1", "--warmup-lr-fraction", "0.25"]
    options += ["--min-lr-fraction", "0.1", "--label-smoothing", "0.2", "--clip-grad", "3"]
    options += ["--backbone-mode", "eval", "--drop-path", "0.1", "--out", str(out)]
    result = CliRunner().invoke(app, ["eval", "linear", str(run_dir), *options])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    expected = dataclasses.replace(
        SYNCO_V2,
        mode="cached",
        epochs=2,
        batch_size=32,
        warmup_epochs=1,
        warmup_lr_fraction=0.25,
        min_lr_fraction=0.1,
        label_smoothing=0.2,
        clip_grad=3.0,
        backbone_mode="eval",
        drop_path=0.1,
        head_init="trunc-normal",  # "backbone" for timm's DeiT
    )
    assert saved["protocol"] == "synco-v2" and saved["settings"] == as_json(expected)
    # 96 images in batches of 32: 3 steps per epoch; the warmup (3 steps) rises from 0.25 x
    # peak, step 2 is 2/3 of the way; step 5 is 2/3 through the cosine over steps 3-5
    peak, end = 1.0 * 32 / 512, 0.1 * 1.0 * 32 / 512
    assert saved["history"][0]["lr"] == pytest.approx(0.25 * peak + 0.75 * peak * 2 / 3)
    cosine = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * 2 / 3))
    assert saved["history"][1]["lr"] == pytest.approx(cosine)
    options = ["--protocol", "mocov3", "--epochs", "2", "--batch-size", "32", "--mode", "cached"]
    mocov3 = CliRunner().invoke(app, ["eval", "linear", str(run_dir), *options, "--out", str(out)])
    assert mocov3.exit_code == 0, mocov3.output
    saved = json.loads(out.read_text())
    expected = dataclasses.replace(MOCOV3, epochs=2, batch_size=32, mode="cached")
    assert saved["protocol"] == "mocov3" and saved["settings"] == as_json(expected)
    lr = 3.0 * 32 / 256  # the cosine of the epoch: the peak through epoch 1, half in epoch 2
    assert [h["lr"] for h in saved["history"]] == pytest.approx([lr, lr * 0.5])


# --------------------------------------------------------------------------------------------
# Damaged dataset files through the CLI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_truncated_fashion_mnist_gzip_is_one_line_naming_it(
    run_dir: Path, tmp_path: Path, command: str
) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    for name, array in (
        ("images-idx3", images),
        ("labels-idx1", np.arange(200, dtype=np.uint8) % 10),
    ):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        blob = gzip.compress(header + array.tobytes())
        (raw / f"train-{name}-ubyte.gz").write_bytes(
            blob[: len(blob) // 2] if "images" in name else blob
        )
    data = ["--dataset", "fashion-mnist", "--data", str(tmp_path / "data")]
    if command == "run":
        args = [*tiny_run(tmp_path / "run"), "--steps", "1", *data]
    else:
        args = ["eval", "knn", str(run_dir), *data, "--out", str(tmp_path / "knn.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert f"{raw / 'train-images-idx3-ubyte.gz'} is truncated or corrupt" in line
    assert not (tmp_path / "knn.json").exists()


# --------------------------------------------------------------------------------------------
# Read-only run directories
# --------------------------------------------------------------------------------------------

# Runs the CLI commands given as JSON on argv[1] in one process; prints their exit codes and
# outputs as JSON (one interpreter start for the whole list).
DRIVER = """
import json, sys
from typer.testing import CliRunner
from reference_trainer.cli import app
results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    results.append({"args": args, "code": r.exit_code, "output": r.output})
print(json.dumps(results))
"""


def _can_run(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class ReadOnly:
    """A copy of the run in a folder this test's CLI process may read but not write."""

    def __init__(self, how: str, run_dir: Path) -> None:
        self.how = how
        self.base = Path(tempfile.mkdtemp(prefix="syn2co-ro-"))
        self.base.chmod(0o755)  # others may enter (the run is read as another user)
        self.run = self.base / "run"
        shutil.copytree(run_dir, self.run)
        self.original = self.listing()
        self.out = self.base / "out"
        self.out.mkdir()
        self.out.chmod(0o777)  # written by the unprivileged user too
        self.prefix: list[str] = []
        if how == "read-only mount":
            script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
            self.prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
            self.prefix.append(str(self.run))
        elif how == "another user":
            self.prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        else:  # not root: permissions apply to us
            self.run.chmod(0o555)

    def listing(self) -> list[str]:
        return sorted(str(p.relative_to(self.run)) for p in self.run.rglob("*"))

    def check(self) -> str | None:
        """Why this way of making the run read-only does not work here, or None."""
        probe = [*self.prefix, sys.executable, "-c", f"open({str(self.run / 'x')!r}, 'w')"]
        if self.how == "read-only mount" and not _can_run([*self.prefix[:4], "true"]):
            return "cannot make a mount namespace (needs root or user namespaces)"
        if self.how == "another user" and not _can_run([*self.prefix, "true"]):
            return "cannot switch to user 65534 (needs root and setpriv)"
        if _can_run(probe):
            return f"{self.run} is still writable this way"
        return None

    def invoke(self, commands: list[list[str]]) -> list[dict[str, Any]]:
        env = cli_env() | {"HOME": str(self.out), "MPLCONFIGDIR": str(self.out / ".mpl")}
        proc = subprocess.run(
            [*self.prefix, sys.executable, "-c", DRIVER, json.dumps(commands)],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.out,
            umask=0o022,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
        return results

    def close(self) -> None:
        self.run.chmod(0o755)
        shutil.rmtree(self.base, ignore_errors=True)


def _ways() -> list[str]:
    if os.geteuid() != 0:
        return ["permissions"]
    return ["read-only mount", "another user"]


@pytest.fixture(params=_ways())
def read_only(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[ReadOnly]:
    ro = ReadOnly(request.param, run_dir)
    try:
        reason = ro.check()
        if reason is not None:
            pytest.skip(f"{request.param}: {reason}")
        yield ro
    finally:
        ro.close()


def test_eval_export_plot_read_a_read_only_run_and_write_only_to_out(read_only: ReadOnly) -> None:
    run, out = str(read_only.run), read_only.out
    tiny = ["--workers", "0", "--device", "cpu"]
    results = read_only.invoke(
        [
            ["eval", "knn", run, "--k", "3", *tiny],
            ["eval", "linear", run, "--epochs", "1", *tiny],
            ["export", run],
            ["plot", run],
            ["eval", "knn", run, "--k", "3", *tiny, "--out", str(out / "knn.json")],
            ["eval", "linear", run, "--epochs", "1", *tiny, "--out", str(out / "linear.json")],
            ["export", run, "--out", str(out / "backbone.safetensors")],
            ["plot", run, "--out", str(out / "plots")],
            ["eval", "knn", run, "--k", "3", *tiny, "--out", f"{run}/elsewhere.json"],
        ]
    )
    refused = {
        "eval knn": "the kNN results to {run}/eval_knn.json",
        "eval linear": "the probe's results to {run}/eval_linear.json",
        "export": "the weights to {run}/backbone.safetensors",
        "plot": "the plots to {run}/loss.png",
    }
    reason = r"\((Read-only file system|Permission denied)\): pass --out to write it elsewhere"
    for result, target in zip(results[:4], refused.values(), strict=True):
        assert result["code"] == 1, result
        line = one_line_error(result["output"])
        assert re.fullmatch(
            f"error: cannot write {re.escape(target.format(run=run))} {reason}", line
        ), line
    for result in results[4:8]:
        assert result["code"] == 0, result
    last = results[8]
    assert last["code"] == 1
    assert f"--out: cannot write the kNN results to {run}/elsewhere.json" in one_line_error(
        last["output"]
    )
    assert read_only.listing() == read_only.original  # nothing added to the run
    written = [
        out / "knn.json",
        out / "linear.json",
        out / "backbone.safetensors",
        out / "backbone.json",
        out / "plots" / "loss.png",
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert json.loads((out / "linear.json").read_text())["backbone_unchanged"] is True


# --------------------------------------------------------------------------------------------
# Progress without a terminal
# --------------------------------------------------------------------------------------------


def test_progress_lines_without_a_terminal(run_dir: Path, tmp_path: Path) -> None:
    common = ["--workers", "0", "--device", "cpu", "--batch-size", "32"]
    commands = {
        "knn": ["eval", "knn", str(run_dir), "--k", "3", "--log-every", "2", *common],
        "linear": ["eval", "linear", str(run_dir), "--epochs", "2", "--log-every", "1", *common],
    }
    lines = {}
    for name, args in commands.items():
        proc = subprocess.run(
            [sys.executable, "-m", "reference_trainer.cli", *args, "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        lines[name] = [line for line in proc.stderr.splitlines() if line.startswith(name)]
    # 96 training images and 64 validation images in batches of 32: 3 and 2 batches.
    assert lines["knn"] == [
        "knn pretrained: train features: batch 2/3",
        "knn pretrained: train features: batch 3/3",
        "knn pretrained: val features: batch 2/2",
    ]
    assert lines["linear"][:5] == [
        "linear: val features: batch 1/2",
        "linear: val features: batch 2/2",
        "linear: train features: batch 1/3",
        "linear: train features: batch 2/3",
        "linear: train features: batch 3/3",
    ]
    epochs = lines["linear"][5:]
    assert len(epochs) == 2
    for e, line in enumerate(epochs, start=1):
        assert re.fullmatch(
            rf"linear: epoch {e}/2: loss \d+\.\d{{4}}, train top-1 \d+\.\d\d%, lr \S+", line
        ), line


def test_each_pass_counts_its_progress_lines_afresh() -> None:
    """Every ``every`` batches of each pass and at its last batch, whatever the previous pass
    ended on; a loader without ``len()`` shows ``?``."""
    text = io.StringIO()
    console = Console(file=text, force_terminal=False, width=200)
    with EvalProgress(console, "knn", 2) as progress:
        for done in range(1, 4):
            progress("train features", done, 3)
        for done in range(1, 5):
            progress("val features", done, None)
    assert text.getvalue().splitlines() == [
        "knn: train features: batch 2/3",
        "knn: train features: batch 3/3",
        "knn: val features: batch 2/?",
        "knn: val features: batch 4/?",
    ]


# --------------------------------------------------------------------------------------------
# Export: timm sees the run's transform
# --------------------------------------------------------------------------------------------


def test_export_carries_the_pretrained_cfg_of_the_run(run_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "exported" / "backbone.safetensors"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(weights)])
    assert result.exit_code == 0, result.output
    snippet = " ".join(result.output.split()).split("load with: ", 1)[1]
    model = eval(snippet, {"timm": timm}).eval()  # exactly what the user is told to run
    data_config = timm.data.resolve_data_config({}, model=model)
    assert data_config == {
        "input_size": (3, 32, 32),
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    backbone, _ = load_backbone(run_dir)
    ours, theirs = backbone.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    # timm's eval transform of the exported cfg and the trainer's: the same tensor
    image = build_dataset("builtin", None, "val", img_size=32, num_samples=4)[1].image
    timm_input = timm.data.create_transform(**data_config)(image)
    trainer_input = eval_transform(32)(image)
    assert torch.allclose(timm_input, trainer_input, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(model(timm_input[None]), backbone(trainer_input[None]), atol=1e-5)
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["pretrained_cfg"]["input_size"] == [3, 32, 32]
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        assert json.loads(f.metadata()["pretrained_cfg"]) == meta["pretrained_cfg"]


def test_timm_crop_pct_resizes_like_the_eval_transform_at_every_size() -> None:
    for size in range(8, 1025):
        pct = timm_crop_pct(size)
        assert math.floor(size / pct) == eval_resize_side(size), size
    assert (timm_crop_pct(224), timm_crop_pct(96), timm_crop_pct(32)) == (0.875, 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Permissions
# --------------------------------------------------------------------------------------------


def test_files_of_a_run_and_of_its_evaluations_are_0o644_under_umask_022(
    run_dir: Path, tmp_path: Path
) -> None:
    for path in run_dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    previous = os.umask(0o022)
    try:
        out = tmp_path / "knn.json"
        result = CliRunner().invoke(
            app, ["eval", "knn", str(run_dir), "--k", "3", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(previous)
