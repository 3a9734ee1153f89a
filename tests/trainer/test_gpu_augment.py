"""Tests of the batched device augmentation (data.gpu_augment), on CPU tensors.

Every operation is compared with torchvision's own functional kernel
(``torchvision.transforms.v2.functional``) on float32 images in [0, 1] with the same
parameters. Tolerances:

* ``FLOAT_TOL = 1e-5`` for single operations: both sides compute the same formulas in float32;
  only the summation order differs (filter taps, separable vs 2-D blur kernel, fused
  multiply-adds), which moves results by a few ulps (~1e-7 for values <= 1).
* 1 grey level against torchvision's uint8 resize, which rounds its fixed-point result.
* ``PIPELINE_TOL = 1e-4`` for the whole augmentation after normalization (divides by std ~0.22,
  and chains ~10 operations). Solarization is a step function: a pixel within a few ulps of
  the threshold may fall on the other side, so a few pixels may differ by |2x - 1| / std.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from reference_trainer.data.gpu_augment import (
    GpuTwoViewAugment,
    ViewParams,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    image_sizes,
    normalize,
    resized_crop,
    sample_view_params,
    solarize,
)
from reference_trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentationConfig

FLOAT_TOL = 1e-5
PIPELINE_TOL = 1e-4
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead (a lot on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    """Smooth-ish uint8 images (noise + gradients) of the given (height, width)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        noise = torch.rand((3, h, w), generator=g)
        ramp = torch.linspace(0, 1, w).view(1, 1, w) * torch.rand((3, 1, 1), generator=g)
        out.append(((0.6 * noise + 0.4 * ramp) * 255).round().to(torch.uint8))
    return out


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Random resized crop
# --------------------------------------------------------------------------------------------


def test_resized_crop_matches_torchvision_on_images_of_different_sizes() -> None:
    images = _images([(37, 50), (64, 33), (120, 200), (20, 20), (9, 300)])
    # boxes: downscale x3, upscale, full image, tiny box, one image cropped twice
    top = torch.tensor([3, 0, 10, 0, 2, 0, 2])
    left = torch.tensor([5, 2, 0, 0, 250, 0, 10])
    height = torch.tensor([30, 64, 100, 20, 5, 37, 7])
    width = torch.tensor([40, 20, 190, 20, 3, 50, 290])
    index = torch.tensor([0, 1, 2, 3, 4, 0, 4])
    flip = torch.tensor([False, True, False, True, True, True, False])
    size = 24
    out = resized_crop(images, top, left, height, width, size, flip=flip, image_index=index)
    assert out.shape == (7, 3, size, size) and out.dtype == torch.float32
    for i in range(7):
        args = (int(top[i]), int(left[i]), int(height[i]), int(width[i]), [size, size])
        image = images[int(index[i])]
        ref = TF.resized_crop(image.float() / 255, *args, antialias=True)
        ref_u8 = TF.resized_crop(image, *args, antialias=True)
        if flip[i]:
            ref, ref_u8 = TF.horizontal_flip(ref), TF.horizontal_flip(ref_u8)
        torch.testing.assert_close(out[i], ref, atol=FLOAT_TOL, rtol=0)
        assert (out[i] * 255 - ref_u8.float()).abs().max() <= 1.0 + 1e-3  # one grey level


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.integers(1, 50), st.floats(0, 1), st.floats(0, 1)),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 20),
    st.randoms(use_true_random=False),
)
def test_resized_crop_property(
    boxes: list[tuple[int, int, float, float]], size: int, rnd: random.Random
) -> None:
    """Any box in any image (1 px up to 50 px, up- and downscaling): torchvision's result."""
    sizes = [(rnd.randint(h, 60), rnd.randint(w, 60)) for h, w, _, _ in boxes]
    images = _images(sizes, seed=rnd.randint(0, 1000))
    top = torch.tensor(
        [int(a * (H - h)) for (h, _, a, _), (H, _) in zip(boxes, sizes, strict=True)]
    )
    left = torch.tensor(
        [int(b * (W - w)) for (_, w, _, b), (_, W) in zip(boxes, sizes, strict=True)]
    )
    height = torch.tensor([b[0] for b in boxes])
    width = torch.tensor([b[1] for b in boxes])
    out = resized_crop(images, top, left, height, width, size)
    for i, image in enumerate(images):
        box = (int(top[i]), int(left[i]), int(height[i]), int(width[i]))
        ref = TF.resized_crop(image.float() / 255, *box, [size, size], antialias=True)
        torch.testing.assert_close(out[i], ref, atol=FLOAT_TOL, rtol=0)


def test_resized_crop_dense_batch_and_layouts_agree() -> None:
    images = _images([(30, 40)] * 3, seed=1)
    dense = torch.stack(images)
    hwc = [im.permute(1, 2, 0).contiguous().permute(2, 0, 1) for im in images]  # decoded on CPU
    boxes = (torch.tensor([0, 5, 2]), torch.tensor([1, 0, 9]), torch.tensor([30, 20, 11]))
    width = torch.tensor([39, 40, 31])
    a = resized_crop(dense, *boxes, width, 16)
    b = resized_crop(images, *boxes, width, 16)
    c = resized_crop(hwc, *boxes, width, 16)
    d = resized_crop(dense.float() / 255, *boxes, width, 16)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, c, atol=0, rtol=0)
    torch.testing.assert_close(a, d, atol=FLOAT_TOL, rtol=0)


def test_resized_crop_rejects_boxes_outside_the_image() -> None:
    images = _images([(10, 10)])
    with pytest.raises(ValueError, match="inside"):
        resized_crop(
            images, torch.tensor([5]), torch.tensor([0]), torch.tensor([6]), torch.tensor([4]), 8
        )


# --------------------------------------------------------------------------------------------
# Colour operations against torchvision, per sample
# --------------------------------------------------------------------------------------------


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand((6, 3, 20, 24), generator=_gen(3))


@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
        (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
        (adjust_saturation, TF.adjust_saturation, 0.8, 1.2),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_jitter_operations_match_torchvision(
    batch: torch.Tensor, ours: object, theirs: object, low: float, high: float
) -> None:
    factors = low + (high - low) * torch.rand(len(batch), generator=_gen(4))
    out = ours(batch, factors)  # type: ignore[operator]
    for i in range(len(batch)):
        ref = theirs(batch[i], float(factors[i]))  # type: ignore[operator]
        torch.testing.assert_close(out[i], ref, atol=FLOAT_TOL, rtol=0)


def test_hue_on_gray_and_saturated_pixels() -> None:
    x = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.9]])
    x = x.t().reshape(1, 3, 1, 4).repeat(3, 1, 1, 1)
    shifts = torch.tensor([-0.5, 0.25, 0.5])
    out = adjust_hue(x, shifts)
    for i in range(3):
        torch.testing.assert_close(
            out[i], TF.adjust_hue(x[i], float(shifts[i])), atol=FLOAT_TOL, rtol=0
        )


def test_grayscale_solarize_normalize_match_torchvision(batch: torch.Tensor) -> None:
    gray = grayscale(batch)
    torch.testing.assert_close(gray.expand(-1, 3, -1, -1), TF.rgb_to_grayscale(batch, 3))
    mask = torch.tensor([True, False, True, True, False, True])
    sol = solarize(batch, 128 / 255, mask)
    for i in range(len(batch)):
        ref = TF.solarize(batch[i], 128 / 255) if mask[i] else batch[i]
        torch.testing.assert_close(sol[i], ref, atol=0, rtol=0)
    torch.testing.assert_close(
        normalize(batch, IMAGENET_MEAN, IMAGENET_STD),
        TF.normalize(batch, list(IMAGENET_MEAN), list(IMAGENET_STD)),
    )


@pytest.mark.parametrize("kernel", [3, 7])
def test_gaussian_blur_matches_torchvision(batch: torch.Tensor, kernel: int) -> None:
    sigma = 0.1 + 2.0 * torch.rand(len(batch), generator=_gen(5))
    out = gaussian_blur(batch, sigma, kernel)
    for i in range(len(batch)):
        ref = TF.gaussian_blur(batch[i], [kernel, kernel], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=FLOAT_TOL, rtol=0)


# --------------------------------------------------------------------------------------------
# The whole augmentation, against torchvision composed with the sampled parameters
# --------------------------------------------------------------------------------------------

_JITTER_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _reference_view(
    crop: torch.Tensor, p: ViewParams, i: int, cfg: AugmentationConfig, *, normalized: bool = True
) -> torch.Tensor:
    """torchvision's functional ops in the CPU path's order, from our (tested) crop + flip."""
    x = crop
    if p.jitter[i]:
        factors = (p.brightness[i], p.contrast[i], p.saturation[i], p.hue[i])
        for op in p.order[i].tolist():
            x = _JITTER_OPS[op](x, float(factors[op]))
    if p.grayscale[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur[i]:
        x = TF.gaussian_blur(x, [cfg.blur_kernel] * 2, [float(p.sigma[i])] * 2)
    if p.solarize[i]:
        x = TF.solarize(x, cfg.solarize_threshold / 255)
    if not normalized:
        return x
    out: torch.Tensor = TF.normalize(x, list(cfg.mean), list(cfg.std))
    return out


@pytest.mark.parametrize("jitter_order", ["random", "fixed"])
def test_two_views_match_torchvision_composition(jitter_order: str) -> None:
    cfg = AugmentationConfig.for_size(32, blur_sigma=(0.3, 1.5), solarize_p=(0.3, 0.5))
    aug = GpuTwoViewAugment(cfg, jitter_order=jitter_order)  # type: ignore[arg-type]
    images = _images([(40, 48), (64, 30), (33, 33), (90, 70)] * 3, seed=7)
    out = aug(images, _gen(11))
    assert out.view1.shape == out.view2.shape == (12, 3, 32, 32)
    for view, p in zip((out.view1, out.view2), out.params, strict=True):
        crops = resized_crop(images, p.top, p.left, p.height, p.width, 32, flip=p.flip)
        if jitter_order == "fixed":
            assert (p.order == torch.arange(4)).all()
        for i in range(len(images)):
            ref = _reference_view(crops[i], p, i, cfg)
            close = torch.isclose(view[i], ref, atol=PIPELINE_TOL, rtol=0)
            assert close.float().mean() > 0.999, (view[i] - ref).abs().max()
            assert (view[i] - ref).abs().max() < 0.05


@pytest.mark.parametrize("name", ["byol", "mocov2", "simclr", "simclr-cifar"])
def test_named_pipelines_match_torchvision_in_their_order(name: str) -> None:
    """Each named pipeline on the GPU path: torchvision's functional operations with the drawn
    parameters, in the order the CPU path applies them (the flip after the crop, or last for
    mocov2: the flip commutes with every operation, so folding it into the crop is exact)."""
    from reference_trainer.data.transforms import augmentation_config

    cfg = augmentation_config(name, 32)
    cfg = dataclasses.replace(cfg, blur_sigma=(0.3, 1.5))  # a visible blur at 32 px
    aug = GpuTwoViewAugment(cfg)
    images = _images([(40, 48), (64, 30), (33, 33), (90, 70)] * 4, seed=3)
    out = aug(images, _gen(5))
    for view, p, v in zip((out.view1, out.view2), out.params, (0, 1), strict=True):
        # the drawn events follow this view's probabilities
        if cfg.blur_p[v] == 0:
            assert not p.blur.any()
        if cfg.solarize_p[v] == 0:
            assert not p.solarize.any()
        crops = resized_crop(images, p.top, p.left, p.height, p.width, 32)
        for i in range(len(images)):
            x = crops[i]
            if p.flip[i] and not cfg.flip_last:
                x = TF.horizontal_flip(x)
            ref = _reference_view(x, p, i, cfg, normalized=False)
            if p.flip[i] and cfg.flip_last:
                ref = TF.horizontal_flip(ref)
            ref = TF.normalize(ref, list(cfg.mean), list(cfg.std))
            close = torch.isclose(view[i], ref, atol=PIPELINE_TOL, rtol=0)
            assert close.float().mean() > 0.999, (view[i] - ref).abs().max()
    if name == "simclr-cifar":
        assert not (out.params[0].blur.any() or out.params[1].blur.any())


def test_outputs_in_range_and_deterministic() -> None:
    aug = GpuTwoViewAugment(32)
    images = _images([(50, 60), (30, 80), (64, 64), (25, 40)], seed=2)
    a = aug(images, _gen(5))
    b = aug(images, _gen(5))
    c = aug(images, _gen(6))
    for v in (a.view1, a.view2):
        pixels = v * STD + MEAN
        assert torch.isfinite(v).all()
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.testing.assert_close(a.view1, b.view1, atol=0, rtol=0)
    torch.testing.assert_close(a.view2, b.view2, atol=0, rtol=0)
    assert not torch.equal(a.view1, c.view1)
    # the parameters alone reproduce the views, and the draw does not touch the global RNG
    state = torch.get_rng_state()
    again = aug(images, params=a.params)
    assert torch.equal(state, torch.get_rng_state())
    torch.testing.assert_close(again.view1, a.view1, atol=0, rtol=0)
    # a dense batch of equal-sized images gives the same result as the list
    same = _images([(40, 40)] * 4, seed=3)
    torch.testing.assert_close(aug(same, _gen(1)).view2, aug(torch.stack(same), _gen(1)).view2)


# --------------------------------------------------------------------------------------------
# Parameter distributions
# --------------------------------------------------------------------------------------------

N = 4000


def _binomial_ok(hits: torch.Tensor, p: float, n: int = N) -> bool:
    """Frequency within 5 binomial standard deviations (exact for p = 0 or 1)."""
    freq = float(hits.float().mean())
    if p in (0.0, 1.0):
        return freq == p
    return abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_probabilities_and_ranges_follow_the_config() -> None:
    cfg = AugmentationConfig.for_size(224)
    sizes = torch.tensor([[350, 400], [500, 375], [224, 224], [300, 600]]).repeat(N // 4, 1)
    g = _gen(0)
    for view in (0, 1):
        p = sample_view_params(cfg, view, sizes, g)
        assert _binomial_ok(p.flip, cfg.hflip_p[view])
        assert _binomial_ok(p.jitter, cfg.jitter_p[view])
        assert _binomial_ok(p.grayscale, cfg.grayscale_p[view])
        assert _binomial_ok(p.blur, cfg.blur_p[view])
        assert _binomial_ok(p.solarize, cfg.solarize_p[view])
        b, c, s, h = cfg.jitter
        for values, lo, hi in (
            (p.brightness, 1 - b, 1 + b),
            (p.contrast, 1 - c, 1 + c),
            (p.saturation, 1 - s, 1 + s),
            (p.hue, -h, h),
            (p.sigma, *cfg.blur_sigma),
        ):
            assert values.min() >= lo and values.max() <= hi
            assert values.min() < lo + 0.01 * (hi - lo) and values.max() > hi - 0.01 * (hi - lo)
            assert abs(float(values.mean()) - (lo + hi) / 2) < 0.03 * (hi - lo)
        assert (p.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
        counts = torch.unique(p.order, dim=0, return_counts=True)[1]
        assert len(counts) == 24 and counts.min() > 0.6 * N / 24  # every order, ~uniformly


def test_crop_boxes_follow_random_resized_crop() -> None:
    cfg = AugmentationConfig.for_size(224)
    sizes = torch.tensor([[350, 400], [500, 375], [224, 224], [300, 600]]).repeat(N // 4, 1)
    p = sample_view_params(cfg, 0, sizes, _gen(1))
    h_img, w_img = sizes[:, 0], sizes[:, 1]
    assert (p.top >= 0).all() and (p.left >= 0).all() and (p.height >= 1).all()
    assert (p.top + p.height <= h_img).all() and (p.left + p.width <= w_img).all()
    area = (p.height * p.width).double() / (h_img * w_img).double()
    ratio = p.width.double() / p.height.double()
    lo, hi = cfg.crop_scale
    rounding = 0.02  # sides are rounded to whole pixels
    assert area.min() >= lo * (1 - rounding) and area.max() <= hi * (1 + rounding)
    assert ratio.min() >= 3 / 4 * (1 - rounding) and ratio.max() <= 4 / 3 * (1 + rounding)
    # same distribution as torchvision's sampler on the same image sizes (means of the area
    # fraction, log aspect ratio and centre, within 5 standard errors)
    torch.manual_seed(0)
    ref = torch.tensor(
        [
            T.RandomResizedCrop.get_params(
                torch.empty(3, int(h), int(w)), list(cfg.crop_scale), [3 / 4, 4 / 3]
            )
            for h, w in sizes.tolist()
        ],
        dtype=torch.float64,
    )
    ref_area = ref[:, 2] * ref[:, 3] / (h_img * w_img)
    ref_ratio = ref[:, 3] / ref[:, 2]
    ref_cy = (ref[:, 0] + ref[:, 2] / 2) / h_img
    cy = (p.top + p.height / 2).double() / h_img
    for ours, theirs in ((area, ref_area), (ratio.log(), ref_ratio.log()), (cy, ref_cy)):
        se = math.sqrt(float(ours.var() + theirs.var()) / N)
        assert abs(float(ours.mean() - theirs.mean())) < 5 * se


def test_crop_fallback_is_torchvision_centre_crop() -> None:
    cfg = AugmentationConfig.for_size(32)
    sizes = torch.tensor([[10, 400], [400, 10], [10, 11]])
    p = sample_view_params(cfg, 0, sizes, _gen(2))
    for i, (h, w) in enumerate(sizes.tolist()):
        dummy = torch.empty(3, h, w)
        if h == 10 and w == 11:  # any box works: it must lie inside
            assert p.top[i] + p.height[i] <= h and p.left[i] + p.width[i] <= w
            continue
        ref = T.RandomResizedCrop.get_params(dummy, list(cfg.crop_scale), list(cfg.crop_ratio))
        assert (int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i])) == ref


def test_views_use_their_own_probabilities() -> None:
    aug = GpuTwoViewAugment(AugmentationConfig.for_size(32))
    v1, v2 = aug.sample(image_sizes(_images([(32, 32)] * 8)), _gen(0))
    assert v1.blur.all() and not v1.solarize.any()
    assert len(v1) == len(v2) == 8
    both = ViewParams.cat([v1, v2])
    assert len(both) == 16 and torch.equal(both.select(slice(8, None)).sigma, v2.sigma)
