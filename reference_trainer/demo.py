"""``syn2co-train demo``: the built-in default, end to end, on a laptop CPU in minutes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import checkpoint as ckpt
from .config import TrainConfig
from .data.pipeline import eval_loader
from .engine import train
from .evaluate import knn_probe
from .pretrained import load_backbone, random_backbone

#: A smaller run than the demo (2,000 images, batch 64, 150 steps: well under a minute on 2 CPU
#: cores) for quick comparisons and the test that pretraining learns; apply with
#: ``demo_config(...).updated(SMALL_OVERRIDES)``.
SMALL_OVERRIDES: dict[str, object] = {
    "depth": 2,
    "embed_dim": 96,
    "num_heads": 3,
    "patch_size": 8,
    "proj_hidden": 512,
    "proj_dim": 64,
    "queue_size": 512,
    "builtin_size": 2000,
    "batch_size": 64,
    "lr": 2e-3,
    "steps": 150,
}


def demo_config(out: Path, *, steps: int, negatives: str, workers: int) -> TrainConfig:
    """A small DeiT (2 blocks, width 96, 8-px patches) on 32-px procedural shapes, MoBY with
    synthetic negatives: small enough for a 2-core CPU, big enough to learn visibly in 300
    steps."""
    return TrainConfig.from_dict(
        {
            "arch": "deit_s",
            "method": "moby",
            "negatives": negatives,
            "dataset": "builtin",
            "builtin_size": 4_000,
            "img_size": 32,
            "patch_size": 8,
            "depth": 2,
            "embed_dim": 96,
            "num_heads": 3,
            "proj_hidden": 1024,
            "proj_dim": 128,
            "queue_size": 1024,
            "batch_size": 128,
            "steps": steps,
            "lr": 1e-3,
            "drop_path": 0.0,
            "workers": workers,
            "log_every": 10,
            "hardness_every": 50,
            "checkpoint_every": max(1, steps // 2),
            "out": str(out),
        },
        source="demo",
    )


def run_demo(
    out: Path, *, steps: int, negatives: str, workers: int, console: Console, out_console: Console
) -> dict[str, float]:
    cfg = demo_config(out, steps=steps, negatives=negatives, workers=workers)
    existing = out / ckpt.CHECKPOINT_NAME
    if existing.exists():
        done = int(ckpt.load(existing)["step"])
        if done >= steps:
            console.print(
                f"{out} already holds a finished demo run ({done} steps): evaluating it",
                soft_wrap=True,
            )
        else:
            console.print(f"continuing the demo run in {out} from step {done}", soft_wrap=True)
            train(cfg.updated({"resume": str(out)}), console=console)
    else:
        train(cfg, console=console)
    train_loader = eval_loader(cfg, "train", workers=workers)
    val_loader = eval_loader(cfg, "val", workers=workers)
    n_classes = train_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    results: dict[str, float] = {}
    for name, backbone in (
        ("random init", random_backbone(cfg)),
        (f"pretrained ({steps} steps)", load_backbone(out)[0]),
    ):
        res = knn_probe(
            backbone, train_loader, val_loader, num_classes=n_classes, device="cpu", ks=(20,)
        )
        results[name] = res.top1[20]
    table = Table(title="kNN top-1 (%), built-in shapes", caption="validation split, k=20")
    table.add_column("backbone")
    table.add_column("top-1", justify="right")
    for name, acc in results.items():
        table.add_row(name, f"{acc:.1f}")
    out_console.print(table)
    return results
