"""The batches an evaluation reads and the features a backbone makes of them.

A batch is either ``(images, labels, ...)`` or an object with ``images`` and ``labels``
attributes (the trainer's evaluation batches); both evaluations accept either.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn


def unpack_batch(batch: object) -> tuple[Tensor, Tensor]:
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


def embed(
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


def check_labels_in_range(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
