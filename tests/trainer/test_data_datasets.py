"""Tests of the trainer's datasets (reference_trainer.data.datasets)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reference_trainer.data import (
    CorruptImageError,
    DatasetFileError,
    DatasetNotFoundError,
    ImageFolderDataset,
    LoadedImage,
    TwoViewDataset,
    TwoViewTransform,
    build_dataset,
    collate_two_views,
)

# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

# Each readable file is a solid colour that encodes (class, file number), so a test can tell
# which file an item really came from.


def _colour(label: int, k: int) -> tuple[int, int, int]:
    return (40 * label + 20, 30 * k + 10, 200)


def _write_image(path: Path, label: int, k: int, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), _colour(label, k)).save(path, format=fmt)


def _truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train/{bird,cat,dog}: PNG and JPEG files, one truncated JPEG, one garbage PNG.

    Sorted order: bird/0.png bird/1.jpg bird/2.png | cat/0.png cat/1_bad.jpg cat/2.png
    cat/sub/3.bmp | dog/0.png dog/1.png dog/9_garbage.png
    """
    root = tmp_path / "train"
    for k, fmt in enumerate(["PNG", "JPEG", "PNG"]):
        _write_image(root / "bird" / f"{k}.{fmt.lower().replace('jpeg', 'jpg')}", 0, k, fmt)
    _write_image(root / "cat" / "0.png", 1, 0, "PNG")
    _truncated_jpeg(root / "cat" / "1_bad.jpg")
    _write_image(root / "cat" / "2.png", 1, 2, "PNG")
    _write_image(root / "cat" / "sub" / "3.bmp", 1, 3, "BMP")
    _write_image(root / "dog" / "0.png", 2, 0, "PNG")
    _write_image(root / "dog" / "1.png", 2, 1, "PNG")
    (root / "dog" / "9_garbage.png").write_bytes(b"\x89PNG not really" + bytes(range(200)))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"")
    (root / ".cache").mkdir()
    return root


BAD_JPEG = 4  # index of cat/1_bad.jpg
GARBAGE = 9  # index of dog/9_garbage.png (the last item)


def _solid(item: LoadedImage) -> tuple[int, int, int]:
    pixels = np.asarray(item.image)
    assert (pixels == pixels[0, 0]).all()
    r, g, b = (int(v) for v in pixels[0, 0])
    return (r, g, b)


def test_scanner_sorted_classes_and_files(folder: Path) -> None:
    ds = build_dataset("imagefolder", folder, "train")
    assert isinstance(ds, ImageFolderDataset)
    assert ds.classes == ("bird", "cat", "dog")
    assert ds.num_classes == 3
    assert len(ds) == 10  # txt, hidden file and hidden folder ignored; sub/ searched
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert [Path(ds.path(i)).name for i in range(len(ds))] == [
        "0.png", "1.jpg", "2.png", "0.png", "1_bad.jpg", "2.png", "3.bmp",
        "0.png", "1.png", "9_garbage.png",
    ]  # fmt: skip


def test_readable_items_are_rgb_with_their_labels(folder: Path) -> None:
    ds = build_dataset("imagefolder", folder, "train")
    item = ds[1]  # bird/1.jpg (JPEG is lossy: compare loosely)
    assert item.image.mode == "RGB"
    assert item.label == 0
    assert item.skipped == ()
    assert np.abs(np.asarray(item.image, np.int16) - np.array(_colour(0, 1))).max() <= 3
    assert _solid(ds[6]) == _colour(1, 3)  # cat/sub/3.bmp


def test_grayscale_and_palette_files_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "val"
    (root / "a").mkdir(parents=True)
    Image.new("L", (8, 8), 77).save(root / "a" / "gray.png")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = b"\x00\xff"
    palette.save(root / "a" / "palette.png", transparency=b"\x00\xff")
    ds = build_dataset("imagefolder", root, "val")
    assert _solid(ds[0]) == (77, 77, 77)
    assert _solid(ds[1]) == (10, 20, 30)


def test_non_strict_substitutes_the_next_readable_item_and_names_the_file(folder: Path) -> None:
    ds = build_dataset("imagefolder", folder, "train", strict=False)
    item = ds[BAD_JPEG]
    assert item.skipped == (str(folder / "cat" / "1_bad.jpg"),)
    assert item.label == 1
    assert _solid(item) == _colour(1, 2)  # cat/2.png, the next index
    again = ds[BAD_JPEG]  # remembered as bad, still reported
    assert again.skipped == item.skipped
    assert _solid(again) == _colour(1, 2)
    wrapped = ds[GARBAGE]  # last index wraps around to index 0
    assert wrapped.skipped == (str(folder / "dog" / "9_garbage.png"),)
    assert wrapped.label == 0
    assert _solid(wrapped) == _colour(0, 0)


def test_consecutive_bad_files_are_all_reported(folder: Path) -> None:
    (folder / "cat" / "2.png").write_bytes(b"")  # now indices 4 and 5 are unreadable
    ds = build_dataset("imagefolder", folder, "train")
    item = ds[BAD_JPEG]
    assert item.skipped == (str(folder / "cat" / "1_bad.jpg"), str(folder / "cat" / "2.png"))
    assert _solid(item) == _colour(1, 3)


def test_strict_raises_corrupt_image_error_naming_the_file(folder: Path) -> None:
    ds = build_dataset("imagefolder", folder, "train", strict=True)
    assert ds[0].skipped == ()
    with pytest.raises(CorruptImageError) as info:
        ds[BAD_JPEG]
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(folder / "cat" / "1_bad.jpg")
    assert str(folder / "cat" / "1_bad.jpg") in str(err)
    assert "truncated" in str(err)
    assert "\n" not in str(err)
    with pytest.raises(CorruptImageError, match=r"9_garbage\.png"):
        ds[GARBAGE]
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.reason, str(clone)) == (err.path, err.reason, str(err))


def test_all_files_unreadable_raises(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(b"junk")
    ds = build_dataset("imagefolder", tmp_path, "train")
    with pytest.raises(CorruptImageError, match="none of the 1 image files"):
        ds[0]


def test_skipped_paths_reach_the_main_process_through_workers(folder: Path) -> None:
    ds = TwoViewDataset(build_dataset("imagefolder", folder, "train"), TwoViewTransform(16))
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_two_views)
    skipped: list[str] = []
    labels: list[int] = []
    for batch in loader:
        assert batch.view1.shape[1:] == (3, 16, 16)
        skipped.extend(batch.skipped)
        labels.extend(batch.labels.tolist())
    assert sorted(skipped) == sorted(
        [str(folder / "cat" / "1_bad.jpg"), str(folder / "dog" / "9_garbage.png")]
    )
    # Substituted items carry the substitute's label: cat/2.png (1) and bird/0.png (0).
    assert labels == [0, 0, 0, 1, 1, 1, 1, 2, 2, 0]


def test_strict_error_keeps_its_type_through_workers(folder: Path) -> None:
    ds = TwoViewDataset(
        build_dataset("imagefolder", folder, "train", strict=True), TwoViewTransform(16)
    )
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_two_views)
    batches = iter(loader)
    error: Exception | None = None
    try:
        next(batches)
    except Exception as exc:  # keep no traceback: a cycle holding the iterator slows its GC
        error = exc.with_traceback(None)
    del batches
    assert isinstance(error, CorruptImageError)
    assert "1_bad.jpg" in str(error)


def test_given_classes_keep_labels_aligned(folder: Path, tmp_path: Path) -> None:
    train = build_dataset("imagefolder", folder, "train")
    val_root = tmp_path / "val"
    _write_image(val_root / "dog" / "a.png", 2, 0, "PNG")
    val = build_dataset("imagefolder", val_root, "val", classes=train.classes)
    assert val.classes == train.classes
    assert val[0].label == 2
    assert build_dataset("imagefolder", val_root, "val")[0].label == 0  # own folders only
    with pytest.raises(DatasetNotFoundError, match="not among the given classes"):
        build_dataset("imagefolder", folder, "train", classes=["bird", "cat"])


def _one_line_error(
    exc: pytest.ExceptionInfo[DatasetNotFoundError] | pytest.ExceptionInfo[DatasetFileError],
) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert isinstance(exc.value, ValueError)
    return message


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("imagefolder", missing, "train")
    assert str(missing) in _one_line_error(info)
    assert "does not exist" in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("imagefolder", empty, "train")
    assert "no class folders" in _one_line_error(info)
    assert str(empty) in str(info.value)

    no_images = tmp_path / "no_images"
    (no_images / "a").mkdir(parents=True)
    (no_images / "a" / "readme.md").write_text("x")
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("imagefolder", no_images, "train")
    assert "no image files" in _one_line_error(info)

    parent = tmp_path / "parent"
    (parent / "train" / "a").mkdir(parents=True)
    (parent / "val" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("imagefolder", parent, "train")
    assert str(parent / "train") in _one_line_error(info)

    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="not a directory"):
        build_dataset("imagefolder", a_file, "train")


def test_unknown_kind_and_split() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("imagenet", "/tmp", "train")
    with pytest.raises(ValueError, match="no split"):
        build_dataset("cifar10", "/tmp", "unlabeled")


# --------------------------------------------------------------------------------------------
# Torchvision formats, written in their real on-disk formats
# --------------------------------------------------------------------------------------------


def _cifar_rows(n: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _pickle(path: Path, obj: dict[str, object]) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _fake_cifar10(root: Path) -> dict[str, npt.NDArray[np.uint8]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = {}
    for k in range(1, 6):
        rows[f"data_batch_{k}"] = _cifar_rows(2, k)
        labels = [(2 * k) % 10, (2 * k + 1) % 10]
        _pickle(folder / f"data_batch_{k}", {"batch_label": "b", "labels": labels,
                                              "data": rows[f"data_batch_{k}"]})  # fmt: skip
    rows["test_batch"] = _cifar_rows(3, 99)
    _pickle(folder / "test_batch", {"labels": [7, 8, 9], "data": rows["test_batch"]})
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    return rows


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    rows = _fake_cifar10(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train")
    assert len(train) == 10
    assert train.num_classes == 10
    assert train.classes[3] == "cat"
    assert train.targets.tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # The format: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    row = rows["data_batch_3"][1]
    image, label, skipped = train[5]
    pixels = np.asarray(image)
    assert (image.mode, image.size, label, skipped) == ("RGB", (32, 32), 7, ())
    for y, x in [(0, 0), (0, 31), (5, 17), (31, 2)]:
        assert pixels[y, x].tolist() == [row[c * 1024 + y * 32 + x] for c in range(3)]
    test = build_dataset("cifar10", tmp_path, "val")  # val means the test batch
    assert len(test) == 3
    assert test[2].label == 9


def test_cifar10_agrees_with_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10

    _fake_cifar10(tmp_path)
    # Fake files: skip torchvision's md5 checks.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args: True)
    reference = CIFAR10(str(tmp_path), train=True)
    ours = build_dataset("cifar10", tmp_path, "train")
    for i in range(len(ours)):
        ref_image, ref_label = reference[i]
        np.testing.assert_array_equal(np.asarray(ours[i].image), np.asarray(ref_image))
        assert ours[i].label == ref_label
    assert list(ours.classes) == reference.classes


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _pickle(folder / "train", {"fine_labels": [5, 99], "coarse_labels": [1, 2],
                               "data": _cifar_rows(2, 0)})  # fmt: skip
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                              "coarse_label_names": [f"s{i}" for i in range(20)]})  # fmt: skip
    ds = build_dataset("cifar100", tmp_path, "train")
    assert ds.num_classes == 100
    assert ds.targets.tolist() == [5, 99]
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("cifar100", tmp_path, "test")
    assert "cifar-100-python" in _one_line_error(info)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("cifar10", "cifar-10-batches-py/{data_batch_1..5, batches.meta}"),
        ("cifar100", "cifar-100-python/{train, meta}"),
        ("stl10", "stl10_binary/{train_X.bin, train_y.bin, class_names.txt}"),
        ("mnist", "MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte}"),
        ("fashion-mnist", "FashionMNIST/raw/{train-images-idx3-ubyte"),
    ],
)
def test_missing_files_name_the_expected_layout(tmp_path: Path, kind: str, expected: str) -> None:
    for root in (tmp_path, tmp_path / "does-not-exist"):
        with pytest.raises(DatasetNotFoundError) as info:
            build_dataset(kind, root, "train")
        message = _one_line_error(info)
        assert f"{root}/{expected}" in message
        assert "download=True" in message


def _write_idx(path: Path, array: npt.NDArray[np.uint8], compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.mark.parametrize(
    ("kind", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_idx_files(tmp_path: Path, kind: str, folder: str) -> None:
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    _write_idx(raw / "t10k-images-idx3-ubyte", images, compress=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels, compress=True)
    ds = build_dataset(kind, tmp_path, "test")
    assert len(ds) == 4
    assert ds.num_classes == 10
    image, label, _ = ds[2]
    assert (image.mode, image.size, label) == ("RGB", (28, 28), 4)
    pixels = np.asarray(image)
    for c in range(3):
        np.testing.assert_array_equal(pixels[..., c], images[2])


def _mnist_files(root: Path, folder: str, n: int = 60) -> tuple[Path, Path]:
    """Real gzipped IDX files of ``n`` images (about 30 KB of image bytes before gzip)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(2).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", images, compress=True)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10, compress=True)
    return raw / "train-images-idx3-ubyte.gz", raw / "train-labels-idx1-ubyte.gz"


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data[: len(data) // 2], "is truncated or corrupt: gzip says"),
        (lambda data: data[:-9], "is truncated or corrupt: gzip says"),  # no CRC trailer
        (lambda data: data[:10] + bytes(len(data) - 10), "is truncated or corrupt"),
        (lambda data: b"<html>not found</html>", "is truncated or corrupt"),
    ],
    ids=["half", "no-trailer", "zeroed", "not-gzip"],
)
def test_a_damaged_mnist_gzip_names_the_file(tmp_path: Path, damage: object, words: str) -> None:
    images, _ = _mnist_files(tmp_path, "FashionMNIST")
    images.write_bytes(damage(images.read_bytes()))  # type: ignore[operator]
    with pytest.raises(DatasetFileError) as info:
        build_dataset("fashion-mnist", tmp_path, "train")
    message = _one_line_error(info)
    assert message.startswith(f"{images} {words}"), message
    assert info.value.path == str(images)
    clone = pickle.loads(pickle.dumps(info.value))
    assert (type(clone), clone.path, str(clone)) == (DatasetFileError, str(images), message)


def test_a_short_or_mislabelled_idx_file_names_the_file(tmp_path: Path) -> None:
    images, labels = _mnist_files(tmp_path, "MNIST", n=4)
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-28]))  # a whole gzip of a cut file: one row short
    with pytest.raises(DatasetFileError) as info:
        build_dataset("mnist", tmp_path, "train")
    assert _one_line_error(info) == (
        f"{images} is truncated: its header says (4, 28, 28), 3136 bytes, but it holds 3108; "
        "delete it and extract or download it again"
    )
    images.write_bytes(raw)
    images.rename(images.with_suffix(""))  # plain IDX from here on
    images = images.with_suffix("")
    images.write_bytes(raw[:10])  # cut inside the header
    with pytest.raises(DatasetFileError, match="shorter than its header"):
        build_dataset("mnist", tmp_path, "train")
    images.write_bytes(raw)
    _write_idx(labels.with_suffix(""), np.array([1, 2, 3, 10], np.uint8), compress=False)
    labels.unlink()
    with pytest.raises(DatasetFileError, match=r"labels outside \[0, 10\) \(from 1 to 10\)"):
        build_dataset("mnist", tmp_path, "train")
    _write_idx(labels.with_suffix(""), np.array([1, 2, 3], np.uint8), compress=False)
    with pytest.raises(DatasetFileError, match="holds 3 labels for 4 images"):
        build_dataset("mnist", tmp_path, "train")


def test_a_truncated_cifar_batch_names_the_file(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    data = batch.read_bytes()
    batch.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFileError) as info:
        build_dataset("cifar10", tmp_path, "train")
    message = _one_line_error(info)
    assert message.startswith(f"{batch} is truncated or corrupt, not a cifar10 python batch")
    assert build_dataset("cifar10", tmp_path, "test").num_classes == 10  # the test batch is whole
    _pickle(batch, {"labels": [1, 2], "data": _cifar_rows(2, 0)[:, :3000]})
    with pytest.raises(DatasetFileError, match=r"data_batch_3 holds data of shape \(2, 3000\)"):
        build_dataset("cifar10", tmp_path, "train")
    _pickle(batch, {"labels": [1, 2, 3], "data": _cifar_rows(2, 0)})
    with pytest.raises(DatasetFileError, match="data_batch_3 holds 3 labels for 2 images"):
        build_dataset("cifar10", tmp_path, "train")
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(b"")
    with pytest.raises(DatasetFileError, match=r"batches\.meta is truncated or corrupt"):
        build_dataset("cifar10", tmp_path, "test")


def test_a_truncated_stl10_file_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8).tobytes()
    (folder / "train_X.bin").write_bytes(x[:-100])
    np.array([1, 10, 3], np.uint8).tofile(folder / "train_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    with pytest.raises(DatasetFileError) as info:
        build_dataset("stl10", tmp_path, "train")
    assert _one_line_error(info).startswith(
        f"{folder / 'train_X.bin'} is truncated: 82844 bytes, not a whole number of 96x96"
    )
    (folder / "train_X.bin").write_bytes(x[: 2 * 3 * 96 * 96])  # two whole images, 3 labels
    with pytest.raises(DatasetFileError, match=r"train_y\.bin holds 3 labels for 2 images"):
        build_dataset("stl10", tmp_path, "train")
    (folder / "train_X.bin").write_bytes(x)
    np.array([1, 11, 3], np.uint8).tofile(folder / "train_y.bin")  # labels are 1..10
    with pytest.raises(DatasetFileError, match=r"outside \[0, 10\)"):
        build_dataset("stl10", tmp_path, "train")


def test_mnist_agrees_with_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", images, compress=False)
    _write_idx(raw / "train-labels-idx1-ubyte", np.array([9, 0, 5], np.uint8), compress=False)
    _write_idx(raw / "t10k-images-idx3-ubyte", images[:1], compress=False)  # torchvision wants
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([1], np.uint8), compress=False)  # all 4
    reference = MNIST(str(tmp_path), train=True)
    ours = build_dataset("mnist", tmp_path, "train")
    for i in range(3):
        ref_image, ref_label = reference[i]
        np.testing.assert_array_equal(np.asarray(ours[i].image)[..., 0], np.asarray(ref_image))
        assert ours[i].label == ref_label


def test_stl10_binary_agrees_with_torchvision_reader(tmp_path: Path) -> None:
    from torchvision.datasets import STL10

    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8).tofile(folder / "train_X.bin")
    np.array([1, 10], np.uint8).tofile(folder / "train_y.bin")
    rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")

    reference = STL10.__new__(STL10)  # read with torchvision's loader, skipping its md5 check
    reference.root = str(tmp_path)
    ref_images, ref_labels = reference._STL10__loadfile("train_X.bin", "train_y.bin")

    train = build_dataset("stl10", tmp_path, "train")
    assert train.classes[9] == "class9"
    assert train.targets.tolist() == [0, 9]
    assert train.targets.tolist() == ref_labels.tolist()
    for i in range(2):
        assert train[i].image.size == (96, 96)
        np.testing.assert_array_equal(np.asarray(train[i].image), ref_images[i].transpose(1, 2, 0))

    both = build_dataset("stl10", tmp_path, "train+unlabeled")
    assert len(both) == 5
    assert both.targets.tolist() == [0, 9, -1, -1, -1]
    np.testing.assert_array_equal(np.asarray(both[1].image), np.asarray(train[1].image))
    unlabeled = build_dataset("stl10", tmp_path, "unlabeled")
    np.testing.assert_array_equal(np.asarray(both[4].image), np.asarray(unlabeled[2].image))
    assert unlabeled[0].label == -1


def test_download_flag_is_passed_to_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets as tvd

    calls: list[tuple[str, bool, bool]] = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        _fake_cifar10(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", fake_cifar10)
    ds = build_dataset("cifar10", tmp_path / "dl", "val", download=True)
    assert calls == [(str(tmp_path / "dl"), False, True)]
    assert len(ds) == 3


def test_array_datasets_work_in_a_dataloader(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    ds = TwoViewDataset(build_dataset("cifar10", tmp_path, "train"), TwoViewTransform(32))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_two_views)))
    assert batch.view1.shape == (4, 3, 32, 32)
    assert batch.labels.tolist() == [2, 3, 4, 5]
    assert batch.labels.dtype == torch.long
