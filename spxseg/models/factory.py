"""``build_model``: the architecture named by ``model.architecture``, built from the ``model:`` config."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from torch import nn

from spxseg.config import model_config
from spxseg.models.loss import check_loss_config
from spxseg.models.peer_decoders import PEER_ARCHITECTURES, build_peer
from spxseg.models.superpixel_model import SuperpixelModel

ARCHITECTURES = ("spx", *PEER_ARCHITECTURES)


def build_model(cfg: Any = None) -> nn.Module:
    """Build the model from a :class:`~spxseg.config.ModelConfig`, a whole config, or a (partial) dict.

    ``architecture: spx`` (default) is the superpixel transformer; ``fpn`` / ``deeplabv3plus`` are the
    segmentation-models-pytorch decoders on the same backbone (:mod:`spxseg.models.peer_decoders`).
    """
    cfg = model_config(cfg if cfg is not None else {})
    check_loss_config(cfg.loss, cfg.num_classes)
    if cfg.architecture == "spx":  # its own copy: editing the caller's config later does not change the model
        return SuperpixelModel(copy.deepcopy(cfg))
    if cfg.architecture in PEER_ARCHITECTURES:
        return build_peer(cfg)
    close = difflib.get_close_matches(cfg.architecture, ARCHITECTURES, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"model.architecture: unknown architecture {cfg.architecture!r}{hint} "
                     f"(choose from {', '.join(ARCHITECTURES)})")


def has_superpixels(model: nn.Module) -> bool:
    """Whether ``model`` is the superpixel transformer (its output has superpixels), not a peer decoder."""
    return isinstance(model, SuperpixelModel)
