"""Random draws from an optional ``torch.Generator``, made on the device it draws on.

A generator draws on its own device; ``None`` stands for the default generator of the data's
device. The draws are then moved to the data's device, so a CPU generator gives the same numbers
whatever device the data lives on.

**Under torch.compile** every draw is the same eager call, made at run time by a custom
operator (``torch.ops.syn2co.randint``, ``uniform``, ``normal``, ``rng_state``,
``normal_from_state``), so a compiled function draws exactly the numbers its eager form draws
from the same generator, consumes the generator identically, and leaves the graph whole:

* dynamo cannot put a ``torch.Generator`` into a graph, so a generator is given to the operators
  as a key: :func:`_generator_key` runs once at trace time (``assume_constant_result``), keeps a
  reference to the generator under its ``id`` and makes dynamo guard on the generator's
  identity (each generator object gets its own compiled graph; pass the same one every step);
* the draws of one generator must happen in program order, which the data flow alone does not
  fix: every drawing operator mutates one token tensor, so the compiler keeps them in order and
  never merges or drops one;
* ``normal_from_state`` draws again from a saved state without touching any generator: a pure
  function, which is what a backward pass needs.

Inductor's own random numbers (what ``torch.rand`` becomes in a compiled graph) are not used:
they would differ from the eager draws. Eager calls skip the operators (no dispatch cost). On
the meta device nothing is drawn and no generator is consumed: the draws are empty tensors of
the right shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

#: Generators met while compiling, by ``id``; strong references, so an id is never reused.
_GENERATORS: dict[int, torch.Generator] = {}

#: Key of "the default generator of the device".
_DEFAULT = -1

#: Every drawing operator adds one to it: the order of the draws as a data dependency.
_TOKEN = torch.zeros((), dtype=torch.int64)


def draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """The device ``generator`` draws on: its own, or ``device`` for the default generator."""
    return generator.device if generator is not None else device


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _remember(generator: torch.Generator) -> int:
    key = id(generator)
    _GENERATORS[key] = generator
    return key


#: The generator's key for the operators: run by dynamo at trace time, with the real generator
#: (``assume_constant_result``); dynamo then guards on the generator's identity.
_generator_key = cast(
    Callable[[torch.Generator], int],
    torch.compiler.assume_constant_result(_remember),  # type: ignore[no-untyped-call]
)


def _key(generator: torch.Generator | None) -> int:
    return _DEFAULT if generator is None else _generator_key(generator)


def _generator(key: int) -> torch.Generator | None:
    return None if key == _DEFAULT else _GENERATORS[key]


# --------------------------------------------------------------------------------------------
# The draws, eager
# --------------------------------------------------------------------------------------------


def _rng_state(generator: torch.Generator | None, device: torch.device) -> Tensor:
    where = draw_device(generator, device)
    if generator is not None:
        return generator.get_state()
    if where.type == "cpu":
        return torch.get_rng_state()
    module = torch.get_device_module(where)
    return cast(Tensor, module.get_rng_state(where))


def _randint(
    high: int, shape: list[int], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    if device.type == "meta":
        return torch.empty(shape, dtype=torch.int64, device=device)
    where = draw_device(generator, device)
    return torch.randint(high, shape, generator=generator, device=where).to(device)


def _uniform(
    shape: list[int], lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    if device.type == "meta":
        return torch.empty(shape, dtype=torch.float32, device=device)
    where = draw_device(generator, device)
    u = torch.rand(shape, generator=generator, device=where, dtype=torch.float32)
    return (lo + (hi - lo) * u).to(device)


def _normal(shape: list[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    if device.type == "meta":
        return torch.empty(shape, dtype=torch.float32, device=device)
    where = draw_device(generator, device)
    eps = torch.randn(shape, generator=generator, device=where, dtype=torch.float32)
    return eps.to(device)


def _normal_from_state(
    state: Tensor, shape: list[int], where: torch.device, device: torch.device
) -> Tensor:
    if device.type == "meta" or state.device.type == "meta":
        return torch.empty(shape, dtype=torch.float32, device=device)
    replay = torch.Generator(device=where)
    replay.set_state(state)
    return _normal(shape, replay, device)


# --------------------------------------------------------------------------------------------
# The same draws as custom operators, for torch.compile
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("syn2co::randint", mutates_args=("token",))
def _randint_op(
    token: Tensor, generator: int, high: int, shape: list[int], device: torch.device
) -> Tensor:
    token.add_(1)
    return _randint(high, shape, _generator(generator), device)


@_randint_op.register_fake
def _(token: Tensor, generator: int, high: int, shape: list[int], device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=torch.int64, device=device)


@torch.library.custom_op("syn2co::uniform", mutates_args=("token",))
def _uniform_op(
    token: Tensor, generator: int, lo: float, hi: float, shape: list[int], device: torch.device
) -> Tensor:
    token.add_(1)
    return _uniform(shape, lo, hi, _generator(generator), device)


@_uniform_op.register_fake
def _(
    token: Tensor, generator: int, lo: float, hi: float, shape: list[int], device: torch.device
) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=device)


@torch.library.custom_op("syn2co::normal", mutates_args=("token",))
def _normal_op(token: Tensor, generator: int, shape: list[int], device: torch.device) -> Tensor:
    token.add_(1)
    return _normal(shape, _generator(generator), device)


@_normal_op.register_fake
def _(token: Tensor, generator: int, shape: list[int], device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=device)


@torch.library.custom_op("syn2co::rng_state", mutates_args=("token",))
def _rng_state_op(token: Tensor, generator: int, device: torch.device) -> Tensor:
    token.add_(1)
    return _rng_state(_generator(generator), device).clone()


@_rng_state_op.register_fake
def _(token: Tensor, generator: int, device: torch.device) -> Tensor:
    # the state's size depends on the kind of generator only: read it from the real one
    size = _rng_state(_generator(generator), device).numel()
    return torch.empty(size, dtype=torch.uint8)


@torch.library.custom_op("syn2co::normal_from_state", mutates_args=())
def _normal_from_state_op(
    state: Tensor, shape: list[int], where: torch.device, device: torch.device
) -> Tensor:
    return _normal_from_state(state, shape, where, device)


@_normal_from_state_op.register_fake
def _(state: Tensor, shape: list[int], where: torch.device, device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


def rng_state(
    generator: torch.Generator | None, device: torch.device
) -> tuple[torch.device, Tensor]:
    """Where the next draw happens and the state of the generator that makes it (a copy)."""
    where = draw_device(generator, device)
    if device.type == "meta":
        return where, torch.empty(0, dtype=torch.uint8, device="meta")
    if _compiling():
        return where, cast(Tensor, _rng_state_op(_TOKEN, _key(generator), device))
    return where, _rng_state(generator, device)


def randint(
    high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``randint(high, shape)`` drawn by ``generator``, on ``device`` (int64)."""
    if _compiling():
        return cast(Tensor, _randint_op(_TOKEN, _key(generator), high, list(shape), device))
    return _randint(high, list(shape), generator, device)


def uniform(
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Float32 samples of ``U(lo, hi)`` drawn by ``generator``, on ``device``."""
    lo, hi = bounds
    if _compiling():
        return cast(Tensor, _uniform_op(_TOKEN, _key(generator), lo, hi, list(shape), device))
    return _uniform(list(shape), lo, hi, generator, device)


def normal(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Float32 samples of ``N(0, 1)`` drawn by ``generator``, on ``device``."""
    if _compiling():
        return cast(Tensor, _normal_op(_TOKEN, _key(generator), list(shape), device))
    return _normal(list(shape), generator, device)


def normal_from_state(
    state: tuple[torch.device, Tensor], shape: torch.Size, device: torch.device
) -> Tensor:
    """The samples :func:`normal` drew right after :func:`rng_state` returned ``state``, drawn
    again from a copy of that state; no generator is consumed."""
    where, saved = state
    if _compiling():
        return cast(Tensor, _normal_from_state_op(saved, list(shape), where, device))
    return _normal_from_state(saved, list(shape), where, device)
