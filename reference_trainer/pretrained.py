"""Pretrained backbones out of a run: for evaluation, and exported for timm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from . import checkpoint as ckpt
from .config import TrainConfig
from .errors import ConfigError
from .methods import get_method
from .models import backbone_kwargs, build_networks, create_backbone

Branch = Literal["online", "target"]


def load_run(run: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The resolved config and the checkpoint of a run directory (or checkpoint file)."""
    state = ckpt.load(run, map_location="cpu")
    return TrainConfig.from_dict(state["config"]), state


def load_backbone(run: str | Path, branch: Branch = "online") -> tuple[nn.Module, TrainConfig]:
    """The pretrained backbone of a run, on the CPU, in eval mode.

    Args:
        run: Run directory or checkpoint file.
        branch: ``online`` (the trained encoder, the usual choice) or ``target`` (its EMA).
    """
    cfg, state = load_run(run)
    torch.manual_seed(cfg.seed)
    online, target = build_networks(cfg, get_method(cfg.method))
    if branch == "online":
        online.load_state_dict(state["online"])
        backbone = online.encoder.backbone
    else:
        if target is None or state.get("target") is None:
            raise ConfigError(f"--branch target: the {cfg.method} run has no momentum target")
        target.load_state_dict(state["target"])
        backbone = target.backbone
    return backbone.eval(), cfg


def random_backbone(cfg: TrainConfig) -> nn.Module:
    """The same architecture at the run's random initialisation (the kNN baseline)."""
    torch.manual_seed(cfg.seed)
    return create_backbone(cfg).eval()


def timm_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that rebuild a run's backbone."""
    name, kwargs = backbone_kwargs(cfg)
    return {"model_name": name, **kwargs}


def export(run: str | Path, out: str | Path, *, branch: Branch = "online") -> tuple[Path, Path]:
    """Write the backbone as safetensors plus a JSON file with the timm arguments.

    Load it with::

        kwargs = json.load(open("backbone.json"))["timm_kwargs"]
        model = timm.create_model(**kwargs, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file="backbone.safetensors"))
    """
    backbone, cfg = load_backbone(run, branch)
    out_path = Path(out)
    if out_path.suffix != ".safetensors":
        out_path = out_path.with_suffix(".safetensors")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "arch": cfg.arch, "branch": branch})
    tmp.replace(out_path)
    meta = out_path.with_suffix(".json")
    meta.write_text(
        json.dumps(
            {
                "timm_kwargs": timm_kwargs(cfg),
                "branch": branch,
                "method": cfg.method,
                "negatives": cfg.negatives,
                "source_run": str(run),
            },
            indent=2,
        )
        + "\n"
    )
    return out_path, meta
