"""syn2co-train end to end through Typer's runner: run, resume, eval, export, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
import yaml
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.pretrained import load_backbone

from .conftest import TINY_DEIT, TINY_SWIN, tiny_run


def invoke(runner: CliRunner, args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}:\n{output}\n{result.exception!r}"
    )
    return output


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    return {
        **{f"online.{k}": v for k, v in state["online"].items()},
        **{f"method.{k}": v for k, v in state["method"].items()},
    }


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["deit", "swin"])
@pytest.mark.parametrize("method", ["moby", "mocov3"])
def test_run_resume_eval_export(runner: CliRunner, tmp_path: Path, arch: str, method: str) -> None:
    run = tmp_path / "run"
    spec = TINY_DEIT if arch == "deit" else TINY_SWIN
    args = tiny_run(run, "--method", method, "--negatives", "synco-v2", "--steps", "6", arch=spec)
    out = invoke(runner, [*args, "--stop-at", "3"])
    assert "steps" in out and (run / "checkpoint.pt").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    invoke(runner, [*args, "--resume", str(run)])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == method and saved["negatives"] == "synco-v2"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert any("hardness/interpolated/mean" in r for r in records)

    out = invoke(runner, ["eval", "knn", str(run), "--k", "5", "--baseline", "--workers", "0"])
    knn = json.loads((run / "eval_knn.json").read_text())
    assert set(knn["pretrained"]["top1"]) == {"5"} and "random init" in knn
    assert "kNN top-1" in out

    invoke(
        runner,
        ["eval", "linear", str(run), "--epochs", "2", "--batch-size", "32", "--workers", "0"],
    )
    linear = json.loads((run / "eval_linear.json").read_text())
    assert linear["backbone_unchanged"] is True
    assert linear["fingerprint_before"] == linear["fingerprint_after"]

    out = invoke(runner, ["export", str(run)])
    weights_file = run / "backbone.safetensors"
    kwargs = json.loads((run / "backbone.json").read_text())["timm_kwargs"]
    model = timm.create_model(
        **kwargs, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(weights_file)}
    ).eval()
    backbone, _ = load_backbone(run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), backbone(x), atol=1e-6)
    assert "timm.create_model(" in out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moby", "mocov3"])
def test_resume_is_exact(runner: CliRunner, tmp_path: Path, method: str) -> None:
    """N steps, resume, N steps == 2N steps straight, bit for bit (workers included)."""
    common = [
        "--method",
        method,
        "--negatives",
        "synco-v2",
        "--steps",
        "8",
        "--workers",
        "2",
        "--drop-path",
        "0.1",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    invoke(runner, tiny_run(straight, *common))
    invoke(runner, [*tiny_run(split, *common), "--stop-at", "4"])
    halfway = weights(split)
    invoke(runner, [*tiny_run(split, *common), "--resume", str(split)])
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], halfway[k]) for k in a)  # the second half did train


def test_config_file_and_overrides(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('method = "mocov3"\nbatch-size = 8\nsteps = 2\ntemperature = 0.3\n')
    run = tmp_path / "run"
    invoke(runner, [*tiny_run(run), "--config", str(cfg), "--temperature", "0.5"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # file beats defaults, command line beats file; tiny_run's --batch-size 16 wins over 8
    assert saved["method"] == "mocov3" and saved["temperature"] == 0.5 and saved["batch_size"] == 16
    assert saved["lr"] == pytest.approx(1.5e-4 * 16 / 256)  # resolved from the MoCo v3 preset
    # the saved config runs again as a config file
    invoke(runner, [*tiny_run(tmp_path / "again"), "--config", str(run / "config.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("tempreature: 0.1\n")
    out = invoke(runner, ["run", "--config", str(bad), "--out", str(tmp_path / "x")], code=1)
    assert "unknown option 'tempreature' (did you mean temperature?)" in out


def test_refuses_to_overwrite_and_rejects_changed_resume(runner: CliRunner, tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke(runner, [*tiny_run(run), "--steps", "2"])
    out = invoke(runner, [*tiny_run(run), "--steps", "2"], code=1)
    assert "already holds a run" in out and "--resume" in out
    out = invoke(
        runner,
        [*tiny_run(run), "--steps", "2", "--resume", str(run), "--temperature", "0.9"],
        code=1,
    )
    assert "option 'temperature' differs from the checkpoint" in out


def one_line_error(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert "Traceback" not in out
    assert lines and lines[-1].startswith("error:"), out
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dataset", "imagefolder", "--data", "/nonexistent/train"], "/nonexistent/train"),
        (["--arch", "resnet_9000"], "unknown architecture 'resnet_9000'"),
        (["--arch", "swin_t", "--img-size", "40"], "sizes that work"),
        (["--arch", "deit_s", "--img-size", "30"], "multiple of the patch size"),
        (["--dataset", "cifar10", "--data", "/nonexistent"], "cifar-10-batches-py"),
        (["--batch-size", "1"], "--batch-size"),
        (["--n-hard", "1000", "--negatives", "synco-v2"], "--n-hard 1000 exceeds the bank"),
    ],
)
def test_bad_input_exits_with_one_line(
    runner: CliRunner, tmp_path: Path, args: list[str], words: str
) -> None:
    result = runner.invoke(app, [*tiny_run(tmp_path / "run"), "--steps", "2", *args])
    assert result.exit_code == 1, result.output
    assert words in one_line_error(result.output)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(runner: CliRunner, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    result = runner.invoke(app, [*tiny_run(locked / "run"), "--steps", "2"])
    assert result.exit_code == 1 and "cannot write" in one_line_error(result.output)


def test_unwritable_output_is_a_file(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = runner.invoke(app, [*tiny_run(blocker / "run"), "--steps", "2"])
    assert result.exit_code == 1 and "--out: cannot write" in one_line_error(result.output)


def test_corrupt_images_skipped_or_strict(
    runner: CliRunner, tmp_path: Path, image_folder: tuple[Path, Path]
) -> None:
    train, val = image_folder
    bad = train / "class_0" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    base = [
        *tiny_run(tmp_path / "run"),
        "--dataset",
        "imagefolder",
        "--data",
        str(train),
        "--val-data",
        str(val),
        "--steps",
        "5",
        "--batch-size",
        "5",  # 25 files: 5 batches of 5 read every one
    ]
    out = invoke(runner, base)
    assert "broken.jpg" in out and "unreadable" in out
    result = runner.invoke(
        app, [*base[:2], str(tmp_path / "strict"), *base[3:], "--strict-data", "--workers", "2"]
    )
    assert result.exit_code == 1
    assert "broken.jpg" in one_line_error(result.output)


def test_non_finite_loss_stops_with_last_good_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        *tiny_run(run),
        "--steps",
        "40",
        "--lr",
        "1e30",
        "--clip-grad",
        "0",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--warmup-steps",
        "0",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert "NaN or infinite" in line and "last good checkpoint" in line
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["online"].values() if v.is_floating_point())
