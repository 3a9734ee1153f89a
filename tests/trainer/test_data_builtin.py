"""Tests of the built-in procedural dataset (reference_trainer.data.builtin)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch.utils.data import DataLoader

from reference_trainer.data import SHAPE_CLASSES, LoadedImage, ProceduralShapes, build_dataset

Array = npt.NDArray[np.float32]


def _pixels(ds: ProceduralShapes, index: int) -> npt.NDArray[np.uint8]:
    return np.asarray(ds[index].image)


def _stack(ds: ProceduralShapes) -> Array:
    return np.stack([np.asarray(ds[i].image, np.float32) for i in range(len(ds))])


def _arrays_of(batch: list[LoadedImage]) -> list[npt.NDArray[np.uint8]]:
    return [np.asarray(item.image) for item in batch]


def test_items_are_rgb_images_with_int_labels() -> None:
    ds = ProceduralShapes(12, 32)
    item = ds[5]
    assert isinstance(item, LoadedImage)
    image, label, skipped = item
    assert image.mode == "RGB"
    assert image.size == (32, 32)
    assert isinstance(label, int)
    assert label == 5
    assert skipped == ()
    assert ds.classes == SHAPE_CLASSES[:10]
    assert ds.num_classes == 10


def test_same_index_gives_identical_pixels_in_any_order_and_instance() -> None:
    ds = ProceduralShapes(30, 32, seed=7)
    forward = [_pixels(ds, i) for i in range(30)]
    again = [_pixels(ds, i) for i in range(30)]
    fresh = ProceduralShapes(30, 32, seed=7)
    backward = [_pixels(fresh, i) for i in reversed(range(30))][::-1]
    interleaved = ProceduralShapes(30, 32, seed=7)
    _ = [_pixels(interleaved, i) for i in (29, 3, 17)]  # touch other items first
    for i in range(30):
        np.testing.assert_array_equal(forward[i], again[i])
        np.testing.assert_array_equal(forward[i], backward[i])
        np.testing.assert_array_equal(forward[i], _pixels(interleaved, i))


def test_worker_processes_produce_the_same_pixels() -> None:
    ds = ProceduralShapes(16, 32, seed=1)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=_arrays_of)
    from_workers = [arr for batch in loader for arr in batch]
    assert len(from_workers) == 16
    for i, arr in enumerate(from_workers):
        np.testing.assert_array_equal(arr, _pixels(ds, i))


def test_train_and_val_splits_and_seeds_differ() -> None:
    train = ProceduralShapes(20, 32, split="train")
    val = ProceduralShapes(20, 32, split="val")
    other_seed = ProceduralShapes(20, 32, split="train", seed=1)
    for i in range(20):
        assert not np.array_equal(_pixels(train, i), _pixels(val, i))
        assert not np.array_equal(_pixels(train, i), _pixels(other_seed, i))
        assert train[i].label == val[i].label  # labels are balanced by index in both


@pytest.mark.parametrize("size", [24, 32, 57, 96, 160])
def test_any_size(size: int) -> None:
    ds = ProceduralShapes(12, size)
    for i in range(12):
        image = ds[i].image
        assert image.size == (size, size)
        assert image.mode == "RGB"


def test_classes_balanced_and_labels_match_targets() -> None:
    ds = ProceduralShapes(1003, 32, num_classes=12)
    counts = np.bincount(ds.targets, minlength=12)
    assert counts.min() >= 83
    assert counts.max() <= 84
    assert [ds[i].label for i in range(50)] == ds.targets[:50].tolist()
    assert len(set(ds.classes)) == 12


def test_images_of_one_class_differ() -> None:
    ds = ProceduralShapes(100, 32)
    for label in (0, 6, 9):  # circle, stripes, spiral
        images = [_pixels(ds, i).astype(np.int16) for i in range(label, 100, 10)]
        for a in range(len(images)):
            for b in range(a + 1, len(images)):
                assert np.abs(images[a] - images[b]).mean() > 10


def _nearest_class_mean_accuracy(
    train: Array, y_train: npt.NDArray[np.int64], test: Array, y_test: npt.NDArray[np.int64]
) -> float:
    classes = np.unique(y_train)
    means = np.stack([train[y_train == c].mean(0) for c in classes])
    dist = ((test[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    return float((classes[dist.argmin(1)] == y_test).mean())


def _colour_invariant_spectrum(x: Array) -> Array:
    """log |FFT| of the per-image standardized grayscale: ignores colour and position."""
    gray = x.mean(-1)
    gray = (gray - gray.mean((1, 2), keepdims=True)) / (gray.std((1, 2), keepdims=True) + 1e-6)
    spectrum: Array = np.log1p(np.abs(np.fft.fft2(gray))).astype(np.float32)
    return spectrum.reshape(len(x), -1)


def test_not_trivial_from_pixels_or_colour_but_learnable_from_shape() -> None:
    train = ProceduralShapes(1500, 32, split="train")
    val = ProceduralShapes(600, 32, split="val")
    x_train, x_val = _stack(train), _stack(val)
    y_train, y_val = train.targets, val.targets
    chance = 1 / train.num_classes

    assert x_train.std(axis=(1, 2, 3)).min() > 5  # no constant images

    raw = _nearest_class_mean_accuracy(
        x_train.reshape(len(x_train), -1), y_train, x_val.reshape(len(x_val), -1), y_val
    )
    colour = _nearest_class_mean_accuracy(x_train.mean((1, 2)), y_train, x_val.mean((1, 2)), y_val)
    shape = _nearest_class_mean_accuracy(
        _colour_invariant_spectrum(x_train), y_train, _colour_invariant_spectrum(x_val), y_val
    )
    assert raw < 2.5 * chance, raw
    assert colour < 2.5 * chance, colour
    assert shape > 2.5 * chance, shape


def test_build_dataset_builtin_defaults_and_options() -> None:
    ds = build_dataset("builtin", None, "val", img_size=40, num_samples=7, seed=3, num_classes=12)
    assert isinstance(ds, ProceduralShapes)
    assert len(ds) == 7
    assert ds.num_classes == 12
    assert ds[0].image.size == (40, 40)
    np.testing.assert_array_equal(
        np.asarray(ds[2].image),
        _pixels(ProceduralShapes(7, 40, seed=3, num_classes=12, split="val"), 2),
    )
    assert len(build_dataset("builtin", None, "train")) == 10_000


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        ProceduralShapes(10, split="holdout")
    with pytest.raises(ValueError, match="num_classes"):
        ProceduralShapes(10, num_classes=13)
    with pytest.raises(ValueError, match="img_size"):
        ProceduralShapes(10, img_size=4)
    with pytest.raises(IndexError):
        ProceduralShapes(10)[10]
    with pytest.raises(IndexError):
        ProceduralShapes(10)[-1]


def test_generation_does_not_touch_global_rngs() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    expected_torch = torch.rand(3)
    expected_np = np.random.rand(3)  # noqa: NPY002
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    ProceduralShapes(5, 32)[3]
    assert torch.equal(torch.rand(3), expected_torch)
    np.testing.assert_array_equal(np.random.rand(3), expected_np)  # noqa: NPY002
