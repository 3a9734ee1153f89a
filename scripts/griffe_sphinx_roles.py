"""Griffe extension for the docs build: Sphinx-isms in syn2co's docstrings, rendered by mkdocs.

syn2co's docstrings are Google style but cross-reference with Sphinx roles
(``:func:`hardest```, ``:class:`NegativeQueue```, ``:meth:`replace```, ``:data:`SYNCO_V1```) and
document a few module constants with ``#:`` comments. mkdocstrings renders neither, so this
extension, loaded from ``mkdocs.yml`` (``handlers.python.options.extensions``), rewrites them
when griffe loads the package:

* a role whose target resolves to a documented object of the package becomes an autorefs link
  ``[`target`][full.path]``; any other target (a stale or private name) shows as plain code,
  never as a broken link;
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


def _rendered(obj: griffe.Object) -> bool:
    """Whether mkdocstrings (``filters: public``) renders the object: public up to the package."""
    current: griffe.Object | None = obj
    while current is not None:
        if not current.is_public:
            return False
        current = current.parent
    return True


def _scopes(obj: griffe.Object) -> list[str]:
    """Paths a relative name may live under, innermost first: the object, its parents."""
    scopes = []
    current: griffe.Object | None = obj
    while current is not None:
        scopes.append(current.path)
        current = current.parent
    return scopes


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
        paths = {obj.path for obj in objects if _rendered(obj)}
        for obj in objects:
            if obj.is_class and "__post_init__" in obj.members:
                # A dataclass's argument checks: an implementation detail, not API.
                obj.del_member("__post_init__")
            if obj.docstring is None:
                continue
            scopes = _scopes(obj)

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
