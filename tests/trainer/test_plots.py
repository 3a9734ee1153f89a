"""Tests of reference_trainer.plots: reading the metrics log and writing PNG curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from reference_trainer.plots import (
    hardness_figure,
    hardness_groups,
    metric_series,
    plot_run,
    read_metrics,
    smooth,
)

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_records(n: int = 60) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for step in range(0, 10 * n, 10):
        t = step / (10 * n)
        record: dict[str, Any] = {
            "step": step,
            "epoch": step // 100,
            "loss": 8.0 * math.exp(-3 * t) + 0.2 * math.sin(step),
            "lr": 1e-3 * 0.5 * (1 + math.cos(math.pi * t)),
            "momentum": 1 - 0.01 * 0.5 * (1 + math.cos(math.pi * t)),
            "img_per_s": 1200.0,
            "hardness/positive/mean": 0.5 + 0.4 * t,
            "hardness/positive/std": 0.1,
            "hardness/hard_real/mean": 0.2 + 0.3 * t,
        }
        if step >= 200:  # synthetic negatives switch on later: a key absent from early lines
            record["hardness/interpolated/mean"] = 0.3 + 0.4 * t
        records.append(record)
    return records


def write_log(run_dir: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    lines = [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


def read_png(path: Path) -> Any:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def test_plot_run_writes_three_valid_pngs_despite_a_truncated_line(tmp_path: Path) -> None:
    records = synthetic_records()
    write_log(tmp_path, records, tail='\n["not", "an", "object"]\n{"step": 600, "loss": 0.')
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png", "hardness.png"]
    for path in paths:
        assert path.parent == tmp_path
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000, path.name
        image = read_png(path)
        assert image.shape[0] >= 300 and image.shape[1] >= 600
        assert float(image[..., :3].std()) > 0.01  # something was drawn
    assert not list(tmp_path.glob("*.tmp"))


def test_plot_run_skips_figures_whose_keys_are_absent(tmp_path: Path) -> None:
    write_log(tmp_path, [{"step": s, "loss": 1.0 / (s + 1)} for s in range(20)])
    out = tmp_path / "plots"
    paths = plot_run(tmp_path, out_dir=out)
    assert paths == [out / "loss.png"]
    assert sorted(p.name for p in out.iterdir()) == ["loss.png"]


def test_plot_run_rejects_missing_or_empty_logs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('\n{"step": 1, "lo\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no valid line"):
        plot_run(tmp_path)


def test_read_metrics_keeps_only_json_objects(tmp_path: Path) -> None:
    path = write_log(tmp_path, [{"step": 1}, {"step": 2, "loss": 3.0}], tail="42\n\n{bad}\n{")
    assert read_metrics(path) == [{"step": 1}, {"step": 2, "loss": 3.0}]


def test_metric_series_sorts_drops_non_finite_and_keeps_resumed_values() -> None:
    records: list[dict[str, Any]] = [
        {"step": 0, "loss": 4.0},
        {"step": 10, "loss": 3.0},
        {"step": 20, "loss": 2.5},
        {"step": 30, "loss": float("nan")},
        {"step": 15},  # no loss
        {"loss": 9.0},  # no step
        {"step": 10, "loss": 2.9},  # a resumed run logs step 10 again
        {"step": 20, "loss": True},  # not a number
        {"step": 40, "loss": 1.0},
    ]
    assert metric_series(records, "loss") == ([0.0, 10.0, 20.0, 40.0], [4.0, 2.9, 2.5, 1.0])
    assert metric_series(records, "lr") == ([], [])
    # without any step, the position in the log is the x value
    assert metric_series([{"loss": 1.0}, {}, {"loss": 3.0}], "loss") == ([0.0, 2.0], [1.0, 3.0])


def test_smooth_is_a_debiased_exponential_average() -> None:
    values = [1.0, 3.0, 2.0, 6.0]
    w = 0.5
    expected = []
    for t in range(1, len(values) + 1):  # weighted mean of the first t values
        coeffs = [(1 - w) * w ** (t - i) for i in range(1, t + 1)]
        expected.append(sum(c * v for c, v in zip(coeffs, values[:t], strict=True)) / sum(coeffs))
    assert smooth(values, w) == pytest.approx(expected)
    assert smooth([2.5] * 5, 0.9) == pytest.approx([2.5] * 5)
    assert smooth(values, 0.0) == values
    with pytest.raises(ValueError, match="weight"):
        smooth(values, 1.0)


def test_hardness_groups_finds_every_mean_key_in_order() -> None:
    groups = hardness_groups(synthetic_records())
    assert groups == ["positive", "hard_real", "interpolated"]
    assert hardness_groups([{"hardness/x/std": 1.0, "hardness//mean": 2.0, "loss": 1}]) == []


def test_a_run_shorter_than_hardness_every_shows_its_one_hardness_point(tmp_path: Path) -> None:
    """The engine logs hardness at step 1 and every --hardness-every steps: a shorter run has a
    single point per group, which must still be drawn (a line through one point is not)."""
    records = [
        {"step": s, "loss": 5.0 - s, "lr": 1e-3, "momentum": 0.99, "img_per_s": 10.0}
        for s in (1, 2, 3)
    ]
    records[0] |= {"hardness/positive/mean": 0.5, "hardness/hard_real/mean": 0.1}
    fig = hardness_figure(records)
    assert fig is not None
    lines = fig.axes[0].lines
    assert [list(line.get_xdata()) for line in lines] == [[1], [1]]
    assert all(line.get_marker() not in (None, "None", "", " ") for line in lines)
    write_log(tmp_path, records)
    assert any(p.name == "hardness.png" for p in plot_run(tmp_path))
