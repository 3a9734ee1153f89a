"""The commands around a run: ``recipes`` lists the shipped recipes (``recipes show`` prints
one with its sources), ``export`` and ``plot`` read
a finished run, ``synth`` generates a synthetic image folder and ``demo`` runs the built-in
example end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from ..config import Negatives
from ..errors import ConfigError
from ._consoles import console, out_console
from ._error_boundary import exit_on_user_error
from ._run_files import Branch, RunDir, check_run_exists, run_directory, writable

recipes_app = typer.Typer(
    help="The shipped recipes: list them (no command), or show one with its sources.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@recipes_app.callback()
def recipes_cmd(ctx: typer.Context) -> None:
    """List the shipped recipes (use one with: syn2co-train run --recipe NAME[@VARIANT])."""
    if ctx.invoked_subcommand is not None:
        return
    from ..recipes import recipes

    shipped = recipes()
    rows = []
    for recipe in shipped.values():
        lacking = recipe.missing()
        needs = f"(needs {', '.join(lacking)}) " if lacking else ""
        variants = "".join(f" [@{v}]" for v in recipe.variants)
        rows.append((recipe.name, f"v{recipe.version}", f"{needs}{recipe.summary}{variants}"))
    if not out_console.is_terminal:  # piped or redirected: every line in full
        width = max(len(name) for name, _, _ in rows)
        for name, version, what in rows:
            out_console.print(
                f"{name.ljust(width)}  {version}  {what}", soft_wrap=True, markup=False
            )
        return
    table = Table(title="recipes: syn2co-train run --recipe NAME (flags override its values)")
    table.add_column("name", no_wrap=True, min_width=max(map(len, shipped)))
    table.add_column("version", no_wrap=True)
    table.add_column("what [variants: --recipe NAME@VARIANT]", overflow="fold")
    for row in rows:
        table.add_row(*row, style=None)
    out_console.print(table)
    out_console.print(
        "values, sources and departures: syn2co-train recipes show NAME "
        "(docs/trainer/reproducing.md)"
    )


@recipes_app.command("show")
@exit_on_user_error
def recipes_show_cmd(
    name: Annotated[
        str,
        typer.Argument(help="The recipe: NAME, NAME@VARIANT, NAME@VERSION.", show_default=False),
    ],
) -> None:
    """Print a recipe as a config file: every option with its source, then its variants and
    where it departs from the official code (syn2co-train run --config reads it back)."""
    from ..recipes import load_recipe
    from ..recipes.render import recipe_text

    out_console.print(
        recipe_text(load_recipe(name, require=False)), soft_wrap=True, markup=False, highlight=False
    )


@exit_on_user_error
def export_cmd(
    run: RunDir,
    out: Annotated[
        Path | None, typer.Option(help="Output .safetensors (default RUN/backbone.safetensors).")
    ] = None,
    branch: Branch = "online",
) -> None:
    """Export the pretrained backbone as safetensors that timm loads, with the pretrained_cfg
    (input size, mean/std, interpolation, crop) of the run's evaluation transform."""
    from ..pretrained import export, export_paths, timm_snippet

    check_run_exists(run)
    weights, meta = export_paths(out or run_directory(run) / "backbone.safetensors")
    writable(weights, out, "the weights")
    writable(meta, out, "the weights' description")
    export(run, weights, branch=branch)
    out_console.print(f"wrote {weights} and {meta}")
    out_console.print(f"load with: {timm_snippet(meta)}", soft_wrap=True)


@exit_on_user_error
def plot_cmd(
    run: RunDir,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for loss.png, lr.png, hardness.png (default: RUN)."),
    ] = None,
) -> None:
    """Render the loss, learning-rate and hardness curves of a run to PNG files."""
    from ..plots import plot_run

    check_run_exists(run)
    folder = out if out is not None else run_directory(run)
    writable(folder / "loss.png", out, "the plots")
    try:
        paths = plot_run(run_directory(run), out_dir=folder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for p in paths:
        out_console.print(f"wrote {p}")


@exit_on_user_error
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
            "it (needs classes named by ImageNet-100 WordNet ids: --classes-from imagenet100, "
            "or an image folder or --classes list of such ids)."
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
    from ..synth import SynthConfig, generate_dataset, summary_table

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


@exit_on_user_error
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    steps: Annotated[int, typer.Option(help="Pretraining steps.")] = 300,
    negatives: Annotated[Negatives, typer.Option(help="Synthetic negatives preset.")] = "synco-v2",
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 2,
) -> None:
    """The built-in default end to end: pretrain a small DeiT on the procedural dataset, then
    compare kNN accuracy with the same network at random initialisation (a few minutes on a
    laptop CPU, no download)."""
    from ..demo import run_demo

    run_demo(
        out,
        steps=steps,
        negatives=negatives,
        workers=workers,
        console=console,
        out_console=out_console,
    )
