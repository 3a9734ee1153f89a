"""One device resolver for every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str, *, option: str = "--device") -> torch.device:
    """The device a ``--device`` value names, checked against this machine.

    ``auto`` is this process's GPU when CUDA is available (``LOCAL_RANK`` under torchrun), else
    the CPU; a bare ``cuda`` is also this process's GPU.

    Raises:
        ConfigError: Not a device, or CUDA asked for on a machine without it.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {name}: CUDA is not available on this machine (use cpu)")
    if name == "cuda":  # a bare "cuda" means this rank's GPU
        device = torch.device("cuda", local_rank)
    return device
