"""The images to make: one :class:`ImageJob` per (class, index), each with its own seed.

Every image has its own seed, derived from (``--seed``, class, index), so it does not depend on
the batch it is made in, on the order of generation or on the other classes, and a manifest
line alone is enough to make it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syn2co.seeds import derive_seed

from ..errors import ConfigError
from .prompts import DEFAULT_TEMPLATES, ClassInfo, background_scenes, fake_it_prompt, fill_template

__all__ = ["ImageJob", "check_folders", "folder_name", "image_seed", "plan"]


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
    def name(self) -> str:
        """File name of the image in its folder."""
        return f"{self.index:06d}.png"

    @property
    def file(self) -> str:
        """Path of the image relative to the output directory, with ``/`` separators."""
        return f"{self.folder}/{self.name}"


def image_seed(seed: int, class_name: str, index: int) -> int:
    """The seed of image ``index`` of ``class_name``: a 63-bit hash of the three.

    It depends on nothing else (not on the other classes, the batch size or the order of
    generation), so adding classes or images never changes the existing ones.

    Args:
        seed: The base seed (``--seed``).
        class_name: The class.
        index: The image's index within its class.

    Returns:
        The seed, in ``[0, 2**63)``.
    """
    return derive_seed("synth", seed, class_name, index)


def folder_name(class_name: str) -> str:
    """The folder of a class: its name without path separators, never hidden.

    Args:
        class_name: The class.

    Returns:
        The folder name (``""`` when nothing is left).
    """
    name = class_name.replace("/", "_").replace("\\", "_").replace("\x00", "_").strip()
    if name.startswith("."):
        name = "_" + name[1:]
    return name


def check_folders(names: Sequence[str]) -> None:
    """Refuse classes that would have no folder or share one.

    Args:
        names: The class names.

    Raises:
        ConfigError: A name that leaves no folder name, or two names with the same folder.
    """
    folders: dict[str, str] = {}
    for name in names:
        folder = folder_name(name)
        if not folder:
            raise ConfigError(f"class name {name!r} cannot be a folder name")
        if folder in folders:
            raise ConfigError(
                f"classes {folders[folder]!r} and {name!r} would share the folder {folder!r}"
            )
        folders[folder] = name


def plan(
    names: Sequence[str],
    images_per_class: int,
    seed: int,
    *,
    prompts: Sequence[str] | None = None,
    class_ids: Sequence[int] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    fake_it: Sequence[ClassInfo] | None = None,
) -> list[ImageJob]:
    """Every image to make, class by class.

    With ``fake_it`` (and ``prompts``), image ``i`` of a class gets the background scene
    ``image_seed(seed, class, i) mod len(scenes)``: drawn per image, and like the seed
    independent of the other classes and images.

    Args:
        names: The class names.
        images_per_class: Images per class.
        seed: The base seed.
        prompts: The words for each class in prompts (text pipelines), else ``None``.
        class_ids: The class id of each class (class-conditional pipelines), else ``None``.
        templates: The prompt templates; image ``i`` uses ``templates[i % len(templates)]``.
        fake_it: Each class's hypernym, for ``--prompts fake-it``.

    Returns:
        The jobs, in the order they are made.
    """
    scenes = background_scenes() if fake_it is not None else ()
    jobs: list[ImageJob] = []
    for c, name in enumerate(names):
        folder = folder_name(name)
        for i in range(images_per_class):
            image = image_seed(seed, name, i)
            prompt = None
            if prompts and fake_it is not None:
                scene = scenes[image % len(scenes)]
                prompt = fake_it_prompt(fake_it[c].name, fake_it[c].hypernym, scene)
            elif prompts:
                prompt = fill_template(templates[i % len(templates)], prompts[c])
            jobs.append(
                ImageJob(
                    class_name=name,
                    folder=folder,
                    index=i,
                    seed=image,
                    prompt=prompt,
                    class_id=class_ids[c] if class_ids is not None else None,
                )
            )
    return jobs
