"""Float32 regions: autocast switched off on a device, wherever that can be done.

syn2co computes its similarities, logits and synthetic negatives in float32 whatever autocast
region the caller is in. The meta device has no autocast (``torch.autocast("meta")`` raises),
so there the region is a plain block: meta tensors only carry shapes.
"""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which autocast is off on ``device`` (a plain block on the meta device).

    Example:
        >>> with autocast_off(torch.device("meta")):
        ...     x = torch.ones(2, device="meta") * 2
    """
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)
