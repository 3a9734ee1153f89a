"""Jointly learned generators of hard samples and hard positive pairs.

After "Synthetic Data Can Also Teach: Synthesizing Effective Data for Unsupervised Visual
Representation Learning" (Wu, Wang, Zeng, Shi and Hu, AAAI 2023, arXiv:2202.06464). Two
kinds of synthetic data are learned *with* the encoder rather than generated once, offline:

* **Hard samples.** A generator ascends the encoder's contrastive loss on its own samples (the
  InfoNCE of two views of each generated image, :func:`in_batch_info_nce`), while a fidelity
  term keeps the samples close to the data (:func:`feature_matching_loss`, and optionally a
  discriminator, :func:`generator_adversarial_loss`). The objective is
  :func:`hard_sample_loss`; the encoder then trains on the samples as extra data.
* **Hard positive pairs.** A :class:`PairGenerator` makes two similar but distinct images from
  one shared base code; :func:`positive_pair_loss` moves the cosine similarity of the encoder's
  embeddings of the two towards a target that :func:`pair_similarity_schedule` lowers over
  training, so the positives get harder. The encoder uses each pair as an extra positive pair.

The min-max is trained by alternating updates, each with its gradient path made explicit:

* generator step (:func:`generator_step`): the encoder is evaluated with its parameters frozen
  (:func:`frozen`) and the gradient is taken with respect to the generator's parameters only,
  so the encoder's ``.grad`` stays ``None``;
* encoder step (:func:`encoder_inputs`, :func:`shared_negatives`): the generated images are
  detached before they join the encoder's batch, so the generator receives nothing.

Each side has its own optimizer, so their step sizes are set independently. A single-pass
alternative (one backward for both sides) puts :func:`scale_grad` with a negative scale between
the generator and the encoder: the encoder descends the loss and the generator ascends it at
``|scale|`` times the rate (a gradient-reversal layer).

Shipped generator: :class:`ConvGenerator`, a small DCGAN-style network for users who have none;
any ``nn.Module`` that maps a latent batch (B, Z) to images (B, C, H, W) can take its place
(:class:`ImageGenerator`), e.g. a diffusers decoder wrapped by the user.

Numerics: similarities and losses are computed in float32 with autocast disabled, whatever the
input dtype, like :mod:`syn2co.losses`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import _checks as chk
from syn2co._random import draw_device
from syn2co.losses import info_nce
from syn2co.schedules import cosine_schedule, linear_schedule

__all__ = [
    "ConvGenerator",
    "HardSampleGenerator",
    "ImageGenerator",
    "PairGenerator",
    "discriminator_loss",
    "encoder_inputs",
    "feature_matching_loss",
    "frozen",
    "generator_adversarial_loss",
    "generator_step",
    "hard_sample_loss",
    "in_batch_info_nce",
    "pair_similarity",
    "pair_similarity_schedule",
    "positive_pair_loss",
    "scale_grad",
    "shared_negatives",
]

ScheduleKind = Literal["cosine", "linear"]


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Objectives (pure)
# --------------------------------------------------------------------------------------------


def in_batch_info_nce(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    *,
    temperature: float = 0.2,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> Tensor:
    """The encoder's contrastive loss on two views of one batch, gradient to every embedding.

    Row ``i`` of view a has its positive at row ``i`` of view b and the other ``B - 1`` rows of
    view b as negatives; symmetric (the mean of both directions). Composed with
    :func:`syn2co.losses.info_nce` through precomputed similarities, which keep their gradient,
    so a generator ascending this loss is pushed through positives *and* negatives. With
    identical embeddings everywhere it is exactly ``log(B)``.

    Args:
        encoder_out_a: Embeddings of the first view, shape (B, D), B >= 2.
        encoder_out_b: Embeddings of the second view, shape (B, D).
        temperature: tau > 0.
        tau_plus: Debiasing class prior (0 = off), see :func:`syn2co.losses.negative_log_mass`.
        beta: Hard-negative concentration (0 = off).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If shapes disagree, B < 2 or an option is out of range.

    Example:
        >>> x = torch.ones(8, 4)
        >>> round(in_batch_info_nce(x, x).item(), 5) == round(math.log(8), 5)
        True
    """
    chk.check_embeddings("encoder_out_a", encoder_out_a, "(B, D)")
    b, d = encoder_out_a.shape
    chk.check_embeddings("encoder_out_b", encoder_out_b, "(B, D)", dim=d, sizes={0: ("B", b)})
    chk.check_same_device("encoder_out_b", encoder_out_b, "encoder_out_a", encoder_out_a)
    if b < 2:
        raise ValueError(
            f"encoder_out_a: expected shape (B, D) with B >= 2 (in-batch negatives), got ({b}, {d})"
        )
    chk.check_number("temperature", temperature, low=0.0, low_open=True)
    with torch.autocast(device_type=encoder_out_a.device.type, enabled=False):
        a = F.normalize(encoder_out_a.float(), dim=-1)
        k = F.normalize(encoder_out_b.float(), dim=-1)
        off = ~torch.eye(b, dtype=torch.bool, device=a.device)
        sim = a @ k.T  # (B, B): rows view a, columns view b
        total = a.new_zeros(())
        for q, p, s in ((a, k, sim), (k, a, sim.T)):
            negatives = s[off].view(b, b - 1)
            total = total + info_nce(
                q,
                p,
                negative_similarity=negatives,
                temperature=temperature,
                tau_plus=tau_plus,
                beta=beta,
            )
    return total / 2.0


def feature_matching_loss(
    fake_features: Tensor,
    real_features: Tensor,
    *,
    mean_weight: float = 1.0,
    covariance_weight: float = 1.0,
) -> Tensor:
    """Match the mean and covariance of generated features to those of real ones.

    Both inputs are flattened to (N, F) and (M, F): encoder embeddings (B, D), or images
    (B, C, H, W) for a pixel-statistics match. With ``mu`` the per-feature means and ``S`` the
    unbiased covariances::

        loss = mean_weight * mean_F((mu_fake - mu_real)**2)
             + covariance_weight * mean_{F x F}((S_fake - S_real)**2)

    The covariance term never forms an F x F matrix when F exceeds N + M: it is computed from
    Gram matrices, ``|A^T A - B^T B|^2 = |A A^T|^2 + |B B^T|^2 - 2 |A B^T|^2`` (Frobenius), with
    ``A, B`` the centred rows over ``sqrt(N - 1)``, ``sqrt(M - 1)``. The real features are
    constants (detached): the gradient reaches the generated ones.

    Args:
        fake_features: Generated features, shape (N, ...) (N >= 2 for the covariance).
        real_features: Real features, shape (M, ...) with the same trailing shape.
        mean_weight: Weight of the mean term (>= 0).
        covariance_weight: Weight of the covariance term (>= 0).

    Returns:
        Scalar float32 loss, 0 when both sets have the same mean and covariance.

    Raises:
        ValueError: If trailing shapes differ, a set is too small or a weight is negative.

    Example:
        >>> real = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
        >>> feature_matching_loss(real, real).item() < 1e-10
        True
        >>> feature_matching_loss(real + 1.0, real, covariance_weight=0.0).item()
        1.0
    """
    fake = chk.check_float("fake_features", fake_features)
    real = chk.check_float("real_features", real_features)
    mw = chk.check_number("mean_weight", mean_weight, low=0.0)
    cw = chk.check_number("covariance_weight", covariance_weight, low=0.0)
    if fake.ndim < 2 or fake.numel() == 0:
        raise ValueError(
            f"fake_features: expected a non-empty tensor of shape (N, ...), got {tuple(fake.shape)}"
        )
    if real.ndim != fake.ndim or real.shape[1:] != fake.shape[1:] or real.numel() == 0:
        trailing = ", ".join(str(s) for s in fake.shape[1:])
        raise ValueError(
            f"real_features: expected shape (M, {trailing}) (the trailing shape of "
            f"fake_features), got {tuple(real.shape)}"
        )
    chk.check_same_device("real_features", real, "fake_features", fake)
    n, m = fake.shape[0], real.shape[0]
    if cw > 0 and min(n, m) < 2:
        name = "fake_features" if n < 2 else "real_features"
        raise ValueError(
            f"{name}: expected at least 2 rows for the covariance term "
            f"(or covariance_weight=0), got {min(n, m)}"
        )
    chk.check_finite(("fake_features", fake), ("real_features", real))
    with torch.autocast(device_type=fake.device.type, enabled=False):
        x = fake.float().reshape(n, -1)
        y = real.detach().float().reshape(m, -1)
        f = x.shape[1]
        mu_x, mu_y = x.mean(0), y.mean(0)
        loss = mw * (mu_x - mu_y).pow(2).mean()
        if cw > 0:
            a = (x - mu_x) / math.sqrt(n - 1)
            c = (y - mu_y) / math.sqrt(m - 1)
            if f <= n + m:
                cov = (a.T @ a - c.T @ c).pow(2).sum()
            else:
                cov = (
                    (a @ a.T).pow(2).sum() + (c @ c.T).pow(2).sum() - 2 * (a @ c.T).pow(2).sum()
                ).clamp(min=0.0)
            loss = loss + cw * cov / (f * f)
    return loss


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating GAN loss of the generator: ``mean(-log sigmoid(D(G(z))))``.

    Computed as ``softplus(-logits)``, stable for any logit. The discriminator ``D`` is the
    user's; it gives one logit per generated image ("real" is positive).

    Args:
        fake_logits: Discriminator logits of generated images, shape (B,) or (B, 1).

    Returns:
        Scalar float32 loss, ``log 2`` at logit 0.

    Example:
        >>> round(generator_adversarial_loss(torch.zeros(4)).item(), 6) == round(math.log(2), 6)
        True
    """
    logits = _check_logits("fake_logits", fake_logits)
    return F.softplus(-logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's GAN loss: ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))``.

    For the optional discriminator of the fidelity term; compute ``fake_logits`` from
    *detached* generated images so the discriminator step leaves the generator alone.

    Args:
        real_logits: Logits of real images, shape (M,) or (M, 1).
        fake_logits: Logits of generated images, shape (B,) or (B, 1).

    Returns:
        Scalar float32 loss, ``2 log 2`` when every logit is 0.

    Example:
        >>> round(discriminator_loss(torch.zeros(3), torch.zeros(2)).item(), 5)
        1.38629
    """
    real = _check_logits("real_logits", real_logits)
    fake = _check_logits("fake_logits", fake_logits)
    chk.check_same_device("fake_logits", fake, "real_logits", real)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def hard_sample_loss(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    *,
    temperature: float = 0.2,
    fake_features: Tensor | None = None,
    real_features: Tensor | None = None,
    discriminator_logits: Tensor | None = None,
    contrastive_weight: float = 1.0,
    fidelity_weight: float = 1.0,
    adversarial_weight: float = 1.0,
) -> Tensor:
    """The hard-sample generator's objective (to minimise): hard for the encoder, close to data.

    ::

        loss = - contrastive_weight * in_batch_info_nce(a, b)         (ascend the encoder's loss)
               + fidelity_weight    * feature_matching_loss(fake, real)      (if real given)
               + adversarial_weight * generator_adversarial_loss(logits)     (if logits given)

    ``a`` and ``b`` are the encoder's embeddings of two views of the same generated samples.
    Minimising it makes samples on which the current encoder's contrastive loss is high (Wu et
    al. 2023), while the fidelity terms keep them near the data distribution.

    Args:
        encoder_out_a: Encoder embeddings of the first view of the generated samples, (B, D).
        encoder_out_b: Encoder embeddings of the second view, (B, D).
        temperature: tau > 0 of the contrastive term.
        fake_features: Features of the generated samples for the fidelity term, (N, ...);
            defaults to ``cat([encoder_out_a, encoder_out_b])`` when ``real_features`` is given.
        real_features: Features of a real batch in the same space, (M, ...). None: no
            feature-matching term.
        discriminator_logits: Discriminator logits of the generated samples, (B,). None: no
            adversarial term.
        contrastive_weight: Weight of the (negated) contrastive term, >= 0.
        fidelity_weight: Weight of the feature-matching term, >= 0.
        adversarial_weight: Weight of the non-saturating GAN term, >= 0.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``fake_features`` comes without ``real_features``, a weight is negative
            or ``temperature <= 0``, or a shape is wrong.

    Example:
        >>> a = torch.ones(8, 4)
        >>> round(hard_sample_loss(a, a).item(), 5) == round(-math.log(8), 5)
        True
        >>> loss = hard_sample_loss(a, a, real_features=torch.randn(16, 4), fidelity_weight=0.5)
    """
    cw = chk.check_number("contrastive_weight", contrastive_weight, low=0.0)
    fw = chk.check_number("fidelity_weight", fidelity_weight, low=0.0)
    aw = chk.check_number("adversarial_weight", adversarial_weight, low=0.0)
    if fake_features is not None and real_features is None:
        raise ValueError(
            "real_features: expected a tensor of real features to match fake_features against, "
            "got None"
        )
    chk.check_finite(("encoder_out_a", encoder_out_a), ("encoder_out_b", encoder_out_b))
    loss = -cw * in_batch_info_nce(encoder_out_a, encoder_out_b, temperature=temperature)
    if real_features is not None:
        fake = fake_features
        if fake is None:
            fake = torch.cat([encoder_out_a, encoder_out_b])
        loss = loss + fw * feature_matching_loss(fake, real_features)
    if discriminator_logits is not None:
        loss = loss + aw * generator_adversarial_loss(discriminator_logits)
    return loss


def pair_similarity(encoder_out_a: Tensor, encoder_out_b: Tensor) -> Tensor:
    """Mean cosine similarity of matching rows, float32, with gradient.

    Args:
        encoder_out_a: Embeddings of the first images of the pairs, shape (B, D).
        encoder_out_b: Embeddings of the second images, shape (B, D).

    Returns:
        Scalar tensor in [-1, 1].

    Example:
        >>> pair_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).item()
        0.7071067690849304
    """
    return _cosines(encoder_out_a, encoder_out_b).mean()


def positive_pair_loss(
    encoder_out_a: Tensor,
    encoder_out_b: Tensor,
    target_similarity: float,
    *,
    per_pair: bool = False,
) -> Tensor:
    """Move the similarity of generated positive pairs towards a target (Wu et al. 2023).

    ``(mean_i cos(a_i, b_i) - target)**2`` by default: the *average* similarity is held at the
    target, and its gradient moves it towards the target from above and below alike. With
    ``per_pair=True``, ``mean_i (cos(a_i, b_i) - target)**2`` holds every pair there (it also
    penalises the spread of similarities, which may bias the mean). Lower the target over
    training with :func:`pair_similarity_schedule` for harder positives.

    Args:
        encoder_out_a: Encoder embeddings of the first images of the pairs, (B, D).
        encoder_out_b: Encoder embeddings of the second images, (B, D).
        target_similarity: Target cosine similarity in [-1, 1].
        per_pair: Square each pair's error rather than the mean's.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If the target is outside [-1, 1] or shapes disagree.

    Example:
        >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> positive_pair_loss(a, b, 0.5).item()
        0.25
    """
    t = chk.check_number("target_similarity", target_similarity, low=-1.0, high=1.0)
    cos = _cosines(encoder_out_a, encoder_out_b)
    if per_pair:
        return (cos - t).pow(2).mean()
    return (cos.mean() - t).pow(2)


def pair_similarity_schedule(
    step: int,
    total_steps: int,
    start: float = 0.9,
    end: float = 0.5,
    kind: ScheduleKind = "cosine",
) -> float:
    """The target similarity of generated positive pairs at ``step``: harder over training.

    ``kind="cosine"``: :func:`syn2co.schedules.cosine_schedule` from ``start`` to ``end``;
    ``kind="linear"``: :func:`syn2co.schedules.linear_schedule`. ``end`` from ``total_steps``
    on. Counted in optimizer steps, like every schedule of syn2co.

    Args:
        step: Current optimizer step (>= 0).
        total_steps: Step at which the target reaches ``end`` (>= 1).
        start: Target at step 0, in [-1, 1].
        end: Final target, in [-1, 1].
        kind: "cosine" or "linear".

    Returns:
        The target as a float in [-1, 1].

    Raises:
        TypeError: If a step is not an int or a value not a number.
        ValueError: If a value is out of range or ``kind`` is unknown.

    Example:
        >>> pair_similarity_schedule(0, 100), pair_similarity_schedule(100, 100)
        (0.9, 0.5)
        >>> round(pair_similarity_schedule(50, 100, kind="linear"), 6)
        0.7
    """
    start = chk.check_number("start", start, low=-1.0, high=1.0)
    end = chk.check_number("end", end, low=-1.0, high=1.0)
    chk.check_choice("kind", kind, ("cosine", "linear"))
    if kind == "cosine":
        return cosine_schedule(step, total_steps, start, end)
    return linear_schedule(step, total_steps, start, end)


# --------------------------------------------------------------------------------------------
# Gradient paths
# --------------------------------------------------------------------------------------------


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass.

    Between a generator and an encoder it sets the generator's step size relative to the
    encoder's when both are trained by one backward pass: ``scale=-1`` is a gradient-reversal
    layer (the generator *ascends* what the encoder descends), ``scale=-0.1`` does so at a tenth
    of the rate, ``scale=0`` stops the gradient (like ``detach``, but keeping the graph).

    Args:
        x: Any tensor.
        scale: Finite gradient multiplier (may be negative or zero).

    Returns:
        A tensor equal to ``x``.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_grad(x, -0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    chk.check_tensor("x", x)
    s = chk.check_number("scale", scale)
    out: Tensor = _ScaleGrad.apply(x, s)
    return out


@contextlib.contextmanager
def frozen(*modules: nn.Module, restore_buffers: bool = False) -> Iterator[None]:
    """Evaluate ``modules`` with their parameters frozen; restore each flag on exit.

    Inside, every parameter has ``requires_grad=False``, so a forward pass through the modules
    still carries the gradient to their *inputs* (e.g. generated images) but records nothing
    for their parameters, whose ``.grad`` stays untouched. Unlike ``torch.no_grad`` the graph to
    the inputs is kept. Each parameter's own flag is restored, also after an exception.

    Buffers are not parameters: a BatchNorm in training mode still updates its running
    statistics inside. ``restore_buffers=True`` copies every buffer back on exit; run the
    backward pass inside the block then, as autograd checks that saved buffers are unchanged.

    Args:
        *modules: The modules to freeze (shared parameters are handled once).
        restore_buffers: Restore the modules' buffers (e.g. BatchNorm statistics) on exit.

    Raises:
        TypeError: If an argument is not an ``nn.Module``.

    Example:
        >>> enc = nn.Linear(4, 2)
        >>> x = torch.ones(1, 4, requires_grad=True)
        >>> with frozen(enc):
        ...     enc(x).sum().backward()
        >>> enc.weight.grad is None, enc.weight.requires_grad, x.grad is not None
        (True, True, True)
    """
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"modules[{i}]: expected an nn.Module, got {type(m).__name__}")
    params = _unique(p for m in modules for p in m.parameters())
    flags = [p.requires_grad for p in params]
    buffers = _unique(b for m in modules for b in m.buffers()) if restore_buffers else []
    saved = [b.detach().clone() for b in buffers]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, v in zip(buffers, saved, strict=True):
                b.copy_(v)


def generator_step(
    objective: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    frozen_modules: nn.Module | Sequence[nn.Module] = (),
    restore_buffers: bool = False,
) -> Tensor:
    """One generator update with the encoder frozen: only the optimizer's parameters move.

    ``objective()`` runs inside :func:`frozen` over ``frozen_modules`` (the encoder) and returns
    the generator's loss (e.g. :func:`hard_sample_loss` or :func:`positive_pair_loss`). The
    gradient is taken with ``torch.autograd.grad`` with respect to the optimizer's parameters
    only and written to their ``.grad`` (replacing what was there), then ``optimizer.step()``.
    No other tensor's ``.grad`` is written, even for modules not listed as frozen; freezing
    them also spares computing their weight gradients.

    Args:
        objective: Closure computing the scalar loss to minimise from the generator's samples.
        optimizer: The generator's optimizer (its parameters are the ones updated).
        frozen_modules: The encoder module(s) evaluated inside ``objective``.
        restore_buffers: Also restore their buffers (BatchNorm statistics), see :func:`frozen`.

    Returns:
        The loss, detached.

    Raises:
        ValueError: If the loss is not a scalar with gradient to the optimizer's parameters, or
            a frozen module shares parameters with the optimizer.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> gen = HardSampleGenerator(ConvGenerator(8, 8, width=4))
        >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        >>> opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
        >>> def objective():
        ...     x = gen.sample(8)
        ...     views = (x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x))
        ...     return hard_sample_loss(encoder(views[0]), encoder(views[1]))
        >>> loss = generator_step(objective, opt, frozen_modules=encoder)
        >>> all(p.grad is None for p in encoder.parameters())
        True
    """
    if not callable(objective):
        raise TypeError(f"objective: expected a callable returning a loss, got {objective!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    modules = (frozen_modules,) if isinstance(frozen_modules, nn.Module) else tuple(frozen_modules)
    params = _unique(p for g in optimizer.param_groups for p in g["params"] if p.requires_grad)
    if not params:
        raise ValueError("optimizer: expected parameters that require grad, got none")
    own = {id(p) for p in params}
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"frozen_modules[{i}]: expected an nn.Module, got {type(m).__name__}")
        if any(id(p) in own for p in m.parameters()):
            raise ValueError(
                f"frozen_modules[{i}]: expected a module sharing no parameters with the "
                "optimizer (it would be frozen and trained at once), got a shared one"
            )
    # The backward runs inside: BatchNorm's backward reads the buffers restored on exit.
    with frozen(*modules, restore_buffers=restore_buffers):
        loss = objective()
        chk.check_tensor("objective()", loss)
        if loss.ndim != 0 or not loss.requires_grad:
            raise ValueError(
                "objective(): expected a scalar loss with gradient to the optimizer's "
                f"parameters, got shape {tuple(loss.shape)} with requires_grad={loss.requires_grad}"
            )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    return loss.detach()


def encoder_inputs(
    view_a: Tensor,
    view_b: Tensor,
    *,
    samples: tuple[Tensor, Tensor] | None = None,
    pairs: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The encoder step's two view batches: real rows, then the generated rows, detached.

    Rows ``[0, B)`` are the real views, unchanged; then the two views of each generated hard
    sample (``samples``), then each generated positive pair (``pairs``: image a as view a,
    image b as view b). Every generated row is detached, so the encoder's loss sends no gradient
    to the generator. Any contrastive loss over the batch (:func:`syn2co.losses.info_nce`,
    :func:`~syn2co.losses.moco_v3_loss`, :func:`~syn2co.losses.moby_loss`) then treats the
    hard samples as extra samples (negatives of every other row) and the pairs as extra
    positive pairs.

    Args:
        view_a: First views of the real batch, shape (B, ...) (images or embeddings).
        view_b: Second views, same shape.
        samples: Two views of the generated hard samples, each (N, ...).
        pairs: The generated positive pairs, each (P, ...).

    Returns:
        ``(view_a, view_b)`` of shape (B + N + P, ...) each.

    Raises:
        ValueError: If trailing shapes or devices disagree.

    Example:
        >>> g = torch.ones(2, 3, requires_grad=True)
        >>> a, b = encoder_inputs(torch.zeros(4, 3), torch.zeros(4, 3), samples=(g, g))
        >>> a.shape, a.requires_grad
        (torch.Size([6, 3]), False)
    """
    chk.check_float("view_a", view_a)
    chk.check_float("view_b", view_b)
    if view_b.shape != view_a.shape:
        raise ValueError(
            f"view_b: expected the shape of view_a {tuple(view_a.shape)}, got {tuple(view_b.shape)}"
        )
    rows_a, rows_b = [view_a], [view_b]
    for name, extra in (("samples", samples), ("pairs", pairs)):
        if extra is None:
            continue
        if not isinstance(extra, tuple | list) or len(extra) != 2:
            raise TypeError(f"{name}: expected a pair of tensors, got {type(extra).__name__}")
        for i, t in enumerate(extra):
            chk.check_float(f"{name}[{i}]", t)
            if t.shape[1:] != view_a.shape[1:] or t.ndim != view_a.ndim:
                trailing = ", ".join(str(s) for s in view_a.shape[1:])
                raise ValueError(
                    f"{name}[{i}]: expected shape (N, {trailing}) (the rows of view_a), "
                    f"got {tuple(t.shape)}"
                )
            chk.check_same_device(f"{name}[{i}]", t, "view_a", view_a)
        if extra[0].shape[0] != extra[1].shape[0]:
            raise ValueError(
                f"{name}[1]: expected {extra[0].shape[0]} rows (as {name}[0]), "
                f"got {extra[1].shape[0]}"
            )
        rows_a.append(extra[0].detach().to(view_a.dtype))
        rows_b.append(extra[1].detach().to(view_b.dtype))
    return torch.cat(rows_a), torch.cat(rows_b)


def shared_negatives(generated: Tensor, batch_size: int) -> Tensor:
    """Embeddings of generated samples as every query's extra negatives, detached.

    An expanded (no-copy) view for the ``extra_negatives`` argument of
    :func:`syn2co.losses.info_nce`, :func:`~syn2co.losses.moco_v3_loss` or
    :func:`~syn2co.losses.moby_loss`: the encoder learns to push its queries away from the
    generated hard samples, and the generator receives no gradient.

    Args:
        generated: Embeddings of the generated samples, shape (M, D).
        batch_size: Number B of queries.

    Returns:
        Tensor of shape (B, M, D).

    Example:
        >>> q, gen = torch.ones(4, 8), torch.ones(3, 8)
        >>> loss = info_nce(q, q, extra_negatives=shared_negatives(gen, 4))
        >>> round(loss.item(), 4) == round(math.log(4), 4)
        True
    """
    chk.check_embeddings("generated", generated, "(M, D)")
    b = chk.check_int("batch_size", batch_size, minimum=1)
    return generated.detach().unsqueeze(0).expand(b, -1, -1)


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


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


def _cosines(a: Tensor, b: Tensor) -> Tensor:
    chk.check_embeddings("encoder_out_a", a, "(B, D)")
    n, d = a.shape
    chk.check_embeddings("encoder_out_b", b, "(B, D)", dim=d, sizes={0: ("B", n)})
    chk.check_same_device("encoder_out_b", b, "encoder_out_a", a)
    chk.check_finite(("encoder_out_a", a), ("encoder_out_b", b))
    with torch.autocast(device_type=a.device.type, enabled=False):
        return F.cosine_similarity(a.float(), b.float(), dim=-1)


def _check_logits(name: str, logits: object) -> Tensor:
    t = chk.check_float(name, logits)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name}: expected shape (B,) or (B, 1), got {tuple(t.shape)}")
    chk.check_finite((name, t))
    return t.float()


def _unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    out: list[Tensor] = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
