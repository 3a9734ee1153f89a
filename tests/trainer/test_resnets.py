"""timm ResNet backbones: the CIFAR stem at small sizes, tiny overrides, options, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from typer.testing import CliRunner

from reference_trainer.build import build_networks
from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import ConfigError
from reference_trainer.models import create_backbone, feature_dim
from reference_trainer.pretrained import load_backbone, load_exported
from reference_trainer.resolve import resolve

from .conftest import TINY_RESNET, tiny_run


def resnet(img_size: int, **extra: object) -> nn.Module:
    cfg = TrainConfig.from_dict({"arch": "resnet18", "img_size": img_size, **extra})
    torch.manual_seed(0)
    return create_backbone(cfg)


def test_cifar_stem_at_32_px_and_imagenet_stem_above() -> None:
    small, large = resnet(32), resnet(64)
    conv = small.conv1
    assert isinstance(conv, nn.Conv2d)
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == (
        (3, 3),
        (1, 1),
        (1, 1),
        None,
    )
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    x = torch.randn(2, 3, 32, 32)
    # The CIFAR stem keeps the resolution: the last stage sees 4x4 instead of 1x1.
    assert small.forward_features(x).shape[-2:] == (4, 4)
    assert large.forward_features(x).shape[-2:] == (1, 1)
    assert small(x).shape == (2, 512) == (2, feature_dim(small))


def test_tiny_overrides_set_blocks_and_widths() -> None:
    model = resnet(32, depth=1, embed_dim=8)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert [getattr(model, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [
        8,
        16,
        32,
        64,
    ]
    assert feature_dim(model) == 64


def test_presets_leave_transformer_settings_off_for_resnets() -> None:
    for method in ("moby", "mocov3"):
        r = resolve(TrainConfig(arch="resnet18", method=method), train_size=1000)
        assert r.config.drop_path == 0.0 and r.config.freeze_patch_embed is False
    vit = resolve(TrainConfig(arch="deit_s", method="mocov3"), train_size=1000)
    assert vit.config.drop_path == 0.1 and vit.config.freeze_patch_embed is True


@pytest.mark.parametrize(
    ("option", "value"),
    [("patch_size", 4), ("window_size", 4), ("num_heads", 2), ("freeze_patch_embed", True)],
)
def test_transformer_options_are_refused(option: str, value: object) -> None:
    cfg = TrainConfig.from_dict({"arch": "resnet18", option: value})
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')}: resnet18 is a ResNet"):
        resolve(cfg, train_size=100)


def test_refusal_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*tiny_run(out, arch=TINY_RESNET), "--patch-size", "4"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: --patch-size: resnet18")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("img_size", [32, 64])
def test_export_rebuilds_the_backbone_with_timm(tmp_path: Path, img_size: int) -> None:
    run = tmp_path / "run"
    args = tiny_run(run, "--method", "mocov3", "--steps", "2", arch=TINY_RESNET)
    args[args.index("--img-size") + 1] = str(img_size)
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["export", str(run)])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "backbone.json").read_text())
    backbone, _ = load_backbone(run)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        expected = backbone(x)
        if img_size <= 32:  # the CIFAR stem: the JSON's code rebuilds it with timm alone
            assert meta["stem"] == "cifar"
            namespace: dict[str, object] = {}
            exec(meta["load"], namespace)  # the documented recipe, run as a user would
            rebuilt = namespace["model"]
            assert isinstance(rebuilt, nn.Module)
            assert torch.allclose(rebuilt.eval()(x), expected, atol=1e-6)
            assert "model.maxpool = torch.nn.Identity()" in result.output
        else:  # the ImageNet stem: timm's arguments alone
            assert "stem" not in meta
            rebuilt = timm.create_model(
                **meta["timm_kwargs"],
                pretrained=True,
                num_classes=0,
                pretrained_cfg_overlay={"file": str(run / "backbone.safetensors")},
            ).eval()
            assert torch.allclose(rebuilt(x), expected, atol=1e-6)
        assert torch.allclose(load_exported(run / "backbone.json")(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "arch", "per_view"),
    [
        ("mocov3", "resnet18", True),  # MoCo v3's and MoBY's code: one batch-norm batch per view
        ("moby", "resnet18", True),
        ("simclr", "resnet18", False),  # SimCLR's code: both views in one batch
        ("moby", "deit_s", False),  # no batch statistics: one pass, the same features
    ],
)
def test_which_views_share_the_backbones_batch_norm(method: str, arch: str, per_view: bool) -> None:
    overrides = {"depth": 1, "embed_dim": 8 if arch == "resnet18" else 32, "img_size": 32}
    if arch == "deit_s":
        overrides |= {"num_heads": 2, "drop_path": 0.0}
    cfg = TrainConfig.from_dict({"arch": arch, "method": method, **overrides})
    resolved = resolve(cfg, train_size=100)
    torch.manual_seed(0)
    online, _ = build_networks(resolved.config, resolved.method, resolved.method_settings())
    encoder = online.encoder.train()
    torch.manual_seed(1)
    # views with different statistics, so that shared and separate batch norm differ
    views = (torch.randn(4, 3, 32, 32), 3.0 * torch.randn(4, 3, 32, 32) + 1.0)
    backbone = encoder.backbone
    with torch.no_grad():
        got = torch.cat(encoder(views))
        separate = torch.cat([encoder.projector(backbone(v)) for v in views])
        joint = torch.cat([encoder.projector(f) for f in backbone(torch.cat(views)).chunk(2)])
    assert encoder.one_pass is not per_view
    torch.testing.assert_close(got, separate if per_view else joint, rtol=0, atol=0)
    if arch == "resnet18":
        assert not torch.allclose(separate, joint, atol=1e-3)  # the choice matters for a ResNet
    else:
        torch.testing.assert_close(separate, joint, rtol=1e-5, atol=1e-5)
