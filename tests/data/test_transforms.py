"""Joint OpenCV transforms: alignment, cat_max_ratio, nearest-only labels, padding, photometric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spxseg.config import DataConfig
from spxseg.data import EvalPipeline, TrainPipeline
from spxseg.data.transforms import (
    crop_box,
    photometric_distortion,
    random_crop,
    random_flip,
    random_resize,
    rescale_size,
)

COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], np.uint8
)


def pattern(h: int = 96, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric block pattern: label ids and an image that encodes them as colours."""
    ys, xs = np.mgrid[0:h, 0:w]
    lab = ((ys // 12) * 3 + (xs // 20) * 2 + (xs > 0.7 * w)) % 6
    lab = lab.astype(np.uint8)
    lab[: h // 8, : w // 8] = 255  # an ignore corner
    return COLOURS[np.where(lab == 255, 0, lab)], lab


def identity_norm_cfg(**kw) -> DataConfig:
    cfg = DataConfig(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], photometric=False, **kw)
    return cfg


def colour_agreement(img: torch.Tensor, lab: torch.Tensor) -> float:
    """Fraction of labelled pixels away from block edges whose colour encodes their label."""
    img = img.permute(1, 2, 0).numpy()
    lab = lab.numpy()
    inner = np.ones_like(lab, bool)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):  # not on a label boundary
        inner &= np.roll(lab, (dy, dx), (0, 1)) == lab
    inner &= lab != 255
    if inner.sum() == 0:
        return 1.0
    expect = COLOURS[lab[inner]].astype(np.float32)
    return float((np.abs(img[inner] - expect).max(1) < 1.0).mean())


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_keeps_image_and_label_aligned(seed: int) -> None:
    img, lab = pattern()
    cfg = identity_norm_cfg(
        base_size=[96, 160], crop_size=[64, 96], scale_range=[0.5, 2.0], cat_max_ratio=0.9
    )
    out = TrainPipeline(cfg)(img, lab, np.random.default_rng(seed))
    assert out["image"].shape == (3, 64, 96) and out["image"].dtype == torch.float32
    assert out["label"].shape == (64, 96) and out["label"].dtype == torch.int64
    assert colour_agreement(out["image"], out["label"]) > 0.98


def test_flip_resize_crop_alignment_individually() -> None:
    img, lab = pattern()
    rng = np.random.default_rng(0)
    fi, fl = random_flip(img, lab, rng, prob=1.0)
    np.testing.assert_array_equal(fl, lab[:, ::-1])
    np.testing.assert_array_equal(fi, img[:, ::-1])
    ri, rl = random_resize(img, lab, (96, 160), (1.7, 1.7), rng)
    assert rl.shape == ri.shape[:2] == rescale_size((96, 160), (96 * 1.7, 160 * 1.7))
    ci, cl = random_crop(ri, rl, (50, 70), 1.0, rng)
    assert cl.shape == (50, 70) and ci.shape == (50, 70, 3)
    as_t = torch.from_numpy(np.ascontiguousarray(ci).astype(np.float32)).permute(2, 0, 1)
    assert colour_agreement(as_t, torch.from_numpy(cl.astype(np.int64))) > 0.98


def test_rescale_size_keeps_ratio_like_mmseg() -> None:
    # a 1024x2048 image with scale (1024, 2048) * r keeps its size * r
    assert rescale_size((1024, 2048), (512, 1024)) == (512, 1024)
    # a portrait image is bounded by the short side of the scale
    assert rescale_size((200, 100), (100, 400)) == (200, 100)
    assert rescale_size((300, 400), (512, 512)) == (384, 512)


def test_labels_only_take_input_values() -> None:
    rng = np.random.default_rng(0)
    lab = rng.choice(np.array([3, 7, 11, 255], np.uint8), size=(37, 53))
    img = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    cfg = DataConfig(base_size=[37, 53], crop_size=[30, 40], scale_range=[0.3, 3.1])
    pipe = TrainPipeline(cfg)
    for s in range(20):
        out = pipe(img, lab, np.random.default_rng(s))
        assert set(out["label"].unique().tolist()) <= {3, 7, 11, 255}


def test_cat_max_ratio_holds() -> None:
    # left 40% class 0, right 60% class 1: many crops of half the width are dominated by one class
    lab = np.zeros((60, 200), np.uint8)
    lab[:, 80:] = 1
    lab[:5] = 255  # ignore pixels are not counted
    for s in range(30):
        y0, y1, x0, x1 = crop_box(lab, (60, 100), 0.75, np.random.default_rng(s))
        crop = lab[y0:y1, x0:x1]
        counts = np.bincount(crop[crop != 255], minlength=2)
        assert counts.max() / counts.sum() < 0.75, (s, x0)
    # when it is impossible the least dominated crop is returned (no failure)
    one = np.zeros((20, 20), np.uint8)
    assert crop_box(one, (10, 10), 0.75, np.random.default_rng(0)) is not None


def test_padding_and_test_pipeline() -> None:
    img, lab = pattern(40, 60)
    cfg = DataConfig(
        base_size=[40, 60], crop_size=[64, 96], scale_range=[1.0, 1.0], flip=False, photometric=False
    )
    out = TrainPipeline(cfg)(img, lab, np.random.default_rng(0))
    assert out["image"].shape == (3, 64, 96)
    assert torch.all(out["label"][40:] == 255) and torch.all(out["label"][:, 60:] == 255)
    assert torch.all(out["image"][:, 40:] == 0) and torch.all(out["image"][:, :, 60:] == 0)
    test = EvalPipeline(DataConfig(test_short_side=20))(img, lab)
    assert test["image"].shape == (3, 20, 30) and test["label"].shape == (40, 60)
    assert test["orig_size"] == (40, 60)
    np.testing.assert_array_equal(test["label"].numpy(), lab)


def test_photometric_distortion_range_and_determinism() -> None:
    img, _ = pattern()
    a = photometric_distortion(img, np.random.default_rng(5))
    b = photometric_distortion(img, np.random.default_rng(5))
    assert a.dtype == np.float32 and a.shape == img.shape
    assert a.min() >= 0 and a.max() <= 255
    np.testing.assert_array_equal(a, b)
    changed = [not np.allclose(photometric_distortion(img, np.random.default_rng(s)), img) for s in range(8)]
    assert any(changed)
