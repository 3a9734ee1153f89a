"""``syn2co-train compare``: runs side by side, the settings that differ between them and their
evaluation results, as a table (or CSV, Markdown) and optionally one metric plotted against one
setting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ..errors import ConfigError
from ._consoles import console, out_console
from ._error_boundary import exit_on_user_error
from ._run_files import writable


def _check_plot_options(plot: str | None, against: str | None, out: Path | None) -> None:
    if plot is None:
        if against is not None or out is not None:
            given = "--against" if against is not None else "--out"
            raise ConfigError(f"{given}: only with --plot METRIC (the metric to plot)")
        return
    if against is None:
        raise ConfigError("--plot: needs --against SETTING (the x axis, e.g. synthetic_fraction)")
    if out is None:
        raise ConfigError("--plot: needs --out FILE.png (where to write the plot)")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out: expected a .png file, got {out}")
    writable(out, out, "the plot")


def _print_table(table: Table) -> None:
    """The table on stdout: at the terminal's width, or at its own full width when piped."""
    if out_console.is_terminal:
        out_console.print(table)
        return
    wide = Console(file=out_console.file, width=100_000, color_system=None)
    width = Measurement.get(wide, wide.options, table).maximum
    Console(file=out_console.file, width=max(80, width), color_system=None).print(table)


@exit_on_user_error
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of syn2co-train run.")],
    format: Annotated[
        Literal["table", "csv", "markdown"],
        typer.Option(
            "--format", help="table: for the terminal (full width when piped); csv; markdown."
        ),
    ] = "table",
    plot: Annotated[
        str | None,
        typer.Option(help="Also plot this metric: knn@K, linear_top1 or linear_top5."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            help="The setting on the plot's x axis: a config.yaml key, e.g. synthetic_fraction."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The plot's PNG file.")] = None,
) -> None:
    """Compare runs: the settings that differ between them and their eval knn / eval linear
    results ("-" where a run has none)."""
    _check_plot_options(plot, against, out)

    from ..compare import compare_runs, plot_data, to_csv, to_markdown

    comparison = compare_runs(runs)
    data = plot_data(comparison, plot, against) if plot is not None and against else None
    for run in comparison.runs:
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if format == "csv":
        out_console.file.write(to_csv(comparison))
        out_console.file.flush()
    elif format == "markdown":
        out_console.file.write(to_markdown(comparison))
        out_console.file.flush()
    else:
        table = Table(title=f"{len(comparison.runs)} runs: the settings that differ, the results")
        for i, name in enumerate(comparison.header()):
            numeric = i >= len(comparison.header()) - len(comparison.metrics)
            table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
        for row in comparison.rows():
            table.add_row(*row)
        _print_table(table)
    if data is None:
        return
    assert plot is not None and against is not None and out is not None
    from ..plots import plot_points

    plot_points(data.xs, data.ys, data.labels, out, x_label=against, y_label=plot)
    if data.left_out:
        console.print(
            f"left out of the plot (no {plot} or no {against}): {', '.join(data.left_out)}",
            soft_wrap=True,
        )
    console.print(f"wrote {out} ({len(data.ys)} runs)", soft_wrap=True)
