"""The peer models the profiler compares against, with random weights (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

BASELINES = ("backbone", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large", "segformer_b0", "segformer_b2")


# SegFormer (Xie et al. 2021) MiT-B0 / B2 hyper-parameters, as in the released configs
_SEGFORMER = {
    "segformer_b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "segformer_b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
}


# --------------------------------------------------------------------------- models


class _Logits(nn.Module):
    """Wraps a segmentation model so that it returns class scores (B, K, H, W) at the input size."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "torchvision":
            return self.model(x)["out"]  # torchvision upsamples to the input size itself
        logits = self.model(pixel_values=x).logits  # SegFormer: (B, K, H/4, W/4), upsampled at inference
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_baseline(name: str, num_classes: int, model: nn.Module | None = None) -> nn.Module:
    """A comparison model with random weights and ``num_classes`` classes; never downloads anything.

    ``backbone`` is ``model.backbone`` (our model's own feature extractor) when ``model`` is given.
    """
    if name == "backbone":
        if model is None or not hasattr(model, "backbone"):
            raise ValueError("the 'backbone' baseline needs our model")
        return model.backbone
    if name in ("deeplabv3_resnet50", "lraspp_mobilenet_v3_large"):
        import torchvision.models.segmentation as seg

        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
        if name == "deeplabv3_resnet50":
            kwargs["aux_loss"] = False
        return _Logits(getattr(seg, name)(**kwargs), "torchvision")
    if name in _SEGFORMER:
        try:
            from transformers import SegformerConfig, SegformerForSemanticSegmentation
        except ImportError as err:
            raise ImportError(f"baseline {name} needs the transformers package: pip install 'spxseg[bench]' "
                              f"(or pip install transformers); {err}") from None
        config = SegformerConfig(num_labels=num_classes, **_SEGFORMER[name])
        return _Logits(SegformerForSemanticSegmentation(config), "segformer")
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def available_baselines() -> list[str]:
    """Baselines whose packages are installed."""
    names = list(BASELINES[:3])
    try:
        import transformers  # noqa: F401

        names += list(_SEGFORMER)
    except ImportError:
        pass
    return names
