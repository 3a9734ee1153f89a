"""Tensors without data (meta, fake) and the dtype policy of the negatives and the losses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from syn2co.losses import info_nce, moco_v3_loss, nt_xent
from syn2co.negatives import (
    NegativeSpec,
    hardest,
    interpolate,
    similarity,
    synthesize,
    synthetic_logits,
)

SPEC = NegativeSpec(
    n_hard=8, interpolated=3, extrapolated=3, mixed=3, noisy=3, perturbed=3, adversarial=3
)
B, K, D = 4, 32, 16


def calls(
    q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None
) -> dict[str, tuple[Callable[[], Tensor], tuple[int, ...]]]:
    """Each function with the shape it returns."""
    return {
        "similarity": (lambda: similarity(q, bank), (B, K)),
        "hardest": (lambda: hardest(q, bank, 8), (B, 8, D)),
        "interpolate": (lambda: interpolate(q, hardest(q, bank, 8), 3, generator=g), (B, 3, D)),
        "synthesize": (lambda: synthesize(q, bank, SPEC, generator=g), (B, SPEC.total, D)),
        "synthetic_logits": (
            lambda: synthetic_logits(q, bank, SPEC, generator=g),
            (B, SPEC.total),
        ),
        "info_nce": (
            lambda: info_nce(q, k, bank, extra_similarity=synthetic_logits(q, bank, SPEC)),
            (),
        ),
        "nt_xent": (lambda: nt_xent(q, k), ()),
        "moco_v3_loss": (lambda: moco_v3_loss(q, k), ()),
    }


NAMES = list(calls(*(torch.empty(0),) * 3, None))


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_meta_device_without_drawing(name: str) -> None:
    q = torch.empty(B, D, device="meta", requires_grad=True)
    k, bank = torch.empty(B, D, device="meta"), torch.empty(K, D, device="meta")
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    fn, shape = calls(q, k, bank, g)[name]
    out = fn()
    assert out.device.type == "meta" and tuple(out.shape) == shape
    if out.requires_grad:
        out.sum().backward()
        assert q.grad is not None and q.grad.device.type == "meta"
    assert torch.equal(g.get_state(), before)  # nothing drawn


@pytest.mark.parametrize("name", ["synthesize", "synthetic_logits", "info_nce"])
def test_runs_on_fake_tensors(name: str) -> None:
    with FakeTensorMode():
        q = torch.empty(B, D, requires_grad=True)
        k, bank = torch.empty(B, D), torch.empty(K, D)
        fn, shape = calls(q, k, bank, None)[name]
        assert tuple(fn().shape) == shape


def test_float64_inputs_compute_in_float32() -> None:
    g = torch.Generator().manual_seed(0)
    q32, bank32 = torch.randn(B, D, generator=g), torch.randn(K, D, generator=g)
    q64, bank64 = q32.double().requires_grad_(), bank32.double()
    s = synthesize(q64, bank64, SPEC, generator=torch.Generator().manual_seed(1))
    logits = synthetic_logits(q64, bank64, SPEC, generator=torch.Generator().manual_seed(1))
    assert s.dtype == torch.float64 and logits.dtype == torch.float32
    # the same float32 arithmetic as float32 inputs: rounded, no float64 precision
    s32 = synthesize(q32, bank32, SPEC, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, s32.double())
    logits.sum().backward()
    assert q64.grad is not None and q64.grad.dtype == torch.float64
    loss = info_nce(q64, q64.detach(), bank64, extra_negatives=s)
    assert loss.dtype == torch.float32


def test_gradient_is_that_of_the_fixed_samples() -> None:
    """What holds instead of gradcheck: the gradient of norm(q) . s with s held fixed."""
    g = torch.Generator().manual_seed(2)
    q, bank = torch.randn(B, D, generator=g), torch.randn(K, D, generator=g)
    sim = similarity(q, bank)  # a fixed pool
    query = q.clone().requires_grad_()
    logits = synthetic_logits(query, bank, SPEC, similarity=sim, generator=g.manual_seed(3))
    s = synthesize(q, bank, SPEC, similarity=sim, generator=g.manual_seed(3))
    fixed = q.clone().requires_grad_()
    reference = torch.einsum("bd,bmd->bm", F.normalize(fixed, dim=-1), s)
    weights = torch.randn(logits.shape, generator=g)
    (logits * weights).sum().backward()
    (reference * weights).sum().backward()
    assert query.grad is not None and fixed.grad is not None
    torch.testing.assert_close(query.grad, fixed.grad, atol=1e-5, rtol=1e-4)
