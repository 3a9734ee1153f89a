"""The recipes as text: one recipe with its sources (``syn2co-train recipes show``), and the
generated sections of the docs (every value with its source, every departure from the official
code), built from the recipe files so that the docs cannot drift from them.

The page ``docs/trainer/reproducing.md`` holds each generated section between two markers
(:data:`SECTIONS`); ``python -m reference_trainer.recipes.render`` rewrites them and
``python -m reference_trainer.recipes.render --check`` fails when they are out of date (a test
runs the check).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import Departure, Recipe, recipes

__all__ = [
    "DOCS_PAGE",
    "SECTIONS",
    "departures_markdown",
    "main",
    "recipe_text",
    "update_page",
    "values_markdown",
]

#: The page that holds the generated sections (in a source checkout).
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "trainer" / "reproducing.md"


def _value(value: Any) -> str:
    """A value as YAML writes it on one line (``null``, ``true``, ``0.0005``, ``byol``)."""
    text = str(yaml.safe_dump(value, default_flow_style=True, width=1_000_000)).strip()
    return text.removesuffix("...").strip()


def recipe_text(recipe: Recipe) -> str:
    """One recipe as a config file ``--config`` reads: each option with its source as a comment,
    then its variants and departures as comments."""
    lines = [f"# {recipe.label}: {recipe.summary}"]
    lines += [
        f"# paper: {recipe.paper}",
        f"# published: {recipe.published}",
        f"# compute: {recipe.compute}",
    ]
    if recipe.extends:
        lines.append(f"# extends: {recipe.extends}")
    if recipe.references:
        lines.append("# sources:")
        lines += [f"#   {k}: {v}" for k, v in recipe.references.items()]
    rows = [(f"{k}: {_value(v)}", recipe.sources[k]) for k, v in recipe.options.items()]
    width = max(len(text) for text, _ in rows)
    lines.append(f"recipe: {recipe.label}")
    lines += [f"{text.ljust(width)}  # {source}" for text, source in rows]
    others = {k: v for k, v in recipe.variants.items() if k != recipe.variant}
    if others:
        lines.append(f"# variants, one flag away: --recipe {recipe.name}@VARIANT")
        for variant in others.values():
            lines.append(f"#   @{variant.name}: {variant.summary}")
            lines += [
                f"#     {k}: {_value(v)}  # {variant.sources[k]}"
                for k, v in variant.options.items()
            ]
    if recipe.departs:
        lines.append("# where this run departs from the official code:")
        for d in recipe.departs.values():
            lines += [
                f"#   {d.what}:",
                f"#     official: {d.official}",
                f"#     here: {d.here}",
                f"#     why: {d.why}",
            ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def departures_markdown(shipped: Mapping[str, Recipe] | None = None) -> str:
    """One table row per departure from the official code, the recipes that share it together.

    Variants' departures are rows of their own (``NAME@VARIANT``).
    """
    shipped = recipes() if shipped is None else shipped
    grouped: dict[Departure, list[str]] = {}
    for recipe in shipped.values():
        for d in recipe.departs.values():
            grouped.setdefault(d, []).append(f"`{recipe.name}`")
        for variant in recipe.variants.values():
            for d_or_none in variant.departs.values():
                if d_or_none is not None and d_or_none not in recipe.departs.values():
                    grouped.setdefault(d_or_none, []).append(f"`{recipe.name}@{variant.name}`")
    lines = [
        "| recipes | what | official code | this recipe | why |",
        "|---|---|---|---|---|",
    ]
    for d, names in grouped.items():
        cells = [", ".join(names), f"`{d.what}`", d.official, d.here, d.why]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def values_markdown(shipped: Mapping[str, Recipe] | None = None) -> str:
    """Each recipe's options with their values and sources, one collapsed block per recipe."""
    shipped = recipes() if shipped is None else shipped
    blocks = []
    for recipe in shipped.values():
        extends = f" (extends `{recipe.extends}`)" if recipe.extends else ""
        lines = [f'??? note "`{recipe.name}` v{recipe.version}: {recipe.summary}"', ""]
        if extends:
            lines += [f"    Starts from `{recipe.extends}`.", ""]
        lines += ["    | option | value | source |", "    |---|---|---|"]
        lines += [
            f"    | `{k}` | `{_value(v)}` | {_cell(recipe.sources[k])} |"
            for k, v in recipe.options.items()
        ]
        for variant in recipe.variants.values():
            for k, v in variant.options.items():
                lines.append(
                    f"    | `{k}` with `@{variant.name}` | `{_value(v)}` | "
                    f"{_cell(variant.sources[k])} |"
                )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


#: The generated sections of :data:`DOCS_PAGE`: marker name -> what fills it.
SECTIONS: dict[str, Callable[[], str]] = {
    "recipe-departures": departures_markdown,
    "recipe-values": values_markdown,
}


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- generated: {name} (python -m reference_trainer.recipes.render) -->",
        f"<!-- end of generated: {name} -->",
    )


def update_page(text: str, sections: Iterable[str] = tuple(SECTIONS)) -> str:
    """The page with each generated section rewritten between its markers.

    Raises:
        ValueError: A section's markers are missing.
    """
    for name in sections:
        begin, end = _markers(name)
        if begin not in text or end not in text:
            raise ValueError(f"the page has no markers for {name}: {begin} ... {end}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{SECTIONS[name]()}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated sections of the docs page (``--check``: only report whether they
    are up to date; exit 1 if not)."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"] or [DOCS_PAGE]
    stale = []
    for path in paths:
        text = path.read_text()
        new = update_page(text)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    for path in stale:
        print(f"{path}: {'out of date' if check else 'rewritten'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
