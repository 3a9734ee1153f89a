"""Argument checks shared by every public function of syn2co.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument, what was
expected and what was received, so bad input never surfaces as a stack trace from inside torch.

Shape and dtype checks cost nothing (they read metadata). The value check (no NaN or infinite
entries) reads the data: each public function does it once, for all its inputs together, with
one cheap reduction per tensor and a single device synchronisation; the error then names the
offending argument. Value checks are skipped while ``torch.compile`` traces a function (a
compiled graph must not branch on data) and can be switched off with :func:`value_checks` or
:func:`set_value_checks` where even one synchronisation per call is too many.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator, Sequence
from typing import SupportsIndex

import torch
from torch import Tensor

_value_checks = True


def set_value_checks(enabled: bool) -> None:
    """Turn syn2co's NaN/inf checks of inputs on or off for the whole process.

    On by default. Off, no public function reads input values for validation, so none
    synchronises with the GPU; shape, dtype and range checks stay on.

    Example:
        >>> set_value_checks(False); set_value_checks(True)
    """
    global _value_checks
    _value_checks = bool(enabled)


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_value_checks`; restores the previous setting.

    Example:
        >>> import torch
        >>> from syn2co.negatives import hardest
        >>> with value_checks(False):
        ...     pool = hardest(torch.randn(2, 4), torch.randn(8, 4), 3)
    """
    global _value_checks
    previous = _value_checks
    _value_checks = bool(enabled)
    try:
        yield
    finally:
        _value_checks = previous


class NonFiniteError(ValueError):
    """An input holds NaN or infinite values (a ``ValueError``, so callers may catch either).

    A training loop can catch this type to stop cleanly when its embeddings diverge.
    """


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def tracing() -> bool:
    """True while torch.compile (dynamo) traces the caller: value checks are skipped then."""
    return bool(torch.compiler.is_compiling())


def has_data(t: Tensor) -> bool:
    """False for tensors without values to read: on the meta device, or fake (as
    ``torch.compile`` and ``FakeTensorMode`` propagate shapes with)."""
    if t.device.type == "meta":
        return False
    from torch._subclasses.fake_tensor import is_fake

    return not is_fake(t)


def reads_values(*tensors: Tensor) -> bool:
    """Whether a value check may read these tensors now: value checks on, not compiling, and
    every tensor has data (:func:`has_data`)."""
    return _value_checks and not tracing() and all(has_data(t) for t in tensors)


def host_readable(*tensors: Tensor) -> bool:
    """Whether reading these tensors' values costs nothing: CPU tensors with data, outside a
    compiled graph. Not a value check (the setting of :func:`set_value_checks` does not
    matter): a shortcut that reading a CPU tensor allows, where on an accelerator the same
    decision would wait for the device."""
    return not tracing() and all(t.device.type == "cpu" and has_data(t) for t in tensors)


def may_be_true(mask: Tensor) -> bool:
    """False only when ``mask`` is known to hold no True entry: read where that is free
    (:func:`host_readable`), assumed True otherwise (on an accelerator, while compiling), so
    that no branch on data synchronises with a device or breaks a graph."""
    if not host_readable(mask):
        return True
    return bool(mask.any())


def check_tensor(name: str, value: object) -> Tensor:
    """The value must be a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def check_float(name: str, t: object) -> Tensor:
    """A floating-point tensor (float16, bfloat16, float32 or float64)."""
    t = check_tensor(name, t)
    if not t.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor (float16/bfloat16/float32/float64), "
            f"got dtype {t.dtype}"
        )
    return t


def check_embeddings(
    name: str,
    t: object,
    dims: str,
    *,
    dim: int | None = None,
    sizes: dict[int, tuple[str, int]] | None = None,
    allow_empty: bool = False,
) -> Tensor:
    """A floating-point tensor whose shape is described by ``dims`` (for example ``"(B, D)"``).

    Args:
        name: Argument name used in the error message.
        t: The value to check.
        dims: Expected shape written with one letter per axis, e.g. ``"(B, K, D)"``. Only the
            number of axes is enforced from it; ``dim`` and ``sizes`` enforce sizes.
        dim: Required size of the last axis (the embedding dimension), if known.
        sizes: ``{axis: (letter, size)}`` sizes that must match other arguments.
        allow_empty: Accept a tensor with no entries (e.g. zero synthetic negatives per query).

    Values are not read here: see :func:`check_finite`.
    """
    t = check_float(name, t)
    letters = [s.strip() for s in dims.strip("()").split(",") if s.strip()]
    if t.ndim != len(letters):
        raise ValueError(f"{name}: expected shape {dims}, got {_shape(t)}")
    if dim is not None and t.shape[-1] != dim:
        raise ValueError(
            f"{name}: expected shape {dims} with D={dim} (the embedding size of the query), "
            f"got {_shape(t)}"
        )
    for axis, (letter, size) in (sizes or {}).items():
        if t.shape[axis] != size:
            raise ValueError(f"{name}: expected shape {dims} with {letter}={size}, got {_shape(t)}")
    if t.numel() == 0 and not allow_empty:
        raise ValueError(f"{name}: expected a non-empty tensor of shape {dims}, got {_shape(t)}")
    return t


def all_finite(*tensors: Tensor | None) -> bool:
    """True when no tensor holds NaN or inf, or when value checks are off, compiling or the
    tensors have no data (meta or fake tensors: see :func:`has_data`).

    One min/max reduction per tensor (NaN propagates to both, an infinity shows in one; on a
    CPU many times faster than an inf-norm) and a single synchronisation for all of them.
    """
    present = [t for t in tensors if t is not None and t.numel() > 0]
    if not present or not reads_values(*present):
        return True
    device = present[0].device
    ends = [end.float().to(device) for t in present for end in torch.aminmax(t.detach())]
    return bool(torch.isfinite(torch.stack(ends)).all())


def check_finite(*named: tuple[str, Tensor | None]) -> None:
    """No NaN or infinite entries in any of the named tensors (``None`` entries are skipped).

    A single synchronisation (:func:`all_finite`); only when something is wrong are the
    tensors examined one by one to name the argument. Skipped while compiling and when value
    checks are off.
    """
    if all_finite(*(t for _, t in named)):
        return
    for name, t in named:
        bad = 0 if t is None else int((~torch.isfinite(t)).sum())
        if bad:
            raise NonFiniteError(
                f"{name}: expected finite values, got {bad} NaN or infinite entries"
            )


def check_mask(name: str, t: object, shape: Sequence[int], dims: str) -> Tensor:
    """A boolean mask of an exact shape."""
    t = check_tensor(name, t)
    if t.dtype != torch.bool:
        raise TypeError(f"{name}: expected a boolean mask of shape {dims}, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        want = "(" + ", ".join(str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {dims} = {want}, got {_shape(t)}")
    return t


def check_same_device(name: str, t: Tensor, reference_name: str, reference: Tensor) -> None:
    """``t`` lives on the same device as ``reference``."""
    if t.device != reference.device:
        raise ValueError(
            f"{name}: expected a tensor on {reference.device} (the device of {reference_name}), "
            f"got one on {t.device}"
        )


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """An integer no smaller than ``minimum``, returned as a Python ``int``.

    Integer types that support ``__index__`` (``numpy.int64``, ...) are accepted and converted;
    bools and tensors are not.
    """
    if isinstance(value, bool | Tensor) or not isinstance(value, SupportsIndex):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    try:
        number = operator.index(value)
    except TypeError:  # e.g. numpy.bool_, whose __index__ refuses
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {number}")
    return number


def _finite(v: float) -> bool:
    """``math.isfinite`` by comparisons, which dynamo also traces for a symbolic float (a
    number ``torch.compile(dynamic=True)`` does not specialise on)."""
    return -math.inf < v < math.inf


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number inside ``[low, high]`` (ends open where asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if not _finite(v):
        raise ValueError(f"{name}: expected a finite number in {interval}, got {value}")
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if below or above:
        raise ValueError(f"{name}: expected a number in {interval}, got {value}")
    return v


def check_range(
    name: str, value: object, *, low: float, high: float | None = None
) -> tuple[float, float]:
    """A pair ``(lo, hi)`` with ``low <= lo <= hi <= high``."""
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise TypeError(f"{name}: expected a pair of numbers (lo, hi), got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    top = "inf" if high is None else str(high)
    if not (_finite(lo) and _finite(hi)) or lo < low or hi < lo or (high is not None and hi > high):
        raise ValueError(
            f"{name}: expected {low} <= lo <= hi <= {top}, got ({value[0]}, {value[1]})"
        )
    return lo, hi


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """One of a fixed set of strings."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def check_generator(name: str, generator: object) -> torch.Generator | None:
    """None or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{name}: expected a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def check_bank(name: str, t: object, batch: int, dim: int) -> Tensor:
    """A bank of negatives: shared (K, D) or per query (B, K, D), matching the query's B and D."""
    t = check_float(name, t)
    if t.ndim == 2:
        return check_embeddings(name, t, "(K, D)", dim=dim)
    if t.ndim == 3:
        return check_embeddings(name, t, "(B, K, D)", dim=dim, sizes={0: ("B", batch)})
    raise ValueError(f"{name}: expected shape (K, D) or (B, K, D), got {_shape(t)}")
