"""What a run reports: the metrics log, TensorBoard, and the progress display (which lives in
:mod:`reference_trainer.progress`, shared with the evaluations, and is exported here too).

``RUN_DIR/metrics.jsonl`` holds one JSON line per step (the global batch's loss, learning rate,
momentum, throughput, batch composition and, every ``--hardness-every`` steps, the hardness
stats). Numbers stay on the device until a flush, once per ``--log-every`` steps, when they are
reduced over the ranks in one collective.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from syn2co import distributed

from .atomic import write_atomic
from .progress import RunProgress, progress_display

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
