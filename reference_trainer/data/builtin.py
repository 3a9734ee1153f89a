"""A procedural dataset of shapes and patterns, generated on the fly, for download-free demos.

Each image shows one shape or pattern (the class) drawn with foreground and background colours
picked at random from a shared palette (independent of the class, so the mean colour says little
about it), random scale, position, rotation and phase, an optional colour-gradient background,
a few small distractor shapes in other colours, and pixel noise. Images are drawn at twice the
target side (for sides up to 128 px) and box-downsampled, which antialiases edges.

Image ``i`` depends only on ``(seed, split, i, img_size)``: every call, every instance and every
DataLoader worker produces the same pixels, whatever the access order (each item seeds its own
``random.Random`` from :func:`syn2co.seeds.derive_seed` of the key; the global RNGs are
untouched). The ``split`` is
folded into the seed, so the train and val splits hold different images. Pixels are stable for
given NumPy and Pillow versions (the fixed noise tiles come from NumPy's generator).

Speed (one core of the 2-core CI-like machine): 5,500 to 8,400 images/s at 32 px, 3,800 at 64 px,
1,800 at 96 px and 1,300 at 224 px.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops, ImageDraw

from reference_trainer.data.base import ImageDataset, LoadedImage, check_index
from syn2co.seeds import derive_seed

__all__ = ["SHAPE_CLASSES", "ProceduralShapes"]

#: Names of all available classes, in label order; ``num_classes`` takes the first ones.
SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "stripes",
    "checkerboard",
    "dots",
    "spiral",
    "ellipse",
    "crescent",
)

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_NOISE_MARGIN = 64
_MIN_COLOUR_DISTANCE = 90.0

_Colour = tuple[int, int, int]
_Points = list[tuple[float, float]]
_Mask = npt.NDArray[np.bool_]


class _Grid:
    """Pixel-centre coordinates of a ``side x side`` canvas, cached per side and process."""

    def __init__(self, side: int) -> None:
        coords = np.arange(side, dtype=np.float32) + 0.5
        self.x: npt.NDArray[np.float32] = np.broadcast_to(coords[None, :], (side, side))
        self.y: npt.NDArray[np.float32] = np.broadcast_to(coords[:, None], (side, side))


_GRIDS: dict[int, _Grid] = {}
_GRADIENTS: dict[int, list[Image.Image]] = {}
_NOISE: dict[int, list[Image.Image]] = {}
_GRADIENT_DIRECTIONS = 32
_NOISE_SIGMAS = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def _grid(side: int) -> _Grid:
    grid = _GRIDS.get(side)
    if grid is None:
        grid = _GRIDS[side] = _Grid(side)
    return grid


def _gradients(side: int) -> list[Image.Image]:
    """Linear ramps 0..255 ("L" images) in ``_GRADIENT_DIRECTIONS`` directions, per side."""
    ramps = _GRADIENTS.get(side)
    if ramps is None:
        g = _grid(side)
        ramps = []
        for k in range(_GRADIENT_DIRECTIONS):
            a = 2 * math.pi * k / _GRADIENT_DIRECTIONS
            t = g.x * np.float32(math.cos(a)) + g.y * np.float32(math.sin(a))
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            ramps.append(Image.fromarray(np.rint(255 * t).astype(np.uint8), "L"))
        _GRADIENTS[side] = ramps
    return ramps


def _noise_tiles(side: int) -> list[Image.Image]:
    """Fixed Gaussian-noise tiles, one per level of ``_NOISE_SIGMAS``, stored as RGB images
    ``128 + sigma * N(0, 1)`` of side ``side + _NOISE_MARGIN`` (added with offset -128)."""
    tiles = _NOISE.get(side)
    if tiles is None:
        n = side + _NOISE_MARGIN
        unit = np.random.default_rng(20240917 + side).standard_normal((n, n, 3), np.float32)
        tiles = [
            Image.fromarray(np.clip(np.rint(128 + sigma * unit), 0, 255).astype(np.uint8), "RGB")
            for sigma in _NOISE_SIGMAS
        ]
        _NOISE[side] = tiles
    return tiles


# Foreground and background colours come from a shared palette rather than the whole RGB cube:
# with a unique colour pair per image, contrastive instance discrimination learns colour
# (hue jitter of 0.1 barely disturbs it) and ignores shape; with a palette many images share
# a colour pair, so telling instances apart takes shape, while colour still says nothing about
# the class. Measured on 2,000 images, 300 MoBY steps, a 2-block ViT: kNN top-1 10.4 -> 13.8 %
# with unique colours, 14.8 -> 22.2 % with the palette (random init -> trained).
_PALETTE: tuple[_Colour, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
    (128, 128, 128),
)


def _random_colour(rng: random.Random) -> _Colour:
    return _PALETTE[rng.randrange(len(_PALETTE))]


def _distinct_colour(rng: random.Random, other: _Colour) -> _Colour:
    """A random colour at least ``_MIN_COLOUR_DISTANCE`` away from ``other`` in RGB."""
    while True:
        c = _random_colour(rng)
        if math.dist(c, other) >= _MIN_COLOUR_DISTANCE:
            return c


def _rotate(points: _Points, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]


def _regular(n: int, radius: float, phase: float = 0.0) -> _Points:
    return [
        (
            radius * math.cos(phase + 2 * math.pi * k / n),
            radius * math.sin(phase + 2 * math.pi * k / n),
        )
        for k in range(n)
    ]


class _Painter:
    """Draws one class into a binary mask of a ``side x side`` canvas (``side`` = drawing size)."""

    def __init__(self, rng: random.Random, side: int) -> None:
        self.rng = rng
        self.side = side
        self.mask_image = Image.new("L", (side, side), 0)
        self.draw = ImageDraw.Draw(self.mask_image)

    # Object classes: a centre, a size and a rotation.

    def _place(self, lo: float = 0.24, hi: float = 0.44) -> tuple[float, float, float, float]:
        """Random (cx, cy, radius, angle) keeping most of the object inside the canvas."""
        s, rng = self.side, self.rng
        r = s * rng.uniform(lo, hi)
        margin = 0.75 * r
        cx = rng.uniform(margin, s - margin)
        cy = rng.uniform(margin, s - margin)
        return cx, cy, r, rng.uniform(0.0, 2 * math.pi)

    def _polygon(self, local: _Points, cx: float, cy: float, angle: float) -> None:
        self.draw.polygon(_rotate(local, angle, cx, cy), fill=255)

    def _disk(self, cx: float, cy: float, r: float, fill: int = 255) -> None:
        self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)

    def circle(self) -> None:
        cx, cy, r, _ = self._place()
        self._disk(cx, cy, r)

    def square(self) -> None:
        cx, cy, r, a = self._place()
        self._polygon(_regular(4, r), cx, cy, a)

    def triangle(self) -> None:
        cx, cy, r, a = self._place(0.28, 0.48)
        self._polygon(_regular(3, r), cx, cy, a)

    def star(self) -> None:
        cx, cy, r, a = self._place(0.3, 0.48)
        inner = r * self.rng.uniform(0.38, 0.5)
        pts = [
            ((r if k % 2 == 0 else inner) * math.cos(math.pi * k / 5),
             (r if k % 2 == 0 else inner) * math.sin(math.pi * k / 5))
            for k in range(10)
        ]  # fmt: skip
        self._polygon(pts, cx, cy, a)

    def cross(self) -> None:
        cx, cy, r, a = self._place(0.3, 0.48)
        w = r * self.rng.uniform(0.22, 0.32)
        pts = [
            (-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w),
            (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w),
        ]  # fmt: skip
        self._polygon(pts, cx, cy, a)

    def ring(self) -> None:
        cx, cy, r, _ = self._place()
        self._disk(cx, cy, r)
        self._disk(cx, cy, r * self.rng.uniform(0.45, 0.68), fill=0)

    def ellipse(self) -> None:
        cx, cy, r, a = self._place(0.3, 0.48)
        b = r * self.rng.uniform(0.32, 0.55)
        pts = [(r * math.cos(t), b * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 32)]
        self._polygon(pts, cx, cy, a)

    def crescent(self) -> None:
        cx, cy, r, a = self._place()
        self._disk(cx, cy, r)
        off = r * self.rng.uniform(0.35, 0.6)
        self._disk(
            cx + off * math.cos(a), cy + off * math.sin(a), r * self.rng.uniform(0.8, 1.0), 0
        )

    def spiral(self) -> None:
        cx, cy, r, a = self._place(0.32, 0.48)
        turns = self.rng.uniform(1.8, 2.8)
        width = max(1, round(self.side * self.rng.uniform(0.035, 0.06)))
        direction = 1.0 if self.rng.random() < 0.5 else -1.0
        n = 48
        pts: _Points = []
        for k in range(n + 1):
            t = k / n
            rad = r * (0.08 + 0.92 * t)
            phi = a + direction * turns * 2 * math.pi * t
            pts.append((cx + rad * math.cos(phi), cy + rad * math.sin(phi)))
        self.draw.line(pts, fill=255, width=width, joint="curve")

    # Pattern classes fill the frame: a period, a rotation and a phase.

    def _rotated_coords(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        g, rng = _grid(self.side), self.rng
        a = rng.uniform(0.0, math.pi)
        ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
        u = g.x * ca + g.y * sa + np.float32(rng.uniform(0.0, self.side))
        v = g.y * ca - g.x * sa + np.float32(rng.uniform(0.0, self.side))
        return u, v

    def stripes(self) -> _Mask:
        half = self.side * self.rng.uniform(0.06, 0.14)
        u, _ = self._rotated_coords()
        out: _Mask = np.floor(u / np.float32(half)).astype(np.int32) % 2 == 0
        return out

    def checkerboard(self) -> _Mask:
        cell = self.side * self.rng.uniform(0.1, 0.2)
        u, v = self._rotated_coords()
        c = np.float32(cell)
        out: _Mask = (np.floor(u / c) + np.floor(v / c)).astype(np.int32) % 2 == 0
        return out

    def dots(self) -> _Mask:
        period = self.side * self.rng.uniform(0.18, 0.3)
        radius = period * self.rng.uniform(0.22, 0.34)
        u, v = self._rotated_coords()
        p = np.float32(period)
        du = np.mod(u, p) - p / 2
        dv = np.mod(v, p) - p / 2
        out: _Mask = du * du + dv * dv < np.float32(radius * radius)
        return out

    def paint(self, name: str) -> Image.Image:
        """Draw class ``name`` and return its mask, an "L" or "1" image of the canvas size."""
        method: Callable[[], _Mask | None] = getattr(self, name)
        mask = method()
        if mask is None:
            return self.mask_image
        return Image.fromarray(mask)


def _background(rng: random.Random, side: int, colour: _Colour) -> Image.Image:
    """A solid colour, or (half of the time) a linear gradient from ``colour`` to a nearby one
    in one of ``_GRADIENT_DIRECTIONS`` directions."""
    start = Image.new("RGB", (side, side), colour)
    if rng.random() < 0.5:
        return start
    ramp = _gradients(side)[rng.randrange(_GRADIENT_DIRECTIONS)]
    end_colour = tuple(min(255, max(0, c + rng.randint(-70, 70))) for c in colour)
    return Image.composite(Image.new("RGB", (side, side), end_colour), start, ramp)


def _distractors(rng: random.Random, image: Image.Image, avoid: tuple[_Colour, _Colour]) -> None:
    """Draw 0 to 3 small shapes (dots, bars, short lines) in colours unlike fg and bg."""
    draw = ImageDraw.Draw(image)
    s = image.width
    for _ in range(rng.randint(0, 3)):
        colour = _distinct_colour(rng, avoid[rng.randrange(2)])
        size = s * rng.uniform(0.04, 0.1)
        x, y = rng.uniform(0, s), rng.uniform(0, s)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x - size, y - size, x + size, y + size), fill=colour)
        elif kind == 1:
            draw.rectangle((x - size, y - size / 2, x + size, y + size / 2), fill=colour)
        else:
            a = rng.uniform(0, 2 * math.pi)
            length = 2.5 * size
            end = (x + length * math.cos(a), y + length * math.sin(a))
            draw.line([(x, y), end], fill=colour, width=max(1, round(s * 0.025)))


class ProceduralShapes(ImageDataset):
    """Map-style procedural dataset of shapes and patterns (see the module docstring).

    Args:
        num_samples: Number of items (the dataset's length).
        img_size: Side of the square RGB images, in pixels (any size >= 8).
        seed: Base seed; with ``split`` and the index it fixes every image.
        num_classes: How many of :data:`SHAPE_CLASSES` to use (2 to 12); labels are balanced,
            ``label = index % num_classes``.
        split: ``"train"``, ``"val"`` or ``"test"``; each split draws different images.

    Items are :class:`LoadedImage` ``(image, label, skipped=())`` with a ``PIL.Image`` of mode
    ``RGB`` and size ``(img_size, img_size)``.
    """

    def __init__(
        self,
        num_samples: int,
        img_size: int = 32,
        *,
        seed: int = 0,
        num_classes: int = 10,
        split: str = "train",
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {img_size}")
        if not 2 <= num_classes <= len(SHAPE_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(SHAPE_CLASSES)}], got {num_classes}")
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
        self.num_samples = int(num_samples)
        self.img_size = int(img_size)
        self.seed = int(seed)
        self.split = split
        self.classes = SHAPE_CLASSES[:num_classes]
        self._supersample = 2 if img_size <= 128 else 1

    def __len__(self) -> int:
        return self.num_samples

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """Labels of all items, shape ``(num_samples,)``."""
        return np.arange(self.num_samples, dtype=np.int64) % self.num_classes

    def _rng(self, index: int) -> random.Random:
        return random.Random(derive_seed("builtin", self.seed, self.split, index))

    def render(self, index: int) -> Image.Image:
        """The RGB image of item ``index`` (without bounds check against ``num_samples``)."""
        rng = self._rng(index)
        name = self.classes[index % self.num_classes]
        side = self.img_size * self._supersample

        bg_colour = _random_colour(rng)
        fg_colour = _distinct_colour(rng, bg_colour)
        image = _background(rng, side, bg_colour)
        image.paste(fg_colour, (0, 0, side, side), _Painter(rng, side).paint(name))
        _distractors(rng, image, (fg_colour, bg_colour))
        if self._supersample > 1:
            image = image.reduce(self._supersample)

        level = rng.randrange(len(_NOISE_SIGMAS) + 1)  # the last level means no noise
        if level < len(_NOISE_SIGMAS):
            n = self.img_size
            ox, oy = rng.randrange(_NOISE_MARGIN), rng.randrange(_NOISE_MARGIN)
            noise = _noise_tiles(n)[level].crop((ox, oy, ox + n, oy + n))
            image = ImageChops.add(image, noise, scale=1.0, offset=-128)
        return image

    def __getitem__(self, index: int) -> LoadedImage:
        """Item ``index``: ``LoadedImage(image (RGB, img_size x img_size), label, ())``."""
        i = check_index(index, self.num_samples)
        return LoadedImage(self.render(i), i % self.num_classes, ())

    def __repr__(self) -> str:
        return (
            f"ProceduralShapes(num_samples={self.num_samples}, img_size={self.img_size}, "
            f"seed={self.seed}, num_classes={self.num_classes}, split={self.split!r})"
        )
