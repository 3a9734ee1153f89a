"""The alternating min-max, with each side's gradient path made explicit.

Generator step: :func:`generator_step` evaluates the encoder :func:`frozen` and writes the
gradient to the generator's parameters only. Encoder step: :func:`encoder_inputs` and
:func:`shared_negatives` hand it the generated data detached. A single backward pass for both
sides puts :func:`scale_grad` between them instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from syn2co import _checks as chk

__all__ = ["encoder_inputs", "frozen", "generator_step", "scale_grad", "shared_negatives"]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass.

    Between a generator and an encoder it sets the generator's step size relative to the
    encoder's when both are trained by one backward pass: ``scale=-1`` is a gradient-reversal
    layer (the generator *ascends* what the encoder descends), ``scale=-0.1`` does so at a tenth
    of the rate, ``scale=0`` stops the gradient (like ``detach``, but keeping the graph).

    Args:
        x: Any tensor.
        scale: Finite gradient multiplier (may be negative or zero).

    Returns:
        A tensor equal to ``x``.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_grad(x, -0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    chk.check_tensor("x", x)
    s = chk.check_number("scale", scale)
    out: Tensor = _ScaleGrad.apply(x, s)
    return out


@contextlib.contextmanager
def frozen(*modules: nn.Module, restore_buffers: bool = False) -> Iterator[None]:
    """Evaluate ``modules`` with their parameters frozen; restore each flag on exit.

    Inside, every parameter has ``requires_grad=False``, so a forward pass through the modules
    still carries the gradient to their *inputs* (e.g. generated images) but records nothing
    for their parameters, whose ``.grad`` stays untouched. Unlike ``torch.no_grad`` the graph to
    the inputs is kept. Each parameter's own flag is restored, also after an exception.

    Buffers are not parameters: a BatchNorm in training mode still updates its running
    statistics inside. ``restore_buffers=True`` copies every buffer back on exit; run the
    backward pass inside the block then, as autograd checks that saved buffers are unchanged.

    Args:
        *modules: The modules to freeze (shared parameters are handled once).
        restore_buffers: Restore the modules' buffers (e.g. BatchNorm statistics) on exit.

    Raises:
        TypeError: If an argument is not an ``nn.Module``.

    Example:
        >>> enc = nn.Linear(4, 2)
        >>> x = torch.ones(1, 4, requires_grad=True)
        >>> with frozen(enc):
        ...     enc(x).sum().backward()
        >>> enc.weight.grad is None, enc.weight.requires_grad, x.grad is not None
        (True, True, True)
    """
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"modules[{i}]: expected an nn.Module, got {type(m).__name__}")
    params = _unique(p for m in modules for p in m.parameters())
    flags = [p.requires_grad for p in params]
    buffers = _unique(b for m in modules for b in m.buffers()) if restore_buffers else []
    saved = [b.detach().clone() for b in buffers]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, v in zip(buffers, saved, strict=True):
                b.copy_(v)


def generator_step(
    objective: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    frozen_modules: nn.Module | Sequence[nn.Module] = (),
    restore_buffers: bool = False,
) -> Tensor:
    """One generator update with the encoder frozen: only the optimizer's parameters move.

    ``objective()`` runs inside :func:`frozen` over ``frozen_modules`` (the encoder) and returns
    the generator's loss (e.g. :func:`hard_sample_loss` or :func:`positive_pair_loss`). The
    gradient is taken with ``torch.autograd.grad`` with respect to the optimizer's parameters
    only and written to their ``.grad`` (replacing what was there), then ``optimizer.step()``.
    No other tensor's ``.grad`` is written, even for modules not listed as frozen; freezing
    them also spares computing their weight gradients.

    Args:
        objective: Closure computing the scalar loss to minimise from the generator's samples.
        optimizer: The generator's optimizer (its parameters are the ones updated).
        frozen_modules: The encoder module(s) evaluated inside ``objective``.
        restore_buffers: Also restore their buffers (BatchNorm statistics), see :func:`frozen`.

    Returns:
        The loss, detached.

    Raises:
        ValueError: If the loss is not a scalar with gradient to the optimizer's parameters, or
            a frozen module shares parameters with the optimizer.

    Example:
        >>> from syn2co.generators import ConvGenerator, HardSampleGenerator, hard_sample_loss
        >>> _ = torch.manual_seed(0)
        >>> gen = HardSampleGenerator(ConvGenerator(8, 8, width=4))
        >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        >>> opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
        >>> def objective():
        ...     x = gen.sample(8)
        ...     views = (x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x))
        ...     return hard_sample_loss(encoder(views[0]), encoder(views[1]))
        >>> loss = generator_step(objective, opt, frozen_modules=encoder)
        >>> all(p.grad is None for p in encoder.parameters())
        True
    """
    if not callable(objective):
        raise TypeError(f"objective: expected a callable returning a loss, got {objective!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    modules = (frozen_modules,) if isinstance(frozen_modules, nn.Module) else tuple(frozen_modules)
    params = _unique(p for g in optimizer.param_groups for p in g["params"] if p.requires_grad)
    if not params:
        raise ValueError("optimizer: expected parameters that require grad, got none")
    own = {id(p) for p in params}
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"frozen_modules[{i}]: expected an nn.Module, got {type(m).__name__}")
        if any(id(p) in own for p in m.parameters()):
            raise ValueError(
                f"frozen_modules[{i}]: expected a module sharing no parameters with the "
                "optimizer (it would be frozen and trained at once), got a shared one"
            )
    # The backward runs inside: BatchNorm's backward reads the buffers restored on exit.
    with frozen(*modules, restore_buffers=restore_buffers):
        loss = objective()
        chk.check_tensor("objective()", loss)
        if loss.ndim != 0 or not loss.requires_grad:
            raise ValueError(
                "objective(): expected a scalar loss with gradient to the optimizer's "
                f"parameters, got shape {tuple(loss.shape)} with requires_grad={loss.requires_grad}"
            )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    return loss.detach()


def encoder_inputs(
    view_a: Tensor,
    view_b: Tensor,
    *,
    samples: tuple[Tensor, Tensor] | None = None,
    pairs: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The encoder step's two view batches: real rows, then the generated rows, detached.

    Rows ``[0, B)`` are the real views, unchanged; then the two views of each generated hard
    sample (``samples``), then each generated positive pair (``pairs``: image a as view a,
    image b as view b). Every generated row is detached, so the encoder's loss sends no gradient
    to the generator. Any contrastive loss over the batch (:func:`syn2co.losses.info_nce`,
    :func:`~syn2co.losses.moco_v3_loss`, :func:`~syn2co.losses.moby_loss`) then treats the
    hard samples as extra samples (negatives of every other row) and the pairs as extra
    positive pairs.

    Args:
        view_a: First views of the real batch, shape (B, ...) (images or embeddings).
        view_b: Second views, same shape.
        samples: Two views of the generated hard samples, each (N, ...).
        pairs: The generated positive pairs, each (P, ...).

    Returns:
        ``(view_a, view_b)`` of shape (B + N + P, ...) each.

    Raises:
        ValueError: If trailing shapes or devices disagree.

    Example:
        >>> g = torch.ones(2, 3, requires_grad=True)
        >>> a, b = encoder_inputs(torch.zeros(4, 3), torch.zeros(4, 3), samples=(g, g))
        >>> a.shape, a.requires_grad
        (torch.Size([6, 3]), False)
    """
    chk.check_float("view_a", view_a)
    chk.check_float("view_b", view_b)
    if view_b.shape != view_a.shape:
        raise ValueError(
            f"view_b: expected the shape of view_a {tuple(view_a.shape)}, got {tuple(view_b.shape)}"
        )
    rows_a, rows_b = [view_a], [view_b]
    for name, extra in (("samples", samples), ("pairs", pairs)):
        if extra is None:
            continue
        if not isinstance(extra, tuple | list) or len(extra) != 2:
            raise TypeError(f"{name}: expected a pair of tensors, got {type(extra).__name__}")
        for i, t in enumerate(extra):
            chk.check_float(f"{name}[{i}]", t)
            if t.shape[1:] != view_a.shape[1:] or t.ndim != view_a.ndim:
                trailing = ", ".join(str(s) for s in view_a.shape[1:])
                raise ValueError(
                    f"{name}[{i}]: expected shape (N, {trailing}) (the rows of view_a), "
                    f"got {tuple(t.shape)}"
                )
            chk.check_same_device(f"{name}[{i}]", t, "view_a", view_a)
        if extra[0].shape[0] != extra[1].shape[0]:
            raise ValueError(
                f"{name}[1]: expected {extra[0].shape[0]} rows (as {name}[0]), "
                f"got {extra[1].shape[0]}"
            )
        rows_a.append(extra[0].detach().to(view_a.dtype))
        rows_b.append(extra[1].detach().to(view_b.dtype))
    return torch.cat(rows_a), torch.cat(rows_b)


def shared_negatives(generated: Tensor, batch_size: int) -> Tensor:
    """Embeddings of generated samples as every query's extra negatives, detached.

    An expanded (no-copy) view for the ``extra_negatives`` argument of
    :func:`syn2co.losses.info_nce`, :func:`~syn2co.losses.moco_v3_loss` or
    :func:`~syn2co.losses.moby_loss`: the encoder learns to push its queries away from the
    generated hard samples, and the generator receives no gradient.

    Args:
        generated: Embeddings of the generated samples, shape (M, D).
        batch_size: Number B of queries.

    Returns:
        Tensor of shape (B, M, D).

    Example:
        >>> import math
        >>> from syn2co.losses import info_nce
        >>> q, gen = torch.ones(4, 8), torch.ones(3, 8)
        >>> loss = info_nce(q, q, extra_negatives=shared_negatives(gen, 4))
        >>> round(loss.item(), 4) == round(math.log(4), 4)
        True
    """
    chk.check_embeddings("generated", generated, "(M, D)")
    b = chk.check_int("batch_size", batch_size, minimum=1)
    return generated.detach().unsqueeze(0).expand(b, -1, -1)


def _unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    out: list[Tensor] = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
