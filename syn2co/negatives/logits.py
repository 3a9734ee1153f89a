"""The cosine of each query to each of its synthetic negatives, (B, M), without forming them.

:func:`synthetic_logits` computes the logits from inner products of the query and the hard
pool's rows; its autograd function gives the query the gradient of the materialised path
(``norm(q) . synthesize(...)`` with the negatives detached).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from syn2co import _checks as chk
from syn2co._precision import autocast_off
from syn2co.negatives._draws import _active, _draw_one, _split
from syn2co.negatives._pool import _check_pool_args, _Pool, _select, fold
from syn2co.negatives.spec import NegativeSpec, _check_spec
from syn2co.negatives.strategy import InnerProducts, _absent, _redraw

__all__ = ["synthetic_logits"]


def synthetic_logits(
    query: Tensor,
    bank: Tensor,
    spec: NegativeSpec,
    *,
    similarity: Tensor | None = None,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The cosine of each query to each of its synthetic negatives, without forming them.

    Returns ``norm(q) . s`` for every synthetic negative ``s`` that :func:`synthesize` makes
    with the same arguments and generator state: same hard pool, same picks, same
    coefficients, same noise, same generator consumption, so the generator ends in the same
    state. Each value comes from scalar algebra on inner products of the unit query ``q``
    and the unit pool rows ``n`` (for unit q and n, interpolation gives
    ``(a + (1-a) q.n) / sqrt(a^2 + (1-a)^2 + 2a(1-a) q.n)``; mixup needs the pair's ``n.n'``;
    the adversarial steps are a recursion on ``q.n``, ``n.sign(q)``, ``|q|_1`` and the number
    of non-zero entries of q; noise on ``q.eps``, ``n.eps`` and ``|eps|^2``; see
    :class:`Combination`). Add them to the loss as extra similarities (divide by the
    temperature as for the bank's).

    Gradients reach the query only, and equal those of the materialised path ``norm(q) .
    synthesize(...)`` with the synthetic negatives detached (as ``info_nce`` treats them):
    ``(s - (norm(q).s) norm(q)) / |q|`` per logit, assembled in a custom backward from the
    weights of each ``s`` on ``q``, ``sign(q)``, its pool rows (one weighted sum over the pool)
    and its noise. This holds exactly, to float32 rounding, for **every** type including type 4:
    its noise is drawn in the forward pass exactly as :func:`synthesize` draws it (so later
    types pick the same rows), reduced at once to three numbers per sample, and drawn again in
    the backward pass from a copy of the generator's state saved before the draw (with
    ``generator=None``, of the device's default generator; the default generator itself is not
    advanced by the backward pass).

    Memory: no (B, M, D) tensor. The peak is O(B*M) for the logits and the per-sample weights
    kept for backward, plus the pool rows gathered in chunks of about 4 MB (a quarter of the
    pool when compiled), plus, for type 4 only, its noise (B, noisy, D) for the forward pass,
    which the generator's consumption requires.

    The bank is saved for the backward pass without a copy: modifying it in place in between
    (e.g. enqueueing into the queue it views before ``backward``) makes autograd raise an
    error about an in-place modification, instead of giving a wrong gradient. Enqueue after
    ``backward``, as MoCo does.

    Vanishing samples (|u| < 1e-3) become their first pick, and bank rows of zero or
    non-finite norm are never negatives (an unfilled queue; a query without any usable row
    draws from ``-q``), as in :func:`synthesize`.

    Dtypes: the query and bank may be float16, bfloat16, float32 or float64; the arithmetic
    runs in float32 outside any autocast region (float64 inputs are rounded to float32, so
    there is no float64 precision to gain), and the logits are float32. The query's gradient
    comes back in its own dtype.

    Gradient checks: the gradient is that of ``norm(q) . s`` with every sample ``s`` held
    fixed (its picks, coefficients and noise), which is what the tests check against autograd
    of the materialised path. It is not the derivative of this function's output in ``q``, so
    ``torch.autograd.gradcheck`` fails by design, on three counts: the samples of types 1, 2 and
    5 are built from ``q`` itself (interpolation, extrapolation, the ascent step) and type 6
    from ``sign(q)``, and are detached; the hard pool is the top N of the similarities, which
    a finite difference can reorder (fix it by passing ``similarity``); and the arithmetic is
    float32 whatever the input dtype.

    ``torch.compile`` (inductor or any backend, ``dynamic`` or not, ``fullgraph=True``) traces
    it into one graph with every preset, with ``generator=None`` or a generator: the draws are
    the eager draws, made at run time by syn2co's custom operators (:mod:`syn2co._random`), so
    a compiled step gives the eager values for the same generator state and leaves the
    generator where the eager step does. Dynamo specialises on the generator object: pass the
    same one every step (a new generator object each step recompiles). Not twice
    differentiable. A registered strategy whose ``draw`` takes vectors from the generator is
    drawn again in the backward pass by a new generator, which dynamo cannot trace.

    Args:
        query: Queries of shape (B, D); normalised inside, with gradient.
        bank: Negatives, shared (K, D) or per query (B, K, D); treated as constants.
        spec: Counts and coefficients.
        similarity: Optional precomputed query-bank similarities (B, K) (e.g.
            :func:`similarity`, or logits: only their order is used, to pick the pool).
        exclude: Optional boolean mask (B, K) of bank entries never to pick.
        generator: Random generator.

    Returns:
        Tensor of shape (B, M), float32, ``M = spec.total``, the strategies in registry order
        (:meth:`NegativeSpec.slices`); equal to ``einsum("bd,bmd->bm", norm(query),
        synthesize(query, bank, spec, ...))`` up to float32 rounding. (B, 0) for a spec whose
        counts are all 0.

    Example:
        >>> from syn2co.negatives import SYNCO_V2, synthesize
        >>> q, bank = torch.randn(4, 16, requires_grad=True), torch.randn(100, 16)
        >>> spec = SYNCO_V2.replace(n_hard=32)
        >>> logits = synthetic_logits(q, bank, spec, generator=torch.Generator().manual_seed(0))
        >>> s = synthesize(q, bank, spec, generator=torch.Generator().manual_seed(0))
        >>> ref = torch.einsum("bd,bmd->bm", F.normalize(q, dim=-1), s)
        >>> logits.shape, bool(torch.allclose(logits, ref, atol=1e-5))
        (torch.Size([4, 576]), True)
        >>> logits.sum().backward()
    """
    spec = _check_spec(spec)
    gen = chk.check_generator("generator", generator)
    query, bank, _ = _check_pool_args(query, bank, spec.n_hard, exclude, similarity)
    with autocast_off(query.device):
        q = F.normalize(query.float(), dim=-1, eps=1e-12)
        if spec.total == 0:
            return q[:, :0]
        pool = _select(query, bank, spec.n_hard, exclude, similarity)
        out = _SyntheticLogits.apply(q, bank.detach(), pool.sanitized(), pool.usable, spec, gen)
    return cast(Tensor, out)


class _SyntheticLogits(torch.autograd.Function):
    """Logits of the synthetic negatives from inner products; backward as the detached path.

    Draws each strategy's pool positions (folded onto the ``usable`` entries, (B, 1), unless
    all N are) and coefficients or vectors right before using them, so type 4's noise is the
    only (B, c, D) tensor alive while it is reduced; keeps, for a vector draw, the generator's
    state before it, from which the backward pass draws the vectors again.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        bank: Tensor,
        idx: Tensor,
        usable: Tensor | None,
        spec: NegativeSpec,
        gen: torch.Generator | None,
    ) -> Tensor:
        b, d = q.shape
        parts = _active(spec)
        n_picks = sum(strategy.picks * count for strategy, count in parts)
        pool = _Pool(q, bank, idx)
        # queries without a usable row: their picks stand for -q
        antipodal = None if usable is None else usable == 0
        logits, on_query, on_sign = (q.new_zeros((b, spec.total)) for _ in range(3))
        # Every pick's pool position, its weight in its sample and that sample's column.
        positions = idx.new_empty((b, n_picks), dtype=torch.int32)  # int64 in backward
        weights = q.new_zeros((b, n_picks))
        columns = torch.empty(n_picks, dtype=torch.long, device=q.device)
        redraw, on_drawn, states = [], [], []  # vector draws: drawn again in backward
        start = p = 0
        for i, (strategy, count) in enumerate(parts):
            draw = _draw_one(
                strategy, count, spec, (b, idx.shape[1], d), gen, q.device, keep_state=True
            )
            end = start + count
            positions_drawn = draw.positions if usable is None else fold(draw.positions, usable)
            picks = _split(positions_drawn, count)
            products = InnerProducts(pool, picks, draw.drawn, count, antipodal)
            u = products.unit(strategy.combination(products, draw.drawn, spec))
            logits[:, start:end] = products.query_dot(u)
            on_query[:, start:end] = u.query
            on_sign[:, start:end] = u.sign
            for g, pick in enumerate(picks):
                positions[:, p : p + count] = pick
                columns[p : p + count] = torch.arange(start, end, device=q.device)
                if g < len(u.picks):
                    weights[:, p : p + count] = u.picks[g]
                p += count
            if not _absent(u.drawn):
                if draw.state is None:
                    raise ValueError(
                        f"strategy {strategy.name!r}: its combination weighs the drawn vectors, "
                        "so it must be registered with draws_vectors=True"
                    )
                where, state = draw.state
                redraw.append((i, start, count, where))
                on_drawn.append(torch.as_tensor(u.drawn).to(q.dtype).expand(b, count))
                states.append(state)
            del draw, positions_drawn, picks, pick, products, u  # noise goes before next draw
            start = end
        ctx.save_for_backward(
            q, bank, idx, antipodal, pool.norms, positions, weights, columns, on_query, on_sign,
            *on_drawn, *states,
        )  # fmt: skip
        ctx.spec, ctx.redraw = spec, tuple(redraw)
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, bank, idx, antipodal, norms, positions, weights, columns, on_query, on_sign, *rest = (
            ctx.saved_tensors
        )
        n_redraw = len(ctx.redraw)
        on_drawn, states = rest[:n_redraw], rest[n_redraw:]
        b, d = q.shape
        g = grad.float()
        parts = _active(ctx.spec)
        with autocast_off(q.device):
            pool = _Pool(q, bank, idx, norms)
            out = (g * on_query).sum(dim=1, keepdim=True) * q
            out = out + (g * on_sign).sum(dim=1, keepdim=True) * pool.sign
            on_rows = torch.zeros_like(idx, dtype=q.dtype)
            on_rows.scatter_add_(1, positions.long(), g[:, columns] * weights)
            rows = pool.weighted_sum(on_rows)
            if antipodal is not None:  # a query without a usable row picked -q everywhere
                rows = torch.where(antipodal, -on_rows.sum(dim=1, keepdim=True) * q, rows)
            out = out + rows
            for (i, start, count, where), weight, state in zip(
                ctx.redraw, on_drawn, states, strict=True
            ):
                strategy = parts[i][0]
                assert where is not None
                drawn = _redraw(strategy, ctx.spec, (b, count, d), (where, state), q.device)
                weight = g[:, start : start + count] * weight
                out = out + torch.einsum("bc,bcd->bd", weight, drawn)
        return out, None, None, None, None, None
