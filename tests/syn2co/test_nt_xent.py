"""SimCLR's NT-Xent: plain float64 references, exact values, numerics, the in-batch bank mask."""

from __future__ import annotations

import math
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from syn2co import distributed
from syn2co.distributed import Gathered, gather_rows
from syn2co.losses import NTXentLoss, nt_xent, nt_xent_mask, pairwise_cosine
from syn2co.negatives import NegativeSpec, hardest_indices, synthesize


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def ref_nt_xent(z1, z2, tau, extra=None, others=None):  # type: ignore[no-untyped-def]
    """One anchor at a time in float64: -log(e^pos / sum over all but itself), mean over 2B.

    ``others`` are more embeddings (other ranks') that every anchor sees as negatives.
    """
    anchors = torch.cat([z1, z2]).double()
    rows = anchors if others is None else torch.cat([anchors, others.double()])
    b = z1.shape[0]
    losses = []
    for a in range(2 * b):
        x = anchors[a] / anchors[a].norm()
        logits, positive = [], None
        for j in range(rows.shape[0]):
            if j == a:
                continue
            if j == (a + b) % (2 * b):
                positive = len(logits)
            logits.append(float(x @ (rows[j] / rows[j].norm())) / tau)
        for e in [] if extra is None else extra[a]:
            e = e.double()
            logits.append(float(x @ (e / e.norm())) / tau)
        m = max(logits)
        assert positive is not None
        log_denominator = m + math.log(sum(math.exp(v - m) for v in logits))
        losses.append(log_denominator - logits[positive])
    return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- exact values


@pytest.mark.parametrize(("b", "m"), [(1, 1), (2, 0), (4, 0), (5, 3)])
def test_identical_embeddings_give_log_2b_minus_1_plus_m(b: int, m: int) -> None:
    x = rand(1, 12).expand(b, -1)
    extra = x[:1, None].expand(2 * b, m, -1) if m else None
    loss = nt_xent(x, x, extra_negatives=extra, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(2 * b - 1 + m), rel=1e-6)
    sims = torch.ones(2 * b, m) if m else None
    loss = nt_xent(x, x, extra_similarity=sims, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(2 * b - 1 + m), rel=1e-6)


def test_a_single_pair_has_no_negatives() -> None:
    with pytest.raises(ValueError, match="z1: expected at least one negative per query"):
        nt_xent(rand(1, 4), rand(1, 4))
    with pytest.raises(ValueError, match="z1: expected at least one negative per query"):
        nt_xent(rand(1, 4), rand(1, 4), extra_similarity=torch.zeros(2, 0))


# ------------------------------------------------------------------- against plain references


@given(
    seed=st.integers(0, 2**16),
    b=st.integers(2, 6),
    d=st.integers(1, 9),
    m=st.integers(0, 3),
    tau=st.floats(0.05, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_matches_float64_reference(seed: int, b: int, d: int, m: int, tau: float) -> None:
    z1, z2 = rand(b, d, seed=seed), rand(b, d, seed=seed + 1)
    extra = rand(2 * b, m, d, seed=seed + 2) if m else None
    got = nt_xent(z1, z2, extra_negatives=extra, temperature=tau).item()
    assert got == pytest.approx(ref_nt_xent(z1, z2, tau, extra), rel=1e-5, abs=1e-6)


def test_gradient_matches_float64_autograd_reference() -> None:
    # Every embedding carries gradient: as anchor, as positive and as negative.
    z1 = rand(4, 6, dtype=torch.float64).requires_grad_()
    z2 = rand(4, 6, seed=1, dtype=torch.float64).requires_grad_()
    extra = rand(8, 2, 6, seed=2)
    got = nt_xent(z1.float(), z2.float(), extra_negatives=extra, temperature=0.3)
    g_got = torch.autograd.grad(got, (z1, z2))
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / 0.3
    logits = logits - torch.diag(torch.full((8,), 1e9, dtype=torch.float64))
    syn = torch.einsum("ad,amd->am", z, F.normalize(extra.double(), dim=-1)) / 0.3
    logits = torch.cat([logits, syn], dim=1)
    labels = (torch.arange(8) + 4) % 8
    want = (torch.logsumexp(logits, 1) - logits[torch.arange(8), labels]).mean()
    g_want = torch.autograd.grad(want, (z1, z2))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for a, b in zip(g_got, g_want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gathered_embeddings_of_a_later_rank_match_reference() -> None:
    # Rank 1 of 2 in one process: rank 0's four embeddings come first in the gathered rows.
    z1, z2, other = rand(2, 5), rand(2, 5, seed=1), rand(4, 5, seed=2)
    rows = torch.cat([other, z1, z2])
    got = nt_xent(z1, z2, embeddings=Gathered(rows, offset=4, count=4), temperature=0.4)
    assert got.item() == pytest.approx(ref_nt_xent(z1, z2, 0.4, others=other), rel=1e-5)


def test_precomputed_and_gathered_once_give_the_same_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    z1, z2 = rand(4, 6).requires_grad_(), rand(4, 6, seed=1).requires_grad_()
    want = nt_xent(z1, z2, temperature=0.3)
    g_want = torch.autograd.grad(want, (z1, z2))
    anchors = torch.cat([z1, z2])
    gathered = gather_rows(anchors, grad=True)

    def no_collective(x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the loss gathered again")

    monkeypatch.setattr(distributed, "gather", no_collective)
    monkeypatch.setattr(distributed, "gather_with_grad", no_collective)
    for kwargs in (
        {"embeddings": gathered},
        {"embeddings": gathered, "negative_similarity": pairwise_cosine(anchors, gathered.rows)},
        {"negative_similarity": pairwise_cosine(anchors, anchors)},
    ):
        got = nt_xent(z1, z2, temperature=0.3, **kwargs)  # type: ignore[arg-type]
        g_got = torch.autograd.grad(got, (z1, z2))
        assert torch.allclose(got, want, atol=1e-6)
        for a, b in zip(g_got, g_want, strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_similarities_or_embeddings_without_gradient_are_refused() -> None:
    z1, z2 = rand(4, 6).requires_grad_(), rand(4, 6, seed=1)
    anchors = torch.cat([z1, z2])
    with pytest.raises(ValueError, match="embeddings: expected rows gathered with gradient"):
        nt_xent(z1, z2, embeddings=gather_rows(anchors))
    with pytest.raises(ValueError, match="negative_similarity: expected similarities with grad"):
        nt_xent(z1, z2, negative_similarity=pairwise_cosine(anchors, anchors).detach())
    with pytest.raises(ValueError, match="embeddings: expected the gathered rows of a local"):
        nt_xent(z1, z2, embeddings=gather_rows(z1, grad=True))


# ---------------------------------------------------------------------------------- numerics


def test_self_similarity_is_masked_with_the_float32_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[torch.Tensor] = []
    cross_entropy = F.cross_entropy

    def spy(logits: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(logits.detach())
        return cross_entropy(logits, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "cross_entropy", spy)
    nt_xent(rand(3, 4), rand(3, 4, seed=1), temperature=1e-3)
    (logits,) = seen
    assert not torch.isinf(logits).any()
    assert torch.equal(logits.diagonal(), torch.full((6,), torch.finfo(torch.float32).min))
    off_diagonal = logits[~torch.eye(6, dtype=torch.bool)]
    assert (off_diagonal > -1.01e3).all()  # cosines / 1e-3 >= -1000: only the diagonal masked


def test_low_temperature_stays_finite_with_finite_gradient() -> None:
    z1, z2 = rand(4, 8).requires_grad_(), rand(4, 8, seed=1).requires_grad_()
    loss = nt_xent(z1, z2, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss)
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda z1, z2, extra: nt_xent(z1, z2),
        lambda z1, z2, extra: nt_xent(z1, z2, extra_negatives=extra),
        lambda z1, z2, extra: NTXentLoss(0.2)(z1, z2, extra),
    ],
)
def test_bf16_autocast_gives_a_float32_loss_close_to_float32(
    loss_fn: Callable[..., torch.Tensor],
) -> None:
    lin = torch.nn.Linear(32, 32)
    x1, x2, extra = rand(16, 32), rand(16, 32, seed=1), rand(32, 8, 32, seed=3)
    ref = loss_fn(lin(x1), lin(x2), extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = lin(x1), lin(x2)
        assert z1.dtype == torch.bfloat16
        got = loss_fn(z1, z2, extra.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)


def test_reductions_and_anchor_order() -> None:
    z1, z2 = rand(3, 5), rand(3, 5, seed=1)
    per = nt_xent(z1, z2, reduction="none")
    assert per.shape == (6,)
    assert torch.allclose(per.mean(), nt_xent(z1, z2))
    assert torch.allclose(per.sum(), nt_xent(z1, z2, reduction="sum"))
    # swapping the views swaps the two halves of the anchors
    assert torch.allclose(nt_xent(z2, z1, reduction="none"), per.roll(3))


def test_module_matches_function() -> None:
    z1, z2, extra = rand(3, 5), rand(3, 5, seed=1), rand(6, 2, 5, seed=2)
    assert torch.equal(
        NTXentLoss(0.3)(z1, z2, extra), nt_xent(z1, z2, extra_negatives=extra, temperature=0.3)
    )
    learnable = NTXentLoss(torch.nn.Parameter(torch.tensor(0.3)))
    learnable(z1, z2).backward()
    assert (
        isinstance(learnable.temperature, torch.Tensor) and learnable.temperature.grad is not None
    )
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


# ------------------------------------------------------------------------ the in-batch bank


@pytest.mark.parametrize(("b", "world", "rank"), [(1, 1, 0), (3, 1, 0), (2, 3, 1), (3, 2, 1)])
def test_mask_excludes_each_anchor_and_its_positive(b: int, world: int, rank: int) -> None:
    mask = nt_xent_mask(b, world_size=world, rank=rank)
    want = torch.zeros(2 * b, 2 * b * world, dtype=torch.bool)
    for a in range(2 * b):
        want[a, rank * 2 * b + a] = True  # itself
        want[a, rank * 2 * b + (a + b if a < b else a - b)] = True  # the other view
    assert torch.equal(mask, want)


def test_synthetic_negatives_from_the_masked_bank_never_use_the_positive() -> None:
    z1, z2 = rand(4, 6), rand(4, 6, seed=1)
    anchors = torch.cat([z1, z2])
    bank = gather_rows(anchors, grad=True).rows.detach()
    mask = nt_xent_mask(4)
    picked = hardest_indices(anchors, bank, 6, exclude=mask)
    assert not mask.gather(1, picked).any()
    spec = NegativeSpec(n_hard=6, interpolated=3, mixed=2)
    extra = synthesize(
        anchors, bank, spec, exclude=mask, generator=torch.Generator().manual_seed(0)
    )
    loss = nt_xent(z1, z2, extra_negatives=extra)
    assert loss.item() == pytest.approx(ref_nt_xent(z1, z2, 0.5, extra), rel=1e-5)


BAD = [
    (
        "z2 shape",
        lambda: nt_xent(rand(2, 4), rand(3, 4)),
        ValueError,
        r"z2: expected shape \(B, D\) with B=2",
    ),
    (
        "extra rows",
        lambda: nt_xent(rand(2, 4), rand(2, 4), extra_negatives=rand(2, 3, 4)),
        ValueError,
        r"extra_negatives: expected shape \(2B, M, D\) with 2B=4",
    ),
    (
        "similarity shape",
        lambda: nt_xent(rand(2, 4), rand(2, 4), negative_similarity=rand(4, 3)),
        ValueError,
        r"negative_similarity: expected shape \(2B, N\) with N=4",
    ),
    (
        "mask rank",
        lambda: nt_xent_mask(2, world_size=2, rank=2),
        ValueError,
        "rank: expected a rank below",
    ),
    (
        "gathered type",
        lambda: nt_xent(rand(2, 4), rand(2, 4), embeddings=rand(4, 4)),  # type: ignore[arg-type]
        TypeError,
        "embeddings: expected a syn2co.distributed.Gathered",
    ),
    (
        "gathered offset",
        lambda: Gathered(rand(4, 4), offset=2, count=4),
        ValueError,
        "offset: expected offset",
    ),
]


@pytest.mark.parametrize(("what", "call", "exc", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(what: str, call: Callable[[], object], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        call()
