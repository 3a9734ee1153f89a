"""synthetic_logits: the logits and gradients of the materialised path, without its tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch.utils._python_dispatch import TorchDispatchMode

from syn2co.negatives import (
    SYNCO_V1,
    SYNCO_V2,
    SYNCO_V2_CONFIG,
    NegativeSpec,
    _pool,
    mochi,
    positive_mask,
    similarity,
    synthesize,
    synthetic_logits,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed)).to(dtype)


def materialised(
    query: torch.Tensor, bank: torch.Tensor, spec: NegativeSpec, **kwargs: Any
) -> torch.Tensor:
    """The reference: norm(q) . s for the detached vectors of synthesize, as info_nce does."""
    s = synthesize(query, bank, spec, **kwargs)
    q = F.normalize(query.float(), dim=-1)
    return torch.einsum("bd,bmd->bm", q, F.normalize(s.detach().float(), dim=-1))


def both_paths(
    query: torch.Tensor,
    bank: torch.Tensor,
    spec: NegativeSpec,
    seed: int,
    **kwargs: Any,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]:
    """(logits, gradient w.r.t. the query, next draw of the generator) of each path."""
    out = []
    for path in (synthetic_logits, materialised):
        q = query.detach().clone().requires_grad_(True)
        g = gen(seed)
        logits = path(q, bank, spec, generator=g, **kwargs)
        upstream = torch.randn(logits.shape, generator=gen(seed + 1))
        (logits * upstream).sum().backward()
        assert q.grad is not None
        out.append((logits.detach(), q.grad, torch.rand(4, generator=g)))
    return tuple(out)


def assert_paths_agree(
    query: torch.Tensor, bank: torch.Tensor, spec: NegativeSpec, seed: int, **kwargs: Any
) -> None:
    (logits, grad, after), (ref_logits, ref_grad, ref_after) = both_paths(
        query, bank, spec, seed, **kwargs
    )
    assert logits.dtype == torch.float32 and logits.shape == (query.shape[0], spec.total)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-4)
    assert torch.equal(after, ref_after)  # the generator is consumed identically


PRESETS = {
    "SYNCO_V1": SYNCO_V1.replace(n_hard=40),
    "SYNCO_V2": SYNCO_V2.replace(n_hard=40),
    "SYNCO_V2_CONFIG": SYNCO_V2_CONFIG.replace(n_hard=40, adversarial_steps=3),
    "mochi": mochi(40, 64, 32),
}


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("per_query", [False, True], ids=["shared-bank", "per-query-bank"])
def test_presets_match_the_materialised_path(name: str, per_query: bool) -> None:
    # Every type, the noise included: same picks, coefficients and noise, same logits and
    # gradients, and the generator left in the same state.
    query = 3 * randn(6, 32, seed=0)  # unnormalised on purpose
    bank = randn(6, 80, 32, seed=1) if per_query else 0.5 * randn(300, 32, seed=1)
    assert_paths_agree(query, bank, PRESETS[name], seed=7)


def test_each_type_alone_matches() -> None:
    query, bank = randn(4, 24, seed=2), randn(100, 24, seed=3)
    for name in SYNCO_V2.counts:
        spec = NegativeSpec(n_hard=10, counts={name: 9}, sigma=0.3, delta=0.4, eta=0.2)
        assert_paths_agree(query, bank, spec, seed=11)
        assert_paths_agree(query, bank, spec.replace(adversarial_steps=4), seed=12)


ranges = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(lambda t: tuple(sorted(t)))


@given(
    counts=st.lists(st.integers(0, 6), min_size=6, max_size=6),
    alpha=ranges,
    gamma=ranges,
    beta=st.tuples(st.floats(1.0, 2.0), st.floats(0.0, 1.0)).map(lambda t: (t[0], t[0] + t[1])),
    sigma=st.floats(0.0, 0.5),
    delta=st.floats(0.0, 1.0),
    eta=st.floats(0.0, 0.5),
    steps=st.integers(1, 4),
    b=st.integers(1, 5),
    d=st.integers(1, 20),
    k=st.integers(1, 30),
    per_query=st.booleans(),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_random_specs_match_the_materialised_path(
    counts: list[int],
    alpha: tuple[float, float],
    gamma: tuple[float, float],
    beta: tuple[float, float],
    sigma: float,
    delta: float,
    eta: float,
    steps: int,
    b: int,
    d: int,
    k: int,
    per_query: bool,
    masked: bool,
    seed: int,
) -> None:
    query = randn(b, d, seed=seed) * (0.5 + torch.rand(b, 1, generator=gen(seed + 2)))
    bank = randn(*((b, k, d) if per_query else (k, d)), seed=seed + 3) * 2
    exclude = None
    if masked and k > 1:
        exclude = torch.rand(b, k, generator=gen(seed + 4)) < 0.3
        exclude[:, 0] = False  # at least one entry left for every query
    available = k - (0 if exclude is None else int(exclude.sum(1).max()))
    spec = NegativeSpec(
        n_hard=max(1, available // 2),
        counts=dict(zip(SYNCO_V2.counts, counts, strict=True)),
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        sigma=sigma,
        delta=delta,
        eta=eta,
        adversarial_steps=steps,
    )
    assert_paths_agree(query, bank, spec, seed=seed + 5, exclude=exclude)


def test_default_generator_noise_gradient_is_exact_and_backward_leaves_it_alone() -> None:
    # generator=None draws from torch's default generator; the backward pass redraws the noise
    # from a copy of its state, so it neither differs nor advances the default generator.
    query, bank = randn(5, 16, seed=4), randn(64, 16, seed=5)
    spec = NegativeSpec(n_hard=8, noisy=12, interpolated=3, perturbed=4, sigma=0.7)
    results = []
    for path in (synthetic_logits, materialised):
        q = query.clone().requires_grad_(True)
        torch.manual_seed(123)
        logits = path(q, bank, spec)
        logits.pow(2).sum().backward()
        results.append((logits.detach(), q.grad, torch.rand(3)))
    (a, ga, na), (b, gb, nb) = results
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4)
    assert torch.equal(na, nb)


def test_precomputed_similarity_may_be_logits_and_exclude_is_honoured() -> None:
    keys = F.normalize(randn(8, 16, seed=6), dim=-1)
    query = keys + 0.05 * randn(8, 16, seed=7)  # each query's hardest key is its positive
    mask = positive_mask(8)
    spec = NegativeSpec(n_hard=3, interpolated=5, mixed=4, adversarial=3)
    own = synthetic_logits(query, keys, spec, exclude=mask, generator=gen(1))
    given_logits = similarity(query, keys).detach() / 0.07  # only the order matters
    pre = synthetic_logits(
        query, keys, spec, exclude=mask, generator=gen(1), similarity=given_logits
    )
    assert torch.equal(own, pre)
    assert_paths_agree(query, keys, spec, seed=2, exclude=mask)
    # With the positive excluded no sample reaches the positive's cosine of about 1.
    assert float(own.max()) < float((F.normalize(query, dim=-1) * keys).sum(1).min())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_logits(dtype: torch.dtype) -> None:
    query = randn(4, 16, seed=8, dtype=dtype).requires_grad_(True)
    bank = randn(50, 16, seed=9, dtype=dtype)
    spec = SYNCO_V2.replace(n_hard=10)
    logits = synthetic_logits(query, bank, spec, generator=gen(3))
    assert logits.dtype == torch.float32
    # the same computation as on the float32 copies of the inputs ...
    same = synthetic_logits(query.detach().float(), bank.float(), spec, generator=gen(3))
    torch.testing.assert_close(logits, same, atol=1e-6, rtol=0)
    # ... and as the materialised path, up to the rounding of its half-precision vectors
    ref = materialised(query, bank, spec, generator=gen(3))
    torch.testing.assert_close(logits, ref, atol=2e-2, rtol=0)
    logits.sum().backward()
    assert query.grad is not None and query.grad.dtype == dtype


def test_bf16_autocast_changes_nothing() -> None:
    query, bank = randn(4, 16, seed=10).requires_grad_(True), randn(50, 16, seed=11)
    spec = SYNCO_V2.replace(n_hard=10)
    plain = synthetic_logits(query, bank, spec, generator=gen(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = synthetic_logits(query, bank, spec, generator=gen(4))
    assert auto.dtype == torch.float32 and torch.equal(plain, auto)
    (g_plain,) = torch.autograd.grad(plain.sum(), query)
    (g_auto,) = torch.autograd.grad(auto.sum(), query)
    assert torch.equal(g_plain, g_auto)


def test_empty_spec_is_a_no_op() -> None:
    query = randn(3, 8, seed=12).requires_grad_(True)
    logits = synthetic_logits(query, randn(20, 8, seed=13), NegativeSpec(n_hard=5))
    assert logits.shape == (3, 0) and logits.dtype == torch.float32
    torch.cat([logits, query @ query.T], dim=1).sum().backward()  # joins a loss's logits


class Ops(TorchDispatchMode):
    """Counts the operations run, forward and backward, and the largest tensor they return."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = self.numel = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def largest_tensor(path: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> int:
    q = args[0].clone().requires_grad_(True)
    with Ops() as ops:
        path(q, *args[1:], **kwargs).sum().backward()
    return ops.numel


def test_no_tensor_of_size_m_times_d(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pool rows are gathered in blocks of about 1M entries; a smaller block makes the bound
    # below hold at test sizes.
    monkeypatch.setattr(_pool, "_CHUNK_ELEMENTS", 2048)
    b, k, d, n = 4, 128, 64, 16
    query, bank = randn(b, d, seed=14), randn(k, d, seed=15)
    spec = NegativeSpec(
        n_hard=n, interpolated=600, extrapolated=600, mixed=600, perturbed=600, adversarial=600
    )
    m = spec.total  # 3000: B*M*D = 768,000
    ours = largest_tensor(synthetic_logits, query, bank, spec, generator=gen(0))
    theirs = largest_tensor(materialised, query, bank, spec, generator=gen(0))
    assert theirs >= b * m * d  # the detector sees the materialised path's tensor
    # (B, M)-sized bookkeeping (picks of the mixes counted twice), never (B, M, D)
    assert ours <= b * (m + spec.mixed)
    # the noise is the one (B, noisy, D) tensor: the draw the generator has to make
    noisy = spec.replace(noisy=100)
    assert largest_tensor(synthetic_logits, query, bank, noisy, generator=gen(0)) == b * 100 * d


def test_does_not_loop_over_the_batch() -> None:
    calls = []
    for b in (2, 64):
        with Ops() as ops:
            q = randn(b, 8, seed=16).requires_grad_(True)
            spec = SYNCO_V2.replace(n_hard=16)
            synthetic_logits(q, randn(100, 8, seed=17), spec, generator=gen(0)).sum().backward()
        calls.append(ops.calls)
    assert calls[0] == calls[1]


def test_modifying_the_bank_before_backward_is_an_error() -> None:
    # The bank is not copied: an in-place write (an enqueue into the queue it views) before
    # backward would change the gradient, so autograd refuses instead.
    query, bank = randn(4, 8, seed=18).requires_grad_(True), randn(30, 8, seed=19)
    logits = synthetic_logits(query, bank, SYNCO_V2.replace(n_hard=5), generator=gen(0))
    bank[:4] = 0.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        logits.sum().backward()


BAD = [
    ("spec", lambda f: f(randn(2, 8, seed=0), randn(5, 8, seed=1), {"n_hard": 2})),
    ("generator", lambda f: f(randn(2, 8, seed=0), randn(5, 8, seed=1), SYNCO_V2, generator=1)),
    ("query rank", lambda f: f(randn(8, seed=0), randn(5, 8, seed=1), SYNCO_V2)),
    ("bank D", lambda f: f(randn(2, 8, seed=0), randn(5, 7, seed=1), SYNCO_V2)),
    ("n_hard", lambda f: f(randn(2, 8, seed=0), randn(5, 8, seed=1), SYNCO_V2)),
    (
        "exclude dtype",
        lambda f: f(
            randn(2, 8, seed=0),
            randn(5, 8, seed=1),
            NegativeSpec(n_hard=2),
            exclude=torch.ones(2, 5),
        ),
    ),
    (
        "similarity shape",
        lambda f: f(
            randn(2, 8, seed=0),
            randn(5, 8, seed=1),
            NegativeSpec(n_hard=2),
            similarity=torch.zeros(2, 4),
        ),
    ),
    (
        "nan bank",
        lambda f: f(randn(2, 8, seed=0), torch.full((5, 8), float("nan")), NegativeSpec(n_hard=2)),
    ),
]


@pytest.mark.parametrize("call", [c for _, c in BAD], ids=[w for w, _ in BAD])
def test_bad_input_gives_the_same_error_as_synthesize(
    call: Callable[[Callable[..., torch.Tensor]], object],
) -> None:
    with pytest.raises((TypeError, ValueError)) as ours:
        call(synthetic_logits)
    with pytest.raises((TypeError, ValueError)) as theirs:
        call(synthesize)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
    assert "\n" not in str(ours.value) and ":" in str(ours.value)
