"""Making a synthetic image folder: :func:`generate_dataset`, from options to summary.

The order matters: the options are checked first (nothing touched), then the output directory
is created and locked, and only then read (so that two jobs never both work from what they
read before the other wrote), then the model is loaded, and only if something is left to make.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..errors import ConfigError
from ..signals import Interrupted
from .dedup import dhash
from .jobs import ImageJob, check_folders, plan
from .pipelines import (
    call_settings,
    class_ids,
    default_class_names,
    detect_kind,
    load_pipeline,
    run_pipeline,
)
from .prompts import FAKE_IT_GUIDANCE, class_names, fake_it_info, load_templates, prompt_name
from .settings import PipelineKind, SynthConfig
from .store import MANIFEST_NAME, OutputDir, open_output
from .summary import SynthSummary, duplicate_report

__all__ = ["generate_dataset"]


def generate_dataset(
    config: SynthConfig, *, console: Console | None = None, pipeline: Any = None
) -> SynthSummary:
    """Generate (or complete) a synthetic image folder with its manifest and duplicate report.

    Args:
        config: What to generate.
        console: Where progress and notes go (default: a new stderr console).
        pipeline: An already loaded pipeline to use instead of loading ``config.model``
            (``config.model`` is still what the manifest records).

    Returns:
        The summary; :func:`~reference_trainer.synth.summary_table` renders it.

    Raises:
        ConfigError: Bad options, an unreachable model, an output directory that is not a
            synth directory, was made with other settings, holds files synth did not write
            where its images go, or is in use by another job; a file that cannot be written;
            out of GPU memory.
    """
    config.check()
    if config.prompts == "fake-it" and config.guidance is None:
        config = dataclasses.replace(config, guidance=FAKE_IT_GUIDANCE)
    console = console or Console(stderr=True)
    out = config.out.expanduser()
    names = class_names(config.classes, config.classes_file, config.classes_from)
    templates = load_templates(config.templates_file)
    if config.prompts == "fake-it":
        fake_it_info(names)  # fails before anything is created
    if names is not None:
        check_folders(names)
    model_id = _model_id(config.model)
    with open_output(out) as store:
        entries, recovery = store.recover()
        if entries or recovery.describe():
            note = f"resuming: {len(entries)} image(s) already in {out / MANIFEST_NAME}"
            note += f"; {recovery.describe()}" if recovery.describe() else ""
            console.print(note, soft_wrap=True)
        if recovery.note():
            console.print(f"[yellow]note:[/] {recovery.note()}", soft_wrap=True)

        # What is left to do can be told without the model when the classes are known.
        jobs: list[ImageJob] = []
        needs_model = names is None
        if names is not None:
            jobs = plan(names, config.images_per_class, config.seed)
            requested = _requested(config, model_id)
            _check_consistent(
                entries, {job.file: {**requested, "seed": job.seed} for job in jobs}, out
            )
            pending = [job for job in jobs if job.file not in entries][: config.limit]
            store.check_folders(job.folder for job in pending)
            needs_model = bool(pending)

        kind: PipelineKind | None = None
        pipeline_name = device_name = dtype_name = ""
        new_files: set[str] = set()
        seconds = 0.0
        if needs_model:
            if pipeline is None:
                console.print(f"loading {config.model} ...", soft_wrap=True)
                pipeline, dev, torch_dtype = load_pipeline(
                    config.model, config.device, config.dtype
                )
            else:
                dev = getattr(pipeline, "device", "cpu")
                torch_dtype = getattr(pipeline, "dtype", "")
            kind = detect_kind(pipeline, config.kind)
            pipeline_name = type(pipeline).__name__
            device_name, dtype_name = str(dev), str(torch_dtype).removeprefix("torch.")
            names = names if names is not None else default_class_names(pipeline, kind)
            check_folders(names)
            steps, guidance, size = call_settings(pipeline, kind, config, console)
            jobs = plan(
                names,
                config.images_per_class,
                config.seed,
                prompts=[prompt_name(n) for n in names] if kind == "text" else None,
                class_ids=class_ids(pipeline, names) if kind == "class" else None,
                templates=templates,
                fake_it=fake_it_info(names) if config.prompts == "fake-it" else None,
            )
            scheduler = getattr(pipeline, "scheduler", None)
            common = {
                "kind": kind,
                "model": model_id,
                "pipeline": pipeline_name,
                "scheduler": type(scheduler).__name__ if scheduler is not None else None,
                "steps": steps,
                "guidance": guidance,
            }
            _check_consistent(
                entries,
                {
                    job.file: {
                        "kind": kind,
                        "model": model_id,
                        "steps": steps,
                        "guidance": guidance,
                        "seed": job.seed,
                        "prompt": job.prompt,
                        "class_id": job.class_id,
                    }
                    for job in jobs
                },
                out,
            )
            pending = [job for job in jobs if job.file not in entries][: config.limit]
            store.check_folders(job.folder for job in pending)
            seconds = _generate(
                store,
                pipeline,
                kind,
                pending,
                common=common,
                extra={"dtype": dtype_name, "device": device_name},
                size=size,
                batch_size=config.batch_size,
                console=console,
                new_files=new_files,
            )
        assert names is not None
        rows, report = duplicate_report(out, names, store.entries, new_files, config.dup_threshold)
        store.ensure_manifest()
        duplicates_file = store.write_duplicates(report)
        return SynthSummary(
            out=out,
            classes=tuple(rows),
            new_images=len(new_files),
            planned_images=len(jobs),
            missing_images=sum(1 for job in jobs if job.file not in store.entries),
            seconds=seconds,
            kind=kind,
            pipeline=pipeline_name,
            device=device_name,
            dtype=dtype_name,
            dup_threshold=config.dup_threshold,
            recovered=recovery.describe(),
            duplicates_file=duplicates_file,
        )


class _RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.2f} img/s", style="cyan")


def _generate(
    store: OutputDir,
    pipeline: Any,
    kind: PipelineKind,
    pending: Sequence[ImageJob],
    *,
    common: Mapping[str, Any],
    extra: Mapping[str, Any],
    size: tuple[int, int] | None,
    batch_size: int,
    console: Console,
    new_files: set[str],
) -> float:
    """Make ``pending`` in batches, each image written with its manifest line as it comes.

    Returns:
        The seconds spent.
    """
    import torch

    if not pending:
        return 0.0
    start = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("generating", total=len(pending))
        try:
            for b in range(0, len(pending), batch_size):
                batch = pending[b : b + batch_size]
                try:
                    images = run_pipeline(
                        pipeline,
                        kind,
                        batch,
                        steps=common["steps"],
                        guidance=common["guidance"],
                        size=size,
                    )
                except torch.cuda.OutOfMemoryError:
                    raise ConfigError(
                        f"out of GPU memory at --batch-size {batch_size}: lower it (the "
                        f"{len(new_files)} images already made are kept; rerun to resume)"
                    ) from None
                for job, image in zip(batch, images, strict=True):
                    entry = {
                        "file": job.file,
                        "class": job.class_name,
                        "index": job.index,
                        "prompt": job.prompt,
                        "class_id": job.class_id,
                        "seed": job.seed,
                        **common,
                        "size": list(image.size),
                        **extra,
                        "dhash": f"{dhash(image):016x}",
                    }
                    store.add(job, image, entry)
                    new_files.add(job.file)
                progress.advance(task, len(batch))
        except KeyboardInterrupt:
            raise Interrupted(
                f"stopped after {len(new_files)} new images, all saved; rerun the same "
                "command to continue"
            ) from None
    return time.perf_counter() - start


def _check_consistent(
    entries: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Mapping[str, Any]], out: Path
) -> None:
    """Refuse to mix images made with other settings into ``out``."""
    for file, wanted in expected.items():
        entry = entries.get(file)
        if entry is None:
            continue
        for key, value in wanted.items():
            if entry.get(key) != value:
                raise ConfigError(
                    f"--out {out} already holds {file} made with {key}={entry.get(key)!r}, not "
                    f"{value!r}: rerun with the same options to resume, or choose a new --out"
                )


def _model_id(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _requested(config: SynthConfig, model_id: str) -> dict[str, Any]:
    """The manifest fields that the options fix before the model is loaded."""
    fields: dict[str, Any] = {"model": model_id}
    if config.kind != "auto":
        fields["kind"] = config.kind
    if config.steps is not None:
        fields["steps"] = config.steps
    if config.guidance is not None:
        fields["guidance"] = config.guidance
    if config.size is not None:
        fields["size"] = [config.size, config.size]
    return fields
