"""Input pipeline throughput: the CPU path (PIL in DataLoader workers) against the GPU path.

Measures, on a folder of ImageNet-sized JPEGs (generated if missing: the images of a CIFAR-10
JPEG archive given by ``--cifar-archive`` (a ``.tar.gz`` of ``<split>/<class>/<image>.jpg``)
upscaled to 320-500 x 280-420 px with a little noise and re-encoded at quality 90, or random
smooth colour fields without an archive or with ``--source random``):

* ``loader``: image pairs/s each input path delivers, for each number of workers:

  - ``cpu``: the trainer's CPU path: ``SeededTwoViews(ImageFolderDataset, TwoViewTransform)``
    batched by ``StepSeededBatches(MixedSourceBatchSampler)`` through a ``DataLoader``;
  - ``gpu``: ``raw_loader`` (workers read bytes) + ``GpuTwoViewPipeline`` (one
    ``decode_jpeg(list, device=...)`` per batch, batched augmentation on the device);
  - ``gpu-workerdecode``: the same with JPEGs decoded in the workers (the CPU-device variant).

  On a CPU device the "device" work runs in the main process with ``--threads`` torch threads
  (``--quick`` uses 1: on a small, busy machine more threads only contend with the workers).

* ``device``: the pipeline's stages alone on one cached batch (no loader): decode, augment.
* ``train``: ``Trainer.train_step`` alone on fixed device tensors (as
  ``benchmarks/train_throughput.py``) against the loader + step for each path, end to end.

One JSON line per measurement on stdout (and appended to ``--out``), then a summary.

Usage::

    python benchmarks/input_pipeline.py --quick            # CPU smoke test (tiny model)
    python benchmarks/input_pipeline.py --device cuda --workers 4,8,16 --compile \\
        --data /data/imagenet/train                         # real numbers on a GPU host
"""

from __future__ import annotations

import argparse
import datetime
import io
import itertools
import json
import math
import os
import platform
import random
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_trainer.config import TrainConfig
from reference_trainer.data.datasets import ImageFolderDataset
from reference_trainer.data.gpu_augment import GpuTwoViewAugment
from reference_trainer.data.gpu_loader import (
    GpuTwoViewPipeline,
    RawImageDataset,
    collate_raw,
    decode_batch,
    raw_loader,
)
from reference_trainer.data.pipeline import SeededTwoViews, StepSeededBatches
from reference_trainer.data.rgb import open_rgb
from reference_trainer.data.transforms import (
    AugmentationConfig,
    TwoViewTransform,
    collate_two_views,
)
from reference_trainer.engine import Trainer
from syn2co.samplers import MixedSourceBatchSampler

TINY_MODEL = {"depth": 1, "embed_dim": 32, "num_heads": 2, "proj_hidden": 64, "proj_dim": 32}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _random_size(rng: random.Random) -> tuple[int, int]:
    return rng.randint(320, 500), rng.randint(280, 420)


def generate(
    root: Path, count: int, source: str, archive: Path | None = None, seed: int = 0
) -> None:
    """Write ``count`` JPEGs of 320-500 x 280-420 px into ``root/<class>/``."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def save(img: Image.Image, label: str, i: int) -> None:
        w, h = img.size  # noise below adds camera-like detail (ImageNet-like file sizes)
        pixels = np.asarray(img, dtype=np.float64) + nprng.normal(0.0, 6.0, (h, w, 3))
        folder = root / label
        folder.mkdir(exist_ok=True)
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        out.save(folder / f"{i:06d}.jpg", quality=90)

    if source == "cifar" and archive is not None:
        with tarfile.open(archive) as tar:
            done = 0
            for member in tar:
                if done >= count:
                    break
                if not (member.isfile() and member.name.endswith(".jpg")):
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                small = open_rgb(io.BytesIO(fh.read()))
                img = small.resize(_random_size(rng), Image.Resampling.BICUBIC)
                save(img, Path(member.name).parent.name, done)
                done += 1
        if done >= count:
            return
        count -= done
    for i in range(count):  # random smooth colour fields
        w, h = _random_size(rng)
        coarse = nprng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        save(img, f"class_{i % 10}", 1_000_000 + i)


def dataset_stats(ds: ImageFolderDataset, n: int = 200) -> dict[str, float]:
    paths = [ds.path(i) for i in range(0, len(ds), max(1, len(ds) // n))][:n]
    sizes = [os.path.getsize(p) for p in paths]
    dims = [Image.open(p).size for p in paths]
    return {
        "images": len(ds),
        "mean_kb": float(np.mean(sizes)) / 1024,
        "mean_w": float(np.mean([d[0] for d in dims])),
        "mean_h": float(np.mean([d[1] for d in dims])),
    }


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _sampler(ds: ImageFolderDataset, batch: int, seed: int) -> MixedSourceBatchSampler:
    return MixedSourceBatchSampler(len(ds), 0, batch, 0.0, seed=seed, rank=0, world_size=1)


def cpu_loader(ds: ImageFolderDataset, cfg: AugmentationConfig, batch: int, workers: int) -> Any:
    """The trainer's CPU path (as ``TrainData.configure`` builds it)."""
    return DataLoader(
        SeededTwoViews(ds, TwoViewTransform(cfg)),
        batch_sampler=StepSeededBatches(_sampler(ds, batch, 0), 0),
        num_workers=workers,
        collate_fn=collate_two_views,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def batches(loader: Any) -> Iterator[Any]:
    """The loader's batches over as many epochs as needed."""
    while True:
        yield from loader


def make_path(
    path: str, ds: ImageFolderDataset, cfg: AugmentationConfig, args: argparse.Namespace, w: int
) -> tuple[Iterator[Any], Callable[[Any], tuple[torch.Tensor, torch.Tensor]]]:
    """An endless batch iterator and a function from a batch to two views on the device."""
    device = torch.device(args.device)
    if path == "cpu":

        def to_device(b: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return b.view1.to(device, non_blocking=True), b.view2.to(device, non_blocking=True)

        return batches(cpu_loader(ds, cfg, args.batch_size, w)), to_device
    pipe = GpuTwoViewPipeline(cfg, device)
    loader = raw_loader(
        ds,
        StepSeededBatches(_sampler(ds, args.batch_size, 0), 0),
        workers=w,
        decode_in_worker=path == "gpu-workerdecode",
    )

    def views(b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return b.view1, b.view2

    # on CUDA, iterate() prepares the next batch on a side stream while the step runs
    return pipe.iterate(batches(loader), overlap=not args.no_overlap), views


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    it: Iterator[Any],
    fn: Callable[[Any], Any],
    device: torch.device,
    warmup: int,
    steps: int,
) -> float:
    """Seconds per batch of ``fn(next(it))`` over ``steps`` after ``warmup`` batches."""
    for _ in range(warmup):
        fn(next(it))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn(next(it))
    sync(device)
    return (time.perf_counter() - start) / steps


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def emit(record: dict[str, Any], args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    record = {**record, **args.common}
    results.append(record)
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


def measure_loaders(
    ds: ImageFolderDataset, cfg: AugmentationConfig, args: argparse.Namespace, results: list[Any]
) -> None:
    device = torch.device(args.device)
    for path in args.paths:
        for w in args.workers:
            it, fn = make_path(path, ds, cfg, args, w)
            per_batch = timed(it, fn, device, args.warmup, args.batches)
            emit(
                {
                    "kind": "loader",
                    "path": path,
                    "workers": w,
                    "pairs_per_s": args.batch_size / per_batch,
                    "batch_ms": per_batch * 1e3,
                },
                args,
                results,
            )
            del it, fn


def measure_device_stages(
    ds: ImageFolderDataset, cfg: AugmentationConfig, args: argparse.Namespace, results: list[Any]
) -> None:
    """Decode and augment alone on one cached raw batch: the device's ceilings."""
    device = torch.device(args.device)
    raw = RawImageDataset(ds)
    batch = collate_raw([raw[(i, i)] for i in range(args.batch_size)])
    decoded = decode_batch(batch, device)
    aug = GpuTwoViewAugment(cfg)
    gen = torch.Generator().manual_seed(0)
    stages: dict[str, Callable[[Any], Any]] = {
        "decode": lambda _: decode_batch(batch, device),
        "augment": lambda _: aug(decoded.images, gen),
        "decode+augment": lambda _: aug(decode_batch(batch, device).images, gen),
    }
    for name, fn in stages.items():
        per_batch = timed(
            itertools.repeat(None), fn, device, max(1, args.warmup // 2), args.batches
        )
        emit(
            {
                "kind": "device",
                "stage": name,
                "pairs_per_s": args.batch_size / per_batch,
                "batch_ms": per_batch * 1e3,
            },
            args,
            results,
        )


def build_trainer(args: argparse.Namespace, out: Path) -> Trainer:
    values: dict[str, Any] = {
        "arch": args.arch,
        "method": args.method,
        "negatives": "none",
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "steps": 100_000,
        "dataset": "builtin",
        "builtin_size": args.batch_size * 2,
        "workers": 0,
        "compile": args.compile,
        "precision": args.precision,
        "device": args.device,
        "out": str(out),
    }
    if args.tiny_model:
        values |= TINY_MODEL
    cfg = TrainConfig.from_dict(values)
    return Trainer(cfg, torch.device(args.device), Console(stderr=True))


def measure_training(
    ds: ImageFolderDataset, cfg: AugmentationConfig, args: argparse.Namespace, results: list[Any]
) -> None:
    device = torch.device(args.device)
    run_dir = Path(tempfile.mkdtemp(prefix="syn2co-input-bench-"))
    try:
        trainer = build_trainer(args, run_dir)
        shape = (args.batch_size, 3, args.img_size, args.img_size)
        gen = torch.Generator(device=device).manual_seed(0)
        views = [torch.randn(shape, device=device, generator=gen) for _ in range(2)]
        step_alone = timed(
            itertools.repeat(None),
            lambda _: trainer.train_step(*views),
            device,
            args.warmup,
            args.batches,
        )
        emit(
            {
                "kind": "train",
                "path": "step-only",
                "workers": None,
                "pairs_per_s": args.batch_size / step_alone,
                "batch_ms": step_alone * 1e3,
            },
            args,
            results,
        )
        w = max(args.workers)
        for path in args.paths:
            it, to_views = make_path(path, ds, cfg, args, w)

            def step(b: Any, to_views: Callable[[Any], Any] = to_views) -> Any:
                return trainer.train_step(*to_views(b))

            per_batch = timed(it, step, device, args.warmup, args.batches)
            emit(
                {
                    "kind": "train",
                    "path": path,
                    "workers": w,
                    "pairs_per_s": args.batch_size / per_batch,
                    "batch_ms": per_batch * 1e3,
                    "vs_step_only": step_alone / per_batch,
                },
                args,
                results,
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def summary(results: list[dict[str, Any]]) -> str:
    lines = [f"{'kind':8} {'what':18} {'workers':>7} {'pairs/s':>10} {'ms/batch':>10}"]
    for r in results:
        what = r.get("path") or r.get("stage") or ""
        workers = "" if r.get("workers") is None else str(r["workers"])
        lines.append(
            f"{r['kind']:8} {what:18} {workers:>7} {r['pairs_per_s']:10.1f} {r['batch_ms']:10.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=None, help="image folder (default: generated in a temp dir)")
    p.add_argument("--generate", type=int, default=None, help="images to generate if missing")
    p.add_argument("--source", default="cifar", choices=["cifar", "random"])
    p.add_argument(
        "--cifar-archive",
        type=Path,
        default=None,
        help="CIFAR-10 JPEG archive (.tar.gz) to generate from (default: random images)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", default="4,8,16", help="comma-separated worker counts")
    p.add_argument("--paths", default="cpu,gpu", help="cpu, gpu, gpu-workerdecode")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--arch", default="deit_s")
    p.add_argument("--method", default="mocov3", choices=["moby", "mocov3"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precision", default="auto", help="auto, bf16, fp16 or fp32")
    p.add_argument("--tiny-model", action="store_true", help="1-block width-32 model")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    p.add_argument("--no-overlap", action="store_true", help="GPU path on the main stream")
    p.add_argument("--skip", default="", help="comma-separated: loader, device, train")
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: small, tiny model")
    args = p.parse_args()
    if args.quick:
        args.batch_size, args.img_size = min(args.batch_size, 16), min(args.img_size, 96)
        args.batches, args.warmup = min(args.batches, 3), min(args.warmup, 1)
        args.generate = args.generate or 96
        args.tiny_model = True
        args.threads = args.threads or 1
        if args.workers == p.get_default("workers"):
            args.workers = "0,2"
        if args.paths == p.get_default("paths"):
            args.paths = "cpu,gpu,gpu-workerdecode"
    args.workers = [int(w) for w in args.workers.split(",")]
    args.paths = [s for s in args.paths.split(",") if s]
    skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp: str | None = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="syn2co-input-data-")
        args.data = tmp
    root = Path(args.data)
    need = args.generate or (args.batch_size * (args.batches + args.warmup + 2))
    if not root.exists() or not any(root.iterdir()):
        generate(root, need, args.source, args.cifar_archive)
    try:
        ds = ImageFolderDataset(root)
        cfg = AugmentationConfig.for_size(args.img_size)
        stats = dataset_stats(ds)
        device = torch.device(args.device)
        args.common = {
            "batch": args.batch_size,
            "img_size": args.img_size,
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "data_mean_kb": round(stats["mean_kb"], 1),
            "data_mean_wh": [round(stats["mean_w"]), round(stats["mean_h"])],
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        }
        results: list[dict[str, Any]] = []
        if len(ds) < args.batch_size:
            raise SystemExit(f"{root} holds {len(ds)} images, fewer than a batch")
        if "loader" not in skip:
            measure_loaders(ds, cfg, args, results)
        if "device" not in skip:
            measure_device_stages(ds, cfg, args, results)
        if "train" not in skip:
            measure_training(ds, cfg, args, results)
        print(summary(results), file=sys.stderr)
        if not math.isfinite(sum(r["pairs_per_s"] for r in results)):
            raise SystemExit("non-finite measurement")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
