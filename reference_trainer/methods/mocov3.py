"""MoCo v3 (Chen et al., 2021): in-batch keys gathered from all ranks, ``2 * tau`` scaling."""

from __future__ import annotations

from typing import Self

import torch

from syn2co import distributed
from syn2co.losses import moco_v3_loss
from syn2co.negatives import NegativeSpec, positive_mask

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
class MoCoV3(Method):
    """MoCo v3: predictor and EMA target, the keys of the whole global batch as negatives.

    Synthetic negatives come from the gathered keys with each query's own positive masked out.
    """

    name = "mocov3"
    summary = "MoCo v3: predictor, EMA target, in-batch keys from all ranks, loss x 2 tau."
    # MoCo v3 ViT: AdamW lr 1.5e-4 x batch/256, wd 0.1, 40 of 300 epochs warmup, frozen patch
    # projection, 3-layer projector whose last BN has no affine.
    preset = MethodPreset(
        base_lr=1.5e-4,
        lr_reference_batch=256,
        weight_decay=0.1,
        warmup_fraction=40 / 300,
        clip_grad=0.0,
        drop_path=0.1,
        freeze_patch_embed=True,
    )
    momentum_target = True
    bank = "in-batch"

    def __init__(
        self, *, temperature: float, spec: NegativeSpec | None, vectors: bool = False
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.spec = spec
        self.vectors = vectors  # synthetic negatives as (B, M, D) vectors instead of cosines

    @classmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        hidden, dim = head_widths(settings, feature_dim)
        return Heads(
            projector=mlp(feature_dim, hidden, dim, 3, last_bn=True),
            predictor=mlp(dim, hidden, dim, 2, last_bn=True),
        )

    @classmethod
    def create(
        cls, settings: MethodSettings, *, tags: bool, generator: torch.Generator | None
    ) -> Self:
        del tags, generator  # no state
        return cls(
            temperature=settings.temperature,
            spec=settings.spec,
            vectors=settings.vectors,
        )

    def forward(self, embeddings: Embeddings, ctx: StepContext) -> MethodOutput:
        p1, p2 = embeddings.online
        assert embeddings.target is not None
        t1, t2 = embeddings.target
        b = p1.shape[0]
        keys = (distributed.gather_rows(t2), distributed.gather_rows(t1))  # gathered once
        mask = positive_mask(
            b, world_size=distributed.world_size(), rank=distributed.rank(), device=p1.device
        )
        # per direction, in order (the draws share ctx.generator)
        made = [
            self.negatives(p1, keys[0].rows, ctx, exclude=mask),
            self.negatives(p2, keys[1].rows, ctx, exclude=mask),
        ]
        sims, extra = [sim for sim, _ in made], [negatives for _, negatives in made]
        losses = [
            moco_v3_loss(
                query,
                gathered,
                negative_similarity=sim,
                **loss_extras(made),
                temperature=self.temperature,
            )
            for query, gathered, sim, made in zip((p1, p2), keys, sims, extra, strict=True)
        ]
        loss = losses[0] + losses[1]
        cosines = [None if e is None else e.cosines for e in extra]
        sources = ctx.sources
        tags = None if sources is None else distributed.gather(sources.to(p1.device))
        d1 = LossDirection(p1, t2, keys[0].rows, cosines[0], mask, tags)
        d2 = LossDirection(p2, t1, keys[1].rows, cosines[1], mask, tags)
        return MethodOutput(loss, (d1, d2))
