"""Pretraining on real + synthetic image mixes through the CLI (Syn2Co)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app
from syn2co.samplers import RatioSchedule, split_counts

from .conftest import tiny_run, write_image_folder


def records(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    real = write_image_folder(tmp_path / "real" / "train", per_class=8)
    val = write_image_folder(tmp_path / "real" / "val", per_class=4)
    synth = write_image_folder(tmp_path / "synth", classes=2, per_class=6, size=40)
    return real, val, synth


def mix_args(run: Path, real: Path, val: Path, synth: Path, *extra: str) -> list[str]:
    return [
        *tiny_run(run),
        "--dataset",
        "imagefolder",
        "--data",
        str(real),
        "--val-data",
        str(val),
        "--synthetic-data",
        str(synth),
        "--batch-size",
        "8",
        "--log-every",
        "1",
        *extra,
    ]


def test_every_batch_holds_the_requested_counts(
    runner: CliRunner, tmp_path: Path, folders: tuple[Path, Path, Path]
) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            *mix_args(
                run,
                *folders,
                "--synthetic-fraction",
                "0.25",
                "--steps",
                "6",
                "--negatives",
                "synco-v2",
            )
        ],
    )
    assert result.exit_code == 0, result.output
    got = [(r["real"], r["synthetic"]) for r in records(run)]
    assert got == [split_counts(8, 0.25)] * 6 == [(6, 2)] * 6
    # the run says what it trained on: in its header, its summary and its config.yaml
    real, _, synth = folders
    said = [
        f"data: imagefolder {real}, 24 images",
        f"synthetic: {synth}, 12 images, fraction 0.25 of every batch",
        "run: 6 steps = 48 images seen",
    ]
    header = " ".join(result.output.split())  # the console wraps long lines
    config = (run / "config.yaml").read_text()
    comments = [line for line in config.splitlines() if line.startswith("# ")]
    for line in said:
        assert line in header and any(line in c for c in comments), line
    assert "images seen 48" in " ".join(header.replace("│", " ").split())
    # hardness split by source: queries of each source, negatives of each source in the queue
    first, *later = records(run)
    for key in (
        "hardness/real_queries/positive/mean",
        "hardness/synthetic_queries/positive/mean",
        "hardness/real_queries/interpolated/mean",
    ):
        assert key in first, key
    # the first step's bank holds no key of either source yet (measured before its enqueue)
    for source in ("real", "synthetic"):
        key = f"hardness/{source}_negatives/hard_real/mean"
        assert key not in first, key
        assert any(key in r for r in later), f"{source} keys reach the queue after the first step"


def test_scheduled_fraction_and_synthetic_only(
    runner: CliRunner, tmp_path: Path, folders: tuple[Path, Path, Path]
) -> None:
    run = tmp_path / "scheduled"
    args = mix_args(
        run,
        *folders,
        "--synthetic-fraction",
        "0.0",
        "--synthetic-fraction-end",
        "1.0",
        "--synthetic-schedule",
        "linear",
        "--steps",
        "5",
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    schedule = RatioSchedule.linear(0.0, 1.0, steps=5)
    assert [(r["real"], r["synthetic"]) for r in records(run)] == [
        split_counts(8, schedule.at(step)) for step in range(5)
    ]
    # synthetic only: --data may be left out; evaluation then says it needs real data
    real, val, synth = folders
    only = tmp_path / "only"
    args = [
        *tiny_run(only),
        "--dataset",
        "imagefolder",
        "--synthetic-data",
        str(synth),
        "--synthetic-fraction",
        "1.0",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--log-every",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {(r["real"], r["synthetic"]) for r in records(only)} == {(0, 4)}
    result = runner.invoke(app, ["eval", "knn", str(only), "--workers", "0"])
    assert result.exit_code == 1 and "--data" in result.output
    # evaluation always uses real data: with --data given it runs
    result = runner.invoke(
        app,
        [
            "eval",
            "knn",
            str(only),
            "--data",
            str(real),
            "--val-data",
            str(val),
            "--k",
            "3",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_resume_mid_epoch_with_a_mix_is_exact(
    runner: CliRunner, tmp_path: Path, folders: tuple[Path, Path, Path]
) -> None:
    common = (
        "--synthetic-fraction",
        "0.5",
        "--steps",
        "8",
        "--workers",
        "2",
        "--negatives",
        "synco-v2",
    )
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert runner.invoke(app, mix_args(straight, *folders, *common)).exit_code == 0
    assert (
        runner.invoke(app, [*mix_args(split, *folders, *common), "--stop-at", "3"]).exit_code == 0
    )
    assert (
        runner.invoke(app, [*mix_args(split, *folders, *common), "--resume", str(split)]).exit_code
        == 0
    )
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    for key, value in a["online"].items():
        assert torch.equal(value, b["online"][key]), key
    assert torch.equal(a["method"]["queue1.tags"], b["method"]["queue1.tags"])
    assert a["sampler"] == b["sampler"]
    assert records(straight) == [
        {**r, "img_per_s": s["img_per_s"]}
        for r, s in zip(records(split), records(straight), strict=True)
    ]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--synthetic-fraction", "0.5"], "needs --synthetic-data"),
        (
            ["--synthetic-fraction", "1.5", "--synthetic-data", "x"],
            "--synthetic-fraction must be in [0, 1]",
        ),
        (
            [
                "--synthetic-fraction",
                "0.2",
                "--synthetic-schedule",
                "cosine",
                "--synthetic-data",
                "x",
            ],
            "needs --synthetic-fraction-end",
        ),
        (
            [
                "--synthetic-fraction-end",
                "0.2",
                "--synthetic-data",
                "x",
                "--synthetic-fraction",
                "0.1",
            ],
            "needs --synthetic-schedule",
        ),
    ],
)
def test_mixing_option_errors(
    runner: CliRunner, tmp_path: Path, extra: list[str], words: str
) -> None:
    result = runner.invoke(app, [*tiny_run(tmp_path / "run"), "--steps", "2", *extra])
    assert result.exit_code == 1
    assert words in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_gpu_input_path_runs_on_cpu_with_mixing_and_resumes_exactly(
    runner: CliRunner, tmp_path: Path, folders: tuple[Path, Path, Path]
) -> None:
    """--loader gpu (bytes from workers, batched decode and augmentation) on the CPU device."""
    common = ("--loader", "gpu", "--synthetic-fraction", "0.25", "--steps", "6", "--workers", "2")
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = runner.invoke(app, mix_args(straight, *folders, *common))
    assert result.exit_code == 0, result.output
    assert {(r["real"], r["synthetic"]) for r in records(straight)} == {(6, 2)}
    assert (
        runner.invoke(app, [*mix_args(split, *folders, *common), "--stop-at", "2"]).exit_code == 0
    )
    assert (
        runner.invoke(app, [*mix_args(split, *folders, *common), "--resume", str(split)]).exit_code
        == 0
    )
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    for key, value in a["online"].items():
        assert torch.equal(value, b["online"][key]), key


def test_a_missing_synthetic_folder_names_where_its_path_came_from(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [*tiny_run(out), "--steps", "2", "--recipe", "syn2co-deit-s-in100-mixed"]
    args += ["--dataset", "builtin", "--img-size", "32", "--warmup-steps", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and not out.exists()
    line = result.output.strip()
    assert line.startswith("error: --synthetic-data ") and "\n" not in line
    assert "(set by recipe syn2co-deit-s-in100-mixed@1" in line
    assert "syn2co-train synth --out" in line and "or pass --synthetic-data DIR" in line
