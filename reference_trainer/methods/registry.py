"""The registry of pretraining methods: name -> :class:`~.base.Method` subclass."""

from __future__ import annotations

from typing import TypeVar

from .base import Method

M = TypeVar("M", bound=type[Method])

__all__ = ["METHODS", "get_method", "method_names", "register"]

#: Every registered method by name, in registration order.
METHODS: dict[str, type[Method]] = {}


def register(cls: M) -> M:
    """Register a method class under its ``name`` (a class decorator).

    Raises:
        ValueError: Another class is registered under the same name.
    """
    existing = METHODS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"register: method name {cls.name!r} is taken by {existing.__module__}."
            f"{existing.__qualname__}"
        )
    METHODS[cls.name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    """The names ``--method`` accepts."""
    return tuple(METHODS)


def get_method(name: str) -> type[Method]:
    """The method registered as ``name``.

    Raises:
        KeyError: No method has that name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None
