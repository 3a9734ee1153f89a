"""The strategy registry: the six built-in types, and a new type added from this file alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from syn2co.negatives import (
    STRATEGIES,
    SYNCO_V2,
    Combination,
    InnerProducts,
    NegativeSpec,
    Strategy,
    hardest,
    register_strategy,
    strategies,
    synthesize,
    synthetic_logits,
    unregister_strategy,
)
from tests.syn2co.test_synthetic_logits import assert_paths_agree, gen, randn

# A toy type: norm(n + t*q), t ~ U(0, 1): a random step from a hard negative towards the query.


def draw_toward(
    spec: NegativeSpec, shape: tuple[int, int, int], g: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return torch.rand((shape[0], shape[1], 1), generator=g).to(device)


def write_toward(
    out: torch.Tensor,
    q: torch.Tensor,
    picks: tuple[torch.Tensor, ...],
    t: torch.Tensor | None,
    spec: NegativeSpec,
) -> None:
    assert t is not None
    out.copy_(q.expand_as(out)).mul_(t).add_(picks[0])


def combine_toward(
    products: InnerProducts, t: torch.Tensor | None, spec: NegativeSpec
) -> Combination:
    assert t is not None
    return Combination(query=t[..., 0].double(), picks=(1.0,))


# A toy type with a vector draw: norm(n + e), e ~ N(0, I / D).


def draw_jitter(
    spec: NegativeSpec, shape: tuple[int, int, int], g: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(device) / shape[2] ** 0.5


def write_jitter(
    out: torch.Tensor,
    q: torch.Tensor,
    picks: tuple[torch.Tensor, ...],
    e: torch.Tensor | None,
    spec: NegativeSpec,
) -> None:
    assert e is not None
    out.copy_(picks[0]).add_(e)


def combine_jitter(
    products: InnerProducts, e: torch.Tensor | None, spec: NegativeSpec
) -> Combination:
    return Combination(picks=(1.0,), drawn=1.0)


TOWARD = Strategy("toward", "norm(n + t*q), t ~ U(0, 1)", draw_toward, write_toward, combine_toward)
JITTER = Strategy(
    "jitter",
    "norm(n + e), e ~ N(0, I/D)",
    draw_jitter,
    write_jitter,
    combine_jitter,
    draws_vectors=True,
)


@pytest.fixture
def toward() -> Iterator[Strategy]:
    register_strategy(TOWARD)
    yield TOWARD
    unregister_strategy("toward")


def test_the_six_built_in_types_in_order() -> None:
    names = ["interpolated", "extrapolated", "mixed", "noisy", "perturbed", "adversarial"]
    assert [s.name for s in strategies()] == list(STRATEGIES) == names
    for number, s in enumerate(strategies(), start=1):
        assert s.description.startswith(f"type {number}, ") and "\n" not in s.description
    assert [s.picks for s in strategies()] == [1, 1, 2, 1, 1, 1]
    assert [s.draws_vectors for s in strategies()] == [False, False, False, True, False, False]


def test_a_registered_type_is_counted_placed_last_and_made(toward: Strategy) -> None:
    spec = SYNCO_V2.replace(n_hard=16, counts={"toward": 5})
    assert list(spec.counts)[-1] == "toward" and spec.counts["toward"] == 5
    assert spec.total == SYNCO_V2.total + 5
    assert spec.slices()["toward"] == slice(576, 581)
    assert [s.name for s in strategies()] == [*STRATEGIES, "toward"]

    q, bank = randn(3, 16, seed=0), randn(60, 16, seed=1)
    g = gen(2)
    out = synthesize(q, bank, spec, generator=g)
    # The six types draw first, exactly as without the new type ...
    g_ref = gen(2)
    six = synthesize(q, bank, SYNCO_V2.replace(n_hard=16), generator=g_ref)
    assert torch.equal(out[:, :576], six)
    # ... then the new one: its pool positions, then its coefficients, from the same generator.
    pos = torch.randint(16, (3, 5), generator=g_ref)
    t = torch.rand((3, 5, 1), generator=g_ref)
    n = hardest(q, bank, 16).gather(1, pos[:, :, None].expand(-1, -1, 16))
    ref = F.normalize(t * F.normalize(q, dim=-1)[:, None] + n, dim=-1)
    torch.testing.assert_close(out[:, 576:], ref, atol=1e-6, rtol=0)
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=g_ref))
    # synthetic_logits makes the same samples through the combination
    assert_paths_agree(q, bank, spec, seed=3)
    assert_paths_agree(q, bank, NegativeSpec(n_hard=7, counts={"toward": 40}), seed=4)


def test_registering_a_type_changes_nothing_for_specs_without_it() -> None:
    q, bank = randn(4, 16, seed=5), randn(60, 16, seed=6)
    spec = SYNCO_V2.replace(n_hard=16)
    before = synthesize(q, bank, spec, generator=gen(7))
    register_strategy(TOWARD)
    try:
        assert spec.counts["toward"] == 0 and spec.total == 576
        assert torch.equal(synthesize(q, bank, spec, generator=gen(7)), before)
    finally:
        unregister_strategy("toward")
    assert "toward" not in spec.counts


def test_a_type_with_vector_draws_gets_exact_gradients() -> None:
    register_strategy(JITTER)
    try:
        q, bank = randn(4, 16, seed=8), randn(60, 16, seed=9)
        assert_paths_agree(q, bank, SYNCO_V2.replace(n_hard=12, counts={"jitter": 7}), seed=10)
    finally:
        unregister_strategy("jitter")
    # declaring it matters: without the flag the generator's state for backward is not kept
    undeclared = Strategy("jitter2", "jitter", draw_jitter, write_jitter, combine_jitter)
    register_strategy(undeclared)
    try:
        spec = NegativeSpec(n_hard=4, counts={"jitter2": 2})
        with pytest.raises(ValueError, match="draws_vectors=True"):
            synthetic_logits(randn(2, 8, seed=0), randn(9, 8, seed=1), spec)
    finally:
        unregister_strategy("jitter2")


def test_spec_counts_by_keyword_or_mapping(toward: Strategy) -> None:
    a = NegativeSpec(n_hard=8, mixed=3, counts={"toward": 2})
    b = NegativeSpec(n_hard=8, counts={"toward": 2, "mixed": 3, "noisy": 0})
    assert a == b and hash(a) == hash(b)
    assert a.replace(toward=4).counts["toward"] == 4
    assert a.replace(counts={"toward": 0}) == NegativeSpec(n_hard=8, mixed=3)
    assert eval(repr(a)) == a  # the repr is the constructor call
    assert "counts={'toward': 2}" in repr(a)
    with pytest.raises(ValueError, match="counts: 'mixed' is also given as mixed=3"):
        NegativeSpec(mixed=3, counts={"mixed": 4})
    with pytest.raises(ValueError, match="given both by name and in counts"):
        a.replace(toward=1, counts={"toward": 2})
    with pytest.raises(ValueError, match="counts: unknown strategy 'towards'; registered: "):
        NegativeSpec(counts={"towards": 1})
    with pytest.raises(ValueError, match="toward: expected an int >= 0"):
        NegativeSpec(counts={"toward": -1})
    with pytest.raises(TypeError, match="counts: expected a mapping"):
        NegativeSpec(counts=[("toward", 1)])  # type: ignore[arg-type]


def test_a_spec_counting_an_unregistered_type_says_so() -> None:
    register_strategy(TOWARD)
    spec = NegativeSpec(n_hard=4, counts={"toward": 2})
    unregister_strategy("toward")
    with pytest.raises(ValueError, match="'toward', no longer registered"):
        synthesize(randn(2, 8, seed=0), randn(9, 8, seed=1), spec)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": "mixed"}, "'mixed' is already a registered strategy"),
        ({"name": "alpha"}, "'alpha' is already a NegativeSpec argument"),
        ({"name": "two words"}, "expected an identifier"),
        ({"description": "two\nlines"}, "one non-empty line"),
        ({"description": " "}, "one non-empty line"),
        ({"picks": 0}, r"strategy.picks: expected an int >= 1"),
    ],
)
def test_register_rejects_bad_records(change: dict[str, object], words: str) -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match=words):
        register_strategy(replace(TOWARD, **change))  # type: ignore[arg-type]
    assert [s.name for s in strategies()] == list(STRATEGIES)


def test_built_in_types_stay_registered() -> None:
    with pytest.raises(ValueError, match="built-in strategy"):
        unregister_strategy("noisy")
    with pytest.raises(ValueError, match="expected a registered strategy"):
        unregister_strategy("toward")
