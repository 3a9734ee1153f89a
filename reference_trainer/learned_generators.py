"""Image generators learned jointly with the encoder: hard samples and hard positive pairs.

The trainer's side of :mod:`syn2co.generators` ("Synthetic Data Can Also Teach", Wu et al.
2023). :class:`LearnedGenerators` owns the generator(s), their AdamW
optimizers and the pair-similarity schedule; the engine needs four calls::

    generators = LearnedGenerators("both", image_size=32, total_steps=steps).to(device)
    # encoder step: the real views plus the generated rows (detached), then the usual loss
    view_a, view_b = generators.extend_views(view_a, view_b, step)
    ...  # encoder forward, loss, backward, optimizer step
    # generator step: the encoder frozen, the generator(s) updated
    metrics = generators.generator_step(encoder_fn, real_images, step, encoder=model)
    state = generators.state_dict()  # generators, spread and optimizer states: exact resume

Randomness: every latent, noise and augmentation draw of a call comes from a CPU stream seeded
by ``(seed, rank, step, purpose)``, so the global RNG is never touched and a resumed run draws
exactly what the uninterrupted run would have. The generators are initialised from ``seed``
alone (identical on every rank); under ``torch.distributed`` their gradients are averaged over
the ranks before each optimizer step, so they stay identical.

Images are normalised like the encoder's inputs (``mean``/``std``, ImageNet's by default).
The hard samples get two views from a differentiable augmentation (random resized crop and
flip through an affine grid, brightness and contrast jitter), in both the encoder and the
generator step; each generated pair is used as is, image a as view a and image b as view b, so
the pair generator alone sets how hard the positive is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import distributed
from syn2co._checks import check_choice, check_int, check_number
from syn2co.generators import (
    ConvGenerator,
    HardSampleGenerator,
    PairGenerator,
    encoder_inputs,
    feature_matching_loss,
    generator_step,
    hard_sample_loss,
    in_batch_info_nce,
    pair_similarity,
    pair_similarity_schedule,
    positive_pair_loss,
)

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .seeds import Stream, hashed_seed, stream_seed, torch_generator

__all__ = ["MODES", "GeneratedBatch", "LearnedGenerators", "Mode"]

Mode = Literal["hard-samples", "hard-pairs", "both"]
MODES: tuple[str, ...] = ("hard-samples", "hard-pairs", "both")

EncoderFn = Callable[[Tensor], Tensor]

# Purposes of the per-call random streams (part of the seed).
_STEP, _SAMPLE, _VIEWS, _GRID = 0, 1, 2, 3
# Pixel statistics are matched at this side at most (the covariance grows with its square).
_PIXEL_SIDE = 32


class GeneratedBatch(NamedTuple):
    """Generated images for the encoder step, detached; None where the mode makes none."""

    images: Tensor | None  # (N, C, H, W) hard samples
    pair_a: Tensor | None  # (P, C, H, W) first images of the positive pairs
    pair_b: Tensor | None  # (P, C, H, W) second images


class LearnedGenerators(nn.Module):
    """The hard-sample and/or hard-pair generators, their optimizers and their schedule.

    Args:
        mode: "hard-samples", "hard-pairs" or "both".
        image_size: Side of the generated images (the encoder's input size).
        total_steps: Optimizer steps of the run (the pair target reaches its end there).
        channels: Image channels.
        latent_dim: Latent size of the generators.
        width: Width of :class:`syn2co.generators.ConvGenerator` (its last stage).
        batch_fraction: Generated samples (and, separately, pairs) per real image, > 0.
        lr: AdamW learning rate of the generators.
        betas: AdamW betas (GAN-style (0.5, 0.999) by default).
        weight_decay: AdamW weight decay.
        similarity_start: Target similarity of generated pairs at step 0, in [-1, 1].
        similarity_end: Target at ``total_steps``, in [-1, 1].
        similarity_kind: "cosine" or "linear" decay of the target.
        temperature: tau of the contrastive loss the hard samples ascend.
        contrastive_weight: Weight of the (negated) contrastive term, >= 0.
        feature_weight: Weight of matching the encoder's embedding statistics of real images.
        pixel_weight: Weight of matching pixel statistics of real images (at <= 32 px).
        pair_weight: Weight of :func:`syn2co.generators.positive_pair_loss`.
        pair_spread: Initial spread of the pair codes (learned), see
            :class:`syn2co.generators.PairGenerator`.
        pair_design: "shared" (one generator, two codes around a shared base) or "twin" (two
            generators starting identical, sharing the base code).
        mean: Per-channel normalisation mean of the encoder's inputs.
        std: Per-channel normalisation std.
        seed: Seed of the initialisation and of every random stream.
        rank: This process's rank (its random streams differ from the other ranks').
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        mode: Mode,
        *,
        image_size: int,
        total_steps: int,
        channels: int = 3,
        latent_dim: int = 128,
        width: int = 32,
        batch_fraction: float = 0.25,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        similarity_start: float = 0.9,
        similarity_end: float = 0.5,
        similarity_kind: Literal["cosine", "linear"] = "cosine",
        temperature: float = 0.2,
        contrastive_weight: float = 1.0,
        feature_weight: float = 1.0,
        pixel_weight: float = 1.0,
        pair_weight: float = 1.0,
        pair_spread: float = 0.5,
        pair_design: Literal["shared", "twin"] = "shared",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        self.image_size = check_int("image_size", image_size, minimum=4)
        self.channels = check_int("channels", channels, minimum=1)
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.batch_fraction = check_number("batch_fraction", batch_fraction, low=0.0, low_open=True)
        self.similarity_kind = check_choice(
            "similarity_kind", similarity_kind, ("cosine", "linear")
        )
        self.similarity_start = check_number("similarity_start", similarity_start, low=-1, high=1)
        self.similarity_end = check_number("similarity_end", similarity_end, low=-1, high=1)
        self.temperature = check_number("temperature", temperature, low=0.0, low_open=True)
        self.contrastive_weight = check_number("contrastive_weight", contrastive_weight, low=0.0)
        self.feature_weight = check_number("feature_weight", feature_weight, low=0.0)
        self.pixel_weight = check_number("pixel_weight", pixel_weight, low=0.0)
        self.pair_weight = check_number("pair_weight", pair_weight, low=0.0)
        check_choice("pair_design", pair_design, ("shared", "twin"))
        self.seed = check_int("seed", seed, minimum=0)
        self.rank = check_int("rank", rank, minimum=0)
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(
                f"mean: expected {self.channels} means and stds (one per channel), got "
                f"{len(mean)} and {len(std)}"
            )
        self.register_buffer("mean", torch.tensor(list(mean)).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(-1, 1, 1), persistent=False)

        def make() -> ConvGenerator:
            return ConvGenerator(
                latent_dim, self.image_size, self.channels, width=width, mean=mean, std=std
            )

        def adamw(module: nn.Module) -> torch.optim.AdamW:
            opt = torch.optim.AdamW(
                module.parameters(), lr=lr, betas=betas, weight_decay=weight_decay
            )
            opt.register_step_pre_hook(_average_grads_over_ranks)
            return opt

        self.samples: HardSampleGenerator | None = None
        self.pairs: PairGenerator | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # Initialised from the seed alone (the same on every rank), global RNG left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, Stream.GENERATORS))
            if self.mode in ("hard-samples", "both"):
                self.samples = HardSampleGenerator(make(), batch_fraction=self.batch_fraction)
                self.optimizers["samples"] = adamw(self.samples)
            if self.mode in ("hard-pairs", "both"):
                first = make()
                second = None
                if pair_design == "twin":
                    second = make()
                    second.load_state_dict(first.state_dict())
                self.pairs = PairGenerator(
                    first,
                    second,
                    spread=pair_spread,
                    batch_fraction=self.batch_fraction,
                )
                self.optimizers["pairs"] = adamw(self.pairs)
        self.metrics: dict[str, Tensor] = {}

    # ---------------------------------------------------------------------------------------
    # Encoder side
    # ---------------------------------------------------------------------------------------

    def count(self, batch_size: int) -> int:
        """Generated samples (and pairs) for a real batch: ``round(fraction * B)``, at least 2."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        return max(2, int(self.batch_fraction * batch_size + 0.5))

    def target_similarity(self, step: int) -> float:
        """The pair-similarity target at ``step`` (from ``similarity_start`` to ``_end``)."""
        return pair_similarity_schedule(
            step,
            self.total_steps,
            self.similarity_start,
            self.similarity_end,
            kind=self.similarity_kind,  # type: ignore[arg-type]
        )

    @torch.no_grad()
    def sample(self, n: int, step: int) -> GeneratedBatch:
        """``n`` hard samples and/or ``n`` positive pairs for the encoder step, detached.

        Args:
            n: Number of samples and of pairs (>= 1).
            step: The optimizer step (seeds the latents).

        Returns:
            ``GeneratedBatch(images, pair_a, pair_b)``; entries the mode makes none of are None.
        """
        n = check_int("n", n, minimum=1)
        rng = self._rng(step, _SAMPLE)
        images = pair_a = pair_b = None
        if self.samples is not None:
            images = self.samples.sample(n, generator=rng).detach()
        if self.pairs is not None:
            pair_a, pair_b = (x.detach() for x in self.pairs.sample(n, generator=rng))
        return GeneratedBatch(images, pair_a, pair_b)

    def two_views(self, images: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Two differentiable augmentations of normalised images (B, C, H, W), seeded by step."""
        return self._views(images, self._rng(step, _VIEWS))

    def extend_views(self, view_a: Tensor, view_b: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """The encoder step's batch: the real views, then two views of ``count(B)`` hard samples,
        then ``count(B)`` generated pairs, all generated rows detached.

        Args:
            view_a: First views of the real batch, (B, C, H, W), normalised.
            view_b: Second views, same shape.
            step: The optimizer step.

        Returns:
            ``(view_a, view_b)``, each (B + N + P, C, H, W).
        """
        generated = self.sample(self.count(view_a.shape[0]), step)
        samples = None
        if generated.images is not None:
            with torch.no_grad():
                samples = self.two_views(generated.images, step)
        pairs = None
        if generated.pair_a is not None and generated.pair_b is not None:
            pairs = (generated.pair_a, generated.pair_b)
        return encoder_inputs(view_a, view_b, samples=samples, pairs=pairs)

    def extend_views_grouped(
        self, view_a: Tensor, view_b: Tensor, step: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder step's batch for a loss with several positives per row: the real views,
        then two augmented views of every generated image, and each row's group.

        Rows: the ``B`` real ones, the ``N`` hard samples, the first images of the ``P`` pairs,
        then their second images; each generated row holds two views of its image (drawn as
        :meth:`two_views` draws them), all detached. A pair's two rows share a group, so with
        two views of each image a generated pair gives four positive views, as in Wu et al.;
        every other row is its own group.

        Args:
            view_a: First views of the real batch, (B, C, H, W), normalised.
            view_b: Second views, same shape.
            step: The optimizer step.

        Returns:
            ``(view_a, view_b, groups)``: views of (B + N + 2P, C, H, W) each, and int64 groups
            of shape (B + N + 2P,) on ``view_a``'s device, numbered from 0 by first row.
        """
        b = view_a.shape[0]
        generated = self.sample(self.count(b), step)
        images = [x for x in generated if x is not None]
        with torch.no_grad():
            views = self.two_views(torch.cat(images), step)
        out_a, out_b = encoder_inputs(view_a, view_b, samples=views)
        groups = torch.arange(out_a.shape[0], device=view_a.device)
        if generated.pair_a is not None:
            p = generated.pair_a.shape[0]
            first = out_a.shape[0] - 2 * p  # row of the first pair's image a
            groups[first + p :] = groups[first : first + p].clone()
        return out_a, out_b, groups

    # ---------------------------------------------------------------------------------------
    # Generator side
    # ---------------------------------------------------------------------------------------

    def generator_step(
        self,
        encoder_fn: EncoderFn,
        real_images: Tensor,
        step: int,
        *,
        encoder: nn.Module | Sequence[nn.Module] = (),
        real_features: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Update the generator(s) once with the encoder frozen.

        The hard-sample generator ascends the encoder's contrastive loss on two views of its
        samples while matching the real batch's embedding and pixel statistics; the pair
        generator moves its pairs' similarity towards :meth:`target_similarity` under the same
        fidelity terms. The encoder's parameters receive no gradient whatever ``encoder`` is
        (the gradient is taken with respect to the generators' parameters only); listing the
        encoder's modules in ``encoder`` also freezes them during the forward passes (no weight
        gradients computed) and restores their buffers (e.g. BatchNorm statistics) afterwards.
        Pass an unwrapped module (not a DDP wrapper) to ``encoder_fn``.

        Args:
            encoder_fn: Maps normalised images (B, C, H, W) to embeddings (B, D).
            real_images: A real batch (B, C, H, W), normalised like the encoder's inputs.
            step: The optimizer step (seeds the draws, sets the pair target).
            encoder: The module(s) behind ``encoder_fn``, frozen during the step.
            real_features: Embeddings (M, D) of real images in ``encoder_fn``'s space; computed
                from ``real_images`` without gradient when None.

        Returns:
            The step's metrics as detached scalar tensors (also kept in :attr:`metrics`):
            ``gen/sample_contrastive`` (the encoder's loss on generated negatives),
            ``gen/sample_fidelity``, ``gen/sample_loss``, ``gen/pair_similarity``,
            ``gen/pair_target``, ``gen/pair_spread``, ``gen/pair_fidelity``, ``gen/pair_loss``.
        """
        if not isinstance(real_images, Tensor) or real_images.ndim != 4:
            got = tuple(real_images.shape) if isinstance(real_images, Tensor) else real_images
            raise ValueError(f"real_images: expected shape (B, C, H, W), got {got}")
        step = check_int("step", step, minimum=0)
        modules = (encoder,) if isinstance(encoder, nn.Module) else tuple(encoder)
        rng = self._rng(step, _STEP)
        n = self.count(real_images.shape[0])
        real = real_images.detach()
        real_pixels = _pixels(real)
        metrics: dict[str, Tensor] = {}

        cache: list[Tensor] = [] if real_features is None else [real_features.detach()]

        def real_embeddings() -> Tensor:  # once per call, inside the frozen context
            if not cache:
                with torch.no_grad():
                    cache.append(encoder_fn(real))
            return cache[0]

        def fidelity(images: Tensor, features: Tensor) -> Tensor:
            loss = images.new_zeros((), dtype=torch.float32)
            if self.feature_weight > 0:
                reference = real_embeddings()
                loss = loss + self.feature_weight * feature_matching_loss(features, reference)
            if self.pixel_weight > 0:
                pixels = feature_matching_loss(_pixels(images), real_pixels)
                loss = loss + self.pixel_weight * pixels
            return loss

        if self.samples is not None:
            samples = self.samples
            latents = samples.latents(n, generator=rng)

            def sample_objective() -> Tensor:
                x = samples(latents)
                va, vb = self._views(x, rng)
                ea, eb = encoder_fn(va), encoder_fn(vb)
                loss = hard_sample_loss(
                    ea,
                    eb,
                    temperature=self.temperature,
                    contrastive_weight=self.contrastive_weight,
                    fidelity_weight=0.0,
                )
                fid = fidelity(x, torch.cat([ea, eb]))
                metrics["gen/sample_contrastive"] = in_batch_info_nce(
                    ea.detach(), eb.detach(), temperature=self.temperature
                )
                metrics["gen/sample_fidelity"] = fid.detach()
                return loss + fid

            metrics["gen/sample_loss"] = generator_step(
                sample_objective,
                self.optimizers["samples"],
                frozen_modules=modules,
                restore_buffers=True,
            )

        if self.pairs is not None:
            pairs = self.pairs
            base = pairs.latents(n, generator=rng)
            noise = pairs.latents(2 * n, generator=rng).chunk(2)
            target = self.target_similarity(step)

            def pair_objective() -> Tensor:
                xa, xb = pairs(base, (noise[0], noise[1]))
                ea, eb = encoder_fn(xa), encoder_fn(xb)
                loss = self.pair_weight * positive_pair_loss(ea, eb, target)
                fid = fidelity(torch.cat([xa, xb]), torch.cat([ea, eb]))
                metrics["gen/pair_similarity"] = pair_similarity(ea.detach(), eb.detach())
                metrics["gen/pair_fidelity"] = fid.detach()
                return loss + fid

            metrics["gen/pair_loss"] = generator_step(
                pair_objective,
                self.optimizers["pairs"],
                frozen_modules=modules,
                restore_buffers=True,
            )
            metrics["gen/pair_target"] = torch.tensor(target, device=real.device)
            metrics["gen/pair_spread"] = pairs.spread.detach().abs()
        self.metrics = metrics
        return metrics

    # ---------------------------------------------------------------------------------------
    # State and pictures
    # ---------------------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """The optimizers' states and the seed, stored in :meth:`state_dict` (``_extra_state``)."""
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "seed": self.seed,
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved (called by :meth:`load_state_dict`)."""
        saved = state["optimizers"]
        if set(saved) != set(self.optimizers):
            raise ValueError(
                f"state_dict: expected optimizer states for {sorted(self.optimizers)} (mode "
                f"{self.mode!r}), got {sorted(saved)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])
        self.seed = int(state["seed"])

    @torch.no_grad()
    def save_grid(self, path: str | Path, n: int = 32, step: int = 0) -> Path:
        """Write a PNG grid of generated images, in pixel space ([0, 1]).

        Hard samples first, then the pairs with each pair side by side (rows of 8).

        Args:
            path: The PNG file to write (its folder is created).
            n: Number of samples and of pairs.
            step: Seeds the latents (the same step gives the same picture).

        Returns:
            The path written.
        """
        from torchvision.utils import save_image

        n = check_int("n", n, minimum=1)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        rng = self._rng(step, _GRID)
        parts: list[Tensor] = []
        if self.samples is not None:
            parts.append(self.samples.sample(n, generator=rng))
        if self.pairs is not None:
            a, b = self.pairs.sample(n, generator=rng)
            parts.append(torch.stack([a, b], dim=1).flatten(0, 1))
        images = torch.cat(parts).float() * self.std.float() + self.mean.float()
        save_image(images.clamp(0.0, 1.0).cpu(), out, nrow=8, padding=1)
        return out

    # ---------------------------------------------------------------------------------------
    # Internals
    # ---------------------------------------------------------------------------------------

    def _rng(self, step: int, purpose: int) -> torch.Generator:
        step = check_int("step", step, minimum=0)
        return torch_generator(hashed_seed("joint", self.seed, self.rank, step, purpose))

    def _views(self, images: Tensor, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        return self._augment(images, rng), self._augment(images, rng)

    def _augment(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """Random resized crop (scale 0.6-1 of the side), flip, brightness and contrast."""
        b = x.shape[0]

        def uniform(lo: float, hi: float) -> Tensor:
            return (lo + (hi - lo) * torch.rand(b, generator=rng)).to(x.device, torch.float32)

        side = uniform(0.6, 1.0)
        tx, ty = uniform(-1.0, 1.0) * (1 - side), uniform(-1.0, 1.0) * (1 - side)
        flip = torch.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0)
        zero = torch.zeros_like(side)
        theta = torch.stack(
            [torch.stack([side * flip, zero, tx], -1), torch.stack([zero, side, ty], -1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=False)
        mean, std = self.mean.float(), self.std.float()
        pixels = out * std + mean
        brightness = uniform(0.6, 1.4)[:, None, None, None]
        contrast = uniform(0.6, 1.4)[:, None, None, None]
        grey = pixels.mean(dim=(1, 2, 3), keepdim=True)
        pixels = ((pixels * brightness - grey * brightness) * contrast + grey * brightness).clamp(
            0.0, 1.0
        )
        return ((pixels - mean) / std).to(x.dtype)


def _pixels(images: Tensor) -> Tensor:
    """Images at <= 32 px, flattened (B, C * h * w): the rows of the pixel-statistics match."""
    if images.shape[-1] > _PIXEL_SIDE or images.shape[-2] > _PIXEL_SIDE:
        images = F.adaptive_avg_pool2d(images, _PIXEL_SIDE)
    return images.flatten(1)


def _average_grads_over_ranks(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Optimizer pre-step hook: average the generators' gradients over the ranks."""
    world = distributed.world_size()
    if world == 1:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:  # every rank must join every collective
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)
