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
    if head == _PNG_MAGIC and b"IEND" not in tail and not _png_has_end(data):
        raise ImageReadError(f"image file {path} is truncated (PNG without its IEND chunk)")
    if head[:2] == b"\xff\xd8" and not (tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") or _jpeg_has_end(data)):
        raise ImageReadError(f"image file {path} is truncated (JPEG without its end-of-image marker)")


def _png_has_end(data: np.ndarray) -> bool:
    """Whether a PNG's chunks, walked by their lengths (the pixel data is not scanned), reach its IEND chunk,
    even with data appended after it (the quick check of the last 64 bytes misses those)."""
    raw = data.tobytes()
    i = len(_PNG_MAGIC)
    while i + 8 <= len(raw):
        if raw[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + int.from_bytes(raw[i : i + 4], "big")  # length, type, data, CRC
    return False


def _is_indexed_png(data: np.ndarray) -> bool:
    """Whether a PNG stores palette indices (colour type 3, byte 25 of the file: IHDR's colour type)."""
    return data[:8].tobytes() == _PNG_MAGIC and data.size > 25 and int(data[25]) == 3


def _jpeg_has_end(data: np.ndarray) -> bool:
    """Whether the image data of a JPEG ends with its end-of-image marker, even with data appended after
    it (e.g. a motion photo's video).

    Walks the header segments by their lengths to the start of scan (so that an EXIF thumbnail's own
    marker does not count), then looks for the marker: inside the scan an 0xFF byte is always followed
    by 0x00 or a restart marker, so the first FF D9 there is the image's end.
    """
    raw = data.tobytes()
    i = 2
    while i + 4 <= len(raw) and raw[i] == 0xFF:
        marker, length = raw[i + 1], int.from_bytes(raw[i + 2 : i + 4], "big")
        i += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data follows its header
            return raw.find(b"\xff\xd9", i) >= 0
    return False


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8, shape (H, W, 3); raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(data, path)
    # the stored pixel grid, as for labels (which OpenCV never rotates): an EXIF rotation applied to the
    # image alone would misalign it with its label
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ImageReadError(f"cannot decode image file {path} (corrupt, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label map unchanged, shape (H, W), uint8 (or uint16 for 16-bit PNGs)."""
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(data, path)
    if _is_indexed_png(data):  # VOC style: class ids as palette indices, which OpenCV expands to colours
        return _read_palette_indices(path)
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


def _read_palette_indices(path: Path) -> np.ndarray:
    """The palette indices of an indexed-colour PNG, (H, W) uint8 (Pillow keeps them, OpenCV cannot)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    except (OSError, ValueError) as err:
        raise ImageReadError(f"cannot decode label file {path} (an indexed-colour PNG): {err}") from err


def write_png(path: str | Path, array: np.ndarray, *, rgb: bool) -> Path:
    """Write ``array`` as PNG, creating missing folders; returns ``path``.

    ``array`` is a (H, W) map (uint8 / uint16) or an (H, W, 3) image, in RGB order when ``rgb``
    (converted to OpenCV's BGR), else already in BGR. ``rgb`` has no default: every caller says
    which order its pixels are in.
    """
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and rgb:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))
    return path
