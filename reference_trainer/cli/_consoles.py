"""Where the commands write: messages, warnings and progress to stderr, results (tables, paths
written) to stdout, so a command's results can be piped or redirected apart from its chatter.

On a terminal, tables fit its width. Piped or redirected (``syn2co-train recipes | cat``), the
results console has no width to fit, so tables and lines print in full, never cut or wrapped
(rich would assume 80 columns); ``COLUMNS`` still sets a width when given.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

#: The width of the results console when stdout is not a terminal: wide enough for any table.
UNBOUNDED_WIDTH = 10_000


class _ResultsConsole(Console):
    """A console whose width is unbounded when it does not write to a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(UNBOUNDED_WIDTH, dimensions.height)
        return dimensions  # type: ignore[no-any-return]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = Console(stderr=True)
out_console = _ResultsConsole()
