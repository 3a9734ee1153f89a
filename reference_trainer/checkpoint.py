"""Checkpoints: atomic writes, safe and verified reads, the state an exact resume needs, and the
run directory.

A run directory belongs to one run: a lock (:mod:`reference_trainer.runlock`) held by the
training process, and a refusal to mix a new run into the files of another.

A checkpoint holds the online and target networks, the method's state (queues), the optimizer,
the loss scaler, the sampler position (batches consumed, not prefetched), the step (every
schedule is a pure function of it), every rank's RNG states and the resolved config: tensors
and plain Python values only (dicts, lists, tuples, numbers, strings, None), so it is read with
``torch.load(weights_only=True)``, which refuses a file that would run code or build any other
object. It is PyTorch's zip format, which stores a CRC-32 of every record (the pickle and each
tensor's bytes); every record is checked against it before anything is unpickled, so a flipped
bit on disk or in a copy is reported instead of resumed from. The run never writes non-finite
weights (the engine checks them before each save).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import pickle
import random
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from syn2co import distributed

from .atomic import remove_stale_temporaries, unwritable_reason, write_atomic
from .errors import ConfigError, one_line
from .runlock import LOCK_NAME, RunLock, check_free

if TYPE_CHECKING:
    from .build import RunComponents

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"

#: Globals beyond PyTorch's own ``weights_only`` allowlist that a checkpoint may name. Ours hold
#: tensors and plain values only (a test checks every kind of run), so this stays empty; a type
#: added to the run state must be listed here, never loaded with ``weights_only=False``.
SAFE_GLOBALS: list[Any] = []

#: What a checkpoint must hold to be read at all, with the types of the values.
_LAYOUT: dict[str, type | tuple[type, ...]] = {"step": int, "config": dict, "online": dict}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run; one line of text."""


@contextlib.contextmanager
def _crc32_on() -> Iterator[None]:
    """``torch.save`` stores the CRC-32 of every record (PyTorch's default; made sure of)."""
    config = getattr(getattr(torch.utils, "serialization", None), "config", None)
    save = getattr(config, "save", None)
    if save is None or not hasattr(save, "compute_crc32"):
        yield
        return
    before = save.compute_crc32
    save.compute_crc32 = True
    try:
        yield
    finally:
        save.compute_crc32 = before


def save_atomic(obj: Any, path: Path, *, size: int | None = None) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename.

    A reader (or a resume after a crash) sees either the previous complete file or the new
    complete file, never a partial one.

    Args:
        obj: What to save.
        path: The file.
        size: About how many bytes it takes (see :func:`state_bytes`): a file system with less
            free space is refused before writing.

    Raises:
        OSError: One line naming the file (and for a full disk the space needed and free);
            the previous file is intact.
    """

    def write(f: Any) -> None:
        try:
            with _crc32_on():
                torch.save(obj, f)
        except RuntimeError as e:
            # PyTorch's zip writer reports a write that came up short (a full disk, a file
            # size limit) as a RuntimeError: one more byte to the temporary file (removed
            # anyway) gets the file system's own error, which says why.
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
            raise OSError(errno.EIO, f"torch.save failed: {one_line(e)}") from None

    write_atomic(path, write, size=size)


def find_checkpoint(path: str | Path, *, role: str = "--resume") -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory.

    Args:
        path: A checkpoint file or run directory.
        role: How the command line calls ``path`` (the error names it).
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        if role == "--resume":
            raise CheckpointError(f"--resume: no checkpoint at {p}")
        raise CheckpointError(
            f"{role}: no checkpoint at {p} (a run writes it every --checkpoint-every steps and "
            f"at its end; evaluate a run once it has one)"
        )
    return p


def verify(path: Path) -> None:
    """Check every record of a checkpoint file against the CRC-32 stored with it, before
    anything is unpickled.

    Raises:
        CheckpointError: One line naming the file: it is not a PyTorch zip file, it is cut
            short, or a record does not match its checksum.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as record:
                    while record.read(1 << 22):
                        pass
    except zipfile.BadZipFile as e:
        text = str(e)
        if "CRC" in text:
            record_name = text.rsplit(" ", 1)[-1].strip("'")
            raise CheckpointError(
                f"{path} is corrupt: its record {record_name} does not match the checksum "
                f"stored with it (a flipped bit on disk or in a copy); use another copy or an "
                f"earlier checkpoint"
            ) from None
        raise CheckpointError(
            f"{path} is not a syn2co-train checkpoint, or is cut short: {one_line(text)}"
        ) from None
    except (OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(e)}") from None


def load(
    path: str | Path, map_location: str | torch.device = "cpu", *, role: str = "--resume"
) -> dict[str, Any]:
    """A checkpoint's state, read safely: verified against its checksums, then unpickled with
    ``weights_only=True`` (tensors and plain values; nothing else is built or run).

    Args:
        path: A checkpoint file or run directory.
        map_location: Where the tensors go.
        role: How the command line calls ``path`` (errors name it).

    Raises:
        CheckpointError: One line naming the file: missing, corrupt, of another program, or
            asking to run code when unpickled.
    """
    p = find_checkpoint(path, role=role)
    verify(p)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{p} is not a syn2co-train checkpoint: it names objects other than tensors and "
            f"plain values{what}, which could run code when loaded; refused, nothing of it "
            f"was run"
        ) from None
    except Exception as e:  # a foreign file: say so in one line
        raise CheckpointError(
            f"cannot read checkpoint {p}: {type(e).__name__}: {one_line(e)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p} is not a syn2co-train checkpoint (format {FORMAT_VERSION})")
    for key, kind in _LAYOUT.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(
                f"{p} is not a complete syn2co-train checkpoint (no valid {key!r} entry)"
            )
    return state


def nonfinite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or an infinity, or None.

    One fused reduction per device and dtype (the largest magnitude of every tensor, which is
    NaN or infinite exactly when the tensor holds such a value) and one synchronisation; the
    tensors are only searched one by one when one of them is bad.
    """
    items = [(n, t) for n, t in named if t.is_floating_point() and t.numel() > 0]
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for _, tensor in items:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor.detach())
    flags = [
        torch.stack(torch._foreach_norm(tensors, ord=math.inf)).isfinite().all().cpu()
        for tensors in groups.values()
    ]
    if not flags or bool(torch.stack(flags).all()):
        return None
    return next((n for n, t in items if not bool(torch.isfinite(t).all())), "?")


def named_tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """Every tensor in a nested state (dicts, lists, tuples), named by its path."""
    if isinstance(state, Tensor):
        yield prefix.rstrip("."), state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from named_tensors(value, f"{prefix}{key}.")
    elif isinstance(state, list | tuple):
        for i, value in enumerate(state):
            yield from named_tensors(value, f"{prefix}{i}.")


def state_bytes(state: Any) -> int:
    """The bytes of the tensors in a nested state: about what ``torch.save`` writes."""
    return sum(t.numel() * t.element_size() for _, t in named_tensors(state))


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
            run and this is not a resume, or it holds the logs of a run that died after some
            steps but before its first checkpoint.
    """
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out: cannot write to {run_dir}: {existing} is not a directory")
    reason = unwritable_reason(existing / ".write-test", size=0)  # e.g. read-only
    if reason is not None:
        raise ConfigError(f"--out: cannot write to {run_dir}: {reason} on {existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write to {run_dir}: permission denied on {existing}")
    check_free(run_dir)
    _check_contents(run_dir, resuming=resuming)


def check_space(run_dir: Path, needed: int) -> None:
    """Refuse, before anything is written, a file system without room for the run's
    checkpoints: ``needed`` bytes (a new checkpoint is written beside the previous one).

    Raises:
        ConfigError: One line naming the directory, the space needed and the space free.
    """
    from .atomic import free_bytes, human_bytes

    free = free_bytes(run_dir)
    if free is not None and free < needed:
        raise ConfigError(
            f"--out {run_dir}: not enough free space: the run's checkpoints need about "
            f"{human_bytes(needed)} (a new one is written beside the previous one), "
            f"{human_bytes(free)} free on its file system; free some space or choose another "
            f"--out"
        )


def claim_run_dir(run_dir: Path, *, resuming: bool) -> RunLock:
    """Create ``run_dir``, take its lock (held until released or the process ends), check it
    again under the lock and remove the temporaries of writes a killed run left behind.

    Call on the main rank, once everything else is validated: a failed run leaves nothing (a
    directory or lock file made here is removed again when the claim fails).

    Raises:
        ConfigError: As :func:`check_run_dir`, or the directory cannot be written.
    """
    made = _missing_folders(run_dir)
    lock_existed = (run_dir / LOCK_NAME).exists()
    lock: RunLock | None = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        lock = RunLock(run_dir).acquire()
        _check_contents(run_dir, resuming=resuming)  # a run may have started since the check
        remove_stale_temporaries(run_dir, RUN_FILES)
    except BaseException as e:
        if lock is not None:
            lock.release(remove=not lock_existed)
        remove_folders(made)
        if isinstance(e, OSError):
            raise ConfigError(f"--out: cannot write to {run_dir}: {e.strerror or e}") from None
        raise
    return lock


def _missing_folders(path: Path) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove these folders (deepest first) where they are empty; leave any other alone."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def stopped_before_first_step(run_dir: Path) -> bool:
    """``run_dir`` holds the ``config.yaml`` a run writes when it starts, but no checkpoint and
    no metrics log (a run opens its log just before its first step): a run stopped before its
    first step, which can be started again in place."""
    if (run_dir / CHECKPOINT_NAME).exists() or (run_dir / "metrics.jsonl").exists():
        return False
    return (run_dir / "config.yaml").is_file()


def restartable(resume: str | Path) -> Path | None:
    """The ``config.yaml`` of a ``--resume`` directory whose run stopped before its first step
    (no checkpoint): that run starts again in place from it. None otherwise."""
    p = Path(resume)
    if p.is_dir() and stopped_before_first_step(p):
        return p / "config.yaml"
    return None


def _check_contents(run_dir: Path, *, resuming: bool) -> None:
    if resuming:
        return
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"--out {run_dir} already holds a run; continue it with --resume {run_dir} "
            f"or choose another --out"
        )
    if not (run_dir / "metrics.jsonl").exists():
        return  # nothing, or the start of a run stopped before its first step: start again
    raise ConfigError(
        f"--out {run_dir} holds metrics.jsonl of a run that stopped before its first checkpoint "
        f"(nothing to resume); start over with an empty --out (delete {run_dir} or choose "
        f"another)"
    )


def check_metrics(run_dir: Path) -> None:
    """Check, before a resume writes anything, that its ``metrics.jsonl`` can be cut back to
    the checkpoint: a file of UTF-8 text (or missing).

    Raises:
        CheckpointError: One line naming the file and what to do.
    """
    path = run_dir / "metrics.jsonl"
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise CheckpointError(
            f"{path} is not a file: the run's metrics log must be one; move it aside to resume "
            f"(the checkpoint holds the run's state, the log only its history)"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CheckpointError(
            f"{path} is not UTF-8 text (byte {e.start}, line {line}): repair it or move it "
            f"aside to resume (the checkpoint holds the run's state, the log only its history)"
        ) from None


def unreadable_metric_lines(run_dir: Path) -> list[int]:
    """The numbers of the lines of ``metrics.jsonl`` that are not a JSON record with a step
    (a torn last line: an interrupted write); a resume drops them."""
    import json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    bad = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError
        except ValueError:
            bad.append(number)
    return bad


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


def restore_run_state(
    state: dict[str, Any], parts: RunComponents, *, source: str | Path = "the checkpoint"
) -> tuple[int, bool]:
    """Load a checkpoint's state into a run's parts (the sampler is loaded by the caller).

    Returns:
        The step to continue from, and whether the random streams were restored exactly (they
        are reseeded when the checkpoint comes from another number of ranks).

    Raises:
        CheckpointError: The state does not fit the run's parts (one line naming ``source``).
    """
    try:
        return _restore(state, parts)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else one_line(e)
        raise CheckpointError(
            f"{source} does not fit this run ({type(e).__name__}: {what[:300]}); resume it with "
            f"the code and options it was written with, or use another checkpoint"
        ) from None


def _restore(state: dict[str, Any], parts: RunComponents) -> tuple[int, bool]:
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
