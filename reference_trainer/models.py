"""timm backbones with image-size presets, projector/predictor heads and the EMA target.

Backbones are timm ViTs, DeiTs, Swins and ResNets (:mod:`reference_trainer.resnets`: the CIFAR
stem at small sizes, tiny-model overrides).

timm facts this module relies on: ``create_model(name,
num_classes=0)`` returns pooled features; small images need smaller patches (DeiT-S at 32 px:
``patch_size=4``; Swin-T at 32 px: ``patch_size=2, window_size=4``, or its feature map
collapses to 1x1); after an ``img_size`` override ``pretrained_cfg`` still says 224, so the
transforms come from our config, not timm's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import timm
import torch
from torch import Tensor, nn

from .config import TrainConfig
from .errors import ConfigError
from .resnets import create_resnet, is_resnet, resnet_kwargs

#: Short names users type, and the timm models they stand for.
#:
#: * ``deit_s``: timm's DeiT-S (``deit_small_patch16_224``): 6 heads, learned position
#:   embedding, timm's initialisation.
#: * ``vit_s``: timm's ViT-S with 12 heads (the head count of MoCo v3's ViT-S), but timm's
#:   learned position embedding and timm's initialisation (use ``vit_s_mocov3`` for MoCo v3's
#:   network).
#: * ``vit_s_mocov3``: MoCo v3's ViT-S exactly, the "DeiT-S" of SynCo v2 and Syn2Co (see
#:   :func:`mocov3_vit_init`): 12 heads, a fixed 2D sin-cos position embedding, MoCo v3's
#:   initialisation.
ARCH_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "deit_s": ("deit_small_patch16_224", {}),
    "deit_t": ("deit_tiny_patch16_224", {}),
    "vit_s": ("vit_small_patch16_224", {"num_heads": 12}),
    "vit_s_mocov3": ("vit_small_patch16_224", {"num_heads": 12}),
    "vit_t": ("vit_tiny_patch16_224", {}),
    "swin_t": ("swin_tiny_patch4_window7_224", {}),
}

#: Aliases built as MoCo v3 builds its ViTs (:func:`mocov3_vit_init` after timm's constructor).
MOCOV3_ARCHS = frozenset({"vit_s_mocov3"})


@dataclass(frozen=True)
class SizePreset:
    """Patch and window sizes that keep a useful token grid at a given image side."""

    vit_patch: int
    swin_patch: int
    swin_window: int


SIZE_PRESETS: dict[int, SizePreset] = {
    32: SizePreset(vit_patch=4, swin_patch=2, swin_window=4),  # ViT 8x8 tokens; Swin 16-8-4-2
    64: SizePreset(vit_patch=8, swin_patch=4, swin_window=4),  # ViT 8x8; Swin 16-8-4-2
    96: SizePreset(vit_patch=8, swin_patch=4, swin_window=6),  # ViT 12x12; Swin 24-12-6-3
    224: SizePreset(vit_patch=16, swin_patch=4, swin_window=7),  # the published setting
}


def size_preset(img_size: int) -> SizePreset:
    """The preset of the nearest preset size (ties go to the smaller size)."""
    nearest = min(SIZE_PRESETS, key=lambda s: (abs(s - img_size), s))
    return SIZE_PRESETS[nearest]


def timm_name(arch: str) -> tuple[str, dict[str, Any]]:
    """Resolve an alias to a timm model name, checking that timm knows it."""
    name, extra = ARCH_ALIASES.get(arch, (arch, {}))
    if name not in timm.list_models():
        aliases = ", ".join(ARCH_ALIASES)
        raise ConfigError(
            f"--arch: unknown architecture '{arch}'; use one of {aliases}, resnet18, resnet50 "
            "or a timm ViT/Swin/ResNet name"
        )
    if is_resnet(name):
        return name, dict(extra)
    if not is_swin(name) and "vit" not in name and "deit" not in name:
        raise ConfigError(f"--arch: '{arch}' is not a ViT, DeiT, Swin or ResNet model")
    return name, dict(extra)


def is_swin(name: str) -> bool:
    return "swin" in name


def _swin_ok(img: int, patch: int, window: int) -> bool:
    if img % patch:
        return False
    grid = img // patch
    if grid % 8:  # three 2x2 patch merges need an even side at each of the first three stages
        return False
    sides = [grid >> i for i in range(4)]
    # each stage's side a multiple of the window, or at most one window (then timm shrinks it)
    return all(s % window == 0 or s <= window for s in sides) and sides[-1] >= 1


def _vit_ok(img: int, patch: int) -> bool:
    return img % patch == 0 and img // patch >= 2


def check_size(arch: str, img_size: int, patch: int, window: int | None) -> None:
    """Fail before training when the image size does not fit the architecture's grid."""
    name, _ = timm_name(arch)
    if is_resnet(name):
        return  # convolutions and a global pool take any side
    if is_swin(name):
        assert window is not None
        if _swin_ok(img_size, patch, window):
            return
        works = [s for s in range(8, 513, 8) if _swin_ok(s, patch, window)]
        presets = [s for s, p in SIZE_PRESETS.items() if _swin_ok(s, p.swin_patch, p.swin_window)]
        raise ConfigError(
            f"--img-size {img_size} does not fit Swin with patch {patch} and window {window}: "
            f"the side over the patch must be a multiple of 8 and each stage a multiple of the "
            f"window; sizes that work: {_short(works)}; or use a preset size "
            f"({', '.join(map(str, presets))}) without --patch-size/--window-size"
        )
    if not _vit_ok(img_size, patch):
        works = list(range(patch * 2, 513, patch))
        raise ConfigError(
            f"--img-size {img_size} does not fit {arch} with patch {patch}: the side must be a "
            f"multiple of the patch size; sizes that work: {_short(works)}"
        )


def _short(sizes: list[int]) -> str:
    return ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")


def backbone_kwargs(cfg: TrainConfig) -> tuple[str, dict[str, Any]]:
    """The timm model name and ``create_model`` arguments of a config's backbone.

    Checks the image size against the patch (and window) grid first.
    """
    name, kwargs = timm_name(cfg.arch)
    if is_resnet(name):
        return name, kwargs | resnet_kwargs(cfg)
    preset = size_preset(cfg.img_size)
    swin = is_swin(name)
    patch = cfg.patch_size or (preset.swin_patch if swin else preset.vit_patch)
    window = (cfg.window_size or preset.swin_window) if swin else None
    check_size(cfg.arch, cfg.img_size, patch, window)
    kwargs.update(img_size=cfg.img_size, patch_size=patch)
    if swin:
        kwargs["window_size"] = window
        if cfg.depth is not None:
            kwargs["depths"] = [cfg.depth] * 4
        if cfg.num_heads is not None:
            kwargs["num_heads"] = [cfg.num_heads * 2**i for i in range(4)]
    else:
        if cfg.depth is not None:
            kwargs["depth"] = cfg.depth
        if cfg.num_heads is not None:
            kwargs["num_heads"] = cfg.num_heads
    if cfg.embed_dim is not None:
        kwargs["embed_dim"] = cfg.embed_dim
    return name, kwargs


def create_backbone(cfg: TrainConfig, *, drop_path: float | None = None) -> nn.Module:
    """The timm backbone of a config, with pooled features (``num_classes=0``).

    Swin-T gets fused attention (``F.scaled_dot_product_attention``), which timm leaves off by
    default for Swin; a ResNet at small sizes gets the CIFAR stem.
    """
    name, kwargs = backbone_kwargs(cfg)
    rate = cfg.drop_path if drop_path is None else drop_path
    try:
        if is_resnet(name):
            return create_resnet(
                name,
                kwargs,
                img_size=cfg.img_size,
                drop_path=rate or 0.0,
                zero_init_residual=cfg.zero_init_residual,
            )
        model = timm.create_model(
            name, pretrained=False, num_classes=0, drop_path_rate=rate or 0.0, **kwargs
        )
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(
            f"--arch {cfg.arch}: timm could not build it with {kwargs}: {e}"
        ) from None
    for module in model.modules():  # fused attention everywhere (timm's Swin defaults to off)
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", True)  # noqa: B010
    if cfg.arch in MOCOV3_ARCHS:
        mocov3_vit_init(model)
    return model


def sincos_position_embedding(grid: int, dim: int, temperature: float = 10_000.0) -> Tensor:
    """MoCo v3's fixed 2D sin-cos position embedding of a square ``grid x grid`` token grid.

    Token ``r * grid + c`` (row ``r``, column ``c``, timm's row-major order) gets
    ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with ``w_d = temperature ** (-d / (dim / 4))``
    for ``d = 0 .. dim/4 - 1``; the class token's row is zeros. This equals
    ``build_2d_sincos_position_embedding`` of moco-v3 ``vits.py`` (lines 53-69) on square grids:
    its ``meshgrid`` (ij indexing) puts the row index in the half it calls ``w``.

    Args:
        grid: Tokens per side.
        dim: Embedding width, a multiple of 4.
        temperature: Frequency base.

    Returns:
        ``(1, 1 + grid * grid, dim)`` float32.
    """
    if dim % 4:
        raise ConfigError(
            f"--embed-dim {dim}: the 2D sin-cos position embedding needs a multiple of 4"
        )
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (dim/4,)
    coords = torch.arange(grid, dtype=torch.float32)
    rows = coords.repeat_interleave(grid)[:, None] * omega  # (grid^2, dim/4)
    cols = coords.repeat(grid)[:, None] * omega
    tokens = torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), tokens])[None]


@torch.no_grad()
def mocov3_vit_init(model: nn.Module) -> None:
    """Turn a freshly built timm ``VisionTransformer`` into MoCo v3's ViT (moco-v3 ``vits.py``).

    * ``pos_embed``: the fixed 2D sin-cos embedding (:func:`sincos_position_embedding`), kept as
      a parameter (the key timm's state dict expects) with ``requires_grad`` False, as
      ``vits.py:68-69`` does; it is therefore never trained and never decayed.
    * Every ``nn.Linear``: xavier uniform, bias zero; the fused ``qkv`` weight ``(3D, D)`` as
      three separate ``D x D`` matrices, i.e. uniform with bound ``sqrt(6 / (3D/3 + D))``
      (``vits.py:32-40``).
    * ``cls_token``: normal with std 1e-6 (``vits.py:41``).
    * Patch projection: uniform with the xavier bound over its ``3 x p x p`` fan-in and
      ``embed_dim`` fan-out, bias zero (``vits.py:43-47``).

    LayerNorms keep timm's (and PyTorch's) ones and zeros.
    """
    vit: Any = model
    grid = vit.patch_embed.grid_size
    if grid[0] != grid[1] or vit.num_prefix_tokens != 1:
        raise ConfigError("vit_s_mocov3: needs a square patch grid and one class token")
    pos = sincos_position_embedding(grid[0], vit.embed_dim)
    vit.pos_embed.copy_(pos)
    vit.pos_embed.requires_grad_(False)
    for name, module in vit.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:
                bound = math.sqrt(6.0 / (module.weight.shape[0] // 3 + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(vit.cls_token, std=1e-6)
    proj = vit.patch_embed.proj
    fan_in = proj.weight.shape[1] * proj.weight.shape[2] * proj.weight.shape[3]
    bound = math.sqrt(6.0 / (fan_in + vit.embed_dim))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)


def feature_dim(backbone: nn.Module) -> int:
    return int(cast(Any, backbone).num_features)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Backbone then projector: the part the target network copies by EMA."""

    def __init__(
        self, backbone: nn.Module, projector: nn.Module, *, views_share_batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        # A backbone without batch statistics gives the same features for one pass over all
        # views as for a pass per view: one pass is then taken, as it is faster.
        self.one_pass = views_share_batch_norm or not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()
        )

    def forward(self, views: tuple[Tensor, ...]) -> list[Tensor]:
        """Each view of shape (B, 3, H, W) -> its projection (B, D).

        A transformer backbone (LayerNorm, attention within each image) runs once on all views,
        which equals separate passes. A batch-norm backbone (a ResNet) runs once per view, so
        that each view is its own batch-norm batch as in MoCo v3's and MoBY's code, unless the
        method's views share their batch norm (``views_share_batch_norm``: SimCLR). The
        projector's BatchNorm always sees each view's batch separately.
        """
        if self.one_pass:
            feats = self.backbone(torch.cat(views)).chunk(len(views))
        else:
            feats = tuple(self.backbone(v) for v in views)
        return [self.projector(f) for f in feats]


class OnlineNetwork(nn.Module):
    """Encoder plus the method's predictor (identity for methods without one): the trained
    branch."""

    def __init__(self, encoder: Encoder, predictor: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor if predictor is not None else nn.Identity()

    def forward(self, *views: Tensor) -> tuple[Tensor, ...]:
        """Each view (B, 3, H, W) -> its prediction (B, D)."""
        return tuple(self.predictor(z) for z in self.encoder(views))


@contextlib.contextmanager
def frozen_batch_norm_statistics(*modules: nn.Module | None) -> Iterator[None]:
    """Within the block, forward passes leave the running statistics (and the counts of
    tracked batches) of every batch norm in ``modules`` as they were."""
    norms = [
        m
        for module in modules
        if module is not None
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    saved = [[b.clone() for b in _statistics(m)] for m in norms]
    try:
        yield
    finally:
        # Through ``.data``: the restore must not bump the buffers' version counters, which
        # the backward of batch norm in training mode records (without reading the values).
        for m, values in zip(norms, saved, strict=True):
            for buffer, value in zip(_statistics(m), values, strict=True):
                buffer.data.copy_(value)


def _statistics(norm: nn.modules.batchnorm._BatchNorm) -> list[Tensor]:
    buffers = (norm.running_mean, norm.running_var, norm.num_batches_tracked)
    return [b for b in buffers if b is not None]


def set_drop_path(module: nn.Module, rate: float) -> None:
    """Set the rate of every drop-path layer of ``module`` (timm's ``DropPath``)."""
    for m in module.modules():
        if type(m).__name__ == "DropPath":
            m.drop_prob = rate  # type: ignore[assignment]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` over matching parameters."""
    t_params: list[Tensor] = list(target.parameters())
    o_params: list[Tensor] = list(online.parameters())
    if len(t_params) != len(o_params):
        raise RuntimeError("ema_update: target and online networks have different parameters")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)


def parameter_groups(
    model: nn.Module, weight_decay: float, *, exclude: str = "1d+no-weight-decay"
) -> list[dict[str, Any]]:
    """Optimizer groups: decayed parameters, then parameters without weight decay.

    Args:
        model: The network; frozen parameters (``requires_grad`` False) are left out.
        weight_decay: Decay of the first group.
        exclude: Which parameters get no decay:

            * ``"1d"``: biases and every other parameter with ``ndim <= 1`` (norm weights), as
              the SynCo v2 and MoBY code does (synco-v2 ``src/optim/optimizer.py:106-116``: its
              ``no_weight_decay`` lookup is on the whole SSL model, which has none, so only
              the 1-D rule applies; a ViT's class token and a Swin's relative position tables
              are decayed);
            * ``"1d+no-weight-decay"``: also the names the backbone lists in timm's
              ``no_weight_decay()`` (position embeddings, class token, relative position
              tables);
            * ``"none"``: every parameter is decayed, as MoCo v3 does (moco-v3
              ``main_moco.py:229-230``: ``AdamW(model.parameters(), ...)``).

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest,
        "weight_decay": 0.0}]``.
    """
    if exclude not in ("1d", "1d+no-weight-decay", "none"):
        raise ConfigError(
            f"--weight-decay-exclude: expected 1d, 1d+no-weight-decay or none, got {exclude!r}"
        )
    skip: set[str] = set()
    if exclude == "1d+no-weight-decay":
        for prefix, module in model.named_modules():
            fn = getattr(module, "no_weight_decay", None)
            if callable(fn):
                skip |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = exclude != "none" and (p.ndim <= 1 or name in skip)
        (no_decay if excluded else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP and torch.compile wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner
