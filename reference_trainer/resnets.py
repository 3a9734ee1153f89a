"""timm ResNets as backbones, with the CIFAR stem at small image sizes.

At 32 px, ImageNet's stem (a 7x7 convolution of stride 2, then a 3x3 max-pool of stride 2)
leaves an 8x8 map for the first stage and 1x1 for the last. SimCLR's released code swaps it
for a 3x3 convolution of stride 1 without the max-pool when the image side is at most 32
(``cifar_stem=FLAGS.image_size <= 32`` in google-research/simclr's ``run.py``), and solo-learn
does the same for CIFAR; so does :func:`create_resnet` at sides up to
:data:`CIFAR_STEM_MAX_SIZE`.

timm's ``ResNet`` has no argument for that stem (its ``stem_type`` options are deeper stems of
stride 2), so the stem is swapped after creation: ``conv1`` becomes one 3x3 convolution of
stride 1 to the stem width and ``maxpool`` an identity. A model exported from such a run is
rebuilt with the same two lines after ``timm.create_model`` (:func:`rebuild_code` writes them
out; :func:`reference_trainer.pretrained.load_exported` runs them).

Size overrides for tiny models: ``--depth`` sets the blocks of every stage (timm's ``layers``)
and ``--embed-dim`` the width of the first stage, doubling per stage (timm's ``channels``).
Patches, windows and heads do not exist in a ResNet; those options are refused.
``--zero-init-residual`` chooses whether the last batch norm of each residual block starts at
zero (timm's default and SimCLR's code) or at one (torchvision's default, which MoCo v2's and
SynCo v1's code train from).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from .config import TrainConfig

__all__ = [
    "CIFAR_STEM_MAX_SIZE",
    "TRANSFORMER_ONLY_OPTIONS",
    "apply_cifar_stem",
    "create_resnet",
    "is_resnet",
    "rebuild_code",
    "resnet_kwargs",
    "uses_cifar_stem",
]

#: The largest image side that gets the CIFAR stem (SimCLR's rule: 32 px and below).
CIFAR_STEM_MAX_SIZE = 32

#: Options that only apply to ViT and Swin backbones.
TRANSFORMER_ONLY_OPTIONS = ("patch_size", "window_size", "num_heads", "freeze_patch_embed")


def is_resnet(arch: str) -> bool:
    """Whether ``arch`` names a model of timm's ResNet family (resnet18, resnet50, ...)."""
    return arch in timm.list_models(module="resnet")


def uses_cifar_stem(img_size: int) -> bool:
    """Whether a ResNet at this image side gets the CIFAR stem."""
    return img_size <= CIFAR_STEM_MAX_SIZE


def resnet_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ``timm.create_model`` arguments of a ResNet config (its size overrides)."""
    kwargs: dict[str, Any] = {}
    if cfg.depth is not None:
        kwargs["layers"] = (cfg.depth,) * 4
    if cfg.embed_dim is not None:
        kwargs["channels"] = tuple(cfg.embed_dim * 2**i for i in range(4))
    return kwargs


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """Swap a timm ResNet's stem for the CIFAR stem, in place: ``conv1`` becomes a 3x3
    convolution of stride 1 (padding 1, no bias) to the stem width, ``maxpool`` an identity.

    The new convolution is initialised as timm initialises its convolutions (Kaiming normal,
    fan-out, ReLU gain), from the global torch RNG.
    """
    stem_width = int(model.bn1.num_features)  # type: ignore[union-attr,arg-type]
    conv = nn.Conv2d(3, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()
    return model


def create_resnet(
    name: str,
    kwargs: dict[str, Any],
    *,
    img_size: int,
    drop_path: float,
    zero_init_residual: bool | None = None,
) -> nn.Module:
    """A timm ResNet with pooled features, with the CIFAR stem at small sizes.

    Args:
        name: The timm model name.
        kwargs: Further ``timm.create_model`` arguments (:func:`resnet_kwargs`).
        img_size: The image side (the CIFAR stem at :data:`CIFAR_STEM_MAX_SIZE` and below).
        drop_path: Stochastic depth rate.
        zero_init_residual: Zero-initialise the last batch norm of every residual block
            (timm's ``zero_init_last``; None: timm's default, on). Off is torchvision's
            default initialisation, otherwise the same (Kaiming normal convolutions, fan-out;
            batch norms at weight 1, bias 0).
    """
    extra: dict[str, Any] = {}
    if zero_init_residual is not None:
        extra["zero_init_last"] = zero_init_residual
    model = timm.create_model(
        name, pretrained=False, num_classes=0, drop_path_rate=drop_path, **kwargs, **extra
    )
    if uses_cifar_stem(img_size):
        apply_cifar_stem(model)
    return model


def rebuild_code(kwargs: dict[str, Any], weights: str) -> str:
    """Python that rebuilds an exported CIFAR-stem ResNet with timm alone and loads its weights.

    Args:
        kwargs: The ``timm.create_model`` arguments (``model_name`` included).
        weights: The exported ``.safetensors`` file.
    """
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (
        "import timm, torch\n"
        "from safetensors.torch import load_file\n"
        f"model = timm.create_model({args}, num_classes=0)\n"
        "model.conv1 = torch.nn.Conv2d(3, model.bn1.num_features, kernel_size=3, stride=1, "
        "padding=1, bias=False)\n"
        "model.maxpool = torch.nn.Identity()\n"
        f"model.load_state_dict(load_file({weights!r}))\n"
    )
