"""The training loop: one step, precision, compile, schedules, the non-finite guard, signals.

One process on the CPU or one GPU, or several processes under ``torchrun`` (DDP, one GPU per
process, NCCL on CUDA and gloo on the CPU). Nothing assumes CUDA, and nothing here knows which
method it trains: the method (``reference_trainer.methods``) turns the views' embeddings into a
loss and updates its own state; :mod:`reference_trainer.build` makes the parts,
:mod:`reference_trainer.checkpoint` saves and restores them, :mod:`reference_trainer.reporting`
logs, :mod:`reference_trainer.diagnostics` measures hardness.

Exact resume: the augmentation of each image is seeded by (run seed, step, image index), so a
resumed run draws the same views whatever the number of workers, and every other random stream
is in the checkpoint.

Synchronisation: the loss is checked for non-finite values, and a stop request (SIGINT,
SIGTERM or SIGUSR1, see :mod:`reference_trainer.signals`) is agreed over ranks, once per
``log_every`` steps, together with the metrics flush, so the loop does not wait for the GPU
every step (one process alone stops at the next step). A checkpoint is only written after such
a check, so the last checkpoint always precedes a non-finite loss.

Nothing is written before everything is checked: the run's values are resolved and validated
once (:mod:`reference_trainer.resolve`), the data is scanned, the plan derived, the networks
built, the free space checked; then the main rank claims the run directory
(:func:`reference_trainer.checkpoint.claim_run_dir`). The stop signals are handled from the
start: before the claim a stop ends the command with nothing written, after it the run stops
at its next step with a checkpoint (before its first step it leaves a directory that the same
command, or ``--resume``, starts again in place). Before every checkpoint the weights, buffers
and optimizer state are checked finite (one fused reduction), so a checkpoint is never written
with NaN or infinite values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from rich.console import Console
from torch import Tensor

from syn2co import NonFiniteError, distributed, value_checks
from syn2co.schedules import cosine_schedule

from . import checkpoint as ckpt
from .atomic import RETRY_HINT, write_error
from .build import autocast_dtype, build_components, build_networks, process_group
from .config import TrainConfig, load_config_file, save_config
from .data.pipeline import TrainData, build_train_data
from .devices import resolve_device
from .diagnostics import Source, hardness, tag_generated
from .errors import ConfigError, dataloader_worker_died, one_line
from .methods import MethodOutput, Networks, StepContext
from .models import ema_update, frozen_batch_norm_statistics
from .reporting import MetricsLogger, Pending, RunProgress, StepInfo, records, truncate_metrics
from .resolve import MAX_STEPS, Layer, RunPlan, given_layer, plan_run, requested, resolve_options
from .runlock import RunLock
from .signals import Interrupted, StopRequest

__all__ = [
    "Interrupted",
    "NonFiniteLossError",
    "PreparedRun",
    "RunRequest",
    "TrainSummary",
    "Trainer",
    "describe_data",
    "prepare_run",
    "train",
]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


@dataclass
class TrainSummary:
    """What a call of :func:`train` did.

    Attributes:
        run_dir: The run directory.
        step: The global step the run reached.
        total_steps: Steps of the whole run (``step < total_steps`` after ``--stop-at``).
        last_loss: The loss last logged.
        pairs_per_second: Image pairs per second over this call.
        seconds: Wall time of this call's training loop.
        skipped_files: Unreadable images skipped (distinct files).
        main: This process is the main rank (the one that reports).
        data: What the run trains on, one line per source (see :func:`describe_data`).
        images_seen: Images (pairs of views) trained on by the end of this call, all ranks.
    """

    run_dir: Path
    step: int
    total_steps: int
    last_loss: float
    pairs_per_second: float
    seconds: float
    skipped_files: int
    main: bool = True
    data: tuple[str, ...] = ()
    images_seen: int = 0


@dataclass
class StepResult:
    """One trained step: its loss (on the device), its output, schedule values and sources."""

    loss: Tensor
    output: MethodOutput
    info: StepInfo
    sources: Tensor | None  # (B,) the batch's tags, generated rows included
    hardness: dict[str, float]  # the step's hardness stats, when asked for (else empty)


#: What a caller asks a run to be: a config (its values other than the defaults are what it
#: sets), or the layers of a command line (:func:`reference_trainer.resolve.command_line_layers`).
RunRequest = TrainConfig | Sequence[Layer]


@dataclass
class PreparedRun:
    """A run with every value decided and its data scanned, before anything is written.

    Attributes:
        plan: The resolved options and the numbers derived from them.
        run_dir: Where the run writes.
        state: The checkpoint being resumed, or None for a new run.
        data: The training images (sampler and loader not built yet).
        restarted: ``--resume`` named a run that stopped before its first step (no
            checkpoint): it starts again in place from its ``config.yaml``.
    """

    plan: RunPlan
    run_dir: Path
    state: dict[str, Any] | None
    data: TrainData
    restarted: bool = False


def prepare_run(
    request: RunRequest, *, device: torch.device, rank: int = 0, world_size: int = 1
) -> PreparedRun:
    """Resolve a run's values (once, in the documented order), read the checkpoint it resumes
    and scan its data; nothing is written.

    Raises:
        ConfigError: An option, the checkpoint or the run directory cannot run.
    """
    layers = _layers(request)
    asked = requested(layers)  # what to resume and where to write, before resolution
    state = None
    saved = None
    restart = None if asked.resume is None else ckpt.restartable(asked.resume)
    if restart is not None:  # a run stopped before its first step: start it again in place
        saved = TrainConfig.from_dict(load_config_file(restart), source=str(restart))
    elif asked.resume is not None:
        state = ckpt.load(asked.resume, map_location="cpu")
        saved = TrainConfig.from_dict(state["config"], source=f"{asked.resume} (its config)")
    run_dir = ckpt.run_directory(asked.out, asked.resume)
    options = resolve_options(layers, saved=saved, world_size=world_size)
    config = options.config.updated({"out": str(run_dir)})
    options = dataclasses.replace(options, config=config)
    if state is not None and config.stop_at is not None and config.stop_at <= state["step"]:
        raise ConfigError(
            f"--stop-at {config.stop_at} is not after the checkpoint's step {state['step']}"
        )
    ckpt.check_run_dir(run_dir, resuming=state is not None)
    if state is not None:
        ckpt.check_metrics(run_dir)
    synthetic = config.synthetic_data
    if synthetic is not None and not Path(synthetic).is_dir():
        source = options.sources.get("synthetic_data", "")
        given = "" if source == "command line" else f" (set by {source})"
        raise ConfigError(
            f"--synthetic-data {synthetic}{given} is not a directory: make it with syn2co-train "
            f"synth --out {synthetic} (see docs/trainer/synthetic.md), or pass --synthetic-data "
            "DIR"
        )
    data = build_train_data(config, rank=rank, world_size=world_size, device=device)
    plan = plan_run(options, train_size=data.train_size)
    if plan.total_steps > MAX_STEPS:
        how = plan.derivations()["total_steps"][1]
        raise ConfigError(
            f"the run would take {plan.total_steps} steps ({how}), more than {MAX_STEPS}; "
            "lower --epochs or --images-seen, or give --steps"
        )
    return PreparedRun(plan, run_dir, state, data, restarted=restart is not None)


class Trainer:
    """Builds everything a run needs from a request, then :meth:`run` trains it."""

    def __init__(
        self,
        request: RunRequest,
        device: torch.device,
        console: Console,
        *,
        stop: StopRequest | None = None,
    ) -> None:
        self.console = console
        self.device = device
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.lock: RunLock | None = None
        # The stop signals, handled from before the claim (see train); a caller that enters
        # none gets them from run() on.
        self.stop = stop if stop is not None else StopRequest()
        # Everything is checked before the run directory is created: options, the resumed
        # checkpoint, the directory itself, the data, the plan and the networks.
        prepared = prepare_run(request, device=device, rank=self.rank, world_size=self.world)
        state = prepared.state
        self.run_dir = prepared.run_dir
        self.plan = prepared.plan
        self.cfg = self.plan.config
        self.data: TrainData = prepared.data
        self.data.configure(
            self.cfg,
            total_steps=self.plan.total_steps,
            steps_per_epoch=self.plan.steps_per_epoch,
        )
        self.spec = self.plan.spec
        self.amp_dtype = autocast_dtype(self.cfg.precision, device)
        _check_network_memory(self.plan, device)
        self.parts = build_components(
            self.plan,
            device,
            rank=self.rank,
            world_size=self.world,
            mixing=self.data.mixing,
            amp_dtype=self.amp_dtype,
        )
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk, if known
        if state is not None:
            source = ckpt.find_checkpoint(self.cfg.resume or self.run_dir)
            self._restore_sampler(state["sampler"], source)
            self.step, exact = ckpt.restore_run_state(state, self.parts, source=source)
            self.saved_step = self.step
            if not exact and self.main:
                self.console.print(
                    f"[yellow]resuming a {len(state['rng'])}-rank checkpoint on {self.world} "
                    "ranks: random streams are reseeded, so the continuation is not bit-exact[/]"
                )
        # About what one checkpoint takes on disk (the optimizer's moments are made at the
        # first step); a new one is written beside the previous one.
        self.checkpoint_bytes = ckpt.state_bytes(
            [
                self.parts.online.state_dict(),
                None if self.parts.target is None else self.parts.target.state_dict(),
                self.parts.method.state_dict(),
                None
                if self.parts.learned_generators is None
                else self.parts.learned_generators.state_dict(),
            ]
        ) + 2 * sum(p.numel() * p.element_size() for p in self.parts.params)
        if self.main and prepared.restarted:
            self.console.print(
                f"{self.run_dir} has no checkpoint (its run stopped before its first step): "
                f"starting it again in place from its config.yaml",
                soft_wrap=True,
            )
        elif self.main and state is None and ckpt.stopped_before_first_step(self.run_dir):
            self.console.print(
                f"{self.run_dir} holds a run that stopped before its first step: starting it "
                f"again in place",
                soft_wrap=True,
            )
        # Only now is anything written: the directory, its lock, and on resume the logs cut
        # back to the checkpoint. From here on a stop signal is saved, not raised.
        self.stop.defer()
        _on_every_rank(lambda: self._claim(resuming=state is not None), self.device)

    def _restore_sampler(self, saved: Any, source: Path) -> None:
        """The sampler's position from the checkpoint, or one line saying the data changed."""
        now = self.data.sampler.state_dict()
        if isinstance(saved, dict):
            for key, option in (("real_size", "--data"), ("synthetic_size", "--synthetic-data")):
                if key in saved and saved[key] != now[key]:
                    given = getattr(self.cfg, option[2:].replace("-", "_"))
                    raise ckpt.CheckpointError(
                        f"{option} {given}: the training images changed since {source} was "
                        f"saved ({now[key]} images now, {saved[key]} then); resume with the "
                        f"images the run started with (the same {option} folder and files), "
                        f"or start a new run with another --out"
                    )
        try:
            self.data.sampler.load_state_dict(saved)
        except (TypeError, ValueError, KeyError) as e:
            raise ckpt.CheckpointError(
                f"{source} does not fit this run's data ({one_line(e)}); resume with the data "
                f"and --batch-size the run started with, or start a new run with another --out"
            ) from None

    def _claim(self, *, resuming: bool) -> None:
        if not self.main:
            return
        needed = self.checkpoint_bytes * (1 if resuming else 2) + (1 << 20)
        ckpt.check_space(self.run_dir, needed)
        self.lock = ckpt.claim_run_dir(self.run_dir, resuming=resuming)
        if resuming:
            torn = ckpt.unreadable_metric_lines(self.run_dir)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            if torn:
                lines = ", ".join(map(str, torn[:5])) + (" ..." if len(torn) > 5 else "")
                self.console.print(
                    f"[yellow]warning:[/] {self.run_dir / 'metrics.jsonl'}: dropped "
                    f"{len(torn)} unreadable line(s) (line {lines}: a write cut short); the "
                    f"steps after the checkpoint are logged again",
                    soft_wrap=True,
                )

    def close(self) -> None:
        """Release the run directory (the lock also ends with the process)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ---------------------------------------------------------------------------- state

    def save(self, consumed: int) -> Path:
        """Write the checkpoint of the current step, after checking that every weight, buffer
        and optimizer value is finite (agreed over ranks).

        Raises:
            NonFiniteLossError: A value is NaN or infinite; nothing is written, the previous
                checkpoint stays the last good one.
            OSError: The file cannot be written (one line); the previous checkpoint is intact.
        """
        state = ckpt.run_state(
            self.parts,
            step=self.step,
            config=self.cfg.to_dict(),
            sampler=self.data.sampler.state_dict(consumed=consumed),
        )
        checked = {k: state[k] for k in ("online", "target", "method", "optimizer", "joint")}
        bad = ckpt.nonfinite(ckpt.named_tensors(checked))
        if _agree(torch.tensor(bad is not None), 0, self.device)[0]:
            where = f" ({bad})" if bad is not None else " (on another rank)"
            raise NonFiniteLossError(self._diverged(where, what="the weights"))
        path = self.run_dir / ckpt.CHECKPOINT_NAME

        def write() -> None:
            if not self.main:
                return
            try:
                ckpt.save_atomic(state, path, size=self.checkpoint_bytes)
            except OSError as e:
                what = (e.strerror or str(e)).removesuffix(RETRY_HINT)
                then = (
                    f"the checkpoint of step {self.saved_step} is intact: free some space and "
                    f"continue with --resume {self.run_dir}"
                    if self.saved_step is not None
                    else "no checkpoint was written yet: free some space and start again with "
                    "an empty --out"
                )
                raise OSError(e.errno, f"{what} (at step {self.step}); {then}") from None

        _on_every_rank(write, self.device)
        self.saved_step = self.step
        return path

    # ---------------------------------------------------------------------------- one step

    def train_step(
        self,
        view1: Tensor,
        view2: Tensor,
        sources: Tensor | None = None,
        *,
        measure_hardness: bool = False,
    ) -> StepResult:
        """One optimizer step on a batch of two views (B, 3, H, W) already on the device.

        ``sources`` (B,) tags each image real (0) or synthetic (1) when mixing. With
        ``measure_hardness`` the result holds the step's hardness stats, measured against the
        banks the loss used, before they take this step's keys.
        """
        r, parts = self.plan, self.parts
        lr = cosine_schedule(
            self.step,
            r.total_steps,
            r.lr,
            r.min_lr,
            warmup_steps=r.warmup_steps,
            warmup_start=r.warmup_lr,
        )
        ema_start = self.cfg.momentum
        assert ema_start is not None  # filled by the method's preset
        momentum = (
            ema_start
            if r.preset.ema_schedule == "constant"
            else cosine_schedule(self.step, r.total_steps, ema_start, 1.0)
        )
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        negatives_active = self.spec is not None and r.window.active(self.step)
        real_rows = view1.shape[0]
        real_view = view1
        groups = None
        if (
            parts.learned_generators is not None
        ):  # generated hard samples and pairs join the batch, detached
            if r.method.multi_positive:  # two views of each pair image, the pair one group
                view1, view2, groups = parts.learned_generators.extend_views_grouped(
                    view1, view2, self.step
                )
            else:
                view1, view2 = parts.learned_generators.extend_views(view1, view2, self.step)
            if sources is not None:
                sources = tag_generated(sources, view1.shape[0])
        autocast = torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )
        nets = Networks(
            parts.online_step,
            parts.target_step,
            parts.batch_norm,
            self.step,
            self.cfg.seed,
            lambda: frozen_batch_norm_statistics(parts.online, parts.target),
        )
        with autocast:
            embeddings = parts.method.encode(nets, (view1, view2))
            ctx = StepContext(negatives_active, parts.negatives_gen, sources, groups)
            out = parts.method(embeddings, ctx)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(out.loss).backward()
        clip = self.cfg.clip_grad or 0.0
        if clip > 0:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.params, clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        if parts.target is not None:
            ema_update(parts.target, parts.online.encoder, momentum)
        # The banks are views of the queues: measure them before this step's keys enter.
        stats = self._hardness(out, sources) if measure_hardness else {}
        # Generated rows follow the real ones; keep them out of the banks if asked.
        kept = view1.shape[0] if self.cfg.generator_keys_enqueued else real_rows
        parts.method.update(embeddings.rows(kept), None if sources is None else sources[:kept])
        if (
            parts.learned_generators is not None
        ):  # then the generators' step, with the encoder frozen
            encoder = parts.online.encoder
            parts.learned_generators.generator_step(
                lambda images: encoder((images,))[0], real_view, self.step, encoder=encoder
            )
        self.step += 1
        info = StepInfo(lr, momentum, negatives_active)
        return StepResult(out.loss.detach(), out, info, sources, stats)

    def _hardness(self, output: MethodOutput, sources: Tensor | None) -> dict[str, float]:
        """Hardness stats of the step's first loss direction (see ``diagnostics.hardness``)."""
        return hardness(
            output.directions[0],
            self.spec,
            sources,
            generated=self.parts.learned_generators is not None,
        )

    # ---------------------------------------------------------------------------- the loop

    def run(self, *, show_progress: bool = True) -> TrainSummary:
        cfg, total = self.cfg, self.plan.total_steps
        stop_step = min(total, cfg.stop_at) if cfg.stop_at is not None else total
        if self.main:
            header = "\n".join(
                [
                    "The options of this run, as syn2co-train run --config reads them back.",
                    *describe_data(self.plan, self.data),
                    *(f"{k}: {v}  ({how})" for k, (v, how) in self.plan.derivations().items()),
                ]
            )
            # resume and stop_at describe this invocation, not the run: a config file read
            # back with --config starts the same run afresh
            invocation = {"resume": None, "stop_at": None}
            save_config(cfg.updated(invocation), self.run_dir / "config.yaml", header=header)
            self._describe()
        stop = self.stop
        # A stop that came during the start-up (agreed over ranks): before the log is opened,
        # so that the directory holds only config.yaml and starts again in place.
        signum = _agree(torch.zeros((), device=self.device), stop.signum, self.device)[1]
        if signum:
            raise self._stopped_before_first_step(signum)
        logger = MetricsLogger(self.run_dir, enabled=self.main, resumed_step=self.step)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        pending: list[Pending] = []
        last_loss = float("nan")
        t_start = t_flush = time.perf_counter()
        step_at_flush = start = self.step
        skipped: set[str] = set()  # the unreadable files met (each counted once)
        progress = RunProgress(
            self.console,
            total=total,
            done=self.step,
            every=cfg.progress_every,
            enabled=self.main and show_progress,
        )

        def flush() -> int:
            """Check the loss, agree on a stop over ranks, log the pending steps; returns the
            agreed stop signal (0: none)."""
            nonlocal last_loss, t_flush, step_at_flush
            bad, signum = _agree(nonfinite, stop.signum, self.device)
            if bad:
                raise NonFiniteLossError(self._diverged())
            now = time.perf_counter()
            rate = (self.step - step_at_flush) * cfg.batch_size / max(now - t_flush, 1e-9)
            t_flush, step_at_flush = now, self.step
            lr = pending[-1].info.lr if pending else float("nan")
            for record in records(pending, rate, self.device) if pending else []:
                try:
                    logger.write(record)
                except OSError as e:
                    raise write_error(self.run_dir / "metrics.jsonl", e) from None
                last_loss = record["loss"]
            pending.clear()
            last = self.step == stop_step or signum != 0
            epoch = self.data.sampler.epoch
            progress.update(self.step, loss=last_loss, lr=lr, rate=rate, epoch=epoch, last=last)
            return signum

        def save(consumed: int) -> None:
            logger.flush()  # what the checkpoint covers is on disk before it
            self.save(consumed)

        consumed = 0
        handlers: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if stop.entered else stop
        )
        with (
            progress,
            handlers,
            value_checks(cfg.check_inputs),
            contextlib.closing(logger),
            contextlib.ExitStack() as cleanup,
        ):
            batches = self.data.iterate(self.step)
            # However the loop ends, its DataLoader workers end with it: they ignore the stop
            # signals, so one left running (by an error whose traceback keeps the iterator)
            # would hold up the exit of the process.
            cleanup.callback(lambda: _stop_workers(batches))
            while self.step < stop_step:
                try:
                    batch = next(batches)
                except StopIteration:
                    batches, consumed = self.data.iterate(self.step), 0
                    continue
                except RuntimeError as e:
                    # A DataLoader worker died while the main process waited for its batch:
                    # the last step is complete, so keep it (one rank alone cannot save).
                    if not dataloader_worker_died(e) or self.world > 1:
                        raise
                    signum = flush()
                    save(consumed)
                    if signum:
                        raise self._interrupted(signum) from None
                    raise RuntimeError(
                        f"a DataLoader worker died ({one_line(e)}); checkpoint saved at step "
                        f"{self.step}; continue with --resume {self.run_dir}"
                    ) from None
                consumed += 1
                if batch.skipped:
                    skipped.update(batch.skipped)
                    self.data.report_skipped(batch.skipped, self.console if self.main else None)
                v1 = batch.view1.to(self.device, non_blocking=True)
                v2 = batch.view2.to(self.device, non_blocking=True)
                generators = self.parts.learned_generators
                mixed = self.data.mixing or generators is not None
                sources = batch.sources if mixed else None
                try:
                    # the step about to run is number self.step + 1
                    due = (self.step + 1) % cfg.hardness_every == 0 or self.step == 0
                    result = self.train_step(v1, v2, sources, measure_hardness=due)
                    stats = result.hardness
                    if due and generators is not None:
                        stats |= {k: float(v) for k, v in generators.metrics.items()}
                    if (
                        generators is not None
                        and self.main
                        and (self.step % cfg.generator_grid_every == 0 or self.step == 1)
                    ):
                        generators.save_grid(
                            self.run_dir / "generated" / f"step_{self.step:07d}.png", step=self.step
                        )
                except NonFiniteError as e:  # syn2co's checks saw diverged embeddings first
                    raise NonFiniteLossError(self._diverged(f"({e})")) from None
                nonfinite |= ~torch.isfinite(result.loss)
                counts = None
                if sources is not None:  # the batch's composition, summed over ranks later
                    counts = torch.stack(
                        [(sources == Source.REAL).sum(), (sources == Source.SYNTHETIC).sum()]
                    )
                pending.append(
                    Pending(
                        self.step, result.loss, result.info, self.data.sampler.epoch, stats, counts
                    )
                )

                boundary = self.step % cfg.log_every == 0 or self.step == stop_step
                ckpt_due = self.step % cfg.checkpoint_every == 0 or self.step == stop_step
                # One process stops at the next step; several agree at the next boundary,
                # where every rank meets (a signal reaches the ranks at different steps).
                asked = stop.requested and self.world == 1
                if not (boundary or ckpt_due or asked):
                    continue
                signum = flush()
                if ckpt_due or signum:
                    save(consumed)
                if signum:
                    raise self._interrupted(signum)
        seconds = time.perf_counter() - t_start
        done = self.step - start
        return TrainSummary(
            self.run_dir,
            self.step,
            total,
            last_loss,
            done * cfg.batch_size / max(seconds, 1e-9),
            seconds,
            len(skipped),
            self.main,
            tuple(describe_data(self.plan, self.data)),
            self.step * cfg.batch_size,
        )

    def _interrupted(self, signum: int) -> Interrupted:
        name = signal.Signals(signum).name
        return Interrupted(
            f"{name} at step {self.step}; checkpoint saved in {self.run_dir}; continue with "
            f"--resume {self.run_dir}",
            signum=signum,
        )

    def _stopped_before_first_step(self, signum: int) -> Interrupted:
        """A stop signal that came before this invocation trained a step."""
        name = signal.Signals(signum).name
        if self.saved_step is not None:
            return Interrupted(
                f"{name} at step {self.step}, before this run's first step; the checkpoint of "
                f"step {self.step} in {self.run_dir} is current; continue with --resume "
                f"{self.run_dir}",
                signum=signum,
            )
        return Interrupted(
            f"{name} before the run's first step: no checkpoint yet, nothing lost; start it "
            f"again in place with the same command or --resume {self.run_dir}",
            signum=signum,
        )

    def _diverged(self, detail: str = "", *, what: str = "the loss") -> str:
        last = self.run_dir / ckpt.CHECKPOINT_NAME
        if self.saved_step is not None:
            where = f"the last good checkpoint is {last} (step {self.saved_step})"
        elif last.exists():
            where = f"the last good checkpoint is {last}"
        else:
            where = "no checkpoint was written yet"
        return (
            f"{what} became NaN or infinite by step {self.step}{' ' if detail else ''}"
            f"{detail.strip()}; {where}; lower --lr, raise --warmup-steps or check the data"
        )

    def _describe(self) -> None:
        cfg, r = self.cfg, self.plan
        n_params = sum(p.numel() for p in self.parts.online.parameters())
        neg = (
            "none"
            if self.spec is None
            else f"{cfg.negatives} ({self.spec.total}/query, N={self.spec.n_hard}, steps "
            f"{r.window.start}-{'end' if r.window.end is None else r.window.end})"
        )
        self.console.print(
            f"[bold]syn2co-train[/] {cfg.method} {cfg.arch} {cfg.img_size}px | "
            f"{self.data.train_size} images, batch {cfg.batch_size} over {self.world} rank(s), "
            f"{r.total_steps} steps ({r.steps_per_epoch}/epoch) | negatives {neg} | "
            f"{n_params / 1e6:.1f}M params | {self.device} "
            f"{ {torch.bfloat16: 'bf16', torch.float16: 'fp16', None: 'fp32'}[self.amp_dtype] }"
            f"{' compiled' if cfg.compile else ''} | {self.run_dir}"
        )
        for line in describe_data(r, self.data):
            self.console.print(line, soft_wrap=True, highlight=False, markup=False)


def train(
    request: RunRequest, *, console: Console | None = None, show_progress: bool = True
) -> TrainSummary:
    """Pretrain as ``request`` says; returns a summary.

    Args:
        request: A :class:`~reference_trainer.config.TrainConfig` (the values other than its
            defaults are what the caller sets; the method's preset fills the rest) or the
            layers of a command line.
        console: Where progress and messages go (stderr by default).
        show_progress: Show the progress display.

    Raises:
        ConfigError, NonFiniteLossError, Interrupted or the data package's DatasetError, with
        one-line messages.
    """
    console = console or Console(stderr=True)
    device = resolve_device(requested(_layers(request)).device)
    # The stop signals are handled from the start: until the run directory is claimed a stop
    # ends the command with nothing written, then the loop saves and stops.
    with StopRequest(immediate=True) as stop, process_group(device):
        trainer = Trainer(request, device, console, stop=stop)
        try:
            return trainer.run(show_progress=show_progress)
        finally:
            trainer.close()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def describe_data(plan: RunPlan, data: TrainData) -> list[str]:
    """What a run trains on: each source with its path and size, the synthetic fraction, and
    what an epoch and the whole run are in steps and in images."""
    cfg = plan.config
    real = len(cast(Sized, data.real))
    where = cfg.data if cfg.data is not None else "(generated in memory)"
    lines = [f"data: {cfg.dataset} {where}, {real} images"]
    if data.synthetic is not None:
        fraction = f"{cfg.synthetic_fraction:g}"
        if cfg.synthetic_schedule != "constant":
            fraction += f" -> {cfg.synthetic_fraction_end:g} ({cfg.synthetic_schedule})"
        synthetic = len(cast(Sized, data.synthetic))
        lines.append(
            f"synthetic: {cfg.synthetic_data}, {synthetic} images, fraction {fraction} of "
            "every batch"
        )
    batch = cfg.batch_size
    lines.append(
        f"epoch: {plan.steps_per_epoch} steps = {plan.steps_per_epoch * batch} images "
        f"(one pass over {plan.train_size}); run: {plan.total_steps} steps = "
        f"{plan.total_steps * batch} images seen"
    )
    return lines


def _layers(request: RunRequest) -> list[Layer]:
    return [given_layer(request)] if isinstance(request, TrainConfig) else list(request)


def _on_every_rank(action: Callable[[], None], device: torch.device) -> None:
    """Run ``action`` on every rank; if it fails on any, fail on all (no rank waits forever
    in a collective for one that gave up)."""
    error: Exception | None = None
    try:
        action()
    except Exception as e:  # raised below, after the other ranks know
        error = e
    failed = error is not None
    if distributed.world_size() > 1:
        flag = torch.tensor(float(failed), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        failed = bool(flag.item())
    if error is not None:
        try:
            raise error
        finally:
            error = None  # no reference cycle through this frame: the traceback is freed
    if failed:
        raise ConfigError("another rank could not prepare the run; see its error")


def _check_network_memory(plan: RunPlan, device: torch.device) -> None:
    """Refuse, before anything is allocated, networks whose weights, gradients, optimizer
    moments and EMA target alone exceed the device's memory (counted on the meta device)."""
    from .atomic import human_bytes

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            online, target = build_networks(plan.config, plan.method, plan.method_settings())
    except Exception:  # the real build says what is wrong
        return
    weights = sum(p.numel() for p in online.parameters())
    trainable = sum(p.numel() for p in online.parameters() if p.requires_grad)
    ema = 0 if target is None else sum(p.numel() for p in target.parameters())
    needed = 4 * (weights + ema + 3 * trainable)  # float32: gradients and two moments
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
    if needed > available:
        raise ConfigError(
            f"the networks alone take about {human_bytes(needed)} ({weights / 1e6:.0f}M "
            f"parameters with their gradients, optimizer moments and EMA target), more than "
            f"the {human_bytes(available)} of memory of {device}; lower --embed-dim, --depth, "
            f"--proj-hidden or --proj-dim"
        )


def _stop_workers(batches: Any) -> None:
    """Shut down the DataLoader workers behind an iterator of batches (a DataLoader's own
    iterator, or a generator over one)."""
    close = getattr(batches, "close", None)
    if callable(close):
        close()
    shutdown = getattr(batches, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def _agree(nonfinite: Tensor, signum: int, device: torch.device) -> tuple[bool, int]:
    """One synchronisation: any rank saw a non-finite loss; the stop signal any rank received
    (the largest number when several did, 0 when none)."""
    flags = torch.stack([nonfinite.to(device).float(), torch.tensor(float(signum), device=device)])
    if distributed.world_size() > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, agreed = flags.tolist()
    return bool(bad), int(agreed)
