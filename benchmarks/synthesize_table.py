"""Timing table: syn2co's synthetic negatives against two references of the same maths.

Run from the repository root, with syn2co installed (``pip install -e .``) or
``PYTHONPATH=.``; it prints a markdown report on stdout::

    python benchmarks/synthesize_table.py --device cpu             # full sizes, a few minutes
    python benchmarks/synthesize_table.py --device cpu --quick     # loop on a query subset
    python benchmarks/synthesize_table.py --device cuda            # on a GPU

For each benchmarked preset (SYNCO_V1 at B=256, K=65536, D=128; SYNCO_V2 at B=256, K=4096,
D=256) it first checks that the references compute what syn2co computes (``references.py``:
exact agreement with a pool of one and fixed coefficients, matching statistics with random
picks), then times three groups of cases and prints medians and ratios to each group's
baseline:

* synthesize: syn2co's ``synthesize`` (own similarities, precomputed similarities, compiled
  with ``torch.compile(fullgraph=True)``) against the per-query loop and the published
  construction (types 1-4 vectorised, 5-6 one sample at a time through autograd);
* types 5-6: ``perturb`` + ``adversarial`` against the published autograd loop, same counts,
  from the same precomputed pool;
* step: the loss alone, synthesize with and without precomputed similarities, and a whole
  forward + backward step, shared (one product with the bank) or naive, in float32 and under
  bf16 autocast.

Cases are timed round-robin (one call of each in turn), so a load change on a shared machine
hits every case alike; on CUDA each call is timed with CUDA events after a synchronize.
Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from references import (  # this folder is sys.path[0] when run as a script
    PRESETS,
    Preset,
    check_exact,
    check_statistics,
    loss_only,
    make_inputs,
    per_query_loop,
    published_full,
    published_types56,
    training_step,
)

from syn2co import value_checks
from syn2co.negatives import (
    adversarial,
    hardest,
    perturb,
    similarity,
    synthesize,
)


@dataclass
class Case:
    """One timed callable; ``scale`` multiplies its times (a loop timed on a query subset)."""

    label: str
    fn: Callable[[], object]
    repeats: int
    warmup: int
    scale: float = 1.0
    note: str = ""


@dataclass
class Group:
    """Cases shown together; ratios are to the case labelled ``baseline``."""

    title: str
    baseline: str
    cases: list[Case]


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _unchecked(fn: Callable[[], object]) -> Callable[[], object]:
    """The same call with syn2co's NaN/inf input checks switched off."""

    def call() -> object:
        with value_checks(False):
            return fn()

    return call


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Milliseconds of one call; on CUDA, between events recorded around it on an idle device."""
    if device.type == "cuda":

        def cuda_time(fn: Callable[[], object]) -> float:
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_time

    def wall_time(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return wall_time


def measure(cases: list[Case], device: torch.device) -> dict[str, list[float]]:
    """Round-robin over the cases until each has its repeats; returns ms per call (scaled)."""
    timer = _timer(device)
    for case in cases:
        for _ in range(case.warmup):
            case.fn()
    times: dict[str, list[float]] = {case.label: [] for case in cases}
    for r in range(max(case.repeats for case in cases)):
        for case in cases:
            if r < case.repeats:
                times[case.label].append(timer(case.fn) * case.scale)
    return times


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    device: torch.device
    repeats: int
    loop_repeats: int
    warmup: int
    loop_queries: int | None
    compile: bool


def synthesize_group(preset: Preset, s: Settings) -> Group:
    spec, dev = preset.spec, s.device
    q, _, bank = make_inputs(preset.batch, preset.bank, preset.dim, dev)
    sim = similarity(q, bank)
    cases = [
        Case("syn2co synthesize", lambda: synthesize(q, bank, spec), s.repeats, s.warmup),
        Case(
            "syn2co synthesize, precomputed similarities",
            lambda: synthesize(q, bank, spec, similarity=sim),
            s.repeats,
            s.warmup,
            note="the (B, K) product is not timed",
        ),
    ]
    if s.compile:

        def fn(query: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            return synthesize(query, negatives, spec)  # generator=None: dynamo takes none

        compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        t0 = time.perf_counter()
        compiled(q, bank)  # compiles here, outside timing
        seconds = time.perf_counter() - t0
        cases.append(
            Case(
                "syn2co synthesize, torch.compile(fullgraph=True)",
                lambda: compiled(q, bank),
                s.repeats,
                s.warmup,
                note=f"compiled in {seconds:.0f} s, not timed",
            )
        )
    n_loop = preset.batch if s.loop_queries is None else min(s.loop_queries, preset.batch)
    q_loop = q[:n_loop]
    scale = preset.batch / n_loop
    note = (
        "" if n_loop == preset.batch else f"timed on {n_loop} of {preset.batch} queries, x{scale:g}"
    )
    cases += [
        Case(
            "reference: per-query loop",
            lambda: per_query_loop(q_loop, bank, spec),
            s.loop_repeats,
            1,
            scale=scale,
            note=note,
        ),
        Case(
            "reference: published construction (1-4 vectorised, 5-6 autograd loop)",
            lambda: published_full(q, bank, spec),
            s.repeats,
            s.warmup,
        ),
    ]
    # What writing the (B, M, D) output costs when its memory is fresh (as a new tensor's is on
    # every call) against reusing the same memory: on a CPU, large allocations come from mmap
    # and every first touch of a page faults; CUDA's caching allocator reuses blocks.
    out_shape = (preset.batch, spec.total, preset.dim)
    reused = torch.empty(out_shape, device=dev)
    cases += [
        Case(
            "diagnostic: fill a new (B, M, D) float32 tensor",
            lambda: torch.empty(out_shape, device=dev).fill_(1.0),
            s.repeats,
            s.warmup,
            note="allocation and first touch of the output's memory",
        ),
        Case(
            "diagnostic: fill the same (B, M, D) tensor again",
            lambda: reused.fill_(1.0),
            s.repeats,
            s.warmup,
            note="the same writes to memory already mapped",
        ),
    ]
    return Group("synthesize, all six types", "syn2co synthesize", cases)


def types56_group(preset: Preset, s: Settings) -> Group:
    spec, dev = preset.spec, s.device
    q, _, bank = make_inputs(preset.batch, preset.bank, preset.dim, dev)
    pool = hardest(q, bank, spec.n_hard)
    c5, c6 = spec.perturbed, spec.adversarial

    def ours() -> object:
        return perturb(q, pool, c5, delta=spec.delta), adversarial(q, pool, c6, eta=spec.eta)

    cases = [
        Case("syn2co perturb + adversarial", ours, s.repeats, s.warmup),
        Case(
            "reference: published autograd loop",
            lambda: published_types56(q, pool, c5, c6, delta=spec.delta, eta=spec.eta),
            s.repeats,
            s.warmup,
        ),
        Case(
            "syn2co perturb + adversarial, value checks off",
            _unchecked(ours),
            s.repeats,
            s.warmup,
            note="syn2co.value_checks(False): the cost of the NaN/inf check of the picked rows",
        ),
    ]
    return Group(
        f"types 5-6, {c5} + {c6} from a precomputed (B, N, D) pool",
        "syn2co perturb + adversarial",
        cases,
    )


def step_group(preset: Preset, s: Settings) -> Group:
    spec, dev = preset.spec, s.device
    q0, k, bank = make_inputs(preset.batch, preset.bank, preset.dim, dev)
    sim = similarity(q0, bank)
    r, wu = s.repeats, s.warmup
    cases = [
        Case(
            "(a) info_nce over the bank alone, float32, forward",
            loss_only(q0, k, bank, backward=False),
            r,
            wu,
        ),
        Case(
            "(a) info_nce over the bank alone, float32, forward + backward",
            loss_only(q0, k, bank, backward=True),
            r,
            wu,
        ),
        Case("(b) synthesize, own similarities", lambda: synthesize(q0, bank, spec), r, wu),
        Case(
            "(c) synthesize, precomputed similarities",
            lambda: synthesize(q0, bank, spec, similarity=sim),
            r,
            wu,
        ),
        Case("similarity(q, bank) alone", lambda: similarity(q0, bank), r, wu),
        Case(
            "(d) shared step, float32, forward + backward",
            training_step(q0, k, bank, spec, shared=True, bf16=False),
            r,
            wu,
        ),
        Case(
            "(d) naive step, float32, forward + backward",
            training_step(q0, k, bank, spec, shared=False, bf16=False),
            r,
            wu,
        ),
        Case(
            "(d) shared step, bf16 autocast, forward + backward",
            training_step(q0, k, bank, spec, shared=True, bf16=True),
            r,
            wu,
        ),
        Case(
            "(d) naive step, bf16 autocast, forward + backward",
            training_step(q0, k, bank, spec, shared=False, bf16=True),
            r,
            wu,
        ),
        Case(
            "(d) shared step, float32, value checks off",
            _unchecked(training_step(q0, k, bank, spec, shared=True, bf16=False)),
            r,
            wu,
            note="syn2co.value_checks(False): no NaN/inf checks, so no device synchronisation",
        ),
    ]
    return Group(
        "step: loss, synthesis and a whole training step (shared = one product with the bank)",
        "(d) shared step, float32, forward + backward",
        cases,
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(device: torch.device) -> list[str]:
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs ({platform.machine()}), "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, "
        f"float32 matmul precision '{torch.get_float32_matmul_precision()}'",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(
            f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}"
        )
    else:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none used"
        lines.append(f"- GPU: {gpu}")
    return lines


def group_rows(group: Group, times: dict[str, list[float]]) -> list[str]:
    base = statistics.median(times[group.baseline])
    rows = [f"| **{group.title}** | | | |"]
    for case in group.cases:
        med = statistics.median(times[case.label])
        label = case.label + (" **(baseline)**" if case.label == group.baseline else "")
        if case.note:
            label += f" [{case.note}]"
        rows.append(f"| {label} | {med:.2f} | {med / base:.2f} | {len(times[case.label])} |")
    return rows


def summary_lines(preset: Preset, medians: dict[str, float]) -> list[str]:
    """The speed targets of docs/benchmarks.md as speed-ups: reference time / syn2co time (> 1:
    syn2co faster)."""
    loop = "reference: per-query loop"
    published = "reference: published construction (1-4 vectorised, 5-6 autograd loop)"
    targets = (
        ("synthesize vs the per-query loop", loop, "syn2co synthesize", 10.0),
        ("synthesize vs the published construction", published, "syn2co synthesize", 1.0),
        (
            "perturb + adversarial vs the published autograd loop",
            "reference: published autograd loop",
            "syn2co perturb + adversarial",
            1.0,
        ),
    )
    lines = []
    for what, ref, ours, target in targets:
        speedup = medians[ref] / medians[ours]
        met = speedup >= target if target > 1 else speedup > target  # ">= 10x", "faster"
        lines.append(
            f"- {preset.name}, {what}: speed-up {speedup:.2f}x "
            f"(target {'>=' if target > 1 else '>'} {target:g}x: {'met' if met else 'NOT met'})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per case (default 5 cpu, 20 cuda)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 repeats and the per-query loop on 32 queries, scaled linearly",
    )
    parser.add_argument(
        "--loop-queries", type=int, default=None, help="time the per-query loop on this many"
    )
    parser.add_argument("--preset", choices=("all", *(p.name for p in PRESETS)), default="all")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile case")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    repeats = args.repeats or (3 if args.quick else 20 if on_gpu else 5)
    loop_queries = args.loop_queries or (32 if args.quick else None)
    settings = Settings(
        device=device,
        repeats=repeats,
        loop_repeats=repeats if on_gpu else min(repeats, 3),  # the loop takes seconds on a CPU
        warmup=3 if on_gpu else 1,
        loop_queries=loop_queries,
        compile=not args.no_compile,
    )
    presets = [p for p in PRESETS if args.preset in ("all", p.name)]
    started = time.perf_counter()

    out = [f"## syn2co synthetic negatives: timing on {args.device}", ""]
    out += [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- command: `{Path(sys.executable).name} {' '.join(sys.argv)}`",
    ]
    out += machine_lines(device)
    out += [f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    if not on_gpu and torch.get_num_threads() > 1 and os.getloadavg()[0] > 0.5:
        # Seen here: with other processes on the cores, torch's intra-op threads wait on each
        # other in every op, which slows the references' thousands of small ops far more
        # (up to 40x) than syn2co's few large ones: the ratios then flatter syn2co.
        out += [
            "- WARNING: the machine is busy; CPU ratios are unreliable with several intra-op "
            "threads (the loops of small ops slow down most). Compare with `--threads 1`."
        ]
    out += [
        f"- timing: median of {repeats} calls per case (per-query loop: "
        f"{settings.loop_repeats}) after {settings.warmup} warm-up call(s), cases timed "
        "round-robin; " + ("CUDA events" if on_gpu else "wall clock"),
        "",
        "Correctness, checked before timing:",
        "",
    ]
    print("\n".join(out), flush=True)
    checks = check_exact(device)
    for preset in presets:
        checks += check_statistics(preset, device)
    print("\n".join(f"- {line}" for line in checks), flush=True)

    summary: list[str] = []
    for preset in presets:
        spec = preset.spec
        print(
            f"\n### {preset.name}: B={preset.batch}, K={preset.bank}, D={preset.dim}, "
            f"N={spec.n_hard}, M={spec.total} ({'/'.join(map(str, spec.counts.values()))})\n",
            flush=True,
        )
        rows = ["| case | median ms | ratio to baseline (time) | calls |", "|---|---:|---:|---:|"]
        medians: dict[str, float] = {}
        for make in (synthesize_group, types56_group, step_group):
            group = make(preset, settings)
            times = measure(group.cases, device)
            rows += group_rows(group, times)
            medians |= {label: statistics.median(t) for label, t in times.items()}
            del group
            if on_gpu:
                torch.cuda.empty_cache()
        print("\n".join(rows), flush=True)
        summary += summary_lines(preset, medians)

    tail = ["", "Summary (ratios of medians; timings are never asserted):", "", *summary]
    tail += [
        "",
        f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- total run time: {time.perf_counter() - started:.0f} s",
    ]
    print("\n".join(tail), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
