"""The boundary between a command and the person who ran it: errors a user can fix (bad options,
missing data, unreadable checkpoints, a diverging loss) end the command with one line and a
non-zero exit code, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..checkpoint import CheckpointError
from ..data.base import DatasetError
from ..errors import ConfigError, dataloader_worker_died, one_line
from ._consoles import console

F = TypeVar("F", bound=Callable[..., Any])


def exit_on_user_error(fn: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 1; a run stopped by a
    signal exits with 128 + its number (130 SIGINT, 143 SIGTERM, 138 SIGUSR1)."""
    from ..engine import NonFiniteLossError
    from ..signals import Interrupted

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
            # "Caught <error> in DataLoader worker process N": a worker's error, with its traceback
            if dataloader_worker_died(e) or "Caught" in str(e):
                console.print(f"[red]error:[/] {one_line(e)}", soft_wrap=True)
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]
