"""CamVid loader: the shared real frames, 11 (void) -> 255, errors, build_dataset, class_info / export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spxseg.data import (
    DATASETS,
    CamVidDataset,
    DatasetNotFoundError,
    LabelValueError,
    MissingLabelError,
    build_dataset,
    dataset_class,
)
from spxseg.data.camvid import CLASS_NAMES, PALETTE


def test_metadata() -> None:
    assert len(CLASS_NAMES) == 11 == len(PALETTE) == len(set(CLASS_NAMES)) == len(set(PALETTE))
    assert CLASS_NAMES[0] == "sky" and CLASS_NAMES[3] == "road" and CLASS_NAMES[-1] == "bicyclist"
    assert PALETTE[0] == (128, 128, 128) and PALETTE[3] == (128, 64, 128) and PALETTE[-1] == (0, 128, 192)
    assert DATASETS["camvid"] is CamVidDataset is dataset_class("CamVid")
    with pytest.raises(ValueError, match="camvid"):
        dataset_class("camvidd")


def test_shared_frames(camvid_root: Path) -> None:
    train = CamVidDataset(camvid_root, "train", None)
    val = CamVidDataset(camvid_root, "val", None)
    assert len(train) == 367 and len(val) == 101 and train.num_classes == 11
    assert train.class_names == CLASS_NAMES and len(train.palette) == 11
    for i in range(len(val)):  # all of val and a sample of train (~2 ms a label)
        assert val.label_path(i).parent.name == "valannot" and val.label_path(i).name == val.image_path(i).name
        assert set(np.unique(val.load_label(i)).tolist()) <= set(range(11)) | {255}
    seen = set()
    for i in range(0, len(train), 10):
        seen |= set(np.unique(train.load_label(i)).tolist())
    assert seen <= set(range(11)) | {255} and len(seen & set(range(11))) >= 8
    item = build_dataset({"dataset": "camvid", "root": str(camvid_root)}, "val")[0]
    assert item["image"].shape == (3, 360, 480) and item["image"].dtype == torch.float32
    assert item["label"].shape == (360, 480) and item["label"].dtype == torch.int64
    assert item["orig_size"] == (360, 480) and item["path"].endswith(".png")


def test_void_and_values(tmp_path: Path, make_camvid) -> None:
    raw = make_camvid(tmp_path, "train", n=2)
    ds = CamVidDataset(tmp_path, "train", None)
    for i in range(2):
        lab = ds.load_label(i)
        np.testing.assert_array_equal(lab[raw[i] == 11], 255)
        np.testing.assert_array_equal(lab[raw[i] < 11], raw[i][raw[i] < 11])
    assert (raw[0] == 11).any()  # the void value was exercised
    ann = ds.label_path(1)
    lab = raw[1].copy()
    lab[3, 4] = 12
    cv2.imwrite(str(ann), lab)
    with pytest.raises(LabelValueError) as err:
        ds.load_label(1)
    assert "[12]" in str(err.value) and str(ann) in str(err.value) and "CamVid" in str(err.value)
    lab[3, 4] = 255  # 255 is not a CamVid label value either
    cv2.imwrite(str(ann), lab)
    with pytest.raises(LabelValueError, match=r"\[255\]"):
        ds.load_label(1)


def test_size_mismatch(tmp_path: Path, make_camvid) -> None:
    make_camvid(tmp_path, "val", n=1, size=(24, 32))
    ann = tmp_path / "valannot" / "0001TP_000000.png"
    cv2.imwrite(str(ann), np.zeros((24, 30), np.uint8))
    ds = build_dataset({"dataset": "camvid", "root": str(tmp_path)}, "val")
    with pytest.raises(LabelValueError) as err:
        ds[0]
    assert str(ann) in str(err.value) and "(24, 30)" in str(err.value) and "(24, 32)" in str(err.value)


def test_missing_label(tmp_path: Path, make_camvid) -> None:
    make_camvid(tmp_path, "train", n=2)
    ann = tmp_path / "trainannot" / "0001TP_000001.png"
    ann.unlink()
    with pytest.raises(MissingLabelError) as err:
        CamVidDataset(tmp_path, "train", None)
    assert str(tmp_path / "train" / "0001TP_000001.png") in str(err.value) and str(ann) in str(err.value)
    for f in (tmp_path / "trainannot").iterdir():
        f.unlink()
    (tmp_path / "trainannot").rmdir()
    with pytest.raises(MissingLabelError, match="label folder .*trainannot does not exist"):
        CamVidDataset(tmp_path, "train", None)


def test_missing_root_split_and_empty_split(tmp_path: Path, make_camvid) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        CamVidDataset(tmp_path / "missing", "train", None)
    assert str(tmp_path / "missing") in str(err.value) and "annot" in str(err.value)
    make_camvid(tmp_path, "train", n=1)
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset({"dataset": "camvid", "root": str(tmp_path)}, "val")
    assert str(tmp_path / "val") in str(err.value) and "<split>annot" in str(err.value)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "notes.txt").write_text("no images")
    with pytest.raises(DatasetNotFoundError) as err:
        CamVidDataset(tmp_path, "test", None)
    assert f"no .png images in {tmp_path / 'test'}" in str(err.value)


def test_build_dataset_splits(tmp_path: Path, make_camvid) -> None:
    make_camvid(tmp_path, "train", n=3, size=(36, 48))
    make_camvid(tmp_path, "val", n=2, size=(36, 48), seed=1)
    make_camvid(tmp_path, "mytrain", n=1, size=(36, 48), seed=2)
    cfg = {"dataset": "camvid", "root": str(tmp_path), "base_size": [36, 48], "crop_size": [24, 32]}
    train = build_dataset(cfg, "train")
    assert isinstance(train, CamVidDataset) and len(train) == 3
    item = train[0]
    assert item["image"].shape == (3, 24, 32) and item["label"].shape == (24, 32) and "orig_size" not in item
    assert set(item["label"].unique().tolist()) <= set(range(11)) | {255}
    val = build_dataset(cfg, "val")
    assert len(val) == 2 and val[1]["label"].shape == (36, 48) and val[1]["orig_size"] == (36, 48)
    other = build_dataset({**cfg, "train_split": "mytrain"}, "train")
    assert len(other) == 1 and other.label_path(0).parent.name == "mytrainannot"
    assert build_dataset(cfg, "train", augment=False)[0]["label"].shape == (36, 48)


def test_class_info_and_prediction_writer(tmp_path: Path) -> None:
    from spxseg.config import Config
    from spxseg.engine.predictions import PredictionWriter
    from spxseg.engine.predictor import class_info

    cfg = Config()
    cfg.data.dataset, cfg.model.num_classes = "camvid", 11
    names, palette = class_info(cfg)
    assert names == CLASS_NAMES and palette == PALETTE
    writer = PredictionWriter(tmp_path / "preds", palette, dataset="camvid")
    pred = np.arange(11, dtype=np.uint8).repeat(4).reshape(4, 11)
    files = writer.write(pred, "/data/camvid/val/0016E5_07959.png")
    assert sorted(f.relative_to(tmp_path / "preds").as_posix() for f in files) == [
        "color/0016E5_07959.png", "train_ids/0016E5_07959.png"]
    np.testing.assert_array_equal(cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED), pred)
    assert "CamVid label PNGs" in writer.summary()
