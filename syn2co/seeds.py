"""One way to derive seeds: a stable 63-bit seed from a key.

Every random stream that must be the same in every process, on every machine and after a
resume (a sampler's permutation of one pass, one image's augmentation at one step, a run's
weight initialisation) gets its seed from :func:`derive_seed` of a key naming what it is for.
Keys that differ in any part give unrelated seeds, so two streams never start in the same
state unless their keys are equal.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*key: int | str) -> int:
    """A seed in ``[0, 2**63)`` from a key: the BLAKE2b hash of its parts written in decimal (or
    as given, for strings) and joined by ``/``.

    Args:
        *key: What the stream is for, e.g. ``("sampler", seed, epoch, source)``.

    Returns:
        The seed, the same for the same key in every process and on every machine.

    Example:
        >>> derive_seed(0, 5, 17) == derive_seed(0, 5, 17) != derive_seed(0, 5, 18)
        True
        >>> derive_seed("weights", 0) != derive_seed("negatives", 0)
        True
    """
    text = "/".join(str(part) for part in key).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
