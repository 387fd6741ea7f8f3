"""The global transformer: its encoder layer with and without LayerScale, stochastic depth and QK-norm."""

import pytest
import torch
from conftest import SMALL_MODEL

from spxseg import build_model
from spxseg.engine.optim import param_groups
from spxseg.models.global_transformer import EncoderLayer, GlobalTransformer, SelfAttention


def test_encoder_layer_is_two_scaled_residual_branches() -> None:
    """In float64, a layer with ``layer_scale`` equals its plain formulation, ``x + g1 * attn(norm(x))`` then
    ``+ g2 * mlp(norm(.))`` with the learned vectors g1, g2 (set here to random values), and the same layer
    without LayerScale is that formulation with g1 = g2 = 1."""
    torch.manual_seed(0)
    layer = EncoderLayer(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0, layer_scale=0.1).double().eval()
    with torch.no_grad():
        layer.attn_scale.copy_(torch.randn(16))
        layer.mlp_scale.copy_(torch.randn(16))
    x = torch.randn(2, 7, 16, dtype=torch.float64)

    def plain(x, g1, g2):
        x = x + g1 * layer.attn(layer.attn_norm(x))
        return x + g2 * layer.mlp(layer.mlp_norm(x))

    torch.testing.assert_close(layer(x), plain(x, layer.attn_scale, layer.mlp_scale))
    unscaled = EncoderLayer(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0).double().eval()
    unscaled.load_state_dict(layer.state_dict(), strict=False)  # every weight but the two scales
    torch.testing.assert_close(unscaled(x), plain(x, 1.0, 1.0))


def test_layer_scale_starts_near_the_identity_and_its_scales_train() -> None:
    """A tiny start value makes each layer nearly the identity at initialisation (the point of LayerScale); the
    scales get gradients."""
    torch.manual_seed(0)
    layer = EncoderLayer(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0, layer_scale=1e-6)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(layer(x), x, rtol=0, atol=1e-4)
    assert layer.attn_scale.shape == layer.mlp_scale.shape == (16,)
    layer(x).square().sum().backward()
    assert layer.attn_scale.grad.abs().sum() > 0 and layer.mlp_scale.grad.abs().sum() > 0


def test_layer_scale_in_the_model_config() -> None:
    """``model.transformer.layer_scale`` adds two D-vectors per layer, trained without weight decay, and nothing at
    0 (the state dict of a model without it is unchanged); a negative value is refused by the model, nan by the
    config loader, both naming the key."""
    plain = build_model(SMALL_MODEL)
    assert not [name for name, _ in plain.named_parameters() if name.endswith("_scale")]
    scaled = build_model({**SMALL_MODEL, "transformer": {**SMALL_MODEL["transformer"], "layer_scale": 0.1}})
    scales = {name: p for name, p in scaled.named_parameters() if name.endswith("_scale")}
    assert sorted(scales) == ["transformer.layers.0.attn_scale", "transformer.layers.0.mlp_scale"]
    assert all(torch.equal(p, torch.full((64,), 0.1)) for p in scales.values())
    no_decay = {id(p) for p in param_groups(scaled)["head_no_decay"]}
    assert all(id(p) in no_decay for p in scales.values())  # trained without weight decay, as norms and biases
    for bad, message in ((-0.1, "must be >= 0"), (float("nan"), "expected float, got nan")):
        with pytest.raises(ValueError, match=f"model.transformer.layer_scale.*{message}"):
            build_model({**SMALL_MODEL, "transformer": {**SMALL_MODEL["transformer"], "layer_scale": bad}})


def test_every_layer_output_is_each_prefix_of_the_stack_normalised() -> None:
    """``every_layer`` returns, in float64, the final norm of the input run through the first 1, 2, ... L layers;
    the last is the plain output. A stack of no layers has nothing to return."""
    torch.manual_seed(0)
    transformer = GlobalTransformer(in_channels=8, dim=16, layers=3, heads=4, mlp_ratio=2.0).double().eval()
    tokens, centroids = torch.randn(2, 5, 8, dtype=torch.float64), torch.rand(2, 5, 2, dtype=torch.float64)
    every = transformer(tokens, centroids, every_layer=True)
    assert every.shape == (3, 2, 5, 16)
    x = transformer.input(tokens) + transformer.position(centroids)
    for i, layer in enumerate(transformer.layers):
        x = layer(x)
        torch.testing.assert_close(every[i], transformer.norm(x))
    torch.testing.assert_close(every[-1], transformer(tokens, centroids))
    with pytest.raises(ValueError, match="transformer.layers >= 1"):
        GlobalTransformer(8, 16, layers=0, heads=4)(tokens.float(), centroids.float(), every_layer=True)


def test_drop_path_drops_whole_branches_per_sample_in_training_only() -> None:
    """With ``drop_path`` p, in training, each sample's output is one of the four plain formulations: each branch
    kept (scaled by 1 / (1 - p)) or dropped, independently per sample (float64); in eval mode it is the layer
    without stochastic depth. Over 64 samples at p = 0.5 all four show up."""
    torch.manual_seed(0)
    p = 0.5
    layer = EncoderLayer(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0, layer_scale=0.1, drop_path=p).double()
    plain = EncoderLayer(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0, layer_scale=0.1).double().eval()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(64, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x), plain(x))

    def formulation(x, keep_attn, keep_mlp):
        x = x + keep_attn / (1 - p) * plain.attn_scale * plain.attn(plain.attn_norm(x))
        return x + keep_mlp / (1 - p) * plain.mlp_scale * plain.mlp(plain.mlp_norm(x))

    out = layer.train()(x)
    seen = set()
    for sample in range(64):
        matches = [(a, m) for a in (0, 1) for m in (0, 1)
                   if torch.allclose(out[sample], formulation(x[sample : sample + 1], a, m)[0])]
        assert len(matches) == 1, f"sample {sample} matches {matches}"
        seen.add(matches[0])
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_drop_path_rises_linearly_over_the_layers_and_is_checked() -> None:
    """Layer i of L drops with probability ``drop_path * i / (L - 1)``: none on the first layer (so a one-layer
    stack has none), the configured rate on the last; the model refuses a rate outside [0, 1), naming the key."""
    transformer = GlobalTransformer(in_channels=8, dim=16, layers=3, heads=4, drop_path=0.2)
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in transformer.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    assert isinstance(GlobalTransformer(8, 16, layers=1, heads=4, drop_path=0.2).layers[0].drop_path, torch.nn.Identity)
    model = build_model({**SMALL_MODEL, "transformer": {**SMALL_MODEL["transformer"], "drop_path": 0.1}})
    assert model.state_dict().keys() == build_model(SMALL_MODEL).state_dict().keys()  # no weights of its own
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="model.transformer.drop_path is a probability"):
            build_model({**SMALL_MODEL, "transformer": {**SMALL_MODEL["transformer"], "drop_path": bad}})


def test_qk_norm_is_attention_over_normalised_queries_and_keys() -> None:
    """In float64, attention with ``qk_norm`` equals its plain formulation: per head,
    ``softmax(LN_q(q) LN_k(k)^T / sqrt(d)) v`` then the output projection, with the norms' weights set to random
    values; without it the norms are absent (no parameters) and the logits are the raw ``q k^T / sqrt(d)``."""
    torch.manual_seed(0)
    dim, heads = 16, 4
    attn = SelfAttention(dim, heads, qk_norm=True).double().eval()
    with torch.no_grad():
        for norm in (attn.q_norm, attn.k_norm):
            norm.weight.copy_(torch.randn(dim // heads))
            norm.bias.copy_(torch.randn(dim // heads))
    x = torch.randn(2, 7, dim, dtype=torch.float64)

    def plain(attn, q_norm, k_norm):
        q, k, v = attn.qkv(x).view(2, 7, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        logits = q_norm(q) @ k_norm(k).transpose(-1, -2) / (dim // heads) ** 0.5
        out = logits.softmax(-1) @ v  # (B, heads, N, d)
        return attn.proj(out.transpose(1, 2).reshape(2, 7, dim))

    torch.testing.assert_close(attn(x), plain(attn, attn.q_norm, attn.k_norm))
    bare = SelfAttention(dim, heads).double().eval()
    assert set(bare.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    bare.load_state_dict(attn.state_dict(), strict=False)
    torch.testing.assert_close(bare(x), plain(bare, lambda q: q, lambda k: k))
    model = build_model({**SMALL_MODEL, "transformer": {**SMALL_MODEL["transformer"], "qk_norm": True}})
    assert {name for name in model.state_dict() if "_norm." in name and ".attn." in name} == {
        f"transformer.layers.0.attn.{n}_norm.{p}" for n in "qk" for p in ("weight", "bias")}
