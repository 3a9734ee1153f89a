"""How hard the negatives are: plain floats a user logs every few steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from syn2co import _checks as chk
from syn2co.negatives import NegativeSpec, hardest_indices, similarity

__all__ = ["hardness_stats"]


@torch.no_grad()
def hardness_stats(
    query: Tensor,
    positive: Tensor,
    bank: Tensor | None = None,
    synthetic: Tensor | None = None,
    *,
    synthetic_similarity: Tensor | None = None,
    spec: NegativeSpec | None = None,
    n_hard: int | None = None,
    exclude: Tensor | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """Mean and max cosine to the query of the positive, the hardest real and the synthetic.

    Tells whether the synthetic negatives are harder than the real ones (higher cosine to the
    query), and how often any of them is more similar to the query than its own positive
    (``above_positive``, a fraction; high values hint at false negatives or collapse).

    Keys (all optional groups appear only when their inputs are given):

    * ``positive/mean``, ``positive/max``: ``cos(q, k+)`` over the batch.
    * ``bank/mean``: mean cosine of the query with every bank entry.
    * ``hard_real/mean``, ``hard_real/max``, ``hard_real/above_positive``: the hard pool of
      ``n_hard`` bank entries per query (``spec.n_hard`` by default).
    * ``<type>/mean``, ``<type>/max``, ``<type>/above_positive`` for each synthetic type with a
      non-zero count in ``spec`` (``interpolated``, ..., ``adversarial``), or ``synthetic/...``
      when no spec is given.

    Args:
        query: Queries of shape (B, D).
        positive: Positive keys of shape (B, D).
        bank: Real negatives, shared (K, D) or per query (B, K, D).
        synthetic: Synthetic negatives of shape (B, M, D), e.g. from
            :func:`syn2co.negatives.synthesize` with ``spec``.
        synthetic_similarity: Instead of ``synthetic``, their cosines to the query, shape
            (B, M), e.g. from :func:`syn2co.negatives.synthetic_logits` (no vectors needed).
        spec: The spec that made ``synthetic``; splits its M axis by type.
        n_hard: Hard pool size for the ``hard_real`` group (defaults to ``spec.n_hard``, else
            to min(K, 256)).
        exclude: Boolean mask (B, K) of bank entries that are not negatives.
        prefix: Prepended to every key, e.g. ``"hardness/"``.

    Returns:
        A dict of Python floats (one device synchronisation).

    Example:
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> stats = hardness_stats(q, q, torch.tensor([[0.0, 1.0], [0.6, 0.8]]), n_hard=1)
        >>> stats["positive/mean"], round(stats["hard_real/max"], 4), stats["bank/mean"]
        (1.0, 0.6, 0.30000001192092896)
    """
    chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    chk.check_embeddings("positive", positive, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_finite(("query", query), ("positive", positive), ("synthetic", synthetic))
    q = F.normalize(query.float(), dim=-1)
    pos = (q * F.normalize(positive.float(), dim=-1)).sum(-1)  # (B,)
    names: list[str] = ["positive/mean", "positive/max"]
    values: list[Tensor] = [pos.mean(), pos.max()]

    def group(name: str, cos: Tensor) -> None:  # cos: (B, n) cosines to each query
        names.extend([f"{name}/mean", f"{name}/max", f"{name}/above_positive"])
        values.extend([cos.mean(), cos.max(), (cos > pos[:, None]).float().mean()])

    if bank is not None:
        sim = similarity(query, bank)
        k = sim.shape[1]
        pool = n_hard if n_hard is not None else (spec.n_hard if spec is not None else 256)
        idx = hardest_indices(query, bank, min(pool, k), exclude=exclude, similarity=sim)
        names.append("bank/mean")
        values.append(sim.mean() if exclude is None else sim[~exclude].mean())
        group("hard_real", sim.gather(1, idx))
    if synthetic is not None and synthetic_similarity is not None:
        raise ValueError(
            "synthetic_similarity: pass either synthetic (vectors) or synthetic_similarity "
            "(their cosines to the query), not both"
        )
    cos: Tensor | None = None
    what = "synthetic"
    if synthetic is not None:
        chk.check_embeddings("synthetic", synthetic, "(B, M, D)", dim=d, sizes={0: ("B", b)})
        cos = torch.einsum("bd,bmd->bm", q, F.normalize(synthetic.float(), dim=-1))
    elif synthetic_similarity is not None:
        what = "synthetic_similarity"
        chk.check_embeddings(
            "synthetic_similarity", synthetic_similarity, "(B, M)", sizes={0: ("B", b)}
        )
        chk.check_finite(("synthetic_similarity", synthetic_similarity))
        cos = synthetic_similarity.detach().float()
    if cos is not None:
        if spec is None:
            group("synthetic", cos)
        else:
            if spec.total != cos.shape[1]:
                raise ValueError(
                    f"{what}: expected M={spec.total} (spec.total) synthetic negatives per "
                    f"query, got {cos.shape[1]}"
                )
            for name, where in spec.slices().items():
                if where.stop > where.start:
                    group(name, cos[:, where])
    numbers = torch.stack([v.float() for v in values]).tolist()
    return {prefix + n: float(v) for n, v in zip(names, numbers, strict=True)}
