"""The train/eval mode of every module of a backbone: set for a probe, restored afterwards.

A probe that runs its backbone in train mode (SynCo v2's: dropout and drop-path active) keeps
its norm layers with running statistics in eval mode, so that no buffer moves. Restoring only
the top module's mode (``backbone.train(was_training)``) would put those norm layers back in
train mode; :func:`kept_modes` restores each module's own flag instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def has_running_stats(module: nn.Module) -> bool:
    """Whether a module updates running statistics in train mode (BatchNorm, InstanceNorm with
    ``track_running_stats``, SyncBatchNorm)."""
    return isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats


def set_probe_mode(backbone: nn.Module, *, train: bool) -> None:
    """Eval mode, or train mode with the norm layers that keep running statistics in eval mode."""
    backbone.train(train)
    if train:
        for module in backbone.modules():
            if has_running_stats(module):
                module.eval()


@contextlib.contextmanager
def kept_modes(module: nn.Module) -> Iterator[None]:
    """Restore the train/eval flag of ``module`` and of each of its submodules on exit (also
    when an error interrupts)."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
