"""Short pretraining runs with kNN evaluation, for a grid of configurations.

Compares the demo's and the learning test's settings with variants of them, and methods with
and without synthetic negatives, at equal steps. Each configuration pretrains from scratch, then
the weighted kNN (k=20) of the pretrained backbone and of the same backbone at random
initialisation is measured on the validation split.

Usage::

    python benchmarks/learning_sweep.py --grid demo --device cpu --out sweep.jsonl
    python benchmarks/learning_sweep.py --grid generators --seeds 0,1,2 --device cpu
    python benchmarks/learning_sweep.py --grid cifar10 --data /tmp/cifar10 --device cuda

``--seeds`` repeats every configuration with each seed (the seed of the whole run: weights,
data order, augmentation and synthetic negatives), so that a difference can be read against
the spread between seeds.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_trainer.config import TrainConfig
from reference_trainer.data.pipeline import eval_loader
from reference_trainer.demo import SMALL_OVERRIDES, demo_config
from reference_trainer.engine import train
from reference_trainer.evaluate import knn_probe
from reference_trainer.pretrained import load_backbone, random_backbone

# The learning test's run (tests/trainer/test_learning.py): well under a minute on 2 CPU cores.
SMALL = dict(SMALL_OVERRIDES)


def grid(name: str) -> dict[str, dict[str, Any]]:
    if name == "demo":
        return {
            "demo": {},
            "demo-no-negatives": {"negatives": "none"},
            "demo-negatives-from-100": {"negatives_start": 100},
            "demo-lr1e-3": {"lr": 1e-3},
            "demo-lr5e-4": {"lr": 5e-4},
            "demo-queue512": {"queue_size": 512},
            "demo-mocov3": {"method": "mocov3"},
            "demo-mocov3-no-negatives": {"method": "mocov3", "negatives": "none"},
            "demo-patch4": {"patch_size": 4},
            "small": dict(SMALL, negatives="synco-v2"),
            "small-no-negatives": dict(SMALL, negatives="none"),
            "small-mocov3": dict(SMALL, method="mocov3", negatives="none"),
        }
    if name == "generators":
        # "Synthetic Data Can Also Teach" at equal steps: the same encoder and schedule, with
        # and without the jointly learned generators (a quarter of each batch generated).
        # steps from --steps (300 by default)
        base = {k: v for k, v in SMALL.items() if k != "steps"}
        base.update(negatives="none", builtin_size=4000, batch_size=64, queue_size=1024, lr=1e-3)
        return {
            "moby": base,
            "moby-hard-samples": dict(base, generator="hard-samples"),
            "moby-hard-pairs": dict(base, generator="hard-pairs"),
            "moby-both": dict(base, generator="both"),
            # the same, with the generated images' keys kept out of the queues
            "moby-hard-samples-real-queue": dict(
                base, generator="hard-samples", generator_keys_enqueued=False
            ),
            "moby-hard-pairs-real-queue": dict(
                base, generator="hard-pairs", generator_keys_enqueued=False
            ),
        }
    if name == "cifar10":
        base = {
            "dataset": "imagefolder",
            "img_size": 32,
            "arch": "deit_s",
            "depth": 6,
            "embed_dim": 384,
            "num_heads": 6,
            "patch_size": 4,
            "batch_size": 256,
            "proj_hidden": 2048,
            "proj_dim": 256,
            "queue_size": 4096,
            "drop_path": 0.1,
        }
        return {
            "cifar10-moby": dict(base, negatives="none"),
            "cifar10-moby-synco-v2": dict(base, negatives="synco-v2"),
        }
    raise SystemExit(f"unknown grid {name}")


def run_one(
    name: str, overrides: dict[str, Any], seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    out = Path(args.root) / f"{name}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = demo_config(out, steps=args.steps, negatives="synco-v2", workers=args.workers)
    changes = dict(overrides, device=args.device, precision=args.precision, seed=seed)
    if args.data:
        changes.update(data=f"{args.data}/train", val_data=f"{args.data}/test")
    if args.epochs and "steps" not in overrides:
        changes.update(steps=None, epochs=args.epochs)
    cfg = cfg.updated(changes, source=name)
    console = Console(stderr=True)
    start = time.perf_counter()
    summary = train(cfg, console=console, show_progress=False)
    seconds = time.perf_counter() - start
    saved = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    train_loader = eval_loader(saved, "train", workers=args.workers)
    val_loader = eval_loader(saved, "val", workers=args.workers)
    n_classes = train_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    device = torch.device(args.device)
    knn = {}
    for label, backbone in (
        ("random", random_backbone(saved)),
        ("pretrained", load_backbone(out)[0]),
    ):
        res = knn_probe(
            backbone.to(device),
            train_loader,
            val_loader,
            num_classes=n_classes,
            device=device,
            ks=(20,),
        )
        knn[label] = res.top1[20]
    return {
        "name": name,
        "seed": seed,
        "overrides": overrides,
        "steps": summary.step,
        "last_loss": summary.last_loss,
        "train_seconds": seconds,
        "pairs_per_s": summary.pairs_per_second,
        "knn_random": knn["random"],
        "knn_pretrained": knn["pretrained"],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "date": datetime.date.today().isoformat(),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--grid", default="demo")
    p.add_argument("--only", default=None, help="comma-separated names from the grid")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", default=None, help="imagefolder root with train/ and test/")
    p.add_argument("--root", default="/tmp/syn2co-sweep")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    configs = grid(args.grid)
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed, (name, overrides) in itertools.product(seeds, configs.items()):
        result = run_one(name, overrides, seed, args)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
