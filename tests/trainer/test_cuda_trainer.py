"""The trainer on a CUDA device (skipped where there is none): bf16, compile, resume, eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app

from .conftest import TINY_SWIN, tiny_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("compile_flag", ["--no-compile", "--compile"])
def test_bf16_run_resume_and_eval_on_cuda(
    runner: CliRunner, tmp_path: Path, compile_flag: str
) -> None:
    run = tmp_path / "run"
    args = [
        *tiny_run(run, "--negatives", "synco-v2", "--steps", "6", arch=TINY_SWIN),
        "--device",
        "cuda",
        compile_flag,
    ]
    result = runner.invoke(app, [*args, "--stop-at", "3"])
    assert result.exit_code == 0, result.output
    assert "cuda" in result.output and "bf16" in result.output
    result = runner.invoke(app, [*args, "--resume", str(run)])
    assert result.exit_code == 0, result.output
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    result = runner.invoke(
        app, ["eval", "knn", str(run), "--k", "5", "--workers", "0", "--device", "cuda"]
    )
    assert result.exit_code == 0, result.output
