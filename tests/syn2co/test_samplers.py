"""Tests of syn2co.samplers: ratio schedules, counts, the mixed dataset and the batch sampler."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

import syn2co.distributed
from syn2co.samplers import (
    REAL,
    SYNTHETIC,
    MixedDataset,
    MixedSourceBatchSampler,
    RatioSchedule,
    shard_counts,
    split_counts,
)

fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def composition(batch: list[int], real_size: int) -> tuple[int, int]:
    """(real, synthetic) counts of a batch of MixedDataset indices."""
    synthetic = sum(i >= real_size for i in batch)
    return len(batch) - synthetic, synthetic


def reference_hamilton(total: int, quotas: list[Fraction]) -> list[int]:
    """Largest-remainder apportionment, ties to the earlier party (the plain textbook form)."""
    seats = [math.floor(q) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - seats[i]), i))
    for i in order[: total - sum(seats)]:
        seats[i] += 1
    return seats


def source_streams(batches: list[list[int]], real_size: int) -> tuple[list[int], list[int]]:
    """Each source's indices in the order they were drawn (local synthetic ids from 0)."""
    real = [i for b in batches for i in b if i < real_size]
    synthetic = [i - real_size for b in batches for i in b if i >= real_size]
    return real, synthetic


def epochs(sampler: MixedSourceBatchSampler, first: int, last: int) -> list[list[int]]:
    """Batches of epochs first..last-1 as a training loop would draw them."""
    out: list[list[int]] = []
    for epoch in range(first, last):
        sampler.set_epoch(epoch)
        out.extend(sampler)
    return out


# ------------------------------------------------------------------------------ RatioSchedule


def test_ratio_schedules_values() -> None:
    assert [RatioSchedule.constant(0.3).at(s) for s in (0, 7, 10**6)] == [0.3, 0.3, 0.3]
    ramp = RatioSchedule.linear(0.0, 1.0, steps=1000)
    assert [ramp.at(s) for s in (0, 100, 500, 1000, 4000)] == [0.0, 0.1, 0.5, 1.0, 1.0]
    down = RatioSchedule.cosine(1.0, 0.0, steps=100)
    assert down.at(0) == 1.0
    assert down.at(50) == pytest.approx(0.5)
    assert down.at(100) == 0.0
    curve = [down.at(s) for s in range(101)]
    assert all(b <= a for a, b in itertools.pairwise(curve))
    assert RatioSchedule.constant(0.5).is_constant
    assert RatioSchedule.linear(0.2, 0.2, steps=5).is_constant
    assert not ramp.is_constant
    assert ramp.bounds == (0.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(start=fractions, end=fractions, steps=st.integers(1, 10_000), step=st.integers(0, 20_000))
def test_ratio_schedule_stays_in_unit_interval(
    start: float, end: float, steps: int, step: int
) -> None:
    for schedule in (
        RatioSchedule.linear(start, end, steps=steps),
        RatioSchedule.cosine(start, end, steps=steps),
    ):
        value = schedule.at(step)
        assert min(start, end) <= value <= max(start, end)
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: RatioSchedule.constant(1.5),
            ValueError,
            r"fraction: expected a number in \[0.0, 1",
        ),
        (lambda: RatioSchedule("linear", 1.5, 0.0, 3), ValueError, r"start: .*got 1.5"),
        (lambda: RatioSchedule.linear(0.0, -0.1, steps=3), ValueError, r"end: .*got -0.1"),
        (lambda: RatioSchedule.cosine(0.0, 1.0, steps=0), ValueError, r"steps: .*>= 1, got 0"),
        (
            lambda: RatioSchedule("step", 0.0, 1.0),  # type: ignore[arg-type]
            ValueError,
            r"kind: expected one of",
        ),
        (lambda: RatioSchedule("constant", 0.2, 0.4), ValueError, r"end: expected end == start"),
        (
            lambda: RatioSchedule.constant("0.5"),  # type: ignore[arg-type]
            TypeError,
            r"fraction: expected a number",
        ),
        (lambda: RatioSchedule.constant(0.5).at(-1), ValueError, r"step: .*got -1"),
    ],
)
def test_ratio_schedule_bad_input(call: object, error: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------ split_counts


def test_split_counts_examples() -> None:
    assert split_counts(256, 0.5) == (128, 128)
    assert split_counts(10, 0.0) == (10, 0)
    assert split_counts(10, 1.0) == (0, 10)
    assert split_counts(10, 0.26) == (7, 3)
    assert split_counts(10, 0.27) == (7, 3)
    assert split_counts(10, 0.36) == (6, 4)
    assert split_counts(6, 0.25) == (5, 1)  # quota 1.5: the tie goes to the real source
    assert split_counts(7, 0.5) == (4, 3)


@settings(max_examples=300, deadline=None)
@given(batch=st.integers(1, 10_000), fraction=fractions)
def test_split_counts_is_largest_remainder(batch: int, fraction: float) -> None:
    real, synthetic = split_counts(batch, fraction)
    assert real + synthetic == batch
    assert min(real, synthetic) >= 0
    assert abs(synthetic - fraction * batch) < 1
    quota = Fraction(fraction) * batch
    assert [real, synthetic] == reference_hamilton(batch, [batch - quota, quota])


@settings(max_examples=100, deadline=None)
@given(batch=st.integers(1, 1000), a=fractions, b=fractions)
def test_split_counts_monotone_in_fraction(batch: int, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert split_counts(batch, low)[1] <= split_counts(batch, high)[1]


@settings(max_examples=300, deadline=None)
@given(
    world=st.integers(1, 16),
    local=st.integers(1, 64),
    fraction=fractions,
    offset=st.integers(0, 100),
)
def test_shard_counts_split_the_global_counts(
    world: int, local: int, fraction: float, offset: int
) -> None:
    real, synthetic = split_counts(world * local, fraction)
    shards = shard_counts(real, synthetic, world, offset=offset)
    assert len(shards) == world
    assert sum(r for r, _ in shards) == real
    assert sum(s for _, s in shards) == synthetic
    for r, s in shards:
        assert r + s == local
        assert min(r, s) >= 0
        assert abs(s - Fraction(synthetic, world)) < 1
        assert abs(r - Fraction(real, world)) < 1
    # The extra samples start at rank `offset`: rotating the offset rotates the shards.
    rotated = shard_counts(real, synthetic, world, offset=offset + 1)
    assert rotated == shards[-1:] + shards[:-1]


def test_shard_counts_bad_input() -> None:
    with pytest.raises(ValueError, match=r"world_size: expected a divisor of .* = 7, got 2"):
        shard_counts(4, 3, 2)
    with pytest.raises(ValueError, match=r"synthetic: expected an int >= 0, got -1"):
        shard_counts(4, -1, 1)
    with pytest.raises(ValueError, match=r"world_size: expected an int >= 1, got 0"):
        shard_counts(4, 4, 0)
    with pytest.raises(ValueError, match=r"batch_size: expected an int >= 1, got 0"):
        split_counts(0, 0.5)
    with pytest.raises(ValueError, match=r"fraction: expected a number in \[0.0, 1.0\], got 2"):
        split_counts(8, 2)


# ------------------------------------------------------------------------------ MixedDataset


def test_mixed_dataset_tags_sources() -> None:
    real = TensorDataset(torch.arange(5) * 10)
    synthetic = [f"s{i}" for i in range(3)]
    data: MixedDataset[object] = MixedDataset(real, synthetic)
    assert (len(data), data.real_size, data.synthetic_size) == (8, 5, 3)
    assert (MixedDataset.REAL, MixedDataset.SYNTHETIC, REAL, SYNTHETIC) == (0, 1, 0, 1)
    for i in range(5):
        sample, source = data[i]
        assert source == REAL
        assert sample == (torch.tensor(10 * i),)
    for j in range(3):
        assert data[5 + j] == (f"s{j}", SYNTHETIC)
    assert data[torch.tensor(6)] == ("s1", SYNTHETIC)  # type: ignore[index]
    with pytest.raises(IndexError, match=r"index: expected an int in \[0, 8\), got 8"):
        data[8]
    with pytest.raises(IndexError, match=r"index: .*got -1"):
        data[-1]
    with pytest.raises(TypeError, match=r"index: expected an int, got str"):
        data["1"]  # type: ignore[index]
    with pytest.raises(TypeError, match=r"synthetic: expected a map-style dataset"):
        MixedDataset([1], 3)  # type: ignore[arg-type]


def test_mixed_dataset_with_empty_source() -> None:
    data = MixedDataset([], ["a", "b"])
    assert [data[i] for i in range(len(data))] == [("a", SYNTHETIC), ("b", SYNTHETIC)]


# ------------------------------------------------------------------------------ sampler: counts


def test_constant_fraction_exact_counts_and_epoch_length() -> None:
    # 7 real + 3 synthetic per batch: the real pass takes 50 // 7 = 7 batches, the synthetic
    # pass 30 // 3 = 10, so the epoch is one synthetic pass and the real source is recycled.
    sampler = MixedSourceBatchSampler(50, 30, 10, 0.3, seed=4)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 10
    assert all(composition(b, 50) == (7, 3) for b in batches)
    assert all(0 <= i < 80 for b in batches for i in b)
    real, synthetic = source_streams(batches, 50)
    assert sorted(synthetic) == list(range(30))  # exactly one synthetic pass
    assert len(real) == 70


def test_epoch_length_rules() -> None:
    # 4 real per batch from 10 real samples; synthetic share 4 of 100 samples.
    assert len(MixedSourceBatchSampler(10, 100, 8, 0.5)) == 25
    assert len(MixedSourceBatchSampler(10, 4, 8, 0.5, drop_last=True)) == 2
    # drop_last=False: ceil(10 / 4) = 3 batches, the last one completed from the next pass.
    sampler = MixedSourceBatchSampler(10, 4, 8, 0.5, drop_last=False)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 3
    assert all(composition(b, 10) == (4, 4) for b in batches)
    real, _ = source_streams(batches, 10)
    assert set(real) == set(range(10))  # every real sample seen at least once
    assert sorted(real[:10]) == list(range(10))
    fixed = MixedSourceBatchSampler(10, 4, 8, 0.5, steps_per_epoch=7)
    assert len(fixed) == len(list(fixed)) == 7


def test_pure_real_and_pure_synthetic() -> None:
    only_real = MixedSourceBatchSampler(12, 0, 4, 0.0)
    batches = list(only_real)
    assert len(batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(12))
    only_synthetic = MixedSourceBatchSampler(0, 9, 3, 1.0, seed=2)
    batches = list(only_synthetic)
    assert len(batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(9))
    # A synthetic source may exist while the fraction is 0: it is never drawn.
    assert all(i < 12 for b in MixedSourceBatchSampler(12, 5, 4, 0.0) for i in b)


def test_scheduled_ratio_exact_counts_per_step() -> None:
    schedule = RatioSchedule.linear(0.0, 1.0, steps=20)
    sampler = MixedSourceBatchSampler(40, 40, 8, schedule, seed=1, steps_per_epoch=9)
    batches = epochs(sampler, 0, 3)
    assert len(batches) == 27
    for step, batch in enumerate(batches):
        assert len(batch) == 8
        assert composition(batch, 40) == split_counts(8, schedule.at(step))
    assert composition(batches[0], 40) == (8, 0)
    assert composition(batches[26], 40) == (0, 8)

    cosine = RatioSchedule.cosine(0.1, 0.6, steps=10)
    sampler = MixedSourceBatchSampler(30, 30, 6, cosine, steps_per_epoch=5)
    for step, batch in enumerate(epochs(sampler, 0, 3)):
        assert composition(batch, 30) == split_counts(6, cosine.at(step))


@settings(max_examples=40, deadline=None)
@given(
    real_size=st.integers(1, 60),
    synthetic_size=st.integers(1, 60),
    batch=st.integers(1, 16),
    fraction=fractions,
    seed=st.integers(0, 2**40),
)
def test_every_batch_has_the_requested_composition(
    real_size: int, synthetic_size: int, batch: int, fraction: float, seed: int
) -> None:
    sampler = MixedSourceBatchSampler(
        real_size, synthetic_size, batch, fraction, seed=seed, steps_per_epoch=12
    )
    want = split_counts(batch, fraction)
    batches = list(sampler)
    assert len(batches) == 12
    assert all(composition(b, real_size) == want for b in batches)
    # Each stream is a concatenation of permutations of its source.
    for stream, size in zip(
        source_streams(batches, real_size), (real_size, synthetic_size), strict=True
    ):
        for k in range(0, len(stream), size):
            chunk = stream[k : k + size]
            assert len(set(chunk)) == len(chunk)
            assert all(0 <= i < size for i in chunk)
            if len(chunk) == size:
                assert sorted(chunk) == list(range(size))


# ------------------------------------------------------------------------------ sampler: passes


def test_no_repeat_within_a_pass_and_recycling_starts_a_new_permutation() -> None:
    # 30 real samples, 6 real per batch (5 batches a pass); 100 synthetic, 2 per batch: the
    # epoch is one synthetic pass (50 batches), so the real source runs 10 passes.
    sampler = MixedSourceBatchSampler(30, 100, 8, 0.25, seed=11)
    batches = list(sampler)
    assert len(batches) == 50
    real, synthetic = source_streams(batches, 30)
    assert sorted(synthetic) == list(range(100))
    passes = [real[k : k + 30] for k in range(0, 300, 30)]
    assert len(passes) == 10
    for p in passes:
        assert sorted(p) == list(range(30))
    # Each recycled pass is a fresh permutation.
    assert len({tuple(p) for p in passes}) == 10


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(2, 12),
    extra_real=st.integers(0, 20),
    extra_synthetic=st.integers(0, 20),
    fraction=fractions,
    seed=st.integers(0, 1000),
)
def test_no_index_twice_in_a_batch_when_sources_hold_three_batches(
    batch: int, extra_real: int, extra_synthetic: int, fraction: float, seed: int
) -> None:
    real_size, synthetic_size = 3 * batch + extra_real, 3 * batch + extra_synthetic
    sampler = MixedSourceBatchSampler(
        real_size, synthetic_size, batch, fraction, seed=seed, steps_per_epoch=40
    )
    batches = epochs(sampler, 0, 2)  # 40 batches an epoch: many passes straddle a batch
    assert all(len(set(b)) == len(b) for b in batches)
    for stream, size in zip(
        source_streams(batches[:40], real_size), (real_size, synthetic_size), strict=True
    ):
        for k in range(0, len(stream) - size + 1, size):
            assert sorted(stream[k : k + size]) == list(range(size))


def test_resume_at_every_position_of_a_many_pass_epoch() -> None:
    def make() -> MixedSourceBatchSampler:
        return MixedSourceBatchSampler(13, 19, 4, 0.5, seed=8, steps_per_epoch=30)

    uninterrupted = list(make())
    for stop in range(30):
        first = make()
        iterator = iter(first)
        for _ in range(stop):
            next(iterator)
        resumed = make()
        resumed.load_state_dict(first.state_dict())
        assert list(resumed) == uninterrupted[stop:]


def test_shuffled_not_sequential() -> None:
    batches = list(MixedSourceBatchSampler(100, 100, 10, 0.5, seed=0))
    real, synthetic = source_streams(batches, 100)
    assert real != sorted(real)
    assert synthetic != sorted(synthetic)


# ------------------------------------------------------------------------------ sampler: ranks


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.0, 1.0, RatioSchedule.linear(0.0, 1.0, steps=17)])
def test_rank_shards_are_disjoint_and_union_is_the_global_batch(
    world: int, fraction: float | RatioSchedule
) -> None:
    local, real_size, synthetic_size = 4, 45, 33
    steps = 15 if isinstance(fraction, RatioSchedule) else None
    single = MixedSourceBatchSampler(
        real_size, synthetic_size, local * world, fraction, seed=7, steps_per_epoch=steps
    )
    ranks = [
        MixedSourceBatchSampler(
            real_size,
            synthetic_size,
            local,
            fraction,
            seed=7,
            rank=r,
            world_size=world,
            steps_per_epoch=steps,
        )
        for r in range(world)
    ]
    assert all(len(s) == len(single) for s in ranks)
    global_batches = epochs(single, 0, 2)
    per_rank = [epochs(s, 0, 2) for s in ranks]
    assert all(len(b) == len(global_batches) for b in per_rank)
    for step, (whole, *shards) in enumerate(zip(global_batches, *per_rank, strict=True)):
        assert all(len(shard) == local for shard in shards)
        merged = [i for shard in shards for i in shard]
        assert Counter(merged) == Counter(whole)  # the shards partition the global batch
        if len(set(whole)) == len(whole):
            assert len(set(merged)) == len(merged)
        real, synthetic = composition(whole, real_size)
        want = shard_counts(real, synthetic, world, offset=step)
        assert [composition(shard, real_size) for shard in shards] == want
    # Across ranks nothing repeats within the first pass of each source.
    for source, size in ((REAL, real_size), (SYNTHETIC, synthetic_size)):
        seen: Counter[int] = Counter()
        total = 0
        for step, whole in enumerate(global_batches):
            need = composition(whole, real_size)[source]
            if total + need > size:
                break
            total += need
            seen.update(
                i for b in per_rank for i in b[step] if (i >= real_size) == (source == SYNTHETIC)
            )
        assert sum(seen.values()) == total
        assert all(c == 1 for c in seen.values())


def test_defaults_come_from_syn2co_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syn2co.distributed, "rank", lambda: 1)
    monkeypatch.setattr(syn2co.distributed, "world_size", lambda: 2)
    sampler = MixedSourceBatchSampler(20, 20, 4, 0.5)
    assert (sampler.rank, sampler.world_size, sampler.global_batch_size) == (1, 2, 8)
    explicit = MixedSourceBatchSampler(20, 20, 4, 0.5, rank=1, world_size=2)
    assert list(sampler) == list(explicit)


# ------------------------------------------------------------------------------ sampler: epochs


def test_set_epoch_reshuffles_deterministically() -> None:
    def draw(epoch: int, seed: int = 5) -> list[list[int]]:
        sampler = MixedSourceBatchSampler(40, 20, 8, 0.25, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(0) == draw(0)
    assert draw(3) == draw(3)
    # Both sources are reshuffled by the epoch and by the seed.
    for a, b in ((draw(0), draw(1)), (draw(0), draw(0, seed=6))):
        real_a, synthetic_a = source_streams(a, 40)
        real_b, synthetic_b = source_streams(b, 40)
        assert real_a != real_b
        assert synthetic_a != synthetic_b
    # Every epoch is a valid epoch: 10 batches of 6 real + 2 synthetic, one synthetic pass
    # (20 // 2 batches) while the real source (40 // 6 batches a pass) starts a second pass.
    for batches in (draw(1), draw(2)):
        assert len(batches) == 10
        real, synthetic = source_streams(batches, 40)
        assert sorted(synthetic) == list(range(20))
        assert sorted(real[:40]) == list(range(40))
        assert len(set(real[40:])) == 20


def test_iterating_again_moves_to_the_next_epoch() -> None:
    sampler = MixedSourceBatchSampler(40, 20, 8, 0.25, seed=5)
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 2
    other = MixedSourceBatchSampler(40, 20, 8, 0.25, seed=5)
    assert epochs(other, 0, 2) == first + second
    other.set_epoch(0)  # going back reproduces epoch 0
    assert list(other) == first


# ------------------------------------------------------------------------------ sampler: resume


def make_sampler(schedule: bool, seed: int = 3) -> MixedSourceBatchSampler:
    fraction: float | RatioSchedule = RatioSchedule.cosine(0.2, 0.9, steps=12) if schedule else 0.4
    return MixedSourceBatchSampler(
        23, 17, 5, fraction, seed=seed, steps_per_epoch=7 if schedule else None
    )


@pytest.mark.parametrize("schedule", [False, True])
def test_resume_mid_epoch_and_across_epoch_boundary(schedule: bool) -> None:
    reference = make_sampler(schedule)
    n = len(reference)
    uninterrupted = epochs(reference, 0, 3)
    for stop in (0, 1, n - 1, n, n + 1, 2 * n + 2):
        sampler = make_sampler(schedule)
        drawn: list[list[int]] = []
        epoch = 0
        while len(drawn) < stop:  # a training loop stopped after `stop` batches
            sampler.set_epoch(epoch)
            for batch in sampler:
                drawn.append(batch)
                if len(drawn) == stop:
                    break
            else:
                epoch += 1
        state = sampler.state_dict()
        assert state["step"] == stop
        assert (state["epoch"], state["position"]) == divmod(stop, n)
        resumed = make_sampler(schedule, seed=99)  # the seed comes from the state
        resumed.load_state_dict(state)
        rest = epochs(resumed, state["epoch"], 3)
        assert drawn + rest == uninterrupted


@pytest.mark.parametrize("schedule", [False, True])
def test_resume_counts_consumed_batches_not_prefetched_ones(schedule: bool) -> None:
    reference = make_sampler(schedule)
    uninterrupted = epochs(reference, 0, 2)
    n = len(reference)
    sampler = make_sampler(schedule)
    sampler.set_epoch(0)
    list(sampler)  # epoch 0 completes
    sampler.set_epoch(1)
    iterator = iter(sampler)
    prefetched = [next(iterator) for _ in range(5)]  # a loader drew 5 batches ahead ...
    state = sampler.state_dict(consumed=2)  # ... but the loop trained on 2
    assert (state["epoch"], state["position"], state["step"]) == (1, 2, n + 2)
    assert prefetched == uninterrupted[n : n + 5]
    resumed = make_sampler(schedule)
    resumed.load_state_dict(state)
    assert epochs(resumed, 1, 2) == uninterrupted[n + 2 :]
    with pytest.raises(ValueError, match=r"consumed: expected at most the 5 batches .*got 6"):
        sampler.state_dict(consumed=6)


def test_resume_with_another_world_size() -> None:
    single = MixedSourceBatchSampler(30, 30, 6, 0.5, seed=2)
    uninterrupted = list(single)
    single.set_epoch(0)
    iterator = iter(single)
    for _ in range(3):
        next(iterator)
    state = single.state_dict()
    shards = []
    for r in range(2):
        sampler = MixedSourceBatchSampler(30, 30, 3, 0.5, seed=2, rank=r, world_size=2)
        sampler.load_state_dict(state)
        shards.append(list(sampler))
    for whole, a, b in zip(uninterrupted[3:], *shards, strict=True):
        assert sorted(a + b) == sorted(whole)


def test_dataloader_with_workers_resumes_from_consumed_batches() -> None:
    real = TensorDataset(torch.arange(80))
    synthetic = TensorDataset(torch.arange(100, 148))
    dataset = MixedDataset(real, synthetic)
    uninterrupted = list(MixedSourceBatchSampler(80, 48, 8, 0.5, seed=9))
    assert len(uninterrupted) == 20
    sampler = MixedSourceBatchSampler(80, 48, 8, 0.5, seed=9)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, prefetch_factor=2)
    consumed = 0
    for (values,), sources in loader:
        expected = uninterrupted[consumed]
        assert sources.tolist() == [int(i >= 80) for i in expected]
        assert values.tolist() == [i if i < 80 else 100 + i - 80 for i in expected]
        consumed += 1
        if consumed == 2:
            break
    assert sampler.position > 2  # the workers prefetched beyond the consumed batches
    resumed = MixedSourceBatchSampler(80, 48, 8, 0.5, seed=9)
    resumed.load_state_dict(sampler.state_dict(consumed=consumed))
    assert list(resumed) == uninterrupted[2:]


def test_load_state_dict_rejects_another_configuration() -> None:
    state = make_sampler(False).state_dict()
    with pytest.raises(ValueError, match=r"state_dict\['real_size'\]: expected 24 .*got 23"):
        MixedSourceBatchSampler(24, 17, 5, 0.4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state_dict\['global_batch_size'\]: expected 10"):
        MixedSourceBatchSampler(23, 17, 5, 0.4, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state_dict: expected the keys .*missing 'epoch'"):
        make_sampler(False).load_state_dict({k: v for k, v in state.items() if k != "epoch"})
    with pytest.raises(ValueError, match=r"state_dict\['step'\]: expected .* = 0, got 3"):
        make_sampler(False).load_state_dict({**state, "step": 3})
    with pytest.raises(TypeError, match=r"state_dict\['epoch'\]: expected an int, got float"):
        make_sampler(False).load_state_dict({**state, "epoch": 1.0})
    with pytest.raises(TypeError, match=r"state_dict: expected a mapping"):
        make_sampler(False).load_state_dict([1, 2])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ sampler: input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"synthetic_size": 0}, ValueError, r"synthetic_size: expected > 0 .* up to 0.5, got 0"),
        ({"real_size": 0}, ValueError, r"real_size: expected > 0 .*got 0"),
        (
            {"synthetic_size": 0, "fraction": RatioSchedule.linear(0.0, 0.1, steps=5)},
            ValueError,
            r"synthetic_size: expected > 0",
        ),
        ({"batch_size": 0}, ValueError, r"batch_size: expected an int >= 1, got 0"),
        ({"fraction": 1.5}, ValueError, r"fraction: expected a number in \[0.0, 1.0\], got 1.5"),
        ({"fraction": "0.5"}, TypeError, r"fraction: expected a number in \[0, 1\] or a Ratio"),
        ({"rank": 2, "world_size": 2}, ValueError, r"rank: expected an int in \[0, world_size"),
        ({"world_size": 0}, ValueError, r"world_size: expected an int >= 1, got 0"),
        ({"seed": -1}, ValueError, r"seed: expected an int >= 0, got -1"),
        ({"drop_last": 1}, TypeError, r"drop_last: expected a bool, got int"),
        ({"steps_per_epoch": 0}, ValueError, r"steps_per_epoch: expected an int >= 1, got 0"),
        (
            {"fraction": RatioSchedule.linear(0.0, 1.0, steps=5)},
            ValueError,
            r"steps_per_epoch: expected an int >= 1 with a non-constant RatioSchedule",
        ),
        ({"batch_size": 64}, ValueError, r"batch_size: expected a global batch whose real"),
    ],
)
def test_sampler_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {"real_size": 20, "synthetic_size": 20, "batch_size": 4}
    args["fraction"] = 0.5
    args.update(kwargs)
    with pytest.raises(error, match=match):
        MixedSourceBatchSampler(**args)  # type: ignore[arg-type]


def test_tiny_sources_recycle_within_a_batch() -> None:
    # A source smaller than its share of one batch is still served (several passes a batch).
    sampler = MixedSourceBatchSampler(2, 50, 10, 0.5, seed=0)
    batches = list(sampler)
    assert len(batches) == 10
    assert all(composition(b, 2) == (5, 5) for b in batches)
    real, _ = source_streams(batches, 2)
    assert all(sorted(real[k : k + 2]) == [0, 1] for k in range(0, len(real), 2))
    assert list(itertools.chain.from_iterable(batches)).count(0) == 25
