"""LARS: SGD with momentum and a layer-wise trust ratio (You, Gitman and Ginsburg, 2017).

SimCLR (Chen et al., 2020) trains with LARS at every batch size, with its weight decay and
its adaptation left off batch-norm parameters and biases. This is the update of SimCLR's
released optimizer (``lars_optimizer.py`` of google-research/simclr, "classic" momentum, the
learning rate inside the velocity), for each parameter ``w`` with gradient ``g``::

    d     = g + weight_decay * w
    trust = eta * ||w|| / ||d||      (1 where ||w|| or ||d|| is 0, or in groups with lars=False)
    v     = momentum * v + lr * trust * d
    w     = w - v

A parameter group with ``lars=False`` is plain SGD with momentum in that form (give it
``weight_decay=0`` as well to exclude it from weight decay, as SimCLR does for biases and
batch-norm parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with momentum, as in SimCLR's released code.

    Args:
        params: Parameters or parameter groups; a group may set ``lars`` (default True),
            ``weight_decay``, ``momentum`` and ``lr``.
        lr: Learning rate.
        momentum: Momentum of the velocity.
        weight_decay: L2 weight decay added to the gradient before the trust ratio.
        eta: Trust coefficient (0.001 in SimCLR).

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = LARS([w], lr=1.0, momentum=0.9)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> opt.step()
        >>> w.detach()  # trust = 0.001 * sqrt(2) / 5
        tensor([0.9992, 0.9989])
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"eta: expected > 0, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            decay, eta, adapt = group["weight_decay"], group["eta"], group["lars"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.float()
                w = p.float()
                if decay:
                    d = d.add(w, alpha=decay)
                scale: Tensor | float = lr
                if adapt:
                    w_norm, d_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm, torch.ones_like(w_norm)
                    )
                    scale = lr * trust
                state = self.state[p]
                velocity = state.get("velocity")
                if velocity is None:
                    velocity = state["velocity"] = torch.zeros_like(p, dtype=torch.float32)
                velocity.mul_(momentum).add_(d * scale)
                p.sub_(velocity.to(p.dtype))
        return loss
