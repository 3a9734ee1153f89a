"""What ``syn2co-train`` prints for a reader: ``--help`` shows every default, and result tables
print in full when piped.

* ``run --help`` shows the default of every option whose config field has one, as the
  resolution uses it (``--negatives`` defaults to ``none``, a flag to its on or off form); the
  options left to the method, preset or recipe show none.
* ``syn2co-train recipes | cat``: stdout is not a terminal, so the table is not cut to 80
  columns: every recipe's whole summary is there, and no ellipsis.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("typer")

from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import flag
from reference_trainer.recipes import recipes

ROOT = Path(__file__).resolve().parents[1]


def _rows(text: str) -> dict[str, str]:
    """Option -> its help row, from a rich help screen wide enough for one line per option."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^│\s+(--[\w-]+)\s", line)
        if match:
            rows[match[1]] = " ".join(line.strip("│ ").split())
    return rows


def test_run_help_shows_every_default() -> None:
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "3000"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert "[default: (none)]" in rows["--negatives"]
    assert "[default: (64)]" in rows["--batch-size"]
    assert "[default: (--no-strict-data)]" in rows["--strict-data"]
    for field in dataclasses.fields(TrainConfig):
        row = rows[flag(field.name)]
        if isinstance(field.default, bool):
            shown = flag(field.name) if field.default else f"--no-{flag(field.name)[2:]}"
            assert f"[default: ({shown})]" in row, row
        elif field.default is not None:
            assert f"[default: ({field.default})]" in row, row
        else:
            assert "[default:" not in row, row


def test_recipes_print_in_full_when_piped() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "reference_trainer.cli", "recipes"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for recipe in recipes().values():
        assert recipe.name in result.stdout
        assert recipe.summary in result.stdout, recipe.summary
