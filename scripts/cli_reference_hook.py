"""mkdocs hook: the CLI reference page is generated from the Typer app at build time.

A page holding the marker below gets the Markdown that Typer derives from the commands'
signatures and help texts, so the reference can never drift from the code. The list of
subcommands shows each one's first sentence in full (Typer's generator would cut it at 45
characters, as a terminal's ``--help`` does).
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- syn2co-train reference -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    import typer
    from typer.cli import get_docs_for_click
    from typer.main import get_command

    from reference_trainer.cli import app

    command = get_command(app)
    _full_summaries(command)
    ctx = typer.Context(command, info_name="syn2co-train")
    reference = get_docs_for_click(obj=command, ctx=ctx, name="syn2co-train", indent=1)
    return markdown.replace(MARKER, reference)


def _full_summaries(command: Any) -> None:
    """Give every subcommand its whole first sentence as its summary (``short_help``)."""
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None:
            sub.short_help = sub.get_short_help_str(limit=10_000)
        _full_summaries(sub)
