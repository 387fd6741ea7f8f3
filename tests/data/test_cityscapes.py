"""Cityscapes loader: layout scanning, label mapping, the real fixture frame, every error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spxseg.config import DataConfig
from spxseg.data import (
    CityscapesDataset,
    DatasetNotFoundError,
    EvalPipeline,
    ImageReadError,
    LabelValueError,
    MissingLabelError,
    build_dataset,
)
from spxseg.data.cityscapes import CLASS_NAMES, LABEL_ID_TO_TRAIN_ID, PALETTE
from spxseg.data.transforms import mean_std


def make_cityscapes(
    root: Path,
    split: str = "train",
    n: int = 2,
    size: tuple[int, int] = (32, 64),
    train_ids: bool = False,
    seed: int = 0,
) -> list[np.ndarray]:
    """Write ``n`` random frames in the Cityscapes layout; returns their labelIds maps."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bremen"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        stem = f"{city}_{i:06d}_000019"
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        lab = rng.integers(0, 34, size, dtype=np.uint8)
        cv2.imwrite(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), img)
        cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), lab)
        if train_ids:
            tid = np.full_like(lab, 255)
            for k, v in LABEL_ID_TO_TRAIN_ID.items():
                tid[lab == k] = v
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"), tid)
        labels.append(lab)
    return labels


def test_class_metadata() -> None:
    assert len(CLASS_NAMES) == 19 and len(PALETTE) == 19
    assert CLASS_NAMES[0] == "road" and CLASS_NAMES[13] == "car" and CLASS_NAMES[18] == "bicycle"
    assert PALETTE[0] == (128, 64, 128) and PALETTE[10] == (70, 130, 180)
    assert sorted(LABEL_ID_TO_TRAIN_ID.values()) == list(range(19))


def test_label_ids_mapped_with_official_table(tmp_path: Path) -> None:
    raw = make_cityscapes(tmp_path, "train", n=2)
    ds = CityscapesDataset(tmp_path, "train", EvalPipeline(DataConfig()))
    assert len(ds) == 2 and ds.num_classes == 19
    assert ds.label_path(0).name.endswith("_gtFine_labelIds.png")
    for i in range(2):
        lab = ds.load_label(i)
        for lid in range(34):
            m = raw[i] == lid
            if m.any():
                assert np.all(lab[m] == LABEL_ID_TO_TRAIN_ID.get(lid, 255)), lid
    # official spot checks: road 7 -> 0, car 26 -> 13, void 0 / license-plate-free ids -> 255
    t = ds.lut_for(0)
    assert (t[7], t[26], t[0], t[9], t[34]) == (0, 13, 255, 255, -1)


def test_prefers_label_train_ids(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "val", n=2, train_ids=True)
    ds = CityscapesDataset(tmp_path, "val", EvalPipeline(DataConfig()))
    assert ds.label_path(1).name.endswith("_gtFine_labelTrainIds.png")
    forced = CityscapesDataset(tmp_path, "val", EvalPipeline(DataConfig()), prefer_train_ids=False)
    assert forced.label_path(1).name.endswith("_gtFine_labelIds.png")
    for i in range(2):
        np.testing.assert_array_equal(ds.load_label(i), forced.load_label(i))


def test_val_item_keeps_original_resolution(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "val", n=1, size=(40, 80))
    ds = build_dataset({"dataset": "cityscapes", "root": str(tmp_path), "test_short_side": 20}, "val")
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 20, 40)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (40, 80)
    assert item["orig_size"] == (40, 80) and item["path"].endswith("_leftImg8bit.png")
    # normalisation with the config mean / std
    raw = ds.load_image(0)
    full = build_dataset({"dataset": "cityscapes", "root": str(tmp_path)}, "val")[0]["image"]
    cfg = DataConfig()
    mean, std = mean_std(cfg)  # a bare DataConfig: the ImageNet default
    expect = (raw[5, 7].astype(np.float32) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(full[:, 5, 7].numpy(), expect, rtol=1e-5, atol=1e-5)


def test_real_fixture_frame_through_label_ids(shared_dir: Path) -> None:
    root = shared_dir / "fixtures" / "cityscapes_mini"
    if not root.is_dir():
        pytest.skip(f"fixture {root} not available")
    ds = CityscapesDataset(root, "val", EvalPipeline(DataConfig()), prefer_train_ids=False)
    assert len(ds) == 1 and ds.label_path(0).name.endswith("_gtFine_labelIds.png")
    ours = ds.load_label(0)
    shipped_path = str(ds.label_path(0)).replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
    shipped = cv2.imread(shipped_path, cv2.IMREAD_UNCHANGED)
    assert ours.shape == shipped.shape == (128, 256)
    agree = float((ours == shipped).mean())
    assert agree >= 0.995, agree
    item = ds[0]
    assert item["image"].shape == (3, 128, 256) and item["label"].shape == (128, 256)
    assert set(np.unique(ours)) <= set(range(19)) | {255}


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"does not exist.*leftImg8bit"):
        CityscapesDataset(tmp_path / "nope", "train", None)
    make_cityscapes(tmp_path, "train", n=1)
    with pytest.raises(DatasetNotFoundError) as err:
        CityscapesDataset(tmp_path, "val", None)
    assert str(tmp_path / "leftImg8bit" / "val") in str(err.value) and "gtFine" in str(err.value)
    with pytest.raises(FileNotFoundError):  # a FileNotFoundError subclass
        build_dataset({"dataset": "cityscapes", "root": str(tmp_path / "x")}, "train")


def test_image_without_label(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train", n=2)
    lab = next((tmp_path / "gtFine" / "train" / "bremen").glob("*_labelIds.png"))
    lab.unlink()
    with pytest.raises(MissingLabelError) as err:
        CityscapesDataset(tmp_path, "train", None)
    msg = str(err.value)
    assert "bremen_000001_000019_leftImg8bit.png" in msg and str(lab) in msg


def test_truncated_and_unreadable_images(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train", n=2)
    ds = CityscapesDataset(tmp_path, "train", EvalPipeline(DataConfig()))
    img0, img1 = ds.image_path(0), ds.image_path(1)
    data = img0.read_bytes()
    img0.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as err:
        ds[0]
    assert str(img0) in str(err.value)
    img1.write_bytes(b"this is not a png")
    with pytest.raises(ImageReadError) as err:
        ds[1]
    assert str(img1) in str(err.value)
    img1.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        ds[1]


def test_jpeg_with_appended_data_and_exif_orientation(tmp_path: Path) -> None:
    from PIL import Image

    from spxseg.data.io import read_image, read_label

    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :4] = 255  # a bright band on the left
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
    motion = tmp_path / "motion.jpg"
    motion.write_bytes(jpeg.tobytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # a motion photo's video
    assert read_image(motion).shape == (8, 16, 3)
    motion.write_bytes(jpeg.tobytes()[:-300])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(motion)

    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotate 180 degrees when displayed
    Image.fromarray(pixels).save(tmp_path / "image.jpg", exif=exif, quality=100)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "label.png", exif=exif)
    image, label = read_image(tmp_path / "image.jpg"), read_label(tmp_path / "label.png")
    assert image[:, :4].mean() > 200 and label[:, :4].mean() > 200  # both in the stored pixel grid


def test_label_value_outside_class_set(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train", n=1)
    make_cityscapes(tmp_path / "t", "train", n=1, train_ids=True)
    ds = CityscapesDataset(tmp_path, "train", EvalPipeline(DataConfig()))
    lab = cv2.imread(str(ds.label_path(0)), cv2.IMREAD_UNCHANGED)
    lab[3, 3] = 40  # not a Cityscapes label id
    cv2.imwrite(str(ds.label_path(0)), lab)
    with pytest.raises(LabelValueError) as err:
        ds[0]
    assert "[40]" in str(err.value) and str(ds.label_path(0)) in str(err.value)
    dt = CityscapesDataset(tmp_path / "t", "train", EvalPipeline(DataConfig()))
    lab = cv2.imread(str(dt.label_path(0)), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 19  # train ids stop at 18
    cv2.imwrite(str(dt.label_path(0)), lab)
    with pytest.raises(LabelValueError, match=r"\[19\]"):
        dt.load_label(0)


def test_colour_label_is_rejected(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train", n=1)
    ds = CityscapesDataset(tmp_path, "train", EvalPipeline(DataConfig()))
    colour = np.zeros((32, 64, 3), np.uint8)
    colour[..., 2] = 200
    cv2.imwrite(str(ds.label_path(0)), colour)
    with pytest.raises(ImageReadError, match="single-channel"):
        ds.load_label(0)


def test_split_folder_names_from_config(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train_extra", n=2, size=(32, 64))
    cfg = {
        "dataset": "cityscapes",
        "root": str(tmp_path),
        "train_split": "train_extra",
        "crop_size": [16, 32],
        "base_size": [32, 64],
        "scale_range": [1.0, 1.0],
    }
    for split in ("train", "train_extra"):  # by role or by folder name: the training pipeline
        ds = build_dataset(cfg, split)
        assert len(ds) == 2 and ds[0]["label"].shape == (16, 32)
    with pytest.raises(DatasetNotFoundError, match="test"):
        build_dataset(cfg, "test")
