"""Pretraining methods as plug-ins: one file per method, one registry.

Every method is a :class:`~reference_trainer.methods.base.Method` subclass registered here
under its ``name``; ``--method NAME`` picks it and the engine runs it without knowing which it
is. Adding a method is one new file with a ``@register``-decorated class, imported below (or,
for a method that lives outside the package, imported before the run starts: see
:mod:`reference_trainer.plugins`).
"""

from __future__ import annotations

from .base import (
    BankKind,
    Direction,
    EmaSchedule,
    Embeddings,
    Heads,
    LossDirection,
    LossExtras,
    Method,
    MethodOutput,
    MethodPreset,
    MethodSettings,
    Networks,
    OptimizerKind,
    StepContext,
    SyntheticNegatives,
    WeightDecayExclude,
    head_widths,
    loss_extras,
    synthetic_negatives,
)

__all__ = [
    "METHODS",
    "BankKind",
    "Direction",
    "EmaSchedule",
    "Embeddings",
    "Heads",
    "LossDirection",
    "LossExtras",
    "Method",
    "MethodOutput",
    "MethodPreset",
    "MethodSettings",
    "Networks",
    "OptimizerKind",
    "StepContext",
    "SyntheticNegatives",
    "WeightDecayExclude",
    "get_method",
    "head_widths",
    "loss_extras",
    "method_names",
    "register",
    "synthetic_negatives",
    "unregister",
]

# The built-in methods: importing a method's module registers it.
from . import moby, mocov2, mocov3, simclr  # noqa: F401
from .registry import METHODS, get_method, method_names, register, unregister
