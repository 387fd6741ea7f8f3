"""OpenCV image / label reading with checks that turn bad files into clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"cannot read image file {path}: {err}") from err
    if data.size == 0:
        raise ImageReadError(f"image file {path} is empty (0 bytes)")
    return data


def _check_complete(data: np.ndarray, path: Path) -> None:
    """Catch truncated PNG / JPEG files, which OpenCV may decode partially without an error."""
    head = data[:8].tobytes()
    tail = data[-64:].tobytes()
    if head == _PNG_MAGIC and b"IEND" not in tail:
        raise ImageReadError(f"image file {path} is truncated (PNG without its IEND chunk)")
    if head[:2] == b"\xff\xd8" and not tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise ImageReadError(f"image file {path} is truncated (JPEG without its end-of-image marker)")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8, shape (H, W, 3); raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(data, path)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"cannot decode image file {path} (corrupt, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label map unchanged, shape (H, W), uint8 (or uint16 for 16-bit PNGs)."""
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(data, path)
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise ImageReadError(f"cannot decode label file {path} (corrupt, truncated or not an image)")
    if lab.ndim == 3:
        if lab.shape[2] >= 3 and (
            np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 1], lab[..., 2])
        ):
            lab = lab[..., 0]
        else:
            raise ImageReadError(
                f"label file {path} has {lab.shape[2]} colour channels; expected a single-channel "
                "map of class ids (a colour visualisation is not a label map)"
            )
    return np.ascontiguousarray(lab)


def write_png(path: str | Path, array: np.ndarray, rgb: bool = True) -> None:
    """Write ``array`` (H, W[, 3]) as PNG; RGB input is converted to OpenCV's BGR order."""
    path = Path(path)
    if array.ndim == 3 and rgb:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    buf.tofile(str(path))
