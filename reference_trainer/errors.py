"""The trainer's user-facing errors and how they are shown: one line that says what to change.

Every command ends an error a user can fix with one line (``error: ...``) and a non-zero exit
code; :func:`one_line` makes that line from any exception, :func:`flag` names an option the way
the command line spells it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "dataloader_worker_died", "flag", "one_line"]


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line that says what to change."""


def flag(name: str) -> str:
    """The command-line spelling of an option's field name.

    Example:
        >>> flag("negatives_start_epoch")
        '--negatives-start-epoch'
    """
    return "--" + name.replace("_", "-")


def one_line(error: BaseException | str) -> str:
    """An error's message as one line.

    A DataLoader worker's exception reaches the main process with the worker's traceback in its
    text; the line that matters is the last, the original message (after ``Type: ``). Any other
    message has its lines joined by single spaces.

    Example:
        >>> one_line(ValueError("no images\\n  under /data"))
        'no images under /data'
        >>> one_line(RuntimeError("Caught X in DataLoader worker process 0.\\n"
        ...     "Original Traceback (most recent call last):\\n  File ...\\n"
        ...     "OSError: cannot read a.png"))
        'cannot read a.png'
    """
    text = error if isinstance(error, str) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "" if isinstance(error, str) else type(error).__name__
    if "Traceback" in text:
        last = lines[-1]
        head, sep, message = last.partition(": ")
        return message if sep and head.replace(".", "").isidentifier() else last
    return " ".join(" ".join(line.split()) for line in lines)


def dataloader_worker_died(error: BaseException) -> bool:
    """The error is PyTorch's report of a DataLoader worker that exited or was killed."""
    text = str(error)
    return "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by" in text)
