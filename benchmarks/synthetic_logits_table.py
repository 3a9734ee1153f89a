"""Time and peak memory: synthetic logits without vectors against the paths that form them.

Run from the repository root, with syn2co installed (``pip install -e .``) or
``PYTHONPATH=.``; it prints a markdown report on stdout (Linux: the memory figures read
``/proc``)::

    python benchmarks/synthetic_logits_table.py                 # CPU, a few minutes
    python benchmarks/synthetic_logits_table.py --no-memory     # timing only

For SYNCO_V1 (B=256, K=65536, D=128) and SYNCO_V2 (B=256, K=4096, D=256), and for a step with
M = 4096 synthetic negatives per query at SYNCO_V2's sizes, each case computes the logits of
the spec's synthetic negatives and backpropagates their sum to the query
(``references.logits_step``):

* ``synthetic_logits``: the logits from inner products, no (B, M, D) tensor;
* ``synthesize`` + cosines: the vectors, then ``norm(q) . norm(s)`` as ``info_nce`` takes them;
* the per-query loop and the published construction (``references.py``), then the same cosines.

syn2co's paths run with their own query-bank similarities and with precomputed ones (as a
training step shares them with the loss; not timed); the references compute their own.

Time: the cases are timed round-robin (one call of each in turn, ``--repeats`` times, after one
warm-up call each), in ``--rounds`` rounds; each round reports its median and the load average
when it ended, so a load change on a shared machine shows. Memory: the growth of the process's
peak resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus
``VmRSS`` before the call) during one call, after a warm-up call, in a fresh subprocess per case
and run, with glibc told to serve every allocation above 64 KiB from ``mmap`` and to return freed
memory at once (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so that the resident
set follows the live tensors. It counts every allocation (torch's and the rest) made during
the call, not the inputs made before it. Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from references import PRESETS, Preset, logits_step, make_inputs
from synthesize_table import machine_lines

from syn2co import value_checks
from syn2co.negatives import SYNCO_V2

#: SYNCO_V2's sizes and 2:2:2:1:1:1 proportions, scaled to M = 4096 per query.
MANY = Preset(
    "SYNCO_V2 at M=4096",
    SYNCO_V2.replace(
        interpolated=910, extrapolated=910, mixed=910, noisy=455, perturbed=455, adversarial=456
    ),
    batch=256,
    bank=4096,
    dim=256,
)
ALL = {p.name: p for p in (*PRESETS, MANY)}


#: Time-only rows: parts of every path that bound the ratios from below.
DIAGNOSTICS = ("top-N selection", "noise draw")


@dataclass(frozen=True)
class Case:
    path: str
    shared: bool
    checks: bool = True

    @property
    def label(self) -> str:
        if self.path == "top-N selection":
            return "diagnostic: the top-N of the (B, K) similarities alone (every path makes it)"
        if self.path == "noise draw":
            return "diagnostic: type 4's noise alone, randn (B, noisy, D) (every path draws it)"
        if self.path == "synthetic_logits":
            what = "syn2co synthetic_logits"
        elif self.path == "synthesize":
            what = "syn2co synthesize + cosines"
        else:
            return f"reference: {self.path} + cosines"
        what += ", precomputed similarities" if self.shared else ", own similarities"
        return what + ("" if self.checks else ", value checks off")

    def step(self, preset: Preset, q: torch.Tensor, bank: torch.Tensor) -> Callable[[], object]:
        """The timed callable."""
        if self.path == "top-N selection":
            sim = q @ bank.T
            return lambda: sim.topk(preset.spec.n_hard, dim=1)
        if self.path == "noise draw":
            shape = (preset.batch, preset.spec.noisy, preset.dim)
            return lambda: torch.randn(shape)
        step = logits_step(q, bank, preset.spec, self.path, shared=self.shared)
        if self.checks:
            return step

        def unchecked() -> object:
            with value_checks(False):
                return step()

        return unchecked


BASELINE = Case("synthetic_logits", False)


def cases_of(preset: Preset) -> list[Case]:
    if preset is MANY:  # the references are not the point here; the vectors are 1 GiB each
        return [Case("synthetic_logits", True), Case("synthesize", True), Case("noise draw", False)]
    return [
        BASELINE,
        Case("synthetic_logits", True),
        Case("synthetic_logits", True, checks=False),
        Case("synthesize", False),
        Case("synthesize", True),
        Case("per-query loop", False),
        Case("published construction", False),
        *(Case(path, False) for path in DIAGNOSTICS),
    ]


# --------------------------------------------------------------------------------------------
# Memory: one call in a fresh process
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_here(preset: Preset, case: Case) -> float:
    """MiB by which one call raises the peak resident set (this process, after a warm-up)."""
    q, _, bank = make_inputs(preset.batch, preset.bank, preset.dim, "cpu")
    step = case.step(preset, q, bank)
    step()  # warm-up: the allocator's and the autograd engine's first-use costs
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    step()
    return (_status_kib("VmHWM") - before) / 1024


def peak_in_subprocess(preset: Preset, case: Case, threads: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    flags = f"{int(case.shared)}{int(case.checks)}"
    argv = [sys.executable, __file__, "--peak", preset.name, case.path, flags]
    argv += ["--threads", str(threads)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run failed: {' '.join(argv)}\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"])


# --------------------------------------------------------------------------------------------
# Time: round-robin rounds
# --------------------------------------------------------------------------------------------


def time_rounds(
    steps: dict[Case, Callable[[], object]], rounds: int, repeats: int
) -> tuple[list[dict[Case, float]], list[float]]:
    """Per round, the median ms of each case, and the 1-minute load average at its end."""
    for step in steps.values():
        step()  # warm-up
    medians, loads = [], []
    for _ in range(rounds):
        times: dict[Case, list[float]] = {case: [] for case in steps}
        for _ in range(repeats):
            for case, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[case].append((time.perf_counter() - t0) * 1e3)
        medians.append({case: statistics.median(t) for case, t in times.items()})
        loads.append(os.getloadavg()[0])
    return medians, loads


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _fmt(values: list[float], digits: int = 0) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def report_preset(
    preset: Preset, rounds: int, repeats: int, memory_runs: int, threads: int
) -> list[str]:
    spec = preset.spec
    counts = "/".join(map(str, spec.counts.values()))
    out = [
        f"### {preset.name}: B={preset.batch}, K={preset.bank}, D={preset.dim}, "
        f"N={spec.n_hard}, M={spec.total} ({counts})",
        "",
    ]
    cases = cases_of(preset)
    q, _, bank = make_inputs(preset.batch, preset.bank, preset.dim, "cpu")
    steps = {c: c.step(preset, q, bank) for c in cases}
    medians, loads = time_rounds(steps, rounds, repeats)
    del steps
    gc.collect()
    peaks = {  # the checks allocate nothing worth a row; the diagnostics are for time
        c: [peak_in_subprocess(preset, c, threads) for _ in range(memory_runs)]
        for c in cases
        if c.path not in DIAGNOSTICS and c.checks
    }
    base = cases[0]
    out += [
        "| case | ms per call, rounds 1/2/3 | time vs first row | peak MiB, runs | memory vs "
        "first row |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in cases:
        ms = [m[c] for m in medians]
        ratio = statistics.median(m[c] / m[base] for m in medians)
        if peaks.get(c):
            mem, mem_ratio = (
                _fmt(peaks[c], 1),
                f"{statistics.median(peaks[c]) / statistics.median(peaks[base]):.1f}x",
            )
        else:
            mem, mem_ratio = "not measured", ""
        out.append(f"| {c.label} | {_fmt(ms)} | {ratio:.2f}x | {mem} | {mem_ratio} |")
    out += ["", f"Load average (1 min) at the end of rounds 1/2/3: {_fmt(loads, 2)}.", ""]
    out += summary(preset, cases, medians, peaks)
    return out


def summary(
    preset: Preset,
    cases: list[Case],
    medians: list[dict[Case, float]],
    peaks: dict[Case, list[float]],
) -> list[str]:
    """The targets, as ratios per round: reference / syn2co (> 1: syn2co faster or smaller)."""
    lines = []
    by_path = {(c.path, c.shared): c for c in cases if c.checks}
    ours, ours_shared = (
        by_path.get(("synthetic_logits", False)),
        by_path[("synthetic_logits", True)],
    )
    for ref, target in (("per-query loop", 10.0), ("published construction", 5.0)):
        if ours is None or (ref, False) not in by_path:
            continue
        speedups = [m[by_path[(ref, False)]] / m[ours] for m in medians]
        met = all(s >= target for s in speedups)
        lines.append(
            f"- {preset.name}, synthetic_logits (own similarities) vs the {ref}: "
            f"{_fmt(speedups, 1)}x faster in rounds 1/2/3 (target >= {target:g}x: "
            f"{'met' if met else 'NOT met'})"
        )
    materialised = by_path[("synthesize", True)]
    if peaks.get(materialised) and peaks.get(ours_shared):
        less = statistics.median(peaks[materialised]) / statistics.median(peaks[ours_shared])
        lines.append(
            f"- {preset.name}, peak memory, synthesize + cosines vs synthetic_logits (both with "
            f"precomputed similarities): {less:.1f}x less (target >= 20x: "
            f"{'met' if less >= 20 else 'NOT met'})"
        )
    speed = [m[materialised] / m[ours_shared] for m in medians]
    lines.append(
        f"- {preset.name}, time, synthesize + cosines vs synthetic_logits (both with precomputed "
        f"similarities): {_fmt(speed, 1)}x faster in rounds 1/2/3"
    )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("all", *ALL), default="all")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per case per round")
    parser.add_argument("--memory-runs", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--no-memory", action="store_true", help="timing only")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--peak", nargs=3, metavar=("PRESET", "PATH", "FLAGS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.peak:
        name, path, flags = args.peak
        peak = peak_here(ALL[name], Case(path, flags[0] == "1", flags[1] == "1"))
        print(json.dumps({"peak_mib": peak}))
        return 0

    started = time.perf_counter()
    head = [
        "## Synthetic logits without materialising: time and peak memory on cpu",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- commit: {_commit()}",
        f"- command: `{Path(sys.executable).name} {' '.join(sys.argv)}`",
        *machine_lines(torch.device("cpu")),
        f"- load average at start (1/5/15 min): {_fmt(list(os.getloadavg()), 2)}",
        f"- time: median of {args.repeats} calls per case and round, {args.rounds} rounds, "
        "cases round-robin, wall clock, after one warm-up call each; forward + backward",
        "- memory: "
        + (
            "not measured"
            if args.no_memory
            else f"peak resident-set growth during one forward + backward call, {args.memory_runs}"
            " fresh processes per case (see the script's docstring)"
        ),
        "",
    ]
    print("\n".join(head), flush=True)
    runs = 0 if args.no_memory else args.memory_runs
    for preset in ALL.values():
        if args.preset in ("all", preset.name):
            lines = report_preset(preset, args.rounds, args.repeats, runs, threads)
            print("\n".join(lines), flush=True)
    tail = [
        f"- load average at end (1/5/15 min): {_fmt(list(os.getloadavg()), 2)}",
        f"- total run time: {time.perf_counter() - started:.0f} s",
    ]
    print("\n".join(tail), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
