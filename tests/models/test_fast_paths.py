"""The model's fast inference paths against straightforward references (float64).

The tokenizer never materialises the normalised pixel queries (norm statistics move to per-pixel
scalars, affine parameters to the keys), pools the pixel features before the value projection, and
reads the pixels channels-first; the pixel decoder folds its BatchNorm into the conv in eval mode and
accumulates the projections with GEMMs; the model resizes probabilities channels-last. Each must give
what the plain formulation of ARCHITECTURE.md, Model math gives; for the tokenizer that formulation is
:func:`spxseg.models.tokenizer_reference.reference_tokenizer`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spxseg import build_model
from spxseg.models import superpixel_ops as ops
from spxseg.models.pixel_decoder import PixelDecoder
from spxseg.models.tokenizer import SuperpixelTokenizer
from spxseg.models.tokenizer_reference import reference_tokenizer


@pytest.mark.parametrize(
    "heads, dual_path, padded, position_bias, shared_qk, final_pool, layer_scale",
    [(2, False, False, False, False, False, 0.0), (2, False, True, False, False, False, 0.0),
     (4, True, True, False, False, False, 0.0), (1, False, False, False, False, False, 0.0),
     (2, False, True, True, False, False, 0.0), (2, True, False, True, False, False, 0.0),
     (2, False, True, False, True, False, 0.0), (4, True, False, False, True, False, 0.0),
     (2, False, True, False, False, True, 0.0), (2, True, False, False, False, True, 0.0),
     (2, False, True, False, False, True, 0.1), (2, True, False, False, False, False, 0.1)],
)
def test_tokenizer_matches_reference(heads, dual_path, padded, position_bias, shared_qk, final_pool, layer_scale):
    torch.manual_seed(0)
    tok = SuperpixelTokenizer(32, iters=3, heads=heads, dual_path=dual_path, cell=3, position_bias=position_bias,
                              shared_qk=shared_qk, final_pool=final_pool, layer_scale=layer_scale).double()
    if position_bias:  # a trained table, not only the prior it starts from
        with torch.no_grad():
            tok.position_bias.add_(torch.randn_like(tok.position_bias))
    scales = [p for name, p in tok.named_parameters() if name.endswith("_scale")]
    assert len(scales) == (3 * 2 + final_pool if layer_scale else 0)
    with torch.no_grad():  # trained LayerScale vectors: a different scale per channel
        for scale in scales:
            scale.uniform_(0.05, 1.5)
    for module in tok.modules():  # non-trivial norm parameters, so the affine folding is exercised
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    pix = torch.randn(2, 3, 4, 9, 32, dtype=torch.float64) * 2 + 0.5  # non-zero means, like real features
    valid = torch.ones(2, 3, 4, 1, 9, dtype=torch.float64)
    if padded:
        valid[:, -1, :, :, 3:] = 0
    sp, assoc, out_pix = tok(pix, valid if padded else None)
    ref_sp, ref_assoc, ref_pix = reference_tokenizer(tok, pix, valid)
    torch.testing.assert_close(sp, ref_sp)
    torch.testing.assert_close(assoc.double(), ref_assoc)
    torch.testing.assert_close(out_pix, ref_pix)
    if not padded:  # the reference's own default: no mask means every pixel is an image pixel
        for got, want in zip(reference_tokenizer(tok, pix), (ref_sp, ref_assoc, ref_pix), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("shared_qk, final_pool, layer_scale",
                         [(False, False, 0.0), (True, False, 0.0), (False, True, 0.0), (False, True, 0.1)])
def test_tokenizer_gradients_match_reference(shared_qk, final_pool, layer_scale):
    """Training differentiates the fast path (normalised queries never written, pools before the value
    projection, the dual path's block-diagonal products): its gradients for the weights and the input
    pixels must be the plain formulation's."""
    torch.manual_seed(0)
    tok = SuperpixelTokenizer(16, iters=3, heads=2, dual_path=True, cell=2, shared_qk=shared_qk,
                              final_pool=final_pool, layer_scale=layer_scale).double()
    pix = torch.randn(1, 3, 3, 4, 16, dtype=torch.float64, requires_grad=True)
    valid = torch.ones(1, 3, 3, 1, 4, dtype=torch.float64)
    valid[:, -1, :, :, 2:] = 0
    weights = torch.randn(3, 3, 16, dtype=torch.float64), torch.randn(3, 3, 9, 4, dtype=torch.float64)

    def grads(outputs):
        sp, assoc = outputs[:2]
        loss = (sp * weights[0]).sum() + (assoc.double() * weights[1]).sum()
        return torch.autograd.grad(loss, [pix, *tok.parameters()], allow_unused=True)

    for got, want in zip(grads(tok(pix, valid)), grads(reference_tokenizer(tok, pix, valid)), strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fuse_conv,fuse_layers,context_convs",
                         [("separable", 1, 0), ("full", 1, 0), ("full", 2, 0), ("separable", 3, 0), ("separable", 1, 1),
                          ("full", 1, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pixel_decoder_matches_plain_convs(fuse_conv, fuse_layers, context_convs, channels_last):
    torch.manual_seed(0)
    dec = PixelDecoder([8, 16, 24], 12, fuse_conv, fuse_layers, context_convs=context_convs).double()
    assert len(dec.pre_fuse) == fuse_layers - 1 and len(dec.context) == context_convs
    for block in [*dec.pre_fuse, dec.fuse, *dec.context]:
        bn = block[-2]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    feats = [torch.randn(2, c, s, 2 * s, dtype=torch.float64) for c, s in ((8, 16), (16, 8), (24, 4))]
    if channels_last:
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    dec.eval()
    out = dec(feats, (16, 32))
    # the plain formulation: conv, (the coarse levels' 3x3 block,) upsample, sum, then the Sequential of conv(s),
    # BN (eval), ReLU
    ref = dec.lateral[-1](feats[-1])
    for level, (proj, feat) in enumerate(zip(dec.lateral[-2::-1], feats[-2::-1])):
        if level < context_convs:
            ref = dec.context[level](ref)
        ref = proj(feat) + F.interpolate(ref, size=feat.shape[-2:], mode="bilinear", align_corners=False)
    for block in dec.pre_fuse:
        ref = block(ref)
    ref = dec.fuse(ref)
    torch.testing.assert_close(out, ref)
    dec.train()  # training runs the BatchNorm as a module (batch statistics)
    torch.testing.assert_close(dec(feats, (16, 32)).shape, ref.shape)


def test_pixel_decoder_keeps_ceil_sized_stages_aligned():
    """``model.pad_input: false``: the stage maps of an unpadded image are ceil(size / stride), and the coarse ones
    cover more of the image than the fine ones. With its stage strides the decoder upsamples by their ratio and
    cuts, so maps that are the top-left of a padded input's give the top-left of its output (away from the cut
    edge, where bilinear and the 3x3 reach the missing pixels); resizing onto the finer size would stretch them."""
    torch.manual_seed(0)
    dec = PixelDecoder([8, 16, 24], 12, "full", 1, strides=[4, 8, 16]).double().eval()
    full = [torch.randn(1, c, s, 2 * s, dtype=torch.float64) for c, s in ((8, 16), (16, 8), (24, 4))]
    # an image of 60x120 pixels: stride 4 -> 15x30, stride 8 -> 8x15, stride 16 -> 4x8 (ceil)
    cut = [full[0][..., :15, :30], full[1][..., :8, :15], full[2]]
    with torch.no_grad():
        want = dec(full, (16, 32))[..., :12, :26]
        got = dec(cut, (15, 30))
        assert got.shape[-2:] == (15, 30)
        torch.testing.assert_close(got[..., :12, :26], want, rtol=0, atol=1e-12)
        dec.strides = None  # resizing to the finer map's size instead: the map is stretched, the result differs
        assert not torch.allclose(dec(cut, (15, 30))[..., :12, :26], want)
        dec.strides = [4, 8, 16]
        # exact multiples of the strides: cut or not, the same as the plain resize
        same = dec(full, (16, 32))
        dec.strides = None
        torch.testing.assert_close(same, dec(full, (16, 32)), rtol=0, atol=0)


def test_fold_neighbors_matches_padded_shifts():
    contrib = torch.randn(2, 3, 5, 9, 4, 6, dtype=torch.float64)
    expected = torch.zeros(2, 3, 5, 4, 6, dtype=torch.float64)
    for j, (dy, dx) in enumerate(ops.OFFSETS):
        for y in range(3):
            for x in range(5):
                if 0 <= y - dy < 3 and 0 <= x - dx < 5:
                    expected[:, y, x] += contrib[:, y - dy, x - dx, j]
    torch.testing.assert_close(ops.fold_neighbors(contrib), expected)
    # any strides, e.g. the neighbour axis moved next to the grid as a view
    torch.testing.assert_close(ops.fold_neighbors(contrib.movedim(3, -1).movedim(-1, 3)), expected)


def test_model_outputs_are_consistent_in_eval():
    """probs (resized channels-last) == bilinear resize of project(assoc, softmax(Z)); hard ids == argmax."""
    torch.manual_seed(0)
    model = build_model({"num_classes": 5, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
                         "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2}})
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        out = model(x)
    small = ops.project(out.assoc, out.sp_logits.float().softmax(1))
    torch.testing.assert_close(out.probs, F.interpolate(small, size=(64, 96), mode="bilinear", align_corners=False))
    gh, gw = out.sp_logits.shape[-2:]
    j = out.assoc.argmax(1)  # (B, h, w)
    ys = torch.arange(out.assoc.shape[-2]).view(-1, 1) // 4
    xs = torch.arange(out.assoc.shape[-1]).view(1, -1) // 4
    ids = (ys + j // 3 - 1) * gw + xs + j % 3 - 1
    torch.testing.assert_close(out.superpixels, ids.repeat_interleave(4, 1).repeat_interleave(4, 2))


def test_fold_neighbors_compiled_path_matches_eager():
    contrib = torch.randn(2, 3, 5, 9, 4, 6)
    compiled = torch.compile(ops.fold_neighbors, backend="eager", fullgraph=True)  # traces the compile branch
    torch.testing.assert_close(compiled(contrib), ops.fold_neighbors(contrib))


@pytest.mark.parametrize("kwargs,match", [({"fuse_conv": "dense"}, "model.fuse_conv"),
                                          ({"fuse_layers": 0}, "model.fuse_layers"),
                                          ({"context_convs": 2}, "model.context_convs must be in \\[0, 1\\]"),
                                          ({"context_convs": -1}, "model.context_convs")])
def test_pixel_decoder_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PixelDecoder([8, 16], 12, **kwargs)
