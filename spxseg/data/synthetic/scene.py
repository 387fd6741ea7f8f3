"""Procedural street scenes with Cityscapes *label ids*: the layout of one scene.

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

Deterministic: the same generator (or seed) draws the same scene; the objects are drawn by
:mod:`.objects` on a :class:`~.canvas.Scene`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .canvas import BUILDING, ROAD, SIDEWALK, SKY, VEGETATION, Scene
from .objects import draw_car, draw_person, draw_pole, draw_tree, facade_colour


def render(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: RGB uint8 (H, W, 3) and Cityscapes label ids uint8 (H, W)."""
    s = Scene(h, w, rng)
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
            col = facade_colour(s)
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
        cols_ = np.stack([facade_colour(v) for _ in range(n)])
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
    draw = {"car": draw_car, "person": draw_person, "pole": draw_pole, "tree": draw_tree}
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

def render_scene(size: Sequence[int], seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene of ``size`` = (H, W): RGB uint8 (H, W, 3), Cityscapes label ids (H, W)."""
    return render(int(size[0]), int(size[1]), np.random.default_rng(seed))


