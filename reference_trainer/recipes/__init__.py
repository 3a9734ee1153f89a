"""Named, versioned training recipes: the published runs as config files shipped with the trainer.

Each recipe is one YAML file in this package: ``name``, ``version`` (raised whenever a value
changes), a one-line ``summary``, the ``paper``, the ``published`` number to compare with, the
``compute`` the source states, the methods and architectures it ``requires`` beyond the
built-in ones, and ``options``: flat :class:`~reference_trainer.config.TrainConfig` values,
each with its source (file and line of the official code at a named commit, or the paper's
section) in a comment.

``syn2co-train run --recipe NAME`` applies one; the precedence is field defaults < method preset
< recipe < ``--config`` file < command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["RECIPE_DIR", "Recipe", "load_recipe", "recipe_names", "recipes"]

#: Where the recipe files live (shipped as package data).
RECIPE_DIR = Path(__file__).parent

_FIELDS = ("name", "version", "summary", "paper", "published", "compute", "requires", "options")


@dataclass(frozen=True)
class Recipe:
    """One recipe file.

    Attributes:
        name: What ``--recipe`` takes.
        version: Raised whenever a value changes; ``--recipe NAME@VERSION`` pins it.
        summary: One line for ``syn2co-train recipes``.
        paper: The paper the run reproduces.
        published: The published number to compare with, and where it is printed.
        compute: The hardware or time the source states, or "not stated".
        requires: Methods or architectures beyond the built-in ones (``method:NAME``,
            ``arch:NAME``).
        options: The ``TrainConfig`` values, in file order.
        sources: Each option's source, from its comment in the file.
        path: The file.
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


_OPTION_LINE = re.compile(r"^  (?P<key>\w+): .*?  # (?P<source>.+)$")


def _sources(text: str) -> dict[str, str]:
    """Each option's source: the comment after its value in the ``options`` block."""
    block = text.split("\noptions:\n", 1)[1]
    return {m["key"]: m["source"] for m in map(_OPTION_LINE.match, block.splitlines()) if m}


def _read(path: Path) -> Recipe:
    text = path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or sorted(data) != sorted(_FIELDS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"recipe file {path.name}: expected the keys {list(_FIELDS)}, got {got}")
    if data["name"] != path.stem:
        raise ConfigError(f"recipe file {path.name}: its name is {data['name']!r}")
    unsourced = sorted(set(data["options"]) - set(_sources(text)))
    if unsourced:
        raise ConfigError(f"recipe file {path.name}: no source comment for {unsourced}")
    return Recipe(
        name=str(data["name"]),
        version=int(data["version"]),
        summary=str(data["summary"]),
        paper=str(data["paper"]),
        published=str(data["published"]),
        compute=str(data["compute"]),
        requires=tuple(str(r) for r in data["requires"]),
        options=dict(data["options"]),
        sources=_sources(text),
        path=path,
    )


@cache
def recipes() -> dict[str, Recipe]:
    """Every shipped recipe by name, sorted by name."""
    return {p.stem: _read(p) for p in sorted(RECIPE_DIR.glob("*.yaml"))}


def recipe_names() -> tuple[str, ...]:
    """The names ``--recipe`` accepts."""
    return tuple(recipes())


def load_recipe(spec: str) -> Recipe:
    """The recipe ``NAME`` or ``NAME@VERSION`` (the version must be the shipped one).

    Raises:
        ConfigError: Unknown name, another version, or requirements this installation lacks.
    """
    name, _, version = spec.partition("@")
    known = recipes()
    if name not in known:
        raise ConfigError(
            f"--recipe: unknown recipe {name!r}; shipped: {', '.join(known)} "
            "(syn2co-train recipes lists them)"
        )
    recipe = known[name]
    if version and version != str(recipe.version):
        raise ConfigError(
            f"--recipe {spec}: this installation ships {name} version {recipe.version}, "
            f"not {version}"
        )
    lacking = recipe.missing()
    if lacking:
        raise ConfigError(
            f"--recipe {name} needs {' and '.join(lacking)}, which this installation lacks"
        )
    return recipe
