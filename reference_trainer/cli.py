"""The ``syn2co-train`` command line: thin commands that parse, build a config, call one function.

``run``'s options are generated from :class:`reference_trainer.config.TrainConfig`, so the CLI
and the config files always accept the same names. Errors a user can fix (bad options, missing
data, unreadable checkpoints, a diverging loss) end the command with one line and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_type_hints

import typer
from rich.console import Console
from rich.table import Table

from syn2co._checks import check_int, check_number

from .checkpoint import CheckpointError
from .config import Negatives, TrainConfig, load_config_file
from .data.base import DatasetError
from .devices import resolve_device
from .errors import ConfigError, dataloader_worker_died, flag, one_line
from .progress import EvalProgress

app = typer.Typer(
    name="syn2co-train",
    help="Self-supervised pretraining of vision transformers with synthetic negatives and images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(
    help="Evaluate a pretrained backbone: weighted kNN or a linear probe.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")

console = Console(stderr=True)
out_console = Console()

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 1; a run stopped by a
    signal exits with 128 + its number (130 SIGINT, 143 SIGTERM, 138 SIGUSR1)."""
    from .engine import Interrupted, NonFiniteLossError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            console.print(f"[yellow]interrupted:[/] {one_line(e)}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (
            ConfigError,
            DatasetError,
            CheckpointError,
            NonFiniteLossError,
            FileNotFoundError,
        ) as e:
            console.print(f"[red]error:[/] {one_line(e)}", soft_wrap=True)
            raise typer.Exit(1) from None
        except RuntimeError as e:
            if dataloader_worker_died(e) or "Caught" in str(e):
                console.print(f"[red]error:[/] {one_line(e)}", soft_wrap=True)
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# run: options generated from TrainConfig
# --------------------------------------------------------------------------------------------


def _run_parameters() -> list[inspect.Parameter]:
    hints = get_type_hints(TrainConfig)
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option("--config", help="YAML or TOML file of options (command line wins)."),
            ],
        )
    ]
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = [a for a in get_args(hint) if a is not type(None)] or [hint]
        base = args[0] if len(get_args(hint)) and type(None) in get_args(hint) else hint
        option = flag(f.name)
        if base is bool:
            annotation: Any = bool | None
            decl = [f"{option}/--no-{option[2:]}"]
        elif getattr(base, "__origin__", None) is Literal:
            annotation = base | None  # typer offers the Literal's values as choices
            decl = [option]
        else:
            annotation = base | None
            decl = [option]
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")  # a registry: methods, dataset formats
        if choices is not None:
            help_text += f" One of: {', '.join(choices())}."
        if f.default is not None and not isinstance(f.default, bool):
            help_text += f" [default: {f.default}]"
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    annotation, typer.Option(*decl, help=help_text, show_default=False)
                ],
            )
        )
    return params


def config_from_options(config: Path | None, options: dict[str, Any]) -> TrainConfig:
    """The run's options, layer by layer (the method's defaults fill what is left unset later).

    Lowest first: the field defaults, the recipe (``--recipe``, or a ``recipe`` key of the
    config file), the config file, the command line. ``--data`` without ``--dataset`` (in none
    of them) means an image folder, never the built-in default; a resumed run keeps its own
    dataset.
    """
    from .recipes import load_recipe

    file_values = load_config_file(config) if config is not None else {}
    given = {k: v for k, v in options.items() if v is not None}
    cfg = TrainConfig()
    named: set[str] = set()
    spec = given.get("recipe", file_values.get("recipe"))
    if spec is not None:
        recipe = load_recipe(str(spec))
        cfg = cfg.updated(recipe.options, source=f"recipe {recipe.name}").updated({"recipe": spec})
        named |= {str(key).replace("-", "_") for key in recipe.options}
    if config is not None:
        cfg = cfg.updated(file_values, source=f"--config {config}")
        named |= {str(key).replace("-", "_") for key in file_values}
    cfg = cfg.updated(given, source="command line")
    if cfg.data is not None and "dataset" not in named | set(given) and cfg.resume is None:
        cfg = cfg.updated({"dataset": infer_dataset(cfg.data)})
    return cfg


def infer_dataset(data: str) -> str:
    """The ``--dataset`` of a ``--data`` directory given alone: ``imagefolder`` when it holds
    class folders of images, else a one-line error asking for ``--dataset``."""
    from .data.datasets import IMAGE_EXTENSIONS
    from .data.registry import dataset_names, get_dataset

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


@friendly
def _run(config: Path | None = None, **options: Any) -> None:
    from .engine import train

    cfg = config_from_options(config, options)
    summary = train(cfg, console=console)
    if not summary.main:  # under torchrun, the main rank reports for all
        return
    table = Table(title="pretraining done", show_header=False)
    table.add_row("run directory", str(summary.run_dir))
    table.add_row("steps", f"{summary.step}/{summary.total_steps}")
    table.add_row("last loss", f"{summary.last_loss:.4f}")
    table.add_row("throughput", f"{summary.pairs_per_second:.1f} image pairs/s")
    table.add_row("time", f"{summary.seconds:.1f} s")
    if summary.skipped_files:
        table.add_row("unreadable images skipped", str(summary.skipped_files))
    out_console.print(table)


def _set_run_options() -> None:
    """(Re)generate ``run``'s options, e.g. after plug-ins registered methods or formats (their
    names appear in ``--help``; typer reads the signature when a command line is parsed)."""
    params = _run_parameters()
    _run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    _run.__annotations__ = {p.name: p.annotation for p in params}


_set_run_options()
app.command(
    "run",
    help="Self-supervised pretraining (MoBY, MoCo v3, SimCLR, MoCo v2 or any registered method) "
    "of a timm ViT/Swin/ResNet, with synthetic negatives. Options may come from --config; the "
    "resolved config is saved in --out.",
)(_run)


@app.command("recipes")
def recipes_cmd() -> None:
    """List the shipped recipes (use one with: syn2co-train run --recipe NAME)."""
    from .recipes import recipes

    shipped = recipes()
    table = Table(title="recipes: syn2co-train run --recipe NAME (flags override its values)")
    table.add_column("name", no_wrap=True, min_width=max(map(len, shipped)))
    table.add_column("version and what", no_wrap=True, overflow="ellipsis")
    for recipe in shipped.values():
        lacking = recipe.missing()
        needs = f"(needs {', '.join(lacking)}) " if lacking else ""
        table.add_row(recipe.name, f"v{recipe.version} {needs}{recipe.summary}", style=None)
    out_console.print(table)
    out_console.print("values, sources and published numbers: docs/trainer/reproducing.md")


# --------------------------------------------------------------------------------------------
# eval, export, plot: read a run (which may be read-only), write only where they may
# --------------------------------------------------------------------------------------------

RunDir = Annotated[
    Path, typer.Argument(help="Run directory (or checkpoint file) of syn2co-train run.")
]
Branch = Annotated[Literal["online", "target"], typer.Option(help="Which encoder to evaluate.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
LogEvery = Annotated[
    int,
    typer.Option(
        help="Without a terminal (batch jobs): a progress line every N batches of each pass "
        "over the data."
    ),
]


def _check_option(option: str, value: float | None, *, minimum: int | None = None) -> None:
    """An int option >= ``minimum``, or (without ``minimum``) a finite number > 0; None passes."""
    if value is None:
        return
    try:
        if minimum is not None:
            check_int(option, value, minimum=minimum)
        else:
            check_number(option, value, low=0.0, low_open=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _run_dir(run: Path) -> Path:
    return run if run.is_dir() else run.parent


def _check_run_exists(run: Path) -> None:
    if not run.exists():
        raise ConfigError(f"RUN: {run} does not exist (expected a run directory or checkpoint)")


def _writable(path: Path, out: Path | None, what: str) -> Path:
    """``path`` after checking, before any work, that it can be written."""
    from .atomic import unwritable_reason

    reason = unwritable_reason(path)
    if reason is None:
        return path
    if out is not None:
        raise ConfigError(f"--out: cannot write {what} to {path}: {reason}")
    raise ConfigError(f"cannot write {what} to {path} ({reason}): pass --out to write it elsewhere")


def _eval_prelude(
    run: Path,
    out: Path | None,
    default_name: str,
    what: str,
    workers: int | None,
    log_every: int,
    device: str,
) -> tuple[Any, Path]:
    """The checks every evaluation makes before reading anything: its common options, the run's
    existence and that its output can be written. Returns the device and the output path."""
    _check_option("--workers", workers, minimum=0)
    _check_option("--log-every", log_every, minimum=1)
    dev = resolve_device(device)
    _check_run_exists(run)
    return dev, _writable(out or _run_dir(run) / default_name, out, what)


def _eval_config(
    run: Path, data: str | None, val_data: str | None, dataset: str | None, workers: int | None
) -> Any:
    from .pretrained import load_run

    cfg, _ = load_run(run)
    changes: dict[str, Any] = {}
    for key, value in (
        ("data", data),
        ("val_data", val_data),
        ("dataset", dataset),
        ("workers", workers),
    ):
        if value is not None:
            changes[key] = value
    return cfg.updated(changes, source="command line")


def _save_json(path: Path, payload: dict[str, Any]) -> None:
    from .atomic import write_atomic

    text = json.dumps(payload, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()), sync_dir=False)


@eval_app.command("knn")
@friendly
def eval_knn(
    run: RunDir,
    k: Annotated[
        list[int] | None,
        typer.Option(
            "--k", help="Neighbours; repeat for several [default: 10 20 100 200, SynCo v2's]."
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Weighting temperature.")] = 0.07,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    batch_size: Annotated[int, typer.Option(help="Feature-extraction batch size.")] = 256,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Device = "auto",
    baseline: Annotated[
        bool, typer.Option(help="Also evaluate the same network at random init.")
    ] = False,
    log_every: LogEvery = 50,
    out: Annotated[Path | None, typer.Option(help="JSON file (default RUN/eval_knn.json).")] = None,
) -> None:
    """Weighted kNN (cosine, temperature-weighted votes) on the run's train/val split."""
    from .evaluate.protocols import KNN_KS

    ks = tuple(dict.fromkeys(k)) if k else KNN_KS
    for kk in ks:
        _check_option("--k", kk, minimum=1)
    _check_option("--temperature", temperature)
    _check_option("--batch-size", batch_size, minimum=1)
    dev, path = _eval_prelude(
        run, out, "eval_knn.json", "the kNN results", workers, log_every, device
    )

    from .data.pipeline import eval_loader
    from .evaluate import knn_probe
    from .pretrained import load_backbone, random_backbone

    cfg = _eval_config(run, data, val_data, dataset, workers)
    train_loader, val_loader = (
        eval_loader(cfg, "train", batch_size=batch_size),
        eval_loader(cfg, "val", batch_size=batch_size),
    )
    num_classes = train_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    num_train = len(train_loader.dataset)  # type: ignore[arg-type]
    if max(ks) > num_train:
        console.print(
            f"[yellow]warning:[/] k > {num_train} training images: using k={num_train} for "
            f"{', '.join(str(x) for x in ks if x > num_train)}",
            soft_wrap=True,
        )
        ks = tuple(dict.fromkeys(min(x, num_train) for x in ks))
    backbone, _ = load_backbone(run, branch)
    candidates = {"pretrained": backbone}
    if baseline:
        candidates["random init"] = random_backbone(cfg)
    results = {}
    for name, net in candidates.items():
        with EvalProgress(console, f"knn {name}", log_every) as progress:
            results[name] = knn_probe(
                net.to(dev),
                train_loader,
                val_loader,
                num_classes=num_classes,
                device=dev,
                ks=ks,
                temperature=temperature,
                progress=progress,
            )
    table = Table(title=f"kNN top-1 (%) on {cfg.dataset} val, T={temperature}")
    table.add_column("backbone")
    for kk in ks:
        table.add_column(f"k={kk}", justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res.top1[kk]:.2f}" for kk in ks))
    out_console.print(table)
    _save_json(
        path,
        {name: r.to_dict() for name, r in results.items()} | {"branch": branch, "run": str(run)},
    )
    console.print(f"saved {path}")


def _probe_settings(protocol: str, **given: Any) -> Any:
    """The protocol's probe settings, the options given replacing single values (errors name
    the option, and the protocol when the bad value is its own)."""
    from .evaluate.protocols import LINEAR_PROTOCOLS

    changes = {name: value for name, value in given.items() if value is not None}
    try:
        return dataclasses.replace(LINEAR_PROTOCOLS[protocol], **changes)
    except (TypeError, ValueError) as e:
        name, _, problem = str(e).partition(": ")
        if name not in changes:
            problem += f" (the value of --protocol {protocol}; set {flag(name)})"
        raise ConfigError(f"{flag(name)}: {problem}") from None


def _probe_option(name: str, text: str, *flags: str) -> Any:
    """A probe option whose help ends with each protocol's value of it.

    The option itself defaults to None ("not given"): the protocol supplies the value.
    """
    from .evaluate.protocols import LINEAR_PROTOCOLS

    values = ", ".join(
        f"{protocol} {getattr(settings, name)}" for protocol, settings in LINEAR_PROTOCOLS.items()
    )
    return typer.Option(*flags, help=f"{text} ({values})", show_default=False)


def _protocol_option() -> Any:
    from .evaluate.protocols import PROTOCOL_SUMMARIES

    summaries = "; ".join(f"{name}: {text}" for name, text in PROTOCOL_SUMMARIES.items())
    return typer.Option(
        help=f"The probe's settings (the options below override single values). {summaries}."
    )


@eval_app.command("linear")
@friendly
def eval_linear(
    run: RunDir,
    protocol: Annotated[
        Literal["fast", "synco-v2", "mocov3"],
        _protocol_option(),
    ] = "fast",
    mode: Annotated[
        Literal["cached", "augmented"] | None,
        _probe_option(
            "mode",
            "cached: features of the evaluation transform extracted once; augmented: random "
            "resized crops and flips every epoch, features recomputed.",
        ),
    ] = None,
    epochs: Annotated[int | None, _probe_option("epochs", "Probe epochs.")] = None,
    batch_size: Annotated[int | None, _probe_option("batch_size", "Probe batch size.")] = None,
    base_lr: Annotated[
        float | None,
        _probe_option("base_lr", "SGD learning rate at the reference batch.", "--lr", "--base-lr"),
    ] = None,
    lr_reference_batch: Annotated[
        int | None,
        _probe_option(
            "lr_reference_batch", "Batch size the lr refers to (lr x batch / this is used)."
        ),
    ] = None,
    momentum: Annotated[float | None, _probe_option("momentum", "SGD momentum.")] = None,
    nesterov: Annotated[
        bool | None, _probe_option("nesterov", "Nesterov momentum.", "--nesterov/--no-nesterov")
    ] = None,
    weight_decay: Annotated[
        float | None, _probe_option("weight_decay", "SGD weight decay.")
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        _probe_option("warmup_epochs", "Linear lr warmup epochs before the cosine decay."),
    ] = None,
    warmup_lr_fraction: Annotated[
        float | None,
        _probe_option(
            "warmup_lr_fraction",
            "lr of the first step as a fraction of the peak, rising linearly to the peak "
            "(None: from 0, the first step already at peak / warmup steps).",
        ),
    ] = None,
    min_lr_fraction: Annotated[
        float | None,
        _probe_option("min_lr_fraction", "lr the cosine ends at, as a fraction of the peak."),
    ] = None,
    schedule: Annotated[
        Literal["step", "epoch"] | None,
        _probe_option(
            "schedule", "step: cosine over the steps; epoch: the cosine of the epoch (no warmup)."
        ),
    ] = None,
    batchnorm: Annotated[
        bool | None,
        _probe_option(
            "batchnorm",
            "BatchNorm without affine parameters on the features before the linear layer "
            "(makes the step size independent of the features' scale).",
            "--batchnorm/--no-batchnorm",
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None, _probe_option("label_smoothing", "Label smoothing of the cross-entropy.")
    ] = None,
    clip_grad: Annotated[
        float | None,
        _probe_option("clip_grad", "Clip the classifier's gradient norm to this (0: off)."),
    ] = None,
    head_init: Annotated[
        Literal["normal", "xavier", "trunc-normal", "backbone"] | None,
        _probe_option(
            "head_init",
            "Classifier weights: N(0, 0.01), xavier uniform, truncated normal 0.02, or as the "
            "architecture's official constructor builds its head.",
        ),
    ] = None,
    backbone_mode: Annotated[
        Literal["eval", "train"] | None,
        _probe_option(
            "backbone_mode",
            "train: dropout and drop-path active while the probe trains in augmented mode "
            "(weights never change).",
        ),
    ] = None,
    drop_path: Annotated[
        float | None,
        _probe_option(
            "drop_path", "Rebuild the backbone with this drop-path rate (None: as trained)."
        ),
    ] = None,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the classifier and shuffling.")] = 0,
    log_every: LogEvery = 50,
    out: Annotated[
        Path | None, typer.Option(help="JSON file (default RUN/eval_linear.json).")
    ] = None,
) -> None:
    """Linear probe on the frozen backbone (the backbone's weights are checked unchanged)."""
    settings = _probe_settings(
        protocol,
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        base_lr=base_lr,
        lr_reference_batch=lr_reference_batch,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        warmup_lr_fraction=warmup_lr_fraction,
        min_lr_fraction=min_lr_fraction,
        schedule=schedule,
        batchnorm=batchnorm,
        label_smoothing=label_smoothing,
        clip_grad=clip_grad,
        head_init=head_init,
        backbone_mode=backbone_mode,
        drop_path=drop_path,
    )
    _check_option("--seed", seed, minimum=0)
    dev, path = _eval_prelude(
        run, out, "eval_linear.json", "the probe's results", workers, log_every, device
    )

    from .data.pipeline import eval_loader, linear_train_loader
    from .evaluate import linear_probe
    from .evaluate.protocols import for_arch

    cfg = _eval_config(run, data, val_data, dataset, workers)
    settings = for_arch(settings, cfg.arch)
    batch = settings.batch_size or 256  # what the probe resolves None to, in either mode
    val_loader = eval_loader(cfg, "val", batch_size=batch)
    train_loader = linear_train_loader(
        cfg, batch_size=batch, augmented=settings.mode == "augmented", seed=seed
    )
    num_classes = val_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    backbone, _ = probe_backbone(run, branch, settings.drop_path)
    with EvalProgress(console, "linear", log_every) as progress:
        result = linear_probe(
            backbone.to(dev),
            train_loader,
            val_loader,
            num_classes=num_classes,
            device=dev,
            settings=settings,
            seed=seed,
            on_epoch=lambda entry: progress.epoch(entry, settings.epochs),
            progress=progress,
        )
    table = Table(
        title=f"linear probe on {cfg.dataset} ({protocol}: {settings.mode}, "
        f"{settings.epochs} epochs)"
    )
    for col in ("split", "top-1 (%)", "top-5 (%)"):
        table.add_column(col)
    table.add_row("train", f"{result.train_top1:.2f}", f"{result.train_top5:.2f}")
    table.add_row("val", f"{result.val_top1:.2f}", f"{result.val_top5:.2f}")
    out_console.print(table)
    console.print(
        f"backbone unchanged: {result.backbone_unchanged} (sha256 {result.fingerprint_after[:12]})"
    )
    _save_json(path, result.to_dict() | {"branch": branch, "run": str(run), "protocol": protocol})
    console.print(f"saved {path}")


def probe_backbone(run: Path, branch: str, drop_path: float | None) -> tuple[Any, Any]:
    """The run's backbone, rebuilt with the probe's drop-path rate when it sets one."""
    from .models import create_backbone
    from .pretrained import load_backbone

    backbone, cfg = load_backbone(run, branch)  # type: ignore[arg-type]
    if drop_path is None:
        return backbone, cfg
    rebuilt = create_backbone(cfg, drop_path=drop_path)
    rebuilt.load_state_dict(backbone.state_dict())
    return rebuilt.eval(), cfg


# --------------------------------------------------------------------------------------------
# export, plot, demo
# --------------------------------------------------------------------------------------------


@app.command("export")
@friendly
def export_cmd(
    run: RunDir,
    out: Annotated[
        Path | None, typer.Option(help="Output .safetensors (default RUN/backbone.safetensors).")
    ] = None,
    branch: Branch = "online",
) -> None:
    """Export the pretrained backbone as safetensors that timm loads, with the pretrained_cfg
    (input size, mean/std, interpolation, crop) of the run's evaluation transform."""
    from .pretrained import export, export_paths, timm_snippet

    _check_run_exists(run)
    weights, meta = export_paths(out or _run_dir(run) / "backbone.safetensors")
    _writable(weights, out, "the weights")
    _writable(meta, out, "the weights' description")
    export(run, weights, branch=branch)
    out_console.print(f"wrote {weights} and {meta}")
    out_console.print(f"load with: {timm_snippet(meta)}", soft_wrap=True)


@app.command("plot")
@friendly
def plot_cmd(
    run: RunDir,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for loss.png, lr.png, hardness.png (default: RUN)."),
    ] = None,
) -> None:
    """Render the loss, learning-rate and hardness curves of a run to PNG files."""
    from .plots import plot_run

    _check_run_exists(run)
    folder = out if out is not None else _run_dir(run)
    _writable(folder / "loss.png", out, "the plots")
    try:
        paths = plot_run(_run_dir(run), out_dir=folder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for p in paths:
        out_console.print(f"wrote {p}")


@app.command("synth")
@friendly
def synth_cmd(
    model: Annotated[
        str, typer.Option(help="Diffusers pipeline: a local directory or a Hugging Face hub id.")
    ],
    out: Annotated[
        Path, typer.Option(help="Output image folder OUT/<class>/<id>.png + OUT/manifest.jsonl.")
    ],
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated class names, e.g. cat,dog,ship.")
    ] = None,
    classes_file: Annotated[
        Path | None, typer.Option(help="File with one class name per line.")
    ] = None,
    classes_from: Annotated[
        str | None,
        typer.Option(
            help="Image folder whose class folders name the classes, or imagenet100 (the 100 "
            "ImageNet-100 classes, folders named by WordNet id; a folder of that name: "
            "./imagenet100/)."
        ),
    ] = None,
    images_per_class: Annotated[int, typer.Option(help="Images per class.")] = 100,
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps (default: the pipeline's).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Guidance scale (default: the pipeline's).")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Image side in pixels (default: the model's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Base seed of the per-image seeds.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 8,
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(help="Where to run.")] = "auto",
    dtype: Annotated[
        Literal["auto", "fp16", "bf16", "fp32"],
        typer.Option(help="auto: fp16 on CUDA, fp32 on the CPU."),
    ] = "auto",
    templates_file: Annotated[
        Path | None, typer.Option(help="Prompt templates, one per line, each with one {}.")
    ] = None,
    prompts: Annotated[
        Literal["templates", "fake-it"],
        typer.Option(
            help="templates: the class name in CLIP-style templates; fake-it: 'name, WordNet "
            "hypernym inside Places365 scene' with guidance 2.0, as in Fake it till you make "
            "it (needs --classes-from imagenet100)."
        ),
    ] = "templates",
    kind: Annotated[
        Literal["auto", "text", "class", "unconditional"],
        typer.Option(help="How to drive the pipeline; auto: from its call signature."),
    ] = "auto",
    dup_threshold: Annotated[
        int, typer.Option(help="Largest dHash distance (of 64 bits) reported as near-duplicate.")
    ] = 4,
    limit: Annotated[
        int | None, typer.Option(help="Stop after N new images; rerun to continue.")
    ] = None,
) -> None:
    """Generate a synthetic image folder with a diffusers pipeline (text-to-image,
    class-conditional or unconditional), resumable, with a manifest and a near-duplicate check."""
    from .synth import SynthConfig, generate_dataset, summary_table

    summary = generate_dataset(
        SynthConfig(
            model=model,
            out=out,
            classes=tuple(classes.split(",")) if classes is not None else None,
            classes_file=classes_file,
            classes_from=classes_from,
            images_per_class=images_per_class,
            steps=steps,
            guidance=guidance,
            size=size,
            seed=seed,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            templates_file=templates_file,
            prompts=prompts,
            kind=kind,
            dup_threshold=dup_threshold,
            limit=limit,
        ),
        console=console,
    )
    out_console.print(summary_table(summary))
    if summary.duplicate_pairs:
        console.print(
            f"[yellow]warning:[/] {summary.duplicate_pairs} near-duplicate pairs, listed in "
            f"{summary.duplicates_file}: a collapsed generator or repeated seeds?",
            soft_wrap=True,
        )
    if summary.missing_images:
        console.print(
            f"{summary.missing_images} images still to make: rerun to continue", soft_wrap=True
        )


@app.command("demo")
@friendly
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    steps: Annotated[int, typer.Option(help="Pretraining steps.")] = 300,
    negatives: Annotated[Negatives, typer.Option(help="Synthetic negatives preset.")] = "synco-v2",
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 2,
) -> None:
    """The built-in default end to end: pretrain a small DeiT on the procedural dataset, then
    compare kNN accuracy with the same network at random initialisation (a few minutes on a
    laptop CPU, no download)."""
    from .demo import run_demo

    run_demo(
        out,
        steps=steps,
        negatives=negatives,
        workers=workers,
        console=console,
        out_console=out_console,
    )


def main() -> None:
    """Entry point of the ``syn2co-train`` script: load the installed plug-ins
    (:mod:`reference_trainer.plugins`), then run the command."""
    from .plugins import load_plugins

    try:
        if load_plugins():
            _set_run_options()
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True)
        raise SystemExit(1) from None
    app()


if __name__ == "__main__":  # python -m reference_trainer.cli
    main()
