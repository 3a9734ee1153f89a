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
from reference_trainer.recipes import (
    _comments,
    _sourced,
    load_recipe,
    recipe_names,
    recipes,
    render,
)
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


def test_recipes_command_lists_each_recipe_in_full_when_piped(runner: CliRunner) -> None:
    res = runner.invoke(app, ["recipes"], env={"COLUMNS": "40"})  # not a terminal
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(recipe_names())
    assert set(recipe_names()) >= REQUIRED
    for line, recipe in zip(lines, recipes().values(), strict=True):
        assert f"  v{recipe.version}  " in line and recipe.summary in line  # never cut
        assert all(f"[@{v}]" in line for v in recipe.variants)


def test_every_recipe_file_is_valid_and_sourced() -> None:
    for recipe in recipes().values():
        if not recipe.missing():  # the others name methods this installation lacks
            cfg = TrainConfig().updated(recipe.options, source=recipe.name)
            assert cfg.arch and recipe.version >= 1
        assert set(recipe.sources) == set(recipe.options), recipe.name
        assert all(source.strip() for source in recipe.sources.values())
        for variant in recipe.variants.values():
            assert set(variant.sources) == set(variant.options), (recipe.name, variant.name)
        for option, source in recipe.sources.items():  # an unsourced value is a departure
            if source.startswith("no source"):
                assert option in recipe.departs, (recipe.name, option)
    text = "name: x\nversion: 1\noptions:\n  arch: deit_s\n"
    with pytest.raises(ConfigError, match="no source comment for \\['arch'\\]"):
        _sourced("x", {"arch": "deit_s"}, _comments(text), ("options",))


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


def test_the_docs_sections_generated_from_the_recipes_are_current() -> None:
    page = render.DOCS_PAGE.read_text()
    assert render.update_page(page) == page, (
        "docs/trainer/reproducing.md is out of date: run python -m reference_trainer.recipes.render"
    )
    for recipe in recipes().values():  # every departure is a row, every value a line
        assert f"`{recipe.name}` v{recipe.version}: {recipe.summary}" in page
        for departure in recipe.departs.values():
            assert departure.why.replace("|", "\\|") in page
    assert render.main(["--check", str(render.DOCS_PAGE)]) == 0


# --------------------------------------------------------------------------------------------
# Every value a recipe runs comes from the recipe
# --------------------------------------------------------------------------------------------

#: Options that do not change what a run computes, or name where its files are: a recipe may
#: leave them to the command line.
INFRASTRUCTURE = {
    "recipe": "the recipe itself",
    "data": "a data path",
    "val_data": "a data path",
    "synthetic_data": "a data path",
    "strict_data": "stops on an unreadable file instead of skipping it",
    "workers": "loader processes (the views are seeded per image)",
    "loader": "CPU or GPU input path: the same augmentation",
    "out": "the run directory",
    "seed": "the trainer's random streams, never the official code's",
    "device": "where the run computes",
    "compile": "torch.compile: the same computation",
    "checkpoint_every": "logging and checkpoints",
    "log_every": "logging and checkpoints",
    "progress_every": "logging and checkpoints",
    "hardness_every": "logging and checkpoints",
    "generator_grid_every": "logging and checkpoints",
    "check_inputs": "input checks",
    "resume": "resuming",
    "stop_at": "stopping early to resume",
    "negatives_path": "logits or vectors: the same loss up to float32 rounding",
}

#: Options given in one of two forms: either form set by the recipe covers both.
FORMS = (
    ("steps", "epochs", "images_seen"),  # the run length, in one of three forms
    ("warmup_steps", "warmup_epochs"),
    ("negatives_start", "negatives_start_epoch"),
    ("negatives_end", "negatives_end_epoch"),
    ("lr", "base_lr"),
)

COUNTS = ("n_hard", "interpolated", "extrapolated", "mixed", "noisy", "perturbed")
COUNTS += ("adversarial", "strategy_counts")


def inactive(cfg: TrainConfig) -> set[str]:
    """The options that cannot change a run of ``cfg`` (so a recipe need not write them)."""
    from reference_trainer.methods import get_method
    from reference_trainer.resnets import is_resnet

    method = get_method(cfg.method)
    off: set[str] = set()
    if cfg.dataset != "builtin":
        off.add("builtin_size")
    if cfg.synthetic_data is None:  # no synthetic images: nothing to schedule
        off |= {"synthetic_fraction_end", "synthetic_schedule"}
    if cfg.synthetic_schedule == "constant":
        off.add("synthetic_fraction_end")
    if cfg.lr is not None:
        off.add("lr_reference_batch")
    if cfg.optimizer == "adamw":
        off.add("optimizer_momentum")  # AdamW keeps torch's betas
    if not method.momentum_target:
        off |= {"momentum", "ema_schedule"}
    if method.bank != "queue":
        off |= {"queue_size", "generator_keys_enqueued"}
    if is_resnet(cfg.arch):
        off |= {"patch_size", "window_size", "num_heads", "freeze_patch_embed"}
    else:
        off.add("zero_init_residual")
    if "swin" not in cfg.arch:
        off.add("window_size")
    # the counts are the preset's that `negatives` names (None: the preset's)
    off |= set(COUNTS)
    if cfg.negatives == "none":
        off |= {"negatives_as_run_gpus"} | {name for pair in FORMS[2:4] for name in pair}
    if cfg.generator == "none":
        off |= {"generator_fraction", "generator_lr", "generator_keys_enqueued"}
    if cfg.generator not in ("hard-pairs", "both"):
        off.add("generator_pair_design")
    return off


@pytest.mark.parametrize("spec", [*recipe_names(), "synco-v2-deit-s@as-run"])
def test_every_training_option_comes_from_the_recipe(spec: str) -> None:
    from reference_trainer.resolve import resolve_options

    options = resolve_options(command_line_layers(None, {"recipe": spec}))
    cfg, sources = options.config, options.sources
    label = load_recipe(spec).label
    from_recipe = {name for name, source in sources.items() if source.startswith(f"recipe {label}")}
    for pair in FORMS:
        if from_recipe & set(pair):
            from_recipe |= set(pair)
    left = set(TrainConfig.field_names()) - set(INFRASTRUCTURE) - inactive(cfg) - from_recipe
    assert not left, {name: sources[name] for name in sorted(left)}
    # every option the recipe sets carries its source into the run's sources
    for name, note in load_recipe(spec).sources.items():
        assert sources[name] == f"recipe {label} ({note})"


def test_the_test_catches_an_option_left_to_a_default(tmp_path: Path) -> None:
    from reference_trainer.resolve import resolve_options

    recipe = recipes()["synco-v2-deit-s"]
    layers = command_line_layers(None, {"recipe": "synco-v2-deit-s"})
    options = {k: v for k, v in recipe.options.items() if k != "augmentation"}
    layers[0] = type(layers[0])(layers[0].source, options, layers[0].notes)
    sources = resolve_options(layers).sources
    assert sources["augmentation"] == "method preset (moby)"  # what the test above refuses


def test_wu_recipes_resolve_to_simclrs_published_cifar10_values() -> None:
    """SimCLR's README command for CIFAR-10: batch 512, 1000 epochs, LARS at 1.0 x batch / 256,
    weight decay 1e-4, temperature 0.5, ResNet-18 at 32 px, no blur, jitter strength 0.5."""
    for name in ("wu-simclr-resnet18-cifar10", "wu-simclr-resnet18-cifar100"):
        cfg = config_from_options(None, {"recipe": name})
        plan = resolve(cfg, train_size=50_000)
        assert (cfg.batch_size, cfg.epochs, cfg.optimizer) == (512, 1000, "lars")
        assert plan.lr == pytest.approx(1.0 * 512 / 256)
        assert (cfg.weight_decay, cfg.temperature, cfg.optimizer_momentum) == (1e-4, 0.5, 0.9)
        assert (cfg.arch, cfg.img_size, cfg.precision) == ("resnet18", 32, "fp32")
        assert plan.warmup_steps == 10 * (50_000 // 512) and plan.min_lr == 0.0
        assert cfg.augmentation == "simclr-cifar" and cfg.zero_init_residual is True
        assert cfg.generator == "both" and cfg.generator_pair_design == "twin"
        from reference_trainer.data.transforms import augmentation_config

        aug = augmentation_config(cfg.augmentation, cfg.img_size)
        assert aug.blur_p == (0.0, 0.0) and aug.jitter == (0.4, 0.4, 0.4, 0.1)  # 0.8 s, 0.2 s
        assert aug.crop_scale == (0.08, 1.0) and aug.solarize_p == (0.0, 0.0)
    # the simclr method's own CIFAR preset agrees (weight decay 1e-4, not ImageNet's 1e-6)
    bare = resolve(TrainConfig(method="simclr", arch="resnet18", batch_size=512), train_size=50_000)
    assert bare.config.weight_decay == 1e-4 and bare.lr == pytest.approx(2.0)


def test_variants_are_one_flag_apart() -> None:
    base = config_from_options(None, {"recipe": "synco-v2-deit-s"})
    as_run = config_from_options(None, {"recipe": "synco-v2-deit-s@as-run"})
    differ = {n for n in TrainConfig.field_names() if getattr(base, n) != getattr(as_run, n)}
    assert differ == {"negatives_as_run_gpus", "recipe"}
    assert base.negatives_as_run_gpus is None and as_run.negatives_as_run_gpus == 4
    # the configured window in epochs, and the one the official code ran on 4 GPUs x 128
    n = 1_281_167
    per_epoch = n // 512
    configured = resolve(base, train_size=n).window
    ran = resolve(as_run, train_size=n).window
    assert (configured.start, configured.end) == (30 * per_epoch, 101 * per_epoch)
    assert ran.start == 30 * (n // 128) - 1  # per-GPU epoch 30 of 128-image batches
    assert ran.start / per_epoch == pytest.approx(120, abs=0.05)
    assert ran.end is not None and ran.end > 300 * per_epoch  # active to the end of the run
    # every recipe built on SynCo v2 offers it; version and variant combine in any order
    for name in recipe_names():
        if recipes()[name].options.get("negatives") == "synco-v2":
            assert "as-run" in recipes()[name].variants, name
    version = recipes()["synco-v2-deit-s"].version
    for spec in (f"synco-v2-deit-s@as-run@{version}", f"synco-v2-deit-s@{version}@as-run"):
        recipe = load_recipe(spec)
        assert recipe.variant == "as-run" and recipe.label == f"synco-v2-deit-s@as-run@{version}"
    assert "negatives_as_run_gpus" not in recipe.departs or "resumed" in (
        recipe.departs["negatives_as_run_gpus"].official
    )
    with pytest.raises(ConfigError, match="has no variant 'nope' \\(its variants: as-run\\)"):
        load_recipe("synco-v2-deit-s@nope")
    with pytest.raises(ConfigError, match="at most one version"):
        load_recipe("synco-v2-deit-s@1@2")
    with pytest.raises(ConfigError, match="empty part"):
        load_recipe("synco-v2-deit-s@")


def test_recipes_show_prints_values_sources_and_departures(
    runner: CliRunner, tmp_path: Path
) -> None:
    res = runner.invoke(app, ["recipes", "show", "synco-v1-resnet50"])
    assert res.exit_code == 0, res.output
    text = res.stdout
    recipe = recipes()["synco-v1-resnet50"]
    for option, source in recipe.sources.items():
        assert any(
            line.startswith(f"{option}: ") and line.endswith(f"# {source}")
            for line in text.splitlines()
        ), option
    for departure in recipe.departs.values():
        assert f"#   {departure.what}:" in text and f"#     why: {departure.why}" in text
    assert "zero_init_residual: false" in text and "precision: fp32" in text
    # it is a config file: read back, it resolves to the recipe's values
    file = tmp_path / "shown.yaml"
    file.write_text(text)
    again = config_from_options(file, {})
    direct = config_from_options(None, {"recipe": "synco-v1-resnet50"})
    assert {n: getattr(again, n) for n in recipe.options} == {
        n: getattr(direct, n) for n in recipe.options
    }
    res = runner.invoke(app, ["recipes", "show", "synco-v2-swin-t"])
    assert "# variants, one flag away: --recipe synco-v2-swin-t@VARIANT" in res.stdout
    assert "#   @as-run: " in res.stdout
    res = runner.invoke(app, ["recipes", "show", "nope"])
    assert res.exit_code == 1 and "unknown recipe 'nope'" in res.output


def test_dry_run_shows_the_augmentation_and_the_window_in_steps_and_epochs(
    runner: CliRunner, tmp_path: Path, data_dirs: dict[str, Path]
) -> None:
    out = tmp_path / "run"
    args = ["run", "--recipe", "synco-v2-deit-s@as-run", "--dry-run", "--out", str(out)]
    args += ["--data", str(data_dirs["train"]), *TINY["vit_s_mocov3"], "--img-size", "32"]
    args += ["--batch-size", "4", "--epochs", "400"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert not out.exists()
    text = res.stdout
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert lines["augmentation"].startswith("augmentation: byol")
    assert (
        "# recipe synco-v2-deit-s@as-run@1 (synco-v2 configs/synco_vit_small.yaml:11-12"
        in (lines["augmentation"])
    )
    # 16 images, batch 4 as 4 GPUs x 1: the official epoch is 16 per-GPU steps, 4 true epochs
    assert "#   negatives_window: steps [479, 1615) = epochs [119.75, 403.75)" in text
    assert "per-GPU epochs on 4 GPUs" in text
    assert (
        "#   augmentation_view1: crop 32 px scale 0.2-1, flip p 0.5, jitter (0.4, 0.4, 0.2" in text
    )
    assert (
        "blur p 0.1 (kernel 3" in text and "solarize p 0.2  (--augmentation byol at 32 px)" in text
    )
