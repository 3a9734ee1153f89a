"""Pretrained backbones out of a run: for evaluation, and exported for timm."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from . import checkpoint as ckpt
from .atomic import write_atomic
from .build import build_networks
from .config import TrainConfig
from .data.transforms import AugmentationConfig, eval_crop_fraction, eval_resize_side
from .errors import ConfigError
from .methods import get_method
from .models import MOCOV3_ARCHS, backbone_kwargs, create_backbone
from .resnets import apply_cifar_stem, is_resnet, rebuild_code, uses_cifar_stem
from .resolve import method_settings
from .seeds import Stream, stream_seed

Branch = Literal["online", "target"]


def load_run(run: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The resolved config and the checkpoint of a run directory (or checkpoint file), read
    safely (:func:`reference_trainer.checkpoint.load`: checksums verified, tensors and plain
    values only)."""
    state = ckpt.load(run, map_location="cpu", role="RUN")
    return TrainConfig.from_dict(state["config"], source=f"{run} (its config)"), state


def load_backbone(run: str | Path, branch: Branch = "online") -> tuple[nn.Module, TrainConfig]:
    """The pretrained backbone of a run, on the CPU, in eval mode.

    Args:
        run: Run directory or checkpoint file.
        branch: ``online`` (the trained encoder, the usual choice) or ``target`` (its EMA).
    """
    cfg, state = load_run(run)
    torch.manual_seed(stream_seed(cfg.seed, Stream.WEIGHTS))  # the run's initial weights
    online, target = build_networks(cfg, get_method(cfg.method), method_settings(cfg, None))
    try:
        if branch == "online":
            online.load_state_dict(state["online"])
            backbone = online.encoder.backbone
        else:
            if target is None or not isinstance(state.get("target"), dict):
                raise ConfigError(f"--branch target: the {cfg.method} run has no momentum target")
            target.load_state_dict(state["target"])
            backbone = target.backbone
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ckpt.CheckpointError(
            f"{ckpt.find_checkpoint(run, role='RUN')}: its {branch} weights do not fit its "
            f"config ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
        ) from None
    bad = ckpt.nonfinite(backbone.state_dict().items())
    if bad is not None:
        raise ckpt.CheckpointError(
            f"{ckpt.find_checkpoint(run, role='RUN')}: the {branch} backbone holds NaN or "
            f"infinite values ({bad}); refused: use a checkpoint written before the run diverged"
        )
    return backbone.eval(), cfg


def random_backbone(cfg: TrainConfig) -> nn.Module:
    """The same architecture at the run's random initialisation (the kNN baseline)."""
    torch.manual_seed(stream_seed(cfg.seed, Stream.WEIGHTS))  # the run's initial weights
    return create_backbone(cfg).eval()


def timm_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that rebuild a run's backbone."""
    name, kwargs = backbone_kwargs(cfg)
    return {"model_name": name, **kwargs}


def timm_crop_pct(img_size: int) -> float:
    """A timm ``crop_pct`` whose eval transform resizes exactly as the trainer's does.

    timm resizes the shorter side to ``floor(S / crop_pct)``, the trainer to
    ``round(S / crop_fraction)`` (:func:`~reference_trainer.data.transforms.eval_resize_side`);
    the trainer's own fraction is used when it gives the same side (224 px: 0.875), else
    ``S / (side + 0.5)``, which floors to that side without rounding trouble.
    """
    side = eval_resize_side(img_size)
    fraction = eval_crop_fraction(img_size)
    if math.floor(img_size / fraction) == side:
        return fraction
    return img_size / (side + 0.5)


def pretrained_cfg(cfg: TrainConfig) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` entries of a run's data: what
    ``timm.data.resolve_data_config`` turns into the trainer's evaluation transform (resize
    the shorter side bicubically, center crop ``S x S``, normalise with the training mean/std).
    """
    augmentation = AugmentationConfig.for_size(cfg.img_size)
    return {
        "input_size": (3, cfg.img_size, cfg.img_size),
        "interpolation": "bicubic",
        "crop_pct": timm_crop_pct(cfg.img_size),
        "crop_mode": "center",
        "mean": tuple(augmentation.mean),
        "std": tuple(augmentation.std),
        "num_classes": 0,
    }


def export_paths(out: str | Path) -> tuple[Path, Path]:
    """The weights (``.safetensors``) and description (``.json``) files of an export to ``out``
    (an existing folder gets ``backbone.safetensors`` inside it)."""
    weights = Path(out)
    if weights.is_dir():
        weights = weights / "backbone.safetensors"
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    return weights, weights.with_suffix(".json")


def cifar_stem(cfg: TrainConfig) -> bool:
    """Whether a run's backbone is a ResNet with the CIFAR stem, which timm's arguments alone
    do not rebuild."""
    return is_resnet(backbone_kwargs(cfg)[0]) and uses_cifar_stem(cfg.img_size)


def export(run: str | Path, out: str | Path, *, branch: Branch = "online") -> tuple[Path, Path]:
    """Write the backbone as safetensors plus a JSON file with the timm arguments and the
    ``pretrained_cfg`` of the run's data (both files also carry them in their metadata).

    Load it with::

        meta = json.load(open("backbone.json"))
        model = timm.create_model(**meta["timm_kwargs"], pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file="backbone.safetensors",
                                                              **meta["pretrained_cfg"]))
        data_config = timm.data.resolve_data_config({}, model=model)  # the run's transform

    A ResNet with the CIFAR stem (``"stem": "cifar"`` in the JSON) needs its stem swapped after
    ``timm.create_model`` and before the weights load: the JSON's ``"load"`` entry holds the
    Python that does it with timm alone, and :func:`load_exported` does the same.

    Both files are written atomically; the checkpoint is only read.

    Returns:
        The paths of the weights and of the JSON file.
    """
    backbone, cfg = load_backbone(run, branch)
    weights, meta = export_paths(out)
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    kwargs = timm_kwargs(cfg)
    data_cfg = pretrained_cfg(cfg)
    blob = safetensors_bytes(
        tensors,
        metadata={
            "format": "pt",
            "arch": cfg.arch,
            "branch": branch,
            "timm_kwargs": json.dumps(kwargs),
            "pretrained_cfg": json.dumps(data_cfg),
        },
    )
    description = {
        "timm_kwargs": kwargs,
        **(
            {"stem": "cifar", "load": rebuild_code(kwargs, str(weights))} if cifar_stem(cfg) else {}
        ),
        "pretrained_cfg": data_cfg,
        "branch": branch,
        "method": cfg.method,
        "negatives": cfg.negatives,
        # MoCo v3's ViT: pos_embed holds the fixed sin-cos table; timm loads it into its
        # learned pos_embed (same key and shape), which fine-tuning would then train.
        "fixed_pos_embed": cfg.arch in MOCOV3_ARCHS,
        "source_run": str(run),
    }
    text = json.dumps(description, indent=2) + "\n"
    write_atomic(weights, lambda f: f.write(blob), sync_dir=False, size=len(blob) + len(text))
    write_atomic(meta, lambda f: f.write(text.encode()), size=len(text))
    return weights, meta


def timm_snippet(meta: str | Path) -> str:
    """The ``timm.create_model(...)`` call that loads an export, with every value spelled out
    (for a CIFAR-stem ResNet: the lines that rebuild it, from the JSON's ``"load"``)."""
    description = json.loads(Path(meta).read_text())
    if "load" in description:
        return "\n" + str(description["load"])
    weights = Path(meta).with_suffix(".safetensors")
    args = ", ".join(f"{k}={v!r}" for k, v in description["timm_kwargs"].items())
    overlay = ", ".join(
        f"{k}={tuple(v) if isinstance(v, list) else v!r}"
        for k, v in description["pretrained_cfg"].items()
    )
    return (
        f"timm.create_model({args}, pretrained=True, num_classes=0, "
        f"pretrained_cfg_overlay=dict(file={str(weights)!r}, {overlay}))"
    )


def load_exported(meta: str | Path) -> nn.Module:
    """The backbone written by :func:`export`, from its JSON file, with timm (eval mode).

    Builds ``timm.create_model(**timm_kwargs, num_classes=0)``, swaps in the CIFAR stem when
    the JSON says ``"stem": "cifar"``, and loads the ``.safetensors`` file next to the JSON.
    """
    meta_path = Path(meta)
    info = json.loads(meta_path.read_text())
    model = timm.create_model(**info["timm_kwargs"], num_classes=0)
    if info.get("stem") == "cifar":
        apply_cifar_stem(model)
    model.load_state_dict(load_file(str(meta_path.with_suffix(".safetensors"))))
    return model.eval()
