"""The registry of synthetic-negative types: one ordered mapping of name to record.

Its records are :class:`~syn2co.negatives.Strategy` objects, added and removed by
:func:`~syn2co.negatives.register_strategy` and :func:`~syn2co.negatives.unregister_strategy`
in :mod:`syn2co.negatives.strategy`, which also registers the six built-in types. They are typed
``object`` here: :class:`~syn2co.negatives.NegativeSpec` checks its counts against the names,
and a Strategy's hooks take a NegativeSpec, so a registry that named Strategy would make the two
modules import each other.
"""

from __future__ import annotations

# Strategy records by name, in registration order: the order in which they draw from the
# generator and sit on the M axis.
REGISTRY: dict[str, object] = {}
