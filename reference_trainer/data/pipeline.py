"""From a config to batches: datasets, the resumable sampler and seeded augmentation.

The training batches come from :class:`syn2co.samplers.MixedSourceBatchSampler`, which shards
every global batch over the ranks and resumes mid-epoch. Each image's two views are augmented
with a random stream seeded by (run seed, step, image index), so a batch is the same whatever
the number of workers or ranks, and a resumed run draws exactly the views the uninterrupted
run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from syn2co.samplers import MixedDataset, MixedSourceBatchSampler, RatioSchedule

from ..config import TrainConfig
from ..errors import ConfigError
from ..seeds import Stream, hashed_seed, stream_seed, torch_generator
from ..signals import ignore_stop_signals
from .base import ImageDataset
from .datasets import build_dataset
from .gpu_loader import GpuTwoViewPipeline, raw_loader, resolve_loader
from .registry import get_dataset
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    EvalDataset,
    TwoViewDataset,
    TwoViewSample,
    TwoViewTransform,
    augmentation_config,
    collate_eval,
    collate_two_views,
    eval_resize_side,
    eval_transform,
)


def builtin_val_size(train_size: int) -> int:
    """Images in the built-in validation split: a quarter of the training set, 64 to 2,000."""
    return max(64, min(2_000, train_size // 4))


def view_seed(seed: int, step: int, index: int) -> int:
    """The augmentation seed of one image at one step (a stable 63-bit hash)."""
    return hashed_seed("view", seed, step, index)


class SeededTwoViews(Dataset[TwoViewSample]):
    """Two views of ``base[index]`` drawn from a random stream seeded by the key's seed.

    Items are keyed by ``(index, seed)`` pairs, as :class:`StepSeededBatches` yields them.
    The global torch RNG is forked, so seeding here never disturbs the training process's
    own random state (with ``workers=0`` this runs in the training process).
    """

    def __init__(self, base: Dataset[Any], transform: TwoViewTransform) -> None:
        self.inner = TwoViewDataset(base, transform)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int]) -> TwoViewSample:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.inner[index]


class StepSeededBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, seed)`` pairs: the sampler's indices tagged with their view seeds."""

    def __init__(self, sampler: MixedSourceBatchSampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.sampler.epoch * len(self.sampler) + self.sampler.position
        for i, batch in enumerate(self.sampler):
            yield [(index, view_seed(self.seed, step + i, index)) for index in batch]


def dataset_for(cfg: TrainConfig, split: str) -> ImageDataset:
    """The dataset of a config's ``--dataset``/``--data``/``--val-data`` for one split.

    The format (:mod:`reference_trainer.data.registry`) says where the split lives: under
    ``--data``, or for the validation split of a format with its own validation directory,
    under ``--val-data`` with the training split's classes. Formats that make their images
    get ``--builtin-size`` images for training and :func:`builtin_val_size` for validation.
    """
    try:
        fmt = get_dataset(cfg.dataset)
    except KeyError as e:
        raise ConfigError(f"--dataset: {e.args[0]}") from None
    own_val = split != "train" and fmt.separate_val
    root = cfg.val_data if own_val else cfg.data
    if fmt.needs_root and root is None:
        option = "--val-data" if own_val else "--data"
        raise ConfigError(
            f"{option}: --dataset {cfg.dataset} needs the directory of its {split} data"
        )
    classes = None
    if own_val and cfg.data is not None:
        classes = dataset_for(cfg, "train").classes
    size = cfg.builtin_size if split == "train" else builtin_val_size(cfg.builtin_size)
    return build_dataset(
        cfg.dataset,
        root,
        split,
        img_size=cfg.img_size,
        strict=cfg.strict_data,
        classes=classes,
        num_samples=size,
        seed=cfg.seed,
    )


def drawn_sources(cfg: TrainConfig) -> tuple[bool, bool]:
    """Whether a run draws real images and whether it draws synthetic ones, at any step.

    Real images are drawn while the synthetic fraction is below 1 at some step, synthetic ones
    while it is above 0 at some step (``--synthetic-fraction``, and ``--synthetic-fraction-end``
    for a schedule); without ``--synthetic-data`` only real ones.
    """
    if cfg.synthetic_data is None:
        return True, False
    fractions = [cfg.synthetic_fraction]
    if cfg.synthetic_schedule != "constant" and cfg.synthetic_fraction_end is not None:
        fractions.append(cfg.synthetic_fraction_end)
    return min(fractions) < 1.0, max(fractions) > 0.0


def epoch_images(cfg: TrainConfig, *, real: int, synthetic: int) -> int:
    """The images in one epoch: one pass over what the run trains on.

    The sum of the sizes of the sources the run draws from (:func:`drawn_sources`): the real
    set alone without synthetic images, the synthetic set alone with ``--synthetic-fraction
    1.0`` (a ``--data`` given then serves evaluation only and does not lengthen the epoch), and
    both in a mixed or scheduled run. In a mixed run each source is then seen once per epoch
    when the synthetic fraction equals its share of the images; another fraction shows the
    more heavily drawn source more than once per epoch (the smaller share is recycled).

    Args:
        cfg: The run's options.
        real: Images in the real training set.
        synthetic: Images in the synthetic set (0 without one).
    """
    uses_real, uses_synthetic = drawn_sources(cfg)
    return (real if uses_real else 0) + (synthetic if uses_synthetic else 0)


@dataclass
class TrainData:
    """The training images (real, and synthetic when mixing), then the sampler and loader.

    With ``--synthetic-data`` every global batch holds the configured synthetic fraction
    (``syn2co.samplers.MixedSourceBatchSampler``) and items carry their source (0 real, 1
    synthetic). An epoch is :func:`epoch_images` divided by the global batch, in steps.
    """

    cfg: TrainConfig
    real: Dataset[Any]
    synthetic: Dataset[Any] | None
    rank: int
    world_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    sampler: MixedSourceBatchSampler = field(init=False)
    loader: DataLoader[Any] = field(init=False)
    gpu: GpuTwoViewPipeline | None = field(init=False, default=None)
    _warned: set[str] = field(default_factory=set)

    @property
    def mixing(self) -> bool:
        return self.synthetic is not None

    @property
    def train_size(self) -> int:
        """Images in one epoch (:func:`epoch_images`)."""
        synthetic = 0 if self.synthetic is None else _size(self.synthetic)
        return epoch_images(self.cfg, real=_size(self.real), synthetic=synthetic)

    def configure(self, cfg: TrainConfig, *, total_steps: int, steps_per_epoch: int) -> None:
        """Build the sampler and the loader for a run of ``total_steps`` optimizer steps with
        ``steps_per_epoch`` global batches per epoch (``cfg``: the run's resolved options)."""
        fraction: float | RatioSchedule = cfg.synthetic_fraction
        if cfg.synthetic_schedule != "constant":
            assert cfg.synthetic_fraction_end is not None
            build = (
                RatioSchedule.linear if cfg.synthetic_schedule == "linear" else RatioSchedule.cosine
            )
            fraction = build(cfg.synthetic_fraction, cfg.synthetic_fraction_end, steps=total_steps)
        synthetic: Any = self.synthetic if self.synthetic is not None else []
        try:
            self.sampler = MixedSourceBatchSampler(
                _size(self.real),
                _size(synthetic),
                cfg.batch_size // self.world_size,
                fraction,
                seed=cfg.seed,
                rank=self.rank,
                world_size=self.world_size,
                steps_per_epoch=steps_per_epoch,
            )
        except ValueError as e:
            raise ConfigError(f"real/synthetic mixing: {e}") from None
        dataset: Dataset[Any] = (
            self.real
            if self.synthetic is None
            else MixedDataset(cast(Any, self.real), cast(Any, self.synthetic))
        )
        batches = StepSeededBatches(self.sampler, cfg.seed)
        # The loader draws its workers' base seed at every new iterator: from its own stream,
        # never from the global one that drop-path uses (that would shift drop-path on resume).
        generator = torch_generator(stream_seed(cfg.seed, Stream.LOADER, self.rank))
        augmentation = train_augmentation(cfg)
        if resolve_loader(cfg.loader, self.device) == "gpu":
            # Workers read bytes; decoding and the two views happen in batches on the device.
            self.gpu = GpuTwoViewPipeline(augmentation, self.device)
            self.loader = raw_loader(
                dataset,
                batches,
                workers=cfg.workers,
                decode_in_worker=self.device.type != "cuda",
                generator=generator,
                worker_init_fn=ignore_stop_signals,
            )
            return
        transform = TwoViewTransform(augmentation)
        self.loader = DataLoader(
            SeededTwoViews(dataset, transform),
            batch_sampler=batches,
            num_workers=cfg.workers,
            generator=generator,
            worker_init_fn=ignore_stop_signals,  # the main process stops them after a checkpoint
            collate_fn=collate_two_views,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=cfg.workers > 0,
            prefetch_factor=4 if cfg.workers > 0 else None,
        )

    def iterate(self, step: int) -> Iterator[Any]:
        """The batches from the sampler's current position to the end of its epoch.

        Each has ``view1``, ``view2`` (B, 3, S, S), ``sources`` (B,) and ``skipped`` (paths);
        with the GPU path the views are already on the device.
        """
        del step  # the sampler's own state says where the run is
        if self.gpu is not None:
            return self.gpu.iterate(self.loader)
        return iter(self.loader)

    def report_skipped(self, paths: list[str], console: Console | None) -> None:
        new = [p for p in paths if p not in self._warned]
        self._warned.update(new)
        if new and console is not None:
            names = ", ".join(new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else "")
            console.print(
                f"[yellow]warning: skipped {len(new)} unreadable image(s): {names}[/]",
                soft_wrap=True,
            )


def train_augmentation(cfg: TrainConfig) -> AugmentationConfig:
    """The two-view augmentation of a resolved config (``--augmentation`` at ``--img-size``),
    the same for the CPU and the GPU input path."""
    if cfg.augmentation is None:
        raise ConfigError("--augmentation: not resolved (the method's preset fills it)")
    return augmentation_config(cfg.augmentation, cfg.img_size)


def build_train_data(
    cfg: TrainConfig, *, rank: int, world_size: int, device: torch.device | None = None
) -> TrainData:
    synthetic_only = cfg.synthetic_fraction == 1.0 and cfg.synthetic_schedule == "constant"
    if synthetic_only and cfg.data is None and get_dataset(cfg.dataset).needs_root:
        real: Dataset[Any] = _Empty()  # synthetic only; --data is needed later for eval only
    else:
        real = dataset_for(cfg, "train")
    synthetic = None
    if cfg.synthetic_data is not None:
        synthetic = build_dataset(
            "imagefolder", cfg.synthetic_data, "synthetic", strict=cfg.strict_data
        )
    return TrainData(cfg, real, synthetic, rank, world_size, device or torch.device("cpu"))


class _Empty(Dataset[Any]):
    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)


def _size(dataset: Any) -> int:
    return len(dataset)


Interpolation = Literal["bicubic", "bilinear"]
"""How an evaluation resizes its images: bicubic (the trainer's evaluation transform) or
bilinear (torchvision's default, which the official probes use)."""


def _interpolation_mode(interpolation: Interpolation) -> Any:
    from torchvision.transforms import v2

    modes = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}
    if interpolation not in modes:
        raise ValueError(f"interpolation: expected bicubic or bilinear, got {interpolation!r}")
    return modes[interpolation]


def evaluation_transform(img_size: int, interpolation: Interpolation = "bicubic") -> Any:
    """The evaluation transform (resize the shorter side, center crop ``S x S``, normalise;
    :func:`~reference_trainer.data.eval_transform`) with the given interpolation."""
    from torchvision.transforms import v2

    mode = _interpolation_mode(interpolation)
    if interpolation == "bicubic":
        return eval_transform(img_size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(eval_resize_side(img_size), interpolation=mode, antialias=True),
            v2.CenterCrop(img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )


def probe_train_transform(img_size: int, interpolation: Interpolation = "bilinear") -> Any:
    """Random resized crop and flip, as the official probes' training transform (MoBY / SynCo
    v2, MoCo v2 and v3) and SynCo v2's kNN read the training images."""
    from torchvision.transforms import v2

    scale_min = AugmentationConfig.for_size(img_size).crop_scale[0]
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(
                img_size,
                scale=(scale_min, 1.0),
                interpolation=_interpolation_mode(interpolation),
                antialias=True,
            ),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )


class SeededEvalDataset(EvalDataset):
    """:class:`~reference_trainer.data.transforms.EvalDataset` whose random transform draws
    from a stream seeded by (seed, index): the same crops whatever the workers, and the
    training process's own random state untouched."""

    def __init__(self, base: Dataset[Any], transform: Any, seed: int) -> None:
        super().__init__(base, transform)
        self.seed = seed

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hashed_seed("eval-view", self.seed, index))
            return super().__getitem__(index)


def image_loader(
    dataset: Dataset[Any],
    transform: Any,
    *,
    batch_size: int,
    workers: int,
    indices: list[int] | None = None,
    seed: int | None = None,
    shuffle: bool = False,
) -> DataLoader[Any]:
    """Batches (:class:`~reference_trainer.data.transforms.EvalBatch`) of ``dataset``'s images
    through ``transform``: all of them, or those at ``indices`` in that order.

    Args:
        dataset: The images (a split of :func:`dataset_for`).
        transform: Image -> tensor ``(3, S, S)``.
        batch_size: Images per batch.
        workers: DataLoader workers.
        indices: The images to read, in order; None for all.
        seed: With ``shuffle``, the seed of the order; without it, the seed of a random
            transform's draws, per image (:class:`SeededEvalDataset`); None for neither.
        shuffle: A new order every pass (the linear probe's augmented epochs).
    """
    base: Dataset[Any] = dataset if indices is None else Subset(dataset, indices)
    items = (
        SeededEvalDataset(base, transform, seed)
        if seed is not None and not shuffle
        else EvalDataset(base, transform)
    )
    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed or 0) if shuffle else None,
        num_workers=workers,
        collate_fn=collate_eval,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=shuffle and workers > 0,
    )


def eval_loader(
    cfg: TrainConfig,
    split: str,
    *,
    batch_size: int = 256,
    workers: int | None = None,
    interpolation: Interpolation = "bicubic",
) -> DataLoader[Any]:
    """Deterministic (resize, center crop, normalise) batches of one split, in order."""
    return image_loader(
        dataset_for(cfg, split),
        evaluation_transform(cfg.img_size, interpolation),
        batch_size=batch_size,
        workers=cfg.workers if workers is None else workers,
    )


def linear_train_loader(
    cfg: TrainConfig,
    *,
    batch_size: int,
    augmented: bool,
    seed: int,
    interpolation: Interpolation = "bicubic",
    dataset: Dataset[Any] | None = None,
) -> DataLoader[Any]:
    """Training batches for the linear probe: fixed views (cached mode) or augmented ones
    (random resized crops and flips, shuffled every epoch), resized with ``interpolation``;
    ``dataset`` is the training split when already built."""
    transform = (
        probe_train_transform(cfg.img_size, interpolation)
        if augmented
        else evaluation_transform(cfg.img_size, interpolation)
    )
    return image_loader(
        dataset if dataset is not None else dataset_for(cfg, "train"),
        transform,
        batch_size=batch_size,
        workers=cfg.workers,
        seed=seed if augmented else None,
        shuffle=augmented,
    )
