"""timm feature backbones."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import Tensor, nn

from spxseg.config import BackboneConfig


class Backbone(nn.Module):
    """A timm model with ``features_only=True``, keeping the stages at stride >= ``min_stride``.

    Weights: random by default; ImageNet weights through timm with ``pretrained``; or a local
    file with ``checkpoint`` (timm's own loader, so classifier keys are dropped), which works
    offline.
    """

    def __init__(self, cfg: BackboneConfig, min_stride: int = 4) -> None:
        super().__init__()
        kwargs: dict = {"features_only": True}
        if cfg.checkpoint:
            path = Path(cfg.checkpoint).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"model.backbone.checkpoint: no such file: {path}")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        else:
            kwargs["pretrained"] = cfg.pretrained
        if cfg.out_indices is not None:
            kwargs["out_indices"] = tuple(cfg.out_indices)
        if not timm.is_model(cfg.name):  # also accepts pretrained tags (resnet50.a1_in1k)
            close = difflib.get_close_matches(cfg.name, timm.list_models(), n=6, cutoff=0.5)
            raise ValueError(f"model.backbone.name: unknown timm model '{cfg.name}'; similar: {close}")
        try:
            self.body = timm.create_model(cfg.name, **kwargs)
        except IndexError as err:  # timm indexes its stage list with out_indices
            raise ValueError(f"model.backbone.out_indices {list(cfg.out_indices or [])} is out of range for "
                             f"{cfg.name}: {err}") from None
        reductions = self.body.feature_info.reduction()
        channels = self.body.feature_info.channels()
        # stages finer than the pixel features cost a lot and add little: skip them
        self.keep = [i for i, r in enumerate(reductions) if r >= min_stride]
        if not self.keep:
            raise ValueError(f"backbone {cfg.name} has no stage at stride >= {min_stride} (strides {reductions})")
        self.strides = [reductions[i] for i in self.keep]
        self.channels = [channels[i] for i in self.keep]

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> one (B, C_i, H / r_i, W / r_i) map per kept stage."""
        feats = self.body(x)
        return [feats[i] for i in self.keep]


def backbone_only(cfg: BackboneConfig) -> nn.Module:
    """The bare timm feature extractor, for comparing latency against the full model."""
    return timm.create_model(cfg.name, features_only=True, pretrained=False)


