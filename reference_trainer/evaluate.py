"""Evaluation of a frozen backbone: the weighted kNN monitor and the linear probe.

Both evaluations treat the backbone as a fixed feature extractor: it runs in eval mode, under
``torch.no_grad``, and is never updated. The linear probe proves it: it hashes every parameter
and buffer of the backbone before and after (:func:`fingerprint`) and raises if anything changed.

* :func:`extract_features` turns a loader into a ``(N, D)`` feature matrix and ``(N,)`` labels.
* :func:`knn_predict` / :func:`knn_classify` / :func:`knn_accuracy` / :func:`knn_evaluate` are
  the weighted kNN classifier of InstDisc, MoCo and DINO on precomputed features; :func:`knn_probe`
  runs it from a backbone and two loaders.
* :func:`linear_probe` trains a linear classifier on the frozen backbone (the published recipes).

Loaders may be any iterable of batches where either ``batch[0]`` holds the images ``(B, C, H, W)``
and ``batch[1]`` the labels ``(B,)``, or the batch has ``images`` and ``labels`` attributes (the
trainer's evaluation batches). The backbone must already live on ``device`` and return pooled
features ``(B, D)`` (timm models created with ``num_classes=0``).

Every result is a dataclass with ``to_dict()`` giving plain JSON-serializable values.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co._checks import check_choice, check_int, check_number

__all__ = [
    "KnnResult",
    "LinearProbeResult",
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

    Returns:
        ``(features, labels)``: float32 ``(N, D)`` and int64 ``(N,)``, on ``device``.

    Raises:
        ValueError: The loader is empty or the backbone does not return ``(B, D)``.
    """
    device = torch.device(device)
    was_training = backbone.training
    features: list[Tensor] = []
    labels: list[Tensor] = []
    backbone.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                images, y = _unpack(batch)
                f = _embed(backbone, images, device, amp_dtype)
                features.append(F.normalize(f, dim=1) if normalize else f)
                labels.append(y.to(device=device, dtype=torch.long))
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

    Returns:
        A :class:`KnnResult`.
    """
    train_f, train_y = extract_features(backbone, train_loader, device=device, amp_dtype=amp_dtype)
    test_f, test_y = extract_features(backbone, test_loader, device=device, amp_dtype=amp_dtype)
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


def _cosine_lr(peak: float, step: int, total: int) -> float:
    """Cosine decay from ``peak`` at step 0 towards 0 at step ``total``."""
    progress = min(step / max(total, 1), 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_labels_in_range(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def linear_probe(
    backbone: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    num_classes: int,
    device: torch.device | str,
    mode: ProbeMode = "cached",
    epochs: int = 100,
    batch_size: int | None = None,
    base_lr: float = 1.0,
    lr_reference_batch: int = 512,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batchnorm: bool = False,
    seed: int = 0,
    amp_dtype: torch.dtype | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> LinearProbeResult:
    """Train a linear classifier on the frozen backbone and measure its accuracy.

    Recipe: SGD with momentum, no weight decay, peak learning rate
    ``base_lr * batch_size / lr_reference_batch`` decayed by a cosine per step, classifier
    weights drawn from N(0, 0.01^2) with zero bias, cross-entropy. The defaults are the MoBY /
    SynCo v2 recipe (lr 1.0 x batch/512, 100 epochs); MoCo v3 uses ``base_lr=3.0,
    lr_reference_batch=256, epochs=90``. ``batchnorm=True`` puts a BatchNorm without affine
    parameters before the linear layer (as in MAE's linear probe).

    Modes:

    * ``"cached"`` (default; fast, fine on a CPU): the features of ``train_loader`` are
      extracted once, and the classifier trains on them for ``epochs`` epochs with its own
      shuffling (seeded) in batches of ``batch_size`` (default 256). ``train_loader`` should then
      use the evaluation transform.
    * ``"augmented"`` (the published recipe): every epoch iterates ``train_loader`` afresh (it
      should apply random augmentation and shuffle), computing the features of each batch with
      the backbone in eval mode under ``torch.no_grad``. Steps per epoch are ``len(train_loader)``;
      ``batch_size`` defaults to ``train_loader.batch_size`` and is only used for the learning
      rate.

    The validation features (evaluation transform) are extracted once. With ``batchnorm``,
    training batches of a single sample are skipped.

    The backbone is never updated: during the probe it is in eval mode with ``requires_grad``
    False on every parameter; its mode and flags are restored afterwards. Its :func:`fingerprint`
    is taken before and after.

    Args:
        backbone: Module on ``device`` mapping images ``(B, C, H, W)`` to features ``(B, D)``.
        train_loader: Training batches (see the modes above).
        val_loader: Validation batches with the evaluation transform.
        num_classes: Number of classes ``C``; labels must lie in ``[0, C)``.
        device: Where the backbone and the classifier run.
        mode: ``"cached"`` or ``"augmented"``.
        epochs: Training epochs, >= 1.
        batch_size: Classifier batch size (see the modes above).
        base_lr: Learning rate per ``lr_reference_batch`` samples.
        lr_reference_batch: Batch size at which the learning rate equals ``base_lr``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batchnorm: Put ``BatchNorm1d(D, affine=False)`` before the linear layer.
        seed: Seed of the classifier's initialization and (cached mode) of its shuffling.
        amp_dtype: Autocast dtype for the backbone, or None.
        on_epoch: Called after each epoch with that epoch's history entry.

    Returns:
        A :class:`LinearProbeResult` (``backbone_unchanged`` is always True on return).

    Raises:
        RuntimeError: The backbone's parameters or buffers changed during the probe, or the
            training loss became non-finite.
        ValueError: Bad arguments, labels out of range, an empty loader.
    """
    device = torch.device(device)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    mode = check_choice("mode", mode, ("cached", "augmented"))  # type: ignore[assignment]
    epochs = check_int("epochs", epochs, minimum=1)
    base_lr = check_number("base_lr", base_lr, low=0.0, low_open=True)
    lr_reference_batch = check_int("lr_reference_batch", lr_reference_batch, minimum=1)
    momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
    weight_decay = check_number("weight_decay", weight_decay, low=0.0)
    seed = check_int("seed", seed, minimum=0)
    if mode == "cached":
        batch_size = 256 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    else:
        if not isinstance(train_loader, Sized):
            raise TypeError(
                "train_loader: augmented mode needs a loader with len() (steps per epoch)"
            )
        loader_batch = getattr(train_loader, "batch_size", None)
        if batch_size is None:
            if not isinstance(loader_batch, int):
                raise ValueError(
                    "batch_size: pass the batch size of train_loader (used for the learning rate)"
                )
            batch_size = loader_batch
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if isinstance(loader_batch, int) and loader_batch != batch_size:
            raise ValueError(
                f"batch_size: expected the batch size of train_loader ({loader_batch}), "
                f"got {batch_size}"
            )
    peak_lr = base_lr * batch_size / lr_reference_batch

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
            mode=mode,
            epochs=epochs,
            batch_size=batch_size,
            peak_lr=peak_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batchnorm=batchnorm,
            seed=seed,
            amp_dtype=amp_dtype,
            on_epoch=on_epoch,
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
    return LinearProbeResult(
        train_top1=train_top1,
        train_top5=train_top5,
        val_top1=val_top1,
        val_top5=val_top5,
        epochs=epochs,
        mode=mode,
        lr=peak_lr,
        batch_size=batch_size,
        batchnorm=batchnorm,
        num_train=num_train,
        num_val=int(val_features.shape[0]),
        fingerprint_before=before,
        fingerprint_after=after,
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
    mode: str,
    epochs: int,
    batch_size: int,
    peak_lr: float,
    momentum: float,
    weight_decay: float,
    batchnorm: bool,
    seed: int,
    amp_dtype: torch.dtype | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> tuple[nn.Module, list[dict[str, float]], float, float, int, tuple[Tensor, Tensor]]:
    """The training loop of :func:`linear_probe` (the backbone is already frozen)."""
    val_features, val_labels = extract_features(
        backbone, val_loader, device=device, amp_dtype=amp_dtype, normalize=False
    )
    _check_labels_in_range(val_labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    classifier = _build_classifier(
        val_features.shape[1], num_classes, batchnorm=batchnorm, generator=generator
    ).to(device)
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=peak_lr, momentum=momentum, weight_decay=weight_decay
    )

    train_cache: tuple[Tensor, Tensor] | None = None
    if mode == "cached":
        train_cache = extract_features(
            backbone, train_loader, device=device, amp_dtype=amp_dtype, normalize=False
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

    total_steps = epochs * steps_per_epoch

    history: list[dict[str, float]] = []
    step = 0
    seen = 0
    top1 = top5 = 0.0
    lr = peak_lr
    for epoch in range(epochs):
        classifier.train()
        loss_sum = torch.zeros((), device=device)
        c1 = torch.zeros((), dtype=torch.long, device=device)
        c5 = torch.zeros_like(c1)
        seen = 0
        for features, labels in batches():
            if batchnorm and features.shape[0] < 2:
                continue
            lr = _cosine_lr(peak_lr, step, total_steps)
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
