"""Synthetic negatives as vectors, (B, M, D), unit norm and detached.

:func:`synthesize` makes all of a spec's samples from a bank, picking each query's hard pool
itself; the six strategy functions (:func:`interpolate`, :func:`extrapolate`, :func:`mixup`,
:func:`add_noise`, :func:`perturb`, :func:`adversarial`) make one type's samples from a given
pool. Both draw from the generator in registry order, so they give the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from syn2co import _checks as chk
from syn2co.negatives._draws import _draw_all
from syn2co.negatives._pool import _bank_rows, _check_pool_args, _select, _unit, fold, usable_rows
from syn2co.negatives.spec import NegativeSpec, _check_spec
from syn2co.negatives.strategy import _VANISHING_NORM

__all__ = [
    "add_noise",
    "adversarial",
    "extrapolate",
    "interpolate",
    "mixup",
    "perturb",
    "synthesize",
]

# Rows of the pool at positions (B, P) -> (B, P, D), float32, unit norm.
_Rows = Callable[[Tensor], Tensor]

# --------------------------------------------------------------------------------------------
# The six strategies, on a given pool
# --------------------------------------------------------------------------------------------


def interpolate(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    alpha: tuple[float, float] = (0.0, 0.5),
) -> Tensor:
    """Type 1, interpolated: ``norm(a*q + (1-a)*n)`` with ``a ~ U(alpha)``.

    MoCHi's "harder" negatives h'. Each sample lies on the arc from n towards q, so it is
    always at least as similar to the query as its hard negative.

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D), e.g. from :func:`hardest`; rows of zero or
            non-finite norm are never picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator (picks and coefficients).
        alpha: Range of the query weight a, ``0 <= lo <= hi <= 1``.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> interpolate(q, hard, 1, alpha=(0.5, 0.5))
        tensor([[[0.7071, 0.7071]]])
    """
    return _from_pool(query, hard, "interpolated", count, generator, alpha=alpha)


def extrapolate(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    beta: tuple[float, float] = (1.0, 1.5),
) -> Tensor:
    """Type 2, extrapolated: ``norm(q + b*(n - q))`` with ``b ~ U(beta)``.

    Moves past n away from q (SynCo), so samples are *less* similar to the query than their
    hard negative: they widen the spread of negatives rather than hardening them.

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D); rows of zero or non-finite norm are never
            picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator.
        beta: Range of the extrapolation factor b, ``1 <= lo <= hi``.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> extrapolate(q, hard, 1, beta=(2.0, 2.0))
        tensor([[[-0.4472,  0.8944]]])
    """
    return _from_pool(query, hard, "extrapolated", count, generator, beta=beta)


def mixup(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    gamma: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Type 3, mixed: ``norm(c*n + (1-c)*n')`` of two hard negatives, ``c ~ U(gamma)``.

    MoCHi's h negatives. n and n' are drawn independently (with replacement) from the pool.

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D); rows of zero or non-finite norm are never
            picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator.
        gamma: Range of the mixing weight c, ``0 <= lo <= hi <= 1``.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> mixup(q, hard, 2)
        tensor([[[0., 1.],
                 [0., 1.]]])
    """
    return _from_pool(query, hard, "mixed", count, generator, gamma=gamma)


def add_noise(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    sigma: float = 0.1,
) -> Tensor:
    """Type 4, noise-injected: ``norm(n + sigma*eps)`` with ``eps ~ N(0, I)``.

    SynCo uses sigma = 0.01 (v1) and 0.1 (v2). In high dimension the noise norm is about
    ``sigma*sqrt(D)``, so sigma = 0.1 at D = 256 makes negatives *easier* (cosine 0.5 drops
    to about 0.26).

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D); rows of zero or non-finite norm are never
            picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator.
        sigma: Noise scale, >= 0.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> add_noise(q, hard, 1, sigma=0.0)
        tensor([[[0., 1.]]])
    """
    return _from_pool(query, hard, "noisy", count, generator, sigma=sigma)


def perturb(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    delta: float = 0.01,
) -> Tensor:
    """Type 5, perturbed: ``norm(n + delta*q)``.

    One gradient-ascent step of size delta on ``q . n`` with respect to n, whose gradient is
    exactly q (SynCo). Always at least as similar to q as n.

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D); rows of zero or non-finite norm are never
            picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator (the picks from the pool).
        delta: Step size, >= 0.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> perturb(q, hard, 1, delta=1.0)
        tensor([[[0.7071, 0.7071]]])
    """
    return _from_pool(query, hard, "perturbed", count, generator, delta=delta)


def adversarial(
    query: Tensor,
    hard: Tensor,
    count: int,
    *,
    generator: torch.Generator | None = None,
    eta: float = 0.01,
    steps: int = 1,
) -> Tensor:
    """Type 6, adversarial: signed steps that raise the query's InfoNCE loss, renormalised.

    ``s_0 = n`` and ``s_{t+1} = norm(s_t + eta * sign(grad_s L))`` for ``steps`` steps, where L
    is the query's InfoNCE loss with s among its negatives. ``grad_s L = (p_s / tau) * q`` with
    the softmax weight ``p_s > 0``, so its sign is ``sign(q)`` whatever the positive, the other
    negatives and the temperature: each step is ``norm(s + eta*sign(q))`` in closed form, and
    ``steps=1`` is SynCo's single FGSM step ``norm(n + eta*sign(q))``. More steps give harder
    negatives, drifting towards the direction ``sign(q)``. An intermediate point shorter than
    1e-3 has no direction to renormalise: the next step starts from the origin.

    Args:
        query: Queries of shape (B, D).
        hard: Hard pool of shape (B, N, D); rows of zero or non-finite norm are never
            picked.
        count: Synthetic negatives per query (>= 0).
        generator: Random generator (the picks from the pool).
        eta: Step size, >= 0.
        steps: Number of signed steps, >= 1.

    Returns:
        Tensor of shape (B, count, D), unit norm, detached, in the query's dtype and device.

    Example:
        >>> q = torch.tensor([[0.6, -0.8]])
        >>> hard = torch.tensor([[[0.0, 1.0]]])
        >>> adversarial(q, hard, 1, eta=1.0)
        tensor([[[1., 0.]]])
    """
    steps = chk.check_int("steps", steps, minimum=1)
    return _from_pool(
        query, hard, "adversarial", count, generator, eta=eta, adversarial_steps=steps
    )


# --------------------------------------------------------------------------------------------
# All of a spec's strategies, on a bank
# --------------------------------------------------------------------------------------------


def synthesize(
    query: Tensor,
    bank: Tensor,
    spec: NegativeSpec,
    *,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
    similarity: Tensor | None = None,
) -> Tensor:
    """All synthetic negatives of a spec in one vectorised call.

    Picks the hard pool once (:func:`hardest_indices`) and gathers each strategy's picks
    straight from the bank, so the (B, N, D) pool is never materialised. Consumes the generator
    exactly as calling the six strategy functions in :data:`STRATEGIES` order on
    ``hardest(query, bank, spec.n_hard)`` does, so both give identical samples; strategies with
    a count of 0 draw nothing. When a loss only needs the logits, :func:`synthetic_logits`
    gives them from the same draws without forming this (B, M, D) tensor.

    Bank rows of zero or non-finite norm are never negatives (see "Degenerate banks" in
    :mod:`syn2co.negatives`): they rank after every usable row, the picks of a query with
    fewer than N usable rows fold onto the ones it has, and a query with none (a zero queue at
    the first step) draws from ``-q``. Dtypes, gradients and ``torch.compile`` as for
    :func:`synthetic_logits`: float32 arithmetic (float64 inputs rounded to it), the samples
    returned in the query's dtype; one graph under ``torch.compile`` with the eager draws.

    Args:
        query: Queries of shape (B, D).
        bank: Negatives, shared (K, D) or per query (B, K, D).
        spec: Counts and coefficients.
        exclude: Optional boolean mask (B, K) of bank entries never to pick.
        generator: Random generator.
        similarity: Optional precomputed query-bank similarities (B, K) (e.g.
            :func:`similarity`, or logits: only their order is used), so the bank is multiplied
            once per step.

    Returns:
        Tensor of shape (B, M, D) with ``M = spec.total``, the strategies in registry order
        (see :meth:`NegativeSpec.slices`); unit norm, detached, in the query's dtype and device.

    Example:
        >>> from syn2co.negatives import SYNCO_V2
        >>> g = torch.Generator().manual_seed(0)
        >>> q, bank = torch.randn(4, 16), torch.randn(100, 16)
        >>> synthesize(q, bank, SYNCO_V2.replace(n_hard=32), generator=g).shape
        torch.Size([4, 576, 16])
    """
    spec = _check_spec(spec)
    gen = chk.check_generator("generator", generator)
    query, bank, _ = _check_pool_args(query, bank, spec.n_hard, exclude, similarity)
    if spec.total == 0:
        return query.new_empty((query.shape[0], 0, query.shape[1]))
    pool = _select(query, bank, spec.n_hard, exclude, similarity)
    rows = _bank_rows(bank, pool.unit_bank, pool.sanitized())
    out = _generate(_unit(query), rows, spec.n_hard, spec, gen, pool.usable)
    return out.to(query.dtype)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------

# synthesize() gathers all picks in one go, each strategy writes its slice of one preallocated
# output in place, and the output is normalised once: few passes over (B, M, D) memory.


def _generate(
    q: Tensor,
    rows: _Rows,
    n_pool: int,
    spec: NegativeSpec,
    gen: torch.Generator | None,
    usable: Tensor | None,
    order: Tensor | None = None,
) -> Tensor:
    """All the spec's samples, (B, M, D), float32, unit norm.

    ``usable`` (B, 1): how many pool entries of each query are usable (None: all N); the drawn
    positions are folded onto them (:func:`fold`), through ``order`` (B, N), the pool positions
    with the usable ones first, when they are not already first. A query without a usable entry
    has ``-q`` for every pick."""
    b, d = q.shape
    draws = _draw_all(spec, (b, n_pool, d), gen, q.device)
    out = q.new_empty((b, spec.total, d))
    if not draws:
        return out
    positions = torch.cat([draw.positions for draw in draws], dim=1)
    if usable is None:
        picks = rows(positions)
    else:
        positions = fold(positions, usable)
        if order is not None:
            positions = order.gather(1, positions)
        picks = _antipodes(rows(positions), q, usable == 0)
    firsts = []
    o = p = 0
    for draw in draws:
        strategy, count = draw.strategy, draw.samples
        rows_picked = picks[:, p : p + draw.positions.shape[1]]
        groups = tuple(rows_picked[:, g * count : (g + 1) * count] for g in range(strategy.picks))
        strategy.write(out[:, o : o + count], q[:, None, :], groups, draw.drawn, spec)
        firsts.append(groups[0])
        o, p = o + count, p + draw.positions.shape[1]
    return _normalize_or_fall_back_(out, firsts)


def _antipodes(picks: Tensor, q: Tensor, none_usable: Tensor) -> Tensor:
    """Picked rows (B, P, D), where each query with no usable pool entry (``none_usable``,
    (B, 1)) has ``-q`` instead: the weakest negative there is (cosine -1, no gradient through
    its logit), so its samples are inert rather than copies of the query or of a zero row."""
    if chk.may_be_true(none_usable):
        return torch.where(none_usable[:, :, None], -q[:, None, :], picks)
    return picks


def _normalize_or_fall_back_(out: Tensor, firsts: list[Tensor]) -> Tensor:
    """Scale the rows of ``out`` (B, M, D) to unit norm in place; rows shorter than 1e-3
    become the first pick they were made from (``firsts``: each part's (B, c, D) in order)."""
    norms = torch.linalg.vector_norm(out, dim=-1, keepdim=True)
    vanished = norms < _VANISHING_NORM
    out.div_(norms.masked_fill(vanished, math.inf))  # vanished rows become 0
    fallback = vanished.to(out.dtype)
    start = 0
    for first in firsts:
        end = start + first.shape[1]
        out[:, start:end].addcmul_(first, fallback[:, start:end])
        start = end
    return out


def _from_pool(
    query: object,
    hard: object,
    name: str,
    count: object,
    generator: object,
    **coefficients: object,
) -> Tensor:
    """A public strategy function: validate, draw from the given pool, generate."""
    count = chk.check_int("count", count, minimum=0)
    spec = NegativeSpec(n_hard=1, counts={name: count}).replace(**coefficients)
    query = chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    hard = chk.check_embeddings("hard", hard, "(B, N, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("hard", hard, "query", query)
    gen = chk.check_generator("generator", generator)
    chk.check_finite(
        ("query", query), ("hard", hard)
    )  # all rows: the verdict cannot depend on the draw

    with torch.no_grad():
        usable = usable_rows(torch.linalg.vector_norm(hard.detach().float(), dim=-1))  # (B, N)
        in_pool: Tensor | None = None  # None: every row of every query usable
        order = None
        if chk.may_be_true(~usable):
            in_pool = usable.sum(dim=1, keepdim=True)
            # the pool positions, usable ones first, each group in its own order
            order = torch.sort((~usable).to(torch.uint8), dim=1, stable=True).indices

    def rows(pos: Tensor) -> Tensor:
        return _unit(hard.gather(1, pos[:, :, None].expand(-1, -1, d)))

    out = _generate(_unit(query), rows, hard.shape[1], spec, gen, in_pool, order)
    return out.to(query.dtype)
