"""Light hypercolumn decoder: backbone stages -> pixel features at stride s."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PixelDecoder(nn.Module):
    """1x1 projection of each stage, upsampled and summed down to stride ``s``, then 3x3 conv-BN-ReLU layers
    (one by default; ``fuse_layers``). With ``context_convs`` = N, the running sum also goes through a dense 3x3
    conv-BN-ReLU at each of the N coarsest stages before it is upsampled.

    The sum runs top-down (coarsest first, upsampling the running sum to the next stage's size), so
    only one upsampling happens at the full stride-``s`` size. The 3x3 conv is depthwise-separable
    by default (``fuse_conv: separable``): at stride 4 with C=128 a dense 3x3 conv costs about twice the
    rest of the decoder (CamVid, Lite0, 360x480, one CPU thread: 48 ms against 12-24). ``full`` gives the
    dense one: on CamVid +0.5 val mIoU at stride 4 for 33 ms (the mid config pays for it with three transformer
    layers fewer) and +1.1 at stride 8, where it costs 3.5 ms (the light config), and much faster convergence. A
    second dense layer (``fuse_layers: 2``) gave +0.2, within seed noise, for 48 ms (benchmarks/README.md).

    Speed: everything runs channels-last (NHWC), whatever the backbone's memory format: each 1x1
    projection is one GEMM that reads the stage map in place and accumulates onto the upsampled
    coarser sum (no separate add, no layout copy of the stage map); bilinear upsampling and the
    depthwise conv vectorise over channels; the cell layout downstream is then a cheap permute. In
    eval mode the BatchNorm is folded into the conv before it.
    """

    def __init__(self, in_channels: list[int], channels: int, fuse_conv: str = "separable", fuse_layers: int = 1,
                 strides: list[int] | None = None, context_convs: int = 0) -> None:
        super().__init__()
        # stage strides, finest first: each running sum is upsampled by the ratio of two strides and cut to the
        # finer map, so that stages of an input that is not a multiple of the coarsest stride (model.pad_input:
        # false; sizes ceil(H / stride)) stay aligned at the top left, where resizing to the finer map's size
        # would stretch the coarse map (it covers more of the image) by up to half a coarse pixel
        self.strides = strides
        if fuse_conv not in ("separable", "full"):
            raise ValueError(f"model.fuse_conv must be 'separable' or 'full', got {fuse_conv!r}")
        if fuse_layers < 1:
            raise ValueError(f"model.fuse_layers must be at least 1, got {fuse_layers}")
        if not 0 <= context_convs < len(in_channels):
            raise ValueError(f"model.context_convs must be in [0, {len(in_channels) - 1}] (the backbone stages coarser "
                             f"than the finest), got {context_convs}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        # a dense 3x3 conv-BN-ReLU on the running sum at each of the ``context_convs`` coarsest stages, before it is
        # upsampled (FPN's per-level 3x3s): context at strides where a dense conv costs little (360x480, padded to
        # 384x480: a stride-32 map is 12x15 pixels, stride 16 24x30, against 96x120 at stride 4); coarsest first
        self.context = nn.ModuleList(_conv_bn_relu(channels, "full") for _ in range(context_convs))
        # fuse_layers > 1: the extra blocks run before ``fuse``, which stays the last one so that the state-dict
        # keys of one-layer checkpoints do not change
        self.pre_fuse = nn.ModuleList(_conv_bn_relu(channels, fuse_conv) for _ in range(fuse_layers - 1))
        self.fuse = _conv_bn_relu(channels, fuse_conv)

    def forward(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Stage maps (B, C_i, h_i, w_i), finest first -> pixel features (B, C, h, w) at ``size``, channels-last."""
        out = self.lateral[-1](feats[-1]).contiguous(memory_format=torch.channels_last)
        for i in range(len(feats) - 2, -1, -1):
            level = len(feats) - 2 - i  # 0 for the coarsest stage's map
            if level < len(self.context):
                out = self._run_block(self.context[level], out)
            proj, feat = self.lateral[i], feats[i]
            # bilinear weights sum to 1, so the bias can go on the small map before upsampling
            coarse = out + proj.bias.view(1, -1, 1, 1).to(out.dtype)
            out = _project_add(feat, proj.weight, self._upsample(coarse, i, feat.shape[-2:]))
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        for block in [*self.pre_fuse, self.fuse]:
            out = self._run_block(block, out)
        return out

    def _upsample(self, coarse: Tensor, i: int, size: tuple[int, int]) -> Tensor:
        """Stage i+1's running sum (B, C, h', w') upsampled onto stage i's map of ``size``."""
        if self.strides is not None:
            ratio = self.strides[i + 1] // self.strides[i]
            rows, cols = coarse.shape[-2] * ratio, coarse.shape[-1] * ratio
            if rows >= size[0] and cols >= size[1]:  # the ceil sizes of strided convs: cut, do not stretch
                up = F.interpolate(coarse, scale_factor=ratio, mode="bilinear", align_corners=False)
                return up if (rows, cols) == tuple(size) else up[:, :, : size[0], : size[1]]
        return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)

    def _run_block(self, block: nn.Sequential, x: Tensor) -> Tensor:
        """One block of :func:`_conv_bn_relu` on x (B, C, h, w); in eval mode with its BatchNorm folded."""
        *convs, bn, act = block
        for conv in convs[:-1]:
            x = conv(x)
        last = convs[-1]
        if self.training or bn.running_var is None:
            return act(bn(last(x)))
        # eval: fold the BatchNorm into the last conv (one pass over the pixel features less)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = last.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if last.bias is not None:
            bias = bias + last.bias * scale
        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        if last.kernel_size == (1, 1) and last.groups == 1 and x.is_contiguous(memory_format=torch.channels_last):
            # a pointwise conv on NHWC pixels is one GEMM over the pixel rows (PyTorch may pick a slow conv here)
            b, c, h, w = x.shape
            rows = F.linear(x.permute(0, 2, 3, 1).reshape(b, h * w, c), weight.flatten(1), bias)
            return act(rows.view(b, h, w, -1).permute(0, 3, 1, 2))
        return act(F.conv2d(x, weight, bias, last.stride, last.padding, last.dilation, last.groups))


def _project_add(x: Tensor, weight: Tensor, acc: Tensor) -> Tensor:
    """``acc + conv1x1(x, weight)`` as one batched GEMM, returned channels-last.

    Args:
        x: (B, Cin, h, w), NCHW or NHWC (read in place through a strided view either way).
        weight: (Cout, Cin, 1, 1).
        acc: (B, Cout, h, w), channels-last.
    """
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, cin)  # a view for both memory formats
    acc_rows = acc.permute(0, 2, 3, 1).reshape(b, h * w, cout)
    mat = weight.view(cout, cin).t().to(rows.dtype).expand(b, cin, cout)
    out = torch.baddbmm(acc_rows.to(rows.dtype), rows, mat)  # (B, h*w, Cout)
    return out.view(b, h, w, cout).permute(0, 3, 1, 2)


def _conv_bn_relu(channels: int, kind: str) -> nn.Sequential:
    """A 3x3 conv (depthwise-separable or dense), BatchNorm and ReLU, channels -> channels."""
    if kind == "separable":
        conv = [
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        ]
    else:
        conv = [nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
    return nn.Sequential(*conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
