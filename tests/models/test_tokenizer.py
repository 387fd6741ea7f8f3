"""The tokenizer's LayerScale option (its fast path against the plain formulation is in test_fast_paths.py)."""

import pytest
import torch
from conftest import SMALL_MODEL

from spxseg import build_model
from spxseg.engine.optim import param_groups
from spxseg.models.tokenizer import SuperpixelTokenizer


def test_tokenizer_layer_scale_starts_at_the_cell_means_and_its_scales_train() -> None:
    """With a tiny start value every superpixel update is nearly switched off at initialisation, so the returned
    superpixels are their cells' mean features (what the iterations start from); the scales get gradients."""
    torch.manual_seed(0)
    tok = SuperpixelTokenizer(16, iters=2, heads=2, cell=2, final_pool=True, layer_scale=1e-6)
    pix = torch.randn(1, 3, 4, 4, 16)
    sp, _, _ = tok(pix)
    torch.testing.assert_close(sp, pix.mean(-2), rtol=0, atol=1e-4)
    plain = SuperpixelTokenizer(16, iters=2, heads=2, cell=2, final_pool=True)
    assert (plain(pix)[0] - pix.mean(-2)).abs().max() > 0.1  # without it the updates move them at once
    sp.square().sum().backward()
    scales = [p for name, p in tok.named_parameters() if name.endswith("_scale")]
    assert len(scales) == 2 * 2 + 1  # pool and FFN per iteration, the final pool
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scales)


def test_tokenizer_layer_scale_in_the_model_config() -> None:
    """``model.tokenizer.layer_scale`` adds two C-vectors per iteration (one more with the final pool), trained
    without weight decay, and nothing at 0; a negative value is refused naming the key."""
    assert not [name for name, _ in build_model(SMALL_MODEL).named_parameters() if name.endswith("_scale")]
    tokenizer = {**SMALL_MODEL["tokenizer"], "layer_scale": 0.1, "final_pool": True}
    scaled = build_model({**SMALL_MODEL, "tokenizer": tokenizer})
    scales = {name: p for name, p in scaled.named_parameters() if name.endswith("_scale")}
    assert sorted(scales) == ["tokenizer.final_scale", "tokenizer.iterations.0.ffn_scale",
                              "tokenizer.iterations.0.out_scale", "tokenizer.iterations.1.ffn_scale",
                              "tokenizer.iterations.1.out_scale"]
    assert all(torch.equal(p, torch.full((32,), 0.1)) for p in scales.values())
    no_decay = {id(p) for p in param_groups(scaled)["head_no_decay"]}
    assert all(id(p) in no_decay for p in scales.values())
    with pytest.raises(ValueError, match="model.tokenizer.layer_scale must be >= 0"):
        build_model({**SMALL_MODEL, "tokenizer": {**SMALL_MODEL["tokenizer"], "layer_scale": -0.1}})
