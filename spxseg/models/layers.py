"""Small building blocks shared by the tokenizer and the global transformer."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeedForward(nn.Sequential):
    """Two-layer MLP ``Linear(dim, dim * ratio) -> GELU -> Dropout -> Linear(dim)``: (..., dim) -> (..., dim).

    The position-wise FFN of both the tokenizer iterations and the global encoder layers (see
    ARCHITECTURE.md, Superpixel tokenizer and Global transformer and classification); its children are
    indexed ``0`` and ``3`` in the state dict, like any ``nn.Sequential``.
    """

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


def layer_scale_vector(dim: int, start: float) -> nn.Parameter | None:
    """A LayerScale vector: ``dim`` learned per-channel scales of a residual update, all starting at ``start``
    (Touvron et al., "Going deeper with image transformers", 2021); None when ``start`` is 0 (off, no parameters)."""
    return nn.Parameter(torch.full((dim,), start)) if start > 0 else None


def scaled(update: Tensor, scale: Tensor | None) -> Tensor:
    """A residual update (..., dim) times its LayerScale vector, or as it is without one."""
    return update if scale is None else update * scale
