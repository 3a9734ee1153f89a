"""Named, versioned training recipes: the published runs as config files shipped with the trainer.

Each recipe is one YAML file in this package:

* ``name``, ``version`` (raised whenever a value the recipe resolves to changes), a one-line
  ``summary``, the ``paper``, the ``published`` number to compare with, the ``compute`` the
  source states, the methods and architectures it ``requires`` beyond the built-in ones;
* ``references`` (optional): the short names its sources use (``synco-v2``: a repository at a
  commit);
* ``options``: flat :class:`~reference_trainer.config.TrainConfig` values, each with its source
  in a comment after it (file and line of the official code at a named commit, or the paper's
  section). A recipe writes every option that affects training, also where its value is the
  method's default, so that nothing it runs is left to a default (a test checks this);
* ``departs`` (optional): where the run departs from the official code, one entry per value or
  behaviour (``official``, ``here``, ``why``), the values a reproduction would differ in;
* ``variants`` (optional): named alternatives one flag away, each with a ``summary``, its
  ``options`` (sourced like the recipe's) and the ``departs`` entries it changes (``null``
  removes one): ``--recipe NAME@VARIANT``;
* ``extends`` (optional): another recipe whose options, departures, variants and references
  this one starts from.

``syn2co-train run --recipe NAME[@VARIANT][@VERSION]`` applies one; the precedence is field
defaults < method preset < recipe < ``--config`` file < command line. ``syn2co-train recipes``
lists them and ``syn2co-train recipes show NAME`` prints one with its sources and departures.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..config import TrainConfig
from ..errors import ConfigError

__all__ = [
    "RECIPE_DIR",
    "Departure",
    "Recipe",
    "RecipeSpec",
    "Variant",
    "load_recipe",
    "parse_spec",
    "recipe_names",
    "recipes",
]

#: Where the recipe files live (shipped as package data).
RECIPE_DIR = Path(__file__).parent

_REQUIRED = ("name", "version", "summary", "paper", "published", "compute", "requires", "options")
_OPTIONAL = ("extends", "references", "departs", "variants")
_DEPARTURE_KEYS = ("official", "here", "why")


@dataclass(frozen=True)
class Departure:
    """Where a recipe's run differs from the official code.

    Attributes:
        what: The option (a ``TrainConfig`` field) or the behaviour that differs.
        official: What the official code does, with its source.
        here: What the recipe runs.
        why: Why the recipe does not follow the official code.
    """

    what: str
    official: str
    here: str
    why: str


@dataclass(frozen=True)
class Variant:
    """A named alternative of a recipe (``--recipe NAME@VARIANT``).

    Attributes:
        name: What follows the ``@``.
        summary: One line: what it changes and why one would pick it.
        options: The options it sets over the recipe's.
        sources: Each of those options' source.
        departs: The departures it replaces (None: removed).
    """

    name: str
    summary: str
    options: dict[str, Any]
    sources: dict[str, str]
    departs: dict[str, Departure | None]


@dataclass(frozen=True)
class RecipeSpec:
    """What ``--recipe`` names: ``NAME``, optionally ``@VARIANT`` and ``@VERSION`` (any order)."""

    name: str
    variant: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Recipe:
    """One recipe, with the variant applied when one was asked for.

    Attributes:
        name: What ``--recipe`` takes.
        version: Raised whenever a value changes; ``--recipe NAME@VERSION`` pins it.
        summary: One line for ``syn2co-train recipes``.
        paper: The paper the run reproduces.
        published: The published number to compare with, and where it is printed.
        compute: The hardware or time the source states, or "not stated".
        requires: Methods or architectures beyond the built-in ones (``method:NAME``,
            ``arch:NAME``).
        options: The ``TrainConfig`` values, in file order (the base recipe's first).
        sources: Each option's source, from its comment in the file.
        path: The file.
        departs: Where the run departs from the official code, by option or behaviour.
        variants: The named alternatives.
        references: The short names the sources use, and what they stand for.
        extends: The recipe this one starts from, or None.
        variant: The variant applied to ``options``, ``sources`` and ``departs``, or None.
    """

    name: str
    version: int
    summary: str
    paper: str
    published: str
    compute: str
    requires: tuple[str, ...]
    options: dict[str, Any]
    sources: dict[str, str]
    path: Path
    departs: dict[str, Departure] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    extends: str | None = None
    variant: str | None = None

    @property
    def label(self) -> str:
        """``NAME[@VARIANT]@VERSION``: what ``--recipe`` takes to run exactly this."""
        variant = f"@{self.variant}" if self.variant else ""
        return f"{self.name}{variant}@{self.version}"

    def missing(self) -> list[str]:
        """The requirements this installation lacks (empty when the recipe can run)."""
        from ..methods import method_names
        from ..models import ARCH_ALIASES
        from ..resnets import is_resnet

        lacking = []
        for need in self.requires:
            kind, _, what = need.partition(":")
            if kind == "method":
                known = what in method_names()
            else:
                known = what in ARCH_ALIASES or is_resnet(what)
            if not known:
                lacking.append(f"--{kind} {what}")
        return lacking

    def with_variant(self, name: str) -> Recipe:
        """The recipe with the variant ``name`` applied.

        Raises:
            ConfigError: The recipe has no such variant.
        """
        if name not in self.variants:
            known = ", ".join(self.variants) or "none"
            raise ConfigError(
                f"--recipe {self.name}@{name}: {self.name} has no variant {name!r} "
                f"(its variants: {known})"
            )
        chosen = self.variants[name]
        departs = {k: v for k, v in self.departs.items() if k not in chosen.departs}
        departs |= {k: v for k, v in chosen.departs.items() if v is not None}
        return dataclasses.replace(
            self,
            options=self.options | chosen.options,
            sources=self.sources | chosen.sources,
            departs=departs,
            variant=name,
        )


def parse_spec(spec: str) -> RecipeSpec:
    """Read ``NAME[@VARIANT][@VERSION]``: a number after ``@`` pins the version, a name picks a
    variant.

    Raises:
        ConfigError: An empty part, or two versions or two variants.
    """
    name, *qualifiers = spec.strip().split("@")
    variant: str | None = None
    version: int | None = None
    for part in qualifiers:
        if not part:
            raise ConfigError(
                f"--recipe {spec}: expected NAME[@VARIANT][@VERSION], got an empty part"
            )
        if part.isdigit():
            if version is not None:
                raise ConfigError(f"--recipe {spec}: give at most one version")
            version = int(part)
        else:
            if variant is not None:
                raise ConfigError(f"--recipe {spec}: give at most one variant")
            variant = part
    if not name:
        raise ConfigError(f"--recipe {spec}: expected NAME[@VARIANT][@VERSION], got no name")
    return RecipeSpec(name, variant, version)


# --------------------------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w.+-]+):(?P<rest>.*)$")


def _comments(text: str) -> dict[tuple[str, ...], str]:
    """Every mapping entry's comment (after ``  # ``), by the path of keys that leads to it."""
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"])
        comment = match["rest"].partition("  # ")[2].strip()
        if comment:
            found[path] = comment
        stack.append((indent, match["key"]))
    return found


def _sourced(
    where: str, options: Any, comments: Mapping[tuple[str, ...], str], prefix: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """An ``options`` block and its sources; every option must have one."""
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: 'options' must be a mapping of option: value")
    sources = {key: comments[(*prefix, key)] for key in options if (*prefix, key) in comments}
    unsourced = sorted(set(options) - set(sources))
    if unsourced:
        raise ConfigError(f"{where}: no source comment for {unsourced}")
    TrainConfig().updated(dict(options), source=where)  # unknown options, wrong types
    return dict(options), sources


def _departures(where: str, raw: Any, *, removable: bool) -> dict[str, Departure | None]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'departs' must be a mapping of what: {{official, here, why}}")
    out: dict[str, Departure | None] = {}
    for what, entry in raw.items():
        if entry is None and removable:
            out[str(what)] = None
            continue
        if not isinstance(entry, dict) or sorted(entry) != sorted(_DEPARTURE_KEYS):
            raise ConfigError(
                f"{where}: departs.{what} must have exactly the keys {list(_DEPARTURE_KEYS)}"
            )
        out[str(what)] = Departure(str(what), *(str(entry[k]).strip() for k in _DEPARTURE_KEYS))
    return out


def _read(path: Path, known: Mapping[str, Recipe]) -> Recipe:
    text = path.read_text()
    data = yaml.safe_load(text)
    where = f"recipe file {path.name}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    unknown = [k for k in data if k not in _REQUIRED + _OPTIONAL]
    if missing or unknown:
        raise ConfigError(
            f"{where}: expected the keys {list(_REQUIRED)} (optional: {list(_OPTIONAL)}), "
            f"missing {missing}, unknown {unknown}"
        )
    if data["name"] != path.stem:
        raise ConfigError(f"{where}: its name is {data['name']!r}")
    comments = _comments(text)
    options, sources = _sourced(where, data["options"], comments, ("options",))
    departs = {
        k: v
        for k, v in _departures(where, data.get("departs"), removable=False).items()
        if v is not None
    }
    variants: dict[str, Variant] = {}
    for name, raw in (data.get("variants") or {}).items():
        at = f"{where}, variant {name}"
        if not isinstance(raw, dict) or not {"summary", "options"} <= set(raw) <= {
            "summary",
            "options",
            "departs",
        }:
            raise ConfigError(f"{at}: expected summary, options and optionally departs")
        v_options, v_sources = _sourced(at, raw["options"], comments, ("variants", name, "options"))
        v_departs = _departures(at, raw.get("departs"), removable=True)
        variants[str(name)] = Variant(
            str(name), str(raw["summary"]), v_options, v_sources, v_departs
        )
    references = {str(k): str(v) for k, v in (data.get("references") or {}).items()}
    base_name = data.get("extends")
    if base_name is not None:
        if base_name not in known:
            raise ConfigError(
                f"{where}: extends {base_name!r}, which is not a recipe read before it"
            )
        base = known[base_name]
        options = base.options | options
        sources = base.sources | sources
        departs = base.departs | departs
        variants = base.variants | variants
        references = base.references | references
    return Recipe(
        name=str(data["name"]),
        version=int(data["version"]),
        summary=str(data["summary"]),
        paper=str(data["paper"]),
        published=str(data["published"]),
        compute=str(data["compute"]),
        requires=tuple(str(r) for r in data["requires"]),
        options=options,
        sources=sources,
        path=path,
        departs=departs,
        variants=variants,
        references=references,
        extends=None if base_name is None else str(base_name),
    )


def _base_of(path: Path) -> str | None:
    match = re.search(r"^extends: *(\S+)", path.read_text(), flags=re.MULTILINE)
    return None if match is None else match[1]


@cache
def recipes() -> dict[str, Recipe]:
    """Every shipped recipe by name, sorted by name."""
    paths = {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}
    read: dict[str, Recipe] = {}
    pending = dict(paths)
    while pending:  # a recipe after the one it extends
        ready = [n for n, p in pending.items() if _base_of(p) in read or _base_of(p) is None]
        if not ready:
            raise ConfigError(f"recipe files {sorted(pending)}: extend one another in a circle")
        for name in ready:
            read[name] = _read(pending.pop(name), read)
    return {name: read[name] for name in sorted(read)}


def recipe_names() -> tuple[str, ...]:
    """The names ``--recipe`` accepts."""
    return tuple(recipes())


def load_recipe(spec: str, *, require: bool = True) -> Recipe:
    """The recipe ``NAME[@VARIANT][@VERSION]`` (a version must be the shipped one).

    Args:
        spec: What ``--recipe`` takes.
        require: Refuse a recipe whose methods or architectures this installation lacks.

    Raises:
        ConfigError: Unknown name or variant, another version, or requirements this
            installation lacks.
    """
    wanted = parse_spec(spec)
    known = recipes()
    if wanted.name not in known:
        raise ConfigError(
            f"--recipe: unknown recipe {wanted.name!r}; shipped: {', '.join(known)} "
            "(syn2co-train recipes lists them)"
        )
    recipe = known[wanted.name]
    if wanted.version is not None and wanted.version != recipe.version:
        raise ConfigError(
            f"--recipe {spec}: this installation ships {wanted.name} version {recipe.version}, "
            f"not {wanted.version}"
        )
    if wanted.variant is not None:
        recipe = recipe.with_variant(wanted.variant)
    lacking = recipe.missing() if require else []
    if lacking:
        raise ConfigError(
            f"--recipe {wanted.name} needs {' and '.join(lacking)}, which this installation lacks"
        )
    return recipe
