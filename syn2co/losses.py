"""Contrastive losses that take synthetic negatives.

* :func:`info_nce`: InfoNCE against a bank (MoCo v2 queue) plus per-query synthetic negatives.
* :func:`moco_v3_loss`: in-batch keys gathered from all ranks, scaled by ``2 * tau``.
* :func:`moby_loss`: MoBY's symmetric loss over two queues (the base of SynCo v2 and Syn2Co).
* :func:`negative_log_mass`: the hardness-aware weighting of the negatives, pure: debiased
  (Chuang et al., NeurIPS 2020, ``tau_plus``) and hard-negative reweighted (Robinson et al.,
  ICLR 2021, ``beta``); every loss here takes both as options.

Numerics: embeddings are L2-normalised and logits computed in float32 with autocast disabled,
whatever the input dtype; the loss is a ``cross_entropy`` or ``logsumexp`` of those logits,
never exp followed by log. Negatives (the bank and the synthetic ones) are constants: the
gradient reaches the query, and the positive where it carries one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import _checks as chk
from syn2co import distributed
from syn2co._checks import NonFiniteError

__all__ = [
    "InfoNCELoss",
    "MoBYLoss",
    "MoCoV3Loss",
    "Reduction",
    "info_nce",
    "moby_loss",
    "moco_v3_loss",
    "negative_log_mass",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def negative_log_mass(
    positive_logits: Tensor,
    negative_logits: Tensor,
    *,
    temperature: float,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """Log of the negatives' term in the InfoNCE denominator, optionally hardness-aware.

    Plain (``tau_plus = beta = 0``): ``logsumexp(negative_logits)``. Otherwise the estimator
    ``N * g`` of Chuang et al. (debiased, class prior ``tau_plus``) with the importance weights
    ``exp(beta * s_i)`` of Robinson et al. (HCL), all in log space::

        R   = N * sum_i(exp((1 + beta) s_i)) / sum_i(exp(beta s_i))     (reweighted mass)
        N g = max((R - tau_plus * N * exp(s_pos)) / (1 - tau_plus), N * exp(-1 / temperature))

    The loss is then ``softplus(log(N g) - s_pos)`` = ``-log(e^s_pos / (e^s_pos + N g))``.

    Args:
        positive_logits: Shape (B,), the positive's logit ``q . k / tau``.
        negative_logits: Shape (B, N), the negatives' logits (masked entries may hold the
            dtype's minimum: they contribute nothing).
        temperature: The tau the logits were divided by (sets the lower bound).
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
    chk.check_number("temperature", temperature, low=0.0, low_open=True)
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
        log_mass = torch.where(valid, debiased, torch.finfo(debiased.dtype).min)
    return torch.clamp(log_mass, min=log_n - 1.0 / temperature)


def info_nce(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    *,
    extra_negatives: Tensor | None = None,
    temperature: float = 0.2,
    reduction: Reduction = "mean",
    negative_similarity: Tensor | None = None,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """InfoNCE with a bank of negatives and per-query synthetic negatives (MoCo v2, SynCo).

    Logits ``[q.k+, q.bank, q.synthetic] / tau`` with the positive at index 0, then
    cross-entropy. With identical embeddings everywhere the loss is exactly ``log(1 + K + M)``.

    Args:
        query: Queries of shape (B, D).
        positive: Positive keys of shape (B, D).
        negatives: Bank of negatives, shared (K, D) (a queue) or per query (B, K, D). Optional.
        extra_negatives: Per-query extra negatives of shape (B, M, D), e.g. from
            :func:`syn2co.negatives.synthesize`. Optional.
        temperature: tau > 0.
        reduction: "mean", "sum" or "none" (per-query losses of shape (B,)).
        negative_similarity: Precomputed ``norm(q) . norm(bank)`` of shape (B, K), float, with
            the gradient to the query (:func:`syn2co.negatives.similarity`). Replaces
            ``negatives``, so a bank multiplied once serves both the hard pool and the loss.
        tau_plus: Debiasing class prior (0 = off), see :func:`negative_log_mass`.
        beta: Hard-negative concentration (0 = off), see :func:`negative_log_mass`.

    Returns:
        Scalar float32 loss, or shape (B,) with ``reduction="none"``.

    Example:
        >>> q = torch.ones(4, 8)
        >>> loss = info_nce(q, q, torch.ones(16, 8), extra_negatives=torch.ones(4, 3, 8))
        >>> round(loss.item(), 4) == round(math.log(1 + 16 + 3), 4)
        True
    """
    chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    chk.check_embeddings("positive", positive, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("positive", positive, "query", query)
    tau = _check_loss_options(temperature, reduction, tau_plus, beta)
    if negatives is not None and negative_similarity is not None:
        raise ValueError(
            "negative_similarity: pass either negatives or negative_similarity (it replaces "
            "the product with the bank), not both"
        )
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=-1)
        k = F.normalize(positive.float(), dim=-1)
        pos = (q * k).sum(dim=-1)
        parts = [
            p
            for p in (
                _bank_similarity(q, negatives, negative_similarity),
                _extra_similarity(q, extra_negatives),
            )
            if p is not None
        ]
        negative = torch.cat(parts, dim=1) if parts else q.new_zeros(b, 0)
        pos, negative = pos / tau, negative / tau
    _check_logits(
        pos,
        negative,
        ("query", query),
        ("positive", positive),
        ("negatives", negatives),
        ("negative_similarity", negative_similarity),
        ("extra_negatives", extra_negatives),
    )
    with torch.autocast(device_type=query.device.type, enabled=False):
        loss = _contrastive(pos, negative, tau, tau_plus, beta)
    return _reduce(loss, reduction)


def moco_v3_loss(
    query: Tensor,
    key: Tensor,
    *,
    extra_negatives: Tensor | None = None,
    temperature: float = 0.2,
    reduction: Reduction = "mean",
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """MoCo v3's contrastive loss for one direction, with in-batch keys from all ranks.

    Keys are gathered from every rank *without* gradient (they come from the momentum
    encoder); query ``i`` of rank ``r`` has its positive at ``r * B + i``; the loss is the
    cross-entropy scaled by ``2 * tau`` as in the MoCo v3 paper and code. Apply it to both
    directions, ``moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1)``. With identical embeddings it
    is exactly ``2 * tau * log(B_total + M)``.

    Args:
        query: Queries of shape (B, D), from the predictor.
        key: Keys of shape (B, D) from the momentum encoder, this rank's batch.
        extra_negatives: Synthetic negatives of shape (B, M, D), e.g. from
            ``synthesize(query, gathered_keys, spec, exclude=positive_mask(B, ...))``.
        temperature: tau > 0.
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
    """
    chk.check_embeddings("query", query, "(B, D)")
    b, d = query.shape
    chk.check_embeddings("key", key, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("key", key, "query", query)
    tau = _check_loss_options(temperature, reduction, tau_plus, beta)
    keys = distributed.gather(key)
    total = keys.shape[0]
    labels = torch.arange(b, device=query.device) + b * distributed.rank()
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=-1)
        sim = q @ F.normalize(keys.float(), dim=-1).T  # (B, B_total)
        pos = sim.gather(1, labels[:, None])[:, 0]
        # The other B_total - 1 keys, skipping each row's positive without masking.
        cols = torch.arange(total - 1, device=query.device).expand(b, -1)
        cols = cols + (cols >= labels[:, None]).long()
        parts = [sim.gather(1, cols), _extra_similarity(q, extra_negatives)]
        negative = torch.cat([p for p in parts if p is not None], dim=1)
        pos, negative = pos / tau, negative / tau
    _check_logits(
        pos, negative, ("query", query), ("key", key), ("extra_negatives", extra_negatives)
    )
    with torch.autocast(device_type=query.device.type, enabled=False):
        loss = _contrastive(pos, negative, tau, tau_plus, beta) * (2.0 * tau)
    return _reduce(loss, reduction)


def moby_loss(
    prediction1: Tensor,
    prediction2: Tensor,
    target1: Tensor,
    target2: Tensor,
    queue1: Tensor,
    queue2: Tensor,
    *,
    extra_negatives: tuple[Tensor | None, Tensor | None] = (None, None),
    negative_similarity: tuple[Tensor | None, Tensor | None] = (None, None),
    temperature: float = 0.2,
    reduction: Reduction = "mean",
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """MoBY's symmetric loss: ``L(p1, t2, queue2) + L(p2, t1, queue1)`` with :func:`info_nce`.

    MoBY (Xie et al., 2021) is the base of SynCo v2 and Syn2Co: the online branch's
    predictions of one view against the target projections of the other view, each direction
    with the queue of the view its positive came from. Synthetic negatives are built per
    direction from that direction's queue: ``extra_negatives[0]`` from queue2 for ``p1``.

    Args:
        prediction1: Online predictions of view 1, shape (B, D).
        prediction2: Online predictions of view 2, shape (B, D).
        target1: Target projections of view 1, shape (B, D).
        target2: Target projections of view 2, shape (B, D).
        queue1: Bank of past target projections of view 1, shape (K, D).
        queue2: Bank of past target projections of view 2, shape (K, D).
        extra_negatives: Synthetic negatives per direction, each (B, M, D) or None.
        negative_similarity: Precomputed similarities per direction, (B, K) or None: replaces
            the product with that direction's queue.
        temperature: tau > 0.
        reduction: "mean", "sum" or "none" (per-query sums of both directions, shape (B,)).
        tau_plus: Debiasing class prior (0 = off).
        beta: Hard-negative concentration (0 = off).

    Returns:
        The sum of both directions' losses.

    Example:
        >>> x, bank = torch.ones(4, 8), torch.ones(16, 8)
        >>> loss = moby_loss(x, x, x, x, bank, bank)
        >>> round(loss.item(), 4) == round(2 * math.log(17), 4)
        True
    """
    options = {
        "temperature": temperature,
        "reduction": reduction,
        "tau_plus": tau_plus,
        "beta": beta,
    }
    directions = ((prediction1, target2, queue2, 0), (prediction2, target1, queue1, 1))
    total: Tensor | None = None
    for query, positive, queue, i in directions:
        sim = negative_similarity[i]
        term = info_nce(
            query,
            positive,
            None if sim is not None else queue,
            extra_negatives=extra_negatives[i],
            negative_similarity=sim,
            **options,  # type: ignore[arg-type]
        )
        total = term if total is None else total + term
    assert total is not None
    return total


# --------------------------------------------------------------------------------------------
# Thin modules holding the hyperparameters
# --------------------------------------------------------------------------------------------


class InfoNCELoss(nn.Module):
    """:func:`info_nce` with its hyperparameters fixed.

    Example:
        >>> loss_fn = InfoNCELoss(temperature=0.2)
        >>> q = torch.ones(2, 4)
        >>> round(loss_fn(q, q, torch.ones(5, 4)).item(), 4) == round(math.log(6), 4)
        True
    """

    def __init__(
        self,
        temperature: float = 0.2,
        reduction: Reduction = "mean",
        tau_plus: float = 0.0,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        _check_loss_options(temperature, reduction, tau_plus, beta)
        self.temperature, self.reduction = temperature, reduction
        self.tau_plus, self.beta = tau_plus, beta

    def forward(
        self,
        query: Tensor,
        positive: Tensor,
        negatives: Tensor | None = None,
        extra_negatives: Tensor | None = None,
        negative_similarity: Tensor | None = None,
    ) -> Tensor:
        return info_nce(
            query,
            positive,
            negatives,
            extra_negatives=extra_negatives,
            negative_similarity=negative_similarity,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


class MoCoV3Loss(InfoNCELoss):
    """:func:`moco_v3_loss` for one direction, hyperparameters fixed.

    Example:
        >>> x = torch.ones(8, 4)
        >>> round(MoCoV3Loss(0.2)(x, x).item(), 5) == round(0.4 * math.log(8), 5)
        True
    """

    def forward(  # type: ignore[override]
        self, query: Tensor, key: Tensor, extra_negatives: Tensor | None = None
    ) -> Tensor:
        return moco_v3_loss(
            query,
            key,
            extra_negatives=extra_negatives,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


class MoBYLoss(InfoNCELoss):
    """:func:`moby_loss`, hyperparameters fixed.

    Example:
        >>> x, bank = torch.ones(4, 8), torch.ones(16, 8)
        >>> round(MoBYLoss()(x, x, x, x, bank, bank).item(), 4) == round(2 * math.log(17), 4)
        True
    """

    def forward(  # type: ignore[override]
        self,
        prediction1: Tensor,
        prediction2: Tensor,
        target1: Tensor,
        target2: Tensor,
        queue1: Tensor,
        queue2: Tensor,
        extra_negatives: tuple[Tensor | None, Tensor | None] = (None, None),
        negative_similarity: tuple[Tensor | None, Tensor | None] = (None, None),
    ) -> Tensor:
        return moby_loss(
            prediction1,
            prediction2,
            target1,
            target2,
            queue1,
            queue2,
            extra_negatives=extra_negatives,
            negative_similarity=negative_similarity,
            temperature=self.temperature,
            reduction=self.reduction,
            tau_plus=self.tau_plus,
            beta=self.beta,
        )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _check_loss_options(
    temperature: object, reduction: object, tau_plus: object, beta: object
) -> float:
    tau = chk.check_number("temperature", temperature, low=0.0, low_open=True)
    chk.check_choice("reduction", reduction, _REDUCTIONS)
    chk.check_number("tau_plus", tau_plus, low=0.0, high=1.0, high_open=True)
    chk.check_number("beta", beta, low=0.0)
    return tau


def _bank_similarity(q: Tensor, bank: Tensor | None, precomputed: Tensor | None) -> Tensor | None:
    """(B, K) float32 similarities of unit queries with a constant bank."""
    b, d = q.shape
    if precomputed is not None:
        chk.check_embeddings("negative_similarity", precomputed, "(B, K)", sizes={0: ("B", b)})
        chk.check_same_device("negative_similarity", precomputed, "query", q)
        return precomputed.float()
    if bank is None:
        return None
    chk.check_bank("negatives", bank, b, d)
    chk.check_same_device("negatives", bank, "query", q)
    bank = F.normalize(bank.detach().float(), dim=-1)
    if bank.ndim == 2:
        return q @ bank.T
    return torch.einsum("bd,bkd->bk", q, bank)


def _extra_similarity(q: Tensor, extra: Tensor | None) -> Tensor | None:
    """(B, M) float32 similarities of unit queries with their own constant extra negatives."""
    if extra is None:
        return None
    b, d = q.shape
    chk.check_embeddings("extra_negatives", extra, "(B, M, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("extra_negatives", extra, "query", q)
    return torch.einsum("bd,bmd->bm", q, F.normalize(extra.detach().float(), dim=-1))


def _contrastive(pos: Tensor, neg: Tensor, tau: float, tau_plus: float, beta: float) -> Tensor:
    """Per-row loss of logits (B,) for the positive and (B, N) for the negatives."""
    if tau_plus == 0.0 and beta == 0.0:
        logits = torch.cat([pos[:, None], neg], dim=1)
        labels = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return F.cross_entropy(logits, labels, reduction="none")
    log_neg = negative_log_mass(pos, neg, temperature=tau, tau_plus=tau_plus, beta=beta)
    return F.softplus(log_neg - pos)


def _check_logits(pos: Tensor, negative: Tensor, *inputs: tuple[str, Tensor | None]) -> None:
    """One check of the (small) logits; only if they are not finite, find the input to blame."""
    if chk.all_finite(pos, negative):
        return
    chk.check_finite(*inputs)
    raise NonFiniteError(
        "temperature: the logits overflow float32 although every input is finite; "
        "use a larger temperature"
    )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
