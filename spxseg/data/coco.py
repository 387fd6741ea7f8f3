"""COCO-format custom data: polygon / RLE instance masks rasterised into a semantic map.

Category -> class mapping: ``data.coco.categories`` ({category id: class index}) when given,
else the file's categories in ascending id order -> 0..N-1. Class names: ``data.coco.class_names``,
else the category names. Overlaps: annotations are painted in order of decreasing mask area
(ties by annotation id), so where masks overlap the **smaller** object wins. Crowd
annotations are painted like the others. Unannotated pixels get ``data.coco.background``
(255 = ignore by default). A category may map to 255 to be ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import SegDataset
from .errors import CocoCategoryError, DatasetError, DatasetNotFoundError, ImageReadError, MissingImageError
from .transforms import IGNORE


def voc_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved colour map: ``n`` distinct RGB triples."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i + 1  # skip black
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def _resolve(root: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else root / q


class CocoSegDataset(SegDataset):
    """Images + a COCO json; ``coco_cfg`` is a :class:`~spxseg.config.CocoConfig`."""

    name = "COCO-format"

    @classmethod
    def from_config(cls, cfg, split: str, pipeline: Callable, split_dir: str, is_train: bool) -> CocoSegDataset:
        """COCO-format data has a train and a val split (``data.coco.train_*`` / ``val_*``)."""
        if not is_train and split != "val":
            raise ValueError(f"COCO-format data has a train and a val split (data.coco.train_* / val_*), "
                             f"not {split!r}")
        return cls(cfg.root, "train" if is_train else "val", pipeline, cfg.coco)

    def __init__(self, root: str | Path, split: str, pipeline: Callable, coco_cfg) -> None:
        from pycocotools.coco import COCO

        root = Path(root)
        if split == "train":
            img_dir, ann_file = _resolve(root, coco_cfg.train_images), _resolve(root, coco_cfg.train_json)
        else:
            img_dir, ann_file = _resolve(root, coco_cfg.val_images), _resolve(root, coco_cfg.val_json)
        layout = (
            "data.root + data.coco.{train,val}_images (a folder of images) and "
            "data.coco.{train,val}_json (a COCO instances json)"
        )
        if not root.is_dir():
            raise DatasetNotFoundError(f"COCO-format root {root} does not exist; expected {layout}")
        if not ann_file.is_file():
            raise DatasetNotFoundError(
                f"COCO annotation file {ann_file} for split {split!r} does not exist; expected {layout}"
            )
        if not img_dir.is_dir():
            raise DatasetNotFoundError(
                f"COCO image folder {img_dir} for split {split!r} does not exist; expected {layout}"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(ann_file))
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as err:
            raise DatasetError(f"cannot parse COCO annotation file {ann_file}: {err!r}") from err
        self.ann_file = ann_file
        cats = {int(c["id"]): c.get("name", str(c["id"])) for c in self.coco.dataset.get("categories", [])}
        if coco_cfg.categories:
            self.cat_to_class = {int(k): int(v) for k, v in coco_cfg.categories.items()}
        else:
            if len(cats) > IGNORE:
                raise CocoCategoryError(
                    f"{ann_file} has {len(cats)} categories, more than the {IGNORE} classes a uint8 label map holds "
                    "(255 is the ignore value); map them to fewer classes with data.coco.categories"
                )
            self.cat_to_class = {cid: i for i, cid in enumerate(sorted(cats))}
        for cid, k in self.cat_to_class.items():
            if not 0 <= k <= IGNORE:
                raise CocoCategoryError(
                    f"data.coco.categories maps category {cid} of {ann_file} to {k}: class indices are 0..254, "
                    "or 255 to ignore it"
                )
        n = max([v for v in self.cat_to_class.values() if v != IGNORE], default=-1) + 1
        if coco_cfg.class_names:
            names = list(coco_cfg.class_names)
            if len(names) < n:
                raise DatasetError(
                    f"data.coco.class_names has {len(names)} names but the category mapping "
                    f"uses class indices up to {n - 1}"
                )
        else:
            names = [f"class_{k}" for k in range(n)]
            for cid in sorted(self.cat_to_class, reverse=True):  # lowest category id names the class
                k = self.cat_to_class[cid]
                if k != IGNORE and cid in cats:
                    names[k] = cats[cid]
        self.class_names = names
        self.palette = voc_palette(len(names))
        self.background = int(coco_cfg.background)
        if self.background != IGNORE and not 0 <= self.background < len(names):
            raise DatasetError(
                f"data.coco.background={self.background} is neither 255 nor a class index 0..{len(names) - 1}"
            )
        # every annotation's category must be mapped
        for ann in self.coco.dataset.get("annotations", []):
            cid = int(ann["category_id"])
            if cid not in self.cat_to_class:
                cname = cats.get(cid, "<not in the file's categories>")
                raise CocoCategoryError(
                    f"{ann_file}: annotation {ann.get('id')} (image {ann.get('image_id')}) has category id "
                    f"{cid} ({cname!r}), which the category -> class mapping does not cover; mapped ids: "
                    f"{sorted(self.cat_to_class)} (set data.coco.categories)"
                )
        self.image_ids = sorted(self.coco.imgs)
        items = []
        for iid in self.image_ids:
            img = img_dir / self.coco.imgs[iid]["file_name"]
            if not img.is_file():
                raise MissingImageError(f"{ann_file}: image id {iid} refers to {img}, which does not exist")
            items.append((img, ann_file))
        super().__init__(items, pipeline, split=split, root=root)

    def load_label(self, i: int) -> np.ndarray:
        """Rasterise image ``i``'s annotations: (H, W) uint8 class indices (smaller masks on top)."""
        iid = self.image_ids[i]
        info = self.coco.imgs[iid]
        h, w = int(info["height"]), int(info["width"])
        sem = np.full((h, w), self.background, np.uint8)
        masks = []
        for ann in self.coco.imgToAnns.get(iid, []):
            try:
                with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = self.coco.annToMask(ann).astype(bool)
            except Exception as err:  # malformed segmentation
                raise ImageReadError(
                    f"{self.ann_file}: cannot rasterise annotation {ann.get('id')} "
                    f"of image {info['file_name']}: {err!r}"
                ) from err
            if m.shape != (h, w):
                raise DatasetError(
                    f"{self.ann_file}: annotation {ann.get('id')} has mask size {m.shape}, "
                    f"image {info['file_name']} is {(h, w)}"
                )
            masks.append(
                (-int(m.sum()), int(ann.get("id", 0)), m, self.cat_to_class[int(ann["category_id"])])
            )
        for _, _, m, cls in sorted(masks, key=lambda t: (t[0], t[1])):
            sem[m] = cls
        return sem

    def load_image(self, i: int) -> np.ndarray:
        img = super().load_image(i)
        info = self.coco.imgs[self.image_ids[i]]
        if img.shape[:2] != (int(info["height"]), int(info["width"])):
            raise DatasetError(
                f"image {self.items[i][0]} is {img.shape[1]}x{img.shape[0]} (WxH) but "
                f"{self.ann_file} says {info['width']}x{info['height']}"
            )
        return img

    def label_path(self, i: int) -> Path:
        return self.ann_file
