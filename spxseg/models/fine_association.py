"""The final association at a finer stride than the tokenizer's pixels (``model.projection_stride``).

The tokenizer cuts the stride-s pixel features into superpixels; each pixel's class distribution is the
association-weighted mixture of its 9 neighbouring superpixels' classes. At stride s that mixture is then
resized to the image, so a boundary can be no sharper than an s x s block: on CamVid val at 180x240, labels
kept at one class per 8x8 block score 70.0 mIoU against the full labels (poles 2.2), per 4x4 block 81.0 (poles
29.0), per 2x2 block 89.2 (each block's most frequent class, upsampled by repetition).

This module computes that last association at a finer stride f instead: the stride-s pixel features plus
the backbone's stages at strides f to s/2 (1x1 projections to a narrow width, top-down as the pixel decoder
sums its stages) are each pixel's query; the superpixels' keys are a projection of the tokenizer's tokens.
The superpixels and their classes are unchanged; only where their classes land is finer. A projection
stride of f keeps the grid: a cell of ``cell`` stride-s pixels holds ``cell * s / f`` stride-f pixels per side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.models import superpixel_ops as ops


class FineAssociation(nn.Module):
    """Pixels at stride f against the tokenizer's superpixels: the association the classes are projected through.

    Args:
        stage_channels: channels of the backbone stages at strides f, 2f, ..., s/2, finest first.
        channels: C, width of the stride-s pixel features and of the superpixels.
        dim: width of the fine pixel features and of the keys (``model.projection_channels``).
    """

    def __init__(self, stage_channels: list[int], channels: int, dim: int) -> None:
        super().__init__()
        self.top = nn.Conv2d(channels, dim, 1)  # the stride-s pixel features
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in stage_channels)
        self.query_norm = nn.LayerNorm(dim)
        self.key = nn.Linear(channels, dim)
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

    def forward(self, pix: Tensor, stages: list[Tensor], sp: Tensor, cell: int) -> Tensor:
        """The fine association, neighbour-major (B, Gh, Gw, 9, cell²), float32 (float64 for float64 models).

        Args:
            pix, stages: as :meth:`pixel_features`.
            sp: (B, Gh, Gw, C) the tokenizer's superpixels.
            cell: the cell size at stride f, ``model.cell * s / f``.
        """
        gh, gw = sp.shape[1:3]
        query = self.query_norm(ops.to_cells(self.pixel_features(pix, stages), cell))  # (B, Gh, Gw, n, dim)
        key = self.key_norm(self.key(sp)) * query.shape[-1] ** -0.5  # (B, Gh, Gw, dim)
        acc = torch.promote_types(query.dtype, torch.float32)
        logits = ops.neighbor_logits_cells(query, ops.gather_neighbors(key), ops.neighbor_valid(gh, gw, sp.device))
        # softmax over the 9 neighbours in float32, as the tokenizer's: bf16 logits lose the small differences
        return logits.to(acc).softmax(-2)
