"""torch.compile: the synthetic negatives and the losses in one graph, with the eager values.

Two kinds of checks, kept small (tiny batches and dimensions, the presets' real counts):

* graph breaks: ``torch._dynamo.explain`` traces each function/preset/generator case once
  (dynamo only, no code generation) and must find one graph and no break;
* values: the compiled function (``fullgraph=True``, so any break is an error) gives the eager
  loss and query gradient from the same generator, and leaves the generator in the same state.
  Most cases compile with ``aot_eager`` (dynamo, the autograd trace and the custom operators,
  without code generation); a few with the default backend, inductor, which is slow on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor

from syn2co.losses import MoBYView, info_nce, moby_loss, moco_v3_loss, nt_xent, nt_xent_mask
from syn2co.negatives import (
    SYNCO_V1,
    SYNCO_V2,
    SYNCO_V2_CONFIG,
    NegativeSpec,
    mochi,
    positive_mask,
    similarity,
    synthesize,
    synthetic_logits,
)

PRESETS: dict[str, NegativeSpec] = {
    "SYNCO_V1": SYNCO_V1,
    "SYNCO_V2": SYNCO_V2,
    "SYNCO_V2_CONFIG": SYNCO_V2_CONFIG,
    "mochi": mochi(),
}

B, D = 2, 8

# loss(query, key, bank, generator) for a spec: the two ways a training step uses the negatives
Step = Callable[[Tensor, Tensor, Tensor, "torch.Generator | None"], Tensor]


def logits_step(spec: NegativeSpec) -> Step:
    def step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
        sim = similarity(q, bank)
        extra = synthetic_logits(q, bank, spec, similarity=sim.detach(), generator=g)
        return info_nce(q, k, negative_similarity=sim, extra_similarity=extra)

    return step


def vectors_step(spec: NegativeSpec) -> Step:
    def step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
        extra = synthesize(q, bank, spec, generator=g)
        return info_nce(q, k, bank, extra_negatives=extra)

    return step


STEPS = {"synthetic_logits": logits_step, "synthesize": vectors_step}


def inputs(
    spec: NegativeSpec, *, batch: int = B, zero_rows: bool = False, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Query (B, D), key (B, D) and a bank (K, D) with K = N + 8; with ``zero_rows`` every
    third row is 0, so fewer than N rows are usable and the picks fold onto them."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(batch, D, generator=g), torch.randn(batch, D, generator=g)
    bank = torch.randn(spec.n_hard + 8, D, generator=g)
    if zero_rows:
        bank[::3] = 0.0
    return q, k, bank


def explain(
    fn: Callable[..., Tensor], *args: object, dynamic: bool = False
) -> tuple[int, int, list[str]]:
    """Graphs, graph breaks and the reasons of the breaks when dynamo traces ``fn(*args)``
    (as ``torch.compile(dynamic=True)`` does with ``dynamic``)."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(assume_static_by_default=not dynamic):
        out = torch._dynamo.explain(fn)(*args)
    return out.graph_count, out.graph_break_count, [str(r.reason)[:300] for r in out.break_reasons]


# ------------------------------------------------------------------------------ graph breaks

# Every preset, path and generator, static; test_compiled_equals_eager compiles the dynamic
# cases with fullgraph=True, where a break would be an error.
BREAK_CASES = [
    (preset, path, seeded, False)
    for preset in PRESETS
    for path in STEPS
    for seeded in (False, True)
]


@pytest.mark.parametrize(
    ("preset", "path", "seeded", "dynamic"),
    BREAK_CASES,
    ids=[
        f"{p}-{f}-{'generator' if s else 'default-generator'}-{'dynamic' if d else 'static'}"
        for p, f, s, d in BREAK_CASES
    ],
)
def test_one_graph_without_breaks(preset: str, path: str, seeded: bool, dynamic: bool) -> None:
    spec = PRESETS[preset]
    q, k, bank = inputs(spec, zero_rows=True)
    g = torch.Generator().manual_seed(1) if seeded else None
    step = STEPS[path](spec)
    graphs, breaks, reasons = explain(step, q.requires_grad_(), k, bank, g, dynamic=dynamic)
    assert (graphs, breaks) == (1, 0), reasons


def moco_v3_step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
    spec = SYNCO_V2.replace(n_hard=B - 1)
    extra = synthetic_logits(q, k, spec, exclude=positive_mask(B), generator=g)
    return moco_v3_loss(q, k, extra_similarity=extra)


def moby_step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
    spec = SYNCO_V2.replace(n_hard=8)
    extra1 = synthetic_logits(q, bank, spec, generator=g)
    extra2 = synthesize(k, bank, spec, generator=g)
    view1 = MoBYView(q, k, bank, extra_similarity=extra1)
    view2 = MoBYView(k, q, bank, extra_negatives=extra2)
    return moby_loss(view1, view2)


def nt_xent_step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
    anchors = torch.cat([q, k])
    spec = SYNCO_V2.replace(n_hard=2 * B - 2)
    extra = synthesize(anchors, anchors.detach(), spec, exclude=nt_xent_mask(B), generator=g)
    return nt_xent(q, k, extra_negatives=extra)


def debiased_step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None) -> Tensor:
    extra = synthetic_logits(q, bank, SYNCO_V2.replace(n_hard=8), generator=g)
    return info_nce(q, k, bank, extra_similarity=extra, tau_plus=0.1, beta=0.5)


LOSSES = {"moco_v3_loss": moco_v3_step, "moby_loss": moby_step, "nt_xent": nt_xent_step}
LOSSES["info_nce debiased"] = debiased_step


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_losses_in_one_graph_without_breaks(loss: str, dynamic: bool) -> None:
    q, k, bank = inputs(SYNCO_V2.replace(n_hard=8))
    g = torch.Generator().manual_seed(1)
    graphs, breaks, reasons = explain(LOSSES[loss], q.requires_grad_(), k, bank, g, dynamic=dynamic)
    assert (graphs, breaks) == (1, 0), reasons


# ------------------------------------------------------------------------------ values


def run(
    step: Callable[..., Tensor], q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss, query gradient and the generator's state after the call, ``g`` seeded with 3 first
    (the default generator with 7 for ``g=None``)."""
    query = q.detach().clone().requires_grad_(True)
    if g is None:
        torch.manual_seed(7)
    else:
        g.manual_seed(3)
    loss = step(query, k, bank, g)
    loss.backward()
    assert query.grad is not None
    state = torch.get_rng_state() if g is None else g.get_state()
    return loss.detach(), query.grad, state


def assert_same(compiled: tuple[Tensor, ...], eager: tuple[Tensor, ...]) -> None:
    (loss, grad, state), (loss_e, grad_e, state_e) = compiled, eager
    torch.testing.assert_close(loss, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_e, rtol=1e-4, atol=1e-6)
    assert torch.equal(state, state_e)  # the same draws: the generator ends where eager leaves it


CASES = [
    # preset, path, seeded, backend, dynamic
    ("SYNCO_V1", "synthetic_logits", False, "aot_eager", True),
    ("SYNCO_V1", "synthesize", True, "aot_eager", False),
    ("SYNCO_V2", "synthetic_logits", True, "aot_eager", False),
    ("SYNCO_V2_CONFIG", "synthetic_logits", True, "aot_eager", True),
    ("SYNCO_V2_CONFIG", "synthesize", False, "aot_eager", True),
    ("mochi", "synthesize", True, "aot_eager", False),
    ("mochi", "synthetic_logits", False, "aot_eager", False),
    ("SYNCO_V2", "synthetic_logits", True, "inductor", False),
    ("SYNCO_V2", "synthetic_logits", False, "inductor", True),
    ("SYNCO_V2", "synthesize", True, "inductor", True),
]


def case_id(preset: str, path: str, seeded: bool, backend: str, dynamic: bool) -> str:
    draws = "generator" if seeded else "default-generator"
    return f"{preset}-{path}-{draws}-{backend}-{'dynamic' if dynamic else 'static'}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "path", "seeded", "backend", "dynamic"), CASES, ids=[case_id(*c) for c in CASES]
)
def test_compiled_equals_eager(
    preset: str, path: str, seeded: bool, backend: str, dynamic: bool
) -> None:
    spec = PRESETS[preset]
    step = STEPS[path](spec)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=dynamic)
    # one generator object per form, reseeded for every call (dynamo guards on its identity)
    g_compiled, g_eager = (torch.Generator() if seeded else None for _ in range(2))
    # fewer usable rows than the pool: the picks fold onto them, in both forms
    q, k, bank = inputs(spec, zero_rows=True)
    assert_same(run(compiled, q, k, bank, g_compiled), run(step, q, k, bank, g_eager))
    compiled_once = counter.frame_count  # (dynamo may restart its analysis: not a recompile)
    assert_same(run(compiled, q, k, bank, g_compiled), run(step, q, k, bank, g_eager))
    if dynamic:  # another batch size: the same graph
        q, k, _ = inputs(spec, batch=B + 1, seed=1)
        assert_same(run(compiled, q, k, bank, g_compiled), run(step, q, k, bank, g_eager))
    assert counter.frame_count == compiled_once  # no recompilation


@pytest.mark.slow
def test_a_generator_reused_across_steps_compiles_once() -> None:
    spec = SYNCO_V2.replace(n_hard=8)
    step = STEPS["synthetic_logits"](spec)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    q, k, bank = inputs(spec)
    streams = {name: torch.Generator().manual_seed(5) for name in ("compiled", "eager")}
    other = {name: torch.Generator().manual_seed(6) for name in ("compiled", "eager")}
    compiled_once = 0
    for step_number in range(3):  # successive steps draw on from where the last one ended
        for gens in (streams, other):  # two generators in turn: each gets its own draws
            got = compiled(q, k, bank, gens["compiled"])
            want = step(q, k, bank, gens["eager"])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if step_number == 0:  # one graph per generator, compiled at its first step
            compiled_once = counter.frame_count
    assert torch.equal(streams["compiled"].get_state(), streams["eager"].get_state())
    assert counter.frame_count == compiled_once


@pytest.mark.slow
def test_per_query_bank_with_an_empty_row_compiles() -> None:
    """A query whose bank rows are all zero draws from -q, compiled as in eager."""
    spec = SYNCO_V2.replace(n_hard=4, interpolated=3, noisy=3)
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(3, D, generator=g), torch.randn(3, 6, D, generator=g)
    bank[0] = 0.0

    def step(query: Tensor, negatives: Tensor, gen: torch.Generator) -> Tensor:
        return synthetic_logits(query, negatives, spec, generator=gen)

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = compiled(q, bank, torch.Generator().manual_seed(1))
    want = step(q, bank, torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want)
    assert bool((got[0, :3] < -0.999).all())  # interpolations of -q: -q itself
