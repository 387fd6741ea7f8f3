"""ADE20K loader: layout, 0 -> 255 and 1..150 -> 0..149, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from spxseg.data import ADE20KDataset, DatasetNotFoundError, LabelValueError, MissingLabelError, build_dataset
from spxseg.data.ade20k import CLASS_NAMES, PALETTE


def make_ade(root: Path, folder: str = "training", n: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    (base / "images" / folder).mkdir(parents=True, exist_ok=True)
    (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(n):
        stem = f"ADE_{folder[:5]}_{i:08d}"
        img = rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8)
        lab = rng.integers(0, 151, (24 + i, 40), dtype=np.uint8)
        cv2.imwrite(str(base / "images" / folder / f"{stem}.jpg"), img)
        cv2.imwrite(str(base / "annotations" / folder / f"{stem}.png"), lab)
        labels.append(lab)
    return labels


def test_metadata() -> None:
    assert len(CLASS_NAMES) == 150 == len(PALETTE) == len(set(CLASS_NAMES))
    assert CLASS_NAMES[:3] == ["wall", "building", "sky"] and CLASS_NAMES[-1] == "flag"
    assert PALETTE[0] == (120, 120, 120) and PALETTE[-1] == (92, 0, 255)


def test_mapping_and_splits(tmp_path: Path) -> None:
    raw = make_ade(tmp_path, "training", n=2)
    make_ade(tmp_path, "validation", n=1)
    ds = build_dataset({"dataset": "ade20k", "root": str(tmp_path)}, "train")
    assert isinstance(ds, ADE20KDataset) and len(ds) == 2 and ds.num_classes == 150
    for i in range(2):
        lab = ds.load_label(i)
        np.testing.assert_array_equal(lab[raw[i] == 0], 255)
        nz = raw[i] > 0
        np.testing.assert_array_equal(lab[nz], raw[i][nz] - 1)
    val = build_dataset({"dataset": "ade20k", "root": str(tmp_path)}, "val")
    assert len(val) == 1 and "validation" in str(val.image_path(0))
    item = val[0]
    assert item["label"].shape == (24, 40) and item["orig_size"] == (24, 40)
    # ROOT may be ADEChallengeData2016 itself
    direct = ADE20KDataset(tmp_path / "ADEChallengeData2016", "val", None)
    assert direct.image_path(0) == val.image_path(0)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="ADEChallengeData2016"):
        ADE20KDataset(tmp_path / "missing", "train", None)
    make_ade(tmp_path, "training", n=2)
    with pytest.raises(DatasetNotFoundError, match="validation"):
        ADE20KDataset(tmp_path, "val", None)
    ann = tmp_path / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png"
    lab = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    lab[2, 2] = 151
    cv2.imwrite(str(ann), lab)
    ds = ADE20KDataset(tmp_path, "train", None)
    with pytest.raises(LabelValueError) as err:
        ds.load_label(1)
    assert "151" in str(err.value) and str(ann) in str(err.value)
    ann.unlink()
    with pytest.raises(MissingLabelError) as err:
        ADE20KDataset(tmp_path, "train", None)
    assert "ADE_train_00000001.jpg" in str(err.value) and str(ann) in str(err.value)
    shutil.rmtree(ann.parent)  # the whole annotations/training folder: named as such
    with pytest.raises(MissingLabelError, match="label folder .*annotations/training does not exist"):
        ADE20KDataset(tmp_path, "train", None)
