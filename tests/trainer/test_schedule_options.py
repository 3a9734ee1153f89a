"""The synthetic negatives' window in epochs, the warmup in epochs and the learning-rate ends,
and the weight-decay groups of --weight-decay-exclude on tiny ViT and Swin backbones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import ConfigError
from reference_trainer.models import create_backbone, parameter_groups
from reference_trainer.resolve import given_layer, resolve, resolve_options

from .conftest import tiny_run


def check_options(cfg: TrainConfig) -> None:
    """Validate a config's options as a run would, before reading any data."""
    resolve_options([given_layer(cfg)])


SYNCO = TrainConfig(negatives="synco-v2", negatives_start_epoch=30, negatives_end_epoch=101)


def test_epoch_window_maps_to_global_steps_independent_of_ranks() -> None:
    cfg = SYNCO.updated({"batch_size": 512, "epochs": 300})
    windows = {
        world: resolve(cfg, train_size=1_281_167, world_size=world).window for world in (1, 2, 4)
    }
    assert len(set(windows.values())) == 1  # global steps: the same on any number of ranks
    window = windows[1]
    steps_per_epoch = 1_281_167 // 512  # 2502
    assert (window.start, window.end) == (30 * 2502, (101 * 2502))
    assert window.active(30 * steps_per_epoch) and not window.active(30 * steps_per_epoch - 1)
    assert window.active(101 * steps_per_epoch - 1) and not window.active(101 * steps_per_epoch)


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_as_run_window_is_the_official_codes_per_gpu_epoch(gpus: int) -> None:
    """The official code: k = steps since start + 1 at the loss, its epoch k // (N // B_gpu),
    active while 30 <= epoch <= 100; checked at every step of a whole (small) run."""
    n, batch = 1000, 64
    cfg = SYNCO.updated({"batch_size": batch, "epochs": 300, "negatives_as_run_gpus": gpus})
    resolved = resolve(cfg, train_size=n)
    per_gpu_steps = n // (batch // gpus)
    for step in range(resolved.total_steps):
        official = 30 <= (step + 1) // per_gpu_steps <= 100
        assert resolved.window.active(step) == official, step
    if gpus == 4:  # the window never ends within the run
        assert resolved.window.active(resolved.total_steps - 1)
    # ImageNet-1K, batch 512 as 4 x 128: the configured epochs 30-100 fall at about 120-300
    imagenet = SYNCO.updated({"batch_size": 512, "epochs": 300, "negatives_as_run_gpus": 4})
    window = resolve(imagenet, train_size=1_281_167).window
    assert window.start == 30 * (1_281_167 // 128) - 1
    assert window.start / (1_281_167 // 512) == pytest.approx(120, abs=0.1)


def test_step_window_and_forms_are_checked() -> None:
    assert resolve(TrainConfig(negatives_start=5), train_size=640).window.start == 5
    assert resolve(TrainConfig(), train_size=640).window.start == 0
    with pytest.raises(ConfigError, match="either --negatives-start or --negatives-start-epoch"):
        check_options(TrainConfig(negatives_start=1, negatives_start_epoch=1.0))
    with pytest.raises(ConfigError, match="either --negatives-end or --negatives-end-epoch"):
        TrainConfig().updated({"negatives_end": 9, "negatives_end_epoch": 2})
    with pytest.raises(ConfigError, match="--negatives-end-epoch must be larger"):
        check_options(TrainConfig(negatives_start_epoch=5, negatives_end_epoch=5))
    with pytest.raises(ConfigError, match="--negatives-as-run-gpus reads the epoch window"):
        check_options(TrainConfig(negatives_as_run_gpus=4))
    with pytest.raises(ConfigError, match="divides --batch-size 64"):
        check_options(SYNCO.updated({"negatives_as_run_gpus": 3}))


def test_warmup_epochs_and_learning_rate_ends() -> None:
    cfg = TrainConfig(
        epochs=10, warmup_epochs=2, warmup_lr_fraction=0.0005, min_lr_fraction=0.005, lr=1e-3
    )
    r = resolve(cfg, train_size=64 * 50)
    assert r.warmup_steps == 100 and r.total_steps == 500
    assert r.warmup_lr == pytest.approx(5e-7) and r.min_lr == pytest.approx(5e-6)
    assert r.config.warmup_epochs == 2 and r.config.warmup_steps is None  # kept as given
    with pytest.raises(ConfigError, match=r"--warmup-epochs 20.0 \(1000 steps\) exceeds"):
        resolve(cfg.updated({"warmup_epochs": 20}), train_size=64 * 50)
    with pytest.raises(ConfigError, match="--min-lr-fraction must be in"):
        check_options(TrainConfig(min_lr_fraction=2.0))


def _groups(model: torch.nn.Module, exclude: str) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay, rest = parameter_groups(model, 0.05, exclude=exclude)
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    return {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in rest["params"]}


VIT_MATRICES = {
    "patch_embed.proj.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.proj.weight",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc2.weight",
}
VIT_1D = {
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
}


@pytest.mark.parametrize("arch", ["deit_s", "vit_s_mocov3"])
def test_weight_decay_groups_of_a_tiny_vit(arch: str) -> None:
    model = create_backbone(TrainConfig(arch=arch, img_size=32, depth=1, embed_dim=32, num_heads=4))
    tokens = {"cls_token", "pos_embed"} if arch == "deit_s" else {"cls_token"}  # mocov3: frozen
    assert _groups(model, "1d") == (VIT_MATRICES | tokens, VIT_1D)
    assert _groups(model, "1d+no-weight-decay") == (VIT_MATRICES, VIT_1D | tokens)
    assert _groups(model, "none") == (VIT_MATRICES | VIT_1D | tokens, set())


def test_weight_decay_groups_of_a_tiny_swin() -> None:
    model = create_backbone(
        TrainConfig(arch="swin_t", img_size=32, depth=1, embed_dim=16, num_heads=1)
    )
    tables = {f"layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(4)}
    matrices = {"patch_embed.proj.weight"}
    ones = {"patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"}
    ones |= {"norm.weight", "norm.bias"}
    for i in range(4):
        block = f"layers.{i}.blocks.0"
        matrices |= {f"{block}.{m}.weight" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
        ones |= {f"{block}.{m}.bias" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
        ones |= {f"{block}.norm{j}.{k}" for j in (1, 2) for k in ("weight", "bias")}
        if i:
            matrices.add(f"layers.{i}.downsample.reduction.weight")
            ones |= {f"layers.{i}.downsample.norm.{k}" for k in ("weight", "bias")}
    assert _groups(model, "1d") == (matrices | tables, ones)
    assert _groups(model, "1d+no-weight-decay") == (matrices, ones | tables)
    assert _groups(model, "none") == (matrices | tables | ones, set())


def test_epoch_window_is_the_same_after_a_resume(tmp_path: Path, runner: CliRunner) -> None:
    """96 images at batch 16: 6 steps per epoch, so epochs 0.5 to 1.5 are steps 3 to 8."""
    window = ["--negatives", "synco-v2", "--negatives-start-epoch", "0.5"]
    window += ["--negatives-end-epoch", "1.5", "--steps", "10"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out, stop in ((straight, []), (resumed, ["--stop-at", "4"])):
        res = runner.invoke(app, tiny_run(out, *window, *stop, "--log-every", "1"))
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", "--resume", str(resumed), "--out", str(resumed)])
    assert res.exit_code == 0, res.output
    flags = {}
    for out in (straight, resumed):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        flags[out] = [json.loads(line)["synthetic_negatives"] for line in lines]
    assert flags[straight] == [False] * 3 + [True] * 6 + [False]
    assert flags[resumed] == flags[straight]


# --------------------------------------------------------------------------------------------
# What an epoch is: one pass over the sources a run draws from
# --------------------------------------------------------------------------------------------


def test_epoch_images_count_the_sources_a_run_draws_from() -> None:
    from reference_trainer.data.pipeline import drawn_sources, epoch_images

    real = TrainConfig()
    synthetic_only = TrainConfig(synthetic_data="s", synthetic_fraction=1.0)
    mixed = TrainConfig(synthetic_data="s", synthetic_fraction=0.6)
    cases = {
        "real": (real, (True, False), 40),
        "synthetic only": (synthetic_only, (False, True), 60),
        "mixed": (mixed, (True, True), 100),
        "scheduled into synthetic only": (
            synthetic_only.updated(
                {
                    "synthetic_fraction": 0.0,
                    "synthetic_fraction_end": 1.0,
                    "synthetic_schedule": "linear",
                }
            ),
            (True, True),
            100,
        ),
        "scheduled, synthetic only throughout": (
            synthetic_only.updated({"synthetic_fraction_end": 1.0, "synthetic_schedule": "cosine"}),
            (False, True),
            60,
        ),
    }
    for what, (cfg, sources, images) in cases.items():
        assert drawn_sources(cfg) == sources, what
        assert epoch_images(cfg, real=40, synthetic=60) == images, what


def test_a_synthetic_only_run_with_real_data_for_evaluation_counts_its_epoch_in_synthetic_images(
    tmp_path: Path,
) -> None:
    """40 real + 60 synthetic images: with --synthetic-fraction 1.0 an epoch is the 60
    synthetic images (the real ones, given for evaluation, are never drawn); mixed, all 100."""
    from reference_trainer.data.pipeline import build_train_data

    from .conftest import write_image_folder

    real = write_image_folder(tmp_path / "real", classes=2, per_class=20)
    synthetic = write_image_folder(tmp_path / "synthetic", classes=3, per_class=20)
    base = TrainConfig(dataset="imagefolder", data=str(real), synthetic_data=str(synthetic))
    sizes = {}
    for fraction in (1.0, 0.5):
        cfg = base.updated({"synthetic_fraction": fraction, "batch_size": 10, "epochs": 2})
        data = build_train_data(cfg, rank=0, world_size=1)
        sizes[fraction] = data.train_size
        plan = resolve(cfg, train_size=data.train_size)
        assert plan.steps_per_epoch == data.train_size // 10
        assert plan.total_steps == 2 * plan.steps_per_epoch
    assert sizes == {1.0: 60, 0.5: 100}
