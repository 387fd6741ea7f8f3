"""The final association at a finer stride (``model.projection_stride``): its maths against a per-pixel loop, and
the model's outputs, losses and lean path at that stride."""

import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_MODEL as SMALL

from spxseg import build_model
from spxseg.models import model_loss, segmentation_loss
from spxseg.models import superpixel_ops as ops
from spxseg.models.fine_association import FineAssociation


def _plain_association(feats: torch.Tensor, sp: torch.Tensor, coarse: torch.Tensor, module: FineAssociation,
                       cell: int) -> torch.Tensor:
    """Per fine pixel: softmax over the in-grid ones of its cell's 9 neighbours of its stride-s pixel's log A* plus
    <LN(q), LN(Wk s)> / sqrt(dim).

    feats (B, dim, H, W) fine pixel features, sp (B, Gh, Gw, C), coarse (B, 9, h, w) the stride-s association ->
    (B, 9, H, W) with 0 for out-of-grid neighbours.
    """
    ratio = feats.shape[-1] // coarse.shape[-1]
    b, dim, height, width = feats.shape
    gh, gw = sp.shape[1:3]
    query = module.query_norm(feats.permute(0, 2, 3, 1))  # (B, H, W, dim)
    key = module.key_norm(module.key(sp))  # (B, Gh, Gw, dim)
    out = torch.zeros(b, 9, height, width, dtype=feats.dtype)
    for y in range(height):
        for x in range(width):
            gy, gx = y // cell, x // cell
            logits = torch.full((b, 9), float("-inf"), dtype=feats.dtype)
            for j, (dy, dx) in enumerate(ops.OFFSETS):
                ny, nx = gy + dy, gx + dx
                if 0 <= ny < gh and 0 <= nx < gw:
                    prior = coarse[:, j, y // ratio, x // ratio].log()
                    logits[:, j] = prior + (query[:, y, x] * key[:, ny, nx]).sum(-1) / dim**0.5
            out[:, :, y, x] = logits.softmax(1)
    return out


def test_fine_association_matches_its_plain_formulation() -> None:
    """float64: the cell-layout association equals a per-pixel loop, neighbours outside the grid get nothing."""

    torch.manual_seed(0)
    module = FineAssociation([6, 5], channels=8, dim=4).double()
    pix = torch.randn(2, 8, 6, 6, dtype=torch.float64)  # stride-s features: 3 x 3 cells of cell 2 at stride s
    # the stages at s/4 and s/2, larger than the grid (cut) or smaller (zero-padded)
    stages = [torch.randn(2, 6, 25, 25, dtype=torch.float64), torch.randn(2, 5, 13, 11, dtype=torch.float64)]
    sp = torch.randn(2, 3, 3, 8, dtype=torch.float64)
    valid = ops.neighbor_valid(3, 3).view(1, 3, 3, 9, 1)
    coarse = torch.randn(2, 3, 3, 9, 4, dtype=torch.float64).masked_fill(~valid, float("-inf")).softmax(3)
    cell = 2 * 4
    with torch.no_grad():
        assoc = ops.assoc_from_cells(module(pix, stages, sp, coarse), cell)  # (B, 9, 24, 24)
        feats = module.pixel_features(pix, stages)
        expected = _plain_association(feats, sp, ops.assoc_from_cells(coarse, 2), module, cell)
    assert feats.shape == (2, 4, 24, 24) and assoc.shape == (2, 9, 24, 24)
    torch.testing.assert_close(assoc, expected, rtol=1e-12, atol=1e-12)
    # the fine features: the stride-s map's projection upsampled x2 per stage, plus each stage's projection
    with torch.no_grad():
        top = F.interpolate(module.top(pix), scale_factor=2, mode="bilinear", align_corners=False)
        half = top + F.pad(module.lateral[1](stages[1])[..., :12, :], (0, 1))
        mid = F.interpolate(half, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(feats, mid + module.lateral[0](stages[0])[..., :24, :24], rtol=1e-12, atol=1e-12)


def test_without_fine_keys_each_fine_pixel_takes_its_stride_s_pixels_association() -> None:
    """Zero keys (no fine dot products): the stride-2 association is the stride-4 one, each pixel repeated 2x2."""
    torch.manual_seed(0)
    module = FineAssociation([6], channels=8, dim=4)
    torch.nn.init.zeros_(module.key_norm.weight)
    valid = ops.neighbor_valid(2, 3).view(1, 2, 3, 9, 1)
    coarse = torch.randn(1, 2, 3, 9, 9).masked_fill(~valid, float("-inf")).softmax(3)  # cell 3 at stride s
    with torch.no_grad():
        fine = module(torch.randn(1, 8, 6, 9), [torch.randn(1, 6, 12, 18)], torch.randn(1, 2, 3, 8), coarse)
    repeated = ops.assoc_from_cells(coarse, 3).repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(ops.assoc_from_cells(fine, 6), repeated)


@pytest.fixture(scope="module")
def fine_model():
    torch.manual_seed(0)
    return build_model({**SMALL, "projection_stride": 2, "projection_channels": 8})


def test_projection_stride_puts_the_association_and_outputs_at_the_finer_stride(fine_model) -> None:
    model = fine_model
    assert model.stride == 2 and model.cell == 8 and model.pixel_stride == 4 and model.pixel_cell == 4
    assert model.fine_association is not None
    h, w = 70, 90  # padded to whole 16-pixel superpixels: 5 x 6 of them, 40 x 48 stride-2 pixels
    images = torch.randn(2, 3, h, w)
    out = model(images)
    assert out.sp_logits.shape == (2, 5, 5, 6) and out.assoc.shape == (2, 9, 40, 48)
    torch.testing.assert_close(out.assoc.sum(1), torch.ones(2, 40, 48))
    torch.testing.assert_close(out.probs.sum(1), torch.ones(2, h, w))
    assert out.superpixels.min() >= 0 and out.superpixels.max() < 30

    labels = torch.randint(0, 5, (2, h, w))
    labels[:, :20] = 255
    loss = model_loss(out, labels, model.cfg)
    torch.testing.assert_close(loss.total, segmentation_loss(out, labels, model.cfg.loss, model.stride).total)
    loss.total.backward()
    for name, p in model.fine_association.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model.zero_grad()


def test_projection_stride_probabilities_and_lean_labels(fine_model) -> None:
    """The probabilities are the classes projected through the stride-2 association and resized; ``predict``
    gives their argmax without writing them, and the hard ids of the stride-2 association."""
    model = fine_model.eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(images)
        pred = model.predict(images, superpixels=True)
    at_stride = ops.project(out.assoc, out.sp_logits.softmax(1))  # (1, K, 32, 48)
    expected = F.interpolate(at_stride, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.probs, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(pred.labels, out.probs.argmax(1))
    assert torch.equal(pred.superpixels, out.superpixels)
    fine_model.train()


def test_projection_stride_with_the_auxiliary_classifier() -> None:
    """The auxiliary classifier stays at the pixel stride (its labels sampled there) when the association is finer."""
    torch.manual_seed(0)
    model = build_model({**SMALL, "projection_stride": 2, "loss": {"aux_pixel_weight": 0.4}})
    out = model(torch.randn(1, 3, 64, 64))
    assert out.aux_logits.shape == (1, 5, 16, 16) and out.assoc.shape == (1, 9, 32, 32)
    labels = torch.randint(0, 5, (1, 64, 64))
    loss = model_loss(out, labels, model.cfg)
    small = labels[:, 2::4, 2::4]  # the stride-4 pixel centres
    torch.testing.assert_close(loss.aux, F.cross_entropy(out.aux_logits, small))


def test_default_projection_is_the_pixel_stride() -> None:
    model = build_model(SMALL)
    assert model.fine_association is None and (model.stride, model.cell) == (4, 4)
    assert model.backbone.strides[0] == 4  # no finer stage is run through for nothing


@pytest.mark.parametrize("overrides, match", [
    ({"projection_stride": 3}, "projection_stride must be 0 .* divided by a power of two, got 3"),
    ({"projection_stride": 8}, "projection_stride must be 0 .* got 8"),
    ({"projection_stride": 2, "backbone": {"name": "resnet18", "out_indices": [1, 2, 3, 4]}},
     r"projection_stride=2: needs backbone stages at strides \[2\] .* has \[4, 8, 16, 32\]"),
])
def test_projection_stride_errors_name_the_key(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_model({**SMALL, **overrides})


def test_profiler_breakdown_times_the_fine_association_as_a_stage(fine_model) -> None:
    """The profiler's per-stage breakdown has a ``fine_association`` row for such models (and none for others)."""
    from spxseg.benchmark import RunSettings, format_stages, stage_breakdown

    x = torch.randn(1, 3, 64, 64)
    stages = stage_breakdown(fine_model.eval(), x, RunSettings(), iters=1, warmup=0)
    fine_model.train()
    assert set(stages) == {"backbone", "pixel_decoder", "tokenizer", "fine_association", "transformer", "head", "total"}
    assert all(v >= 0 for k, v in stages.items() if k != "head") and "fine_association" in format_stages(stages)
    plain = stage_breakdown(build_model(SMALL).eval(), x, RunSettings(), iters=1, warmup=0)
    assert "fine_association" not in plain and "fine_association" not in format_stages(plain)


def test_stride_s_association_without_stages_matches_its_plain_formulation() -> None:
    """float64, no stages (``model.reassociate`` at the pixel stride): the refinement at stride s itself, keys of
    another width (the transformer's D), against the per-pixel loop."""
    torch.manual_seed(0)
    module = FineAssociation([], channels=8, dim=4, key_channels=12).double()
    pix = torch.randn(2, 8, 6, 9, dtype=torch.float64)  # 2 x 3 cells of cell 3
    tokens = torch.randn(2, 2, 3, 12, dtype=torch.float64)
    valid = ops.neighbor_valid(2, 3).view(1, 2, 3, 9, 1)
    coarse = torch.randn(2, 2, 3, 9, 9, dtype=torch.float64).masked_fill(~valid, float("-inf")).softmax(3)
    with torch.no_grad():
        assoc = ops.assoc_from_cells(module(pix, [], tokens, coarse), 3)
        feats = module.pixel_features(pix, [])
        expected = _plain_association(feats, tokens, ops.assoc_from_cells(coarse, 3), module, 3)
    assert feats.shape == (2, 4, 6, 9) and assoc.shape == (2, 9, 6, 9)
    torch.testing.assert_close(assoc, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(feats, module.top(pix), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("projection_stride", [0, 2])
def test_reassociate_refines_the_final_association_from_the_transformer_tokens(projection_stride) -> None:
    """``model.reassociate``: the association the classes go through is the tokenizer's refined with keys from the
    transformer's tokens (after it, at the projection stride), and the pixel loss trains the transformer through it."""
    torch.manual_seed(0)
    cfg = {**SMALL, "reassociate": True, "projection_stride": projection_stride, "projection_channels": 8}
    model = build_model(cfg)
    assert model.fine_association.key.in_features == SMALL["transformer"]["dim"]
    seen = {}
    model.transformer.register_forward_hook(lambda m, args, out: seen.update(tokens=out))
    model.tokenizer.register_forward_hook(lambda m, args, out: seen.update(assoc=out[1]))
    model.fine_association.register_forward_hook(lambda m, args, out: seen.update(args=args, fine=out))
    images = torch.randn(2, 3, 64, 80)  # 4 x 5 superpixels of 16 pixels
    out = model(images)
    stride = projection_stride or 4
    gh, gw, cell = 4, 5, 16 // stride
    assert out.assoc.shape == (2, 9, 64 // stride, 80 // stride)
    torch.testing.assert_close(out.assoc.sum(1), torch.ones(2, 64 // stride, 80 // stride))
    # the refinement gets the transformer's tokens as keys and the tokenizer's association as its prior, and
    # its output is the association the model returns; with other keys it would differ
    pix_map, fine, keys, prior = seen["args"]
    assert torch.equal(keys, seen["tokens"].view(2, gh, gw, -1)) and torch.equal(prior, seen["assoc"])
    assert torch.equal(out.assoc, ops.assoc_from_cells(seen["fine"], cell))
    refined = seen["fine"]
    with torch.no_grad():  # zero keys add no dot products: the tokenizer's association at that stride
        unrefined = model.fine_association(pix_map, fine, torch.zeros_like(keys), prior)
    assert (refined - unrefined).abs().max() > 0.05
    # the pixel loss alone (no superpixel loss) reaches the transformer through the association too
    model.zero_grad()
    probs = out.probs.clamp_min(1e-8).log()
    F.nll_loss(probs, torch.randint(0, 5, (2, 64, 80))).backward()
    for name, p in model.fine_association.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert model.transformer.layers[0].mlp_norm.weight.grad.abs().sum() > 0
