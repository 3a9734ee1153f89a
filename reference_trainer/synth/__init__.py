"""Synthetic image datasets made with diffusers: the first half of Syn2Co.

``syn2co-train synth`` writes an image folder ``OUT/<class>/<index>.png`` that the trainer reads
like any other (``--synthetic-data OUT``), plus ``OUT/manifest.jsonl``: one JSON line per
finished image with everything needed to make it again (class, prompt or class id, seed, model,
scheduler, steps, guidance, size), and ``OUT/duplicates.json``, the near-duplicate report.

One concept per module:

- :mod:`~reference_trainer.synth.settings`: :class:`SynthConfig`, the options and their checks;
- :mod:`~reference_trainer.synth.prompts`: class names, prompt templates and the prompts of
  "Fake it till you make it";
- :mod:`~reference_trainer.synth.jobs`: the images to make, each with its own seed;
- :mod:`~reference_trainer.synth.pipelines`: loading diffusers pipelines and calling them
  (text-to-image, class-conditional, unconditional), :func:`regenerate`;
- :mod:`~reference_trainer.synth.store`: the output directory: its lock, how images and manifest
  lines are written, and what a rerun does with what it finds there (it deletes only its own
  temporary files, follows no symbolic link, and stops at an image it did not write);
- :mod:`~reference_trainer.synth.dedup`: the near-duplicate hash;
- :mod:`~reference_trainer.synth.summary`: the per-class counts and the summary table;
- :mod:`~reference_trainer.synth.generation`: :func:`generate_dataset`, from options to summary.
"""

from __future__ import annotations

from .dedup import dhash, near_duplicate_pairs
from .generation import generate_dataset
from .jobs import ImageJob, image_seed
from .pipelines import detect_kind, load_pipeline, regenerate
from .prompts import (
    CIFAR10_CLASSES,
    CLASS_SETS,
    DEFAULT_TEMPLATES,
    FAKE_IT_GUIDANCE,
    ClassInfo,
    background_scenes,
    class_names,
    fake_it_prompt,
    imagenet100_info,
    load_templates,
)
from .settings import Kind, PipelineKind, PromptStyle, SynthConfig
from .store import DUPLICATES_NAME, LOCK_NAME, MANIFEST_NAME, read_manifest
from .summary import ClassStats, SynthSummary, summary_table

__all__ = [
    "CIFAR10_CLASSES",
    "CLASS_SETS",
    "DEFAULT_TEMPLATES",
    "DUPLICATES_NAME",
    "FAKE_IT_GUIDANCE",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "ClassInfo",
    "ClassStats",
    "ImageJob",
    "Kind",
    "PipelineKind",
    "PromptStyle",
    "SynthConfig",
    "SynthSummary",
    "background_scenes",
    "class_names",
    "detect_kind",
    "dhash",
    "fake_it_prompt",
    "generate_dataset",
    "image_seed",
    "imagenet100_info",
    "load_pipeline",
    "load_templates",
    "near_duplicate_pairs",
    "read_manifest",
    "regenerate",
    "summary_table",
]
