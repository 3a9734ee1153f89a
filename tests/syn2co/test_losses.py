"""Exact values, plain references and numerics of the contrastive losses."""

from __future__ import annotations

import math
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import nn

from syn2co import distributed
from syn2co.distributed import Gathered, gather_rows
from syn2co.losses import (
    InfoNCELoss,
    MoBYLoss,
    MoBYView,
    MoCoV3Loss,
    info_nce,
    moby_loss,
    moco_v3_loss,
    negative_log_mass,
)
from syn2co.negatives import NegativeSpec, similarity, synthesize


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------ plain references (float64)


def ref_info_nce(q, k, bank, extra, tau):  # type: ignore[no-untyped-def]
    """One query at a time, written from the formula: -log(e^pos / sum of e^all)."""
    losses = []
    for i in range(q.shape[0]):
        qi = q[i].double() / q[i].double().norm()
        ki = k[i].double() / k[i].double().norm()
        logits = [float(qi @ ki) / tau]
        rows = [] if bank is None else list(bank if bank.ndim == 2 else bank[i])
        rows += [] if extra is None else list(extra[i])
        for n in rows:
            n = n.double() / n.double().norm()
            logits.append(float(qi @ n) / tau)
        m = max(logits)
        denom = sum(math.exp(v - m) for v in logits)
        losses.append(-(logits[0] - m - math.log(denom)))
    return sum(losses) / len(losses)


def ref_dcl_hcl(q, k, negs, tau, tau_plus, beta):  # type: ignore[no-untyped-def]
    """Chuang et al. / Robinson et al. as their papers write it (exp, then log), float64."""
    q = F.normalize(q.double(), dim=-1)
    k = F.normalize(k.double(), dim=-1)
    negs = F.normalize(negs.double(), dim=-1)
    pos = torch.exp((q * k).sum(-1) / tau)
    neg = torch.exp(torch.einsum("bd,bnd->bn", q, negs) / tau)
    n = neg.shape[1]
    imp = (beta * neg.log()).exp()
    reweight = (imp * neg).sum(-1) / imp.mean(-1)
    ng = (-tau_plus * n * pos + reweight) / (1 - tau_plus)
    ng = torch.clamp(ng, min=n * math.e ** (-1 / tau))
    return (-torch.log(pos / (pos + ng))).mean()


def ref_moco_v3(q, k, tau):  # type: ignore[no-untyped-def]
    q = F.normalize(q.double(), dim=-1)
    k = F.normalize(k.double(), dim=-1)
    total = 0.0
    for i in range(q.shape[0]):
        logits = (k @ q[i]) / tau
        total += float(torch.logsumexp(logits, 0) - logits[i])
    return 2 * tau * total / q.shape[0]


# ----------------------------------------------------------------------------- exact values


@pytest.mark.parametrize(("b", "k", "m"), [(1, 1, 0), (4, 16, 0), (3, 10, 7), (5, 0, 4)])
def test_info_nce_identical_embeddings_is_log_1_plus_k_plus_m(b: int, k: int, m: int) -> None:
    x = rand(1, 12).expand(b, -1)
    bank = x[:1].expand(k, -1) if k else None
    extra = x[:, None].expand(-1, m, -1) if m else None
    loss = info_nce(x, x, bank, extra_negatives=extra, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(1 + k + m), rel=1e-6)
    per_query = x[:, None].expand(-1, k, -1) if k else None
    loss = info_nce(x, x, per_query, extra_negatives=extra, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(1 + k + m), rel=1e-6)


@pytest.mark.parametrize(("b", "tau", "m"), [(2, 0.2, 0), (8, 0.2, 0), (16, 0.1, 5)])
def test_moco_v3_identical_embeddings_is_2_tau_log_b(b: int, tau: float, m: int) -> None:
    x = rand(1, 6).expand(b, -1)
    extra = x[:, None].expand(-1, m, -1) if m else None
    loss = moco_v3_loss(x, x, temperature=tau, extra_negatives=extra)
    assert loss.item() == pytest.approx(2 * tau * math.log(b + m), rel=1e-6)


def test_moby_identical_is_twice_log_1_plus_k_plus_m() -> None:
    v = rand(1, 8)
    x, bank, extra = v.expand(4, -1), v.expand(16, -1), v[None].expand(4, 3, -1)
    view = MoBYView(x, x, bank, extra_negatives=extra)
    loss = moby_loss(view, view)
    assert loss.item() == pytest.approx(2 * math.log(1 + 16 + 3), rel=1e-6)


# ------------------------------------------------------------------- against plain references


@given(
    seed=st.integers(0, 2**16),
    b=st.integers(1, 5),
    k=st.integers(0, 9),
    m=st.integers(0, 4),
    tau=st.floats(0.05, 1.0),
    per_query=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_info_nce_matches_reference(
    seed: int, b: int, k: int, m: int, tau: float, per_query: bool
) -> None:
    q, pos = rand(b, 7, seed=seed), rand(b, 7, seed=seed + 1)
    bank = (rand(b, k, 7, seed=seed + 2) if per_query else rand(k, 7, seed=seed + 2)) if k else None
    extra = rand(b, m, 7, seed=seed + 3) if m else None
    if k == m == 0:  # the positive alone: the loss would be 0 whatever the inputs
        with pytest.raises(ValueError, match="negatives: expected at least one negative"):
            info_nce(q, pos, bank, extra_negatives=extra, temperature=tau)
        return
    got = info_nce(q, pos, bank, extra_negatives=extra, temperature=tau).item()
    assert got == pytest.approx(ref_info_nce(q, pos, bank, extra, tau), rel=1e-5, abs=1e-6)


@given(seed=st.integers(0, 2**16), b=st.integers(1, 6), tau=st.floats(0.05, 1.0))
@settings(max_examples=30, deadline=None)
def test_moco_v3_matches_reference(seed: int, b: int, tau: float) -> None:
    q, k = rand(b, 5, seed=seed), rand(b, 5, seed=seed + 1)
    if b == 1:  # a single key is the positive: no negatives
        with pytest.raises(ValueError, match="key: expected at least one negative"):
            moco_v3_loss(q, k, temperature=tau)
        return
    got = moco_v3_loss(q, k, temperature=tau).item()
    assert got == pytest.approx(ref_moco_v3(q, k, tau), rel=1e-5, abs=1e-6)


def test_moco_v3_extra_negatives_match_info_nce_with_in_batch_bank() -> None:
    # MoCo v3 with synthetic negatives == InfoNCE whose per-query bank is the other keys.
    b, d = 5, 8
    q, k, extra = rand(b, d), rand(b, d, seed=1), rand(b, 3, d, seed=2)
    others = torch.stack([torch.cat([k[:i], k[i + 1 :]]) for i in range(b)])
    want = info_nce(q, k, others, extra_negatives=extra, temperature=0.3) * 0.6
    got = moco_v3_loss(q, k, extra_negatives=extra, temperature=0.3)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_moby_is_the_sum_of_two_directions_with_crossed_queues() -> None:
    p1, p2, t1, t2 = (rand(4, 8, seed=s) for s in range(4))
    q1, q2 = rand(10, 8, seed=5), rand(12, 8, seed=6)
    e1, e2 = rand(4, 2, 8, seed=7), rand(4, 3, 8, seed=8)
    want = info_nce(p1, t2, q2, extra_negatives=e1) + info_nce(p2, t1, q1, extra_negatives=e2)
    got = moby_loss(
        MoBYView(p1, t1, q1, extra_negatives=e1), MoBYView(p2, t2, q2, extra_negatives=e2)
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@given(
    seed=st.integers(0, 2**16),
    tau_plus=st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    beta=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    tau=st.sampled_from([0.1, 0.2, 0.5]),
)
@settings(max_examples=40, deadline=None)
def test_debiased_and_hcl_match_their_papers(
    seed: int, tau_plus: float, beta: float, tau: float
) -> None:
    q, k, negs = rand(6, 8, seed=seed), rand(6, 8, seed=seed + 1), rand(6, 20, 8, seed=seed + 2)
    got = info_nce(q, k, negs, temperature=tau, tau_plus=tau_plus, beta=beta).item()
    want = float(ref_dcl_hcl(q, k, negs, tau, tau_plus, beta))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def ref_debiased_log_mass(pos, neg, tau, tau_plus):  # type: ignore[no-untyped-def]
    """log Ng of Chuang et al. written plainly in float64 from the (float32) logits."""
    e_pos, e_neg = pos.double().exp(), neg.double().exp()
    n = neg.shape[1]
    ng = (-tau_plus * n * e_pos + e_neg.sum(1)) / (1 - tau_plus)
    return torch.clamp(ng, min=n * math.exp(-1 / tau)).log()


def debiased_logits(seed: int, n: int, tau: float, noise: float) -> tuple[torch.Tensor, ...]:
    """(B,) positive and (B, N) negative logits of unit vectors; small noise = close positive."""
    q = F.normalize(rand(6, 16, seed=seed), dim=1)
    k = F.normalize(q + noise * rand(6, 16, seed=seed + 1), dim=1)
    negs = F.normalize(rand(6, n, 16, seed=seed + 2), dim=-1)
    return (q * k).sum(1) / tau, torch.einsum("bd,bnd->bn", q, negs) / tau


@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 40),
    tau=st.sampled_from([0.07, 0.1, 0.2, 0.5]),
    tau_plus=st.sampled_from([0.01, 0.1, 0.3]),
    noise=st.sampled_from([0.0, 0.05, 0.3, 1.0, 3.0]),
)
@settings(max_examples=150, deadline=None)
def test_debiased_log_mass_matches_float64_reference(
    seed: int, n: int, tau: float, tau_plus: float, noise: float
) -> None:
    pos, neg = debiased_logits(seed, n, tau, noise)
    got = negative_log_mass(pos, neg, temperature=tau, tau_plus=tau_plus).double()
    want = ref_debiased_log_mass(pos, neg, tau, tau_plus)
    # log(R - tau_plus N e^pos) loses float32 precision as r = tau_plus N e^pos / R nears 1:
    # the error of log r (a few ulp of the logits) is amplified by r / (1 - r).
    lse = torch.logsumexp(neg.double(), 1)
    log_r = math.log(tau_plus * n) + pos.double() - lse
    scale = pos.double().abs() + lse.abs() + 1
    amplify = torch.where(log_r < 0, log_r.exp() / -torch.expm1(log_r.clamp(max=-1e-12)), 0.0)
    tol = 1e-5 + 1e-6 * scale * amplify
    assert ((got - want).abs() <= tol).all(), (got, want)


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.2, 0.5])
def test_debiased_lower_bound_is_exact_where_active(tau: float) -> None:
    # Positives equal to the query: tau_plus N e^{1/tau} exceeds the negatives' mass, so the
    # debiased estimate is negative and only the bound N e^{-1/tau} remains.
    pos, neg = debiased_logits(3, 32, tau, 0.0)
    assert (ref_debiased_log_mass(pos, neg, tau, 0.5) == math.log(32) - 1 / tau).all()
    pos, neg = pos.requires_grad_(), neg.requires_grad_()
    got = negative_log_mass(pos, neg, temperature=tau, tau_plus=0.5)
    assert torch.allclose(got, torch.full((6,), math.log(32) - 1 / tau), atol=1e-5)
    got.sum().backward()  # the bound is a constant: no gradient, and no NaN from log(0)
    assert pos.grad is not None and neg.grad is not None
    assert torch.equal(pos.grad, torch.zeros(6)) and torch.equal(neg.grad, torch.zeros(6, 32))


def test_debiased_bound_switches_per_row_at_low_temperature() -> None:
    pos, neg = debiased_logits(73, 32, 0.07, 0.3)
    want = ref_debiased_log_mass(pos, neg, 0.07, 0.1)
    active = want == math.log(32) - 1 / 0.07
    assert 0 < int(active.sum()) < 6  # both regimes in one batch
    got = negative_log_mass(pos, neg, temperature=0.07, tau_plus=0.1).double()
    assert torch.allclose(got[active], want[active], atol=1e-5)
    assert torch.allclose(got[~active], want[~active], rtol=1e-4)


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.2, 0.5])
def test_debiased_loss_matches_its_paper_at_low_temperature(tau: float) -> None:
    for seed in range(20):
        q = rand(6, 8, seed=seed)
        k = q + 0.3 * rand(6, 8, seed=seed + 1)
        negs = rand(6, 20, 8, seed=seed + 2)
        got = info_nce(q, k, negs, temperature=tau, tau_plus=0.1).item()
        want = float(ref_dcl_hcl(q, k, negs, tau, 0.1, 0.0))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_hardness_aware_stays_finite_at_tiny_temperature() -> None:
    # exp(1 / 0.005) overflows float32 in the exp-then-log form; log space must not.
    q = rand(4, 8)
    k = q + 0.01 * rand(4, 8, seed=1)
    negs = rand(4, 30, 8, seed=2)
    loss = info_nce(q, k, negs, temperature=0.005, tau_plus=0.1, beta=1.0)
    assert torch.isfinite(loss)
    with pytest.raises(AssertionError):  # the float32 reference does overflow here
        assert torch.isfinite(torch.exp(torch.tensor(1 / 0.005)))


def test_negative_log_mass_reduces_to_logsumexp() -> None:
    pos, neg = rand(3), rand(3, 9, seed=1)
    assert torch.allclose(negative_log_mass(pos, neg, temperature=0.2), torch.logsumexp(neg, 1))
    # the lower bound N e^{-1/t} applies once hardness-aware terms are on
    very_neg = torch.full((3, 9), -100.0)
    out = negative_log_mass(pos, very_neg, temperature=0.2, beta=1.0)
    assert torch.allclose(out, torch.full((3,), math.log(9) - 5.0))


def test_reductions() -> None:
    q, k, bank = rand(5, 8), rand(5, 8, seed=1), rand(7, 8, seed=2)
    per = info_nce(q, k, bank, reduction="none")
    assert per.shape == (5,)
    assert torch.allclose(per.mean(), info_nce(q, k, bank))
    assert torch.allclose(per.sum(), info_nce(q, k, bank, reduction="sum"))
    assert moco_v3_loss(q, k, reduction="none").shape == (5,)


# ---------------------------------------------------------------------------------- gradients


def test_gradient_reaches_the_query_and_not_the_negatives() -> None:
    q = rand(4, 8).requires_grad_()
    k = rand(4, 8, seed=1)
    bank = rand(10, 8, seed=2).requires_grad_()
    extra = rand(4, 3, 8, seed=3).requires_grad_()
    info_nce(q, k, bank, extra_negatives=extra).backward()
    assert q.grad is not None and float(q.grad.abs().sum()) > 0
    assert bank.grad is None and extra.grad is None


def test_moco_v3_keys_get_no_gradient() -> None:
    q, k = rand(4, 8).requires_grad_(), rand(4, 8, seed=1).requires_grad_()
    moco_v3_loss(q, k).backward()
    assert q.grad is not None and k.grad is None


def test_gradient_matches_float64_autograd_reference() -> None:
    q = rand(4, 8, dtype=torch.float64).requires_grad_()
    k, bank = rand(4, 8, seed=1), rand(10, 8, seed=2)
    extra = rand(4, 3, 8, seed=3)
    (g,) = torch.autograd.grad(info_nce(q.float(), k, bank, extra_negatives=extra), q)
    qn = F.normalize(q, dim=-1)
    logits = (
        torch.cat(
            [
                (qn * F.normalize(k.double(), dim=-1)).sum(-1, keepdim=True),
                qn @ F.normalize(bank.double(), dim=-1).T,
                torch.einsum("bd,bmd->bm", qn, F.normalize(extra.double(), dim=-1)),
            ],
            dim=1,
        )
        / 0.2
    )
    want = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
    (g_ref,) = torch.autograd.grad(want, q)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6)


def test_precomputed_similarity_gives_same_loss_and_gradient() -> None:
    q1 = rand(6, 16).requires_grad_()
    q2 = q1.detach().clone().requires_grad_()
    k, bank = rand(6, 16, seed=1), rand(40, 16, seed=2)
    a = info_nce(q1, k, bank)
    b = info_nce(q2, k, negative_similarity=similarity(q2, bank))
    a.backward()
    b.backward()
    assert torch.allclose(a, b, atol=1e-6)
    assert q1.grad is not None and q2.grad is not None
    assert torch.allclose(q1.grad, q2.grad, atol=1e-6)


# ---------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda q, k, bank, extra: info_nce(q, k, bank, extra_negatives=extra),
        lambda q, k, bank, extra: info_nce(
            q, k, bank, extra_negatives=extra, tau_plus=0.1, beta=1.0
        ),
        lambda q, k, bank, extra: moco_v3_loss(q, k, extra_negatives=extra),
        lambda q, k, bank, extra: moby_loss(
            MoBYView(q, k, bank, extra_negatives=extra), MoBYView(q, k, bank, extra_negatives=extra)
        ),
    ],
)
def test_bf16_autocast_is_finite_and_close_to_float32(loss_fn: Callable[..., torch.Tensor]) -> None:
    lin = torch.nn.Linear(32, 32)
    x, k = rand(16, 32), rand(16, 32, seed=1)
    bank, extra = rand(256, 32, seed=2), rand(16, 8, 32, seed=3)
    ref = loss_fn(lin(x), k, bank, extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = lin(x)
        assert q.dtype == torch.bfloat16
        got = loss_fn(q, k.bfloat16(), bank.bfloat16(), extra.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)


def test_large_logits_do_not_overflow() -> None:
    q = rand(4, 8)
    loss = info_nce(q, q, rand(100, 8, seed=1), temperature=1e-4)
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------------- modules


def test_modules_match_functions() -> None:
    q, k, bank, extra = rand(4, 8), rand(4, 8, seed=1), rand(9, 8, seed=2), rand(4, 2, 8, seed=3)
    assert torch.equal(
        InfoNCELoss(0.3)(q, k, bank, extra),
        info_nce(q, k, bank, extra_negatives=extra, temperature=0.3),
    )
    assert torch.equal(
        MoCoV3Loss(0.3)(q, k, extra), moco_v3_loss(q, k, extra_negatives=extra, temperature=0.3)
    )
    view = MoBYView(q, k, bank)
    assert torch.equal(MoBYLoss(0.3)(view, view), moby_loss(view, view, temperature=0.3))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)


# ------------------------------------------------------------------------------- bad input


BAD = [
    (
        "temperature zero",
        lambda: info_nce(rand(2, 4), rand(2, 4), temperature=0.0),
        ValueError,
        "temperature: expected a number in \\(0.0, inf\\]",
    ),
    (
        "reduction",
        lambda: info_nce(rand(2, 4), rand(2, 4), reduction="avg"),
        ValueError,
        "reduction: expected one of",
    ),
    (
        "tau_plus",
        lambda: info_nce(rand(2, 4), rand(2, 4), rand(3, 4), tau_plus=1.0),
        ValueError,
        "tau_plus",
    ),
    ("beta", lambda: info_nce(rand(2, 4), rand(2, 4), rand(3, 4), beta=-1.0), ValueError, "beta"),
    (
        "positive shape",
        lambda: info_nce(rand(2, 4), rand(3, 4)),
        ValueError,
        "positive: expected shape \\(B, D\\) with B=2",
    ),
    (
        "bank D",
        lambda: info_nce(rand(2, 4), rand(2, 4), rand(3, 5)),
        ValueError,
        "negatives: expected shape \\(K, D\\) with D=4",
    ),
    (
        "bank rank",
        lambda: info_nce(rand(2, 4), rand(2, 4), rand(3)),
        ValueError,
        "negatives: expected shape \\(K, D\\) or \\(B, K, D\\), got \\(3\\)",
    ),
    (
        "extra shape",
        lambda: info_nce(rand(2, 4), rand(2, 4), extra_negatives=rand(2, 4)),
        ValueError,
        "extra_negatives: expected shape \\(B, M, D\\)",
    ),
    (
        "both banks",
        lambda: info_nce(rand(2, 4), rand(2, 4), rand(3, 4), negative_similarity=rand(2, 3)),
        ValueError,
        "negative_similarity: pass either",
    ),
    (
        "nan positive",
        lambda: info_nce(rand(2, 4), torch.full((2, 4), float("nan")), rand(3, 4)),
        ValueError,
        "positive: expected finite",
    ),
    (
        "int query",
        lambda: moco_v3_loss(torch.ones(2, 4, dtype=torch.int32), rand(2, 4)),
        TypeError,
        "query: expected a floating-point",
    ),
    (
        "key shape",
        lambda: moco_v3_loss(rand(2, 4), rand(2, 5)),
        ValueError,
        "key: expected shape \\(B, D\\) with D=4",
    ),
]


@pytest.mark.parametrize(("what", "call", "exc", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(what: str, call: Callable[[], object], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        call()


# ------------------------------------------------------------------------ one loss contract


def cosines(q: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """The synthetic negatives as their cosines with q (gradient to q), shape (B, M)."""
    return torch.einsum("bd,bmd->bm", F.normalize(q, dim=-1), F.normalize(extra, dim=-1))


LOSSES_WITH_EXTRAS: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("info_nce", lambda q, k, bank, **kw: info_nce(q, k, bank, **kw)),
    ("info_nce_debiased", lambda q, k, bank, **kw: info_nce(q, k, bank, tau_plus=0.1, **kw)),
    ("moco_v3", lambda q, k, bank, **kw: moco_v3_loss(q, k, **kw)),
    ("moby", lambda q, k, bank, **kw: moby_loss(MoBYView(q, k, bank, **kw), MoBYView(k, q, bank))),
]


each_loss_with_extras = pytest.mark.parametrize(
    ("name", "loss_fn"), LOSSES_WITH_EXTRAS, ids=[n for n, _ in LOSSES_WITH_EXTRAS]
)


@each_loss_with_extras
def test_extra_similarity_equals_extra_negatives_in_loss_and_gradient(
    name: str, loss_fn: Callable[..., torch.Tensor]
) -> None:
    k, bank, extra = rand(5, 8, seed=1), rand(12, 8, seed=2), rand(5, 4, 8, seed=3)
    q1 = rand(5, 8).requires_grad_()
    q2 = q1.detach().clone().requires_grad_()
    a = loss_fn(q1, k, bank, extra_negatives=extra)
    b = loss_fn(q2, k, bank, extra_similarity=cosines(q2, extra))
    a.backward()
    b.backward()
    assert q1.grad is not None and q2.grad is not None
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(q1.grad, q2.grad, atol=1e-6)


@each_loss_with_extras
def test_zero_synthetic_negatives_are_a_no_op(
    name: str, loss_fn: Callable[..., torch.Tensor]
) -> None:
    q, k, bank = rand(5, 8), rand(5, 8, seed=1), rand(12, 8, seed=2)
    # what synthesize returns for a spec whose counts are all 0
    empty = synthesize(q, bank, NegativeSpec(n_hard=3))
    assert empty.shape == (5, 0, 8)
    want = loss_fn(q, k, bank)
    assert torch.equal(loss_fn(q, k, bank, extra_negatives=empty), want)
    assert torch.equal(loss_fn(q, k, bank, extra_similarity=torch.zeros(5, 0)), want)


@each_loss_with_extras
def test_synthetic_negatives_as_vectors_and_similarities_are_refused(
    name: str, loss_fn: Callable[..., torch.Tensor]
) -> None:
    q, k, bank = rand(5, 8), rand(5, 8, seed=1), rand(12, 8, seed=2)
    with pytest.raises(ValueError, match=r"extra_similarity: pass either .*extra_negatives"):
        loss_fn(q, k, bank, extra_negatives=rand(5, 2, 8), extra_similarity=rand(5, 2))


@pytest.mark.parametrize(
    "call",
    [
        lambda: info_nce(rand(3, 4), rand(3, 4)),
        lambda: info_nce(rand(3, 4), rand(3, 4), extra_negatives=torch.zeros(3, 0, 4)),
        lambda: info_nce(rand(3, 4), rand(3, 4), extra_similarity=torch.zeros(3, 0)),
        lambda: moco_v3_loss(rand(1, 4), rand(1, 4)),
        lambda: moco_v3_loss(rand(1, 4), rand(1, 4), extra_negatives=torch.zeros(1, 0, 4)),
    ],
)
def test_no_negatives_at_all_is_an_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="expected at least one negative per query"):
        call()


def test_one_synthetic_negative_suffices() -> None:
    q = rand(3, 4)
    loss = info_nce(q, q, extra_similarity=torch.ones(3, 1))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    loss = moco_v3_loss(q[:1], q[:1], extra_negatives=q[:1, None])
    assert loss.item() == pytest.approx(0.4 * math.log(2), rel=1e-6)


# -------------------------------------------------------------- MoCo v3 with gathered keys


def ref_moco_v3_offset(q, keys, offset, tau):  # type: ignore[no-untyped-def]
    """Query i's positive is row offset + i of keys; every other row is a negative."""
    q = F.normalize(q.double(), dim=-1)
    keys = F.normalize(keys.double(), dim=-1)
    total = 0.0
    for i in range(q.shape[0]):
        logits = (keys @ q[i]) / tau
        total += float(torch.logsumexp(logits, 0) - logits[offset + i])
    return 2 * tau * total / q.shape[0]


def test_moco_v3_gathered_keys_of_a_later_rank_match_reference() -> None:
    # Rank 1 of 3 in one process: its positives sit at rows 4..7 of the gathered keys.
    q, keys = rand(4, 6), rand(12, 6, seed=1)
    gathered = Gathered(keys, offset=4, count=4)
    got = moco_v3_loss(q, gathered, temperature=0.3).item()
    assert got == pytest.approx(ref_moco_v3_offset(q, keys, 4, 0.3), rel=1e-5)
    # with the precomputed similarities of the query with every key: same loss
    sim = similarity(q, keys)
    assert moco_v3_loss(q, gathered, negative_similarity=sim, temperature=0.3).item() == (
        pytest.approx(got, rel=1e-6)
    )


def test_gathered_keys_run_no_collective(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k = rand(4, 6).requires_grad_(), rand(4, 6, seed=1)
    gathered = gather_rows(k)
    want = moco_v3_loss(q, k, temperature=0.3)

    def no_collective(x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the loss gathered again")

    monkeypatch.setattr(distributed, "gather", no_collective)
    monkeypatch.setattr(distributed, "gather_with_grad", no_collective)
    assert torch.equal(moco_v3_loss(q, gathered, temperature=0.3), want)
    sim = similarity(q, gathered.rows)
    got = moco_v3_loss(q, gathered, negative_similarity=sim, temperature=0.3)
    (g_sim,) = torch.autograd.grad(got, q)
    (g_ref,) = torch.autograd.grad(want, q)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(g_sim, g_ref, atol=1e-6)


def test_moco_v3_keys_of_all_ranks_given_as_a_tensor_get_a_hint() -> None:
    with pytest.raises(ValueError, match=r"key: expected this rank's keys .* gather_rows"):
        moco_v3_loss(rand(4, 6), rand(8, 6))
    with pytest.raises(ValueError, match="key: expected the gathered rows of a local batch"):
        moco_v3_loss(rand(4, 6), Gathered(rand(8, 6), offset=0, count=8))
    with pytest.raises(ValueError, match="negative_similarity: expected shape \\(B, N\\) with N=4"):
        moco_v3_loss(rand(4, 6), rand(4, 6), negative_similarity=rand(4, 8))


# --------------------------------------------------------------------- MoBY's two views


def test_moby_views_cross_queues_and_precomputed_similarities() -> None:
    p1, p2, t1, t2 = (rand(4, 8, seed=s).requires_grad_() for s in range(4))
    q1, q2 = rand(10, 8, seed=5), rand(12, 8, seed=6)
    e1, e2 = rand(4, 2, 8, seed=7), rand(4, 3, 8, seed=8)
    want = info_nce(p1, t2, q2, extra_negatives=e1) + info_nce(p2, t1, q1, extra_negatives=e2)
    # view 1 carries what its prediction meets: the similarities with view 2's queue
    v1 = MoBYView(
        p1,
        t1,
        q1,
        negative_similarity=similarity(p1, q2),
        extra_similarity=cosines(p1, e1),
    )
    v2 = MoBYView(p2, t2, q2, negative_similarity=similarity(p2, q1), extra_negatives=e2)
    got = moby_loss(v1, v2)
    g_want = torch.autograd.grad(want, (p1, p2, t1, t2))
    g_got = torch.autograd.grad(got, (p1, p2, t1, t2))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for a, b in zip(g_got, g_want, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_moby_similarity_against_its_own_queue_is_refused() -> None:
    p1, p2, t1, t2 = (rand(4, 8, seed=s) for s in range(4))
    q1, q2 = rand(10, 8, seed=5), rand(12, 8, seed=6)
    wrong = MoBYView(p1, t1, q1, negative_similarity=similarity(p1, q1))  # (4, 10), needs 12
    with pytest.raises(
        ValueError, match=r"view1.negative_similarity: expected shape .* K_view2=12"
    ):
        moby_loss(wrong, MoBYView(p2, t2, q2))
    with pytest.raises(TypeError, match="view2: expected a MoBYView"):
        moby_loss(MoBYView(p1, t1, q1), (p2, t2, q2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"view2.queue: expected shape \(K, D\) with D=8"):
        moby_loss(MoBYView(p1, t1, q1), MoBYView(p2, t2, rand(12, 5)))


# ------------------------------------------------------------------------- temperature


def ref_loss_float64(name: str, q, k, bank, tau):  # type: ignore[no-untyped-def]
    """Each loss written plainly in float64 with tau a tensor, for d loss / d tau."""
    qn, kn, bn = (F.normalize(x.double(), dim=-1) for x in (q, k, bank))
    if name == "moco_v3":
        logits = qn @ kn.T / tau
        return 2 * tau * (torch.logsumexp(logits, 1) - logits.diagonal()).mean()
    logits = torch.cat([(qn * kn).sum(-1, keepdim=True), qn @ bn.T], dim=1) / tau
    if name == "debiased":  # Chuang et al., with its bound, exp then log
        pos, neg = logits[:, 0].exp(), logits[:, 1:].exp()
        n = neg.shape[1]
        ng = torch.maximum((-0.1 * n * pos + neg.sum(1)) / 0.9, n * torch.exp(-1 / tau))
        return (-torch.log(pos / (pos + ng))).mean()
    per = torch.logsumexp(logits, 1) - logits[:, 0]
    return 2 * per.mean() if name == "moby" else per.mean()


TAU_LOSSES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("info_nce", lambda q, k, bank, tau: info_nce(q, k, bank, temperature=tau)),
    ("debiased", lambda q, k, bank, tau: info_nce(q, k, bank, temperature=tau, tau_plus=0.1)),
    ("moco_v3", lambda q, k, bank, tau: moco_v3_loss(q, k, temperature=tau)),
    (
        "moby",
        lambda q, k, bank, tau: moby_loss(
            MoBYView(q, k, bank), MoBYView(q, k, bank), temperature=tau
        ),
    ),
]


@pytest.mark.parametrize(("name", "loss_fn"), TAU_LOSSES, ids=[n for n, _ in TAU_LOSSES])
@pytest.mark.parametrize("tau0", [0.07, 0.2, 0.5])
def test_learnable_temperature_gets_the_reference_gradient(
    name: str, loss_fn: Callable[..., torch.Tensor], tau0: float
) -> None:
    q, bank = rand(6, 8), rand(20, 8, seed=2)
    k = q + 0.3 * rand(6, 8, seed=1)  # close positives: the debiased bound is active somewhere
    tau = nn.Parameter(torch.tensor(tau0))
    loss = loss_fn(q, k, bank, tau)
    assert loss.item() == pytest.approx(loss_fn(q, k, bank, tau0).item(), rel=1e-6)
    loss.backward()
    tau64 = torch.tensor(tau0, dtype=torch.float64, requires_grad=True)
    want = ref_loss_float64(name, q, k, bank, tau64)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert tau.grad is not None and tau64.grad is not None
    assert float(tau.grad) == pytest.approx(float(tau64.grad), rel=1e-4, abs=1e-5)


def test_module_registers_a_learnable_temperature_and_trains_it() -> None:
    loss_fn = InfoNCELoss(temperature=nn.Parameter(torch.tensor(0.5)))
    assert [n for n, _ in loss_fn.named_parameters()] == ["temperature"]
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)
    q, bank = rand(6, 8), rand(20, 8, seed=2)
    loss_fn(q, q, bank).backward()  # identical positives: a lower temperature helps
    optimizer.step()
    tau = float(loss_fn.temperature.detach())
    assert tau < 0.5
    assert f"temperature={tau:g}" in repr(loss_fn)


@pytest.mark.parametrize(
    ("tau", "words"),
    [
        (torch.tensor([0.2]), "temperature: expected a number > 0 or a 0-d floating-point"),
        (torch.tensor(1), "temperature: expected a number > 0 or a 0-d floating-point"),
        (-0.1, "temperature: expected a number in \\(0.0, inf\\]"),
        (float("nan"), "temperature: expected a finite number"),
    ],
)
def test_bad_temperature(tau: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        info_nce(rand(2, 4), rand(2, 4), rand(3, 4), temperature=tau)  # type: ignore[arg-type]
