"""The trainer's data package: datasets, the built-in procedural set and two-view transforms.

Every dataset returns :class:`LoadedImage` items ``(RGB PIL image, label, skipped)``;
:class:`TwoViewDataset` / :func:`collate_two_views` turn them into pretraining batches and
:class:`EvalDataset` / :func:`collate_eval` into evaluation batches.
"""

from reference_trainer.data.base import (
    CorruptImageError,
    DatasetError,
    DatasetFileError,
    DatasetNotFoundError,
    ImageDataset,
    LoadedImage,
)
from reference_trainer.data.builtin import SHAPE_CLASSES, ProceduralShapes
from reference_trainer.data.datasets import (
    DATASET_KINDS,
    IMAGE_EXTENSIONS,
    ArrayImageDataset,
    DatasetKind,
    ImageFolderDataset,
    build_dataset,
    read_rgb_image,
)
from reference_trainer.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    EvalBatch,
    EvalDataset,
    EvalSample,
    TwoViewBatch,
    TwoViewDataset,
    TwoViewSample,
    TwoViewTransform,
    collate_eval,
    collate_two_views,
    eval_transform,
    loader_generator,
    seed_worker,
    view_transform,
)

__all__ = [
    "DATASET_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "ArrayImageDataset",
    "AugmentationConfig",
    "CorruptImageError",
    "DatasetError",
    "DatasetFileError",
    "DatasetKind",
    "DatasetNotFoundError",
    "EvalBatch",
    "EvalDataset",
    "EvalSample",
    "ImageDataset",
    "ImageFolderDataset",
    "LoadedImage",
    "ProceduralShapes",
    "TwoViewBatch",
    "TwoViewDataset",
    "TwoViewSample",
    "TwoViewTransform",
    "build_dataset",
    "collate_eval",
    "collate_two_views",
    "eval_transform",
    "loader_generator",
    "read_rgb_image",
    "seed_worker",
    "view_transform",
]
