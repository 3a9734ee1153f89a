"""Every random stream of a run, derived from the run's one ``--seed``.

Two kinds of derivation, each written once:

* :func:`stream_seed`: the seed of a long-lived stream (initial weights, queue initialisation,
  synthetic negatives, drop-path, the data loader, Python's ``random``), optionally different per
  rank;
* :func:`hashed_seed`: a stable 63-bit hash of a key, for the many short-lived streams seeded by
  position (one image's augmentation at one step, a generator call, a GPU batch), so they are
  the same whatever the number of workers or ranks and after a resume.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import numpy as np
import torch

__all__ = ["Stream", "hashed_seed", "hashed_seed_of_ints", "stream_seed", "torch_generator"]


class Stream(Enum):
    """The long-lived random streams of a run."""

    WEIGHTS = "weights"  # initial weights: identical on every rank
    QUEUES = "queues"  # the random initial rows of the negative queues
    NEGATIVES = "negatives"  # pool picks, coefficients and noise of the synthetic negatives
    DROP_PATH = "drop-path"  # the global torch RNG during training: drop-path differs per rank
    LOADER = "loader"  # the training DataLoader's own generator (its workers' base seed)
    PYTHON = "python"  # Python's global ``random`` in the training process, per rank


def stream_seed(seed: int, stream: Stream, rank: int = 0) -> int:
    """The seed of one stream of a run (for ``rank`` where the stream differs per rank).

    Example:
        >>> stream_seed(0, Stream.NEGATIVES, rank=1)
        1
    """
    if stream is Stream.WEIGHTS:
        return seed
    if stream is Stream.QUEUES:
        return seed + 1
    if stream is Stream.NEGATIVES:
        return seed * 1009 + rank
    if stream is Stream.LOADER:
        return seed * 7919 + 7907 + rank
    if stream is Stream.PYTHON:
        return seed * 7919 + 7901 + rank
    return seed * 7919 + 17 + rank


def hashed_seed(*key: object) -> int:
    """A stable 63-bit seed from a key (its parts joined by ``/``), the same on every machine.

    Example:
        >>> hashed_seed(0, 5, 17) == hashed_seed(0, 5, 17) != hashed_seed(0, 5, 18)
        True
    """
    return _digest("/".join(str(part) for part in key).encode())


def hashed_seed_of_ints(values: torch.Tensor) -> int:
    """A stable 63-bit seed from a sequence of integers (their little-endian int64 bytes)."""
    data = values.to(torch.int64).reshape(-1).numpy().astype(np.dtype("<i8")).tobytes()
    return _digest(data)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1
