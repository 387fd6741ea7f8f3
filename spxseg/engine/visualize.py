"""Visualisation: colour label maps, overlays, superpixel boundaries and side-by-side panels.

All images are RGB uint8 numpy arrays (H, W, 3); label maps are (H, W) integer train ids and
superpixel maps (H, W) integer ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Color = tuple[int, int, int]


def default_palette(n: int, seed: int = 0) -> list[Color]:
    """``n`` distinct-ish deterministic colours (for datasets without a palette)."""
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in range(n)]  # type: ignore[misc]


def colorize(labels: np.ndarray, palette: Sequence[Color], ignore_color: Color = (0, 0, 0)) -> np.ndarray:
    """Colour label map (H, W, 3) uint8 from train ids (H, W); ids outside the palette (e.g. 255) get
    ``ignore_color``."""
    lut = np.empty((256, 3), np.uint8)
    lut[:] = ignore_color
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("label ids must be in 0..255 to colorize")
    return lut[labels.astype(np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Color], alpha: float = 0.5) -> np.ndarray:
    """Blend the colour label map over the image: ``(1 - alpha) * image + alpha * colours``."""
    _check_same_size(image, labels, "labels")
    color = colorize(labels, palette)
    return cv2.addWeighted(np.ascontiguousarray(image, np.uint8), 1.0 - alpha, color, alpha, 0.0)


def boundary_mask(superpixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where a pixel's superpixel id differs from its right or lower neighbour."""
    sp = np.asarray(superpixels)
    mask = np.zeros(sp.shape, bool)
    mask[:, :-1] |= sp[:, :-1] != sp[:, 1:]
    mask[:-1, :] |= sp[:-1, :] != sp[1:, :]
    return mask


def draw_boundaries(image: np.ndarray, superpixels: np.ndarray, color: Color = (255, 255, 0),
                    thickness: int = 1) -> np.ndarray:
    """The image with superpixel boundaries drawn in ``color`` (``thickness`` pixels wide)."""
    _check_same_size(image, superpixels, "superpixels")
    mask = boundary_mask(superpixels)
    if thickness > 1:
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((thickness, thickness), np.uint8)).astype(bool)
    out = np.array(image, np.uint8, copy=True)
    out[mask] = color
    return out


def superpixel_mean_colors(image: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """Every pixel painted with the mean colour of its superpixel (what the superpixel tokens 'see')."""
    _check_same_size(image, superpixels, "superpixels")
    ids = np.asarray(superpixels).reshape(-1)
    _, inverse = np.unique(ids, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    flat = np.asarray(image, np.float64).reshape(-1, 3)
    means = np.stack([np.bincount(inverse, weights=flat[:, c]) for c in range(3)], 1) / counts[:, None]
    return np.round(means[inverse]).astype(np.uint8).reshape(image.shape)


def legend(class_names: Sequence[str], palette: Sequence[Color], classes: Sequence[int] | None = None,
           width: int = 512, row_height: int = 22) -> np.ndarray:
    """A white strip listing colour swatches and names of ``classes`` (default: all), wrapped to ``width``."""
    classes = list(range(len(class_names))) if classes is None else [int(c) for c in classes]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, row_height / 40.0, 1
    entries = []
    for c in classes:
        name = class_names[c] if c < len(class_names) else str(c)
        (tw, _), _ = cv2.getTextSize(name, font, scale, thick)
        entries.append((c, name, row_height + 6 + tw + 16))
    margin = 4
    positions, x, y = [], margin, 2  # (x, y) of each entry, wrapping before one that would overflow
    for _, _, w in entries:
        if x + w > width and x > margin:
            x, y = margin, y + row_height
        positions.append((x, y))
        x += w
    strip = np.full((y + row_height + 2, width, 3), 255, np.uint8)
    for (c, name, _), (x, y) in zip(entries, positions):
        color = tuple(int(v) for v in palette[c]) if c < len(palette) else (0, 0, 0)
        cv2.rectangle(strip, (x, y + 3), (x + row_height - 6, y + row_height - 3), color, -1)
        cv2.rectangle(strip, (x, y + 3), (x + row_height - 6, y + row_height - 3), (0, 0, 0), 1)
        cv2.putText(strip, name, (x + row_height, y + row_height - 6), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip


def make_panel(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int | None = None,
               gap: int = 6, footer: np.ndarray | None = None) -> np.ndarray:
    """Tile equally sized RGB images in a grid of ``ncols`` columns (default: one row), each with an
    optional title bar above it, and an optional ``footer`` strip (e.g. a :func:`legend`) below."""
    if not images:
        raise ValueError("make_panel needs at least one image")
    h, w = images[0].shape[:2]
    for i, img in enumerate(images):
        if img.shape[:2] != (h, w):
            raise ValueError(f"panel image {i} is {img.shape[:2]}, expected {(h, w)} like image 0")
    ncols = ncols or len(images)
    nrows = (len(images) + ncols - 1) // ncols
    title_h = max(18, h // 20) if titles else 0
    cell_h, cell_w = title_h + h, w
    panel = np.full((nrows * cell_h + (nrows + 1) * gap, ncols * cell_w + (ncols + 1) * gap, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, title_h / 30.0)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y0, x0 = gap + r * (cell_h + gap), gap + c * (cell_w + gap)
        if titles:
            cv2.putText(panel, titles[i], (x0 + 2, y0 + title_h - 5), font, scale, (0, 0, 0),
                        max(1, int(scale * 2)), cv2.LINE_AA)
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)
        panel[y0 + title_h : y0 + title_h + h, x0 : x0 + w] = img
    if footer is not None:
        if footer.shape[1] != panel.shape[1]:
            footer = cv2.resize(footer, (panel.shape[1], max(1, footer.shape[0] * panel.shape[1] // footer.shape[1])),
                                interpolation=cv2.INTER_AREA)
        panel = np.concatenate([panel, footer], 0)
    return panel


def _check_same_size(image: np.ndarray, other: np.ndarray, what: str) -> None:
    if image.shape[:2] != np.asarray(other).shape[:2]:
        raise ValueError(f"image is {image.shape[:2]} but {what} are {np.asarray(other).shape[:2]}")
