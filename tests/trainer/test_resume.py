"""Resuming a run: where it continues, and that it continues exactly.

A run stopped and resumed must end in the state an uninterrupted run reaches: every weight,
the EMA target, the queues, the optimizer, the generators, the sampler position, the random
streams and every logged number. The configurations here are the ones that draw the most
randomness: a depth of 2 so that drop-path is active (the methods' default rates), DataLoader
workers, a real/synthetic mix, the jointly learned generators, and a stop mid-epoch whose
continuation crosses an epoch boundary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app

from .conftest import TINY_DEIT_2, assert_same_state, records, tiny_run, write_image_folder


def invoke(runner: CliRunner, args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}:\n{result.output}\n{result.exception!r}"
    )
    return result.output


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (the default --out) land in the test's directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def mix(tmp_path: Path) -> list[str]:
    """A real image folder (24 images) and a synthetic one (12) mixed half and half."""
    real = write_image_folder(tmp_path / "real", per_class=8)
    synth = write_image_folder(tmp_path / "synth", classes=2, per_class=6, size=40)
    return [
        "--dataset",
        "imagefolder",
        "--data",
        str(real),
        "--synthetic-data",
        str(synth),
        "--synthetic-fraction",
        "0.5",
        "--img-size",
        "32",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moby", "mocov3"])
def test_resume_is_bit_exact_with_drop_path_workers_mix_and_generators(
    runner: CliRunner, tmp_path: Path, mix: list[str], method: str
) -> None:
    """Stop at step 3 of 8 (mid-epoch: 36 images, batch 8, 4 steps an epoch), resume to 8."""
    common = [
        *TINY_DEIT_2,
        *mix,
        "--method",
        method,
        "--negatives",
        "synco-v2",
        "--generator",
        "both",
        "--batch-size",
        "8",
        "--queue-size",
        "32",
        "--steps",
        "8",
        "--workers",
        "2",
        "--log-every",
        "1",
        "--hardness-every",
        "2",
        "--checkpoint-every",
        "100",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    invoke(runner, ["run", *common, "--out", str(straight)])
    invoke(runner, ["run", *common, "--out", str(split), "--stop-at", "3"])
    halfway = torch.load(split / "checkpoint.pt", weights_only=False)
    assert halfway["step"] == 3 and halfway["config"]["drop_path"] > 0
    invoke(runner, ["run", *common, "--out", str(split), "--resume", str(split)])
    queues = ("method.queue1.keys", "method.queue2.tags") if method == "moby" else ()
    assert_same_state(straight, split, ("joint.", *queues))
    assert records(straight) == records(split)
    assert [r["step"] for r in records(split)] == list(range(1, 9))
    end = torch.load(split / "checkpoint.pt", weights_only=False)
    key = "encoder.backbone.blocks.1.mlp.fc1.weight"  # the block with drop-path trained on
    assert not torch.equal(end["online"][key], halfway["online"][key])


def args_without_out(run: Path, *extra: str) -> list[str]:
    """``tiny_run``'s arguments with ``--out`` left out."""
    args = tiny_run(run, *extra)
    return [args[0], *args[3:]]


def test_resume_continues_in_the_resumed_directory(runner: CliRunner, tmp_path: Path) -> None:
    """``--resume runs/x`` without ``--out`` continues runs/x, not the default runs/syn2co."""
    other = tmp_path / "runs" / "syn2co"  # the default --out, holding another run
    invoke(runner, args_without_out(other, "--steps", "2"))
    before = (other / "checkpoint.pt").read_bytes()
    run = tmp_path / "runs" / "x"
    invoke(runner, [*tiny_run(run, "--steps", "4"), "--stop-at", "2"])
    invoke(runner, [*args_without_out(run, "--steps", "4"), "--resume", "runs/x"])
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4]
    assert (other / "checkpoint.pt").read_bytes() == before  # the other run is untouched


def test_resume_from_a_checkpoint_file_continues_beside_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    run = tmp_path / "x"
    invoke(runner, [*tiny_run(run, "--steps", "4"), "--stop-at", "2"])
    # --out naming the same directory (another spelling of it) is accepted
    spelled = str(tmp_path / "x" / ".." / "x")
    invoke(runner, ["run", "--resume", str(run / "checkpoint.pt"), "--out", spelled])
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4


def test_resume_into_another_directory_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    run, elsewhere = tmp_path / "x", tmp_path / "y"
    invoke(runner, [*tiny_run(run, "--steps", "4"), "--stop-at", "2"])
    out = invoke(runner, ["run", "--resume", str(run), "--out", str(elsewhere)], code=1)
    line = out.strip().splitlines()[-1]
    assert line.startswith("error:") and str(elsewhere) in line and str(run) in line, out
    assert not elsewhere.exists()
    out = invoke(runner, ["run", "--resume", str(run), "--stop-at", "2"], code=1)
    assert "--stop-at 2 is not after the checkpoint's step 2" in out.strip().splitlines()[-1]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
