"""syn2co-train run --generator: jointly learned generators inside the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.diagnostics import Source
from syn2co.samplers import REAL

from .conftest import tiny_run


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    joint = {f"joint.{k}": v for k, v in state["joint"].items() if isinstance(v, torch.Tensor)}
    return {**{f"online.{k}": v for k, v in state["online"].items()}, **joint}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hard-samples", "hard-pairs", "both"])
def test_generators_train_log_draw_and_resume_exactly(
    runner: CliRunner, tmp_path: Path, mode: str
) -> None:
    common = [
        "--generator",
        mode,
        "--steps",
        "4",
        "--generator-grid-every",
        "2",
        "--hardness-every",
        "2",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = runner.invoke(app, [*tiny_run(straight), *common])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, [*tiny_run(split), *common, "--stop-at", "2"]).exit_code == 0
    halfway = weights(split)
    assert runner.invoke(app, [*tiny_run(split), *common, "--resume", str(split)]).exit_code == 0
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys() and any(k.startswith("joint.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    generator_keys = [k for k in a if k.startswith("joint.")]
    assert any(not torch.equal(a[k], halfway[k]) for k in generator_keys)  # generators trained
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r if k.startswith("gen/")}
    if mode != "hard-pairs":
        assert "gen/sample_contrastive" in logged
    if mode != "hard-samples":
        assert {"gen/pair_similarity", "gen/pair_target"} <= logged
    # Generated rows are tagged as such in the queues, and their hardness is logged apart.
    hardness = {k for r in records for k in r if k.startswith("hardness/generated_")}
    assert "hardness/generated_queries/positive/mean" in hardness
    assert "hardness/generated_negatives/hard_real/mean" in hardness
    generated_per_step = 4 * (2 if mode == "both" else 1)  # a quarter of 16, per generator
    rows = ([REAL] * 16 + [Source.GENERATED] * generated_per_step) * 4  # 4 steps, real rows first
    state = torch.load(straight / "checkpoint.pt", weights_only=False)
    kept = rows[-64:]  # a queue of 64 keeps the last 64 rows
    for queue in ("queue1", "queue2"):
        tags = state["method"][f"{queue}.tags"]
        assert int((tags == Source.GENERATED).sum()) == kept.count(Source.GENERATED)
        assert int((tags == REAL).sum()) == kept.count(REAL)
    grids = sorted((straight / "generated").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000001.png", "step_0000002.png", "step_0000004.png"]
    assert all(g.stat().st_size > 500 for g in grids)


def test_generated_keys_can_be_kept_out_of_the_queues(runner: CliRunner, tmp_path: Path) -> None:
    args = [*tiny_run(tmp_path), "--generator", "both", "--steps", "3"]
    result = runner.invoke(app, [*args, "--no-generator-keys-enqueued"])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for queue in ("queue1", "queue2"):
        tags = state["method"][f"{queue}.tags"]
        assert int((tags == Source.GENERATED).sum()) == 0
        assert int((tags == REAL).sum()) == 3 * 16  # only the real rows of the 3 steps
        assert int(state["method"][f"{queue}.count"]) == 3 * 16


def test_generator_option_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *tiny_run(tmp_path / "r"),
            "--steps",
            "2",
            "--generator",
            "both",
            "--generator-fraction",
            "0",
        ],
    )
    assert result.exit_code == 1 and "--generator-fraction must be in (0, 1]" in result.output
    # Keeping generated keys out of the queues means nothing without queues or generators.
    for extra in (["--method", "mocov3", "--generator", "both"], ["--generator", "none"]):
        result = runner.invoke(
            app,
            [*tiny_run(tmp_path / "r3"), "--steps", "2", *extra, "--no-generator-keys-enqueued"],
        )
        assert result.exit_code == 1
        assert "--no-generator-keys-enqueued applies to --method moby" in result.output
    result = runner.invoke(
        app, [*tiny_run(tmp_path / "r2"), "--steps", "2", "--generator", "sometimes"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
