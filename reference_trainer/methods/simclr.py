"""SimCLR (Chen, Kornblith, Norouzi and Hinton, 2020): NT-Xent over the views of the batch.

No predictor, no target, no queue: both views go through one encoder and its projector, and
each of the ``2B`` embeddings of a rank is an anchor whose positive is the other view of its
image and whose negatives are the other ``2 * B_total - 2`` embeddings of every rank, gathered
with their gradient (:func:`syn2co.losses.nt_xent`). The backbone's batch norm takes both views
in one pass and, under several ranks, the statistics of the global batch (SimCLR's global BN).

The projector is SimCLR v1's released one (google-research/simclr, first release,
``model_util.projection_head``, ``nonlinear`` mode): a linear layer to the backbone's width
without bias, batch norm, ReLU, a linear layer to 128 without bias, and batch norm with a scale
but no shift (``center=False``).

Synthetic hard negatives (``--negatives``) come from the in-batch bank, all ``2 * B_total``
gathered embeddings with each anchor itself and its positive(s) excluded
(:func:`syn2co.losses.nt_xent_mask`), and join each anchor's logits.

With ``--generator`` (Wu et al., 2023) the generated hard samples are extra images of the
batch, and each generated positive pair is two rows, one per image, each with two views: the
four views of a pair are positives of each other. The loss is then, for anchor ``a`` with its
own positive ``p(a)`` (the other view of its image) and extra positives ``E(a)`` (both views of
the pair's other image), the mean over its positives of the cross-entropy with the same logits
(SupCon's ``L_out``, Khosla et al., 2020)::

    L_a = 1/(1 + |E(a)|) * sum_{e in {p(a)} + E(a)} -log softmax(l_a)[e]
        = nt_xent_a + 1/(1 + |E(a)|) * sum_{e in E(a)} (s(a, p(a)) - s(a, e)) / tau

where ``l_a`` are NT-Xent's logits of anchor ``a`` (every other embedding, positives included,
and its synthetic negatives) and ``s`` the cosine similarity. For every anchor outside a pair
``E(a)`` is empty and ``L_a`` is NT-Xent's loss; the step's loss is the mean over all anchors.
"""

from __future__ import annotations

import dataclasses
from typing import Self

import torch
from torch import Tensor, nn

from syn2co import distributed
from syn2co.losses import nt_xent, nt_xent_mask, pairwise_cosine
from syn2co.negatives import NegativeSpec

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

__all__ = ["CIFAR_MAX_SIZE", "FeatureScale", "SimCLR", "extra_positives"]

#: Image sides up to this get SimCLR's CIFAR-10 setting (temperature 0.5), larger ones its
#: ImageNet setting (0.1); the same threshold as the ResNet's CIFAR stem.
CIFAR_MAX_SIZE = 32


class FeatureScale(nn.Module):
    """A learnable per-feature scale (batch norm's gamma without its beta)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


@register
class SimCLR(Method):
    """SimCLR: one encoder, NT-Xent over the 2B in-batch embeddings of all ranks."""

    name = "simclr"
    summary = "SimCLR: NT-Xent over both views of the global batch, LARS, no target or queue."
    # The paper's ImageNet setting: LARS lr 0.3 x batch/256, momentum 0.9, weight decay 1e-6
    # (not on biases and batch-norm parameters, which LARS also does not adapt), 10 warmup
    # epochs, cosine; projector hidden = the backbone's width, out 128; tau 0.1 (its code's
    # default); SimCLR's augmentation at strength 1 with blur. At CIFAR sizes, SimCLR's README
    # command for CIFAR-10 (google-research/simclr README.md:78-85): lr 1.0 x batch/256,
    # weight decay 1e-4, tau 0.5 (also the best temperature of the paper's CIFAR-10
    # appendix), jitter strength 0.5 and no blur.
    preset = MethodPreset(
        base_lr=0.3,
        lr_reference_batch=256,
        weight_decay=1e-6,
        warmup_fraction=0.0,
        warmup_epochs=10,
        clip_grad=0.0,
        drop_path=0.0,
        temperature=0.1,
        optimizer="lars",
        optimizer_momentum=0.9,
        proj_hidden=None,
        proj_dim=128,
        augmentation="simclr",
    )
    cifar_preset = dataclasses.replace(
        preset, base_lr=1.0, weight_decay=1e-4, temperature=0.5, augmentation="simclr-cifar"
    )
    momentum_target = False
    bank = "in-batch"
    multi_positive = True
    # SimCLR's code encodes the views as one batch: its (global) batch norm spans all of them.
    views_share_batch_norm = True

    def __init__(
        self, *, temperature: float, spec: NegativeSpec | None, vectors: bool = False
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.spec = spec
        self.vectors = vectors  # synthetic negatives as (2B, M, D) vectors instead of cosines

    @classmethod
    def preset_for(cls, img_size: int) -> MethodPreset:
        """The CIFAR-10 setting at sides up to :data:`CIFAR_MAX_SIZE`, else ImageNet's."""
        return cls.cifar_preset if img_size <= CIFAR_MAX_SIZE else cls.preset

    @classmethod
    def bank_size(cls, *, batch_size: int, queue_size: int) -> int:
        """Every embedding of both views except the anchor and its positive."""
        del queue_size
        return 2 * batch_size - 2

    @classmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        hidden, dim = head_widths(settings, feature_dim)
        # Linear-BN-ReLU-Linear-BN, the last BN without shift: mlp's last BN has no affine,
        # so its scale follows.
        return Heads(
            nn.Sequential(*mlp(feature_dim, hidden, dim, 2, last_bn=True), FeatureScale(dim))
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
        z1, z2 = embeddings.online
        b = z1.shape[0]
        anchors = torch.cat([z1, z2])  # view 1's rows, then view 2's
        gathered = distributed.gather_rows(anchors, grad=True)  # gathered once
        sim = pairwise_cosine(anchors, gathered.rows)  # (2B, N), gradient to both sides
        world, rank = distributed.world_size(), distributed.rank()
        exclude = nt_xent_mask(b, world_size=world, rank=rank, device=z1.device)
        positives = None if ctx.groups is None else extra_positives(ctx.groups, exclude)
        if positives is not None:
            exclude = exclude | positives
        bank = gathered.rows.detach()
        _, made = self.negatives(anchors, bank, ctx, query_bank_similarity=sim, exclude=exclude)
        tau = self.temperature
        rows = nt_xent(
            z1,
            z2,
            embeddings=gathered,
            negative_similarity=sim,
            **loss_extras(made),
            temperature=tau,
            reduction="none",
        )
        if positives is not None:
            own = gathered.offset + (torch.arange(2 * b, device=z1.device) + b) % (2 * b)
            gap = (sim.gather(1, own[:, None]) - sim) * positives  # s(a, p(a)) - s(a, e)
            rows = rows + gap.sum(1) / (1 + positives.sum(1)) / tau
        loss = rows.mean()
        tags = None
        if ctx.sources is not None:  # each gathered column's source: rank-major, both views
            tags = distributed.gather(ctx.sources.to(z1.device)).view(world, b).repeat(1, 2)
            tags = tags.reshape(-1)
        cosines = None if made is None else made.cosines  # (2B, M), anchors in view order
        d1 = LossDirection(
            z1, z2, bank, None if cosines is None else cosines[:b], exclude[:b], tags
        )
        d2 = LossDirection(
            z2, z1, bank, None if cosines is None else cosines[b:], exclude[b:], tags
        )
        return MethodOutput(loss, (d1, d2))


def extra_positives(groups: Tensor, own: Tensor) -> Tensor:
    """Each anchor's extra positives among the gathered embeddings: both views of the other
    rows of its group, on any rank.

    Args:
        groups: (B,) int64 group of each of this rank's rows, numbered within the rank
            (:attr:`StepContext.groups`).
        own: (2B, N) the anchor's own column and its positive's
            (:func:`syn2co.losses.nt_xent_mask`), left out.

    Returns:
        Boolean (2B, N), anchors and columns in :func:`~syn2co.losses.nt_xent`'s order.
    """
    b = groups.shape[0]
    world, rank = distributed.world_size(), distributed.rank()
    unique = groups.to(own.device) + rank * b  # group numbers of different ranks never meet
    columns = distributed.gather(unique).view(world, b).repeat(1, 2).reshape(-1)
    anchors = torch.cat([unique, unique])
    return (anchors[:, None] == columns[None, :]) & ~own
