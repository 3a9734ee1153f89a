"""What ``syn2co-train synth`` is asked to do: :class:`SynthConfig` and the checks that need
nothing but its values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .dedup import HASH_BITS

__all__ = ["DTypeName", "DeviceName", "Kind", "PipelineKind", "PromptStyle", "SynthConfig"]

Kind = Literal["auto", "text", "class", "unconditional"]
PromptStyle = Literal["templates", "fake-it"]
PipelineKind = Literal["text", "class", "unconditional"]
DeviceName = Literal["auto", "cpu", "cuda"]
DTypeName = Literal["auto", "fp16", "bf16", "fp32"]


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
        classes_from: An image folder whose class folders name the classes, or the name of a
            built-in class set (``CLASS_SETS``: ``imagenet100``, whose folders are WordNet
            ids and whose prompts use the class names of ``data/imagenet100_classes.tsv``).
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
        prompts: ``templates`` (the class name in ``DEFAULT_TEMPLATES`` or
            ``templates_file``) or ``fake-it`` (``fake_it_prompt``; needs classes with a
            known hypernym, e.g. ``classes_from="imagenet100"``; guidance defaults to
            ``FAKE_IT_GUIDANCE``).
        kind: ``auto`` (from the pipeline's call signature), ``text``, ``class`` or
            ``unconditional``.
        dup_threshold: Largest dHash Hamming distance (of 64 bits) reported as a near-duplicate.
        limit: Stop after this many new images (``None``: no limit); rerun to continue.
    """

    model: str
    out: Path
    classes: tuple[str, ...] | None = None
    classes_file: Path | None = None
    classes_from: Path | str | None = None
    images_per_class: int = 100
    steps: int | None = None
    guidance: float | None = None
    size: int | None = None
    seed: int = 0
    batch_size: int = 8
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"
    templates_file: Path | None = None
    prompts: PromptStyle = "templates"
    kind: Kind = "auto"
    dup_threshold: int = 4
    limit: int | None = None

    def check(self) -> None:
        """Refuse values that cannot work, before anything is read or written.

        Raises:
            ConfigError: One line naming the option and what it needs.
        """
        for name, value, low in (
            ("--images-per-class", self.images_per_class, 1),
            ("--batch-size", self.batch_size, 1),
            ("--steps", self.steps, 1),
            ("--size", self.size, 8),
            ("--limit", self.limit, 0),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if not 0 <= self.dup_threshold <= HASH_BITS:
            raise ConfigError(
                f"--dup-threshold must be in [0, {HASH_BITS}], got {self.dup_threshold}"
            )
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
        if self.prompts == "fake-it" and self.templates_file is not None:
            raise ConfigError("--prompts fake-it builds its own prompts: drop --templates-file")
