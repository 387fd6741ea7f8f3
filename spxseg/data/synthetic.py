"""Procedural street scenes written in the Cityscapes layout with Cityscapes *label ids*.

Each scene is a pinhole view down a street: a ground plane (road with lane markings,
tiled sidewalks) seen from a camera at unit height, facades in perspective on both sides
(windows grid, brick noise) or a wall of vegetation, frontal buildings at the end of the
street, sky (gradient, clouds), and objects standing on the ground at several depths:
cars (rear / front view: body, cabin, windows, wheels, lights), people (head, torso,
arms, legs, shaded), trees (trunk + textured canopy), shaded poles with traffic signs.
Global lighting, colour casts, cast shadows and sensor noise are applied on top.

Colour does not identify the class: all classes draw their colours from overlapping
distributions (grey road / sidewalk / facade / car / pole / overcast sky, green cars and
clothing vs vegetation, clothing and signs from the car palette, ...), so a per-pixel
colour classifier stays weak (``benchmarks/synthetic_difficulty.py``) while shape, texture
and layout make the scenes learnable.

Sizes are chosen for a quick CPU run at 128x256 with 16-px superpixels: objects are large
relative to the image (poles >= H/12 wide, signs >= H/6, people >= H/12 wide and about
H/4 or more tall), label boundaries are smooth (texture lives in the image, not in the
label), and the scene layout (sky on top, road converging to a vanishing point, facades
on the sides) is learnable from context.

Ground geometry: a pixel (x, y) below the horizon ``yh`` has depth ``Z = H / (y - yh)`` and
lateral position ``q = (x - xv) / (y - yh)`` (in camera heights); an object at (q, Z) of
height ``h`` spans ``h * H / Z`` pixels above its contact row ``yh + H / Z``.

Generation is deterministic: image ``i`` of a split uses
``np.random.default_rng([seed, split_index, i])``, so the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .cityscapes import LABEL_IDS
from .io import write_png

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
SPLIT_CITIES = {"train": "synthtrain", "val": "synthval"}
MARKER = "synthetic.json"

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
CAR_PAINTS = [
    "white",
    "black",
    "silver",
    "grey",
    "red",
    "blue",
    "navy",
    "green",
    "olive",
    "yellow",
    "beige",
    "brown",
    "teal",
]
CLOTHES = [
    "white",
    "black",
    "silver",
    "grey",
    "red",
    "blue",
    "navy",
    "green",
    "olive",
    "yellow",
    "beige",
    "brown",
    "orange",
    "teal",
]
SIGN_PAINTS = ["red", "blue", "yellow", "white", "green", "orange"]
SKIN = [(225, 190, 160), (200, 155, 120), (150, 105, 75), (95, 65, 45)]


class _Scene:
    """One scene being drawn: ``img`` float32 (H, W, 3) RGB 0-255, ``lab`` uint8 (H, W) label ids."""

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.full((h, w), SKY, np.uint8)
        self.ys, self.xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self.ys += 0.5
        self.xs += 0.5
        self.x_off, self.y_off = 0, 0

    def crop(self, x0: float, y0: float, x1: float, y1: float) -> _Scene | None:
        """A view of the window [x0, x1) x [y0, y1) sharing the arrays (None if empty)."""
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(self.w, int(np.ceil(x1)) + 1), min(self.h, int(np.ceil(y1)) + 1)
        if xb <= xa or yb <= ya:
            return None
        v = object.__new__(_Scene)
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


def _render(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: RGB uint8 (H, W, 3) and Cityscapes label ids uint8 (H, W)."""
    s = _Scene(h, w, rng)
    xs, ys = s.xs, s.ys
    yh = rng.uniform(0.38, 0.5) * h  # horizon row
    xv = rng.uniform(0.35, 0.65) * w  # vanishing point column
    below = ys > yh + 0.5
    dy = np.maximum(ys - yh, 1e-3)
    gz = h / dy  # ground depth
    gq = (xs - xv) / dy  # ground lateral position

    # -------------------------------------------------------------- sky
    mode = rng.choice(["blue", "overcast", "dusk"], p=[0.55, 0.33, 0.12])
    if mode == "blue":
        top, bot = s.jitter((70, 120, 200), 20), s.jitter((165, 195, 225), 15)
    elif mode == "overcast":
        top, bot = s.grey(120, 215), s.grey(140, 225)
    else:
        top, bot = s.jitter((110, 100, 150), 20), s.jitter((225, 150, 95), 20)
    t = np.clip(ys / max(yh, 1.0), 0, 1)[..., None]
    sky = top * (1 - t) + bot * t
    clouds = np.clip(s.noise(w / 5, 3) * rng.uniform(0.8, 1.6) - rng.uniform(-0.2, 0.4), 0, 1)[..., None]
    sky = sky * (1 - clouds) + s.grey(170, 240) * clouds
    s.img[:] = sky
    s.lab[:] = SKY

    # -------------------------------------------------------------- street layout (camera heights)
    road_w = rng.uniform(1.6, 3.0)
    q_l = -road_w * rng.uniform(0.35, 0.65)
    q_r = q_l + road_w
    sw_l, sw_r = rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.2)
    qf_l, qf_r = q_l - sw_l, q_r + sw_r  # facade planes
    z_end = rng.uniform(7.0, 22.0)  # end of the street

    # far buildings at the end of the street (frontal), partly trees
    x_gap0, x_gap1 = xv + qf_l * h / z_end, xv + qf_r * h / z_end
    ppu_end = h / z_end
    base_end = yh + ppu_end
    x = x_gap0 - rng.uniform(0, 6)
    while x < x_gap1:
        bw = rng.uniform(1.0, 3.0) * ppu_end
        bh = rng.uniform(1.5, 8.0) * ppu_end
        m = s.rect_mask(x, base_end - bh, x + bw, base_end + 1)
        if rng.random() < 0.2:
            m = s.ellipse_mask(x + bw / 2, base_end - bh / 2, bw / 1.6, bh / 2) | s.rect_mask(
                x, base_end - bh / 3, x + bw, base_end + 1
            )
            s.fill(m, s.paint_name(["green", "olive"], 25), VEGETATION, s.noise(3, 2), 0.35)
        else:
            col = _facade_colour(s)
            win = (np.mod(xs - x, max(3.0, 0.6 * ppu_end)) < max(1.5, 0.3 * ppu_end)) & (
                np.mod(ys - base_end, max(3.0, 0.7 * ppu_end)) < max(1.5, 0.35 * ppu_end)
            )
            s.fill(m, col, BUILDING, s.noise(2, 1), 0.12)
            s.fill(m & win & (ys < base_end - 2), col * rng.uniform(0.4, 0.7), BUILDING)
        x += bw

    # -------------------------------------------------------------- ground: road + sidewalks
    tex_fine = s.noise(1.5, 2)
    road_col = s.grey(50, 135)
    if rng.random() < 0.15:
        road_col = road_col * np.float32([1.08, 1.0, 0.9])
    road = below & (gq >= q_l) & (gq <= q_r)
    road_tex = 0.6 * tex_fine + 0.4 * s.noise(8, 2)
    s.fill(road, road_col, ROAD, road_tex, 0.18)
    # lane markings: dashed centre lines, solid edge lines
    mark_col = s.jitter((225, 225, 215), 10) if rng.random() < 0.8 else s.jitter((220, 185, 60), 10)
    lanes = int(rng.integers(2, 4))
    lw = rng.uniform(0.035, 0.06)
    period, duty = rng.uniform(1.5, 3.0), rng.uniform(0.35, 0.6)
    for k in range(1, lanes):
        qk = q_l + road_w * k / lanes
        dash = np.mod(gz + rng.uniform(0, period), period) < period * duty
        s.fill(road & (np.abs(gq - qk) < lw) & dash, mark_col, ROAD, tex_fine, 0.1)
    if rng.random() < 0.6:
        for qk in (q_l + 0.12, q_r - 0.12):
            s.fill(road & (np.abs(gq - qk) < lw * 0.8), mark_col, ROAD, tex_fine, 0.1)
    if rng.random() < 0.3:  # crosswalk stripes
        z0 = rng.uniform(2.5, 5.0)
        cw = road & (gz > z0) & (gz < z0 + rng.uniform(0.6, 1.0)) & (np.mod(gq, 0.5) < 0.25)
        s.fill(cw, mark_col, ROAD, tex_fine, 0.1)

    for side, (qa, qb) in (("l", (qf_l - 50.0, q_l)), ("r", (q_r, qf_r + 50.0))):
        sw = below & (gq >= qa) & (gq < qb)
        if rng.random() < 0.75:
            col = s.grey(95, 200)
        else:
            col = s.paint_name(["beige", "red", "brown", "silver"], 20)
        tile = rng.uniform(0.25, 0.45)
        grout = (np.mod(gq, tile) < 0.04) | (np.mod(gz, tile * 1.3) < 0.05 * gz / 3)
        s.fill(sw, col, SIDEWALK, tex_fine, 0.12)
        s.fill(sw & grout, col * rng.uniform(0.7, 0.85), SIDEWALK)
        curb_q = q_l if side == "l" else q_r
        curb = sw & (np.abs(gq - curb_q) < 0.07)
        s.fill(curb, col * rng.uniform(1.05, 1.25), SIDEWALK)

    # -------------------------------------------------------------- facades / vegetation walls
    for side, qf in (("l", qf_l), ("r", qf_r)):
        cols = slice(0, max(0, int(np.ceil(xv)))) if side == "l" else slice(min(w, int(xv)), w)
        v = s.crop(cols.start, 0, cols.stop - 1, h - 1)
        if v is None:
            continue
        dx = v.xs - xv
        ok = (dx < 0) if side == "l" else (dx > 0)
        fz = np.where(ok, h * qf / np.where(ok, dx, 1.0), np.inf)  # facade depth on that side
        hgt = 1.0 + (yh - v.ys) * np.minimum(fz, 1e6) / h  # height above ground on the facade plane
        valid = (fz <= z_end) & (hgt >= 0)
        if rng.random() < 0.22:  # park: a wall of trees
            top = rng.uniform(1.5, 4.0) + 0.6 * v.noise(w / 6, 1)  # smooth canopy line
            v.fill(
                valid & (hgt <= top),
                v.paint_name(["green", "olive", "green", "green", "orange"], 25),
                VEGETATION,
                v.noise(2, 3),
                0.45,
            )
            continue
        # building segments along the street: [z_k, z_{k+1}) with their own look
        bounds = [0.0]
        while bounds[-1] < z_end:
            bounds.append(bounds[-1] + rng.uniform(1.5, 5.0))
        n = len(bounds) - 1
        seg = np.clip(
            np.searchsorted(np.asarray(bounds), np.where(valid, fz, 0.0), side="right") - 1, 0, n - 1
        )
        bh = rng.uniform(1.0, 4.5, n) * (rng.random(n) > 0.25)  # 25%: a gap in the row
        cols_ = np.stack([_facade_colour(v) for _ in range(n)])
        wcol = np.stack(
            [
                v.jitter((45, 55, 70), 15) if rng.random() < 0.7 else v.jitter((200, 190, 140), 20)
                for _ in range(n)
            ]
        )
        wz, wf = rng.uniform(0.7, 1.4, n), rng.uniform(1.4, 2.1, n)
        ax, ay = rng.uniform(0.3, 0.6, n), rng.uniform(0.35, 0.6, n)
        brick = rng.random(n) < 0.4
        z0 = np.asarray(bounds[:-1])[seg]
        m = valid & (hgt <= bh[seg])
        v.fill(m, cols_[seg], BUILDING, 0.6 * v.noise(1.5, 1) + 0.4 * v.noise(6, 1), 0.15)
        zl = fz - z0
        with np.errstate(invalid="ignore"):
            v.fill(m & brick[seg] & (np.mod(hgt, 0.12) < 0.025), cols_[seg] * 0.75, BUILDING)
            win = (np.mod(zl, wz[seg]) < (wz * ax)[seg]) & (np.mod(hgt - 0.4, wf[seg]) < (wf * ay)[seg])
            win &= (hgt > 0.5) & (hgt < bh[seg] - 0.4)
            v.fill(m & win, wcol[seg], BUILDING, v.noise(4, 1), 0.25)
            v.fill(m & (zl < 0.04 * fz), cols_[seg] * 0.6, BUILDING)

    # cast shadow across the ground (sunny scenes)
    if mode == "blue" and rng.random() < 0.6:
        slope = rng.uniform(-0.4, 0.4)
        qs = rng.uniform(q_l, q_r)
        shadow = below & ((gq - qs - slope * gz) < 0 if rng.random() < 0.5 else (gq - qs - slope * gz) > 0)
        shadow &= (s.lab == ROAD) | (s.lab == SIDEWALK)
        s.img[shadow] *= rng.uniform(0.5, 0.75)

    # -------------------------------------------------------------- objects, far to near
    z_min = h / (h - yh) * 1.08
    objs: list[tuple[float, str, float]] = []
    for _ in range(int(rng.integers(1, 5))):
        objs.append((rng.uniform(z_min, 7.0), "car", rng.uniform(q_l + 0.45, q_r - 0.45)))
    for _ in range(int(rng.integers(1, 6))):
        if rng.random() < 0.85:
            q = (
                rng.uniform(qf_l + 0.2, q_l - 0.15)
                if rng.random() < 0.5
                else rng.uniform(q_r + 0.15, qf_r - 0.2)
            )
        else:
            q = rng.uniform(q_l, q_r)
        objs.append((rng.uniform(z_min, 4.5), "person", q))
    for side in (-1, 1):
        for _ in range(int(rng.integers(1, 4))):
            q = (q_l - rng.uniform(0.1, 0.3)) if side < 0 else (q_r + rng.uniform(0.1, 0.3))
            objs.append((rng.uniform(z_min, 6.5), "pole", q))
        for _ in range(int(rng.integers(0, 3))):
            q = (qf_l + rng.uniform(0.3, sw_l * 0.7)) if side < 0 else (qf_r - rng.uniform(0.3, sw_r * 0.7))
            objs.append((rng.uniform(z_min + 0.5, 14.0), "tree", q))
    objs.sort(key=lambda o: -o[0])
    draw = {"car": _car, "person": _person, "pole": _pole, "tree": _tree}
    for z, kind, q in objs:
        ppu = h / z
        draw[kind](s, xv + q * ppu, yh + ppu, ppu)

    # -------------------------------------------------------------- camera: light, cast, noise
    img = s.img
    img *= rng.uniform(0.75, 1.2)
    img *= rng.uniform(0.88, 1.12, 3).astype(np.float32)
    gamma = rng.uniform(0.85, 1.18)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    vign = 1.0 - rng.uniform(0.0, 0.25) * (((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2)
    img *= vign[..., None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.8))
    img += rng.normal(0, rng.uniform(1.0, 4.0), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), s.lab


def _facade_colour(s: _Scene) -> np.ndarray:
    r = s.rng.random()
    if r < 0.5:
        return s.grey(60, 200)
    if r < 0.9:
        return s.paint_name(["beige", "brown", "red", "white", "orange", "yellow"], 20)
    return s.paint_name(["blue", "teal", "olive", "silver", "navy"], 20)


def _car(s: _Scene, x0: float, y0: float, ppu: float) -> None:
    rng = s.rng
    cw, ch = rng.uniform(0.9, 1.15) * ppu, rng.uniform(0.7, 0.95) * ppu
    s = s.crop(x0 - 0.7 * cw, y0 - ch - 1, x0 + 0.7 * cw, y0 + 0.15 * ch + 1)
    if s is None:
        return
    col = s.paint_name(CAR_PAINTS, 15)
    shade = s.noise(max(2.0, ppu / 6), 1)
    # shadow on the ground
    sh = s.ellipse_mask(x0, y0 - 0.02 * ch, 0.62 * cw, 0.09 * ch) & ((s.lab == ROAD) | (s.lab == SIDEWALK))
    s.img[sh] *= 0.45
    xl, xr = x0 - cw / 2, x0 + cw / 2
    body_top, cab_top = y0 - 0.58 * ch, y0 - ch
    r = 0.08 * cw
    body = s.poly_mask(
        [
            (xl, y0 - 0.12 * ch),
            (xl, body_top + r),
            (xl + r, body_top),
            (xr - r, body_top),
            (xr, body_top + r),
            (xr, y0 - 0.12 * ch),
        ]
    )
    tw = rng.uniform(0.55, 0.75)
    cabin = s.poly_mask(
        [
            (xl + 0.06 * cw, body_top + 1),
            (x0 - tw * cw / 2, cab_top),
            (x0 + tw * cw / 2, cab_top),
            (xr - 0.06 * cw, body_top + 1),
        ]
    )
    s.fill(body | cabin, col, CAR, shade, 0.12)
    win = s.poly_mask(
        [
            (xl + 0.12 * cw, body_top - 0.02 * ch),
            (x0 - tw * cw / 2 + 0.05 * cw, cab_top + 0.08 * ch),
            (x0 + tw * cw / 2 - 0.05 * cw, cab_top + 0.08 * ch),
            (xr - 0.12 * cw, body_top - 0.02 * ch),
        ]
    )
    s.fill(
        win & cabin, s.jitter((40, 50, 65), 15) if rng.random() < 0.8 else s.grey(130, 200), CAR, shade, 0.3
    )
    front = rng.random() < 0.3
    light = s.jitter((235, 230, 200) if front else (200, 30, 30), 10)
    lh = max(1.5, 0.1 * ch)
    s.fill(
        s.rect_mask(xl + 0.04 * cw, body_top + 0.1 * ch, xl + 0.2 * cw, body_top + 0.1 * ch + lh), light, CAR
    )
    s.fill(
        s.rect_mask(xr - 0.2 * cw, body_top + 0.1 * ch, xr - 0.04 * cw, body_top + 0.1 * ch + lh), light, CAR
    )
    s.fill(
        s.rect_mask(x0 - 0.12 * cw, y0 - 0.36 * ch, x0 + 0.12 * cw, y0 - 0.36 * ch + max(1.5, 0.08 * ch)),
        s.grey(180, 235),
        CAR,
    )
    wheel = s.jitter((25, 25, 28), 6)
    ww = max(2.0, 0.16 * cw)
    s.fill(s.rect_mask(xl + 0.02 * cw, y0 - 0.2 * ch, xl + 0.02 * cw + ww, y0), wheel, CAR)
    s.fill(s.rect_mask(xr - 0.02 * cw - ww, y0 - 0.2 * ch, xr - 0.02 * cw, y0), wheel, CAR)


def _person(s: _Scene, x0: float, y0: float, ppu: float) -> None:
    rng = s.rng
    ph = rng.uniform(0.95, 1.2) * ppu
    pw = max(6.0, s.h / 12, rng.uniform(0.35, 0.45) * ph)
    s = s.crop(x0 - 1.2 * pw - 2, y0 - ph - 2, x0 + 1.2 * pw + 2, y0 + 1)
    if s is None:
        return
    top_col, leg_col = (
        s.paint_name(CLOTHES, 20),
        s.paint_name(["navy", "black", "grey", "beige", "blue", "brown"]),
    )
    # cloth noise plus cylindrical shading across the body
    tex = 0.4 * s.noise(max(1.5, ph / 12), 1) + np.clip(0.5 - ((s.xs - x0) / (0.6 * pw)) ** 2, -0.5, 0.5)
    stride = rng.uniform(0.0, 0.25) * pw
    lw = max(2.0, 0.36 * pw)
    hip = y0 - 0.48 * ph
    s.fill(
        s.poly_mask(
            [(x0 - 0.05 * pw - lw, hip), (x0 - 0.05 * pw, hip), (x0 - stride, y0), (x0 - stride - lw, y0)]
        ),
        leg_col,
        PERSON,
        tex,
        0.3,
    )
    s.fill(
        s.poly_mask(
            [(x0 + 0.05 * pw, hip), (x0 + 0.05 * pw + lw, hip), (x0 + stride + lw, y0), (x0 + stride, y0)]
        ),
        leg_col,
        PERSON,
        tex,
        0.3,
    )
    sh_y = y0 - 0.82 * ph
    torso = s.poly_mask(
        [
            (x0 - pw / 2, sh_y),
            (x0 + pw / 2, sh_y),
            (x0 + 0.45 * pw, hip + 0.04 * ph),
            (x0 - 0.45 * pw, hip + 0.04 * ph),
        ]
    )
    s.fill(torso, top_col, PERSON, tex, 0.3)
    aw = max(1.5, 0.18 * pw)
    for sgn in (-1, 1):
        xa = x0 + sgn * pw / 2
        s.fill(
            s.poly_mask(
                [
                    (xa, sh_y + 0.02 * ph),
                    (xa + sgn * aw, sh_y + 0.02 * ph),
                    (xa + sgn * (aw + rng.uniform(0, 0.15) * pw), y0 - 0.45 * ph),
                    (xa + sgn * rng.uniform(0, 0.15) * pw, y0 - 0.45 * ph),
                ]
            ),
            top_col * 0.9,
            PERSON,
            tex,
            0.12,
        )
    hr = max(2.0, 0.075 * ph)
    s.fill(
        s.ellipse_mask(x0, sh_y - hr * 0.95, hr * 0.85, hr),
        s.jitter(SKIN[int(rng.integers(len(SKIN)))], 10),
        PERSON,
        tex,
        0.08,
    )
    if rng.random() < 0.4:  # hair / hat
        s.fill(
            s.ellipse_mask(x0, sh_y - hr * 1.55, hr * 0.9, hr * 0.5),
            s.paint_name(["black", "brown", "beige"]),
            PERSON,
        )


def _pole(s: _Scene, x0: float, y0: float, ppu: float) -> None:
    rng = s.rng
    height = rng.uniform(2.2, 3.4) * ppu
    pw = max(3.0, s.h / 12, rng.uniform(0.15, 0.22) * ppu)  # >= 10 px at H = 128
    size = max(8.0, s.h / 6, rng.uniform(0.7, 0.9) * ppu)  # sign size, >= 21 px at H = 128
    s = s.crop(x0 - size - 2, y0 - height - 1, x0 + size + 2, y0 + 1)
    if s is None:
        return
    col = s.grey(60, 170) if rng.random() < 0.7 else s.paint_name(["green", "black", "navy", "silver"])
    # cylindrical shading: bright core, dark rims
    shade = np.clip(0.5 - ((s.xs - x0) / (pw / 2)) ** 2, -0.5, 0.5) + 0.15 * s.noise(3, 1)
    s.fill(s.rect_mask(x0 - pw / 2, y0 - height, x0 + pw / 2, y0), col, POLE, shade, 0.5)
    if rng.random() < 0.85:
        n = 1 if rng.random() < 0.7 else 2
        cy = y0 - height + size / 2 + rng.uniform(0, 0.3) * ppu
        for _ in range(n):
            _sign(s, x0, cy, size)
            cy += size * 1.1


def _sign(s: _Scene, cx: float, cy: float, size: float) -> None:
    rng = s.rng
    shape = rng.choice(["circle", "triangle", "rect", "diamond"])
    r = size / 2
    if shape == "circle":
        outer, inner = s.ellipse_mask(cx, cy, r, r), s.ellipse_mask(cx, cy, r * 0.72, r * 0.72)
    elif shape == "triangle":
        outer = s.poly_mask([(cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8), (cx, cy - r)])
        inner = s.poly_mask(
            [(cx - r * 0.6, cy + r * 0.55), (cx + r * 0.6, cy + r * 0.55), (cx, cy - r * 0.5)]
        )
    elif shape == "rect":
        rw = r * rng.uniform(1.0, 1.6)
        outer = s.rect_mask(cx - rw, cy - r * 0.8, cx + rw, cy + r * 0.8)
        inner = s.rect_mask(cx - rw + 1.5, cy - r * 0.8 + 1.5, cx + rw - 1.5, cy + r * 0.8 - 1.5)
    else:
        outer = s.poly_mask([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)])
        inner = s.poly_mask(
            [(cx, cy - r * 0.65), (cx + r * 0.65, cy), (cx, cy + r * 0.65), (cx - r * 0.65, cy)]
        )
    c1, c2 = s.paint_name(SIGN_PAINTS, 15), s.paint_name(["white", "yellow", "blue", "black"], 15)
    s.fill(outer, c1, SIGN)
    s.fill(inner, c2, SIGN)
    if rng.random() < 0.5:  # a symbol
        s.fill(inner & s.rect_mask(cx - r * 0.15, cy - r * 0.4, cx + r * 0.15, cy + r * 0.4), c1 * 0.5, SIGN)


def _tree(s: _Scene, x0: float, y0: float, ppu: float) -> None:
    rng = s.rng
    trunk_h = rng.uniform(0.9, 1.6) * ppu
    tw = max(3.0, s.h / 16, rng.uniform(0.12, 0.18) * ppu)
    rad = rng.uniform(0.6, 1.1) * ppu
    s = s.crop(x0 - 1.4 * rad, y0 - trunk_h - 2.3 * rad, x0 + 1.4 * rad, y0 + 1)
    if s is None:
        return
    s.fill(
        s.rect_mask(x0 - tw / 2, y0 - trunk_h - 0.2 * ppu, x0 + tw / 2, y0),
        s.paint_name(["brown", "grey", "black", "olive"]),
        VEGETATION,
        s.noise(2, 1),
        0.2,
    )
    cy = y0 - trunk_h - rad * 0.7
    canopy = np.zeros((s.h, s.w), bool)
    for _ in range(int(rng.integers(2, 5))):
        canopy |= s.ellipse_mask(
            x0 + rng.uniform(-0.5, 0.5) * rad,
            cy + rng.uniform(-0.5, 0.4) * rad,
            rad * rng.uniform(0.5, 0.85),
            rad * rng.uniform(0.5, 0.85),
        )
    col = s.paint_name(["green", "olive", "green", "green", "green", "orange", "yellow"], 25)
    s.fill(canopy, col, VEGETATION, s.noise(max(1.5, rad / 8), 2), 0.45)


def render_scene(size: Sequence[int], seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene of ``size`` = (H, W): RGB uint8 (H, W, 3), Cityscapes label ids (H, W)."""
    return _render(int(size[0]), int(size[1]), np.random.default_rng(seed))


def generate_synthetic(
    out_dir: str | Path,
    train: int = 300,
    val: int = 50,
    size: Sequence[int] = (128, 256),
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``train`` + ``val`` scenes to ``out_dir`` in the Cityscapes layout.

    ``leftImg8bit/{split}/<city>/<city>_<i:06d>_000019_leftImg8bit.png`` and
    ``gtFine/{split}/<city>/<city>_<i:06d>_000019_gtFine_labelIds.png`` (Cityscapes label ids).
    Deterministic: the same arguments write the same bytes. Returns ``out_dir``.

    ``out_dir`` must be missing or empty, so that two sets never mix; ``overwrite`` replaces a
    synthetic set written there before (and nothing else: other files are never deleted).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"synthetic size must be at least 32x32, got {h}x{w}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty: choose a new folder, or overwrite the synthetic set there "
                                  "(tools/make_synthetic.py --overwrite)")
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} holds files but no synthetic set ({MARKER} is missing): not deleting them")
        for name in ("leftImg8bit", "gtFine"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MARKER).unlink()
    jobs = [("train", 0, i) for i in range(int(train))] + [("val", 1, i) for i in range(int(val))]
    for split in ("train", "val"):
        city = SPLIT_CITIES[split]
        (out / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (out / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
    for split, sid, i in tqdm(
        jobs, desc=f"synthetic scenes -> {out}", unit="img", disable=not progress, dynamic_ncols=True
    ):
        img, lab = _render(h, w, np.random.default_rng([int(seed), sid, i]))
        city = SPLIT_CITIES[split]
        stem = f"{city}_{i:06d}_000019"
        write_png(out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
        write_png(out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
    meta = {
        "generator": "spxseg.data.synthetic",
        "train": int(train),
        "val": int(val),
        "size": [h, w],
        "seed": int(seed),
        "classes": SYNTHETIC_CLASSES,
    }
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ensure_synthetic(data_cfg) -> bool:
    """Generate the synthetic set into ``data_cfg.root`` if ``data_cfg.synthetic.generate`` is
    true and the root does not exist (or is an empty folder). Returns True when it generated.

    Generation writes to a temporary sibling folder that is renamed into place at the end,
    so an interrupted run never leaves a half-written set at ``root``. Concurrent callers
    (e.g. several DDP ranks) each generate; the first rename wins, the others discard.
    """
    from spxseg.config import data_config

    cfg = data_config(data_cfg)
    syn = cfg.synthetic
    root = Path(cfg.root)
    empty_folder = root.is_dir() and not any(root.iterdir())  # counts as missing
    if not syn.generate or (root.exists() and not empty_folder):
        return False  # not asked for, or already there
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        generate_synthetic(tmp, syn.train, syn.val, tuple(syn.size), syn.seed)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():
                raise
            return False  # another process finished first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True
