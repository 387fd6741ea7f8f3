"""The superpixel tokenizer written as the maths reads: slow, plain, the definition the fast path must match.

:class:`~spxseg.models.tokenizer.SuperpixelTokenizer` never materialises the normalised pixel queries,
pools the pixel features before the value projection and reads the pixels channels-first (see its
docstrings). :func:`reference_tokenizer` runs the same module's weights through the formulation of
ARCHITECTURE.md, Superpixel tokenizer, step by step, with every intermediate tensor written out:
per head h of width d = C / heads, for T iterations,

    q = LN_h(Wq F),   k = LN_h(Wk S),   v = Wv F                      (pixel query / value, superpixel key)
    A[p, j] = softmax_j(<q_p, k_{n_j(p)}> / sqrt(d))                 over the 9 neighbours n_j(p) of p's cell
    S <- S + Wo pool(A, v)                                            association-weighted mean of the values
    S <- S + FFN(LN(S))
    F <- F + Wp sum_j A[p, j] Wsv S_{n_j(p)}                          dual path only

then the single-head final association ``softmax_j(<LN(Wq F)_p, LN(Wk' S)_{n_j(p)}> / sqrt(C))``. With
``position_bias``, every association's logits get ``+ B[j, p]`` (one learned (9, n) table) before the softmax.
With ``shared_qk``, ``Wk = Wk' = Wq`` and the keys go through the query's norms: ``k = LN_h(Wq S)`` and
``LN(Wq S)`` with the final query norm. With ``final_pool``, ``S <- S + Wf pool(A*, F)`` last.
Initial superpixels are the mean of each cell's image pixels; padding pixels are left out of every pool.

Only tests call it (``tests/models/test_fast_paths.py``, in float64); it is not meant to be fast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spxseg.models import superpixel_ops as ops
from spxseg.models.layers import scaled
from spxseg.models.tokenizer import SuperpixelTokenizer


def reference_tokenizer(
    tok: SuperpixelTokenizer, pix: Tensor, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """What ``tok(pix, valid)`` computes, from its parameters, without any of its shortcuts.

    Args:
        tok: the tokenizer whose weights are used.
        pix: (B, Gh, Gw, n, C) pixel features in cell layout, n = cell².
        valid: (B, Gh, Gw, 1, n) 1 for image pixels, 0 for padding; None: every pixel is an image pixel.
    Returns:
        superpixels (B, Gh, Gw, C); the final association (B, Gh, Gw, 9, n), neighbour-major, softmax
        over the 9 neighbours; the pixel features (B, Gh, Gw, n, C), updated when ``tok.dual_path``.
    """
    b, gh, gw, n, c = pix.shape
    heads = tok.heads
    d = c // heads
    if valid is None:
        valid = torch.ones(b, gh, gw, 1, n, dtype=pix.dtype, device=pix.device)
    grid_valid = ops.neighbor_valid(gh, gw, pix.device)  # (Gh, Gw, 9)
    valid_heads = valid.unsqueeze(3)  # (B, Gh, Gw, 1, 1, n): the same mask for every head

    # initial superpixels: mean of the image pixels of each cell, (B, Gh, Gw, C)
    sp = (valid @ pix).squeeze(3) / valid.sum(-1).clamp_min(1.0)

    def split_heads(x: Tensor) -> Tensor:
        """(B, Gh, Gw, n, C) -> (B, Gh, Gw, heads, n, d)."""
        return x.reshape(b, gh, gw, n, heads, d).transpose(3, 4)

    def query_value(pix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw query Wq F (B, Gh, Gw, n, C), per-head LN_h(Wq F) and Wv F, both (B, Gh, Gw, heads, n, d)."""
        raw, value = tok.pix_qv(pix).chunk(2, -1)
        query = tok.query_norm(raw.reshape(b, gh, gw, n, heads, d)).transpose(3, 4)
        return raw, query, split_heads(value)

    # the learned (9, n) logit bias per neighbour and position in the cell, when the tokenizer has one
    bias = 0.0 if tok.position_bias is None else tok.position_bias
    raw, query, value = query_value(pix)
    for i, it in enumerate(tok.iterations):
        if tok.dual_path and i > 0:  # the pixels changed: project them again
            raw, query, value = query_value(pix)
        if tok.shared_qk:
            key = tok.query_norm(tok.pix_qv(sp)[..., :c].view(b, gh, gw, heads, d))  # (B, Gh, Gw, heads, d)
        else:
            key = it.key_norm(it.key(sp).view(b, gh, gw, heads, d))
        key_nb = ops.gather_neighbors(key.flatten(3)).view(b, gh, gw, 9, heads, d).transpose(3, 4)
        logits = ops.neighbor_logits_cells(query, key_nb, grid_valid)  # (B, Gh, Gw, heads, 9, n)
        assoc = (logits / math.sqrt(d) + bias).softmax(-2)  # over the 9 neighbours
        pooled = ops.pool_cells(assoc * valid_heads, value)  # (B, Gh, Gw, heads, d)
        sp = sp + scaled(it.out(pooled.flatten(3)), it.out_scale)
        sp = sp + scaled(it.ffn(it.ffn_norm(sp)), it.ffn_scale)
        if tok.dual_path:
            # superpixels -> pixels: each pixel receives its neighbours' values through the same association
            sp_value = ops.gather_neighbors(it.sp_value(sp)).view(b, gh, gw, 9, heads, d).transpose(3, 4)
            back = ops.project_cells(assoc, sp_value)  # (B, Gh, Gw, heads, n, d)
            pix = pix + it.pix_out(back.transpose(3, 4).reshape(b, gh, gw, n, c))
    if tok.dual_path:
        raw = tok.pix_qv(pix)[..., :c]

    # final association: single head over all C channels, its own norms (the query's with shared_qk), the
    # same query projection
    if tok.shared_qk:
        final_key = ops.gather_neighbors(tok.final_query_norm(tok.pix_qv(sp)[..., :c]))  # (B, Gh, Gw, 9, C)
    else:
        final_key = ops.gather_neighbors(tok.final_key_norm(tok.final_key(sp)))
    logits = ops.neighbor_logits_cells(tok.final_query_norm(raw), final_key, grid_valid)  # (B, Gh, Gw, 9, n)
    final_assoc = (logits / math.sqrt(c) + bias).softmax(-2)
    if tok.final_out is not None:  # the superpixels re-pooled from the pixels A* gives them
        sp = sp + scaled(tok.final_out(ops.pool_cells(final_assoc * valid, pix)), tok.final_scale)
    return sp, final_assoc, pix
