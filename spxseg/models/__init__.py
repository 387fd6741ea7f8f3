"""Model components: backbone, pixel decoder, superpixel ops, tokenizer, transformer, the model, peers."""

from spxseg.models.factory import ARCHITECTURES, build_model
from spxseg.models.loss import LossTerms, model_loss, segmentation_loss, superpixel_targets
from spxseg.models.peer_decoders import DenseOutput, PeerSegmenter
from spxseg.models.spx_transformer import SegOutput, SuperpixelSegmenter

__all__ = [
    "ARCHITECTURES", "DenseOutput", "LossTerms", "PeerSegmenter", "SegOutput", "SuperpixelSegmenter", "build_model",
    "model_loss", "segmentation_loss", "superpixel_targets",
]
