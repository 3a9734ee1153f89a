"""Recipes: listing, precedence (defaults < method preset < recipe < --config < command line),
the two forms of the schedule options, and a few CPU steps of every shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import ConfigError
from reference_trainer.methods import register, unregister
from reference_trainer.recipes import load_recipe, recipe_names, recipes
from reference_trainer.resolve import command_line_layers, requested, resolve

from .conftest import write_cifar10, write_cifar100, write_fake_imagenet, write_image_folder

REQUIRED = {
    "synco-v1-resnet50",
    "wu-simclr-resnet18-cifar10",
    "wu-simclr-resnet18-cifar100",
    "synco-v2-deit-s",
    "synco-v2-swin-t",
    "moby-deit-s",
    "moby-swin-t",
    "mocov3-vit-s",
    *(
        f"syn2co-{a}-in100-{v}"
        for a in ("deit-s", "swin-t")
        for v in ("real", "synthetic", "mixed")
    ),
}


def config_from_options(config: Path | None, flags: dict[str, object]) -> TrainConfig:
    """The options a command line sets, layer by layer (recipe, file, flags)."""
    return requested(command_line_layers(config, flags))


def test_recipes_command_lists_each_recipe_on_one_line(runner: CliRunner) -> None:
    res = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == list(recipe_names())
    assert all(row.split("│")[2].strip().startswith("v") for row in rows)
    assert set(recipe_names()) >= REQUIRED


def test_every_recipe_file_is_valid_and_sourced() -> None:
    for recipe in recipes().values():
        if not recipe.missing():  # the others name methods this installation lacks
            cfg = TrainConfig().updated(recipe.options, source=recipe.name)
            assert cfg.arch and recipe.version >= 1
        lines = recipe.path.read_text().split("options:\n", 1)[1].splitlines()
        for line in lines:  # every value carries its source in a comment
            assert "  # " in line, f"{recipe.name}: no source for {line!r}"


def test_precedence_defaults_preset_recipe_file_command_line(tmp_path: Path) -> None:
    recipe_only = config_from_options(None, {"recipe": "synco-v2-deit-s"})
    assert recipe_only.temperature == 0.2 and recipe_only.arch == "vit_s_mocov3"
    assert recipe_only.recipe == "synco-v2-deit-s"
    # what the recipe leaves unset comes from the method preset: lr 1e-3 x batch / 512
    assert recipe_only.lr is None
    assert resolve(recipe_only, train_size=5120).lr == pytest.approx(1e-3)
    # a field default the recipe does not touch stays the default
    assert recipe_only.seed == TrainConfig().seed
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump({"temperature": 0.3, "batch_size": 256}))
    from_file = config_from_options(file, {"recipe": "synco-v2-deit-s"})
    assert from_file.temperature == 0.3 and from_file.weight_decay == 0.05
    assert resolve(from_file, train_size=5120).lr == pytest.approx(5e-4)  # scales with batch
    cli = config_from_options(file, {"recipe": "synco-v2-deit-s", "temperature": 0.4})
    assert cli.temperature == 0.4
    # a config file may name the recipe itself
    file.write_text(yaml.safe_dump({"recipe": "mocov3-vit-s", "temperature": 0.3}))
    named = config_from_options(file, {})
    assert named.method == "mocov3" and named.temperature == 0.3


def test_step_form_given_later_replaces_the_recipes_epoch_form() -> None:
    cfg = config_from_options(None, {"recipe": "synco-v2-deit-s", "negatives_start": 7})
    assert cfg.negatives_start == 7 and cfg.negatives_start_epoch is None
    assert cfg.negatives_end_epoch == 101  # the other end keeps the recipe's epoch form
    cfg = config_from_options(None, {"recipe": "synco-v2-deit-s", "warmup_steps": 0})
    assert cfg.warmup_steps == 0 and cfg.warmup_epochs is None
    with pytest.raises(ConfigError, match="either --warmup-steps or --warmup-epochs, not both"):
        config_from_options(None, {"warmup_steps": 3, "warmup_epochs": 1.0})


def test_recipe_needing_an_absent_method_is_a_clear_error() -> None:
    removed = unregister("mocov2")  # as in an installation without that plug-in
    try:
        assert recipes()["synco-v1-resnet50"].missing() == ["--method mocov2"]
        with pytest.raises(ConfigError, match="--recipe synco-v1-resnet50 needs --method mocov2"):
            load_recipe("synco-v1-resnet50")
    finally:
        register(removed)
    assert recipes()["synco-v1-resnet50"].missing() == []


def test_unknown_recipe_and_version_are_clear_errors(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    version = recipes()["moby-deit-s"].version
    assert load_recipe(f"moby-deit-s@{version}").name == "moby-deit-s"
    with pytest.raises(ConfigError, match="ships moby-deit-s version"):
        load_recipe(f"moby-deit-s@{version + 1}")
    res = runner.invoke(app, ["run", "--recipe", "nope", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "unknown recipe 'nope'" in res.output
    assert not (tmp_path / "r").exists()


TINY = {
    "vit_s_mocov3": ["--depth", "1", "--embed-dim", "32", "--num-heads", "4"],
    "swin_t": ["--depth", "1", "--embed-dim", "16", "--num-heads", "1"],
    "resnet50": ["--depth", "1", "--embed-dim", "8"],
    "resnet18": ["--depth", "1", "--embed-dim", "8"],
}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipes")
    return {
        "imagenet": write_fake_imagenet(root / "imagenet"),
        "train": write_image_folder(root / "train", classes=2, per_class=8),
        "val": write_image_folder(root / "val", classes=2, per_class=2),
        "synthetic": write_image_folder(root / "synthetic", classes=2, per_class=8),
        "cifar10": write_cifar10(root / "cifar10"),
        "cifar100": write_cifar100(root / "cifar100"),
    }


@pytest.mark.parametrize("name", recipe_names())
def test_each_recipe_runs_a_few_steps_on_cpu(
    name: str, runner: CliRunner, tmp_path: Path, data_dirs: dict[str, Path]
) -> None:
    recipe = recipes()[name]
    if recipe.missing():
        pytest.skip(f"{name} needs {', '.join(recipe.missing())}")
    options = recipe.options
    if options["dataset"] == "imagenet100":
        data = ["--data", str(data_dirs["imagenet"])]
    elif options["dataset"] in ("cifar10", "cifar100"):
        data = ["--data", str(data_dirs[options["dataset"]])]
    else:
        data = ["--data", str(data_dirs["train"]), "--val-data", str(data_dirs["val"])]
    if "synthetic_data" in options:
        data += ["--synthetic-data", str(data_dirs["synthetic"])]
    out = tmp_path / "run"
    args = ["run", "--recipe", name, "--out", str(out), *data, *TINY[options["arch"]]]
    args += ["--img-size", "32", "--batch-size", "16", "--steps", "3", "--workers", "0"]
    args += ["--proj-hidden", "64", "--proj-dim", "32", "--queue-size", "64"]
    args += ["--warmup-steps", "1", "--negatives-start", "1", "--precision", "fp32"]
    args += ["--log-every", "1", "--hardness-every", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["recipe"] == name and saved["steps"] == 3 and saved["img_size"] == 32
    assert saved["temperature"] == options.get("temperature", saved["temperature"])
    records = [yaml.safe_load(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    if options["negatives"] != "none":  # the step form of the window replaced the recipe's
        assert [r["synthetic_negatives"] for r in records] == [False, True, True]


DOCS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "trainer" / "reproducing.md"


def _documented_values() -> dict[str, dict[str, tuple[str, str]]]:
    """``{recipe: {option: (value, source)}}`` from the docs' table of recipe values."""
    text = DOCS_TABLE.read_text().split("## Every recipe value and its source", 1)[1]
    table: dict[str, dict[str, tuple[str, str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        recipe, option, value, source = cells
        table.setdefault(recipe.strip("`"), {})[option.replace("`", "")] = (
            value.strip("`"),
            source,
        )
    return table


def test_each_recipe_resolves_to_exactly_its_documented_values() -> None:
    documented = _documented_values()
    assert set(documented) == set(recipe_names())
    for name, recipe in recipes().items():
        rows = documented[name]
        options = {k: v for k, v in rows.items() if k != "lr (resolved)"}
        assert set(options) == set(recipe.options), name
        assert {k: source for k, (_, source) in options.items()} == recipe.sources, name
        if recipe.missing():
            assert "lr (resolved)" not in rows
            continue
        cfg = config_from_options(None, {"recipe": name})
        for option, (value, _) in options.items():
            assert getattr(cfg, option) == yaml.safe_load(value), (name, option)
        if "lr" in recipe.options:
            assert "lr (resolved)" not in rows
        else:
            lr = resolve(cfg, train_size=cfg.batch_size * 10).lr
            assert lr == pytest.approx(float(rows["lr (resolved)"][0]), rel=1e-9), name
