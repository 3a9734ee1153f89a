"""Two-view augmentation, evaluation transforms, dataset wrappers, collates.

**Named pipelines** (``--augmentation``, :data:`AUGMENTATIONS`): each is an
:class:`AugmentationConfig` per image side, with every parameter of each view explicit, and is
run the same way by the CPU path (:class:`TwoViewTransform`, in DataLoader workers) and the GPU
path (:class:`~reference_trainer.data.gpu_augment.GpuTwoViewAugment`). A method's preset names
its pipeline; a recipe names the one of the paper it reproduces.

* ``byol``: BYOL's asymmetric pair, as MoBY, SynCo v2 and MoCo v3 use it: both views take a
  random resized crop (scale 0.08-1 at 224 px), a horizontal flip, colour jitter
  (0.4, 0.4, 0.2, 0.1) with probability 0.8 and grayscale with probability 0.2; view 1 is always
  blurred and never solarized, view 2 is blurred with probability 0.1 and solarized with
  probability 0.2.
* ``mocov2``: MoCo v2's "aug-plus", the same for both views (SynCo v1 and MoCo v2): crop scale
  0.2-1, jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale 0.2, blur with probability
  0.5, no solarize, the flip after the colour operations (as its code orders them).
* ``simclr``: SimCLR's at strength 1: crop scale 0.08-1, flip, jitter (0.8, 0.8, 0.8, 0.2) with
  probability 0.8, grayscale 0.2, blur with probability 0.5 on both views, no solarize.
* ``simclr-cifar``: SimCLR's CIFAR-10 setting (its README's command: ``--color_jitter_strength
  0.5 --use_blur False``): jitter (0.4, 0.4, 0.4, 0.1), no blur, otherwise as ``simclr``.

All are normalized with the ImageNet mean and std, and all scale to the image side as
:meth:`AugmentationConfig.for_size` does for ``byol``: the blur kernel is the odd integer nearest
10% of the side (23 at 224, 3 at 32) and the blur sigma range scales with the side ((0.1, 2.0) at
224); ``byol``'s minimum crop scale grows from 0.08 at 224 to 0.2 at 32, the others keep their
published scale at every side.

Reproducibility: the augmentation draws its random parameters from torch's global RNG in the
process that runs it, i.e. in each DataLoader worker, in the order of the view's operations
(the order of torchvision's own transforms: a test checks that the same seed gives the same
draws and pixels as torchvision's composition of each pipeline). PyTorch seeds worker ``w`` with
``base_seed + w``, where ``base_seed`` is drawn from the DataLoader's ``generator`` when an
iterator is created (each epoch, unless ``persistent_workers``). Runs and resumes therefore
repeat the same augmentations only when the engine passes a generator seeded from the run seed
and the epoch (:func:`loader_generator`) and keeps the number of workers; :func:`seed_worker`
additionally seeds Python's ``random`` and NumPy's legacy global RNG from that seed for any
third-party transform that uses them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from reference_trainer.data.base import LoadedImage
from reference_trainer.data.rgb import to_rgb
from syn2co.seeds import derive_seed

__all__ = [
    "AUGMENTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentationConfig",
    "AugmentationPipeline",
    "EvalBatch",
    "EvalDataset",
    "EvalSample",
    "RandomGaussianBlur",
    "TwoViewBatch",
    "TwoViewDataset",
    "TwoViewSample",
    "TwoViewTransform",
    "augmentation_config",
    "collate_eval",
    "collate_two_views",
    "eval_crop_fraction",
    "eval_resize_side",
    "eval_transform",
    "loader_generator",
    "seed_worker",
    "view_transform",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Minimum RandomResizedCrop scale per preset image side; other sides interpolate in log2(side).
_CROP_SCALE_MIN: dict[int, float] = {32: 0.2, 64: 0.14, 96: 0.12, 224: 0.08}
_BLUR_SIGMA_AT_224: tuple[float, float] = (0.1, 2.0)

Pair = tuple[float, float]


def _odd_kernel(img_size: int) -> int:
    """The odd integer nearest 10% of ``img_size``, at least 3."""
    return max(3, 2 * round((0.1 * img_size - 1) / 2) + 1)


def _crop_scale_min(img_size: int) -> float:
    sizes = sorted(_CROP_SCALE_MIN)
    if img_size <= sizes[0]:
        return _CROP_SCALE_MIN[sizes[0]]
    if img_size >= sizes[-1]:
        return _CROP_SCALE_MIN[sizes[-1]]
    for lo, hi in itertools.pairwise(sizes):
        if lo <= img_size <= hi:
            t = (math.log2(img_size) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
            return round(_CROP_SCALE_MIN[lo] + t * (_CROP_SCALE_MIN[hi] - _CROP_SCALE_MIN[lo]), 4)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_probability(name: str, values: Pair) -> None:
    if len(values) != 2 or not all(0.0 <= p <= 1.0 for p in values):
        raise ValueError(
            f"{name} must be two probabilities in [0, 1] (view 1, view 2), got {values}"
        )


@dataclass(frozen=True)
class AugmentationConfig:
    """All parameters of the two-view augmentation (frozen; build it with :meth:`for_size`).

    Probabilities are pairs ``(view 1, view 2)``.

    Attributes:
        img_size: Output side of both views, in pixels.
        crop_scale: RandomResizedCrop area range ``(min, max)`` as fractions of the image.
        crop_ratio: RandomResizedCrop aspect-ratio range.
        hflip_p: Horizontal-flip probability per view.
        jitter: ColorJitter (brightness, contrast, saturation, hue) strengths.
        jitter_p: Probability per view of applying the colour jitter.
        grayscale_p: Grayscale probability per view.
        blur_kernel: Gaussian-blur kernel size (odd).
        blur_sigma: Gaussian-blur sigma range, in pixels of the output view.
        blur_p: Blur probability per view (BYOL: 1.0, 0.1).
        solarize_p: Solarize probability per view (BYOL: 0.0, 0.2).
        solarize_threshold: Pixels at or above it (uint8 scale) are inverted.
        mean: Normalization mean per channel.
        std: Normalization std per channel.
        flip_last: Flip after the colour operations (MoCo v2's and MoCo v3's code) instead of
            right after the crop (BYOL's, MoBY's and SimCLR's). The flip commutes with every
            other operation, so only the order of the random draws differs (the GPU path folds
            the flip into the crop either way).
    """

    img_size: int
    crop_scale: Pair = (0.08, 1.0)
    crop_ratio: Pair = (3 / 4, 4 / 3)
    hflip_p: Pair = (0.5, 0.5)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: Pair = (0.8, 0.8)
    grayscale_p: Pair = (0.2, 0.2)
    blur_kernel: int = 23
    blur_sigma: Pair = _BLUR_SIGMA_AT_224
    blur_p: Pair = (1.0, 0.1)
    solarize_p: Pair = (0.0, 0.2)
    solarize_threshold: int = 128
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    flip_last: bool = False

    def __post_init__(self) -> None:
        if self.img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {self.img_size}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            _check_probability(name, getattr(self, name))
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 strengths >= 0 with hue <= 0.5, got {self.jitter}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")
        if not 0 <= self.solarize_threshold <= 255:
            raise ValueError(
                f"solarize_threshold must be in [0, 255], got {self.solarize_threshold}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 channels with std > 0: {self.mean}, {self.std}")

    def describe(self, view: int) -> str:
        """One view's parameters in one line, in the order the CPU path applies them."""
        if view not in (0, 1):
            raise ValueError(f"view must be 0 or 1, got {view}")
        lo, hi = self.crop_scale
        flip = f"flip p {self.hflip_p[view]:g}"
        jitter = ", ".join(f"{x:g}" for x in self.jitter)
        parts = [f"crop {self.img_size} px scale {lo:g}-{hi:g}"]
        if not self.flip_last:
            parts.append(flip)
        parts += [
            f"jitter ({jitter}) p {self.jitter_p[view]:g}",
            f"grayscale p {self.grayscale_p[view]:g}",
            f"blur p {self.blur_p[view]:g} (kernel {self.blur_kernel}, sigma "
            f"{self.blur_sigma[0]:g}-{self.blur_sigma[1]:g})",
            f"solarize p {self.solarize_p[view]:g}",
        ]
        if self.flip_last:
            parts.append(flip)
        return ", ".join(parts)

    @classmethod
    def for_size(cls, img_size: int, **overrides: Any) -> AugmentationConfig:
        """The BYOL / MoCo v3 / MoBY recipe scaled to ``img_size``.

        Presets: minimum crop scale 0.2 / 0.14 / 0.12 / 0.08 at 32 / 64 / 96 / 224 px
        (interpolated in log2 of the side between them, constant outside); blur kernel the odd
        integer nearest ``0.1 * img_size`` (at least 3); blur sigma ``(0.1, 2.0) * img_size / 224``.

        Args:
            img_size: Output side in pixels.
            **overrides: Any field to set explicitly (e.g. ``solarize_p=(0.0, 0.0)``).

        Returns:
            The configuration.
        """
        factor = img_size / 224
        preset = cls(
            img_size=img_size,
            crop_scale=(_crop_scale_min(img_size), 1.0),
            blur_kernel=_odd_kernel(img_size),
            blur_sigma=(
                round(_BLUR_SIGMA_AT_224[0] * factor, 4),
                round(_BLUR_SIGMA_AT_224[1] * factor, 4),
            ),
        )
        return replace(preset, **overrides) if overrides else preset


@dataclass(frozen=True)
class AugmentationPipeline:
    """A named two-view augmentation (``--augmentation NAME``).

    Attributes:
        name: What ``--augmentation`` takes.
        summary: One line: what it is and who uses it.
        source: Where its values come from (the official code, file and line).
        overrides: The fields that differ from ``byol``'s :meth:`AugmentationConfig.for_size`
            at every image side.
    """

    name: str
    summary: str
    source: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def config(self, img_size: int) -> AugmentationConfig:
        """The pipeline's parameters at an image side."""
        return AugmentationConfig.for_size(img_size, **self.overrides)


_NO_SOLARIZE: Pair = (0.0, 0.0)

#: The named pipelines, by ``--augmentation`` name.
AUGMENTATIONS: dict[str, AugmentationPipeline] = {
    p.name: p
    for p in (
        AugmentationPipeline(
            "byol",
            "BYOL's asymmetric pair: blur 1.0 / 0.1, solarize 0 / 0.2, jitter (0.4, 0.4, 0.2, "
            "0.1) (MoBY, SynCo v2, MoCo v3)",
            "synco-v2 src/data/transform.py:72-104 (MoBY: Transformer-SSL data/build.py:97-117; "
            "MoCo v3 main_moco.py:262-285 flips last)",
        ),
        AugmentationPipeline(
            "mocov2",
            "MoCo v2's aug-plus for both views: crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1), blur "
            "0.5, no solarize, flip last (MoCo v2, SynCo v1)",
            "synco main_synco.py:248-256",
            {
                "crop_scale": (0.2, 1.0),
                "jitter": (0.4, 0.4, 0.4, 0.1),
                "blur_p": (0.5, 0.5),
                "solarize_p": _NO_SOLARIZE,
                "flip_last": True,
            },
        ),
        AugmentationPipeline(
            "simclr",
            "SimCLR's at strength 1 for both views: crop 0.08-1, jitter (0.8, 0.8, 0.8, 0.2), "
            "blur 0.5, no solarize",
            "google-research/simclr data_util.py:61-83 (strength 1.0: run.py:239-241), "
            "304-325, 387-394, 397-444, 469-474",
            {
                "crop_scale": (0.08, 1.0),
                "jitter": (0.8, 0.8, 0.8, 0.2),
                "blur_p": (0.5, 0.5),
                "solarize_p": _NO_SOLARIZE,
            },
        ),
        AugmentationPipeline(
            "simclr-cifar",
            "SimCLR's CIFAR-10 setting for both views: crop 0.08-1, jitter strength 0.5 (0.4, "
            "0.4, 0.4, 0.1), no blur, no solarize",
            "google-research/simclr README.md:78-85 (--color_jitter_strength=0.5 "
            "--use_blur=False), data_util.py:61-83, 304-325, 387-394, 469-474",
            {
                "crop_scale": (0.08, 1.0),
                "jitter": (0.4, 0.4, 0.4, 0.1),
                "blur_p": (0.0, 0.0),
                "solarize_p": _NO_SOLARIZE,
            },
        ),
    )
}


def augmentation_config(name: str, img_size: int) -> AugmentationConfig:
    """The parameters of the named pipeline ``name`` (:data:`AUGMENTATIONS`) at ``img_size``.

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    try:
        pipeline = AUGMENTATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}"
        ) from None
    return pipeline.config(img_size)


class RandomGaussianBlur:
    """Gaussian blur with probability ``p`` and a sigma drawn uniformly from ``sigma``.

    Same kernel as torchvision's ``GaussianBlur`` (``kernel`` taps, truncated and normalized,
    reflect padding, rounded back to uint8), computed separably with NumPy on PIL images: about
    3x faster than torchvision's tensor path at 32 px and 5x at 224 px on one CPU thread
    (PIL's own ``ImageFilter.GaussianBlur`` is a box approximation that differs by up to 15-50
    grey levels for some sigmas). Tensors go through torchvision's kernel. Random numbers come
    from torch's global RNG.

    Note that with :meth:`AugmentationConfig.for_size` the sigma range scales with the image
    (``(0.1, 2.0) * S / 224``), so at 32 px (sigma <= 0.29 px) the blur barely changes a pixel:
    the same relative blur as at 224 px, and close to the common practice of no blur on
    CIFAR-sized images. Set ``blur_sigma`` explicitly for a stronger blur.

    Args:
        kernel: Odd kernel size.
        sigma: ``(min, max)`` standard deviation in pixels.
        p: Probability of blurring.
    """

    def __init__(self, kernel: int, sigma: Pair, p: float = 1.0) -> None:
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
        self.kernel = kernel
        self.sigma = sigma
        self.p = p

    def __call__(self, image: Any) -> Any:
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return image
        lo, hi = self.sigma
        sigma = float(torch.empty(()).uniform_(lo, hi).item()) if hi > lo else lo
        if isinstance(image, Image.Image):
            return _blur_pil(image, self.kernel, sigma)
        return v2.functional.gaussian_blur(image, [self.kernel, self.kernel], [sigma, sigma])

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(kernel={self.kernel}, sigma={self.sigma}, p={self.p})"


def _gaussian_taps(kernel: int, sigma: float) -> npt.NDArray[np.float32]:
    half = (kernel - 1) / 2
    x = np.linspace(-half, half, kernel, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    taps: npt.NDArray[np.float32] = (w / w.sum()).astype(np.float32)
    return taps


def _blur_pil(image: Image.Image, kernel: int, sigma: float) -> Image.Image:
    """Separable Gaussian blur of an RGB/L PIL image, reflect padding, rounded back to uint8."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    half = kernel // 2
    h, w = pixels.shape[:2]
    if half >= min(h, w):  # reflect padding needs a larger image
        return image
    taps = _gaussian_taps(kernel, sigma)
    centre = float(taps[half])
    if (1.0 - centre * centre) * 255.0 < 0.49:  # no pixel can change after rounding
        return image
    padded = np.pad(pixels, ((half, half), (half, half), (0, 0)), mode="reflect")
    rows = taps[0] * padded[:, :w]
    for k in range(1, kernel):
        rows += taps[k] * padded[:, k : k + w]
    out = taps[0] * rows[:h]
    for k in range(1, kernel):
        out += taps[k] * rows[k : k + h]
    result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if image.mode == "L":
        return Image.fromarray(result[..., 0], "L")
    return Image.fromarray(result, image.mode)


def view_transform(cfg: AugmentationConfig, view: int) -> v2.Compose:
    """The augmentation pipeline of one view (``view`` is 0 or 1).

    Takes an RGB ``PIL.Image`` (the fast path: crop, flip, jitter, grayscale, blur and solarize
    run on PIL images) or a uint8 tensor ``(3, H, W)``, and returns a float32 tensor
    ``(3, S, S)``, ``S = cfg.img_size``, normalized with ``cfg.mean`` / ``cfg.std``.
    """
    if view not in (0, 1):
        raise ValueError(f"view must be 0 or 1, got {view}")
    steps: list[Callable[..., Any]] = [
        v2.RandomResizedCrop(
            cfg.img_size,
            scale=cfg.crop_scale,
            ratio=cfg.crop_ratio,
            interpolation=v2.InterpolationMode.BILINEAR,
            antialias=True,
        ),
    ]
    flip: list[Callable[..., Any]] = []
    if cfg.hflip_p[view] > 0:
        flip.append(v2.RandomHorizontalFlip(p=cfg.hflip_p[view]))
    if not cfg.flip_last:
        steps += flip
    if cfg.jitter_p[view] > 0 and any(cfg.jitter):
        brightness, contrast, saturation, hue = cfg.jitter
        jitter = v2.ColorJitter(brightness, contrast, saturation, hue)
        steps.append(v2.RandomApply([jitter], p=cfg.jitter_p[view]))
    if cfg.grayscale_p[view] > 0:
        steps.append(v2.RandomGrayscale(p=cfg.grayscale_p[view]))
    if cfg.blur_p[view] > 0:
        steps.append(RandomGaussianBlur(cfg.blur_kernel, cfg.blur_sigma, cfg.blur_p[view]))
    if cfg.solarize_p[view] > 0:
        steps.append(v2.RandomSolarize(cfg.solarize_threshold, p=cfg.solarize_p[view]))
    if cfg.flip_last:
        steps += flip
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(cfg.mean), list(cfg.std)),
    ]
    return v2.Compose(steps)


def _plain(x: Any) -> Tensor:
    """Strip torchvision's TVTensor subclass so that collates and models see plain tensors."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a tensor from the transform, got {type(x).__name__}")
    return x.as_subclass(Tensor)


class TwoViewTransform:
    """Callable: an image -> two independently augmented views (view 1, then view 2).

    Args:
        cfg: The augmentation parameters; ``AugmentationConfig.for_size(img_size)`` by default
            when an int is given.

    Call:
        image: ``PIL.Image`` (RGB) or uint8 tensor ``(3, H, W)``.

    Returns:
        ``(view1, view2)``, float32 tensors ``(3, S, S)`` with ``S = cfg.img_size``.
    """

    def __init__(self, cfg: AugmentationConfig | int) -> None:
        self.cfg = cfg if isinstance(cfg, AugmentationConfig) else AugmentationConfig.for_size(cfg)
        self.view1 = view_transform(self.cfg, 0)
        self.view2 = view_transform(self.cfg, 1)

    def __call__(self, image: Image.Image | Tensor) -> tuple[Tensor, Tensor]:
        return _plain(self.view1(image)), _plain(self.view2(image))

    def __repr__(self) -> str:
        return f"TwoViewTransform({self.cfg})"


def eval_crop_fraction(img_size: int) -> float:
    """The default crop fraction of :func:`eval_transform`: 0.875 above 96 px, else 1.0."""
    return 0.875 if img_size > 96 else 1.0


def eval_resize_side(img_size: int, crop_fraction: float | None = None) -> int:
    """The shorter side :func:`eval_transform` resizes to before its ``S x S`` center crop.

    Args:
        img_size: Output side ``S``, >= 1.
        crop_fraction: In (0, 1]; default :func:`eval_crop_fraction`.

    Returns:
        ``round(S / crop_fraction)``.
    """
    if img_size < 1:
        raise ValueError(f"img_size must be >= 1, got {img_size}")
    if crop_fraction is None:
        crop_fraction = eval_crop_fraction(img_size)
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    return round(img_size / crop_fraction)


def eval_transform(
    img_size: int,
    *,
    crop_fraction: float | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Deterministic evaluation transform: resize, center crop, normalize.

    Args:
        img_size: Output side ``S``.
        crop_fraction: The shorter side is resized to ``round(S / crop_fraction)`` before the
            ``S x S`` center crop. Default: 0.875 (the ImageNet convention, 256 -> 224) for
            ``S > 96``, else 1.0 (tiny images are resized to ``S`` and only cropped to square).
        mean: Normalization mean.
        std: Normalization std.

    Returns:
        A callable: ``PIL.Image`` or uint8 tensor -> float32 tensor ``(3, S, S)``.
    """
    resize_side = eval_resize_side(img_size, crop_fraction)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize_side, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


# --------------------------------------------------------------------------------------------
# Dataset wrappers and collates
# --------------------------------------------------------------------------------------------


def _unpack(item: Any) -> tuple[Image.Image | Tensor, int, tuple[str, ...], int]:
    """Read a dataset item as ``(image, label, skipped, source)``.

    Accepted items: a :class:`LoadedImage`; ``(LoadedImage, source)`` as tagged by
    ``syn2co.samplers.MixedDataset`` (0 real, 1 synthetic); a plain ``(image, label)`` pair
    (e.g. a torchvision dataset); or ``((image, label), source)``.
    """
    source = 0
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], tuple)
        and not isinstance(item, LoadedImage)
    ):
        item, source = item[0], int(item[1])
    if isinstance(item, LoadedImage):
        return to_rgb(item.image), int(item.label), tuple(item.skipped), source
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        skipped = tuple(item[2]) if len(item) == 3 else ()
        image = to_rgb(item[0]) if isinstance(item[0], Image.Image) else item[0]
        return image, int(item[1]), skipped, source
    raise TypeError(
        "expected a LoadedImage, (LoadedImage, source) or (image, label) item, "
        f"got {type(item).__name__}"
    )


def _length(base: Dataset[Any]) -> int:
    if not isinstance(base, Sized):
        raise TypeError(f"the base dataset must define __len__, got {type(base).__name__}")
    return len(base)


class TwoViewSample(NamedTuple):
    """One pretraining item: two views ``(3, S, S)``, label, skipped paths, source (0 real)."""

    view1: Tensor
    view2: Tensor
    label: int
    skipped: tuple[str, ...] = ()
    source: int = 0


class TwoViewBatch(NamedTuple):
    """A collated pretraining batch.

    Attributes:
        view1: float32 ``(B, 3, S, S)``.
        view2: float32 ``(B, 3, S, S)``.
        labels: int64 ``(B,)`` (``-1`` for unlabelled items).
        skipped: Paths of unreadable files substituted in this batch (usually empty).
        sources: int64 ``(B,)``: 0 real, 1 synthetic (zeros when the dataset is untagged).
    """

    view1: Tensor
    view2: Tensor
    labels: Tensor
    skipped: list[str]
    sources: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TwoViewBatch:
        """The batch with its tensors on ``device``."""
        return TwoViewBatch(
            self.view1.to(device, non_blocking=non_blocking),
            self.view2.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.skipped,
            self.sources.to(device, non_blocking=non_blocking),
        )


class TwoViewDataset(Dataset[TwoViewSample]):
    """Wrap a dataset so that each item becomes two augmented views.

    Args:
        base: A dataset of :class:`LoadedImage` items, of ``(LoadedImage, source)`` items
            (``syn2co.samplers.MixedDataset``), or of plain ``(image, label)`` pairs.
        transform: Image -> ``(view1, view2)``, usually a :class:`TwoViewTransform`.

    Items are :class:`TwoViewSample` ``(view1, view2, label, skipped, source)``.
    """

    def __init__(
        self,
        base: Dataset[Any],
        transform: Callable[[Image.Image | Tensor], tuple[Tensor, Tensor]],
    ) -> None:
        self.base = base
        self.transform = transform
        self._len = _length(base)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> TwoViewSample:
        image, label, skipped, source = _unpack(self.base[index])
        view1, view2 = self.transform(image)
        return TwoViewSample(view1, view2, label, skipped, source)


def collate_two_views(batch: Sequence[TwoViewSample]) -> TwoViewBatch:
    """Stack :class:`TwoViewSample` items into a :class:`TwoViewBatch`.

    Args:
        batch: ``B >= 1`` samples with views of equal shape ``(3, S, S)``.

    Returns:
        ``TwoViewBatch(view1 (B,3,S,S), view2 (B,3,S,S), labels (B,), skipped, sources (B,))``.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return TwoViewBatch(
        view1=torch.stack([s.view1 for s in batch]),
        view2=torch.stack([s.view2 for s in batch]),
        labels=torch.tensor([s.label for s in batch], dtype=torch.long),
        skipped=[p for s in batch for p in s.skipped],
        sources=torch.tensor([s.source for s in batch], dtype=torch.long),
    )


class EvalSample(NamedTuple):
    """One evaluation item: image ``(3, S, S)``, label, skipped paths, source (0 real)."""

    image: Tensor
    label: int
    skipped: tuple[str, ...] = ()
    source: int = 0


class EvalBatch(NamedTuple):
    """A collated evaluation batch.

    Attributes:
        images: float32 ``(B, 3, S, S)``.
        labels: int64 ``(B,)``.
        skipped: Paths of unreadable files substituted in this batch.
        sources: int64 ``(B,)`` (zeros when untagged).
    """

    images: Tensor
    labels: Tensor
    skipped: list[str]
    sources: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EvalBatch:
        """The batch with its tensors on ``device``."""
        return EvalBatch(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.skipped,
            self.sources.to(device, non_blocking=non_blocking),
        )


class EvalDataset(Dataset[EvalSample]):
    """Wrap a dataset with a deterministic transform (see :func:`eval_transform`).

    Args:
        base: Same item formats as :class:`TwoViewDataset`.
        transform: Image -> tensor ``(3, S, S)``.
    """

    def __init__(
        self, base: Dataset[Any], transform: Callable[[Image.Image | Tensor], Any]
    ) -> None:
        self.base = base
        self.transform = transform
        self._len = _length(base)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> EvalSample:
        image, label, skipped, source = _unpack(self.base[index])
        return EvalSample(_plain(self.transform(image)), label, skipped, source)


def collate_eval(batch: Sequence[EvalSample]) -> EvalBatch:
    """Stack :class:`EvalSample` items into an :class:`EvalBatch` (``images (B, 3, S, S)``)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return EvalBatch(
        images=torch.stack([s.image for s in batch]),
        labels=torch.tensor([s.label for s in batch], dtype=torch.long),
        skipped=[p for s in batch for p in s.skipped],
        sources=torch.tensor([s.source for s in batch], dtype=torch.long),
    )


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's global RNGs like torch's.

    PyTorch already seeds each worker's torch RNG (which the augmentation uses) with
    ``base_seed + worker_id``; this makes ``random`` and ``numpy.random`` follow the same seed.
    """
    del worker_id  # torch.initial_seed() already includes it
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  # legacy global RNG, for third-party transforms


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """A generator for ``DataLoader(generator=...)`` fixing shuffling and worker seeds.

    The DataLoader draws the workers' base seed (and a ``RandomSampler``'s permutation) from
    it, so the same ``(seed, epoch)`` reproduces the epoch's augmentations.
    """
    return torch.Generator().manual_seed(derive_seed("loader", int(seed), int(epoch)))
