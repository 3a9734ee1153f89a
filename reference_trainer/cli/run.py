"""``syn2co-train run``: self-supervised pretraining.

Its options are generated from :class:`reference_trainer.config.TrainConfig`, so the command
line and the config files always accept the same names; :func:`config_from_options` layers
them into the run's config.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import typer
from rich.table import Table

from ..config import TrainConfig, load_config_file
from ..errors import ConfigError, flag
from ._consoles import console, out_console
from ._error_boundary import exit_on_user_error

HELP = (
    "Self-supervised pretraining (MoBY, MoCo v3, SimCLR, MoCo v2 or any registered method) "
    "of a timm ViT/Swin/ResNet, with synthetic negatives. Options may come from --config; the "
    "resolved config is saved in --out."
)


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
    from ..recipes import load_recipe

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
    from ..data.datasets import IMAGE_EXTENSIONS
    from ..data.registry import dataset_names, get_dataset

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


@exit_on_user_error
def run_command(config: Path | None = None, **options: Any) -> None:
    from ..engine import train

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


def set_run_options() -> None:
    """(Re)generate ``run``'s options, e.g. after plug-ins registered methods or formats (their
    names appear in ``--help``; typer reads the signature when a command line is parsed)."""
    params = _run_parameters()
    run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_command.__annotations__ = {p.name: p.annotation for p in params}


set_run_options()
