"""The order in which a spec's strategies consume the random generator.

Every strategy with a non-zero count first draws its pool positions, then its coefficients (or
vectors), in registry order, so :func:`~syn2co.negatives.synthesize`,
:func:`~syn2co.negatives.synthetic_logits` and the six strategy functions consume a generator
identically and make the same samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from syn2co import _random
from syn2co.negatives.spec import NegativeSpec
from syn2co.negatives.strategy import _REGISTRY, Strategy


def _active(spec: NegativeSpec) -> list[tuple[Strategy, int]]:
    """The strategies the spec asks for, with their counts, in registry order."""
    return [(_REGISTRY[name], count) for name, count in spec.counts.items() if count]


def _draw(
    strategy: Strategy,
    count: int,
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
    *,
    keep_state: bool = False,
) -> tuple[Tensor, Tensor | None, tuple[torch.device, Tensor] | None]:
    """Pool positions (B, picks * count), the generator's state before the draw if asked, and
    the strategy's draw. ``shape`` is (B, N, D)."""
    b, n_pool, d = shape
    pos = _random.randint(n_pool, (b, strategy.picks * count), gen, device)
    state = _random.rng_state(gen, device) if keep_state else None
    return pos, strategy.draw(spec, (b, count, d), gen, device), state


def _split(pos: Tensor, count: int) -> tuple[Tensor, ...]:
    """(B, picks * count) -> one (B, count) block per pick."""
    return tuple(pos[:, g * count : (g + 1) * count] for g in range(pos.shape[1] // count))
