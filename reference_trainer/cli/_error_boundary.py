"""The boundary between a command and the person who ran it: errors a user can fix (bad options,
missing data, unreadable checkpoints, a diverging loss, a full disk, too little memory) end the
command with one line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # the click that typer runs on: its own copy in recent releases
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - typer releases that use click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from ..atomic import SPACE_ERRORS, free_bytes, human_bytes
from ..checkpoint import CheckpointError
from ..data.base import DatasetError
from ..errors import ConfigError, dataloader_worker_died, one_line
from ._consoles import console

F = TypeVar("F", bound=Callable[..., Any])

#: What the allocators say when memory runs out (CPU: c10's DefaultCPUAllocator; CUDA, MPS).
_OUT_OF_MEMORY = re.compile(
    r"can't allocate memory|out of memory|OutOfMemory|MPS backend out of memory", re.IGNORECASE
)
_TRIED = re.compile(r"(?:tried to allocate|allocate) (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)")


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
            _fail(one_line(e))
        except OSError as e:  # a full disk, a read-only file system, permissions, quotas
            _fail(os_error_line(e))
        except MemoryError as e:
            _fail(out_of_memory_line(str(e)))
        except RuntimeError as e:  # torch.OutOfMemoryError is one
            if _OUT_OF_MEMORY.search(str(e)):
                _fail(out_of_memory_line(str(e)))
            # "Caught <error> in DataLoader worker process N": a worker's error, with its traceback
            if dataloader_worker_died(e) or "Caught" in str(e):
                _fail(one_line(e))
            raise

    return wrapper  # type: ignore[return-value]


class OneLineUsageErrors(TyperGroup):
    """The command group whose usage errors (an unknown option, a value of the wrong type) are
    one line and exit code 2, like every other error, instead of click's usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = functools.partial(
            super().main,
            args,
            prog_name,
            complete_var,
            standalone_mode=False,
            windows_expand_args=windows_expand_args,
            **extra,
        )
        if not standalone_mode:
            return run()
        try:
            code = run()
        except click_exceptions.NoArgsIsHelpError as e:  # help, not an error
            typer.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
            raise SystemExit(0) from None
        except click_exceptions.UsageError as e:
            where = f"{e.ctx.command_path} --help" if e.ctx is not None else "--help"
            line = f"{one_line(e.format_message())} (see {where})"
            console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
            raise SystemExit(e.exit_code) from None
        except typer.Abort:
            raise SystemExit(130) from None
        raise SystemExit(code if isinstance(code, int) else 0)


def _fail(line: str) -> NoReturn:
    console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
    raise typer.Exit(1) from None


def os_error_line(error: OSError) -> str:
    """An ``OSError`` as one line: what failed on which path, and for a full file system the
    space free on it.

    Example:
        >>> os_error_line(PermissionError(13, "Permission denied", "/data/run"))
        'Permission denied: /data/run'
    """
    reason = error.strerror or one_line(error) or type(error).__name__
    if error.filename is None:
        return one_line(reason)
    path = str(error.filename)
    line = f"{one_line(reason)}: {path}"
    if error.errno in SPACE_ERRORS:
        free = free_bytes(Path(path).parent)
        if free is not None:
            line += f" ({human_bytes(free)} free on its file system); free some space and rerun"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        line += " (write somewhere else, e.g. with --out)"
    return line


def out_of_memory_line(message: str) -> str:
    """The allocator's complaint as one line that says what to lower.

    Example:
        >>> out_of_memory_line("DefaultCPUAllocator: can't allocate memory: you tried to "
        ...     "allocate 8000000000000 bytes. Error code 12")[:45]
        'out of memory: an allocation of 8.0 TB failed'
    """
    found = _TRIED.search(message)
    size = ""
    if found is not None:
        number, unit = found.groups()
        size = f" of {human_bytes(float(number))}" if unit == "bytes" else f" of {number} {unit}"
    return (
        f"out of memory: an allocation{size} failed; lower the sizes (--batch-size, "
        f"--queue-size, --img-size, the model widths) or use a machine with more memory"
    )
