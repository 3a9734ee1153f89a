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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_type_hints

import typer
from rich.console import Console
from rich.table import Table

from .checkpoint import CheckpointError
from .config import Negatives, TrainConfig, load_config_file
from .data.base import DatasetError
from .devices import resolve_device
from .errors import ConfigError

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


def _one_line(error: BaseException) -> str:
    """The useful line of an error (a DataLoader worker wraps the original in a traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    if len(lines) > 1 and ":" in last and "Traceback" in str(error):
        return last.split(": ", 1)[-1]
    return " ".join(lines) if len(lines) <= 2 else last


def friendly(fn: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 1 (130 on interrupt)."""
    from .engine import Interrupted, NonFiniteLossError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            console.print(f"[yellow]interrupted:[/] {_one_line(e)}")
            raise typer.Exit(130) from None
        except (
            ConfigError,
            DatasetError,
            CheckpointError,
            NonFiniteLossError,
            FileNotFoundError,
        ) as e:
            console.print(f"[red]error:[/] {_one_line(e)}", soft_wrap=True)
            raise typer.Exit(1) from None
        except RuntimeError as e:
            if "DataLoader worker" in str(e) or "Caught" in str(e):
                console.print(f"[red]error:[/] {_one_line(e)}", soft_wrap=True)
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
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            annotation: Any = bool | None
            decl = [f"{flag}/--no-{flag[2:]}"]
        elif getattr(base, "__origin__", None) is Literal:
            annotation = base | None  # typer offers the Literal's values as choices
            decl = [flag]
        else:
            annotation = base | None
            decl = [flag]
        help_text = f.metadata.get("help", "")
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
    """Defaults, then the config file, then the options given on the command line."""
    cfg = TrainConfig()
    if config is not None:
        cfg = cfg.updated(load_config_file(config), source=f"--config {config}")
    given = {k: v for k, v in options.items() if v is not None}
    return cfg.updated(given, source="command line")


@friendly
def _run(config: Path | None = None, **options: Any) -> None:
    from .engine import train

    cfg = config_from_options(config, options)
    summary = train(cfg, console=console)
    table = Table(title="pretraining done", show_header=False)
    table.add_row("run directory", str(summary.run_dir))
    table.add_row("steps", f"{summary.step}/{summary.total_steps}")
    table.add_row("last loss", f"{summary.last_loss:.4f}")
    table.add_row("throughput", f"{summary.pairs_per_second:.1f} image pairs/s")
    table.add_row("time", f"{summary.seconds:.1f} s")
    if summary.skipped_files:
        table.add_row("unreadable images skipped", str(summary.skipped_files))
    out_console.print(table)


_run.__signature__ = inspect.Signature(_run_parameters())  # type: ignore[attr-defined]
_run.__annotations__ = {p.name: p.annotation for p in _run_parameters()}
app.command(
    "run",
    help="Self-supervised pretraining (MoBY or MoCo v3) of a timm ViT/Swin, with synthetic "
    "negatives. Options may come from --config; the resolved config is saved in --out.",
)(_run)


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------

RunDir = Annotated[
    Path, typer.Argument(help="Run directory (or checkpoint file) of syn2co-train run.")
]
Branch = Annotated[Literal["online", "target"], typer.Option(help="Which encoder to evaluate.")]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


@eval_app.command("knn")
@friendly
def eval_knn(
    run: RunDir,
    k: Annotated[
        list[int] | None, typer.Option("--k", help="Neighbours; repeat for several.")
    ] = None,
    temperature: Annotated[float, typer.Option(help="Weighting temperature.")] = 0.07,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    batch_size: Annotated[int, typer.Option(help="Feature-extraction batch size.")] = 256,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    baseline: Annotated[
        bool, typer.Option(help="Also evaluate the same network at random init.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="JSON file (default RUN/eval_knn.json).")] = None,
) -> None:
    """Weighted kNN (cosine, temperature-weighted votes) on the run's train/val split."""
    from .evaluate import knn_probe
    from .pretrained import load_backbone, random_backbone

    cfg = _eval_config(run, data, val_data, dataset, workers)
    ks = tuple(k) if k else (10, 20, 200)
    dev = resolve_device(device)
    from .data.pipeline import eval_loader

    train_loader, val_loader = (
        eval_loader(cfg, "train", batch_size=batch_size),
        eval_loader(cfg, "val", batch_size=batch_size),
    )
    num_classes = train_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    ks = tuple(min(x, len(train_loader.dataset)) for x in ks)  # type: ignore[arg-type]
    backbone, _ = load_backbone(run, branch)
    results = {
        "pretrained": knn_probe(
            backbone.to(dev),
            train_loader,
            val_loader,
            num_classes=num_classes,
            device=dev,
            ks=ks,
            temperature=temperature,
        )
    }
    if baseline:
        results["random init"] = knn_probe(
            random_backbone(cfg).to(dev),
            train_loader,
            val_loader,
            num_classes=num_classes,
            device=dev,
            ks=ks,
            temperature=temperature,
        )
    table = Table(title=f"kNN top-1 (%) on {cfg.dataset} val, T={temperature}")
    table.add_column("backbone")
    for kk in ks:
        table.add_column(f"k={kk}", justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res.top1[kk]:.2f}" for kk in ks))
    out_console.print(table)
    path = out or Path(run if Path(run).is_dir() else Path(run).parent) / "eval_knn.json"
    _save_json(
        path,
        {name: r.to_dict() for name, r in results.items()} | {"branch": branch, "run": str(run)},
    )
    console.print(f"saved {path}")


@eval_app.command("linear")
@friendly
def eval_linear(
    run: RunDir,
    epochs: Annotated[
        int, typer.Option(help="Probe epochs (MoBY recipe: 100, MoCo v3: 90).")
    ] = 100,
    base_lr: Annotated[
        float, typer.Option(help="SGD lr at the reference batch (MoBY 1.0 per 512).")
    ] = 1.0,
    lr_reference_batch: Annotated[int, typer.Option(help="Batch the base lr refers to.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Probe batch size.")] = 256,
    mode: Annotated[
        Literal["cached", "augmented"],
        typer.Option(
            help="cached: features once; augmented: random crops and flips every epoch "
            "(the published recipe)."
        ),
    ] = "cached",
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the classifier and shuffling.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="JSON file (default RUN/eval_linear.json).")
    ] = None,
) -> None:
    """Linear probe on the frozen backbone (the backbone's weights are checked unchanged)."""
    from .data.pipeline import eval_loader, linear_train_loader
    from .evaluate import linear_probe
    from .pretrained import load_backbone

    cfg = _eval_config(run, data, val_data, dataset, workers)
    dev = resolve_device(device)
    val_loader = eval_loader(cfg, "val", batch_size=batch_size)
    train_loader = linear_train_loader(
        cfg, batch_size=batch_size, augmented=mode == "augmented", seed=seed
    )
    num_classes = val_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    backbone, _ = load_backbone(run, branch)
    result = linear_probe(
        backbone.to(dev),
        train_loader,
        val_loader,
        num_classes=num_classes,
        device=dev,
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        base_lr=base_lr,
        lr_reference_batch=lr_reference_batch,
        seed=seed,
    )
    table = Table(title=f"linear probe on {cfg.dataset} ({mode}, {epochs} epochs)")
    for col in ("split", "top-1 (%)", "top-5 (%)"):
        table.add_column(col)
    table.add_row("train", f"{result.train_top1:.2f}", f"{result.train_top5:.2f}")
    table.add_row("val", f"{result.val_top1:.2f}", f"{result.val_top5:.2f}")
    out_console.print(table)
    console.print(
        f"backbone unchanged: {result.backbone_unchanged} (sha256 {result.fingerprint_after[:12]})"
    )
    path = out or Path(run if Path(run).is_dir() else Path(run).parent) / "eval_linear.json"
    _save_json(path, result.to_dict() | {"branch": branch, "run": str(run)})
    console.print(f"saved {path}")


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
    """Export the pretrained backbone as safetensors that timm loads (see the printed snippet)."""
    from .pretrained import export

    run_dir = run if run.is_dir() else run.parent
    weights, meta = export(run, out or run_dir / "backbone.safetensors", branch=branch)
    kwargs = json.loads(meta.read_text())["timm_kwargs"]
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    out_console.print(f"wrote {weights} and {meta}")
    out_console.print(
        f"load with: timm.create_model({args}, pretrained=True, num_classes=0, "
        f"pretrained_cfg_overlay=dict(file={str(weights)!r}))",
        soft_wrap=True,
    )


@app.command("plot")
@friendly
def plot_cmd(run: RunDir) -> None:
    """Render the loss, learning-rate and hardness curves of a run to PNG files."""
    from .plots import plot_run

    try:
        paths = plot_run(run)
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
        Path | None, typer.Option(help="Image folder whose class folders name the classes.")
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
    """Entry point of the ``syn2co-train`` script."""
    app()


if __name__ == "__main__":  # python -m reference_trainer.cli
    main()
