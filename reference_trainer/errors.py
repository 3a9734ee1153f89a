"""The trainer's user-facing error types: one line of text that says what to change."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line that says what to change."""
