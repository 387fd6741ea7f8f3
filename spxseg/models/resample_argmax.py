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

:func:`upsample_argmax` is the case our model needs, an upsampling by an even integer factor s (the
pixel stride): every 2x2 block of source pixels then covers the same s x s output pixels with the same
weights, so mixed blocks are interpolated as one small matmul each, (s², 4) x (4, K), instead of
gathering four source vectors per output pixel (3-4x faster on CPU at 360x480, stride 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def source_axis(n_out: int, scale: float, n_in: int, device: torch.device, dtype: torch.dtype
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Per output index along one axis: the two source indices (int64) and the weight of the second (``dtype``).

    Positions are computed in float32 at least: bf16 holds integers exactly only up to 256, past which an index
    rounds up beyond the map (a crash under autocast on wide images) and weights are off by up to a quarter."""
    exact = torch.promote_types(dtype, torch.float32)
    pos = ((torch.arange(n_out, device=device, dtype=exact) + 0.5) * scale - 0.5).clamp(0, n_in - 1)
    first = pos.floor().long()
    second = (first + 1).clamp_max(n_in - 1)
    return first, second, (pos - first).to(dtype)


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
    y0, y1, wy = source_axis(out_h, scale[0], h, scores.device, acc)
    x0, x1, wx = source_axis(out_w, scale[1], w, scores.device, acc)
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


def upsample_argmax(scores: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(scores, scale_factor=factor, mode="bilinear").argmax(1)[:, :H, :W]`` without writing the
    upsampled scores: :func:`resample_argmax` for an even integer ``factor``, a block at a time.

    Args:
        scores: (B, K, h, w) class scores, any memory format.
        factor: s, even (the model's pixel stride); odd factors go through :func:`resample_argmax`.
        size: (H, W) <= (h * s, w * s), the top-left part of the upsampled map to label.
    Returns:
        (B, H, W) int64 labels.
    """
    if factor % 2:
        return resample_argmax(scores, size, (1 / factor, 1 / factor))
    b, k, h, w = scores.shape
    s, half = factor, factor // 2
    # replicate padding is PyTorch's clamping at the borders: output row y sits in block floor((y + s/2) / s)
    # of the padded map, between its rows i and i + 1, at weight (t + 0.5) / s for t = (y + s/2) mod s
    padded = F.pad(scores, (1, 1, 1, 1), mode="replicate")
    coarse = padded.argmax(1)  # (B, h + 2, w + 2)
    first = coarse[:, :-1, :-1]
    same = (first == coarse[:, 1:, :-1]) & (first == coarse[:, :-1, 1:]) & (first == coarse[:, 1:, 1:])
    blocks = first[..., None, None].expand(b, h + 1, w + 1, s, s).clone()  # (B, h + 1, w + 1, s, s)
    bi, yi, xi = (~same).nonzero(as_tuple=True)
    if bi.numel():
        acc = torch.promote_types(scores.dtype, torch.float32)
        nhwc = padded.permute(0, 2, 3, 1).to(acc)  # (B, h + 2, w + 2, K)
        corners = torch.stack([nhwc[bi, yi, xi], nhwc[bi, yi, xi + 1], nhwc[bi, yi + 1, xi],
                               nhwc[bi, yi + 1, xi + 1]], 1)  # (M, 4, K)
        blocks[bi, yi, xi] = (_block_weights(s, scores.device, acc) @ corners).argmax(-1).view(-1, s, s)
    labels = blocks.permute(0, 1, 3, 2, 4).reshape(b, (h + 1) * s, (w + 1) * s)
    return labels[:, half : half + int(size[0]), half : half + int(size[1])]


def _block_weights(s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(s², 4) bilinear weights of the 4 corners (top-left, top-right, bottom-left, bottom-right) for the s x s
    output pixels of one block, row-major."""
    t = (torch.arange(s, device=device, dtype=dtype) + 0.5) / s  # weight of the second row / column
    wy, wx = t.view(s, 1, 1), t.view(1, s, 1)
    return torch.cat([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], -1).reshape(s * s, 4)
