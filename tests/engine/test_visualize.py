"""The legend strip of the demo panels."""

from __future__ import annotations

import numpy as np

from spxseg.engine.visualize import legend


def test_legend_shows_every_swatch_whatever_the_wrapping() -> None:
    names = [f"class {'x' * k}" for k in range(12)]
    palette = [(10 * k + 5, 200 - 10 * k, 40) for k in range(12)]
    for width in range(60, 420, 7):  # many wrap points, including entries that end right at the edge
        strip = legend(names, palette, width=width)
        assert strip.shape[1] == width
        for color in palette:
            assert (strip == np.array(color, np.uint8)).all(-1).any(), (width, color)
