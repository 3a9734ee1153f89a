"""What the commands that read a run (``eval``, ``export``, ``plot``) share: the ``RUN`` argument,
the ``--branch`` option, and the checks that let them read a run that may be read-only and write
only where they may, before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ..errors import ConfigError

RunDir = Annotated[
    Path, typer.Argument(help="Run directory (or checkpoint file) of syn2co-train run.")
]
Branch = Annotated[Literal["online", "target"], typer.Option(help="Which encoder to evaluate.")]


def run_directory(run: Path) -> Path:
    """The run directory of ``RUN``: itself, or the folder holding the checkpoint file."""
    return run if run.is_dir() else run.parent


def check_run_exists(run: Path) -> None:
    if not run.exists():
        raise ConfigError(f"RUN: {run} does not exist (expected a run directory or checkpoint)")


def writable(path: Path, out: Path | None, what: str) -> Path:
    """``path`` after checking, before any work, that it can be written."""
    from ..atomic import unwritable_reason

    reason = unwritable_reason(path)
    if reason is None:
        return path
    if out is not None:
        raise ConfigError(f"--out: cannot write {what} to {path}: {reason}")
    raise ConfigError(f"cannot write {what} to {path} ({reason}): pass --out to write it elsewhere")
