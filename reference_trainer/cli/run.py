"""``syn2co-train run``: self-supervised pretraining.

Its options are generated from :class:`reference_trainer.config.TrainConfig`, so the command
line and the config files always accept the same names. The command hands the recipe, the
config file and the flags as layers to :mod:`reference_trainer.resolve`, the one place where a
run's values are decided; ``--dry-run`` prints what it decided, with the source of every value,
and writes nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import typer
from rich.table import Table

from ..config import TrainConfig
from ..data.registry import dataset_names
from ..errors import flag
from ..methods import method_names
from ._consoles import console, out_console
from ._error_boundary import exit_on_user_error

HELP = (
    "Self-supervised pretraining (MoBY, MoCo v3, SimCLR, MoCo v2 or any registered method) "
    "of a timm ViT/Swin/ResNet, optionally with synthetic hard negatives (--negatives), "
    "synthetic images (--synthetic-data) or learned generators (--generator). Values come "
    "from, lowest first: the defaults, the method's preset, --recipe, --config, the command "
    "line; --dry-run prints them with their sources. The resolved config is saved in --out."
)

#: The registries whose names an option takes (``registry`` metadata of a TrainConfig field).
_REGISTRIES = {"method": method_names, "dataset": dataset_names}


def _run_parameters() -> list[inspect.Parameter]:
    """``run``'s parameters: ``--config``, then one option per field of ``TrainConfig``."""
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
        ),
        inspect.Parameter(
            "dry_run",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option(
                    "--dry-run",
                    help="Print every resolved value with its source and the derived numbers "
                    "(steps, warmup, lr, the negatives' window), then exit without writing.",
                ),
            ],
        ),
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
        registry = f.metadata.get("registry")  # methods, dataset formats
        if registry is not None:
            help_text += f" One of: {', '.join(_REGISTRIES[registry]())}."
        # The parameter's default is None (an option not given leaves the lower layers' value),
        # so the field's default is shown explicitly; None means "decided by the method, preset
        # or recipe", which the help text says.
        shown: bool | str = False
        if isinstance(f.default, bool):
            shown = option if f.default else f"--no-{option[2:]}"
        elif f.default is not None:
            shown = str(f.default)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    annotation, typer.Option(*decl, help=help_text, show_default=shown)
                ],
            )
        )
    return params


@exit_on_user_error
def run_command(config: Path | None = None, dry_run: bool = False, **options: Any) -> None:
    from ..engine import train
    from ..resolve import command_line_layers

    layers = command_line_layers(config, options)
    if dry_run:
        _print_dry_run(layers)
        return
    summary = train(layers, console=console)
    if not summary.main:  # under torchrun, the main rank reports for all
        return
    finished = summary.step >= summary.total_steps
    title = (
        "pretraining done"
        if finished
        else f"pretraining stopped at step {summary.step} (--stop-at); continue with --resume"
    )
    table = Table(title=title, show_header=False)
    table.add_row("run directory", str(summary.run_dir))
    table.add_row("steps", f"{summary.step}/{summary.total_steps}")
    table.add_row("images seen", str(summary.images_seen))
    for line in summary.data:
        name, _, text = line.partition(": ")
        table.add_row(name, text)
    table.add_row("last loss", f"{summary.last_loss:.4f}")
    table.add_row("throughput", f"{summary.pairs_per_second:.1f} image pairs/s")
    table.add_row("time", f"{summary.seconds:.1f} s")
    if summary.skipped_files:
        table.add_row("unreadable images skipped", str(summary.skipped_files))
    out_console.print(table)


def _print_dry_run(layers: list[Any]) -> None:
    """The resolved run as YAML that ``--config`` reads back, each value with its source, the
    derived numbers as comments; nothing is written."""
    from ..devices import resolve_device
    from ..engine import prepare_run
    from ..resolve import render_plan, requested

    device = resolve_device(requested(layers).device)
    prepared = prepare_run(layers, device=device)
    out_console.print(render_plan(prepared.plan), markup=False, highlight=False, soft_wrap=True)
    console.print("dry run: nothing was written", soft_wrap=True)


def set_run_options() -> None:
    """(Re)generate ``run``'s options, e.g. after plug-ins registered methods or formats (their
    names appear in ``--help``; typer reads the signature when a command line is parsed)."""
    params = _run_parameters()
    run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_command.__annotations__ = {p.name: p.annotation for p in params}


set_run_options()
