"""Random draws from an optional ``torch.Generator``, made on the device it draws on.

A generator draws on its own device; ``None`` stands for the default generator of the data's
device. The draws are then moved to the data's device, so a CPU generator gives the same numbers
whatever device the data lives on.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor


def draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """The device ``generator`` draws on: its own, or ``device`` for the default generator."""
    return generator.device if generator is not None else device


def rng_state(
    generator: torch.Generator | None, device: torch.device
) -> tuple[torch.device, Tensor]:
    """Where the next draw happens and the state of the generator that makes it."""
    where = draw_device(generator, device)
    if generator is not None:
        return where, generator.get_state()
    if where.type == "cpu":
        return where, torch.get_rng_state()
    module = torch.get_device_module(where)
    return where, cast(Tensor, module.get_rng_state(where))


def randint(
    high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``randint(high, shape)`` drawn by ``generator``, on ``device``."""
    where = draw_device(generator, device)
    return torch.randint(high, shape, generator=generator, device=where).to(device)


def uniform(
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Float32 samples of ``U(lo, hi)`` drawn by ``generator``, on ``device``."""
    lo, hi = bounds
    where = draw_device(generator, device)
    u = torch.rand(shape, generator=generator, device=where, dtype=torch.float32)
    return (lo + (hi - lo) * u).to(device)


def normal(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Float32 samples of ``N(0, 1)`` drawn by ``generator``, on ``device``."""
    where = draw_device(generator, device)
    eps = torch.randn(shape, generator=generator, device=where, dtype=torch.float32)
    return eps.to(device)
