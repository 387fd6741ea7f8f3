"""Reading images and labels: formats OpenCV alone gets wrong, and files that must be refused by name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from spxseg.data.errors import ImageReadError
from spxseg.data.io import read_image, read_label


def test_png_with_data_after_its_end_is_read(tmp_path: Path) -> None:
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    ok, png = cv2.imencode(".png", pixels)
    path = tmp_path / "trailing.png"
    path.write_bytes(png.tobytes() + bytes(100))  # e.g. padding an uploader added
    np.testing.assert_array_equal(read_image(path), pixels[..., ::-1])
    path.write_bytes(png.tobytes()[:-20])  # cut inside its last chunks
    with pytest.raises(ImageReadError, match="truncated") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_indexed_colour_label_png_gives_its_class_ids(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 12, (9, 13)).astype(np.uint8)
    ids[0, 0] = 255  # the ignore id
    img = Image.fromarray(ids, mode="P")
    # a colour palette (VOC style), padded with black: index 0 and the padding share (0, 0, 0)
    palette = [0, 0, 0] + [v for i in range(1, 12) for v in (20 * i, 255 - 20 * i, 7 * i)]
    img.putpalette(palette + [0, 0, 0] * (256 - len(palette) // 3))
    path = tmp_path / "label.png"
    img.save(path)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 3  # what OpenCV alone would return: colours
    lab = read_label(path)
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, ids)


def test_colour_label_png_is_refused(tmp_path: Path) -> None:
    colours = np.zeros((4, 4, 3), np.uint8)
    colours[:2] = (128, 64, 128)
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), colours)
    with pytest.raises(ImageReadError, match="colour visualisation") as err:
        read_label(path)
    assert str(path) in str(err.value)
