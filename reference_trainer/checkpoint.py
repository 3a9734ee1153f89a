"""Checkpoints: atomic writes, the state an exact resume needs, and the run directory.

A run directory belongs to one run: a lock (:mod:`reference_trainer.runlock`) held by the
training process, and a refusal to mix a new run into the files of another.

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

from .atomic import remove_stale_temporaries, write_atomic
from .errors import ConfigError
from .runlock import RunLock, check_free

if TYPE_CHECKING:
    from .build import RunComponents

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


DEFAULT_RUN_DIR = "runs/syn2co"
#: Files a run writes atomically into its directory; a kill during a write leaves a temporary
#: of one of them, removed when the next run starts there.
RUN_FILES = (CHECKPOINT_NAME, "metrics.jsonl", "config.yaml")
#: Files of a run that does not end with a checkpoint before it dies (nothing to resume).
_LOGS = ("metrics.jsonl", "config.yaml")


def run_directory(out: str | None, resume: str | None) -> Path:
    """The directory a run writes to: ``--out`` (default ``runs/syn2co``), or with ``--resume``
    the resumed run's own directory.

    Raises:
        ConfigError: ``--out`` names another directory than the resumed run's.
    """
    if resume is None:
        return Path(out if out is not None else DEFAULT_RUN_DIR)
    source = Path(resume)
    resumed = source if source.is_dir() else source.parent
    if out is not None and Path(out).resolve() != resumed.resolve():
        raise ConfigError(
            f"--out {out} is not the resumed run's directory {resumed}: a run continues in its "
            f"own directory; leave out --out (copy the directory first to branch off a run)"
        )
    return resumed


def check_run_dir(run_dir: Path, *, resuming: bool) -> None:
    """Check, without writing anything, that ``run_dir`` can take this run.

    Raises:
        ConfigError: It cannot be created or written, another process runs in it, it holds a
            run and this is not a resume, or it holds the logs of a run that died before its
            first checkpoint.
    """
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out: cannot write to {run_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write to {run_dir}: permission denied on {existing}")
    check_free(run_dir)
    _check_contents(run_dir, resuming=resuming)


def claim_run_dir(run_dir: Path, *, resuming: bool) -> RunLock:
    """Create ``run_dir``, take its lock (held until released or the process ends), check it
    again under the lock and remove the temporaries of writes a killed run left behind.

    Call on the main rank, once everything else is validated: a failed run leaves nothing.

    Raises:
        ConfigError: As :func:`check_run_dir`.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out: cannot write to {run_dir}: {e.strerror or e}") from None
    lock = RunLock(run_dir).acquire()
    try:
        _check_contents(run_dir, resuming=resuming)  # a run may have started since the check
        remove_stale_temporaries(run_dir, RUN_FILES)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_contents(run_dir: Path, *, resuming: bool) -> None:
    if resuming:
        return
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"--out {run_dir} already holds a run; continue it with --resume {run_dir} "
            f"or choose another --out"
        )
    logs = [name for name in _LOGS if (run_dir / name).exists()]
    if logs:
        raise ConfigError(
            f"--out {run_dir} holds {logs[0]} of a run that stopped before its first checkpoint "
            f"(nothing to resume); start over with an empty --out (delete {run_dir} or choose "
            f"another)"
        )


def run_state(
    parts: RunComponents, *, step: int, config: dict[str, Any], sampler: dict[str, Any]
) -> dict[str, Any]:
    """Everything an exact resume needs (collective: every rank's RNG states are gathered)."""
    rng = rng_state(parts.negatives_gen)
    rngs: list[Any] = [rng]
    world = distributed.world_size()
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    generators = parts.learned_generators
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
        # "joint": the key of the learned generators' state in checkpoint files
        "joint": None if generators is None else generators.state_dict(),
    }


def restore_run_state(state: dict[str, Any], parts: RunComponents) -> tuple[int, bool]:
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
    if parts.learned_generators is not None:
        parts.learned_generators.load_state_dict(state["joint"])
    rngs = state["rng"]
    exact = len(rngs) == distributed.world_size()
    if exact:
        set_rng_state(rngs[distributed.rank()], parts.negatives_gen)
    return int(state["step"]), exact
