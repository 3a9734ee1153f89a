"""NegativeQueue (FIFO, exact restore) and hardness_stats (against plain computations)."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from syn2co.diagnostics import hardness_stats
from syn2co.negatives import NegativeSpec, synthesize, synthetic_logits
from syn2co.queue import NegativeQueue


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def fifo_reference(size: int, init: torch.Tensor, batches: list[torch.Tensor]) -> torch.Tensor:
    """A Python list used as a ring buffer, one row at a time."""
    rows = [r.clone() for r in init]
    ptr = 0
    for batch in batches:
        for r in F.normalize(batch, dim=1):
            rows[ptr] = r
            ptr = (ptr + 1) % size
    return torch.stack(rows)


@pytest.mark.parametrize(("size", "batch"), [(8, 2), (8, 3), (5, 7), (4, 4), (10, 1)])
def test_enqueue_is_fifo_with_wraparound(size: int, batch: int) -> None:
    q = NegativeQueue(size, 3, generator=torch.Generator().manual_seed(0))
    init = q.bank.clone()
    batches = [rand(batch, 3, seed=i) for i in range(6)]
    for b in batches:
        q.enqueue(b)
    assert torch.allclose(q.bank, fifo_reference(size, init, batches), atol=1e-6)
    assert int(q.ptr) == (6 * batch) % size and int(q.count) == 6 * batch


def test_initial_bank_rows_are_unit_vectors() -> None:
    q = NegativeQueue(100, 16)
    assert torch.allclose(q.bank.norm(dim=1), torch.ones(100), atol=1e-6)
    assert q.keys.shape == (100, 16) and q.keys.dtype == torch.float32


def test_state_dict_restores_exactly_and_continues_identically() -> None:
    a = NegativeQueue(7, 4)
    for i in range(3):
        a.enqueue(rand(3, 4, seed=i))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    assert set(a.state_dict()) == {"keys", "ptr", "count"}
    b = NegativeQueue(7, 4, generator=torch.Generator().manual_seed(99))
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    assert torch.equal(a.bank, b.bank) and int(a.ptr) == int(b.ptr)
    for i in range(3, 6):
        a.enqueue(rand(3, 4, seed=i))
        b.enqueue(rand(3, 4, seed=i))
    assert torch.equal(a.bank, b.bank) and int(a.count) == int(b.count) == 18


def test_bank_is_detached_and_keys_are_not_tracked() -> None:
    q = NegativeQueue(4, 2)
    x = rand(2, 2).requires_grad_()
    q.enqueue(x * 2)
    assert not q.bank.requires_grad and q.bank.grad_fn is None


def test_bf16_keys_are_stored_in_queue_dtype() -> None:
    q = NegativeQueue(4, 2)
    q.enqueue(rand(2, 2).bfloat16())
    assert q.bank.dtype == torch.float32


def test_queue_bad_input() -> None:
    with pytest.raises(ValueError, match="size: expected an int >= 1, got 0"):
        NegativeQueue(0, 4)
    with pytest.raises(TypeError, match="dtype: expected a floating-point dtype"):
        NegativeQueue(4, 4, dtype=torch.int64)
    q = NegativeQueue(4, 4)
    with pytest.raises(ValueError, match=r"keys: expected shape \(B, D\) with D=4"):
        q.enqueue(rand(2, 3))
    with pytest.raises(ValueError, match="keys: expected finite values"):
        q.enqueue(torch.full((2, 4), float("nan")))


# -------------------------------------------------------------------------------- diagnostics


def test_hardness_stats_against_plain_computation() -> None:
    q, k, bank = rand(6, 8), rand(6, 8, seed=1), rand(40, 8, seed=2)
    spec = NegativeSpec(n_hard=5, interpolated=4, extrapolated=3)
    syn = synthesize(q, bank, spec, generator=torch.Generator().manual_seed(0))
    stats = hardness_stats(q, k, bank, syn, spec=spec, prefix="h/")
    qn, kn, bn = (F.normalize(t, dim=-1) for t in (q, k, bank))
    pos = (qn * kn).sum(1)
    sim = qn @ bn.T
    top = sim.sort(dim=1, descending=True).values[:, :5]
    assert stats["h/positive/mean"] == pytest.approx(float(pos.mean()), abs=1e-6)
    assert stats["h/positive/max"] == pytest.approx(float(pos.max()), abs=1e-6)
    assert stats["h/bank/mean"] == pytest.approx(float(sim.mean()), abs=1e-6)
    assert stats["h/hard_real/mean"] == pytest.approx(float(top.mean()), abs=1e-6)
    assert stats["h/hard_real/max"] == pytest.approx(float(top.max()), abs=1e-6)
    above = (top > pos[:, None]).float().mean()
    assert stats["h/hard_real/above_positive"] == pytest.approx(float(above), abs=1e-6)
    cos = torch.einsum("bd,bmd->bm", qn, syn)
    assert stats["h/interpolated/mean"] == pytest.approx(float(cos[:, :4].mean()), abs=1e-6)
    assert stats["h/extrapolated/max"] == pytest.approx(float(cos[:, 4:].max()), abs=1e-6)
    assert not any("mixed" in key for key in stats)  # zero-count types are left out
    assert all(isinstance(v, float) for v in stats.values())


def test_interpolated_reported_harder_than_extrapolated() -> None:
    q, k, bank = rand(32, 16), rand(32, 16, seed=1), rand(500, 16, seed=2)
    spec = NegativeSpec(n_hard=16, interpolated=32, extrapolated=32)
    syn = synthesize(q, bank, spec, generator=torch.Generator().manual_seed(0))
    s = hardness_stats(q, k, bank, syn, spec=spec)
    assert s["interpolated/mean"] > s["hard_real/mean"] > s["extrapolated/mean"]


def test_hardness_stats_without_spec_and_with_exclude() -> None:
    keys = rand(5, 8)
    exclude = torch.eye(5, dtype=torch.bool)
    s = hardness_stats(keys, keys, keys, rand(5, 3, 8, seed=1), exclude=exclude, n_hard=2)
    assert "synthetic/mean" in s
    # the positive (cosine 1) is excluded, so no real negative reaches cosine 1
    assert s["hard_real/max"] < 1 - 1e-4
    with pytest.raises(ValueError, match="synthetic: expected M=4"):
        hardness_stats(keys, keys, synthetic=rand(5, 3, 8), spec=NegativeSpec(n_hard=1, mixed=4))


def test_hardness_stats_from_synthetic_cosines_equal_those_from_vectors() -> None:
    """The logits path of the trainer reports the same per-type hardness as the vector path."""
    q, k, bank = rand(6, 16, seed=1), rand(6, 16, seed=2), rand(40, 16, seed=3)
    spec = NegativeSpec(n_hard=8, interpolated=3, extrapolated=2, mixed=2, noisy=1, perturbed=1)
    vectors = synthesize(q, bank, spec, generator=torch.Generator().manual_seed(5))
    cosines = synthetic_logits(q, bank, spec, generator=torch.Generator().manual_seed(5))
    from_vectors = hardness_stats(q, k, bank, vectors, spec=spec)
    from_cosines = hardness_stats(q, k, bank, synthetic_similarity=cosines, spec=spec)
    assert from_vectors.keys() == from_cosines.keys()
    assert "extrapolated/above_positive" in from_vectors
    for key, value in from_vectors.items():
        assert from_cosines[key] == pytest.approx(value, abs=1e-5), key
    with pytest.raises(ValueError, match="synthetic_similarity: expected M=9"):
        hardness_stats(q, k, bank, synthetic_similarity=cosines[:, :4], spec=spec)
    with pytest.raises(ValueError, match="not both"):
        hardness_stats(q, k, bank, vectors, synthetic_similarity=cosines, spec=spec)


def test_tags_travel_with_their_keys() -> None:
    q = NegativeQueue(5, 2, tags=True)
    assert q.bank_tags.tolist() == [-1] * 5
    keys = [rand(3, 2, seed=i) for i in range(3)]
    for i, k in enumerate(keys):
        q.enqueue(k, tags=torch.tensor([10 * i, 10 * i + 1, 10 * i + 2]))
    # ring buffer of 5: rows hold keys 5..8 (batch 1 row 2, batch 2) and key 4 (batch 1 row 1)
    tags = q.bank_tags.tolist()
    for row, tag in enumerate(tags):
        batch, pos = divmod(tag, 10)
        assert torch.allclose(q.bank[row], F.normalize(keys[batch][pos], dim=0), atol=1e-6)
    assert sorted(tags) == [11, 12, 20, 21, 22]
    with pytest.raises(ValueError, match="tags: this queue expects tags of shape"):
        q.enqueue(rand(1, 2))
    with pytest.raises(ValueError, match="tags: this queue expects no tags"):
        NegativeQueue(4, 2).enqueue(rand(1, 2), tags=torch.zeros(1, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"tags: expected an integer tensor of shape \(B,\) = \(2,\)"
    ):
        q.enqueue(rand(2, 2), tags=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="bank_tags: this queue keeps no tags"):
        NegativeQueue(4, 2).bank_tags
