"""Eager against torch.compile: a training step's loss with synthetic negatives, both paths.

Run from the repository root, with syn2co installed (``pip install -e .``) or
``PYTHONPATH=.``; it prints a markdown report on stdout::

    python benchmarks/compile_table.py --threads 1            # CPU, about 5 minutes
    python benchmarks/compile_table.py --device cuda          # a GPU

At SYNCO_V2's sizes (B=256, K=4096, D=256, N=256, M=576) each step is what a MoCo/MoBY
direction computes, forward and backward to the query, with the draws from a
``torch.Generator`` (reseeded before every call, so every call draws the same numbers):

* ``synthetic_logits``: ``s = similarity(q, bank)``, ``synthetic_logits(q, bank, spec,
  similarity=s.detach())``, ``info_nce(q, k, negative_similarity=s, extra_similarity=...)``;
* ``synthesize``: the same with ``synthesize(...)`` and ``info_nce(..., extra_negatives=...)``.

Each step runs eagerly and through ``torch.compile(step, fullgraph=True)`` (inductor, the
default backend; ``--dynamic`` for ``dynamic=True``). Cold compile: the wall time of the first
compiled call (compilation and one run), with inductor's caches in a new empty directory
(``TORCHINDUCTOR_CACHE_DIR``, set before torch is imported), so nothing is reused from an
earlier run. Before timing, the report checks that the compiled step is one graph
(``torch._dynamo.explain``) and gives the eager loss and gradient. Time: the four cases
round-robin (one call of each in turn, ``--repeats`` times, after one warm-up call each), in
``--rounds`` rounds, each with its medians and the load average at its end. Nothing here
asserts a number.
"""

from __future__ import annotations

import os
import tempfile

# before torch is imported: a cold compile must not find an earlier run's compiled code
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="syn2co-inductor-"))

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from references import make_inputs
from synthesize_table import machine_lines
from synthetic_logits_table import _commit, _fmt
from torch import Tensor

from syn2co.losses import info_nce
from syn2co.negatives import SYNCO_V2, similarity, synthesize, synthetic_logits

BATCH, BANK, DIM = 256, 4096, 256
SPEC = SYNCO_V2
PATHS = ("synthetic_logits", "synthesize")

Step = Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor]


def make_step(path: str) -> Step:
    def step(q: Tensor, k: Tensor, bank: Tensor, g: torch.Generator) -> Tensor:
        sim = similarity(q, bank)
        if path == "synthetic_logits":
            extra = synthetic_logits(q, bank, SPEC, similarity=sim.detach(), generator=g)
            return info_nce(q, k, negative_similarity=sim, extra_similarity=extra)
        vectors = synthesize(q, bank, SPEC, similarity=sim.detach(), generator=g)
        return info_nce(q, k, negative_similarity=sim, extra_negatives=vectors)

    return step


class Case:
    """One timed callable: a step, eager or compiled, forward and backward."""

    def __init__(self, path: str, compiled: bool, device: torch.device, dynamic: bool) -> None:
        self.path, self.compiled = path, compiled
        self.label = f"{path} + info_nce, " + ("compiled" if compiled else "eager")
        q, k, bank = make_inputs(BATCH, BANK, DIM, device)
        self.q, self.k, self.bank = q, k, bank
        self.leaf = q.detach().clone().requires_grad_(True)
        self.generator = torch.Generator(device=device)
        self.device = device
        step = make_step(path)
        self.fn: Step = torch.compile(step, fullgraph=True, dynamic=dynamic) if compiled else step

    def __call__(self) -> tuple[Tensor, Tensor]:
        self.leaf.grad = None
        self.generator.manual_seed(0)
        loss = self.fn(self.leaf, self.k, self.bank, self.generator)
        loss.backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        assert self.leaf.grad is not None
        return loss.detach(), self.leaf.grad


def graph_breaks(path: str, device: torch.device) -> tuple[int, int]:
    """(graphs, graph breaks) of a step as dynamo traces it."""
    q, k, bank = make_inputs(BATCH, BANK, DIM, device)
    out = torch._dynamo.explain(make_step(path))(
        q.requires_grad_(), k, bank, torch.Generator(device=device)
    )
    torch._dynamo.reset()
    return out.graph_count, out.graph_break_count


def time_rounds(
    cases: list[Case], rounds: int, repeats: int
) -> tuple[list[dict[str, float]], list[float]]:
    """Per round, the median ms of each case, and the 1-minute load average at its end."""
    for case in cases:
        case()  # warm-up
    medians, loads = [], []
    for _ in range(rounds):
        times: dict[str, list[float]] = {case.label: [] for case in cases}
        for _ in range(repeats):
            for case in cases:
                t0 = time.perf_counter()
                case()
                times[case.label].append((time.perf_counter() - t0) * 1e3)
        medians.append({label: statistics.median(t) for label, t in times.items()})
        loads.append(os.getloadavg()[0])
    return medians, loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="calls per case per round")
    parser.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()
    print(
        "\n".join(
            [
                f"## Eager and compiled training steps on {device.type}",
                "",
                f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                f"- commit: {_commit()}",
                f"- command: `{Path(sys.executable).name} {' '.join(sys.argv)}`",
                *machine_lines(device),
                f"- load average at start (1/5/15 min): {_fmt(list(os.getloadavg()), 2)}",
                f"- sizes: B={BATCH}, K={BANK}, D={DIM}, SYNCO_V2 (N={SPEC.n_hard}, "
                f"M={SPEC.total}); torch.compile(fullgraph=True, dynamic={args.dynamic}), "
                "inductor, caches in a new directory",
                f"- time: median of {args.repeats} calls per case and round, {args.rounds} "
                "rounds, cases round-robin, wall clock, after one warm-up call each; "
                "forward + backward",
                "",
            ]
        ),
        flush=True,
    )
    rows = []
    cases: list[Case] = []
    for path in PATHS:
        graphs, breaks = graph_breaks(path, device)
        eager, compiled = (Case(path, c, device, args.dynamic) for c in (False, True))
        t0 = time.perf_counter()
        loss_c, grad_c = compiled()
        cold = time.perf_counter() - t0
        loss_e, grad_e = eager()
        diff = (loss_c - loss_e).abs().item(), (grad_c - grad_e).abs().max().item()
        rows.append((path, graphs, breaks, cold, diff))
        cases += [eager, compiled]
    print("| step | graphs, breaks | cold compile (first call), s | compiled - eager: loss, "
          "max gradient |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for path, graphs, breaks, cold, (dl, dg) in rows:
        print(f"| {path} + info_nce | {graphs}, {breaks} | {cold:.1f} | {dl:.1e}, {dg:.1e} |")
    print(flush=True)

    medians, loads = time_rounds(cases, args.rounds, args.repeats)
    print("| step | eager ms, rounds 1/2/3 | compiled ms, rounds 1/2/3 | eager / compiled |")
    print("|---|---:|---:|---:|")
    for path in PATHS:
        eager, compiled = (f"{path} + info_nce, {mode}" for mode in ("eager", "compiled"))
        ratios = [m[eager] / m[compiled] for m in medians]
        print(
            f"| {path} + info_nce | {_fmt([m[eager] for m in medians], 1)} | "
            f"{_fmt([m[compiled] for m in medians], 1)} | {_fmt(ratios, 2)}x |"
        )
    for mode in ("eager", "compiled"):
        ratios = [
            m[f"synthesize + info_nce, {mode}"] / m[f"synthetic_logits + info_nce, {mode}"]
            for m in medians
        ]
        print(
            f"\n- {mode}: synthesize + info_nce takes {_fmt(ratios, 2)}x the time of "
            "synthetic_logits + info_nce in rounds 1/2/3"
        )
    print(
        "\n".join(
            [
                "",
                f"Load average (1 min) at the end of rounds 1/2/3: {_fmt(loads, 2)}.",
                "",
                f"- load average at end (1/5/15 min): {_fmt(list(os.getloadavg()), 2)}",
                f"- total run time: {time.perf_counter() - started:.0f} s",
            ]
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
