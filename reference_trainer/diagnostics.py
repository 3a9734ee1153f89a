"""Hardness diagnostics of a step, split by where the images came from.

Rows of a batch (and of a bank) carry a :class:`Source` tag when the run mixes sources: real
images, images of a synthetic dataset (``--synthetic-data``) and images made by the jointly
learned generators. :func:`tag_generated` tags the generated rows once, where they join the
batch; :func:`hardness` then reports :func:`syn2co.diagnostics.hardness_stats` for the whole
step and for each source as queries and as negatives.
"""

from __future__ import annotations

from enum import IntEnum

import torch
from torch import Tensor

from syn2co.diagnostics import hardness_stats
from syn2co.negatives import NegativeSpec
from syn2co.samplers import REAL, SYNTHETIC

from .methods import LossDirection

__all__ = ["Source", "hardness", "tag_generated"]


class Source(IntEnum):
    """Where a row of a batch or a bank came from (the values are the tags stored)."""

    REAL = REAL
    SYNTHETIC = SYNTHETIC
    GENERATED = 2


def tag_generated(sources: Tensor, rows: int) -> Tensor:
    """The batch's source tags (B,) followed by ``Source.GENERATED`` for the generated rows
    that follow the batch, ``rows`` in all (the tags unchanged when there are none)."""
    return torch.cat([sources, sources.new_full((rows - sources.shape[0],), Source.GENERATED)])


def hardness(
    d: LossDirection,
    spec: NegativeSpec | None,
    sources: Tensor | None,
    *,
    generated: bool,
) -> dict[str, float]:
    """The syn2co.diagnostics hardness stats of one loss direction, split by source.

    Args:
        d: The direction (its query, positive, bank and synthetic negatives).
        spec: The synthetic negatives' spec (for per-strategy stats), or None.
        sources: (B,) source tags of the query rows, generated rows already tagged; None when
            the batch has one source.
        generated: The run has jointly generated images (report them as a group).

    Returns:
        ``hardness/...`` stats of the whole direction; with ``sources``, also
        ``hardness/<source>_queries/...`` (rows of that source as queries, with their positives)
        and ``hardness/<source>_negatives/...`` (the real-negative groups restricted to bank
        entries of that source).
    """
    n_hard = spec.n_hard if spec else 256
    bank_size = d.bank.shape[0]
    # Entries every query can draw from: the bank less the most any query excludes (its own
    # positive in MoCo v3, itself and its positive(s) in SimCLR), and at most K - 1.
    excluded = 1 if d.exclude is None else max(1, int(d.exclude.sum(dim=1).max()))
    pool = max(1, bank_size - excluded)
    stats = hardness_stats(
        d.query,
        d.positive,
        d.bank,
        synthetic_similarity=d.synthetic,
        spec=spec if d.synthetic is not None else None,
        n_hard=min(n_hard, pool),
        exclude=d.exclude,
        prefix="hardness/",
    )
    if sources is None:
        return stats
    sources = sources.to(d.query.device)
    groups = [Source.REAL, Source.SYNTHETIC] + ([Source.GENERATED] if generated else [])
    for source in groups:
        name = source.name.lower()
        rows = sources == source
        if bool(rows.any()):
            stats |= hardness_stats(
                d.query[rows],
                d.positive[rows],
                d.bank,
                synthetic_similarity=None if d.synthetic is None else d.synthetic[rows],
                spec=spec if d.synthetic is not None else None,
                n_hard=min(n_hard, pool),
                exclude=None if d.exclude is None else d.exclude[rows],
                prefix=f"hardness/{name}_queries/",
            )
        if d.bank_tags is None:
            continue
        exclude = (d.bank_tags != source)[None, :].expand(d.query.shape[0], -1)
        if d.exclude is not None:
            exclude = exclude | d.exclude
        available = int((~exclude).sum(dim=1).min())
        if available >= 1:
            group = hardness_stats(
                d.query,
                d.positive,
                d.bank,
                exclude=exclude,
                n_hard=min(n_hard, available),
                prefix=f"hardness/{name}_negatives/",
            )
            stats |= {k: v for k, v in group.items() if "/positive/" not in k}
    return stats
