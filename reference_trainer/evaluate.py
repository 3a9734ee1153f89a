"""Evaluation of a frozen backbone: the weighted kNN monitor and the linear probe.

Both evaluations treat the backbone as a fixed feature extractor: it runs in eval mode, under
``torch.no_grad``, and is never updated. The linear probe proves it: it hashes every parameter
and buffer of the backbone before and after (:func:`fingerprint`) and raises if anything changed.

* :func:`extract_features` turns a loader into a ``(N, D)`` feature matrix and ``(N,)`` labels.
* :func:`knn_predict` / :func:`knn_classify` / :func:`knn_accuracy` / :func:`knn_evaluate` are
  the weighted kNN classifier of InstDisc, MoCo and DINO on precomputed features; :func:`knn_probe`
  runs it from a backbone and two loaders.
* :func:`linear_probe` trains a linear classifier on the frozen backbone with the
  hyperparameters of a :class:`LinearProbeSettings`.

Long passes report their progress through an optional ``progress(stage, done, total)``
callback (:data:`Progress`), called after every batch.

Loaders may be any iterable of batches where either ``batch[0]`` holds the images ``(B, C, H, W)``
and ``batch[1]`` the labels ``(B,)``, or the batch has ``images`` and ``labels`` attributes (the
trainer's evaluation batches). The backbone must already live on ``device`` and return pooled
features ``(B, D)`` (timm models created with ``num_classes=0``).

Every result is a dataclass with ``to_dict()`` giving plain JSON-serializable values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co._checks import check_choice, check_int, check_number

__all__ = [
    "KnnResult",
    "LinearProbeResult",
    "LinearProbeSettings",
    "Progress",
    "extract_features",
    "fingerprint",
    "knn_accuracy",
    "knn_classify",
    "knn_evaluate",
    "knn_predict",
    "knn_probe",
    "linear_probe",
]

ProbeMode = Literal["cached", "augmented"]

Progress: TypeAlias = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: called after each batch of a pass over a loader. ``stage``
names the pass (``"train features"``, ``"val features"``, ``"epoch 3/100"``), ``done`` counts
its batches so far and ``total`` is its length (None for a loader without ``len()``)."""

# ----------------------------------------------------------------------------------------------
# Batches and features
# ----------------------------------------------------------------------------------------------


def _unpack(batch: object) -> tuple[Tensor, Tensor]:
    """Images ``(B, C, H, W)`` and labels ``(B,)`` of one batch (attributes first, then indices)."""
    images: object
    labels: object
    if hasattr(batch, "images") and hasattr(batch, "labels"):
        images, labels = batch.images, batch.labels
    elif isinstance(batch, tuple | list) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
    else:
        raise TypeError(
            "batch: expected (images, labels, ...) or an object with .images and .labels, "
            f"got {type(batch).__name__}"
        )
    if not isinstance(images, Tensor):
        raise TypeError(f"batch images: expected a torch.Tensor, got {type(images).__name__}")
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"batch labels: expected shape ({images.shape[0]},) to match the images, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"batch labels: expected an integer tensor, got dtype {labels.dtype}")
    return images, labels


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _embed(
    backbone: nn.Module, images: Tensor, device: torch.device, amp_dtype: torch.dtype | None
) -> Tensor:
    """Pooled float32 features ``(B, D)`` of a batch; call under ``torch.no_grad``."""
    images = images.to(device, non_blocking=True)
    with _autocast(device, amp_dtype):
        out = backbone(images)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"backbone: expected pooled features of shape ({images.shape[0]}, D), got {got}; "
            "create timm models with num_classes=0"
        )
    return out.float()


def extract_features(
    backbone: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    normalize: bool = True,
    progress: Progress | None = None,
    stage: str = "features",
) -> tuple[Tensor, Tensor]:
    """Features of every image of a loader, from the backbone in eval mode without gradient.

    The backbone's train/eval mode is restored afterwards (also when an error interrupts).

    Args:
        backbone: Module on ``device`` mapping images ``(B, C, H, W)`` to features ``(B, D)``.
        loader: Iterable of batches, ``(images, labels, ...)`` or objects with ``images`` and
            ``labels`` attributes.
        device: Where the backbone runs; the features are returned on this device.
        amp_dtype: Autocast dtype (``torch.bfloat16``, ``torch.float16``) or None for full
            precision. Features are returned in float32 either way.
        normalize: L2-normalize each feature row.
        progress: Called as ``progress(stage, batches done, len(loader) or None)`` after each
            batch.
        stage: The name ``progress`` gets for this pass.

    Returns:
        ``(features, labels)``: float32 ``(N, D)`` and int64 ``(N,)``, on ``device``.

    Raises:
        ValueError: The loader is empty or the backbone does not return ``(B, D)``.
    """
    device = torch.device(device)
    was_training = backbone.training
    features: list[Tensor] = []
    labels: list[Tensor] = []
    total = len(loader) if isinstance(loader, Sized) else None
    backbone.eval()
    try:
        with torch.no_grad():
            for done, batch in enumerate(loader, start=1):
                images, y = _unpack(batch)
                f = _embed(backbone, images, device, amp_dtype)
                features.append(F.normalize(f, dim=1) if normalize else f)
                labels.append(y.to(device=device, dtype=torch.long))
                if progress is not None:
                    progress(stage, done, total)
    finally:
        backbone.train(was_training)
    if not features:
        raise ValueError("loader: expected at least one batch, got none")
    return torch.cat(features), torch.cat(labels)


# ----------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of a module: names, dtypes, shapes and bytes.

    Two modules have the same fingerprint exactly when their named tensors are bit-identical
    (up to hash collisions). Gradients, ``requires_grad`` flags and the train/eval mode are not
    part of it.

    Args:
        module: Any module; its tensors are copied to the CPU to be hashed.

    Returns:
        The hexadecimal digest (64 characters).
    """
    digest = hashlib.sha256()
    tensors: list[tuple[str, str, Tensor]] = [("param", n, t) for n, t in module.named_parameters()]
    tensors += [("buffer", n, t) for n, t in module.named_buffers()]
    for kind, name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{kind}:{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Weighted kNN
# ----------------------------------------------------------------------------------------------


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


def _check_ks(ks: object, n: int) -> tuple[int, ...]:
    if isinstance(ks, int) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise TypeError(f"ks: expected a non-empty sequence of ints, got {ks!r}")
    out = tuple(check_int("k", k, minimum=1) for k in ks)
    for k in out:
        if k > n:
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
    return 100.0 * float((pred == target.to(pred.device)).float().mean())


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


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProbeSettings:
    """The hyperparameters of a linear probe (a probe recipe is one set of them).

    The defaults aim at a probe whose training loss goes down on any backbone, with no tuning:

    * A BatchNorm without affine parameters standardises each feature before the linear layer
      (as MoCo v3's and MAE's probes do), so the step size does not depend on the scale of the
      features (a backbone whose features are 100 times larger probes the same).
    * A learning rate of 0.1 x batch / 512 with Nesterov momentum 0.9: a tenth of the MoBY /
      SynCo v2 rate. Standardised features are still correlated, and the largest eigenvalue of
      their correlation matrix (0.41 x the feature dimension for a DeiT-S at random
      initialisation on CIFAR-10) sets the largest stable step: at the MoBY rate that probe's
      loss jumps from 2.3 to 16 in the first epoch even with the BatchNorm, at this rate it
      decreases (``benchmarks/linear_probe_stability.py``, docs/benchmarks.md).

    The published recipes use other values: MoBY / SynCo v2 ``base_lr=1.0, warmup_epochs=5,
    batchnorm=False`` in augmented mode (with label smoothing 0.1 and gradient clipping at 5,
    which these settings do not cover), MoCo v3 ``base_lr=3.0, lr_reference_batch=256,
    epochs=90, nesterov=False, batchnorm=False``.

    Attributes:
        mode: ``"cached"``: features of the training set extracted once (fast; the training
            loader should use the evaluation transform); ``"augmented"``: every epoch iterates
            the training loader afresh (random crops and flips: the published recipe).
        epochs: Training epochs, >= 1.
        batch_size: Classifier batch size, >= 1; None means 256 in cached mode and the
            training loader's batch size in augmented mode.
        base_lr: Learning rate per ``lr_reference_batch`` samples, > 0; the peak learning rate
            is ``base_lr * batch_size / lr_reference_batch``.
        lr_reference_batch: The batch size at which the learning rate equals ``base_lr``.
        momentum: SGD momentum, in [0, 1).
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: SGD weight decay, >= 0.
        warmup_epochs: Linear warmup from 0 to the peak learning rate over this many epochs
            (fractions allowed), then cosine decay to 0; in ``[0, epochs)``.
        batchnorm: Put ``BatchNorm1d(D, affine=False)`` before the linear layer.

    Raises:
        ValueError: A value outside its range (the message names the attribute).
        TypeError: A value of the wrong type.
    """

    mode: ProbeMode = "cached"
    epochs: int = 100
    batch_size: int | None = None
    base_lr: float = 0.1
    lr_reference_batch: int = 512
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    batchnorm: bool = True

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("cached", "augmented"))
        check_int("epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        check_number("base_lr", self.base_lr, low=0.0, low_open=True)
        check_int("lr_reference_batch", self.lr_reference_batch, minimum=1)
        check_number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov: expected a bool, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: needs a momentum > 0, got momentum 0")
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_number(
            "warmup_epochs", self.warmup_epochs, low=0.0, high=float(self.epochs), high_open=True
        )
        if not isinstance(self.batchnorm, bool):
            raise TypeError(f"batchnorm: expected a bool, got {self.batchnorm!r}")

    def peak_lr(self, batch_size: int) -> float:
        """``base_lr * batch_size / lr_reference_batch``."""
        return self.base_lr * batch_size / self.lr_reference_batch

    def lr_at(self, step: int, steps_per_epoch: int, batch_size: int) -> float:
        """The learning rate of (0-based) training step ``step``: linear warmup, then cosine.

        The first step of the warmup already has a non-zero rate (``peak / warmup_steps``);
        without warmup the cosine starts at the peak and would reach 0 at step
        ``epochs * steps_per_epoch``.
        """
        peak = self.peak_lr(batch_size)
        total = self.epochs * steps_per_epoch
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return peak * (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LinearProbeResult:
    """Outcome of a linear probe.

    Attributes:
        train_top1: Top-1 accuracy (percent) over the last training epoch, each batch scored
            before its update step (on augmented images in ``"augmented"`` mode).
        train_top5: Top-5 accuracy (percent) over the last training epoch (top-``C`` when
            there are fewer than 5 classes).
        val_top1: Top-1 accuracy (percent) of the final classifier on the validation set.
        val_top5: Top-5 accuracy (percent) on the validation set.
        epochs: Training epochs.
        mode: ``"cached"`` or ``"augmented"``.
        lr: Peak learning rate, ``base_lr * batch_size / lr_reference_batch``.
        batch_size: Batch size of the classifier's training.
        batchnorm: Whether a BatchNorm without affine parameters precedes the linear layer.
        num_train: Training samples seen per epoch.
        num_val: Validation samples.
        fingerprint_before: :func:`fingerprint` of the backbone before the probe.
        fingerprint_after: :func:`fingerprint` of the backbone after the probe.
        settings: The hyperparameters used (``batch_size`` resolved).
        history: Per epoch: ``epoch``, mean ``loss``, ``top1`` (percent) and last ``lr``.
        classifier: The trained classifier (not part of :meth:`to_dict`).
    """

    train_top1: float
    train_top5: float
    val_top1: float
    val_top5: float
    epochs: int
    mode: str
    lr: float
    batch_size: int
    batchnorm: bool
    num_train: int
    num_val: int
    fingerprint_before: str
    fingerprint_after: str
    settings: LinearProbeSettings = field(default_factory=LinearProbeSettings)
    history: list[dict[str, float]] = field(default_factory=list)
    classifier: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def backbone_unchanged(self) -> bool:
        """True when the backbone's fingerprint is the same before and after."""
        return self.fingerprint_before == self.fingerprint_after

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable values (everything but the classifier)."""
        return {
            "evaluation": "linear",
            "train_top1": self.train_top1,
            "train_top5": self.train_top5,
            "val_top1": self.val_top1,
            "val_top5": self.val_top5,
            "epochs": self.epochs,
            "mode": self.mode,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "batchnorm": self.batchnorm,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "fingerprint_before": self.fingerprint_before,
            "fingerprint_after": self.fingerprint_after,
            "backbone_unchanged": self.backbone_unchanged,
            "settings": asdict(self.settings),
            "history": [dict(h) for h in self.history],
        }


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Number of rows whose label is among the ``k`` largest logits (a 0-dim tensor)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (B, k)
    return (top == labels[:, None]).any(dim=1).sum()


def _classifier_accuracy(
    classifier: nn.Module, features: Tensor, labels: Tensor, chunk: int = 4096
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent of ``classifier`` (eval mode) on ``(N, D)`` features."""
    classifier.eval()
    c1 = torch.zeros((), dtype=torch.long, device=features.device)
    c5 = torch.zeros_like(c1)
    with torch.no_grad():
        for start in range(0, features.shape[0], chunk):
            logits = classifier(features[start : start + chunk])
            y = labels[start : start + chunk]
            c1 += _topk_correct(logits, y, 1)
            c5 += _topk_correct(logits, y, 5)
    n = features.shape[0]
    return 100.0 * int(c1) / n, 100.0 * int(c5) / n


def _build_classifier(
    dim: int, num_classes: int, *, batchnorm: bool, generator: torch.Generator
) -> nn.Sequential:
    """``[BatchNorm1d(D, affine=False)] -> Linear(D, C)``, weights ~ N(0, 0.01^2), bias 0."""
    linear = nn.Linear(dim, num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(num_classes, dim, generator=generator) * 0.01)
        linear.bias.zero_()
    layers: list[nn.Module] = []
    if batchnorm:
        layers.append(nn.BatchNorm1d(dim, affine=False, eps=1e-6))
    layers.append(linear)
    return nn.Sequential(*layers)


def _check_labels_in_range(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def _resolve_batch_size(settings: LinearProbeSettings, train_loader: Iterable[Any]) -> int:
    """The classifier's batch size: the settings', else 256 (cached) or the loader's."""
    if settings.mode == "cached":
        return settings.batch_size or 256
    if not isinstance(train_loader, Sized):
        raise TypeError("train_loader: augmented mode needs a loader with len() (steps per epoch)")
    loader_batch = getattr(train_loader, "batch_size", None)
    if settings.batch_size is None:
        if not isinstance(loader_batch, int):
            raise ValueError(
                "batch_size: pass the batch size of train_loader (used for the learning rate)"
            )
        return loader_batch
    if isinstance(loader_batch, int) and loader_batch != settings.batch_size:
        raise ValueError(
            f"batch_size: expected the batch size of train_loader ({loader_batch}), "
            f"got {settings.batch_size}"
        )
    return settings.batch_size


def linear_probe(
    backbone: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    num_classes: int,
    device: torch.device | str,
    settings: LinearProbeSettings | None = None,
    seed: int = 0,
    amp_dtype: torch.dtype | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: Progress | None = None,
) -> LinearProbeResult:
    """Train a linear classifier on the frozen backbone and measure its accuracy.

    SGD (momentum, optionally Nesterov) on cross-entropy, classifier weights drawn from
    N(0, 0.01^2) with zero bias, after an optional BatchNorm without affine parameters; the
    learning rate warms up linearly then follows a cosine per step (see
    :class:`LinearProbeSettings`, whose defaults are used when ``settings`` is None).

    In ``"cached"`` mode the features of ``train_loader`` are extracted once and the classifier
    trains on them for ``settings.epochs`` epochs with its own shuffling (seeded). In
    ``"augmented"`` mode every epoch iterates ``train_loader`` afresh, computing the features of
    each batch with the backbone in eval mode under ``torch.no_grad``; steps per epoch are
    ``len(train_loader)``. The validation features (evaluation transform) are extracted once.
    With the BatchNorm, training batches of a single sample are skipped.

    The backbone is never updated: during the probe it is in eval mode with ``requires_grad``
    False on every parameter; its mode and flags are restored afterwards. Its :func:`fingerprint`
    is taken before and after.

    Args:
        backbone: Module on ``device`` mapping images ``(B, C, H, W)`` to features ``(B, D)``.
        train_loader: Training batches (see the modes above).
        val_loader: Validation batches with the evaluation transform.
        num_classes: Number of classes ``C``; labels must lie in ``[0, C)``.
        device: Where the backbone and the classifier run.
        settings: The probe's hyperparameters; None for the defaults.
        seed: Seed of the classifier's initialization and (cached mode) of its shuffling.
        amp_dtype: Autocast dtype for the backbone, or None.
        on_epoch: Called after each epoch with that epoch's history entry.
        progress: Called after each batch of a pass over a loader: stages
            ``"val features"``, then ``"train features"`` (cached mode) or ``"epoch e/E"``
            (augmented mode).

    Returns:
        A :class:`LinearProbeResult` (``backbone_unchanged`` is always True on return).

    Raises:
        RuntimeError: The backbone's parameters or buffers changed during the probe, or the
            training loss became non-finite.
        ValueError: Bad arguments, labels out of range, an empty loader.
    """
    device = torch.device(device)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    settings = LinearProbeSettings() if settings is None else settings
    if not isinstance(settings, LinearProbeSettings):
        raise TypeError(f"settings: expected LinearProbeSettings, got {type(settings).__name__}")
    settings = dataclasses.replace(settings, batch_size=_resolve_batch_size(settings, train_loader))

    flags = {name: p.requires_grad for name, p in backbone.named_parameters()}
    was_training = backbone.training
    before = fingerprint(backbone)
    try:
        for p in backbone.parameters():
            p.requires_grad_(False)
        backbone.eval()
        classifier, history, train_top1, train_top5, num_train, val = _train_probe(
            backbone,
            train_loader,
            val_loader,
            num_classes=num_classes,
            device=device,
            settings=settings,
            seed=seed,
            amp_dtype=amp_dtype,
            on_epoch=on_epoch,
            progress=progress,
        )
    finally:
        for name, p in backbone.named_parameters():
            p.requires_grad_(flags[name])
        backbone.train(was_training)
    after = fingerprint(backbone)
    if after != before:
        raise RuntimeError(
            "linear_probe: the backbone's parameters or buffers changed during the probe "
            f"(fingerprint {before[:12]}... -> {after[:12]}...)"
        )
    val_features, val_labels = val
    val_top1, val_top5 = _classifier_accuracy(classifier, val_features, val_labels)
    assert settings.batch_size is not None
    return LinearProbeResult(
        train_top1=train_top1,
        train_top5=train_top5,
        val_top1=val_top1,
        val_top5=val_top5,
        epochs=settings.epochs,
        mode=settings.mode,
        lr=settings.peak_lr(settings.batch_size),
        batch_size=settings.batch_size,
        batchnorm=settings.batchnorm,
        num_train=num_train,
        num_val=int(val_features.shape[0]),
        fingerprint_before=before,
        fingerprint_after=after,
        settings=settings,
        history=history,
        classifier=classifier,
    )


def _train_probe(
    backbone: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    num_classes: int,
    device: torch.device,
    settings: LinearProbeSettings,
    seed: int,
    amp_dtype: torch.dtype | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
    progress: Progress | None,
) -> tuple[nn.Module, list[dict[str, float]], float, float, int, tuple[Tensor, Tensor]]:
    """The training loop of :func:`linear_probe` (the backbone is already frozen)."""
    batch_size = settings.batch_size
    assert batch_size is not None
    val_features, val_labels = extract_features(
        backbone,
        val_loader,
        device=device,
        amp_dtype=amp_dtype,
        normalize=False,
        progress=progress,
        stage="val features",
    )
    _check_labels_in_range(val_labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    classifier = _build_classifier(
        val_features.shape[1], num_classes, batchnorm=settings.batchnorm, generator=generator
    ).to(device)
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        lr=settings.peak_lr(batch_size),
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
    )

    train_cache: tuple[Tensor, Tensor] | None = None
    if settings.mode == "cached":
        train_cache = extract_features(
            backbone,
            train_loader,
            device=device,
            amp_dtype=amp_dtype,
            normalize=False,
            progress=progress,
            stage="train features",
        )
        _check_labels_in_range(train_cache[1], num_classes)
        steps_per_epoch = math.ceil(train_cache[0].shape[0] / batch_size)
    else:
        steps_per_epoch = len(train_loader)  # type: ignore[arg-type]

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of ``(features (B, D), labels (B,))`` training batches."""
        if train_cache is not None:
            features, labels = train_cache
            perm = torch.randperm(features.shape[0], generator=generator).to(device)
            for start in range(0, perm.shape[0], batch_size):
                idx = perm[start : start + batch_size]
                yield features[idx], labels[idx]
            return
        for batch in train_loader:
            images, y = _unpack(batch)
            y = y.to(device=device, dtype=torch.long)
            _check_labels_in_range(y, num_classes)
            with torch.no_grad():
                features = _embed(backbone, images, device, amp_dtype)
            yield features, y

    history: list[dict[str, float]] = []
    step = 0
    seen = 0
    top1 = top5 = 0.0
    lr = settings.peak_lr(batch_size)
    for epoch in range(settings.epochs):
        stage = f"epoch {epoch + 1}/{settings.epochs}"
        classifier.train()
        loss_sum = torch.zeros((), device=device)
        c1 = torch.zeros((), dtype=torch.long, device=device)
        c5 = torch.zeros_like(c1)
        seen = 0
        for done, (features, labels) in enumerate(batches(), start=1):
            if progress is not None and train_cache is None:  # a pass over the loader
                progress(stage, done, steps_per_epoch)
            if settings.batchnorm and features.shape[0] < 2:
                continue
            lr = settings.lr_at(step, steps_per_epoch, batch_size)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = classifier(features)  # (B, C)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            step += 1
            n = features.shape[0]
            seen += n
            loss_sum += loss.detach() * n
            logits = logits.detach()
            c1 += _topk_correct(logits, labels, 1)
            c5 += _topk_correct(logits, labels, 5)
        if seen == 0:
            raise ValueError("train_loader: expected at least one usable batch, got none")
        mean_loss = float(loss_sum) / seen
        if not math.isfinite(mean_loss):
            raise RuntimeError(
                f"linear_probe: non-finite training loss in epoch {epoch + 1}; lower base_lr"
            )
        top1, top5 = 100.0 * int(c1) / seen, 100.0 * int(c5) / seen
        entry = {"epoch": float(epoch + 1), "loss": mean_loss, "top1": top1, "lr": lr}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(dict(entry))
    return classifier, history, top1, top5, seen, (val_features, val_labels)
