"""The generators' objectives: pure losses on the encoder's embeddings of generated data.

Hard samples: :func:`hard_sample_loss` ascends :func:`in_batch_info_nce` while
:func:`feature_matching_loss` and the GAN terms (:func:`generator_adversarial_loss`,
:func:`discriminator_loss`) keep the samples near the data. Hard positive pairs:
:func:`positive_pair_loss` moves :func:`pair_similarity` towards a target that
:func:`pair_similarity_schedule` lowers over training.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from syn2co import _checks as chk
from syn2co._precision import autocast_off
from syn2co.losses import info_nce
from syn2co.schedules import cosine_schedule, linear_schedule

__all__ = [
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "hard_sample_loss",
    "in_batch_info_nce",
    "pair_similarity",
    "pair_similarity_schedule",
    "positive_pair_loss",
]

ScheduleKind = Literal["cosine", "linear"]


def in_batch_info_nce(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    *,
    temperature: float = 0.2,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """The encoder's contrastive loss on two views of one batch, gradient to every embedding.

    Row ``i`` of view a has its positive at row ``i`` of view b and the other ``B - 1`` rows of
    view b as negatives; symmetric (the mean of both directions). Composed with
    :func:`syn2co.losses.info_nce` through precomputed similarities, which keep their gradient,
    so a generator ascending this loss is pushed through positives *and* negatives. With
    identical embeddings everywhere it is exactly ``log(B)``.

    Args:
        encoder_out_a: Embeddings of the first view, shape (B, D), B >= 2.
        encoder_out_b: Embeddings of the second view, shape (B, D).
        temperature: tau > 0.
        tau_plus: Debiasing class prior (0 = off), see :func:`syn2co.losses.negative_log_mass`.
        beta: Hard-negative concentration (0 = off).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If shapes disagree, B < 2 or an option is out of range.

    Example:
        >>> x = torch.ones(8, 4)
        >>> round(in_batch_info_nce(x, x).item(), 5) == round(math.log(8), 5)
        True
    """
    chk.check_embeddings("encoder_out_a", encoder_out_a, "(B, D)")
    b, d = encoder_out_a.shape
    chk.check_embeddings("encoder_out_b", encoder_out_b, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("encoder_out_b", encoder_out_b, "encoder_out_a", encoder_out_a)
    if b < 2:
        raise ValueError(
            f"encoder_out_a: expected shape (B, D) with B >= 2 (in-batch negatives), got ({b}, {d})"
        )
    chk.check_number("temperature", temperature, low=0.0, low_open=True)
    with autocast_off(encoder_out_a.device):
        a = F.normalize(encoder_out_a.float(), dim=-1)
        k = F.normalize(encoder_out_b.float(), dim=-1)
        off = ~torch.eye(b, dtype=torch.bool, device=a.device)
        sim = a @ k.T  # (B, B): rows view a, columns view b
        total = a.new_zeros(())
        for q, p, s in ((a, k, sim), (k, a, sim.T)):
            negatives = s[off].view(b, b - 1)
            total = total + info_nce(
                q,
                p,
                negative_similarity=negatives,
                temperature=temperature,
                tau_plus=tau_plus,
                beta=beta,
            )
    return total / 2.0


def feature_matching_loss(
    fake_features: Tensor,
    real_features: Tensor,
    *,
    mean_weight: float = 1.0,
    covariance_weight: float = 1.0,
) -> Tensor:
    """Match the mean and covariance of generated features to those of real ones.

    Both inputs are flattened to (N, F) and (M, F): encoder embeddings (B, D), or images
    (B, C, H, W) for a pixel-statistics match. With ``mu`` the per-feature means and ``S`` the
    unbiased covariances::

        loss = mean_weight * mean_F((mu_fake - mu_real)**2)
             + covariance_weight * mean_{F x F}((S_fake - S_real)**2)

    The covariance term never forms an F x F matrix when F exceeds N + M: it is computed from
    Gram matrices, ``|A^T A - B^T B|^2 = |A A^T|^2 + |B B^T|^2 - 2 |A B^T|^2`` (Frobenius), with
    ``A, B`` the centred rows over ``sqrt(N - 1)``, ``sqrt(M - 1)``. The real features are
    constants (detached): the gradient reaches the generated ones.

    Args:
        fake_features: Generated features, shape (N, ...) (N >= 2 for the covariance).
        real_features: Real features, shape (M, ...) with the same trailing shape.
        mean_weight: Weight of the mean term (>= 0).
        covariance_weight: Weight of the covariance term (>= 0).

    Returns:
        Scalar float32 loss, 0 when both sets have the same mean and covariance.

    Raises:
        ValueError: If trailing shapes differ, a set is too small or a weight is negative.

    Example:
        >>> real = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
        >>> feature_matching_loss(real, real).item() < 1e-10
        True
        >>> feature_matching_loss(real + 1.0, real, covariance_weight=0.0).item()
        1.0
    """
    fake = chk.check_float("fake_features", fake_features)
    real = chk.check_float("real_features", real_features)
    mw = chk.check_number("mean_weight", mean_weight, low=0.0)
    cw = chk.check_number("covariance_weight", covariance_weight, low=0.0)
    if fake.ndim < 2 or fake.numel() == 0:
        raise ValueError(
            f"fake_features: expected a non-empty tensor of shape (N, ...), got {tuple(fake.shape)}"
        )
    if real.ndim != fake.ndim or real.shape[1:] != fake.shape[1:] or real.numel() == 0:
        trailing = ", ".join(str(s) for s in fake.shape[1:])
        raise ValueError(
            f"real_features: expected shape (M, {trailing}) (the trailing shape of "
            f"fake_features), got {tuple(real.shape)}"
        )
    chk.check_same_device("real_features", real, "fake_features", fake)
    n, m = fake.shape[0], real.shape[0]
    if cw > 0 and min(n, m) < 2:
        name = "fake_features" if n < 2 else "real_features"
        raise ValueError(
            f"{name}: expected at least 2 rows for the covariance term "
            f"(or covariance_weight=0), got {min(n, m)}"
        )
    chk.check_finite(("fake_features", fake), ("real_features", real))
    with autocast_off(fake.device):
        x = fake.float().reshape(n, -1)
        y = real.detach().float().reshape(m, -1)
        f = x.shape[1]
        mu_x, mu_y = x.mean(0), y.mean(0)
        loss = mw * (mu_x - mu_y).pow(2).mean()
        if cw > 0:
            a = (x - mu_x) / math.sqrt(n - 1)
            c = (y - mu_y) / math.sqrt(m - 1)
            if f <= n + m:
                cov = (a.T @ a - c.T @ c).pow(2).sum()
            else:
                cov = (
                    (a @ a.T).pow(2).sum() + (c @ c.T).pow(2).sum() - 2 * (a @ c.T).pow(2).sum()
                ).clamp(min=0.0)
            loss = loss + cw * cov / (f * f)
    return loss


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating GAN loss of the generator: ``mean(-log sigmoid(D(G(z))))``.

    Computed as ``softplus(-logits)``, stable for any logit. The discriminator ``D`` is the
    user's; it gives one logit per generated image ("real" is positive).

    Args:
        fake_logits: Discriminator logits of generated images, shape (B,) or (B, 1).

    Returns:
        Scalar float32 loss, ``log 2`` at logit 0.

    Example:
        >>> round(generator_adversarial_loss(torch.zeros(4)).item(), 6) == round(math.log(2), 6)
        True
    """
    logits = _check_logits("fake_logits", fake_logits)
    return F.softplus(-logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's GAN loss: ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))``.

    For the optional discriminator of the fidelity term; compute ``fake_logits`` from
    *detached* generated images so the discriminator step leaves the generator alone.

    Args:
        real_logits: Logits of real images, shape (M,) or (M, 1).
        fake_logits: Logits of generated images, shape (B,) or (B, 1).

    Returns:
        Scalar float32 loss, ``2 log 2`` when every logit is 0.

    Example:
        >>> round(discriminator_loss(torch.zeros(3), torch.zeros(2)).item(), 5)
        1.38629
    """
    real = _check_logits("real_logits", real_logits)
    fake = _check_logits("fake_logits", fake_logits)
    chk.check_same_device("fake_logits", fake, "real_logits", real)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def hard_sample_loss(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    *,
    temperature: float = 0.2,
    fake_features: Tensor | None = None,
    real_features: Tensor | None = None,
    discriminator_logits: Tensor | None = None,
    contrastive_weight: float = 1.0,
    fidelity_weight: float = 1.0,
    adversarial_weight: float = 1.0,
) -> Tensor:
    """The hard-sample generator's objective (to minimise): hard for the encoder, close to data.

    ::

        loss = - contrastive_weight * in_batch_info_nce(a, b)         (ascend the encoder's loss)
               + fidelity_weight    * feature_matching_loss(fake, real)      (if real given)
               + adversarial_weight * generator_adversarial_loss(logits)     (if logits given)

    ``a`` and ``b`` are the encoder's embeddings of two views of the same generated samples.
    Minimising it makes samples on which the current encoder's contrastive loss is high (Wu et
    al. 2023), while the fidelity terms keep them near the data distribution.

    Args:
        encoder_out_a: Encoder embeddings of the first view of the generated samples, (B, D).
        encoder_out_b: Encoder embeddings of the second view, (B, D).
        temperature: tau > 0 of the contrastive term.
        fake_features: Features of the generated samples for the fidelity term, (N, ...);
            defaults to ``cat([encoder_out_a, encoder_out_b])`` when ``real_features`` is given.
        real_features: Features of a real batch in the same space, (M, ...). None: no
            feature-matching term.
        discriminator_logits: Discriminator logits of the generated samples, (B,). None: no
            adversarial term.
        contrastive_weight: Weight of the (negated) contrastive term, >= 0.
        fidelity_weight: Weight of the feature-matching term, >= 0.
        adversarial_weight: Weight of the non-saturating GAN term, >= 0.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``fake_features`` comes without ``real_features``, a weight is negative
            or ``temperature <= 0``, or a shape is wrong.

    Example:
        >>> a = torch.ones(8, 4)
        >>> round(hard_sample_loss(a, a).item(), 5) == round(-math.log(8), 5)
        True
        >>> loss = hard_sample_loss(a, a, real_features=torch.randn(16, 4), fidelity_weight=0.5)
    """
    cw = chk.check_number("contrastive_weight", contrastive_weight, low=0.0)
    fw = chk.check_number("fidelity_weight", fidelity_weight, low=0.0)
    aw = chk.check_number("adversarial_weight", adversarial_weight, low=0.0)
    if fake_features is not None and real_features is None:
        raise ValueError(
            "real_features: expected a tensor of real features to match fake_features against, "
            "got None"
        )
    chk.check_finite(("encoder_out_a", encoder_out_a), ("encoder_out_b", encoder_out_b))
    loss = -cw * in_batch_info_nce(encoder_out_a, encoder_out_b, temperature=temperature)
    if real_features is not None:
        fake = fake_features
        if fake is None:
            fake = torch.cat([encoder_out_a, encoder_out_b])
        loss = loss + fw * feature_matching_loss(fake, real_features)
    if discriminator_logits is not None:
        loss = loss + aw * generator_adversarial_loss(discriminator_logits)
    return loss


def pair_similarity(encoder_out_a: Tensor, encoder_out_b: Tensor) -> Tensor:
    """Mean cosine similarity of matching rows, float32, with gradient.

    Args:
        encoder_out_a: Embeddings of the first images of the pairs, shape (B, D).
        encoder_out_b: Embeddings of the second images, shape (B, D).

    Returns:
        Scalar tensor in [-1, 1].

    Example:
        >>> pair_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).item()
        0.7071067690849304
    """
    return _cosines(encoder_out_a, encoder_out_b).mean()


def positive_pair_loss(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    target_similarity: float,
    *,
    per_pair: bool = False,
) -> Tensor:
    """Move the similarity of generated positive pairs towards a target (Wu et al. 2023).

    ``(mean_i cos(a_i, b_i) - target)**2`` by default: the *average* similarity is held at the
    target, and its gradient moves it towards the target from above and below alike. With
    ``per_pair=True``, ``mean_i (cos(a_i, b_i) - target)**2`` holds every pair there (it also
    penalises the spread of similarities, which may bias the mean). Lower the target over
    training with :func:`pair_similarity_schedule` for harder positives.

    Args:
        encoder_out_a: Encoder embeddings of the first images of the pairs, (B, D).
        encoder_out_b: Encoder embeddings of the second images, (B, D).
        target_similarity: Target cosine similarity in [-1, 1].
        per_pair: Square each pair's error rather than the mean's.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If the target is outside [-1, 1] or shapes disagree.

    Example:
        >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> positive_pair_loss(a, b, 0.5).item()
        0.25
    """
    t = chk.check_number("target_similarity", target_similarity, low=-1.0, high=1.0)
    cos = _cosines(encoder_out_a, encoder_out_b)
    if per_pair:
        return (cos - t).pow(2).mean()
    return (cos.mean() - t).pow(2)


def pair_similarity_schedule(
    step: int,
    total_steps: int,
    start: float = 0.9,
    end: float = 0.5,
    kind: ScheduleKind = "cosine",
) -> float:
    """The target similarity of generated positive pairs at ``step``: harder over training.

    ``kind="cosine"``: :func:`syn2co.schedules.cosine_schedule` from ``start`` to ``end``;
    ``kind="linear"``: :func:`syn2co.schedules.linear_schedule`. ``end`` from ``total_steps``
    on. Counted in optimizer steps, like every schedule of syn2co.

    Args:
        step: Current optimizer step (>= 0).
        total_steps: Step at which the target reaches ``end`` (>= 1).
        start: Target at step 0, in [-1, 1].
        end: Final target, in [-1, 1].
        kind: "cosine" or "linear".

    Returns:
        The target as a float in [-1, 1].

    Raises:
        TypeError: If a step is not an int or a value not a number.
        ValueError: If a value is out of range or ``kind`` is unknown.

    Example:
        >>> pair_similarity_schedule(0, 100), pair_similarity_schedule(100, 100)
        (0.9, 0.5)
        >>> round(pair_similarity_schedule(50, 100, kind="linear"), 6)
        0.7
    """
    start = chk.check_number("start", start, low=-1.0, high=1.0)
    end = chk.check_number("end", end, low=-1.0, high=1.0)
    chk.check_choice("kind", kind, ("cosine", "linear"))
    if kind == "cosine":
        return cosine_schedule(step, total_steps, start, end)
    return linear_schedule(step, total_steps, start, end)


def _cosines(a: Tensor, b: Tensor) -> Tensor:
    chk.check_embeddings("encoder_out_a", a, "(B, D)")
    n, d = a.shape
    chk.check_embeddings("encoder_out_b", b, "(B, D)", dim=d, sizes={0: ("B", n)})
    chk.check_same_device("encoder_out_b", b, "encoder_out_a", a)
    chk.check_finite(("encoder_out_a", a), ("encoder_out_b", b))
    with autocast_off(a.device):
        return F.cosine_similarity(a.float(), b.float(), dim=-1)


def _check_logits(name: str, logits: object) -> Tensor:
    t = chk.check_float(name, logits)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name}: expected shape (B,) or (B, 1), got {tuple(t.shape)}")
    chk.check_finite((name, t))
    return t.float()
