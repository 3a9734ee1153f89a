"""Official linear-probe protocols on a tiny backbone: the optimizer and schedule each sets, the
backbone's mode during the probe, and its weights unchanged afterwards."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.evaluate import LinearProbeSettings, ProbeStep, fingerprint, linear_probe
from reference_trainer.evaluate.protocols import (
    FAST,
    KNN_KS,
    LINEAR_PROTOCOLS,
    MOCOV2,
    MOCOV3,
    SYNCO_V2,
    for_arch,
)
from reference_trainer.models import create_backbone

N, BATCH, CLASSES = 32, 8, 4


def tiny_vit(drop_path: float = 0.3) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TrainConfig(
        arch="vit_s_mocov3", img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=4
    )
    return create_backbone(cfg, drop_path=drop_path)


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(N, 3, 16, 16, generator=g) * 3
    labels = torch.arange(N) % CLASSES
    data = TensorDataset(images, labels)
    train = DataLoader(data, batch_size=BATCH, shuffle=True, generator=g)
    return train, DataLoader(data, batch_size=BATCH)


def run_probe(
    protocol: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[ProbeStep], list[dict[str, Any]], list[float], torch.nn.Module, Any]:
    backbone = tiny_vit().eval()
    before = fingerprint(backbone)
    steps: list[ProbeStep] = []
    groups: list[dict[str, Any]] = []
    clips: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        clips.append(max_norm)
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)

    def on_step(s: ProbeStep) -> None:
        steps.append(s)
        groups.append({k: v for k, v in s.optimizer.param_groups[0].items() if k != "params"})

    drop_modes: list[bool] = []
    for m in backbone.modules():
        if type(m).__name__ == "DropPath":
            m.register_forward_hook(lambda mod, i, o: drop_modes.append(mod.training))
    train, val = loaders()
    result = linear_probe(
        backbone,
        train,
        val,
        num_classes=CLASSES,
        device="cpu",
        on_step=on_step,
        settings=for_arch(protocol, "vit_s_mocov3"),
    )
    assert result.backbone_unchanged and fingerprint(backbone) == before
    assert not backbone.training  # mode restored
    assert all(p.requires_grad for p in backbone.parameters() if p is not backbone.pos_embed)
    return steps, groups, clips, backbone, drop_modes


def test_synco_v2_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = dataclasses.replace(SYNCO_V2, epochs=3, batch_size=BATCH, warmup_epochs=1)
    steps, groups, clips, _, drop_modes = run_probe(protocol, monkeypatch)
    peak = 1.0 * BATCH / 512
    warm, total = 4, 12  # 4 steps per epoch
    start, end = peak * 5e-7, peak * 5e-6
    expected = [
        start + (peak - start) * s / warm
        if s < warm
        else end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
        for s in range(total)
    ]
    assert [g["lr"] for g in groups] == pytest.approx(expected, rel=1e-12)
    for g in groups:
        assert (g["momentum"], g["nesterov"], g["weight_decay"], g["dampening"]) == (
            0.9,
            True,
            0.0,
            0,
        )
    assert clips == [5.0] * total
    for s in steps:  # label smoothing 0.1 in the criterion
        smoothed = F.cross_entropy(s.logits, s.labels, label_smoothing=0.1)
        assert s.loss == pytest.approx(float(smoothed), rel=1e-6)
        assert s.loss != pytest.approx(float(F.cross_entropy(s.logits, s.labels)), rel=1e-6)
        assert s.backbone_training  # drop-path active while the probe trains
    assert drop_modes.count(True) == 2 * total and False in drop_modes  # val in eval mode


def test_mocov3_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = dataclasses.replace(MOCOV3, epochs=3, batch_size=BATCH)
    steps, groups, clips, _, drop_modes = run_probe(protocol, monkeypatch)
    peak = 3.0 * BATCH / 256
    expected = [peak * 0.5 * (1 + math.cos(math.pi * (s // 4) / 3)) for s in range(12)]
    assert [g["lr"] for g in groups] == pytest.approx(expected, rel=1e-12)
    for g in groups:
        assert (g["momentum"], g["nesterov"], g["weight_decay"]) == (0.9, False, 0.0)
    assert clips == []
    for s in steps:
        assert s.loss == pytest.approx(float(F.cross_entropy(s.logits, s.labels)), rel=1e-6)
        assert not s.backbone_training
    assert drop_modes and not any(drop_modes)


def test_mocov2_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = dataclasses.replace(MOCOV2, epochs=4, batch_size=BATCH, lr_milestones=(1, 3))
    steps, groups, clips, _, drop_modes = run_probe(protocol, monkeypatch)
    peak = 30.0 * BATCH / 256  # 4 steps per epoch: x0.1 from epoch 1, x0.01 from epoch 3
    expected = [peak * {0: 1.0, 1: 0.1, 2: 0.1, 3: 0.01}[s // 4] for s in range(16)]
    assert [g["lr"] for g in groups] == pytest.approx(expected, rel=1e-12)
    for g in groups:
        assert (g["momentum"], g["nesterov"], g["weight_decay"]) == (0.9, False, 0.0)
    assert clips == []
    for s in steps:
        assert s.loss == pytest.approx(float(F.cross_entropy(s.logits, s.labels)), rel=1e-6)
        assert not s.backbone_training
    assert drop_modes and not any(drop_modes)


def test_mocov2_values_follow_main_lincls() -> None:
    assert (MOCOV2.epochs, MOCOV2.batch_size, MOCOV2.base_lr, MOCOV2.lr_reference_batch) == (
        100,
        256,
        30.0,
        256,
    )
    assert (MOCOV2.schedule, MOCOV2.lr_milestones, MOCOV2.lr_decay) == ("multistep", (60, 80), 0.1)
    assert (MOCOV2.momentum, MOCOV2.nesterov, MOCOV2.weight_decay) == (0.9, False, 0.0)
    assert (MOCOV2.mode, MOCOV2.backbone_mode, MOCOV2.head_init) == ("augmented", "eval", "normal")
    assert not MOCOV2.batchnorm and MOCOV2.warmup_epochs == 0 and MOCOV2.clip_grad == 0
    lrs = [MOCOV2.lr_at(epoch * 10, 10, 256) for epoch in (0, 59, 60, 79, 80, 99)]
    assert lrs == pytest.approx([30.0, 30.0, 3.0, 3.0, 0.3, 0.3])
    with pytest.raises(ValueError, match="lr_milestones: the multistep schedule needs at least"):
        LinearProbeSettings(schedule="multistep")
    with pytest.raises(ValueError, match="lr_milestones: expected strictly increasing"):
        dataclasses.replace(MOCOV2, lr_milestones=(80, 60))
    with pytest.raises(ValueError, match="warmup_epochs: the multistep schedule has no warmup"):
        dataclasses.replace(MOCOV2, warmup_epochs=1)


def test_official_probes_resize_bilinearly() -> None:
    for protocol in (SYNCO_V2, MOCOV3, MOCOV2):
        assert protocol.interpolation == "bilinear"  # torchvision's default in their transforms
    assert FAST.interpolation == "bicubic"  # the trainer's evaluation transform


def test_protocol_values_and_knn_defaults() -> None:
    assert set(LINEAR_PROTOCOLS) == {"fast", "synco-v2", "mocov3", "mocov2"}
    assert (SYNCO_V2.epochs, SYNCO_V2.warmup_epochs, SYNCO_V2.base_lr) == (100, 5, 1.0)
    assert (SYNCO_V2.lr_reference_batch, SYNCO_V2.label_smoothing, SYNCO_V2.clip_grad) == (
        512,
        0.1,
        5.0,
    )
    assert (MOCOV3.epochs, MOCOV3.base_lr, MOCOV3.lr_reference_batch, MOCOV3.batch_size) == (
        90,
        3.0,
        256,
        1024,
    )
    assert MOCOV3.head_init == "normal" and MOCOV3.backbone_mode == "eval"
    assert LINEAR_PROTOCOLS["fast"].mode == "cached"
    assert KNN_KS == (10, 20, 100, 200)


def test_fast_is_the_stable_default_probe() -> None:
    assert LINEAR_PROTOCOLS["fast"] == LinearProbeSettings(batch_size=256)
    assert (FAST.base_lr, FAST.nesterov, FAST.batchnorm) == (0.1, True, True)
    assert not SYNCO_V2.batchnorm and not MOCOV3.batchnorm  # the official probes have none


def test_backbone_head_init_is_resolved_for_the_architecture() -> None:
    assert for_arch(SYNCO_V2, "vit_s_mocov3").head_init == "xavier"
    assert for_arch(SYNCO_V2, "deit_s").head_init == "trunc-normal"
    assert for_arch(MOCOV3, "vit_s_mocov3") is MOCOV3
    train, val = loaders()
    with pytest.raises(ValueError, match="head_init: expected normal, xavier or trunc-normal"):
        linear_probe(tiny_vit(), train, val, num_classes=CLASSES, device="cpu", settings=SYNCO_V2)


def test_cli_synco_v2_probe_rebuilds_with_its_drop_path(
    runner: CliRunner, tmp_path: Path, image_folder: tuple[Path, Path]
) -> None:
    train, val = image_folder
    run = tmp_path / "run"
    tiny = ["--arch", "vit_s_mocov3", "--depth", "2", "--embed-dim", "32", "--num-heads", "4"]
    data = ["--dataset", "imagefolder", "--data", str(train), "--val-data", str(val)]
    args = ["run", "--out", str(run), *tiny, *data, "--img-size", "32", "--workers", "0"]
    args += ["--batch-size", "8", "--steps", "1", "--queue-size", "16", "--proj-hidden", "32"]
    res = runner.invoke(app, [*args, "--proj-dim", "16", "--drop-path", "0.0"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "eval",
            "linear",
            str(run),
            "--protocol",
            "synco-v2",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0.5",
            "--batch-size",
            "8",
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "eval_linear.json").read_text())
    assert saved["protocol"] == "synco-v2" and saved["settings"]["nesterov"] is True
    assert saved["settings"]["drop_path"] == 0.2 and saved["backbone_unchanged"] is True
    assert saved["settings"]["head_init"] == "xavier"  # MoCo v3's ViT builds its head so
    assert saved["mode"] == "augmented" and saved["lr"] == pytest.approx(8 / 512)
    from reference_trainer.cli import probe_backbone

    rebuilt, _ = probe_backbone(run, "online", 0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in rebuilt.blocks]  # type: ignore[union-attr]
    assert rates == pytest.approx([0.0, 0.2])  # timm's linear stochastic-depth rule
