"""CamVid in the 11-class SegNet layout (``train/`` + ``trainannot/``, ...); 11 (void) -> 255."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import SegDataset, dataset_root, make_lut, pair_with_labels
from .errors import DatasetNotFoundError

CLASS_NAMES = [
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist",
]
# The SegNet CamVid colours
PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]
VOID = 11  # label value of unlabelled pixels (not scored) -> 255

LAYOUT = "ROOT/<split>/*.png (RGB) with ROOT/<split>annot/*.png of the same name (values 0..10, 11 = void)"


class CamVidDataset(SegDataset):
    """CamVid (SegNet's 11 classes): images ``ROOT/<split>/*.png`` paired by file name with labels
    ``ROOT/<split>annot/*.png``; values 0..10 are the classes, 11 (void) -> 255, anything else is an error.

    ``split`` is train / val / test or a folder name; ``split_dir`` overrides the folder.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    name = "CamVid"
    official_note = ("train_ids/ are CamVid label PNGs (class indices 0..10, named like <split>annot/, at the "
                     "scored resolution: 180x240 with the half-resolution configs)")

    def __init__(
        self, root: str | Path, split: str, pipeline: Callable, split_dir: str | None = None
    ) -> None:
        root = dataset_root(root, self.name, LAYOUT)
        split_dir = split_dir or split
        img_dir, ann_dir = root / split_dir, root / f"{split_dir}annot"
        if not img_dir.is_dir():
            raise DatasetNotFoundError(
                f"CamVid split directory {img_dir} does not exist (split {split_dir!r}); expected the layout {LAYOUT}"
            )
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not images:
            raise DatasetNotFoundError(f"no .png images in {img_dir}; expected the layout {LAYOUT}")
        items = pair_with_labels(images, lambda img: ann_dir / img.name, label_dir=ann_dir)
        super().__init__(items, pipeline, split=split, root=root)
        self.lut = make_lut({c: c for c in range(len(CLASS_NAMES))}, valid=[VOID])

    def label_description(self) -> str:
        return "CamVid label values 0..10 (classes) or 11 (void)"
