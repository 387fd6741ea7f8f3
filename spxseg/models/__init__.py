"""Model components: backbone, pixel decoder, superpixel ops, tokenizer, global transformer, the model, peers."""

from spxseg.models.factory import ARCHITECTURES, build_model
from spxseg.models.loss import LossTerms, model_loss, segmentation_loss, superpixel_targets
from spxseg.models.peer_decoders import DenseOutput, PeerModel
from spxseg.models.superpixel_model import Prediction, SegOutput, SuperpixelModel

__all__ = [
    "ARCHITECTURES", "DenseOutput", "LossTerms", "PeerModel", "Prediction", "SegOutput", "SuperpixelModel",
    "build_model", "model_loss", "segmentation_loss", "superpixel_targets",
]
