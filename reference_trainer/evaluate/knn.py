"""The weighted kNN classifier of InstDisc, MoCo and DINO on a frozen backbone's features.

:func:`knn_predict` / :func:`knn_classify` / :func:`knn_accuracy` / :func:`knn_evaluate` work on
precomputed features; :func:`knn_probe` extracts them from a backbone and two loaders first.
:class:`KnnSettings` is a kNN protocol (which images, which transform, which ``k``) and
:func:`knn_shards` the images one rank of a multi-GPU kNN evaluation classifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

from syn2co._checks import check_choice, check_int, check_number

from .features import Progress, extract_features

__all__ = [
    "KnnResult",
    "KnnSettings",
    "knn_accuracy",
    "knn_classify",
    "knn_evaluate",
    "knn_predict",
    "knn_probe",
    "knn_shards",
]

KnnTransform = Literal["eval", "augmented"]


@dataclass(frozen=True)
class KnnSettings:
    """A kNN protocol: the classifier's settings and the images it reads.

    The protocols by name are in :mod:`reference_trainer.evaluate.protocols` (``full``, the
    default, and ``synco-v2``). :func:`knn_probe` takes its loaders as given: ``syn2co-train
    eval knn`` builds them from these settings (:func:`knn_shards` for the images).

    Attributes:
        ks: Neighbour counts, each >= 1.
        temperature: Weight temperature of the votes, > 0.
        train_transform: The training images' transform: ``"eval"`` (resize, center crop) or
            ``"augmented"`` (one random resized crop and flip per image, as SynCo v2's
            ``eval_knn.py`` reads them).
        interpolation: ``"bicubic"`` or ``"bilinear"``, for every resize of the images.
        shards: The number of processes the protocol spreads the images over (the official
            script's GPUs), >= 1; the evaluation runs the first one's share (rank 0's), as the
            official script logs rank 0's number: a ``DistributedSampler`` shard of the
            training set and every ``shards``-th validation image.
        drop_last: Cut the training shard to whole batches of ``batch_size`` (the official
            loader's ``drop_last``).
        batch_size: Images per batch of feature extraction (per shard), >= 1.
        shard_seed: The ``DistributedSampler`` seed that shuffles the training set before it
            is sharded (epoch 0).

    Raises:
        ValueError: A value outside its range (the message names the attribute).
        TypeError: A value of the wrong type.
    """

    ks: tuple[int, ...] = (10, 20, 100, 200)
    temperature: float = 0.07
    train_transform: KnnTransform = "eval"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    shards: int = 1
    drop_last: bool = False
    batch_size: int = 256
    shard_seed: int = 0

    def __post_init__(self) -> None:
        _check_ks(self.ks, None)
        check_number("temperature", self.temperature, low=0.0, low_open=True)
        check_choice("train_transform", self.train_transform, ("eval", "augmented"))
        check_choice("interpolation", self.interpolation, ("bicubic", "bilinear"))
        check_int("shards", self.shards, minimum=1)
        if not isinstance(self.drop_last, bool):
            raise TypeError(f"drop_last: expected a bool, got {self.drop_last!r}")
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("shard_seed", self.shard_seed, minimum=0)

    @property
    def sharded(self) -> bool:
        """Whether the protocol reads a part of the images or reorders them (more than one
        shard, or a training set cut to whole batches)."""
        return self.shards > 1 or self.drop_last


def knn_shards(
    num_train: int, num_val: int, settings: KnnSettings, *, rank: int = 0
) -> tuple[list[int], list[int]]:
    """The training and validation images that rank ``rank`` of a ``settings.shards``-process
    kNN evaluation classifies, as a multi-GPU script shards them.

    Training: the indices a ``torch.utils.data.DistributedSampler`` gives that rank (the set
    shuffled with ``settings.shard_seed`` at epoch 0, padded with its first indices to a
    multiple of ``shards``, every ``shards``-th index from ``rank``), cut to whole batches of
    ``settings.batch_size`` when ``settings.drop_last``. Validation: every ``shards``-th index
    from ``rank``, in order.

    Args:
        num_train: Images in the training split.
        num_val: Images in the validation split.
        settings: The protocol.
        rank: Which shard, in ``[0, shards)``.

    Returns:
        ``(train indices, val indices)``.
    """
    check_int("num_train", num_train, minimum=0)
    check_int("num_val", num_val, minimum=0)
    check_int("rank", rank, minimum=0)
    if rank >= settings.shards:
        raise ValueError(f"rank: expected a rank below shards={settings.shards}, got {rank}")
    sampler: DistributedSampler[int] = DistributedSampler(
        cast(Dataset[int], range(num_train)),  # the sampler reads only its length
        num_replicas=settings.shards,
        rank=rank,
        shuffle=True,
        seed=settings.shard_seed,
    )
    train = list(sampler) if num_train else []
    if settings.drop_last:
        train = train[: len(train) // settings.batch_size * settings.batch_size]
    return train, list(range(rank, num_val, settings.shards))


def _check_features(name: str, t: object, dim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a non-empty tensor of shape (N, D), got {tuple(t.shape)}"
        )
    if dim is not None and t.shape[1] != dim:
        raise ValueError(
            f"{name}: expected shape (M, {dim}) to match train_features, got {tuple(t.shape)}"
        )
    return t


def _check_labels(name: str, t: object, n: int, num_classes: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {t.dtype}")
    if tuple(t.shape) != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(
            f"{name}: expected labels in [0, {num_classes}), got values in "
            f"[{int(t.min())}, {int(t.max())}]"
        )
    return t.long()


def _check_ks(ks: object, n: int | None) -> tuple[int, ...]:
    if isinstance(ks, int) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise TypeError(f"ks: expected a non-empty sequence of ints, got {ks!r}")
    out = tuple(check_int("k", k, minimum=1) for k in ks)
    for k in out:
        if n is not None and k > n:
            raise ValueError(f"k: expected k <= {n} (the number of training samples), got {k}")
    return out


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int,
    ks: Sequence[int] = (20,),
    temperature: float = 0.07,
    chunk_size: int = 256,
) -> dict[int, Tensor]:
    """Weighted kNN predictions for several ``k`` at once (InstDisc / MoCo / DINO monitor).

    Each test row votes with its ``k`` most cosine-similar training rows; neighbour ``j`` adds
    ``exp(s_j / temperature)`` to the score of its class and the prediction is the class with
    the highest score (ties go to the lowest class index). The top-k search runs once, for the
    largest ``k``; smaller ``k`` reuse its leading columns. Test rows are processed in chunks of
    ``chunk_size``, so memory is ``O(chunk_size * N)``. The weights are computed as
    ``exp((s_j - s_max) / temperature)``, which rescales every vote of a row by the same
    factor: same predictions, no overflow at small temperatures.

    Args:
        train_features: ``(N, D)`` floating point; normalized here. The computation runs on
            its device.
        train_labels: ``(N,)`` integers in ``[0, num_classes)``.
        test_features: ``(M, D)`` floating point; normalized here.
        num_classes: Number of classes ``C``.
        ks: Neighbour counts, each in ``[1, N]``.
        temperature: Weight temperature, > 0.
        chunk_size: Test rows per chunk, >= 1.

    Returns:
        ``{k: predictions}`` with int64 predictions ``(M,)`` on the device of ``test_features``.

    Raises:
        ValueError: A ``k`` exceeds ``N``, labels are out of range or shapes disagree.
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    train = _check_features("train_features", train_features)
    test = _check_features("test_features", test_features, dim=train.shape[1])
    n = train.shape[0]
    labels = _check_labels("train_labels", train_labels, n, num_classes).to(train.device)
    ks = _check_ks(ks, n)
    temperature = check_number("temperature", temperature, low=0.0, low_open=True)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)

    k_max = max(ks)
    bank_t = F.normalize(train.float(), dim=1).T  # (D, N)
    preds = {k: torch.empty(test.shape[0], dtype=torch.long, device=test.device) for k in ks}
    for start in range(0, test.shape[0], chunk_size):
        query = F.normalize(test[start : start + chunk_size].to(bank_t.device).float(), dim=1)
        sim = query @ bank_t  # (c, N)
        top_sim, top_idx = sim.topk(k_max, dim=1)  # (c, k_max), sorted descending
        top_labels = labels[top_idx]  # (c, k_max)
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (c, k_max), in (0, 1]
        for k in ks:
            votes = torch.zeros(query.shape[0], num_classes, device=bank_t.device)
            votes.scatter_add_(1, top_labels[:, :k], weights[:, :k])  # (c, C)
            preds[k][start : start + query.shape[0]] = votes.argmax(dim=1).to(test.device)
    return preds


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 256,
) -> Tensor:
    """Weighted kNN predictions ``(M,)`` for one ``k``; see :func:`knn_predict`.

    Args:
        train_features: ``(N, D)`` floating point.
        train_labels: ``(N,)`` integers in ``[0, num_classes)``.
        test_features: ``(M, D)`` floating point.
        num_classes: Number of classes ``C``.
        k: Neighbours, in ``[1, N]``.
        temperature: Weight temperature, > 0.
        chunk_size: Test rows per chunk.

    Returns:
        int64 predicted labels ``(M,)``.
    """
    return knn_predict(
        train_features,
        train_labels,
        test_features,
        num_classes=num_classes,
        ks=(k,),
        temperature=temperature,
        chunk_size=chunk_size,
    )[k]


def _percent_correct(pred: Tensor, target: Tensor) -> float:
    return 100.0 * int((pred == target.to(pred.device)).sum()) / pred.numel()


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 256,
) -> float:
    """Top-1 accuracy in percent of the weighted kNN classifier; see :func:`knn_predict`.

    Args:
        train_features: ``(N, D)`` floating point.
        train_labels: ``(N,)`` integers in ``[0, num_classes)``.
        test_features: ``(M, D)`` floating point.
        test_labels: ``(M,)`` integers.
        num_classes: Number of classes ``C``.
        k: Neighbours, in ``[1, N]``.
        temperature: Weight temperature, > 0.
        chunk_size: Test rows per chunk.

    Returns:
        Percentage of test rows classified correctly, in ``[0, 100]``.
    """
    return knn_evaluate(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        ks=(k,),
        temperature=temperature,
        chunk_size=chunk_size,
    ).top1[k]


@dataclass(frozen=True)
class KnnResult:
    """Outcome of a weighted kNN evaluation.

    Attributes:
        top1: ``{k: top-1 accuracy in percent}``.
        temperature: The weight temperature.
        num_train: Training rows ``N``.
        num_test: Test rows ``M``.
        num_classes: Classes ``C``.
    """

    top1: dict[int, float]
    temperature: float
    num_train: int
    num_test: int
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable values (the keys of ``top1`` become strings)."""
        return {
            "evaluation": "knn",
            "top1": {str(k): v for k, v in sorted(self.top1.items())},
            "temperature": self.temperature,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_classes": self.num_classes,
        }


def knn_evaluate(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    ks: Sequence[int] = (10, 20, 200),
    temperature: float = 0.07,
    chunk_size: int = 256,
) -> KnnResult:
    """Top-1 accuracy of the weighted kNN classifier for several ``k`` (one top-k search).

    Args:
        train_features: ``(N, D)`` floating point.
        train_labels: ``(N,)`` integers in ``[0, num_classes)``.
        test_features: ``(M, D)`` floating point.
        test_labels: ``(M,)`` integers.
        num_classes: Number of classes ``C``.
        ks: Neighbour counts, each in ``[1, N]``.
        temperature: Weight temperature, > 0.
        chunk_size: Test rows per chunk.

    Returns:
        A :class:`KnnResult`.
    """
    m = test_features.shape[0] if isinstance(test_features, Tensor) else 0
    if not isinstance(test_labels, Tensor) or tuple(test_labels.shape) != (m,):
        got = tuple(test_labels.shape) if isinstance(test_labels, Tensor) else type(test_labels)
        raise ValueError(f"test_labels: expected shape ({m},), got {got}")
    preds = knn_predict(
        train_features,
        train_labels,
        test_features,
        num_classes=num_classes,
        ks=ks,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    return KnnResult(
        top1={k: _percent_correct(p, test_labels) for k, p in preds.items()},
        temperature=float(temperature),
        num_train=int(train_features.shape[0]),
        num_test=m,
        num_classes=num_classes,
    )


def knn_probe(
    backbone: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    *,
    num_classes: int,
    device: torch.device | str,
    ks: Sequence[int] = (10, 20, 200),
    temperature: float = 0.07,
    amp_dtype: torch.dtype | None = None,
    chunk_size: int = 256,
    progress: Progress | None = None,
) -> KnnResult:
    """Weighted kNN accuracy of a backbone: extract normalized features, then classify.

    Both loaders should use the evaluation transform (no augmentation).

    Args:
        backbone: Module on ``device`` mapping images ``(B, C, H, W)`` to features ``(B, D)``.
        train_loader: Batches of the memory bank (the training set).
        test_loader: Batches to classify.
        num_classes: Number of classes ``C``.
        device: Where the backbone and the kNN search run.
        ks: Neighbour counts.
        temperature: Weight temperature.
        amp_dtype: Autocast dtype for the backbone, or None.
        chunk_size: Test rows per chunk of the kNN search.
        progress: Called after each batch (stages ``"train features"``, ``"val features"``).

    Returns:
        A :class:`KnnResult`.
    """
    train_f, train_y = extract_features(
        backbone,
        train_loader,
        device=device,
        amp_dtype=amp_dtype,
        progress=progress,
        stage="train features",
    )
    test_f, test_y = extract_features(
        backbone,
        test_loader,
        device=device,
        amp_dtype=amp_dtype,
        progress=progress,
        stage="val features",
    )
    return knn_evaluate(
        train_f,
        train_y,
        test_f,
        test_y,
        num_classes=num_classes,
        ks=ks,
        temperature=temperature,
        chunk_size=chunk_size,
    )
