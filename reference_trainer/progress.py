"""What a person watching a long command sees: a live bar on a terminal; without one (a batch
job's log file) a plain line every so often and at the end, so the log shows progress without
filling up with a bar's redraws.

:class:`RunProgress` follows a pretraining run's steps, :class:`EvalProgress` an evaluation's
passes over the data. Both decide when a plain line is due with the same :class:`LineCadence`
and print it with :func:`plain_line`.
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["EvalProgress", "LineCadence", "RunProgress", "plain_line", "progress_display"]


def plain_line(console: Console, text: str) -> None:
    """Print ``text`` as it is: one line (no wrapping, markup or highlighting) for a log file."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


class LineCadence:
    """Which updates of a count print a plain line: the first at or past each multiple of
    ``every`` since the last line, and the last update.

    Args:
        every: Units of the count between two lines, >= 1.
        done: The count before the first update (a resumed run's steps).
    """

    def __init__(self, every: int, done: int = 0) -> None:
        self.every = every
        self._printed = done

    def restart(self, done: int = 0) -> None:
        """Count afresh from ``done`` (a new pass over the data)."""
        self._printed = done

    def due(self, done: int, *, last: bool) -> bool:
        """Whether the update to ``done`` prints a line (it then counts as printed)."""
        if not (done // self.every > self._printed // self.every or last):
            return False
        self._printed = done
        return True


def progress_display(console: Console, *, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


class RunProgress:
    """The progress of a pretraining run: a live bar on a terminal; without one a plain line
    every ``every`` steps and at the last step.

    Args:
        console: Where to print (the main rank's).
        total: The run's total steps.
        done: Steps done before this process started (a resumed run).
        every: Steps between two lines without a terminal.
        enabled: Show anything (the main rank only).
    """

    def __init__(
        self, console: Console, *, total: int, done: int, every: int, enabled: bool
    ) -> None:
        self.console = console
        self.total = total
        self.every = every
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.bar = progress_display(console, enabled=self.live)
        self.task = self.bar.add_task(
            "pretraining", total=total, completed=done, loss=math.nan, lr=0.0, rate=0.0, epoch=0
        )
        self._lines = LineCadence(every, done)
        self._start = (done, time.perf_counter())

    def __enter__(self) -> RunProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(
        self, step: int, *, loss: float, lr: float, rate: float, epoch: int, last: bool
    ) -> None:
        """The run reached ``step`` (at a metrics flush); ``last``: it stops there."""
        self.bar.update(self.task, completed=step, loss=loss, lr=lr, rate=rate, epoch=epoch)
        if not self.enabled or self.live or not self._lines.due(step, last=last):
            return
        first, t0 = self._start
        per_step = (time.perf_counter() - t0) / max(step - first, 1)
        left = datetime.timedelta(seconds=round(per_step * (self.total - step)))
        plain_line(
            self.console,
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | epoch {epoch} | "
            f"loss {loss:.4f} | lr {lr:.2e} | {rate:.0f} img/s | {left} left",
        )


class EvalProgress:
    """The progress of an evaluation, as the ``progress(stage, done, total)`` callback of
    :mod:`reference_trainer.evaluate`: a transient bar on a terminal, plain lines otherwise.

    Without a terminal it prints ``<name>: <stage>: batch <i>/<n>`` every ``every`` batches of
    each pass and at its last batch, and one line per probe epoch (:meth:`epoch`).

    Args:
        console: Where to print.
        name: What is evaluated, the start of every line.
        every: Batches between two lines without a terminal.
    """

    def __init__(self, console: Console, name: str, every: int) -> None:
        self.console = console
        self.name = name
        self.every = every
        self.bar: Any = None
        self.task: Any = None
        self.stage = ""
        self._lines = LineCadence(every)

    def __enter__(self) -> EvalProgress:
        if self.console.is_terminal:
            self.bar = Progress(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _line(self, text: str) -> None:
        plain_line(self.console, f"{self.name}: {text}")

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        new_pass = stage != self.stage or (self.bar is not None and self.task is None)
        if new_pass:
            self.stage = stage
            self._lines.restart()
        if self.bar is not None:
            if new_pass:
                description = f"{self.name}: {stage}"
                if self.task is None:
                    self.task = self.bar.add_task(description, total=total)
                else:
                    self.bar.reset(self.task, total=total, description=description)
            self.bar.update(self.task, completed=done)
            return
        if self._lines.due(done, last=done == total):
            self._line(f"{stage}: batch {done}/{'?' if total is None else total}")

    def epoch(self, entry: dict[str, float], epochs: int) -> None:
        """One line for a finished probe epoch (above the bar on a terminal)."""
        text = (
            f"epoch {int(entry['epoch'])}/{epochs}: loss {entry['loss']:.4f}, "
            f"train top-1 {entry['top1']:.2f}%, lr {entry['lr']:.4g}"
        )
        if self.bar is not None:
            self.bar.console.print(f"{self.name}: {text}", soft_wrap=True, highlight=False)
        else:
            self._line(text)
