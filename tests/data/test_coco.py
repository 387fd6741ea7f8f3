"""COCO-format loader: polygon + RLE rasterisation, mapping, overlap rule, background, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from spxseg.data import CocoCategoryError, CocoSegDataset, MissingImageError, build_dataset

H, W = 30, 40


def make_coco(
    root: Path, anns: list[dict], categories: list[dict] | None = None, split: str = "train"
) -> Path:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / "a.png"), np.full((H, W, 3), 90, np.uint8))
    cats = (
        categories
        if categories is not None
        else [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "tree"}]
    )
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [
            dict(a, id=i + 1, image_id=1, iscrowd=a.get("iscrowd", 0)) for i, a in enumerate(anns)
        ],
        "categories": cats,
    }
    path = root / "annotations" / f"{split}.json"
    path.write_text(json.dumps(doc))
    return path


def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": enc["size"], "counts": enc["counts"].decode("ascii")}
    # uncompressed RLE: run lengths in column-major order, starting with zeros
    flat = mask.T.ravel().astype(np.uint8)
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    return {"size": [H, W], "counts": runs}


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def cfg(root: Path, **coco) -> dict:
    return {"dataset": "coco", "root": str(root), "coco": coco}


def test_polygon_rle_and_overlap_rule(tmp_path: Path) -> None:
    big = box(0, 20, 0, 30)
    small = box(5, 10, 5, 10)
    anns = [
        {"category_id": 12, "segmentation": rle(small, compressed=True)},  # smaller: must win the overlap
        {"category_id": 3, "segmentation": rle(big, compressed=False)},
        {"category_id": 7, "segmentation": polygon(31.5, 20.5, 38.5, 27.5)},  # polygon, separate
    ]
    make_coco(tmp_path, anns)
    ds = build_dataset(cfg(tmp_path), "train")
    assert isinstance(ds, CocoSegDataset)
    # default mapping: categories in ascending id order -> 0, 1, 2 with the file's names
    assert ds.class_names == ["dog", "cat", "tree"] and ds.num_classes == 3 and len(ds.palette) == 3
    lab = ds.load_label(0)
    assert lab.shape == (H, W)
    assert np.all(lab[5:10, 5:10] == 2)  # tree (small) over dog (big)
    assert np.all(lab[big.astype(bool) & ~small.astype(bool)] == 0)
    assert np.all(lab[22:27, 33:38] == 1)  # polygon interior
    assert lab[29, 0] == 255  # unannotated -> ignore by default
    item = ds[0]
    assert item["label"].shape[-2:] == item["image"].shape[-2:]


def test_config_mapping_names_and_background(tmp_path: Path) -> None:
    make_coco(
        tmp_path,
        [
            {"category_id": 3, "segmentation": polygon(0.5, 0.5, 9.5, 9.5)},
            {"category_id": 12, "segmentation": polygon(20.5, 0.5, 29.5, 9.5)},
        ],
    )
    ds = build_dataset(
        cfg(tmp_path, categories={3: 1, 12: 255}, class_names=["bg", "animal"], background=0), "train"
    )
    assert ds.class_names == ["bg", "animal"]
    lab = ds.load_label(0)
    assert lab[5, 5] == 1 and lab[5, 25] == 255 and lab[20, 35] == 0


def test_category_missing_from_mapping(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [{"category_id": 12, "segmentation": polygon(0.5, 0.5, 5.5, 5.5)}])
    with pytest.raises(CocoCategoryError) as err:
        build_dataset(cfg(tmp_path, categories={3: 0, 7: 1}), "train")
    msg = str(err.value)
    assert "12" in msg and "'tree'" in msg and str(path) in msg
    # a category id not even listed in the file's categories
    make_coco(tmp_path, [{"category_id": 99, "segmentation": polygon(0.5, 0.5, 5.5, 5.5)}])
    with pytest.raises(CocoCategoryError, match="99"):
        build_dataset(cfg(tmp_path), "train")


def test_class_indices_must_fit_a_uint8_label_map(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [{"category_id": 3, "segmentation": polygon(0.5, 0.5, 5.5, 5.5)}])
    for bad in (-1, 256):
        with pytest.raises(CocoCategoryError, match=f"category 3 of {path}.* to {bad}"):
            build_dataset(cfg(tmp_path, categories={3: bad}), "train")
    many = [{"id": i, "name": f"c{i}"} for i in range(1, 258)]
    make_coco(tmp_path, [{"category_id": 3, "segmentation": polygon(0.5, 0.5, 5.5, 5.5)}], categories=many)
    with pytest.raises(CocoCategoryError, match="257 categories"):
        build_dataset(cfg(tmp_path), "train")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotation file"):
        build_dataset(cfg(tmp_path), "train")
    make_coco(tmp_path, [])
    (tmp_path / "images" / "train" / "a.png").unlink()
    with pytest.raises(MissingImageError, match="a.png"):
        build_dataset(cfg(tmp_path), "train")
