"""One test-time preprocessing (resize to the test short side, normalise) and one EXIF policy for the
datasets' EvalPipeline and Segmenter."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spxseg.config import Config, from_dict
from spxseg.data import EvalPipeline
from spxseg.data.io import read_image
from spxseg.data.transforms import mean_std, preprocess_image, short_side_size


def tiny_segmenter(short_side: int | None = 16):
    from spxseg import Segmenter
    from spxseg.models import build_model

    cfg = from_dict(Config, {
        "model": {"num_classes": 3, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
                  "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2}},
        "data": {"test_short_side": short_side, "mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0]},
    })
    return Segmenter(build_model(cfg.model), cfg, device="cpu")


def test_short_side_size_and_preprocess_image() -> None:
    assert short_side_size((24, 40), 12) == (12, 20) and short_side_size((40, 24), 12) == (20, 12)
    assert short_side_size((24, 40), None) == (24, 40) == short_side_size((24, 40), 0)
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    x = preprocess_image(image, [10.0, 20.0, 30.0], [2.0, 4.0, 8.0])
    assert x.shape == (3, 24, 40) and x.dtype == torch.float32
    expect = (image.astype(np.float32) - [10.0, 20.0, 30.0]) / [2.0, 4.0, 8.0]
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expect, rtol=1e-6, atol=1e-5)
    assert preprocess_image(image, [0] * 3, [1] * 3, short_side=12).shape == (3, 12, 20)
    assert preprocess_image(image, [0] * 3, [1] * 3, short_side=12, size_hw=(7, 9)).shape == (3, 7, 9)  # size wins


def test_segmenter_and_test_pipeline_preprocess_alike() -> None:
    seg = tiny_segmenter(short_side=16)
    image = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    x, size = seg.preprocess(image, rgb=True)
    item = EvalPipeline(seg.cfg.data)(image, None)
    assert size == (24, 40) == item["orig_size"] and x.shape == (1, 3, 16, 27)
    assert torch.equal(x[0], item["image"])
    bgr, _ = seg.preprocess(np.ascontiguousarray(image[..., ::-1]))  # OpenCV order, the default
    assert torch.equal(bgr, x)


def test_exif_oriented_jpeg_is_read_alike_by_datasets_and_segmenter(tmp_path: Path) -> None:
    """A JPEG whose EXIF orientation tag asks for a 90-degree turn: ``cv2.imread`` would turn it, the datasets
    read the stored pixel grid (so that images stay aligned with their labels), and so does ``Segmenter``."""
    pil_image = pytest.importorskip("PIL.Image")
    pixels = np.zeros((24, 40, 3), np.uint8)
    pixels[:, :8] = (250, 40, 40)  # a red band on the left (RGB)
    exif = pil_image.Exif()
    exif[0x0112] = 6  # orientation: displayed rotated by 90 degrees clockwise
    path = tmp_path / "turned.jpg"
    pil_image.fromarray(pixels).save(path, exif=exif, quality=100)
    assert cv2.imread(str(path), cv2.IMREAD_COLOR).shape == (40, 24, 3)  # the tag is there and OpenCV applies it

    image = read_image(path)
    assert image.shape == (24, 40, 3) and image[:, :8, 0].mean() > 200 and image[:, :8, 2].mean() < 80
    seg = tiny_segmenter(short_side=None)
    x, size = seg.preprocess(path)
    assert size == (24, 40)
    assert torch.equal(x[0], preprocess_image(image, *mean_std(seg.cfg.data)))
    assert torch.equal(x[0], EvalPipeline(seg.cfg.data)(image, None)["image"])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        seg.preprocess(tmp_path / "missing.jpg")
