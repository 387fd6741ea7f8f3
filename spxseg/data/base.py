"""Common dataset machinery: a list of (image, label) files, label mapping and checking."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetNotFoundError, LabelValueError, MissingLabelError
from .io import read_image, read_label
from .transforms import IGNORE


def make_lut(mapping: dict[int, int], valid: list[int] | range | None = None) -> np.ndarray:
    """Lookup table of 65536 int16 entries: raw value -> train id, 255 = ignore, -1 = invalid.

    ``mapping`` gives the train id of each raw value; values in ``valid`` but not in
    ``mapping`` map to 255; everything else is invalid (-1).
    """
    lut = np.full(65536, -1, np.int16)
    for v in valid or []:
        lut[v] = IGNORE
    for k, v in mapping.items():
        lut[k] = v
    return lut


def dataset_root(root: str | Path, name: str, layout: str) -> Path:
    """``root`` as a Path; :class:`DatasetNotFoundError` naming the expected ``layout`` when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{name} root {root} does not exist; expected the layout {layout}")
    return root


def pair_with_labels(
    images: list[Path], label_of: Callable[[Path], Path], label_dir: Path | None = None
) -> list[tuple[Path, Path]]:
    """``(image, label_of(image))`` for each image; an image whose label file is missing raises
    :class:`MissingLabelError` naming both (and ``label_dir`` when that folder does not exist)."""
    items = []
    for img in images:
        ann = label_of(img)
        if not ann.is_file():
            where = "" if label_dir is None or label_dir.is_dir() else f" (the label folder {label_dir} does not exist)"
            raise MissingLabelError(f"image {img} has no label: expected {ann}{where}")
        items.append((img, ann))
    return items


class SegDataset(Dataset):
    """Semantic segmentation dataset over a list of ``(image_path, label_path)`` pairs.

    Subclasses fill ``class_names``, ``palette`` and a lookup table ``lut`` (see
    :func:`make_lut`) or override :meth:`load_label`. Items are dicts
    ``{"image": (3, h, w) float32, "label": (h, w) int64, "path": str}`` (plus
    ``"orig_size": (H, W)`` from the test pipeline).

    Augmentation randomness: each item draws a 63-bit seed from torch's RNG, which PyTorch
    seeds per DataLoader worker from the loader's base seed (``torch.initial_seed()``), so
    a loader built by :func:`spxseg.data.build_dataloader` is reproducible given its seed
    and epoch. In the main process (``num_workers=0``) the seed comes from
    :attr:`aug_generator` when set (the loader sets it per epoch), else from the global
    torch RNG.
    """

    class_names: list[str] = []
    palette: list[tuple[int, int, int]] = []
    name = "dataset"
    # the dataset's official result format (tools/eval.py --save-preds): a folder under the output root,
    # filled by official_prediction; None when train_ids/ already is the official format
    official_dir: str | None = None
    official_note = ""  # how to use the official files (printed after writing them)

    @staticmethod
    def prediction_name(image_path: Path) -> str:
        """Relative name (no suffix) of an image's prediction files, unique within a split."""
        return Path(image_path).stem

    @staticmethod
    def official_prediction(pred: np.ndarray, image_path: Path) -> tuple[str, np.ndarray]:
        """(relative file name, uint8 image) of a (H, W) train-id prediction in the official result format."""
        raise NotImplementedError

    def __init__(
        self,
        items: list[tuple[Path, Path | None]],
        pipeline: Callable,
        split: str = "train",
        root: Path | None = None,
    ) -> None:
        self.items = [(Path(i), None if lab is None else Path(lab)) for i, lab in items]
        self.pipeline = pipeline
        self.split = split
        self.root = root
        self.aug_generator: torch.Generator | None = None
        self.lut: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg, split: str, pipeline: Callable, split_dir: str, is_train: bool) -> SegDataset:
        """The dataset for :func:`~spxseg.data.build_dataset`: ``cfg`` is the
        :class:`~spxseg.config.DataConfig`, ``split`` the requested split (train / val / test or a
        folder name), ``split_dir`` its folder (``data.train_split`` / ``data.val_split`` for train /
        val) and ``is_train`` whether it is the training split. Default: ``cls(cfg.root, split,
        pipeline, split_dir=split_dir)``; a dataset with other arguments overrides this."""
        return cls(cfg.root, split, pipeline, split_dir=split_dir)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, i: int) -> Path:
        return self.items[i][0]

    def label_path(self, i: int) -> Path | None:
        return self.items[i][1]

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 (H, W, 3)."""
        return read_image(self.items[i][0])

    def load_label(self, i: int) -> np.ndarray | None:
        """Train ids uint8 (H, W), 255 = ignore; checked against the class set."""
        path = self.items[i][1]
        if path is None:
            return None
        return self.map_label(read_label(path), path, self.lut_for(i))

    def lut_for(self, i: int) -> np.ndarray:
        """The lookup table for item ``i`` (default ``self.lut``, else the identity on train ids)."""
        if self.lut is None:
            self.lut = make_lut({c: c for c in range(self.num_classes)}, valid=[IGNORE])
        return self.lut

    def map_label(self, raw: np.ndarray, path: Path | str, lut: np.ndarray) -> np.ndarray:
        """Map raw label values through ``lut``; a value the table marks invalid raises
        :class:`LabelValueError` naming the file and the value(s)."""
        if raw.dtype == np.uint8:  # 256-entry tables: cv2.LUT is far faster than bincount / fancy indexing
            lut8 = lut[:256]
            invalid = (lut8 < 0).astype(np.uint8)
            if invalid.any() and cv2.countNonZero(cv2.LUT(raw, invalid)):
                self._raise_bad_values(raw, lut, path)
            return cv2.LUT(raw, np.where(invalid, IGNORE, lut8).astype(np.uint8))
        if np.any(lut[raw] < 0):
            self._raise_bad_values(raw, lut, path)
        return lut[raw].astype(np.uint8)

    def _raise_bad_values(self, raw: np.ndarray, lut: np.ndarray, path: Path | str) -> None:
        values, counts = np.unique(raw, return_counts=True)
        bad = lut[values] < 0
        raise LabelValueError(
            f"label file {path} contains value(s) {values[bad].tolist()[:10]} ({int(counts[bad].sum())} "
            f"pixels) outside the {self.name} label set; expected {self.label_description()}"
        )

    def label_description(self) -> str:
        return f"train ids 0..{self.num_classes - 1} or 255 (ignore)"

    def _item_rng(self) -> np.random.Generator:
        gen = self.aug_generator if torch.utils.data.get_worker_info() is None else None
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen).item())
        return np.random.default_rng(seed)

    def __getitem__(self, i: int) -> dict:
        image = self.load_image(i)
        label = self.load_label(i)
        if label is not None and label.shape != image.shape[:2]:
            raise LabelValueError(
                f"label {self.items[i][1]} has size {label.shape} but image {self.items[i][0]} "
                f"has size {image.shape[:2]}; image and label must have the same height and width"
            )
        out = self.pipeline(image, label, self._item_rng())
        out["path"] = str(self.items[i][0])
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, root={str(self.root)!r})"
        )
