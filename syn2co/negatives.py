"""Synthetic hard negatives in embedding space.

From a query and a bank of negatives, :func:`hardest` picks the hard pool (the N bank entries
most similar to each query); six strategies then make extra negatives from that pool, which a
contrastive loss appends to its logits (``info_nce(..., extra_negatives=...)``):

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
detached: the gradient reaches only the query, through the new logits. The output is
L2-normalised and has the query's dtype and device; the arithmetic runs in float32. There is no
Python loop over the batch or over the synthetic samples, and a ``torch.Generator`` makes the
result reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor

from syn2co import _checks as chk

__all__ = [
    "STRATEGIES",
    "SYNCO_V1",
    "SYNCO_V2",
    "SYNCO_V2_CONFIG",
    "NegativeSpec",
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
    "similarity",
    "synthesize",
]

#: The six strategies in the order :func:`synthesize` concatenates them (types 1 to 6).
STRATEGIES: Final = ("interpolated", "extrapolated", "mixed", "noisy", "perturbed", "adversarial")

# Rows of the pool at positions (B, P) -> (B, P, D), float32, unit norm.
_Rows = Callable[[Tensor], Tensor]


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
    part = _Part("interpolated", count, chk.check_range("alpha", alpha, low=0.0, high=1.0))
    return _from_pool(query, hard, part, generator)


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
    part = _Part("extrapolated", count, chk.check_range("beta", beta, low=1.0))
    return _from_pool(query, hard, part, generator)


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
    part = _Part("mixed", count, chk.check_range("gamma", gamma, low=0.0, high=1.0))
    return _from_pool(query, hard, part, generator)


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
    part = _Part("noisy", count, chk.check_number("sigma", sigma, low=0.0))
    return _from_pool(query, hard, part, generator)


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
    part = _Part("perturbed", count, chk.check_number("delta", delta, low=0.0))
    return _from_pool(query, hard, part, generator)


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
    negatives, drifting towards the direction ``sign(q)``.

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
    e = chk.check_number("eta", eta, low=0.0)
    part = _Part("adversarial", count, e, chk.check_int("steps", steps, minimum=1))
    return _from_pool(query, hard, part, generator)


# The engine. Every strategy first draws its pool positions, then its coefficients, in
# STRATEGIES order, so synthesize() and the public functions consume a generator identically.
# All picks are then gathered in one go, each strategy writes its slice of one preallocated
# output in place, and the output is normalised once: few passes over (B, M, D) memory.


@dataclass(frozen=True)
class _Part:
    """One strategy's share of the output: its count and coefficient (range)."""

    kind: str
    count: int
    param: tuple[float, float] | float
    steps: int = 1

    @property
    def picks(self) -> int:
        return 2 * self.count if self.kind == "mixed" else self.count


def _draw(
    part: _Part,
    batch: int,
    dim: int,
    n_pool: int,
    gen: torch.Generator | None,
    device: torch.device,
) -> tuple[Tensor, Tensor | None]:
    pos = _randint(n_pool, (batch, part.picks), gen, device)
    if part.kind in ("interpolated", "extrapolated", "mixed"):
        assert isinstance(part.param, tuple)
        return pos, _uniform((batch, part.count, 1), part.param, gen, device)
    if part.kind == "noisy":
        return pos, _normal(torch.Size((batch, part.count, dim)), gen, device)
    return pos, None


def _write(out: Tensor, part: _Part, q: Tensor, n: Tensor, coef: Tensor | None) -> None:
    """Fill ``out`` (B, c, D) with part's unnormalised samples from picks ``n`` (B, picks, D).

    In-place arithmetic on the output slice: no temporaries of the output's size, and no
    ``out=`` arguments (torch.compile rejects them on non-contiguous slices).
    """
    qb = q[:, None, :]
    if part.kind == "interpolated":  # a*q + (1-a)*n = n + a*(q - n)
        assert coef is not None
        out.copy_(qb.expand_as(out)).sub_(n).mul_(coef).add_(n)
    elif part.kind == "extrapolated":  # q + b*(n - q)
        assert coef is not None
        out.copy_(n).sub_(qb).mul_(coef).add_(qb)
    elif part.kind == "mixed":  # c*n + (1-c)*n' = n' + c*(n - n')
        assert coef is not None
        first, second = n[:, : part.count], n[:, part.count :]
        out.copy_(first).sub_(second).mul_(coef).add_(second)
    elif part.kind == "noisy":  # n + sigma*eps
        assert coef is not None
        out.copy_(n).add_(coef, alpha=float(part.param))  # type: ignore[arg-type]
    elif part.kind == "perturbed":  # n + delta*q: one ascent step on q.n, whose gradient is q
        out.copy_(n).add_(qb, alpha=float(part.param))  # type: ignore[arg-type]
    else:  # adversarial: signed steps, renormalised in between; the caller normalises the last
        step = torch.sign(qb).mul_(float(part.param))  # type: ignore[arg-type]
        out.copy_(n).add_(step)
        for _ in range(part.steps - 1):  # over steps, not samples
            _normalize_(out)
            out.add_(step)


def _generate(
    q: Tensor, rows: _Rows, n_pool: int, parts: list[_Part], gen: torch.Generator | None
) -> Tensor:
    """All parts' samples, (B, sum of counts, D), float32, unit norm."""
    b, d = q.shape
    draws = [_draw(part, b, d, n_pool, gen, q.device) for part in parts]
    out = q.new_empty((b, sum(part.count for part in parts), d))
    if out.shape[1] == 0:
        return out
    picks = rows(torch.cat([pos for pos, _ in draws], dim=1))
    o = p = 0
    for part, (pos, coef) in zip(parts, draws, strict=True):
        if part.count:
            _write(out[:, o : o + part.count], part, q, picks[:, p : p + pos.shape[1]], coef)
        o, p = o + part.count, p + pos.shape[1]
    return _normalize_(out)


def _from_pool(query: object, hard: object, part: _Part, generator: object) -> Tensor:
    """A public strategy function: validate, draw from the given pool, generate."""
    query = chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    hard = chk.check_embeddings("hard", hard, "(B, N, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("hard", hard, "query", query)
    chk.check_int("count", part.count, minimum=0)
    gen = chk.check_generator("generator", generator)

    def rows(pos: Tensor) -> Tensor:
        picked = hard.gather(1, pos[:, :, None].expand(-1, -1, d))
        chk.check_finite(("query", query), ("hard", picked))  # the rows actually used
        return _unit(picked)

    out = _generate(_unit(query), rows, hard.shape[1], [part], gen)
    return out.to(query.dtype)


# --------------------------------------------------------------------------------------------
# Specs and presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegativeSpec:
    """How many synthetic negatives of each type to make, and their coefficients.

    Counts are per query and per loss direction. Validated on construction; use
    :meth:`replace` to derive a variant. Presets: :data:`SYNCO_V1`, :data:`SYNCO_V2`,
    :data:`SYNCO_V2_CONFIG` and :func:`mochi`.

    Attributes:
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

    Example:
        >>> spec = NegativeSpec(n_hard=64, interpolated=16, mixed=8)
        >>> spec.total
        24
        >>> spec.slices()["mixed"]
        slice(16, 24, None)
    """

    n_hard: int = 256
    interpolated: int = 0
    extrapolated: int = 0
    mixed: int = 0
    noisy: int = 0
    perturbed: int = 0
    adversarial: int = 0
    alpha: tuple[float, float] = (0.0, 0.5)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (0.0, 1.0)
    sigma: float = 0.1
    delta: float = 0.01
    eta: float = 0.01
    adversarial_steps: int = field(default=1)

    def __post_init__(self) -> None:
        chk.check_int("n_hard", self.n_hard, minimum=1)
        for name in STRATEGIES:
            chk.check_int(name, getattr(self, name), minimum=0)
        # Store ranges as float tuples so equal specs compare and hash equal.
        object.__setattr__(self, "alpha", chk.check_range("alpha", self.alpha, low=0.0, high=1.0))
        object.__setattr__(self, "beta", chk.check_range("beta", self.beta, low=1.0))
        object.__setattr__(self, "gamma", chk.check_range("gamma", self.gamma, low=0.0, high=1.0))
        object.__setattr__(self, "sigma", chk.check_number("sigma", self.sigma, low=0.0))
        object.__setattr__(self, "delta", chk.check_number("delta", self.delta, low=0.0))
        object.__setattr__(self, "eta", chk.check_number("eta", self.eta, low=0.0))
        chk.check_int("adversarial_steps", self.adversarial_steps, minimum=1)

    @property
    def counts(self) -> dict[str, int]:
        """Count per strategy, in :data:`STRATEGIES` order."""
        return {name: int(getattr(self, name)) for name in STRATEGIES}

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

    def replace(self, **changes: object) -> NegativeSpec:
        """A validated copy with some fields changed.

        Example:
            >>> SYNCO_V2.replace(noisy=0).total
            512
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"replace: unknown field(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
        return replace(self, **changes)  # type: ignore[arg-type]


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
    ``hardest(query, bank, spec.n_hard)`` does, so both give identical samples.

    Args:
        query: Queries of shape (B, D).
        bank: Negatives, shared (K, D) or per query (B, K, D).
        spec: Counts and coefficients.
        exclude: Optional boolean mask (B, K) of bank entries never to pick.
        generator: Random generator.
        similarity: Optional precomputed query-bank similarities (B, K) (e.g.
            :func:`similarity`), so the bank is multiplied once per step.

    Returns:
        Tensor of shape (B, M, D) with ``M = spec.total``, types 1 to 6 in order (see
        :meth:`NegativeSpec.slices`); unit norm, detached, in the query's dtype and device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> q, bank = torch.randn(4, 16), torch.randn(100, 16)
        >>> synthesize(q, bank, SYNCO_V2.replace(n_hard=32), generator=g).shape
        torch.Size([4, 576, 16])
    """
    if not isinstance(spec, NegativeSpec):
        raise TypeError(f"spec: expected a NegativeSpec, got {type(spec).__name__}")
    gen = chk.check_generator("generator", generator)
    idx, unit_bank = _hard_pool(query, bank, spec.n_hard, exclude, similarity)
    pool_rows = _bank_rows(bank, unit_bank, idx)
    parts = [
        _Part("interpolated", spec.interpolated, spec.alpha),
        _Part("extrapolated", spec.extrapolated, spec.beta),
        _Part("mixed", spec.mixed, spec.gamma),
        _Part("noisy", spec.noisy, spec.sigma),
        _Part("perturbed", spec.perturbed, spec.delta),
        _Part("adversarial", spec.adversarial, spec.eta, spec.adversarial_steps),
    ]
    out = _generate(_unit(query), pool_rows, spec.n_hard, parts, gen)
    return out.to(query.dtype)


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _unit(x: Tensor) -> Tensor:
    """Detached float32 copy with unit rows (the eps guards all-zero rows)."""
    return F.normalize(x.detach().float(), dim=-1, eps=1e-12)


def _normalize_(x: Tensor) -> Tensor:
    """Scale the rows of a float32 tensor to unit norm, in place."""
    return x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12))


def _check_bank(bank: object, query: Tensor) -> Tensor:
    bank = chk.check_bank("bank", bank, *query.shape)
    chk.check_same_device("bank", bank, "query", query)
    return bank


def _hard_pool(
    query: object,
    bank: object,
    n_hard: object,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Validated hard-pool indices (B, N), and the unit float32 bank if it was computed."""
    query = chk.check_embeddings("query", query, "(B, D)")
    bank = _check_bank(bank, query)
    b, k = query.shape[0], bank.shape[-2]
    chk.check_int("n_hard", n_hard, minimum=1)
    assert isinstance(n_hard, int)
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


def _bank_rows(
    bank: Tensor, unit_bank: Tensor | None, idx: Tensor
) -> Callable[[Tensor | None], Tensor]:
    """Unit float32 bank rows at pool positions ``pos`` (B, P), or the whole pool for None."""
    b, d = idx.shape[0], bank.shape[-1]

    def rows(pos: Tensor | None) -> Tensor:
        bank_idx = idx if pos is None else idx.gather(1, pos)
        # Normalise whichever is smaller: the bank, or the rows picked from it.
        source = unit_bank
        if source is None and bank.shape[-2] * (b if bank.ndim == 3 else 1) <= bank_idx.numel():
            source = _unit(bank)
        raw = bank.detach() if source is None else source
        if raw.ndim == 2:
            chosen = raw[bank_idx]
        else:
            chosen = raw.gather(1, bank_idx[:, :, None].expand(-1, -1, d))
        return _unit(chosen) if source is None else chosen

    return rows


def _gen_device(gen: torch.Generator | None, device: torch.device) -> torch.device:
    # A generator draws on its own device; the result then moves to the data's device.
    return gen.device if gen is not None else device


def _randint(
    high: int, shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device
) -> Tensor:
    return torch.randint(high, shape, generator=gen, device=_gen_device(gen, device)).to(device)


def _uniform(
    shape: tuple[int, ...],
    rng: tuple[float, float],
    gen: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    lo, hi = rng
    u = torch.rand(shape, generator=gen, device=_gen_device(gen, device), dtype=torch.float32)
    return (lo + (hi - lo) * u).to(device)


def _normal(shape: torch.Size, gen: torch.Generator | None, device: torch.device) -> Tensor:
    eps = torch.randn(shape, generator=gen, device=_gen_device(gen, device), dtype=torch.float32)
    return eps.to(device)
