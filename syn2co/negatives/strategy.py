"""Synthetic-negative types as records, in one ordered registry.

A :class:`Strategy` says how a type picks from the hard pool, what it draws, how it writes its
samples (for :func:`~syn2co.negatives.synthesize`) and how it describes them as a
:class:`Combination` of the vectors they combine (for
:func:`~syn2co.negatives.synthetic_logits`, which evaluates combinations with
:class:`InnerProducts`). The registry (:func:`strategies`) starts with the six built-in types;
:func:`register_strategy` adds more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, TypeAlias, cast

import torch
from torch import Tensor

from syn2co import _checks as chk
from syn2co import _random
from syn2co.negatives._pool import _Pool
from syn2co.negatives._registry import REGISTRY
from syn2co.negatives.spec import NegativeSpec

__all__ = [
    "STRATEGIES",
    "Combination",
    "InnerProducts",
    "Strategy",
    "register_strategy",
    "strategies",
    "unregister_strategy",
]

# A sample whose unnormalised vector is shorter than this falls back to its first pick.
_VANISHING_NORM: Final = 1e-3

#: A weight in a :class:`Combination`: a number, or one value per sample, (B, c).
Weight: TypeAlias = "Tensor | float"

#: ``draw(spec, (B, c, D), generator, device)``: a strategy's random draw for c samples per
#: query, right after its pool positions: coefficients (B, c, 1), a vector per sample
#: (B, c, D), or None.
DrawFn: TypeAlias = Callable[
    ["NegativeSpec", tuple[int, int, int], "torch.Generator | None", torch.device], "Tensor | None"
]

#: ``write(out, query, picks, drawn, spec)``: fills ``out`` (B, c, D) in place with the
#: unnormalised samples, from the unit query (B, 1, D), the unit pool rows each sample picked
#: (one (B, c, D) tensor per pick) and the draw.
WriteFn: TypeAlias = Callable[
    [Tensor, Tensor, tuple[Tensor, ...], "Tensor | None", "NegativeSpec"], None
]

#: ``combination(products, drawn, spec)``: the same unnormalised samples as weights on the
#: vectors they combine (see :class:`Combination`).
CombineFn: TypeAlias = Callable[["InnerProducts", "Tensor | None", "NegativeSpec"], "Combination"]


@dataclass(frozen=True)
class Combination:
    """A synthetic negative as weights on the vectors it combines, before normalisation.

    ``u = query * q + sum_g picks[g] * n_g + sign * sign(q) + drawn * e``, where ``q`` is the
    unit query, ``n_g`` the unit pool row of the sample's g-th pick, ``sign(q)`` the query's
    elementwise sign and ``e`` the strategy's drawn vector (the noise of :func:`add_noise`).
    The synthetic negative is ``u / |u|``. Each weight is a number or one value per sample,
    (B, c); a weight of exactly 0 leaves its vector out.

    Attributes:
        query: Weight of the unit query.
        picks: Weights of the pool rows, one per pick (at most the strategy's ``picks``).
        sign: Weight of ``sign(q)``.
        drawn: Weight of the drawn vector (only for a draw of shape (B, c, D)).

    Example:
        >>> Combination(query=0.3, picks=(0.7,))  # interpolation with a = 0.3
        Combination(query=0.3, picks=(0.7,), sign=0.0, drawn=0.0)
    """

    query: Weight = 0.0
    picks: tuple[Weight, ...] = ()
    sign: Weight = 0.0
    drawn: Weight = 0.0

    def scaled(self, factor: Weight) -> Combination:
        """Every weight times ``factor``; weights of exactly 0 stay out.

        Example:
            >>> Combination(query=0.5, picks=(1.0,)).scaled(2.0)
            Combination(query=1.0, picks=(2.0,), sign=0.0, drawn=0.0)
        """

        def times(w: Weight) -> Weight:
            return w if _absent(w) else w * factor

        return Combination(
            times(self.query),
            tuple(times(w) for w in self.picks),
            times(self.sign),
            times(self.drawn),
        )

    def plus(self, other: Combination) -> Combination:
        """The weights of ``self`` and ``other`` added (``u + u'``)."""
        n = max(len(self.picks), len(other.picks))
        pad = (0.0,) * n
        picks = tuple(
            _add(a, b)
            for a, b in zip((*self.picks, *pad)[:n], (*other.picks, *pad)[:n], strict=True)
        )
        return Combination(
            _add(self.query, other.query),
            picks,
            _add(self.sign, other.sign),
            _add(self.drawn, other.drawn),
        )


def _absent(w: Weight) -> bool:
    return not isinstance(w, Tensor) and w == 0


def _add(a: Weight, b: Weight) -> Weight:
    return b if _absent(a) else a if _absent(b) else a + b


class InnerProducts:
    """Inner products among the vectors one strategy's samples combine, without the samples.

    :func:`synthetic_logits` builds one per strategy and passes it to its
    :attr:`Strategy.combination`, which may call :meth:`norm` on the way (the iterated steps of
    :func:`adversarial` renormalise between steps). Products are computed on first use and
    cached: cosines to the query and norms come from one pass over the pool rows, products of
    two picks or of a pick and a drawn vector from chunks of gathered rows, so no (B, c, D)
    tensor of samples is ever formed.

    A query whose hard pool has no usable row (every bank row of zero or non-finite norm, as
    in a zero-initialised queue) has ``-q`` for every pick; its products are those of ``-q``.

    Attributes:
        picks: Pool positions of each sample's pool members, one (B, c) long tensor per pick.
        drawn: The strategy's draw: (B, c, 1) coefficients, (B, c, D) vectors, or None.
    """

    def __init__(
        self,
        pool: _Pool,
        picks: tuple[Tensor, ...],
        drawn: Tensor | None,
        count: int,
        antipodal: Tensor | None = None,
    ) -> None:
        self._pool, self.picks, self.drawn = pool, picks, drawn
        self._shape = (pool.q.shape[0], count)
        self._cache: dict[tuple[str, str], Tensor] = {}
        # (B, 1) bool: queries whose every pick stands for -q (no usable pool row)
        self._antipodal = antipodal

    def dot(self, a: Combination, b: Combination) -> Tensor:
        """``u_a . u_b`` for each sample: (B, c), float64."""
        total = self._pool.q.new_zeros(self._shape, dtype=torch.float64)
        for key_a, weight_a in self._terms(a):
            for key_b, weight_b in self._terms(b):
                total = total + weight_a * weight_b * self._inner(key_a, key_b)
        return total

    def norm(self, u: Combination) -> Tensor:
        """``|u|`` for each sample: (B, c), float64."""
        return self.dot(u, u).clamp_min(0.0).sqrt()

    def query_dot(self, u: Combination) -> Tensor:
        """``q . u`` for each sample: (B, c), float64; the logit when ``u`` has unit norm."""
        return self.dot(Combination(query=1.0), u)

    def unit(self, u: Combination) -> Combination:
        """``u / |u|``; a sample whose ``|u|`` is below 1e-3 becomes its (unit) first pick."""
        length = self.norm(u)
        vanished = length < _VANISHING_NORM
        first = Combination(picks=(1.0,))
        kept = u.scaled(torch.where(vanished, 0.0, 1.0 / length.clamp_min(_VANISHING_NORM)))
        fallback = torch.where(vanished, 1.0 / self.norm(first).clamp_min(1e-12), 0.0)
        return kept.plus(first.scaled(fallback))

    def _terms(self, u: Combination) -> list[tuple[str, Weight]]:
        if len(u.picks) > len(self.picks):
            raise ValueError(
                f"combination: expected at most {len(self.picks)} pick weight(s) (the "
                f"strategy's picks), got {len(u.picks)}"
            )
        if not _absent(u.drawn) and (
            self.drawn is None
            or self.drawn.ndim != 3
            or self.drawn.shape[-1] != self._pool.q.shape[1]
        ):
            raise ValueError("combination: a drawn weight needs a draw of shape (B, c, D)")
        keys = [("q", u.query), *((f"n{g}", w) for g, w in enumerate(u.picks))]
        keys += [("s", u.sign), ("e", u.drawn)]
        return [(key, w) for key, w in keys if not _absent(w)]

    def _inner(self, a: str, b: str) -> Tensor:
        key = (a, b) if a <= b else (b, a)
        if key not in self._cache:
            # float64 from here on: the products come from float32 vectors, but the quadratic
            # forms built on them cancel where a sample nearly vanishes (n' close to -n)
            self._cache[key] = self._compute(*key).double()
        return self._cache[key]

    def _compute(self, a: str, b: str) -> Tensor:
        """One inner product for keys in sorted order: "e" drawn, "n<g>" pick g, "q", "s"."""
        pool = self._pool
        scalars = {("q", "q"): pool.qq, ("q", "s"): pool.l1, ("s", "s"): pool.nnz}
        if (a, b) in scalars:
            return scalars[(a, b)]
        if a == "e":
            e = cast(Tensor, self.drawn)
            if b == "e":
                return torch.square(torch.linalg.vector_norm(e, dim=-1))
            if b in ("q", "s"):
                direction = pool.q if b == "q" else pool.sign
                return torch.bmm(direction[:, None, :], e.transpose(1, 2))[:, 0]
            return self._antipode(-self._inner("e", "q"), pool.rows_dot(self._pick(b), e))
        pick = self._pick(a)  # a is "n<g>"
        cos, sign_cos = pool.stats()
        if b == "q":
            return self._antipode(-pool.qq, cos.gather(1, pick))
        if b == "s":
            return self._antipode(-pool.l1, sign_cos.gather(1, pick))
        if a == b:
            return self._antipode(pool.qq, pool.squares(pick))
        return self._antipode(pool.qq, pool.pair(pick, self._pick(b)))

    def _pick(self, key: str) -> Tensor:
        return self.picks[int(key[1:])]

    def _antipode(self, of_antipode: Tensor, of_rows: Tensor) -> Tensor:
        """A product with pool rows, where the picks of queries without a usable row are
        ``-q`` (a selection, so whatever the unusable rows gave there is dropped)."""
        if self._antipodal is None:
            return of_rows
        return torch.where(self._antipodal, of_antipode.to(of_rows.dtype), of_rows)


@dataclass(frozen=True)
class Strategy:
    """One synthetic-negative type: how it picks from the pool, draws, writes and combines.

    The registry (:func:`strategies`) holds one per type, in the order in which
    :func:`synthesize` and :func:`synthetic_logits` draw from the generator and lay out the M
    axis. For each strategy with a non-zero count c, both draw the pool positions
    ``randint(N, (B, picks * c))`` (the first c columns are each sample's first pick, the next
    c its second, ...), then call ``draw``. :func:`synthesize` gathers the picked rows and calls
    ``write``; :func:`synthetic_logits` calls ``combination``. The two must describe the same
    vectors: ``norm(write(...))`` equals ``u / |u|`` of the combination.

    Attributes:
        name: Its count's name: ``NegativeSpec(counts={name: c})``, ``spec.counts[name]``.
        description: One line for help texts (a command-line option, a table).
        draw: ``draw(spec, (B, c, D), generator, device)`` -> coefficients (B, c, 1), a vector
            per sample (B, c, D), or None. Read coefficients from the spec or keep them in the
            function.
        write: ``write(out, query, picks, drawn, spec)``: fill ``out`` (B, c, D) in place with
            the unnormalised samples, from the unit query (B, 1, D) and the unit rows picked,
            one (B, c, D) tensor per pick.
        combination: ``combination(products, drawn, spec)`` -> :class:`Combination`: the same
            unnormalised samples as weights; ``products`` (:class:`InnerProducts`) gives norms
            where a construction needs them on the way.
        picks: Pool members per sample, >= 1 (2 for :func:`mixup`).
        draws_vectors: True when ``draw`` returns a vector per sample (B, c, D) that the
            combination weighs (``Combination.drawn``), as the noise of :func:`add_noise`:
            :func:`synthetic_logits` then keeps the generator's state to draw it again in the
            backward pass instead of keeping the vectors.
    """

    name: str
    description: str
    draw: DrawFn
    write: WriteFn
    combination: CombineFn
    picks: int = 1
    draws_vectors: bool = False


def _draw_coefficient(field: str) -> DrawFn:
    def draw(
        spec: NegativeSpec,
        shape: tuple[int, int, int],
        gen: torch.Generator | None,
        device: torch.device,
    ) -> Tensor:
        return _random.uniform((shape[0], shape[1], 1), getattr(spec, field), gen, device)

    return draw


def _draw_noise(
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    return _random.normal(torch.Size(shape), gen, device)


def _redraw(
    strategy: Strategy,
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    state: tuple[torch.device, Tensor],
    device: torch.device,
) -> Tensor:
    """A vector draw made again from the generator's state before it, (B, c, D); consumes no
    generator. The built-in noise replays through :func:`syn2co._random.normal_from_state`
    (which ``torch.compile`` traces); a registered strategy's ``draw`` gets a new generator set
    to that state (eager only: dynamo cannot trace a generator)."""
    if strategy.draw is _draw_noise:
        return _random.normal_from_state(state, torch.Size(shape), device)
    where, saved = state
    replay = torch.Generator(device=where)
    replay.set_state(saved)
    return cast(Tensor, strategy.draw(spec, shape, replay, device))


def _draw_nothing(
    spec: NegativeSpec,
    shape: tuple[int, int, int],
    gen: torch.Generator | None,
    device: torch.device,
) -> None:
    return None


# The writes below run in-place arithmetic on the output slice: no temporaries of the output's
# size, and no ``out=`` arguments (torch.compile rejects them on non-contiguous slices).


def _write_interpolated(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], a: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # a*q + (1-a)*n = n + a*(q - n)
    out.copy_(q.expand_as(out)).sub_(n).mul_(cast(Tensor, a)).add_(n)


def _write_extrapolated(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], b: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # q + b*(n - q)
    out.copy_(n).sub_(q).mul_(cast(Tensor, b)).add_(q)


def _write_mixed(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], c: Tensor | None, spec: NegativeSpec
) -> None:
    first, second = picks  # c*n + (1-c)*n' = n' + c*(n - n')
    out.copy_(first).sub_(second).mul_(cast(Tensor, c)).add_(second)


def _write_noisy(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], eps: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # n + sigma*eps
    out.copy_(n).add_(cast(Tensor, eps), alpha=spec.sigma)


def _write_perturbed(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], drawn: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # n + delta*q: one ascent step on q.n, whose gradient is q
    out.copy_(n).add_(q, alpha=spec.delta)


def _write_adversarial(
    out: Tensor, q: Tensor, picks: tuple[Tensor, ...], drawn: Tensor | None, spec: NegativeSpec
) -> None:
    (n,) = picks  # signed steps, renormalised in between; the caller normalises the last
    step = torch.sign(q).mul_(spec.eta)
    out.copy_(n).add_(step)
    for _ in range(spec.adversarial_steps - 1):  # over steps, not samples
        norms = torch.linalg.vector_norm(out, dim=-1, keepdim=True)
        out.div_(norms.masked_fill_(norms < _VANISHING_NORM, math.inf))  # vanished: restart at 0
        out.add_(step)


def _combine_interpolated(
    products: InnerProducts, a: Tensor | None, spec: NegativeSpec
) -> Combination:
    weight = cast(Tensor, a)[..., 0].double()
    return Combination(query=weight, picks=(1.0 - weight,))


def _combine_extrapolated(
    products: InnerProducts, b: Tensor | None, spec: NegativeSpec
) -> Combination:
    weight = cast(Tensor, b)[..., 0].double()
    return Combination(query=1.0 - weight, picks=(weight,))


def _combine_mixed(products: InnerProducts, c: Tensor | None, spec: NegativeSpec) -> Combination:
    weight = cast(Tensor, c)[..., 0].double()
    return Combination(picks=(weight, 1.0 - weight))


def _combine_noisy(products: InnerProducts, eps: Tensor | None, spec: NegativeSpec) -> Combination:
    return Combination(picks=(1.0,), drawn=spec.sigma)


def _combine_perturbed(
    products: InnerProducts, drawn: Tensor | None, spec: NegativeSpec
) -> Combination:
    return Combination(query=spec.delta, picks=(1.0,))


def _combine_adversarial(
    products: InnerProducts, drawn: Tensor | None, spec: NegativeSpec
) -> Combination:
    # s_0 = n; each step adds eta*sign(q); steps but the last are renormalised, and a point
    # that vanished restarts from 0, as in the write.
    u = Combination(picks=(1.0,))
    for _ in range(spec.adversarial_steps - 1):
        u = replace(u, sign=_add(u.sign, spec.eta))
        length = products.norm(u)
        u = u.scaled(torch.where(length < _VANISHING_NORM, 0.0, 1.0 / length.clamp_min(1e-12)))
    return replace(u, sign=_add(u.sign, spec.eta))


# The registry's records as what they are: only this module adds to REGISTRY, and only Strategy
# records.
_REGISTRY = cast("dict[str, Strategy]", REGISTRY)

# Names a strategy cannot take: NegativeSpec's other arguments.
_RESERVED: Final = frozenset(
    {"n_hard", "counts", "alpha", "beta", "gamma", "sigma", "delta", "eta", "adversarial_steps"}
)


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a synthetic-negative type after those already registered.

    From then on ``NegativeSpec(counts={strategy.name: c})`` asks for c samples of it per query,
    placed after the types registered before it on the M axis, and :func:`synthesize` and
    :func:`synthetic_logits` make them. A spec without it draws exactly what it drew before.

    Args:
        strategy: The record; its name must be a new identifier that is not one of
            :class:`NegativeSpec`'s other arguments, its description one non-empty line, and
            ``picks >= 1``.

    Returns:
        The strategy, registered.

    Example:
        >>> def draw(spec, shape, gen, device):
        ...     return None
        >>> def write(out, q, picks, drawn, spec):
        ...     out.copy_(picks[0]).neg_()
        >>> def combination(products, drawn, spec):
        ...     return Combination(picks=(-1.0,))
        >>> antipodes = register_strategy(
        ...     Strategy("antipodal", "-n: a hard negative's antipode", draw, write, combination)
        ... )
        >>> NegativeSpec(n_hard=8, interpolated=2, counts={"antipodal": 3}).slices()["antipodal"]
        slice(2, 5, None)
        >>> unregister_strategy("antipodal").name
        'antipodal'
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy: expected a Strategy, got {type(strategy).__name__}")
    name = strategy.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"strategy.name: expected an identifier, got {name!r}")
    if name in _REGISTRY or name in _RESERVED:
        taken = "a registered strategy" if name in _REGISTRY else "a NegativeSpec argument"
        raise ValueError(f"strategy.name: {name!r} is already {taken}")
    description = strategy.description
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"strategy.description: expected one non-empty line, got {description!r}")
    chk.check_int("strategy.picks", strategy.picks, minimum=1)
    for hook in ("draw", "write", "combination"):
        if not callable(getattr(strategy, hook)):
            raise TypeError(f"strategy.{hook}: expected a callable")
    _REGISTRY[name] = strategy
    return strategy


def unregister_strategy(name: str) -> Strategy:
    """Remove a strategy added with :func:`register_strategy`; the six built-in types stay.

    Args:
        name: Its name.

    Returns:
        The strategy removed.
    """
    if name in STRATEGIES:
        raise ValueError(f"name: {name!r} is a built-in strategy and cannot be removed")
    if name not in _REGISTRY:
        raise ValueError(f"name: expected a registered strategy, got {name!r}")
    return _REGISTRY.pop(name)


def strategies() -> tuple[Strategy, ...]:
    """The registered strategies, in the order they draw and sit on the M axis.

    Example:
        >>> [s.name for s in strategies()][:3]
        ['interpolated', 'extrapolated', 'mixed']
        >>> strategies()[0].description
        'type 1, norm(a*q + (1-a)*n), a ~ U(alpha): between the query and a hard negative'
    """
    return tuple(_REGISTRY.values())


for _strategy in (
    Strategy(
        "interpolated",
        "type 1, norm(a*q + (1-a)*n), a ~ U(alpha): between the query and a hard negative",
        _draw_coefficient("alpha"),
        _write_interpolated,
        _combine_interpolated,
    ),
    Strategy(
        "extrapolated",
        "type 2, norm(q + b*(n - q)), b ~ U(beta): past a hard negative, away from the query",
        _draw_coefficient("beta"),
        _write_extrapolated,
        _combine_extrapolated,
    ),
    Strategy(
        "mixed",
        "type 3, norm(c*n + (1-c)*n'), c ~ U(gamma): a mix of two hard negatives",
        _draw_coefficient("gamma"),
        _write_mixed,
        _combine_mixed,
        picks=2,
    ),
    Strategy(
        "noisy",
        "type 4, norm(n + sigma*eps), eps ~ N(0, I): a hard negative plus Gaussian noise",
        _draw_noise,
        _write_noisy,
        _combine_noisy,
        draws_vectors=True,
    ),
    Strategy(
        "perturbed",
        "type 5, norm(n + delta*q): one gradient-ascent step of q.n on a hard negative",
        _draw_nothing,
        _write_perturbed,
        _combine_perturbed,
    ),
    Strategy(
        "adversarial",
        "type 6, norm(n + eta*sign(q)), iterated: signed steps that raise the query's loss",
        _draw_nothing,
        _write_adversarial,
        _combine_adversarial,
    ),
):
    _REGISTRY[_strategy.name] = _strategy

#: The six built-in strategies, in the order :func:`synthesize` concatenates them (types 1 to
#: 6); :func:`strategies` lists these and any registered since.
STRATEGIES: Final = tuple(_REGISTRY)
