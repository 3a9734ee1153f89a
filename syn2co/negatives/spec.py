"""How many synthetic negatives of each type to make, and the published settings.

:class:`NegativeSpec` holds the pool size, a count per registered strategy and the strategies'
coefficients; :data:`SYNCO_V1`, :data:`SYNCO_V2`, :data:`SYNCO_V2_CONFIG` and :func:`mochi` are
the papers' settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from syn2co import _checks as chk
from syn2co.negatives._registry import REGISTRY

__all__ = ["SYNCO_V1", "SYNCO_V2", "SYNCO_V2_CONFIG", "NegativeSpec", "mochi"]

# The built-in types' counts that NegativeSpec takes as keyword arguments, in the order of its
# signature, which is also the order the built-in strategies are registered in (any registered
# type can be given in ``counts=``).
_KEYWORD_COUNTS: Final = (
    "interpolated",
    "extrapolated",
    "mixed",
    "noisy",
    "perturbed",
    "adversarial",
)


@dataclass(frozen=True, init=False, repr=False)
class NegativeSpec:
    """How many synthetic negatives of each type to make, and their coefficients.

    Counts are per query and per loss direction, one per registered strategy
    (:func:`strategies`): the six built-in types as keyword arguments, any type (a registered
    one too) in ``counts``. Counts may be Python or numpy integers and are stored as ``int``.
    Validated on construction; use :meth:`replace` to derive a variant. Presets:
    :data:`SYNCO_V1`, :data:`SYNCO_V2`, :data:`SYNCO_V2_CONFIG` and :func:`mochi`. A spec whose
    counts are all 0 is valid and makes nothing.

    Args:
        n_hard: Size N of the hard pool the strategies draw from.
        interpolated: Count of type 1 (:func:`interpolate`).
        extrapolated: Count of type 2 (:func:`extrapolate`).
        mixed: Count of type 3 (:func:`mixup`).
        noisy: Count of type 4 (:func:`add_noise`).
        perturbed: Count of type 5 (:func:`perturb`).
        adversarial: Count of type 6 (:func:`adversarial`).
        alpha: Query-weight range of type 1.
        beta: Extrapolation-factor range of type 2.
        gamma: Mixing-weight range of type 3.
        sigma: Noise scale of type 4.
        delta: Step size of type 5.
        eta: Step size of type 6.
        adversarial_steps: Signed steps of type 6 (1 = the published closed form).
        counts: Counts by strategy name, for any registered strategy; a type given here must
            not also get a non-zero keyword count.

    Example:
        >>> spec = NegativeSpec(n_hard=64, interpolated=16, mixed=8)
        >>> spec.total
        24
        >>> spec.slices()["mixed"]
        slice(16, 24, None)
        >>> NegativeSpec(n_hard=64, counts={"mixed": 8}) == NegativeSpec(n_hard=64, mixed=8)
        True
    """

    n_hard: int
    _counts: tuple[tuple[str, int], ...]  # the non-zero counts, sorted by name
    alpha: tuple[float, float]
    beta: tuple[float, float]
    gamma: tuple[float, float]
    sigma: float
    delta: float
    eta: float
    adversarial_steps: int

    def __init__(
        self,
        n_hard: int = 256,
        interpolated: int = 0,
        extrapolated: int = 0,
        mixed: int = 0,
        noisy: int = 0,
        perturbed: int = 0,
        adversarial: int = 0,
        alpha: tuple[float, float] = (0.0, 0.5),
        beta: tuple[float, float] = (1.0, 1.5),
        gamma: tuple[float, float] = (0.0, 1.0),
        sigma: float = 0.1,
        delta: float = 0.01,
        eta: float = 0.01,
        adversarial_steps: int = 1,
        *,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        keywords = (interpolated, extrapolated, mixed, noisy, perturbed, adversarial)
        values: dict[str, object] = {
            "n_hard": chk.check_int("n_hard", n_hard, minimum=1),
            "_counts": _merge_counts(dict(zip(_KEYWORD_COUNTS, keywords, strict=True)), counts),
            # Ranges are stored as float tuples so that equal specs compare and hash equal.
            "alpha": chk.check_range("alpha", alpha, low=0.0, high=1.0),
            "beta": chk.check_range("beta", beta, low=1.0),
            "gamma": chk.check_range("gamma", gamma, low=0.0, high=1.0),
            "sigma": chk.check_number("sigma", sigma, low=0.0),
            "delta": chk.check_number("delta", delta, low=0.0),
            "eta": chk.check_number("eta", eta, low=0.0),
            "adversarial_steps": chk.check_int("adversarial_steps", adversarial_steps, minimum=1),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def counts(self) -> dict[str, int]:
        """Count per registered strategy, in registry order (:func:`strategies`)."""
        given = dict(self._counts)
        gone = sorted(set(given) - set(REGISTRY))
        if gone:
            raise ValueError(
                f"spec: counts {', '.join(map(repr, gone))}, no longer registered strategies"
            )
        return {name: given.get(name, 0) for name in REGISTRY}

    @property
    def total(self) -> int:
        """M, the number of synthetic negatives per query."""
        return sum(self.counts.values())

    def slices(self) -> dict[str, slice]:
        """Where each strategy's samples sit along the M axis of :func:`synthesize`'s output."""
        out, start = {}, 0
        for name, count in self.counts.items():
            out[name] = slice(start, start + count)
            start += count
        return out

    @property
    def interpolated(self) -> int:
        """Count of type 1 (:func:`interpolate`)."""
        return self._count("interpolated")

    @property
    def extrapolated(self) -> int:
        """Count of type 2 (:func:`extrapolate`)."""
        return self._count("extrapolated")

    @property
    def mixed(self) -> int:
        """Count of type 3 (:func:`mixup`)."""
        return self._count("mixed")

    @property
    def noisy(self) -> int:
        """Count of type 4 (:func:`add_noise`)."""
        return self._count("noisy")

    @property
    def perturbed(self) -> int:
        """Count of type 5 (:func:`perturb`)."""
        return self._count("perturbed")

    @property
    def adversarial(self) -> int:
        """Count of type 6 (:func:`adversarial`)."""
        return self._count("adversarial")

    def _count(self, name: str) -> int:
        return dict(self._counts).get(name, 0)

    def _settings(self) -> dict[str, object]:
        return {
            "n_hard": self.n_hard,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "sigma": self.sigma,
            "delta": self.delta,
            "eta": self.eta,
            "adversarial_steps": self.adversarial_steps,
        }

    def replace(self, **changes: object) -> NegativeSpec:
        """A validated copy with some fields changed: any setting, any registered strategy's
        count by name, or ``counts`` (a mapping merged into the current counts).

        Example:
            >>> SYNCO_V2.replace(noisy=0).total
            512
        """
        settings = self._settings()
        counts: dict[str, object] = dict(self._counts)
        known = {*settings, *REGISTRY, "counts"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"replace: unknown field(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
        mapping = changes.get("counts", {})
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"counts: expected a mapping of strategy name to count, got {mapping!r}"
            )
        both = sorted(set(mapping) & set(changes))
        if both:
            raise ValueError(f"replace: {both[0]!r} is given both by name and in counts")
        for name, value in changes.items():
            if name in REGISTRY:
                counts[name] = value
            elif name != "counts":
                settings[name] = value
        counts.update(mapping)
        return NegativeSpec(counts=counts, **settings)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        counts = self.counts
        parts = [f"n_hard={self.n_hard}"]
        parts += [f"{name}={counts[name]}" for name in _KEYWORD_COUNTS]
        others = {name: c for name, c in counts.items() if name not in _KEYWORD_COUNTS and c}
        parts += [
            f"{name}={value!r}" for name, value in self._settings().items() if name != "n_hard"
        ]
        if others:
            parts.append(f"counts={others!r}")
        return f"NegativeSpec({', '.join(parts)})"


def _merge_counts(
    keywords: dict[str, object], counts: Mapping[str, object] | None
) -> tuple[tuple[str, int], ...]:
    """The keyword counts and the ``counts`` mapping, validated: non-zero counts sorted by name."""
    given = {name: chk.check_int(name, value, minimum=0) for name, value in keywords.items()}
    if counts is not None:
        if not isinstance(counts, Mapping):
            raise TypeError(
                f"counts: expected a mapping of strategy name to count, got {type(counts).__name__}"
            )
        for name, value in counts.items():
            if name not in REGISTRY:
                raise ValueError(
                    f"counts: unknown strategy {name!r}; registered: {', '.join(REGISTRY)}"
                )
            if given.get(name, 0):
                raise ValueError(f"counts: {name!r} is also given as {name}={given[name]}")
            given[name] = chk.check_int(name, value, minimum=0)
    return tuple(sorted((name, count) for name, count in given.items() if count))


#: SynCo v1 (ResNet-50, MoCo v2): N = 1024; 256/256/256/64/64/64 of types 1-6; sigma 0.01.
#: The official code swaps the enable flags of types 4 and 5, which only matters when exactly
#: one of their counts is 0.
SYNCO_V1: Final = NegativeSpec(
    n_hard=1024,
    interpolated=256,
    extrapolated=256,
    mixed=256,
    noisy=64,
    perturbed=64,
    adversarial=64,
    sigma=0.01,
)

#: SynCo v2 as its code actually ran (DeiT-S / Swin-T with MoBY): N = 256;
#: 128/128/128/64/64/64; sigma 0.1.
SYNCO_V2: Final = NegativeSpec(
    n_hard=256,
    interpolated=128,
    extrapolated=128,
    mixed=128,
    noisy=64,
    perturbed=64,
    adversarial=64,
    sigma=0.1,
)

# Spelt out rather than SYNCO_V2.replace(...): replace() checks names against the registry, which
# the built-in strategies join in syn2co.negatives.strategy, a module that imports this one.
#: SynCo v2 as its config intended (128 of every type; the counts were never passed on).
SYNCO_V2_CONFIG: Final = NegativeSpec(
    n_hard=256,
    interpolated=128,
    extrapolated=128,
    mixed=128,
    noisy=128,
    perturbed=128,
    adversarial=128,
    sigma=0.1,
)


def mochi(n_hard: int = 1024, s: int = 512, s_prime: int = 256) -> NegativeSpec:
    """MoCHi(N, s, s'): s mixed hard negatives (type 3) and s' query-interpolated ones (type 1).

    Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020.

    Args:
        n_hard: Hard pool size N.
        s: Count of type-3 mixes of two hard negatives.
        s_prime: Count of type-1 mixes with the query, query weight in (0, 0.5).

    Returns:
        The corresponding :class:`NegativeSpec`.

    Example:
        >>> mochi(1024, 512, 256).counts["mixed"]
        512
    """
    return NegativeSpec(n_hard=n_hard, mixed=s, interpolated=s_prime)


def _check_spec(spec: object) -> NegativeSpec:
    if not isinstance(spec, NegativeSpec):
        raise TypeError(f"spec: expected a NegativeSpec, got {type(spec).__name__}")
    return spec
