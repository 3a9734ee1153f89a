"""Where the commands write: messages, warnings and progress to stderr, results (tables, paths
written) to stdout, so a command's results can be piped or redirected apart from its chatter."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
out_console = Console()
