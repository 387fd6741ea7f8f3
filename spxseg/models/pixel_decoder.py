"""Light hypercolumn decoder: backbone stages -> pixel features at stride s."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PixelDecoder(nn.Module):
    """1x1 projection of each stage, upsampled and summed down to stride ``s``, then one 3x3 conv-BN-ReLU.

    The sum runs top-down (coarsest first, upsampling the running sum to the next stage's size), so
    only one upsampling happens at the full stride-``s`` size. The 3x3 conv is depthwise-separable
    by default (``fuse_conv: separable``): at stride 4 a dense 3x3 conv costs more than the rest of
    the decoder and the head together, for little accuracy; ``full`` gives the dense one.
    """

    def __init__(self, in_channels: list[int], channels: int, fuse_conv: str = "separable") -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        if fuse_conv == "separable":
            conv = [
                nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
            ]
        elif fuse_conv == "full":
            conv = [nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
        else:
            raise ValueError(f"model.fuse_conv must be 'separable' or 'full', got {fuse_conv!r}")
        self.fuse = nn.Sequential(*conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Stage maps (B, C_i, h_i, w_i), finest first -> pixel features (B, C, h, w) at ``size``."""
        out = self.lateral[-1](feats[-1])
        for proj, feat in zip(self.lateral[-2::-1], feats[-2::-1]):
            out = proj(feat) + F.interpolate(out, size=feat.shape[-2:], mode="bilinear", align_corners=False)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return self.fuse(out)
