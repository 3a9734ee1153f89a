"""``syn2co-train eval knn`` and ``eval linear``: evaluate a run's frozen backbone.

Both check their options, the run's existence and that their JSON output can be written before
reading anything, show their progress on stderr and their table on stdout.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
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
) -> tuple[Any, dict[str, Any]]:
    """The run's config with the command line's data options, and its checkpoint."""
    from ..pretrained import load_run

    cfg, state = load_run(run)
    changes: dict[str, Any] = {}
    for key, value in (
        ("data", data),
        ("val_data", val_data),
        ("dataset", dataset),
        ("workers", workers),
    ):
        if value is not None:
            changes[key] = value
    return cfg.updated(changes, source="command line"), state


def _eval_datasets(cfg: Any, command: str) -> tuple[Any, Any]:
    """The real training and validation splits an evaluation reads; a run trained on synthetic
    images alone, without ``--data``, gets the hint to pass it."""
    from ..data.pipeline import dataset_for

    try:
        return dataset_for(cfg, "train"), dataset_for(cfg, "val")
    except ConfigError:
        if cfg.data is None and cfg.synthetic_data is not None:
            raise ConfigError(
                f"--data: the run trained on synthetic images only (--synthetic-data "
                f"{cfg.synthetic_data}) and names no real images to evaluate on; pass them: "
                f"syn2co-train eval {command} RUN --data REAL_TRAIN_DIR (and --val-data "
                "REAL_VAL_DIR where the dataset has one)"
            ) from None
        raise


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _provenance(
    run: Path,
    cfg: Any,
    state: dict[str, Any],
    *,
    branch: str,
    seed: int,
    split_sizes: dict[str, int],
    device: Any,
) -> dict[str, Any]:
    """What an evaluation's JSON says about what was evaluated, on what, when and with what."""
    import syn2co

    from ..checkpoint import find_checkpoint

    return {
        "run": str(run_directory(run).resolve()),
        "checkpoint": str(find_checkpoint(run).resolve()),
        "step": int(state["step"]),
        "branch": branch,
        "dataset": cfg.dataset,
        "data": _absolute(cfg.data),
        "val_data": _absolute(cfg.val_data),
        "split_sizes": split_sizes,
        "seed": seed,
        "device": str(device),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "syn2co_version": syn2co.__version__,
    }


def _save_json(path: Path, payload: dict[str, Any]) -> None:
    from ..atomic import write_atomic

    text = json.dumps(payload, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()), sync_dir=False)


def _settings(presets: dict[str, Any], protocol: str, flags: dict[str, str], **given: Any) -> Any:
    """The protocol's settings, the options given replacing single values (errors name the
    option, and the protocol when the bad value is its own)."""
    changes = {name: value for name, value in given.items() if value is not None}
    try:
        return dataclasses.replace(presets[protocol], **changes)
    except (TypeError, ValueError) as e:
        name, _, problem = str(e).partition(": ")
        field = {"k": "ks"}.get(name, name)
        option = flags.get(field, flag(field))
        if field not in changes:
            problem += f" (the value of --protocol {protocol}; set {option})"
        raise ConfigError(f"{option}: {problem}") from None


def _knn_protocol_option() -> Any:
    from ..evaluate.protocols import KNN_PROTOCOL_SUMMARIES

    summaries = "; ".join(f"{name}: {text}" for name, text in KNN_PROTOCOL_SUMMARIES.items())
    return typer.Option(
        help=f"Which images, transform and k (the options below override single values). "
        f"{summaries}."
    )


def _knn_option(name: str, text: str, *flags: str) -> Any:
    """A kNN option whose help ends with each protocol's value of it (None: the protocol's)."""
    from ..evaluate.protocols import KNN_PROTOCOLS

    def shown(value: Any) -> str:
        return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)

    values = ", ".join(
        f"{protocol} {shown(getattr(settings, name))}"
        for protocol, settings in KNN_PROTOCOLS.items()
    )
    return typer.Option(*flags, help=f"{text} ({values})", show_default=False)


@exit_on_user_error
def eval_knn(
    run: RunDir,
    protocol: Annotated[Literal["full", "synco-v2"], _knn_protocol_option()] = "full",
    k: Annotated[
        list[int] | None,
        _knn_option("ks", "Neighbours; repeat for several.", "--k"),
    ] = None,
    temperature: Annotated[
        float | None, _knn_option("temperature", "Weighting temperature.")
    ] = None,
    train_transform: Annotated[
        Literal["eval", "augmented"] | None,
        _knn_option(
            "train_transform",
            "The training images' transform: eval (resize, center crop) or augmented (one "
            "random resized crop and flip each, seeded by --seed).",
        ),
    ] = None,
    interpolation: Annotated[
        Literal["bicubic", "bilinear"] | None,
        _knn_option("interpolation", "Interpolation of every resize."),
    ] = None,
    shards: Annotated[
        int | None,
        _knn_option(
            "shards",
            "Processes the official script spread the images over; rank 0's share is "
            "evaluated: a DistributedSampler shard of the training set and every N-th "
            "validation image (1: all).",
        ),
    ] = None,
    drop_last: Annotated[
        bool | None,
        _knn_option(
            "drop_last",
            "Cut the training shard to whole batches of --batch-size.",
            "--drop-last/--no-drop-last",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        _knn_option("batch_size", "Feature-extraction batch size (per shard)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the augmented training crops.")] = 0,
    branch: Branch = "online",
    data: Annotated[str | None, typer.Option(help="Override the run's --data.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Override the run's --val-data.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the run's --dataset.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    device: Device = "auto",
    baseline: Annotated[
        bool, typer.Option(help="Also evaluate the same network at random init.")
    ] = False,
    log_every: LogEvery = 50,
    out: Annotated[Path | None, typer.Option(help="JSON file (default RUN/eval_knn.json).")] = None,
) -> None:
    """Weighted kNN (cosine, temperature-weighted votes) of the run's val split against its
    train split, over the whole splits or as SynCo v2 measured it (--protocol synco-v2)."""
    from ..evaluate.protocols import KNN_PROTOCOLS

    settings = _settings(
        KNN_PROTOCOLS,
        protocol,
        {"ks": "--k"},
        ks=tuple(dict.fromkeys(k)) if k else None,
        temperature=temperature,
        train_transform=train_transform,
        interpolation=interpolation,
        shards=shards,
        drop_last=drop_last,
        batch_size=batch_size,
    )
    _check_option("--seed", seed, minimum=0)
    dev, path = _eval_prelude(
        run, out, "eval_knn.json", "the kNN results", workers, log_every, device
    )

    from ..data.pipeline import evaluation_transform, image_loader, probe_train_transform
    from ..evaluate import knn_probe, knn_shards
    from ..pretrained import load_backbone, random_backbone

    cfg, state = _eval_config(run, data, val_data, dataset, workers)
    train_set, val_set = _eval_datasets(cfg, "knn")
    train_idx, val_idx = (
        knn_shards(len(train_set), len(val_set), settings) if settings.sharded else (None, None)
    )
    num_train = len(train_set) if train_idx is None else len(train_idx)
    num_val = len(val_set) if val_idx is None else len(val_idx)
    if num_train == 0:
        raise ConfigError(
            f"--batch-size: rank 0's training shard at --shards {settings.shards} holds no "
            f"whole batch of {settings.batch_size} (of {len(train_set)} training images; the "
            "last incomplete batch is dropped): lower --batch-size or --shards, or pass "
            "--no-drop-last"
        )
    if num_val == 0:
        raise ConfigError(
            f"--shards: rank 0's share of the {len(val_set)} validation images is empty"
        )
    ks = settings.ks
    if max(ks) > num_train:
        console.print(
            f"[yellow]warning:[/] k > {num_train} training images: using k={num_train} for "
            f"{', '.join(str(x) for x in ks if x > num_train)}",
            soft_wrap=True,
        )
        settings = dataclasses.replace(
            settings, ks=tuple(dict.fromkeys(min(x, num_train) for x in ks))
        )
    augmented = settings.train_transform == "augmented"
    train_loader = image_loader(
        train_set,
        probe_train_transform(cfg.img_size, settings.interpolation)
        if augmented
        else evaluation_transform(cfg.img_size, settings.interpolation),
        batch_size=settings.batch_size,
        workers=cfg.workers,
        indices=train_idx,
        seed=seed if augmented else None,
    )
    val_loader = image_loader(
        val_set,
        evaluation_transform(cfg.img_size, settings.interpolation),
        batch_size=settings.batch_size,
        workers=cfg.workers,
        indices=val_idx,
    )
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
                num_classes=train_set.num_classes,
                device=dev,
                ks=settings.ks,
                temperature=settings.temperature,
                progress=progress,
            )
    table = Table(title=f"kNN top-1 (%) on {cfg.dataset} val, {protocol}, T={settings.temperature}")
    table.add_column("backbone")
    for kk in settings.ks:
        table.add_column(f"k={kk}", justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res.top1[kk]:.2f}" for kk in settings.ks))
    out_console.print(table)
    share = f"rank 0 of {settings.shards} shards: " if settings.shards > 1 else ""
    out_console.print(
        f"{share}{num_train} of {len(train_set)} training images ({settings.train_transform} "
        f"transform), {num_val} of {len(val_set)} validation images",
        soft_wrap=True,
    )
    record = {"evaluation": "knn", "protocol": protocol, "settings": dataclasses.asdict(settings)}
    record |= _provenance(
        run,
        cfg,
        state,
        branch=branch,
        seed=seed,
        split_sizes={"train": len(train_set), "val": len(val_set)},
        device=dev,
    )
    _save_json(path, record | {name: r.to_dict() for name, r in results.items()})
    console.print(f"saved {path}")


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
        Literal["fast", "synco-v2", "mocov3", "mocov2"],
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
        Literal["step", "epoch", "multistep"] | None,
        _probe_option(
            "schedule",
            "step: cosine over the steps; epoch: the cosine of the epoch (no warmup); "
            "multistep: x --lr-decay at each --lr-milestones epoch.",
        ),
    ] = None,
    lr_milestones: Annotated[
        list[int] | None,
        _probe_option(
            "lr_milestones",
            "Epochs at which the multistep schedule multiplies the lr by --lr-decay; repeat "
            "for several.",
        ),
    ] = None,
    lr_decay: Annotated[
        float | None, _probe_option("lr_decay", "The multistep schedule's factor.")
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
    interpolation: Annotated[
        Literal["bicubic", "bilinear"] | None,
        _probe_option(
            "interpolation", "Interpolation of every resize (random crops, validation resize)."
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
    from ..evaluate.protocols import LINEAR_PROTOCOLS

    settings = _settings(
        LINEAR_PROTOCOLS,
        protocol,
        {},
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
        lr_milestones=tuple(lr_milestones) if lr_milestones else None,
        lr_decay=lr_decay,
        batchnorm=batchnorm,
        label_smoothing=label_smoothing,
        clip_grad=clip_grad,
        head_init=head_init,
        backbone_mode=backbone_mode,
        drop_path=drop_path,
        interpolation=interpolation,
    )
    _check_option("--seed", seed, minimum=0)
    dev, path = _eval_prelude(
        run, out, "eval_linear.json", "the probe's results", workers, log_every, device
    )

    from ..data.pipeline import evaluation_transform, image_loader, linear_train_loader
    from ..evaluate import linear_probe
    from ..evaluate.protocols import for_arch

    cfg, state = _eval_config(run, data, val_data, dataset, workers)
    settings = for_arch(settings, cfg.arch)
    train_set, val_set = _eval_datasets(cfg, "linear")
    batch = settings.batch_size or 256  # what the probe resolves None to, in either mode
    val_loader = image_loader(
        val_set,
        evaluation_transform(cfg.img_size, settings.interpolation),
        batch_size=batch,
        workers=cfg.workers,
    )
    train_loader = linear_train_loader(
        cfg,
        batch_size=batch,
        augmented=settings.mode == "augmented",
        seed=seed,
        interpolation=settings.interpolation,
        dataset=train_set,
    )
    num_classes = train_set.num_classes
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
    record = result.to_dict() | {"protocol": protocol}
    record |= _provenance(
        run,
        cfg,
        state,
        branch=branch,
        seed=seed,
        split_sizes={"train": len(train_set), "val": len(val_set)},
        device=dev,
    )
    _save_json(path, record)
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
