"""Prediction files of tools/eval.py --save-preds: train-id PNGs, colour PNGs, and the dataset's own official format.

:class:`PredictionWriter` writes, for every prediction (H, W) of train ids at the resolution it was scored
at (the label's: the original image's, or the resized one with ``data.test_resize_labels``)::

    DIR/train_ids/<name>.png            train ids (uint8, 0..K-1)
    DIR/color/<name>.png                colour visualisation (dataset palette)
    DIR/<official_dir>/<file>           the dataset's official result format, where it has one

Each dataset's file owns its format (``official_dir``, ``official_prediction``): Cityscapes writes
``cityscapes_label_ids/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (official label ids, what
``cityscapesscripts`` and the benchmark server read: point ``CITYSCAPES_RESULTS`` there), ADE20K
``ade20k_submission/<name>.png`` (class index + 1, 0 = other); for CamVid ``train_ids/`` already is the
dataset's own label format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spxseg.data import DATASETS, SegDataset
from spxseg.data.io import write_png
from spxseg.engine.visualize import Color, colorize


class PredictionWriter:
    """Writes predictions of one dataset in the layouts above.

    Args:
        out_dir: output root ``DIR``.
        palette: colours of the train ids, for ``color/``.
        dataset: the ``data.dataset`` name, whose official format is added (none for COCO-format data).
        color: also write the colour PNGs.
    """

    def __init__(self, out_dir: str | Path, palette: Sequence[Color], dataset: str = "", color: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.palette = list(palette)
        self.format: type[SegDataset] = DATASETS.get(dataset.lower(), SegDataset)
        self.color = color
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._names: set[str] = set()

    @property
    def official_dir(self) -> Path | None:
        return self.out_dir / self.format.official_dir if self.format.official_dir else None

    def write(self, pred: np.ndarray, image_path: str | Path) -> list[Path]:
        """Write the (H, W) train-id prediction of the image at ``image_path``; returns the files written."""
        pred = np.asarray(pred)
        if pred.ndim != 2:
            raise ValueError(f"prediction must be (H, W), got shape {pred.shape}")
        if pred.max(initial=0) > 255 or pred.min(initial=0) < 0:
            raise ValueError("prediction ids must fit in uint8 (0..255)")
        pred = pred.astype(np.uint8)
        image_path = Path(image_path)
        name = self.format.prediction_name(image_path)
        if name in self._names:
            raise ValueError(f"two predictions for images named {name!r}; file names must be unique")
        self._names.add(name)
        files = [write_png(self.out_dir / "train_ids" / f"{name}.png", pred, rgb=False)]
        if self.color:
            files.append(write_png(self.out_dir / "color" / f"{name}.png", colorize(pred, self.palette), rgb=True))
        if self.official_dir is not None:
            rel, official = self.format.official_prediction(pred, image_path)
            files.append(write_png(self.official_dir / rel, official, rgb=False))
        self.count += 1
        return files

    def __call__(self, pred: np.ndarray, item: dict) -> None:
        """Callback for :func:`spxseg.engine.evaluate.evaluate` (``on_prediction``)."""
        self.write(pred, item["path"])

    def summary(self) -> str:
        folders = ["train_ids/"] + (["color/"] if self.color else []) + \
            ([f"{self.format.official_dir}/"] if self.format.official_dir else [])
        note = self.format.official_note.replace("<out>", str(self.out_dir))
        text = f"wrote {self.count} predictions to {self.out_dir} ({', '.join(folders)})"
        return text + (f": {note}" if note else "")
