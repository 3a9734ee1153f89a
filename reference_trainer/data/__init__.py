"""The trainer's data package: datasets, the built-in procedural set and two-view transforms.

Dataset formats (``--dataset``) are records of :mod:`reference_trainer.data.registry`;
:mod:`reference_trainer.data.datasets` registers the built-in ones.

Every dataset returns :class:`LoadedImage` items ``(RGB PIL image, label, skipped)``;
:class:`TwoViewDataset` / :func:`collate_two_views` turn them into pretraining batches and
:class:`EvalDataset` / :func:`collate_eval` into evaluation batches.
"""

from reference_trainer.data.base import (
    CorruptImageError,
    DatasetError,
    DatasetFileError,
    DatasetNotFoundError,
    FileImageDataset,
    ImageDataset,
    LoadedImage,
)
from reference_trainer.data.builtin import SHAPE_CLASSES, ProceduralShapes
from reference_trainer.data.datasets import (
    IMAGE_EXTENSIONS,
    ArrayImageDataset,
    ImageFolderDataset,
    build_dataset,
    imagenet100_classes,
    read_rgb_image,
)
from reference_trainer.data.registry import (
    DatasetFormat,
    DatasetRequest,
    dataset_names,
    get_dataset,
    register_dataset,
    unregister_dataset,
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
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "ArrayImageDataset",
    "AugmentationConfig",
    "CorruptImageError",
    "DatasetError",
    "DatasetFileError",
    "DatasetFormat",
    "DatasetNotFoundError",
    "DatasetRequest",
    "EvalBatch",
    "EvalDataset",
    "EvalSample",
    "FileImageDataset",
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
    "dataset_names",
    "eval_transform",
    "get_dataset",
    "imagenet100_classes",
    "loader_generator",
    "read_rgb_image",
    "register_dataset",
    "seed_worker",
    "unregister_dataset",
    "view_transform",
]
