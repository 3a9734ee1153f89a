"""Plug-ins from other packages: methods and dataset formats that ``syn2co-train`` loads.

A package adds a method (:func:`reference_trainer.methods.register`), a dataset format
(:func:`reference_trainer.data.register_dataset`) or a synthetic-negative strategy by
registering it when its module is imported, and names that module under the entry-point group
:data:`ENTRY_POINT_GROUP` in its ``pyproject.toml``::

    [project.entry-points."syn2co_train.plugins"]
    my-method = "my_package.my_method"

``syn2co-train`` imports every such module before it parses the command line, so the new
names are valid choices of ``--method`` and ``--dataset`` (on every rank under ``torchrun``,
which starts the same command). From Python, importing the module before calling
:func:`reference_trainer.engine.train` is enough.
"""

from __future__ import annotations

import importlib.metadata

from .errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "load_plugins"]

#: The entry-point group of syn2co-train plug-ins.
ENTRY_POINT_GROUP = "syn2co_train.plugins"


def load_plugins() -> list[str]:
    """Import every module registered under :data:`ENTRY_POINT_GROUP`; returns their names.

    Raises:
        ConfigError: A plug-in failed to import (one line naming it and the error).
    """
    loaded = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as e:  # any import-time error of third-party code, in one line
            raise ConfigError(
                f"plug-in {entry.name!r} ({entry.value}) failed to load: {type(e).__name__}: {e}"
            ) from None
        loaded.append(entry.name)
    return loaded
