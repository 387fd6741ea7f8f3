"""Cityscapes in its official layout (``leftImg8bit/`` + ``gtFine/``), 19 train classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import SegDataset, dataset_root, make_lut
from .errors import DatasetNotFoundError, MissingLabelError

# fmt: off
CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]

# Official cityscapesScripts labels.py: label id -> train id (ids 0..33; everything not listed is void)
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# Label id of each class name (the synthetic generator writes these)
LABEL_IDS = {
    "unlabeled": 0, "ego vehicle": 1, "rectification border": 2, "out of roi": 3, "static": 4,
    "dynamic": 5, "ground": 6, "road": 7, "sidewalk": 8, "parking": 9, "rail track": 10,
    "building": 11, "wall": 12, "fence": 13, "guard rail": 14, "bridge": 15, "tunnel": 16,
    "pole": 17, "polegroup": 18, "traffic light": 19, "traffic sign": 20, "vegetation": 21,
    "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28,
    "caravan": 29, "trailer": 30, "train": 31, "motorcycle": 32, "bicycle": 33,
}
# fmt: on

IMG_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"

LAYOUT = (
    "ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with "
    "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png (or *_gtFine_labelTrainIds.png)"
)


class CityscapesDataset(SegDataset):
    """Cityscapes: images paired with ``*_gtFine_labelTrainIds.png`` when present, else
    ``*_gtFine_labelIds.png`` converted with the official table (void -> 255).

    ``prefer_train_ids=False`` forces the labelIds path.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    name = "Cityscapes"

    def __init__(
        self,
        root: str | Path,
        split: str,
        pipeline: Callable,
        prefer_train_ids: bool = True,
        split_dir: str | None = None,
    ) -> None:
        root = dataset_root(root, self.name, LAYOUT)
        split_dir = split_dir or split
        img_dir = root / "leftImg8bit" / split_dir
        gt_dir = root / "gtFine" / split_dir
        if not img_dir.is_dir():
            raise DatasetNotFoundError(
                f"Cityscapes split directory {img_dir} does not exist (split {split_dir!r}); "
                f"expected the layout {LAYOUT}"
            )
        images = sorted(img_dir.glob(f"*/*{IMG_SUFFIX}"))
        if not images:
            raise DatasetNotFoundError(f"no *{IMG_SUFFIX} images under {img_dir}/<city>/; expected {LAYOUT}")
        items: list[tuple[Path, Path]] = []
        self._is_train_ids: list[bool] = []
        for img in images:
            stem = img.name[: -len(IMG_SUFFIX)]
            city = img.parent.name
            train_ids = gt_dir / city / (stem + TRAIN_ID_SUFFIX)
            label_ids = gt_dir / city / (stem + LABEL_ID_SUFFIX)
            if prefer_train_ids and train_ids.is_file():
                items.append((img, train_ids))
                self._is_train_ids.append(True)
            elif label_ids.is_file():
                items.append((img, label_ids))
                self._is_train_ids.append(False)
            else:
                raise MissingLabelError(
                    f"image {img} has no label: expected {label_ids}"
                    + (f" or {train_ids}" if prefer_train_ids else "")
                )
        super().__init__(items, pipeline, split=split, root=root)
        self.id_lut = make_lut(LABEL_ID_TO_TRAIN_ID, valid=range(34))
        self.train_id_lut = make_lut({i: i for i in range(19)}, valid=[255])

    def lut_for(self, i: int):
        return self.train_id_lut if self._is_train_ids[i] else self.id_lut

    def label_description(self) -> str:
        return "Cityscapes label ids 0..33 (labelIds) or train ids 0..18 / 255 (labelTrainIds)"
