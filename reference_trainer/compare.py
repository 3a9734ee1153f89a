"""Runs side by side: the settings that differ between them and their evaluation results.

:func:`compare_runs` reads each run's ``config.yaml`` (the resolved options the run was trained
with) and its evaluation results (``eval_knn.json``, ``eval_linear.json``, when the run has
been evaluated) into a :class:`Comparison`: the options whose values are not the same in every
run, and the metrics any run has. :func:`to_csv` and :func:`to_markdown` write it as text;
:func:`plot_data` picks the points of one metric against one setting (drawn by
:func:`reference_trainer.plots.plot_points`).

Metric names: ``knn@K`` (kNN top-1 at ``K`` neighbours, from ``eval_knn.json``'s pretrained
backbone), ``linear_top1`` and ``linear_top5`` (the probe's validation accuracy). A result
missing from a run is None (``-`` in the tables).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "KNN_FILE",
    "LINEAR_FILE",
    "Comparison",
    "PlotData",
    "RunSummary",
    "compare_runs",
    "plot_data",
    "read_run",
    "to_csv",
    "to_markdown",
]

CONFIG_FILE = "config.yaml"
KNN_FILE = "eval_knn.json"
LINEAR_FILE = "eval_linear.json"

#: Options that differ between any two runs without saying anything about them.
_NOT_SETTINGS = frozenset({"out", "resume"})

#: A missing value in the tables.
MISSING = "-"


@dataclass(frozen=True)
class RunSummary:
    """One run: its options and its evaluation results.

    Attributes:
        name: How the tables name it (the run directory's name, or the path given when two
            runs share a name).
        path: The run directory.
        config: The options of its ``config.yaml``.
        metrics: ``{metric: value}`` of the results it has (see the module's names).
        protocols: ``{"knn" | "linear": protocol}`` of the results that record one.
        warnings: Result files that exist but could not be read.
    """

    name: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, float]
    protocols: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.append(f"{path}: not readable as JSON ({type(e).__name__}), left out")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{path}: not a JSON object, left out")
        return None
    return data


def read_run(path: Path | str) -> RunSummary:
    """A run directory (or a checkpoint file in one) as a :class:`RunSummary`.

    Raises:
        ConfigError: The path does not exist, or is not a run (no readable ``config.yaml``).
    """
    given = Path(path)
    if not given.exists():
        raise ConfigError(f"RUN: {given} does not exist (expected a run directory)")
    folder = given if given.is_dir() else given.parent
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"RUN: {given} is not a run directory (it has no {CONFIG_FILE})")
    try:
        config = yaml.safe_load(config_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"RUN: cannot read {config_file} ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"RUN: {config_file} is not a run's config (expected a mapping)")
    warnings: list[str] = []
    metrics: dict[str, float] = {}
    protocols: dict[str, str] = {}
    knn = _read_json(folder / KNN_FILE, warnings)
    if knn is not None:
        top1 = knn.get("pretrained", {}).get("top1", {}) if isinstance(knn, dict) else {}
        for k, value in top1.items() if isinstance(top1, dict) else ():
            v = _number(value)
            if v is not None and str(k).isdigit():
                metrics[f"knn@{int(k)}"] = v
        if isinstance(knn.get("protocol"), str):
            protocols["knn"] = knn["protocol"]
    linear = _read_json(folder / LINEAR_FILE, warnings)
    if linear is not None:
        for key, metric in (("val_top1", "linear_top1"), ("val_top5", "linear_top5")):
            v = _number(linear.get(key))
            if v is not None:
                metrics[metric] = v
        if isinstance(linear.get("protocol"), str):
            protocols["linear"] = linear["protocol"]
    return RunSummary(folder.name, folder, config, metrics, protocols, warnings)


def _metric_order(name: str) -> tuple[int, int, str]:
    if name.startswith("knn@"):
        return (0, int(name[4:]), name)
    return (1, 0, name)


def _text(value: object) -> str:
    """A setting's value as a cell: strings as they are, the rest as JSON (``true``, ``0.5``,
    ``[1, 2]``), None as ``-``."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass(frozen=True)
class Comparison:
    """Runs side by side.

    Attributes:
        runs: The runs, in the order given.
        settings: The options whose values differ between the runs (in the order of the first
            config that has them); ``out`` and ``resume`` are left out.
        metrics: The metrics at least one run has, kNN by ``k`` first.
        protocols: ``"knn"`` and/or ``"linear"``: the kinds of result at least one run has.
    """

    runs: list[RunSummary]
    settings: list[str]
    metrics: list[str]
    protocols: list[str]

    def header(self) -> list[str]:
        """The columns: ``run``, the differing settings, ``<kind> protocol``, the metrics."""
        return ["run", *self.settings, *(f"{p} protocol" for p in self.protocols), *self.metrics]

    def values(self) -> list[list[object]]:
        """One row per run of raw values (None where a run lacks one), in :meth:`header`'s
        order."""
        rows: list[list[object]] = []
        for run in self.runs:
            row: list[object] = [run.name]
            row += [run.config.get(s) for s in self.settings]
            row += [run.protocols.get(p) for p in self.protocols]
            row += [run.metrics.get(m) for m in self.metrics]
            rows.append(row)
        return rows

    def rows(self) -> list[list[str]]:
        """:meth:`values` as text: metrics with two decimals, ``-`` where a value is missing."""
        width = 1 + len(self.settings) + len(self.protocols)
        return [
            [
                _text(v) if i < width else (MISSING if v is None else f"{v:.2f}")
                for i, v in enumerate(r)
            ]
            for r in self.values()
        ]


def compare_runs(paths: list[Path] | list[str]) -> Comparison:
    """Read the runs and find what differs between them.

    Args:
        paths: Run directories (or checkpoint files in them), at least one.

    Raises:
        ConfigError: No path, or a path that is not a run.
    """
    if not paths:
        raise ConfigError("RUN: expected at least one run directory")
    runs = [read_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # two runs of the same name: show the paths as given
        runs = [
            RunSummary(str(p), r.path, r.config, r.metrics, r.protocols, r.warnings)
            for p, r in zip(paths, runs, strict=True)
        ]
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(str(k) for k in run.config))
    missing = object()
    settings = [
        key
        for key in keys
        if key not in _NOT_SETTINGS
        and len({json.dumps(r.config.get(key, missing), default=repr) for r in runs}) > 1
    ]
    metrics = sorted({m for r in runs for m in r.metrics}, key=_metric_order)
    protocols = [kind for kind in ("knn", "linear") if any(kind in _kinds(r) for r in runs)]
    return Comparison(runs, settings, metrics, protocols)


def _kinds(run: RunSummary) -> set[str]:
    kinds = set(run.protocols)
    kinds |= {"knn" for m in run.metrics if m.startswith("knn@")}
    kinds |= {"linear" for m in run.metrics if m.startswith("linear")}
    return kinds


def to_csv(comparison: Comparison) -> str:
    """The comparison as CSV: a header row, one row per run, metrics at full precision, empty
    cells where a value is missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(comparison.header())
    width = 1 + len(comparison.settings) + len(comparison.protocols)
    for row in comparison.values():
        writer.writerow(
            ["" if v is None else (_text(v) if i < width else repr(v)) for i, v in enumerate(row)]
        )
    return buffer.getvalue()


def to_markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table (``|`` in a value escaped)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header = comparison.header()
    width = 1 + len(comparison.settings) + len(comparison.protocols)
    rule = ["---" if i < width else "---:" for i in range(len(header))]
    lines = [line(header), "|" + "|".join(rule) + "|"]
    lines += [line(row) for row in comparison.rows()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PlotData:
    """The points of one metric against one setting.

    Attributes:
        metric: The metric (y).
        setting: The setting (x).
        xs: The setting's values, numbers (sorted) or, when any value is not a number, text
            (in the runs' order).
        ys: The metric's values.
        labels: The runs' names, one per point.
        left_out: The runs without the metric or the setting.
    """

    metric: str
    setting: str
    xs: list[float] | list[str]
    ys: list[float]
    labels: list[str]
    left_out: list[str]

    @property
    def categorical(self) -> bool:
        """Whether the x values are text (one tick per value)."""
        return any(isinstance(x, str) for x in self.xs)


def plot_data(comparison: Comparison, metric: str, setting: str) -> PlotData:
    """The points of ``metric`` against ``setting`` over the runs that have both.

    Raises:
        ConfigError: No run has the metric or the setting, or none has both.
    """
    if metric not in comparison.metrics:
        have = ", ".join(comparison.metrics) or "none (evaluate them first: syn2co-train eval)"
        raise ConfigError(f"--plot: no run has the metric {metric!r}; the runs have: {have}")
    keys = {str(k) for r in comparison.runs for k in r.config}
    if setting not in keys:
        close = difflib.get_close_matches(setting, sorted(keys), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"--against: no run has the setting {setting!r}{hint}")
    points: list[tuple[object, float, str]] = []
    left_out: list[str] = []
    for run in comparison.runs:
        x, y = run.config.get(setting), run.metrics.get(metric)
        if x is None or y is None:
            left_out.append(run.name)
        else:
            points.append((x, y, run.name))
    if not points:
        raise ConfigError(f"--plot: no run has both {metric} and a value of {setting}")
    numeric = all(_number(x) is not None for x, _, _ in points)
    xs: list[float] | list[str]
    if numeric:
        points.sort(key=lambda p: float(p[0]))  # type: ignore[arg-type]
        xs = [float(p[0]) for p in points]  # type: ignore[arg-type]
    else:
        xs = [_text(p[0]) for p in points]
    return PlotData(metric, setting, xs, [p[1] for p in points], [p[2] for p in points], left_out)
