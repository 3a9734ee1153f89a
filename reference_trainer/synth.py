"""Synthetic image datasets made with diffusers: the first half of Syn2Co.

``syn2co-train synth`` writes an image folder ``OUT/<class>/<index>.png`` that the trainer reads
like any other (``--synthetic-data OUT``), plus ``OUT/manifest.jsonl``: one JSON line per
finished image with everything needed to make it again (class, prompt or class id, seed, model,
scheduler, steps, guidance, size). Three kinds of diffusers pipelines are supported, detected
from the pipeline's call signature:

- ``text``: text-to-image (Stable Diffusion and any pipeline taking ``prompt``), prompted with
  the class name in several templates, one image per (prompt, seed), as in "Fake it till you
  make it" (Sariyildiz et al. 2023);
- ``class``: class-conditional (DiT, taking ``class_labels``); class names are mapped to ids
  through the pipeline's ``labels`` (its ``id2label``) or given as integers;
- ``unconditional``: DDPM/DDIM style (taking ``batch_size``); the "classes" are folder names.

Every image has its own seed, derived from (``--seed``, class, index), and its own
``torch.Generator``, so it does not depend on the batch it was made in and
:func:`regenerate` makes it again from its manifest line alone. Runs resume: a PNG is written to
a hidden temporary name, renamed, and only then its manifest line is appended (flushed and
fsynced), so an image counts as done only once it is complete. On start, files not in the
manifest, manifest lines whose file is missing and a truncated last line are dropped.

After generation a 64-bit difference hash (dHash) of every image is compared within each class;
pairs at a Hamming distance of at most ``--dup-threshold`` are reported and listed in
``OUT/duplicates.json``, because a collapsed generator silently ruins a synthetic set.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
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
from rich.table import Table
from rich.text import Text

from .atomic import write_atomic
from .data.rgb import to_rgb
from .devices import resolve_device
from .errors import ConfigError

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_TEMPLATES",
    "DUPLICATES_NAME",
    "MANIFEST_NAME",
    "ClassStats",
    "ImageJob",
    "Kind",
    "PipelineKind",
    "SynthConfig",
    "SynthSummary",
    "class_names",
    "detect_kind",
    "dhash",
    "generate_dataset",
    "image_seed",
    "load_pipeline",
    "load_templates",
    "near_duplicate_pairs",
    "read_manifest",
    "regenerate",
    "summary_table",
]

Kind = Literal["auto", "text", "class", "unconditional"]
PipelineKind = Literal["text", "class", "unconditional"]
DeviceName = Literal["auto", "cpu", "cuda"]
DTypeName = Literal["auto", "fp16", "bf16", "fp32"]

#: Name of the manifest file in the output directory (one JSON object per line).
MANIFEST_NAME = "manifest.jsonl"
#: Name of the near-duplicate report in the output directory.
DUPLICATES_NAME = "duplicates.json"
_LOCK_NAME = ".synth.lock"

#: Classes used for text-to-image pipelines when none are given.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: Prompt templates (``{}`` is the class name); image ``i`` of a class uses template
#: ``i % len(templates)``, in the spirit of "Fake it till you make it" (CLIP-style prompts).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a {} in the wild.",
    "a bright photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of a {}.",
    "a good photo of the {}.",
)

_KIND_ARGUMENT: dict[PipelineKind, str] = {
    "text": "prompt",
    "class": "class_labels",
    "unconditional": "batch_size",
}
_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test"})
_IMAGE_NAME = re.compile(r"^\d+\.png$")
_MAX_LISTED_PAIRS = 1000  # per class in duplicates.json; the count is always exact
_HASH_BITS = 64


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Everything ``syn2co-train synth`` is asked to do.

    Attributes:
        model: A Hugging Face hub id or a local diffusers pipeline directory.
        out: Output directory (an image folder plus ``manifest.jsonl``).
        classes: Class names (at most one of ``classes``, ``classes_file``, ``classes_from``;
            none: the CIFAR-10 classes for text pipelines, ids 0-9 for class-conditional ones,
            one folder ``samples`` for unconditional ones).
        classes_file: A text file with one class name per line (``#`` starts a comment).
        classes_from: An image folder whose class folders name the classes.
        images_per_class: Images per class.
        steps: Denoising steps (``None``: the pipeline's default).
        guidance: Classifier-free guidance scale (``None``: the pipeline's default).
        size: Image side in pixels (``None``: the model's native size). Passed to pipelines
            that take ``height``/``width``; the others' images are resized.
        seed: Base seed; image seeds are derived from it, the class and the index.
        batch_size: Images per pipeline call.
        device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp16``, ``bf16`` or ``fp32``.
        templates_file: Prompt templates, one per line, each with one ``{}``.
        kind: ``auto`` (from the pipeline's call signature), ``text``, ``class`` or
            ``unconditional``.
        dup_threshold: Largest dHash Hamming distance (of 64 bits) reported as a near-duplicate.
        limit: Stop after this many new images (``None``: no limit); rerun to continue.
    """

    model: str
    out: Path
    classes: tuple[str, ...] | None = None
    classes_file: Path | None = None
    classes_from: Path | None = None
    images_per_class: int = 100
    steps: int | None = None
    guidance: float | None = None
    size: int | None = None
    seed: int = 0
    batch_size: int = 8
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"
    templates_file: Path | None = None
    kind: Kind = "auto"
    dup_threshold: int = 4
    limit: int | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        for name, value, low in (
            ("--images-per-class", self.images_per_class, 1),
            ("--batch-size", self.batch_size, 1),
            ("--steps", self.steps, 1),
            ("--size", self.size, 8),
            ("--limit", self.limit, 0),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if not 0 <= self.dup_threshold <= _HASH_BITS:
            raise ConfigError(f"--dup-threshold must be in [0, 64], got {self.dup_threshold}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise ConfigError(f"--guidance must be a finite number, got {self.guidance}")
        given = [
            flag
            for flag, value in (
                ("--classes", self.classes),
                ("--classes-file", self.classes_file),
                ("--classes-from", self.classes_from),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ConfigError(f"give the classes once: {' and '.join(given)} were both given")


# --------------------------------------------------------------------------------------------
# Classes, templates, seeds
# --------------------------------------------------------------------------------------------


def class_names(
    classes: Sequence[str] | None = None,
    classes_file: Path | None = None,
    classes_from: Path | None = None,
) -> tuple[str, ...] | None:
    """The class names from one of the three sources, or ``None`` when none is given.

    Args:
        classes: Names given directly.
        classes_file: One name per line; blank lines and lines starting with ``#`` are skipped.
        classes_from: An image folder (one split, ``DIR/<class>/<images>``); its sorted,
            non-hidden subdirectories are the classes, as the trainer's image-folder reader
            sees them (the files are not scanned).

    Raises:
        ConfigError: A missing or empty source, or repeated names.
    """
    names: tuple[str, ...] | None = None
    if classes is not None:
        names = tuple(n.strip() for n in classes if n.strip())
        source = "--classes"
    elif classes_file is not None:
        if not classes_file.is_file():
            raise ConfigError(f"--classes-file {classes_file}: no such file")
        lines = classes_file.read_text(encoding="utf-8").splitlines()
        names = tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
        source = f"--classes-file {classes_file}"
    elif classes_from is not None:
        if not classes_from.is_dir():
            raise ConfigError(f"--classes-from {classes_from}: no such directory")
        folders = sorted(
            p.name for p in classes_from.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if folders and set(folders) <= _SPLIT_NAMES:
            raise ConfigError(
                f"--classes-from {classes_from} holds split folders ({', '.join(folders)}), not "
                f"class folders: pass the split directory itself, e.g. {classes_from / folders[0]}"
            )
        names = tuple(folders)
        source = f"--classes-from {classes_from}"
    if names is None:
        return None
    if not names:
        raise ConfigError(f"{source}: no class names found")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: repeated class names {repeated[:5]}")
    return names


def load_templates(path: Path | None) -> tuple[str, ...]:
    """Prompt templates from a file (one per line, each with exactly one ``{}``).

    Args:
        path: The file; ``None`` gives :data:`DEFAULT_TEMPLATES`.

    Raises:
        ConfigError: A missing or empty file, or a line without exactly one ``{}``.
    """
    if path is None:
        return DEFAULT_TEMPLATES
    if not path.is_file():
        raise ConfigError(f"--templates-file {path}: no such file")
    templates = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    templates = tuple(t for t in templates if t and not t.startswith("#"))
    if not templates:
        raise ConfigError(f"--templates-file {path}: no templates found")
    for template in templates:
        rest = template.replace("{}", "", 1)
        if template.count("{}") != 1 or "{" in rest or "}" in rest:
            raise ConfigError(
                f"--templates-file {path}: each template needs exactly one {{}} for the class "
                f"name and no other braces, got {template!r}"
            )
    return templates


def image_seed(seed: int, class_name: str, index: int) -> int:
    """The seed of image ``index`` of ``class_name``: a 63-bit hash of the three.

    It depends on nothing else (not on the other classes, the batch size or the order of
    generation), so adding classes or images never changes the existing ones.
    """
    digest = hashlib.sha256(f"{seed}\x00{class_name}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def _folder_name(class_name: str) -> str:
    name = class_name.replace("/", "_").replace("\\", "_").replace("\x00", "_").strip()
    if name.startswith("."):
        name = "_" + name[1:]
    return name


def _prompt_name(class_name: str) -> str:
    return " ".join(class_name.replace("_", " ").split())


def _prompt(template: str, name: str) -> str:
    """``template`` with the class name, with "a" turned into "an" before a vowel."""
    if name[:1].lower() in "aeiou":
        template = re.sub(r"\b([Aa]) \{\}", r"\1n {}", template)
    return template.format(name)


@dataclass(frozen=True)
class ImageJob:
    """One image to make.

    Attributes:
        class_name: The class.
        folder: Its folder under the output directory.
        index: Index of the image within its class.
        seed: The image's own seed (:func:`image_seed`).
        prompt: The prompt (text pipelines), else ``None``.
        class_id: The class id (class-conditional pipelines), else ``None``.
    """

    class_name: str
    folder: str
    index: int
    seed: int
    prompt: str | None = None
    class_id: int | None = None

    @property
    def file(self) -> str:
        """Path of the image relative to the output directory, with ``/`` separators."""
        return f"{self.folder}/{self.index:06d}.png"


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "./", "../", "~"))
        or model in (".", "..")
        or model.count("/") > 1
        or "\\" in model
    )


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence diffusers' and transformers' progress bars and warnings while loading."""
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


def _resolve_dtype(name: str, device: Any) -> Any:
    import torch

    if name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name not in _DTYPES:
        raise ConfigError(f"--dtype must be auto, fp16, bf16 or fp32, got {name!r}")
    return getattr(torch, _DTYPES[name])


def _short(error: BaseException, limit: int = 160) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_pipeline(model: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any, Any]:
    """Load a diffusers pipeline from a local directory or the Hugging Face hub.

    A directory is loaded with ``local_files_only=True``; a hub id normally (the cache first
    when ``HF_HUB_OFFLINE=1``). The pipeline's own progress bars are turned off.

    Args:
        model: A local diffusers pipeline directory (holding ``model_index.json``) or a hub id.
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp16``, ``bf16`` or ``fp32``.

    Returns:
        ``(pipeline, torch.device, torch.dtype)``.

    Raises:
        ConfigError: One line when the model cannot be found or loaded, pointing at
            ``--model PATH``.
    """
    dev = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    path = Path(model).expanduser()
    local = path.is_dir()
    if not local and (path.exists() or _looks_like_path(model)):
        raise ConfigError(
            f"--model {model}: no such directory; pass --model PATH with a local diffusers "
            "pipeline directory (holding model_index.json) or a Hugging Face hub id"
        )
    import diffusers

    loader: Any = diffusers.DiffusionPipeline  # untyped
    try:
        with _quiet_loading(), warnings.catch_warnings():
            # diffusers >= 0.36 renamed torch_dtype to dtype; older versions know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipeline = loader.from_pretrained(
                str(path) if local else model, torch_dtype=torch_dtype, local_files_only=local
            )
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        if local:
            raise ConfigError(
                f"--model {model}: cannot load a diffusers pipeline from this directory "
                f"({_short(e)}); pass --model PATH with a directory saved by save_pretrained"
            ) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        raise ConfigError(
            f"--model {model}: the model cannot be reached (no network or not in the Hugging "
            f"Face cache{', HF_HUB_OFFLINE is set' if offline else ''}; {type(e).__name__}); "
            "download it where there is network and pass --model PATH with the local directory"
        ) from None
    pipeline.to(dev)
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    return pipeline, dev, torch_dtype


def _call_parameters(pipeline: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(pipeline.__call__).parameters


def detect_kind(pipeline: Any, kind: Kind = "auto") -> PipelineKind:
    """How to call ``pipeline``: from its call signature (``prompt``, ``class_labels`` or
    ``batch_size``), or check that the requested ``kind`` fits it.

    Raises:
        ConfigError: The signature fits no kind, or not the requested one.
    """
    params = _call_parameters(pipeline)
    name = type(pipeline).__name__
    if kind != "auto":
        argument = _KIND_ARGUMENT[kind]
        if argument not in params:
            raise ConfigError(
                f"--kind {kind}: {name} takes no {argument!r} argument; try --kind auto"
            )
        return kind
    for candidate, argument in _KIND_ARGUMENT.items():
        if argument in params:
            return candidate
    raise ConfigError(
        f"{name} takes none of prompt, class_labels, batch_size: it is not a text-to-image, "
        "class-conditional or unconditional image pipeline that syn2co-train synth can drive"
    )


def _default(params: Mapping[str, inspect.Parameter], name: str) -> Any:
    p = params.get(name)
    if p is None or p.default is inspect.Parameter.empty:
        return None
    return p.default


def _label_ids(pipeline: Any) -> dict[str, int]:
    labels = getattr(pipeline, "labels", None)
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): int(v) for k, v in labels.items()}


def _num_class_ids(pipeline: Any) -> int | None:
    for component in ("transformer", "unet"):
        config = getattr(getattr(pipeline, component, None), "config", None)
        n = getattr(config, "num_embeds_ada_norm", None) or getattr(
            config, "num_class_embeds", None
        )
        if isinstance(n, int) and n > 0:
            return n
    return None


def _default_class_names(pipeline: Any, kind: PipelineKind) -> tuple[str, ...]:
    if kind == "text":
        return CIFAR10_CLASSES
    if kind == "unconditional":
        return ("samples",)
    labels = _label_ids(pipeline)
    n = min(10, _num_class_ids(pipeline) or 10)
    names: list[str] = []
    for i in range(n):
        candidates = sorted((name for name, j in labels.items() if j == i), key=len)
        names.append(candidates[0] if candidates else str(i))
    return tuple(names)


def _class_ids(pipeline: Any, names: Sequence[str]) -> list[int]:
    """Class ids of ``names``: through the pipeline's labels, as integers, else by position."""
    labels = _label_ids(pipeline)
    lower = {k.lower(): v for k, v in labels.items()}
    ids: list[int] = []
    for position, name in enumerate(names):
        if name in labels:
            ids.append(labels[name])
        elif name.lower() in lower:
            ids.append(lower[name.lower()])
        elif re.fullmatch(r"\d+", name):
            ids.append(int(name))
        elif not labels:
            ids.append(position)
        else:
            within = [label for label in labels if name.lower() in label.lower()]
            close = list(dict.fromkeys([*within, *difflib.get_close_matches(name, labels)]))[:5]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"class {name!r} is not a label of {type(pipeline).__name__}{hint}; give label "
                "names from the model's id2label or integer class ids"
            )
    n = _num_class_ids(pipeline)
    if n is not None:
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ConfigError(f"class ids {bad[:5]} are outside the model's {n} classes")
    return ids


def _pipeline_kwargs(
    pipeline: Any,
    kind: PipelineKind,
    jobs: Sequence[ImageJob],
    *,
    steps: int | None,
    guidance: float | None,
    size: tuple[int, int] | None,
) -> dict[str, Any]:
    import torch

    params = _call_parameters(pipeline)
    kwargs: dict[str, Any] = {
        # CPU generators: the initial noise is the same on any device.
        "generator": [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
    }
    if kind == "text":
        kwargs["prompt"] = [job.prompt for job in jobs]
    elif kind == "class":
        kwargs["class_labels"] = [job.class_id for job in jobs]
    else:
        kwargs["batch_size"] = len(jobs)
    if steps is not None and "num_inference_steps" in params:
        kwargs["num_inference_steps"] = steps
    if guidance is not None and "guidance_scale" in params:
        kwargs["guidance_scale"] = guidance
    if size is not None and "height" in params and "width" in params:
        kwargs["width"], kwargs["height"] = size
    if "output_type" in params:
        kwargs["output_type"] = "pil"
    return kwargs


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return to_rgb(Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array))


def _finish(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def _run_pipeline(
    pipeline: Any,
    kind: PipelineKind,
    jobs: Sequence[ImageJob],
    *,
    steps: int | None,
    guidance: float | None,
    size: tuple[int, int] | None,
) -> list[Image.Image]:
    """One pipeline call for ``jobs``: their images, in order, at ``size`` when given."""
    kwargs = _pipeline_kwargs(pipeline, kind, jobs, steps=steps, guidance=guidance, size=size)
    result = pipeline(**kwargs)
    images = getattr(result, "images", None)
    if images is None:
        images = result[0]
    if len(images) != len(jobs):
        raise RuntimeError(
            f"{type(pipeline).__name__} returned {len(images)} images for {len(jobs)} requests"
        )
    return [_finish(_to_pil(image), size) for image in images]


def regenerate(manifest_line: Mapping[str, Any] | str, pipeline: Any) -> Image.Image:
    """Make one image again from its manifest line alone.

    The pipeline should be the line's ``model``, on the same device and dtype for a
    pixel-identical result (on the CPU in fp32 it is); when the line names another scheduler
    class, the pipeline's scheduler is replaced by that class (from the same config).

    Args:
        manifest_line: A line of ``manifest.jsonl``, as text or parsed.
        pipeline: A loaded diffusers pipeline.

    Returns:
        The image, as an RGB PIL image of the line's ``size``.
    """
    entry: Mapping[str, Any] = (
        json.loads(manifest_line) if isinstance(manifest_line, str) else manifest_line
    )
    kind = detect_kind(pipeline, entry["kind"])
    scheduler = getattr(pipeline, "scheduler", None)
    wanted = entry.get("scheduler")
    if scheduler is not None and wanted and type(scheduler).__name__ != wanted:
        import diffusers

        pipeline.scheduler = getattr(diffusers, wanted).from_config(scheduler.config)
    size = entry.get("size")
    job = ImageJob(
        class_name=entry["class"],
        folder=str(entry["file"]).rsplit("/", 1)[0],
        index=int(entry["index"]),
        seed=int(entry["seed"]),
        prompt=entry.get("prompt"),
        class_id=entry.get("class_id"),
    )
    return _run_pipeline(
        pipeline,
        kind,
        [job],
        steps=entry.get("steps"),
        guidance=entry.get("guidance"),
        size=(int(size[0]), int(size[1])) if size else None,
    )[0]


# --------------------------------------------------------------------------------------------
# Near-duplicates
# --------------------------------------------------------------------------------------------


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: the signs of horizontal gradients of a 9x8 grayscale thumbnail.

    Row by row, bit ``8 * r + c`` is set when pixel ``(r, c + 1)`` is brighter than ``(r, c)``.
    Near-identical images have hashes a few bits apart; unrelated ones about 32 bits apart.
    """
    thumb = to_rgb(image).convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = np.asarray(thumb, dtype=np.int16)
    bits = pixels[:, 1:] > pixels[:, :-1]
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts: npt.NDArray[np.uint8] = np.bitwise_count(x)
        return counts
    per_byte = _POPCOUNT8[np.ascontiguousarray(x).view(np.uint8)]
    summed: npt.NDArray[np.uint8] = per_byte.reshape(*x.shape, 8).sum(-1, dtype=np.uint8)
    return summed


def near_duplicate_pairs(
    hashes: Sequence[int] | npt.NDArray[np.uint64], threshold: int
) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, of hashes at most ``threshold`` bits apart.

    Vectorised: all pairs are compared with XOR and popcount on ``uint64`` arrays, in blocks of
    rows so that memory stays near 32 MB whatever the number of hashes.
    """
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = len(h)
    pairs: list[tuple[int, int, int]] = []
    block = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, block):
        rows = h[start : start + block]
        distance = _popcount(rows[:, None] ^ h[None, :])
        i, j = np.nonzero(distance <= threshold)
        i = i + start
        keep = j > i
        pairs.extend(
            (int(a), int(b), int(distance[a - start, b]))
            for a, b in zip(i[keep], j[keep], strict=True)
        )
    return pairs


# --------------------------------------------------------------------------------------------
# The output directory: manifest, recovery, atomic files
# --------------------------------------------------------------------------------------------


@dataclass
class _Recovery:
    dropped_lines: int = 0
    missing_files: int = 0
    removed_files: int = 0

    def describe(self) -> str:
        parts = []
        if self.dropped_lines:
            parts.append(f"dropped {self.dropped_lines} incomplete manifest line(s)")
        if self.missing_files:
            parts.append(f"forgot {self.missing_files} manifest line(s) whose file is missing")
        if self.removed_files:
            parts.append(f"removed {self.removed_files} unfinished or unlisted file(s)")
        return ", ".join(parts)


def _write_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def _save_png_atomic(image: Image.Image, path: Path) -> None:
    # The manifest line written after it is what makes the image count, so no directory fsync.
    write_atomic(path, lambda f: image.save(f, format="PNG"), sync_dir=False)


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    file, cls = entry.get("file"), entry.get("class")
    if not isinstance(file, str) or not isinstance(cls, str):
        return False
    parts = file.split("/")
    return (
        len(parts) == 2
        and all(p not in ("", ".", "..") for p in parts)
        and isinstance(entry.get("index"), int)
        and isinstance(entry.get("seed"), int)
    )


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """The complete, well-formed lines of ``out/manifest.jsonl`` (``[]`` when there is none).

    A line that does not parse (a run killed while appending it) is left out; files are not
    checked.
    """
    path = out / MANIFEST_NAME
    if not path.is_file():
        return []
    entries: list[dict[str, Any]] = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if _valid_entry(entry):
            entries.append(entry)
    return entries


def _recover(out: Path) -> tuple[dict[str, dict[str, Any]], _Recovery]:
    """Make ``out`` consistent: the manifest lists exactly the finished images on disk.

    Returns the entries by file and what was cleaned up.
    """
    recovery = _Recovery()
    path = out / MANIFEST_NAME
    raw = path.read_bytes() if path.is_file() else b""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    entries: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            recovery.dropped_lines += 1
            continue
        if not _valid_entry(entry) or entry["file"] in entries:
            recovery.dropped_lines += 1
            continue
        if not (out / entry["file"]).is_file():
            recovery.missing_files += 1
            continue
        entries[entry["file"]] = entry
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.iterdir()):
            relative = f"{folder.name}/{file.name}"
            if relative in entries or not file.is_file():
                continue
            unfinished = file.name.startswith(".") and file.name.endswith(".tmp")
            if unfinished or _IMAGE_NAME.match(file.name):
                file.unlink()
                recovery.removed_files += 1
    for stale in out.glob(".*.tmp"):
        stale.unlink()
    rewritten = b"".join(
        json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries.values()
    )
    if rewritten != raw:
        _write_atomic(path, rewritten)
    return entries, recovery


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(out / _LOCK_NAME, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"--out {out}: another syn2co-train synth is writing to this directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _check_out(out: Path) -> bool:
    """Whether ``out`` already exists (as a synth directory); refuse anything else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if out.is_dir() and not (out / MANIFEST_NAME).exists():
        visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if visible:
            raise ConfigError(
                f"--out {out} is not empty and holds no {MANIFEST_NAME}: it was not made by "
                "syn2co-train synth; choose a new or empty directory"
            )
    return out.is_dir()


def _open_out(out: Path, stack: contextlib.ExitStack) -> None:
    """Create ``out`` with an empty manifest if needed, and lock it for this process."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).touch()
    stack.enter_context(_locked(out))


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassStats:
    """One row of the summary.

    Attributes:
        name: Class name.
        folder: Its folder under the output directory.
        images: Images of the class in the manifest.
        new: Of which made by this run.
        duplicate_pairs: Near-duplicate pairs within the class.
    """

    name: str
    folder: str
    images: int
    new: int
    duplicate_pairs: int


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` did.

    Attributes:
        out: The output directory.
        classes: Per-class counts (the requested classes first, then any other class found in
            the manifest).
        new_images: Images made by this run.
        planned_images: Images the command asks for (classes x images per class).
        missing_images: Requested images still missing (after ``limit`` or an error).
        seconds: Generation time (model loading excluded).
        kind: The pipeline kind, or ``None`` when no pipeline was needed.
        pipeline: The pipeline's class name (``""`` when none was loaded).
        device: Where it ran (``""`` when no pipeline was loaded).
        dtype: Its dtype (``""`` when no pipeline was loaded).
        dup_threshold: The Hamming distance threshold of the near-duplicate report.
        recovered: What the start-up check cleaned up (empty when nothing).
    """

    out: Path
    classes: tuple[ClassStats, ...]
    new_images: int
    planned_images: int
    missing_images: int
    seconds: float
    kind: PipelineKind | None
    pipeline: str
    device: str
    dtype: str
    dup_threshold: int
    recovered: str = ""
    duplicates_file: Path = field(default_factory=Path)

    @property
    def total_images(self) -> int:
        """Images in the output directory's manifest."""
        return sum(c.images for c in self.classes)

    @property
    def duplicate_pairs(self) -> int:
        """Near-duplicate pairs over all classes."""
        return sum(c.duplicate_pairs for c in self.classes)

    @property
    def images_per_second(self) -> float:
        """New images per second of generation."""
        return self.new_images / self.seconds if self.seconds > 0 else 0.0


class _RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.2f} img/s", style="cyan")


def _plan(
    names: Sequence[str],
    images_per_class: int,
    seed: int,
    *,
    prompts: Sequence[str] | None = None,
    class_ids: Sequence[int] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> list[ImageJob]:
    jobs: list[ImageJob] = []
    for c, name in enumerate(names):
        folder = _folder_name(name)
        for i in range(images_per_class):
            jobs.append(
                ImageJob(
                    class_name=name,
                    folder=folder,
                    index=i,
                    seed=image_seed(seed, name, i),
                    prompt=_prompt(templates[i % len(templates)], prompts[c]) if prompts else None,
                    class_id=class_ids[c] if class_ids is not None else None,
                )
            )
    return jobs


def _check_folders(names: Sequence[str]) -> None:
    folders: dict[str, str] = {}
    for name in names:
        folder = _folder_name(name)
        if not folder:
            raise ConfigError(f"class name {name!r} cannot be a folder name")
        if folder in folders:
            raise ConfigError(
                f"classes {folders[folder]!r} and {name!r} would share the folder {folder!r}"
            )
        folders[folder] = name


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


def _call_settings(
    pipeline: Any, kind: PipelineKind, config: SynthConfig, console: Console
) -> tuple[int | None, float | None, tuple[int, int] | None]:
    """Steps, guidance and size as the pipeline will be called (its defaults filled in)."""
    params = _call_parameters(pipeline)
    name = type(pipeline).__name__
    steps: int | None = config.steps or _default(params, "num_inference_steps")
    if "num_inference_steps" not in params:
        if config.steps is not None:
            console.print(f"[yellow]note:[/] {name} takes no steps; --steps ignored")
        steps = None
    guidance: float | None = config.guidance
    if "guidance_scale" not in params:
        if guidance is not None:
            console.print(f"[yellow]note:[/] {name} takes no guidance; --guidance ignored")
        guidance = None
    elif guidance is None:
        guidance = _default(params, "guidance_scale")
    size = (config.size, config.size) if config.size is not None else None
    if kind == "text" and size is not None and "height" in params:
        factor = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
        if size[0] % factor:
            raise ConfigError(f"--size {size[0]}: {name} needs a multiple of {factor}")
    return steps, guidance, size


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
        The summary; :func:`summary_table` renders it.

    Raises:
        ConfigError: Bad options, an unreachable model, an output directory that is not a
            synth directory or was made with other settings, or out of GPU memory.
    """
    config.check()
    console = console or Console(stderr=True)
    out = config.out.expanduser()
    names = class_names(config.classes, config.classes_file, config.classes_from)
    templates = load_templates(config.templates_file)
    model_id = _model_id(config.model)
    existed = _check_out(out)
    with contextlib.ExitStack() as stack:
        # A new directory is only created once the model has loaded, so that a typo in
        # --model leaves nothing behind.
        entries: dict[str, dict[str, Any]] = {}
        recovery = _Recovery()
        if existed:
            _open_out(out, stack)
            entries, recovery = _recover(out)
        if entries or recovery.describe():
            note = f"resuming: {len(entries)} image(s) already in {out / MANIFEST_NAME}"
            note += f"; {recovery.describe()}" if recovery.describe() else ""
            console.print(note, soft_wrap=True)

        # What is left to do can be told without the model when the classes are known.
        needs_model = names is None
        if names is not None:
            _check_folders(names)
            plan = _plan(names, config.images_per_class, config.seed)
            requested = _requested(config, model_id)
            _check_consistent(
                entries, {job.file: {**requested, "seed": job.seed} for job in plan}, out
            )
            pending = [job for job in plan if job.file not in entries]
            needs_model = bool(pending) and config.limit != 0

        kind: PipelineKind | None = None
        pipeline_name = device_name = dtype_name = ""
        new_by_file: set[str] = set()
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
            names = names if names is not None else _default_class_names(pipeline, kind)
            _check_folders(names)
            steps, guidance, size = _call_settings(pipeline, kind, config, console)
            plan = _plan(
                names,
                config.images_per_class,
                config.seed,
                prompts=[_prompt_name(n) for n in names] if kind == "text" else None,
                class_ids=_class_ids(pipeline, names) if kind == "class" else None,
                templates=templates,
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
                    for job in plan
                },
                out,
            )
            pending = [job for job in plan if job.file not in entries]
            if config.limit is not None:
                pending = pending[: config.limit]
            extra = {"dtype": dtype_name, "device": device_name}
            if not existed:
                _open_out(out, stack)
                existed = True
            seconds = _generate(
                pipeline,
                kind,
                pending,
                out=out,
                entries=entries,
                common=common,
                extra=extra,
                size=size,
                batch_size=config.batch_size,
                console=console,
                new_by_file=new_by_file,
            )
        assert names is not None
        if not existed:
            _open_out(out, stack)
        summary = _summarise(
            out,
            names,
            plan,
            entries,
            new_by_file,
            config=config,
            seconds=seconds,
            kind=kind,
            pipeline=pipeline_name,
            device=device_name,
            dtype=dtype_name,
            recovered=recovery.describe(),
        )
    return summary


def _generate(
    pipeline: Any,
    kind: PipelineKind,
    pending: Sequence[ImageJob],
    *,
    out: Path,
    entries: dict[str, dict[str, Any]],
    common: Mapping[str, Any],
    extra: Mapping[str, Any],
    size: tuple[int, int] | None,
    batch_size: int,
    console: Console,
    new_by_file: set[str],
) -> float:
    """Make ``pending`` in batches, each image saved atomically then appended to the manifest.

    Returns the seconds spent.
    """
    import torch

    if not pending:
        return 0.0
    for folder in sorted({job.folder for job in pending}):
        (out / folder).mkdir(exist_ok=True)
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
    with (
        open(out / MANIFEST_NAME, "a", encoding="utf-8") as manifest,
        Progress(*columns, console=console) as progress,
    ):
        task = progress.add_task("generating", total=len(pending))
        try:
            for b in range(0, len(pending), batch_size):
                batch = pending[b : b + batch_size]
                try:
                    images = _run_pipeline(
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
                        f"{len(new_by_file)} images already made are kept; rerun to resume)"
                    ) from None
                for job, image in zip(batch, images, strict=True):
                    _save_png_atomic(image, out / job.file)
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
                    manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    manifest.flush()
                    os.fsync(manifest.fileno())
                    entries[job.file] = entry
                    new_by_file.add(job.file)
                progress.advance(task, len(batch))
        except KeyboardInterrupt:
            from .engine import Interrupted

            raise Interrupted(
                f"stopped after {len(new_by_file)} new images, all saved; rerun the same "
                "command to continue"
            ) from None
    return time.perf_counter() - start


def _entry_hash(out: Path, entry: Mapping[str, Any]) -> int:
    value = entry.get("dhash")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value, 16)
    with Image.open(out / entry["file"]) as im:
        return dhash(im)


def _summarise(
    out: Path,
    names: Sequence[str],
    plan: Sequence[ImageJob],
    entries: Mapping[str, Mapping[str, Any]],
    new_by_file: set[str],
    *,
    config: SynthConfig,
    seconds: float,
    kind: PipelineKind | None,
    pipeline: str,
    device: str,
    dtype: str,
    recovered: str,
) -> SynthSummary:
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries.values():
        by_class.setdefault(entry["class"], []).append(entry)
    order = list(dict.fromkeys([*names, *sorted(by_class)]))
    report: dict[str, Any] = {
        "hash": "dhash-64 (9x8 grayscale thumbnail)",
        "threshold": config.dup_threshold,
        "classes": {},
    }
    rows: list[ClassStats] = []
    for name in order:
        members = sorted(by_class.get(name, []), key=lambda e: (e["index"], e["file"]))
        hashes = np.array([_entry_hash(out, e) for e in members], dtype=np.uint64)
        pairs = near_duplicate_pairs(hashes, config.dup_threshold)
        report["classes"][name] = {
            "images": len(members),
            "pairs": len(pairs),
            "listed": [
                [members[i]["file"], members[j]["file"], d] for i, j, d in pairs[:_MAX_LISTED_PAIRS]
            ],
        }
        rows.append(
            ClassStats(
                name=name,
                folder=_folder_name(name),
                images=len(members),
                new=sum(1 for e in members if e["file"] in new_by_file),
                duplicate_pairs=len(pairs),
            )
        )
    duplicates_file = out / DUPLICATES_NAME
    _write_atomic(duplicates_file, (json.dumps(report, indent=2) + "\n").encode())
    missing = sum(1 for job in plan if job.file not in entries)
    return SynthSummary(
        out=out,
        classes=tuple(rows),
        new_images=len(new_by_file),
        planned_images=len(plan),
        missing_images=missing,
        seconds=seconds,
        kind=kind,
        pipeline=pipeline,
        device=device,
        dtype=dtype,
        dup_threshold=config.dup_threshold,
        recovered=recovered,
        duplicates_file=duplicates_file,
    )


def summary_table(summary: SynthSummary) -> Table:
    """A rich table: per class the images, the new ones and the near-duplicate pairs."""
    table = Table(title=f"synthetic images in {summary.out}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("new this run", justify="right")
    table.add_column(f"near-duplicate pairs (dHash <= {summary.dup_threshold})", justify="right")
    for row in summary.classes:
        style = "red" if row.duplicate_pairs else ""
        table.add_row(
            row.name, str(row.images), str(row.new), Text(str(row.duplicate_pairs), style=style)
        )
    table.add_section()
    table.add_row(
        "total",
        str(summary.total_images),
        str(summary.new_images),
        Text(str(summary.duplicate_pairs), style="red" if summary.duplicate_pairs else ""),
    )
    if summary.new_images:
        table.caption = (
            f"{summary.new_images} new images in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.2f} images/s), {summary.kind} pipeline "
            f"{summary.pipeline} on {summary.device} ({summary.dtype})"
        )
    else:
        table.caption = "nothing new to generate"
    return table
