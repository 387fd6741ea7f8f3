"""Superpixel tokenizer: a few local cross-attentions between pixels and a grid of superpixels.

Each iteration is a soft k-means / SSN step written as attention: every pixel attends to the
9 superpixels around its cell (association ``A``), and every superpixel becomes the
association-weighted mean of the pixels that reach it. All tensors are in the cell layout of
:mod:`spxseg.models.superpixel_ops`: pixels (B, Gh, Gw, n, C) with n = cell², superpixels
channels-last (B, Gh, Gw, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    def _pixel_query(self, pix: Tensor) -> tuple[Tensor, Tensor]:
        """Raw pixel query (B, Gh, Gw, n, C) and the query normalised per head, same shape and layout.

        Heads stay interleaved in the channel axis (head h = channels ``h*d:(h+1)*d``): the logits are
        computed against block-diagonal keys (:func:`_block_diagonal`), so the pixel-sized query is never
        transposed into a head-major copy.
        """
        c = self.channels
        raw = F.linear(pix, self.pix_qv.weight[:c], self.pix_qv.bias[:c])
        heads = self.query_norm(raw.unflatten(-1, (self.heads, c // self.heads))).flatten(-2)
        return raw, heads

    def _pooled_values(self, assoc: Tensor, pix: Tensor, valid: Tensor | None, eps: float = 1e-6) -> Tensor:
        """Per-head association-weighted mean of the pixel values ``Wv F``: (B, Gh, Gw, heads, d).

        The value projection is linear and the pool is a weighted mean, so ``pool(A, Wv F + b) = (Wv
        pool_sum(A, F) + b * mass) / (mass + eps)`` exactly: pooling the C-channel features first and
        projecting the (few) superpixels afterwards never materialises the pixel-sized values.

        Args:
            assoc: (B, Gh, Gw, heads, 9, n).
            pix: (B, Gh, Gw, n, C).
            valid: (B, Gh, Gw, 1, 1, n) or None when there is no padding.
        """
        c, heads = self.channels, self.heads
        d = c // heads
        if valid is not None:
            assoc = assoc * valid
        total, mass = ops.pooled_sums(assoc, pix)  # (B, Gh, Gw, heads, C), (B, Gh, Gw, heads, 1)
        weight = self.pix_qv.weight[c:].view(heads, d, c)
        bias = self.pix_qv.bias[c:].view(heads, d)
        total = torch.einsum("bxyhc,hdc->bxyhd", total.to(weight.dtype), weight)
        # the division in float32: bf16 masses are too coarse to normalise with
        return ((total.float() + bias.float() * mass.float()) / (mass.float() + eps)).to(total.dtype)

    def forward(self, pix: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the tokenizer.

        Args:
            pix: (B, Gh, Gw, n, C) pixel features in cell layout.
            valid: (B, Gh, Gw, 1, n) 1 for image pixels, 0 for padding; None when nothing is padded.
        Returns:
            superpixels (B, Gh, Gw, C); the final association, neighbour-major (B, Gh, Gw, 9, n)
            (padding pixels still have a distribution: mask them before pooling); and the pixel
            features (B, Gh, Gw, n, C), updated when ``dual_path``.
        """
        b, gh, gw, n, c = pix.shape
        heads, d = self.heads, c // self.heads
        grid_valid = ops.neighbor_valid(gh, gw, pix.device)
        # initial superpixels: mean of the image pixels of each cell
        if valid is None:
            sp = pix.mean(-2)
        else:
            sp = (valid.to(pix.dtype) @ pix).squeeze(3) / valid.sum(-1).clamp_min(1.0)
        valid_heads = None if valid is None else valid.unsqueeze(3)  # (B, Gh, Gw, 1, 1, n)
        raw_query, query = self._pixel_query(pix)
        for i, it in enumerate(self.iterations):
            if self.dual_path and i > 0:
                raw_query, query = self._pixel_query(pix)
            key = it.key_norm(it.key(sp).unflatten(-1, (heads, d))).flatten(-2)  # (B, Gh, Gw, C)
            key = _block_diagonal(ops.gather_neighbors(key * d**-0.5), heads)  # (B, Gh, Gw, heads, 9, C)
            logits = ops.neighbor_logits_cells(query, key, grid_valid)  # (B, Gh, Gw, heads, 9, n)
            # softmax in float32: bf16/fp16 logits lose the small differences that matter here
            assoc = logits.float().softmax(-2)
            sp = sp + it.out(self._pooled_values(assoc, pix, valid_heads).flatten(3).to(sp.dtype))
            sp = sp + it.ffn(it.ffn_norm(sp))
            if self.dual_path:
                # superpixels -> pixels: (n, heads*9) @ block-diagonal (heads*9, C) lands in (n, C) directly
                sp_value = _block_diagonal(ops.gather_neighbors(it.sp_value(sp)), heads).flatten(3, 4)
                back = ops.project_cells(assoc.flatten(3, 4).to(sp_value.dtype), sp_value)  # (B, Gh, Gw, n, C)
                pix = pix + it.pix_out(back)
        if self.dual_path:
            raw_query, _ = self._pixel_query(pix)
        final_query = self.final_query_norm(raw_query)
        final_key = ops.gather_neighbors(self.final_key_norm(self.final_key(sp)) * c**-0.5)
        logits = ops.neighbor_logits_cells(final_query, final_key, grid_valid)
        assoc = logits.float().softmax(-2)
        return sp, assoc, pix


def _block_diagonal(neighbors: Tensor, heads: int) -> Tensor:
    """(B, Gh, Gw, 9, C) -> (B, Gh, Gw, heads, 9, C): row (h, j) keeps head h's channels of neighbour j.

    The other heads' channels are zero, so one matmul of these rows with the pixels (n, C) gives every
    head's dot products, and one matmul of an association (n, heads*9) with them gives every head's
    values in the interleaved (n, C) layout. Costs ``heads`` times the FLOPs of the per-head products,
    on superpixel-sized operands, and saves transposing pixel-sized tensors into head-major copies.
    """
    if heads == 1:
        return neighbors.unsqueeze(3)
    *lead, nine, c = neighbors.shape
    eye = torch.eye(heads, device=neighbors.device, dtype=neighbors.dtype)
    per_head = neighbors.view(*lead, 1, nine, heads, c // heads) * eye.view(heads, 1, heads, 1)
    return per_head.flatten(-2)
