"""Banks with rows of zero or non-finite norm: such rows are never negatives.

The rule (``syn2co.negatives``, "Degenerate banks"): unusable rows rank after every usable one
in the hard pool; the picks of a query with fewer than N usable rows fold onto those it has;
a query without any draws from ``-q``. Both paths, eager and compiled (``test_compile.py``).
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import Tensor

from syn2co import NonFiniteError, value_checks
from syn2co.negatives import (
    SYNCO_V2,
    NegativeSpec,
    add_noise,
    adversarial,
    extrapolate,
    hardest,
    hardest_indices,
    interpolate,
    mixup,
    perturb,
    synthesize,
    synthetic_logits,
)

D = 6


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(n_hard: int, count: int = 3, **changes: object) -> NegativeSpec:
    spec = NegativeSpec(
        n_hard=n_hard,
        interpolated=count,
        extrapolated=count,
        mixed=count,
        noisy=count,
        perturbed=count,
        adversarial=count,
    )
    return spec.replace(**changes)


def cosines(q: Tensor, s: Tensor) -> Tensor:
    return torch.einsum("bd,bmd->bm", F.normalize(q, dim=-1), F.normalize(s, dim=-1))


def both(
    q: Tensor, bank: Tensor, spec: NegativeSpec, seed: int, **kwargs: object
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The vectors, the logits, and each path's query gradient for the same upstream."""
    q1, q2 = (q.detach().clone().requires_grad_(True) for _ in range(2))
    s = synthesize(q1, bank, spec, generator=gen(seed), **kwargs)  # type: ignore[arg-type]
    logits = synthetic_logits(q2, bank, spec, generator=gen(seed), **kwargs)  # type: ignore[arg-type]
    upstream = torch.randn(logits.shape, generator=gen(seed + 1))
    (cosines(q1, s.detach()) * upstream).sum().backward()
    (logits * upstream).sum().backward()
    assert q1.grad is not None and q2.grad is not None
    return s, logits, q1.grad, q2.grad


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 4),
    rows=st.integers(2, 12),
    n_hard=st.integers(1, 8),
    zero_fraction=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    per_query=st.booleans(),
)
def test_zero_rows_are_never_negatives(
    seed: int, batch: int, rows: int, n_hard: int, zero_fraction: float, per_query: bool
) -> None:
    n_hard = min(n_hard, rows)
    g = gen(seed)
    q = torch.randn(batch, D, generator=g)
    shape = (batch, rows, D) if per_query else (rows, D)
    bank = torch.randn(shape, generator=g)
    zero = torch.rand(shape[:-1], generator=g) < zero_fraction
    bank[zero] = 0.0
    spec = small(n_hard, delta=0.0)  # perturbed samples are then their pick itself
    s, logits, grad_vectors, grad_logits = both(q, bank, spec, seed)

    # never a copy of the query, never a vector of norm 0
    norms = torch.linalg.vector_norm(s, dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    assert bool((cosines(q, s) < 1 - 1e-4).all())
    # the logits path is the vectors path, values and gradients
    torch.testing.assert_close(logits, cosines(q, s), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_logits, grad_vectors, atol=1e-5, rtol=1e-4)

    # every pick is a usable row of the query's bank; a query without one picks -q
    usable = ~zero if per_query else (~zero).expand(batch, -1)
    unit_bank = F.normalize(bank, dim=-1).expand(batch, rows, D)
    picked = s[:, spec.slices()["perturbed"]]  # (B, c, D): norm(n + 0 * q) = n
    match = torch.einsum("bcd,bkd->bck", picked, unit_bank) > 1 - 1e-5
    none = ~usable.any(dim=1)
    assert bool((match & ~usable[:, None, :]).sum() == 0)  # no zero row ever
    assert bool(match.any(dim=2)[~none].all())  # a usable row where there is one
    antipode = -F.normalize(q, dim=-1)[:, None, :].expand_as(picked)
    torch.testing.assert_close(picked[none], antipode[none], atol=1e-6, rtol=0)


def test_the_pool_holds_usable_rows_first() -> None:
    q = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[0.0, 0.0], [-1.0, 0.1], [0.0, 0.0], [0.5, 0.5]])
    # the zero rows have cosine 0, above -1: without the rule they would join the pool first
    assert hardest_indices(q, bank, 2).tolist() == [[3, 1]]
    assert hardest_indices(q, bank, 3)[0, :2].tolist() == [3, 1]
    pool = hardest(q, bank, 4)
    assert torch.equal(pool[0, 2:], torch.zeros(2, 2))  # what is not usable comes back as 0


def test_picks_fold_onto_the_usable_rows() -> None:
    """With 2 usable rows in a pool of 8, every sample is made from one of them."""
    g = gen(0)
    q = torch.randn(3, D, generator=g)
    bank = torch.zeros(20, D)
    bank[[4, 11]] = torch.randn(2, D, generator=g)
    spec = NegativeSpec(n_hard=8, perturbed=200, delta=0.0)
    s = synthesize(q, bank, spec, generator=gen(1))
    unit = F.normalize(bank[[4, 11]], dim=-1)
    which = torch.einsum("bmd,kd->bmk", s, unit) > 1 - 1e-5
    assert bool((which.sum(dim=2) == 1).all())
    share = which.float().mean(dim=(0, 1))  # 8 positions fold onto 2 rows: 4 each
    assert bool(((share - 0.5).abs() < 0.1).all())


def test_a_full_pool_draws_what_it_drew_before() -> None:
    """Zero rows outside the top N change nothing: the same samples as without them."""
    g = gen(2)
    q, bank = torch.randn(4, D, generator=g), torch.randn(30, D, generator=g)
    spec = small(4)
    padded = torch.cat([bank, torch.zeros(10, D)])
    torch.testing.assert_close(
        synthesize(q, padded, spec, generator=gen(3)), synthesize(q, bank, spec, generator=gen(3))
    )
    torch.testing.assert_close(
        synthetic_logits(q, padded, spec, generator=gen(3)),
        synthetic_logits(q, bank, spec, generator=gen(3)),
    )


def test_an_all_zero_queue_gives_the_antipode() -> None:
    """A zero-initialised queue at the first step: no usable row, samples from -q."""
    q = torch.randn(3, D, generator=gen(4))
    spec = SYNCO_V2.replace(n_hard=16)
    s, logits, _, grad = both(q, torch.zeros(64, D), spec, 5)
    anti = -F.normalize(q, dim=-1)[:, None, :]
    for name in ("interpolated", "extrapolated", "mixed", "perturbed"):  # -q, rounded
        part = s[:, spec.slices()[name]]
        torch.testing.assert_close(part, anti.expand_as(part), atol=1e-4, rtol=0)
    assert bool((logits < -0.9).all())  # the easiest negatives there are
    assert bool(torch.isfinite(grad).all())


def test_strategy_functions_on_the_pool_agree_with_synthesize() -> None:
    g = gen(6)
    q, bank = torch.randn(4, D, generator=g), torch.randn(12, D, generator=g)
    bank[::2] = 0.0  # 6 usable rows for a pool of 8
    spec = small(8)
    pool = hardest(q, bank, 8)
    draws = gen(7)
    parts = [
        fn(q, pool, 3, generator=draws)
        for fn in (interpolate, extrapolate, mixup, add_noise, perturb, adversarial)
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), synthesize(q, bank, spec, generator=gen(7)))


def test_a_pool_given_in_any_order_folds_onto_its_usable_rows() -> None:
    q = torch.randn(2, D, generator=gen(8))
    pool = torch.randn(2, 5, D, generator=gen(9))
    pool[:, [0, 2, 3]] = 0.0
    s = perturb(q, pool, 50, generator=gen(10), delta=0.0)
    unit = F.normalize(pool[:, [1, 4]], dim=-1)
    assert bool((torch.einsum("bmd,bkd->bmk", s, unit) > 1 - 1e-5).any(dim=2).all())


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_non_finite_rows(fill: float) -> None:
    g = gen(11)
    q, bank = torch.randn(3, D, generator=g), torch.randn(16, D, generator=g)
    bank[2:9] = fill
    spec = small(12)
    with pytest.raises(NonFiniteError, match=r"^bank: "):  # checked by default
        synthetic_logits(q, bank, spec, generator=gen(0))
    with value_checks(False):  # unchecked, and under torch.compile: never negatives
        s, logits, grad_vectors, grad_logits = both(q, bank, spec, 12)
        clean = bank.clone()
        clean[2:9] = 0.0
        s_clean, logits_clean, _, _ = both(q, clean, spec, 12)
    for got, want in ((s, s_clean), (logits, logits_clean), (grad_logits, grad_vectors)):
        assert bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
