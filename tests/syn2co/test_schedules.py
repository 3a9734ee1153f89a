"""Tests of syn2co.schedules: exact values, monotonicity, windows and argument checks."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syn2co.schedules import ActiveWindow, cosine_schedule, in_window, linear_schedule

values = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)


def reference_cosine(
    step: int, total: int, start: float, end: float, warmup: int, warmup_start: float
) -> float:
    """Plain restatement of the documented formula, written independently of the module."""
    if step >= total:
        return end
    if step < warmup:
        return warmup_start + (start - warmup_start) * (step / warmup)
    fraction_done = (step - warmup) / (total - warmup)
    return start + (end - start) * (1.0 - math.cos(math.pi * fraction_done)) / 2.0


# ------------------------------------------------------------------------------ cosine


def test_cosine_exact_endpoints_and_midpoint() -> None:
    assert cosine_schedule(0, 100, 1.0, 0.0) == 1.0
    assert cosine_schedule(50, 100, 1.0, 0.0) == pytest.approx(0.5, abs=1e-15)
    assert cosine_schedule(100, 100, 1.0, 0.0) == 0.0
    assert cosine_schedule(10**9, 100, 1.0, 0.0) == 0.0
    # One step past the start the value has moved, but by less than a linear ramp would.
    assert 1.0 - 1.0 / 100 < cosine_schedule(1, 100, 1.0, 0.0) < 1.0


def test_cosine_single_step_schedule() -> None:
    assert cosine_schedule(0, 1, 3.0, 7.0) == 3.0
    assert cosine_schedule(1, 1, 3.0, 7.0) == 7.0


def test_cosine_warmup_values() -> None:
    # Warmup 10 steps from 0 to 1, then cosine 1 -> 0.1 over the remaining 90 steps.
    assert cosine_schedule(0, 100, 1.0, 0.1, warmup_steps=10) == 0.0
    for s in range(10):
        assert cosine_schedule(s, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(s / 10)
    assert cosine_schedule(10, 100, 1.0, 0.1, warmup_steps=10) == 1.0
    assert cosine_schedule(55, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.55)
    assert cosine_schedule(100, 100, 1.0, 0.1, warmup_steps=10) == 0.1
    # A non-zero warmup start.
    assert cosine_schedule(0, 100, 1.0, 0.0, warmup_steps=4, warmup_start=0.2) == 0.2
    assert cosine_schedule(2, 100, 1.0, 0.0, warmup_steps=4, warmup_start=0.2) == pytest.approx(0.6)


def test_cosine_warmup_over_all_steps() -> None:
    assert cosine_schedule(3, 4, 1.0, 0.0, warmup_steps=4) == 0.75
    assert cosine_schedule(4, 4, 1.0, 0.0, warmup_steps=4) == 0.0


def test_ema_momentum_schedule_rises_to_one() -> None:
    momenta = [cosine_schedule(s, 1000, 0.99, 1.0) for s in range(1001)]
    assert momenta[0] == 0.99
    assert momenta[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(momenta))
    assert all(0.99 <= m <= 1.0 for m in momenta)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 500),
    data=st.data(),
    start=values,
    end=values,
    warmup_start=values,
)
def test_cosine_matches_reference(
    total: int, data: st.DataObject, start: float, end: float, warmup_start: float
) -> None:
    warmup = data.draw(st.integers(0, total))
    step = data.draw(st.integers(0, total + 5))
    got = cosine_schedule(step, total, start, end, warmup_steps=warmup, warmup_start=warmup_start)
    want = reference_cosine(step, total, start, end, warmup, warmup_start)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(total=st.integers(2, 300), data=st.data(), start=values, end=values)
def test_cosine_is_monotone_between_its_ends(
    total: int, data: st.DataObject, start: float, end: float
) -> None:
    warmup = data.draw(st.integers(0, total - 1))
    curve = [
        cosine_schedule(s, total, start, end, warmup_steps=warmup, warmup_start=0.0)
        for s in range(warmup, total + 2)
    ]
    tol = 1e-12 * (1 + abs(start) + abs(end))
    sign = 1.0 if end >= start else -1.0
    assert all(sign * (b - a) >= -tol for a, b in itertools.pairwise(curve))
    assert all(min(start, end) - tol <= v <= max(start, end) + tol for v in curve)
    ramp = [cosine_schedule(s, total, 1.0, end, warmup_steps=warmup) for s in range(warmup + 1)]
    assert all(b >= a for a, b in itertools.pairwise(ramp))


# ------------------------------------------------------------------------------ linear


def test_linear_values() -> None:
    assert linear_schedule(0, 100, 0.0, 1.0) == 0.0
    assert linear_schedule(25, 100, 0.0, 1.0) == 0.25
    assert linear_schedule(100, 100, 0.0, 1.0) == 1.0
    assert linear_schedule(101, 100, 0.0, 1.0) == 1.0
    assert linear_schedule(3, 4, 2.0, -2.0) == -1.0


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 1000), data=st.data(), start=values, end=values)
def test_linear_matches_reference(
    total: int, data: st.DataObject, start: float, end: float
) -> None:
    step = data.draw(st.integers(0, 2 * total))
    want = end if step >= total else start + (end - start) * step / total
    assert linear_schedule(step, total, start, end) == pytest.approx(want, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------------------ windows


def test_in_window_is_half_open() -> None:
    assert not in_window(9, 10, 20)
    assert in_window(10, 10, 20)
    assert in_window(19, 10, 20)
    assert not in_window(20, 10, 20)
    assert in_window(10**12, 0, None)
    assert not in_window(4, 5, None)


def test_active_window_contains_and_active_agree() -> None:
    window = ActiveWindow(3, 7)
    assert [s for s in range(12) if s in window] == [3, 4, 5, 6]
    assert [s for s in range(12) if window.active(s)] == [3, 4, 5, 6]
    assert all(ActiveWindow().active(s) for s in (0, 1, 10**9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.start = 0  # type: ignore[misc]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: cosine_schedule(-1, 10, 1.0, 0.0), ValueError, r"step: expected an int >= 0"),
        (lambda: cosine_schedule(0, 0, 1.0, 0.0), ValueError, r"total_steps: .*>= 1, got 0"),
        (
            lambda: cosine_schedule(0, 10, 1.0, 0.0, warmup_steps=11),
            ValueError,
            r"warmup_steps: expected an int <= total_steps = 10, got 11",
        ),
        (
            lambda: cosine_schedule(0, 10, 1.0, 0.0, warmup_steps=-1),
            ValueError,
            r"warmup_steps: expected an int >= 0, got -1",
        ),
        (
            lambda: cosine_schedule(1.5, 10, 1.0, 0.0),  # type: ignore[arg-type]
            TypeError,
            r"step: expected an int",
        ),
        (lambda: cosine_schedule(True, 10, 1.0, 0.0), TypeError, r"step: expected an int"),
        (lambda: cosine_schedule(0, 10, math.nan, 0.0), ValueError, r"start: .*finite.*nan"),
        (
            lambda: cosine_schedule(0, 10, 1.0, "0"),  # type: ignore[arg-type]
            TypeError,
            r"end: expected a number",
        ),
        (
            lambda: cosine_schedule(0, 10, 1.0, 0.0, warmup_start=math.inf),
            ValueError,
            r"warmup_start: .*inf",
        ),
        (lambda: linear_schedule(0, 0, 0.0, 1.0), ValueError, r"total_steps: .*got 0"),
        (lambda: linear_schedule(-3, 5, 0.0, 1.0), ValueError, r"step: .*got -3"),
        (lambda: in_window(0, 5, 5), ValueError, r"end: expected an int > start = 5 or None"),
        (lambda: in_window(0, -1, None), ValueError, r"start: expected an int >= 0, got -1"),
        (lambda: in_window(-1, 0, None), ValueError, r"step: expected an int >= 0, got -1"),
        (
            lambda: ActiveWindow(4, 2),
            ValueError,
            r"end: expected an int > start = 4 or None, got 2",
        ),
        (lambda: ActiveWindow(-2), ValueError, r"start: expected an int >= 0, got -2"),
        (
            lambda: ActiveWindow(0, 2.5),  # type: ignore[arg-type]
            TypeError,
            r"end: expected an int or None, got float",
        ),
        (lambda: 1.0 in ActiveWindow(), TypeError, r"step: expected an int, got float"),
    ],
)
def test_bad_input_names_the_argument(call: object, error: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()
