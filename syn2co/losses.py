"""Contrastive losses that take synthetic negatives.

* :func:`info_nce`: InfoNCE against a bank (MoCo v2 queue) plus per-query synthetic negatives.
* :func:`moco_v3_loss`: in-batch keys gathered from all ranks, scaled by ``2 * tau``.
* :func:`moby_loss`: MoBY's symmetric loss, each view given as one :class:`MoBYView`.
* :func:`nt_xent`: SimCLR's NT-Xent over the 2B embeddings of two views, gathered with
  gradient; :func:`nt_xent_mask` excludes each anchor and its positive from an in-batch bank
  of synthetic negatives.
* :func:`negative_log_mass`: the hardness-aware weighting of the negatives, pure: debiased
  (Chuang et al., NeurIPS 2020, ``tau_plus``) and hard-negative reweighted (Robinson et al.,
  ICLR 2021, ``beta``); :func:`info_nce`, :func:`moco_v3_loss` and :func:`moby_loss` take both
  as options.

One contract for every loss:

* **Precomputed similarities.** ``negative_similarity`` holds the float cosines of the query
  with the bank the loss would otherwise multiply, carrying the gradient to the query, so one
  product per step serves the hard pool of the synthesis and the loss. For :func:`info_nce`
  and :func:`moby_loss` the bank is the negatives, (B, K); for the in-batch losses it is
  every gathered row, positives included, (B, N) (:func:`moco_v3_loss`) or (2B, N)
  (:func:`nt_xent`), and the loss finds the positives from the rank's offset.
* **Gathered once.** The in-batch losses take either this rank's rows, which they gather
  themselves, or a :class:`syn2co.distributed.Gathered` from
  :func:`syn2co.distributed.gather_rows`, and then run no collective: a caller that gathered
  the keys for the synthesis passes them on.
* **Synthetic negatives** come either as vectors, ``extra_negatives`` (B, M, D), which the loss
  treats as constants, or as their cosines with the query, ``extra_similarity`` (B, M) float,
  whose gradient (to the query) the loss passes on; never both. ``M = 0`` is valid (a spec
  with all counts 0 adds nothing). A loss left with no negatives at all raises an error.
* **Temperature** is a Python float (checked to be > 0), a 0-d floating-point tensor or a
  learnable :class:`torch.nn.Parameter` (the gradient reaches it). A tensor's value is not
  checked, since reading it would synchronise with the device: keep it positive, for example
  as ``log_tau.exp()``.

Numerics: embeddings are L2-normalised and logits computed in float32 with autocast disabled,
whatever the input dtype (float16, bfloat16, float32 or float64: float64 inputs are rounded to
float32, and the loss is float32); the loss is a ``cross_entropy`` or ``logsumexp`` of those
logits, never exp followed by log; masked logits hold the float32 minimum, never ``-inf``. Keys
and negatives are constants except in :func:`nt_xent`, where every embedding carries gradient as
in SimCLR.

``torch.compile`` traces every loss into one graph, with the synthetic negatives of
:mod:`syn2co.negatives` as vectors or as similarities (see there): no value check reads data
while compiling. On the meta device the losses run and return meta tensors of the right shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import _checks as chk
from syn2co import distributed
from syn2co._checks import NonFiniteError
from syn2co._precision import autocast_off
from syn2co.distributed import Gathered
from syn2co.negatives import positive_mask

__all__ = [
    "InfoNCELoss",
    "MoBYLoss",
    "MoBYView",
    "MoCoV3Loss",
    "NTXentLoss",
    "Reduction",
    "Temperature",
    "info_nce",
    "moby_loss",
    "moco_v3_loss",
    "negative_log_mass",
    "nt_xent",
    "nt_xent_mask",
    "pairwise_cosine",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")

#: A temperature: a float > 0, a 0-d floating-point tensor or a learnable ``nn.Parameter``.
Temperature: TypeAlias = float | Tensor

_MIN = torch.finfo(torch.float32).min  # masked logits: finite, so no inf - inf anywhere


def negative_log_mass(
    positive_logits: Tensor,
    negative_logits: Tensor,
    *,
    temperature: Temperature,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """Log of the negatives' term in the InfoNCE denominator, optionally hardness-aware.

    Plain (``tau_plus = beta = 0``): ``logsumexp(negative_logits)``. Otherwise the estimator
    ``N * g`` of Chuang et al. (debiased, class prior ``tau_plus``) with the importance weights
    ``exp(beta * s_i)`` of Robinson et al. (HCL), all in log space::

        R   = N * sum_i(exp((1 + beta) s_i)) / sum_i(exp(beta s_i))     (reweighted mass)
        N g = max((R - tau_plus * N * exp(s_pos)) / (1 - tau_plus), N * exp(-1 / temperature))

    Where the debiased mass is not positive (a positive much closer than the negatives) only
    the lower bound ``N * exp(-1 / temperature)`` remains, at any temperature. The loss is then
    ``softplus(log(N g) - s_pos)`` = ``-log(e^s_pos / (e^s_pos + N g))``.

    Args:
        positive_logits: Shape (B,), the positive's logit ``q . k / tau``.
        negative_logits: Shape (B, N), the negatives' logits (masked entries may hold the
            dtype's minimum: they contribute nothing).
        temperature: The tau the logits were divided by (sets the lower bound): a float > 0 or
            a 0-d tensor (see :data:`Temperature`).
        tau_plus: Class prior of false negatives, ``0 <= tau_plus < 1``.
        beta: Concentration on hard negatives, ``>= 0``.

    Returns:
        Tensor of shape (B,), float32.

    Example:
        >>> pos, neg = torch.zeros(1), torch.zeros(1, 3)
        >>> negative_log_mass(pos, neg, temperature=0.2).exp()
        tensor([3.])
    """
    chk.check_embeddings("positive_logits", positive_logits, "(B,)")
    b = positive_logits.shape[0]
    chk.check_embeddings("negative_logits", negative_logits, "(B, N)", sizes={0: ("B", b)})
    tau = _check_temperature(temperature, positive_logits)
    chk.check_number("tau_plus", tau_plus, low=0.0, high=1.0, high_open=True)
    chk.check_number("beta", beta, low=0.0)
    pos, neg = positive_logits.float(), negative_logits.float()
    if tau_plus == 0.0 and beta == 0.0:
        return torch.logsumexp(neg, dim=1)
    n = neg.shape[1]
    log_n = math.log(n)
    if beta == 0.0:
        log_mass = torch.logsumexp(neg, dim=1)
    else:
        log_mass = (
            torch.logsumexp((1.0 + beta) * neg, dim=1) - torch.logsumexp(beta * neg, dim=1) + log_n
        )
    if tau_plus > 0.0:
        # log(R - tau_plus*N*e^pos) = log R + log(1 - r) with r = tau_plus*N*e^(pos - log R).
        # Where r >= 1 the difference is not positive and only the lower bound remains. Any
        # finite stand-in for log(1 - r) there (a clamp of r just below 1 leaves log R - 13.8)
        # can exceed the bound log N - 1/tau at low temperature, so those rows take the
        # dtype's minimum; the double `where` keeps log(0) out of the backward pass.
        log_r = math.log(tau_plus) + log_n + pos - log_mass
        valid = log_r < 0.0
        safe = torch.where(valid, log_r, torch.full_like(log_r, -1.0))
        debiased = log_mass + torch.log(-torch.expm1(safe)) - math.log1p(-tau_plus)
        log_mass = torch.where(valid, debiased, _MIN)
    if isinstance(tau, Tensor):
        return torch.maximum(log_mass, log_n - 1.0 / tau)
    return torch.clamp(log_mass, min=log_n - 1.0 / tau)


def info_nce(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    *,
    negative_similarity: Tensor | None = None,
    extra_negatives: Tensor | None = None,
    extra_similarity: Tensor | None = None,
    temperature: Temperature = 0.2,
    reduction: Reduction = "mean",
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """InfoNCE with a bank of negatives and per-query synthetic negatives (MoCo v2, SynCo).

    Logits ``[q.k+, q.bank, q.synthetic] / tau`` with the positive at index 0, then
    cross-entropy. With identical embeddings everywhere the loss is exactly ``log(1 + K + M)``.
    At least one negative is required: without any, the loss would be 0 whatever the inputs.

    Args:
        query: Queries of shape (B, D).
        positive: Positive keys of shape (B, D).
        negatives: Bank of negatives, shared (K, D) (a queue) or per query (B, K, D); a
            constant. Optional.
        negative_similarity: Precomputed ``norm(q) . norm(bank)`` of shape (B, K), float, with
            the gradient to the query (:func:`syn2co.negatives.similarity`). Replaces
            ``negatives``, so a bank multiplied once serves both the hard pool and the loss.
        extra_negatives: Per-query synthetic negatives of shape (B, M, D), e.g. from
            :func:`syn2co.negatives.synthesize`; constants. ``M = 0`` adds nothing.
        extra_similarity: The same negatives given as their cosines with the query, shape
            (B, M), float, whose gradient to the query the loss passes on. Replaces
            ``extra_negatives``.
        temperature: tau: a float > 0, or a 0-d tensor such as a learnable parameter.
        reduction: "mean", "sum" or "none" (per-query losses of shape (B,)).
        tau_plus: Debiasing class prior (0 = off), see :func:`negative_log_mass`.
        beta: Hard-negative concentration (0 = off), see :func:`negative_log_mass`.

    Returns:
        Scalar float32 loss, or shape (B,) with ``reduction="none"``.

    Raises:
        ValueError: If there are no negatives, or a bank or its synthetic negatives are given
            twice (as vectors and as similarities).

    Example:
        >>> q = torch.ones(4, 8)
        >>> loss = info_nce(q, q, torch.ones(16, 8), extra_negatives=torch.ones(4, 3, 8))
        >>> round(loss.item(), 4) == round(math.log(1 + 16 + 3), 4)
        True
    """
    tau = _check_options(temperature, reduction, tau_plus, beta)
    loss = _info_nce_rows(
        query,
        positive,
        negatives,
        negative_similarity,
        extra_negatives,
        extra_similarity,
        tau,
        tau_plus,
        beta,
        _INFO_NCE_NAMES,
    )
    return _reduce(loss, reduction)


def moco_v3_loss(
    query: Tensor,
    key: Tensor | Gathered,
    *,
    negative_similarity: Tensor | None = None,
    extra_negatives: Tensor | None = None,
    extra_similarity: Tensor | None = None,
    temperature: Temperature = 0.2,
    reduction: Reduction = "mean",
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """MoCo v3's contrastive loss for one direction, with in-batch keys from all ranks.

    The keys of every rank are the bank, *without* gradient (they come from the momentum
    encoder); query ``i`` of this rank has its positive at row ``offset + i`` of the gathered
    keys (``offset = rank * B``) and the other ``N - 1`` keys as negatives; the loss is the
    cross-entropy scaled by ``2 * tau`` as in the MoCo v3 paper and code. Apply it to both
    directions, ``moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1)``. With identical embeddings it
    is exactly ``2 * tau * log(N + M)``.

    Gather once: pass ``key`` as :func:`syn2co.distributed.gather_rows` ``(k)`` when the keys
    were gathered anyway (for the synthesis), and the loss runs no collective. Given this
    rank's keys as a tensor it gathers them itself.

    Args:
        query: Queries of shape (B, D), from the predictor.
        key: This rank's keys from the momentum encoder, shape (B, D), or all ranks' keys as a
            :class:`~syn2co.distributed.Gathered` with ``count = B`` (rows (N, D)).
        negative_similarity: Precomputed ``norm(q) . norm(keys)`` with every gathered key,
            shape (B, N) with ``N = world_size * B``, float, gradient to the query, e.g.
            ``similarity(query, gathered.rows)``. The positive's column ``offset + i`` is
            included (the loss reads the positive logit there); no key product is computed.
        extra_negatives: Synthetic negatives of shape (B, M, D), e.g. from
            ``synthesize(query, gathered.rows, spec, exclude=positive_mask(B, ...))``.
        extra_similarity: Their cosines with the query, shape (B, M), instead.
        temperature: tau: a float > 0, or a 0-d tensor such as a learnable parameter.
        reduction: "mean", "sum" or "none".
        tau_plus: Debiasing class prior (0 = off).
        beta: Hard-negative concentration (0 = off).

    Returns:
        Scalar float32 loss, or shape (B,) with ``reduction="none"``.

    Example:
        >>> x = torch.ones(8, 4)
        >>> loss = moco_v3_loss(x, x, temperature=0.2)
        >>> round(loss.item(), 5) == round(2 * 0.2 * math.log(8), 5)
        True
        >>> from syn2co.distributed import gather_rows
        >>> bool(moco_v3_loss(x, gather_rows(x), temperature=0.2) == loss)
        True
    """
    chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    tau = _check_options(temperature, reduction, tau_plus, beta, query)
    if isinstance(key, Gathered):
        _check_gathered("key", key, b, d, query)
        offset, total = key.offset, key.rows.shape[0]
    else:
        chk.check_embeddings("key", key, "(B, D)", dim=d)
        if key.shape[0] != b:
            raise ValueError(
                f"key: expected this rank's keys of shape (B, D) with B={b}, got "
                f"{tuple(key.shape)}; pass keys already gathered as gather_rows(key)"
            )
        chk.check_same_device("key", key, "query", query)
        offset, total = distributed.rank() * b, distributed.world_size() * b
    if negative_similarity is not None:
        _check_similarity("negative_similarity", negative_similarity, (b, total), query, "N")
    m = _check_extra(_INFO_NCE_NAMES, query, b, extra_negatives, extra_similarity)
    _check_some_negatives(total - 1 + m, "key")
    labels = torch.arange(b, device=query.device) + offset
    with autocast_off(query.device):
        q = F.normalize(query.float(), dim=-1)
        if negative_similarity is not None:
            sim = negative_similarity.float()
        else:
            keys = key.rows if isinstance(key, Gathered) else distributed.gather(key)
            sim = q @ F.normalize(keys.detach().float(), dim=-1).T  # (B, N)
        pos = sim.gather(1, labels[:, None])[:, 0]
        # The other N - 1 keys, skipping each row's positive without masking.
        cols = torch.arange(total - 1, device=query.device).expand(b, -1)
        cols = cols + (cols >= labels[:, None]).long()
        parts = [sim.gather(1, cols), _extra_logits(q, extra_negatives, extra_similarity)]
        negative = torch.cat([p for p in parts if p is not None], dim=1)
        pos, negative = pos / tau, negative / tau
    _check_logits(
        (pos, negative),
        ("query", query),
        ("key", key.rows if isinstance(key, Gathered) else key),
        ("negative_similarity", negative_similarity),
        ("extra_negatives", extra_negatives),
        ("extra_similarity", extra_similarity),
    )
    with autocast_off(query.device):
        loss = _contrastive(pos, negative, tau, tau_plus, beta) * (2.0 * tau)
    return _reduce(loss, reduction)


@dataclass(frozen=True, eq=False)  # tensors: compared by identity, not by value
class MoBYView:
    """One view's tensors for :func:`moby_loss`, so that no queue can meet the wrong view.

    Everything here belongs to *this* view: its online prediction, its target projection, the
    queue of its past target projections, and the synthetic negatives (or similarities) for
    the direction in which its prediction is the query. :func:`moby_loss` crosses two views::

        direction 1: query view1.prediction, positive view2.target, bank view2.queue
        direction 2: query view2.prediction, positive view1.target, bank view1.queue

    so the optional fields of ``view1`` are computed against ``view2.queue`` (and vice
    versa), e.g. ``similarity(view1.prediction, view2.queue)``.

    Attributes:
        prediction: Online prediction of this view, shape (B, D).
        target: Target (momentum) projection of this view, shape (B, D).
        queue: Past target projections of this view, shape (K, D) (e.g.
            ``NegativeQueue.bank``).
        negative_similarity: ``norm(prediction) . norm(other.queue)``, shape (B, K_other),
            with the gradient to the prediction; replaces that product in the loss.
        extra_negatives: Synthetic negatives of this view's query, built from the other
            view's queue, shape (B, M, D).
        extra_similarity: Their cosines with this view's prediction, shape (B, M), instead.

    Example:
        >>> x, bank = torch.ones(4, 8), torch.ones(16, 8)
        >>> view = MoBYView(prediction=x, target=x, queue=bank)
        >>> round(moby_loss(view, view).item(), 4) == round(2 * math.log(17), 4)
        True
    """

    prediction: Tensor
    target: Tensor
    queue: Tensor
    negative_similarity: Tensor | None = None
    extra_negatives: Tensor | None = None
    extra_similarity: Tensor | None = None


def moby_loss(
    view1: MoBYView,
    view2: MoBYView,
    *,
    temperature: Temperature = 0.2,
    reduction: Reduction = "mean",
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """MoBY's symmetric loss: ``L(p1, t2, queue2) + L(p2, t1, queue1)`` with :func:`info_nce`.

    MoBY (Xie et al., 2021) is the base of SynCo v2 and Syn2Co: the online branch's
    predictions of one view against the target projections of the other view, each direction
    with the queue of the view its positive came from. Each view is one :class:`MoBYView`;
    this function does the crossing (see there): view 1's prediction (B, D) against view 2's
    target (B, D), view 2's queue (K, D) and view 1's synthetic negatives (B, M, D) or
    similarities, and the other way round.

    Args:
        view1: The tensors of view 1.
        view2: The tensors of view 2.
        temperature: tau: a float > 0, or a 0-d tensor such as a learnable parameter.
        reduction: "mean", "sum" or "none" (per-query sums of both directions, shape (B,)).
        tau_plus: Debiasing class prior (0 = off).
        beta: Hard-negative concentration (0 = off).

    Returns:
        The sum of both directions' losses.

    Example:
        >>> p1, p2, t1, t2 = (torch.randn(4, 8) for _ in range(4))
        >>> q1, q2 = torch.randn(16, 8), torch.randn(16, 8)
        >>> loss = moby_loss(MoBYView(p1, t1, q1), MoBYView(p2, t2, q2))
        >>> bool(torch.isclose(loss, info_nce(p1, t2, q2) + info_nce(p2, t1, q1)))
        True
    """
    for name, view in (("view1", view1), ("view2", view2)):
        if not isinstance(view, MoBYView):
            raise TypeError(f"{name}: expected a MoBYView, got {type(view).__name__}")
    tau = _check_options(temperature, reduction, tau_plus, beta)
    total: Tensor | None = None
    for (qn, qv), (kn, kv) in (
        (("view1", view1), ("view2", view2)),
        (("view2", view2), ("view1", view1)),
    ):
        names = {
            "query": f"{qn}.prediction",
            "positive": f"{kn}.target",
            "negatives": f"{kn}.queue",
            "negative_similarity": f"{qn}.negative_similarity",
            "extra_negatives": f"{qn}.extra_negatives",
            "extra_similarity": f"{qn}.extra_similarity",
        }
        prediction = chk.check_embeddings(names["query"], qv.prediction, "(B, D)")
        queue = chk.check_bank(names["negatives"], kv.queue, *prediction.shape)
        sim = qv.negative_similarity
        if sim is not None:
            shape = (prediction.shape[0], queue.shape[-2])
            _check_similarity(names["negative_similarity"], sim, shape, prediction, f"K_{kn}")
        term = _info_nce_rows(
            prediction,
            kv.target,
            None if sim is not None else queue,
            sim,
            qv.extra_negatives,
            qv.extra_similarity,
            tau,
            tau_plus,
            beta,
            names,
        )
        total = term if total is None else total + term
    assert total is not None
    return _reduce(total, reduction)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    embeddings: Gathered | None = None,
    negative_similarity: Tensor | None = None,
    extra_negatives: Tensor | None = None,
    extra_similarity: Tensor | None = None,
    temperature: Temperature = 0.5,
    reduction: Reduction = "mean",
) -> Tensor:
    """SimCLR's NT-Xent over both views, with every rank's embeddings as negatives.

    The 2B anchors are ``cat([z1, z2])``: first the B anchors of view 1, then those of view 2.
    Anchor ``a`` is compared with every embedding of the global batch except itself: its
    positive is the other view of the same image, the other ``2 * B_total - 2`` are negatives.
    The loss is the mean over the anchors of the cross-entropy at temperature tau (Chen et al.,
    2020), both directions at once. With identical embeddings everywhere it is exactly
    ``log(2 * B_total - 1 + M)``.

    Distributed: the embeddings are gathered *with* gradient
    (:func:`syn2co.distributed.gather_with_grad`), rank-major as
    ``gather_rows(torch.cat([z1, z2]), grad=True)``, so each rank's anchors see every rank's
    embeddings; with DDP averaging the gradients this equals one process holding the whole
    batch. Gather once: pass that :class:`~syn2co.distributed.Gathered` as ``embeddings`` when
    it was needed for the synthesis anyway.

    Args:
        z1: Embeddings of view 1, shape (B, D).
        z2: Embeddings of view 2, shape (B, D), row ``i`` the same image as ``z1[i]``.
        embeddings: ``gather_rows(torch.cat([z1, z2]), grad=True)``: rows (N, D) with
            ``N = 2 * B_total``, ``count = 2B``. Gathered here when not given.
        negative_similarity: Precomputed cosines of the anchors with every gathered
            embedding, shape (2B, N), float, with the gradient to *both* sides (e.g.
            ``pairwise_cosine(torch.cat([z1, z2]), embeddings.rows)``; not
            :func:`syn2co.negatives.similarity`, which treats its bank as a constant). The
            columns of each anchor itself and of its positive are included.
        extra_negatives: Per-anchor synthetic negatives, shape (2B, M, D), in anchor order;
            constants. Build them from the bank ``embeddings.rows.detach()`` with
            ``exclude=nt_xent_mask(B, ...)``.
        extra_similarity: Their cosines with the anchors, shape (2B, M), instead.
        temperature: tau: a float > 0 (0.5 for CIFAR, 0.1 for ImageNet in SimCLR), or a 0-d
            tensor such as a learnable parameter.
        reduction: "mean", "sum" or "none" (per-anchor losses of shape (2B,)).

    Returns:
        Scalar float32 loss, or shape (2B,) with ``reduction="none"``.

    Example:
        >>> x = torch.ones(4, 8)
        >>> round(nt_xent(x, x).item(), 5) == round(math.log(2 * 4 - 1), 5)
        True
    """
    chk.check_embeddings("z1", z1, "(B, D)")
    b, d = z1.shape
    chk.check_embeddings("z2", z2, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("z2", z2, "z1", z1)
    tau = _check_options(temperature, reduction, 0.0, 0.0, z1)
    a = 2 * b
    needs_grad = z1.requires_grad or z2.requires_grad
    if embeddings is not None:
        _check_gathered("embeddings", embeddings, a, d, z1, "2B rows: both views")
        if needs_grad and not embeddings.rows.requires_grad:
            raise ValueError(
                "embeddings: expected rows gathered with gradient (gather_rows(torch.cat([z1, "
                "z2]), grad=True)), since every embedding is a negative with gradient; got "
                "rows without gradient"
            )
        offset, total = embeddings.offset, embeddings.rows.shape[0]
    else:
        offset, total = distributed.rank() * a, distributed.world_size() * a
    if negative_similarity is not None:
        _check_similarity("negative_similarity", negative_similarity, (a, total), z1, "N", "2B")
        if needs_grad and not negative_similarity.requires_grad:
            raise ValueError(
                "negative_similarity: expected similarities with gradient to the embeddings "
                "(pairwise_cosine(anchors, embeddings.rows)), got a tensor without gradient"
            )
    names = {**_INFO_NCE_NAMES, "query": "z1"}
    m = _check_extra(names, z1, a, extra_negatives, extra_similarity, "2B")
    _check_some_negatives(total - 2 + m, "z1")
    raw = torch.cat([z1, z2])
    if negative_similarity is None and embeddings is None:
        embeddings = distributed.gather_rows(raw, grad=True)
    idx = torch.arange(a, device=z1.device)
    labels = offset + (idx + b) % a
    with autocast_off(z1.device):
        anchors = F.normalize(raw.float(), dim=-1)
        if negative_similarity is not None:
            sim = negative_similarity.float()
        else:
            assert embeddings is not None
            rows = embeddings.rows
            bank = anchors if rows is raw else F.normalize(rows.float(), dim=-1)
            sim = anchors @ bank.T  # (2B, N)
        # Each anchor's own column is masked with the float32 minimum (finite, never -inf).
        logits = (sim / tau).scatter(1, (offset + idx)[:, None], _MIN)
        extra = _extra_logits(anchors, extra_negatives, extra_similarity)
        if extra is not None:
            logits = torch.cat([logits, extra / tau], dim=1)
    _check_logits(
        (logits,),
        ("z1", z1),
        ("z2", z2),
        ("embeddings", None if embeddings is None else embeddings.rows),
        ("negative_similarity", negative_similarity),
        ("extra_negatives", extra_negatives),
        ("extra_similarity", extra_similarity),
    )
    with autocast_off(z1.device):
        loss = F.cross_entropy(logits, labels, reduction="none")
    return _reduce(loss, reduction)


def nt_xent_mask(
    batch_size: int,
    *,
    world_size: int = 1,
    rank: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``exclude`` mask of SimCLR's in-batch bank: each anchor itself and its positive.

    For synthetic negatives in :func:`nt_xent`, the bank of every anchor is all ``2 * B_total``
    embeddings ``gather_rows(torch.cat([z1, z2])).rows`` (rank-major: rank ``r``'s view-1 rows
    at ``r * 2B + i``, its view-2 rows at ``r * 2B + B + i``). Anchor ``a`` of this rank (the
    order of :func:`nt_xent`: view 1, then view 2) must not draw itself nor its positive::

        anchors = torch.cat([z1, z2])
        gathered = gather_rows(anchors, grad=True)
        exclude = nt_xent_mask(B, world_size=world_size(), rank=rank())
        extra = synthesize(anchors, gathered.rows.detach(), spec, exclude=exclude)
        loss = nt_xent(z1, z2, embeddings=gathered, extra_negatives=extra)

    Args:
        batch_size: Local batch size B (images, not anchors).
        world_size: Number of ranks whose embeddings were gathered.
        rank: This process's rank.
        device: Device of the mask.

    Returns:
        Boolean tensor of shape (2B, world_size * 2B), True at each anchor's own column and at
        its positive's.

    Example:
        >>> nt_xent_mask(2).int()
        tensor([[1, 0, 1, 0],
                [0, 1, 0, 1],
                [1, 0, 1, 0],
                [0, 1, 0, 1]], dtype=torch.int32)
    """
    chk.check_int("batch_size", batch_size, minimum=1)
    a = 2 * batch_size
    own = positive_mask(a, world_size=world_size, rank=rank, device=device)  # (2B, 2B * world)
    # The positive of anchor a is the own column of anchor (a + B) mod 2B: the other view.
    return own | own[(torch.arange(a, device=device) + batch_size) % a]


def pairwise_cosine(x: Tensor, y: Tensor) -> Tensor:
    """Cosine similarity of every row of ``x`` with every row of ``y``, gradient to both.

    Float32 with autocast disabled, whatever the input dtype. Unlike
    :func:`syn2co.negatives.similarity` (whose bank is a constant), both sides keep their
    gradient: the ``negative_similarity`` of :func:`nt_xent`.

    Args:
        x: Shape (N, D).
        y: Shape (M, D).

    Returns:
        Tensor of shape (N, M), float32.

    Example:
        >>> pairwise_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
        tensor([[0., 1.]])
    """
    chk.check_embeddings("x", x, "(N, D)")
    chk.check_embeddings("y", y, "(M, D)", dim=x.shape[1])
    chk.check_same_device("y", y, "x", x)
    with autocast_off(x.device):
        return F.normalize(x.float(), dim=-1) @ F.normalize(y.float(), dim=-1).T


# --------------------------------------------------------------------------------------------
# Thin modules holding the hyperparameters
# --------------------------------------------------------------------------------------------


class _LossModule(nn.Module):
    """Holds the hyperparameters; a temperature given as an ``nn.Parameter`` is registered."""

    temperature: Temperature

    def __init__(
        self,
        temperature: Temperature = 0.2,
        reduction: Reduction = "mean",
        tau_plus: float = 0.0,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(temperature, reduction, tau_plus, beta)
        self.temperature, self.reduction = temperature, reduction
        self.tau_plus, self.beta = tau_plus, beta

    def extra_repr(self) -> str:
        tau = self.temperature
        shown = f"{float(tau.detach()):g}" if isinstance(tau, Tensor) else f"{tau:g}"
        parts = [f"temperature={shown}", f"reduction={self.reduction!r}"]
        parts += [
            f"{name}={getattr(self, name)}" for name in ("tau_plus", "beta") if getattr(self, name)
        ]
        return ", ".join(parts)


class InfoNCELoss(_LossModule):
    """:func:`info_nce` with its hyperparameters fixed.

    Example:
        >>> loss_fn = InfoNCELoss(temperature=0.2)
        >>> q = torch.ones(2, 4)
        >>> round(loss_fn(q, q, torch.ones(5, 4)).item(), 4) == round(math.log(6), 4)
        True
    """

    def forward(
        self,
        query: Tensor,
        positive: Tensor,
        negatives: Tensor | None = None,
        extra_negatives: Tensor | None = None,
        *,
        negative_similarity: Tensor | None = None,
        extra_similarity: Tensor | None = None,
    ) -> Tensor:
        return info_nce(
            query,
            positive,
            negatives,
            negative_similarity=negative_similarity,
            extra_negatives=extra_negatives,
            extra_similarity=extra_similarity,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


class MoCoV3Loss(_LossModule):
    """:func:`moco_v3_loss` for one direction, hyperparameters fixed.

    Example:
        >>> x = torch.ones(8, 4)
        >>> round(MoCoV3Loss(0.2)(x, x).item(), 5) == round(0.4 * math.log(8), 5)
        True
    """

    def forward(
        self,
        query: Tensor,
        key: Tensor | Gathered,
        extra_negatives: Tensor | None = None,
        *,
        negative_similarity: Tensor | None = None,
        extra_similarity: Tensor | None = None,
    ) -> Tensor:
        return moco_v3_loss(
            query,
            key,
            negative_similarity=negative_similarity,
            extra_negatives=extra_negatives,
            extra_similarity=extra_similarity,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


class MoBYLoss(_LossModule):
    """:func:`moby_loss`, hyperparameters fixed.

    Example:
        >>> x, bank = torch.ones(4, 8), torch.ones(16, 8)
        >>> view = MoBYView(x, x, bank)
        >>> round(MoBYLoss()(view, view).item(), 4) == round(2 * math.log(17), 4)
        True
    """

    def forward(self, view1: MoBYView, view2: MoBYView) -> Tensor:
        return moby_loss(
            view1,
            view2,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


class NTXentLoss(_LossModule):
    """:func:`nt_xent`, temperature and reduction fixed.

    Example:
        >>> x = torch.ones(4, 8)
        >>> round(NTXentLoss(0.5)(x, x).item(), 5) == round(math.log(7), 5)
        True
    """

    def __init__(self, temperature: Temperature = 0.5, reduction: Reduction = "mean") -> None:
        super().__init__(temperature, reduction)

    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        extra_negatives: Tensor | None = None,
        *,
        embeddings: Gathered | None = None,
        negative_similarity: Tensor | None = None,
        extra_similarity: Tensor | None = None,
    ) -> Tensor:
        return nt_xent(
            z1,
            z2,
            embeddings=embeddings,
            negative_similarity=negative_similarity,
            extra_negatives=extra_negatives,
            extra_similarity=extra_similarity,
            temperature=self.temperature,
            reduction=self.reduction,
        )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


_INFO_NCE_NAMES = {
    name: name
    for name in (
        "query",
        "positive",
        "negatives",
        "negative_similarity",
        "extra_negatives",
        "extra_similarity",
    )
}


def _check_temperature(temperature: object, like: Tensor | None = None) -> Temperature:
    """A float > 0 (checked), or a 0-d floating tensor (its value is not read: no sync)."""
    if isinstance(temperature, Tensor):
        if temperature.ndim != 0 or not temperature.is_floating_point():
            raise ValueError(
                "temperature: expected a number > 0 or a 0-d floating-point tensor, got a "
                f"{temperature.dtype} tensor of shape {tuple(temperature.shape)}"
            )
        if like is not None and temperature.device not in (like.device, torch.device("cpu")):
            raise ValueError(
                f"temperature: expected a tensor on {like.device} (the device of the "
                f"embeddings) or on the CPU, got one on {temperature.device}"
            )
        return temperature.float()
    return chk.check_number("temperature", temperature, low=0.0, low_open=True)


def _check_options(
    temperature: object,
    reduction: object,
    tau_plus: object,
    beta: object,
    like: Tensor | None = None,
) -> Temperature:
    tau = _check_temperature(temperature, like)
    chk.check_choice("reduction", reduction, _REDUCTIONS)
    chk.check_number("tau_plus", tau_plus, low=0.0, high=1.0, high_open=True)
    chk.check_number("beta", beta, low=0.0)
    return tau


def _check_similarity(
    name: str,
    sim: object,
    shape: tuple[int, int],
    like: Tensor,
    columns: str = "K",
    rows: str = "B",
) -> None:
    sim = chk.check_embeddings(
        name, sim, f"({rows}, {columns})", sizes={0: (rows, shape[0]), 1: (columns, shape[1])}
    )
    chk.check_same_device(name, sim, "the embeddings", like)


def _check_gathered(
    name: str, gathered: object, count: int, dim: int, like: Tensor, what: str = "B"
) -> None:
    if not isinstance(gathered, Gathered):
        raise TypeError(
            f"{name}: expected a syn2co.distributed.Gathered (from gather_rows), "
            f"got {type(gathered).__name__}"
        )
    chk.check_embeddings(f"{name}.rows", gathered.rows, "(N, D)", dim=dim)
    if gathered.count != count:
        raise ValueError(
            f"{name}: expected the gathered rows of a local batch of count={count} ({what}), "
            f"got count={gathered.count}"
        )
    chk.check_same_device(f"{name}.rows", gathered.rows, "the embeddings", like)


def _check_extra(
    names: dict[str, str],
    like: Tensor,
    rows: int,
    extra_negatives: Tensor | None,
    extra_similarity: Tensor | None,
    letter: str = "B",
) -> int:
    """Validate the synthetic negatives (vectors or similarities); return M (0 if none)."""
    n_vec, n_sim = names["extra_negatives"], names["extra_similarity"]
    if extra_negatives is not None and extra_similarity is not None:
        raise ValueError(
            f"{n_sim}: pass either {n_vec} (vectors) or {n_sim} (their cosines with the "
            "query), not both"
        )
    if extra_negatives is not None:
        extra = chk.check_embeddings(
            n_vec,
            extra_negatives,
            f"({letter}, M, D)",
            dim=like.shape[1],
            sizes={0: (letter, rows)},
            allow_empty=True,
        )
        chk.check_same_device(n_vec, extra, names["query"], like)
        return int(extra.shape[1])
    if extra_similarity is not None:
        extra = chk.check_embeddings(
            n_sim, extra_similarity, f"({letter}, M)", sizes={0: (letter, rows)}, allow_empty=True
        )
        chk.check_same_device(n_sim, extra, names["query"], like)
        return int(extra.shape[1])
    return 0


def _check_some_negatives(count: int, name: str) -> None:
    if count <= 0:
        raise ValueError(
            f"{name}: expected at least one negative per query (a bank, in-batch keys or "
            "synthetic negatives with M > 0), got none; with the positive alone the loss is 0"
        )


def _info_nce_rows(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor | None,
    negative_similarity: Tensor | None,
    extra_negatives: Tensor | None,
    extra_similarity: Tensor | None,
    tau: Temperature,
    tau_plus: float,
    beta: float,
    names: dict[str, str],
) -> Tensor:
    """Validated per-query InfoNCE losses (B,); ``names`` are the caller's argument names."""
    chk.check_embeddings(names["query"], query, "(B, D)")
    b, d = query.shape
    chk.check_embeddings(names["positive"], positive, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device(names["positive"], positive, names["query"], query)
    if isinstance(tau, Tensor):
        _check_temperature(tau, query)
    k = 0
    if negatives is not None and negative_similarity is not None:
        raise ValueError(
            f"{names['negative_similarity']}: pass either {names['negatives']} or "
            f"{names['negative_similarity']} (it replaces the product with the bank), not both"
        )
    if negative_similarity is not None:
        sim = chk.check_embeddings(
            names["negative_similarity"], negative_similarity, "(B, K)", sizes={0: ("B", b)}
        )
        chk.check_same_device(names["negative_similarity"], sim, names["query"], query)
        k = sim.shape[1]
    elif negatives is not None:
        chk.check_bank(names["negatives"], negatives, b, d)
        chk.check_same_device(names["negatives"], negatives, names["query"], query)
        k = negatives.shape[-2]
    m = _check_extra(names, query, b, extra_negatives, extra_similarity)
    _check_some_negatives(k + m, names["negatives"])
    with autocast_off(query.device):
        q = F.normalize(query.float(), dim=-1)
        pos = (q * F.normalize(positive.float(), dim=-1)).sum(dim=-1)
        if negative_similarity is not None:
            bank_sim: Tensor | None = negative_similarity.float()
        elif negatives is not None:
            bank = F.normalize(negatives.detach().float(), dim=-1)
            bank_sim = q @ bank.T if bank.ndim == 2 else torch.einsum("bd,bkd->bk", q, bank)
        else:
            bank_sim = None
        parts = [bank_sim, _extra_logits(q, extra_negatives, extra_similarity)]
        negative = torch.cat([p for p in parts if p is not None], dim=1)
        pos, negative = pos / tau, negative / tau
    _check_logits(
        (pos, negative),
        *(
            (names[key], value)
            for key, value in (
                ("query", query),
                ("positive", positive),
                ("negatives", negatives),
                ("negative_similarity", negative_similarity),
                ("extra_negatives", extra_negatives),
                ("extra_similarity", extra_similarity),
            )
        ),
    )
    with autocast_off(query.device):
        return _contrastive(pos, negative, tau, tau_plus, beta)


def _extra_logits(
    q: Tensor, extra_negatives: Tensor | None, extra_similarity: Tensor | None
) -> Tensor | None:
    """(B, M) float32 cosines of unit queries with their synthetic negatives (validated)."""
    if extra_similarity is not None:
        return extra_similarity.float()
    if extra_negatives is None:
        return None
    return torch.einsum("bd,bmd->bm", q, F.normalize(extra_negatives.detach().float(), dim=-1))


def _contrastive(
    pos: Tensor, neg: Tensor, tau: Temperature, tau_plus: float, beta: float
) -> Tensor:
    """Per-row loss of logits (B,) for the positive and (B, N) for the negatives."""
    if tau_plus == 0.0 and beta == 0.0:
        logits = torch.cat([pos[:, None], neg], dim=1)
        labels = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return F.cross_entropy(logits, labels, reduction="none")
    log_neg = negative_log_mass(pos, neg, temperature=tau, tau_plus=tau_plus, beta=beta)
    return F.softplus(log_neg - pos)


def _check_logits(logits: tuple[Tensor, ...], *inputs: tuple[str, Tensor | None]) -> None:
    """One check of the (small) logits; only if they are not finite, find the input to blame."""
    if chk.all_finite(*logits):
        return
    chk.check_finite(*inputs)
    raise NonFiniteError(
        "temperature: the logits overflow float32 although every input is finite; use a "
        "larger temperature (a temperature tensor must hold a finite number > 0)"
    )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
