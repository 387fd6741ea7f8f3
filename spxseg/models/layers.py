"""Small building blocks shared by the tokenizer and the global transformer."""

from __future__ import annotations

from torch import nn


class FeedForward(nn.Sequential):
    """Two-layer MLP ``Linear(dim, dim * ratio) -> GELU -> Dropout -> Linear(dim)``: (..., dim) -> (..., dim).

    The position-wise FFN of both the tokenizer iterations and the global encoder layers (see
    ARCHITECTURE.md, Superpixel tokenizer and Global transformer and classification); its children are
    indexed ``0`` and ``3`` in the state dict, like any ``nn.Sequential``.
    """

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
