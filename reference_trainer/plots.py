"""PNG curves from a run's metrics log (``run_dir/metrics.jsonl``), and one metric of several
runs against one of their settings (:func:`plot_points`, for ``syn2co-train compare --plot``).

The log holds one JSON object per line, written by the engine as training goes; keys include
``step``, ``epoch``, ``loss``, ``lr``, ``momentum``, ``img_per_s`` and hardness statistics named
``hardness/<group>/<stat>`` (``hardness/positive/mean``, ``hardness/hard_real/mean``, ...). Lines
may lack keys, and the last line may be cut short when a run was killed: malformed lines are
skipped. When a run was resumed, steps logged twice keep the later value.

Figures are drawn on :class:`matplotlib.figure.Figure` objects without pyplot, so no display and
no global backend are involved, and each PNG is written to a temporary name then renamed, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .atomic import write_atomic

__all__ = [
    "METRICS_FILE",
    "hardness_figure",
    "hardness_groups",
    "metric_series",
    "plot_points",
    "plot_run",
    "read_metrics",
    "smooth",
]

METRICS_FILE = "metrics.jsonl"

Series = tuple[list[float], list[float]]


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """The valid records of a metrics log, in file order.

    A line is valid when it parses as a JSON object; blank lines, truncated lines and other JSON
    values are skipped.

    Args:
        path: A ``metrics.jsonl`` file.

    Returns:
        One dict per valid line.

    Raises:
        ValueError: The file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"metrics log not found: {path}")
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _number(value: object) -> float | None:
    """A finite float, or None for anything else (missing, bool, string, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def metric_series(records: Sequence[dict[str, Any]], key: str) -> Series:
    """The finite values of ``key`` against ``step``, sorted by step.

    Records without a finite ``key`` are left out. The x value is the record's ``step``; when
    no record has a numeric ``step``, it is the record's position in ``records``, and otherwise
    records without a step are left out. A step that occurs several times (a resumed run) keeps
    its last value.

    Args:
        records: Parsed metrics records, in file order.
        key: The metric name.

    Returns:
        ``(steps, values)``, two lists of equal length.
    """
    have_steps = any(_number(r.get("step")) is not None for r in records)
    points: dict[float, float] = {}
    for index, record in enumerate(records):
        value = _number(record.get(key))
        x = _number(record.get("step")) if have_steps else float(index)
        if value is None or x is None:
            continue
        points.pop(x, None)  # re-insert so the later value wins
        points[x] = value
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing).

    ``s_t = weight * s_{t-1} + (1 - weight) * x_t`` from ``s_0 = 0``, reported as
    ``s_t / (1 - weight**t)`` so the first value is ``x_1`` and a constant series stays constant.

    Args:
        values: The series.
        weight: Smoothing in ``[0, 1)``; 0 returns the series unchanged.

    Returns:
        The smoothed series, of the same length.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight: expected a number in [0, 1), got {weight}")
    out: list[float] = []
    avg = 0.0
    for t, x in enumerate(values, start=1):
        avg = weight * avg + (1.0 - weight) * x
        out.append(avg / (1.0 - weight**t))
    return out


def hardness_groups(records: Sequence[dict[str, Any]]) -> list[str]:
    """Groups ``g`` with a ``hardness/g/mean`` key in some record, in order of first appearance.

    Args:
        records: Parsed metrics records.

    Returns:
        Group names, such as ``["positive", "hard_real", "interpolated"]``.
    """
    prefix, suffix = "hardness/", "/mean"
    groups: dict[str, None] = {}
    for record in records:
        for key in record:
            if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix + suffix):
                groups.setdefault(key[len(prefix) : -len(suffix)], None)
    return list(groups)


def _save(fig: Figure, path: Path) -> Path:
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), sync_dir=False)
    return path


def _x_label(records: Sequence[dict[str, Any]]) -> str:
    return "step" if any(_number(r.get("step")) is not None for r in records) else "record"


def _plot_loss(records: Sequence[dict[str, Any]], path: Path, weight: float) -> Path | None:
    steps, values = metric_series(records, "loss")
    if not steps:
        return None
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(steps, smooth(values, weight), color="tab:blue", linewidth=2, label="smoothed")
    ax.set_xlabel(_x_label(records))
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _plot_schedules(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    present = [(k, metric_series(records, k)) for k in ("lr", "momentum")]
    present = [(k, s) for k, s in present if s[0]]
    if not present:
        return None
    fig = Figure(figsize=(8, 3 * len(present) + 1))
    axes = fig.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0]
    colors = {"lr": "tab:orange", "momentum": "tab:green"}
    for ax, (key, (steps, values)) in zip(axes, present, strict=True):
        ax.plot(steps, values, color=colors[key], linewidth=1.5)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_title("Schedules")
    axes[-1].set_xlabel(_x_label(records))
    fig.tight_layout()
    return _save(fig, path)


def hardness_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    """Every ``hardness/<group>/mean`` curve of a run on one panel, or None without any."""
    lines = [(g, metric_series(records, f"hardness/{g}/mean")) for g in hardness_groups(records)]
    lines = [(g, s) for g, s in lines if s[0]]
    if not lines:
        return None
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for group, (steps, values) in lines:
        # markers: a run shorter than --hardness-every logs one point per group
        marker = "o" if len(steps) < 20 else None
        ax.plot(steps, values, linewidth=1.5, marker=marker, label=group)
    ax.set_xlabel(_x_label(records))
    ax.set_ylabel("hardness/<group>/mean")
    ax.set_title("Hardness")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _plot_hardness(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    fig = hardness_figure(records)
    return None if fig is None else _save(fig, path)


def plot_run(
    run_dir: Path | str, *, out_dir: Path | str | None = None, smoothing: float = 0.9
) -> list[Path]:
    """Draw a run's curves from ``run_dir/metrics.jsonl`` as PNG files.

    Writes ``loss.png`` (loss against step, raw and smoothed), ``lr.png`` (learning rate and
    EMA momentum, one panel each) and ``hardness.png`` (every ``hardness/<group>/mean`` curve on
    one axes, one line per group). A figure whose keys appear in no record is not written.

    Args:
        run_dir: The run directory holding ``metrics.jsonl``.
        out_dir: Where to write the PNGs (created if needed); defaults to ``run_dir``.
        smoothing: Weight of the loss's exponential moving average, in ``[0, 1)``.

    Returns:
        The paths written, in the order loss, lr, hardness.

    Raises:
        ValueError: ``metrics.jsonl`` is missing or holds no valid line.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    records = read_metrics(metrics)
    if not records:
        raise ValueError(f"metrics log has no valid line (JSON object per line): {metrics}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing: expected a number in [0, 1), got {smoothing}")
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _plot_loss(records, out / "loss.png", smoothing),
        _plot_schedules(records, out / "lr.png"),
        _plot_hardness(records, out / "hardness.png"),
    ]
    return [p for p in written if p is not None]


def plot_points(
    xs: Sequence[float] | Sequence[str],
    ys: Sequence[float],
    labels: Sequence[str],
    path: Path | str,
    *,
    x_label: str,
    y_label: str,
    title: str = "",
) -> Path:
    """One metric against one setting, a point per run, each labelled with its run's name.

    Numbers on the x axis are joined by a line in their order; text values (a setting that is
    not a number) get one tick each, in the order given.

    Args:
        xs: The setting's values, numbers or text.
        ys: The metric's values, one per x.
        labels: The runs' names, one per point.
        path: The PNG file (its folder is created if needed).
        x_label: Name of the x axis.
        y_label: Name of the y axis.
        title: The figure's title.

    Returns:
        ``path``.

    Raises:
        ValueError: The sequences are empty or of different lengths.
    """
    if not ys or len(xs) != len(ys) or len(labels) != len(ys):
        raise ValueError(
            f"plot_points: expected as many x values, y values and labels (at least one), "
            f"got {len(xs)}, {len(ys)} and {len(labels)}"
        )
    categorical = any(isinstance(x, str) for x in xs)
    positions = list(range(len(xs))) if categorical else [float(x) for x in xs]
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    ax.plot(
        positions, list(ys), color="tab:blue", marker="o", linestyle="-" if not categorical else ""
    )
    for x, y, label in zip(positions, ys, labels, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.margins(x=0.15, y=0.15)  # room for the labels of the outer points
    if categorical:
        ax.set_xticks(positions, [str(x) for x in xs])
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title or f"{y_label} against {x_label}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
