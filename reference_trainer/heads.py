"""Projector and predictor heads, with BatchNorm over the global batch of all ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from syn2co import distributed
from syn2co.distributed import all_reduce_with_grad

__all__ = ["GlobalBatchNorm1d", "mlp"]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch of all ranks.

    The trainer's SyncBN for the heads: it all-reduces the per-feature sums with gradient
    (:func:`syn2co.distributed.all_reduce_with_grad`), so it works on every backend, CPU/gloo
    included, and 2 ranks compute what 1 process with both halves computes. Without a process
    group it is a plain ``BatchNorm1d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        xf = x.float()
        stats = torch.cat([xf.sum(0), (xf * xf).sum(0), xf.new_tensor([x.shape[0]])])
        stats = all_reduce_with_grad(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        ):
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), m)
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def mlp(
    in_dim: int, hidden: int, out_dim: int, layers: int, *, last_bn: bool, bn: bool = True
) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a Linear (MoBY: 2 layers; MoCo v3: 3 layers, last BN without
    affine; ``bn=False``: Linear-ReLU blocks, as MoCo v2's head)."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        if bn:
            mods += [nn.Linear(dim, hidden, bias=False), GlobalBatchNorm1d(hidden)]
        else:
            mods.append(nn.Linear(dim, hidden))
        mods.append(nn.ReLU(inplace=True))
        dim = hidden
    mods.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(GlobalBatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)
