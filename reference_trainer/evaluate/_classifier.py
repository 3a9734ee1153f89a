"""The linear probe's classifier: how it is built, scored and its gradient measured."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

HeadInit = Literal["normal", "xavier", "trunc-normal", "backbone"]


def topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Number of rows whose label is among the ``k`` largest logits (a 0-dim tensor)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (B, k)
    return (top == labels[:, None]).any(dim=1).sum()


def classifier_accuracy(
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
            c1 += topk_correct(logits, y, 1)
            c5 += topk_correct(logits, y, 5)
    n = features.shape[0]
    return 100.0 * int(c1) / n, 100.0 * int(c5) / n


def build_classifier(
    dim: int,
    num_classes: int,
    *,
    batchnorm: bool,
    generator: torch.Generator,
    head_init: HeadInit = "normal",
) -> nn.Sequential:
    """``[BatchNorm1d(D, affine=False)] -> Linear(D, C)``, bias 0, weights N(0, 0.01^2)
    (``normal``), xavier uniform (``xavier``) or truncated normal with std 0.02
    (``trunc-normal``), drawn from ``generator``."""
    linear = nn.Linear(dim, num_classes)
    with torch.no_grad():
        if head_init == "normal":
            linear.weight.copy_(torch.randn(num_classes, dim, generator=generator) * 0.01)
        elif head_init == "xavier":
            bound = math.sqrt(6.0 / (dim + num_classes))
            linear.weight.copy_((torch.rand(num_classes, dim, generator=generator) * 2 - 1) * bound)
        else:  # trunc-normal ("backbone" is resolved before the probe)
            nn.init.trunc_normal_(linear.weight, std=0.02, a=-2.0, b=2.0, generator=generator)
        linear.bias.zero_()
    layers: list[nn.Module] = []
    if batchnorm:
        layers.append(nn.BatchNorm1d(dim, affine=False, eps=1e-6))
    layers.append(linear)
    return nn.Sequential(*layers)


def total_grad_norm(params: list[Tensor], clip: float) -> Tensor:
    """Total gradient norm of ``params`` (0-dim), clipping it to ``clip`` when ``clip > 0``."""
    if clip > 0:
        norm: Tensor = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return norm
