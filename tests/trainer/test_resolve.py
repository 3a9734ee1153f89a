"""The one resolution of a run's values: the documented order of the layers, the sources it
records, validation once, and ``run --dry-run``, which prints them and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import reference_trainer.resolve as resolve_module
from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.engine import train
from reference_trainer.errors import ConfigError
from reference_trainer.resolve import (
    DEFAULT_SOURCE,
    Layer,
    command_line_layers,
    plan_run,
    resolve_options,
)

from .conftest import tiny_run

# One option that every layer can set, to a different value at each: MoBY's preset gives 0.05.
RECIPE = Layer("recipe r@1", {"weight_decay": 0.04, "seed": 4}, {"weight_decay": "paper, 4.1"})
FILE = Layer("--config f.yaml", {"weight_decay": 0.03, "seed": 3})
FLAGS = Layer("command line", {"weight_decay": 0.02, "seed": 2})


@pytest.mark.parametrize(
    ("layers", "weight_decay", "source"),
    [
        ([RECIPE, FILE, FLAGS], 0.02, "command line"),
        ([RECIPE, FILE], 0.03, "--config f.yaml"),
        ([RECIPE], 0.04, "recipe r@1 (paper, 4.1)"),
        ([], 0.05, "method preset (moby)"),
    ],
)
def test_each_layer_overrides_the_ones_below(
    layers: list[Layer], weight_decay: float, source: str
) -> None:
    options = resolve_options(layers)
    assert options.config.weight_decay == weight_decay
    assert options.sources["weight_decay"] == source
    # an option no preset sets: the field default below every layer
    seed = {0.02: 2, 0.03: 3, 0.04: 4, 0.05: 0}[weight_decay]
    assert options.config.seed == seed
    assert options.sources["seed"] == (DEFAULT_SOURCE if seed == 0 else source.split(" (")[0])


def test_the_method_preset_follows_the_method_of_the_highest_layer() -> None:
    options = resolve_options([Layer("recipe r@1", {"method": "moby"}), Layer("flags", {})])
    assert options.config.optimizer == "adamw" and options.config.queue_size == 4096
    sgd = resolve_options(
        [Layer("recipe r@1", {"method": "moby"}), Layer("f", {"method": "mocov2"})]
    )
    assert sgd.config.optimizer == "sgd" and sgd.config.queue_size == 65536
    assert sgd.sources["optimizer"] == "method preset (mocov2)"


def test_a_resumed_run_keeps_its_saved_values_and_takes_only_resumable_ones() -> None:
    saved = resolve_options([Layer("first run", {"weight_decay": 0.01})]).config
    options = resolve_options(
        [Layer("command line", {"workers": 0, "resume": "runs/x"})], saved=saved
    )
    assert options.config.weight_decay == 0.01 and options.sources["weight_decay"] == "checkpoint"
    assert options.config.workers == 0 and options.sources["workers"] == "command line"
    with pytest.raises(ConfigError, match="option 'weight_decay' differs from the checkpoint's"):
        resolve_options([Layer("command line", {"weight_decay": 0.5})], saved=saved)


def test_the_command_line_layers_are_recipe_file_flags(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_text("weight_decay: 0.03\nrecipe: synco-v2-deit-s\n")
    layers = command_line_layers(file, {"temperature": 0.3, "lr": None})
    assert [layer.source for layer in layers] == [
        "recipe synco-v2-deit-s@1",
        f"--config {file}",
        "command line",
    ]
    options = resolve_options(layers)
    assert options.config.weight_decay == 0.03 and options.config.temperature == 0.3
    assert options.sources["epochs"].startswith("recipe synco-v2-deit-s@1 (synco-v2 configs/")


def test_every_option_is_validated_once_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[TrainConfig] = []
    real = resolve_module.validate

    def counting(cfg: TrainConfig, *args: object, **kwargs: object) -> None:
        calls.append(cfg)
        real(cfg, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(resolve_module, "validate", counting)
    cfg = TrainConfig.from_dict(
        {
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "proj_hidden": 32,
            "proj_dim": 16,
            "queue_size": 64,
            "batch_size": 16,
            "builtin_size": 64,
            "steps": 1,
            "workers": 0,
            "out": str(tmp_path / "run"),
        }
    )
    train(cfg, show_progress=False)
    assert len(calls) == 1


def test_derived_numbers_name_how_they_were_derived() -> None:
    options = resolve_options([Layer("flags", {"batch_size": 256, "epochs": 10})])
    plan = plan_run(options, train_size=2560)
    derived = plan.derivations()
    assert derived["steps_per_epoch"][0] == 10 and derived["total_steps"][0] == 100
    assert derived["lr"] == (
        pytest.approx(1e-3 * 256 / 512),
        "method preset: 0.001 x batch 256 / 512",
    )
    assert derived["warmup_steps"][0] == round(5 / 300 * 100)


def test_dry_run_prints_every_value_with_its_source_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "f.yaml"
    config.write_text("temperature: 0.3\n")
    args = [
        *tiny_run(out, "--steps", "3", "--warmup-steps", "1"),
        "--recipe",
        "moby-deit-s",
        "--config",
        str(config),
    ]
    args.append("--dry-run")
    args[args.index("--img-size") + 1] = "32"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not out.exists()
    text = result.stdout
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert set(lines) == set(TrainConfig.field_names())
    assert lines["temperature"].endswith(f"# --config {config}")
    assert lines["batch_size"].endswith("# command line")
    assert "# recipe moby-deit-s@1 (" in lines["epochs"]
    assert lines["queue_size"].endswith("# command line")
    assert "#   total_steps: 3  (--steps)" in text and "#   lr: " in text
    # the printed options are a config file that resolves to the same values
    reread = tmp_path / "dry.yaml"
    reread.write_text(text)
    again = yaml.safe_load(text)
    assert again["temperature"] == 0.3 and again["recipe"] == "moby-deit-s"


def test_a_run_sized_in_images_seen_does_the_same_work_on_any_data() -> None:
    """Real, mixed and synthetic-only runs have epochs of different lengths; --images-seen
    gives them the same number of steps, whatever the epoch."""
    options = resolve_options([Layer("flags", {"batch_size": 64, "images_seen": 1000})])
    for train_size in (640, 6400, 100_000):
        plan = plan_run(options, train_size=train_size)
        assert plan.total_steps == 16  # ceil(1000 / 64): 1024 images seen
        assert plan.derivations()["total_steps"][1] == "--images-seen 1000 / batch 64, rounded up"
    over = resolve_options([Layer("flags", {"images_seen": 1000, "steps": 3, "epochs": 2})])
    assert plan_run(over, train_size=640).total_steps == 3  # --steps wins
    epochs = resolve_options([Layer("flags", {"images_seen": 1000, "epochs": 2})])
    assert plan_run(epochs, train_size=640).total_steps == 16  # and it wins over --epochs
    for few in (10, 0, -5):  # refused when the options are resolved, before any data is read
        with pytest.raises(ConfigError) as error:
            resolve_options([Layer("f", {"images_seen": few, "batch_size": 64})])
        assert str(error.value) == (
            f"--images-seen must be >= 64 (one step of --batch-size 64), got {few}"
        )


def test_the_config_of_a_resumed_run_starts_a_new_run(tmp_path: Path) -> None:
    """config.yaml leaves out what one invocation asked for (--resume, --stop-at)."""
    runner = CliRunner()
    run = tmp_path / "run"
    args = [*tiny_run(run, "--steps", "2", "--warmup-steps", "0")]
    assert runner.invoke(app, [*args, "--stop-at", "1"]).exit_code == 0
    assert runner.invoke(app, [*args, "--resume", str(run)]).exit_code == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["resume"] is None and saved["stop_at"] is None
    again = tmp_path / "again"
    result = runner.invoke(app, ["run", "--config", str(run / "config.yaml"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((again / "config.yaml").read_text())["steps"] == 2
