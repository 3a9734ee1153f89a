"""Mixing real and synthetic images in every batch (Syn2Co, arXiv:2509.02029).

Syn2Co pretrains on real images, on a diffusion-generated clone of the dataset ("Fake it till
you make it", Sariyildiz et al. 2023), or on both mixed at a chosen ratio. This module provides:

* :class:`RatioSchedule` (from :mod:`syn2co.schedules`): the synthetic fraction of the batch
  as a function of the step (constant, linear or cosine);
* :func:`split_counts`: how many real and synthetic samples a batch of a given size holds
  (largest-remainder rounding), and :func:`shard_counts`: how a global batch's counts are split
  over ranks;
* :class:`MixedDataset`: one map-style dataset over a real and a synthetic dataset that tags
  every sample with its source;
* :class:`MixedSourceBatchSampler`: a batch sampler with the requested composition in every
  batch, the smaller source recycled, disjoint shards across ranks, a deterministic reshuffle
  per epoch and an exact mid-epoch resume.

**Distributed contract.** The requested fraction holds for the *global* batch (the batches of
all ranks together): its synthetic count is ``split_counts(batch_size * world_size, f)``.
Each rank's local batch holds exactly ``batch_size`` samples, and its synthetic count is as close
as possible to the global fraction (the global counts divided by ``world_size``, rounded up or
down; which ranks get the extra sample rotates with the step). The global batch depends only on
the seed, the epoch, the global batch size and the source sizes, so the ranks' shards are
disjoint and their union is the batch a single process with ``batch_size * world_size`` draws.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import ClassVar, Protocol, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from syn2co import distributed
from syn2co._checks import check_int, check_number
from syn2co.schedules import RatioSchedule
from syn2co.seeds import derive_seed

__all__ = [
    "REAL",
    "SYNTHETIC",
    "MapDataset",
    "MixedDataset",
    "MixedSourceBatchSampler",
    "RatioSchedule",  # a schedule of syn2co.schedules, exported here with the sampler it drives
    "shard_counts",
    "split_counts",
]

REAL = 0
"""Source tag of a real sample."""
SYNTHETIC = 1
"""Source tag of a synthetic sample."""

T_co = TypeVar("T_co", covariant=True)

# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------


def split_counts(batch_size: int, fraction: float) -> tuple[int, int]:
    """Split a batch into real and synthetic counts by largest-remainder (Hamilton) rounding.

    The synthetic quota ``fraction * batch_size`` and the real quota
    ``(1 - fraction) * batch_size`` are rounded down, and the one leftover seat (if any) goes
    to the source with the larger fractional remainder; on a tie (remainder 1/2) it goes to the
    real source. With two sources this is rounding the synthetic quota to the nearest integer,
    halves down, so ``|synthetic - fraction * batch_size| <= 1/2``. The quota is computed
    exactly (``fractions.Fraction`` of the float), so the result is deterministic.

    Args:
        batch_size: Number of samples in the batch (>= 1).
        fraction: Synthetic fraction in [0, 1].

    Returns:
        ``(real, synthetic)`` with ``real + synthetic == batch_size``.

    Raises:
        TypeError: If ``batch_size`` is not an int or ``fraction`` is not a number.
        ValueError: If ``batch_size < 1`` or ``fraction`` lies outside [0, 1].

    Example:
        >>> split_counts(256, 0.5)
        (128, 128)
        >>> split_counts(10, 0.26)
        (7, 3)
        >>> split_counts(6, 0.25)
        (5, 1)
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    fraction = check_number("fraction", fraction, low=0.0, high=1.0)
    quota = Fraction(fraction) * batch_size
    synthetic = math.floor(quota)
    if quota - synthetic > Fraction(1, 2):
        synthetic += 1
    return batch_size - synthetic, synthetic


def shard_counts(
    real: int, synthetic: int, world_size: int, *, offset: int = 0
) -> list[tuple[int, int]]:
    """Split a global batch's per-source counts over ranks (largest remainder again).

    Every rank gets ``(real + synthetic) / world_size`` samples; the per-rank counts of each
    source sum exactly to the global counts, and each rank's synthetic count is the exact
    quota ``synthetic / world_size`` rounded down or up (so its real count is too). All
    remainders are equal, so the ``synthetic % world_size`` extra synthetic samples go to the
    ranks ``offset, offset + 1, ...`` (modulo ``world_size``); passing the step as ``offset``
    rotates them so no rank always gets more synthetic samples.

    Args:
        real: Real samples in the global batch (>= 0).
        synthetic: Synthetic samples in the global batch (>= 0).
        world_size: Number of ranks (>= 1), a divisor of ``real + synthetic``.
        offset: First rank that receives an extra synthetic sample (>= 0, taken modulo
            ``world_size``).

    Returns:
        ``[(real_0, synthetic_0), ..., (real_{W-1}, synthetic_{W-1})]`` in rank order.

    Raises:
        TypeError: If an argument is not an int.
        ValueError: If a count is negative, ``world_size < 1`` or ``world_size`` does not
            divide the global batch.

    Example:
        >>> shard_counts(5, 3, 2)
        [(2, 2), (3, 1)]
        >>> shard_counts(5, 3, 2, offset=1)
        [(3, 1), (2, 2)]
    """
    real = check_int("real", real, minimum=0)
    synthetic = check_int("synthetic", synthetic, minimum=0)
    world_size = check_int("world_size", world_size, minimum=1)
    offset = check_int("offset", offset, minimum=0)
    total = real + synthetic
    if total % world_size != 0:
        raise ValueError(
            f"world_size: expected a divisor of the global batch real + synthetic = {total}, "
            f"got {world_size}"
        )
    local = total // world_size
    base, extra = divmod(synthetic, world_size)
    shards = []
    for r in range(world_size):
        syn = base + (1 if (r - offset) % world_size < extra else 0)
        shards.append((local - syn, syn))
    return shards


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class MapDataset(Protocol[T_co]):
    """A map-style dataset: ``len(d)`` and ``d[i]`` for ``0 <= i < len(d)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> T_co: ...


class MixedDataset(Dataset[tuple[T_co, int]]):
    """A real and a synthetic map-style dataset behind one index space, samples tagged by source.

    Indices ``0 .. len(real) - 1`` address the real dataset and
    ``len(real) .. len(real) + len(synthetic) - 1`` the synthetic one (Syn2Co's real/synthetic
    mixing). Item ``i`` is ``(sample, source)`` with ``source`` equal to
    :data:`REAL` (0) or :data:`SYNTHETIC` (1). Use it with :class:`MixedSourceBatchSampler`.

    Args:
        real: The real dataset (may be empty).
        synthetic: The synthetic dataset (may be empty).

    Raises:
        TypeError: If a dataset lacks ``__len__`` or ``__getitem__``.

    Example:
        >>> data = MixedDataset(["r0", "r1"], ["s0"])
        >>> len(data), data.real_size, data.synthetic_size
        (3, 2, 1)
        >>> data[1], data[2]
        (('r1', 0), ('s0', 1))
    """

    REAL: ClassVar[int] = REAL
    SYNTHETIC: ClassVar[int] = SYNTHETIC

    def __init__(self, real: MapDataset[T_co], synthetic: MapDataset[T_co]) -> None:
        for name, value in (("real", real), ("synthetic", synthetic)):
            if not (hasattr(value, "__len__") and hasattr(value, "__getitem__")):
                raise TypeError(
                    f"{name}: expected a map-style dataset (with __len__ and __getitem__), "
                    f"got {type(value).__name__}"
                )
        self.real = real
        self.synthetic = synthetic
        self.real_size = len(real)
        self.synthetic_size = len(synthetic)

    def __len__(self) -> int:
        return self.real_size + self.synthetic_size

    def __getitem__(self, index: int) -> tuple[T_co, int]:
        """The sample at ``index`` and its source tag.

        Args:
            index: Index in ``[0, len(self))``.

        Returns:
            ``(sample, REAL)`` for ``index < real_size``, else ``(sample, SYNTHETIC)``.

        Raises:
            TypeError: If ``index`` is not an integer.
            IndexError: If ``index`` is out of range.
        """
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"index: expected an int, got {type(index).__name__} {index!r}"
            ) from None
        if not 0 <= i < len(self):
            raise IndexError(f"index: expected an int in [0, {len(self)}), got {i}")
        if i < self.real_size:
            return self.real[i], REAL
        return self.synthetic[i - self.real_size], SYNTHETIC


# --------------------------------------------------------------------------------------------
# Batch sampler
# --------------------------------------------------------------------------------------------


class _Stream:
    """One source's index stream in one epoch: pass 0's permutation, then pass 1's, ...

    Pass ``k`` is a permutation seeded by ``(seed, k)``. When the source holds at least three
    global batches (``size >= 3 * window``), the first ``window`` entries of pass ``k + 1`` are
    made disjoint from the last ``window`` entries of pass ``k`` by swapping offending entries
    with entries from the middle of pass ``k + 1`` (never its last ``window`` entries), so a
    global batch that straddles two passes holds no index twice. The repair of pass ``k + 1``
    depends only on the raw permutations of passes ``k`` and ``k + 1``, so any pass can be
    rebuilt on its own (which an exact resume needs).
    """

    def __init__(self, size: int, seed: int, window: int) -> None:
        self.size = size
        self.seed = seed
        self.window = window if size >= 3 * window else 0
        self._perms: dict[int, Tensor] = {}

    def _raw(self, k: int) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed("pass", self.seed, k))
        return torch.randperm(self.size, generator=generator)

    def _separate(self, perm: Tensor, previous_tail: Tensor) -> Tensor:
        w = self.window
        in_tail = torch.zeros(self.size, dtype=torch.bool)
        in_tail[previous_tail] = True
        bad = torch.nonzero(in_tail[perm[:w]]).flatten()
        if bad.numel() == 0:
            return perm
        # At most w - |bad| tail indices sit in the middle, which has size - 2w >= w entries,
        # so at least |bad| middle entries are free to swap in.
        good = w + torch.nonzero(~in_tail[perm[w : self.size - w]]).flatten()[: bad.numel()]
        moved = perm[bad].clone()
        perm[bad] = perm[good]
        perm[good] = moved
        return perm

    def _perm(self, k: int) -> Tensor:
        perm = self._perms.get(k)
        if perm is None:
            perm = self._raw(k)
            if k > 0 and self.window > 0:
                # The repair never moves the last `window` entries, so pass k - 1's tail is
                # that of its raw permutation.
                previous = self._perms.get(k - 1)
                if previous is None:
                    previous = self._raw(k - 1)
                perm = self._separate(perm, previous[self.size - self.window :])
            self._perms[k] = perm
            for old in [j for j in self._perms if j < k - 1]:
                del self._perms[old]
        return perm

    def take(self, offset: int, n: int) -> Tensor:
        """Entries ``offset .. offset + n - 1`` of the stream."""
        pieces = []
        while n > 0:
            k, i = divmod(offset, self.size)
            m = min(n, self.size - i)
            pieces.append(self._perm(k)[i : i + m])
            offset += m
            n -= m
        return torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.long)


class MixedSourceBatchSampler(Sampler[list[int]]):
    """Batches of :class:`MixedDataset` indices with a fixed real/synthetic composition.

    Serves Syn2Co's mixed pretraining. Pass it to a
    ``torch.utils.data.DataLoader`` as ``batch_sampler``; each batch is a list of indices into
    a :class:`MixedDataset` with ``real_size`` real and ``synthetic_size`` synthetic samples.

    **Composition.** Batch ``t`` of epoch ``e`` has the global step
    ``step = e * len(self) + t``. The global batch (``batch_size * world_size`` samples) holds
    ``split_counts(batch_size * world_size, schedule.at(step))`` real and synthetic samples,
    and is split over ranks with ``shard_counts(..., offset=step)`` (see the module docstring
    for the distributed contract). Within a local batch, real indices come first.

    **Streams and recycling.** In epoch ``e`` each source is read as a stream of shuffled
    passes: a random permutation of the source (seeded by ``seed``, ``e``, the source and the
    pass number), then a new permutation when it runs out, and so on. Consecutive global
    batches take consecutive stretches of each stream, so no index repeats within one pass of
    its source. When a source holds at least three global batches, the start of each new pass
    avoids the indices that ended the previous one, so a global batch that straddles two passes
    holds no index twice either (with a smaller source it may). Every epoch starts new passes
    of both sources.

    **Epoch length** (``len(self)``). With ``steps_per_epoch`` given, exactly that many batches.
    Otherwise the fraction must be constant; with ``n_s`` samples of source ``s`` per global
    batch, the epoch is one pass of the source that needs the most batches to be seen once,
    ``max over sources with n_s > 0 of size_s // n_s`` (``drop_last=True``: the tail of that
    source, fewer than ``n_s`` samples, waits for the next epoch) or of
    ``ceil(size_s / n_s)`` (``drop_last=False``: the last batch is completed from that source's
    next permutation, so every sample is seen at least once). The other source is recycled.
    A non-constant :class:`RatioSchedule` needs ``steps_per_epoch``, since the pass lengths
    would change with the ratio.

    **Epochs and resuming.** :meth:`set_epoch` selects the epoch (its shuffle depends only on
    ``seed`` and the epoch); calling it with the current epoch keeps the position, so the usual
    ``sampler.set_epoch(epoch)`` at the top of the epoch loop does not undo a resume.
    Iterating yields the remaining batches of the current epoch and records the position;
    after the last batch the sampler moves on to the next epoch. :meth:`state_dict` and
    :meth:`load_state_dict` resume mid-epoch exactly. A ``DataLoader`` with workers draws
    batches ahead of the training loop, so the sampler's own position runs ahead of what was
    trained on: count the batches the loop consumed since the iteration started and save
    ``sampler.state_dict(consumed=count)``; batches prefetched but not used are then drawn
    again after the resume. Only one iteration may be in progress at a time. A training loop
    that checkpoints mid-epoch::

        sampler.load_state_dict(checkpoint["sampler"])  # when resuming
        for epoch in range(sampler.epoch, epochs):
            sampler.set_epoch(epoch)  # keeps a resumed position
            for consumed, batch in enumerate(loader, start=1):
                ...  # train on batch
                checkpoint["sampler"] = sampler.state_dict(consumed=consumed)

    Args:
        real_size: Number of real samples (indices ``0 .. real_size - 1``).
        synthetic_size: Number of synthetic samples (indices ``real_size ..``).
        batch_size: Samples per batch on each rank (the local batch, as a ``DataLoader``'s
            ``batch_size``); the global batch is ``batch_size * world_size``.
        fraction: Synthetic fraction in [0, 1] or a :class:`RatioSchedule`.
        seed: Shuffling seed, the same on every rank.
        rank: This process's rank; defaults to :func:`syn2co.distributed.rank`.
        world_size: Number of ranks; defaults to :func:`syn2co.distributed.world_size`.
        drop_last: Epoch length rule without ``steps_per_epoch`` (see above).
        steps_per_epoch: Fixed number of batches per epoch, or None.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a size or count is out of range, a source that the fraction needs is
            empty, or the epoch would hold no batch.

    Example:
        >>> sampler = MixedSourceBatchSampler(6, 4, batch_size=4, fraction=0.5, seed=1)
        >>> len(sampler)  # one pass of the 6 real samples, 2 per batch
        3
        >>> for batch in sampler:
        ...     print(sum(i < 6 for i in batch), sum(i >= 6 for i in batch))
        2 2
        2 2
        2 2
    """

    def __init__(
        self,
        real_size: int,
        synthetic_size: int,
        batch_size: int,
        fraction: float | RatioSchedule,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.real_size = check_int("real_size", real_size, minimum=0)
        self.synthetic_size = check_int("synthetic_size", synthetic_size, minimum=0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if isinstance(fraction, RatioSchedule):
            self.schedule = fraction
        elif isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(
                f"fraction: expected a number in [0, 1] or a RatioSchedule, "
                f"got {type(fraction).__name__} {fraction!r}"
            )
        else:
            self.schedule = RatioSchedule.constant(
                check_number("fraction", fraction, low=0.0, high=1.0)
            )
        self.seed = check_int("seed", seed, minimum=0)
        self.world_size = check_int(
            "world_size", distributed.world_size() if world_size is None else world_size, minimum=1
        )
        self.rank = check_int("rank", distributed.rank() if rank is None else rank, minimum=0)
        if self.rank >= self.world_size:
            raise ValueError(
                f"rank: expected an int in [0, world_size = {self.world_size}), got {self.rank}"
            )
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last: expected a bool, got {type(drop_last).__name__}")
        self.drop_last = drop_last
        if steps_per_epoch is not None:
            steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
        self.steps_per_epoch = steps_per_epoch
        self.global_batch_size = self.batch_size * self.world_size

        low, high = self.schedule.bounds
        if self.synthetic_size == 0 and high > 0.0:
            raise ValueError(
                f"synthetic_size: expected > 0 for a synthetic fraction up to {high}, got 0 "
                f"(use fraction 0.0 without synthetic data)"
            )
        if self.real_size == 0 and low < 1.0:
            raise ValueError(
                f"real_size: expected > 0 for a synthetic fraction down to {low} (a real "
                f"fraction up to {1.0 - low}), got 0 (use fraction 1.0 without real data)"
            )
        self._constant_counts: tuple[int, int] | None = (
            split_counts(self.global_batch_size, self.schedule.start)
            if self.schedule.is_constant
            else None
        )
        self._length = self._epoch_length()

        self._epoch = 0
        self._position = 0
        self._iter_start = (0, 0)
        self._iter_yielded = 0

    # ---------------------------------------------------------------------------- internals

    def _epoch_length(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        if self._constant_counts is None:
            raise ValueError(
                "steps_per_epoch: expected an int >= 1 with a non-constant RatioSchedule (the "
                "pass length of each source changes with the ratio), got None"
            )
        length = 0
        for size, need in zip(
            (self.real_size, self.synthetic_size), self._constant_counts, strict=True
        ):
            if need > 0:
                length = max(length, size // need if self.drop_last else -(-size // need))
        if length == 0:
            real, synthetic = self._constant_counts
            raise ValueError(
                f"batch_size: expected a global batch whose real ({real}) and synthetic "
                f"({synthetic}) shares fit in their sources (real_size={self.real_size}, "
                f"synthetic_size={self.synthetic_size}) with drop_last=True, got "
                f"batch_size={self.batch_size} x world_size={self.world_size}; lower it, set "
                f"drop_last=False or set steps_per_epoch"
            )
        return length

    def _normalized(self, epoch: int, position: int) -> tuple[int, int]:
        return (epoch + 1, 0) if position >= self._length else (epoch, position)

    def _offsets(self, epoch: int, position: int) -> tuple[int, int]:
        """Samples of each source consumed by the first ``position`` global batches."""
        if self._constant_counts is not None:
            real, synthetic = self._constant_counts
            return position * real, position * synthetic
        real = synthetic = 0
        for t in range(position):
            r, s = self.global_counts(epoch * self._length + t)
            real += r
            synthetic += s
        return real, synthetic

    # ---------------------------------------------------------------------------- public API

    def __len__(self) -> int:
        """Batches in one full epoch (an iteration resumed mid-epoch yields fewer)."""
        return self._length

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._normalized(self._epoch, self._position)[0]

    @property
    def position(self) -> int:
        """Batches of the current epoch already drawn."""
        return self._normalized(self._epoch, self._position)[1]

    def global_counts(self, step: int) -> tuple[int, int]:
        """``(real, synthetic)`` counts of the global batch at a global step.

        Args:
            step: Global step (``epoch * len(self) + batch``), >= 0.

        Returns:
            ``split_counts(batch_size * world_size, schedule.at(step))``.

        Example:
            >>> MixedSourceBatchSampler(8, 8, 4, 0.25, world_size=2, rank=0).global_counts(0)
            (6, 2)
        """
        step = check_int("step", step, minimum=0)
        if self._constant_counts is not None:
            return self._constant_counts
        return split_counts(self.global_batch_size, self.schedule.at(step))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; its order depends only on ``seed`` and ``epoch``.

        Selecting another epoch starts it from its first batch; selecting the current epoch
        keeps the position (so a resumed run continues mid-epoch).

        Args:
            epoch: Epoch number (>= 0).

        Example:
            >>> sampler = MixedSourceBatchSampler(8, 8, 4, 0.5)
            >>> sampler.set_epoch(3)
            >>> sampler.epoch, sampler.position
            (3, 0)
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if epoch != self.epoch:
            self._epoch, self._position = epoch, 0
        else:
            self._epoch, self._position = self.epoch, self.position
        self._iter_start = (self._epoch, self._position)
        self._iter_yielded = 0

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the remaining batches of the current epoch (see the class docstring)."""
        epoch, position = self._normalized(self._epoch, self._position)
        self._epoch, self._position = epoch, position
        self._iter_start = (epoch, position)
        self._iter_yielded = 0
        return self._batches(epoch, position)

    def _batches(self, epoch: int, position: int) -> Iterator[list[int]]:
        real_offset, synthetic_offset = self._offsets(epoch, position)
        window = self.global_batch_size
        real_stream = _Stream(
            self.real_size, derive_seed("sampler", self.seed, epoch, REAL), window
        )
        synthetic_stream = _Stream(
            self.synthetic_size, derive_seed("sampler", self.seed, epoch, SYNTHETIC), window
        )
        for t in range(position, self._length):
            step = epoch * self._length + t
            real, synthetic = self.global_counts(step)
            shards = shard_counts(real, synthetic, self.world_size, offset=step)
            real_before = sum(r for r, _ in shards[: self.rank])
            synthetic_before = sum(s for _, s in shards[: self.rank])
            local_real, local_synthetic = shards[self.rank]
            real_idx = real_stream.take(real_offset + real_before, local_real)
            synthetic_idx = synthetic_stream.take(
                synthetic_offset + synthetic_before, local_synthetic
            )
            real_offset += real
            synthetic_offset += synthetic
            batch = real_idx.tolist() + (synthetic_idx + self.real_size).tolist()
            self._position = t + 1
            self._iter_yielded += 1
            yield batch
        self._epoch, self._position = epoch + 1, 0

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """The position to resume from, as plain ints.

        Args:
            consumed: Batches the training loop consumed since the current iteration started
                (i.e. since the last ``iter(sampler)``, which a ``DataLoader`` calls at the top
                of each epoch). Pass it whenever a ``DataLoader`` prefetches: the state then
                points just after the last batch actually trained on. None uses the sampler's
                own position (right when the sampler is iterated directly).

        Returns:
            ``{"epoch", "position", "step", "seed", "real_size", "synthetic_size",
            "global_batch_size", "steps_per_epoch"}``: ``position`` batches of ``epoch``
            are done, ``step = epoch * steps_per_epoch + position`` is the global step of the
            next batch (it drives the ratio schedule), and the sizes guard against resuming
            with another configuration.

        Raises:
            ValueError: If ``consumed`` exceeds the batches drawn since the iteration started.

        Example:
            >>> sampler = MixedSourceBatchSampler(8, 8, 4, 0.5)
            >>> it = iter(sampler)
            >>> _ = next(it), next(it), next(it)
            >>> sampler.state_dict(consumed=1)["position"]
            1
        """
        if consumed is None:
            epoch, position = self._normalized(self._epoch, self._position)
        else:
            consumed = check_int("consumed", consumed, minimum=0)
            if consumed > self._iter_yielded:
                raise ValueError(
                    f"consumed: expected at most the {self._iter_yielded} batches drawn since "
                    f"the iteration started, got {consumed}"
                )
            start_epoch, start_position = self._iter_start
            epoch, position = self._normalized(start_epoch, start_position + consumed)
        return {
            "epoch": epoch,
            "position": position,
            "step": epoch * self._length + position,
            "seed": self.seed,
            "real_size": self.real_size,
            "synthetic_size": self.synthetic_size,
            "global_batch_size": self.global_batch_size,
            "steps_per_epoch": self._length,
        }

    def load_state_dict(self, state_dict: Mapping[str, object]) -> None:
        """Resume from :meth:`state_dict`: the next batches are exactly those that followed.

        Restores the epoch, the position in it and the seed (the ratio schedule's step follows
        from them).

        The state does not depend on the rank or on how the global batch is split, so a run
        may resume with another ``world_size`` as long as the global batch size is unchanged.

        Args:
            state_dict: A mapping returned by :meth:`state_dict`.

        Raises:
            TypeError: If ``state_dict`` is not a mapping or an entry is not an int.
            ValueError: If an entry is missing, or the sizes, the global batch or the epoch
                length differ from this sampler's, or ``step`` is inconsistent.

        Example:
            >>> a = MixedSourceBatchSampler(8, 8, 4, 0.5, seed=3)
            >>> it = iter(a)
            >>> _ = next(it)
            >>> b = MixedSourceBatchSampler(8, 8, 4, 0.5)
            >>> b.load_state_dict(a.state_dict())
            >>> list(b) == list(it)
            True
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict: expected a mapping from state_dict(), got {type(state_dict).__name__}"
            )
        keys = (
            "epoch",
            "position",
            "step",
            "seed",
            "real_size",
            "synthetic_size",
            "global_batch_size",
            "steps_per_epoch",
        )
        values: dict[str, int] = {}
        for key in keys:
            if key not in state_dict:
                raise ValueError(
                    f"state_dict: expected the keys {', '.join(keys)}, got "
                    f"{', '.join(map(str, state_dict))} (missing {key!r})"
                )
            values[key] = check_int(f"state_dict[{key!r}]", state_dict[key], minimum=0)
        expected = {
            "real_size": self.real_size,
            "synthetic_size": self.synthetic_size,
            "global_batch_size": self.global_batch_size,
            "steps_per_epoch": self._length,
        }
        for key, value in expected.items():
            if values[key] != value:
                raise ValueError(
                    f"state_dict[{key!r}]: expected {value} (this sampler's), got {values[key]}"
                )
        epoch, position = values["epoch"], values["position"]
        if position >= self._length:
            raise ValueError(
                f"state_dict['position']: expected an int in [0, {self._length}), got {position}"
            )
        if values["step"] != epoch * self._length + position:
            raise ValueError(
                f"state_dict['step']: expected epoch * steps_per_epoch + position = "
                f"{epoch * self._length + position}, got {values['step']}"
            )
        self.seed = values["seed"]
        self._epoch, self._position = epoch, position
        self._iter_start = (epoch, position)
        self._iter_yielded = 0
