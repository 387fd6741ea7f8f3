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
from spxseg.models.layers import FeedForward


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
        self, channels: int, iters: int = 3, heads: int = 2, dual_path: bool = False, ffn_ratio: float = 2.0,
        cell: int | None = None, position_bias: bool = False,
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"model.tokenizer.heads={heads} must divide model.channels={channels}")
        self.channels, self.heads, self.dual_path = channels, heads, dual_path
        # pixel-side query and value, shared by all iterations: computed once (the dual path moves it, see forward)
        self.pix_qv = nn.Linear(channels, 2 * channels)
        self.query_norm = nn.LayerNorm(channels // heads)
        self.iterations = nn.ModuleList(TokenizerIteration(channels, heads, ffn_ratio, dual_path) for _ in range(iters))
        # single-head association used for the output projection; it reuses the pixel query
        # projection (one less dense matmul) with a norm of its own over all channels
        self.final_query_norm = nn.LayerNorm(channels)
        self.final_key = nn.Linear(channels, channels)
        self.final_key_norm = nn.LayerNorm(channels)
        if position_bias and cell is None:
            raise ValueError("position_bias needs the cell size")
        # (9, n) logit bias shared by every association, see distance_prior
        self.position_bias = nn.Parameter(distance_prior(cell)) if position_bias else None

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

    def _head_assoc(self, query: PixelQuery, sp: Tensor, it: TokenizerIteration, grid_valid: Tensor) -> Tensor:
        """Multi-head association of every pixel with its 9 neighbours: (B, Gh, Gw, heads, 9, n), float32.

        ``softmax_j(<LN_h(q_p), LN(Wk S)_{n_j(p), h}> / sqrt(d))`` per head h, from :meth:`_pixel_query`.
        """
        b, gh, gw, c = sp.shape
        heads, d = self.heads, c // self.heads
        n = query.centred.shape[-1]
        key = it.key_norm(it.key(sp).unflatten(-1, (heads, d)))  # (B, Gh, Gw, heads, d)
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
        key = self.final_key_norm(self.final_key(sp))  # (B, Gh, Gw, C)
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

    def _pooled_values(
        self, assoc: Tensor, pix: Tensor, valid: Tensor | None, sent_back: list[SentBack], eps: float = 1e-6
    ) -> Tensor:
        """Per-head association-weighted mean of the pixel values ``Wv F``: (B, Gh, Gw, heads, d).

        The value projection is linear and the pool is a weighted mean, so ``pool(A, Wv F + b) = (Wv
        pool_sum(A, F) + b * mass) / (mass + eps)`` exactly: pooling the C-channel features first and
        projecting the (few) superpixels afterwards never materialises the pixel-sized values. With the
        dual path, ``F = F0 + sum_s A_s^T R_s`` (see :meth:`_sent_back`), so ``A F = A F0 + sum_s (A A_s^T) R_s``:
        per cell an (heads*9, n) x (n, heads*9) product and a small matmul, instead of the updated pixels.

        Args:
            assoc: (B, Gh, Gw, heads, 9, n), float32.
            pix: (B, Gh, Gw, n, C), the tokenizer's input F0.
            valid: (B, Gh, Gw, 1, 1, n) or None when there is no padding.
            sent_back: the dual path's earlier updates of the pixels (empty without it).
        """
        b, gh, gw, heads, _, n = assoc.shape
        c = self.channels
        d = c // heads
        if valid is not None:
            assoc = assoc * valid
        # (heads * 9, n) @ (n, C) per cell: what each cell sends each neighbour, for every head at once
        rows = assoc.flatten(3, 4).to(pix.dtype)
        sent = (rows @ pix).flatten(0, 2)  # (B*Gh*Gw, heads*9, C)
        for update in sent_back:
            mixed = (rows @ update.assoc.transpose(-1, -2)).flatten(0, 2)  # (B*Gh*Gw, heads*9, 9*heads)
            sent = torch.baddbmm(sent, mixed, update.pixel_rows.flatten(0, 2))
        sent = sent.view(b, gh, gw, heads, 9, c)
        total = ops.fold_neighbors(sent.transpose(3, 4))  # (B, Gh, Gw, heads, C)
        mass = ops.fold_neighbors(assoc.sum(-1).transpose(3, 4)).unsqueeze(-1)  # (B, Gh, Gw, heads, 1), float32
        weight = self.pix_qv.weight[c:].view(heads, d, c)
        bias = self.pix_qv.bias[c:].view(heads, d)
        values = torch.einsum("bxyhc,hdc->bxyhd", total, weight.to(total.dtype))
        # normalise in float32: bf16 masses are too coarse
        return ((values.to(mass.dtype) + bias.to(mass.dtype) * mass) / (mass + eps)).to(values.dtype)

    def _sent_back(self, sp: Tensor, assoc: Tensor, it: TokenizerIteration) -> SentBack:
        """The dual path's pixel update ``F <- F + Wp project(A, Wsv S) + bp`` as per-cell rows: ``A^T R``.

        Pixel p of a cell receives ``sum_(h, j) A_h[p, j] Wp[:, h] (Wsv S_(n_j))_h + bp``. Each head's
        association sums to 1 over the 9 neighbours, so the bias rides on the rows (``bp / heads`` each)
        and the update is exactly ``A^T R`` with A the (heads*9, n) association and R (heads*9, C) the
        neighbours' rows ``Wp[:, h] (Wsv S)_h + bp / heads``, computed per superpixel (C² per head) and
        gathered. The same rows through the query projection move the pixel query without touching the
        pixels: ``Wq F`` changes by ``A^T (R Wq^T)``. At cell 4, C=128 this is ~10x fewer FLOPs than
        updating and projecting the pixels, and writes nothing pixel-sized but the moved query.
        """
        b, gh, gw, c = sp.shape
        heads, d = self.heads, c // self.heads
        values = it.sp_value(sp).unflatten(-1, (heads, d))  # (B, Gh, Gw, heads, d)
        out_weight = it.pix_out.weight.view(c, heads, d).to(values.dtype)
        rows = torch.einsum("bxyhd,chd->bxyhc", values, out_weight) + it.pix_out.bias.to(values.dtype) / heads
        weight = self.pix_qv.weight[:c].view(heads, d, c)
        w_mean = weight.mean(1)  # the per-head mean of the query, as a projection (heads, C)
        centred = (weight - w_mean.unsqueeze(1)).reshape(c, c)

        def neighbour_rows(per_sp: Tensor) -> Tensor:
            """(B, Gh, Gw, heads, W) -> (B, Gh, Gw, 9*heads, W), rows (neighbour, head): a view of the gather."""
            return ops.gather_neighbors(per_sp.flatten(3)).view(b, gh, gw, 9 * heads, per_sp.shape[-1])

        # the association in the same (neighbour, head) row order: a copy of the small (heads*9, n) blocks,
        # not of the (9*heads, C) rows
        assoc_rows = assoc.transpose(3, 4).flatten(3, 4).to(rows.dtype)
        return SentBack(
            assoc_rows,
            neighbour_rows(rows),
            neighbour_rows(F.linear(rows, centred.to(rows.dtype))),
            neighbour_rows(F.linear(rows, w_mean.to(rows.dtype))),
        )

    @staticmethod
    def _moved_query(query: PixelQuery, update: SentBack, heads: int) -> PixelQuery:
        """The pixel query of the updated pixels, from the old one and the update's query rows."""
        centred = torch.baddbmm(
            query.centred.flatten(0, 2), update.query_rows.transpose(-1, -2).flatten(0, 2), update.assoc.flatten(0, 2)
        ).view(query.centred.shape)  # (B, Gh, Gw, C, n)
        mean = query.mean + (update.mean_rows.transpose(-1, -2) @ update.assoc).to(query.mean.dtype)
        d = centred.shape[-2] // heads
        var = centred.unflatten(-2, (heads, d)).to(query.var.dtype).square().mean(-2)  # (B, Gh, Gw, heads, n)
        return PixelQuery(centred, mean, var)

    def forward(
        self, pix: Tensor, valid: Tensor | None = None, return_pixels: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run the tokenizer.

        Args:
            pix: (B, Gh, Gw, n, C) pixel features in cell layout.
            valid: (B, Gh, Gw, 1, n) 1 for image pixels, 0 for padding; None when nothing is padded.
            return_pixels: also return the pixel features (with the dual path, this writes the updated
                ones, which the model itself never needs).
        Returns:
            superpixels (B, Gh, Gw, C); the final association, neighbour-major (B, Gh, Gw, 9, n),
            float32 (padding pixels still have a distribution: mask them before pooling); and the pixel
            features (B, Gh, Gw, n, C), updated when ``dual_path``, or None unless ``return_pixels``.
        """
        b, gh, gw, n, c = pix.shape
        grid_valid = ops.neighbor_valid(gh, gw, pix.device)
        # initial superpixels: mean of the image pixels of each cell
        if valid is None:
            sp = pix.mean(-2)
        else:
            sp = (valid.to(pix.dtype) @ pix).squeeze(3) / valid.sum(-1).clamp_min(1.0)
        valid_heads = None if valid is None else valid.unsqueeze(3)  # (B, Gh, Gw, 1, 1, n)
        query = self._pixel_query(pix)
        sent_back: list[SentBack] = []  # dual path: the pixels are pix + sum of A^T R over these
        for it in self.iterations:
            assoc = self._head_assoc(query, sp, it, grid_valid)  # (B, Gh, Gw, heads, 9, n)
            sp = sp + it.out(self._pooled_values(assoc, pix, valid_heads, sent_back).flatten(3).to(sp.dtype))
            sp = sp + it.ffn(it.ffn_norm(sp))
            if self.dual_path:
                sent_back.append(self._sent_back(sp, assoc, it))
                query = self._moved_query(query, sent_back[-1], self.heads)
        final = self._final_assoc(query, sp, grid_valid)
        if not return_pixels:
            return sp, final, None
        for update in sent_back:
            pix = pix + ops.project_cells(update.assoc, update.pixel_rows)
        return sp, final, pix


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


class SentBack(NamedTuple):
    """One dual-path update of the pixels, ``F <- F + A^T R`` per cell (:meth:`SuperpixelTokenizer._sent_back`).

    assoc: (B, Gh, Gw, 9*heads, n) the iteration's association, rows (neighbour, head).
    pixel_rows: (B, Gh, Gw, 9*heads, C) R, what each row sends the pixels (bias included).
    query_rows: (B, Gh, Gw, 9*heads, C) R through the centred query projection.
    mean_rows: (B, Gh, Gw, 9*heads, heads) R through the per-head mean of the query projection.
    """

    assoc: Tensor
    pixel_rows: Tensor
    query_rows: Tensor
    mean_rows: Tensor
