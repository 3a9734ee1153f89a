"""Reference constructions of syn2co's synthetic negatives, for the benchmarks only.

Shared by ``bench_synthesize.py`` (pytest-benchmark) and ``synthesize_table.py`` (the table
script), so both time the same code. Two references of the same maths as
:func:`syn2co.negatives.synthesize`:

* :func:`per_query_loop`: a plain Python loop over the queries; each query computes its
  similarity to the bank, its top-N pool, then the six strategies, vectorised only within the
  query.
* :func:`published_full`: the construction of SynCo's official code: types 1-4 vectorised over
  the batch, types 5 and 6 one synthetic sample at a time, each through ``torch.autograd.grad``
  (:func:`published_types56`).

Both assume unit-norm bank rows (a MoCo queue holds normalised keys), so, unlike syn2co, they
do not renormalise the rows they pick. :func:`check_exact` and :func:`check_statistics` show
that they compute the same thing as syn2co; the benchmarks call them once, outside timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from syn2co.losses import info_nce
from syn2co.negatives import (
    SYNCO_V1,
    SYNCO_V2,
    NegativeSpec,
    adversarial,
    hardest,
    perturb,
    similarity,
    synthesize,
    synthetic_logits,
)

__all__ = [
    "LOGITS_PATHS",
    "PRESETS",
    "Preset",
    "check_exact",
    "check_statistics",
    "logits_step",
    "make_inputs",
    "per_query_loop",
    "published_full",
    "published_types56",
    "training_step",
]


@dataclass(frozen=True)
class Preset:
    """A spec and the sizes it is benchmarked at."""

    name: str
    spec: NegativeSpec
    batch: int
    bank: int
    dim: int


#: The benchmarked sizes, those of the speed targets on docs/benchmarks.md: SynCo v1 with a
#: MoCo v2 queue, SynCo v2 with a MoBY queue.
PRESETS: tuple[Preset, ...] = (
    Preset("SYNCO_V1", SYNCO_V1, batch=256, bank=65536, dim=128),
    Preset("SYNCO_V2", SYNCO_V2, batch=256, bank=4096, dim=256),
)


def make_inputs(
    batch: int, bank: int, dim: int, device: torch.device | str, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Unit queries (B, D), positives near them (B, D) and a unit bank (K, D), float32.

    Drawn on the CPU, then moved, so every device sees the same numbers.
    """
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    k = F.normalize(q + 0.5 * torch.randn(batch, dim, generator=g) / math.sqrt(dim), dim=-1)
    negatives = F.normalize(torch.randn(bank, dim, generator=g), dim=-1)
    return q.to(device), k.to(device), negatives.to(device)


def _uniform(
    shape: tuple[int, ...], rng: tuple[float, float], gen: torch.Generator | None, like: Tensor
) -> Tensor:
    lo, hi = rng
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------
# Reference 1: a plain loop over the queries
# --------------------------------------------------------------------------------------------


def per_query_loop(
    q: Tensor, bank: Tensor, spec: NegativeSpec, generator: torch.Generator | None = None
) -> Tensor:
    """All synthetic negatives of ``spec``, one query at a time: (B, M, D), types 1-6 in order.

    Args:
        q: Unit queries (B, D), float32.
        bank: Unit negatives (K, D), float32.
        spec: Counts and coefficients.
        generator: Random generator on q's device.
    """
    b, d = q.shape
    n_hard, c = spec.n_hard, spec.counts
    out = torch.empty(b, spec.total, d, device=q.device, dtype=q.dtype)
    with torch.no_grad():
        for i in range(b):
            qi = q[i]
            pool = bank[(bank @ qi).topk(n_hard).indices]  # (N, D), this query's hard pool

            def pick(count: int, pool: Tensor = pool) -> Tensor:
                return pool[torch.randint(n_hard, (count,), generator=generator, device=q.device)]

            n = pick(c["interpolated"])
            a = _uniform((c["interpolated"], 1), spec.alpha, generator, q)
            parts = [a * qi + (1.0 - a) * n]
            n = pick(c["extrapolated"])
            beta = _uniform((c["extrapolated"], 1), spec.beta, generator, q)
            parts.append(qi + beta * (n - qi))
            n, n2 = pick(c["mixed"]), pick(c["mixed"])
            gamma = _uniform((c["mixed"], 1), spec.gamma, generator, q)
            parts.append(gamma * n + (1.0 - gamma) * n2)
            n = pick(c["noisy"])
            eps = torch.randn(n.shape, generator=generator, device=q.device, dtype=q.dtype)
            parts.append(n + spec.sigma * eps)
            parts.append(pick(c["perturbed"]) + spec.delta * qi)
            s = pick(c["adversarial"])
            step = spec.eta * torch.sign(qi)
            for _ in range(spec.adversarial_steps - 1):
                s = F.normalize(s + step, dim=-1)
            parts.append(s + step)
            out[i] = F.normalize(torch.cat(parts), dim=-1)
    return out


# --------------------------------------------------------------------------------------------
# Reference 2: the published construction (SynCo's official code)
# --------------------------------------------------------------------------------------------


def _gradient_step(q: Tensor, n: Tensor, size: float, signed: bool) -> Tensor:
    """One synthetic sample per query through autograd, as the official code makes them."""
    n = n.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad((q * n).sum(), n)
    step = grad.sign() if signed else grad
    return F.normalize(n.detach() + size * step, dim=-1)


def published_types56(
    q: Tensor,
    pool: Tensor,
    perturbed: int,
    adversarial: int,
    *,
    delta: float = 0.01,
    eta: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Types 5 and 6 as SynCo's official code makes them: (B, perturbed + adversarial, D).

    For each synthetic sample in turn (vectorised over the batch): pick a hard negative per
    query, make it require grad, ``grad(sum(q * n), n)``, step ``n + delta * grad`` (type 5)
    or ``n + eta * sign(grad)`` (type 6), normalise.

    Args:
        q: Unit queries (B, D).
        pool: Hard pool (B, N, D), unit rows.
        perturbed: Count of type 5.
        adversarial: Count of type 6.
        delta: Type-5 step size.
        eta: Type-6 step size.
        generator: Random generator on q's device.
    """
    b, n_hard, _ = pool.shape
    rows = torch.arange(b, device=q.device)
    q = q.detach()
    samples = []
    with torch.enable_grad():
        for count, size, signed in ((perturbed, delta, False), (adversarial, eta, True)):
            for _ in range(count):
                j = torch.randint(n_hard, (b,), generator=generator, device=q.device)
                samples.append(_gradient_step(q, pool[rows, j], size, signed))
    return torch.stack(samples, dim=1)


def published_full(
    q: Tensor, bank: Tensor, spec: NegativeSpec, generator: torch.Generator | None = None
) -> Tensor:
    """All six types as the official code builds them: (B, M, D), types 1-6 in order.

    The pool indices come from one batched product and top-N; types 1-4 are vectorised over
    the batch and the samples; types 5 and 6 loop over the samples through autograd.
    ``spec.adversarial_steps`` must be 1 (the official code makes a single step).
    """
    if spec.adversarial_steps != 1:
        raise ValueError("published_full: the official construction makes one adversarial step")
    b = q.shape[0]
    n_hard, c = spec.n_hard, spec.counts
    with torch.no_grad():
        idx = (q @ bank.T).topk(n_hard, dim=1).indices  # (B, N)

        def pick(count: int) -> Tensor:
            j = torch.randint(n_hard, (b, count), generator=generator, device=q.device)
            return bank[idx.gather(1, j)]  # (B, count, D)

        qb = q[:, None, :]
        n = pick(c["interpolated"])
        a = _uniform((b, c["interpolated"], 1), spec.alpha, generator, q)
        parts = [F.normalize(a * qb + (1.0 - a) * n, dim=-1)]
        n = pick(c["extrapolated"])
        beta = _uniform((b, c["extrapolated"], 1), spec.beta, generator, q)
        parts.append(F.normalize(qb + beta * (n - qb), dim=-1))
        n, n2 = pick(c["mixed"]), pick(c["mixed"])
        gamma = _uniform((b, c["mixed"], 1), spec.gamma, generator, q)
        parts.append(F.normalize(gamma * n + (1.0 - gamma) * n2, dim=-1))
        n = pick(c["noisy"])
        eps = torch.randn(n.shape, generator=generator, device=q.device, dtype=q.dtype)
        parts.append(F.normalize(n + spec.sigma * eps, dim=-1))
    with torch.enable_grad():
        for count, size, signed in (
            (c["perturbed"], spec.delta, False),
            (c["adversarial"], spec.eta, True),
        ):
            if count == 0:
                continue
            samples = [_gradient_step(q, pick(1)[:, 0], size, signed) for _ in range(count)]
            parts.append(torch.stack(samples, dim=1))
    return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------------
# The loss and a whole training step
# --------------------------------------------------------------------------------------------


def loss_only(q: Tensor, k: Tensor, bank: Tensor, *, backward: bool) -> Callable[[], Tensor]:
    """A callable: float32 ``info_nce`` of q against the bank alone, optionally backward."""
    leaf = q.detach().clone().requires_grad_(True)

    def run() -> Tensor:
        leaf.grad = None
        loss = info_nce(leaf, k, bank)
        if backward:
            torch.autograd.backward(loss)
        return loss

    return run


def training_step(
    q: Tensor, k: Tensor, bank: Tensor, spec: NegativeSpec, *, shared: bool, bf16: bool
) -> Callable[[], Tensor]:
    """A callable: synthesis plus loss, forward and backward, as a training step runs them.

    ``shared``: ``sim = similarity(q, bank)`` feeds both the hard pool (detached) and the loss,
    so the bank is multiplied once; otherwise ``synthesize`` and ``info_nce`` each multiply it.
    A linear head in front of the loss makes the query a bf16 model output under ``bf16``
    autocast; backward reaches the head's weight and input.
    """
    d = q.shape[1]
    x = q.detach().clone().requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    w = torch.eye(d) + 0.01 * torch.randn(d, d, generator=g)
    w = w.to(q.device).requires_grad_(True)

    def run() -> Tensor:
        x.grad = w.grad = None
        with torch.autocast(q.device.type, dtype=torch.bfloat16, enabled=bf16):
            query = x @ w
            if shared:
                sim = similarity(query, bank)
                syn = synthesize(query, bank, spec, similarity=sim.detach())
                loss = info_nce(query, k, negative_similarity=sim, extra_negatives=syn)
            else:
                syn = synthesize(query, bank, spec)
                loss = info_nce(query, k, bank, extra_negatives=syn)
        torch.autograd.backward(loss)
        return loss

    return run


#: How the logits of the synthetic negatives are made, for :func:`logits_step`.
LOGITS_PATHS = ("synthetic_logits", "synthesize", "per-query loop", "published construction")


def logits_step(
    q: Tensor, bank: Tensor, spec: NegativeSpec, path: str, *, shared: bool
) -> Callable[[], Tensor]:
    """A callable: the logits of a spec's synthetic negatives, forward and backward to the query.

    ``path``: ``synthetic_logits`` (no vectors), ``synthesize`` (vectors, then their cosines to
    the query as ``info_nce`` takes them: ``norm(q) . norm(s)``), or the vectors of the per-query
    loop or of the published construction, then the same cosines. ``shared``: syn2co's paths get
    the query-bank similarities computed outside the call (a training step computes them for
    the loss anyway); the references always compute their own. The loss is the sum of the
    logits; backward reaches the query.
    """
    if path not in LOGITS_PATHS:
        raise ValueError(f"path: expected one of {LOGITS_PATHS}, got {path!r}")
    leaf = q.detach().clone().requires_grad_(True)
    sim = similarity(q, bank).detach() if shared else None

    def cosines(vectors: Tensor) -> Tensor:
        unit = F.normalize(leaf, dim=-1)
        return torch.einsum("bd,bmd->bm", unit, F.normalize(vectors.detach().float(), dim=-1))

    def run() -> Tensor:
        leaf.grad = None
        if path == "synthetic_logits":
            logits = synthetic_logits(leaf, bank, spec, similarity=sim)
        elif path == "synthesize":
            logits = cosines(synthesize(leaf, bank, spec, similarity=sim))
        elif path == "per-query loop":
            logits = cosines(per_query_loop(leaf.detach(), bank, spec))
        else:
            logits = cosines(published_full(leaf.detach(), bank, spec))
        loss = logits.sum()
        torch.autograd.backward(loss)
        return loss

    return run


# --------------------------------------------------------------------------------------------
# The same maths: checks run once, outside timing
# --------------------------------------------------------------------------------------------


def check_exact(device: torch.device | str) -> list[str]:
    """With a pool of one and fixed coefficients, every construction gives the same samples.

    Nothing is random then except type 4's noise, switched off (sigma = 0); the steps of types
    5 and 6 are made large so that a wrong sign or a missing step cannot hide in the tolerance.
    Raises AssertionError on a mismatch; returns one line per comparison.
    """
    spec = NegativeSpec(
        n_hard=1,
        interpolated=3,
        extrapolated=3,
        mixed=3,
        noisy=3,
        perturbed=3,
        adversarial=3,
        alpha=(0.3, 0.3),
        beta=(1.2, 1.2),
        gamma=(0.4, 0.4),
        sigma=0.0,
        delta=0.5,
        eta=0.2,
    )
    q, _, bank = make_inputs(16, 256, 32, device, seed=1)
    ours = synthesize(q, bank, spec)
    lines = []
    for name, theirs in (
        ("per-query loop", per_query_loop(q, bank, spec)),
        ("published construction", published_full(q, bank, spec)),
    ):
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5, msg=name)
        err = (theirs - ours).abs().max().item()
        lines.append(f"exact: {name} == synthesize (pool of 1, fixed coefficients), {err:.1e}")
    pool = hardest(q, bank, 1)
    ours56 = torch.cat(
        [perturb(q, pool, 3, delta=spec.delta), adversarial(q, pool, 3, eta=spec.eta)], dim=1
    )
    theirs56 = published_types56(q, pool, 3, 3, delta=spec.delta, eta=spec.eta)
    torch.testing.assert_close(theirs56, ours56, atol=1e-5, rtol=1e-5)
    err = (theirs56 - ours56).abs().max().item()
    lines.append(f"exact: published types 5-6 == perturb + adversarial (pool of 1), {err:.1e}")
    return lines


def _cosine_stats(samples: Tensor, q: Tensor, spec: NegativeSpec) -> dict[str, Tensor]:
    """Per type, the cosines of its samples with their query (flattened)."""
    cos = torch.einsum("bmd,bd->bm", samples.float(), q.float())
    return {
        name: cos[:, sl].reshape(-1) for name, sl in spec.slices().items() if sl.stop > sl.start
    }


def _same_distribution(name: str, a: Tensor, b: Tensor) -> str:
    # Means within 6 standard errors (samples are independent given the inputs), spreads
    # within 15 %: loose enough never to fail by chance, tight enough to catch a wrong formula.
    se = math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())
    gap = abs(a.mean().item() - b.mean().item())
    ratio = b.std().item() / max(a.std().item(), 1e-12)
    if gap > 6.0 * se + 1e-6 or not 0.85 < ratio < 1.15:
        raise AssertionError(
            f"{name}: mean cosine {a.mean().item():.4f} vs {b.mean().item():.4f} "
            f"(6 SE = {6 * se:.4f}), std ratio {ratio:.3f}"
        )
    return f"{gap / max(se, 1e-12):.1f} SE"


def check_statistics(
    preset: Preset, device: torch.device | str, batch: int = 32, bank: int = 8192
) -> list[str]:
    """With the preset's spec and random picks, each type's cosines to q are distributed alike.

    Run on a reduced batch and bank (the spec's counts and pool size are kept) so the per-query
    loop stays cheap. Raises AssertionError on a mismatch.
    """
    spec = preset.spec
    q, _, negatives = make_inputs(batch, max(bank, spec.n_hard), preset.dim, device, seed=2)
    torch.manual_seed(0)  # the references and syn2co draw from the default generator here
    ours = _cosine_stats(synthesize(q, negatives, spec), q, spec)
    lines = []
    for ref, samples in (
        ("per-query loop", per_query_loop(q, negatives, spec)),
        ("published construction", published_full(q, negatives, spec)),
    ):
        theirs = _cosine_stats(samples, q, spec)
        gaps = [_same_distribution(f"{ref}, {t}", ours[t], theirs[t]) for t in ours]
        lines.append(f"statistics ({preset.name}): {ref} ~ synthesize, per type " + ", ".join(gaps))
    pool = hardest(q, negatives, spec.n_hard)
    c5, c6 = spec.perturbed, spec.adversarial
    ours56 = torch.cat(
        [perturb(q, pool, c5, delta=spec.delta), adversarial(q, pool, c6, eta=spec.eta)], dim=1
    )
    theirs56 = published_types56(q, pool, c5, c6, delta=spec.delta, eta=spec.eta)
    spec56 = NegativeSpec(n_hard=spec.n_hard, perturbed=c5, adversarial=c6)
    a, b = _cosine_stats(ours56, q, spec56), _cosine_stats(theirs56, q, spec56)
    gaps = [_same_distribution(f"types 5-6, {t}", a[t], b[t]) for t in a]
    lines.append(
        f"statistics ({preset.name}): published types 5-6 ~ perturb + adversarial, "
        + ", ".join(gaps)
    )
    return lines
