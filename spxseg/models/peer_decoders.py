"""Standard decoders from segmentation-models-pytorch on our timm backbones, for fair comparisons.

``model.architecture: fpn`` or ``deeplabv3plus`` builds ``smp.FPN`` / ``smp.DeepLabV3Plus`` with the
timm encoder ``tu-<model.backbone.name>`` and the same backbone weights as our model
(``model.backbone.checkpoint``, loaded by the same strict loader, or timm's ImageNet weights with
``pretrained``). They train with pixel cross-entropy (ignore ``model.loss.ignore_index``) through the
same trainer, evaluator and inference modes: their output has the ``probs`` our model returns.
Needs the optional extra: ``pip install 'spxseg[peers]'``.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

from torch import Tensor, nn

from spxseg.config import ModelConfig
from spxseg.models.backbone import check_backbone_name, freeze_bn_statistics
from spxseg.models.resample_argmax import resample_argmax
from spxseg.models.superpixel_model import Prediction, pad_to_multiple
from spxseg.models.weights import load_backbone_weights, load_weights_strict

PEER_ARCHITECTURES = {"fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus"}


class DenseOutput(NamedTuple):
    """Result of a peer decoder for images (B, 3, H, W).

    probs: (B, K, H, W) class probabilities, ``logits.softmax(1)``.
    logits: (B, K, H, W) class scores (what the cross-entropy loss reads).
    """

    probs: Tensor
    logits: Tensor


class PeerModel(nn.Module):
    """An smp decoder on a timm backbone, padding inputs to the encoder's stride like our model does.

    ``backbone`` is the timm feature extractor (``net.encoder.model``), so the optimiser's backbone
    learning rate (:func:`spxseg.engine.optim.param_groups`) and the profiler's ``backbone`` baseline treat it
    as they treat ours.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        try:
            import segmentation_models_pytorch as smp
        except ImportError as err:
            raise ImportError(f"model.architecture={cfg.architecture!r} needs segmentation-models-pytorch: "
                              f"pip install 'spxseg[peers]' ({err})") from None
        check_backbone_name(cfg.backbone.name)
        if cfg.backbone.out_indices is not None:
            raise ValueError(f"model.backbone.out_indices is not used by model.architecture={cfg.architecture!r} "
                             "(smp picks the encoder stages); leave it unset")
        self.cfg = cfg
        arch = getattr(smp, PEER_ARCHITECTURES[cfg.architecture])
        self.net = arch(encoder_name=f"tu-{cfg.backbone.name}", encoder_weights=None, classes=cfg.num_classes)
        if cfg.backbone.pretrained and not cfg.backbone.checkpoint:  # timm's ImageNet weights, as for our model
            import timm

            pretrained = timm.create_model(cfg.backbone.name, features_only=True, pretrained=True)
            load_weights_strict(self.backbone, pretrained.state_dict(), f"timm's {cfg.backbone.name}",
                                "model.backbone.pretrained")
        if cfg.backbone.checkpoint:
            load_backbone_weights(self.backbone, cfg.backbone.checkpoint)
        # FPN merges stages at strides 4..32; DeepLabV3+ has output stride 16 with dilation
        self.size_multiple = 32
        # DeepLabV3+'s image-pooling branch normalises a 1x1 map: in training, one image gives its BatchNorm one
        # value per channel, which it cannot normalise
        self.pooled_norms = [m for seq in self.net.decoder.modules() if isinstance(seq, nn.Sequential)
                             and any(isinstance(c, nn.AdaptiveAvgPool2d) for c in seq)
                             for m in seq if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def backbone(self) -> nn.Module:
        return self.net.encoder.model

    def train(self, mode: bool = True) -> nn.Module:
        """``nn.Module.train``, keeping the backbone's BatchNorm statistics frozen with ``model.backbone.freeze_bn``."""
        super().train(mode)
        if mode and self.cfg.backbone.freeze_bn:
            freeze_bn_statistics(self.backbone)
        return self

    def forward(self, images: Tensor) -> DenseOutput:
        """images (B, 3, H, W), normalised, any H, W >= 32."""
        if images.shape[0] == 1 and any(m.training and not isinstance(m, nn.SyncBatchNorm) for m in self.pooled_norms):
            raise ValueError(f"model.architecture={self.cfg.architecture!r} cannot train on one image per process: "
                             "the BatchNorm of its image-pooling branch sees one value per channel; use "
                             "train.batch_size >= 2, or train.sync_bn under torchrun")
        height, width = images.shape[-2:]
        logits = self.net(pad_to_multiple(images, self.size_multiple))[:, :, :height, :width]
        return DenseOutput(probs=logits.float().softmax(1), logits=logits)

    def predict(self, images: Tensor, superpixels: bool = False, size: tuple[int, int] | None = None) -> Prediction:
        """Label map (B, H', W') int64, as :meth:`SuperpixelModel.predict <spxseg.models.superpixel_model.
        SuperpixelModel.predict>`: the argmax of the logits (no softmax) at the input size, or of the
        probabilities resampled to ``size`` (without writing the resample). There are no superpixels."""
        if superpixels:
            raise ValueError(f"model.architecture={self.cfg.architecture!r} has no superpixels")
        out = self(images)
        height, width = images.shape[-2:]
        if size is None or tuple(size) == (height, width):
            return Prediction(out.logits.argmax(1), None)
        scale = (height / int(size[0]), width / int(size[1]))
        return Prediction(resample_argmax(out.probs, (int(size[0]), int(size[1])), scale), None)


def build_peer(cfg: ModelConfig) -> PeerModel:
    """The peer decoder named by ``cfg.architecture`` (a copy of ``cfg`` is kept on the model)."""
    return PeerModel(copy.deepcopy(cfg))
