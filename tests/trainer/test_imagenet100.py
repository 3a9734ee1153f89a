"""--dataset imagenet100: CMC's 100 classes selected from an ImageNet root, train and val."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reference_trainer.config import TrainConfig
from reference_trainer.data import DatasetNotFoundError, build_dataset, imagenet100_classes
from reference_trainer.data.pipeline import dataset_for, eval_loader

from .conftest import write_fake_imagenet

# A few ids of CMC's list, written out by hand (github.com/HobbitLong/CMC imagenet100.txt).
SOME_CMC_IDS = ("n02869837", "n01749939", "n02488291", "n13037406", "n02090622")


def test_class_list_is_cmcs_hundred_ids() -> None:
    classes = imagenet100_classes()
    assert len(classes) == len(set(classes)) == 100
    assert list(classes) == sorted(classes)
    assert set(SOME_CMC_IDS) <= set(classes)
    assert all(c.startswith("n") and len(c) == 9 and c[1:].isdigit() for c in classes)


def test_selects_the_hundred_classes_and_ignores_the_rest(tmp_path: Path) -> None:
    root = write_fake_imagenet(tmp_path / "imagenet", per_class=2, distractors=3)
    train = build_dataset("imagenet100", root, "train")
    val = build_dataset("imagenet100", root, "val")
    for ds in (train, val):
        assert ds.classes == imagenet100_classes() and ds.num_classes == 100
        assert len(ds) == 200  # 2 images in each of the 100 folders; the 3 distractors dropped
        paths = [ds.path(i) for i in range(len(ds))]  # type: ignore[attr-defined]
        assert not any("n9999999" in p for p in paths)
        for i in (0, 57, 199):
            item = ds[i]
            assert Path(paths[i]).parent.name == imagenet100_classes()[item.label]
    cfg = TrainConfig(dataset="imagenet100", data=str(root), img_size=32, workers=0)
    assert len(dataset_for(cfg, "train")) == 200
    batch = next(iter(eval_loader(cfg, "val", batch_size=8)))
    assert tuple(batch.images.shape) == (8, 3, 32, 32)


def test_missing_classes_and_split_are_clear_errors(tmp_path: Path) -> None:
    root = write_fake_imagenet(tmp_path / "imagenet", distractors=0)
    shutil.rmtree(root / "train" / SOME_CMC_IDS[0])
    with pytest.raises(
        DatasetNotFoundError, match=f"1 of its 100 class folders.*{SOME_CMC_IDS[0]}"
    ) as missing:
        build_dataset("imagenet100", root, "train")
    # the way to a subset is in the message, and it works
    assert f"--dataset imagefolder --data {root / 'train'} --val-data {root / 'val'}" in str(
        missing.value
    )
    shutil.rmtree(root / "val" / SOME_CMC_IDS[0])  # a subset: the same 99 folders in both
    subset = TrainConfig(
        dataset="imagefolder", data=str(root / "train"), val_data=str(root / "val"), workers=0
    )
    assert dataset_for(subset, "train").num_classes == 99
    assert dataset_for(subset, "val").num_classes == 99  # the training split's classes
    with pytest.raises(DatasetNotFoundError, match="pass the root, the folder holding train/"):
        build_dataset("imagenet100", root / "val", "train")
