"""Synthetic hard negatives in embedding space.

From a query and a bank of negatives, :func:`hardest` picks the hard pool (the N bank entries
most similar to each query); six strategies then make extra negatives from that pool, which a
contrastive loss appends to its logits:

| # | function | formula | coefficient |
|---|---|---|---|
| 1 | :func:`interpolate` | ``norm(a*q + (1-a)*n)`` | a ~ U(alpha), alpha = (0, 0.5) |
| 2 | :func:`extrapolate` | ``norm(q + b*(n - q))`` | b ~ U(beta), beta = (1, 1.5) |
| 3 | :func:`mixup` | ``norm(c*n + (1-c)*n')`` | c ~ U(gamma), gamma = (0, 1) |
| 4 | :func:`add_noise` | ``norm(n + sigma*eps)``, eps ~ N(0, I) | sigma = 0.1 |
| 5 | :func:`perturb` | ``norm(n + delta*q)`` | delta = 0.01 |
| 6 | :func:`adversarial` | ``norm(n + eta*sign(q))``, iterated | eta = 0.01 |

Sources: MoCHi (Kalantidis et al., NeurIPS 2020: types 1 and 3), SynCo (Giakoumoglou and
Stathaki, 2024: all six) and its vision-transformer follow-up, "Unsupervised Training of Vision
Transformers with Synthetic Negatives" (SynCo v2, 2025).

Every strategy draws, for each synthetic negative, its hard negative(s) uniformly *with
replacement* from that query's pool and its coefficient independently. Everything synthetic is
detached: the gradient reaches only the query, through the new logits. A ``torch.Generator``
makes the result reproducible, and there is no Python loop over the batch or over the samples.

Two ways to use them, with the same draws from the same generator:

* :func:`synthetic_logits` returns only what a loss needs, the cosine of each query to each of
  its synthetic negatives, (B, M) in float32, computed from inner products of the query and
  the pool rows without ever forming the (B, M, D) negatives; pass it to the loss as extra
  similarities. Its memory is O(B*M) plus chunks of the pool, so thousands of synthetic
  negatives per query are affordable.
* :func:`synthesize` returns the negatives themselves, (B, M, D), L2-normalised, in the
  query's dtype and device (arithmetic in float32), for losses that take vectors
  (``info_nce(..., extra_negatives=...)``) and for diagnostics.

Each type is one :class:`Strategy` record in an ordered registry (:func:`strategies`);
:class:`NegativeSpec`, :func:`synthesize` and :func:`synthetic_logits` iterate over it, and
:func:`register_strategy` adds a new type.

**Vanishing samples.** A sample whose unnormalised vector is shorter than 1e-3 (the midpoint of
a hard negative equal to ``-q`` at a = 0.5, a mix of n and ``-n`` at c = 0.5, ``n = -q`` with
delta = 1, ...) has no meaningful direction; it is replaced by the hard negative it was made
from (its first pick), in both :func:`synthesize` and :func:`synthetic_logits`. Its logit is
then ``q . n``.

**Non-finite inputs.** Every input is checked whole before anything is drawn: the query, the
bank (or the pool given to a strategy function) and the similarities. A NaN or infinite entry
anywhere raises :class:`syn2co.NonFiniteError` naming the argument, whichever rows the draw
would have picked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from syn2co import _checks as chk
from syn2co import _random

__all__ = [
    "STRATEGIES",
    "SYNCO_V1",
    "SYNCO_V2",
    "SYNCO_V2_CONFIG",
    "Combination",
    "InnerProducts",
    "NegativeSpec",
    "Strategy",
    "add_noise",
    "adversarial",
    "extrapolate",
    "hardest",
    "hardest_indices",
    "interpolate",
    "mixup",
    "mochi",
    "perturb",
    "positive_mask",
    "register_strategy",
    "similarity",
    "strategies",
    "synthesize",
    "synthetic_logits",
    "unregister_strategy",
]

# Rows of the pool at positions (B, P) -> (B, P, D), float32, unit norm.
_Rows = Callable[[Tensor], Tensor]

# A sample whose unnormalised vector is shorter than this falls back to its first pick.
_VANISHING_NORM: Final = 1e-3

# Rows gathered at a time by synthetic_logits: (B, chunk, D) blocks of about 1 MB in float32.
_CHUNK_ELEMENTS: Final = 1 << 18

# --------------------------------------------------------------------------------------------
# The hard pool
# --------------------------------------------------------------------------------------------


def similarity(query: Tensor, bank: Tensor) -> Tensor:
    """Cosine similarity of each query with every bank entry, in float32.

    The gradient flows to the query; the bank is treated as a constant.

    Compute it once per step and pass it both to :func:`hardest` / :func:`synthesize`
    (``similarity=sim.detach()``) and to :func:`syn2co.losses.info_nce`
    (``negative_similarity=sim``), so the bank is multiplied only once.

    Args:
        query: Queries of shape (B, D); normalised inside.
        bank: Negatives, shared (K, D) or per query (B, K, D); normalised inside.

    Returns:
        Tensor of shape (B, K), float32, ``norm(q) . norm(n)``.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> similarity(q, torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
        tensor([[0., 1.]])
    """
    chk.check_embeddings("query", query, "(B, D)")
    _check_bank(bank, query)
    chk.check_finite(("query", query), ("bank", bank))
    return _similarity(F.normalize(query.float(), dim=-1, eps=1e-12), _unit(bank))


def _similarity(q: Tensor, bank: Tensor) -> Tensor:
    """(B, D) x (K, D) or (B, K, D) -> (B, K), float32, outside any autocast region."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        if bank.ndim == 2:
            return q @ bank.T
        return torch.einsum("bd,bkd->bk", q, bank)


def hardest_indices(
    query: Tensor,
    bank: Tensor,
    n_hard: int,
    *,
    exclude: Tensor | None = None,
    similarity: Tensor | None = None,
) -> Tensor:
    """Indices of the ``n_hard`` bank entries most similar to each query.

    Args:
        query: Queries of shape (B, D).
        bank: Negatives, shared (K, D) or per query (B, K, D).
        n_hard: Pool size N, ``1 <= N <= K`` minus the entries excluded for any query.
        exclude: Optional boolean mask of shape (B, K); True entries are never chosen (for an
            in-batch bank, the query's own positive: see :func:`positive_mask`).
        similarity: Optional precomputed query-bank similarities of shape (B, K) (cosines, or
            logits: any positive multiple gives the same pool). Saves one product with the bank.

    Returns:
        Long tensor of shape (B, N) indexing the bank's K axis, hardest first.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> bank = torch.tensor([[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
        >>> hardest_indices(q, bank, 2)
        tensor([[1, 0]])
    """
    idx, _ = _hard_pool(query, bank, n_hard, exclude, similarity)
    return idx


def hardest(
    query: Tensor,
    bank: Tensor,
    n_hard: int,
    *,
    exclude: Tensor | None = None,
    similarity: Tensor | None = None,
) -> Tensor:
    """The hard pool: the ``n_hard`` bank entries most similar to each query.

    Selected and returned without gradient (MoCHi, SynCo).

    Args:
        query: Queries of shape (B, D).
        bank: Negatives, shared (K, D) (a MoCo queue, or the gathered keys of the batch) or per
            query (B, K, D).
        n_hard: Pool size N, ``1 <= N <= K`` minus the entries excluded for any query.
        exclude: Optional boolean mask of shape (B, K) of entries that must never be chosen.
        similarity: Optional precomputed similarities of shape (B, K); see
            :func:`hardest_indices`.

    Returns:
        Tensor of shape (B, N, D): the chosen rows, L2-normalised, hardest first, detached, in
        the query's dtype.

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> bank = torch.tensor([[0.0, 2.0], [3.0, 0.3], [-1.0, 0.0]])
        >>> hardest(q, bank, 1)
        tensor([[[0.9950, 0.0995]]])
    """
    idx, unit_bank = _hard_pool(query, bank, n_hard, exclude, similarity)
    return _bank_rows(bank, unit_bank, idx)(None).to(query.dtype)


def positive_mask(
    batch_size: int,
    *,
    world_size: int = 1,
    rank: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``exclude`` mask for an in-batch bank: each query's own positive key.

    With MoCo v3-style in-batch keys gathered from all ranks, query ``i`` of rank ``r`` has its
    positive at column ``r * batch_size + i`` of the gathered keys.

    Args:
        batch_size: Local batch size B.
        world_size: Number of ranks whose keys were gathered.
        rank: This process's rank.
        device: Device of the mask.

    Returns:
        Boolean tensor of shape (B, world_size * B).

    Example:
        >>> positive_mask(2, world_size=2, rank=1).int()
        tensor([[0, 0, 1, 0],
                [0, 0, 0, 1]], dtype=torch.int32)
    """
    chk.check_int("batch_size", batch_size, minimum=1)
    chk.check_int("world_size", world_size, minimum=1)
    chk.check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank: expected a rank below world_size={world_size}, got {rank}")
    cols = torch.arange(batch_size, device=device) + rank * batch_size
    mask = torch.zeros(batch_size, world_size * batch_size, dtype=torch.bool, device=device)
    return mask.scatter_(1, cols[:, None], True)


# --------------------------------------------------------------------------------------------
# The six strategies
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
        hard: Hard pool of shape (B, N, D), e.g. from :func:`hardest`.
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
        hard: Hard pool of shape (B, N, D).
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
        hard: Hard pool of shape (B, N, D).
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
        hard: Hard pool of shape (B, N, D).
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
        hard: Hard pool of shape (B, N, D).
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
        hard: Hard pool of shape (B, N, D).
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
# Strategies: one record per type, in one ordered registry
# --------------------------------------------------------------------------------------------

#: A weight in a :class:`Combination`: a number, or one value per sample, (B, c).
Weight: TypeAlias = "Tensor | float"

#: ``draw(spec, (B, c, D), generator, device)``: a strategy's random draw for c samples per
#: query, right after its pool positions: coefficients (B, c, 1), a vector per sample
#: (B, c, D), or None.
DrawFn: TypeAlias = Callable[
    ["NegativeSpec", tuple[int, int, int], "torch.Generator | None", torch.device], "Tensor | None"
]

#: ``write(out, query, picks, drawn, spec)``: fills ``out`` (B, c, D) in place with the
#: unnormalised samples, from the unit query (B, 1, D), the unit pool rows each sample picked
#: (one (B, c, D) tensor per pick) and the draw.
WriteFn: TypeAlias = Callable[
    [Tensor, Tensor, tuple[Tensor, ...], "Tensor | None", "NegativeSpec"], None
]

#: ``combination(products, drawn, spec)``: the same unnormalised samples as weights on the
#: vectors they combine (see :class:`Combination`).
CombineFn: TypeAlias = Callable[["InnerProducts", "Tensor | None", "NegativeSpec"], "Combination"]


@dataclass(frozen=True)
class Combination:
    """A synthetic negative as weights on the vectors it combines, before normalisation.

    ``u = query * q + sum_g picks[g] * n_g + sign * sign(q) + drawn * e``, where ``q`` is the
    unit query, ``n_g`` the unit pool row of the sample's g-th pick, ``sign(q)`` the query's
    elementwise sign and ``e`` the strategy's drawn vector (the noise of :func:`add_noise`).
    The synthetic negative is ``u / |u|``. Each weight is a number or one value per sample,
    (B, c); a weight of exactly 0 leaves its vector out.

    Attributes:
        query: Weight of the unit query.
        picks: Weights of the pool rows, one per pick (at most the strategy's ``picks``).
        sign: Weight of ``sign(q)``.
        drawn: Weight of the drawn vector (only for a draw of shape (B, c, D)).

    Example:
        >>> Combination(query=0.3, picks=(0.7,))  # interpolation with a = 0.3
        Combination(query=0.3, picks=(0.7,), sign=0.0, drawn=0.0)
    """

    query: Weight = 0.0
    picks: tuple[Weight, ...] = ()
    sign: Weight = 0.0
    drawn: Weight = 0.0

    def scaled(self, factor: Weight) -> Combination:
        """Every weight times ``factor``; weights of exactly 0 stay out.

        Example:
            >>> Combination(query=0.5, picks=(1.0,)).scaled(2.0)
            Combination(query=1.0, picks=(2.0,), sign=0.0, drawn=0.0)
        """

        def times(w: Weight) -> Weight:
            return w if _absent(w) else w * factor

        return Combination(
            times(self.query),
            tuple(times(w) for w in self.picks),
            times(self.sign),
            times(self.drawn),
        )

    def plus(self, other: Combination) -> Combination:
        """The weights of ``self`` and ``other`` added (``u + u'``)."""
        n = max(len(self.picks), len(other.picks))
        pad = (0.0,) * n
        picks = tuple(
            _add(a, b)
            for a, b in zip((*self.picks, *pad)[:n], (*other.picks, *pad)[:n], strict=True)
        )
        return Combination(
            _add(self.query, other.query),
            picks,
            _add(self.sign, other.sign),
            _add(self.drawn, other.drawn),
        )


def _absent(w: Weight) -> bool:
    return not isinstance(w, Tensor) and w == 0


def _add(a: Weight, b: Weight) -> Weight:
    return b if _absent(a) else a if _absent(b) else a + b


class InnerProducts:
    """Inner products among the vectors one strategy's samples combine, without the samples.

    :func:`synthetic_logits` builds one per strategy and passes it to its
    :attr:`Strategy.combination`, which may call :meth:`norm` on the way (the iterated steps of
    :func:`adversarial` renormalise between steps). Products are computed on first use and
    cached: cosines to the query and norms come from one pass over the pool rows, products of
    two picks or of a pick and a drawn vector from chunks of gathered rows, so no (B, c, D)
    tensor of samples is ever formed.

    Attributes:
        picks: Pool positions of each sample's pool members, one (B, c) long tensor per pick.
        drawn: The strategy's draw: (B, c, 1) coefficients, (B, c, D) vectors, or None.
    """

    def __init__(
        self, pool: _Pool, picks: tuple[Tensor, ...], drawn: Tensor | None, count: int
    ) -> None:
        self._pool, self.picks, self.drawn = pool, picks, drawn
        self._shape = (pool.q.shape[0], count)
        self._cache: dict[tuple[str, str], Tensor] = {}

    def dot(self, a: Combination, b: Combination) -> Tensor:
        """``u_a . u_b`` for each sample: (B, c), float64."""
        total = self._pool.q.new_zeros(self._shape, dtype=torch.float64)
        for key_a, weight_a in self._terms(a):
            for key_b, weight_b in self._terms(b):
                total = total + weight_a * weight_b * self._inner(key_a, key_b)
        return total

    def norm(self, u: Combination) -> Tensor:
        """``|u|`` for each sample: (B, c), float64."""
        return self.dot(u, u).clamp_min(0.0).sqrt()

    def query_dot(self, u: Combination) -> Tensor:
        """``q . u`` for each sample: (B, c), float64; the logit when ``u`` has unit norm."""
        return self.dot(Combination(query=1.0), u)

    def unit(self, u: Combination) -> Combination:
        """``u / |u|``; a sample whose ``|u|`` is below 1e-3 becomes its (unit) first pick."""
        length = self.norm(u)
        vanished = length < _VANISHING_NORM
        first = Combination(picks=(1.0,))
        kept = u.scaled(torch.where(vanished, 0.0, 1.0 / length.clamp_min(_VANISHING_NORM)))
        fallback = torch.where(vanished, 1.0 / self.norm(first).clamp_min(1e-12), 0.0)
        return kept.plus(first.scaled(fallback))

    def _terms(self, u: Combination) -> list[tuple[str, Weight]]:
        if len(u.picks) > len(self.picks):
            raise ValueError(
                f"combination: expected at most {len(self.picks)} pick weight(s) (the "
                f"strategy's picks), got {len(u.picks)}"
            )
        if not _absent(u.drawn) and (
            self.drawn is None
            or self.drawn.ndim != 3
            or self.drawn.shape[-1] != self._pool.q.shape[1]
        ):
            raise ValueError("combination: a drawn weight needs a draw of shape (B, c, D)")
        keys = [("q", u.query), *((f"n{g}", w) for g, w in enumerate(u.picks))]
        keys += [("s", u.sign), ("e", u.drawn)]
        return [(key, w) for key, w in keys if not _absent(w)]

    def _inner(self, a: str, b: str) -> Tensor:
        key = (a, b) if a <= b else (b, a)
        if key not in self._cache:
            # float64 from here on: the products come from float32 vectors, but the quadratic
            # forms built on them cancel where a sample nearly vanishes (n' close to -n)
            self._cache[key] = self._compute(*key).double()
        return self._cache[key]

    def _compute(self, a: str, b: str) -> Tensor:
        """One inner product for keys in sorted order: "e" drawn, "n<g>" pick g, "q", "s"."""
        pool = self._pool
        scalars = {("q", "q"): pool.qq, ("q", "s"): pool.l1, ("s", "s"): pool.nnz}
        if (a, b) in scalars:
            return scalars[(a, b)]
        if a == "e":
            e = cast(Tensor, self.drawn)
            if b == "e":
                return torch.square(torch.linalg.vector_norm(e, dim=-1))
            if b in ("q", "s"):
                direction = pool.q if b == "q" else pool.sign
                return torch.bmm(direction[:, None, :], e.transpose(1, 2))[:, 0]
            return pool.rows_dot(self.picks[int(b[1:])], e)
        pick = self.picks[int(a[1:])]  # a is "n<g>"
        cos, sign_cos = pool.stats()
        if b == "q":
            return cos.gather(1, pick)
        if b == "s":
            return sign_cos.gather(1, pick)
        if a == b:
            return pool.squares(pick)
        return pool.pair(pick, self.picks[int(b[1:])])


@dataclass(frozen=True)
class Strategy:
    """One synthetic-negative type: how it picks from the pool, draws, writes and combines.

    The registry (:func:`strategies`) holds one per type, in the order in which
    :func:`synthesize` and :func:`synthetic_logits` draw from the generator and lay out the M
    axis. For each strategy with a non-zero count c, both draw the pool positions
    ``randint(N, (B, picks * c))`` (the first c columns are each sample's first pick, the next
    c its second, ...), then call ``draw``. :func:`synthesize` gathers the picked rows and calls
    ``write``; :func:`synthetic_logits` calls ``combination``. The two must describe the same
    vectors: ``norm(write(...))`` equals ``u / |u|`` of the combination.

    Attributes:
        name: Its count's name: ``NegativeSpec(counts={name: c})``, ``spec.counts[name]``.
        description: One line for help texts (a command-line option, a table).
        draw: ``draw(spec, (B, c, D), generator, device)`` -> coefficients (B, c, 1), a vector
            per sample (B, c, D), or None. Read coefficients from the spec or keep them in the
            function.
        write: ``write(out, query, picks, drawn, spec)``: fill ``out`` (B, c, D) in place with
            the unnormalised samples, from the unit query (B, 1, D) and the unit rows picked,
            one (B, c, D) tensor per pick.
        combination: ``combination(products, drawn, spec)`` -> :class:`Combination`: the same
            unnormalised samples as weights; ``products`` (:class:`InnerProducts`) gives norms
            where a construction needs them on the way.
        picks: Pool members per sample, >= 1 (2 for :func:`mixup`).
        draws_vectors: True when ``draw`` returns a vector per sample (B, c, D) that the
            combination weighs (``Combination.drawn``), as the noise of :func:`add_noise`:
            :func:`synthetic_logits` then keeps the generator's state to draw it again in the
            backward pass instead of keeping the vectors.
    """

    name: str
    description: str
    draw: DrawFn
    write: WriteFn
    combination: CombineFn
    picks: int = 1
    draws_vectors: bool = False


def _draw_coefficient(field: str) -> DrawFn:
    def draw(
        spec: NegativeSpec,
        shape: tuple[int, int, int],
        gen: torch.Generator | None,
        device: torch.device,
    ) -> Tensor:
        return _random.uniform((shape[0], shape[1], 1), getattr(spec, field), gen, device)

    return draw


def _draw_noise(
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    return _random.normal(torch.Size(shape), gen, device)


def _draw_nothing(
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
) -> None:
    return None


# The writes below run in-place arithmetic on the output slice: no temporaries of the output's
# size, and no ``out=`` arguments (torch.compile rejects them on non-contiguous slices).


def _write_interpolated(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], a: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # a*q + (1-a)*n = n + a*(q - n)
    out.copy_(q.expand_as(out)).sub_(n).mul_(cast(Tensor, a)).add_(n)


def _write_extrapolated(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], b: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # q + b*(n - q)
    out.copy_(n).sub_(q).mul_(cast(Tensor, b)).add_(q)


def _write_mixed(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], c: Tensor | None, spec: NegativeSpec
) -> None:
    first, second = picks  # c*n + (1-c)*n' = n' + c*(n - n')
    out.copy_(first).sub_(second).mul_(cast(Tensor, c)).add_(second)


def _write_noisy(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], eps: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # n + sigma*eps
    out.copy_(n).add_(cast(Tensor, eps), alpha=spec.sigma)


def _write_perturbed(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], drawn: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # n + delta*q: one ascent step on q.n, whose gradient is q
    out.copy_(n).add_(q, alpha=spec.delta)


def _write_adversarial(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], drawn: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # signed steps, renormalised in between; the caller normalises the last
    step = torch.sign(q).mul_(spec.eta)
    out.copy_(n).add_(step)
    for _ in range(spec.adversarial_steps - 1):  # over steps, not samples
        norms = torch.linalg.vector_norm(out, dim=-1, keepdim=True)
        out.div_(norms.masked_fill_(norms < _VANISHING_NORM, math.inf))  # vanished: restart at 0
        out.add_(step)


def _combine_interpolated(
    products: InnerProducts, a: Tensor | None, spec: NegativeSpec
) -> Combination:
    weight = cast(Tensor, a)[..., 0].double()
    return Combination(query=weight, picks=(1.0 - weight,))


def _combine_extrapolated(
    products: InnerProducts, b: Tensor | None, spec: NegativeSpec
) -> Combination:
    weight = cast(Tensor, b)[..., 0].double()
    return Combination(query=1.0 - weight, picks=(weight,))


def _combine_mixed(products: InnerProducts, c: Tensor | None, spec: NegativeSpec) -> Combination:
    weight = cast(Tensor, c)[..., 0].double()
    return Combination(picks=(weight, 1.0 - weight))


def _combine_noisy(products: InnerProducts, eps: Tensor | None, spec: NegativeSpec) -> Combination:
    return Combination(picks=(1.0,), drawn=spec.sigma)


def _combine_perturbed(
    products: InnerProducts, drawn: Tensor | None, spec: NegativeSpec
) -> Combination:
    return Combination(query=spec.delta, picks=(1.0,))


def _combine_adversarial(
    products: InnerProducts, drawn: Tensor | None, spec: NegativeSpec
) -> Combination:
    # s_0 = n; each step adds eta*sign(q); steps but the last are renormalised, and a point
    # that vanished restarts from 0, as in the write.
    u = Combination(picks=(1.0,))
    for _ in range(spec.adversarial_steps - 1):
        u = replace(u, sign=_add(u.sign, spec.eta))
        length = products.norm(u)
        u = u.scaled(torch.where(length < _VANISHING_NORM, 0.0, 1.0 / length.clamp_min(1e-12)))
    return replace(u, sign=_add(u.sign, spec.eta))


_REGISTRY: dict[str, Strategy] = {}

# Names a strategy cannot take: NegativeSpec's other arguments.
_RESERVED: Final = frozenset(
    {"n_hard", "counts", "alpha", "beta", "gamma", "sigma", "delta", "eta", "adversarial_steps"}
)


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a synthetic-negative type after those already registered.

    From then on ``NegativeSpec(counts={strategy.name: c})`` asks for c samples of it per query,
    placed after the types registered before it on the M axis, and :func:`synthesize` and
    :func:`synthetic_logits` make them. A spec without it draws exactly what it drew before.

    Args:
        strategy: The record; its name must be a new identifier that is not one of
            :class:`NegativeSpec`'s other arguments, its description one non-empty line, and
            ``picks >= 1``.

    Returns:
        The strategy, registered.

    Example:
        >>> def draw(spec, shape, gen, device):
        ...     return None
        >>> def write(out, q, picks, drawn, spec):
        ...     out.copy_(picks[0]).neg_()
        >>> def combination(products, drawn, spec):
        ...     return Combination(picks=(-1.0,))
        >>> antipodes = register_strategy(
        ...     Strategy("antipodal", "-n: a hard negative's antipode", draw, write, combination)
        ... )
        >>> NegativeSpec(n_hard=8, interpolated=2, counts={"antipodal": 3}).slices()["antipodal"]
        slice(2, 5, None)
        >>> unregister_strategy("antipodal").name
        'antipodal'
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy: expected a Strategy, got {type(strategy).__name__}")
    name = strategy.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"strategy.name: expected an identifier, got {name!r}")
    if name in _REGISTRY or name in _RESERVED:
        taken = "a registered strategy" if name in _REGISTRY else "a NegativeSpec argument"
        raise ValueError(f"strategy.name: {name!r} is already {taken}")
    description = strategy.description
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"strategy.description: expected one non-empty line, got {description!r}")
    chk.check_int("strategy.picks", strategy.picks, minimum=1)
    for hook in ("draw", "write", "combination"):
        if not callable(getattr(strategy, hook)):
            raise TypeError(f"strategy.{hook}: expected a callable")
    _REGISTRY[name] = strategy
    return strategy


def unregister_strategy(name: str) -> Strategy:
    """Remove a strategy added with :func:`register_strategy`; the six built-in types stay.

    Args:
        name: Its name.

    Returns:
        The strategy removed.
    """
    if name in STRATEGIES:
        raise ValueError(f"name: {name!r} is a built-in strategy and cannot be removed")
    if name not in _REGISTRY:
        raise ValueError(f"name: expected a registered strategy, got {name!r}")
    return _REGISTRY.pop(name)


def strategies() -> tuple[Strategy, ...]:
    """The registered strategies, in the order they draw and sit on the M axis.

    Example:
        >>> [s.name for s in strategies()][:3]
        ['interpolated', 'extrapolated', 'mixed']
        >>> strategies()[0].description
        'type 1, norm(a*q + (1-a)*n), a ~ U(alpha): between the query and a hard negative'
    """
    return tuple(_REGISTRY.values())


for _strategy in (
    Strategy(
        "interpolated",
        "type 1, norm(a*q + (1-a)*n), a ~ U(alpha): between the query and a hard negative",
        _draw_coefficient("alpha"),
        _write_interpolated,
        _combine_interpolated,
    ),
    Strategy(
        "extrapolated",
        "type 2, norm(q + b*(n - q)), b ~ U(beta): past a hard negative, away from the query",
        _draw_coefficient("beta"),
        _write_extrapolated,
        _combine_extrapolated,
    ),
    Strategy(
        "mixed",
        "type 3, norm(c*n + (1-c)*n'), c ~ U(gamma): a mix of two hard negatives",
        _draw_coefficient("gamma"),
        _write_mixed,
        _combine_mixed,
        picks=2,
    ),
    Strategy(
        "noisy",
        "type 4, norm(n + sigma*eps), eps ~ N(0, I): a hard negative plus Gaussian noise",
        _draw_noise,
        _write_noisy,
        _combine_noisy,
        draws_vectors=True,
    ),
    Strategy(
        "perturbed",
        "type 5, norm(n + delta*q): one gradient-ascent step of q.n on a hard negative",
        _draw_nothing,
        _write_perturbed,
        _combine_perturbed,
    ),
    Strategy(
        "adversarial",
        "type 6, norm(n + eta*sign(q)), iterated: signed steps that raise the query's loss",
        _draw_nothing,
        _write_adversarial,
        _combine_adversarial,
    ),
):
    _REGISTRY[_strategy.name] = _strategy

#: The six built-in strategies, in the order :func:`synthesize` concatenates them (types 1 to
#: 6); :func:`strategies` lists these and any registered since.
STRATEGIES: Final = tuple(_REGISTRY)

# --------------------------------------------------------------------------------------------
# Specs and presets
# --------------------------------------------------------------------------------------------

# The built-in types' counts that NegativeSpec takes as keyword arguments (any registered type
# can be given in ``counts=``).
_KEYWORD_COUNTS: Final = STRATEGIES


@dataclass(frozen=True, init=False, repr=False)
class NegativeSpec:
    """How many synthetic negatives of each type to make, and their coefficients.

    Counts are per query and per loss direction, one per registered strategy
    (:func:`strategies`): the six built-in types as keyword arguments, any type (a registered
    one too) in ``counts``. Counts may be Python or numpy integers and are stored as ``int``.
    Validated on construction; use :meth:`replace` to derive a variant. Presets:
    :data:`SYNCO_V1`, :data:`SYNCO_V2`, :data:`SYNCO_V2_CONFIG` and :func:`mochi`. A spec whose
    counts are all 0 is valid and makes nothing.

    Args:
        n_hard: Size N of the hard pool the strategies draw from.
        interpolated: Count of type 1 (:func:`interpolate`).
        extrapolated: Count of type 2 (:func:`extrapolate`).
        mixed: Count of type 3 (:func:`mixup`).
        noisy: Count of type 4 (:func:`add_noise`).
        perturbed: Count of type 5 (:func:`perturb`).
        adversarial: Count of type 6 (:func:`adversarial`).
        alpha: Query-weight range of type 1.
        beta: Extrapolation-factor range of type 2.
        gamma: Mixing-weight range of type 3.
        sigma: Noise scale of type 4.
        delta: Step size of type 5.
        eta: Step size of type 6.
        adversarial_steps: Signed steps of type 6 (1 = the published closed form).
        counts: Counts by strategy name, for any registered strategy; a type given here must
            not also get a non-zero keyword count.

    Example:
        >>> spec = NegativeSpec(n_hard=64, interpolated=16, mixed=8)
        >>> spec.total
        24
        >>> spec.slices()["mixed"]
        slice(16, 24, None)
        >>> NegativeSpec(n_hard=64, counts={"mixed": 8}) == NegativeSpec(n_hard=64, mixed=8)
        True
    """

    n_hard: int
    _counts: tuple[tuple[str, int], ...]  # the non-zero counts, sorted by name
    alpha: tuple[float, float]
    beta: tuple[float, float]
    gamma: tuple[float, float]
    sigma: float
    delta: float
    eta: float
    adversarial_steps: int

    def __init__(
        self,
        n_hard: int = 256,
        interpolated: int = 0,
        extrapolated: int = 0,
        mixed: int = 0,
        noisy: int = 0,
        perturbed: int = 0,
        adversarial: int = 0,
        alpha: tuple[float, float] = (0.0, 0.5),
        beta: tuple[float, float] = (1.0, 1.5),
        gamma: tuple[float, float] = (0.0, 1.0),
        sigma: float = 0.1,
        delta: float = 0.01,
        eta: float = 0.01,
        adversarial_steps: int = 1,
        *,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        keywords = (interpolated, extrapolated, mixed, noisy, perturbed, adversarial)
        values: dict[str, object] = {
            "n_hard": chk.check_int("n_hard", n_hard, minimum=1),
            "_counts": _merge_counts(dict(zip(_KEYWORD_COUNTS, keywords, strict=True)), counts),
            # Ranges are stored as float tuples so that equal specs compare and hash equal.
            "alpha": chk.check_range("alpha", alpha, low=0.0, high=1.0),
            "beta": chk.check_range("beta", beta, low=1.0),
            "gamma": chk.check_range("gamma", gamma, low=0.0, high=1.0),
            "sigma": chk.check_number("sigma", sigma, low=0.0),
            "delta": chk.check_number("delta", delta, low=0.0),
            "eta": chk.check_number("eta", eta, low=0.0),
            "adversarial_steps": chk.check_int("adversarial_steps", adversarial_steps, minimum=1),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def counts(self) -> dict[str, int]:
        """Count per registered strategy, in registry order (:func:`strategies`)."""
        given = dict(self._counts)
        gone = sorted(set(given) - set(_REGISTRY))
        if gone:
            raise ValueError(
                f"spec: counts {', '.join(map(repr, gone))}, no longer registered strategies"
            )
        return {name: given.get(name, 0) for name in _REGISTRY}

    @property
    def total(self) -> int:
        """M, the number of synthetic negatives per query."""
        return sum(self.counts.values())

    def slices(self) -> dict[str, slice]:
        """Where each strategy's samples sit along the M axis of :func:`synthesize`'s output."""
        out, start = {}, 0
        for name, count in self.counts.items():
            out[name] = slice(start, start + count)
            start += count
        return out

    @property
    def interpolated(self) -> int:
        """Count of type 1 (:func:`interpolate`)."""
        return self._count("interpolated")

    @property
    def extrapolated(self) -> int:
        """Count of type 2 (:func:`extrapolate`)."""
        return self._count("extrapolated")

    @property
    def mixed(self) -> int:
        """Count of type 3 (:func:`mixup`)."""
        return self._count("mixed")

    @property
    def noisy(self) -> int:
        """Count of type 4 (:func:`add_noise`)."""
        return self._count("noisy")

    @property
    def perturbed(self) -> int:
        """Count of type 5 (:func:`perturb`)."""
        return self._count("perturbed")

    @property
    def adversarial(self) -> int:
        """Count of type 6 (:func:`adversarial`)."""
        return self._count("adversarial")

    def _count(self, name: str) -> int:
        return dict(self._counts).get(name, 0)

    def _settings(self) -> dict[str, object]:
        return {
            "n_hard": self.n_hard,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "sigma": self.sigma,
            "delta": self.delta,
            "eta": self.eta,
            "adversarial_steps": self.adversarial_steps,
        }

    def replace(self, **changes: object) -> NegativeSpec:
        """A validated copy with some fields changed: any setting, any registered strategy's
        count by name, or ``counts`` (a mapping merged into the current counts).

        Example:
            >>> SYNCO_V2.replace(noisy=0).total
            512
        """
        settings = self._settings()
        counts: dict[str, object] = dict(self._counts)
        known = {*settings, *_REGISTRY, "counts"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"replace: unknown field(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
        mapping = changes.get("counts", {})
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"counts: expected a mapping of strategy name to count, got {mapping!r}"
            )
        both = sorted(set(mapping) & set(changes))
        if both:
            raise ValueError(f"replace: {both[0]!r} is given both by name and in counts")
        for name, value in changes.items():
            if name in _REGISTRY:
                counts[name] = value
            elif name != "counts":
                settings[name] = value
        counts.update(mapping)
        return NegativeSpec(counts=counts, **settings)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        counts = self.counts
        parts = [f"n_hard={self.n_hard}"]
        parts += [f"{name}={counts[name]}" for name in _KEYWORD_COUNTS]
        others = {name: c for name, c in counts.items() if name not in _KEYWORD_COUNTS and c}
        parts += [
            f"{name}={value!r}" for name, value in self._settings().items() if name != "n_hard"
        ]
        if others:
            parts.append(f"counts={others!r}")
        return f"NegativeSpec({', '.join(parts)})"


def _merge_counts(
    keywords: dict[str, object], counts: Mapping[str, object] | None
) -> tuple[tuple[str, int], ...]:
    """The keyword counts and the ``counts`` mapping, validated: non-zero counts sorted by name."""
    given = {name: chk.check_int(name, value, minimum=0) for name, value in keywords.items()}
    if counts is not None:
        if not isinstance(counts, Mapping):
            raise TypeError(
                f"counts: expected a mapping of strategy name to count, got {type(counts).__name__}"
            )
        for name, value in counts.items():
            if name not in _REGISTRY:
                raise ValueError(
                    f"counts: unknown strategy {name!r}; registered: {', '.join(_REGISTRY)}"
                )
            if given.get(name, 0):
                raise ValueError(f"counts: {name!r} is also given as {name}={given[name]}")
            given[name] = chk.check_int(name, value, minimum=0)
    return tuple(sorted((name, count) for name, count in given.items() if count))


#: SynCo v1 (ResNet-50, MoCo v2): N = 1024; 256/256/256/64/64/64 of types 1-6; sigma 0.01.
#: The official code swaps the enable flags of types 4 and 5, which only matters when exactly
#: one of their counts is 0.
SYNCO_V1: Final = NegativeSpec(
    n_hard=1024,
    interpolated=256,
    extrapolated=256,
    mixed=256,
    noisy=64,
    perturbed=64,
    adversarial=64,
    sigma=0.01,
)

#: SynCo v2 as its code actually ran (DeiT-S / Swin-T with MoBY): N = 256;
#: 128/128/128/64/64/64; sigma 0.1.
SYNCO_V2: Final = NegativeSpec(
    n_hard=256,
    interpolated=128,
    extrapolated=128,
    mixed=128,
    noisy=64,
    perturbed=64,
    adversarial=64,
    sigma=0.1,
)

#: SynCo v2 as its config intended (128 of every type; the counts were never passed on).
SYNCO_V2_CONFIG: Final = SYNCO_V2.replace(noisy=128, perturbed=128, adversarial=128)


def mochi(n_hard: int = 1024, s: int = 512, s_prime: int = 256) -> NegativeSpec:
    """MoCHi(N, s, s'): s mixed hard negatives (type 3) and s' query-interpolated ones (type 1).

    Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020.

    Args:
        n_hard: Hard pool size N.
        s: Count of type-3 mixes of two hard negatives.
        s_prime: Count of type-1 mixes with the query, query weight in (0, 0.5).

    Returns:
        The corresponding :class:`NegativeSpec`.

    Example:
        >>> mochi(1024, 512, 256).counts["mixed"]
        512
    """
    return NegativeSpec(n_hard=n_hard, mixed=s, interpolated=s_prime)


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
    idx, unit_bank = _select(query, bank, spec.n_hard, exclude, similarity)
    out = _generate(_unit(query), _bank_rows(bank, unit_bank, idx), spec.n_hard, spec, gen)
    return out.to(query.dtype)


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
    kept for backward, plus the pool rows gathered in chunks of about 4 MB, plus, for type 4
    only, its noise (B, noisy, D) while it is reduced, which the generator's consumption
    requires.

    The bank is saved for the backward pass without a copy: modifying it in place in between
    (e.g. enqueueing into the queue it views before ``backward``) makes autograd raise an
    error about an in-place modification, instead of giving a wrong gradient. Enqueue after
    ``backward``, as MoCo does.

    Vanishing samples (|u| < 1e-3) become their first pick, as in :func:`synthesize`. Inputs may
    be float16, bfloat16 or float32 (the output is float32; the arithmetic runs in float32
    outside any autocast region). Not twice differentiable. ``torch.compile(fullgraph=True)``
    traces it with ``generator=None`` and no type-4 count (a compiled graph draws its own
    random numbers); with a generator argument or noise, dynamo runs the draws eagerly.

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
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=-1, eps=1e-12)
        if spec.total == 0:
            return q[:, :0]
        idx, _ = _select(query, bank, spec.n_hard, exclude, similarity)
        out = _SyntheticLogits.apply(q, bank.detach(), idx, spec, gen)
    return cast(Tensor, out)


# --------------------------------------------------------------------------------------------
# The vector engine (synthesize and the six functions)
# --------------------------------------------------------------------------------------------

# Every strategy with a non-zero count first draws its pool positions, then its coefficients,
# in registry order, so synthesize(), synthetic_logits() and the public functions consume a
# generator identically. synthesize() then gathers all picks in one go, each strategy writes
# its slice of one preallocated output in place, and the output is normalised once: few passes
# over (B, M, D) memory.


def _active(spec: NegativeSpec) -> list[tuple[Strategy, int]]:
    """The strategies the spec asks for, with their counts, in registry order."""
    return [(_REGISTRY[name], count) for name, count in spec.counts.items() if count]


def _draw(
    strategy: Strategy,
    count: int,
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
    *,
    keep_state: bool = False,
) -> tuple[Tensor, Tensor | None, tuple[torch.device, Tensor] | None]:
    """Pool positions (B, picks * count), the generator's state before the draw if asked, and
    the strategy's draw. ``shape`` is (B, N, D)."""
    b, n_pool, d = shape
    pos = _random.randint(n_pool, (b, strategy.picks * count), gen, device)
    state = _random.rng_state(gen, device) if keep_state else None
    return pos, strategy.draw(spec, (b, count, d), gen, device), state


def _split(pos: Tensor, count: int) -> tuple[Tensor, ...]:
    """(B, picks * count) -> one (B, count) block per pick."""
    return tuple(pos[:, g * count : (g + 1) * count] for g in range(pos.shape[1] // count))


def _generate(
    q: Tensor, rows: _Rows, n_pool: int, spec: NegativeSpec, gen: torch.Generator | None
) -> Tensor:
    """All the spec's samples, (B, M, D), float32, unit norm."""
    b, d = q.shape
    parts = _active(spec)
    draws = [_draw(s, c, spec, (b, n_pool, d), gen, q.device) for s, c in parts]
    out = q.new_empty((b, spec.total, d))
    if not parts:
        return out
    picks = rows(torch.cat([pos for pos, _, _ in draws], dim=1))
    firsts = []
    o = p = 0
    for (strategy, count), (pos, drawn, _) in zip(parts, draws, strict=True):
        rows_picked = picks[:, p : p + pos.shape[1]]
        groups = tuple(rows_picked[:, g * count : (g + 1) * count] for g in range(strategy.picks))
        strategy.write(out[:, o : o + count], q[:, None, :], groups, drawn, spec)
        firsts.append(groups[0])
        o, p = o + count, p + pos.shape[1]
    return _normalize_or_fall_back_(out, firsts)


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

    def rows(pos: Tensor) -> Tensor:
        return _unit(hard.gather(1, pos[:, :, None].expand(-1, -1, d)))

    out = _generate(_unit(query), rows, hard.shape[1], spec, gen)
    return out.to(query.dtype)


# --------------------------------------------------------------------------------------------
# The logits engine (synthetic_logits)
# --------------------------------------------------------------------------------------------


class _Pool:
    """The hard pool through inner products: per-row scalars and chunked passes over its rows.

    Works on the bank's raw rows and divides the products by the rows' norms, as normalising
    the rows would (so unit rows give exact products); never holds more than one (B, chunk, D)
    block of rows (about 4 MB in float32).
    """

    def __init__(self, q: Tensor, bank: Tensor, idx: Tensor, norms: Tensor | None = None) -> None:
        b, d = q.shape
        self.q, self.sign, self.idx = q, torch.sign(q), idx
        self.qq = (q * q).sum(dim=1, keepdim=True)  # (B, 1): 1, or 0 for a zero query
        self.l1 = q.abs().sum(dim=1, keepdim=True)  # q . sign(q)
        self.nnz = self.sign.abs().sum(dim=1, keepdim=True)  # sign(q) . sign(q)
        self.chunk = max(1, _CHUNK_ELEMENTS // (b * d))
        self._bank = bank
        self._norms = norms  # (B, N): |n_j| of every pool row
        self._stats: tuple[Tensor, Tensor] | None = None

    def _raw(self, bank_idx: Tensor) -> Tensor:
        """Float32 bank rows at bank indices (B, c) -> (B, c, D), not normalised."""
        return _take(self._bank, bank_idx).float()

    def _blocks(self) -> Iterator[tuple[slice, Tensor]]:
        """The whole pool, (B, chunk, D) raw rows at a time."""
        for start in range(0, self.idx.shape[1], self.chunk):
            where = slice(start, start + self.chunk)
            yield where, self._raw(self.idx[:, where])

    @property
    def norms(self) -> Tensor:
        """``|n_j|`` of every pool row, (B, N)."""
        if self._norms is None:
            self.stats()
        return cast(Tensor, self._norms)

    def divisors(self, pos: Tensor | None = None) -> Tensor:
        """What _unit divides the rows at pool positions (B, c) (all rows: None) by."""
        norms = self.norms if pos is None else self.norms.gather(1, pos)
        return norms.clamp_min(1e-12)

    def squares(self, pos: Tensor) -> Tensor:
        """``n . n`` of the unit rows at pool positions (B, c): 1, or 0 for a zero row."""
        norms = self.norms.gather(1, pos)
        return torch.square(norms / norms.clamp_min(1e-12))

    def stats(self) -> tuple[Tensor, Tensor]:
        """``q . n`` and ``sign(q) . n`` of every unit pool row, each (B, N)."""
        if self._stats is None:
            directions = torch.stack([self.q, self.sign], dim=1)  # (B, 2, D)
            dots, norms = [], []
            for _, rows in self._blocks():
                dots.append(torch.bmm(directions, rows.transpose(1, 2)))  # (B, 2, chunk)
                norms.append(torch.linalg.vector_norm(rows, dim=-1))
                del rows  # before the next block is gathered
            self._norms = torch.cat(norms, dim=1)
            dot = torch.cat(dots, dim=2)
            del dots
            dot /= self.divisors()[:, None, :]
            self._stats = (dot[:, 0], dot[:, 1])
        return self._stats

    def pair(self, first: Tensor, second: Tensor) -> Tensor:
        """``n . n'`` for pool positions (B, c) and (B, c) -> (B, c)."""
        step = max(1, self.chunk // 2)
        out = []
        for s in range(0, first.shape[1], step):
            a, b = first[:, s : s + step], second[:, s : s + step]
            rows_a, rows_b = self._raw(self.idx.gather(1, a)), self._raw(self.idx.gather(1, b))
            out.append((rows_a * rows_b).sum(dim=-1))
            del rows_a, rows_b  # before the next blocks are gathered
        return torch.cat(out, dim=1) / (self.divisors(first) * self.divisors(second))

    def rows_dot(self, pos: Tensor, vectors: Tensor) -> Tensor:
        """``n . v`` for pool positions (B, c) and vectors (B, c, D) -> (B, c)."""
        out = []
        for s in range(0, pos.shape[1], self.chunk):
            rows = self._raw(self.idx.gather(1, pos[:, s : s + self.chunk]))
            out.append((rows * vectors[:, s : s + self.chunk]).sum(dim=-1))
            del rows  # before the next block is gathered
        return torch.cat(out, dim=1) / self.divisors(pos)

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """``sum_j weights[:, j] * n_j`` over the unit pool rows: (B, N) -> (B, D)."""
        scaled = (weights / self.divisors())[:, None, :]  # (B, 1, N)
        out = torch.zeros_like(self.q)
        for where, rows in self._blocks():
            out.add_(torch.bmm(scaled[:, :, where], rows)[:, 0])
            del rows  # before the next block is gathered
        return out


class _SyntheticLogits(torch.autograd.Function):
    """Logits of the synthetic negatives from inner products; backward as the detached path."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        bank: Tensor,
        idx: Tensor,
        spec: NegativeSpec,
        gen: torch.Generator | None,
    ) -> Tensor:
        b, d = q.shape
        parts = _active(spec)
        n_picks = sum(strategy.picks * count for strategy, count in parts)
        pool = _Pool(q, bank, idx)
        logits, on_query, on_sign = (q.new_zeros((b, spec.total)) for _ in range(3))
        # Every pick's pool position, its weight in its sample and that sample's column.
        positions = idx.new_empty((b, n_picks), dtype=torch.int32)  # int64 in backward
        weights = q.new_zeros((b, n_picks))
        columns = torch.empty(n_picks, dtype=torch.long, device=q.device)
        redraw = []  # strategies whose draw is a vector: drawn again in backward
        start = p = 0
        for strategy, count in parts:
            end = start + count
            pos, drawn, state = _draw(
                strategy,
                count,
                spec,
                (b, idx.shape[1], d),
                gen,
                q.device,
                keep_state=strategy.draws_vectors,
            )
            picks = _split(pos, count)
            products = InnerProducts(pool, picks, drawn, count)
            u = products.unit(strategy.combination(products, drawn, spec))
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
                if state is None:
                    raise ValueError(
                        f"strategy {strategy.name!r}: its combination weighs the drawn vectors, "
                        "so it must be registered with draws_vectors=True"
                    )
                on_drawn = torch.as_tensor(u.drawn).to(q.dtype)
                redraw.append((strategy, count, start, on_drawn, state))
            del pos, picks, pick, drawn, products, u  # the noise goes before the next draw
            start = end
        ctx.save_for_backward(
            q, bank, idx, pool.norms, positions, weights, columns, on_query, on_sign
        )
        ctx.spec, ctx.redraw = spec, redraw
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, bank, idx, norms, positions, weights, columns, on_query, on_sign = ctx.saved_tensors
        b, d = q.shape
        g = grad.float()
        with torch.autocast(device_type=q.device.type, enabled=False):
            pool = _Pool(q, bank, idx, norms)
            out = (g * on_query).sum(dim=1, keepdim=True) * q
            out.add_((g * on_sign).sum(dim=1, keepdim=True) * pool.sign)
            on_rows = torch.zeros_like(idx, dtype=q.dtype)
            on_rows.scatter_add_(1, positions.long(), g[:, columns] * weights)
            out.add_(pool.weighted_sum(on_rows))
            for strategy, count, start, on_drawn, (device, state) in ctx.redraw:
                redrawn = torch.Generator(device=device)
                redrawn.set_state(state)
                drawn = strategy.draw(ctx.spec, (b, count, d), redrawn, q.device)
                weight = g[:, start : start + count] * on_drawn
                out.add_(torch.einsum("bc,bcd->bd", weight, cast(Tensor, drawn)))
        return out, None, None, None, None


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _check_spec(spec: object) -> NegativeSpec:
    if not isinstance(spec, NegativeSpec):
        raise TypeError(f"spec: expected a NegativeSpec, got {type(spec).__name__}")
    return spec


def _unit(x: Tensor) -> Tensor:
    """Detached float32 copy with unit rows (the eps guards all-zero rows)."""
    return F.normalize(x.detach().float(), dim=-1, eps=1e-12)


def _check_bank(bank: object, query: Tensor) -> Tensor:
    bank = chk.check_bank("bank", bank, *query.shape)
    chk.check_same_device("bank", bank, "query", query)
    return bank


def _check_pool_args(
    query: object,
    bank: object,
    n_hard: object,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> tuple[Tensor, Tensor, int]:
    """Validates the arguments of a hard-pool selection; returns the query, bank and N."""
    query = chk.check_embeddings("query", query, "(B, D)")
    bank = _check_bank(bank, query)
    b, k = query.shape[0], bank.shape[-2]
    n_hard = chk.check_int("n_hard", n_hard, minimum=1)
    if n_hard > k:
        raise ValueError(f"n_hard: expected at most K={k} (the bank size), got {n_hard}")
    if exclude is not None:
        chk.check_mask("exclude", exclude, (b, k), "(B, K)")
        chk.check_same_device("exclude", exclude, "query", query)
        if not chk.tracing():
            available = k - int(exclude.sum(dim=1).max())
            if n_hard > available:
                raise ValueError(
                    f"n_hard: expected at most {available} (K={k} minus the entries excluded "
                    f"for some query), got {n_hard}"
                )
    if similarity is not None:
        chk.check_embeddings("similarity", similarity, "(B, K)")
        if tuple(similarity.shape) != (b, k):
            raise ValueError(
                f"similarity: expected shape (B, K) = ({b}, {k}), got {tuple(similarity.shape)}"
            )
        chk.check_same_device("similarity", similarity, "query", query)
    chk.check_finite(("query", query), ("bank", bank), ("similarity", similarity))
    return query, bank, n_hard


def _select(
    query: Tensor,
    bank: Tensor,
    n_hard: int,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Hard-pool indices (B, N) of validated arguments, and the unit float32 bank if it was
    computed."""
    unit_bank = None
    with torch.no_grad():
        if similarity is None:
            unit_bank = _unit(bank)
            sim = _similarity(_unit(query), unit_bank)
        else:
            sim = similarity.detach().float()
        if exclude is not None:
            sim = sim.masked_fill(exclude, torch.finfo(sim.dtype).min)
        return sim.topk(n_hard, dim=1, sorted=True).indices, unit_bank


def _hard_pool(
    query: object,
    bank: object,
    n_hard: object,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Validated hard-pool indices (B, N), and the unit float32 bank if it was computed."""
    query, bank, n = _check_pool_args(query, bank, n_hard, exclude, similarity)
    return _select(query, bank, n, exclude, similarity)


def _take(source: Tensor, bank_idx: Tensor) -> Tensor:
    """Rows of a (K, D) or (B, K, D) bank at indices (B, P) -> (B, P, D).

    ``index_select`` on rows: on a CPU many times faster than advanced indexing or ``gather``.
    """
    d = source.shape[-1]
    if source.ndim == 2:
        return source.index_select(0, bank_idx.reshape(-1)).view(*bank_idx.shape, d)
    if source.is_contiguous():
        b, k = source.shape[:2]
        offsets = torch.arange(b, device=bank_idx.device)[:, None] * k
        flat = source.view(b * k, d).index_select(0, (bank_idx + offsets).reshape(-1))
        return flat.view(*bank_idx.shape, d)
    return source.gather(1, bank_idx[:, :, None].expand(-1, -1, d))


def _bank_rows(
    bank: Tensor, unit_bank: Tensor | None, idx: Tensor
) -> Callable[[Tensor | None], Tensor]:
    """Unit float32 bank rows at pool positions ``pos`` (B, P), or the whole pool for None."""
    b = idx.shape[0]

    def rows(pos: Tensor | None) -> Tensor:
        bank_idx = idx if pos is None else idx.gather(1, pos)
        # Normalise whichever is smaller: the bank, or the rows picked from it.
        source = unit_bank
        if source is None and bank.shape[-2] * (b if bank.ndim == 3 else 1) <= bank_idx.numel():
            source = _unit(bank)
        if source is None:
            return _unit(_take(bank.detach(), bank_idx))
        return _take(source, bank_idx)

    return rows
