"""The options that make a method's preset explicit (learning rate per reference batch,
optimizer momentum, EMA schedule, augmentation), the ResNet initialisation and the design of the
generated pairs' generators: each reaches what the run builds, and a resumed run of a checkpoint
that predates them keeps training as it did."""

from __future__ import annotations

import pytest
import torch

from reference_trainer.build import build_components
from reference_trainer.config import TrainConfig
from reference_trainer.errors import ConfigError
from reference_trainer.models import create_backbone
from reference_trainer.resolve import Layer, given_layer, plan_run, resolve, resolve_options

TINY = {"arch": "deit_s", "depth": 1, "embed_dim": 32, "num_heads": 2, "proj_hidden": 32}


def test_base_lr_scales_with_the_batch_and_says_where_it_comes_from() -> None:
    plan = resolve(
        TrainConfig(base_lr=2e-3, lr_reference_batch=256, batch_size=128), train_size=512
    )
    assert plan.lr == pytest.approx(1e-3)
    assert plan.derivations()["lr"][1] == (
        "--base-lr x batch / --lr-reference-batch = 0.002 x batch 128 / 256"
    )
    assert resolve(TrainConfig(batch_size=128), train_size=512).derivations()["lr"][1] == (
        "method preset: 0.001 x batch 128 / 512"
    )
    assert resolve(TrainConfig(lr=0.5, base_lr=9.0), train_size=512).lr == 0.5  # --lr wins
    for bad, message in (
        ({"base_lr": 0.0}, "--base-lr must be > 0"),
        ({"lr_reference_batch": 0}, "--lr-reference-batch must be >= 1"),
        ({"optimizer_momentum": 1.0}, r"--optimizer-momentum must be in \[0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            resolve_options([given_layer(TrainConfig(**bad))])


def test_optimizer_momentum_and_ema_schedule_reach_what_the_run_builds() -> None:
    cfg = TrainConfig(
        **TINY, method="moby", optimizer="sgd", optimizer_momentum=0.5, ema_schedule="constant"
    )
    options = resolve_options([given_layer(cfg)])
    assert options.preset.optimizer_momentum == 0.5 and options.preset.ema_schedule == "constant"
    plan = plan_run(options, train_size=64)
    parts = build_components(
        plan, torch.device("cpu"), rank=0, world_size=1, mixing=False, amp_dtype=None
    )
    assert isinstance(parts.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.5 for g in parts.optimizer.param_groups)
    # the defaults are the method's preset: MoCo v2's constant EMA, MoBY's cosine one
    for method, schedule in (("mocov2", "constant"), ("moby", "cosine")):
        resolved = resolve_options([Layer("flags", {"method": method})])
        assert resolved.config.ema_schedule == schedule
        assert resolved.sources["ema_schedule"] == f"method preset ({method})"


def test_zero_init_residual_chooses_the_resnet_initialisation() -> None:
    def last_bn_weights(value: bool | None) -> float:
        cfg = TrainConfig(arch="resnet18", depth=1, embed_dim=8, zero_init_residual=value)
        torch.manual_seed(0)
        backbone = create_backbone(cfg)
        return float(backbone.layer1[0].bn2.weight.detach().abs().sum())  # type: ignore[index,union-attr]

    assert last_bn_weights(None) == 0.0  # timm's default
    assert last_bn_weights(True) == 0.0
    assert last_bn_weights(False) == 8.0  # torchvision's: every gamma at 1
    with pytest.raises(ConfigError, match="--zero-init-residual: deit_s is not a ResNet"):
        resolve_options([given_layer(TrainConfig(zero_init_residual=False))])


@pytest.mark.parametrize(("design", "generators"), [("shared", 1), ("twin", 2)])
def test_pair_design_builds_one_generator_or_a_pair(design: str, generators: int) -> None:
    cfg = TrainConfig(
        **TINY,
        method="simclr",
        generator="hard-pairs",
        generator_pair_design=design,  # type: ignore[arg-type]
        batch_size=8,
    )
    plan = resolve(cfg, train_size=64)
    parts = build_components(
        plan, torch.device("cpu"), rank=0, world_size=1, mixing=False, amp_dtype=None
    )
    assert parts.learned_generators is not None and parts.learned_generators.pairs is not None
    pairs = parts.learned_generators.pairs
    assert (1 if pairs.second is None else 2) == generators


def test_a_checkpoint_from_before_the_augmentation_option_keeps_byol() -> None:
    """Every method trained with BYOL's pair before --augmentation existed: a resumed MoCo v2
    run keeps it; the other options it predates take the method's preset."""
    saved = TrainConfig(method="mocov2", arch="resnet18", lr=0.03, warmup_steps=0)
    assert saved.augmentation is None and saved.ema_schedule is None
    options = resolve_options([Layer("command line", {"resume": "run"})], saved=saved)
    assert options.config.augmentation == "byol"
    assert options.config.ema_schedule == "constant" and options.config.optimizer_momentum == 0.9
    new = resolve_options([Layer("flags", {"method": "mocov2", "arch": "resnet18"})])
    assert new.config.augmentation == "mocov2"
