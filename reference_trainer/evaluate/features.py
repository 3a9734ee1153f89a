"""Feature extraction: a loader's images through a frozen backbone into one feature matrix.

Long passes report their progress through an optional ``progress(stage, done, total)``
callback (:data:`Progress`), called after every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._batches import embed, unpack_batch
from ._modes import kept_modes

__all__ = ["Progress", "extract_features"]

Progress: TypeAlias = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: called after each batch of a pass over a loader. ``stage``
names the pass (``"train features"``, ``"val features"``, ``"epoch 3/100"``), ``done`` counts
its batches so far and ``total`` is its length (None for a loader without ``len()``)."""


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

    The train/eval mode of the backbone and of each of its submodules is restored afterwards
    (also when an error interrupts): a probe that keeps norm layers in eval mode inside a
    backbone in train mode finds them so after the extraction.

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
    features: list[Tensor] = []
    labels: list[Tensor] = []
    total = len(loader) if isinstance(loader, Sized) else None
    with kept_modes(backbone), torch.no_grad():
        backbone.eval()
        for done, batch in enumerate(loader, start=1):
            images, y = unpack_batch(batch)
            f = embed(backbone, images, device, amp_dtype)
            features.append(F.normalize(f, dim=1) if normalize else f)
            labels.append(y.to(device=device, dtype=torch.long))
            if progress is not None:
                progress(stage, done, total)
    if not features:
        raise ValueError("loader: expected at least one batch, got none")
    return torch.cat(features), torch.cat(labels)
