"""What a synth run reports: the per-class counts, the near-duplicate report and the table."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError, one_line
from .dedup import dhash, near_duplicate_pairs
from .jobs import folder_name
from .settings import PipelineKind

__all__ = ["ClassStats", "SynthSummary", "duplicate_report", "summary_table"]

_MAX_LISTED_PAIRS = 1000  # per class in duplicates.json; the count is always exact


@dataclass(frozen=True)
class ClassStats:
    """One row of the summary.

    Attributes:
        name: Class name.
        folder: Its folder under the output directory.
        images: Images of the class in the manifest.
        new: Of which made by this run.
        duplicate_pairs: Near-duplicate pairs within the class.
    """

    name: str
    folder: str
    images: int
    new: int
    duplicate_pairs: int


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`~reference_trainer.synth.generate_dataset` did.

    Attributes:
        out: The output directory.
        classes: Per-class counts (the requested classes first, then any other class found in
            the manifest).
        new_images: Images made by this run.
        planned_images: Images the command asks for (classes x images per class).
        missing_images: Requested images still missing (after ``limit`` or an error).
        seconds: Generation time (model loading excluded).
        kind: The pipeline kind, or ``None`` when no pipeline was needed.
        pipeline: The pipeline's class name (``""`` when none was loaded).
        device: Where it ran (``""`` when no pipeline was loaded).
        dtype: Its dtype (``""`` when no pipeline was loaded).
        dup_threshold: The Hamming distance threshold of the near-duplicate report.
        recovered: What the start-up check put right (empty when nothing).
        duplicates_file: The near-duplicate report.
    """

    out: Path
    classes: tuple[ClassStats, ...]
    new_images: int
    planned_images: int
    missing_images: int
    seconds: float
    kind: PipelineKind | None
    pipeline: str
    device: str
    dtype: str
    dup_threshold: int
    recovered: str = ""
    duplicates_file: Path = field(default_factory=Path)

    @property
    def total_images(self) -> int:
        """Images in the output directory's manifest."""
        return sum(c.images for c in self.classes)

    @property
    def duplicate_pairs(self) -> int:
        """Near-duplicate pairs over all classes."""
        return sum(c.duplicate_pairs for c in self.classes)

    @property
    def images_per_second(self) -> float:
        """New images per second of generation."""
        return self.new_images / self.seconds if self.seconds > 0 else 0.0


def _entry_hash(out: Path, entry: Mapping[str, Any]) -> int:
    value = entry.get("dhash")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value, 16)
    path = out / entry["file"]
    try:
        with Image.open(path) as im:
            return dhash(im)
    except OSError as e:  # a merged manifest's image without a hash, unreadable
        raise ConfigError(
            f"cannot read {path}: {one_line(e)}; replace it, or remove it and its manifest line"
        ) from None


def duplicate_report(
    out: Path,
    names: Sequence[str],
    entries: Mapping[str, Mapping[str, Any]],
    new_files: Collection[str],
    threshold: int,
) -> tuple[list[ClassStats], dict[str, Any]]:
    """Count the images of each class and find its near-duplicate pairs.

    Args:
        out: The output directory (images without a ``dhash`` in their line are read).
        names: The requested classes, listed first.
        entries: The manifest's lines by file.
        new_files: The files made by this run.
        threshold: Largest Hamming distance reported.

    Returns:
        One row per class, and the content of ``duplicates.json``.
    """
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries.values():
        by_class.setdefault(entry["class"], []).append(entry)
    order = list(dict.fromkeys([*names, *sorted(by_class)]))
    report: dict[str, Any] = {
        "hash": "dhash-64 (9x8 grayscale thumbnail)",
        "threshold": threshold,
        "classes": {},
    }
    rows: list[ClassStats] = []
    for name in order:
        members = sorted(by_class.get(name, []), key=lambda e: (e["index"], e["file"]))
        hashes = np.array([_entry_hash(out, e) for e in members], dtype=np.uint64)
        pairs = near_duplicate_pairs(hashes, threshold)
        report["classes"][name] = {
            "images": len(members),
            "pairs": len(pairs),
            "listed": [
                [members[i]["file"], members[j]["file"], d] for i, j, d in pairs[:_MAX_LISTED_PAIRS]
            ],
        }
        rows.append(
            ClassStats(
                name=name,
                folder=folder_name(name),
                images=len(members),
                new=sum(1 for e in members if e["file"] in new_files),
                duplicate_pairs=len(pairs),
            )
        )
    return rows, report


def summary_table(summary: SynthSummary) -> Table:
    """A rich table: per class the images, the new ones and the near-duplicate pairs.

    Args:
        summary: What a run did.

    Returns:
        The table, with the speed and the pipeline in its caption.
    """
    table = Table(title=f"synthetic images in {summary.out}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("new this run", justify="right")
    table.add_column(f"near-duplicate pairs (dHash <= {summary.dup_threshold})", justify="right")
    for row in summary.classes:
        style = "red" if row.duplicate_pairs else ""
        table.add_row(
            row.name, str(row.images), str(row.new), Text(str(row.duplicate_pairs), style=style)
        )
    table.add_section()
    table.add_row(
        "total",
        str(summary.total_images),
        str(summary.new_images),
        Text(str(summary.duplicate_pairs), style="red" if summary.duplicate_pairs else ""),
    )
    if summary.new_images:
        table.caption = (
            f"{summary.new_images} new images in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.2f} images/s), {summary.kind} pipeline "
            f"{summary.pipeline} on {summary.device} ({summary.dtype})"
        )
    else:
        table.caption = "nothing new to generate"
    return table
