"""Model components: backbone, pixel decoder, superpixel ops, tokenizer, transformer, the model."""

from spxseg.models.loss import LossTerms, segmentation_loss, superpixel_targets
from spxseg.models.spx_transformer import SegOutput, SuperpixelSegmenter, build_model

__all__ = ["LossTerms", "SegOutput", "SuperpixelSegmenter", "build_model", "segmentation_loss", "superpixel_targets"]
