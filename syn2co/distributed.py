"""Collective helpers that are no-ops without a process group.

Every function here works in a plain single process (no ``torch.distributed`` initialisation):
rank 0 of a world of size 1, and gathering returns the input. With a process group they follow
the distributed contract of the methods (the documentation's concepts page explains it):

* keys from a momentum encoder are gathered **without** gradient (:func:`gather`);
* an in-batch loss that needs gradients through other ranks' embeddings uses
  :func:`gather_with_grad`: the backward pass sums the gradients of the gathered tensor over
  all ranks and returns this rank's slice, so DDP's gradient averaging then yields exactly the
  gradient of the mean loss of one process holding the whole batch.

Gathered tensors are concatenated along the first axis in rank order; every rank must pass a
tensor of the same shape. :func:`gather_rows` returns them as a :class:`Gathered`, which also
says where this rank's rows sit, so a caller gathers once and hands the result to every loss
and synthesis step that needs it (the in-batch losses of :mod:`syn2co.losses` then run no
collective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "Gathered",
    "all_reduce_with_grad",
    "gather",
    "gather_rows",
    "gather_with_grad",
    "is_distributed",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group, 0 without a process group.

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes in the default group, 1 without a process group.

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along the first axis, without gradient.

    Args:
        x: Tensor of shape (B, ...), the same shape on every rank.

    Returns:
        Tensor of shape (world_size * B, ...), rank 0's rows first. Detached. Without a
        process group, ``x.detach()``.

    Example:
        >>> gather(torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    if not is_distributed() or world_size() == 1:
        return x.detach()
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.batch = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Every rank holds d(its loss)/d(all gathered rows); summing over ranks gives
        # d(sum of losses)/d(rows), and this rank owns its slice of it.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along the first axis, keeping the gradient.

    The backward pass all-reduces (sums) the incoming gradient and returns this rank's slice,
    so each rank's ``x`` receives the gradient of the *sum* of all ranks' losses. DDP then
    averages parameter gradients over ranks, which matches one process computing the mean loss
    over the whole batch.

    Args:
        x: Tensor of shape (B, ...), the same shape on every rank.

    Returns:
        Tensor of shape (world_size * B, ...), rank 0's rows first. Without a process group,
        ``x`` itself.

    Example:
        >>> x = torch.ones(2, 3, requires_grad=True)
        >>> gather_with_grad(x) is x
        True
    """
    if not is_distributed() or world_size() == 1:
        return x
    out: Tensor = _GatherWithGrad.apply(x)
    return out


@dataclass(frozen=True, eq=False)  # tensors: compared by identity, not by value
class Gathered:
    """Rows of every rank concatenated in rank order, and which of them are this rank's.

    Made by :func:`gather_rows`; build one by hand only for rows gathered some other way.

    Attributes:
        rows: Tensor of shape (N, ...), every rank's rows, rank 0's first.
        offset: Index of this rank's first row in ``rows`` (``rank * count`` for
            :func:`gather_rows`).
        count: Number of rows this rank contributed; they are ``rows[offset:offset + count]``.

    Example:
        >>> g = Gathered(torch.zeros(6, 2), offset=3, count=3)
        >>> g.rows[g.offset : g.offset + g.count].shape
        torch.Size([3, 2])
    """

    rows: Tensor
    offset: int
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.rows, Tensor) or self.rows.ndim < 1:
            got = type(self.rows).__name__
            shape = f" of shape {tuple(self.rows.shape)}" if isinstance(self.rows, Tensor) else ""
            raise TypeError(f"rows: expected a tensor of shape (N, ...), got {got}{shape}")
        for name in ("offset", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        n = self.rows.shape[0]
        if self.offset + self.count > n:
            raise ValueError(
                f"offset: expected offset + count <= N = {n} (the number of rows), "
                f"got offset={self.offset}, count={self.count}"
            )


def gather_rows(x: Tensor, *, grad: bool = False) -> Gathered:
    """Gather ``x`` from all ranks once, remembering where this rank's rows are.

    Args:
        x: This rank's rows, shape (B, ...), the same shape on every rank.
        grad: Keep the gradient through every rank's rows (:func:`gather_with_grad`, for an
            in-batch loss such as SimCLR's); otherwise detached (:func:`gather`, for keys from
            a momentum encoder).

    Returns:
        ``Gathered(rows, offset=rank() * B, count=B)`` with ``rows`` of shape
        (world_size * B, ...). Without a process group, ``rows`` is ``x`` (detached unless
        ``grad``) and the offset is 0.

    Example:
        >>> g = gather_rows(torch.ones(4, 3))
        >>> g.rows.shape, g.offset, g.count
        (torch.Size([4, 3]), 0, 4)
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"x: expected a tensor of shape (B, ...), got {type(x).__name__}")
    rows = gather_with_grad(x) if grad else gather(x)
    return Gathered(rows, offset=rank() * x.shape[0], count=x.shape[0])


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Every rank's output depends on every rank's input with derivative 1.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """Sum ``x`` over all ranks, keeping the gradient.

    The backward pass sums the incoming gradients over ranks too, so a statistic pooled over
    the global batch (the mean and variance of a synchronised BatchNorm) backpropagates into
    every rank's inputs as it would in one process.

    Args:
        x: Tensor of any shape, the same on every rank.

    Returns:
        The elementwise sum over ranks, same shape. Without a process group, ``x`` itself.

    Example:
        >>> x = torch.ones(3)
        >>> all_reduce_with_grad(x) is x
        True
    """
    if not is_distributed() or world_size() == 1:
        return x
    out: Tensor = _AllReduceWithGrad.apply(x)
    return out
