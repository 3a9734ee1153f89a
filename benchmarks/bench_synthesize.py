"""pytest-benchmark: syn2co's synthetic negatives against two references of the same maths.

Not part of the test suite. Run from the repository root::

    pytest benchmarks/bench_synthesize.py --benchmark-only -p no:cacheprovider
    SYN2CO_BENCH_DEVICE=cuda pytest benchmarks/ --benchmark-only -p no:cacheprovider

``SYN2CO_BENCH_DEVICE`` is ``cpu`` or ``cuda`` (default: cuda when available);
``SYN2CO_BENCH_ROUNDS`` sets the timed rounds per case (default 5 on cpu, 20 on cuda; the
per-query loop gets at most 2 on cpu, where one call takes seconds).

Groups, per preset (SYNCO_V1 at B=256, K=65536, D=128; SYNCO_V2 at B=256, K=4096, D=256):
``synthesize`` (syn2co eager, with precomputed similarities, compiled; the per-query loop; the
published construction), ``types 5-6`` (perturb + adversarial against the published autograd
loop), ``step`` (the loss alone; a whole forward + backward step, shared or naive, float32
or bf16 autocast) and ``logits`` (the synthetic negatives' logits, forward + backward to the
query: ``synthetic_logits`` against ``synthesize`` + cosines, the per-query loop and the
published construction). The references and the checks that they compute the same maths
live in ``references.py``; the checks run once per preset and pytest run, outside timing. For a
markdown table of medians and ratios, run ``python benchmarks/synthesize_table.py`` (and
``python benchmarks/synthetic_logits_table.py`` for the logits, with peak memory). Timings
are never asserted.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from references import (
    LOGITS_PATHS,
    PRESETS,
    Preset,
    check_exact,
    check_statistics,
    logits_step,
    loss_only,
    make_inputs,
    per_query_loop,
    published_full,
    published_types56,
    training_step,
)
from torch import Tensor

from syn2co.negatives import adversarial, hardest, perturb, similarity, synthesize


@pytest.fixture(scope="session")
def device() -> torch.device:
    name = os.environ.get("SYN2CO_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@pytest.fixture(scope="session")
def rounds(device: torch.device) -> int:
    return int(os.environ.get("SYN2CO_BENCH_ROUNDS", "20" if device.type == "cuda" else "5"))


@pytest.fixture(scope="session")
def exact(device: torch.device) -> None:
    check_exact(device)  # raises if a reference disagrees with syn2co


class Inputs:
    """A preset's tensors on the device, checked once against the references."""

    def __init__(self, preset: Preset, device: torch.device) -> None:
        check_statistics(preset, device)
        self.preset, self.spec = preset, preset.spec
        self.q, self.k, self.bank = make_inputs(preset.batch, preset.bank, preset.dim, device)
        self.sim = similarity(self.q, self.bank)
        self._pool: Tensor | None = None

    @property
    def pool(self) -> Tensor:
        if self._pool is None:  # (B, N, D): 134 MB for SYNCO_V1, made only when needed
            self._pool = hardest(self.q, self.bank, self.spec.n_hard)
        return self._pool


@pytest.fixture(scope="module", params=PRESETS, ids=[p.name for p in PRESETS])
def inputs(request: pytest.FixtureRequest, device: torch.device, exact: None) -> Inputs:
    return Inputs(request.param, device)


def run(
    benchmark: BenchmarkFixture,
    fn: Callable[[], object],
    group: str,
    device: torch.device,
    rounds: int,
) -> None:
    """Times ``fn`` with pytest-benchmark; on CUDA each call ends with a synchronize."""
    benchmark.group = group
    if device.type == "cuda":

        def target() -> None:
            fn()
            torch.cuda.synchronize(device)

    else:

        def target() -> None:
            fn()

    warmup = 3 if device.type == "cuda" else 1
    benchmark.pedantic(target, rounds=rounds, warmup_rounds=warmup, iterations=1)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------
# synthesize, all six types
# --------------------------------------------------------------------------------------------


def test_synthesize(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x = inputs
    fn = lambda: synthesize(x.q, x.bank, x.spec)  # noqa: E731
    run(benchmark, fn, f"{x.preset.name} synthesize", device, rounds)


def test_synthesize_precomputed_similarity(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x = inputs
    fn = lambda: synthesize(x.q, x.bank, x.spec, similarity=x.sim)  # noqa: E731
    run(benchmark, fn, f"{x.preset.name} synthesize", device, rounds)


def test_synthesize_compiled(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x = inputs

    def eager(q: Tensor, bank: Tensor) -> Tensor:
        return synthesize(q, bank, x.spec)  # generator=None: dynamo takes no Generator

    compiled = torch.compile(eager, fullgraph=True, dynamic=False)
    compiled(x.q, x.bank)  # compiles here, outside timing
    run(benchmark, lambda: compiled(x.q, x.bank), f"{x.preset.name} synthesize", device, rounds)


def test_reference_per_query_loop(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x = inputs
    n = rounds if device.type == "cuda" else min(rounds, 2)  # seconds per call on a CPU
    fn = lambda: per_query_loop(x.q, x.bank, x.spec)  # noqa: E731
    run(benchmark, fn, f"{x.preset.name} synthesize", device, n)


def test_reference_published(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x = inputs
    fn = lambda: published_full(x.q, x.bank, x.spec)  # noqa: E731
    run(benchmark, fn, f"{x.preset.name} synthesize", device, rounds)


# --------------------------------------------------------------------------------------------
# types 5-6 from a precomputed pool
# --------------------------------------------------------------------------------------------


def test_types56_syn2co(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x, s = inputs, inputs.spec
    pool = x.pool

    def fn() -> object:
        return perturb(x.q, pool, s.perturbed, delta=s.delta), adversarial(
            x.q, pool, s.adversarial, eta=s.eta
        )

    run(benchmark, fn, f"{x.preset.name} types 5-6", device, rounds)


def test_types56_reference_published(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int
) -> None:
    x, s = inputs, inputs.spec
    pool = x.pool

    def fn() -> object:
        return published_types56(x.q, pool, s.perturbed, s.adversarial, delta=s.delta, eta=s.eta)

    run(benchmark, fn, f"{x.preset.name} types 5-6", device, rounds)


# --------------------------------------------------------------------------------------------
# the loss and a whole training step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
def test_info_nce_bank_only(
    benchmark: BenchmarkFixture, inputs: Inputs, device: torch.device, rounds: int, backward: bool
) -> None:
    x = inputs
    fn = loss_only(x.q, x.k, x.bank, backward=backward)
    run(benchmark, fn, f"{x.preset.name} step", device, rounds)


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "naive"])
def test_training_step(
    benchmark: BenchmarkFixture,
    inputs: Inputs,
    device: torch.device,
    rounds: int,
    shared: bool,
    bf16: bool,
) -> None:
    x = inputs
    fn = training_step(x.q, x.k, x.bank, x.spec, shared=shared, bf16=bf16)
    run(benchmark, fn, f"{x.preset.name} step", device, rounds)


# --------------------------------------------------------------------------------------------
# the synthetic negatives' logits, forward + backward
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["own-similarities", "precomputed"])
@pytest.mark.parametrize("path", LOGITS_PATHS)
def test_logits_step(
    benchmark: BenchmarkFixture,
    inputs: Inputs,
    device: torch.device,
    rounds: int,
    path: str,
    shared: bool,
) -> None:
    x = inputs
    if shared and path not in ("synthetic_logits", "synthesize"):
        pytest.skip("the references compute their own similarities")
    slow = path == "per-query loop" and device.type != "cuda"
    fn = logits_step(x.q, x.bank, x.spec, path, shared=shared)
    run(benchmark, fn, f"{x.preset.name} logits", device, min(rounds, 2) if slow else rounds)
