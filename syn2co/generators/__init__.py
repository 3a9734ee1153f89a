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

from syn2co.generators.networks import (
    ConvGenerator,
    HardSampleGenerator,
    ImageGenerator,
    PairGenerator,
)
from syn2co.generators.objectives import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    hard_sample_loss,
    in_batch_info_nce,
    pair_similarity,
    pair_similarity_schedule,
    positive_pair_loss,
)
from syn2co.generators.training import (
    encoder_inputs,
    frozen,
    generator_step,
    scale_grad,
    shared_negatives,
)

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
