"""The trainer's typed configuration: fields, presets, files and command-line overrides.

One flat dataclass, :class:`TrainConfig`, holds every option of ``syn2co-train run``; the CLI's
options are generated from its fields (their ``help`` metadata), so the two never drift apart.
Precedence, lowest first: field defaults, then the method and image-size presets (fields left
``None`` are *resolved* from them), then a recipe (``--recipe NAME``, a versioned file shipped in
:mod:`reference_trainer.recipes`), then a config file (YAML or TOML, flat keys with ``-`` or
``_``), then the command line. The resolved config is written to ``RUN_DIR/config.yaml``
and can be passed back with ``--config``.

Some options come in two forms, in optimizer steps or in epochs (:data:`ALTERNATIVE_FORMS`).
One layer may set only one form of each pair; a layer that sets one form clears the other form
set by a lower layer, so ``--recipe synco-v2-deit-s --negatives-start 0`` overrides the
recipe's ``negatives_start_epoch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

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

from .atomic import write_atomic
from .data.registry import DATASETS, dataset_names
from .errors import ConfigError, flag
from .methods import (
    EmaSchedule,
    Method,
    MethodPreset,
    OptimizerKind,
    WeightDecayExclude,
    get_method,
    method_names,
)
from .resnets import check_resnet_options, is_resnet

Negatives = Literal["none", "synco-v1", "synco-v2", "synco-v2-config", "mochi"]
NegativesPath = Literal["logits", "vectors"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
RatioKind = Literal["constant", "linear", "cosine"]
LoaderKind = Literal["auto", "cpu", "gpu"]
GeneratorMode = Literal["none", "hard-samples", "hard-pairs", "both"]


def _opt(help: str, default: Any = None, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def _count_help(name: str) -> str:
    """The help of a built-in strategy's count option, from its registry record."""
    description = {s.name: s.description for s in strategies()}[name]
    return f"Count of {name} negatives per query: {description} (default: the preset's)."


@dataclass
class TrainConfig:
    """Every option of a pretraining run. ``None`` means: take it from the presets."""

    # --- what to train -----------------------------------------------------------------------
    recipe: str | None = _opt(
        "Start from a named recipe (list them with syn2co-train recipes; NAME or NAME@VERSION): "
        "its values override the method's defaults, --config and the command line override it."
    )
    arch: str = _opt(
        "Backbone: deit_s (timm DeiT-S, 6 heads), vit_s_mocov3 (MoCo v3's ViT-S: 12 heads, fixed "
        "sin-cos positions), vit_s, swin_t, vit_t, resnet18, resnet50 or any timm ViT/Swin/ResNet "
        "name (ResNets get the CIFAR stem at 32 px and below).",
        "deit_s",
    )
    method: str = _opt(
        "Pretraining method (a registered plug-in, see reference_trainer.methods).",
        "moby",
        choices=method_names,
    )
    negatives: Negatives = _opt("Synthetic hard negatives preset (syn2co.negatives).", "none")
    # --- data ---------------------------------------------------------------------------------
    dataset: str = _opt(
        "Dataset format of --data (a registered format, see reference_trainer.data.registry; "
        "builtin needs no files).",
        "builtin",
        choices=dataset_names,
    )
    data: str | None = _opt(
        "Training data: the train directory (imagefolder) or the root (imagenet100: the "
        "ImageNet-1K root with train/ and val/)."
    )
    val_data: str | None = _opt("Validation data for evaluation (imagefolder directory).")
    img_size: int = _opt("Image side in pixels; presets exist for 32, 64, 96 and 224.", 32)
    builtin_size: int = _opt("Images in the built-in training set.", 10_000)
    strict_data: bool = _opt("Fail on the first unreadable image instead of skipping it.", False)
    synthetic_data: str | None = _opt(
        "Synthetic images (an imagefolder directory, e.g. made by syn2co-train synth) mixed "
        "into every batch."
    )
    synthetic_fraction: float = _opt(
        "Fraction of every global batch drawn from --synthetic-data (1.0: synthetic only).", 0.0
    )
    synthetic_fraction_end: float | None = _opt(
        "Synthetic fraction at the last step, with --synthetic-schedule linear or cosine."
    )
    synthetic_schedule: RatioKind = _opt(
        "How the synthetic fraction moves from --synthetic-fraction to --synthetic-fraction-end.",
        "constant",
    )
    workers: int = _opt("DataLoader worker processes per rank.", 2)
    loader: LoaderKind = _opt(
        "Input path: cpu (decode and augment in workers), gpu (workers read bytes; batched "
        "decode and augmentation on the device) or auto (gpu on CUDA with nvJPEG).",
        "auto",
    )
    # --- schedule -----------------------------------------------------------------------------
    batch_size: int = _opt("Global batch size (all ranks together).", 64)
    epochs: float | None = _opt("Training length in epochs (or use --steps).")
    steps: int | None = _opt("Training length in optimizer steps (overrides --epochs).")
    lr: float | None = _opt(
        "Peak learning rate; default: the method's base lr x batch / reference."
    )
    optimizer: OptimizerKind | None = _opt(
        "adamw, sgd (with momentum) or lars (SimCLR's LARS); default: the method's."
    )
    weight_decay: float | None = _opt(
        "Weight decay (default: the method's, e.g. 0.05 MoBY, 0.1 MoCo v3, 1e-4 MoCo v2)."
    )
    weight_decay_exclude: WeightDecayExclude | None = _opt(
        "Parameters without weight decay: 1d (biases and every 1-D parameter, as the SynCo v2 "
        "and MoBY code), 1d+no-weight-decay (also the backbone's no_weight_decay() names: "
        "position embeddings, class token, relative position tables) or none (MoCo v3's and "
        "MoCo v2's code: all); LARS does not adapt the excluded ones either (default: the "
        "method's, 1d+no-weight-decay, none for MoCo v2)."
    )
    warmup_steps: int | None = _opt(
        "Linear warmup steps (default: the method's, e.g. 5/300 of the run MoBY, 10 epochs "
        "SimCLR, none MoCo v2)."
    )
    warmup_epochs: float | None = _opt("Linear warmup in epochs (instead of --warmup-steps).")
    warmup_lr_fraction: float = _opt(
        "Learning rate at step 0 of the warmup, as a fraction of the peak.", 0.0
    )
    min_lr_fraction: float = _opt(
        "Learning rate the cosine ends at, as a fraction of the peak.", 0.0
    )
    clip_grad: float | None = _opt(
        "Gradient-norm clip; 0 disables (default: the method's, 5 MoBY, off otherwise)."
    )
    momentum: float | None = _opt(
        "EMA momentum of the target network at step 0 (default: the method's); it rises to 1 "
        "on a cosine, or stays constant for methods that say so (MoCo v2)."
    )
    # --- method -------------------------------------------------------------------------------
    temperature: float | None = _opt("Contrastive temperature tau (default: the method's).")
    queue_size: int | None = _opt("Length of each negative queue (default: the method's).")
    proj_hidden: int | None = _opt(
        "Hidden width of the projector and predictor MLPs (default: the method's, 4096 "
        "MoBY/MoCo v3, 2048 MoCo v2, the backbone's feature width SimCLR)."
    )
    proj_dim: int | None = _opt(
        "Output width of the projector, the embedding size D (default: the method's, 256 "
        "MoBY/MoCo v3, 128 SimCLR/MoCo v2)."
    )
    drop_path: float | None = _opt(
        "Stochastic depth of the online backbone (0.2 MoBY, 0.1 MoCo v3; 0 for ResNets)."
    )
    freeze_patch_embed: bool | None = _opt(
        "Freeze the random patch projection (MoCo v3 trick; ViTs only)."
    )
    # --- synthetic negatives -----------------------------------------------------------------
    n_hard: int | None = _opt("Hard pool size N (default: the preset's).")
    # One option per built-in strategy of syn2co.negatives (STRATEGIES; a test checks that
    # they agree), typed and named like NegativeSpec's keywords; other registered strategies
    # take their counts from --strategy-counts.
    interpolated: int | None = _opt(_count_help("interpolated"))
    extrapolated: int | None = _opt(_count_help("extrapolated"))
    mixed: int | None = _opt(_count_help("mixed"))
    noisy: int | None = _opt(_count_help("noisy"))
    perturbed: int | None = _opt(_count_help("perturbed"))
    adversarial: int | None = _opt(_count_help("adversarial"))
    strategy_counts: str | None = _opt(
        "Counts of strategies registered with syn2co.negatives.register_strategy beyond the six "
        "built-in ones, as NAME=COUNT[,NAME=COUNT...] (each after the built-in types on the M "
        "axis, in registration order)."
    )
    negatives_start: int | None = _opt("First optimizer step with synthetic negatives (default 0).")
    negatives_start_epoch: float | None = _opt(
        "First epoch with synthetic negatives (instead of --negatives-start); counted from the "
        "global optimizer step, so independent of the number of GPUs and of resuming."
    )
    negatives_end_epoch: float | None = _opt(
        "First epoch without synthetic negatives (instead of --negatives-end)."
    )
    negatives_as_run_gpus: int | None = _opt(
        "Read the epoch window as the official SynCo v2 code runs it on this many GPUs: its "
        "'epoch' counts per-GPU batches (GPUS x the true epoch) in a run never resumed."
    )
    negatives_path: NegativesPath = _opt(
        "How synthetic negatives enter the loss: logits (their cosines from inner products, "
        "syn2co.negatives.synthetic_logits, no (B, M, D) tensor) or vectors "
        "(syn2co.negatives.synthesize; the same loss up to float32 rounding, more memory).",
        "logits",
    )
    generator: GeneratorMode = _opt(
        "Jointly learned generators (syn2co.generators): hard samples as extra negatives, hard "
        "positive pairs, or both.",
        "none",
    )
    generator_fraction: float = _opt(
        "Generated samples (and, separately, pairs) per step as a fraction of the batch.", 0.25
    )
    generator_lr: float = _opt("AdamW learning rate of the generators.", 2e-4)
    generator_grid_every: int = _opt("Write a PNG grid of generated samples every N steps.", 500)
    generator_keys_enqueued: bool = _opt(
        "Enqueue the target keys of generated images into the queues (MoBY, MoCo v2) like real "
        "ones; off keeps the queues to real (and synthetic-set) images, so generated images are "
        "negatives only within their own step.",
        True,
    )
    negatives_end: int | None = _opt("Step at which synthetic negatives stop (default: never).")
    # --- model size overrides (tiny models for CPU runs and tests) -----------------------------
    patch_size: int | None = _opt("Patch size (default: the image-size preset).")
    window_size: int | None = _opt("Swin window size (default: the image-size preset).")
    depth: int | None = _opt(
        "Override the number of transformer blocks (Swin and ResNet: per stage, 4 stages)."
    )
    embed_dim: int | None = _opt(
        "Override the embedding width (ResNet: of the first stage, doubling per stage)."
    )
    num_heads: int | None = _opt(
        "Override the attention heads (Swin: of the first stage, doubling)."
    )
    # --- engine -------------------------------------------------------------------------------
    out: str | None = _opt(
        "Run directory (checkpoints, metrics, config); default runs/syn2co, and with --resume "
        "the resumed run's directory."
    )
    seed: int = _opt("Random seed of the whole run.", 0)
    device: str = _opt("auto, cpu, cuda or cuda:N (torchrun sets the local GPU).", "auto")
    precision: Precision = _opt("auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.", "auto")
    compile: bool = _opt("torch.compile the online and target networks.", False)
    checkpoint_every: int = _opt("Save a checkpoint every N steps (and at the end).", 500)
    log_every: int = _opt("Write metrics and check the loss every N steps.", 10)
    progress_every: int = _opt(
        "Without a terminal (batch jobs), print a progress line every N steps.", 100
    )
    hardness_every: int = _opt("Log syn2co.diagnostics hardness stats every N steps.", 100)
    check_inputs: bool = _opt(
        "Run syn2co's NaN/inf input checks in every call (a GPU sync each; the loop itself "
        "checks the loss every --log-every steps).",
        False,
    )
    resume: str | None = _opt("Checkpoint file or run directory to resume from.")
    stop_at: int | None = _opt(
        "Stop at this global step with a checkpoint; the schedules still run to --steps "
        "(fit a job's time limit, then --resume)."
    )

    # ------------------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        return cls().updated(values, source=source)

    def updated(self, values: dict[str, Any], *, source: str = "override") -> TrainConfig:
        """A copy with ``values`` applied (keys may use ``-`` or ``_``); values are checked."""
        known = {f.name: f for f in fields(self)}
        hints = get_type_hints(TrainConfig)
        clean: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                close = [k for k in known if k.startswith(key[:3])]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{source}: unknown option '{raw_key}'{hint}")
            clean[key] = _coerce(key, value, hints[key], source)
            choices = known[key].metadata.get("choices")
            if choices is not None and clean[key] not in choices():
                raise ConfigError(
                    f"{source}: option '{key}' must be one of {', '.join(choices())}, "
                    f"got {clean[key]!r}"
                )
        for steps_form, epochs_form in ALTERNATIVE_FORMS:
            given = [k for k in (steps_form, epochs_form) if clean.get(k) is not None]
            if len(given) == 2:
                raise ConfigError(
                    f"{source}: give either {flag(steps_form)} or {flag(epochs_form)}, not both"
                )
            if given:  # this layer's form replaces the other form of the layers below
                other = epochs_form if given[0] == steps_form else steps_form
                clean[other] = None
        return dataclasses.replace(self, **clean)


#: Options given either in optimizer steps or in epochs: (steps form, epochs form).
ALTERNATIVE_FORMS: tuple[tuple[str, str], ...] = (
    ("warmup_steps", "warmup_epochs"),
    ("negatives_start", "negatives_start_epoch"),
    ("negatives_end", "negatives_end_epoch"),
)


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check a value against a field's type (int, float, str, bool, Literal, optional)."""
    args = get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: option '{key}' cannot be empty")
    base = next(a for a in args if a is not type(None)) if optional else hint
    choices = get_args(base)
    if choices and all(isinstance(c, str) for c in choices):
        if value not in choices:
            raise ConfigError(
                f"{source}: option '{key}' must be one of {', '.join(choices)}, got {value!r}"
            )
        return value
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        return str(value)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"{source}: option '{key}' expects {name}, got {value!r}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML (.yaml/.yml) or TOML (.toml) mapping of options."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: no such file: {p}")
    text = p.read_text()
    data: Any
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) if p.suffix != ".json" else json.loads(text)
        else:
            raise ConfigError(
                f"--config: expected a .yaml, .yml, .toml or .json file, got {p.name}"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"--config: {p} is not valid: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p} must hold a mapping of option: value")
    return dict(data)


def save_config(cfg: TrainConfig, path: Path) -> None:
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    write_atomic(path, lambda f: f.write(text.encode()))


# --------------------------------------------------------------------------------------------
# Presets and resolution
# --------------------------------------------------------------------------------------------

NEGATIVE_PRESETS: dict[str, NegativeSpec | None] = {
    "none": None,
    "synco-v1": SYNCO_V1,
    "synco-v2": SYNCO_V2,
    "synco-v2-config": SYNCO_V2_CONFIG,
    "mochi": mochi(1024, 512, 256),
}


@dataclass(frozen=True)
class Resolved:
    """A run's config with every default filled in, and the numbers derived from it.

    Nothing here is optional where the run needs a value: the engine reads these fields, never
    the ``None``-able options of :class:`TrainConfig`.

    Attributes:
        config: The options with the method's defaults filled in (saved as ``config.yaml``).
        method: The method's class.
        preset: The method's recipe for this config (:meth:`Method.recipe`).
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per pass over the training images.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        warmup_steps: Linear warmup steps.
        warmup_lr: Learning rate at step 0 (the warmup rises linearly from it to ``lr``).
        min_lr: Learning rate at the last step (the cosine falls from ``lr`` to it).
        clip_grad: Gradient-norm clip (0 = off).
        drop_path: Stochastic depth of the online backbone.
        freeze_patch_embed: The patch projection is frozen.
        temperature: Contrastive temperature.
        ema_momentum: EMA momentum of the target at step 0.
        ema_schedule: How the EMA momentum moves: ``cosine`` to 1, or ``constant``.
        queue_size: Length of each negative queue (methods with a queue).
        optimizer: ``adamw``, ``sgd`` or ``lars``.
        weight_decay_exclude: Which parameters get no weight decay (and no LARS adaptation).
        proj_dim: The embedding size D.
        spec: The synthetic negatives, or None without them.
        window: The optimizer steps at which the synthetic negatives are active (from
            :func:`negatives_window`).
    """

    config: TrainConfig
    method: type[Method]
    preset: MethodPreset
    total_steps: int
    steps_per_epoch: int
    lr: float
    weight_decay: float
    warmup_steps: int
    warmup_lr: float
    min_lr: float
    clip_grad: float
    drop_path: float
    freeze_patch_embed: bool
    temperature: float
    ema_momentum: float
    ema_schedule: EmaSchedule
    queue_size: int
    optimizer: OptimizerKind
    weight_decay_exclude: WeightDecayExclude
    proj_dim: int
    spec: NegativeSpec | None
    window: ActiveWindow


def resolve(cfg: TrainConfig, *, train_size: int, world_size: int = 1) -> Resolved:
    """Fill the ``None`` fields from the method's preset and derive the step counts.

    Args:
        cfg: The config after file and command-line overrides.
        train_size: Number of training images (sets the steps per epoch).
        world_size: Number of ranks; the global batch must split evenly over them.
    """
    method = check_options(cfg, world_size=world_size)
    preset = method.recipe(cfg)
    # The presets' drop-path and frozen patch projection are transformer settings.
    resnet = is_resnet(cfg.arch)
    if train_size < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {train_size} training images; lower "
            f"--batch-size or train on more images"
        )
    steps_per_epoch = train_size // cfg.batch_size
    if cfg.steps is not None:
        total = cfg.steps
    elif cfg.epochs is not None:
        total = max(1, round(cfg.epochs * steps_per_epoch))
    else:
        total = 100 * steps_per_epoch
    lr = (
        cfg.lr
        if cfg.lr is not None
        else preset.base_lr * cfg.batch_size / preset.lr_reference_batch
    )
    warmup_steps = cfg.warmup_steps
    if cfg.warmup_epochs is not None:
        warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if preset.warmup_epochs is not None:
        warmup_default = min(total, round(preset.warmup_epochs * steps_per_epoch))
    else:
        warmup_default = round(preset.warmup_fraction * total)
    filled = dataclasses.replace(
        cfg,
        lr=lr,
        optimizer=_default(cfg.optimizer, preset.optimizer),
        weight_decay=_default(cfg.weight_decay, preset.weight_decay),
        weight_decay_exclude=_default(cfg.weight_decay_exclude, preset.weight_decay_exclude),
        # the epoch form stays as given; the step form is filled only when neither was given
        warmup_steps=(
            cfg.warmup_steps
            if cfg.warmup_epochs is not None
            else _default(cfg.warmup_steps, warmup_default)
        ),
        clip_grad=_default(cfg.clip_grad, preset.clip_grad),
        drop_path=_default(cfg.drop_path, 0.0 if resnet else preset.drop_path),
        freeze_patch_embed=_default(
            cfg.freeze_patch_embed, preset.freeze_patch_embed and not resnet
        ),
        temperature=_default(cfg.temperature, preset.temperature),
        momentum=_default(cfg.momentum, preset.ema_momentum),
        queue_size=_default(cfg.queue_size, preset.queue_size),
        proj_hidden=_default(cfg.proj_hidden, preset.proj_hidden),  # None: the feature width
        proj_dim=_default(cfg.proj_dim, preset.proj_dim),
    )
    warmup = _default(warmup_steps, _default(filled.warmup_steps, 0))
    if warmup > total:
        given = (
            f"--warmup-epochs {cfg.warmup_epochs} ({warmup} steps)"
            if cfg.warmup_epochs is not None
            else f"--warmup-steps {warmup}"
        )
        raise ConfigError(f"{given} exceeds the {total} training steps")
    spec = _negative_spec(filled, method)
    return Resolved(
        config=filled,
        method=method,
        preset=preset,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        weight_decay=_default(filled.weight_decay, 0.0),
        warmup_steps=warmup,
        warmup_lr=lr * cfg.warmup_lr_fraction,
        min_lr=lr * cfg.min_lr_fraction,
        clip_grad=_default(filled.clip_grad, 0.0),
        drop_path=_default(filled.drop_path, 0.0),
        freeze_patch_embed=_default(filled.freeze_patch_embed, False),
        temperature=_default(filled.temperature, preset.temperature),
        ema_momentum=_default(filled.momentum, preset.ema_momentum),
        ema_schedule=preset.ema_schedule,
        queue_size=_default(filled.queue_size, preset.queue_size),
        optimizer=_default(filled.optimizer, preset.optimizer),
        weight_decay_exclude=_default(filled.weight_decay_exclude, preset.weight_decay_exclude),
        proj_dim=_default(filled.proj_dim, preset.proj_dim),
        spec=spec,
        window=negatives_window(cfg, steps_per_epoch=steps_per_epoch, train_size=train_size),
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
    if start_epoch is None and end_epoch is None:
        return ActiveWindow(_default(cfg.negatives_start, 0), cfg.negatives_end)

    def to_step(epoch: float) -> int:
        if cfg.negatives_as_run_gpus is None:
            return round(epoch * steps_per_epoch)
        per_gpu_steps = train_size // (cfg.batch_size // cfg.negatives_as_run_gpus)
        return max(0, math.ceil(epoch * per_gpu_steps) - 1)

    start = to_step(start_epoch) if start_epoch is not None else _default(cfg.negatives_start, 0)
    end = to_step(end_epoch) if end_epoch is not None else cfg.negatives_end
    if end is not None and end <= start:
        raise ConfigError(
            f"the synthetic negatives' window [{start}, {end}) in steps is empty "
            f"({steps_per_epoch} steps per epoch)"
        )
    return ActiveWindow(start, end)


def check_options(cfg: TrainConfig, *, world_size: int = 1) -> type[Method]:
    """Check every option that can be checked without reading data; returns the method.

    Runs before the run directory is created or any file is read, so a bad option leaves
    nothing behind.
    """
    try:
        method = get_method(cfg.method)
    except KeyError as e:
        raise ConfigError(f"--method: {e.args[0]}") from None
    _check_positive(cfg, ("batch_size", "img_size", "proj_hidden", "proj_dim", "builtin_size"))
    if is_resnet(cfg.arch):
        check_resnet_options(cfg)
    _check_positive(
        cfg,
        (
            "checkpoint_every",
            "log_every",
            "progress_every",
            "hardness_every",
            "generator_grid_every",
        ),
    )
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
    if cfg.temperature is not None and cfg.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {cfg.temperature}")
    if cfg.momentum is not None and not 0 <= cfg.momentum <= 1:
        raise ConfigError(f"--momentum must be in [0, 1], got {cfg.momentum}")
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} (global) must be divisible by the {world_size} ranks"
        )
    if cfg.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (contrastive losses need negatives)")
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {cfg.steps}")
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise ConfigError(f"--epochs must be > 0, got {cfg.epochs}")
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.stop_at is not None and cfg.stop_at < 1:
        raise ConfigError(f"--stop-at must be >= 1, got {cfg.stop_at}")
    if cfg.lr is not None and cfg.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.weight_decay is not None and cfg.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    if cfg.clip_grad is not None and cfg.clip_grad < 0:
        raise ConfigError(f"--clip-grad must be >= 0 (0 disables clipping), got {cfg.clip_grad}")
    if cfg.drop_path is not None and not 0 <= cfg.drop_path < 1:
        raise ConfigError(f"--drop-path must be in [0, 1), got {cfg.drop_path}")
    _check_positive(cfg, ("patch_size", "window_size", "depth", "embed_dim", "num_heads"))
    if cfg.queue_size is not None and cfg.queue_size < 1:
        raise ConfigError(f"--queue-size must be >= 1, got {cfg.queue_size}")
    queue = _default(cfg.queue_size, method.preset.queue_size)
    if method.bank == "queue" and queue < cfg.batch_size:
        raise ConfigError(
            f"--queue-size {queue} is smaller than the global batch ({cfg.batch_size}): each "
            f"step enqueues a whole batch of keys; raise --queue-size or lower --batch-size"
        )
    check_schedule_forms(cfg)
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {cfg.workers}")
    fmt = DATASETS.get(cfg.dataset)
    if fmt is not None and not fmt.needs_root and cfg.data is not None:
        raise ConfigError(
            f"--data {cfg.data} is given but --dataset {cfg.dataset} reads no files; pass the "
            f"format of --data with --dataset (imagefolder, cifar10, ...)"
        )
    strategy_counts(cfg)  # the names and counts of --strategy-counts
    check_mixing(cfg)
    return method


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
        if getattr(cfg, name) is not None:
            given[name] = getattr(cfg, name)
    return {name: given[name] for name in registered if name in given}


def check_schedule_forms(cfg: TrainConfig) -> None:
    """The warmup and the synthetic negatives' window: one form each, consistent values."""
    for steps_form, epochs_form in ALTERNATIVE_FORMS:
        if getattr(cfg, steps_form) is not None and getattr(cfg, epochs_form) is not None:
            raise ConfigError(f"give either {flag(steps_form)} or {flag(epochs_form)}, not both")
    for name in ("warmup_epochs", "negatives_start_epoch", "negatives_end_epoch"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
    for name in ("warmup_lr_fraction", "min_lr_fraction"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag(name)} must be in [0, 1], got {value}")
    start = _default(cfg.negatives_start, 0)
    if start < 0:
        raise ConfigError(f"--negatives-start must be >= 0, got {start}")
    if cfg.negatives_end is not None and cfg.negatives_end <= start:
        raise ConfigError("--negatives-end must be larger than --negatives-start")
    start_epoch = _default(cfg.negatives_start_epoch, 0.0)
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
    bank = method.bank_size(batch_size=cfg.batch_size, queue_size=_default(cfg.queue_size, 0))
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


#: Options that may differ from the checkpoint's config when resuming. Everything else must
#: match, or the continuation would not be the run that was started.
RESUMABLE_OVERRIDES = frozenset(
    {
        "resume",
        "out",
        "workers",
        "log_every",
        "progress_every",
        "checkpoint_every",
        "hardness_every",
        "stop_at",
        "compile",
        "device",
        "data",
        "val_data",
        "check_inputs",
        "loader",
    }
)


def merge_resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The checkpoint's config, with only the options that keep the run the same."""
    defaults = TrainConfig()
    # Options about this invocation only, never inherited from the interrupted one.
    changed: dict[str, Any] = {"resume": given.resume, "stop_at": given.stop_at}
    for name in TrainConfig.field_names():
        if name in changed:
            continue
        value = getattr(given, name)
        if value == getattr(defaults, name) or value == getattr(saved, name):
            continue  # not given on the command line, or the same as the run's
        if name not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"--resume: option '{name}' differs from the checkpoint's run "
                f"({getattr(saved, name)!r} there, {value!r} here); start a new run to change it"
            )
        changed[name] = value
    return saved.updated(changed)


def check_mixing(cfg: TrainConfig) -> None:
    """The real/synthetic mixing options are consistent (fails before any data is read)."""
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


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _check_positive(cfg: TrainConfig, names: tuple[str, ...]) -> None:
    """Each option is >= 1 (options left ``None`` take a preset's value and are not checked)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{flag(name)} must be >= 1, got {value}")
