"""The generators: what syn2co needs of an image generator, a small one, and their holders.

:class:`ImageGenerator` is the interface (latents in, images out); :class:`ConvGenerator` a
small DCGAN-style network for users who have none; :class:`HardSampleGenerator` and
:class:`PairGenerator` hold a generator with its latent size and batch fraction, and draw its
samples and positive pairs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import _checks as chk
from syn2co._random import draw_device

__all__ = ["ConvGenerator", "HardSampleGenerator", "ImageGenerator", "PairGenerator"]


@runtime_checkable
class ImageGenerator(Protocol):
    """What syn2co needs of an image generator: latents (B, Z) in, images (B, C, H, W) out.

    Any ``nn.Module`` with that call signature qualifies: :class:`ConvGenerator`, a GAN
    generator, or a diffusers UNet/VAE decoder wrapped by the user in a module whose
    ``forward`` takes the latent batch. Its images should be normalised like the encoder's
    inputs (the encoder sees them unchanged). A ``latent_dim`` attribute, when present, spares
    passing the latent size to :class:`HardSampleGenerator` and :class:`PairGenerator`.

    Example:
        >>> isinstance(ConvGenerator(latent_dim=8, image_size=8, width=4), ImageGenerator)
        True
    """

    def __call__(self, latent: Tensor, /) -> Tensor: ...


class ConvGenerator(nn.Module):
    """A small DCGAN-style generator: a linear map to a small grid, then doubling upsamplings.

    ``latent (B, Z) -> Linear -> (B, c0, s0, s0) -> k x [ConvTranspose 4x4 stride 2, GroupNorm,
    ReLU] -> Conv 3x3 -> tanh``, where ``image_size = s0 * 2**k`` with ``s0`` as small as
    possible but at least 4 (16 -> 4 * 2**2, 96 -> 6 * 2**4, 224 -> 7 * 2**5). Channel widths
    halve at each upsampling down to ``width`` and never exceed ``8 * width``. GroupNorm rather
    than DCGAN's BatchNorm: a sample does not depend on the rest of its batch, so pairs and hard
    samples may be generated in any batch split, and train and eval modes agree.

    The tanh output ``t`` in [-1, 1] is mapped to pixels ``p = (t + 1) / 2`` in [0, 1], then
    normalised like the encoder's inputs: ``(p - mean) / std`` per channel. The defaults
    ``mean = std = 0.5`` give outputs in [-1, 1]; pass the data's normalisation (e.g. ImageNet's)
    to feed the encoder directly.

    Args:
        latent_dim: Size Z of the latent code (>= 1).
        image_size: Side of the square output images (>= 4).
        channels: Image channels C (>= 1).
        width: Channels at the last upsampling stage (>= 1); the network grows with its square.
        mean: Per-channel mean of the normalisation, a number or C numbers.
        std: Per-channel standard deviation (> 0), a number or C numbers.

    Raises:
        TypeError: If a size is not an int or ``mean``/``std`` are not numbers.
        ValueError: If a size is out of range, ``std <= 0`` or a sequence has the wrong length.

    Example:
        >>> g = ConvGenerator(latent_dim=16, image_size=32, width=8)
        >>> x = g(torch.randn(4, 16))
        >>> x.shape, bool(x.abs().max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        latent_dim: int,
        image_size: int,
        channels: int = 3,
        *,
        width: int = 64,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim = chk.check_int("latent_dim", latent_dim, minimum=1)
        self.image_size = chk.check_int("image_size", image_size, minimum=4)
        self.channels = chk.check_int("channels", channels, minimum=1)
        width = chk.check_int("width", width, minimum=1)
        base, stages = self.image_size, 0
        while base % 2 == 0 and base // 2 >= 4:
            base, stages = base // 2, stages + 1
        self.base_size = base
        widths = [width * 2 ** min(stages - j, 3) for j in range(stages + 1)]
        self.project = nn.Linear(self.latent_dim, widths[0] * base * base)
        self.project_norm = nn.GroupNorm(math.gcd(widths[0], 8), widths[0])
        blocks: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            blocks += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.GroupNorm(math.gcd(c_out, 8), c_out),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(widths[-1], self.channels, 3, padding=1)
        self.register_buffer("mean", _per_channel("mean", mean, self.channels), persistent=False)
        self.register_buffer(
            "std", _per_channel("std", std, self.channels, positive=True), persistent=False
        )

    def forward(self, latent: Tensor) -> Tensor:
        """Images of shape (B, C, image_size, image_size) from latents of shape (B, Z).

        Args:
            latent: Latent codes, shape (B, Z).

        Returns:
            Normalised images ``((tanh(.) + 1) / 2 - mean) / std``, shape (B, C, H, W).

        Example:
            >>> ConvGenerator(4, 16, channels=1, width=4)(torch.zeros(2, 4)).shape
            torch.Size([2, 1, 16, 16])
        """
        chk.check_embeddings("latent", latent, "(B, Z)", sizes={1: ("Z", self.latent_dim)})
        b = latent.shape[0]
        h = self.project(latent).view(b, -1, self.base_size, self.base_size)
        h = self.blocks(F.relu(self.project_norm(h)))
        pixels = (torch.tanh(self.to_image(h)) + 1.0) / 2.0
        mean, std = self.mean.to(pixels.dtype), self.std.to(pixels.dtype)
        return (pixels - mean[:, None, None]) / std[:, None, None]


class _LatentSource(nn.Module):
    """Shared part of the generator holders: latent size, batch fraction, latent sampling."""

    def __init__(self, latent_dim: int | None, batch_fraction: float, *gens: object) -> None:
        super().__init__()
        for i, g in enumerate(gens):
            if not isinstance(g, nn.Module):
                name = "generator" if i == 0 else "second"
                raise TypeError(
                    f"{name}: expected an nn.Module mapping latents (B, Z) to images "
                    f"(B, C, H, W), got {type(g).__name__}"
                )
        if latent_dim is None:
            found = getattr(gens[0], "latent_dim", None)
            if isinstance(found, bool) or not isinstance(found, int):
                raise ValueError(
                    "latent_dim: expected an int >= 1 (the generator has no int attribute "
                    "latent_dim to take it from), got None"
                )
            latent_dim = found
        self.latent_dim = chk.check_int("latent_dim", latent_dim, minimum=1)
        self.batch_fraction = chk.check_number("batch_fraction", batch_fraction, low=0.0)

    def count(self, batch_size: int) -> int:
        """Generated items for a real batch: ``round(batch_fraction * batch_size)``.

        At least 1 when the fraction and the batch are both non-zero.

        Args:
            batch_size: Size of the real batch (>= 0).

        Returns:
            The number of items to generate.

        Example:
            >>> HardSampleGenerator(ConvGenerator(4, 8, width=4), batch_fraction=0.25).count(10)
            3
        """
        batch_size = chk.check_int("batch_size", batch_size, minimum=0)
        n = math.floor(self.batch_fraction * batch_size + 0.5)
        return max(n, 1) if self.batch_fraction > 0 and batch_size > 0 else n

    def device(self) -> torch.device:
        """The device of the generator's parameters (CPU when it has none).

        Example:
            >>> HardSampleGenerator(ConvGenerator(4, 8, width=4)).device()
            device(type='cpu')
        """
        for t in self.parameters():
            return t.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def latents(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` standard normal latent codes of shape (n, Z) on the generator's device.

        Args:
            n: Number of codes (>= 1).
            generator: Random stream; the codes are drawn on its device, then moved.

        Returns:
            Tensor of shape (n, Z), float32.

        Example:
            >>> g = HardSampleGenerator(ConvGenerator(4, 8, width=4))
            >>> g.latents(3, generator=torch.Generator().manual_seed(0)).shape
            torch.Size([3, 4])
        """
        n = chk.check_int("n", n, minimum=1)
        chk.check_generator("generator", generator)
        device = draw_device(generator, self.device())
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return z.to(self.device())

    def _generate(self, module: ImageGenerator, latent: Tensor, name: str) -> Tensor:
        out = module(latent)
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != latent.shape[0]:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{name}: expected an image batch of shape (B, C, H, W) with "
                f"B={latent.shape[0]}, got {got}"
            )
        return out

    def _check_latent(self, name: str, latent: object) -> Tensor:
        return chk.check_embeddings(name, latent, "(B, Z)", sizes={1: ("Z", self.latent_dim)})


class HardSampleGenerator(_LatentSource):
    """The hard-sample generator and its optimizer-independent configuration.

    Holds the image generator (its parameters and ``state_dict``), the latent size and the
    fraction of a real batch to add as generated samples. Train it with
    :func:`hard_sample_loss` in :func:`generator_step`; feed its detached samples to the
    encoder with :func:`encoder_inputs`.

    Args:
        generator: An ``nn.Module`` satisfying :class:`ImageGenerator`.
        latent_dim: Latent size Z; taken from ``generator.latent_dim`` when None.
        batch_fraction: Generated samples per real sample (>= 0), see :meth:`count`.

    Raises:
        TypeError: If ``generator`` is not an ``nn.Module``.
        ValueError: If the latent size is unknown or a number is out of range.

    Example:
        >>> g = HardSampleGenerator(ConvGenerator(8, 16, width=4), batch_fraction=0.5)
        >>> g.sample(g.count(8), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 16, 16])
    """

    def __init__(
        self,
        generator: ImageGenerator,
        *,
        latent_dim: int | None = None,
        batch_fraction: float = 0.25,
    ) -> None:
        super().__init__(latent_dim, batch_fraction, generator)
        self.generator = generator

    def forward(self, latent: Tensor) -> Tensor:
        """Images (B, C, H, W) from latent codes (B, Z), with gradient to the generator.

        Example:
            >>> HardSampleGenerator(ConvGenerator(4, 8, width=4))(torch.zeros(2, 4)).shape
            torch.Size([2, 3, 8, 8])
        """
        latent = self._check_latent("latent", latent)
        return self._generate(self.generator, latent, "generator")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from fresh standard normal latents (with gradient to the generator).

        Args:
            n: Number of images (>= 1).
            generator: Random stream of the latents.

        Returns:
            Tensor of shape (n, C, H, W).

        Example:
            >>> HardSampleGenerator(ConvGenerator(4, 8, width=4)).sample(2).shape
            torch.Size([2, 3, 8, 8])
        """
        images: Tensor = self(self.latents(n, generator=generator))
        return images


class PairGenerator(_LatentSource):
    """Two similar but distinct images from one shared base code: a hard positive pair.

    Codes ``z_a = base + s * e_a`` and ``z_b = base + s * e_b`` with ``base, e_a, e_b ~ N(0, I)``
    and a spread ``s``; images ``x_a = G_a(z_a)``, ``x_b = G_b(z_b)``. Two designs:

    * **One generator** (``second=None``, the default): ``G_a = G_b = G`` and the pair differs
      only through the spread (default 0.5, must not be 0). Half the parameters; both images are
      made in one call, so they come from the same network state.
    * **Two generators** (``second`` given, the paper's "pair of generators"): ``G_a != G_b``
      share the base code (default spread 0, so ``z_a = z_b = base``) and differ through their
      weights. Pass ``copy.deepcopy(generator)`` as ``second`` to start from identical images
      (similarity 1) and let :func:`positive_pair_loss` pull them apart.

    With ``learn_spread=True`` the spread is a parameter (trained by the pair loss along with
    the generators): a direct knob for how far apart the two codes are. Otherwise a buffer.

    Args:
        generator: An ``nn.Module`` satisfying :class:`ImageGenerator` (``G_a``).
        second: Optional second generator ``G_b`` of the same output shape.
        latent_dim: Latent size Z; taken from ``generator.latent_dim`` when None.
        spread: The noise scale ``s``; None picks 0.5 with one generator and 0 with two.
        learn_spread: Whether ``s`` is trained.
        batch_fraction: Generated pairs per real sample (>= 0), see :meth:`count`.

    Raises:
        TypeError: If a generator is not an ``nn.Module`` or ``spread`` is not a number.
        ValueError: If the latent size is unknown, or ``spread == 0`` with one generator.

    Example:
        >>> pairs = PairGenerator(ConvGenerator(8, 16, width=4), spread=0.3)
        >>> a, b = pairs.sample(4, generator=torch.Generator().manual_seed(0))
        >>> a.shape, bool((a != b).any())
        (torch.Size([4, 3, 16, 16]), True)
    """

    spread: Tensor

    def __init__(
        self,
        generator: ImageGenerator,
        second: ImageGenerator | None = None,
        *,
        latent_dim: int | None = None,
        spread: float | None = None,
        learn_spread: bool = True,
        batch_fraction: float = 0.25,
    ) -> None:
        gens: tuple[object, ...] = (generator,) if second is None else (generator, second)
        super().__init__(latent_dim, batch_fraction, *gens)
        if spread is None:
            spread = 0.5 if second is None else 0.0
        s = chk.check_number("spread", spread)
        if second is None and s == 0.0:
            raise ValueError(
                "spread: expected a non-zero number with a single generator (the two codes "
                "would be equal and so would the two images), got 0"
            )
        self.generator = generator
        self.second = second
        value = torch.tensor(s, dtype=torch.float32)
        if learn_spread:
            self.spread = nn.Parameter(value)
        else:
            self.register_buffer("spread", value)

    def codes(
        self,
        base: Tensor,
        noise: tuple[Tensor, Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The two latent codes ``base + s * e_a`` and ``base + s * e_b``.

        Args:
            base: Shared base codes, shape (B, Z).
            noise: ``(e_a, e_b)``, each (B, Z); drawn from ``generator`` when None.
            generator: Random stream of the noise (on its own device; moved to ``base``'s).

        Returns:
            ``(z_a, z_b)``, each of shape (B, Z), with gradient to the spread.

        Example:
            >>> pairs = PairGenerator(ConvGenerator(4, 8, width=4), spread=0.5)
            >>> z = torch.zeros(1, 4)
            >>> za, zb = pairs.codes(z, (torch.ones(1, 4), -torch.ones(1, 4)))
            >>> za.tolist(), zb.tolist()
            ([[0.5, 0.5, 0.5, 0.5]], [[-0.5, -0.5, -0.5, -0.5]])
        """
        base = self._check_latent("base", base)
        if noise is None:
            chk.check_generator("generator", generator)
            device = draw_device(generator, base.device)
            e = torch.randn(2, *base.shape, generator=generator, device=device).to(base)
            e_a, e_b = e[0], e[1]
        else:
            if not isinstance(noise, tuple | list) or len(noise) != 2:
                raise TypeError(f"noise: expected a pair of tensors (e_a, e_b), got {noise!r}")
            e_a, e_b = (
                chk.check_embeddings(
                    f"noise[{i}]",
                    t,
                    "(B, Z)",
                    sizes={0: ("B", base.shape[0]), 1: ("Z", base.shape[1])},
                )
                for i, t in enumerate(noise)
            )
        s = self.spread.to(base.dtype)
        return base + s * e_a, base + s * e_b

    def forward(
        self,
        base: Tensor,
        noise: tuple[Tensor, Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The pair of images ``(x_a, x_b)`` from shared base codes, each (B, C, H, W).

        Args:
            base: Shared base codes, shape (B, Z).
            noise: ``(e_a, e_b)``, each (B, Z); drawn from ``generator`` when None.
            generator: Random stream of the noise.

        Returns:
            Two image batches of shape (B, C, H, W), with gradient to the generator(s) and the
            spread.

        Example:
            >>> pairs = PairGenerator(ConvGenerator(4, 8, width=4))
            >>> [x.shape[0] for x in pairs(torch.zeros(3, 4))]
            [3, 3]
        """
        z_a, z_b = self.codes(base, noise, generator=generator)
        if self.second is None:
            both = self._generate(self.generator, torch.cat([z_a, z_b]), "generator")
            x_a, x_b = both.chunk(2)
            return x_a, x_b
        x_a = self._generate(self.generator, z_a, "generator")
        x_b = self._generate(self.second, z_b, "second")
        if x_a.shape != x_b.shape:
            raise ValueError(
                f"second: expected images of the first generator's shape {tuple(x_a.shape)}, "
                f"got {tuple(x_b.shape)}"
            )
        return x_a, x_b

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` pairs from fresh base codes and noise, all drawn from ``generator``.

        Args:
            n: Number of pairs (>= 1).
            generator: Random stream of the base codes and the noise.

        Returns:
            ``(x_a, x_b)``, each of shape (n, C, H, W).

        Example:
            >>> a, b = PairGenerator(ConvGenerator(4, 8, width=4)).sample(2)
            >>> a.shape == b.shape
            True
        """
        base = self.latents(n, generator=generator)
        pair: tuple[Tensor, Tensor] = self(base, generator=generator)
        return pair


def _per_channel(
    name: str, value: float | Sequence[float], channels: int, *, positive: bool = False
) -> Tensor:
    values = [value] * channels if isinstance(value, int | float) else list(value)
    if isinstance(value, bool) or not values or len(values) != channels:
        raise ValueError(
            f"{name}: expected a number or {channels} numbers (one per channel), got {value!r}"
        )
    checked = [
        chk.check_number(f"{name}[{i}]", v, low=0.0 if positive else None, low_open=positive)
        for i, v in enumerate(values)
    ]
    return torch.tensor(checked, dtype=torch.float32)
