"""From a run's plan to the objects it trains: process group, networks, method, optimizer.

The order of construction is part of the run's reproducibility: the initial weights come from
the seed alone (identical on every rank), then the method's state (queues) from its own stream,
and only then is the global RNG moved to the per-rank stream drop-path draws from.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import TrainConfig
from .errors import ConfigError
from .heads import use_global_batch_norm
from .learned_generators import LearnedGenerators
from .methods import Method, MethodSettings
from .models import (
    Encoder,
    OnlineNetwork,
    create_backbone,
    feature_dim,
    parameter_groups,
    set_drop_path,
)
from .optim import LARS
from .resolve import RunPlan
from .seeds import Stream, stream_seed, torch_generator

__all__ = [
    "RunComponents",
    "autocast_dtype",
    "build_components",
    "build_networks",
    "build_optimizer",
    "process_group",
]


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        started = True
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on ``device``, or None for float32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def build_networks(
    cfg: TrainConfig, method: type[Method], settings: MethodSettings
) -> tuple[OnlineNetwork, Encoder | None]:
    """The online network and, for methods with one, its EMA target (a copy without
    drop-path and without grad).

    Args:
        cfg: The run's resolved options (backbone and its size).
        method: The method (its heads, target and batch-norm choices).
        settings: The method's resolved settings (head widths).
    """
    backbone = create_backbone(cfg)
    heads = method.heads(feature_dim(backbone), settings)
    if cfg.freeze_patch_embed:
        patch = getattr(backbone, "patch_embed", None)
        if patch is None:
            raise ConfigError(f"--freeze-patch-embed: {cfg.arch} has no patch_embed")
        patch.requires_grad_(False)
    encoder = Encoder(
        backbone, heads.projector, views_share_batch_norm=method.views_share_batch_norm
    )
    online = OnlineNetwork(encoder, heads.predictor)
    if not method.momentum_target:
        return online, None
    target = copy.deepcopy(online.encoder)
    set_drop_path(target, 0.0)  # MoBY: drop-path 0.2 online, 0 target
    target.requires_grad_(False)
    return online, target


def build_optimizer(
    plan: RunPlan, online: nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """The run's optimizer over the online network's trainable parameters.

    Parameters without weight decay are chosen by ``--weight-decay-exclude`` (the method's
    default: biases, norms and the backbone's ``no_weight_decay()`` names; MoCo v2's plain SGD
    decays everything); LARS also leaves them out of its layer-wise adaptation, as SimCLR's
    optimizer does by default.
    """
    cfg = plan.config
    assert cfg.weight_decay is not None and cfg.weight_decay_exclude is not None
    decay, no_decay = parameter_groups(online, cfg.weight_decay, exclude=cfg.weight_decay_exclude)
    groups = [decay, no_decay]
    momentum = plan.preset.optimizer_momentum
    if cfg.optimizer == "adamw":
        fused = device.type == "cuda"
        return torch.optim.AdamW(groups, lr=plan.lr, fused=fused, foreach=None if fused else True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=plan.lr, momentum=momentum)
    decay["lars"], no_decay["lars"] = True, False
    return LARS(groups, lr=plan.lr, momentum=momentum)


@dataclass
class RunComponents:
    """Everything a run trains or keeps, built on its device.

    Attributes:
        online: The online network (encoder + predictor).
        target: The EMA target encoder, or None for methods without one.
        method: The method and its state (queues, ...).
        optimizer: The optimizer of the online network.
        scaler: The loss scaler (active with fp16 only).
        online_step: ``online`` as the step calls it (wrapped in DDP and/or compiled).
        target_step: ``target`` as the step calls it (compiled), or None.
        learned_generators: The image generators learned with the encoder, or None.
        negatives_gen: This rank's stream of the synthetic negatives.
        params: The trainable parameters (for gradient clipping).
        batch_norm: The backbone normalises with batch statistics (a ResNet).
    """

    online: OnlineNetwork
    target: Encoder | None
    method: Method
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    online_step: nn.Module
    target_step: nn.Module | None
    learned_generators: LearnedGenerators | None
    negatives_gen: torch.Generator
    params: list[nn.Parameter]
    batch_norm: bool


def build_components(
    plan: RunPlan,
    device: torch.device,
    *,
    rank: int,
    world_size: int,
    mixing: bool,
    amp_dtype: torch.dtype | None,
) -> RunComponents:
    """Build the networks, the method, the optimizer and the generators of a run.

    Args:
        plan: The run's plan.
        device: This rank's device.
        rank: This process's rank.
        world_size: Number of ranks.
        mixing: The batches mix real and synthetic images (the banks then tag their rows).
        amp_dtype: The autocast dtype (the loss scaler is active for float16).
    """
    cfg, settings = plan.config, plan.method_settings()
    torch.manual_seed(stream_seed(cfg.seed, Stream.WEIGHTS))  # identical weights on every rank
    online, target = build_networks(cfg, plan.method, settings)
    if world_size > 1 and plan.method.global_batch_norm:  # no-op without BatchNorm2d
        use_global_batch_norm(online)
        if target is not None:
            use_global_batch_norm(target)
    online = online.to(device)
    target = target.to(device) if target is not None else None
    method = plan.method.create(
        settings,
        # tag the bank's rows by source when there is more than one (real, synthetic, generated)
        tags=mixing or cfg.generator != "none",
        generator=torch_generator(stream_seed(cfg.seed, Stream.QUEUES)),
    ).to(device)
    negatives_gen = torch_generator(stream_seed(cfg.seed, Stream.NEGATIVES, rank), device)
    torch.manual_seed(stream_seed(cfg.seed, Stream.DROP_PATH, rank))  # drop-path differs per rank
    # The drop-path stream starts one 64-bit draw in: part of the stream's definition, so that
    # a seed gives the same drop-path masks, and so the same run, in every release.
    torch.empty((), dtype=torch.int64).random_()
    # Python's global stream is saved in checkpoints too: start it from the seed, not the clock.
    random.seed(stream_seed(cfg.seed, Stream.PYTHON, rank))

    optimizer = build_optimizer(plan, online, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    model: nn.Module = online
    if world_size > 1:
        model = DistributedDataParallel(
            online,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,  # the heads' BatchNorm is already synchronised
        )
    online_step: nn.Module = model
    target_step: nn.Module | None = target
    if cfg.compile:
        online_step = torch.compile(model)  # type: ignore[assignment]
        if target is not None:
            target_step = torch.compile(target)  # type: ignore[assignment]

    learned_generators = None
    if cfg.generator != "none":
        learned_generators = LearnedGenerators(
            cfg.generator,
            image_size=cfg.img_size,
            total_steps=plan.total_steps,
            batch_fraction=cfg.generator_fraction,
            lr=cfg.generator_lr,
            temperature=settings.temperature,
            pair_design=cfg.generator_pair_design,
            seed=cfg.seed,
            rank=rank,
        ).to(device)
    return RunComponents(
        online=online,
        target=target,
        method=method,
        optimizer=optimizer,
        scaler=scaler,
        online_step=online_step,
        target_step=target_step,
        learned_generators=learned_generators,
        negatives_gen=negatives_gen,
        params=[p for p in online.parameters() if p.requires_grad],
        batch_norm=any(
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            for m in online.encoder.backbone.modules()
        ),
    )
