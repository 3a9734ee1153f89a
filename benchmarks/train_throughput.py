"""Throughput of the trainer's own training step, on inputs already on the device.

Measures image pairs/s, achieved TFLOP/s (FLOPs counted once by torch's FlopCounterMode on the
same step) and peak memory of ``reference_trainer.engine.Trainer.train_step``: online forward
and backward of both views, target forward, the method's loss (with or without synthetic
negatives), AdamW, EMA update and enqueue. One configuration per process: compiling a second
model in the same process distorts the numbers, so ``--all`` re-runs this script once per
configuration.

Usage::

    python benchmarks/train_throughput.py --arch deit_s --method mocov3 --negatives none
    python benchmarks/train_throughput.py --all --out results.jsonl   # every configuration
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_trainer.config import TrainConfig
from reference_trainer.engine import Trainer


def build(args: argparse.Namespace, out: Path) -> Trainer:
    cfg = TrainConfig.from_dict(
        {
            "arch": args.arch,
            "method": args.method,
            "negatives": args.negatives,
            "img_size": args.img_size,
            "batch_size": args.batch_size,
            "steps": 10_000,
            "dataset": "builtin",
            "builtin_size": args.batch_size * 4,
            "workers": 0,
            "compile": args.compile,
            "precision": args.precision,
            "device": args.device,
            "out": str(out),
        }
    )
    return Trainer(cfg, torch.device(args.device), Console(stderr=True))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    out = Path(args.run_dir) / f"{args.arch}-{args.method}-{args.negatives}-{int(args.compile)}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("checkpoint.pt"):
        stale.unlink()
    t0 = time.perf_counter()
    trainer = build(args, out)
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch_size, 3, args.img_size, args.img_size)
    views = [torch.randn(shape, device=device, generator=gen) for _ in range(2)]

    # FLOPs of one eager step (the counter sees through the autocast region)
    flops = 0
    if not args.compile:
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.train_step(*views)
        flops = counter.get_total_flops()

    for _ in range(args.warmup):  # includes compilation when --compile
        trainer.train_step(*views)
    sync(device)
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(*views)
        sync(device)
        times.append((time.perf_counter() - start) / args.steps)
    step = sorted(times)[len(times) // 2]
    pairs = args.batch_size / step
    result: dict[str, Any] = {
        "arch": args.arch,
        "method": args.method,
        "negatives": args.negatives,
        "synthetic_per_query": trainer.spec.total if trainer.spec else 0,
        "compiled": args.compile,
        "batch": args.batch_size,
        "img_size": args.img_size,
        "precision": args.precision,
        "step_ms": step * 1e3,
        "pairs_per_s": pairs,
        "gflop_per_pair": flops / args.batch_size / 1e9 if flops else None,
        "tflops": flops / step / 1e12 if flops else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "setup_and_warmup_s": warm,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="deit_s")
    p.add_argument("--method", default="mocov3", choices=["moby", "mocov3"])
    p.add_argument("--negatives", default="none")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--run-dir", default="/tmp/syn2co-throughput")
    p.add_argument("--all", action="store_true", help="every configuration, one process each")
    p.add_argument("--archs", default="deit_s,swin_t")
    p.add_argument("--configs", default="mocov3:none,moby:none,moby:synco-v2,mocov3:synco-v2")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--out", default=None, help="append JSON lines here")
    args = p.parse_args()
    if not args.all:
        result = measure(args)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        return
    for mode, arch, config in itertools.product(
        args.modes.split(","), args.archs.split(","), args.configs.split(",")
    ):
        method, negatives = config.split(":")
        cmd = [
            sys.executable,
            __file__,
            "--arch",
            arch,
            "--method",
            method,
            "--negatives",
            negatives,
            "--batch-size",
            str(args.batch_size),
            "--img-size",
            str(args.img_size),
            "--precision",
            args.precision,
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
            "--run-dir",
            args.run_dir,
        ]
        if mode == "compiled":
            cmd.append("--compile")
        if args.out:
            cmd += ["--out", args.out]
        print("+", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
