"""Checkpoints: atomic writes, the state an exact resume needs, and the run directory.

A checkpoint holds the online and target networks, the method's state (queues), the optimizer,
the loss scaler, the sampler position (batches consumed, not prefetched), the step (every
schedule is a pure function of it), every rank's RNG states and the resolved config.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from syn2co import distributed

from .atomic import write_atomic
from .errors import ConfigError

if TYPE_CHECKING:
    from .build import Parts

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


# --------------------------------------------------------------------------------------------
# The run directory and the state of a run
# --------------------------------------------------------------------------------------------


def prepare_run_dir(run_dir: Path, *, resuming: bool, main: bool) -> None:
    """Create ``run_dir`` (on the main rank) and check that it can hold this run.

    Raises:
        ConfigError: The directory cannot be written, or it holds another run and this is not a
            resume.
    """
    try:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out: cannot write to {run_dir}: {e.strerror or e}") from None
    if not resuming and (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"--out {run_dir} already holds a run; continue it with --resume {run_dir} "
            f"or choose another --out"
        )


def run_state(
    parts: Parts, *, step: int, config: dict[str, Any], sampler: dict[str, Any]
) -> dict[str, Any]:
    """Everything an exact resume needs (collective: every rank's RNG states are gathered)."""
    rng = rng_state(parts.negatives_gen)
    rngs: list[Any] = [rng]
    world = distributed.world_size()
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    return {
        "format": FORMAT_VERSION,
        "step": step,
        "config": config,
        "online": parts.online.state_dict(),
        "target": None if parts.target is None else parts.target.state_dict(),
        "method": parts.method.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "sampler": sampler,
        "rng": rngs,
        "world_size": world,
        "joint": None if parts.joint is None else parts.joint.state_dict(),
    }


def restore_run_state(state: dict[str, Any], parts: Parts) -> tuple[int, bool]:
    """Load a checkpoint's state into a run's parts (the sampler is loaded by the caller).

    Returns:
        The step to continue from, and whether the random streams were restored exactly (they
        are reseeded when the checkpoint comes from another number of ranks).
    """
    parts.online.load_state_dict(state["online"])
    if parts.target is not None:
        parts.target.load_state_dict(state["target"])
    parts.method.load_state_dict(state["method"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scaler.load_state_dict(state["scaler"])
    if parts.joint is not None:
        parts.joint.load_state_dict(state["joint"])
    rngs = state["rng"]
    exact = len(rngs) == distributed.world_size()
    if exact:
        set_rng_state(rngs[distributed.rank()], parts.negatives_gen)
    return int(state["step"]), exact
