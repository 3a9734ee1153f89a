"""Pure, validated schedules counted in optimizer steps.

Every function here maps an integer step to a Python ``float`` (or ``bool``) and nothing else:
no tensors, no state. They serve four uses in syn2co:

* the per-step learning rate and weight decay (linear warmup, then cosine decay), as in MoCo v3
  (Chen et al. 2021) and MoBY (Xie et al. 2021);
* the momentum of the EMA target encoder, raised from e.g. 0.99 to 1 along a half cosine
  (BYOL, Grill et al. 2020; MoCo v3);
* the window of optimizer steps during which synthetic hard negatives are active (SynCo).
  Windows are counted in optimizer steps, never in per-GPU iterations, which avoids the
  epoch-counting flaw of the official SynCo v2 code;
* the synthetic fraction of each batch when real and synthetic images are mixed (Syn2Co):
  :class:`RatioSchedule`, which :class:`syn2co.samplers.MixedSourceBatchSampler` follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from syn2co._checks import check_choice, check_int, check_number

__all__ = ["ActiveWindow", "RatioSchedule", "cosine_schedule", "in_window", "linear_schedule"]


def _check_window(start: object, end: object) -> tuple[int, int | None]:
    start = check_int("start", start, minimum=0)
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            raise TypeError(f"end: expected an int or None, got {type(end).__name__} {end!r}")
        if end <= start:
            raise ValueError(f"end: expected an int > start = {start} or None, got {end}")
    return start, end


def cosine_schedule(
    step: int,
    total_steps: int,
    start: float,
    end: float,
    *,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> float:
    """Linear warmup, then a half cosine from ``start`` to ``end``.

    With ``W = warmup_steps`` and ``T = total_steps``:

    * ``step < W``: ``warmup_start + (start - warmup_start) * step / W`` (linear warmup; the
      value at step 0 is ``warmup_start``);
    * ``W <= step < T``: ``end - (end - start) * (1 + cos(pi * (step - W) / (T - W))) / 2``,
      which is ``start`` at ``step = W`` and moves monotonically towards ``end``;
    * ``step >= T``: ``end``.

    This is the learning-rate schedule of MoCo v3 / MoBY (per step rather than per epoch) and,
    with ``start=0.99, end=1.0``, the EMA momentum schedule of BYOL and MoCo v3.

    Args:
        step: Current optimizer step, counted from 0.
        total_steps: Step at which the schedule reaches ``end`` (>= 1).
        start: Value at the end of the warmup (at step ``warmup_steps``).
        end: Final value, returned from ``total_steps`` on.
        warmup_steps: Number of linear warmup steps, ``0 <= warmup_steps <= total_steps``.
        warmup_start: Value at step 0 when ``warmup_steps > 0``.

    Returns:
        The scheduled value as a float.

    Raises:
        TypeError: If a step count is not an int or a value is not a number.
        ValueError: If a step count is out of range or a value is not finite.

    Example:
        >>> cosine_schedule(0, 100, 1.0, 0.0)
        1.0
        >>> cosine_schedule(50, 100, 1.0, 0.0)
        0.5
        >>> cosine_schedule(5, 110, 1.0, 0.0, warmup_steps=10)
        0.5
        >>> cosine_schedule(100, 100, 0.99, 1.0)
        1.0
    """
    step = check_int("step", step, minimum=0)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    start = check_number("start", start)
    end = check_number("end", end)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps: expected an int <= total_steps = {total_steps}, got {warmup_steps}"
        )
    warmup_start = check_number("warmup_start", warmup_start)
    if step >= total_steps:
        return end
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return end - (end - start) * (1.0 + math.cos(math.pi * progress)) / 2.0


def linear_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` (step 0) to ``end`` (step ``total_steps`` and later).

    Args:
        step: Current step, counted from 0.
        total_steps: Step at which the schedule reaches ``end`` (>= 1).
        start: Value at step 0.
        end: Value from step ``total_steps`` on.

    Returns:
        ``start + (end - start) * min(step, total_steps) / total_steps``.

    Raises:
        TypeError: If a step count is not an int or a value is not a number.
        ValueError: If a step count is out of range or a value is not finite.

    Example:
        >>> linear_schedule(25, 100, 0.0, 1.0)
        0.25
        >>> linear_schedule(500, 100, 0.0, 1.0)
        1.0
    """
    step = check_int("step", step, minimum=0)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    start = check_number("start", start)
    end = check_number("end", end)
    if step >= total_steps:
        return end
    return start + (end - start) * step / total_steps


def in_window(step: int, start: int, end: int | None) -> bool:
    """Whether ``step`` lies in the half-open window ``[start, end)`` of optimizer steps.

    Used to switch synthetic hard negatives on and off (SynCo v1 activates them from epoch 10;
    convert epochs to optimizer steps with ``epoch * steps_per_epoch``).

    Args:
        step: Current optimizer step, counted from 0.
        start: First active step (>= 0).
        end: First inactive step (> ``start``), or None for a window that never closes.

    Returns:
        True when ``start <= step`` and (``end`` is None or ``step < end``).

    Raises:
        TypeError: If an argument is not an int (``end`` may be None).
        ValueError: If ``step`` or ``start`` is negative or ``end <= start``.

    Example:
        >>> in_window(10, 10, 20), in_window(20, 10, 20), in_window(10**9, 10, None)
        (True, False, True)
    """
    step = check_int("step", step, minimum=0)
    start, end = _check_window(start, end)
    return start <= step and (end is None or step < end)


@dataclass(frozen=True)
class ActiveWindow:
    """The half-open window ``[start, end)`` of optimizer steps in which a feature is active.

    The synthetic hard negatives of SynCo are switched on inside such a window; ``end=None``
    keeps them on forever. ``step in window`` and ``window.active(step)`` are equivalent.

    Args:
        start: First active optimizer step (>= 0).
        end: First inactive optimizer step (> ``start``), or None for no end.

    Raises:
        TypeError: If ``start`` is not an int or ``end`` is neither an int nor None.
        ValueError: If ``start < 0`` or ``end <= start``.

    Example:
        >>> window = ActiveWindow(start=100)
        >>> 99 in window, 100 in window, window.active(10**6)
        (False, True, True)
        >>> ActiveWindow(5, 8).active(8)
        False
    """

    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        _check_window(self.start, self.end)

    def active(self, step: int) -> bool:
        """Whether ``step`` lies in ``[start, end)``.

        Args:
            step: Optimizer step, counted from 0.

        Returns:
            True inside the window.

        Example:
            >>> ActiveWindow(0, 10).active(9)
            True
        """
        return in_window(step, self.start, self.end)

    def __contains__(self, step: object) -> bool:
        """``step in window``: see :meth:`active` (a non-int ``step`` raises TypeError)."""
        step = check_int("step", step, minimum=0)
        return in_window(step, self.start, self.end)


_KINDS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class RatioSchedule:
    """The synthetic fraction of a batch as a function of the step (Syn2Co mixing ratio).

    Build one with :meth:`constant`, :meth:`linear` or :meth:`cosine` rather than calling the
    constructor. ``linear`` and ``cosine`` move from ``start`` at step 0 to ``end`` at step
    ``steps`` and stay at ``end`` afterwards (see :func:`syn2co.schedules.linear_schedule` and
    :func:`syn2co.schedules.cosine_schedule`).

    Args:
        kind: ``"constant"``, ``"linear"`` or ``"cosine"``.
        start: Synthetic fraction at step 0, in [0, 1].
        end: Synthetic fraction from step ``steps`` on, in [0, 1]; equal to ``start`` for
            ``"constant"``.
        steps: Length of the ramp in steps (>= 1; ignored by ``"constant"``).

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If a fraction lies outside [0, 1], ``steps < 1`` or a constant schedule has
            ``end != start``.

    Example:
        >>> RatioSchedule.constant(0.5).at(10)
        0.5
        >>> ramp = RatioSchedule.linear(0.0, 1.0, steps=1000)
        >>> ramp.at(0), ramp.at(250), ramp.at(5000)
        (0.0, 0.25, 1.0)
        >>> RatioSchedule.cosine(0.0, 0.5, steps=100).at(50)
        0.25
    """

    kind: Literal["constant", "linear", "cosine"]
    start: float
    end: float
    steps: int = 1

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, _KINDS)
        start = check_number("start", self.start, low=0.0, high=1.0)
        end = check_number("end", self.end, low=0.0, high=1.0)
        check_int("steps", self.steps, minimum=1)
        if self.kind == "constant" and end != start:
            raise ValueError(
                f"end: expected end == start = {start} for a constant schedule, got {end}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def constant(cls, fraction: float) -> RatioSchedule:
        """The same synthetic fraction at every step.

        Args:
            fraction: Synthetic fraction in [0, 1] (0: only real, 1: only synthetic).

        Returns:
            The schedule.

        Example:
            >>> RatioSchedule.constant(0.25).at(0)
            0.25
        """
        fraction = check_number("fraction", fraction, low=0.0, high=1.0)
        return cls("constant", fraction, fraction)

    @classmethod
    def linear(cls, start: float, end: float, *, steps: int) -> RatioSchedule:
        """A linear ramp of the synthetic fraction from ``start`` to ``end`` over ``steps``.

        Args:
            start: Fraction at step 0, in [0, 1].
            end: Fraction from step ``steps`` on, in [0, 1].
            steps: Length of the ramp (>= 1).

        Returns:
            The schedule.

        Example:
            >>> RatioSchedule.linear(1.0, 0.0, steps=4).at(1)
            0.75
        """
        return cls("linear", start, end, steps)

    @classmethod
    def cosine(cls, start: float, end: float, *, steps: int) -> RatioSchedule:
        """A half-cosine ramp of the synthetic fraction from ``start`` to ``end`` over ``steps``.

        Args:
            start: Fraction at step 0, in [0, 1].
            end: Fraction from step ``steps`` on, in [0, 1].
            steps: Length of the ramp (>= 1).

        Returns:
            The schedule.

        Example:
            >>> RatioSchedule.cosine(0.0, 1.0, steps=10).at(10)
            1.0
        """
        return cls("cosine", start, end, steps)

    @property
    def is_constant(self) -> bool:
        """True when the fraction is the same at every step."""
        return self.kind == "constant" or self.start == self.end

    @property
    def bounds(self) -> tuple[float, float]:
        """The smallest and largest fraction the schedule takes, ``(low, high)``."""
        return min(self.start, self.end), max(self.start, self.end)

    def at(self, step: int) -> float:
        """The synthetic fraction at ``step``.

        Args:
            step: Step counted from 0.

        Returns:
            A float in [0, 1].

        Example:
            >>> RatioSchedule.linear(0.0, 0.5, steps=10).at(4)
            0.2
        """
        step = check_int("step", step, minimum=0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            value = linear_schedule(step, self.steps, self.start, self.end)
        else:
            value = cosine_schedule(step, self.steps, self.start, self.end)
        low, high = self.bounds
        return min(max(value, low), high)
