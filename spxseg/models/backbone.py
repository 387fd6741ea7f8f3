"""timm feature backbones: creation, offline weights, and the input normalisation they expect."""

from __future__ import annotations

import difflib

import timm
from torch import Tensor, nn

from spxseg.config import BackboneConfig
from spxseg.models.weights import load_backbone_weights


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` for a name timm does not know, with the closest ones."""
    if not timm.is_model(name):  # also accepts pretrained tags (resnet50.a1_in1k)
        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.5)
        raise ValueError(f"model.backbone.name: unknown timm model '{name}'; similar: {close}")


def input_normalization(name: str) -> tuple[list[float], list[float]]:
    """(mean, std) on the 0-255 RGB scale that the backbone's ImageNet weights were trained with.

    From timm's pretrained config for ``name`` (``tf_efficientnet_lite0``: 127.5 / 127.5; ResNets:
    the ImageNet statistics); timm's ImageNet default for a model without one.
    """
    check_backbone_name(name)
    try:
        pcfg = timm.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):  # a name timm builds but has no pretrained config for
        pcfg = None
    # timm's own default for models without a pretrained config
    mean = getattr(pcfg, "mean", None) or timm.data.IMAGENET_DEFAULT_MEAN
    std = getattr(pcfg, "std", None) or timm.data.IMAGENET_DEFAULT_STD
    return [round(255.0 * m, 4) for m in mean], [round(255.0 * s, 4) for s in std]


def create_features(cfg: BackboneConfig, **kwargs) -> nn.Module:
    """``timm.create_model(cfg.name, features_only=True, **kwargs)`` with the weights ``cfg`` asks for.

    ``cfg.checkpoint``: a local timm-format or EfficientNet-PyTorch file, loaded strictly
    (:func:`~spxseg.models.weights.load_backbone_weights`), offline. ``cfg.pretrained``: timm's
    ImageNet weights (downloads them). Neither: random weights.
    """
    check_backbone_name(cfg.name)
    if cfg.out_indices is not None:
        kwargs["out_indices"] = tuple(cfg.out_indices)
    try:
        body = timm.create_model(cfg.name, features_only=True, pretrained=cfg.pretrained and not cfg.checkpoint,
                                 **kwargs)
    except IndexError as err:  # timm indexes its stage list with out_indices
        raise ValueError(f"model.backbone.out_indices {list(cfg.out_indices or [])} is out of range for "
                         f"{cfg.name}: {err}") from None
    if cfg.checkpoint:
        load_backbone_weights(body, cfg.checkpoint)
    return body


def freeze_bn_statistics(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode: normalise with the running (ImageNet) statistics and
    stop updating them. Their affine weights keep their ``requires_grad``: they still train. timm's fused
    ``BatchNormAct2d`` is a BatchNorm2d subclass, so it is covered."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class Backbone(nn.Module):
    """A timm model with ``features_only=True``, keeping the stages at stride >= ``min_stride``.

    Weights: random by default; ImageNet weights through timm with ``pretrained``; or a local
    file with ``checkpoint`` (see :func:`create_features`), which works offline.
    """

    def __init__(self, cfg: BackboneConfig, min_stride: int = 4) -> None:
        super().__init__()
        self.body = create_features(cfg)
        reductions = self.body.feature_info.reduction()
        channels = self.body.feature_info.channels()
        # stages finer than the pixel features cost a lot and add little: skip them
        self.keep = [i for i, r in enumerate(reductions) if r >= min_stride]
        if not self.keep:
            raise ValueError(f"backbone {cfg.name} has no stage at stride >= {min_stride} (strides {reductions})")
        self.strides = [reductions[i] for i in self.keep]
        self.channels = [channels[i] for i in self.keep]
        # transformer backbones (swin, ...) hand their stages over channels-last: (B, H, W, C)
        self.nhwc = getattr(self.body, "output_fmt", "NCHW") == "NHWC"  # timm's Format is a str enum

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> one (B, C_i, H / r_i, W / r_i) map per kept stage."""
        feats = self.body(x)
        if self.nhwc:  # the same tensors, viewed (B, C, h, w): channels-last in memory, no copy
            return [feats[i].permute(0, 3, 1, 2) for i in self.keep]
        return [feats[i] for i in self.keep]
