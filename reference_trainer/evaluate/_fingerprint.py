"""The fingerprint that proves a probe left its backbone unchanged."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of a module: names, dtypes, shapes and bytes.

    Two modules have the same fingerprint exactly when their named tensors are bit-identical
    (up to hash collisions). Gradients, ``requires_grad`` flags and the train/eval mode are not
    part of it.

    Args:
        module: Any module; its tensors are copied to the CPU to be hashed.

    Returns:
        The hexadecimal digest (64 characters).
    """
    digest = hashlib.sha256()
    tensors: list[tuple[str, str, Tensor]] = [("param", n, t) for n, t in module.named_parameters()]
    tensors += [("buffer", n, t) for n, t in module.named_buffers()]
    for kind, name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{kind}:{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
