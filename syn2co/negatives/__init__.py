"""Synthetic hard negatives in embedding space.

From a query and a bank of negatives, :func:`hardest` picks the hard pool (the N bank entries
most similar to each query); six strategies then make extra negatives from that pool, which a
contrastive loss appends to its logits:

| # | function | formula | coefficient |
|---|---|---|---|
| 1 | :func:`interpolate` | ``norm(a*q + (1-a)*n)`` | a ~ U(alpha), alpha = (0, 0.5) |
| 2 | :func:`extrapolate` | ``norm(q + b*(n - q))`` | b ~ U(beta), beta = (1, 1.5) |
| 3 | :func:`mixup` | ``norm(c*n + (1-c)*n')`` | c ~ U(gamma), gamma = (0, 1) |
| 4 | :func:`add_noise` | ``norm(n + sigma*eps)``, eps ~ N(0, I) | sigma = 0.1 |
| 5 | :func:`perturb` | ``norm(n + delta*q)`` | delta = 0.01 |
| 6 | :func:`adversarial` | ``norm(n + eta*sign(q))``, iterated | eta = 0.01 |

Sources: MoCHi (Kalantidis et al., NeurIPS 2020: types 1 and 3), SynCo (Giakoumoglou and
Stathaki, 2024: all six) and its vision-transformer follow-up, "Unsupervised Training of Vision
Transformers with Synthetic Negatives" (SynCo v2, 2025).

Every strategy draws, for each synthetic negative, its hard negative(s) uniformly *with
replacement* from that query's pool and its coefficient independently. Everything synthetic is
detached: the gradient reaches only the query, through the new logits. A ``torch.Generator``
makes the result reproducible, and there is no Python loop over the batch or over the samples.

Two ways to use them, with the same draws from the same generator:

* :func:`synthetic_logits` returns only what a loss needs, the cosine of each query to each of
  its synthetic negatives, (B, M) in float32, computed from inner products of the query and
  the pool rows without ever forming the (B, M, D) negatives; pass it to the loss as extra
  similarities. Its memory is O(B*M) plus chunks of the pool, so thousands of synthetic
  negatives per query are affordable.
* :func:`synthesize` returns the negatives themselves, (B, M, D), L2-normalised, in the
  query's dtype and device (arithmetic in float32), for losses that take vectors
  (``info_nce(..., extra_negatives=...)``) and for diagnostics.

Each type is one :class:`Strategy` record in an ordered registry (:func:`strategies`);
:class:`NegativeSpec`, :func:`synthesize` and :func:`synthetic_logits` iterate over it, and
:func:`register_strategy` adds a new type.

**Vanishing samples.** A sample whose unnormalised vector is shorter than 1e-3 (the midpoint of
a hard negative equal to ``-q`` at a = 0.5, a mix of n and ``-n`` at c = 0.5, ``n = -q`` with
delta = 1, ...) has no meaningful direction; it is replaced by the hard negative it was made
from (its first pick), in both :func:`synthesize` and :func:`synthetic_logits`. Its logit is
then ``q . n``.

**Non-finite inputs.** Every input is checked whole before anything is drawn: the query, the
bank (or the pool given to a strategy function) and the similarities. A NaN or infinite entry
anywhere raises :class:`syn2co.NonFiniteError` naming the argument, whichever rows the draw
would have picked.
"""

from __future__ import annotations

from syn2co.negatives._pool import hardest, hardest_indices, positive_mask, similarity
from syn2co.negatives.logits import synthetic_logits
from syn2co.negatives.spec import SYNCO_V1, SYNCO_V2, SYNCO_V2_CONFIG, NegativeSpec, mochi
from syn2co.negatives.strategy import (
    STRATEGIES,
    Combination,
    InnerProducts,
    Strategy,
    register_strategy,
    strategies,
    unregister_strategy,
)
from syn2co.negatives.vectors import (
    add_noise,
    adversarial,
    extrapolate,
    interpolate,
    mixup,
    perturb,
    synthesize,
)

__all__ = [
    "STRATEGIES",
    "SYNCO_V1",
    "SYNCO_V2",
    "SYNCO_V2_CONFIG",
    "Combination",
    "InnerProducts",
    "NegativeSpec",
    "Strategy",
    "add_noise",
    "adversarial",
    "extrapolate",
    "hardest",
    "hardest_indices",
    "interpolate",
    "mixup",
    "mochi",
    "perturb",
    "positive_mask",
    "register_strategy",
    "similarity",
    "strategies",
    "synthesize",
    "synthetic_logits",
    "unregister_strategy",
]
