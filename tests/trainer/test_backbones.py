"""MoCo v3's ViT-S (``--arch vit_s_mocov3``): heads, fixed sin-cos positions, initialisation,
and its export to timm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from reference_trainer.config import TrainConfig
from reference_trainer.models import create_backbone, parameter_groups

from .conftest import TINY_DATA

FULL = TrainConfig(arch="vit_s_mocov3", img_size=224)


def plain_sincos(grid: int, dim: int) -> list[list[float]]:
    """MoCo v3's 2D sin-cos table written out element by element (class token first)."""
    quarter = dim // 4
    rows = [[0.0] * dim]
    for r in range(grid):
        for c in range(grid):
            row = []
            for fn, coord in ((math.sin, r), (math.cos, r), (math.sin, c), (math.cos, c)):
                row += [fn(coord / 10_000 ** (d / quarter)) for d in range(quarter)]
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def vit_s() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone(FULL)


def test_vit_s_mocov3_is_moco_v3_vit_small(vit_s: torch.nn.Module) -> None:
    m: timm.models.VisionTransformer = vit_s  # type: ignore[assignment]
    assert m.embed_dim == 384 and len(m.blocks) == 12
    assert m.blocks[0].attn.num_heads == 12  # timm's DeiT-S has 6
    assert m.patch_embed.proj.kernel_size == (16, 16)
    assert m.blocks[0].attn.qkv.bias is not None  # qkv_bias=True
    assert m.norm.eps == 1e-6
    assert timm.create_model("deit_small_patch16_224").blocks[0].attn.num_heads == 6


def test_position_embedding_is_the_fixed_sincos_table(vit_s: torch.nn.Module) -> None:
    pos = vit_s.pos_embed  # type: ignore[union-attr]
    assert not pos.requires_grad
    expected = torch.tensor(plain_sincos(14, 384), dtype=torch.float32)[None]
    assert pos.shape == expected.shape == (1, 197, 384)
    torch.testing.assert_close(pos.detach(), expected, atol=1e-6, rtol=0)


def test_init_statistics_match_moco_v3(vit_s: torch.nn.Module) -> None:
    m: timm.models.VisionTransformer = vit_s  # type: ignore[assignment]
    d = 384
    # q, k and v are three D x D xavier matrices: U(-a, a), a = sqrt(6 / 2D), std a / sqrt(3)
    qkv = torch.cat([blk.attn.qkv.weight.detach() for blk in m.blocks], dim=1)  # (3D, 12 D)
    bound = math.sqrt(6 / (d + d))
    for third in qkv.chunk(3, dim=0):
        assert third.abs().max() <= bound
        assert abs(third.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    # xavier over the fused (3D, D) matrix would stay within sqrt(6 / 4D)
    assert qkv.abs().max() > math.sqrt(6 / (3 * d + d))
    # MLP: xavier over (fan_in + fan_out)
    fc1 = torch.cat([blk.mlp.fc1.weight.detach().flatten() for blk in m.blocks])
    fc1_bound = math.sqrt(6 / (d + 4 * d))
    assert abs(fc1.std().item() - fc1_bound / math.sqrt(3)) < 0.01 * fc1_bound
    assert all(blk.mlp.fc1.bias.abs().max() == 0 for blk in m.blocks)
    # patch projection: xavier over the 3 x 16 x 16 fan-in and 384 fan-out
    proj = m.patch_embed.proj.weight.detach()
    proj_bound = math.sqrt(6 / (3 * 16 * 16 + d))
    assert proj.abs().max() <= proj_bound
    assert abs(proj.std().item() - proj_bound / math.sqrt(3)) < 0.02 * proj_bound
    assert m.patch_embed.proj.bias.abs().max() == 0
    # class token ~ N(0, 1e-6)
    assert 0.5e-6 < m.cls_token.std().item() < 1.5e-6


def test_position_embedding_is_not_trained() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(arch="vit_s_mocov3", img_size=32, depth=1, embed_dim=32, num_heads=4)
    model = create_backbone(cfg)
    before = model.pos_embed.detach().clone()  # type: ignore[union-attr]
    groups = parameter_groups(model, 0.05)
    assert all(p is not model.pos_embed for g in groups for p in g["params"])
    opt = torch.optim.AdamW(groups, lr=0.1)
    model(torch.randn(4, 3, 32, 32)).pow(2).sum().backward()
    opt.step()
    assert model.pos_embed.grad is None  # type: ignore[union-attr]
    assert torch.equal(model.pos_embed, before)  # type: ignore[union-attr]
    assert model.blocks[0].attn.num_heads == 4  # type: ignore[union-attr,index]


def test_export_loads_into_the_printed_timm_model(
    runner: object, tmp_path: Path, image_folder: tuple[Path, Path]
) -> None:
    from typer.testing import CliRunner

    from reference_trainer.cli import app

    cli: CliRunner = runner  # type: ignore[assignment]
    out = tmp_path / "run"
    tiny = ["--arch", "vit_s_mocov3", "--depth", "1", "--embed-dim", "32", "--num-heads", "4"]
    heads = ["--proj-hidden", "64", "--proj-dim", "32", "--queue-size", "64"]
    short = ["--batch-size", "16", "--steps", "2", "--log-every", "1"]
    res = cli.invoke(app, ["run", "--out", str(out), *tiny, *heads, *TINY_DATA, *short])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["export", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "backbone.json").read_text())
    kwargs = meta["timm_kwargs"]
    assert kwargs["num_heads"] == 4 and meta["fixed_pos_embed"] is True
    model = timm.create_model(
        **kwargs,
        pretrained=True,
        num_classes=0,
        pretrained_cfg_overlay={"file": str(out / "backbone.safetensors")},
    )
    weights = load_file(str(out / "backbone.safetensors"))
    torch.testing.assert_close(model.pos_embed.detach(), weights["pos_embed"])
    expected = torch.tensor(plain_sincos(8, 32), dtype=torch.float32)[None]
    torch.testing.assert_close(weights["pos_embed"], expected, atol=1e-6, rtol=0)
    from reference_trainer.pretrained import load_backbone

    ours, _ = load_backbone(out)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), ours(x))
