"""The two-view augmentation, batched on a device tensor.

:class:`GpuTwoViewAugment` computes the same augmentation as
:class:`~reference_trainer.data.transforms.TwoViewTransform` (random resized crop, horizontal
flip, colour jitter with probability, grayscale, Gaussian blur, solarization, normalization,
with the per-view probabilities of :class:`AugmentationConfig`: any named pipeline of
:data:`~reference_trainer.data.transforms.AUGMENTATIONS`) for a whole batch at once, on the
device that holds the images. The flip is folded into the crop; it commutes with every other
operation, so a pipeline that flips last (``flip_last``) gives the same views. Every sample
gets its own random parameters; no pixel arithmetic loops over the batch.

**Random parameters.** :func:`sample_view_params` draws every parameter of a batch from an
explicit CPU ``torch.Generator`` (one ``torch.rand((B, 36), dtype=float64)`` call per view,
view 1 first; the column layout is fixed, so the stream does not depend on the probabilities),
and returns them as a :class:`ViewParams` of CPU tensors. Sampling on the CPU makes the
parameters identical on every device (a test on CPU tensors checks what CUDA runs), and lets
the host know without any device synchronization which samples need the expensive operations
(hue, blur): those run on the selected samples only. Seed the generator per step (see
:func:`reference_trainer.data.gpu_loader.batch_seed`) and a step is reproducible, which keeps
resume exact.

**Operations and how they match torchvision** (``torchvision.transforms.v2.functional`` on
float32 images in [0, 1], see ``tests/trainer/test_gpu_augment.py``):

* random resized crop: boxes sampled as ``RandomResizedCrop.get_params`` does (area fraction
  uniform in ``crop_scale``, log aspect ratio uniform in ``crop_ratio``, 10 trials, then the
  centre-crop fallback), vectorized over the batch and the trials. The crop and the resize to
  ``S x S`` are one separable filter with exactly torch's antialiased bilinear weights
  (``interpolate(mode="bilinear", antialias=True)``, PIL's algorithm, also used when
  upscaling), gathered from all images at once: :func:`resized_crop` (works on images of
  different sizes; the horizontal flip is folded into the filter). Equal to
  ``resized_crop(..., antialias=True)`` within float rounding (about 1e-6).
* colour jitter: brightness, contrast, saturation, hue factors as ``ColorJitter`` samples
  them, applied with probability ``jitter_p`` in a random order per sample (what v2's
  ``ColorJitter`` does, one ``randperm(4)`` per image; ``jitter_order="fixed"`` uses
  brightness, contrast, saturation, hue). Brightness, contrast and saturation are one
  blend per position (``a * x + g * gray(x) + m * mean(gray(x))``, clamped); the hue rotation
  is torchvision's HSV round trip, run only on the samples whose hue step is at that position.
* grayscale (ITU-R 601-2 luma, 3 channels), Gaussian blur (torchvision's kernel, reflect
  padding, separable grouped convolution with one kernel per sample), solarization (pixels
  ``>= solarize_threshold / 255`` inverted), normalization.

Differences from the CPU path: the CPU path runs on PIL images and rounds to uint8 after every
operation; here everything after the crop is float32, so pixel values differ by the CPU path's
rounding (up to a few grey levels after several operations), not in distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_trainer.data.transforms import AugmentationConfig

__all__ = [
    "AugmentedViews",
    "GpuTwoViewAugment",
    "JitterOrder",
    "ViewParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "gaussian_blur",
    "grayscale",
    "image_sizes",
    "normalize",
    "resized_crop",
    "sample_view_params",
    "solarize",
]

JitterOrder = Literal["random", "fixed"]

#: Uniform draws per sample and view (columns of one ``torch.rand`` call, see ViewParams).
_DRAWS = 36
_TRIALS = 10  # RandomResizedCrop's attempts before the centre-crop fallback
_LUMA = (0.2989, 0.587, 0.114)

# Column layout of the per-view uniform draws.
_C_SCALE = slice(0, 10)
_C_RATIO = slice(10, 20)
_C_TOP, _C_LEFT, _C_FLIP, _C_JITTER = 20, 21, 22, 23
_C_FACTORS = slice(24, 28)  # brightness, contrast, saturation, hue
_C_ORDER = slice(28, 32)
_C_GRAY, _C_BLUR, _C_SIGMA, _C_SOLARIZE = 32, 33, 34, 35


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one view for a batch of ``B`` images (CPU tensors).

    Attributes:
        top: int64 ``(B,)``: crop box top row, in source pixels.
        left: int64 ``(B,)``: crop box left column.
        height: int64 ``(B,)``: crop box height (>= 1).
        width: int64 ``(B,)``: crop box width (>= 1).
        flip: bool ``(B,)``: flip horizontally (after the crop).
        jitter: bool ``(B,)``: apply the colour jitter.
        brightness: float64 ``(B,)``: brightness factor (used when ``jitter``).
        contrast: float64 ``(B,)``: contrast factor.
        saturation: float64 ``(B,)``: saturation factor.
        hue: float64 ``(B,)``: hue shift in turns, in ``[-jitter[3], jitter[3]]``.
        order: int64 ``(B, 4)``: jitter order per sample, a permutation of 0 brightness,
            1 contrast, 2 saturation, 3 hue.
        grayscale: bool ``(B,)``: convert to grayscale (after the jitter).
        blur: bool ``(B,)``: Gaussian blur.
        sigma: float64 ``(B,)``: blur standard deviation in output pixels.
        solarize: bool ``(B,)``: solarize.
    """

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor
    grayscale: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor

    def __len__(self) -> int:
        return int(self.top.shape[0])

    @staticmethod
    def cat(parts: Sequence[ViewParams]) -> ViewParams:
        """The parameters of several batches, concatenated along the batch dimension."""
        return ViewParams(
            *(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(ViewParams))
        )

    def select(self, index: Tensor | slice) -> ViewParams:
        """The parameters of the samples ``index`` (an index tensor, mask or slice)."""
        return ViewParams(*(getattr(self, f.name)[index] for f in fields(ViewParams)))


def _factor_range(strength: float, centre: float = 1.0) -> tuple[float, float]:
    return max(0.0, centre - strength), centre + strength


def _sample_boxes(
    sizes: Tensor, u: Tensor, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RandomResizedCrop boxes for images of ``sizes`` (B, 2) from uniforms ``u`` (B, 22)."""
    height = sizes[:, 0].to(torch.float64)
    width = sizes[:, 1].to(torch.float64)
    area = height * width
    target = area[:, None] * (scale[0] + (scale[1] - scale[0]) * u[:, _C_SCALE])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, _C_RATIO])
    # torch.round rounds half to even, like Python's round() in torchvision
    w_try = torch.round(torch.sqrt(target * aspect))
    h_try = torch.round(torch.sqrt(target / aspect))
    ok = (w_try > 0) & (w_try <= width[:, None]) & (h_try > 0) & (h_try <= height[:, None])
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first accepted trial
    found = ok.any(dim=1)
    h = h_try.gather(1, first).squeeze(1)
    w = w_try.gather(1, first).squeeze(1)
    top = torch.minimum(torch.floor(u[:, _C_TOP] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, _C_LEFT] * (width - w + 1)), width - w)
    # torchvision's fallback: the largest centred box within the ratio range
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    fw = torch.where(wide, torch.round(height * max(ratio)), width)
    fh = torch.where(narrow, torch.round(width / min(ratio)), height)
    ftop = torch.floor((height - fh) / 2)
    fleft = torch.floor((width - fw) / 2)
    boxes = [
        torch.where(found, a, b).to(torch.int64)
        for a, b in ((top, ftop), (left, fleft), (h, fh), (w, fw))
    ]
    return boxes[0], boxes[1], boxes[2], boxes[3]


def sample_view_params(
    cfg: AugmentationConfig,
    view: int,
    sizes: Tensor,
    generator: torch.Generator | None = None,
    *,
    jitter_order: JitterOrder = "random",
) -> ViewParams:
    """Draw one view's random parameters for a batch of images.

    One ``torch.rand((B, 36), dtype=float64, generator=generator)`` call; columns: 0-9 crop
    area fractions, 10-19 log aspect ratios (the 10 RandomResizedCrop trials), 20-21 crop
    offsets, 22 flip, 23 jitter, 24-27 brightness / contrast / saturation / hue, 28-31 jitter
    order keys (argsort: a uniform random permutation), 32 grayscale, 33 blur, 34 sigma,
    35 solarize. An event of probability ``p`` happens when its uniform is ``< p``.

    Args:
        cfg: The augmentation configuration.
        view: 0 (view 1) or 1 (view 2): selects the per-view probabilities.
        sizes: int ``(B, 2)``: ``(height, width)`` of each source image.
        generator: CPU generator to draw from (torch's default generator when None).
        jitter_order: ``"random"`` (a permutation per sample, like v2's ``ColorJitter``) or
            ``"fixed"`` (brightness, contrast, saturation, hue).

    Returns:
        The parameters, CPU tensors of batch size ``B``.
    """
    if view not in (0, 1):
        raise ValueError(f"view must be 0 or 1, got {view}")
    sizes = torch.as_tensor(sizes, dtype=torch.int64).reshape(-1, 2)
    if bool((sizes < 1).any()):
        raise ValueError("image sizes must be positive")
    n = int(sizes.shape[0])
    u = torch.rand((n, _DRAWS), generator=generator, dtype=torch.float64)
    top, left, height, width = _sample_boxes(sizes, u, cfg.crop_scale, cfg.crop_ratio)
    factors = u[:, _C_FACTORS]
    b_lo, b_hi = _factor_range(cfg.jitter[0])
    c_lo, c_hi = _factor_range(cfg.jitter[1])
    s_lo, s_hi = _factor_range(cfg.jitter[2])
    hue = cfg.jitter[3]
    if jitter_order == "random":
        order = torch.argsort(u[:, _C_ORDER], dim=1)
    elif jitter_order == "fixed":
        order = torch.arange(4).expand(n, 4).clone()
    else:
        raise ValueError(f"jitter_order must be 'random' or 'fixed', got {jitter_order!r}")
    sig_lo, sig_hi = cfg.blur_sigma
    return ViewParams(
        top=top,
        left=left,
        height=height,
        width=width,
        flip=u[:, _C_FLIP] < cfg.hflip_p[view],
        jitter=(u[:, _C_JITTER] < cfg.jitter_p[view]) & (max(cfg.jitter) > 0),
        brightness=b_lo + (b_hi - b_lo) * factors[:, 0],
        contrast=c_lo + (c_hi - c_lo) * factors[:, 1],
        saturation=s_lo + (s_hi - s_lo) * factors[:, 2],
        hue=-hue + 2 * hue * factors[:, 3],
        order=order,
        grayscale=u[:, _C_GRAY] < cfg.grayscale_p[view],
        blur=u[:, _C_BLUR] < cfg.blur_p[view],
        sigma=sig_lo + (sig_hi - sig_lo) * u[:, _C_SIGMA],
        solarize=u[:, _C_SOLARIZE] < cfg.solarize_p[view],
    )


# --------------------------------------------------------------------------------------------
# Random resized crop of images of any sizes: one separable antialiased filter
# --------------------------------------------------------------------------------------------


def image_sizes(images: Tensor | Sequence[Tensor]) -> Tensor:
    """``(height, width)`` of each image as an int64 CPU tensor ``(N, 2)`` (no device sync)."""
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected a (N, C, H, W) batch, got shape {tuple(images.shape)}")
        return torch.tensor([[images.shape[2], images.shape[3]]] * images.shape[0]).reshape(-1, 2)
    return torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], dtype=torch.int64).reshape(
        -1, 2
    )


def _taps(in_size: Tensor, out_size: int) -> Tensor:
    """An upper bound of the filter taps per output pixel: ``ceil(2 * max(in/out, 1)) + 1``."""
    return torch.clamp((2 * in_size + out_size - 1) // out_size, min=2) + 1


def _aa_weights(in_size: Tensor, out_size: int, taps: int) -> tuple[Tensor, Tensor]:
    """Torch's antialiased bilinear filter (``_compute_indices_min_size_weights_aa``).

    Args:
        in_size: int64 ``(M,)`` input lengths (on the device).
        out_size: Output length ``S``.
        taps: Taps to return (at least the largest needed).

    Returns:
        ``(start (M, S) int64, weights (M, S, taps) float32)``: output pixel ``i`` is
        ``sum_k weights[i, k] * input[start[i] + k]`` (weights past the filter's end are 0).
    """
    size = in_size.to(torch.float32)[:, None]
    scale = size / out_size
    support = torch.clamp(scale, min=1.0)
    invscale = 1.0 / support
    centre = scale * (torch.arange(out_size, device=in_size.device, dtype=torch.float32) + 0.5)
    start = torch.clamp(torch.floor(centre - support + 0.5), min=0.0)
    stop = torch.minimum(torch.floor(centre + support + 0.5), size)
    k = torch.arange(taps, device=in_size.device, dtype=torch.float32)
    x = (k + start[..., None] - centre[..., None] + 0.5) * invscale[..., None]
    w = torch.clamp(1.0 - x.abs(), min=0.0) * (k < (stop - start)[..., None])
    total = w.sum(dim=-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    return start.to(torch.int64), w


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """Copy a small CPU tensor to ``device`` without blocking the host (pinned on CUDA)."""
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def resized_crop(
    images: Tensor | Sequence[Tensor],
    top: Tensor,
    left: Tensor,
    height: Tensor,
    width: Tensor,
    size: int,
    *,
    flip: Tensor | None = None,
    image_index: Tensor | None = None,
) -> Tensor:
    """Crop boxes out of a batch of images and resize them to ``size x size``, all at once.

    Equivalent, box by box, to ``v2.functional.resized_crop(image, top, left, height, width,
    [size, size], BILINEAR, antialias=True)`` (then ``horizontal_flip`` where ``flip``), with
    the same filter weights. Pixels are gathered from one flat buffer holding all images, so
    images may have different sizes and no padding is allocated.

    How: the vertical pass gathers, for every column of every box (``G`` = sum of the box
    widths), the source pixels of each filter tap from the flat buffer and accumulates
    ``(3, S, G)``; it loops over the taps (not over images), boxes sorted by tap count so that
    each box takes part only in the iterations its own filter needs. The horizontal pass is one
    weighted ``embedding_bag`` sum per output pixel over those columns (one call per distinct
    tap count). Python loops: over images only to build the flat buffer from a list (views;
    ``torch.cat``), over taps and tap-count groups for the arithmetic. Host and device never
    synchronize: every size is known on the host.

    Args:
        images: uint8 or float ``(N, 3, H, W)``, or a sequence of ``N`` tensors ``(3, H_i, W_i)``
            of one dtype on one device.
        top: int ``(M,)`` box top rows (CPU tensor, like the other box arguments).
        left: int ``(M,)`` box left columns.
        height: int ``(M,)`` box heights (>= 1, inside the image).
        width: int ``(M,)`` box widths.
        size: Output side ``S``.
        flip: bool ``(M,)``: flip the output horizontally.
        image_index: int ``(M,)``: the image of each box (default ``arange(N)``, ``M = N``).

    Returns:
        float32 ``(M, 3, S, S)`` on the images' device: in [0, 1] for uint8 input (divided by
        255), in the input's own scale for float input.
    """
    flat, layout, dims, device, dtype = _flatten(images)
    if dtype != torch.uint8 and dtype != torch.float32:
        flat = flat.to(torch.float32)
    n_img = int(dims.shape[0])
    scale = 1.0 / 255.0 if dtype == torch.uint8 else 1.0
    top, left = top.to(torch.int64).cpu(), left.to(torch.int64).cpu()
    height, width = height.to(torch.int64).cpu(), width.to(torch.int64).cpu()
    m = int(top.shape[0])
    if image_index is None:
        if m != n_img:
            raise ValueError(f"{m} boxes for {n_img} images: pass image_index")
        image_index = torch.arange(m)
    image_index = image_index.to(torch.int64).cpu()
    flip = torch.zeros(m, dtype=torch.bool) if flip is None else flip.to(torch.bool).cpu()
    if m == 0:
        return torch.empty((0, 3, size, size), device=device)
    img_h, img_w = dims[image_index, 0], dims[image_index, 1]
    if bool(
        (height < 1).any()
        | (width < 1).any()
        | (top < 0).any()
        | (left < 0).any()
        | (top + height > img_h).any()
        | (left + width > img_w).any()
    ):
        raise ValueError("crop boxes must lie inside their images")
    base, c_stride, y_stride, x_stride = layout[image_index].unbind(1)

    # ---- host bookkeeping: tap counts, box order, column layout (no device sync needed)
    taps_y, taps_x = _taps(height, size), _taps(width, size)
    order_a = torch.argsort(taps_y, descending=True, stable=True)
    w_sorted = width[order_a]
    col_end = torch.cumsum(w_sorted, 0)
    n_cols = int(col_end[-1])
    col_start = torch.empty_like(col_end)
    col_start[order_a] = col_end - w_sorted
    prefix_y = [int(col_end[k - 1]) for k in _prefix_counts(taps_y[order_a])]
    order_b = torch.argsort(taps_x, descending=True, stable=True)
    inverse_b = torch.empty_like(order_b)
    inverse_b[order_b] = torch.arange(m)

    meta = _to_device(
        torch.stack(
            [
                *(top, left, height, width, base, c_stride, y_stride, x_stride, col_start),
                *(flip.to(torch.int64), order_a, w_sorted, order_b, inverse_b),
            ]
        ),
        device,
    )
    d_top, d_left, d_h, d_w, d_base, d_cs, d_ys, d_xs, d_colstart = meta[:9].unbind(0)
    d_flip, d_order_a, d_wsorted, d_order_b, d_inverse_b = meta[9:].unbind(0)

    # ---- vertical pass over all box columns: work (3, S, G), G = sum of box widths
    y_start, wy = _aa_weights(d_h, size, len(prefix_y))
    box = torch.repeat_interleave(d_order_a, d_wsorted, output_size=n_cols)  # (G,) box ids
    x_in_box = torch.arange(n_cols, device=device) - d_colstart[box]
    col_base = d_base[box] + (d_left[box] + x_in_box) * d_xs[box]  # flat offset of row 0
    row_stride, chan_stride = d_ys[box], d_cs[box]
    rows0 = (y_start + d_top[:, None])[box].t().contiguous()  # (S, G) first source rows
    last_row = (d_top + d_h - 1)[box]
    wy_k = wy.permute(2, 0, 1).contiguous()  # (taps, M, S)
    work = torch.zeros((3, size, n_cols), device=device, dtype=torch.float32)
    for k, n in enumerate(prefix_y):
        rows = torch.minimum(rows0[:, :n] + k, last_row[:n])
        idx = rows.mul_(row_stride[:n]).add_(col_base[:n])  # (S, n)
        weight = wy_k[k][box[:n]].t()  # (S, n)
        for c in range(3):
            pixels = flat.index_select(0, idx.view(-1)).view(size, n)
            work[c, :, :n].addcmul_(weight, pixels)
            if c < 2:
                idx.add_(chan_stride[:n])

    # ---- horizontal pass: one weighted embedding-bag sum per output pixel row segment:
    # out[m, ox] = sum_k wx[m, ox, k] * rows_t[column of tap k], for boxes grouped by taps
    rows_t = work.permute(2, 0, 1).reshape(n_cols, 3 * size)  # (G, 3 * S_y) rows
    x_start, wx = _aa_weights(d_w, size, int(taps_x.max()))
    flipped = d_flip.to(torch.bool)[:, None]
    x_start = torch.where(flipped, x_start.flip(1), x_start)
    wx = torch.where(flipped[..., None], wx.flip(1), wx) * scale
    tap = torch.arange(wx.shape[-1], device=device)
    cols = d_colstart[:, None, None] + torch.minimum(
        x_start[..., None] + tap, (d_w - 1)[:, None, None]
    )  # (M, S_x, taps)
    parts = []
    for start, stop, taps in _groups(taps_x[order_b]):
        ids = d_order_b[start:stop]
        parts.append(
            F.embedding_bag(
                cols[ids, :, :taps].reshape(-1, taps),
                rows_t,
                mode="sum",
                per_sample_weights=wx[ids, :, :taps].reshape(-1, taps),
            )
        )
    out = torch.cat(parts).view(m, size, 3, size)[d_inverse_b].permute(0, 2, 3, 1)
    return out.contiguous()


def _groups(sorted_taps: Tensor) -> list[tuple[int, int, int]]:
    """``(start, stop, taps)`` runs of equal values in a sorted host tensor."""
    values, counts = torch.unique_consecutive(sorted_taps, return_counts=True)
    ends = torch.cumsum(counts, 0).tolist()
    starts = [0, *ends[:-1]]
    return [(a, b, int(v)) for a, b, v in zip(starts, ends, values.tolist(), strict=True)]


def _flatten(
    images: Tensor | Sequence[Tensor],
) -> tuple[Tensor, Tensor, Tensor, torch.device, torch.dtype]:
    """All images in one flat buffer, without copying images stored CHW or HWC.

    Returns:
        ``(flat (N,), layout (N_img, 4) int64 [offset, channel, row, column strides],
        sizes (N_img, 2) [height, width], device, dtype)``; ``layout`` and ``sizes`` on the CPU.
    """
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
        parts: Sequence[Tensor] = images.unbind(0)
    else:
        parts = images
    if len(parts) == 0:
        raise ValueError("no images")
    if any(im.ndim != 3 or im.shape[0] != 3 for im in parts):
        raise ValueError("expected images of shape (3, H, W)")
    device, dtype = parts[0].device, parts[0].dtype
    if any(im.device != device or im.dtype != dtype for im in parts):
        raise ValueError("images must share one device and dtype")
    if isinstance(images, Tensor) and images.is_contiguous():
        flat = images.reshape(-1)
        planar = [True] * len(parts)
    else:
        pieces, planar = [], []
        for im in parts:  # a loop over images for the layout only: views, no pixel work
            hwc = im.permute(1, 2, 0)
            if hwc.is_contiguous() and not im.is_contiguous():
                pieces.append(hwc.reshape(-1))
                planar.append(False)
            else:
                pieces.append(im.reshape(-1))  # copies only a non-contiguous, non-HWC image
                planar.append(True)
        flat = torch.cat(pieces)
    sizes = image_sizes(parts)
    h, w = sizes[:, 0], sizes[:, 1]
    numel = 3 * h * w
    offset = torch.cumsum(numel, 0) - numel
    chw = torch.tensor(planar, dtype=torch.bool)
    layout = torch.stack(
        [
            offset,
            torch.where(chw, h * w, 1),
            torch.where(chw, w, 3 * w),
            torch.where(chw, 1, 3),
        ],
        dim=1,
    )
    return flat, layout, sizes, device, dtype


def _prefix_counts(sorted_taps: Tensor) -> list[int]:
    """For taps sorted in decreasing order: how many boxes take part in iteration ``k``."""
    counts = []
    for k in range(int(sorted_taps[0])):
        counts.append(int((sorted_taps > k).sum()))
    return counts


# --------------------------------------------------------------------------------------------
# Colour operations with per-sample parameters, on float32 (B, 3, H, W) images in [0, 1]
# --------------------------------------------------------------------------------------------


def _per_sample(values: Tensor | float, x: Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return t.reshape(-1, 1, 1, 1) if t.ndim else t


def grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's weights).

    Args:
        x: float ``(B, 3, H, W)``.

    Returns:
        float ``(B, 1, H, W)``.
    """
    r, g, b = x.unbind(dim=-3)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(-3)


def _blend(x: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    return (x * ratio + other * (1.0 - ratio)).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """``clamp(x * factor, 0, 1)`` per sample, ``(B, 3, H, W)``; ``factor`` ``(B,)`` or scalar."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with the mean of its grayscale, ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _per_sample(factor, x))


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with its grayscale, ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
    return _blend(x, grayscale(x), _per_sample(factor, x))


def _rgb_to_hsv(x: Tensor) -> Tensor:
    """torchvision's ``_rgb_to_hsv`` (PIL's algorithm), ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
    r, g, _ = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze(-3)
    rc, gc, bc = ((maxc.unsqueeze(-3) - x) / divisor).unbind(dim=-3)
    maxc_neq_r = maxc != r
    maxc_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(maxc_eq_g & maxc_neq_r)
    hr = bc.sub(gc).mul_(~maxc_neq_r)
    hb = gc.add(4.0).sub_(rc).mul_(maxc_neq_r & ~maxc_eq_g)
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    """torchvision's ``_hsv_to_rgb``, ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
    h, s, v = x.unbind(dim=-3)
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    sector = i.to(torch.int64).remainder_(6)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    # torchvision gathers from stack((v, p, q, t)) with a per-sector table; same selection:
    # r = (v, q, p, p, t, v)[sector], g = (t, v, v, q, p, p)[sector], b = (p, p, t, v, v, q)
    s0, s1, s2 = sector == 0, sector == 1, sector == 2
    s3, s4, s5 = sector == 3, sector == 4, sector == 5
    r = torch.where(s0 | s5, v, torch.where(s1, q, torch.where(s4, t, p)))
    g = torch.where(s1 | s2, v, torch.where(s0, t, torch.where(s3, q, p)))
    b = torch.where(s3 | s4, v, torch.where(s2, t, torch.where(s5, q, p)))
    return torch.stack((r, g, b), dim=-3)


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the hue by ``shift`` turns per sample (torchvision's HSV round trip).

    Args:
        x: float ``(B, 3, H, W)`` in [0, 1].
        shift: ``(B,)`` or a scalar, in [-0.5, 0.5].

    Returns:
        float ``(B, 3, H, W)``.
    """
    hsv = _rgb_to_hsv(x)
    h, s, v = hsv.unbind(dim=-3)
    delta = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    h = (h + (delta.view(-1, 1, 1) if delta.ndim else delta)).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


def _gaussian_kernels(sigma: Tensor, kernel: int) -> Tensor:
    """torchvision's 1-D Gaussian kernels, one per sigma: ``(B,)`` -> ``(B, kernel)``."""
    lim = (kernel - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel, dtype=sigma.dtype, device=sigma.device)
    return torch.softmax((x[None, :] / sigma[:, None]).pow(2).neg(), dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """Gaussian blur with one sigma per sample: separable, grouped convolution, reflect padding.

    Args:
        x: float ``(B, C, H, W)`` with ``kernel // 2 < min(H, W)``.
        sigma: ``(B,)`` standard deviations in pixels (> 0).
        kernel: Odd kernel size.

    Returns:
        float ``(B, C, H, W)``, equal to torchvision's ``gaussian_blur(x[i], [kernel, kernel],
        [sigma[i], sigma[i]])`` per sample up to float rounding.
    """
    if kernel % 2 == 0 or kernel < 1:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    b, c, h, w = x.shape
    if b == 0 or kernel == 1:
        return x
    half = kernel // 2
    taps = _gaussian_kernels(sigma.to(device=x.device, dtype=x.dtype), kernel)
    taps = taps.repeat_interleave(c, dim=0)  # (B * C, K)
    padded = F.pad(x, [half, half, half, half], mode="reflect").reshape(
        1, b * c, h + 2 * half, w + 2 * half
    )
    rows = F.conv2d(padded, taps.view(b * c, 1, 1, kernel), groups=b * c)
    out = F.conv2d(rows, taps.view(b * c, 1, kernel, 1), groups=b * c)
    return out.view(b, c, h, w)


def solarize(x: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """Invert pixels ``>= threshold`` (``x`` in [0, 1]), only in the samples ``mask`` ``(B,)``."""
    hit = x >= threshold
    if mask is not None:
        hit &= mask.to(device=x.device, dtype=torch.bool).reshape(-1, 1, 1, 1)
    return torch.where(hit, 1.0 - x, x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel, ``(B, 3, H, W)``."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub(m).div_(s)


# --------------------------------------------------------------------------------------------
# The two-view augmentation
# --------------------------------------------------------------------------------------------


class AugmentedViews(NamedTuple):
    """Both views of a batch and the parameters that made them.

    Attributes:
        view1: float32 ``(B, 3, S, S)``, normalized.
        view2: float32 ``(B, 3, S, S)``, normalized.
        params: ``(view 1, view 2)`` :class:`ViewParams` (CPU tensors).
    """

    view1: Tensor
    view2: Tensor
    params: tuple[ViewParams, ViewParams]


def _subset(mask: Tensor, device: torch.device) -> Tensor | None:
    """Indices (on ``device``) of the True entries of a host mask, None when there are none."""
    if not bool(mask.any()):
        return None
    return _to_device(torch.nonzero(mask).flatten(), device)


class GpuTwoViewAugment:
    """The two-view augmentation of a batch, on the batch's device.

    Args:
        cfg: The augmentation parameters (``AugmentationConfig.for_size(cfg)`` for an int).
        jitter_order: ``"random"`` (default: a random order per sample, like v2's
            ``ColorJitter`` used by the CPU path) or ``"fixed"``.

    Call:
        images: uint8 (or float in [0, 1]) ``(B, 3, H, W)``, or a list of ``B`` tensors
            ``(3, H_i, W_i)`` of different sizes (decoded images), on any device.
        generator: CPU generator for the parameters (seed it per step); torch's default
            generator when None.
        params: Use these parameters instead of drawing them.

    Returns:
        :class:`AugmentedViews` ``(view1, view2, params)``, views float32 ``(B, 3, S, S)``.
    """

    def __init__(
        self, cfg: AugmentationConfig | int, *, jitter_order: JitterOrder = "random"
    ) -> None:
        self.cfg = cfg if isinstance(cfg, AugmentationConfig) else AugmentationConfig.for_size(cfg)
        if jitter_order not in ("random", "fixed"):
            raise ValueError(f"jitter_order must be 'random' or 'fixed', got {jitter_order!r}")
        self.jitter_order: JitterOrder = jitter_order

    def sample(
        self, sizes: Tensor, generator: torch.Generator | None = None
    ) -> tuple[ViewParams, ViewParams]:
        """Both views' parameters for images of ``sizes`` ``(B, 2)`` (view 1 drawn first)."""
        return (
            sample_view_params(self.cfg, 0, sizes, generator, jitter_order=self.jitter_order),
            sample_view_params(self.cfg, 1, sizes, generator, jitter_order=self.jitter_order),
        )

    def __call__(
        self,
        images: Tensor | Sequence[Tensor],
        generator: torch.Generator | None = None,
        *,
        params: tuple[ViewParams, ViewParams] | None = None,
    ) -> AugmentedViews:
        sizes = image_sizes(images)
        n = int(sizes.shape[0])
        if params is None:
            params = self.sample(sizes, generator)
        both = ViewParams.cat(params)
        x = resized_crop(
            images,
            both.top,
            both.left,
            both.height,
            both.width,
            self.cfg.img_size,
            flip=both.flip,
            image_index=torch.arange(n).repeat(2),
        )
        x = self.colour(x, both)
        x = normalize(x, self.cfg.mean, self.cfg.std)
        return AugmentedViews(x[:n], x[n:], params)

    def colour(self, x: Tensor, p: ViewParams) -> Tensor:
        """Jitter, grayscale, blur and solarize crops ``x`` ``(M, 3, S, S)`` in [0, 1].

        Args:
            x: float32 ``(M, 3, S, S)``, the resized crops (modified in place or returned).
            p: Their parameters (``M`` samples).

        Returns:
            float32 ``(M, 3, S, S)`` in [0, 1], not normalized.
        """
        cfg, device = self.cfg, x.device
        if bool(p.jitter.any()):
            for k in range(4):
                x = self._jitter_step(x, p, p.order[:, k])
        index = _subset(p.grayscale, device)
        if index is not None:
            x.index_copy_(0, index, grayscale(x[index]).expand(-1, 3, -1, -1))
        if cfg.blur_kernel // 2 < min(x.shape[-2:]):
            index = _subset(p.blur, device)
            if index is not None:
                sigma = _to_device(p.sigma[p.blur].to(torch.float32), device)
                blurred = gaussian_blur(x[index], sigma, cfg.blur_kernel)
                x.index_copy_(0, index, blurred)
        if bool(p.solarize.any()):
            mask = _to_device(p.solarize, device)
            x = solarize(x, cfg.solarize_threshold / 255.0, mask)
        return x

    def _jitter_step(self, x: Tensor, p: ViewParams, op: Tensor) -> Tensor:
        """One position of the jitter order: each sample's operation ``op`` ``(M,)``."""
        on = p.jitter
        bright, contr, satur = on & (op == 0), on & (op == 1), on & (op == 2)
        if bool((bright | contr | satur).any()):
            ones = torch.ones(len(p), dtype=torch.float64)
            a = torch.where(bright, p.brightness, torch.where(contr, p.contrast, ones))
            a = torch.where(satur, p.saturation, a)
            g = torch.where(satur, 1.0 - p.saturation, 0.0)
            m = torch.where(contr, 1.0 - p.contrast, 0.0)
            coef = _to_device(torch.stack([a, g, m]).to(torch.float32), device=x.device)
            a_d, g_d, m_d = (c.view(-1, 1, 1, 1) for c in coef.unbind(0))
            if bool((contr | satur).any()):
                gray = grayscale(x)
                mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
                x = (x * a_d + gray * g_d + mean * m_d).clamp_(0.0, 1.0)
            else:
                x = (x * a_d).clamp_(0.0, 1.0)
        hue = on & (op == 3) & (p.hue != 0)
        index = _subset(hue, x.device)
        if index is not None:
            shift = _to_device(p.hue[hue].to(torch.float32), x.device)
            x.index_copy_(0, index, adjust_hue(x[index], shift))
        return x

    def __repr__(self) -> str:
        return f"GpuTwoViewAugment({self.cfg}, jitter_order={self.jitter_order!r})"
