"""Datasets (Cityscapes, ADE20K, COCO-format, synthetic street scenes), transforms, loaders.

Main entry points: :func:`build_dataset` (config section + split -> dataset) and
:func:`build_dataloader`. Each dataset has ``num_classes``, ``class_names``, ``palette``,
``len()``, ``image_path(i)``, ``label_path(i)``, ``load_image(i)`` / ``load_label(i)``
(raw RGB and train ids, no augmentation), and items ``{"image", "label", "path"[, "orig_size"]}``.
"""

from .ade20k import ADE20KDataset
from .base import SegDataset
from .builder import (
    EpochRandomSampler,
    SegDataLoader,
    build_dataloader,
    build_dataset,
    eval_collate,
    train_collate,
)
from .cityscapes import CityscapesDataset
from .coco import CocoSegDataset
from .errors import (
    CocoCategoryError,
    DatasetError,
    DatasetNotFoundError,
    ImageReadError,
    LabelValueError,
    MissingImageError,
    MissingLabelError,
)
from .synthetic import ensure_synthetic, generate_synthetic, render_scene
from .transforms import TestPipeline, TrainPipeline

__all__ = [
    "ADE20KDataset",
    "CityscapesDataset",
    "CocoCategoryError",
    "CocoSegDataset",
    "DatasetError",
    "DatasetNotFoundError",
    "EpochRandomSampler",
    "ImageReadError",
    "LabelValueError",
    "MissingImageError",
    "MissingLabelError",
    "SegDataLoader",
    "SegDataset",
    "TestPipeline",
    "TrainPipeline",
    "build_dataloader",
    "build_dataset",
    "ensure_synthetic",
    "eval_collate",
    "generate_synthetic",
    "render_scene",
    "train_collate",
]
