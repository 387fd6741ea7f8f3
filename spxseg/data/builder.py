"""``build_dataset`` / ``build_dataloader``: config -> dataset -> DataLoader.

Batches (dicts):

- train (``train=True``): every item has the crop size, so ``image`` is stacked to
  (B, 3, h, w) float32 and ``label`` to (B, h, w) int64; ``path`` is a list of str.
- val / test (``train=False``, :func:`eval_collate`): ``image`` and ``label`` are stacked
  when all items of the batch have the same size and are **lists** of (3, h, w) / (H, W)
  tensors otherwise (iterating over either gives one item at a time); ``path`` is a list
  of str and ``orig_size`` a list of (H, W) tuples.

Reproducibility: the loader draws its shuffling order and the workers' base seed from
generators seeded with ``(seed, epoch)``; :meth:`SegDataLoader.set_epoch` switches epoch,
:meth:`SegDataLoader.infinite` yields batches forever (epoch after epoch, calling
``set_epoch``), so an iteration order and its augmentations are fixed by (seed, epoch,
number of workers).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from spxseg.config import DataConfig, data_config

from .ade20k import ADE20KDataset
from .base import SegDataset
from .camvid import CamVidDataset
from .cityscapes import CityscapesDataset
from .coco import CocoSegDataset
from .synthetic import ensure_synthetic
from .transforms import TestPipeline, TrainPipeline

SPLITS = ("train", "val", "test")
# ``data.dataset`` -> dataset class; build_dataset calls its ``from_config`` (see SegDataset.from_config)
DATASETS: dict[str, type[SegDataset]] = {
    "cityscapes": CityscapesDataset,
    "ade20k": ADE20KDataset,
    "coco": CocoSegDataset,
    "camvid": CamVidDataset,
}


def dataset_class(name: str) -> type[SegDataset]:
    """The dataset class registered for ``data.dataset`` = ``name`` (case-insensitive); its
    ``class_names`` / ``palette`` class attributes describe the classes without reading any data
    (empty for COCO-format data, whose classes come from the config or the json)."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown data.dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def build_dataset(data_cfg: Any, split: str, augment: bool | None = None) -> SegDataset:
    """Dataset for ``split`` (train / val / test) from the ``data:`` config section.

    ``data_cfg`` is a :class:`~spxseg.config.DataConfig`, a (partial) dict of one, or a
    whole :class:`~spxseg.config.Config`. "train" reads the folder ``data.train_split`` with
    :class:`TrainPipeline`; "val" reads ``data.val_split`` and "test" the folder "test" with
    :class:`TestPipeline` (label at the original resolution). Any other name is used as the
    folder itself, with the training pipeline when it equals ``data.train_split``. ``augment``
    overrides that choice (``False``: the test pipeline, e.g. to evaluate on the training images).
    COCO-format data has a train and a val split only. When ``data.synthetic.generate`` is true
    and ``data.root`` is missing, the synthetic set is generated there first
    (:func:`~spxseg.data.synthetic.ensure_synthetic`).
    """
    cfg: DataConfig = data_config(data_cfg)
    if not split:
        raise ValueError(f"split must be one of {SPLITS} (or a split folder name), got {split!r}")
    ensure_synthetic(cfg)
    is_train = split == "train" or (split == cfg.train_split and split not in ("val", "test"))
    pipeline = TrainPipeline(cfg) if (is_train if augment is None else augment) else TestPipeline(cfg)
    split_dir = {"train": cfg.train_split, "val": cfg.val_split}.get(split, split)
    return dataset_class(cfg.dataset).from_config(cfg, split, pipeline, split_dir=split_dir, is_train=is_train)


def eval_collate(items: list[dict]) -> dict:
    """Collate val / test items that may differ in size (see the module docstring)."""
    out: dict = {}
    for key in ("image", "label"):
        ts = [it[key] for it in items]
        same = all(t.shape == ts[0].shape for t in ts)
        out[key] = torch.stack(ts) if same else ts
    out["path"] = [it["path"] for it in items]
    if "orig_size" in items[0]:
        out["orig_size"] = [tuple(it["orig_size"]) for it in items]
    return out


def train_collate(items: list[dict]) -> dict:
    """Stack fixed-size training items: image (B, 3, h, w), label (B, h, w), path list."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "path": [it["path"] for it in items],
    }


class EpochRandomSampler(Sampler[int]):
    """Random permutation of the dataset that depends only on (seed, epoch)."""

    def __init__(self, data_source: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        self.n = len(data_source)  # type: ignore[arg-type]
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _worker_init(worker_id: int) -> None:
    """Seed numpy / random from the worker's torch seed (itself base seed + worker id), and keep
    OpenCV single-threaded inside workers (the workers are the parallelism; nested OpenCV
    threads only oversubscribe the cores)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(1)


def _dist_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class SegDataLoader(DataLoader):
    """A DataLoader with :meth:`set_epoch` and :meth:`infinite` (see the module docstring)."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self.epoch = 0
        self.set_epoch(0)

    def __iter__(self):  # noqa: ANN204
        # Without an explicit set_epoch since the last pass, move on to the next epoch,
        # so that ``for epoch ...: for batch in loader`` does not repeat one order.
        if not self._epoch_fresh:
            self.set_epoch(self.epoch + 1)
        self._epoch_fresh = False
        return super().__iter__()

    def set_epoch(self, epoch: int) -> None:
        """Fix the order and augmentation of the next ``iter(loader)`` to (seed, epoch)."""
        self.epoch = int(epoch)
        self._epoch_fresh = True
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        rank = torch.distributed.get_rank() if _dist_initialized() else 0
        aug_seed = (self.seed * 1_000_003 + self.epoch) * 1009 + rank
        if self.generator is not None:
            self.generator.manual_seed(aug_seed)  # workers' base seed
        if isinstance(self.dataset, SegDataset):
            self.dataset.aug_generator = torch.Generator().manual_seed(aug_seed)  # num_workers == 0

    def infinite(self, start_epoch: int = 0) -> Iterator[dict]:
        """Batches forever: epoch ``start_epoch``, then the next, ... each via :meth:`set_epoch`."""
        for epoch in itertools.count(start_epoch):
            self.set_epoch(epoch)
            yield from self


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool | None = None,
    seed: int = 0,
    persistent_workers: bool = False,
) -> SegDataLoader:
    """DataLoader for training (shuffled, drop_last) or evaluation (in order, any sizes).

    ``distributed=None`` auto-detects an initialised ``torch.distributed`` and then uses a
    :class:`~torch.utils.data.DistributedSampler` (``shuffle=train``, ``seed``); otherwise
    training uses :class:`EpochRandomSampler`. Both are ``loader.sampler`` and have
    ``set_epoch``; ``loader.set_epoch(e)`` calls it and reseeds the augmentation.
    Evaluation under DDP: DistributedSampler pads the last round by repeating items, so
    every rank gets the same count (drop duplicates by ``path`` if exact totals matter).
    With ``num_workers=0`` this sets OpenCV to one thread for the whole process (see below).
    ``persistent_workers`` is for evaluation only: persistent workers are seeded once, so
    ``set_epoch`` could no longer fix the training augmentation.
    """
    if persistent_workers and train:
        raise ValueError("persistent_workers would break the (seed, epoch)-determined training augmentation "
                         "(workers are seeded once); use it for evaluation loaders only")
    if num_workers == 0:
        # Items are decoded here, between model steps: OpenCV's thread pool then fights torch's
        # threads for the cores (2-core CPU training ran 2.4x slower), for little work per image.
        cv2.setNumThreads(1)
    if distributed is None:
        distributed = _dist_initialized()
    if distributed:
        sampler: Sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
    else:
        sampler = EpochRandomSampler(dataset, seed=seed, shuffle=train)
    n_local = len(sampler)  # type: ignore[arg-type]
    if train and n_local < batch_size:
        raise ValueError(
            f"training set has {n_local} items (per process), fewer than batch_size={batch_size}, "
            "so drop_last would leave no batch"
        )
    return SegDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=train,
        collate_fn=train_collate if train else eval_collate,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator(),
        persistent_workers=persistent_workers and num_workers > 0,
        seed=seed,
    )
