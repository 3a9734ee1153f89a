"""The one place where a run's values are decided: assembled, validated once, then derived.

A run's options come in layers, lowest first:

1. the field defaults of :class:`~reference_trainer.config.TrainConfig`;
2. the method's preset (:class:`~reference_trainer.methods.MethodPreset` of ``--method``, for
   the run's image size): optimizer, weight decay, temperature, EMA momentum, queue length,
   head widths, drop-path, ...;
3. the recipe (``--recipe NAME``, given on the command line or in the config file);
4. the ``--config`` file;
5. the command line (or the values a Python caller passes to
   :func:`reference_trainer.engine.train`).

A resumed run takes the config saved in its checkpoint instead, and only the options in
:data:`~reference_trainer.config.RESUMABLE_OVERRIDES` from layers 3-5 may change it.

:func:`resolve_options` merges the layers, records which layer set each option, and validates
every option once, before any file is read or written. :func:`plan_run` then derives what
needs the size of the training set (steps, warmup, the learning rate scaled by the batch, the
synthetic negatives' window and counts) and checks those numbers. Every consumer reads the
resulting :class:`RunPlan`; ``syn2co-train run --dry-run`` prints it with its sources.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from syn2co.negatives import (
    STRATEGIES,
    SYNCO_V1,
    SYNCO_V2,
    SYNCO_V2_CONFIG,
    NegativeSpec,
    mochi,
    strategies,
)
from syn2co.schedules import ActiveWindow

from .config import RESUMABLE_OVERRIDES, TrainConfig, load_config_file, merge_resume_config
from .data.registry import DATASETS, dataset_names, get_dataset
from .data.transforms import augmentation_config
from .errors import ConfigError, flag
from .methods import Method, MethodPreset, MethodSettings, get_method, method_names
from .recipes import load_recipe
from .resnets import TRANSFORMER_ONLY_OPTIONS, is_resnet

__all__ = [
    "DEFAULT_SOURCE",
    "MAX_SEED",
    "MAX_STEPS",
    "NEGATIVE_PRESETS",
    "UPPER_BOUNDS",
    "Layer",
    "ResolvedOptions",
    "RunPlan",
    "command_line_layers",
    "given_layer",
    "infer_dataset",
    "method_settings",
    "negatives_window",
    "plan_run",
    "render_plan",
    "requested",
    "resolve",
    "resolve_options",
    "run_preset",
    "strategy_counts",
]

#: The source of a value no layer set.
DEFAULT_SOURCE: Final = "default"

#: ``--negatives`` presets: the published counts and coefficients (``syn2co.negatives``).
NEGATIVE_PRESETS: dict[str, NegativeSpec | None] = {
    "none": None,
    "synco-v1": SYNCO_V1,
    "synco-v2": SYNCO_V2,
    "synco-v2-config": SYNCO_V2_CONFIG,
    "mochi": mochi(1024, 512, 256),
}


@dataclass(frozen=True)
class Layer:
    """One layer of options: where they come from and what they set.

    Attributes:
        source: Where the values come from, as a user reads it (``recipe synco-v2-deit-s@1``,
            ``--config run.yaml``, ``command line``).
        values: The options it sets (keys with ``-`` or ``_``), checked against the schema
            when the layers are merged.
        notes: Per option, where the layer itself has it from (a recipe's source comment).
    """

    source: str
    values: Mapping[str, Any]
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedOptions:
    """A run's options after the layers are merged and validated.

    Attributes:
        config: Every option; those a method preset gives are filled in.
        sources: For each option, the layer that set it (:data:`DEFAULT_SOURCE` if none did),
            with the layer's note when it has one.
        method: The method's class.
        preset: The method's preset for this run, with the options that replace its fields
            applied (:func:`run_preset`).
        spec: The synthetic negatives' counts and coefficients, or None without them.
    """

    config: TrainConfig
    sources: Mapping[str, str]
    method: type[Method]
    preset: MethodPreset
    spec: NegativeSpec | None = None


@dataclass(frozen=True)
class RunPlan:
    """Everything a run reads: its options, resolved, and the numbers derived from them.

    Attributes:
        config: Every option with the values the run uses (the learning rate and the warmup in
            steps filled in); saved as ``RUN/config.yaml``.
        sources: Where each option came from (see :class:`ResolvedOptions`); derived numbers
            are explained by :meth:`derivations`.
        method: The method's class.
        preset: The method's preset for this run.
        train_size: Images in one epoch (one pass over what the run trains on).
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch.
        warmup_steps: Linear warmup steps.
        warmup_lr: Learning rate at step 0 (the warmup rises linearly from it to the peak).
        min_lr: Learning rate at the last step (the cosine falls from the peak to it).
        window: The optimizer steps at which synthetic negatives are active.
        spec: The synthetic negatives, or None without them.
    """

    config: TrainConfig
    sources: Mapping[str, str]
    method: type[Method]
    preset: MethodPreset
    train_size: int
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    warmup_lr: float
    min_lr: float
    window: ActiveWindow
    spec: NegativeSpec | None

    @property
    def lr(self) -> float:
        """The peak learning rate."""
        assert self.config.lr is not None  # filled by plan_run
        return self.config.lr

    def method_settings(self) -> MethodSettings:
        """What the run's method is built from."""
        return method_settings(self.config, self.spec)

    def derivations(self) -> dict[str, tuple[Any, str]]:
        """The derived numbers, each with how it was derived (for ``--dry-run`` and logs)."""
        cfg, preset = self.config, self.preset
        lr_how = self.sources["lr"]
        if lr_how == DEFAULT_SOURCE:
            scaled = f"{preset.base_lr:g} x batch {cfg.batch_size} / {preset.lr_reference_batch}"
            base_how = self.sources.get("base_lr", DEFAULT_SOURCE)
            if base_how.startswith("method preset"):
                lr_how = f"method preset: {scaled}"
            else:
                lr_how = f"--base-lr x batch / --lr-reference-batch = {scaled}"
        if cfg.warmup_epochs is not None:
            warmup_how = f"--warmup-epochs {cfg.warmup_epochs:g} x {self.steps_per_epoch}"
        elif self.sources["warmup_steps"] != DEFAULT_SOURCE:
            warmup_how = self.sources["warmup_steps"]
        elif preset.warmup_epochs is not None:
            warmup_how = f"method preset: {preset.warmup_epochs:g} epochs"
        else:
            warmup_how = f"method preset: {preset.warmup_fraction:.4g} of the run"
        if cfg.steps is not None:
            total_how = "--steps"
        elif cfg.images_seen is not None:
            total_how = f"--images-seen {cfg.images_seen} / batch {cfg.batch_size}, rounded up"
        elif cfg.epochs is not None:
            total_how = f"--epochs {cfg.epochs:g} x {self.steps_per_epoch} steps per epoch"
        else:
            total_how = f"default: 100 epochs x {self.steps_per_epoch} steps per epoch"
        spec_how = "none" if self.spec is None else f"{cfg.negatives}, {self.spec.total}/query"
        return {
            "train_size": (
                self.train_size,
                "images per epoch: one pass over the sources the run draws from",
            ),
            "steps_per_epoch": (self.steps_per_epoch, f"{self.train_size} // batch"),
            "total_steps": (self.total_steps, total_how),
            "lr": (self.lr, lr_how),
            "warmup_steps": (self.warmup_steps, warmup_how),
            "warmup_lr": (self.warmup_lr, "lr x --warmup-lr-fraction"),
            "min_lr": (self.min_lr, "lr x --min-lr-fraction"),
            "negatives_window": _window_how(
                cfg, self.window, self.steps_per_epoch, self.total_steps, self.spec is not None
            ),
            "negatives_spec": (
                None if self.spec is None else dict(self.spec.counts),
                spec_how,
            ),
            **_augmentation_how(cfg),
        }


def render_plan(plan: RunPlan) -> str:
    """A plan as YAML that ``--config`` reads back: every option with its source as a comment,
    then the derived numbers as comments."""
    rows = []
    for name in TrainConfig.field_names():
        text = yaml.safe_dump({name: getattr(plan.config, name)}, width=1_000_000)
        rows.append((text.strip().replace("\n", " "), plan.sources.get(name, DEFAULT_SOURCE)))
    width = max(len(text) for text, _ in rows)
    lines = ["# options, each with the layer that set it"]
    lines += [f"{text.ljust(width)}  # {source}" for text, source in rows]
    lines.append("# derived from the options and the training data")
    for name, (value, how) in plan.derivations().items():
        lines.append(f"#   {name}: {value}  ({how})")
    return "\n".join(lines)


def _window_how(
    cfg: TrainConfig, window: ActiveWindow, steps_per_epoch: int, total: int, active: bool
) -> tuple[str, str]:
    """The synthetic negatives' window in steps and in epochs, and where it comes from."""
    end = window.end
    steps = f"steps [{window.start}, {'the end' if end is None else end})"
    epochs = f"epochs [{window.start / steps_per_epoch:.2f}, " + (
        "the end)" if end is None else f"{end / steps_per_epoch:.2f})"
    )
    if end is not None and end >= total:
        epochs += f", beyond the run's {total} steps: active to the end"
    if cfg.negatives_as_run_gpus is not None:
        how = f"the official code's per-GPU epochs on {cfg.negatives_as_run_gpus} GPUs"
    elif cfg.negatives_start_epoch is not None or cfg.negatives_end_epoch is not None:
        how = "--negatives-start-epoch/--negatives-end-epoch x steps per epoch"
    else:
        how = "--negatives-start/--negatives-end"
    if not active:
        how = "no synthetic negatives in this run"
    return f"{steps} = {epochs}", how


def _augmentation_how(cfg: TrainConfig) -> dict[str, tuple[Any, str]]:
    """Each view's augmentation parameters at the run's image side."""
    if cfg.augmentation is None:
        return {}
    aug = augmentation_config(cfg.augmentation, cfg.img_size)
    source = f"--augmentation {cfg.augmentation} at {cfg.img_size} px"
    return {f"augmentation_view{v + 1}": (aug.describe(v), source) for v in (0, 1)}


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def given_layer(cfg: TrainConfig, source: str = "given") -> Layer:
    """A config as a layer: the values that differ from the field defaults."""
    return Layer(source, cfg.given())


def command_line_layers(config_file: Path | None, flags: Mapping[str, Any]) -> list[Layer]:
    """The recipe, the ``--config`` file and the command line, as layers (lowest first).

    Args:
        config_file: The ``--config`` file, if given.
        flags: The command line's options (``None``: not given).
    """
    file_values = load_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    layers: list[Layer] = []
    recipe_name = given.get("recipe", file_values.get("recipe"))
    if recipe_name is not None:
        recipe = load_recipe(str(recipe_name))
        layers.append(
            Layer(
                f"recipe {recipe.label}",
                {**recipe.options, "recipe": str(recipe_name)},
                recipe.sources,
            )
        )
    if config_file is not None:
        layers.append(Layer(f"--config {config_file}", file_values))
    layers.append(Layer("command line", given))
    asked = requested(layers)
    names = {str(key).replace("-", "_") for layer in layers for key in layer.values}
    if asked.data is not None and "dataset" not in names and asked.resume is None:
        # --data alone means an image folder, never the built-in default
        layers.append(Layer("inferred from --data", {"dataset": infer_dataset(asked.data)}))
    return layers


def requested(layers: Sequence[Layer]) -> TrainConfig:
    """The layers merged over the defaults, checked against the schema only (for what must be
    known before resolution, such as the checkpoint to resume)."""
    cfg = TrainConfig()
    for layer in layers:
        cfg = cfg.updated(dict(layer.values), source=layer.source)
    return cfg


def _set_by(layers: Sequence[Layer]) -> dict[str, str]:
    """For each option a layer sets, the highest such layer's source (with its note)."""
    sources: dict[str, str] = {}
    for layer in layers:
        for key in layer.values:
            name = str(key).replace("-", "_")
            note = layer.notes.get(name) or layer.notes.get(str(key))
            sources[name] = f"{layer.source} ({note})" if note else layer.source
    return sources


# --------------------------------------------------------------------------------------------
# Options: merge and validate
# --------------------------------------------------------------------------------------------


def preset_values(preset: MethodPreset, arch: str) -> dict[str, Any]:
    """The options a method's preset sets for a backbone. Drop-path and the frozen patch
    projection are transformer settings, off for ResNets."""
    resnet = is_resnet(arch)
    return {
        "augmentation": preset.augmentation,
        "base_lr": preset.base_lr,
        "lr_reference_batch": preset.lr_reference_batch,
        "optimizer": preset.optimizer,
        "optimizer_momentum": preset.optimizer_momentum,
        "ema_schedule": preset.ema_schedule,
        "weight_decay": preset.weight_decay,
        "weight_decay_exclude": preset.weight_decay_exclude,
        "clip_grad": preset.clip_grad,
        "drop_path": 0.0 if resnet else preset.drop_path,
        "freeze_patch_embed": preset.freeze_patch_embed and not resnet,
        "temperature": preset.temperature,
        "momentum": preset.ema_momentum,
        "queue_size": preset.queue_size,
        "proj_hidden": preset.proj_hidden,
        "proj_dim": preset.proj_dim,
    }


def resolve_options(
    layers: Sequence[Layer], *, saved: TrainConfig | None = None, world_size: int = 1
) -> ResolvedOptions:
    """Merge the layers in the documented order and validate every option once.

    Args:
        layers: The layers above the method's preset, lowest first (recipe, file, command line).
        saved: The config of the run being resumed: it replaces the layers, except for the
            options a resumed run may change
            (:data:`~reference_trainer.config.RESUMABLE_OVERRIDES`).
        world_size: Number of ranks the run will have.

    Raises:
        ConfigError: One line naming the option, what was expected and what came.
    """
    given = requested(layers)
    set_by = _set_by(layers)
    if saved is not None:
        cfg = merge_resume_config(saved, {name: getattr(given, name) for name in set_by})
        sources = dict.fromkeys(TrainConfig.field_names(), "checkpoint")
        sources |= {n: s for n, s in set_by.items() if n in RESUMABLE_OVERRIDES | {"resume"}}
        method = _method(cfg.method)
        preset = method.preset_for(cfg.img_size)
        cfg = _fill_saved(cfg, preset)
    else:
        method = _method(given.method)
        preset = method.preset_for(given.img_size)
        preset_source = f"method preset ({method.name})"
        base = TrainConfig().updated(preset_values(preset, given.arch), source=preset_source)
        cfg = requested([Layer(preset_source, base.given()), *layers])
        sources = dict.fromkeys(TrainConfig.field_names(), DEFAULT_SOURCE)
        sources |= dict.fromkeys(base.given(), preset_source)
        sources |= set_by
    validate(cfg, method, world_size=world_size)
    spec = _negative_spec(cfg, method)  # checks the counts against the registry and the bank
    return ResolvedOptions(cfg, sources, method, run_preset(preset, cfg), spec)


#: What a checkpoint saved before an option existed ran with, for the options whose value
#: then was not the method's preset.
_BEFORE_THE_OPTION: Final[dict[str, Any]] = {"augmentation": "byol"}


def _fill_saved(cfg: TrainConfig, preset: MethodPreset) -> TrainConfig:
    """A resumed run's config with the options its checkpoint predates filled in: with what
    the run used then (``byol`` for every method before ``--augmentation``), else the
    preset's."""
    values = preset_values(preset, cfg.arch)
    missing = {
        name: _BEFORE_THE_OPTION.get(name, values[name])
        for name in values
        if getattr(cfg, name) is None
    }
    return cfg.updated(missing, source="checkpoint") if missing else cfg


def run_preset(preset: MethodPreset, cfg: TrainConfig) -> MethodPreset:
    """The method's preset with the run's values of the options that replace its fields
    (learning-rate reference, optimizer momentum, EMA schedule, augmentation), so that a
    consumer reading the preset reads what the run uses."""
    changes: dict[str, Any] = {
        name: getattr(cfg, name)
        for name in (
            "base_lr",
            "lr_reference_batch",
            "optimizer_momentum",
            "ema_schedule",
            "augmentation",
        )
        if getattr(cfg, name) is not None
    }
    return dataclasses.replace(preset, **changes)


def _method(name: str) -> type[Method]:
    try:
        return get_method(name)
    except KeyError:
        raise ConfigError(
            f"--method must be one of {', '.join(method_names())}, got {name!r}"
        ) from None


def infer_dataset(data: str) -> str:
    """The ``--dataset`` of a ``--data`` directory given alone: ``imagefolder`` when it holds
    class folders of images, else a one-line error asking for ``--dataset``."""
    from .data.datasets import IMAGE_EXTENSIONS

    root = Path(data)
    formats = ", ".join(d for d in dataset_names() if get_dataset(d).needs_root)
    ask = f"pass --dataset ({formats})"
    if not root.is_dir():
        raise ConfigError(f"--data {data}: no such directory; {ask}")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        with os.scandir(folder) as entries:
            if any(Path(e.name).suffix.lower() in IMAGE_EXTENSIONS for e in entries):
                return "imagefolder"
    raise ConfigError(
        f"--data {data} holds no class folders of images (DATA/<class>/<image>) for "
        f"--dataset imagefolder; {ask}"
    )


#: The largest number of optimizer steps (``--steps``, ``--stop-at``, the step forms of the
#: warmup and the negatives' window, the ``--*-every`` options): far beyond any real run, and
#: small enough for every counter and time estimate of the loop.
MAX_STEPS: Final = 10**9
#: The largest ``--seed``: far beyond any use (every stream's seed is derived from it and a
#: name, :func:`syn2co.seeds.derive_seed`, which takes any integer).
MAX_SEED: Final = 2**50 - 1
_MAX_EPOCHS: Final = 10**6
#: The largest value of each bounded option (the sizes that decide memory, the counts).
UPPER_BOUNDS: Final[Mapping[str, int]] = {
    "img_size": 4096,
    "patch_size": 4096,
    "window_size": 4096,
    "builtin_size": 100_000_000,
    "batch_size": 2**20,
    "lr_reference_batch": 2**20,
    "images_seen": MAX_STEPS * 2**20,
    "proj_hidden": 2**17,
    "proj_dim": 2**16,
    "embed_dim": 2**16,
    "depth": 1024,
    "num_heads": 4096,
    "queue_size": 2**31 - 1,
    "workers": 1024,
    "n_hard": 2**20,
    **dict.fromkeys(STRATEGIES, 2**20),
    "negatives_as_run_gpus": 2**16,
    "seed": MAX_SEED,
    **dict.fromkeys(
        (
            "steps",
            "stop_at",
            "warmup_steps",
            "negatives_start",
            "negatives_end",
            "checkpoint_every",
            "log_every",
            "progress_every",
            "hardness_every",
            "generator_grid_every",
        ),
        MAX_STEPS,
    ),
    **dict.fromkeys(
        ("epochs", "warmup_epochs", "negatives_start_epoch", "negatives_end_epoch"), _MAX_EPOCHS
    ),
}


def _check_bounds(cfg: TrainConfig) -> None:
    """Every number is finite, and no option is beyond its upper bound (:data:`UPPER_BOUNDS`)
    or, for ``--seed``, below 0."""
    for name in TrainConfig.field_names():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
        bound = UPPER_BOUNDS.get(name)
        if bound is not None and value > bound:
            raise ConfigError(f"{flag(name)} must be <= {bound}, got {value}")
    if cfg.seed < 0:
        raise ConfigError(f"--seed must be in [0, {MAX_SEED}], got {cfg.seed}")


def _memory_bytes() -> int | None:
    """The machine's physical memory, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(cfg: TrainConfig, method: type[Method]) -> None:
    """Refuse, before anything is allocated, the sizes whose memory alone exceeds the machine's:
    the negative queues with one step's logits against them, and the built-in set's sampler."""
    from .atomic import human_bytes

    memory = _memory_bytes()
    if memory is None:
        return
    where = f"more than this machine's {human_bytes(memory)} of memory"
    if method.bank == "queue" and cfg.queue_size is not None:
        dim = cfg.proj_dim or 256
        queues = 2 * cfg.queue_size * dim * 4  # up to two queues (MoBY's) of float32 keys
        logits = 3 * cfg.batch_size * cfg.queue_size * 4  # logits, softmax and their gradient
        if queues + logits > memory:
            raise ConfigError(
                f"--queue-size {cfg.queue_size}: the negative queues and one step's logits "
                f"against them take about {human_bytes(queues + logits)} (2 x {cfg.queue_size} "
                f"keys x {dim} dims x 4 bytes, {cfg.batch_size} x {cfg.queue_size} logits), "
                f"{where}; lower --queue-size"
            )
    if cfg.dataset == "builtin":
        sampler = 16 * cfg.builtin_size  # the epoch's permutation (int64) and its copy
        if sampler > memory:
            raise ConfigError(
                f"--builtin-size {cfg.builtin_size}: the sampler's permutation alone takes "
                f"about {human_bytes(sampler)}, {where}; lower --builtin-size"
            )


def validate(cfg: TrainConfig, method: type[Method], *, world_size: int = 1) -> None:
    """Check every option that can be checked without reading data (each exactly once).

    Runs before the run directory is created or any file is read, so a bad option leaves
    nothing behind.
    """
    _check_bounds(cfg)
    if cfg.dataset not in DATASETS:
        raise ConfigError(
            f"--dataset must be one of {', '.join(dataset_names())}, got {cfg.dataset!r}"
        )
    _check_at_least(cfg, 1, ("batch_size", "img_size", "proj_hidden", "proj_dim", "builtin_size"))
    if is_resnet(cfg.arch):
        _check_resnet_options(cfg)
    _check_at_least(
        cfg,
        1,
        (
            "checkpoint_every",
            "log_every",
            "progress_every",
            "hardness_every",
            "generator_grid_every",
            "patch_size",
            "window_size",
            "depth",
            "embed_dim",
            "num_heads",
            "queue_size",
            "steps",
            "stop_at",
        ),
    )
    if cfg.images_seen is not None and cfg.images_seen < cfg.batch_size:
        raise ConfigError(
            f"--images-seen must be >= {cfg.batch_size} (one step of --batch-size "
            f"{cfg.batch_size}), got {cfg.images_seen}"
        )
    _check_at_least(cfg, 0, ("workers", "warmup_steps", "negatives_start", *STRATEGIES))
    _check_at_least(cfg, 1, ("n_hard",))
    if not 0 < cfg.generator_fraction <= 1:
        raise ConfigError(f"--generator-fraction must be in (0, 1], got {cfg.generator_fraction}")
    if cfg.generator_lr <= 0:
        raise ConfigError(f"--generator-lr must be > 0, got {cfg.generator_lr}")
    if not cfg.generator_keys_enqueued and (cfg.generator == "none" or method.bank != "queue"):
        with_queue = " or ".join(n for n in method_names() if get_method(n).bank == "queue")
        raise ConfigError(
            f"--no-generator-keys-enqueued applies to --method {with_queue} with --generator "
            f"(only a method with a queue keeps keys), got --method {cfg.method} --generator "
            f"{cfg.generator}"
        )
    for name in ("temperature", "lr", "epochs"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{flag(name)} must be > 0, got {value}")
    for name in ("weight_decay", "warmup_epochs", "negatives_start_epoch", "negatives_end_epoch"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
    if cfg.clip_grad is not None and cfg.clip_grad < 0:
        raise ConfigError(f"--clip-grad must be >= 0 (0 disables clipping), got {cfg.clip_grad}")
    if cfg.momentum is not None and not 0 <= cfg.momentum <= 1:
        raise ConfigError(f"--momentum must be in [0, 1], got {cfg.momentum}")
    if cfg.drop_path is not None and not 0 <= cfg.drop_path < 1:
        raise ConfigError(f"--drop-path must be in [0, 1), got {cfg.drop_path}")
    for name in ("warmup_lr_fraction", "min_lr_fraction"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag(name)} must be in [0, 1], got {value}")
    if cfg.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (contrastive losses need negatives)")
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} (global) must be divisible by the {world_size} ranks"
        )
    if method.bank == "queue" and cfg.queue_size is not None and cfg.queue_size < cfg.batch_size:
        raise ConfigError(
            f"--queue-size {cfg.queue_size} is smaller than the global batch ({cfg.batch_size}): "
            f"each step enqueues a whole batch of keys; raise --queue-size or lower --batch-size"
        )
    _check_window(cfg)
    fmt = DATASETS[cfg.dataset]
    if not fmt.needs_root and cfg.data is not None:
        raise ConfigError(
            f"--data {cfg.data} is given but --dataset {cfg.dataset} reads no files; pass the "
            f"format of --data with --dataset (imagefolder, cifar10, ...)"
        )
    _check_mixing(cfg)
    _check_recipe_options(cfg)
    _check_memory(cfg, method)


def _check_recipe_options(cfg: TrainConfig) -> None:
    """The options that make a method's preset explicit (learning-rate reference, optimizer
    momentum) and the ResNet initialisation."""
    if cfg.base_lr is not None and cfg.base_lr <= 0:
        raise ConfigError(f"--base-lr must be > 0, got {cfg.base_lr}")
    if cfg.lr_reference_batch is not None and cfg.lr_reference_batch < 1:
        raise ConfigError(f"--lr-reference-batch must be >= 1, got {cfg.lr_reference_batch}")
    if cfg.optimizer_momentum is not None and not 0 <= cfg.optimizer_momentum < 1:
        raise ConfigError(f"--optimizer-momentum must be in [0, 1), got {cfg.optimizer_momentum}")
    if cfg.zero_init_residual is not None and not is_resnet(cfg.arch):
        raise ConfigError(
            f"--zero-init-residual: {cfg.arch} is not a ResNet (it has no residual batch "
            "norms); leave the option out"
        )


def _check_resnet_options(cfg: TrainConfig) -> None:
    """Refuse the transformer-only options for a ResNet ``--arch``."""
    for name in TRANSFORMER_ONLY_OPTIONS:
        value = getattr(cfg, name)
        if value is not None and value is not False:
            option = flag(name)
            raise ConfigError(
                f"{option}: {cfg.arch} is a ResNet, which has no patches, windows or attention "
                f"heads; leave {option} out (ResNets take --depth: blocks per stage, and "
                "--embed-dim: width of the first stage)"
            )


def _check_window(cfg: TrainConfig) -> None:
    """The synthetic negatives' window: consistent step and epoch forms."""
    start = cfg.negatives_start or 0
    if cfg.negatives_end is not None and cfg.negatives_end <= start:
        raise ConfigError("--negatives-end must be larger than --negatives-start")
    start_epoch = cfg.negatives_start_epoch or 0.0
    if cfg.negatives_end_epoch is not None and cfg.negatives_end_epoch <= start_epoch:
        raise ConfigError("--negatives-end-epoch must be larger than --negatives-start-epoch")
    gpus = cfg.negatives_as_run_gpus
    if gpus is not None:
        if cfg.negatives_start_epoch is None and cfg.negatives_end_epoch is None:
            raise ConfigError(
                "--negatives-as-run-gpus reads the epoch window: give --negatives-start-epoch "
                "or --negatives-end-epoch"
            )
        if gpus < 1 or cfg.batch_size % gpus:
            raise ConfigError(
                f"--negatives-as-run-gpus {gpus}: expected a number of GPUs >= 1 that divides "
                f"--batch-size {cfg.batch_size}"
            )


def _check_mixing(cfg: TrainConfig) -> None:
    """The real/synthetic mixing options are consistent."""
    fractions = [cfg.synthetic_fraction]
    if cfg.synthetic_fraction_end is not None:
        fractions.append(cfg.synthetic_fraction_end)
    for name, value in zip(
        ("--synthetic-fraction", "--synthetic-fraction-end"), fractions, strict=False
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")
    if cfg.synthetic_schedule == "constant" and cfg.synthetic_fraction_end is not None:
        raise ConfigError("--synthetic-fraction-end needs --synthetic-schedule linear or cosine")
    if cfg.synthetic_schedule != "constant" and cfg.synthetic_fraction_end is None:
        raise ConfigError(
            f"--synthetic-schedule {cfg.synthetic_schedule} needs --synthetic-fraction-end"
        )
    if max(fractions) > 0 and cfg.synthetic_data is None:
        raise ConfigError("--synthetic-fraction > 0 needs --synthetic-data DIR (an imagefolder)")
    if cfg.synthetic_data is not None and max(fractions) == 0:
        raise ConfigError("--synthetic-data is given but --synthetic-fraction is 0")


def _check_at_least(cfg: TrainConfig, minimum: int, names: tuple[str, ...]) -> None:
    """Each option is >= ``minimum`` (options left ``None`` are not checked)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{flag(name)} must be >= {minimum}, got {value}")


def strategy_counts(cfg: TrainConfig) -> dict[str, int]:
    """The counts a config gives, by strategy name, in the registry's order: the built-in
    types' options, then ``--strategy-counts`` (checked: registered names, counts >= 0)."""
    given: dict[str, int] = {}
    if cfg.strategy_counts:
        for item in cfg.strategy_counts.split(","):
            name, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not value.isdigit():
                raise ConfigError(
                    f"--strategy-counts: expected NAME=COUNT[,NAME=COUNT...] with counts >= 0, "
                    f"got {item.strip()!r}"
                )
            if name in STRATEGIES:
                raise ConfigError(f"--strategy-counts: give {name}'s count with {flag(name)}")
            given[name] = int(value)
    registered = [s.name for s in strategies()]
    unknown = [name for name in given if name not in registered]
    if unknown:
        raise ConfigError(
            f"--strategy-counts: {', '.join(map(repr, unknown))} is not a registered strategy; "
            f"registered: {', '.join(registered)}"
        )
    for name in STRATEGIES:
        count = getattr(cfg, name)
        if count is not None:
            if count < 0:
                raise ConfigError(f"{flag(name)} must be >= 0, got {count}")
            given[name] = count
    return {name: given[name] for name in registered if name in given}


# --------------------------------------------------------------------------------------------
# The plan: what the size of the training set decides
# --------------------------------------------------------------------------------------------


def plan_run(options: ResolvedOptions, *, train_size: int) -> RunPlan:
    """Derive the run's steps, learning rate, warmup and synthetic negatives.

    Args:
        options: The validated options (:func:`resolve_options`).
        train_size: Images in one epoch (one pass over what the run trains on).

    Raises:
        ConfigError: The numbers do not fit: a batch larger than the data, a warmup longer
            than the run, an empty window, a hard pool larger than the bank.
    """
    cfg, preset, method = options.config, options.preset, options.method
    if train_size < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {train_size} training images; lower "
            f"--batch-size or train on more images"
        )
    steps_per_epoch = train_size // cfg.batch_size
    if cfg.steps is not None:
        total = cfg.steps
    elif cfg.images_seen is not None:
        total = math.ceil(cfg.images_seen / cfg.batch_size)
    elif cfg.epochs is not None:
        total = max(1, round(cfg.epochs * steps_per_epoch))
    else:
        total = 100 * steps_per_epoch
    lr = (
        cfg.lr
        if cfg.lr is not None
        else preset.base_lr * cfg.batch_size / preset.lr_reference_batch
    )
    if cfg.warmup_epochs is not None:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
    elif cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    elif preset.warmup_epochs is not None:
        warmup = min(total, round(preset.warmup_epochs * steps_per_epoch))
    else:
        warmup = round(preset.warmup_fraction * total)
    if warmup > total:
        given = (
            f"--warmup-epochs {cfg.warmup_epochs} ({warmup} steps)"
            if cfg.warmup_epochs is not None
            else f"--warmup-steps {warmup}"
        )
        raise ConfigError(f"{given} exceeds the {total} training steps")
    filled = cfg.updated(
        {"lr": lr, "warmup_steps": None if cfg.warmup_epochs is not None else warmup}
    )
    return RunPlan(
        config=filled,
        sources=options.sources,
        method=method,
        preset=preset,
        train_size=train_size,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup,
        warmup_lr=lr * cfg.warmup_lr_fraction,
        min_lr=lr * cfg.min_lr_fraction,
        window=negatives_window(cfg, steps_per_epoch=steps_per_epoch, train_size=train_size),
        spec=options.spec,
    )


def negatives_window(cfg: TrainConfig, *, steps_per_epoch: int, train_size: int) -> ActiveWindow:
    """The optimizer steps at which the synthetic negatives are active: the one place where the
    step and epoch forms of the window become steps.

    The engine compares the window with its global optimizer step, which counts the steps of
    the whole run (all ranks together, restored on resume), so the window does not depend on
    the number of GPUs or on resuming.

    * Step form: ``[--negatives-start, --negatives-end)``.
    * Epoch form: ``[start_epoch x S, end_epoch x S)`` with ``S = steps_per_epoch`` (global
      batches per epoch), rounded to steps.
    * Epoch form with ``--negatives-as-run-gpus G``: the window the official SynCo v2 code
      activates in a run on ``G`` GPUs that is never resumed (``src/models/synco.py:243-248`` at
      commit 61528c5): its epoch is ``(k + 1) // (N // B_gpu)``, with ``k`` the steps since the
      process started and ``N // B_gpu`` the per-GPU batches of the whole dataset, ``G`` times
      the true steps per epoch; active while ``start_epoch <= epoch < end_epoch``.

    Args:
        cfg: The run's options.
        steps_per_epoch: Global optimizer steps per epoch.
        train_size: Training images (the official code's ``N``).
    """
    start_epoch, end_epoch = cfg.negatives_start_epoch, cfg.negatives_end_epoch
    first = cfg.negatives_start or 0
    if start_epoch is None and end_epoch is None:
        return ActiveWindow(first, cfg.negatives_end)

    def to_step(epoch: float) -> int:
        if cfg.negatives_as_run_gpus is None:
            return round(epoch * steps_per_epoch)
        per_gpu_steps = train_size // (cfg.batch_size // cfg.negatives_as_run_gpus)
        return max(0, math.ceil(epoch * per_gpu_steps) - 1)

    start = to_step(start_epoch) if start_epoch is not None else first
    end = to_step(end_epoch) if end_epoch is not None else cfg.negatives_end
    if end is not None and end <= start:
        raise ConfigError(
            f"the synthetic negatives' window [{start}, {end}) in steps is empty "
            f"({steps_per_epoch} steps per epoch)"
        )
    return ActiveWindow(start, end)


def _negative_spec(cfg: TrainConfig, method: type[Method]) -> NegativeSpec | None:
    base = NEGATIVE_PRESETS[cfg.negatives]
    counts = strategy_counts(cfg)
    if base is None:
        if counts or cfg.n_hard is not None:
            base = NegativeSpec(n_hard=cfg.n_hard or 256)  # counts given without a preset
        else:
            return None
    changes: dict[str, Any] = {"counts": counts}
    if cfg.n_hard is not None:
        changes["n_hard"] = cfg.n_hard
    # The bank a query draws from: its queue, or the other keys of the batch.
    bank = method.bank_size(batch_size=cfg.batch_size, queue_size=cfg.queue_size or 0)
    if bank < 1:
        raise ConfigError(
            f"synthetic negatives need a bank of negatives; --method {cfg.method} has none"
        )
    n_hard = changes.get("n_hard", base.n_hard)
    if n_hard > bank:
        if cfg.n_hard is not None:
            what = "--queue-size" if method.bank == "queue" else "the global batch size minus 1"
            raise ConfigError(f"--n-hard {cfg.n_hard} exceeds the bank ({what} = {bank})")
        changes["n_hard"] = bank  # a preset's pool larger than a small bank: use the whole bank
    try:
        spec = base.replace(**changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"synthetic negatives: {e}") from None
    return spec if spec.total > 0 else None


def method_settings(cfg: TrainConfig, spec: NegativeSpec | None) -> MethodSettings:
    """The settings a method is built from, out of a resolved config."""
    assert cfg.temperature is not None and cfg.proj_dim is not None  # filled by the preset
    return MethodSettings(
        temperature=cfg.temperature,
        queue_size=cfg.queue_size or 0,
        proj_hidden=cfg.proj_hidden,
        proj_dim=cfg.proj_dim,
        spec=spec,
        vectors=cfg.negatives_path == "vectors",
    )


def resolve(cfg: TrainConfig, *, train_size: int, world_size: int = 1) -> RunPlan:
    """The plan of a config given as one layer (its values other than the defaults).

    Args:
        cfg: The options a caller sets.
        train_size: Images in one epoch.
        world_size: Number of ranks.
    """
    options = resolve_options([given_layer(cfg)], world_size=world_size)
    return plan_run(options, train_size=train_size)
