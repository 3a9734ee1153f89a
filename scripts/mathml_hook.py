"""mkdocs hook: the pages' formulas are rendered to MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) wraps each formula of the Markdown in a
``<span class="arithmatex">`` (inline, ``\\(...\\)``) or a ``<div class="arithmatex">``
(display, ``\\[...\\]``). This hook replaces every such element with the MathML that
``latex2mathml`` (a pure-Python package of the ``docs`` extra) makes of the TeX, so browsers
draw the formulas themselves (MathML Core) and the site loads no script to typeset them, with or
without a network.

A formula that ``latex2mathml`` cannot convert, or converts only in part (a TeX command left
in the output, as it does for commands it does not know), is logged as a warning, which fails
``mkdocs build --strict``: a page never ships a half-rendered formula.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

_ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?P<tex>.*?)\s*</(?P=tag)>', re.DOTALL
)
_DELIMITERS = {"span": ("\\(", "\\)"), "div": ("\\[", "\\]")}

# TeX that latex2mathml turns into the wrong MathML, rewritten into TeX it gets right.
_REWRITES = (
    # \sim becomes an identifier "~" (a tilde, spaced as a letter); \thicksim is the relation.
    (re.compile(r"\\sim(?![A-Za-z])"), r"\\thicksim"),
)
# In display formulas, big operators take their limits above and below, as TeX does.
_DISPLAY_LIMITS = re.compile(r"\\(sum|prod|max|min)(?![A-Za-z])(?=\s*[_^])")
# Signs that a conversion went wrong: a TeX command or an empty operator left in the MathML.
_LEFTOVER = re.compile(r"\\[A-Za-z]+|<mo\s*/>|<merror")


class MathError(ValueError):
    """A formula that latex2mathml cannot render completely."""


def tex_to_mathml(tex: str, *, display: bool) -> str:
    """The MathML of one formula (its TeX without delimiters).

    Raises:
        MathError: The TeX does not convert, or converts with TeX left in the MathML.
    """
    for pattern, replacement in _REWRITES:
        tex = pattern.sub(replacement, tex)
    if display:
        tex = _DISPLAY_LIMITS.sub(r"\\\1\\limits", tex)
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises several types; each is a bad formula
        raise MathError(f"cannot convert {tex!r}: {error}") from error
    leftover = _LEFTOVER.search(mathml)
    if leftover:
        raise MathError(f"{tex!r} converts with {leftover.group()!r} left in the MathML")
    return mathml


def render_math(page_html: str, where: str) -> str:
    """``page_html`` with each arithmatex element replaced by MathML; failures are logged."""

    def replace(match: re.Match[str]) -> str:
        tag = match["tag"]
        opening, closing = _DELIMITERS[tag]
        source = html.unescape(match["tex"])
        if not (source.startswith(opening) and source.endswith(closing)):
            log.warning("%s: unexpected arithmatex output %r", where, source[:80])
            return match.group()
        try:
            mathml = tex_to_mathml(source[2:-2].strip(), display=tag == "div")
        except MathError as error:
            log.warning("%s: %s", where, error)
            return match.group()
        # A display formula scrolls on its own when it is wider than the page.
        return f'<div class="math-display">{mathml}</div>' if tag == "div" else mathml

    return _ARITHMATEX.sub(replace, page_html)


def on_page_content(page_html: str, page: Any, config: Any, files: Any) -> str:
    return render_math(page_html, page.file.src_uri)
