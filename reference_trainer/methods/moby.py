"""MoBY (Xie et al., 2021), the base of SynCo v2 and Syn2Co: two queues, symmetric loss."""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor

from syn2co.losses import MoBYView, moby_loss
from syn2co.negatives import NegativeSpec
from syn2co.queue import NegativeQueue

from ..heads import mlp
from .base import (
    Embeddings,
    Heads,
    LossDirection,
    Method,
    MethodOutput,
    MethodPreset,
    MethodSettings,
    StepContext,
    head_widths,
    loss_extras,
)
from .registry import register


@register
class MoBY(Method):
    """MoBY: online encoder + predictor against an EMA target, one queue per view.

    Direction 1 compares the prediction of view 1 with the target projection of view 2 and
    the queue of view-2 targets; direction 2 the other way round. Synthetic negatives are built
    per direction from the queue that direction uses. Keys are enqueued after the loss,
    gathered from all ranks.
    """

    name = "moby"
    summary = "MoBY: predictor, EMA target, two queues, symmetric loss (SynCo v2, Syn2Co)."
    # MoBY / SynCo v2: AdamW lr 1e-3 x batch/512, wd 0.05, 5 of 300 epochs warmup, clip 5,
    # drop-path 0.2, 2-layer heads, tau 0.2, EMA 0.99 -> 1, queues of 4096.
    preset = MethodPreset(
        base_lr=1e-3,
        lr_reference_batch=512,
        weight_decay=0.05,
        warmup_fraction=5 / 300,
        clip_grad=5.0,
        drop_path=0.2,
    )
    momentum_target = True
    bank = "queue"

    def __init__(
        self,
        dim: int,
        queue_size: int,
        *,
        temperature: float,
        spec: NegativeSpec | None,
        generator: torch.Generator | None = None,
        tags: bool = False,
        vectors: bool = False,
    ) -> None:
        super().__init__()
        self.vectors = vectors  # synthetic negatives as (B, M, D) vectors instead of cosines
        self.queue1 = NegativeQueue(queue_size, dim, generator=generator, tags=tags)
        self.queue2 = NegativeQueue(queue_size, dim, generator=generator, tags=tags)
        self.temperature = temperature
        self.spec = spec

    @classmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        hidden, dim = head_widths(settings, feature_dim)
        return Heads(
            projector=mlp(feature_dim, hidden, dim, 2, last_bn=False),
            predictor=mlp(dim, hidden, dim, 2, last_bn=False),
        )

    @classmethod
    def create(
        cls, settings: MethodSettings, *, tags: bool, generator: torch.Generator | None
    ) -> Self:
        return cls(
            settings.proj_dim,
            settings.queue_size,
            temperature=settings.temperature,
            spec=settings.spec,
            generator=generator,
            tags=tags,
            vectors=settings.vectors,
        )

    def forward(self, embeddings: Embeddings, ctx: StepContext) -> MethodOutput:
        p1, p2 = embeddings.online
        assert embeddings.target is not None
        t1, t2 = embeddings.target
        banks = (self.queue2.bank, self.queue1.bank)  # the bank of the positive's view
        # per direction, in order (the draws share ctx.generator)
        made = [self.negatives(p1, banks[0], ctx), self.negatives(p2, banks[1], ctx)]
        sims, extra = [sim for sim, _ in made], [negatives for _, negatives in made]
        views = [
            MoBYView(prediction, target, queue.bank, negative_similarity=sim, **loss_extras(made))
            for prediction, target, queue, sim, made in zip(
                (p1, p2), (t1, t2), (self.queue1, self.queue2), sims, extra, strict=True
            )
        ]
        loss = moby_loss(views[0], views[1], temperature=self.temperature)
        cosines = [None if e is None else e.cosines for e in extra]
        tags = [q.tags.detach() if q.tags is not None else None for q in (self.queue2, self.queue1)]
        d1 = LossDirection(p1, t2, banks[0], cosines[0], None, tags[0])
        d2 = LossDirection(p2, t1, banks[1], cosines[1], None, tags[1])
        return MethodOutput(loss, (d1, d2))

    @torch.no_grad()
    def update(self, keys: Embeddings, sources: Tensor | None) -> None:
        """Enqueue this step's target projections (after the loss), tagged with their source
        when the queues keep tags."""
        assert keys.target is not None
        t1, t2 = keys.target
        self.queue1.enqueue(t1, sources if self.queue1.tags is not None else None)
        self.queue2.enqueue(t2, sources if self.queue2.tags is not None else None)
