"""Prediction export: train-id PNGs, colour PNGs and the official benchmark formats.

:class:`PredictionWriter` writes, for every prediction (H, W) of train ids at the original
image resolution::

    DIR/train_ids/<name>.png            train ids (uint8, 0..K-1)
    DIR/color/<name>.png                colour visualisation (dataset palette)
    DIR/cityscapes_label_ids/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (Cityscapes only)
    DIR/ade20k_submission/<name>.png    class index + 1, 0 = other        (ADE20K only)

The Cityscapes files hold official *label ids* (``road`` = 7, ...), one folder per city, named
after the input image, which is what ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``
and the benchmark server expect: point ``CITYSCAPES_RESULTS`` at ``DIR/cityscapes_label_ids``
(not at ``DIR``: the other folders hold files with the same names and would be found twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from spxseg.engine.visualize import Color, colorize

# Official cityscapesScripts labels.py: train id -> label id for the 19 evaluated classes
CITYSCAPES_TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_IMG_SUFFIX = "_leftImg8bit"
CITYSCAPES_DIR = "cityscapes_label_ids"


def train_ids_to_label_ids(pred: np.ndarray, void_id: int = 0) -> np.ndarray:
    """Cityscapes train ids (H, W) -> official label ids (H, W) uint8; ids outside 0..18 -> ``void_id``."""
    lut = np.full(256, void_id, np.uint8)
    lut[: len(CITYSCAPES_TRAIN_ID_TO_LABEL_ID)] = CITYSCAPES_TRAIN_ID_TO_LABEL_ID
    return lut[np.asarray(pred).astype(np.uint8)]


def cityscapes_result_name(image_path: str | Path) -> tuple[str, str]:
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
    city = parts[0]
    if not stem.endswith(CITYSCAPES_IMG_SUFFIX):
        stem = "_".join(parts[:3]) + CITYSCAPES_IMG_SUFFIX
    return city, stem + ".png"


def write_png(path: str | Path, array: np.ndarray, rgb: bool = False) -> Path:
    """Write a (H, W) uint8 map or an (H, W, 3) image (RGB when ``rgb``) as PNG, creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and rgb:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    buf.tofile(str(path))
    return path


class PredictionWriter:
    """Writes predictions of one dataset in the layouts above.

    Args:
        out_dir: output root ``DIR``.
        palette: colours of the train ids, for ``color/``.
        dataset: ``cityscapes`` adds ``cityscapes_label_ids/``, ``ade20k`` adds ``ade20k_submission/``.
        color: also write the colour PNGs.
    """

    def __init__(self, out_dir: str | Path, palette: Sequence[Color], dataset: str = "", color: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.palette = list(palette)
        self.dataset = dataset.lower()
        self.color = color
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._names: set[str] = set()

    @property
    def cityscapes_dir(self) -> Path:
        return self.out_dir / CITYSCAPES_DIR

    def _relative_name(self, image_path: Path) -> str:
        if self.dataset == "cityscapes":
            return f"{image_path.parent.name}/{image_path.stem}"
        return image_path.stem

    def write(self, pred: np.ndarray, image_path: str | Path) -> list[Path]:
        """Write the (H, W) train-id prediction of the image at ``image_path``; returns the files written."""
        pred = np.asarray(pred)
        if pred.ndim != 2:
            raise ValueError(f"prediction must be (H, W), got shape {pred.shape}")
        if pred.max(initial=0) > 255 or pred.min(initial=0) < 0:
            raise ValueError("prediction ids must fit in uint8 (0..255)")
        pred = pred.astype(np.uint8)
        image_path = Path(image_path)
        name = self._relative_name(image_path)
        if name in self._names:
            raise ValueError(f"two predictions for images named {name!r}; file names must be unique")
        self._names.add(name)
        files = [write_png(self.out_dir / "train_ids" / f"{name}.png", pred)]
        if self.color:
            files.append(write_png(self.out_dir / "color" / f"{name}.png", colorize(pred, self.palette), rgb=True))
        if self.dataset == "cityscapes":
            city, fname = cityscapes_result_name(image_path)
            files.append(write_png(self.cityscapes_dir / city / fname, train_ids_to_label_ids(pred)))
        elif self.dataset == "ade20k":
            files.append(write_png(self.out_dir / "ade20k_submission" / f"{name}.png",
                                   np.where(pred == 255, 0, pred.astype(np.int32) + 1).astype(np.uint8)))
        self.count += 1
        return files

    def __call__(self, pred: np.ndarray, item: dict) -> None:
        """Callback for :func:`spxseg.engine.inference.evaluate` (``on_prediction``)."""
        self.write(pred, item["path"])

    def summary(self) -> str:
        text = f"wrote {self.count} predictions to {self.out_dir} (train_ids/" + (", color/" if self.color else "")
        if self.dataset == "cityscapes":
            text += f", {CITYSCAPES_DIR}/): official evaluation: CITYSCAPES_DATASET=<root> " \
                    f"CITYSCAPES_RESULTS={self.cityscapes_dir} csEvalPixelLevelSemanticLabeling"
        elif self.dataset == "ade20k":
            text += ", ade20k_submission/)"
        else:
            text += ")"
        return text
