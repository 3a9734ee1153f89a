"""Every random stream of a run, derived from the run's one ``--seed``.

All seeds come from one function, :func:`syn2co.seeds.derive_seed`, of a key that names the
stream, so no two streams start in the same state:

* :func:`stream_seed`: the seed of a long-lived stream (initial weights, queue initialisation,
  synthetic negatives, drop-path, the data loader, Python's ``random``, the learned generators'
  initialisation), from ``(stream, seed, rank)``;
* :func:`hashed_seed`: the seed of one of the many short-lived streams seeded by position (one
  image's augmentation at one step, a generator call, a GPU batch), so they are the same
  whatever the number of workers or ranks and after a resume.
"""

from __future__ import annotations

from enum import Enum

import torch

from syn2co.seeds import derive_seed

__all__ = ["Stream", "hashed_seed", "hashed_seed_of_ints", "stream_seed", "torch_generator"]


class Stream(Enum):
    """The long-lived random streams of a run."""

    WEIGHTS = "weights"  # initial weights: identical on every rank
    QUEUES = "queues"  # the random initial rows of the negative queues
    NEGATIVES = "negatives"  # pool picks, coefficients and noise of the synthetic negatives
    DROP_PATH = "drop-path"  # the global torch RNG during training: drop-path differs per rank
    LOADER = "loader"  # the training DataLoader's own generator (its workers' base seed)
    PYTHON = "python"  # Python's global ``random`` in the training process, per rank
    GENERATORS = "generators"  # the learned image generators' initial weights


def stream_seed(seed: int, stream: Stream, rank: int = 0) -> int:
    """The seed of one stream of a run (for ``rank`` where the stream differs per rank).

    Example:
        >>> stream_seed(0, Stream.NEGATIVES) != stream_seed(0, Stream.WEIGHTS)
        True
        >>> stream_seed(0, Stream.NEGATIVES, rank=1) != stream_seed(0, Stream.QUEUES)
        True
    """
    return derive_seed("stream", stream.value, seed, rank)


def hashed_seed(*key: int | str) -> int:
    """The seed of a short-lived stream named by ``key`` (:func:`syn2co.seeds.derive_seed`).

    Example:
        >>> hashed_seed(0, 5, 17) == hashed_seed(0, 5, 17) != hashed_seed(0, 5, 18)
        True
    """
    return derive_seed(*key)


def hashed_seed_of_ints(values: torch.Tensor) -> int:
    """The seed of a stream named by a sequence of integers (e.g. a batch's image seeds)."""
    return derive_seed("ints", *values.to(torch.int64).reshape(-1).tolist())


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)
