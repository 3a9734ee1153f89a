"""``syn2co-train eval knn`` and ``eval linear``: evaluate a run's frozen backbone.

Both check their options, the run's existence and that their JSON output can be written before
reading anything, show their progress on stderr and their table on stdout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from syn2co._checks import check_int, check_number

from ..devices import resolve_device
from ..errors import ConfigError, flag
from ..progress import EvalProgress
from ._consoles import console, out_console
from ._error_boundary import exit_on_user_error
from ._run_files import Branch, RunDir, check_run_exists, run_directory, writable

Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
LogEvery = Annotated[
    int,
    typer.Option(
        help="Without a terminal (batch jobs): a progress line every N batches of each pass "
        "over the data."
    ),
]


def _check_option(option: str, value: float | None, *, minimum: int | None = None) -> None:
    """An int option >= ``minimum``, or (without ``minimum``) a finite number > 0; None passes."""
    if value is None:
        return
    try:
        if minimum is not None:
            check_int(option, value, minimum=minimum)
        else:
            check_number(option, value, low=0.0, low_open=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _eval_prelude(
    run: Path,
    out: Path | None,
    default_name: str,
    what: str,
    workers: int | None,
    log_every: int,
    device: str,
) -> tuple[Any, Path]:
    """The checks every evaluation makes before reading anything: its common options, the run's
    existence and that its output can be written. Returns the device and the output path."""
    _check_option("--workers", workers, minimum=0)
    _check_option("--log-every", log_every, minimum=1)
    dev = resolve_device(device)
    check_run_exists(run)
    return dev, writable(out or run_directory(run) / default_name, out, what)


def _eval_config(
    run: Path, data: str | None, val_data: str | None, dataset: str | None, workers: int | None
) -> Any:
    from ..pretrained import load_run

    cfg, _ = load_run(run)
    changes: dict[str, Any] = {}
    for key, value in (
        ("data", data),
        ("val_data", val_data),
        ("dataset", dataset),
        ("workers", workers),
    ):
        if value is not None:
            changes[key] = value
    return cfg.updated(changes, source="command line")


def _save_json(path: Path, payload: dict[str, Any]) -> None:
    from ..atomic import write_atomic

    text = json.dumps(payload, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()), sync_dir=False)


@exit_on_user_error
def eval_knn(
    run: RunDir,
    k: Annotated[
        list[int] | None,
        typer.Option(
            "--k", help="Neighbours; repeat for several [default: 10 20 100 200, SynCo v2's]."
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Weighting temperature.")] = 0.07,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    batch_size: Annotated[int, typer.Option(help="Feature-extraction batch size.")] = 256,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Device = "auto",
    baseline: Annotated[
        bool, typer.Option(help="Also evaluate the same network at random init.")
    ] = False,
    log_every: LogEvery = 50,
    out: Annotated[Path | None, typer.Option(help="JSON file (default RUN/eval_knn.json).")] = None,
) -> None:
    """Weighted kNN (cosine, temperature-weighted votes) on the run's train/val split."""
    from ..evaluate.protocols import KNN_KS

    ks = tuple(dict.fromkeys(k)) if k else KNN_KS
    for kk in ks:
        _check_option("--k", kk, minimum=1)
    _check_option("--temperature", temperature)
    _check_option("--batch-size", batch_size, minimum=1)
    dev, path = _eval_prelude(
        run, out, "eval_knn.json", "the kNN results", workers, log_every, device
    )

    from ..data.pipeline import eval_loader
    from ..evaluate import knn_probe
    from ..pretrained import load_backbone, random_backbone

    cfg = _eval_config(run, data, val_data, dataset, workers)
    train_loader, val_loader = (
        eval_loader(cfg, "train", batch_size=batch_size),
        eval_loader(cfg, "val", batch_size=batch_size),
    )
    num_classes = train_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    num_train = len(train_loader.dataset)  # type: ignore[arg-type]
    if max(ks) > num_train:
        console.print(
            f"[yellow]warning:[/] k > {num_train} training images: using k={num_train} for "
            f"{', '.join(str(x) for x in ks if x > num_train)}",
            soft_wrap=True,
        )
        ks = tuple(dict.fromkeys(min(x, num_train) for x in ks))
    backbone, _ = load_backbone(run, branch)
    candidates = {"pretrained": backbone}
    if baseline:
        candidates["random init"] = random_backbone(cfg)
    results = {}
    for name, net in candidates.items():
        with EvalProgress(console, f"knn {name}", log_every) as progress:
            results[name] = knn_probe(
                net.to(dev),
                train_loader,
                val_loader,
                num_classes=num_classes,
                device=dev,
                ks=ks,
                temperature=temperature,
                progress=progress,
            )
    table = Table(title=f"kNN top-1 (%) on {cfg.dataset} val, T={temperature}")
    table.add_column("backbone")
    for kk in ks:
        table.add_column(f"k={kk}", justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res.top1[kk]:.2f}" for kk in ks))
    out_console.print(table)
    _save_json(
        path,
        {name: r.to_dict() for name, r in results.items()} | {"branch": branch, "run": str(run)},
    )
    console.print(f"saved {path}")


def _probe_settings(protocol: str, **given: Any) -> Any:
    """The protocol's probe settings, the options given replacing single values (errors name
    the option, and the protocol when the bad value is its own)."""
    from ..evaluate.protocols import LINEAR_PROTOCOLS

    changes = {name: value for name, value in given.items() if value is not None}
    try:
        return dataclasses.replace(LINEAR_PROTOCOLS[protocol], **changes)
    except (TypeError, ValueError) as e:
        name, _, problem = str(e).partition(": ")
        if name not in changes:
            problem += f" (the value of --protocol {protocol}; set {flag(name)})"
        raise ConfigError(f"{flag(name)}: {problem}") from None


def _probe_option(name: str, text: str, *flags: str) -> Any:
    """A probe option whose help ends with each protocol's value of it.

    The option itself defaults to None ("not given"): the protocol supplies the value.
    """
    from ..evaluate.protocols import LINEAR_PROTOCOLS

    values = ", ".join(
        f"{protocol} {getattr(settings, name)}" for protocol, settings in LINEAR_PROTOCOLS.items()
    )
    return typer.Option(*flags, help=f"{text} ({values})", show_default=False)


def _protocol_option() -> Any:
    from ..evaluate.protocols import PROTOCOL_SUMMARIES

    summaries = "; ".join(f"{name}: {text}" for name, text in PROTOCOL_SUMMARIES.items())
    return typer.Option(
        help=f"The probe's settings (the options below override single values). {summaries}."
    )


@exit_on_user_error
def eval_linear(
    run: RunDir,
    protocol: Annotated[
        Literal["fast", "synco-v2", "mocov3"],
        _protocol_option(),
    ] = "fast",
    mode: Annotated[
        Literal["cached", "augmented"] | None,
        _probe_option(
            "mode",
            "cached: features of the evaluation transform extracted once; augmented: random "
            "resized crops and flips every epoch, features recomputed.",
        ),
    ] = None,
    epochs: Annotated[int | None, _probe_option("epochs", "Probe epochs.")] = None,
    batch_size: Annotated[int | None, _probe_option("batch_size", "Probe batch size.")] = None,
    base_lr: Annotated[
        float | None,
        _probe_option("base_lr", "SGD learning rate at the reference batch.", "--lr", "--base-lr"),
    ] = None,
    lr_reference_batch: Annotated[
        int | None,
        _probe_option(
            "lr_reference_batch", "Batch size the lr refers to (lr x batch / this is used)."
        ),
    ] = None,
    momentum: Annotated[float | None, _probe_option("momentum", "SGD momentum.")] = None,
    nesterov: Annotated[
        bool | None, _probe_option("nesterov", "Nesterov momentum.", "--nesterov/--no-nesterov")
    ] = None,
    weight_decay: Annotated[
        float | None, _probe_option("weight_decay", "SGD weight decay.")
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        _probe_option("warmup_epochs", "Linear lr warmup epochs before the cosine decay."),
    ] = None,
    warmup_lr_fraction: Annotated[
        float | None,
        _probe_option(
            "warmup_lr_fraction",
            "lr of the first step as a fraction of the peak, rising linearly to the peak "
            "(None: from 0, the first step already at peak / warmup steps).",
        ),
    ] = None,
    min_lr_fraction: Annotated[
        float | None,
        _probe_option("min_lr_fraction", "lr the cosine ends at, as a fraction of the peak."),
    ] = None,
    schedule: Annotated[
        Literal["step", "epoch"] | None,
        _probe_option(
            "schedule", "step: cosine over the steps; epoch: the cosine of the epoch (no warmup)."
        ),
    ] = None,
    batchnorm: Annotated[
        bool | None,
        _probe_option(
            "batchnorm",
            "BatchNorm without affine parameters on the features before the linear layer "
            "(makes the step size independent of the features' scale).",
            "--batchnorm/--no-batchnorm",
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None, _probe_option("label_smoothing", "Label smoothing of the cross-entropy.")
    ] = None,
    clip_grad: Annotated[
        float | None,
        _probe_option("clip_grad", "Clip the classifier's gradient norm to this (0: off)."),
    ] = None,
    head_init: Annotated[
        Literal["normal", "xavier", "trunc-normal", "backbone"] | None,
        _probe_option(
            "head_init",
            "Classifier weights: N(0, 0.01), xavier uniform, truncated normal 0.02, or as the "
            "architecture's official constructor builds its head.",
        ),
    ] = None,
    backbone_mode: Annotated[
        Literal["eval", "train"] | None,
        _probe_option(
            "backbone_mode",
            "train: dropout and drop-path active while the probe trains in augmented mode "
            "(weights never change).",
        ),
    ] = None,
    drop_path: Annotated[
        float | None,
        _probe_option(
            "drop_path", "Rebuild the backbone with this drop-path rate (None: as trained)."
        ),
    ] = None,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the classifier and shuffling.")] = 0,
    log_every: LogEvery = 50,
    out: Annotated[
        Path | None, typer.Option(help="JSON file (default RUN/eval_linear.json).")
    ] = None,
) -> None:
    """Linear probe on the frozen backbone (the backbone's weights are checked unchanged)."""
    settings = _probe_settings(
        protocol,
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        base_lr=base_lr,
        lr_reference_batch=lr_reference_batch,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        warmup_lr_fraction=warmup_lr_fraction,
        min_lr_fraction=min_lr_fraction,
        schedule=schedule,
        batchnorm=batchnorm,
        label_smoothing=label_smoothing,
        clip_grad=clip_grad,
        head_init=head_init,
        backbone_mode=backbone_mode,
        drop_path=drop_path,
    )
    _check_option("--seed", seed, minimum=0)
    dev, path = _eval_prelude(
        run, out, "eval_linear.json", "the probe's results", workers, log_every, device
    )

    from ..data.pipeline import eval_loader, linear_train_loader
    from ..evaluate import linear_probe
    from ..evaluate.protocols import for_arch

    cfg = _eval_config(run, data, val_data, dataset, workers)
    settings = for_arch(settings, cfg.arch)
    batch = settings.batch_size or 256  # what the probe resolves None to, in either mode
    val_loader = eval_loader(cfg, "val", batch_size=batch)
    train_loader = linear_train_loader(
        cfg, batch_size=batch, augmented=settings.mode == "augmented", seed=seed
    )
    num_classes = val_loader.dataset.base.num_classes  # type: ignore[attr-defined]
    backbone, _ = probe_backbone(run, branch, settings.drop_path)
    with EvalProgress(console, "linear", log_every) as progress:
        result = linear_probe(
            backbone.to(dev),
            train_loader,
            val_loader,
            num_classes=num_classes,
            device=dev,
            settings=settings,
            seed=seed,
            on_epoch=lambda entry: progress.epoch(entry, settings.epochs),
            progress=progress,
        )
    table = Table(
        title=f"linear probe on {cfg.dataset} ({protocol}: {settings.mode}, "
        f"{settings.epochs} epochs)"
    )
    for col in ("split", "top-1 (%)", "top-5 (%)"):
        table.add_column(col)
    table.add_row("train", f"{result.train_top1:.2f}", f"{result.train_top5:.2f}")
    table.add_row("val", f"{result.val_top1:.2f}", f"{result.val_top5:.2f}")
    out_console.print(table)
    console.print(
        f"backbone unchanged: {result.backbone_unchanged} (sha256 {result.fingerprint_after[:12]})"
    )
    _save_json(path, result.to_dict() | {"branch": branch, "run": str(run), "protocol": protocol})
    console.print(f"saved {path}")


def probe_backbone(run: Path, branch: str, drop_path: float | None) -> tuple[Any, Any]:
    """The run's backbone, rebuilt with the probe's drop-path rate when it sets one."""
    from ..models import create_backbone
    from ..pretrained import load_backbone

    backbone, cfg = load_backbone(run, branch)  # type: ignore[arg-type]
    if drop_path is None:
        return backbone, cfg
    rebuilt = create_backbone(cfg, drop_path=drop_path)
    rebuilt.load_state_dict(backbone.state_dict())
    return rebuilt.eval(), cfg
