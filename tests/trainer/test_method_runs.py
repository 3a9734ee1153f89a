"""SimCLR and MoCo v2 on ResNets end to end through the CLI: run, evaluate, resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app

from .conftest import TINY_RESNET, tiny_run, write_cifar10

pytestmark = pytest.mark.slow


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def records(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_simclr_resnet18_on_cifar10_trains_and_evaluates(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "cifar")
    run = tmp_path / "run"
    args = tiny_run(
        run, "--method", "simclr", "--steps", "4", "--negatives", "synco-v2", arch=TINY_RESNET
    )
    args += ["--dataset", "cifar10", "--data", str(root)]
    invoke(args)
    saved = (run / "config.yaml").read_text()
    assert "method: simclr" in saved and "optimizer: lars" in saved and "temperature: 0.5" in saved
    logged = records(run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in logged) and "hardness/interpolated/mean" in logged[-1]
    invoke(["eval", "knn", str(run), "--k", "5", "--baseline", "--workers", "0"])
    knn = json.loads((run / "eval_knn.json").read_text())
    assert 0 <= knn["pretrained"]["top1"]["5"] <= 100 and "random init" in knn


def test_mocov2_resnet50_fills_its_queue(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # TINY_RESNET with resnet50 (bottleneck blocks) in place of resnet18; a later --arch wins
    args = [*tiny_run(run, arch=TINY_RESNET), "--arch", "resnet50", "--method", "mocov2"]
    invoke([*args, "--negatives", "synco-v1", "--steps", "3"])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert int(state["method"]["queue.count"]) == 3 * 16  # the keys of 3 steps
    assert state["target"] is not None
    assert state["online"]["encoder.backbone.conv1.weight"].shape[-2:] == (3, 3)  # CIFAR stem
    assert "encoder.backbone.layer1.0.conv3.weight" in state["online"]  # a bottleneck block
    assert "hardness/interpolated/mean" in records(run)[1]  # step 2, a hardness step


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("simclr", ["--negatives", "synco-v2", "--generator", "both"]),
        ("mocov2", ["--negatives", "synco-v1", "--arch", "resnet50"]),
    ],
)
def test_resume_is_exact(tmp_path: Path, method: str, extra: list[str]) -> None:
    """N steps, resume, N steps == 2N steps straight, bit for bit: LARS and SGD state, shuffle
    BN's permutations, the pair generator's grouped views."""

    def args(out: Path) -> list[str]:
        return [*tiny_run(out, arch=TINY_RESNET), "--method", method, "--steps", "6", *extra]

    straight, split = tmp_path / "straight", tmp_path / "split"
    invoke(args(straight))
    invoke([*args(split), "--stop-at", "3"])
    halfway = torch.load(split / "checkpoint.pt", weights_only=False)["online"]
    invoke([*args(split), "--resume", str(split)])
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["online"].keys() == b["online"].keys() and a["method"].keys() == b["method"].keys()
    for key, value in [*a["online"].items(), *a["method"].items()]:
        other = b["online"].get(key, b["method"].get(key))
        assert torch.equal(value, other), key
    assert any(not torch.equal(a["online"][k], halfway[k]) for k in halfway)
