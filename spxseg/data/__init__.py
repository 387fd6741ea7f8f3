"""Datasets (Cityscapes, ADE20K, CamVid, COCO-format, synthetic street scenes), transforms, loaders.

Main entry points: :func:`build_dataset` (config section + split -> dataset) and
:func:`build_dataloader`. Each dataset has ``num_classes``, ``class_names``, ``palette``,
``len()``, ``image_path(i)``, ``label_path(i)``, ``load_image(i)`` / ``load_label(i)``
(raw RGB and train ids, no augmentation), and items ``{"image", "label", "path"[, "orig_size"]}``.
"""

from .ade20k import ADE20KDataset
from .base import SegDataset
from .builder import (
    DATASETS,
    EpochRandomSampler,
    SegDataLoader,
    build_dataloader,
    build_dataset,
    dataset_class,
    eval_collate,
    train_collate,
)
from .camvid import CamVidDataset
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
from .transforms import EvalPipeline, TrainPipeline

__all__ = [
    "ADE20KDataset",
    "CamVidDataset",
    "CityscapesDataset",
    "CocoCategoryError",
    "CocoSegDataset",
    "DATASETS",
    "DatasetError",
    "DatasetNotFoundError",
    "EpochRandomSampler",
    "ImageReadError",
    "LabelValueError",
    "MissingImageError",
    "MissingLabelError",
    "SegDataLoader",
    "SegDataset",
    "EvalPipeline",
    "TrainPipeline",
    "build_dataloader",
    "build_dataset",
    "dataset_class",
    "ensure_synthetic",
    "eval_collate",
    "generate_synthetic",
    "render_scene",
    "train_collate",
]
