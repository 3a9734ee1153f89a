"""Near-duplicate detection: 64-bit difference hashes and the pairs of hashes a few bits apart.

A generator that collapses (or repeats a seed) silently ruins a synthetic set, so after
generating, every image's hash is compared with every other image of its class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..data.rgb import to_rgb

__all__ = ["HASH_BITS", "dhash", "near_duplicate_pairs"]

#: Bits of a :func:`dhash`.
HASH_BITS = 64

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: the signs of horizontal gradients of a 9x8 grayscale thumbnail.

    Row by row, bit ``8 * r + c`` is set when pixel ``(r, c + 1)`` is brighter than ``(r, c)``.
    Near-identical images have hashes a few bits apart; unrelated ones about 32 bits apart.

    Args:
        image: Any PIL image (converted to RGB, then grayscale).

    Returns:
        The hash, in ``[0, 2**64)``.
    """
    thumb = to_rgb(image).convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = np.asarray(thumb, dtype=np.int16)
    bits = pixels[:, 1:] > pixels[:, :-1]
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def _popcount(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts: npt.NDArray[np.uint8] = np.bitwise_count(x)
        return counts
    per_byte = _POPCOUNT8[np.ascontiguousarray(x).view(np.uint8)]
    summed: npt.NDArray[np.uint8] = per_byte.reshape(*x.shape, 8).sum(-1, dtype=np.uint8)
    return summed


def near_duplicate_pairs(
    hashes: Sequence[int] | npt.NDArray[np.uint64], threshold: int
) -> list[tuple[int, int, int]]:
    """Pairs of hashes at most ``threshold`` bits apart.

    Vectorised: all pairs are compared with XOR and popcount on ``uint64`` arrays, in blocks of
    rows so that memory stays near 32 MB whatever the number of hashes.

    Args:
        hashes: 64-bit hashes (:func:`dhash`).
        threshold: Largest Hamming distance reported.

    Returns:
        ``(i, j, distance)`` for every pair ``i < j`` of positions in ``hashes``.
    """
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = len(h)
    pairs: list[tuple[int, int, int]] = []
    block = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, block):
        rows = h[start : start + block]
        distance = _popcount(rows[:, None] ^ h[None, :])
        i, j = np.nonzero(distance <= threshold)
        i = i + start
        keep = j > i
        pairs.extend(
            (int(a), int(b), int(distance[a - start, b]))
            for a, b in zip(i[keep], j[keep], strict=True)
        )
    return pairs
