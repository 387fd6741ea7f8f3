"""The objects of a synthetic street scene, each drawn standing on the ground.

Every ``draw_*(s, x0, y0, ppu)`` draws on a window of the :class:`~.canvas.Scene` ``s`` around its
contact point (``x0``, ``y0``) at ``ppu`` pixels per camera height (the scale at its depth).
"""

from __future__ import annotations

import numpy as np

from .canvas import CAR, CAR_PAINTS, CLOTHES, PERSON, POLE, ROAD, SIDEWALK, SIGN, SIGN_PAINTS, SKIN, VEGETATION, Scene


def facade_colour(s: Scene) -> np.ndarray:
    r = s.rng.random()
    if r < 0.5:
        return s.grey(60, 200)
    if r < 0.9:
        return s.paint_name(["beige", "brown", "red", "white", "orange", "yellow"], 20)
    return s.paint_name(["blue", "teal", "olive", "silver", "navy"], 20)


def draw_car(s: Scene, x0: float, y0: float, ppu: float) -> None:
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


def draw_person(s: Scene, x0: float, y0: float, ppu: float) -> None:
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


def draw_pole(s: Scene, x0: float, y0: float, ppu: float) -> None:
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
            draw_sign(s, x0, cy, size)
            cy += size * 1.1


def draw_sign(s: Scene, cx: float, cy: float, size: float) -> None:
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


def draw_tree(s: Scene, x0: float, y0: float, ppu: float) -> None:
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
