"""The hard pool: the bank entries most similar to each query.

:func:`similarity`, :func:`hardest_indices`, :func:`hardest` and :func:`positive_mask`, the
checks of a pool selection's arguments, and the pool's rows: gathered as unit vectors (for
:func:`~syn2co.negatives.synthesize`) or read through inner products in chunks (for
:func:`~syn2co.negatives.synthetic_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from syn2co import _checks as chk
from syn2co._precision import autocast_off

__all__ = ["hardest", "hardest_indices", "positive_mask", "similarity"]

# Rows gathered at a time by synthetic_logits: (B, chunk, D) blocks of about 1 MB in float32.
_CHUNK_ELEMENTS: Final = 1 << 18

# Blocks per pass over the pool in a compiled graph.
_TRACED_BLOCKS: Final = 4

# The eps of every normalisation: a row no longer than this is not a direction.
_NORM_EPS: Final = 1e-12


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
    with autocast_off(q.device):
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

    Only usable rows compete: a bank row of zero norm (an unfilled queue) or with NaN or
    infinite entries ranks after every other row (as an excluded entry does), so it enters a
    query's pool only where fewer than N usable rows remain, behind them.

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
    return _hard_pool(query, bank, n_hard, exclude, similarity).indices


def hardest(
    query: Tensor,
    bank: Tensor,
    n_hard: int,
    *,
    exclude: Tensor | None = None,
    similarity: Tensor | None = None,
) -> Tensor:
    """The hard pool: the ``n_hard`` bank entries most similar to each query.

    Selected and returned without gradient (MoCHi, SynCo). Only usable rows compete (see
    :func:`hardest_indices`): where a query has fewer than N usable rows, the rest of its pool
    is zero vectors, which the strategy functions never pick.

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
    pool = _hard_pool(query, bank, n_hard, exclude, similarity)
    rows = _bank_rows(bank, pool.unit_bank, pool.indices)(None)
    if pool.usable is not None:
        kept = (torch.arange(n_hard, device=rows.device) < pool.usable)[:, :, None]
        rows = torch.where(kept, rows, torch.zeros((), device=rows.device))
    return rows.to(query.dtype)


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
# Selection and rows
# --------------------------------------------------------------------------------------------


def _unit(x: Tensor) -> Tensor:
    """Detached float32 copy with unit rows (the eps guards all-zero rows)."""
    return F.normalize(x.detach().float(), dim=-1, eps=_NORM_EPS)


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
        if not chk.tracing() and chk.has_data(exclude):
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


class _Selection(NamedTuple):
    """A hard pool: which bank rows, how many of them are usable, the unit bank if computed."""

    indices: Tensor  # (B, N) long: the top N by similarity, unusable entries last
    # (B, 1) long: how many of the N are usable (0 to N); None when all N are, for every query
    # (known where value checks read the data; then nothing needs folding)
    usable: Tensor | None
    unit_bank: Tensor | None  # (K, D) or (B, K, D) float32 unit rows, when computed

    def sanitized(self) -> Tensor:
        """The indices with every unusable entry replaced by the hardest one, (B, N): rows that
        are all usable and finite for every query with a usable row, so a pass over the whole
        pool never meets a zero or non-finite row there."""
        if self.usable is None:
            return self.indices
        positions = torch.arange(self.indices.shape[1], device=self.indices.device)
        return torch.where(positions < self.usable, self.indices, self.indices[:, :1])


def usable_rows(norms: Tensor) -> Tensor:
    """Rows a pool may hold: a finite norm above the normalisation's eps (1e-12), so that they
    normalise to unit vectors. Rows of zero norm (an unfilled queue) or with NaN or infinite
    entries are never negatives."""
    return (norms > _NORM_EPS) & torch.isfinite(norms)


def fold(pos: Tensor, usable: Tensor) -> Tensor:
    """Pool positions drawn in [0, N), (B, P), folded onto each query's usable entries
    [0, usable) (B, 1): ``pos`` where it is usable, ``pos mod usable`` elsewhere, 0 for a
    query without a usable entry. The identity for a full pool."""
    return torch.where(pos < usable, pos, pos % usable.clamp_min(1))


def _select(
    query: Tensor,
    bank: Tensor,
    n_hard: int,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> _Selection:
    """The hard pool of validated arguments: the N bank rows most similar to each query among
    its usable rows (:func:`usable_rows`, not excluded), then, where a query has fewer than N,
    unusable ones."""
    unit_bank = None
    with torch.no_grad():
        raw = bank.detach().float()
        norms = torch.linalg.vector_norm(raw, dim=-1)  # (K,) or (B, K)
        if similarity is None:
            # as F.normalize(raw, eps=1e-12) computes it, with the norms kept
            unit_bank = raw / norms.clamp_min(_NORM_EPS)[..., None]
            sim = _similarity(_unit(query), unit_bank)
        else:
            sim = similarity.detach().float()
        unusable = ~usable_rows(norms)  # (K,) or (B, K)
        low = torch.finfo(sim.dtype).min
        if exclude is None and chk.host_readable(unusable):
            # on a CPU, the usual case, no unusable row among the top N, needs no masked copy
            # of the (B, K) similarities (64 MiB at B=256, K=65536); on an accelerator the
            # copy is cheap and finding out would wait for the device
            top = sim.topk(n_hard, dim=1, sorted=True)
            if not bool(unusable.expand_as(sim).gather(1, top.indices).any()):
                return _Selection(top.indices, None, unit_bank)
        masked = unusable if exclude is None else unusable | exclude
        top = sim.masked_fill(masked, low).topk(n_hard, dim=1, sorted=True)
        usable = (top.values > low).sum(dim=1, keepdim=True)
        if not chk.may_be_true(usable < n_hard):
            return _Selection(top.indices, None, unit_bank)
        return _Selection(top.indices, usable, unit_bank)


def _hard_pool(
    query: object,
    bank: object,
    n_hard: object,
    exclude: Tensor | None,
    similarity: Tensor | None,
) -> _Selection:
    """Validated hard pool."""
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


# --------------------------------------------------------------------------------------------
# The pool through inner products (synthetic_logits)
# --------------------------------------------------------------------------------------------


class _Pool:
    """The hard pool through inner products: per-row scalars and chunked passes over its rows.

    Works on the bank's raw rows and divides the products by the rows' norms, as normalising
    the rows would (so unit rows give exact products); never holds more than one (B, chunk, D)
    block of rows: about 4 MB in float32 eagerly, a quarter of the pool in a compiled graph
    (whose loops over the blocks are unrolled).
    """

    def __init__(self, q: Tensor, bank: Tensor, idx: Tensor, norms: Tensor | None = None) -> None:
        b, d = q.shape
        self.q, self.sign, self.idx = q, torch.sign(q), idx
        self.qq = (q * q).sum(dim=1, keepdim=True)  # (B, 1): 1, or 0 for a zero query
        self.l1 = q.abs().sum(dim=1, keepdim=True)  # q . sign(q)
        self.nnz = self.sign.abs().sum(dim=1, keepdim=True)  # sign(q) . sign(q)
        if chk.tracing():
            # a compiled graph unrolls the loops over blocks: a few blocks whatever B and D
            # (which dynamo may treat as symbolic sizes), not thousands of small ones
            self.chunk = -(-idx.shape[1] // _TRACED_BLOCKS)
        else:
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
