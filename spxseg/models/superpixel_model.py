"""The superpixel transformer for semantic segmentation (Zhu, Mei et al., IROS 2023).

backbone -> pixel features at stride s -> superpixel tokenizer (local cross-attention) ->
global transformer over superpixels -> superpixel classes -> pixel class probabilities as the
association-weighted mixture of the 9 neighbouring superpixels' class distributions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.config import ModelConfig
from spxseg.models import superpixel_ops as ops
from spxseg.models.backbone import Backbone, freeze_bn_statistics
from spxseg.models.fine_association import FineAssociation
from spxseg.models.global_transformer import GlobalTransformer
from spxseg.models.pixel_decoder import PixelDecoder
from spxseg.models.resample_argmax import resample_argmax, source_axis, upsample_argmax
from spxseg.models.tokenizer import SuperpixelTokenizer


class SegOutput(NamedTuple):
    """Result of a forward pass for images (B, 3, H, W).

    probs: (B, K, H, W) class probabilities (each pixel sums to 1).
    sp_logits: (B, K, Gh, Gw) superpixel class logits.
    assoc: (B, 9, h, w) final pixel-superpixel association at the projection stride (``model.stride``: the
        pixel stride s, or ``model.projection_stride``) over the padded grid (h = Gh * cell, w = Gw * cell with
        ``model.cell``, the cell at that stride); ``project(assoc, sp_logits.softmax(1))`` gives the
        probabilities at that stride.
    superpixels: (B, H, W) int64 hard superpixel id (row-major index into the Gh x Gw grid).
    aux_logits: (B, K, h, w) logits of the auxiliary pixel classifier at stride s (padded grid), in training
        with ``model.loss.aux_pixel_weight`` > 0 only; None otherwise (it is a training signal, not a prediction).
    layer_probs: (L-1, B, K, H, W) the class probabilities of each global-transformer layer but the last, its
        tokens classified by the same classifier and projected through the same association; in training with
        ``model.loss.layer_weight`` > 0 and two or more layers only (deep supervision); None otherwise.
    layer_sp_logits: (L-1, B, K, Gh, Gw) those layers' superpixel class logits, with ``layer_probs``.
    """

    probs: Tensor
    sp_logits: Tensor
    assoc: Tensor
    superpixels: Tensor
    aux_logits: Tensor | None = None
    layer_probs: Tensor | None = None
    layer_sp_logits: Tensor | None = None


class Prediction(NamedTuple):
    """Result of :meth:`SuperpixelModel.predict` (and of the peers' ``predict``).

    labels: (B, H, W) int64 class per pixel, ``argmax`` of the class probabilities.
    superpixels: (B, H, W) int64 hard superpixel id, or None when not asked for.
    """

    labels: Tensor
    superpixels: Tensor | None


class CoarseOutput(NamedTuple):
    """The model's output before any full-resolution map: probs (B, K, h, w) at the projection stride f (the
    model's ``stride``) over the padded grid (channels-last in memory), sp_logits (B, Gh, Gw, K), assoc
    (B, Gh, Gw, 9, n) in cell layout and the image size that grid covers, (Hp, Wp) = (h * f, w * f) >= (H, W)
    (not the backbone's padded input: whole cells, not multiples of its stride); aux_logits as in
    :class:`SegOutput`; layer_probs (L-1, B, K, h, w) and layer_sp_logits (L-1, B, Gh, Gw, K) as ``probs`` and
    ``sp_logits`` for each transformer layer but the last (deep supervision, see :class:`SegOutput`), or None."""

    probs: Tensor
    sp_logits: Tensor
    assoc: Tensor
    padded: tuple[int, int]
    aux_logits: Tensor | None = None
    layer_probs: Tensor | None = None
    layer_sp_logits: Tensor | None = None


class SuperpixelModel(nn.Module):
    """The whole superpixel transformer: images (B, 3, H, W) -> :class:`SegOutput` (ARCHITECTURE.md, Model math).

    Submodules ``backbone``, ``pixel_decoder``, ``tokenizer``, ``transformer`` (the
    :class:`~spxseg.models.global_transformer.GlobalTransformer`) and ``classifier``; these attribute
    names are the checkpoints' state-dict prefixes and the profiler's stage names. With
    ``model.loss.aux_pixel_weight`` > 0 also ``aux_classifier``, a 1x1 conv on the pixel features that only
    training runs; with ``model.projection_stride`` finer than the pixel stride or ``model.reassociate`` also
    ``fine_association`` (after the transformer, keys from its tokens, with ``model.reassociate``). With
    ``model.loss.layer_weight`` > 0, training also classifies every transformer layer but the last through the
    same classifier and association (``SegOutput.layer_probs``, deep supervision).

    ``stride`` and ``cell`` are those of the final association, which the outputs are at (the pixel stride
    and ``model.cell`` unless ``model.projection_stride``); ``pixel_stride`` and ``pixel_cell`` the tokenizer's.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_sizes(cfg)
        self.cfg = cfg
        self.pixel_stride, self.pixel_cell = cfg.pixel_stride, cfg.cell
        self.stride = cfg.association_stride
        self.cell = cfg.cell * cfg.pixel_stride // self.stride
        self.backbone = Backbone(cfg.backbone, min_stride=self.stride)
        # stages finer than the pixel features feed the fine association only
        self.num_fine = sum(r < cfg.pixel_stride for r in self.backbone.strides)
        coarse_channels, coarse_strides = self.backbone.channels[self.num_fine:], self.backbone.strides[self.num_fine:]
        self.pixel_decoder = PixelDecoder(coarse_channels, cfg.channels, cfg.fuse_conv, cfg.fuse_layers,
                                          coarse_strides, cfg.context_convs)
        self.fine_association = None
        if self.stride != cfg.pixel_stride:
            fine = self.backbone.strides[: self.num_fine]
            expected = [self.stride * 2**i for i in range(int(math.log2(cfg.pixel_stride // self.stride)))]
            if fine != expected:
                raise ValueError(f"model.projection_stride={cfg.projection_stride}: needs backbone stages at strides "
                                 f"{expected} below model.pixel_stride={cfg.pixel_stride}; {cfg.backbone.name} has "
                                 f"{self.backbone.strides}")
        self.reassociate = cfg.reassociate
        if self.stride != cfg.pixel_stride or cfg.reassociate:
            key_channels = cfg.transformer.dim if cfg.reassociate else cfg.channels
            self.fine_association = FineAssociation(self.backbone.channels[: self.num_fine], cfg.channels,
                                                    cfg.projection_channels, key_channels)
        tok = cfg.tokenizer
        self.tokenizer = SuperpixelTokenizer(cfg.channels, tok.iters, tok.heads, tok.dual_path, tok.ffn_ratio,
                                             cfg.cell, tok.position_bias, tok.shared_qk, tok.final_pool,
                                             tok.layer_scale)
        tr = cfg.transformer
        self.cell_max = tr.cell_max
        # the backbone's two coarsest stages on the superpixel grid, into the tokens (model.transformer.backbone_skip)
        skip_channels = sum(self.backbone.channels[-2:]) if tr.backbone_skip else 0
        self.skip_norm = nn.LayerNorm(skip_channels) if skip_channels else None
        token_channels = cfg.channels * (2 if tr.cell_max else 1) + skip_channels
        self.transformer = GlobalTransformer(token_channels, tr.dim, tr.layers, tr.heads,
                                             tr.mlp_ratio, tr.dropout, tr.layer_scale, tr.drop_path, tr.qk_norm)
        self.classifier = nn.Linear(tr.dim, cfg.num_classes)
        self.aux_classifier = nn.Conv2d(cfg.channels, cfg.num_classes, 1) if cfg.loss.aux_pixel_weight > 0 else None
        # training only, through the classifier and association above: no weights of its own
        self.deep_supervision = cfg.loss.layer_weight > 0
        # the backbone's input is padded to a multiple of its coarsest stride (as the peers' is; model.pad_input),
        # and its stride-s features are cut or zero-padded to whole cells over the image (coarse): padding the image
        # to both at once (lcm(12, 32) = 96 for spx_lite0_mid) ran 180x240 as 192x288, 84 of its 384 superpixels
        # on padding only
        self.size_multiple = self.backbone.max_stride if cfg.pad_input else 1
        self._init_head_weights()

    def _init_head_weights(self) -> None:
        for name, module in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> nn.Module:
        """``nn.Module.train``, keeping the backbone's BatchNorm statistics frozen with ``model.backbone.freeze_bn``."""
        super().train(mode)
        if mode and self.cfg.backbone.freeze_bn:
            freeze_bn_statistics(self.backbone)
        return self

    def forward(self, images: Tensor) -> SegOutput:
        """images (B, 3, H, W), normalised, any H, W >= 32.

        Static shapes for a given input size, no host-device synchronisation, no data-dependent
        control flow: compiles without graph breaks and replays under CUDA graphs.
        """
        height, width = images.shape[-2:]
        coarse = self.coarse(images)
        probs = _full_probs(coarse.probs, coarse.padded, height, width)
        if torch.is_grad_enabled():  # a user's own loss (nll_loss's backward) needs the documented NCHW layout
            probs = probs.contiguous()
        layer_probs = layer_sp_logits = None
        if coarse.layer_probs is not None:
            layer_probs = torch.stack([_full_probs(p, coarse.padded, height, width) for p in coarse.layer_probs])
            layer_sp_logits = coarse.layer_sp_logits.permute(0, 1, 4, 2, 3)
        return SegOutput(
            probs=probs,
            sp_logits=coarse.sp_logits.permute(0, 3, 1, 2),
            assoc=ops.assoc_from_cells(coarse.assoc, self.cell),
            superpixels=self._hard_ids(coarse.assoc)[:, :height, :width],
            aux_logits=coarse.aux_logits,
            layer_probs=layer_probs,
            layer_sp_logits=layer_sp_logits,
        )

    def predict(self, images: Tensor, superpixels: bool = False, size: tuple[int, int] | None = None
                ) -> Prediction:
        """The lean inference path: label map (B, H', W') int64, and the superpixel map only when asked.

        ``argmax(forward(images).probs)`` without writing the full-resolution probabilities
        (:func:`~spxseg.models.resample_argmax.upsample_argmax` gives the same labels from the stride-s
        map) and without the association or hard ids unless ``superpixels``. ``size`` (H', W') resamples
        the stride-s probabilities straight to another output size, in one bilinear step (``forward``
        followed by a resize would take two); default: the input size. Compiled or exported, the labels
        come from the plain resize and argmax (static shapes), which the compiler fuses.
        """
        height, width = images.shape[-2:]
        out_h, out_w = (height, width) if size is None else (int(size[0]), int(size[1]))
        coarse = self.coarse(images)
        if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            probs = _full_probs(coarse.probs, coarse.padded, height, width)
            if (out_h, out_w) != (height, width):
                probs = F.interpolate(probs, size=(out_h, out_w), mode="bilinear", align_corners=False)
            labels = probs.argmax(1)
        elif (out_h, out_w) == (height, width):
            labels = upsample_argmax(coarse.probs, self.stride, (height, width))
        else:
            scale = (height / (out_h * self.stride), width / (out_w * self.stride))
            labels = resample_argmax(coarse.probs, (out_h, out_w), scale)
        ids = None
        if superpixels:
            ids = self._hard_ids(coarse.assoc)[:, :height, :width]
            if (out_h, out_w) != (height, width):
                ids = F.interpolate(ids[:, None].float(), size=(out_h, out_w), mode="nearest")[:, 0].long()
        return Prediction(labels, ids)

    def coarse(self, images: Tensor) -> CoarseOutput:
        """Everything up to the class probabilities at stride s: what ``forward`` and ``predict`` share (and
        what a custom head or a benchmark of the output stage starts from)."""
        b, _, height, width = images.shape
        x = pad_to_multiple(images, self.size_multiple)
        # the superpixel grid covers the stride-s pixels that cover the image, rounded up to whole cells
        stride, cell = self.pixel_stride, self.pixel_cell
        gh, gw = -(-height // (stride * cell)), -(-width // (stride * cell))
        h, w = gh * cell, gw * cell
        pad_h, pad_w = h * stride - height, w * stride - width

        # the backbone's stride-s map: ceil(size / s) (its strided convs pad), exact for a padded input
        size = (-(-x.shape[-2] // stride), -(-x.shape[-1] // stride))
        feats = self.backbone(x)
        skip = None
        if self.skip_norm is not None:  # (B, Gh, Gw, C16 + C32), sampled before the pixel decoder's work
            maps, strides = feats[-2:], self.backbone.strides[-2:]
            skip = self.skip_norm(sample_on_grid(maps, strides, stride * cell, gh, gw))
        fine_feats, feats = feats[: self.num_fine], feats[self.num_fine :]
        pix_map = _crop_or_pad(self.pixel_decoder(feats, size), h, w)  # (B, C, h, w), channels-last
        aux_logits = self.aux_classifier(pix_map) if self.training and self.aux_classifier is not None else None
        pix = ops.to_cells(pix_map, cell)  # (B, Gh, Gw, n, C)
        # validity of the stride-s pixels: only needed (and only computed) when the input was padded
        valid = self._valid_cells(height, width, h, w, images).expand(b, -1, -1, -1, -1) if pad_h or pad_w else None
        sp, assoc, pix = self.tokenizer(pix, valid)  # assoc (B, Gh, Gw, 9, n)
        coords = self._pixel_coords(height, width, h, w, images)
        # assoc is float32 (float64 for float64 models); pool through it in that precision even under autocast:
        # bf16 centroids are off by pixels
        with torch.autocast(images.device.type, enabled=False):
            centroids = ops.pool_cells(assoc if valid is None else assoc * valid, coords.to(assoc.dtype))
        if self.fine_association is not None and not self.reassociate:  # the association the classes go through
            assoc = self.fine_association(pix_map, fine_feats, sp, assoc)
        if self.cell_max:  # [S, max over the cell's image pixels of F]: (B, Gh, Gw, 2C)
            sp = torch.cat([sp, _cell_max(pix, valid)], -1)
        if skip is not None:
            sp = torch.cat([sp, skip.to(sp.dtype)], -1)
        deep = self.training and self.deep_supervision and len(self.transformer.layers) > 1
        tokens = self.transformer(sp.flatten(1, 2), centroids.flatten(1, 2), every_layer=deep)  # (B, N, D)
        layer_tokens = None
        if deep:  # (L, B, N, D): every layer's tokens
            layer_tokens, tokens = tokens[:-1], tokens[-1]
        if self.reassociate:  # the same refinement, keys from the tokens (at stride s without a finer one)
            assoc = self.fine_association(pix_map, fine_feats, tokens.view(b, gh, gw, -1), assoc)
        sp_logits = self.classifier(tokens).view(b, gh, gw, -1)  # (B, Gh, Gw, K)
        probs = self._project(assoc, sp_logits)
        layer_probs = layer_sp_logits = None
        if layer_tokens is not None:
            layer_sp_logits = self.classifier(layer_tokens).view(-1, b, gh, gw, sp_logits.shape[-1])
            layer_probs = torch.stack([self._project(assoc, logits) for logits in layer_sp_logits])
        return CoarseOutput(probs, sp_logits, assoc, (h * stride, w * stride), aux_logits, layer_probs,
                            layer_sp_logits)

    def _project(self, assoc: Tensor, sp_logits: Tensor) -> Tensor:
        """Superpixel class logits (B, Gh, Gw, K) through the association (B, Gh, Gw, 9, n) to the class
        probabilities at the projection stride, (B, K, h, w) channels-last in memory."""
        # assoc is float32 (float64 for float64 models); project in that precision even under autocast:
        # bf16 probabilities do not sum to 1
        with torch.autocast(assoc.device.type, enabled=False):
            sp_probs = sp_logits.to(assoc.dtype).softmax(-1)
            probs = ops.project_cells(assoc, ops.gather_neighbors(sp_probs))  # (B, Gh, Gw, n, K)
        return _cells_to_nhwc(probs, self.cell).permute(0, 3, 1, 2)

    def _valid_cells(self, height: int, width: int, h: int, w: int, like: Tensor) -> Tensor:
        """(1, Gh, Gw, 1, n): 1 where the stride-s pixel covers part of the image, 0 for padding."""
        rows = (torch.arange(h, device=like.device) * self.pixel_stride < height).view(h, 1)
        cols = (torch.arange(w, device=like.device) * self.pixel_stride < width).view(1, w)
        valid = (rows & cols).to(like.dtype).view(1, 1, h, w)
        return ops.to_cells(valid, self.pixel_cell).transpose(-1, -2)

    def _pixel_coords(self, height: int, width: int, h: int, w: int, like: Tensor) -> Tensor:
        """(1, Gh, Gw, n, 2): (y, x) of each stride-s pixel centre, normalised to the image."""
        ys = (torch.arange(h, device=like.device, dtype=torch.float32) + 0.5) * self.pixel_stride / height
        xs = (torch.arange(w, device=like.device, dtype=torch.float32) + 0.5) * self.pixel_stride / width
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, h, w)
        return ops.to_cells(grid.unsqueeze(0), self.pixel_cell)

    def _hard_ids(self, assoc: Tensor) -> Tensor:
        """Hard superpixel id per image pixel (B, Hp, Wp) from the association (B, Gh, Gw, 9, n)."""
        gh, gw = assoc.shape[1:3]
        # argmax over a contiguous innermost axis: several times faster on CPU than over axis -2
        j = assoc.transpose(-1, -2).contiguous().argmax(-1)  # (B, Gh, Gw, n)
        gy = torch.arange(gh, device=assoc.device).view(1, gh, 1, 1)
        gx = torch.arange(gw, device=assoc.device).view(1, 1, gw, 1)
        ids = (gy + torch.div(j, 3, rounding_mode="floor") - 1) * gw + gx + j % 3 - 1
        ids = ops.from_cells(ids.unsqueeze(-1), self.cell)[:, 0]  # (B, h, w)
        b, h, w = ids.shape
        s = self.stride
        return ids[:, :, None, :, None].expand(b, h, s, w, s).reshape(b, h * s, w * s)


def _full_probs(probs: Tensor, padded: tuple[int, int], height: int, width: int) -> Tensor:
    """Probabilities (B, K, h, w) at the projection stride resized to the padded image size ``padded`` and cropped
    to the image: (B, K, H, W)."""
    # bilinear resize of a channels-last map vectorises over classes (much faster on CPU)
    probs = F.interpolate(probs, size=padded, mode="bilinear", align_corners=False)
    return probs[:, :, :height, :width]


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Zero-pad images (B, 3, H, W) at the bottom and right to H, W multiples of ``multiple`` (a model's
    ``size_multiple``, the backbone's coarsest stride); the input itself when they already are. Predictions
    are cropped back to (H, W)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


def _crop_or_pad(pix: Tensor, h: int, w: int) -> Tensor:
    """Pixel features (B, C, h', w') cut or zero-padded at the bottom and right to (B, C, h, w) (negative pads
    cut), channels-last kept. Both the cut-off rows and the zeros lie outside the image (the validity mask covers
    the zeros)."""
    rows, cols = pix.shape[-2:]
    return pix if (rows, cols) == (h, w) else F.pad(pix, (0, w - cols, 0, h - rows))


def _check_sizes(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the ``model.*`` size that cannot build a model."""
    sizes = {
        "num_classes": cfg.num_classes, "pixel_stride": cfg.pixel_stride, "cell": cfg.cell, "channels": cfg.channels,
        "tokenizer.heads": cfg.tokenizer.heads, "transformer.dim": cfg.transformer.dim,
        "transformer.heads": cfg.transformer.heads,
    }
    for key, value in sizes.items():
        if value < 1:
            raise ValueError(f"model.{key} must be >= 1, got {value}")
    for key, value in {"tokenizer.iters": cfg.tokenizer.iters, "transformer.layers": cfg.transformer.layers}.items():
        if value < 0:  # 0 is an ablation: no local iterations / no global layers
            raise ValueError(f"model.{key} must be >= 0, got {value}")
    for key, value in {"tokenizer.layer_scale": cfg.tokenizer.layer_scale,
                       "transformer.layer_scale": cfg.transformer.layer_scale}.items():
        if not value >= 0:  # also refuses nan
            raise ValueError(f"model.{key} must be >= 0 (0 = off), got {value}")
    if not 0 <= cfg.transformer.drop_path < 1:
        raise ValueError(f"model.transformer.drop_path is a probability in [0, 1) (0 = off), got "
                         f"{cfg.transformer.drop_path}")
    f, s = cfg.projection_stride, cfg.pixel_stride
    if f and (f < 1 or f > s or s % f or (s // f) & (s // f - 1)):
        raise ValueError(f"model.projection_stride must be 0 (the pixel stride) or model.pixel_stride={s} divided by a "
                         f"power of two, got {f}")
    if cfg.loss.layer_weight > 0 and cfg.transformer.layers < 2:
        raise ValueError(f"model.loss.layer_weight={cfg.loss.layer_weight} supervises the global transformer's layers "
                         f"before the last: needs model.transformer.layers >= 2, got {cfg.transformer.layers} "
                         f"(or set model.loss.layer_weight=0)")
    if f and f != s and cfg.projection_channels < 1:
        raise ValueError(f"model.projection_channels must be >= 1, got {cfg.projection_channels}")


def sample_on_grid(maps: list[Tensor], strides: list[int], cell_pixels: int, gh: int, gw: int) -> Tensor:
    """Feature maps sampled bilinearly at the centres of a grid of square cells, concatenated: maps (B, C_i, h_i, w_i)
    at strides r_i -> (B, Gh, Gw, sum C_i), channels-last.

    Cell (i, j) spans ``cell_pixels`` image pixels a side; its centre ((i + 0.5) * cell_pixels in image pixels) is
    at ``(i + 0.5) * cell_pixels / r - 0.5`` in a stride-r map, clamped to the map: PyTorch's bilinear mapping
    (``F.interpolate(m, scale_factor=r / cell_pixels, mode="bilinear")`` cropped to Gh x Gw, which it equals where
    that output is large enough), without sizes having to divide.
    """
    sampled = []
    for m, r in zip(maps, strides, strict=True):
        y0, y1, wy = source_axis(gh, cell_pixels / r, m.shape[-2], m.device, m.dtype)
        x0, x1, wx = source_axis(gw, cell_pixels / r, m.shape[-1], m.device, m.dtype)
        rows = torch.lerp(m.index_select(-2, y0), m.index_select(-2, y1), wy.unsqueeze(-1))  # (B, C, Gh, w)
        sampled.append(torch.lerp(rows.index_select(-1, x0), rows.index_select(-1, x1), wx))
    return torch.cat(sampled, 1).permute(0, 2, 3, 1)


def _cell_max(pix: Tensor, valid: Tensor | None) -> Tensor:
    """Channel-wise max of each cell's image pixels: pix (B, Gh, Gw, n, C), valid (B, Gh, Gw, 1, n) or None ->
    (B, Gh, Gw, C). Every cell holds at least one image pixel (the grid is the image's, rounded up to whole
    cells)."""
    if valid is not None:
        pix = pix.masked_fill(valid.transpose(-1, -2) == 0, float("-inf"))
    return pix.amax(-2)


def _cells_to_nhwc(x: Tensor, cell: int) -> Tensor:
    """(B, Gh, Gw, cell*cell, C) -> (B, Gh*cell, Gw*cell, C), contiguous."""
    b, gh, gw, _, c = x.shape
    return x.view(b, gh, gw, cell, cell, c).transpose(2, 3).reshape(b, gh * cell, gw * cell, c)
