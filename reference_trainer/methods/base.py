"""What a pretraining method declares, and what the engine gives it and gets back.

A method is one :class:`Method` subclass in its own file of this package, registered with
:func:`reference_trainer.methods.register`. It declares

* its recipe defaults (:class:`MethodPreset`: optimizer, learning rate, schedule, temperature,
  EMA momentum and schedule, queue length, head widths, regularisation), the layer of a run's
  options just above the field defaults (:mod:`reference_trainer.resolve`), possibly chosen by
  the image size (:meth:`Method.preset_for`);
* its heads (:meth:`Method.heads`: a projector, and a predictor or none);
* whether it has a momentum (EMA) target (:attr:`Method.momentum_target`), what bank of
  negatives it draws from (:attr:`Method.bank`: a queue, the batch itself, or none), whether
  its loss takes several positives per row (:attr:`Method.multi_positive`) and whether a
  batch-norm backbone normalises over the global batch (:attr:`Method.global_batch_norm`);
* how the views are encoded (:meth:`Method.encode`; by default every view through the online
  network and the target);
* its loss from the views' embeddings (:meth:`Method.forward`, composing syn2co's losses,
  queues and synthetic negatives), and its per-step state updates (:meth:`Method.update`, e.g.
  enqueueing keys).

A method is built from :class:`MethodSettings`, the few resolved values it needs, never from
the whole run's configuration. The engine never asks which method it runs: it calls
:meth:`Method.encode`, the method for the loss, steps the optimizer, moves the target by EMA
(cosine or constant momentum) and calls :meth:`Method.update`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co.negatives import NegativeSpec, similarity, synthesize, synthetic_logits

from ..config import AugmentationName, EmaSchedule, OptimizerKind, WeightDecayExclude

__all__ = [
    "BankKind",
    "Direction",
    "EmaSchedule",
    "Embeddings",
    "Heads",
    "LossDirection",
    "LossExtras",
    "Method",
    "MethodOutput",
    "MethodPreset",
    "MethodSettings",
    "Networks",
    "OptimizerKind",
    "StepContext",
    "SyntheticNegatives",
    "WeightDecayExclude",
    "head_widths",
    "loss_extras",
    "synthetic_negatives",
]

BankKind = Literal["queue", "in-batch", "none"]


@dataclass(frozen=True)
class MethodPreset:
    """A method's published recipe: the defaults of every option the user leaves unset.

    Attributes:
        base_lr: Peak learning rate at ``lr_reference_batch`` (scaled linearly with the batch).
        lr_reference_batch: The batch size ``base_lr`` refers to.
        weight_decay: Weight decay of the optimizer.
        warmup_fraction: Linear warmup as a fraction of the run.
        clip_grad: Gradient-norm clip (0 = off).
        drop_path: Stochastic depth of the online backbone.
        freeze_patch_embed: Freeze the random patch projection (MoCo v3's trick).
        temperature: Contrastive temperature tau.
        ema_momentum: Momentum of the EMA target at step 0 (cosine to 1); unused without one.
        queue_size: Length of each negative queue; unused without a queue.
        optimizer: ``adamw``, ``sgd`` or ``lars`` (:class:`reference_trainer.optim.LARS`).
        optimizer_momentum: Momentum of ``sgd`` and ``lars`` (unused by ``adamw``).
        warmup_epochs: Linear warmup in epochs; when set it replaces ``warmup_fraction``.
        weight_decay_exclude: The parameters without weight decay (``--weight-decay-exclude``):
            ``1d+no-weight-decay`` (biases, norms, position embeddings, class tokens), ``1d``
            or ``none`` (every parameter decayed, MoCo v2's plain SGD).
        ema_schedule: ``cosine``: the EMA momentum rises from ``ema_momentum`` to 1 over the run
            (BYOL, MoBY, MoCo v3); ``constant``: it stays at ``ema_momentum`` (MoCo v2).
        proj_hidden: Hidden width of the heads' MLPs; None: the backbone's feature width.
        proj_dim: Output width of the projector (the embedding size D).
        augmentation: The two-view augmentation (``--augmentation``, a named pipeline of
            :data:`reference_trainer.data.transforms.AUGMENTATIONS`).
    """

    base_lr: float
    lr_reference_batch: int
    weight_decay: float
    warmup_fraction: float
    clip_grad: float
    drop_path: float
    freeze_patch_embed: bool = False
    temperature: float = 0.2
    ema_momentum: float = 0.99
    queue_size: int = 4096
    optimizer: OptimizerKind = "adamw"
    optimizer_momentum: float = 0.9
    warmup_epochs: float | None = None
    weight_decay_exclude: WeightDecayExclude = "1d+no-weight-decay"
    ema_schedule: EmaSchedule = "cosine"
    proj_hidden: int | None = 4096
    proj_dim: int = 256
    augmentation: AugmentationName = "byol"


@dataclass(frozen=True)
class MethodSettings:
    """The resolved values a method is built from (:meth:`Method.heads`, :meth:`Method.create`).

    Attributes:
        temperature: Contrastive temperature tau.
        queue_size: Length of each negative queue (methods with a queue).
        proj_hidden: Hidden width of the heads' MLPs; None: the backbone's feature width.
        proj_dim: Output width of the projector (the embedding size D).
        spec: The synthetic negatives' counts and coefficients, or None without them.
        vectors: Form synthetic negatives as (B, M, D) vectors (``--negatives-path vectors``)
            instead of only their cosines.
    """

    temperature: float
    queue_size: int
    proj_hidden: int | None
    proj_dim: int
    spec: NegativeSpec | None = None
    vectors: bool = False


@dataclass
class Heads:
    """The heads on top of the backbone's pooled features."""

    projector: nn.Module  # features (B, F) -> embeddings (B, D); part of the EMA target
    predictor: nn.Module | None = None  # embeddings (B, D) -> predictions (B, D); online only


@dataclass(frozen=True)
class Embeddings:
    """The networks' outputs for the views of one step, in view order.

    Attributes:
        online: One (B, D) tensor per view from the online network (its predictor's output
            when the method has one), with gradient.
        target: One (B, D) tensor per view from the momentum target, without gradient; None
            for methods without a target.
    """

    online: tuple[Tensor, ...]
    target: tuple[Tensor, ...] | None = None

    def rows(self, n: int) -> Embeddings:
        """The first ``n`` rows of every view, detached (e.g. the keys of real images)."""
        return Embeddings(
            tuple(t[:n].detach() for t in self.online),
            None if self.target is None else tuple(t[:n].detach() for t in self.target),
        )


@dataclass(frozen=True)
class StepContext:
    """What a step tells the method beyond the embeddings.

    Attributes:
        negatives_active: Synthetic negatives are active at this step (inside their window).
        generator: The random stream of the synthetic negatives (this rank's).
        sources: (B,) source tag of each row (see ``reference_trainer.diagnostics.Source``) when
            the batch mixes sources, else None.
        groups: (B,) int64 group of each row for methods with :attr:`Method.multi_positive`:
            rows of one group show the same content (the two images of a generated positive
            pair), so every view of one is a positive of every view of the others. Numbered
            within this rank's batch; None when every row is its own group.
    """

    negatives_active: bool
    generator: torch.Generator | None = None
    sources: Tensor | None = None
    groups: Tensor | None = None

    @property
    def synthetic(self) -> bool:
        """Deprecated name of :attr:`negatives_active`."""
        return self.negatives_active


@dataclass(frozen=True)
class Networks:
    """The networks a step encodes its views with, as the step calls them.

    Attributes:
        online: ``online(*views)``: each view (B, 3, H, W) to its online embedding (B, D), with
            gradient (wrapped in DDP and/or compiled as the run asks).
        target: ``target(views)``: the EMA target's embeddings of a tuple of views, or None for
            methods without a target. Call it under ``torch.no_grad()``.
        batch_norm: The backbone normalises with batch statistics (a ResNet), so which images
            share a forward pass changes the embeddings.
        step: The optimizer step (for random draws that must repeat on resume).
        seed: The run's seed.
        frozen_statistics: A context in which forward passes of ``online`` and ``target``
            leave the batch-norm running statistics as they are (normalising with batch
            statistics as usual): a method that splits one logical forward into several passes
            keeps one update per step, as one GPU of a multi-GPU run makes.
    """

    online: Callable[..., Sequence[Tensor]]
    target: Callable[[tuple[Tensor, ...]], Sequence[Tensor]] | None
    batch_norm: bool
    step: int
    seed: int
    frozen_statistics: Callable[[], AbstractContextManager[None]] = field(
        default=contextlib.nullcontext
    )


@dataclass
class LossDirection:
    """One direction of a method's loss (a query against its positive and its bank), kept for
    the hardness diagnostics."""

    query: Tensor  # (B, D) the anchor (online prediction of one view)
    positive: Tensor  # (B, D) its positive (target projection of the other view)
    bank: Tensor  # (K, D) the real negatives of this direction
    synthetic: Tensor | None  # (B, M) cosines of the query to its synthetic negatives, if any
    exclude: Tensor | None  # (B, K) bank entries that are not negatives of each query
    bank_tags: Tensor | None = None  # (K,) source tag of each bank entry, if tracked


@dataclass(frozen=True)
class SyntheticNegatives:
    """The synthetic negatives of one loss direction, as the loss takes them.

    Attributes:
        vectors: (B, M, D) the negatives themselves (``negatives_path: vectors`` only); pass as
            ``extra_negatives``.
        similarity: (B, M) their cosines to the query with gradient to the query
            (``negatives_path: logits``); pass as ``extra_similarity``.
        cosines: (B, M) their cosines to the query, detached (for the diagnostics).
    """

    vectors: Tensor | None
    similarity: Tensor | None
    cosines: Tensor


def synthetic_negatives(
    query: Tensor,
    bank: Tensor,
    spec: NegativeSpec,
    *,
    similarity: Tensor,
    generator: torch.Generator | None,
    exclude: Tensor | None = None,
    vectors: bool = False,
) -> SyntheticNegatives:
    """A direction's synthetic negatives, by :func:`syn2co.negatives.synthetic_logits` (their
    cosines, no (B, M, D) tensor) or, with ``vectors``, :func:`syn2co.negatives.synthesize`.

    Both paths draw the same pool members, coefficients and noise from ``generator``, so the
    loss is the same up to float32 rounding.

    Args:
        query: (B, D) the direction's queries.
        bank: (K, D) the bank the hard pool comes from.
        spec: Counts and coefficients.
        similarity: (B, K) cosines of the queries to the bank (the hard pool's ranking).
        generator: The stream of the draws.
        exclude: (B, K) bank entries that are not negatives of each query.
        vectors: Form the (B, M, D) negatives instead of only their cosines.
    """
    if vectors:
        made = synthesize(
            query, bank, spec, exclude=exclude, generator=generator, similarity=similarity
        )
        with torch.no_grad():
            q = F.normalize(query.detach().float(), dim=-1)
            cosines = torch.einsum("bd,bmd->bm", q, made.float())
        return SyntheticNegatives(made, None, cosines)
    logits = synthetic_logits(
        query, bank, spec, exclude=exclude, generator=generator, similarity=similarity
    )
    return SyntheticNegatives(None, logits, logits.detach())


class LossExtras(TypedDict):
    """The keyword arguments by which syn2co's losses take one direction's synthetic
    negatives: the vectors or their cosines (at most one is set)."""

    extra_negatives: Tensor | None
    extra_similarity: Tensor | None


def loss_extras(made: SyntheticNegatives | None) -> LossExtras:
    """``made`` as the loss's keyword arguments (both None without synthetic negatives):
    ``info_nce(q, k, bank, **loss_extras(made), ...)``."""
    if made is None:
        return LossExtras(extra_negatives=None, extra_similarity=None)
    return LossExtras(extra_negatives=made.vectors, extra_similarity=made.similarity)


@dataclass
class MethodOutput:
    """The loss of a step (a scalar with gradient) and its directions for diagnostics."""

    loss: Tensor
    directions: tuple[LossDirection, ...]


#: Deprecated name of :class:`LossDirection`.
Direction = LossDirection


class Method(nn.Module, ABC):
    """A pretraining method: the loss from the views' embeddings, and the state it keeps.

    Subclasses set the class attributes and implement :meth:`heads`, :meth:`create` and
    :meth:`forward`; :meth:`update` defaults to no state.
    """

    #: The name users pass to ``--method``.
    name: ClassVar[str]
    #: One line for ``--help`` and the docs.
    summary: ClassVar[str]
    #: The recipe defaults (see :class:`MethodPreset`).
    preset: ClassVar[MethodPreset]
    #: The method keeps an EMA copy of the encoder as its target.
    momentum_target: ClassVar[bool]
    #: Where the real negatives (and the hard pool of the synthetic ones) come from.
    bank: ClassVar[BankKind]
    #: The loss takes rows that are positives of each other (:attr:`StepContext.groups`):
    #: the pair generator then gives two augmented views of each generated image, so a
    #: generated pair holds four positive views (Wu et al., 2023). Otherwise a pair is one row,
    #: image a as view 1 and image b as view 2.
    multi_positive: ClassVar[bool] = False
    #: Under several ranks, the backbone's batch norm uses the statistics of the global batch
    #: (SimCLR's global BN). False for methods that shuffle keys across ranks instead (MoCo v2's
    #: shuffle BN), where per-rank statistics are the point.
    global_batch_norm: ClassVar[bool] = True
    #: The backbone encodes all views of a step as one batch, so a batch-norm backbone
    #: normalises over them together (SimCLR's code concatenates the views). False: each view
    #: is its own batch-norm batch, as MoCo v3's and MoBY's code encode them. Transformers
    #: (LayerNorm, attention within each image) give the same embeddings either way and always
    #: take the views in one pass.
    views_share_batch_norm: ClassVar[bool] = False
    #: The run's synthetic-negative counts (None: no synthetic negatives); set by ``create``.
    spec: NegativeSpec | None = None
    #: Form synthetic negatives as (B, M, D) vectors (``--negatives-path vectors``) instead of
    #: only their cosines.
    vectors: bool = False

    @classmethod
    def preset_for(cls, img_size: int) -> MethodPreset:
        """The preset at an image side (default: :attr:`preset`; a method may pick values by
        image size, e.g. SimCLR's temperature on CIFAR and on ImageNet)."""
        del img_size
        return cls.preset

    @classmethod
    @abstractmethod
    def heads(cls, feature_dim: int, settings: MethodSettings) -> Heads:
        """The projector (and predictor) for a backbone of ``feature_dim`` pooled features."""

    @classmethod
    @abstractmethod
    def create(
        cls, settings: MethodSettings, *, tags: bool, generator: torch.Generator | None
    ) -> Self:
        """The method's state for a run (queues, ...).

        Args:
            settings: The resolved values the method is built from.
            tags: Keep each bank entry's source tag (the batches mix sources).
            generator: CPU stream for random initial state (e.g. the queues' first rows).
        """

    @classmethod
    def bank_size(cls, *, batch_size: int, queue_size: int) -> int:
        """Entries of the bank one query draws its hard pool from (0 without a bank)."""
        if cls.bank == "queue":
            return queue_size
        if cls.bank == "in-batch":
            return batch_size - 1
        return 0

    def encode(self, nets: Networks, views: tuple[Tensor, ...]) -> Embeddings:
        """The embeddings of a step's views (default: every view through the online network
        and, under ``no_grad``, through the target).

        Override to encode only what the loss uses (MoCo v2: queries of view 1, keys of view 2)
        or to control which images share a batch-norm pass (shuffle BN).
        """
        online = tuple(nets.online(*views))
        target = None
        if nets.target is not None:
            with torch.no_grad():
                target = tuple(nets.target(views))
        return Embeddings(online, target)

    @abstractmethod
    def forward(self, embeddings: Embeddings, ctx: StepContext) -> MethodOutput:
        """The loss of one step from the embeddings of its views."""

    def negatives(
        self,
        query: Tensor,
        bank: Tensor,
        ctx: StepContext,
        *,
        query_bank_similarity: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> tuple[Tensor | None, SyntheticNegatives | None]:
        """One loss direction's query-bank similarities and synthetic negatives, or (None,
        None) when the step has none (``ctx.negatives_active`` false, or no :attr:`spec`).

        Args:
            query: (B, D) the direction's queries.
            bank: (K, D) the bank the hard pool comes from.
            ctx: The step (its generator is the draws' stream).
            query_bank_similarity: (B, K) similarities the loss already has (with gradient);
                default: :func:`syn2co.negatives.similarity` of ``query`` and ``bank``,
                computed once here for the hard pool and the loss.
            exclude: (B, K) bank entries that are not negatives of each query.

        Returns:
            The (B, K) similarities, with gradient, to hand to the loss as its negative
            similarities, and the synthetic negatives (:func:`loss_extras` hands them on).
        """
        if not ctx.negatives_active or self.spec is None:
            return None, None
        sim = similarity(query, bank) if query_bank_similarity is None else query_bank_similarity
        made = synthetic_negatives(
            query,
            bank,
            self.spec,
            similarity=sim.detach(),
            generator=ctx.generator,
            exclude=exclude,
            vectors=self.vectors,
        )
        return sim, made

    def update(self, keys: Embeddings, sources: Tensor | None) -> None:
        """State updates after the optimizer step (default: none).

        Args:
            keys: The step's embeddings, detached, restricted to the rows that may enter a bank.
            sources: (B,) source tag of each of those rows, or None.
        """


def head_widths(settings: MethodSettings, feature_dim: int) -> tuple[int, int]:
    """The heads' hidden and output widths: ``(proj_hidden, proj_dim)``, the hidden width being
    the backbone's ``feature_dim`` where the settings leave it None."""
    hidden = feature_dim if settings.proj_hidden is None else settings.proj_hidden
    return hidden, settings.proj_dim
