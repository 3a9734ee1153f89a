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
would have picked (unless value checks are off, or under ``torch.compile``, which reads no
values: see below).

**Degenerate banks.** A bank row is usable when its norm is finite and above 1e-12 (the eps
of the normalisation); rows of zero norm (a zero-initialised MoCo queue before it fills) and
rows with NaN or infinite entries are never negatives, with the same rule on every path
(:func:`synthesize`, :func:`synthetic_logits`, the strategy functions on :func:`hardest`'s
pool), eager or compiled:

* they rank after every usable row (as ``exclude``-d entries do), so a query's hard pool is its
  N most similar usable rows; where fewer than N are usable, :func:`hardest` returns zero
  vectors for the rest;
* the pool positions are drawn as always, uniformly in [0, N), and a position past the query's
  n usable entries is folded onto them (``position mod n``); with n < N each usable entry is
  then drawn with a probability within a factor ``ceil(N/n) / floor(N/n)`` of uniform, and a
  full pool draws exactly what it drew before;
* a query with no usable row at all (an all-zero queue at the first step) has ``-q`` for every
  pick: its samples are ``-q`` itself for types 1, 2, 3 and 5 and lie near it for 4 and 6, the
  easiest negatives there are (cosine about -1: each adds about ``exp(-1/tau)`` to the loss's
  denominator), so the step runs and such a query has in effect no synthetic negatives, never
  copies of itself nor vectors of norm 0.

**Dtypes.** Inputs may be float16, bfloat16, float32 or float64. The arithmetic is float32,
outside any autocast region, whatever the input dtype: float64 inputs are rounded to float32,
so no function here gains float64 precision from them. Similarities and :func:`synthetic_logits`
are float32; the vectors (:func:`synthesize`, the strategy functions, :func:`hardest`) come back
in the query's dtype and device; a query's gradient in its own dtype.

**Gradients.** The synthetic negatives are constants: the gradient to the query is that of
``norm(q) . s`` with every sample ``s`` held fixed. ``torch.autograd.gradcheck`` of
:func:`synthetic_logits` (or of a loss on :func:`synthesize`) therefore fails by design: types
1, 2 and 5 are built from ``q`` (interpolation, extrapolation, the ascent step) and type 6 from
``sign(q)``, so their samples move with ``q`` in a finite difference while the gradient holds
them fixed; the hard pool (a top N) can change under a finite difference (pass ``similarity``
to fix it); and the arithmetic is float32. What holds, and is tested: with the same draws,
the gradient equals autograd's through ``norm(q) . s.detach()``.

**torch.compile.** Every function here and the losses of :mod:`syn2co.losses` trace into one
graph (no graph break, any preset, ``generator=None`` or a ``torch.Generator``, ``dynamic``
or not). The random draws are the eager ones: custom operators (``torch.ops.syn2co.*``) make
them at run time from the same generator, in the same order, so a compiled step returns the
eager values and leaves the generator in the eager state. Dynamo specialises on a generator
object's identity: keep one per stream, as a training loop does. No value is read while
compiling (no NaN check, no branch on data). On the meta device every function runs, drawing
nothing: the outputs have the right shapes.
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
