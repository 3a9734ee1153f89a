"""Projector and predictor heads, and BatchNorm over the global batch of all ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from syn2co import distributed
from syn2co.distributed import all_reduce_with_grad

__all__ = ["GlobalBatchNorm1d", "GlobalBatchNorm2d", "mlp", "use_global_batch_norm"]


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """Batch norm of ``x`` (N, C, *) in training with statistics over every rank's batch."""
    xf = x.float()
    c = x.shape[1]
    dims = [0, *range(2, x.ndim)]
    count = x.numel() // c
    stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([count])])
    stats = all_reduce_with_grad(stats)
    n = stats[-1]
    mean = stats[:c] / n
    var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            m = bn.momentum if bn.momentum is not None else 0.1
            unbiased = var * n / (n - 1).clamp_min(1)
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), m)
            bn.running_var.lerp_(unbiased.detach().to(bn.running_var.dtype), m)
            assert bn.num_batches_tracked is not None
            bn.num_batches_tracked.add_(1)
    shape = (1, c) + (1,) * (x.ndim - 2)
    out = (xf - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out.to(x.dtype)


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
        return _global_batch_norm(self, x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with the statistics of the global batch of all ranks (a ResNet backbone's
    global BN, as SimCLR's); a plain ``BatchNorm2d`` without a process group."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        return _global_batch_norm(self, x)


def use_global_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every ``BatchNorm2d`` inside ``module`` for a :class:`GlobalBatchNorm2d` holding
    the same parameters and buffers (in place, before the module moves to its device; the state
    dict keys do not change)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            use_global_batch_norm(child)
    return module


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
