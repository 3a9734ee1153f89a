"""Every probe on every backbone: each linear protocol and each kNN protocol, run through the
CLI on a tiny ResNet-18 and a tiny ViT, leaves the backbone's weights and buffers as trained
and keeps its norm layers with running statistics in eval mode throughout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn
from typer.testing import CliRunner

import reference_trainer.evaluate as evaluate
from reference_trainer.cli import app
from reference_trainer.evaluate import fingerprint
from reference_trainer.pretrained import load_backbone

from .conftest import TINY_DEIT, TINY_RESNET, tiny_run

ARCHS = {"resnet18": TINY_RESNET, "deit": TINY_DEIT}

#: Each protocol, shortened to a CPU-sized run (one epoch, small batches) without changing
#: which modes it sets.
COMMANDS = {
    "linear fast": ["linear", "--protocol", "fast", "--epochs", "1", "--batch-size", "32"],
    "linear synco-v2": [
        "linear",
        "--protocol",
        "synco-v2",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0.5",
        "--batch-size",
        "32",
    ],
    "linear mocov3": ["linear", "--protocol", "mocov3", "--epochs", "1", "--batch-size", "32"],
    "linear mocov2": ["linear", "--protocol", "mocov2", "--epochs", "1", "--batch-size", "32"],
    "knn full": ["knn", "--protocol", "full", "--k", "3"],
    "knn synco-v2": ["knn", "--protocol", "synco-v2", "--k", "3", "--batch-size", "4"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, arch in ARCHS.items():
        run = tmp_path_factory.mktemp(name) / "run"
        result = CliRunner().invoke(app, [*tiny_run(run, arch=arch), "--steps", "2"])
        assert result.exit_code == 0, result.output
        out[name] = run
    return out


def _norm_layers(module: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
    ]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_probe_leaves_every_backbone_unchanged(
    runs: dict[str, Path],
    arch: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = runs[arch]
    trained = fingerprint(load_backbone(run)[0])
    seen: list[dict[str, Any]] = []

    def watched(real: Callable[..., Any]) -> Callable[..., Any]:
        def probe(backbone: nn.Module, *args: Any, **kwargs: Any) -> Any:
            norm_modes: list[bool] = []
            hooks = [
                m.register_forward_pre_hook(lambda m, i: norm_modes.append(m.training))
                for m in _norm_layers(backbone)
            ]
            before = fingerprint(backbone)
            try:
                return real(backbone, *args, **kwargs)
            finally:
                for hook in hooks:
                    hook.remove()
                seen.append(
                    {"before": before, "after": fingerprint(backbone), "norm_modes": norm_modes}
                )

        return probe

    monkeypatch.setattr(evaluate, "linear_probe", watched(evaluate.linear_probe))
    monkeypatch.setattr(evaluate, "knn_probe", watched(evaluate.knn_probe))
    kind, *options = COMMANDS[command]
    out = tmp_path / "result.json"
    args = ["eval", kind, str(run), *options, "--workers", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    assert seen[0]["before"] == seen[0]["after"] == trained  # weights and buffers as trained
    if arch == "resnet18":  # BatchNorm ran, in eval mode every time
        assert seen[0]["norm_modes"] and not any(seen[0]["norm_modes"])
    saved = json.loads(out.read_text())
    assert saved["protocol"] == command.split()[1]
    if kind == "linear":
        assert saved["backbone_unchanged"] is True and saved["fingerprint_after"] == trained
