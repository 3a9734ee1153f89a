"""``syn2co-train run`` validates its options before it creates or reads anything.

A bad value ends the command with one line naming the option, exit code 1, no traceback and
no run directory left behind; random values through the real option parser either run or fail
that way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import flag
from reference_trainer.methods import method_names

from .conftest import TINY_DEIT, tiny_run, write_image_folder


def one_line_error(output: str) -> str:
    """The error line of a failed command: the last line, starting with ``error:``."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error:"), output
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--lr", "0"], "--lr must be > 0, got 0.0"),
        (["--lr", "-0.001"], "--lr must be > 0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
        (["--clip-grad", "-1"], "--clip-grad must be >= 0"),
        (["--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
        (["--drop-path", "1"], "--drop-path must be in [0, 1)"),
        (["--drop-path", "-0.1"], "--drop-path must be in [0, 1)"),
        (["--patch-size", "0"], "--patch-size must be >= 1"),
        (["--depth", "0"], "--depth must be >= 1"),
        (["--stop-at", "0"], "--stop-at must be >= 1"),
        (["--warmup-lr-fraction", "2"], "--warmup-lr-fraction must be in [0, 1], got 2.0"),
        (["--negatives-start-epoch", "-1"], "--negatives-start-epoch must be >= 0"),
        (["--warmup-steps", "1", "--warmup-epochs", "1"], "give either --warmup-steps or"),
        (["--recipe", "no-such-recipe"], "no-such-recipe"),
        (["--queue-size", "8"], "--queue-size 8 is smaller than the global batch (16)"),
        (["--builtin-size", "10"], "--batch-size 16 exceeds the 10 training images"),
        (["--arch", "resnet_9000"], "unknown architecture 'resnet_9000'"),
        (["--dataset", "imagefolder", "--data", "/nonexistent/train"], "/nonexistent/train"),
    ],
)
def test_bad_option_is_one_line_and_creates_nothing(
    runner: CliRunner, tmp_path: Path, args: list[str], words: str
) -> None:
    out = tmp_path / "runs" / "run"
    result = runner.invoke(app, [*tiny_run(out), "--steps", "2", *args])
    assert result.exit_code == 1, result.output
    assert words in one_line_error(result.output)
    assert not (tmp_path / "runs").exists()


def test_batch_larger_than_an_image_folder(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=2, per_class=5)
    out = tmp_path / "run"
    args = [*tiny_run(out), "--dataset", "imagefolder", "--data", str(data), "--steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "--batch-size 16 exceeds the 10 training images" in one_line_error(result.output)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Random values through the option parser
# --------------------------------------------------------------------------------------------

#: Values of the right syntax (the parser accepts them) over ranges that cross every limit,
#: kept small enough that a valid combination trains a step in well under a second.
OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "arch": st.sampled_from(["deit_s", "vit_t", "swin_t", "resnet_9000"]),
    "method": st.sampled_from(method_names()),
    "negatives": st.sampled_from(["none", "synco-v1", "synco-v2", "synco-v2-config", "mochi"]),
    "img-size": st.sampled_from([-1, 0, 8, 16, 30, 32]),
    "builtin-size": st.integers(-1, 48),
    "batch-size": st.integers(-1, 40),
    "steps": st.integers(-1, 2),
    "epochs": st.floats(-1.0, 0.05),
    "stop-at": st.integers(-1, 3),
    "lr": st.floats(-1e-3, 1e-2),
    "weight-decay": st.floats(-0.1, 0.2),
    "warmup-steps": st.integers(-2, 3),
    "clip-grad": st.floats(-1.0, 5.0),
    "momentum": st.floats(-0.5, 1.5),
    "temperature": st.floats(-0.1, 1.0),
    "queue-size": st.integers(-1, 64),
    "proj-hidden": st.integers(-1, 64),
    "proj-dim": st.integers(-1, 32),
    "drop-path": st.floats(-0.5, 1.5),
    "n-hard": st.integers(-1, 80),
    "interpolated": st.integers(-1, 8),
    "perturbed": st.integers(-1, 8),
    "negatives-start": st.integers(-1, 3),
    "negatives-end": st.integers(-1, 3),
    "negatives-start-epoch": st.floats(-0.5, 0.05),
    "negatives-end-epoch": st.floats(-0.5, 0.1),
    "negatives-as-run-gpus": st.integers(-1, 3),
    "negatives-path": st.sampled_from(["logits", "vectors"]),
    "warmup-epochs": st.floats(-0.5, 0.05),
    "warmup-lr-fraction": st.floats(-0.5, 1.5),
    "min-lr-fraction": st.floats(-0.5, 1.5),
    "weight-decay-exclude": st.sampled_from(["1d", "1d+no-weight-decay", "none"]),
    "generator": st.sampled_from(["none", "hard-samples", "hard-pairs", "both"]),
    "generator-fraction": st.floats(-0.5, 1.5),
    "generator-lr": st.floats(-1e-3, 1e-2),
    "patch-size": st.integers(-1, 8),
    "window-size": st.integers(-1, 8),
    "depth": st.integers(-1, 2),
    "embed-dim": st.sampled_from([-1, 0, 8, 30, 32]),
    "num-heads": st.integers(-1, 4),
    "seed": st.integers(-5, 2**40),
    "precision": st.sampled_from(["auto", "bf16", "fp16", "fp32"]),
    "loader": st.sampled_from(["auto", "cpu", "gpu"]),
    "checkpoint-every": st.integers(-1, 3),
    "log-every": st.integers(-1, 3),
    "hardness-every": st.integers(-1, 3),
    "synthetic-fraction": st.floats(-0.2, 1.2),
    "workers": st.integers(-1, 0),
}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})
    )
)
def test_random_options_run_or_fail_in_one_line(options: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs" / "run"
        args = [
            "run",
            "--out",
            str(out),
            *TINY_DEIT,
            "--builtin-size",
            "48",
            "--batch-size",
            "8",
            "--queue-size",
            "32",
            "--steps",
            "1",
            "--workers",
            "0",
        ]
        for key, value in options.items():  # given last: the parser keeps the last value
            args += [f"--{key}", str(value)]
        result = CliRunner().invoke(app, args)
        if result.exit_code == 0:
            assert (out / "checkpoint.pt").is_file(), result.output
            event("trained")
            return
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == 1, result.output
        line = one_line_error(result.output)
        event(line.split()[1])  # the option or the kind of error (--hypothesis-show-statistics)
        if "NaN or infinite" not in line:  # a diverged run did start; anything else is input
            assert not (Path(tmp) / "runs").exists(), line


# --------------------------------------------------------------------------------------------
# --data without --dataset
# --------------------------------------------------------------------------------------------


def data_args(out: Path, *extra: str) -> list[str]:
    """A tiny run that names no --dataset."""
    return [
        "run",
        "--out",
        str(out),
        *TINY_DEIT,
        "--img-size",
        "32",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--queue-size",
        "32",
        "--steps",
        "2",
        *extra,
    ]


def test_data_without_dataset_trains_on_the_image_folder(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=3, per_class=8)
    out = tmp_path / "run"
    result = runner.invoke(app, data_args(out, "--data", str(data)))
    assert result.exit_code == 0, result.output
    assert "24 images" in result.output  # not the 10,000 built-in shapes
    assert yaml.safe_load((out / "config.yaml").read_text())["dataset"] == "imagefolder"


def test_data_without_dataset_in_a_config_file(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=2, per_class=8)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {data}\n")
    out = tmp_path / "run"
    result = runner.invoke(app, [*data_args(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["dataset"] == "imagefolder"


@pytest.mark.parametrize("layout", ["empty", "files only", "missing"])
def test_data_that_is_no_image_folder_needs_dataset(
    runner: CliRunner, tmp_path: Path, layout: str
) -> None:
    data = tmp_path / "cifar"
    if layout != "missing":
        data.mkdir()
    if layout == "files only":
        (data / "data_batch_1").write_bytes(b"\0" * 64)
        write_image_folder(data / "notes", classes=0)  # a folder without images
    out = tmp_path / "run"
    result = runner.invoke(app, data_args(out, "--data", str(data)))
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert f"--data {data}" in line and "--dataset" in line
    assert not out.exists()


def test_data_with_the_builtin_dataset_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=2, per_class=8)
    out = tmp_path / "run"
    result = runner.invoke(app, data_args(out, "--data", str(data), "--dataset", "builtin"))
    assert result.exit_code == 1
    assert "--dataset builtin reads no files" in one_line_error(result.output)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Extreme values of every numeric option
# --------------------------------------------------------------------------------------------


def _numeric_options() -> dict[str, type]:
    """Every int or float option of ``TrainConfig`` (optional ones included), by field name."""
    hints = get_type_hints(TrainConfig)
    found: dict[str, type] = {}
    for name, hint in hints.items():
        kinds = [a for a in get_args(hint) if a is not type(None)] or [hint]
        if kinds[0] in (int, float):
            found[name] = kinds[0]
    return found


NUMERIC = _numeric_options()
#: The extremes, each with its kind: zero, negative, astronomically large, not finite.
INT_EXTREMES = [("0", "zero"), ("-1", "negative"), (str(-(10**23)), "negative")]
INT_EXTREMES += [(str(10**12), "huge"), (str(10**23), "huge")]
FLOAT_EXTREMES = [("0", "zero"), ("-1", "negative"), ("-1e23", "negative")]
FLOAT_EXTREMES += [("1e12", "huge"), ("1e23", "huge")]
FLOAT_EXTREMES += [("nan", "not finite"), ("inf", "not finite"), ("-inf", "not finite")]
#: The options whose value sizes memory, a count or a loop: an astronomically large value must
#: be refused before anything is allocated (any int option beyond 64 bits is refused too).
SIZES = {
    "img_size",
    "builtin_size",
    "batch_size",
    "queue_size",
    "proj_hidden",
    "proj_dim",
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "window_size",
    "n_hard",
    "interpolated",
    "extrapolated",
    "mixed",
    "noisy",
    "perturbed",
    "adversarial",
    "steps",
    "epochs",
    "stop_at",
    "warmup_steps",
    "warmup_epochs",
    "workers",
    "negatives_as_run_gpus",
}


def test_every_numeric_option_is_fuzzed() -> None:
    """The fuzz below covers what TrainConfig holds (a new numeric option joins it)."""
    assert {"lr", "seed", "img_size", "queue_size", "steps", "momentum"} <= NUMERIC.keys()
    assert len(NUMERIC) >= 40
    assert NUMERIC.keys() >= SIZES


EXTREME_CASES = st.sampled_from(sorted(NUMERIC)).flatmap(
    lambda name: st.tuples(
        st.just(name), st.sampled_from(INT_EXTREMES if NUMERIC[name] is int else FLOAT_EXTREMES)
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXTREME_CASES)
def test_extreme_values_fail_in_one_line_naming_the_option(
    case: tuple[str, tuple[str, str]],
) -> None:
    """0, negative, huge and non-finite values of every numeric option, through the real option
    parser (``--dry-run``: everything is resolved and checked, the data scanned, nothing
    written): either a valid run, or exit code 1 with exactly one line ``error: ...`` naming the
    option; nothing is created either way. A huge size or count is never valid, nor is a value
    that is not finite."""
    name, (value, kind) = case
    option = flag(name)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs" / "run"
        # given last: the parser keeps the last value (tiny_run's own --steps included)
        args = [*tiny_run(out), "--steps", "2", "--dry-run", option, value]
        result = CliRunner().invoke(app, args)
        assert not (Path(tmp) / "runs").exists(), result.output
    event(f"{kind}: exit {result.exit_code}")
    beyond_int64 = NUMERIC[name] is int and abs(int(value)) > 2**63
    if kind == "not finite" or beyond_int64 or (kind == "huge" and name in SIZES):
        assert result.exit_code == 1, result.output
    if result.exit_code == 0:
        assert "dry run: nothing was written" in result.output
        return
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    assert option in lines[0] or f"'{name}'" in lines[0], lines[0]
