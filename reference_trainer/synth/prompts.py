"""Classes and prompts: where class names come from, the prompt templates, and the prompts of
"Fake it till you make it" (Sariyildiz et al., CVPR 2023).

Text-to-image pipelines are prompted with the class name in several templates, one image per
(prompt, seed), or (``--prompts fake-it``) with that paper's richest prompt, ``"<class name>,
<WordNet hypernym> inside <background scene>"``, a Places365 scene drawn per image, at their
lower guidance scale (:data:`FAKE_IT_GUIDANCE`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "CIFAR10_CLASSES",
    "CLASS_SETS",
    "DEFAULT_TEMPLATES",
    "FAKE_IT_GUIDANCE",
    "ClassInfo",
    "background_scenes",
    "class_names",
    "fake_it_info",
    "fake_it_prompt",
    "fill_template",
    "imagenet100_info",
    "load_templates",
    "prompt_name",
]

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

#: Built-in class sets for ``--classes-from NAME``.
CLASS_SETS: tuple[str, ...] = ("imagenet100",)

#: Guidance scale of ``--prompts fake-it``: the lower classifier-free guidance that Sariyildiz
#: et al. (CVPR 2023) found to give more diverse and more useful training images than Stable
#: Diffusion's default of 7.5.
FAKE_IT_GUIDANCE = 2.0

_DATA = Path(__file__).resolve().parents[1] / "data"
_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test"})


@dataclass(frozen=True)
class ClassInfo:
    """A class of a built-in set: its folder name (WordNet id), name and WordNet hypernym."""

    wnid: str
    name: str
    hypernym: str


def _data_lines(file: str) -> list[str]:
    text = (_DATA / file).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def imagenet100_info() -> dict[str, ClassInfo]:
    """ImageNet-100's classes, from ``data/imagenet100_classes.tsv`` (WordNet 3.0: the synset's
    first lemma and its first hypernym's first lemma).

    Returns:
        The classes by WordNet id.
    """
    info = {}
    for line in _data_lines("imagenet100_classes.tsv"):
        wnid, name, hypernym, _ = line.split("\t")
        info[wnid] = ClassInfo(wnid, name, hypernym)
    return info


def background_scenes() -> tuple[str, ...]:
    """The background scenes of ``--prompts fake-it``.

    Returns:
        The Places365 scene names of ``data/places365_scenes.txt`` (344 distinct scenes).
    """
    return tuple(_data_lines("places365_scenes.txt"))


def fake_it_prompt(name: str, hypernym: str, background: str) -> str:
    """The prompt ``"c, h_c inside b"`` of "Fake it till you make it" (Sariyildiz et al.,
    CVPR 2023).

    Args:
        name: The class name.
        hypernym: Its WordNet hypernym.
        background: A background scene.

    Returns:
        The prompt.

    Example:
        >>> fake_it_prompt("borzoi", "wolfhound", "park")
        'borzoi, wolfhound inside park'
    """
    return f"{name}, {hypernym} inside {background}"


def class_names(
    classes: Sequence[str] | None = None,
    classes_file: Path | None = None,
    classes_from: Path | str | None = None,
) -> tuple[str, ...] | None:
    """The class names from one of the three sources.

    Args:
        classes: Names given directly.
        classes_file: One name per line; blank lines and lines starting with ``#`` are skipped.
        classes_from: An image folder (one split, ``DIR/<class>/<images>``); its sorted,
            non-hidden subdirectories are the classes, as the trainer's image-folder reader
            sees them (the files are not scanned). A name of :data:`CLASS_SETS` (a string, not
            a path) selects a built-in set: ``imagenet100`` gives its 100 WordNet ids, sorted.

    Returns:
        The names, or ``None`` when no source is given.

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
    elif isinstance(classes_from, str) and classes_from in CLASS_SETS:
        names = tuple(sorted(imagenet100_info()))
        source = f"--classes-from {classes_from}"
    elif classes_from is not None:
        classes_from = Path(classes_from)
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

    Returns:
        The templates.

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


def prompt_name(class_name: str) -> str:
    """The words a prompt uses for a class.

    Args:
        class_name: A class name; a WordNet id of a built-in set stands for its name.

    Returns:
        The name with underscores as spaces.
    """
    known = imagenet100_info().get(class_name)
    if known is not None:
        return known.name
    return " ".join(class_name.replace("_", " ").split())


def fake_it_info(names: Sequence[str] | None) -> list[ClassInfo]:
    """The hypernyms ``--prompts fake-it`` needs, one per class.

    Args:
        names: The class names (``None``: the pipeline's defaults, which have none).

    Returns:
        The classes' entries in the built-in sets, in order.

    Raises:
        ConfigError: A class without a known hypernym.
    """
    info = imagenet100_info()
    unknown = [n for n in names or () if n not in info]
    if names is None or unknown:
        what = f"{unknown[:3]} have" if unknown else "the pipeline's default classes have"
        raise ConfigError(
            f"--prompts fake-it needs each class's WordNet hypernym; {what} none here: use "
            "--classes-from imagenet100 (or ImageNet-100 WordNet ids as class names)"
        )
    return [info[n] for n in names]


def fill_template(template: str, name: str) -> str:
    """``template`` with the class name, "a" turned into "an" before a vowel.

    Args:
        template: A template with one ``{}``.
        name: The class name as the prompt writes it (:func:`prompt_name`).

    Returns:
        The prompt.

    Example:
        >>> fill_template("a photo of a {}.", "apple")
        'a photo of an apple.'
    """
    if name[:1].lower() in "aeiou":
        template = re.sub(r"\b([Aa]) \{\}", r"\1n {}", template)
    return template.format(name)
