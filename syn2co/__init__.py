"""syn2co: self-supervised learning with synthetic data.

Modules:
    negatives: the hard pool and six strategies for synthetic hard negatives.
    losses: InfoNCE, MoCo v3 and MoBY losses that take synthetic negatives.
    queue: the FIFO bank of negatives.
    samplers: real/synthetic batch mixing with exact per-batch composition.
    distributed: collective helpers, no-ops without a process group.
    schedules: cosine schedules and active windows in steps.
    seeds: one stable seed derivation for every seeded stream.
    generators: the learned hard-sample and hard-pair generators.
    diagnostics: how hard the negatives are, as plain floats to log.
"""

from syn2co._checks import NonFiniteError, set_value_checks, value_checks

__all__ = ["NonFiniteError", "__version__", "set_value_checks", "value_checks"]
__version__ = "0.1.0"
