"""Superpixel tokenizer: a few local cross-attentions between pixels and a grid of superpixels.

Each iteration is a soft k-means / SSN step written as attention: every pixel attends to the
9 superpixels around its cell (association ``A``), and every superpixel becomes the
association-weighted mean of the pixels that reach it. All tensors are in the cell layout of
:mod:`spxseg.models.superpixel_ops`: pixels (B, Gh, Gw, n, C) with n = cell², superpixels
channels-last (B, Gh, Gw, C). The maths is ARCHITECTURE.md, Superpixel tokenizer; the shortcuts here
(see each method) are tested against its plain formulation, :mod:`spxseg.models.tokenizer_reference`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.models import superpixel_ops as ops
from spxseg.models.layers import FeedForward, layer_scale_vector, scaled


class TokenizerIteration(nn.Module):
    """Superpixel-side weights of one iteration (pixel-side projections are shared)."""

    def __init__(
        self, channels: int, heads: int, ffn_ratio: float, dual_path: bool, shared_qk: bool = False,
        layer_scale: float = 0.0,
    ) -> None:
        super().__init__()
        # superpixel key: its own projection and per-head norm, or (shared_qk) the pixels' query ones
        self.key = None if shared_qk else nn.Linear(channels, channels)
        self.key_norm = None if shared_qk else nn.LayerNorm(channels // heads)
        self.out = nn.Linear(channels, channels)
        self.ffn_norm = nn.LayerNorm(channels)
        self.ffn = FeedForward(channels, ffn_ratio)
        # superpixels -> pixels (dual path): what each superpixel sends back to its pixels
        self.sp_value = nn.Linear(channels, channels) if dual_path else None
        self.pix_out = nn.Linear(channels, channels) if dual_path else None
        # LayerScale on the two superpixel updates (pool and FFN): learned per-channel scales, None when off
        self.out_scale = layer_scale_vector(channels, layer_scale)
        self.ffn_scale = layer_scale_vector(channels, layer_scale)


class SuperpixelTokenizer(nn.Module):
    """Turns pixel features into superpixel tokens and their final association.

    Args:
        channels: C, width of the pixel features and of the superpixels.
        iters: T, number of local cross-attention iterations.
        heads: attention heads of the iterations (the final association is single-head).
        dual_path: also update the pixel features from the superpixels each iteration.
        position_bias: a learned (9, n) logit bias on every association, started at SSN's distance prior.
        shared_qk: superpixel keys through the pixel query's projection and norms (Wk = Wq): the
            associations compare pixels and superpixels in one feature space, a soft k-means from the start.
        final_pool: after the final association ``A*``, ``S <- S + Wf pool(A*, F)``: the returned superpixels
            describe the pixels ``A*`` gives them.
        layer_scale: > 0 multiplies every update of the superpixels (each iteration's pool and FFN, the final
            pool) channel-wise by a learned vector that starts at this value (LayerScale), so the superpixels
            start close to their cells' mean features; 0 = plain residuals.
    """

    def __init__(
        self, channels: int, iters: int = 3, heads: int = 2, dual_path: bool = False, ffn_ratio: float = 2.0,
        cell: int | None = None, position_bias: bool = False, shared_qk: bool = False, final_pool: bool = False,
        layer_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"model.tokenizer.heads={heads} must divide model.channels={channels}")
        self.channels, self.heads, self.dual_path, self.shared_qk = channels, heads, dual_path, shared_qk
        # pixel-side query and value, shared by all iterations: computed once unless dual path
        self.pix_qv = nn.Linear(channels, 2 * channels)
        self.query_norm = nn.LayerNorm(channels // heads)
        self.iterations = nn.ModuleList(
            TokenizerIteration(channels, heads, ffn_ratio, dual_path, shared_qk, layer_scale) for _ in range(iters)
        )
        # single-head association used for the output projection; it reuses the pixel query
        # projection (one less dense matmul) with a norm of its own over all channels
        self.final_query_norm = nn.LayerNorm(channels)
        self.final_key = None if shared_qk else nn.Linear(channels, channels)
        self.final_key_norm = None if shared_qk else nn.LayerNorm(channels)
        if position_bias and cell is None:
            raise ValueError("position_bias needs the cell size")
        # (9, n) logit bias shared by every association, see distance_prior
        self.position_bias = nn.Parameter(distance_prior(cell)) if position_bias else None
        self.final_out = nn.Linear(channels, channels) if final_pool else None
        self.final_scale = layer_scale_vector(channels, layer_scale) if final_pool else None

    def _pixel_query(self, pix: Tensor) -> PixelQuery:
        """The pixel query ``Wq F + b`` in the form the associations need, without normalising it.

        ``LN(q)·k = rstd·<q - mean, gamma*k> + <beta, k>``: the norms' statistics and affine parameters
        move to per-pixel scalars and to the (few) superpixel keys, so the pixel-sized normalised queries
        (per head for the iterations, over all channels for the final association) are never written.
        The per-head mean is removed exactly by centring the projection's rows (a weight-side
        operation), which keeps the dot products free of cancellation in bf16. The channels-first copy
        makes every association GEMM read the pixels in order (several times faster on CPU than a
        transposed read), and gives each head a contiguous (d, n) block.
        """
        c, heads = self.channels, self.heads
        d = c // heads
        weight = self.pix_qv.weight[:c].view(heads, d, c)
        bias = self.pix_qv.bias[:c].view(heads, d)
        w_mean, b_mean = weight.mean(1), bias.mean(1)  # per-head mean of the query, as a projection
        centred = F.linear(pix, (weight - w_mean.unsqueeze(1)).reshape(c, c), (bias - b_mean.unsqueeze(1)).reshape(c))
        acc = _acc_dtype(centred)
        var = torch.linalg.vector_norm(centred.unflatten(-1, (heads, d)), dim=-1, dtype=acc).square() / d
        mean = F.linear(pix, w_mean, b_mean)  # (B, Gh, Gw, n, heads)
        return PixelQuery(
            centred.transpose(-1, -2).contiguous(), mean.transpose(-1, -2).to(acc), var.transpose(-1, -2)
        )

    def _superpixel_query(self, sp: Tensor) -> Tensor:
        """``Wq S + b``, the pixels' query projection applied to the superpixels (B, Gh, Gw, C): their keys with
        ``shared_qk``."""
        c = self.channels
        return F.linear(sp, self.pix_qv.weight[:c], self.pix_qv.bias[:c])

    def _head_key(self, sp: Tensor, it: TokenizerIteration) -> Tensor:
        """Per-head normalised superpixel keys ``LN_h(Wk S)`` (B, Gh, Gw, heads, d); Wk = Wq and the query's
        norm with ``shared_qk``."""
        heads, d = self.heads, self.channels // self.heads
        if self.shared_qk:
            return self.query_norm(self._superpixel_query(sp).unflatten(-1, (heads, d)))
        return it.key_norm(it.key(sp).unflatten(-1, (heads, d)))

    def _final_key(self, sp: Tensor) -> Tensor:
        """Normalised superpixel keys of the final association ``LN(Wk' S)`` (B, Gh, Gw, C); ``LN(Wq S)`` with
        the final query norm with ``shared_qk``."""
        if self.shared_qk:
            return self.final_query_norm(self._superpixel_query(sp))
        return self.final_key_norm(self.final_key(sp))

    def _head_assoc(self, query: PixelQuery, sp: Tensor, it: TokenizerIteration, grid_valid: Tensor) -> Tensor:
        """Multi-head association of every pixel with its 9 neighbours: (B, Gh, Gw, heads, 9, n), float32.

        ``softmax_j(<LN_h(q_p), LN(Wk S)_{n_j(p), h}> / sqrt(d))`` per head h, from :meth:`_pixel_query`.
        """
        b, gh, gw, c = sp.shape
        heads, d = self.heads, c // self.heads
        n = query.centred.shape[-1]
        key = self._head_key(sp, it)  # (B, Gh, Gw, heads, d)
        scale = d**-0.5
        scaled = (key * (self.query_norm.weight * scale)).flatten(-2)  # gamma * k / sqrt(d)
        offset = (key * self.query_norm.bias).sum(-1) * scale  # <beta, k> / sqrt(d), (B, Gh, Gw, heads)
        nb = ops.gather_neighbors(torch.cat([scaled, offset.to(scaled.dtype)], -1))  # (B, Gh, Gw, 9, C + heads)
        nb_key = nb[..., :c].unflatten(-1, (heads, d)).transpose(3, 4)  # (B, Gh, Gw, heads, 9, d)
        # outside the grid: -inf on the offset masks the neighbour (no pass over the pixel-sized logits)
        acc = query.var.dtype
        nb_offset = nb[..., c:].to(acc).masked_fill(~grid_valid.unsqueeze(-1), float("-inf"))
        dots = nb_key @ query.centred.view(b, gh, gw, heads, d, n)  # (B, Gh, Gw, heads, 9, n)
        rstd = torch.rsqrt(query.var + self.query_norm.eps).unsqueeze(4)  # (B, Gh, Gw, heads, 1, n)
        logits = torch.addcmul(nb_offset.transpose(3, 4).unsqueeze(-1), dots.to(acc), rstd)
        if self.position_bias is not None:
            logits = logits + self.position_bias.to(acc)
        # softmax over the 9 neighbours in float32: bf16 logits lose the small differences that matter
        return logits.softmax(4)

    def _final_assoc(self, query: PixelQuery, sp: Tensor, grid_valid: Tensor) -> Tensor:
        """Single-head association over all C channels, ``LN`` over C of the same query: (B, Gh, Gw, 9, n)."""
        c, heads = self.channels, self.heads
        d = c // heads
        norm = self.final_query_norm
        key = self._final_key(sp)  # (B, Gh, Gw, C)
        g = key * (norm.weight * c**-0.5)
        head_sums = g.unflatten(-1, (heads, d)).sum(-1)  # (B, Gh, Gw, heads)
        offset = (key * norm.bias).sum(-1, keepdim=True) * c**-0.5
        nb = ops.gather_neighbors(torch.cat([g, head_sums, offset], -1))  # (B, Gh, Gw, 9, C + heads + 1)
        acc = query.var.dtype
        nb_g, nb_sums = nb[..., :c], nb[..., c : c + heads].to(acc)
        nb_offset = nb[..., c + heads :].to(acc).masked_fill(~grid_valid.unsqueeze(-1), float("-inf"))
        # q = centred + mean_h per head; with mu the mean over all C and delta_h = mean_h - mu:
        # q - mu = centred + delta_h, var = mean_h(var_h + delta_h^2), <q - mu, g> = <centred, g> + sum_h delta_h G_h
        delta = query.mean - query.mean.mean(3, keepdim=True)  # (B, Gh, Gw, heads, n)
        rstd = torch.rsqrt((query.var + delta.square()).mean(3, keepdim=True) + norm.eps)  # (B, Gh, Gw, 1, n)
        dots = (nb_g @ query.centred).to(acc)  # (B, Gh, Gw, 9, n)
        for h in range(heads):
            dots = torch.addcmul(dots, nb_sums[..., h : h + 1], delta[:, :, :, h : h + 1])
        logits = torch.addcmul(nb_offset, dots, rstd)
        if self.position_bias is not None:
            logits = logits + self.position_bias.to(acc)
        return logits.softmax(-2)

    def _pooled_values(self, assoc: Tensor, pix: Tensor, valid: Tensor | None, eps: float = 1e-6) -> Tensor:
        """Per-head association-weighted mean of the pixel values ``Wv F``: (B, Gh, Gw, heads, d).

        The value projection is linear and the pool is a weighted mean, so ``pool(A, Wv F + b) = (Wv
        pool_sum(A, F) + b * mass) / (mass + eps)`` exactly: pooling the C-channel features first and
        projecting the (few) superpixels afterwards never materialises the pixel-sized values.

        Args:
            assoc: (B, Gh, Gw, heads, 9, n), float32.
            pix: (B, Gh, Gw, n, C).
            valid: (B, Gh, Gw, 1, 1, n) or None when there is no padding.
        """
        b, gh, gw, heads, _, n = assoc.shape
        c = self.channels
        d = c // heads
        if valid is not None:
            assoc = assoc * valid
        # (heads * 9, n) @ (n, C) per cell: what each cell sends each neighbour, for every head at once
        sent = (assoc.flatten(3, 4).to(pix.dtype) @ pix).view(b, gh, gw, heads, 9, c)
        total = ops.fold_neighbors(sent.transpose(3, 4))  # (B, Gh, Gw, heads, C)
        mass = ops.fold_neighbors(assoc.sum(-1).transpose(3, 4)).unsqueeze(-1)  # (B, Gh, Gw, heads, 1), float32
        weight = self.pix_qv.weight[c:].view(heads, d, c)
        bias = self.pix_qv.bias[c:].view(heads, d)
        values = torch.einsum("bxyhc,hdc->bxyhd", total, weight.to(total.dtype))
        # normalise in float32: bf16 masses are too coarse
        return ((values.to(mass.dtype) + bias.to(mass.dtype) * mass) / (mass + eps)).to(values.dtype)

    def forward(self, pix: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the tokenizer.

        Args:
            pix: (B, Gh, Gw, n, C) pixel features in cell layout.
            valid: (B, Gh, Gw, 1, n) 1 for image pixels, 0 for padding; None when nothing is padded.
        Returns:
            superpixels (B, Gh, Gw, C); the final association, neighbour-major (B, Gh, Gw, 9, n),
            float32 (padding pixels still have a distribution: mask them before pooling); and the pixel
            features (B, Gh, Gw, n, C), updated when ``dual_path``.
        """
        b, gh, gw, n, c = pix.shape
        heads = self.heads
        grid_valid = ops.neighbor_valid(gh, gw, pix.device)
        # initial superpixels: mean of the image pixels of each cell
        if valid is None:
            sp = pix.mean(-2)
        else:
            sp = (valid.to(pix.dtype) @ pix).squeeze(3) / valid.sum(-1).clamp_min(1.0)
        valid_heads = None if valid is None else valid.unsqueeze(3)  # (B, Gh, Gw, 1, 1, n)
        query = self._pixel_query(pix)
        for i, it in enumerate(self.iterations):
            if self.dual_path and i > 0:
                query = self._pixel_query(pix)
            assoc = self._head_assoc(query, sp, it, grid_valid)  # (B, Gh, Gw, heads, 9, n)
            pooled = self._pooled_values(assoc, pix, valid_heads).flatten(3).to(sp.dtype)
            sp = sp + scaled(it.out(pooled), it.out_scale)
            sp = sp + scaled(it.ffn(it.ffn_norm(sp)), it.ffn_scale)
            if self.dual_path:
                # superpixels -> pixels: (n, heads*9) @ block-diagonal (heads*9, C) lands in (n, C) directly
                sp_value = _block_diagonal(ops.gather_neighbors(it.sp_value(sp)), heads).flatten(3, 4)
                back = ops.project_cells(assoc.flatten(3, 4).to(sp_value.dtype), sp_value)  # (B, Gh, Gw, n, C)
                pix = pix + it.pix_out(back)
        if self.dual_path:
            query = self._pixel_query(pix)
        assoc = self._final_assoc(query, sp, grid_valid)
        if self.final_out is not None:
            sp = sp + scaled(self.final_out(self._final_pooled(assoc, pix, valid).to(sp.dtype)), self.final_scale)
        return sp, assoc, pix

    @staticmethod
    def _final_pooled(assoc: Tensor, pix: Tensor, valid: Tensor | None, eps: float = 1e-6) -> Tensor:
        """``pool(A*, F)``: the association-weighted mean of the pixel features (B, Gh, Gw, n, C) through the
        final association (B, Gh, Gw, 9, n), padding left out: (B, Gh, Gw, C), normalised in float32."""
        if valid is not None:
            assoc = assoc * valid
        total = ops.fold_neighbors(assoc.to(pix.dtype) @ pix)  # (B, Gh, Gw, C)
        mass = ops.fold_neighbors(assoc.sum(-1, keepdim=True))  # (B, Gh, Gw, 1), float32: bf16 is too coarse
        return total.to(mass.dtype) / (mass + eps)


def distance_prior(cell: int) -> Tensor:
    """(9, cell²) SSN-style prior: minus the squared distance, in cells, from each pixel of a cell (row-major)
    to the centre of neighbour j's cell (0 to -0.5 for the own cell, down to -4.5 for a far corner)."""
    centres = (torch.arange(cell, dtype=torch.float32) + 0.5) / cell - 0.5  # pixel offsets from the cell centre
    py, px = torch.meshgrid(centres, centres, indexing="ij")
    dy = torch.tensor([o[0] for o in ops.OFFSETS], dtype=torch.float32).view(9, 1)
    dx = torch.tensor([o[1] for o in ops.OFFSETS], dtype=torch.float32).view(9, 1)
    return -((py.reshape(1, -1) - dy) ** 2 + (px.reshape(1, -1) - dx) ** 2)


def _acc_dtype(x: Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: the precision of norms, softmaxes and masses."""
    return torch.promote_types(x.dtype, torch.float32)


class PixelQuery(NamedTuple):
    """The pixel query of :meth:`SuperpixelTokenizer._pixel_query`, for images in cell layout.

    centred: (B, Gh, Gw, C, n) query minus its per-head mean, channels first.
    mean: (B, Gh, Gw, heads, n) per-head mean of the query, float32 (float64 for float64 inputs).
    var: (B, Gh, Gw, heads, n) per-head (biased) variance of the query, same dtype.
    """

    centred: Tensor
    mean: Tensor
    var: Tensor


def _block_diagonal(neighbors: Tensor, heads: int) -> Tensor:
    """(B, Gh, Gw, 9, C) -> (B, Gh, Gw, heads, 9, C): row (h, j) keeps head h's channels of neighbour j.

    The other heads' channels are zero, so one matmul of these rows with the pixels (C, n) gives every
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
