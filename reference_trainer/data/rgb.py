"""Any image PIL opens, as 8-bit RGB: the one conversion behind every path that decodes images.

``PIL.Image.convert("RGB")`` alone is wrong for high bit depths: it clips a 16-bit grey value
to 255 instead of scaling it, so a 16-bit PNG comes out nearly white. :func:`to_rgb` scales
those modes by their range and lets PIL convert the others:

==========================  ====================================================================
mode                        becomes
==========================  ====================================================================
``RGB``                     itself
``1``, ``L``                grey repeated over R, G and B (``1``: 0 or 255)
``I;16``, ``I;16L/B/N``     grey ``round(v * 255 / 65535)`` (16-bit PNG, TIFF, PGM)
``I``                       grey ``round(v * 255 / 65535)``, clipped to [0, 255]: PIL opens
                            16-bit PGM/PPM files (any maxval, rescaled to 65535) as ``I``
``F``                       grey ``round(v * 255)``, clipped: floats in [0, 1], as float TIFFs
                            and float tensors hold them (NaN becomes 0)
``P``, ``PA``               the palette colours (through RGBA, so palette transparency works)
``LA``, ``La``, ``RGBA``,   the colour channels; alpha is dropped (premultiplied ``La``/``RGBa``
``RGBa``                    are un-premultiplied first), as torchvision and timm loaders do
``CMYK``                    ``(255 - c) * (255 - k) / 255`` per channel (PIL's conversion;
                            PIL already inverts Adobe CMYK JPEGs on decoding)
``YCbCr``, ``LAB``, ``HSV``  PIL's colour conversion
==========================  ====================================================================

16-bit colour PNGs are opened by PIL as 8-bit ``RGB``/``RGBA`` already (the high byte of each
sample), so they need nothing here.
"""

from __future__ import annotations

from typing import IO

import numpy as np
from PIL import Image

__all__ = ["open_rgb", "to_rgb"]

#: Full-scale value of the single-channel modes that hold more than 8 bits.
_FULL_SCALE: dict[str, float] = {
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB (see the module's table of modes).

    Args:
        image: A PIL image of any mode.

    Returns:
        An ``RGB`` image of the same size; ``image`` itself when it is already ``RGB``.

    Raises:
        ValueError: PIL cannot convert the mode to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    full_scale = _FULL_SCALE.get(mode)
    if full_scale is not None:
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        grey = np.clip(np.rint(values * 255.0 / full_scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")  # a palette with transparency needs RGBA first
    elif mode == "La":
        image = image.convert("LA")  # PIL has no direct La -> RGB
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"image mode {mode!r} cannot be converted to RGB ({exc})") from None


def open_rgb(source: str | IO[bytes]) -> Image.Image:
    """Open, fully decode and convert an image file (a path or a binary file) to 8-bit RGB.

    Args:
        source: A file path, or a binary file object positioned at the image's start.

    Returns:
        An ``RGB`` image that no longer needs the file.

    Raises:
        Exception: Whatever PIL raises for an unreadable file (``OSError``,
            ``PIL.UnidentifiedImageError``, ``SyntaxError``, ...) or :func:`to_rgb`'s
            ``ValueError``.
    """
    with Image.open(source) as opened:
        opened.load()
        rgb = to_rgb(opened)
        return opened.copy() if rgb is opened else rgb
