"""Atomic checkpoints and the RNG states an exact resume needs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomic

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run; one line of text."""


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename.

    A reader (or a resume after a crash) sees either the previous complete file or the new
    complete file, never a partial one.
    """
    write_atomic(path, lambda f: torch.save(obj, f))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {p}")
    return p


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = find_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p} is not a syn2co-train checkpoint (format {FORMAT_VERSION})")
    return state


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Python, torch CPU, CUDA (current device) and the negatives' generator states."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state()
    if generator is not None:
        state["negatives"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if generator is not None and "negatives" in state:
        generator.set_state(state["negatives"])
