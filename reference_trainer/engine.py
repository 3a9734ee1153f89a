"""The training loop: precision, compile, DDP, schedules, logging, checkpoints, guards.

One process on the CPU or one GPU, or several processes under ``torchrun`` (DDP, one GPU per
process, NCCL on CUDA and gloo on the CPU). Nothing assumes CUDA.

Exact resume: a checkpoint holds the online and target networks, the queues, the optimizer,
the loss scaler, the sampler position (batches consumed, not prefetched), the step (every
schedule is a pure function of it), every rank's RNG states and the resolved config. The
augmentation of each image is seeded by (run seed, step, image index), so a resumed run draws
the same views whatever the number of workers.

Synchronisation: the loss is checked for non-finite values, and a stop request (SIGINT or
SIGTERM) is agreed over ranks, once per ``log_every`` steps, together with the metrics flush,
so the loop does not wait for the GPU every step. A checkpoint is only written after such a
check, so the last checkpoint always precedes a non-finite loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from syn2co import NonFiniteError, distributed, value_checks
from syn2co.diagnostics import hardness_stats
from syn2co.samplers import REAL, SYNTHETIC
from syn2co.schedules import ActiveWindow, cosine_schedule

from . import checkpoint as ckpt
from .config import ConfigError, Resolved, TrainConfig, resolve, save_config
from .data.pipeline import TrainData, build_train_data
from .joint import JointGenerators
from .methods import MethodOutput, MoBY, MoCoV3
from .models import build_networks, ema_update, parameter_groups

GENERATED = 2  # source tag of the jointly generated images in a batch

#: Options that may differ from the checkpoint's config when resuming. Everything else must
#: match, or the continuation would not be the run that was started.
RESUMABLE_OVERRIDES = frozenset(
    {
        "resume",
        "out",
        "workers",
        "log_every",
        "checkpoint_every",
        "hardness_every",
        "stop_at",
        "compile",
        "device",
        "data",
        "val_data",
        "check_inputs",
        "loader",
    }
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM stopped the run after a checkpoint was written."""


def _tag_generated(sources: Tensor, rows: int) -> Tensor:
    """The batch's source tags (B,) followed by GENERATED for the jointly generated rows that
    follow the batch, ``rows`` in all (the tags unchanged when there are none)."""
    return torch.cat([sources, sources.new_full((rows - sources.shape[0],), GENERATED)])


@dataclass(frozen=True)
class _StepInfo:
    lr: float
    momentum: float
    synthetic: bool  # synthetic negatives were active


@dataclass
class _Pending:
    """A trained step whose numbers still live on the device (read at the next flush)."""

    step: int
    loss: Tensor
    info: _StepInfo
    epoch: int
    hardness: dict[str, float]
    counts: Tensor | None  # (2,) real and synthetic images in this rank's batch


@dataclass
class TrainSummary:
    run_dir: Path
    step: int
    total_steps: int
    last_loss: float
    pairs_per_second: float
    seconds: float
    skipped_files: int


# --------------------------------------------------------------------------------------------
# Devices and process groups
# --------------------------------------------------------------------------------------------


def _device(cfg: TrainConfig) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    try:
        device = torch.device(cfg.device)
    except RuntimeError:
        raise ConfigError(f"--device: not a device: {cfg.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    if cfg.device == "cuda":  # a bare "cuda" means this rank's GPU
        device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        started = True
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32."""
    if cfg.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[cfg.precision]


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Builds everything a run needs from a config, then :meth:`run` trains it."""

    def __init__(self, cfg: TrainConfig, device: torch.device, console: Console) -> None:
        self.console = console
        self.device = device
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.run_dir = Path(cfg.out)
        state = self._prepare_run_dir(cfg)
        if state is not None:
            cfg = _merge_resume_config(TrainConfig.from_dict(state["config"]), cfg)
        self.data: TrainData = build_train_data(
            cfg, rank=self.rank, world_size=self.world, device=device
        )
        self.resolved: Resolved = resolve(
            cfg, train_size=self.data.train_size, world_size=self.world
        )
        self.cfg = cfg = self.resolved.config
        self.data.configure(self.resolved)
        self.spec = self.resolved.spec
        self.window = ActiveWindow(cfg.negatives_start, cfg.negatives_end)
        self.amp_dtype = _precision(cfg, device)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        online, target = build_networks(cfg)
        self.online, self.target = online.to(device), target.to(device)
        init_gen = torch.Generator().manual_seed(cfg.seed + 1)
        if cfg.method == "moby":
            assert cfg.queue_size is not None
            self.method: MoBY | MoCoV3 = MoBY(
                cfg.proj_dim,
                cfg.queue_size,
                temperature=cfg.temperature,
                spec=self.spec,
                generator=init_gen,
                # tag the keys by source when there is more than one (real, synthetic, generated)
                tags=self.data.mixing or cfg.generator != "none",
            ).to(device)
        else:
            self.method = MoCoV3(temperature=cfg.temperature, spec=self.spec)
        self.negatives_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1009 + self.rank)
        torch.manual_seed(cfg.seed * 7919 + 17 + self.rank)  # drop-path differs per rank

        assert cfg.weight_decay is not None and cfg.lr is not None
        self.params = [p for p in self.online.parameters() if p.requires_grad]
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.online, cfg.weight_decay),
            lr=cfg.lr,
            fused=fused,
            foreach=None if fused else True,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

        model: nn.Module = self.online
        if self.world > 1:
            model = DistributedDataParallel(
                self.online,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # the heads' BatchNorm is already synchronised
            )
        self.online_step: nn.Module = model
        self.target_step: nn.Module = self.target
        if cfg.compile:
            self.online_step = torch.compile(model)  # type: ignore[assignment]
            self.target_step = torch.compile(self.target)  # type: ignore[assignment]

        self.joint: JointGenerators | None = None
        if cfg.generator != "none":
            self.joint = JointGenerators(
                cfg.generator,
                image_size=cfg.img_size,
                total_steps=self.resolved.total_steps,
                batch_fraction=cfg.generator_fraction,
                lr=cfg.generator_lr,
                temperature=cfg.temperature,
                seed=cfg.seed,
                rank=self.rank,
            ).to(device)

        self.step = 0
        if state is not None:
            self._load_state(state)

    # ---------------------------------------------------------------------------- run dir

    def _prepare_run_dir(self, cfg: TrainConfig) -> dict[str, Any] | None:
        run_dir = self.run_dir
        try:
            if self.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                probe = run_dir / f".write-test-{os.getpid()}"
                probe.write_text("")
                probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out: cannot write to {run_dir}: {e.strerror or e}") from None
        if cfg.resume is not None:
            return ckpt.load(cfg.resume, map_location="cpu")
        if (run_dir / ckpt.CHECKPOINT_NAME).exists():
            raise ConfigError(
                f"--out {run_dir} already holds a run; continue it with --resume {run_dir} "
                f"or choose another --out"
            )
        return None

    # ---------------------------------------------------------------------------- state

    def _state(self, consumed: int) -> dict[str, Any]:
        rng = ckpt.rng_state(self.negatives_gen)
        rngs = [rng]
        if self.world > 1:
            rngs = [None] * self.world  # type: ignore[list-item]
            dist.all_gather_object(rngs, rng)
        return {
            "format": ckpt.FORMAT_VERSION,
            "step": self.step,
            "config": self.cfg.to_dict(),
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.data.sampler.state_dict(consumed=consumed),
            "rng": rngs,
            "world_size": self.world,
            "joint": None if self.joint is None else self.joint.state_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.sampler.load_state_dict(state["sampler"])
        if self.joint is not None:
            self.joint.load_state_dict(state["joint"])
        self.step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == self.world:
            ckpt.set_rng_state(rngs[self.rank], self.negatives_gen)
        elif self.main:
            self.console.print(
                f"[yellow]resuming {len(rngs)}-rank checkpoint on {self.world} ranks: random "
                "streams are reseeded, so the continuation is not bit-exact[/]"
            )
        if self.main:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    def save(self, consumed: int) -> Path:
        state = self._state(consumed)
        path = self.run_dir / ckpt.CHECKPOINT_NAME
        if self.main:
            ckpt.save_atomic(state, path)
        if self.world > 1:
            dist.barrier()
        return path

    # ---------------------------------------------------------------------------- one step

    def train_step(
        self, view1: Tensor, view2: Tensor, sources: Tensor | None = None
    ) -> tuple[Tensor, MethodOutput, _StepInfo]:
        """One optimizer step on a batch of two views (B, 3, H, W) already on the device.

        ``sources`` (B,) tags each image real (0) or synthetic (1) when mixing.
        """
        cfg, total = self.cfg, self.resolved.total_steps
        assert cfg.lr is not None and cfg.warmup_steps is not None and cfg.clip_grad is not None
        lr = cosine_schedule(self.step, total, cfg.lr, 0.0, warmup_steps=cfg.warmup_steps)
        momentum = cosine_schedule(self.step, total, cfg.momentum, 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        synthetic = self.spec is not None and self.window.active(self.step)
        real_view = view1
        if self.joint is not None:  # generated hard samples and pairs join the batch, detached
            view1, view2 = self.joint.extend_views(view1, view2, self.step)
            if sources is not None:
                sources = _tag_generated(sources, view1.shape[0])
        autocast = torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )
        with autocast:
            p1, p2 = self.online_step(view1, view2)
            with torch.no_grad():
                t1, t2 = self.target_step((view1, view2))
            out = self.method(
                p1, p2, t1, t2, synthetic=synthetic, generator=self.negatives_gen, sources=sources
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ema_update(self.target, self.online.encoder, momentum)
        # Generated rows follow the real ones; keep them out of the queues if asked.
        kept = t1.shape[0] if cfg.generator_keys_enqueued else real_view.shape[0]
        self.method.update(
            t1[:kept].detach(), t2[:kept].detach(), None if sources is None else sources[:kept]
        )
        if self.joint is not None:  # then the generators' step, with the encoder frozen
            encoder = self.online.encoder
            self.joint.generator_step(
                lambda images: encoder((images,))[0], real_view, self.step, encoder=encoder
            )
        self.step += 1
        return out.loss.detach(), out, _StepInfo(lr, momentum, synthetic)

    def hardness(self, out: MethodOutput, sources: Tensor | None) -> dict[str, float]:
        """The syn2co.diagnostics hardness stats of direction 1, split by source when mixing
        real and synthetic images or training generators.

        ``<source>_queries/...``: real (synthetic, generated) images as queries, with their
        positives; ``<source>_negatives/...``: the real-negative groups restricted to bank
        entries that came from real (synthetic, generated) images.
        """
        d = out.directions[0]
        n_hard = self.spec.n_hard if self.spec else 256
        stats = hardness_stats(
            d.query,
            d.positive,
            d.bank,
            d.synthetic,
            spec=self.spec if d.synthetic is not None else None,
            n_hard=min(n_hard, d.bank.shape[0] - 1),
            exclude=d.exclude,
            prefix="hardness/",
        )
        if sources is None:
            return stats
        sources = sources.to(d.query.device)
        sources = _tag_generated(sources, d.query.shape[0])
        groups = [("real", REAL), ("synthetic", SYNTHETIC)]
        if self.joint is not None:
            groups.append(("generated", GENERATED))
        for name, code in groups:
            rows = sources == code
            if bool(rows.any()):
                stats |= hardness_stats(
                    d.query[rows],
                    d.positive[rows],
                    d.bank,
                    None if d.synthetic is None else d.synthetic[rows],
                    spec=self.spec if d.synthetic is not None else None,
                    n_hard=min(n_hard, d.bank.shape[0] - 1),
                    exclude=None if d.exclude is None else d.exclude[rows],
                    prefix=f"hardness/{name}_queries/",
                )
            if d.bank_tags is None:
                continue
            exclude = (d.bank_tags != code)[None, :].expand(d.query.shape[0], -1)
            if d.exclude is not None:
                exclude = exclude | d.exclude
            available = int((~exclude).sum(dim=1).min())
            if available >= 1:
                group = hardness_stats(
                    d.query,
                    d.positive,
                    d.bank,
                    exclude=exclude,
                    n_hard=min(n_hard, available),
                    prefix=f"hardness/{name}_negatives/",
                )
                stats |= {k: v for k, v in group.items() if "/positive/" not in k}
        return stats

    # ---------------------------------------------------------------------------- the loop

    def run(self, *, show_progress: bool = True) -> TrainSummary:
        cfg, total = self.cfg, self.resolved.total_steps
        stop = min(total, cfg.stop_at) if cfg.stop_at is not None else total
        if self.main:
            save_config(cfg, self.run_dir / "config.yaml")
            self._describe()
        logger = MetricsLogger(self.run_dir, enabled=self.main)
        stop_requested = _StopFlag()
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        pending: list[_Pending] = []
        last_loss = float("nan")
        t_start = t_flush = time.perf_counter()
        step_at_flush = start = self.step
        skipped_total = 0

        progress = _progress(self.console, enabled=self.main and show_progress)
        task = progress.add_task(
            "pretraining",
            total=total,
            completed=self.step,
            loss=float("nan"),
            lr=0.0,
            rate=0.0,
            epoch=0,
        )
        consumed = 0
        batches = self.data.iterate(self.step)
        with progress, stop_requested, value_checks(cfg.check_inputs):
            while self.step < stop:
                try:
                    batch = next(batches)
                except StopIteration:
                    batches, consumed = self.data.iterate(self.step), 0
                    continue
                consumed += 1
                if batch.skipped:
                    skipped_total += len(batch.skipped)
                    self.data.report_skipped(batch.skipped, self.console if self.main else None)
                v1 = batch.view1.to(self.device, non_blocking=True)
                v2 = batch.view2.to(self.device, non_blocking=True)
                mixed = self.data.mixing or self.joint is not None
                sources = batch.sources if mixed else None
                try:
                    loss, out, info = self.train_step(v1, v2, sources)
                    due = self.step % cfg.hardness_every == 0 or self.step == 1
                    hardness = self.hardness(out, sources) if due else {}
                    if due and self.joint is not None:
                        hardness |= {k: float(v) for k, v in self.joint.metrics.items()}
                    if (
                        self.joint is not None
                        and self.main
                        and (self.step % cfg.generator_grid_every == 0 or self.step == 1)
                    ):
                        self.joint.save_grid(
                            self.run_dir / "generated" / f"step_{self.step:07d}.png", step=self.step
                        )
                except NonFiniteError as e:  # syn2co's checks saw diverged embeddings first
                    raise NonFiniteLossError(self._diverged(f"({e})")) from None
                nonfinite |= ~torch.isfinite(loss)
                counts = None
                if sources is not None:  # the batch's composition, summed over ranks later
                    counts = torch.stack([(sources == REAL).sum(), (sources == SYNTHETIC).sum()])
                pending.append(
                    _Pending(self.step, loss, info, self.data.sampler.epoch, hardness, counts)
                )

                boundary = self.step % cfg.log_every == 0 or self.step == stop
                ckpt_due = self.step % cfg.checkpoint_every == 0 or self.step == stop
                if not (boundary or ckpt_due or stop_requested.local):
                    continue
                bad, halt = _agree(nonfinite, stop_requested.local, self.device)
                if bad:
                    raise NonFiniteLossError(self._diverged())
                now = time.perf_counter()
                rate = (self.step - step_at_flush) * cfg.batch_size / max(now - t_flush, 1e-9)
                t_flush, step_at_flush = now, self.step
                for record in _records(pending, rate, self.device):
                    logger.write(record)
                    last_loss = record["loss"]
                pending.clear()
                progress.update(
                    task,
                    completed=self.step,
                    loss=last_loss,
                    lr=info.lr,
                    rate=rate,
                    epoch=self.data.sampler.epoch,
                )
                if ckpt_due or halt:
                    self.save(consumed)
                if halt:
                    raise Interrupted(
                        f"stopped at step {self.step}; checkpoint saved in {self.run_dir}; "
                        f"continue with --resume {self.run_dir}"
                    )
        logger.close()
        seconds = time.perf_counter() - t_start
        done = self.step - start
        return TrainSummary(
            self.run_dir,
            self.step,
            total,
            last_loss,
            done * cfg.batch_size / max(seconds, 1e-9),
            seconds,
            skipped_total,
        )

    def _diverged(self, detail: str = "") -> str:
        last = self.run_dir / ckpt.CHECKPOINT_NAME
        where = (
            f"the last good checkpoint is {last}"
            if last.exists()
            else "no checkpoint was written yet"
        )
        return (
            f"the loss became NaN or infinite by step {self.step} {detail}; {where}; lower --lr, "
            f"raise --warmup-steps or check the data"
        ).replace("  ", " ")

    def _describe(self) -> None:
        cfg, r = self.cfg, self.resolved
        n_params = sum(p.numel() for p in self.online.parameters())
        neg = (
            "none"
            if self.spec is None
            else f"{cfg.negatives} ({self.spec.total}/query, N={self.spec.n_hard})"
        )
        self.console.print(
            f"[bold]syn2co-train[/] {cfg.method} {cfg.arch} {cfg.img_size}px | "
            f"{self.data.train_size} images, batch {cfg.batch_size} over {self.world} rank(s), "
            f"{r.total_steps} steps ({r.steps_per_epoch}/epoch) | negatives {neg} | "
            f"{n_params / 1e6:.1f}M params | {self.device} "
            f"{ {torch.bfloat16: 'bf16', torch.float16: 'fp16', None: 'fp32'}[self.amp_dtype] }"
            f"{' compiled' if cfg.compile else ''} | {self.run_dir}"
        )


def train(
    cfg: TrainConfig, *, console: Console | None = None, show_progress: bool = True
) -> TrainSummary:
    """Pretrain as ``cfg`` says; returns a summary. Raises ConfigError, NonFiniteLossError,
    Interrupted or the data package's DatasetError with one-line messages."""
    console = console or Console(stderr=True)
    device = _device(cfg)
    with process_group(device):
        trainer = Trainer(cfg, device, console)
        return trainer.run(show_progress=show_progress)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _merge_resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The checkpoint's config, with only the options that keep the run the same."""
    defaults = TrainConfig()
    # Options about this invocation only, never inherited from the interrupted one.
    changed: dict[str, Any] = {"resume": given.resume, "stop_at": given.stop_at}
    for name in TrainConfig.field_names():
        if name in changed:
            continue
        value = getattr(given, name)
        if value == getattr(defaults, name) or value == getattr(saved, name):
            continue  # not given on the command line, or the same as the run's
        if name not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"--resume: option '{name}' differs from the checkpoint's run "
                f"({getattr(saved, name)!r} there, {value!r} here); start a new run to change it"
            )
        changed[name] = value
    return saved.updated(changed)


def _agree(nonfinite: Tensor, stop: bool, device: torch.device) -> tuple[bool, bool]:
    """One synchronisation: any rank saw a non-finite loss, any rank was asked to stop."""
    flags = torch.stack([nonfinite.to(device).float(), torch.tensor(float(stop), device=device)])
    if distributed.world_size() > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, halt = flags.tolist()
    return bool(bad), bool(halt)


def _records(pending: list[_Pending], rate: float, device: torch.device) -> list[dict[str, Any]]:
    """The metrics lines of the pending steps, with one reduction over ranks.

    The logged loss is the global batch's (the mean of the ranks' local means); the real and
    synthetic counts are summed over ranks.
    """
    world = distributed.world_size()
    losses = torch.stack([p.loss.float() for p in pending]) / world
    counted = [p.counts for p in pending if p.counts is not None]
    counts = torch.stack(counted).to(device).float() if counted else losses.new_zeros(0, 2)
    packed = torch.cat([losses.to(device), counts.flatten()])
    if world > 1:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    values = packed.tolist()
    loss_values, count_values = values[: len(pending)], values[len(pending) :]
    records = []
    for i, p in enumerate(pending):
        record: dict[str, Any] = {
            "step": p.step,
            "epoch": p.epoch,
            "loss": loss_values[i],
            "lr": p.info.lr,
            "momentum": p.info.momentum,
            "synthetic_negatives": p.info.synthetic,
            "img_per_s": rate,
        }
        if p.counts is not None:
            record["real"] = round(count_values[2 * i])
            record["synthetic"] = round(count_values[2 * i + 1])
        records.append(record | p.hardness)
    return records


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.local = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.local and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.local = True

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class MetricsLogger:
    """JSON lines per step in ``metrics.jsonl``, and TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, *, enabled: bool) -> None:
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb: Any = None
        if enabled:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines an interrupted run logged after its last checkpoint."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in keep))


def _progress(console: Console, *, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
