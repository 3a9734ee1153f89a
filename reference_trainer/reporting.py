"""What a run reports: the metrics log, TensorBoard, and the progress display.

``RUN_DIR/metrics.jsonl`` holds one JSON line per step (the global batch's loss, learning rate,
momentum, throughput, batch composition and, every ``--hardness-every`` steps, the hardness
stats). Numbers stay on the device until a flush, once per ``--log-every`` steps, when they are
reduced over the ranks in one collective.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from syn2co import distributed

from .atomic import write_atomic

__all__ = [
    "MetricsLogger",
    "Pending",
    "RunProgress",
    "StepInfo",
    "progress_display",
    "records",
    "truncate_metrics",
]


@dataclass(frozen=True)
class StepInfo:
    lr: float
    momentum: float
    negatives_active: bool  # synthetic negatives were active


@dataclass
class Pending:
    """A trained step whose numbers still live on the device (read at the next flush)."""

    step: int
    loss: Tensor
    info: StepInfo
    epoch: int
    hardness: dict[str, float]
    counts: Tensor | None  # (2,) real and synthetic images in this rank's batch


def records(pending: list[Pending], rate: float, device: torch.device) -> list[dict[str, Any]]:
    """The metrics lines of the pending steps, with one reduction over ranks.

    The logged loss is the global batch's (the mean of the ranks' local means); the real and
    synthetic counts are summed over ranks.
    """
    world = distributed.world_size()
    losses = torch.stack([p.loss.float() for p in pending]) / world
    counted = [p.counts for p in pending if p.counts is not None]
    counts = torch.stack(counted).to(device).float() if counted else losses.new_zeros(0, 2)
    packed = torch.cat([losses.to(device), counts.flatten()])
    if world > 1:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    values = packed.tolist()
    loss_values, count_values = values[: len(pending)], values[len(pending) :]
    records = []
    for i, p in enumerate(pending):
        record: dict[str, Any] = {
            "step": p.step,
            "epoch": p.epoch,
            "loss": loss_values[i],
            "lr": p.info.lr,
            "momentum": p.info.momentum,
            "synthetic_negatives": p.info.negatives_active,
            "img_per_s": rate,
        }
        if p.counts is not None:
            record["real"] = round(count_values[2 * i])
            record["synthetic"] = round(count_values[2 * i + 1])
        records.append(record | p.hardness)
    return records


class MetricsLogger:
    """JSON lines per step in ``metrics.jsonl``, and TensorBoard when it is installed.

    Args:
        run_dir: The run directory.
        enabled: Write anything (the main rank only).
        resumed_step: The step of the checkpoint a resumed run starts from: TensorBoard then
            discards what the interrupted run logged after it (the steps are logged again).
    """

    def __init__(self, run_dir: Path, *, enabled: bool, resumed_step: int = 0) -> None:
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb: Any = None
        if enabled:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                purge = resumed_step + 1 if resumed_step > 0 else None
                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def flush(self) -> None:
        """Put everything logged so far on disk (before a checkpoint: what it covers stays)."""
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines an interrupted run logged after its last checkpoint (and a torn last
    line); the file is replaced atomically, so a kill meanwhile loses nothing."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    text = "".join(line + "\n" for line in keep)
    write_atomic(path, lambda f: f.write(text.encode()))


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
    """What a person watching a run sees: a live bar on a terminal; without one (a batch job's
    log file) a plain line every ``every`` steps and at the last step.

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
        self._next_line = (done // every + 1) * every
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
        if not self.enabled or self.live or not (step >= self._next_line or last):
            return
        self._next_line = (step // self.every + 1) * self.every
        first, t0 = self._start
        per_step = (time.perf_counter() - t0) / max(step - first, 1)
        left = datetime.timedelta(seconds=round(per_step * (self.total - step)))
        self.console.print(
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | epoch {epoch} | "
            f"loss {loss:.4f} | lr {lr:.2e} | {rate:.0f} img/s | {left} left",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
