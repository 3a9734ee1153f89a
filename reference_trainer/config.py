"""The schema of a pretraining run's options: what can be set, of which type, and how it is read.

One flat dataclass, :class:`TrainConfig`, holds every option of ``syn2co-train run``; the CLI's
options are generated from its fields (their ``help`` metadata), so the two never drift apart.
A ``None`` field is one the method's preset or the run's size decides
(:mod:`reference_trainer.resolve`, the one place where a run's values are assembled, validated
and derived, in the documented order defaults < method preset < recipe < ``--config`` file <
command line).

This module is the schema only: types and coercion, config files in and out, and the rule that
says which options a resumed run may change. It imports nothing of the trainer but its errors and
atomic writes, so every layer above can read a config.

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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from syn2co.negatives import strategies

from .atomic import write_atomic
from .errors import ConfigError, flag

__all__ = [
    "ALTERNATIVE_FORMS",
    "AUGMENTATION_NAMES",
    "RESUMABLE_OVERRIDES",
    "AugmentationName",
    "EmaSchedule",
    "GeneratorMode",
    "LoaderKind",
    "Negatives",
    "NegativesPath",
    "OptimizerKind",
    "PairDesign",
    "Precision",
    "RatioKind",
    "TrainConfig",
    "WeightDecayExclude",
    "load_config_file",
    "merge_resume_config",
    "save_config",
]

Negatives = Literal["none", "synco-v1", "synco-v2", "synco-v2-config", "mochi"]
NegativesPath = Literal["logits", "vectors"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
RatioKind = Literal["constant", "linear", "cosine"]
LoaderKind = Literal["auto", "cpu", "gpu"]
GeneratorMode = Literal["none", "hard-samples", "hard-pairs", "both"]
OptimizerKind = Literal["adamw", "sgd", "lars"]
EmaSchedule = Literal["cosine", "constant"]
WeightDecayExclude = Literal["1d", "1d+no-weight-decay", "none"]
AugmentationName = Literal["byol", "mocov2", "simclr", "simclr-cifar"]
PairDesign = Literal["shared", "twin"]

#: The named two-view augmentations (``--augmentation``), defined in
#: :mod:`reference_trainer.data.transforms` (a test checks that the two agree).
AUGMENTATION_NAMES: tuple[str, ...] = get_args(AugmentationName)


def _opt(help: str, default: Any = None, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def _count_help(name: str) -> str:
    """The help of a built-in strategy's count option, from its registry record."""
    description = {s.name: s.description for s in strategies()}[name]
    return f"Count of {name} negatives per query: {description} (default: the preset's)."


@dataclass
class TrainConfig:
    """Every option of a pretraining run.

    ``None`` means: decided by the method's preset or derived from the run's size
    (:func:`reference_trainer.resolve.resolve_options`). Fields with ``registry`` metadata name
    an entry of a registry (methods, dataset formats) that resolution checks.
    """

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
        registry="method",
    )
    negatives: Negatives = _opt("Synthetic hard negatives preset (syn2co.negatives).", "none")
    # --- data ---------------------------------------------------------------------------------
    dataset: str = _opt(
        "Dataset format of --data (a registered format, see reference_trainer.data.registry; "
        "builtin needs no files).",
        "builtin",
        registry="dataset",
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
    augmentation: AugmentationName | None = _opt(
        "The two-view augmentation: byol (BYOL's asymmetric pair: MoBY, MoCo v3, SynCo v2), "
        "mocov2 (MoCo v2's aug-plus, the same for both views: MoCo v2, SynCo v1), simclr "
        "(SimCLR's, strength 1 with blur) or simclr-cifar (SimCLR's CIFAR-10 setting: "
        "strength 0.5, no blur); each view's parameters are listed by --dry-run (default: the "
        "method's)."
    )
    # --- schedule -----------------------------------------------------------------------------
    batch_size: int = _opt("Global batch size (all ranks together).", 64)
    epochs: float | None = _opt("Training length in epochs (or use --steps).")
    steps: int | None = _opt("Training length in optimizer steps (overrides --epochs).")
    images_seen: int | None = _opt(
        "Training length in images seen, the global batch times the steps, rounded up to whole "
        "steps (overrides --epochs; --steps overrides it): the same work for runs whose epochs "
        "differ, such as real, mixed and synthetic-only runs."
    )
    lr: float | None = _opt(
        "Peak learning rate; default: --base-lr x batch / --lr-reference-batch."
    )
    base_lr: float | None = _opt(
        "Peak learning rate at --lr-reference-batch images, scaled linearly with --batch-size "
        "when --lr is not given (default: the method's, e.g. 1e-3 MoBY, 1.5e-4 MoCo v3)."
    )
    lr_reference_batch: int | None = _opt(
        "The batch size --base-lr refers to (default: the method's, e.g. 512 MoBY, 256 MoCo "
        "v3, SimCLR, MoCo v2)."
    )
    optimizer: OptimizerKind | None = _opt(
        "adamw, sgd (with momentum) or lars (SimCLR's LARS); default: the method's."
    )
    optimizer_momentum: float | None = _opt(
        "Momentum of sgd and lars (default: the method's, 0.9); adamw keeps torch's betas "
        "(0.9, 0.999)."
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
    ema_schedule: EmaSchedule | None = _opt(
        "How the EMA momentum of the target moves: cosine (from --momentum to 1: BYOL, MoBY, "
        "MoCo v3) or constant (MoCo v2) (default: the method's)."
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
    generator_pair_design: PairDesign = _opt(
        "The hard positive pairs' generators: shared (one generator, two codes around a shared "
        "base) or twin (a pair of generators, as Wu et al. describe, starting identical and "
        "sharing the base code).",
        "shared",
    )
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
    zero_init_residual: bool | None = _opt(
        "ResNets only: zero-initialise the last batch norm of every residual block (timm's "
        "default, and SimCLR's code) or not (torchvision's default, as MoCo v2 and SynCo v1 "
        "ran) (default: on)."
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

    def given(self) -> dict[str, Any]:
        """The options whose value differs from the field's default (what a user set)."""
        defaults = TrainConfig()
        return {
            name: getattr(self, name)
            for name in self.field_names()
            if getattr(self, name) != getattr(defaults, name)
        }

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


def save_config(cfg: TrainConfig, path: Path, *, header: str = "") -> None:
    """Write ``cfg`` as YAML that ``--config`` reads back, after ``header`` as ``#`` comments."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    text = comments + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    write_atomic(path, lambda f: f.write(text.encode()))


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


def merge_resume_config(saved: TrainConfig, given: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """The checkpoint's config, with only the options that keep the run the same.

    Args:
        saved: The config the run was started with (its checkpoint's).
        given: What this invocation sets: a mapping of options, or a config whose values other
            than the field defaults count as set.

    Raises:
        ConfigError: An option outside :data:`RESUMABLE_OVERRIDES` differs from the run's.
    """
    values = dict(given.given() if isinstance(given, TrainConfig) else given)
    # Options about this invocation only, never inherited from the interrupted one.
    changed: dict[str, Any] = {"resume": values.get("resume"), "stop_at": values.get("stop_at")}
    for name, value in values.items():
        if name in changed or value == getattr(saved, name):
            continue
        if name not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"--resume: option '{name}' differs from the checkpoint's run "
                f"({getattr(saved, name)!r} there, {value!r} here); start a new run to change it"
            )
        changed[name] = value
    return saved.updated(changed)
