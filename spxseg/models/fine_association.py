"""The final association at a finer stride than the tokenizer's pixels (``model.projection_stride``).

The tokenizer cuts the stride-s pixel features into superpixels; each pixel's class distribution is the
association-weighted mixture of its 9 neighbouring superpixels' classes. At stride s that mixture is then
resized to the image, so a boundary can be no sharper than an s x s block: on CamVid val at 180x240, labels
kept at one class per 8x8 block score 70.0 mIoU against the full labels (poles 1.7), per 4x4 block 81.0 (poles
29.3), per 2x2 block 89.1 (each block's most frequent class, repeated: benchmarks/label_resolution.py).

This module computes that last association at a finer stride f instead, as a refinement of the tokenizer's
stride-s association ``A*``: each stride-f pixel starts from the logits of the stride-s pixel it lies in
(``log A*``, the same 9 superpixels: the grid is unchanged) and adds the dot products of its own query with
the superpixels' keys. The query is the stride-s pixel features plus the backbone's stages at strides f to s/2
(1x1 projections to a narrow width, summed top-down as the pixel decoder sums its stages); the keys are a
projection of the tokenizer's superpixels. The superpixels and their classes are unchanged; only where their
classes land is finer. A cell of ``cell`` stride-s pixels holds ``cell * s / f`` stride-f pixels per side.

Without the stride-s logits (the fine dot products alone) the light variant lost road and sidewalk where it
gained pedestrians and bicyclists, and spx_lite0_mid lost 0.6 (CamVid study). With them neither gains beyond the
seeds' spread: that resolution bound is far above both models, and what they miss is mostly recognition
(benchmarks/README.md, a finer projection). Off in every config.

With ``model.reassociate`` the same refinement runs after the global transformer, keys from its tokens instead of
the tokenizer's superpixels (at the pixel stride itself when there is no finer one: no stages, the stride-s
features alone): the tokens have seen the whole image, so a pixel can move towards the neighbour whose global
description fits it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.models import superpixel_ops as ops


class FineAssociation(nn.Module):
    """Pixels at stride f against the tokenizer's superpixels (or the transformer's tokens): the association the
    classes are projected through.

    Args:
        stage_channels: channels of the backbone stages at strides f, 2f, ..., s/2, finest first (none: f = s).
        channels: C, width of the stride-s pixel features and of the superpixels.
        dim: width of the fine pixel features and of the keys (``model.projection_channels``).
        key_channels: width of what the keys are projected from: C for the tokenizer's superpixels (default), the
            transformer's D for its tokens (``model.reassociate``).
    """

    def __init__(self, stage_channels: list[int], channels: int, dim: int, key_channels: int | None = None) -> None:
        super().__init__()
        self.top = nn.Conv2d(channels, dim, 1)  # the stride-s pixel features
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in stage_channels)
        self.query_norm = nn.LayerNorm(dim)
        self.key = nn.Linear(key_channels or channels, dim)
        self.key_norm = nn.LayerNorm(dim)

    def pixel_features(self, pix: Tensor, stages: list[Tensor]) -> Tensor:
        """The fine pixel features (B, dim, h * s / f, w * s / f), channels-last.

        Args:
            pix: (B, C, h, w) stride-s pixel features over whole cells (top-left aligned with the image).
            stages: the backbone's maps at strides f, ..., s/2, finest first, (B, C_i, ~H / r_i, ~W / r_i).
        """
        out = self.top(pix)
        for lateral, feat in zip(reversed(self.lateral), reversed(stages)):
            # stage strides halve: x2 keeps the pixel centres aligned; the stage map is cut or zero-padded to
            # the grid (it covers the backbone's padded input, the grid whole cells over the image)
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
            proj = lateral(feat)
            rows, cols = out.shape[-2:]
            out = out + F.pad(proj, (0, cols - proj.shape[-1], 0, rows - proj.shape[-2]))
        return out.contiguous(memory_format=torch.channels_last)

    def forward(self, pix: Tensor, stages: list[Tensor], sp: Tensor, assoc: Tensor) -> Tensor:
        """The fine association, neighbour-major (B, Gh, Gw, 9, n'), float32 (float64 for float64 models).

        Args:
            pix, stages: as :meth:`pixel_features`.
            sp: (B, Gh, Gw, key_channels) the tokenizer's superpixels, or the transformer's tokens.
            assoc: (B, Gh, Gw, 9, n) the tokenizer's final association at stride s, n = cell²; n' = (cell * s / f)²
                (n' = n without stages).
        """
        b, gh, gw = assoc.shape[:3]
        feats = self.pixel_features(pix, stages)
        cell, ratio = feats.shape[-2] // gh, feats.shape[-2] // pix.shape[-2]  # fine cell, s / f
        coarse = cell // ratio  # the stride-s cell
        query = self.query_norm(ops.to_cells(feats, cell))  # (B, Gh, Gw, n', dim)
        key = self.key_norm(self.key(sp)) * query.shape[-1] ** -0.5  # (B, Gh, Gw, dim)
        acc = torch.promote_types(query.dtype, torch.float32)
        dots = ops.neighbor_logits_cells(query, ops.gather_neighbors(key), ops.neighbor_valid(gh, gw, sp.device))
        # each stride-f pixel starts from its stride-s pixel's log A* (-inf outside the grid, as the dots)
        prior = assoc.clamp_min(1e-30).log().view(b, gh, gw, 9, coarse, 1, coarse, 1)
        prior = prior.expand(-1, -1, -1, -1, -1, ratio, -1, ratio).reshape(b, gh, gw, 9, cell * cell)
        # softmax over the 9 neighbours in float32, as the tokenizer's: bf16 logits lose the small differences
        return (prior.to(acc) + dots.to(acc)).softmax(-2)
