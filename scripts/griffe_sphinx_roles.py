"""Griffe extension for the docs build: Sphinx-isms in syn2co's docstrings, rendered by mkdocs.

syn2co's docstrings are Google style but cross-reference with Sphinx roles
(``:func:`hardest```, ``:class:`NegativeQueue```, ``:meth:`replace```, ``:data:`SYNCO_V1```) and
document a few module constants with ``#:`` comments. mkdocstrings renders neither, so this
extension, loaded from ``mkdocs.yml`` (``handlers.python.options.extensions``), rewrites them
when griffe loads the package:

* a role whose target resolves to a documented object of the package becomes an autorefs link
  ``[`target`][full.path]``, a relative name resolving from where the object is rendered (for a
  name a subpackage re-exports, the subpackage); any other target (a stale or private name)
  shows as plain code, never as a broken link;
* ``#:`` comments right above a module attribute without a docstring become its docstring;
* a paragraph ending in ``::`` (reST's literal-block marker) ends in ``:`` instead;
* an ``Example:`` section is read as Google style's ``Examples:`` (griffe takes the singular
  for an admonition and would render the ``>>>`` lines as nested quotes);
* dataclasses' ``__post_init__`` (argument checks) is left out of the reference.

It changes only what the docs show; the library's source is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|data|attr|mod|obj|exc|const):`~?([\w.]+)(?:\(\))?`"
)
_LITERAL_MARKER = re.compile(r"(\S)::(\n[ \t]*\n)")
_EXAMPLE_HEADER = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _documented(pkg: griffe.Module) -> tuple[dict[str, str], set[str]]:
    """Where mkdocstrings (``filters: public``) renders the package's objects.

    Each module of the package has its page, which renders the module's public members; a
    module inside a subpackage has no page of its own (``show_submodules`` is off), its names
    are rendered where the subpackage re-exports them (``syn2co.negatives.synthesize`` for
    ``syn2co.negatives.vectors.synthesize``). Returns each rendered object's heading path (its
    own path where it is rendered there, else the first re-export's) and every rendered path.
    """
    headings: dict[str, str] = {}
    paths: set[str] = set()

    def visit(obj: griffe.Object | griffe.Alias, path: str) -> None:
        target = obj.final_target if isinstance(obj, griffe.Alias) else obj
        if target is not obj:
            headings.setdefault(target.path, path)
        else:
            headings[target.path] = path
        paths.add(path)
        for name, member in target.members.items():
            if member.is_public and not (member.is_module and target is not pkg):
                visit(member, f"{path}.{name}")

    visit(pkg, pkg.path)
    return headings, paths


def _scopes(path: str) -> list[str]:
    """Paths a relative name may live under, innermost first: the object, its parents."""
    parts = path.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


class SphinxRoles(griffe.Extension):
    """Turns Sphinx roles into autorefs links and ``#:`` comments into attribute docstrings."""

    def on_attribute_instance(
        self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any
    ) -> None:
        if attr.docstring is not None or attr.lineno is None or not attr.parent:
            return
        lines = attr.module.lines  # the module's source, as a list of lines
        comments: list[str] = []
        index = attr.lineno - 2  # the line above the assignment, 0-based
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comments.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comments:
            # Consecutive comment lines form one paragraph (an empty `#:` starts a new one), so
            # that the summary in the module's table is the whole first paragraph.
            text = " ".join(line if line else "\n\n" for line in comments).replace(" \n\n ", "\n\n")
            attr.docstring = griffe.Docstring(
                text, lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
            )

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        objects = list(_walk(pkg))
        headings, paths = _documented(pkg)
        for obj in objects:
            if obj.is_class and "__post_init__" in obj.members:
                # A dataclass's argument checks: an implementation detail, not API.
                obj.del_member("__post_init__")
            if obj.docstring is None:
                continue
            scopes = _scopes(headings.get(obj.path, obj.path))

            def link(match: re.Match[str], scopes: list[str] = scopes) -> str:
                target = match.group(1)
                shown = target.rsplit(".", 1)[-1] if match.group(0).count("~") else target
                for scope in ["", *scopes]:
                    path = f"{scope}.{target}" if scope else target
                    if path in paths:
                        return f"[`{shown}`][{path}]"
                return f"`{shown}`"

            text = _ROLE.sub(link, obj.docstring.value)
            text = _LITERAL_MARKER.sub(r"\1:\2", text)
            obj.docstring.value = _EXAMPLE_HEADER.sub(r"\1Examples:", text)
