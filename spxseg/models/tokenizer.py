"""Superpixel tokenizer: a few local cross-attentions between pixels and a grid of superpixels.

Each iteration is a soft k-means / SSN step written as attention: every pixel attends to the
9 superpixels around its cell (association ``A``), and every superpixel becomes the
association-weighted mean of the pixels that reach it. All tensors are in the cell layout of
:mod:`spxseg.models.superpixel_ops`: pixels (B, Gh, Gw, n, C) with n = cell², superpixels
channels-last (B, Gh, Gw, C).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from spxseg.models import superpixel_ops as ops


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TokenizerIteration(nn.Module):
    """Superpixel-side weights of one iteration (pixel-side projections are shared)."""

    def __init__(self, channels: int, heads: int, ffn_ratio: float, dual_path: bool) -> None:
        super().__init__()
        self.key = nn.Linear(channels, channels)
        self.key_norm = nn.LayerNorm(channels // heads)  # per head, like the query
        self.out = nn.Linear(channels, channels)
        self.ffn_norm = nn.LayerNorm(channels)
        self.ffn = FeedForward(channels, ffn_ratio)
        # superpixels -> pixels (dual path): what each superpixel sends back to its pixels
        self.sp_value = nn.Linear(channels, channels) if dual_path else None
        self.pix_out = nn.Linear(channels, channels) if dual_path else None


class SuperpixelTokenizer(nn.Module):
    """Turns pixel features into superpixel tokens and their final association.

    Args:
        channels: C, width of the pixel features and of the superpixels.
        iters: T, number of local cross-attention iterations.
        heads: attention heads of the iterations (the final association is single-head).
        dual_path: also update the pixel features from the superpixels each iteration.
    """

    def __init__(
        self, channels: int, iters: int = 3, heads: int = 2, dual_path: bool = False, ffn_ratio: float = 2.0
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"model.tokenizer.heads={heads} must divide model.channels={channels}")
        self.channels, self.heads, self.dual_path = channels, heads, dual_path
        # pixel-side query and value, shared by all iterations: computed once unless dual path
        self.pix_qv = nn.Linear(channels, 2 * channels)
        self.query_norm = nn.LayerNorm(channels // heads)
        self.iterations = nn.ModuleList(TokenizerIteration(channels, heads, ffn_ratio, dual_path) for _ in range(iters))
        # single-head association used for the output projection; it reuses the pixel query
        # projection (one less dense matmul) with a norm of its own over all channels
        self.final_query_norm = nn.LayerNorm(channels)
        self.final_key = nn.Linear(channels, channels)
        self.final_key_norm = nn.LayerNorm(channels)

    def _pixel_qv(self, pix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pixel query and value, (B, Gh, Gw, heads, n, d) each, and the raw query (B, Gh, Gw, n, C)."""
        b, gh, gw, n, c = pix.shape
        query, value = self.pix_qv(pix).chunk(2, dim=-1)
        split = (b, gh, gw, n, self.heads, c // self.heads)
        heads_query = self.query_norm(query.reshape(split)).transpose(3, 4)
        return heads_query, value.reshape(split).transpose(3, 4), query

    def forward(self, pix: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the tokenizer.

        Args:
            pix: (B, Gh, Gw, n, C) pixel features in cell layout.
            valid: (B, Gh, Gw, 1, n) 1 for image pixels, 0 for padding.
        Returns:
            superpixels (B, Gh, Gw, C); the final association, neighbour-major (B, Gh, Gw, 9, n)
            (padding pixels still have a distribution: mask them before pooling); and the pixel
            features (B, Gh, Gw, n, C), updated when ``dual_path``.
        """
        b, gh, gw, n, c = pix.shape
        d = c // self.heads
        grid_valid = ops.neighbor_valid(gh, gw, pix.device)
        # initial superpixels: mean of the image pixels of each cell
        sp = (valid @ pix).squeeze(3) / valid.sum(-1).clamp_min(1.0)
        valid_heads = valid.unsqueeze(3)  # (B, Gh, Gw, 1, 1, n)
        query, value, raw_query = self._pixel_qv(pix)
        for i, it in enumerate(self.iterations):
            if self.dual_path and i > 0:
                query, value, raw_query = self._pixel_qv(pix)
            key = it.key_norm(it.key(sp).view(b, gh, gw, self.heads, d))  # (B, Gh, Gw, h, d)
            key_nb = ops.gather_neighbors(key.flatten(3)).view(b, gh, gw, 9, self.heads, d).transpose(3, 4)
            logits = ops.neighbor_logits_cells(query, key_nb, grid_valid)  # (B, Gh, Gw, h, 9, n)
            # softmax in float32: bf16/fp16 logits lose the small differences that matter here
            assoc = (logits.float() / math.sqrt(d)).softmax(-2).to(value.dtype)
            pooled = ops.pool_cells(assoc * valid_heads, value)  # (B, Gh, Gw, h, d)
            sp = sp + it.out(pooled.flatten(3))
            sp = sp + it.ffn(it.ffn_norm(sp))
            if self.dual_path:
                sp_value = ops.gather_neighbors(it.sp_value(sp))  # (B, Gh, Gw, 9, C)
                sp_value = sp_value.view(b, gh, gw, 9, self.heads, d).transpose(3, 4)
                back = ops.project_cells(assoc, sp_value)  # (B, Gh, Gw, h, n, d)
                pix = pix + it.pix_out(back.transpose(3, 4).reshape(b, gh, gw, n, c))
        if self.dual_path:
            raw_query = self.pix_qv(pix)[..., :c]
        final_query = self.final_query_norm(raw_query)
        final_key = ops.gather_neighbors(self.final_key_norm(self.final_key(sp)))
        logits = ops.neighbor_logits_cells(final_query, final_key, grid_valid)
        assoc = (logits.float() / math.sqrt(c)).softmax(-2)
        return sp, assoc, pix
