"""MoBY and MoCo v3: from the two branches' outputs to a loss, with synthetic negatives.

Each method composes syn2co's pieces and nothing else: the queues
(:class:`syn2co.queue.NegativeQueue`), the negative synthesis
(:func:`syn2co.negatives.synthesize`, built per direction from the bank that direction uses)
and the losses (:func:`syn2co.losses.moby_loss`, :func:`syn2co.losses.moco_v3_loss`). The
bank is multiplied once per direction: the similarities feed both the hard pool and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from syn2co import distributed
from syn2co.losses import MoBYView, moby_loss, moco_v3_loss
from syn2co.negatives import NegativeSpec, positive_mask, similarity, synthesize
from syn2co.queue import NegativeQueue


@dataclass
class Direction:
    """One loss direction, kept for the hardness diagnostics."""

    query: Tensor  # (B, D) online prediction of one view
    positive: Tensor  # (B, D) target projection of the other view
    bank: Tensor  # (K, D) the real negatives of this direction
    synthetic: Tensor | None  # (B, M, D)
    exclude: Tensor | None  # (B, K) bank entries that are not negatives
    bank_tags: Tensor | None = None  # (K,) source of each bank entry: 0 real, 1 synthetic, -1 none


@dataclass
class MethodOutput:
    loss: Tensor
    directions: tuple[Direction, Direction]


class MoBY(nn.Module):
    """MoBY (Xie et al., 2021), the base of SynCo v2 and Syn2Co: two queues, symmetric loss.

    Direction 1 compares the prediction of view 1 with the target projection of view 2 and
    the queue of view-2 targets; direction 2 the other way round. Keys are enqueued after the
    loss, gathered from all ranks.
    """

    def __init__(
        self,
        dim: int,
        queue_size: int,
        *,
        temperature: float,
        spec: NegativeSpec | None,
        generator: torch.Generator | None = None,
        tags: bool = False,
    ) -> None:
        super().__init__()
        self.queue1 = NegativeQueue(queue_size, dim, generator=generator, tags=tags)
        self.queue2 = NegativeQueue(queue_size, dim, generator=generator, tags=tags)
        self.temperature = temperature
        self.spec = spec

    def forward(
        self,
        p1: Tensor,
        p2: Tensor,
        t1: Tensor,
        t2: Tensor,
        *,
        synthetic: bool,
        generator: torch.Generator | None = None,
        sources: Tensor | None = None,
    ) -> MethodOutput:
        del sources  # the queues' tags already say where each negative came from
        banks = (self.queue2.bank, self.queue1.bank)  # the bank of the positive's view
        sims: list[Tensor | None] = [None, None]
        extra: list[Tensor | None] = [None, None]
        if synthetic and self.spec is not None:
            for i, (query, bank) in enumerate(zip((p1, p2), banks, strict=True)):
                sim = similarity(query, bank)
                sims[i] = sim
                extra[i] = synthesize(
                    query, bank, self.spec, generator=generator, similarity=sim.detach()
                )
        loss = moby_loss(
            MoBYView(
                p1, t1, self.queue1.bank, negative_similarity=sims[0], extra_negatives=extra[0]
            ),
            MoBYView(
                p2, t2, self.queue2.bank, negative_similarity=sims[1], extra_negatives=extra[1]
            ),
            temperature=self.temperature,
        )
        tags = [q.tags.detach() if q.tags is not None else None for q in (self.queue2, self.queue1)]
        d1 = Direction(p1, t2, banks[0], extra[0], None, tags[0])
        d2 = Direction(p2, t1, banks[1], extra[1], None, tags[1])
        return MethodOutput(loss, (d1, d2))

    @torch.no_grad()
    def update(self, t1: Tensor, t2: Tensor, sources: Tensor | None = None) -> None:
        """Enqueue this step's target projections (after the loss), tagged with their source
        when the queues keep tags."""
        self.queue1.enqueue(t1, sources if self.queue1.tags is not None else None)
        self.queue2.enqueue(t2, sources if self.queue2.tags is not None else None)


class MoCoV3(nn.Module):
    """MoCo v3 (Chen et al., 2021): in-batch keys gathered from all ranks, ``2 * tau`` scaling.

    Synthetic negatives come from the gathered keys with each query's own positive masked out.
    """

    def __init__(self, *, temperature: float, spec: NegativeSpec | None) -> None:
        super().__init__()
        self.temperature = temperature
        self.spec = spec

    def forward(
        self,
        p1: Tensor,
        p2: Tensor,
        t1: Tensor,
        t2: Tensor,
        *,
        synthetic: bool,
        generator: torch.Generator | None = None,
        sources: Tensor | None = None,
    ) -> MethodOutput:
        b = p1.shape[0]
        keys = (distributed.gather_rows(t2), distributed.gather_rows(t1))  # gathered once
        mask = positive_mask(
            b, world_size=distributed.world_size(), rank=distributed.rank(), device=p1.device
        )
        extra: list[Tensor | None] = [None, None]
        sims: list[Tensor | None] = [None, None]
        if synthetic and self.spec is not None:
            for i, query in enumerate((p1, p2)):
                sims[i] = sim = similarity(query, keys[i].rows)
                extra[i] = synthesize(
                    query,
                    keys[i].rows,
                    self.spec,
                    exclude=mask,
                    generator=generator,
                    similarity=sim.detach(),
                )
        tau = self.temperature
        loss = moco_v3_loss(
            p1, keys[0], negative_similarity=sims[0], extra_negatives=extra[0], temperature=tau
        ) + moco_v3_loss(
            p2, keys[1], negative_similarity=sims[1], extra_negatives=extra[1], temperature=tau
        )
        tags = None if sources is None else distributed.gather(sources.to(p1.device))
        d1 = Direction(p1, t2, keys[0].rows, extra[0], mask, tags)
        d2 = Direction(p2, t1, keys[1].rows, extra[1], mask, tags)
        return MethodOutput(loss, (d1, d2))

    def update(self, t1: Tensor, t2: Tensor, sources: Tensor | None = None) -> None:
        """No state to update."""


Method = MoBY | MoCoV3
