"""Does the linear probe's training loss go down? A sweep of probe settings on one backbone.

Extracts the features of an image folder's train and test splits once (cached mode, the
evaluation transform), then trains the probe of ``reference_trainer.evaluate.linear_probe`` with
each setting and reports, per setting: the loss of epochs 1 and 2, the largest rise of the loss
from one epoch to the next, the final loss and the validation top-1. It also prints the largest
eigenvalue of the standardised features' correlation matrix, which sets the largest stable
step size of SGD on them.

Usage::

    tar -xzf cifar10-jpeg.tar.gz -C /tmp/cifar10  # train/<class>/*.jpg, test/<class>/*.jpg
    python benchmarks/linear_probe_stability.py --data /tmp/cifar10 --train 5000 --val 1000
    python benchmarks/linear_probe_stability.py --data /tmp/cifar10 --run runs/demo

Without ``--run`` the backbone is ``--arch`` at the trainer's random initialisation (a harsh
case: the features of an untrained ViT are strongly correlated).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_trainer.config import TrainConfig
from reference_trainer.data import EvalDataset, build_dataset, collate_eval, eval_transform
from reference_trainer.evaluate import LinearProbeSettings, extract_features, linear_probe
from reference_trainer.models import create_backbone
from reference_trainer.pretrained import load_backbone

# name -> settings (the default first, then the published learning rates without and with the
# BatchNorm, then lower rates).
SETTINGS: dict[str, LinearProbeSettings] = {
    "default (BN, 0.1 x b/512, Nesterov)": LinearProbeSettings(),
    "MoBY lr 1.0 x b/512, no BN": LinearProbeSettings(base_lr=1.0, batchnorm=False),
    "MoBY lr 1.0 x b/512, BN": LinearProbeSettings(base_lr=1.0),
    "MoBY lr, BN, 5 warmup epochs": LinearProbeSettings(base_lr=1.0, warmup_epochs=5),
    "BN, 0.2 x b/512, Nesterov": LinearProbeSettings(base_lr=0.2),
    "BN, 0.1 x b/512, no Nesterov": LinearProbeSettings(nesterov=False),
    "BN, 0.04 x b/512, Nesterov": LinearProbeSettings(base_lr=0.04),
}


def features(args: argparse.Namespace) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], str]:
    if args.run is not None:
        backbone, cfg = load_backbone(args.run)
        name = f"{cfg.arch} from {args.run}"
    else:
        cfg = TrainConfig(arch=args.arch, img_size=args.img_size)
        torch.manual_seed(0)
        backbone = create_backbone(cfg).eval()
        name = f"{args.arch} at random initialisation"
    out = []
    for split, n in (("train", args.train), ("test", args.val)):
        base = build_dataset("imagefolder", Path(args.data) / split, split)
        index = random.Random(0).sample(range(len(base)), min(n, len(base)))
        data = EvalDataset(Subset(base, index), eval_transform(cfg.img_size))
        loader = DataLoader(data, batch_size=256, collate_fn=collate_eval)
        out.append(extract_features(backbone, loader, device="cpu", normalize=False))
    return out[0], out[1], name


def top_eigenvalue(x: Tensor) -> float:
    """Largest eigenvalue of the correlation matrix of the columns of ``x`` (N, D)."""
    z = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    return float(torch.linalg.eigvalsh(z.T @ z / x.shape[0])[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Folder with train/ and test/ images.")
    parser.add_argument("--run", default=None, help="A run directory (default: random init).")
    parser.add_argument("--arch", default="deit_s")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--train", type=int, default=5000, help="Training images used.")
    parser.add_argument("--val", type=int, default=1000, help="Test images used.")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    train, val, backbone = features(args)
    extraction = time.perf_counter() - start
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    machine = platform.processor() or platform.machine()
    print(f"- machine: {machine}, {torch.get_num_threads()} CPU threads")
    print(f"- date: {datetime.date.today()}, commit {commit or 'unknown'}")
    print(f"- command: python {' '.join(sys.argv)}")
    print(f"- backbone: {backbone}; {train[0].shape[0]} train / {val[0].shape[0]} test images")
    dim = train[0].shape[1]
    lam = top_eigenvalue(train[0])
    print(f"- features: D = {dim}, correlation eigenvalue max {lam:.1f} ({lam / dim:.2f} D)")
    print(f"- feature extraction: {extraction:.0f} s\n")
    print("| probe | loss epoch 1 -> 2 | largest rise | final loss | val top-1 (%) |")
    print("|---|---|---|---|---|")
    batches = [(train[0][i : i + 256], train[1][i : i + 256]) for i in range(0, len(train[1]), 256)]
    held_out = [(val[0][i : i + 256], val[1][i : i + 256]) for i in range(0, len(val[1]), 256)]
    classes = int(train[1].max()) + 1
    for name, settings in SETTINGS.items():
        settings = dataclasses.replace(settings, epochs=args.epochs)
        result = linear_probe(
            nn.Identity(), batches, held_out, num_classes=classes, device="cpu", settings=settings
        )
        losses = [h["loss"] for h in result.history]
        rise = max(b - a for a, b in itertools.pairwise(losses))
        print(
            f"| {name} | {losses[0]:.3f} -> {losses[1]:.3f} | {rise:+.3f} | {losses[-1]:.3f} "
            f"| {result.val_top1:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
