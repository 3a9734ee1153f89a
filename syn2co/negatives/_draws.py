"""The order in which a spec's strategies consume the random generator.

Every strategy with a non-zero count first draws its pool positions, then its coefficients (or
vectors), in registry order, so :func:`~syn2co.negatives.synthesize`,
:func:`~syn2co.negatives.synthetic_logits` and the six strategy functions consume a generator
identically and make the same samples. The draws go through :mod:`syn2co._random`, so they are
the same eager draws under ``torch.compile``, made without breaking the graph.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from syn2co import _random
from syn2co.negatives.spec import NegativeSpec
from syn2co.negatives.strategy import _REGISTRY, Strategy


class _Draw(NamedTuple):
    """One strategy's draws for ``count`` samples per query."""

    strategy: Strategy
    samples: int  # c
    positions: Tensor  # (B, picks * count) pool positions, drawn in [0, N)
    drawn: Tensor | None  # the strategy's draw: (B, c, 1), (B, c, D) or None
    state: tuple[torch.device, Tensor] | None  # the generator's state before ``drawn``


def _active(spec: NegativeSpec) -> list[tuple[Strategy, int]]:
    """The strategies the spec asks for, with their counts, in registry order."""
    return [(_REGISTRY[name], count) for name, count in spec.counts.items() if count]


def _draw_all(
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
    *,
    keep_state: bool = False,
) -> list[_Draw]:
    """Every active strategy's draws, in registry order. ``shape`` is (B, N, D); with
    ``keep_state``, the generator's state before each vector draw is kept (to draw it again)."""
    return [
        _draw_one(strategy, count, spec, shape, gen, device, keep_state=keep_state)
        for strategy, count in _active(spec)
    ]


def _draw_one(
    strategy: Strategy,
    count: int,
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
    *,
    keep_state: bool = False,
) -> _Draw:
    """One strategy's draws (see :func:`_draw_all`)."""
    b, n_pool, d = shape
    pos = _random.randint(n_pool, (b, strategy.picks * count), gen, device)
    state = _random.rng_state(gen, device) if keep_state and strategy.draws_vectors else None
    drawn = strategy.draw(spec, (b, count, d), gen, device)
    return _Draw(strategy, count, pos, drawn, state)


def _split(pos: Tensor, count: int) -> tuple[Tensor, ...]:
    """(B, picks * count) -> one (B, count) block per pick."""
    return tuple(pos[:, g * count : (g + 1) * count] for g in range(pos.shape[1] // count))
