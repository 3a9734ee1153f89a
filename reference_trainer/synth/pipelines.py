"""Diffusers pipelines: loading one, telling its kind, calling it for a batch of images.

Three kinds are supported, told apart by the pipeline's call signature:

- ``text``: text-to-image (Stable Diffusion and any pipeline taking ``prompt``);
- ``class``: class-conditional (DiT, taking ``class_labels``); class names are mapped to ids
  through the pipeline's ``labels`` (its ``id2label``) or given as integers;
- ``unconditional``: DDPM/DDIM style (taking ``batch_size``); the "classes" are folder names.

Each image gets its own CPU ``torch.Generator`` seeded with its own seed, so its initial noise
is the same on any device and in any batch, and :func:`regenerate` makes it again from its
manifest line alone.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console

from ..data.rgb import to_rgb
from ..devices import resolve_device
from ..errors import ConfigError
from ._loading import looks_like_path, quiet_loading, resolve_dtype, short
from .jobs import ImageJob
from .prompts import CIFAR10_CLASSES
from .settings import Kind, PipelineKind, SynthConfig

__all__ = [
    "call_parameters",
    "call_settings",
    "class_ids",
    "default_class_names",
    "detect_kind",
    "load_pipeline",
    "regenerate",
    "run_pipeline",
]

_KIND_ARGUMENT: dict[PipelineKind, str] = {
    "text": "prompt",
    "class": "class_labels",
    "unconditional": "batch_size",
}


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
    torch_dtype = resolve_dtype(dtype, dev)
    path = Path(model).expanduser()
    local = path.is_dir()
    if not local and (path.exists() or looks_like_path(model)):
        raise ConfigError(
            f"--model {model}: no such directory; pass --model PATH with a local diffusers "
            "pipeline directory (holding model_index.json) or a Hugging Face hub id"
        )
    import diffusers

    loader: Any = diffusers.DiffusionPipeline  # untyped
    try:
        with quiet_loading(), warnings.catch_warnings():
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
                f"({short(e)}); pass --model PATH with a directory saved by save_pretrained"
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


def call_parameters(pipeline: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``pipeline(...)``.

    Args:
        pipeline: A loaded pipeline.

    Returns:
        Its call signature's parameters by name.
    """
    return inspect.signature(pipeline.__call__).parameters


def detect_kind(pipeline: Any, kind: Kind = "auto") -> PipelineKind:
    """How to call ``pipeline``: from its call signature (``prompt``, ``class_labels`` or
    ``batch_size``), or check that the requested ``kind`` fits it.

    Args:
        pipeline: A loaded pipeline.
        kind: ``auto`` or the kind asked for.

    Returns:
        The kind.

    Raises:
        ConfigError: The signature fits no kind, or not the requested one.
    """
    params = call_parameters(pipeline)
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


def default_class_names(pipeline: Any, kind: PipelineKind) -> tuple[str, ...]:
    """The classes made when none are given.

    Args:
        pipeline: A loaded pipeline.
        kind: Its kind.

    Returns:
        The CIFAR-10 classes (text), ``samples`` (unconditional), or class ids 0-9 named by
        their shortest label (class-conditional).
    """
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


def class_ids(pipeline: Any, names: Sequence[str]) -> list[int]:
    """Class ids of ``names``: through the pipeline's labels, as integers, else by position.

    Args:
        pipeline: A class-conditional pipeline.
        names: The class names.

    Returns:
        One id per name.

    Raises:
        ConfigError: A name that is no label (with the close ones), or an id out of range.
    """
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


def call_settings(
    pipeline: Any, kind: PipelineKind, config: SynthConfig, console: Console
) -> tuple[int | None, float | None, tuple[int, int] | None]:
    """Steps, guidance and size as the pipeline will be called (its defaults filled in).

    Args:
        pipeline: A loaded pipeline.
        kind: Its kind.
        config: The options (``--steps``, ``--guidance``, ``--size``).
        console: Where notes about ignored options go.

    Returns:
        ``(steps, guidance, (width, height))``, each ``None`` where the pipeline takes none.

    Raises:
        ConfigError: A ``--size`` the pipeline cannot make.
    """
    params = call_parameters(pipeline)
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

    params = call_parameters(pipeline)
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


def run_pipeline(
    pipeline: Any,
    kind: PipelineKind,
    jobs: Sequence[ImageJob],
    *,
    steps: int | None,
    guidance: float | None,
    size: tuple[int, int] | None,
) -> list[Image.Image]:
    """One pipeline call for ``jobs``.

    Args:
        pipeline: A loaded pipeline.
        kind: Its kind.
        jobs: The images to make in this call.
        steps: Denoising steps, or ``None`` for the pipeline's default.
        guidance: Guidance scale, or ``None``.
        size: ``(width, height)``, or ``None`` for the model's native size.

    Returns:
        Their images as RGB PIL images, in order, at ``size`` when given.

    Raises:
        RuntimeError: The pipeline returned another number of images.
    """
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
    return run_pipeline(
        pipeline,
        kind,
        [job],
        steps=entry.get("steps"),
        guidance=entry.get("guidance"),
        size=(int(size[0]), int(size[1])) if size else None,
    )[0]
