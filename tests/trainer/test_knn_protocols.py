"""kNN as SynCo v2's ``eval_knn.py`` measured it (``eval knn --protocol synco-v2``), checked
against a plain re-implementation of that script's rank-0 loop written here."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torchvision import datasets, transforms
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.data.pipeline import (
    dataset_for,
    evaluation_transform,
    image_loader,
    probe_train_transform,
)
from reference_trainer.evaluate import KnnSettings, knn_shards
from reference_trainer.evaluate.protocols import FULL_KNN, KNN_PROTOCOLS, SYNCO_V2_KNN
from reference_trainer.pretrained import load_backbone, load_run

from .conftest import TINY_DEIT, write_image_folder

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 5, 24, 16  # 120 training, 80 validation images


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("knn-data")
    train = write_image_folder(root / "train", classes=CLASSES, per_class=TRAIN_PER_CLASS)
    val = write_image_folder(root / "val", classes=CLASSES, per_class=VAL_PER_CLASS)
    return train, val


@pytest.fixture(scope="module")
def run(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, val = folders
    out = tmp_path_factory.mktemp("knn-run") / "run"
    args = ["run", "--out", str(out), *TINY_DEIT, "--img-size", "32", "--workers", "0"]
    args += ["--dataset", "imagefolder", "--data", str(train), "--val-data", str(val)]
    args += ["--batch-size", "8", "--queue-size", "16", "--steps", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------------
# The official loop, written plainly
# --------------------------------------------------------------------------------------------


def official_rank0_knn(
    backbone: torch.nn.Module,
    train_dir: Path,
    val_dir: Path,
    *,
    world: int,
    batch: int,
    ks: tuple[int, ...],
    temperature: float,
) -> tuple[dict[int, float], int, int]:
    """What rank 0 of SynCo v2's ``eval_knn.py`` on ``world`` GPUs logs, with the evaluation
    transform for the training images too (so that both sides see the same pixels): top-1 per
    k, the training images rank 0 embeds and its validation images.

    A ``DistributedSampler`` (shuffle, seed 0, epoch 0) pads the shuffled indices to a multiple
    of ``world`` and deals them out; the loader drops the last incomplete batch; the features go
    into a zero matrix with a row per image of the whole training set, filled from the top; each
    validation image of rank 0 (every ``world``-th) votes with its k most similar rows, weighted
    by exp(similarity / temperature). Nothing is gathered from the other ranks.
    """
    tf = transforms.Compose(
        [
            transforms.Resize(32),  # torchvision's default interpolation: bilinear
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    train_set = datasets.ImageFolder(str(train_dir), transform=tf)
    val_set = datasets.ImageFolder(str(val_dir), transform=tf)
    n, n_val = len(train_set), len(val_set)

    generator = torch.Generator()
    generator.manual_seed(0)
    order = torch.randperm(n, generator=generator).tolist()
    per_rank = math.ceil(n / world)
    order += order[: per_rank * world - n]
    mine = order[0::world]
    batches = [mine[i : i + batch] for i in range(0, len(mine) - batch + 1, batch)]

    backbone.eval()
    bank: torch.Tensor | None = None
    bank_labels: list[int] = []
    with torch.no_grad():
        for b, indices in enumerate(batches):
            images = torch.stack([train_set[i][0] for i in indices])
            feats = backbone(images)
            if bank is None:
                bank = torch.zeros(n, feats.shape[1])
            bank[b * batch : b * batch + len(indices)] = feats
            bank_labels += [train_set.targets[i] for i in indices]
    assert bank is not None
    bank = F.normalize(bank, dim=1)

    val_indices = list(range(0, n_val, world))  # the order does not change the accuracy
    query = torch.zeros(n_val, bank.shape[1])
    with torch.no_grad():
        for start in range(0, len(val_indices), batch):
            chunk = val_indices[start : start + batch]
            query[start : start + len(chunk)] = backbone(
                torch.stack([val_set[i][0] for i in chunk])
            )
    query = F.normalize(query, dim=1)[: len(val_indices)]
    query_labels = [val_set.targets[i] for i in val_indices]

    top1: dict[int, float] = {}
    for k in ks:
        correct = 0
        for q, label in zip(query, query_labels, strict=True):
            sims = bank @ q  # a zero row (an image of another rank) scores 0
            best = sims.topk(k)
            votes = [0.0] * CLASSES
            for s, j in zip(best.values.tolist(), best.indices.tolist(), strict=True):
                votes[bank_labels[j]] += math.exp(s / temperature)  # IndexError on a zero row
            correct += int(max(range(CLASSES), key=lambda c: votes[c]) == label)
        top1[k] = 100.0 * correct / len(query_labels)
    return top1, len(bank_labels), len(query_labels)


# --------------------------------------------------------------------------------------------
# The protocol through the CLI against the official loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shards", "batch"), [(None, 4), (7, 4), (1, 16)])
def test_synco_v2_knn_matches_the_official_rank0_loop(
    run: Path, folders: tuple[Path, Path], tmp_path: Path, shards: int | None, batch: int
) -> None:
    out = tmp_path / "knn.json"
    args = ["eval", "knn", str(run), "--protocol", "synco-v2", "--train-transform", "eval"]
    args += ["--batch-size", str(batch), "--k", "3", "--k", "5", "--workers", "0"]
    args += ["--out", str(out)] + (["--shards", str(shards)] if shards else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    world = shards or 8  # the README's 8 GPUs by default
    assert saved["settings"]["shards"] == world and saved["settings"]["drop_last"] is True
    backbone, _ = load_backbone(run)
    expected, n_bank, n_query = official_rank0_knn(
        backbone, *folders, world=world, batch=batch, ks=(3, 5), temperature=0.07
    )
    got = saved["pretrained"]
    assert (got["num_train"], got["num_test"]) == (n_bank, n_query)
    assert {int(k): v for k, v in got["top1"].items()} == pytest.approx(expected, abs=1e-9)
    n = CLASSES * TRAIN_PER_CLASS
    assert n_bank == math.ceil(n / world) // batch * batch  # whole batches of rank 0's share
    assert saved["split_sizes"] == {"train": n, "val": CLASSES * VAL_PER_CLASS}


def test_knn_shards_are_rank_shares_of_a_distributed_sampler() -> None:
    for n, world, batch in [(120, 8, 4), (10, 3, 1), (7, 8, 1), (1000, 6, 64), (5, 1, 2)]:
        settings = KnnSettings(shards=world, batch_size=batch, drop_last=True)
        generator = torch.Generator()
        generator.manual_seed(0)
        order = torch.randperm(n, generator=generator).tolist()
        padded = (order * (world // n + 2))[: math.ceil(n / world) * world]
        shares = [knn_shards(n, 33, settings, rank=r) for r in range(world)]
        for rank, (train, val) in enumerate(shares):
            whole = padded[rank::world]
            assert train == whole[: len(whole) // batch * batch]
            assert val == list(range(rank, 33, world))
        loose = dataclasses.replace(settings, drop_last=False)
        covered = {i for r in range(world) for i in knn_shards(n, 33, loose, rank=r)[0]}
        assert covered == set(range(n))  # every image in some rank's share
        assert sorted(i for _, val in shares for i in val) == list(range(33))
    with pytest.raises(ValueError, match="rank: expected a rank below shards=8"):
        knn_shards(10, 10, SYNCO_V2_KNN, rank=8)


def test_protocol_values_follow_the_official_script() -> None:
    assert set(KNN_PROTOCOLS) == {"full", "synco-v2"}
    assert KnnSettings() == FULL_KNN and not FULL_KNN.sharded
    assert FULL_KNN.interpolation == "bicubic" and FULL_KNN.train_transform == "eval"
    official = (
        (10, 20, 100, 200),  # eval_knn.py:43
        0.07,  # eval_knn.py:44
        "augmented",  # eval_knn.py:61-62 -> the linear-eval training transform
        "bilinear",  # transform.py:155 (torchvision's default)
        8,  # README.md:127
        True,  # builder.py:75
        64,  # config.py:22
        0,  # builder.py:58-63, DistributedSampler's default seed
    )
    assert dataclasses.astuple(SYNCO_V2_KNN) == official
    with pytest.raises(ValueError, match="shards: expected an int >= 1, got 0"):
        KnnSettings(shards=0)
    with pytest.raises(ValueError, match="k: expected an int >= 1, got 0"):
        KnnSettings(ks=(5, 0))


def test_augmented_training_images_are_random_crops_fixed_by_the_seed(run: Path) -> None:
    cfg, _ = load_run(run)
    train = dataset_for(cfg, "train")
    indices = list(range(0, 40, 3))

    def images(transform: Any, seed: int | None, workers: int = 0) -> torch.Tensor:
        loader = image_loader(
            train, transform, batch_size=5, workers=workers, indices=indices, seed=seed
        )
        return torch.cat([batch.images for batch in loader])

    crops = probe_train_transform(32, "bilinear")
    first = images(crops, seed=1)
    assert first.shape == (len(indices), 3, 32, 32)
    assert torch.equal(first, images(crops, seed=1, workers=2))  # the same whatever the workers
    assert not torch.equal(first, images(crops, seed=2))
    plain = images(evaluation_transform(32, "bilinear"), seed=None)
    assert not torch.equal(first, plain)
    labels = torch.cat([b.labels for b in image_loader(train, crops, batch_size=7, workers=0)])
    assert labels.tolist() == [int(train.targets[i]) for i in range(len(train))]


def test_cli_synco_v2_knn_reads_augmented_shares_reproducibly(run: Path, tmp_path: Path) -> None:
    outs = [tmp_path / f"{i}.json" for i in range(2)]
    for out in outs:
        args = ["eval", "knn", str(run), "--protocol", "synco-v2", "--batch-size", "4"]
        result = CliRunner().invoke(app, [*args, "--k", "3", "--workers", "0", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "rank 0 of 8 shards: 12 of 120 training images (augmented transform)" in (
            " ".join(result.output.split())
        )
    first, second = (json.loads(o.read_text()) for o in outs)
    expected = dataclasses.asdict(dataclasses.replace(SYNCO_V2_KNN, batch_size=4, ks=(3,)))
    assert first["settings"] == json.loads(json.dumps(expected))
    assert first["pretrained"] == second["pretrained"]  # the seed fixes the crops
    assert first["pretrained"]["num_train"] == 12 and first["pretrained"]["num_test"] == 10


def test_a_shard_without_a_whole_batch_is_one_line(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", "knn", str(run), "--protocol", "synco-v2", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("error: --batch-size: rank 0's training shard at --shards 8 holds")
    assert "no whole batch of 64 (of 120 training images" in lines[0]
    assert not (tmp_path / "x").exists()
