"""Pretraining methods as plug-ins: one file per method, one registry.

Every method is a :class:`~reference_trainer.methods.base.Method` subclass registered here
under its ``name``; ``--method NAME`` picks it and the engine runs it without knowing which it
is. Adding a method is one new file with a ``@register``-decorated class, imported below (or,
for a method that lives outside the package, imported before the run starts).
"""

from __future__ import annotations

from .base import (
    BankKind,
    Direction,
    Embeddings,
    Heads,
    Method,
    MethodOutput,
    MethodPreset,
    OptimizerKind,
    StepContext,
)

__all__ = [
    "METHODS",
    "BankKind",
    "Direction",
    "Embeddings",
    "Heads",
    "Method",
    "MethodOutput",
    "MethodPreset",
    "OptimizerKind",
    "StepContext",
    "get_method",
    "method_names",
    "register",
]

# The built-in methods: importing a method's module registers it.
from . import moby, mocov3  # noqa: F401
from .registry import METHODS, get_method, method_names, register
