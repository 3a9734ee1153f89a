"""The library on a CUDA device (skipped where there is none): devices, dtypes, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from syn2co.diagnostics import hardness_stats
from syn2co.losses import info_nce, moco_v3_loss
from syn2co.negatives import SYNCO_V2, hardest, positive_mask, similarity, synthesize
from syn2co.queue import NegativeQueue

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_synthesize_stays_on_the_device_and_is_deterministic() -> None:
    dev = torch.device("cuda")
    q, bank = torch.randn(64, 128, device=dev), torch.randn(4096, 128, device=dev)
    out = [
        synthesize(q, bank, SYNCO_V2, generator=torch.Generator(dev).manual_seed(1))
        for _ in range(2)
    ]
    assert out[0].device.type == "cuda" and out[0].shape == (64, 576, 128)
    assert torch.equal(out[0], out[1])
    # a CPU generator drives CUDA data too (draws on the CPU, moves them)
    cpu = synthesize(q, bank, SYNCO_V2, generator=torch.Generator().manual_seed(1))
    assert cpu.device.type == "cuda"
    # same pool as the CPU computation
    assert torch.equal(hardest(q, bank, 8).cpu(), hardest(q.cpu(), bank.cpu(), 8))


def test_losses_under_bf16_autocast_on_cuda() -> None:
    dev = torch.device("cuda")
    lin = torch.nn.Linear(64, 64).to(dev)
    x, k, bank = (torch.randn(s, 64, device=dev) for s in (32, 32, 1024))
    ref = info_nce(lin(x), k, bank)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        q = lin(x)
        sim = similarity(q, bank)
        extra = synthesize(q, bank, SYNCO_V2.replace(n_hard=64), similarity=sim.detach())
        loss = info_nce(q, k, negative_similarity=sim, extra_negatives=extra)
        mv3 = moco_v3_loss(q, k, extra_negatives=extra)
    assert extra.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(mv3)
    assert info_nce(lin(x), k, bank).item() == pytest.approx(ref.item())
    loss.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_identical_embeddings_exact_on_cuda() -> None:
    x = torch.ones(8, 16, device="cuda")
    assert info_nce(x, x, x).item() == pytest.approx(math.log(9), rel=1e-6)
    assert moco_v3_loss(x, x, temperature=0.2).item() == pytest.approx(0.4 * math.log(8), rel=1e-6)


def test_queue_and_diagnostics_on_cuda() -> None:
    queue = NegativeQueue(16, 8, device="cuda")
    queue.enqueue(torch.randn(5, 8, device="cuda"))
    assert queue.bank.device.type == "cuda" and int(queue.ptr) == 5
    q = torch.randn(4, 8, device="cuda")
    stats = hardness_stats(q, q, queue.bank, exclude=None, n_hard=4)
    assert stats["positive/mean"] == pytest.approx(1.0, abs=1e-5)
    mask = positive_mask(4, device="cuda")
    assert mask.device.type == "cuda"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["cuda", "cpu"], ids=["cuda-generator", "cpu-generator"])
def test_compiled_step_equals_eager_on_cuda(where: str) -> None:
    """One graph with the eager draws on a GPU: a CUDA or a CPU generator, zero rows in the
    queue (the unconditional masking of an accelerator), type 4 replayed in backward."""
    from syn2co.negatives import synthetic_logits

    dev = torch.device("cuda")
    spec = SYNCO_V2.replace(n_hard=64)
    g = torch.Generator().manual_seed(0)
    q0, k = torch.randn(32, 64, generator=g).to(dev), torch.randn(32, 64, generator=g).to(dev)
    bank = torch.randn(256, 64, generator=g).to(dev)
    bank[::2] = 0.0  # 128 usable rows for pools of 64

    def step(q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        sim = similarity(q, bank)
        extra = synthetic_logits(q, bank, spec, similarity=sim.detach(), generator=gen)
        vectors = synthesize(q, bank, spec, similarity=sim.detach(), generator=gen)
        loss = info_nce(q, k, negative_similarity=sim, extra_similarity=extra)
        return loss + info_nce(q, k, bank, extra_negatives=vectors)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    generators = [torch.Generator(where) for _ in range(2)]
    results = []
    for fn, gen in zip((compiled, step), generators, strict=True):
        gen.manual_seed(3)
        q = q0.clone().requires_grad_(True)
        loss = fn(q, gen)
        loss.backward()
        results.append((loss.detach(), q.grad, gen.get_state()))
    (loss, grad, state), (loss_e, grad_e, state_e) = results
    torch.testing.assert_close(loss, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_e, rtol=1e-4, atol=1e-6)
    assert torch.equal(state, state_e)
