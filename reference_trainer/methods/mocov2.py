"""MoCo v2 (Chen, Fan, Girshick and He, 2020): a queue of momentum keys, the base of SynCo v1.

As facebookresearch/moco (``moco/builder.py``, ``main_moco.py --mlp --moco-t 0.2 --aug-plus
--cos``): the query of view 1 from the online encoder, the key of view 2 from its EMA copy
(momentum 0.999, constant), InfoNCE against a queue of 65,536 keys at tau 0.2, the keys
enqueued after the loss (gathered from all ranks). The loss is asymmetric, as in the official
code: one direction per step. (MoCo v3 and the MoCo CIFAR demo notebook symmetrise it; that
variant is not offered here, so a step costs one online and one target pass.)

Shuffle BN: with a batch-norm backbone (a ResNet) the keys are computed on a shuffled batch, so
a query and its key never share batch statistics (the signature that otherwise lets the model
tell the current batch's key from the queue's). Across ranks, as the official code does: each
rank encodes a random slice of the global batch of key images, and the keys return to their
rows. In one process, as the MoCo CIFAR demo's split batch norm does: queries and shuffled
keys are encoded in :data:`SHUFFLE_BN_SPLITS` groups, each with its own statistics. The
permutation comes from the run's seed and the step, the same on every rank and after a resume.

Running statistics: one update per forward of each encoder, from its first group, as one GPU of
the official multi-GPU run makes (each GPU's batch norm updates once per forward, and DDP keeps
rank 0's statistics); the other groups normalise with their own batch statistics and leave the
running ones as they are (:attr:`Networks.frozen_statistics`).

Synthetic negatives (SynCo v1: ``--negatives synco-v1``) are built from the queue, the same
bank the loss multiplies once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Self

import torch
from torch import Tensor

from syn2co import distributed
from syn2co.losses import info_nce
from syn2co.negatives import NegativeSpec
from syn2co.queue import NegativeQueue

from ..heads import mlp
from ..seeds import hashed_seed, torch_generator
from .base import (
    Embeddings,
    Heads,
    LossDirection,
    Method,
    MethodOutput,
    MethodPreset,
    MethodSettings,
    Networks,
    StepContext,
    head_widths,
    loss_extras,
)
from .registry import register

__all__ = ["SHUFFLE_BN_SPLITS", "MoCoV2", "shuffled_keys"]

#: Groups of the single-process shuffle BN (the MoCo CIFAR demo's ``bn_splits``).
SHUFFLE_BN_SPLITS = 8


@register
class MoCoV2(Method):
    """MoCo v2: no predictor, an EMA key encoder, one queue, InfoNCE from view 1 to view 2."""

    name = "mocov2"
    summary = "MoCo v2: EMA key encoder, a queue of 65536 keys, asymmetric InfoNCE (SynCo v1)."
    # main_moco.py as MoCo v2's README runs it: SGD lr 0.03 x batch/256, momentum 0.9, wd 1e-4
    # on every parameter, cosine schedule without warmup; 2-layer MLP head (hidden = the
    # backbone's width, 2048 on ResNet-50; out 128; no BN); tau 0.2; K 65536; m 0.999; the
    # aug-plus augmentation (the same for both views).
    preset = MethodPreset(
        base_lr=0.03,
        lr_reference_batch=256,
        weight_decay=1e-4,
        warmup_fraction=0.0,
        clip_grad=0.0,
        drop_path=0.0,
        temperature=0.2,
        ema_momentum=0.999,
        ema_schedule="constant",
        queue_size=65536,
        optimizer="sgd",
        optimizer_momentum=0.9,
        weight_decay_exclude="none",
        proj_hidden=None,
        proj_dim=128,
        augmentation="mocov2",
    )
    momentum_target = True
    bank = "queue"
    global_batch_norm = False  # per-rank statistics, keys shuffled across ranks

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
        self.queue = NegativeQueue(queue_size, dim, generator=generator, tags=tags)
        self.temperature = temperature
        self.spec = spec

    @classmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        hidden, dim = head_widths(settings, feature_dim)
        return Heads(projector=mlp(feature_dim, hidden, dim, 2, last_bn=False, bn=False))

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

    def encode(self, nets: Networks, views: tuple[Tensor, ...]) -> Embeddings:
        """Queries of view 1 (online), keys of view 2 (target, shuffle BN with batch norm)."""
        view1, view2 = views
        assert nets.target is not None
        target = nets.target
        if not nets.batch_norm:  # no batch statistics: nothing to shuffle
            (query,) = nets.online(view1)
            with torch.no_grad():
                (key,) = target((view2,))
            return Embeddings((query,), (key,))
        splits = _splits(view1.shape[0])
        query_pass = _one_statistics_update(lambda x: nets.online(x)[0], nets)
        query = torch.cat([query_pass(chunk) for chunk in view1.chunk(splits)])
        rng = torch_generator(hashed_seed("shuffle-bn", nets.seed, nets.step))
        key_pass = _one_statistics_update(lambda x: target((x,))[0], nets)
        key = shuffled_keys(key_pass, view2, splits=splits, generator=rng)
        return Embeddings((query,), (key,))

    def forward(self, embeddings: Embeddings, ctx: StepContext) -> MethodOutput:
        (query,) = embeddings.online
        assert embeddings.target is not None
        (key,) = embeddings.target
        bank = self.queue.bank
        sim, made = self.negatives(query, bank, ctx)  # one product for the hard pool and loss
        loss = info_nce(
            query,
            key,
            None if sim is not None else bank,
            negative_similarity=sim,
            **loss_extras(made),
            temperature=self.temperature,
        )
        tags = None if self.queue.tags is None else self.queue.tags.detach()
        cosines = None if made is None else made.cosines
        return MethodOutput(loss, (LossDirection(query, key, bank, cosines, None, tags),))

    @torch.no_grad()
    def update(self, keys: Embeddings, sources: Tensor | None) -> None:
        """Enqueue this step's keys (after the loss), tagged with their source when the queue
        keeps tags."""
        assert keys.target is not None
        (key,) = keys.target
        self.queue.enqueue(key, sources if self.queue.tags is not None else None)


def _one_statistics_update(
    encode: Callable[[Tensor], Tensor], nets: Networks
) -> Callable[[Tensor], Tensor]:
    """``encode``, with the batch-norm running statistics moved by its first call only."""
    calls = 0

    def first_updates(images: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        frozen = nets.frozen_statistics() if calls > 1 else contextlib.nullcontext()
        with frozen:
            return encode(images)

    return first_updates


def _splits(rows: int) -> int:
    """Batch-norm groups of one process: :data:`SHUFFLE_BN_SPLITS` under a single rank (at
    least two rows each), one per rank otherwise (the ranks are the groups)."""
    if distributed.world_size() > 1:
        return 1
    return max(1, min(SHUFFLE_BN_SPLITS, rows // 2))


@torch.no_grad()
def shuffled_keys(
    encode: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    splits: int,
    generator: torch.Generator,
) -> Tensor:
    """Keys of ``images`` computed in a shuffled order, returned in the input order.

    The images of all ranks are gathered and permuted (the same permutation on every rank:
    ``generator`` must be seeded alike); each rank encodes its slice of the permuted batch in
    ``splits`` chunks (one forward pass, and batch-norm statistics, per chunk), the keys are
    gathered and put back in their rows. With one rank and one split this is ``encode(images)``.

    Args:
        encode: Key encoder, (N, ...) images to (N, D) keys.
        images: This rank's key images, (B, ...).
        splits: Forward passes per rank (>= 1).
        generator: CPU generator of the permutation.

    Returns:
        Keys of shape (B, D), row ``i`` the key of ``images[i]``.
    """
    b = images.shape[0]
    everything = distributed.gather(images)
    order = torch.randperm(everything.shape[0], generator=generator).to(images.device)
    rank = distributed.rank()
    mine = everything[order[rank * b : (rank + 1) * b]]
    keys = torch.cat([encode(chunk) for chunk in mine.chunk(splits)])
    gathered = distributed.gather(keys)  # row j: the key of image order[j]
    restored = torch.empty_like(gathered)
    restored[order] = gathered
    return restored[rank * b : (rank + 1) * b]
