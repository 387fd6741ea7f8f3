"""Label maps from coarse class scores without writing the resized score map: bilinear resize fused with argmax.

Our model predicts class probabilities at stride s; the label map is the argmax of their bilinear
resize to the output size. Writing that resize costs K floats per output pixel (11 classes at 360x480:
7.6 MB) to keep one integer. :func:`resample_argmax` gives the same labels from the coarse map:

* A bilinear sample is a convex combination of its 4 source pixels. When all 4 have the same argmax
  class c, c is also the argmax of the sample (``v_i[c] >= v_i[k]`` for every source i, so the weighted
  sums keep the order; with positive weights an exact tie would already have moved the sources'
  argmax to the lower class, as ``argmax`` breaks ties). Those pixels, all but the ones near class
  boundaries, take c from an integer gather.
* The others (a few percent of an image) are interpolated exactly, from their 4 gathered source
  vectors, and take the argmax of that.

The result equals ``F.interpolate(..., mode="bilinear", align_corners=False).argmax(1)`` up to float
rounding at near-ties (tested in float64 against it). Its pixel -> source mapping is PyTorch's:
``src = (dst + 0.5) * scale - 0.5``, clamped to the map.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _source_axis(n_out: int, scale: float, n_in: int, device: torch.device, dtype: torch.dtype
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Per output index along one axis: the two source indices (int64) and the weight of the second."""
    pos = ((torch.arange(n_out, device=device, dtype=dtype) + 0.5) * scale - 0.5).clamp(0, n_in - 1)
    first = pos.floor().long()
    second = (first + 1).clamp_max(n_in - 1)
    return first, second, pos - first


def resample_argmax(scores: Tensor, size: tuple[int, int], scale: tuple[float, float]) -> Tensor:
    """argmax over classes of the bilinear resample of ``scores`` to ``size``, without writing the resample.

    Args:
        scores: (B, K, h, w) class scores, any memory format.
        size: (H, W) of the output.
        scale: (sy, sx) source pixels per output pixel (``h / H`` for a plain resize; an upsampling by
            an integer factor s cropped to the image is ``1 / s``).
    Returns:
        (B, H, W) int64 labels.
    """
    b, k, h, w = scores.shape
    out_h, out_w = int(size[0]), int(size[1])
    acc = torch.promote_types(scores.dtype, torch.float32)
    y0, y1, wy = _source_axis(out_h, scale[0], h, scores.device, acc)
    x0, x1, wx = _source_axis(out_w, scale[1], w, scores.device, acc)
    coarse = scores.argmax(1)  # (B, h, w)
    down = (torch.arange(h, device=scores.device) + 1).clamp_max(h - 1)
    right = (torch.arange(w, device=scores.device) + 1).clamp_max(w - 1)
    below = coarse.index_select(1, down)
    # the 2x2 block of source pixels starting at (i, j) shares one argmax class
    same = (coarse == below) & (coarse == coarse.index_select(2, right)) & (coarse == below.index_select(2, right))
    labels = coarse.index_select(1, y0).index_select(2, x0)  # (B, H, W), the class of the first source pixel
    mixed = ~same.index_select(1, y0).index_select(2, x0)
    bi, yi, xi = mixed.nonzero(as_tuple=True)
    if bi.numel():
        nhwc = scores.permute(0, 2, 3, 1).to(acc)  # (B, h, w, K): rows of K classes to gather
        ry0, ry1, rx0, rx1 = y0[yi], y1[yi], x0[xi], x1[xi]
        ly, lx = wy[yi].unsqueeze(1), wx[xi].unsqueeze(1)
        top = torch.lerp(nhwc[bi, ry0, rx0], nhwc[bi, ry0, rx1], lx)
        bottom = torch.lerp(nhwc[bi, ry1, rx0], nhwc[bi, ry1, rx1], lx)
        labels[bi, yi, xi] = torch.lerp(top, bottom, ly).argmax(1)
    return labels
