"""Machinery of :func:`reference_trainer.synth.pipelines.load_pipeline`: quiet loading, dtypes,
telling a path from a hub id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError, one_line

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def looks_like_path(model: str) -> bool:
    """Whether ``--model`` was meant as a directory (a hub id is ``owner/name`` at most).

    Args:
        model: The ``--model`` value.

    Returns:
        True for absolute, relative and home paths, and anything with more than one ``/``.
    """
    return (
        model.startswith(("/", "./", "../", "~"))
        or model in (".", "..")
        or model.count("/") > 1
        or "\\" in model
    )


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence diffusers' and transformers' progress bars and warnings while loading.

    Yields:
        Nothing; the previous verbosity and progress bars are restored on exit.
    """
    from diffusers.utils import logging as dlog

    tlog: Any
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover - transformers is optional for some pipelines
        tlog = None
    dl: Any = dlog  # diffusers' logging helpers are untyped
    d_level, d_bars = dl.get_verbosity(), dl.is_progress_bar_enabled()
    t_level = tlog.get_verbosity() if tlog else 0
    t_bars = tlog.is_progress_bar_enabled() if tlog else False
    dl.set_verbosity_error()
    dl.disable_progress_bar()
    if tlog:
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        dl.set_verbosity(d_level)
        if d_bars:
            dl.enable_progress_bar()
        if tlog:
            tlog.set_verbosity(t_level)
            if t_bars:
                tlog.enable_progress_bar()


def resolve_dtype(name: str, device: Any) -> Any:
    """The torch dtype of ``--dtype``.

    Args:
        name: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp16``, ``bf16`` or ``fp32``.
        device: The ``torch.device`` the pipeline runs on.

    Returns:
        The ``torch.dtype``.

    Raises:
        ConfigError: An unknown name.
    """
    import torch

    if name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name not in _DTYPES:
        raise ConfigError(f"--dtype must be auto, fp16, bf16 or fp32, got {name!r}")
    return getattr(torch, _DTYPES[name])


def short(error: BaseException, limit: int = 160) -> str:
    """The first line of an error's message, at most ``limit`` characters.

    Args:
        error: Any exception (loaders' messages can be pages long).
        limit: Longest result.

    Returns:
        The shortened message.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = one_line(lines[0]) if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
