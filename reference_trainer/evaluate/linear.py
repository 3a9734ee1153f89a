"""The linear probe: a linear classifier trained on a frozen backbone, with the hyperparameters
of a :class:`LinearProbeSettings` (:mod:`reference_trainer.evaluate.protocols` names the
published ones)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co._checks import check_choice, check_int, check_number
from syn2co.schedules import cosine_schedule

from ._batches import check_labels_in_range, embed, unpack_batch
from ._classifier import (
    HeadInit,
    build_classifier,
    classifier_accuracy,
    topk_correct,
    total_grad_norm,
)
from ._fingerprint import fingerprint
from ._modes import kept_modes, set_probe_mode
from .features import Progress, extract_features

__all__ = [
    "BackboneMode",
    "Interpolation",
    "LinearProbeResult",
    "LinearProbeSettings",
    "ProbeMode",
    "ProbeSchedule",
    "ProbeStep",
    "linear_probe",
]

ProbeMode = Literal["cached", "augmented"]
ProbeSchedule = Literal["step", "epoch", "multistep"]
BackboneMode = Literal["eval", "train"]
Interpolation = Literal["bicubic", "bilinear"]


@dataclass(frozen=True)
class ProbeStep:
    """One optimizer step of :func:`linear_probe`, for ``on_step`` callbacks.

    Attributes:
        step: Optimizer steps done before this one.
        epoch: Epoch of the step, from 0.
        optimizer: The classifier's optimizer, after its step.
        logits: ``(B, C)`` the classifier's output, detached.
        labels: ``(B,)`` the batch's labels.
        loss: The criterion's value on them.
        grad_norm: Total gradient norm of the classifier before clipping.
        backbone_training: Whether the batch was embedded by the backbone in train mode.
    """

    step: int
    epoch: int
    optimizer: torch.optim.Optimizer
    logits: Tensor
    labels: Tensor
    loss: float
    grad_norm: float
    backbone_training: bool


@dataclass(frozen=True)
class LinearProbeSettings:
    """The hyperparameters of a linear probe (a probe protocol is one set of them).

    The defaults aim at a probe whose training loss goes down on any backbone, with no tuning:

    * A BatchNorm without affine parameters standardises each feature before the linear layer
      (as MAE's linear probe does), so the step size does not depend on the scale of the
      features (a backbone whose features are 100 times larger probes the same).
    * A learning rate of 0.1 x batch / 512 with Nesterov momentum 0.9: a tenth of the MoBY /
      SynCo v2 rate. Standardised features are still correlated, and the largest eigenvalue of
      their correlation matrix (0.41 x the feature dimension for a DeiT-S at random
      initialisation on CIFAR-10) sets the largest stable step: at the MoBY rate that probe's
      loss jumps from 2.3 to 16 in the first epoch even with the BatchNorm, at this rate it
      decreases (``benchmarks/linear_probe_stability.py``, docs/benchmarks.md).

    The published probes use other values: :mod:`reference_trainer.evaluate.protocols` holds
    SynCo v2's and MoCo v3's, each value with its source.

    Attributes:
        mode: ``"cached"``: features of the training set extracted once (fast; the training
            loader should use the evaluation transform); ``"augmented"``: every epoch iterates
            the training loader afresh (random resized crops and flips: the published probes).
        epochs: Training epochs, >= 1.
        batch_size: Classifier batch size, >= 1; None means 256 in cached mode and the
            training loader's batch size in augmented mode.
        base_lr: Learning rate per ``lr_reference_batch`` samples, > 0; the peak learning rate
            is ``base_lr * batch_size / lr_reference_batch`` (the linear scaling rule).
        lr_reference_batch: The batch size at which the learning rate equals ``base_lr``.
        momentum: SGD momentum, in [0, 1).
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: SGD weight decay, >= 0.
        warmup_epochs: Linear warmup to the peak learning rate over this many epochs
            (fractions allowed), then the cosine decay; in ``[0, epochs)``; 0 with the
            per-epoch schedule.
        batchnorm: Put ``BatchNorm1d(D, affine=False)`` before the linear layer.
        warmup_lr_fraction: Where the warmup starts, as a fraction of the peak, in [0, 1]: the
            learning rate of step 0, rising linearly to the peak at the first step after the
            warmup (timm's warmup, as SynCo v2's probe runs it). None: the warmup rises from 0
            and its first step already has ``peak / warmup_steps``, its last the peak.
        min_lr_fraction: Where the cosine ends, as a fraction of the peak, in [0, 1].
        schedule: ``"step"``: warmup, then a cosine over the optimizer steps; ``"epoch"``: the
            cosine of the epoch, constant within it (MoCo v3's ``main_lincls.py``);
            ``"multistep"``: the peak, multiplied by ``lr_decay`` at each epoch of
            ``lr_milestones`` (MoCo v2's ``main_lincls.py``).
        lr_milestones: The epochs (from 0) at which the ``"multistep"`` schedule multiplies the
            rate by ``lr_decay``, strictly increasing, each >= 1; milestones at or beyond
            ``epochs`` are never reached. Other schedules ignore them.
        lr_decay: The factor of each milestone, in (0, 1].
        label_smoothing: Label smoothing of the cross-entropy, in [0, 1].
        clip_grad: Clip the classifier's gradient norm to this, >= 0 (0: no clipping).
        head_init: The classifier's initial weights (bias 0): ``"normal"`` N(0, 0.01^2),
            ``"xavier"`` xavier uniform, ``"trunc-normal"`` truncated normal with std 0.02, or
            ``"backbone"``: as the official constructor of the backbone's architecture builds
            its head (:func:`reference_trainer.evaluate.protocols.for_arch` resolves it; the
            probe itself needs one of the other three).
        backbone_mode: ``"eval"``, or ``"train"``: dropout and drop-path active while the
            probe trains in augmented mode (as SynCo v2's probe runs; norm layers with running
            statistics stay in eval mode, so no buffer changes). Validation features and the
            cached mode's features always come from eval mode.
        drop_path: Stochastic depth the backbone is built with for the probe, in [0, 1); None
            keeps the trained backbone's. :func:`linear_probe` takes the backbone as given:
            ``syn2co-train eval linear`` rebuilds the run's backbone with this rate.
        interpolation: How the probe's images are resized, ``"bicubic"`` (the trainer's
            evaluation transform) or ``"bilinear"`` (torchvision's default, which every
            official probe uses): in the validation transform's resize and in the random
            resized crops. :func:`linear_probe` takes the loaders as given: ``syn2co-train eval
            linear`` builds them with it.

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
    warmup_lr_fraction: float | None = None
    min_lr_fraction: float = 0.0
    schedule: ProbeSchedule = "step"
    label_smoothing: float = 0.0
    clip_grad: float = 0.0
    head_init: HeadInit = "normal"
    backbone_mode: BackboneMode = "eval"
    drop_path: float | None = None
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    interpolation: Interpolation = "bicubic"

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("cached", "augmented"))
        check_int("epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        check_number("base_lr", self.base_lr, low=0.0, low_open=True)
        check_int("lr_reference_batch", self.lr_reference_batch, minimum=1)
        check_number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_bool("nesterov", self.nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: needs a momentum > 0, got momentum 0")
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_number(
            "warmup_epochs", self.warmup_epochs, low=0.0, high=float(self.epochs), high_open=True
        )
        _check_bool("batchnorm", self.batchnorm)
        if self.warmup_lr_fraction is not None:
            check_number("warmup_lr_fraction", self.warmup_lr_fraction, low=0.0, high=1.0)
        check_number("min_lr_fraction", self.min_lr_fraction, low=0.0, high=1.0)
        check_choice("schedule", self.schedule, ("step", "epoch", "multistep"))
        if self.schedule != "step" and self.warmup_epochs > 0:
            what = "per-epoch" if self.schedule == "epoch" else "multistep"
            raise ValueError(
                f"warmup_epochs: the {what} schedule has no warmup, got {self.warmup_epochs}"
            )
        _check_milestones(self.lr_milestones)
        check_number("lr_decay", self.lr_decay, low=0.0, low_open=True, high=1.0)
        if self.schedule == "multistep" and not self.lr_milestones:
            raise ValueError("lr_milestones: the multistep schedule needs at least one, got none")
        check_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        check_number("clip_grad", self.clip_grad, low=0.0)
        check_choice("head_init", self.head_init, ("normal", "xavier", "trunc-normal", "backbone"))
        check_choice("backbone_mode", self.backbone_mode, ("eval", "train"))
        if self.drop_path is not None:
            check_number("drop_path", self.drop_path, low=0.0, high=1.0, high_open=True)
        check_choice("interpolation", self.interpolation, ("bicubic", "bilinear"))

    def peak_lr(self, batch_size: int) -> float:
        """``base_lr * batch_size / lr_reference_batch``."""
        return self.base_lr * batch_size / self.lr_reference_batch

    def lr_at(self, step: int, steps_per_epoch: int, batch_size: int) -> float:
        """The learning rate of (0-based) training step ``step``.

        Per step: the linear warmup (see ``warmup_lr_fraction``), then a cosine from the peak
        to ``min_lr_fraction x peak`` at step ``epochs * steps_per_epoch``
        (:func:`syn2co.schedules.cosine_schedule`). Per epoch: the cosine of epoch
        ``step // steps_per_epoch`` over ``epochs``. Multistep: the peak times ``lr_decay`` to
        the number of milestones <= that epoch.
        """
        peak = self.peak_lr(batch_size)
        if self.schedule == "multistep":
            epoch = step // steps_per_epoch
            return peak * self.lr_decay ** sum(epoch >= m for m in self.lr_milestones)
        end = peak * self.min_lr_fraction
        if self.schedule == "epoch":
            epoch = min(step // steps_per_epoch, self.epochs)
            return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        total = self.epochs * steps_per_epoch
        warmup = min(round(self.warmup_epochs * steps_per_epoch), total)
        if step < warmup and self.warmup_lr_fraction is None:
            return peak * (step + 1) / warmup
        start = peak * (self.warmup_lr_fraction or 0.0)
        return cosine_schedule(step, total, peak, end, warmup_steps=warmup, warmup_start=start)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")


def _check_milestones(milestones: object) -> None:
    if not isinstance(milestones, tuple):
        raise TypeError(f"lr_milestones: expected a tuple of ints, got {milestones!r}")
    for m in milestones:
        check_int("lr_milestones", m, minimum=1)
    if list(milestones) != sorted(set(milestones)):
        raise ValueError(f"lr_milestones: expected strictly increasing epochs, got {milestones}")


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
    on_step: Callable[[ProbeStep], None] | None = None,
    progress: Progress | None = None,
) -> LinearProbeResult:
    """Train a linear classifier on the frozen backbone and measure its accuracy.

    SGD (momentum, optionally Nesterov, optionally with gradient-norm clipping) on the
    cross-entropy (optionally label-smoothed), after an optional BatchNorm without affine
    parameters; the learning rate warms up linearly, then follows a cosine per step or per
    epoch (see :class:`LinearProbeSettings`, whose defaults are used when ``settings`` is None;
    :mod:`reference_trainer.evaluate.protocols` holds the published probes).

    In ``"cached"`` mode the features of ``train_loader`` are extracted once and the classifier
    trains on them for ``settings.epochs`` epochs with its own shuffling (seeded). In
    ``"augmented"`` mode every epoch iterates ``train_loader`` afresh, computing the features of
    each batch under ``torch.no_grad`` with the backbone in ``settings.backbone_mode``; steps
    per epoch are ``len(train_loader)``. The validation features (evaluation transform, eval
    mode) are extracted once. With the BatchNorm, training batches of a single sample are
    skipped (the schedule still counts them).

    The backbone is never updated: during the probe ``requires_grad`` is False on every
    parameter and it is in eval mode (or train mode with its running-statistics norm layers in
    eval mode, for ``backbone_mode="train"``, also while features are extracted); the mode of
    each of its modules and its flags are restored afterwards. Its
    :func:`fingerprint` is taken before and after.

    Args:
        backbone: Module on ``device`` mapping images ``(B, C, H, W)`` to features ``(B, D)``.
        train_loader: Training batches (see the modes above).
        val_loader: Validation batches with the evaluation transform.
        num_classes: Number of classes ``C``; labels must lie in ``[0, C)``.
        device: Where the backbone and the classifier run.
        settings: The probe's hyperparameters; None for the defaults. ``head_init`` must not be
            ``"backbone"`` (:func:`reference_trainer.evaluate.protocols.for_arch` resolves it).
        seed: Seed of the classifier's initialization and (cached mode) of its shuffling.
        amp_dtype: Autocast dtype for the backbone, or None.
        on_epoch: Called after each epoch with that epoch's history entry.
        on_step: Called after every optimizer step with a :class:`ProbeStep`.
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
    if settings.head_init == "backbone":
        raise ValueError(
            "head_init: expected normal, xavier or trunc-normal, got 'backbone' (resolve it "
            "for the architecture with reference_trainer.evaluate.protocols.for_arch)"
        )
    settings = dataclasses.replace(settings, batch_size=_resolve_batch_size(settings, train_loader))

    flags = {name: p.requires_grad for name, p in backbone.named_parameters()}
    before = fingerprint(backbone)
    with kept_modes(backbone):
        try:
            for p in backbone.parameters():
                p.requires_grad_(False)
            set_probe_mode(backbone, train=settings.backbone_mode == "train")
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
                on_step=on_step,
                progress=progress,
            )
        finally:
            for name, p in backbone.named_parameters():
                p.requires_grad_(flags[name])
    after = fingerprint(backbone)
    if after != before:
        raise RuntimeError(
            "linear_probe: the backbone's parameters or buffers changed during the probe "
            f"(fingerprint {before[:12]}... -> {after[:12]}...)"
        )
    val_features, val_labels = val
    val_top1, val_top5 = classifier_accuracy(classifier, val_features, val_labels)
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
    on_step: Callable[[ProbeStep], None] | None,
    progress: Progress | None,
) -> tuple[nn.Module, list[dict[str, float]], float, float, int, tuple[Tensor, Tensor]]:
    """The training loop of :func:`linear_probe` (the backbone is already frozen and in the
    probe's mode)."""
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
    check_labels_in_range(val_labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    classifier = build_classifier(
        val_features.shape[1],
        num_classes,
        batchnorm=settings.batchnorm,
        generator=generator,
        head_init=settings.head_init,
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
        check_labels_in_range(train_cache[1], num_classes)
        steps_per_epoch = math.ceil(train_cache[0].shape[0] / batch_size)
    else:
        steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    embedded_in_train_mode = train_cache is None and backbone.training

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
            images, y = unpack_batch(batch)
            y = y.to(device=device, dtype=torch.long)
            check_labels_in_range(y, num_classes)
            with torch.no_grad():
                features = embed(backbone, images, device, amp_dtype)
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
            # the schedule follows the position in the data, skipped batches included
            lr = settings.lr_at(epoch * steps_per_epoch + done - 1, steps_per_epoch, batch_size)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = classifier(features)  # (B, C)
            loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            grad_norm = None
            if settings.clip_grad > 0 or on_step is not None:
                grad_norm = total_grad_norm(list(classifier.parameters()), settings.clip_grad)
            optimizer.step()
            if on_step is not None:
                assert grad_norm is not None
                on_step(
                    ProbeStep(
                        step=step,
                        epoch=epoch,
                        optimizer=optimizer,
                        logits=logits.detach(),
                        labels=labels,
                        loss=float(loss.detach()),
                        grad_norm=float(grad_norm),
                        backbone_training=embedded_in_train_mode,
                    )
                )
            step += 1
            n = features.shape[0]
            seen += n
            loss_sum += loss.detach() * n
            logits = logits.detach()
            c1 += topk_correct(logits, labels, 1)
            c5 += topk_correct(logits, labels, 5)
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
