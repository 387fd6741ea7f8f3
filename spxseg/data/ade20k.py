"""ADE20K SceneParsing (``ADEChallengeData2016``), 150 classes; 0 ("other") -> 255."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import SegDataset, dataset_root, make_lut, pair_with_labels
from .errors import DatasetNotFoundError

# fmt: off
CLASS_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]
# The palette commonly used for ADE20K (as in mmsegmentation)
_PALETTE_FLAT = [
    120, 120, 120, 180, 120, 120, 6, 230, 230, 80, 50, 50, 4, 200, 3, 120, 120, 80, 140, 140, 140,
    204, 5, 255, 230, 230, 230, 4, 250, 7, 224, 5, 255, 235, 255, 7, 150, 5, 61, 120, 120, 70,
    8, 255, 51, 255, 6, 82, 143, 255, 140, 204, 255, 4, 255, 51, 7, 204, 70, 3, 0, 102, 200,
    61, 230, 250, 255, 6, 51, 11, 102, 255, 255, 7, 71, 255, 9, 224, 9, 7, 230, 220, 220, 220,
    255, 9, 92, 112, 9, 255, 8, 255, 214, 7, 255, 224, 255, 184, 6, 10, 255, 71, 255, 41, 10,
    7, 255, 255, 224, 255, 8, 102, 8, 255, 255, 61, 6, 255, 194, 7, 255, 122, 8, 0, 255, 20,
    255, 8, 41, 255, 5, 153, 6, 51, 255, 235, 12, 255, 160, 150, 20, 0, 163, 255, 140, 140, 140,
    250, 10, 15, 20, 255, 0, 31, 255, 0, 255, 31, 0, 255, 224, 0, 153, 255, 0, 0, 0, 255,
    255, 71, 0, 0, 235, 255, 0, 173, 255, 31, 0, 255, 11, 200, 200, 255, 82, 0, 0, 255, 245,
    0, 61, 255, 0, 255, 112, 0, 255, 133, 255, 0, 0, 255, 163, 0, 255, 102, 0, 194, 255, 0,
    0, 143, 255, 51, 255, 0, 0, 82, 255, 0, 255, 41, 0, 255, 173, 10, 0, 255, 173, 255, 0,
    0, 255, 153, 255, 92, 0, 255, 0, 255, 255, 0, 245, 255, 0, 102, 255, 173, 0, 255, 0, 20,
    255, 184, 184, 0, 31, 255, 0, 255, 61, 0, 71, 255, 255, 0, 204, 0, 255, 194, 0, 255, 82,
    0, 10, 255, 0, 112, 255, 51, 0, 255, 0, 194, 255, 0, 122, 255, 0, 255, 163, 255, 153, 0,
    0, 255, 10, 255, 112, 0, 143, 255, 0, 82, 0, 255, 163, 255, 0, 255, 235, 0, 8, 184, 170,
    133, 0, 255, 0, 255, 92, 184, 0, 255, 255, 0, 31, 0, 184, 255, 0, 214, 255, 255, 0, 112,
    92, 255, 0, 0, 224, 255, 112, 224, 255, 70, 184, 160, 163, 0, 255, 153, 0, 255, 71, 255, 0,
    255, 0, 163, 255, 204, 0, 255, 0, 143, 0, 255, 235, 133, 255, 0, 255, 0, 235, 245, 0, 255,
    255, 0, 122, 255, 245, 0, 10, 190, 212, 214, 255, 0, 0, 204, 255, 20, 0, 255, 255, 255, 0,
    0, 153, 255, 0, 41, 255, 0, 255, 204, 41, 0, 255, 41, 255, 0, 173, 0, 255, 0, 245, 255,
    71, 0, 255, 122, 0, 255, 0, 255, 184, 0, 92, 255, 184, 255, 0, 0, 133, 255, 255, 214, 0,
    25, 194, 194, 102, 255, 0, 92, 0, 255,
]
# fmt: on

PALETTE = [tuple(_PALETTE_FLAT[i : i + 3]) for i in range(0, len(_PALETTE_FLAT), 3)]

SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}
LAYOUT = (
    "ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg with "
    "ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png "
    "(ROOT may also be the ADEChallengeData2016 folder itself)"
)


class ADE20KDataset(SegDataset):
    """ADE20K SceneParsing: label 0 ("other") -> 255, 1..150 -> 0..149.

    ``split`` is train / val / test (mapped to training / validation / testing) or a folder
    name used as is.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    name = "ADE20K"
    official_dir = "ade20k_submission"  # the SceneParsing submission: class index + 1, 0 = other

    @staticmethod
    def official_prediction(pred: np.ndarray, image_path: Path) -> tuple[str, np.ndarray]:
        return f"{Path(image_path).stem}.png", np.where(pred == 255, 0, pred.astype(np.int32) + 1).astype(np.uint8)

    def __init__(self, root: str | Path, split: str, pipeline: Callable, split_dir: str | None = None) -> None:
        root = dataset_root(root, self.name, LAYOUT)
        base = root / "ADEChallengeData2016"
        if not base.is_dir() and (root / "images").is_dir():
            base = root  # ROOT is ADEChallengeData2016 itself
        sub = SPLIT_DIRS.get(split_dir or split, split_dir or split)
        img_dir, ann_dir = base / "images" / sub, base / "annotations" / sub
        if not img_dir.is_dir():
            raise DatasetNotFoundError(
                f"ADE20K split directory {img_dir} does not exist (split {split!r} -> {sub!r}); "
                f"expected the layout {LAYOUT}"
            )
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise DatasetNotFoundError(f"no .jpg images in {img_dir}; expected {LAYOUT}")
        items = pair_with_labels(images, lambda img: ann_dir / (img.stem + ".png"), label_dir=ann_dir)
        super().__init__(items, pipeline, split=split, root=root)
        self.lut = make_lut({k: k - 1 for k in range(1, 151)}, valid=[0])

    def label_description(self) -> str:
        return "ADE20K label values 0 (other) .. 150"
