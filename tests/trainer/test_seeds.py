"""The random streams of a run: each derived from (seed, purpose, rank) through one function,
so no two start in the same state."""

from __future__ import annotations

import itertools

import torch

from reference_trainer.seeds import Stream, hashed_seed, stream_seed
from syn2co.seeds import derive_seed


def test_no_two_streams_of_any_seed_and_rank_share_a_seed() -> None:
    seeds = [
        stream_seed(seed, stream, rank)
        for seed, stream, rank in itertools.product(range(4), Stream, range(8))
    ]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)


def test_seed_zero_streams_start_in_different_states() -> None:
    """With the seed, the purpose and the rank all in the key, the synthetic negatives' stream
    of rank 0 and 1 never starts where the weights' or the queues' stream starts."""
    first = {
        (stream, rank): torch.randn(4, generator=torch.Generator().manual_seed(seed))
        for stream in Stream
        for rank in (0, 1)
        if (seed := stream_seed(0, stream, rank)) is not None
    }
    for (a, b), (c, d) in itertools.combinations(first.items(), 2):
        assert not torch.equal(b, d), (a, c)


def test_short_lived_streams_use_the_same_function() -> None:
    assert hashed_seed("view", 0, 5, 17) == derive_seed("view", 0, 5, 17)
    assert stream_seed(3, Stream.WEIGHTS) == derive_seed("stream", "weights", 3, 0)
