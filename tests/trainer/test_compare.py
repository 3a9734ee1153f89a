"""``syn2co-train compare`` on three tiny runs (real, mixed, synthetic only): the table of the
settings that differ and the results, as text, CSV and Markdown, and a metric plotted against a
setting; and what every evaluation's JSON says about itself."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import syn2co
from reference_trainer.cli import app
from reference_trainer.compare import compare_runs, plot_data, to_markdown

from .conftest import TINY_DEIT, write_image_folder

TINY = [*TINY_DEIT, "--img-size", "32", "--workers", "0", "--batch-size", "8"]
TINY += ["--queue-size", "16", "--steps", "2", "--dataset", "imagefolder"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs on the same real folders: real only, half synthetic, synthetic only (trained
    without --data); kNN evaluated on all three, the linear probe on the real one only."""
    root = tmp_path_factory.mktemp("compare")
    train = write_image_folder(root / "train")
    val = write_image_folder(root / "val", per_class=4)
    synth = write_image_folder(root / "synth", per_class=6)
    real_data = ["--data", str(train), "--val-data", str(val)]
    runs = {name: root / name for name in ("real", "mixed", "synthetic")}
    invoke("run", "--out", str(runs["real"]), *TINY, *real_data)
    mixed = ["--synthetic-data", str(synth), "--synthetic-fraction", "0.5"]
    invoke("run", "--out", str(runs["mixed"]), *TINY, *real_data, *mixed)
    invoke(
        "run", "--out", str(runs["synthetic"]), *TINY, "--synthetic-data", str(synth),
        "--synthetic-fraction", "1.0",
    )  # fmt: skip
    # the synthetic-only run names no real images: eval says to pass them, in one line
    line = one_line_error("eval", "knn", str(runs["synthetic"]), "--k", "3")
    assert "trained on synthetic images only" in line and "--data REAL_TRAIN_DIR" in line
    assert not (runs["synthetic"] / "eval_knn.json").exists()
    for name, run in runs.items():
        extra = real_data if name == "synthetic" else []
        invoke("eval", "knn", str(run), "--k", "3", "--k", "5", *extra)
    invoke("eval", "linear", str(runs["real"]), "--epochs", "2", "--batch-size", "8")
    return runs


def _knn(run: Path, k: int) -> float:
    return float(json.loads((run / "eval_knn.json").read_text())["pretrained"]["top1"][str(k)])


def test_csv_has_the_differing_settings_and_every_result(runs: dict[str, Path]) -> None:
    text = invoke("compare", *map(str, runs.values()), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["run"] for r in rows] == ["real", "mixed", "synthetic"]
    header = list(rows[0])
    assert {"synthetic_fraction", "synthetic_data", "data"} <= set(header)
    assert "out" not in header and "arch" not in header and "steps" not in header  # the same
    assert header[-4:] == ["knn@3", "knn@5", "linear_top1", "linear_top5"]
    assert [float(r["synthetic_fraction"]) for r in rows] == [0.0, 0.5, 1.0]
    for row, run in zip(rows, runs.values(), strict=True):
        assert float(row["knn@3"]) == _knn(run, 3) and float(row["knn@5"]) == _knn(run, 5)
        assert row["knn protocol"] == "full"
    linear = json.loads((runs["real"] / "eval_linear.json").read_text())
    assert float(rows[0]["linear_top1"]) == linear["val_top1"]
    assert rows[1]["linear_top1"] == rows[2]["linear_top1"] == ""  # not evaluated
    assert rows[2]["data"] == ""  # trained without --data


def test_table_and_markdown_show_a_dash_where_a_run_has_no_result(
    runs: dict[str, Path],
) -> None:
    table = invoke("compare", *map(str, runs.values()))
    lines = table.splitlines()
    header = next(line for line in lines if "synthetic_fraction" in line)
    for column in ("run", "synthetic_fraction", "knn@3", "linear_top1", "linear protocol"):
        assert column in header  # full width when piped: no column cut short
    mixed = next(line for line in lines if " mixed " in line)
    cells = [c.strip() for c in re.split(r"[│|]", mixed) if c.strip()]
    assert cells[-2:] == ["-", "-"] and f"{_knn(runs['mixed'], 3):.2f}" in cells
    markdown = invoke("compare", *map(str, runs.values()), "--format", "markdown")
    assert markdown == to_markdown(compare_runs(list(runs.values())))
    md = markdown.splitlines()
    assert md[0].startswith("| run |") and md[1].startswith("|---|")
    assert md[3].startswith("| mixed |") and md[3].endswith("| - | - |")


def test_plot_of_a_metric_against_a_setting(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plots" / "knn.png"
    args = ["compare", *map(str, runs.values()), "--plot", "knn@3"]
    output = invoke(*args, "--against", "synthetic_fraction", "--out", str(out))
    assert f"wrote {out} (3 runs)" in output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 500)
        image.verify()
    data = plot_data(compare_runs(list(runs.values())), "knn@3", "synthetic_fraction")
    assert data.xs == [0.0, 0.5, 1.0] and data.labels == ["real", "mixed", "synthetic"]
    assert data.ys == [_knn(run, 3) for run in runs.values()] and data.left_out == []
    linear = plot_data(compare_runs(list(runs.values())), "linear_top1", "synthetic_fraction")
    assert linear.xs == [0.0] and linear.left_out == ["mixed", "synthetic"]
    text = plot_data(compare_runs(list(runs.values())), "knn@5", "synthetic_data")
    assert text.categorical and text.labels == ["mixed", "synthetic"]  # real has none


def test_compare_errors_are_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    real = str(runs["real"])
    assert "does not exist" in one_line_error("compare", real, str(tmp_path / "nope"))
    folder = tmp_path / "folder"
    folder.mkdir()
    line = one_line_error("compare", real, str(folder))
    assert line == f"error: RUN: {folder} is not a run directory (it has no config.yaml)"
    png = str(tmp_path / "p.png")
    for args, words in [
        (["--plot", "knn@3", "--out", png], "--plot: needs --against SETTING"),
        (["--plot", "knn@3", "--against", "steps"], "--plot: needs --out FILE.png"),
        (["--against", "steps"], "--against: only with --plot METRIC"),
        (["--plot", "knn@3", "--against", "steps", "--out", "p.jpg"], "--out: expected a .png"),
        (["--plot", "knn@7", "--against", "steps", "--out", png], "no run has the metric"),
        (["--plot", "knn@3", "--against", "synthetic_fractoin", "--out", png], "did you mean"),
    ]:
        assert words in one_line_error("compare", real, str(runs["mixed"]), *args)
    assert not Path(png).exists()


def test_eval_outputs_say_what_they_are(runs: dict[str, Path]) -> None:
    run = runs["real"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    for name, protocol in (("eval_knn.json", "full"), ("eval_linear.json", "fast")):
        saved = json.loads((run / name).read_text())
        assert saved["run"] == str(run.resolve())
        assert saved["checkpoint"] == str((run / "checkpoint.pt").resolve())
        assert saved["step"] == 2 and saved["branch"] == "online" and saved["seed"] == 0
        assert saved["dataset"] == "imagefolder"
        assert (saved["data"], saved["val_data"]) == (config["data"], config["val_data"])
        assert saved["split_sizes"] == {"train": 24, "val": 12}
        assert saved["protocol"] == protocol and isinstance(saved["settings"], dict)
        assert saved["syn2co_version"] == syn2co.__version__
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", saved["date"])
    knn = json.loads((run / "eval_knn.json").read_text())
    assert knn["settings"]["ks"] == [3, 5] and knn["settings"]["interpolation"] == "bicubic"
    synthetic = json.loads((runs["synthetic"] / "eval_knn.json").read_text())
    assert synthetic["data"] == config["data"]  # the --data given to eval, not the run's none
