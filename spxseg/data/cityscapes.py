"""Cityscapes in its official layout (``leftImg8bit/`` + ``gtFine/``), 19 train classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

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

# train id -> label id for the 19 evaluated classes, the inverse of LABEL_ID_TO_TRAIN_ID
TRAIN_ID_TO_LABEL_ID = tuple(sorted(LABEL_ID_TO_TRAIN_ID, key=LABEL_ID_TO_TRAIN_ID.get))

IMG_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"

LAYOUT = (
    "ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with "
    "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png (or *_gtFine_labelTrainIds.png)"
)


def train_ids_to_label_ids(pred: np.ndarray, void_id: int = 0) -> np.ndarray:
    """Cityscapes train ids (H, W) -> official label ids (H, W) uint8; ids outside 0..18 -> ``void_id``."""
    lut = np.full(256, void_id, np.uint8)
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    return lut[np.asarray(pred).astype(np.uint8)]


def result_name(image_path: str | Path) -> tuple[str, str]:
    """``(city, file name)`` of the result for a Cityscapes image, e.g.
    ``.../frankfurt/frankfurt_000000_000294_leftImg8bit.png`` -> ``("frankfurt",
    "frankfurt_000000_000294_leftImg8bit.png")``. The name must start with ``<city>_<seq>_<frame>``,
    which is how ``cityscapesscripts`` pairs results with ground truth."""
    path = Path(image_path)
    stem = path.stem
    parts = stem.split("_")
    if len(parts) < 3:
        raise ValueError(
            f"{path.name} is not a Cityscapes file name (<city>_<sequence>_<frame>_leftImg8bit.png); "
            "the official evaluation cannot pair it with its ground truth"
        )
    suffix = IMG_SUFFIX[: -len(".png")]
    if not stem.endswith(suffix):
        stem = "_".join(parts[:3]) + suffix
    return parts[0], stem + ".png"


class CityscapesDataset(SegDataset):
    """Cityscapes: images paired with ``*_gtFine_labelTrainIds.png`` when present, else
    ``*_gtFine_labelIds.png`` converted with the official table (void -> 255).

    ``prefer_train_ids=False`` forces the labelIds path.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    name = "Cityscapes"
    # official label ids, one folder per city, named after the input image: what
    # cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling and the benchmark server read. Point
    # CITYSCAPES_RESULTS at this folder, not at the output root: the other folders hold files with the
    # same names and would be found twice. cityscapesscripts 2.3.0 calls np.in1d, which numpy 2.4 removed:
    # alias it first (np.in1d = np.isin, see tests/tools/test_eval_demo.py) or use numpy < 2.4.
    official_dir = "cityscapes_label_ids"
    official_note = ("official evaluation: CITYSCAPES_DATASET=<root> CITYSCAPES_RESULTS=<out>/cityscapes_label_ids "
                     "csEvalPixelLevelSemanticLabeling")

    @staticmethod
    def prediction_name(image_path: Path) -> str:
        return f"{Path(image_path).parent.name}/{Path(image_path).stem}"

    @staticmethod
    def official_prediction(pred: np.ndarray, image_path: Path) -> tuple[str, np.ndarray]:
        city, name = result_name(image_path)
        return f"{city}/{name}", train_ids_to_label_ids(pred)

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
