"""From a resolved config to the parts of a run: process group, networks, method, optimizer.

The order of construction is part of the run's reproducibility: the initial weights come from
the seed alone (identical on every rank), then the method's state (queues) from its own stream,
and only then is the global RNG moved to the per-rank stream drop-path draws from.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import Resolved
from .joint import JointGenerators
from .methods import Method
from .models import Encoder, OnlineNetwork, build_networks, parameter_groups
from .seeds import Stream, stream_seed, torch_generator

__all__ = ["Parts", "autocast_dtype", "build_optimizer", "build_parts", "process_group"]


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


def build_optimizer(
    resolved: Resolved, online: nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """The method's optimizer over the online network's trainable parameters."""
    groups = parameter_groups(online, resolved.weight_decay)
    kind = resolved.method.preset.optimizer
    if kind == "adamw":
        fused = device.type == "cuda"
        return torch.optim.AdamW(
            groups, lr=resolved.lr, fused=fused, foreach=None if fused else True
        )
    raise NotImplementedError(f"optimizer {kind!r} is not available yet")


@dataclass
class Parts:
    """Everything a run trains or keeps, built on its device.

    Attributes:
        online: The online network (encoder + predictor).
        target: The EMA target encoder, or None for methods without one.
        method: The method and its state (queues, ...).
        optimizer: The optimizer of the online network.
        scaler: The loss scaler (active with fp16 only).
        online_step: ``online`` as the step calls it (wrapped in DDP and/or compiled).
        target_step: ``target`` as the step calls it (compiled), or None.
        joint: The jointly learned generators, or None.
        negatives_gen: This rank's stream of the synthetic negatives.
        params: The trainable parameters (for gradient clipping).
    """

    online: OnlineNetwork
    target: Encoder | None
    method: Method
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    online_step: nn.Module
    target_step: nn.Module | None
    joint: JointGenerators | None
    negatives_gen: torch.Generator
    params: list[nn.Parameter]


def build_parts(
    resolved: Resolved,
    device: torch.device,
    *,
    rank: int,
    world_size: int,
    mixing: bool,
    amp_dtype: torch.dtype | None,
) -> Parts:
    """Build the networks, the method, the optimizer and the generators of a run.

    Args:
        resolved: The run's resolved config.
        device: This rank's device.
        rank: This process's rank.
        world_size: Number of ranks.
        mixing: The batches mix real and synthetic images (the banks then tag their rows).
        amp_dtype: The autocast dtype (the loss scaler is active for float16).
    """
    cfg = resolved.config
    torch.manual_seed(stream_seed(cfg.seed, Stream.WEIGHTS))  # identical weights on every rank
    online, target = build_networks(cfg, resolved.method)
    online = online.to(device)
    target = target.to(device) if target is not None else None
    method = resolved.method.create(
        resolved,
        # tag the bank's rows by source when there is more than one (real, synthetic, generated)
        tags=mixing or cfg.generator != "none",
        generator=torch_generator(stream_seed(cfg.seed, Stream.QUEUES)),
    ).to(device)
    negatives_gen = torch_generator(stream_seed(cfg.seed, Stream.NEGATIVES, rank), device)
    torch.manual_seed(stream_seed(cfg.seed, Stream.DROP_PATH, rank))  # drop-path differs per rank
    # The drop-path stream starts one 64-bit draw in, where the data loader of earlier versions
    # drew its workers' seed from it, so that their runs are reproduced draw for draw.
    torch.empty((), dtype=torch.int64).random_()
    # Python's global stream is saved in checkpoints too: start it from the seed, not the clock.
    random.seed(stream_seed(cfg.seed, Stream.PYTHON, rank))

    optimizer = build_optimizer(resolved, online, device)
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

    joint = None
    if cfg.generator != "none":
        joint = JointGenerators(
            cfg.generator,
            image_size=cfg.img_size,
            total_steps=resolved.total_steps,
            batch_fraction=cfg.generator_fraction,
            lr=cfg.generator_lr,
            temperature=resolved.temperature,
            seed=cfg.seed,
            rank=rank,
        ).to(device)
    return Parts(
        online=online,
        target=target,
        method=method,
        optimizer=optimizer,
        scaler=scaler,
        online_step=online_step,
        target_step=target_step,
        joint=joint,
        negatives_gen=negatives_gen,
        params=[p for p in online.parameters() if p.requires_grad],
    )
