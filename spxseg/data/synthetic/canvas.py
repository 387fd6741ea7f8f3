"""The drawing surface of a synthetic street scene and the materials its classes share.

:class:`Scene` holds the image being drawn (float32 RGB 0-255) and its Cityscapes label ids, with
value noise, masks (rectangle, ellipse, polygon) and :meth:`Scene.fill`; :meth:`Scene.crop` gives
a view sharing the arrays, so an object draws on a small window of the image. All randomness comes
from the scene's ``rng``, so the same generator draws the same scene.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..cityscapes import LABEL_IDS

ROAD, SIDEWALK, BUILDING = LABEL_IDS["road"], LABEL_IDS["sidewalk"], LABEL_IDS["building"]
POLE, SIGN, VEGETATION = LABEL_IDS["pole"], LABEL_IDS["traffic sign"], LABEL_IDS["vegetation"]
SKY, PERSON, CAR = LABEL_IDS["sky"], LABEL_IDS["person"], LABEL_IDS["car"]
#: Cityscapes class names that appear in the synthetic scenes
SYNTHETIC_CLASSES = [
    "road",
    "sidewalk",
    "building",
    "pole",
    "traffic sign",
    "vegetation",
    "sky",
    "person",
    "car",
]

# Shared material colours (RGB): every class samples from overlapping subsets of these.
PAINTS = {
    "white": (215, 215, 210),
    "black": (35, 35, 38),
    "silver": (150, 152, 155),
    "grey": (105, 105, 108),
    "red": (165, 40, 38),
    "blue": (45, 70, 150),
    "navy": (35, 40, 80),
    "green": (55, 110, 55),
    "olive": (100, 110, 50),
    "yellow": (205, 180, 60),
    "beige": (190, 170, 135),
    "brown": (115, 80, 55),
    "orange": (205, 110, 40),
    "teal": (50, 120, 125),
}
CAR_PAINTS = [p for p in PAINTS if p != "orange"]
CLOTHES = list(PAINTS)
SIGN_PAINTS = ["red", "blue", "yellow", "white", "green", "orange"]
SKIN = [(225, 190, 160), (200, 155, 120), (150, 105, 75), (95, 65, 45)]


class Scene:
    """One scene being drawn: ``img`` float32 (H, W, 3) RGB 0-255, ``lab`` uint8 (H, W) label ids."""

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.full((h, w), SKY, np.uint8)
        self.ys, self.xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self.ys += 0.5
        self.xs += 0.5
        self.x_off, self.y_off = 0, 0

    def crop(self, x0: float, y0: float, x1: float, y1: float) -> Scene | None:
        """A view of the window [x0, x1) x [y0, y1) sharing the arrays (None if empty)."""
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(self.w, int(np.ceil(x1)) + 1), min(self.h, int(np.ceil(y1)) + 1)
        if xb <= xa or yb <= ya:
            return None
        v = object.__new__(Scene)
        v.h, v.w, v.rng = yb - ya, xb - xa, self.rng
        v.img, v.lab = self.img[ya:yb, xa:xb], self.lab[ya:yb, xa:xb]
        v.xs, v.ys = self.xs[ya:yb, xa:xb], self.ys[ya:yb, xa:xb]
        v.x_off, v.y_off = self.x_off + xa, self.y_off + ya
        return v

    # ------------------------------------------------------------------ helpers
    def jitter(self, rgb: Sequence[float], amount: float = 18.0) -> np.ndarray:
        c = np.asarray(rgb, np.float32) + self.rng.normal(0, amount, 3)
        return np.clip(c * self.rng.uniform(0.8, 1.2), 5, 250).astype(np.float32)

    def paint_name(self, names: Sequence[str], amount: float = 18.0) -> np.ndarray:
        return self.jitter(PAINTS[names[int(self.rng.integers(len(names)))]], amount)

    def grey(self, lo: float, hi: float, tint: float = 8.0) -> np.ndarray:
        v = self.rng.uniform(lo, hi)
        return np.clip(v + self.rng.normal(0, tint, 3), 5, 250).astype(np.float32)

    def noise(self, cell: float, octaves: int = 1) -> np.ndarray:
        """Smooth value noise (H, W) in about [-1, 1] with features of ``cell`` pixels."""
        out = np.zeros((self.h, self.w), np.float32)
        amp, total = 1.0, 0.0
        for _ in range(octaves):
            gh = max(2, int(np.ceil(self.h / cell)) + 1)
            gw = max(2, int(np.ceil(self.w / cell)) + 1)
            grid = self.rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
            out += amp * cv2.resize(grid, (self.w, self.h), interpolation=cv2.INTER_CUBIC)
            total += amp
            amp *= 0.5
            cell = max(1.0, cell / 2)
        return out / total

    def fill(
        self,
        mask: np.ndarray,
        color: np.ndarray | Sequence[float],
        label: int | None,
        texture: np.ndarray | None = None,
        strength: float = 0.0,
    ) -> None:
        """Paint ``color`` (RGB or (H, W, 3)) on ``mask`` (bool), modulated by ``texture``."""
        if not mask.any():
            return
        col = np.broadcast_to(np.asarray(color, np.float32), self.img.shape)[mask]
        if texture is not None:
            col = col * (1.0 + strength * texture[mask])[:, None]
        self.img[mask] = col
        if label is not None:
            self.lab[mask] = label

    def poly_mask(self, pts: Sequence[Sequence[float]]) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        p = np.asarray(pts, np.float64) - (self.x_off + 0.5, self.y_off + 0.5)
        cv2.fillPoly(m, [np.round(p * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        return m.astype(bool)

    def rect_mask(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xs >= x0) & (self.xs < x1) & (self.ys >= y0) & (self.ys < y1)

    def ellipse_mask(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xs - cx) / max(rx, 0.5)) ** 2 + ((self.ys - cy) / max(ry, 0.5)) ** 2 <= 1.0

