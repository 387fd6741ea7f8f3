"""The assembled superpixel transformer: shapes, probabilities, padding, losses, learning."""

import pytest
import torch
from conftest import SMALL_MODEL as SMALL

from spxseg import build_model
from spxseg.config import ModelConfig
from spxseg.models import model_loss, segmentation_loss, superpixel_targets
from spxseg.models import superpixel_ops as ops


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SMALL)


@pytest.mark.parametrize("size", [(97, 203), (32, 32), (255, 511)])
def test_forward_backward_any_size(model, size):
    h, w = size
    images = torch.randn(2, 3, h, w)
    out = model(images)
    gh, gw = -(-h // 16), -(-w // 16)  # superpixels of 4*4 stride-4 pixels over the image, rounded up
    assert out.probs.shape == (2, 5, h, w)
    assert out.sp_logits.shape == (2, 5, gh, gw)
    assert out.assoc.shape == (2, 9, gh * 4, gw * 4)
    assert out.superpixels.shape == (2, h, w) and out.superpixels.dtype == torch.int64
    torch.testing.assert_close(out.probs.sum(1), torch.ones(2, h, w))
    assert (out.probs >= 0).all()
    assert out.superpixels.min() >= 0 and out.superpixels.max() < gh * gw
    torch.testing.assert_close(out.assoc.sum(1), torch.ones(2, gh * 4, gw * 4))

    labels = torch.randint(0, 5, (2, h, w))
    labels[:, : h // 3] = 255
    loss = segmentation_loss(out, labels, model.cfg.loss, model.stride)
    assert torch.isfinite(loss.total)
    loss.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_probabilities_are_the_projection_of_superpixel_classes(model):
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    at_stride = ops.project(out.assoc, out.sp_logits.softmax(1))  # (1, K, 16, 16)
    upsampled = torch.nn.functional.interpolate(at_stride, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.probs, upsampled, rtol=1e-5, atol=1e-6)
    # hard ids: argmax association of each stride-4 pixel, mapped to the grid
    j = out.assoc.argmax(1)[0]  # (16, 16)
    ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    ids = (ys // 4 + j // 3 - 1) * 4 + xs // 4 + j % 3 - 1
    assert torch.equal(out.superpixels[0, ::4, ::4], ids)
    model.train()


def test_padding_is_masked(model):
    """A 57x60 image is padded to 64x64: exactly the stride-4 pixels past the image are masked."""
    valid = model._valid_cells(57, 60, 16, 16, torch.zeros(1))  # (1, Gh, Gw, 1, n)
    grid = ops.from_cells(valid.transpose(-1, -2), model.cell)[0, 0]  # (16, 16)
    expected = torch.zeros(16, 16)
    expected[:15, :15] = 1  # rows 0..14 start inside 57 px (14 * 4 = 56), columns inside 60
    assert torch.equal(grid, expected)


@pytest.mark.parametrize("size, grid, valid_rows, valid_cols", [
    # 90x100 -> the backbone runs on 96x128 (a 24x32 stride-4 map), cut to 24x27: 8x9 cells over the 23x25
    # stride-4 pixels that cover the image (rows 0..22 start inside 90 px, 22 * 4 = 88; columns 0..24 inside 100)
    ((90, 100), (8, 9), 23, 25),
    # 64x64 -> a 16x16 stride-4 map, zero-padded to 18x18: 6x6 cells (the backbone map is smaller than the grid)
    ((64, 64), (6, 6), 16, 16),
])
def test_a_cell_that_does_not_divide_the_backbone_stride(size, grid, valid_rows, valid_cols) -> None:
    """Cell 3 (configs/camvid/spx_lite0_mid.yaml): the input is padded to the backbone's stride only (32) and the
    stride-4 features cut or padded to whole cells; the padding is masked, the probabilities still sum to 1
    and the lean labels are the full path's."""
    torch.manual_seed(0)
    model = build_model({**SMALL, "cell": 3}).double().eval()
    assert model.size_multiple == 32
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        labels = model.predict(x).labels
    h, w = grid[0] * 3, grid[1] * 3
    assert out.sp_logits.shape == (1, 5, *grid) and out.assoc.shape == (1, 9, h, w)
    assert out.probs.shape == (1, 5, *size) and out.superpixels.shape == (1, *size)
    assert int(out.superpixels.max()) < grid[0] * grid[1]
    torch.testing.assert_close(out.probs.sum(1), torch.ones(1, *size, dtype=torch.float64))
    assert torch.equal(labels, out.probs.argmax(1))
    valid = ops.from_cells(model._valid_cells(*size, h, w, x).transpose(-1, -2), 3)[0, 0]
    expected = torch.zeros(h, w, dtype=torch.float64)
    expected[:valid_rows, :valid_cols] = 1
    assert torch.equal(valid, expected)


def test_no_superpixel_lies_on_padding_only() -> None:
    """180x240 at cell 3 (spx_lite0_mid's training size) is 15x20 whole cells, none of them on padding; the
    padded 192x256 backbone input is cut back to the image's 45x60 stride-4 pixels."""
    model = build_model({**SMALL, "cell": 3}).eval()
    with torch.no_grad():
        coarse = model.coarse(torch.randn(1, 3, 180, 240))
    assert coarse.sp_logits.shape[1:3] == (15, 20) and coarse.padded == (180, 240)


@pytest.mark.parametrize("stride, cell", [(4, 3), (8, 2)])
def test_pad_input_false_runs_the_backbone_on_the_image_itself(stride, cell) -> None:
    """``model.pad_input: false``: the backbone sees the 90x100 image, not 96x128; its stride-s map (the ceil of
    size / s, 23x25 or 12x13 here) is cut or padded to whole cells as with padding, the padding is masked, the
    probabilities sum to 1 and the lean labels are the full path's. On a 64x96 image (multiples of 32) it is the
    padded model exactly."""
    torch.manual_seed(0)
    cfg = {**SMALL, "pixel_stride": stride, "cell": cell, "backbone": {"name": "resnet18", "out_indices": [1, 2, 3, 4]}
           if stride == 8 else SMALL["backbone"]}
    model = build_model({**cfg, "pad_input": False}).double().eval()
    padded = build_model(cfg).double().eval()
    padded.load_state_dict(model.state_dict())
    assert model.size_multiple == 1 and padded.size_multiple == 32
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    x = torch.randn(1, 3, 90, 100, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        labels = model.predict(x).labels
    assert seen[0] == (90, 100)
    grid = (-(-90 // (stride * cell)), -(-100 // (stride * cell)))
    assert out.sp_logits.shape == (1, 5, *grid) and out.probs.shape == (1, 5, 90, 100)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(1, 90, 100, dtype=torch.float64))
    assert torch.equal(labels, out.probs.argmax(1))
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).probs, padded(x).probs, rtol=0, atol=0)


def test_pixel_loss_is_the_mean_over_labelled_pixels_and_zero_without_any(model):
    images = torch.randn(2, 3, 64, 64)
    out = model(images)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[0, :40] = 255
    loss = segmentation_loss(out, labels, model.cfg.loss, model.stride)
    expected = torch.nn.functional.nll_loss(out.probs.clamp_min(1e-8).log(), labels, ignore_index=255)
    torch.testing.assert_close(loss.pixel, expected)

    # a crop with no labelled pixel (all void) must not stop training with a NaN
    loss = segmentation_loss(out, torch.full_like(labels, 255), model.cfg.loss, model.stride)
    assert loss.pixel.item() == 0.0 and loss.superpixel.item() == 0.0 and loss.total.item() == 0.0
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()


def test_superpixel_targets_are_histograms():
    assoc = torch.zeros(1, 9, 4, 4)
    assoc[:, 4] = 1.0  # every pixel belongs to its own cell: 2x2 grid of 2x2 cells
    labels = torch.tensor([[0, 0, 1, 1], [0, 2, 1, 1], [255, 255, 2, 2], [255, 255, 2, 1]])
    hist, mass = superpixel_targets(assoc, labels[None], num_classes=3, stride=1, cell=2)
    torch.testing.assert_close(hist[0, 0, 0], torch.tensor([0.75, 0.0, 0.25]))
    torch.testing.assert_close(hist[0, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert mass[0, 1, 0] == 0  # all ignore: skipped by the loss
    torch.testing.assert_close(hist[0, 1, 1], torch.tensor([0.0, 0.25, 0.75]))


def test_config_variants_and_errors():
    m = build_model({"model": {"num_classes": 3, "backbone": {"name": "resnet18"}, "tokenizer": {"dual_path": True}}})
    out = m(torch.randn(1, 3, 64, 96))
    assert out.probs.shape == (1, 3, 64, 96)
    assert isinstance(m.cfg, ModelConfig)
    with pytest.raises(ValueError, match="model.backbone.nam"):
        build_model({"backbone": {"nam": "resnet18"}})
    with pytest.raises(ValueError, match="unknown timm model"):
        build_model({"backbone": {"name": "resnet_does_not_exist"}})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        build_model({"backbone": {"name": "resnet18", "checkpoint": "/nonexistent/weights.pth"}})
    with pytest.raises(ValueError, match=r"similar: \['resnet18'"):
        build_model({"backbone": {"name": "resnet_18x"}})
    with pytest.raises(ValueError, match="model.backbone.out_indices"):
        build_model({"backbone": {"name": "resnet18", "out_indices": [5]}})
    for key, section in (("cell", {"cell": 0}), ("tokenizer.heads", {"tokenizer": {"heads": 0}}),
                         ("pixel_stride", {"pixel_stride": 0})):
        with pytest.raises(ValueError, match=f"model.{key} must be >= 1"):
            build_model({"backbone": {"name": "resnet18"}, **section})
    ablation = build_model({"backbone": {"name": "resnet18"}, "channels": 32, "tokenizer": {"iters": 0},
                            "transformer": {"layers": 0, "dim": 32, "heads": 2}})
    assert ablation(torch.randn(1, 3, 64, 64)).probs.shape == (1, 19, 64, 64)


def test_backbone_checkpoint_is_loaded_from_a_local_file(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    m = build_model({"backbone": {"name": "resnet18", "checkpoint": str(path)}})
    assert torch.all(m.backbone.body.conv1.weight == 0.125)


def test_timm_checkpoint_loads_under_the_names_features_only_gives(tmp_path):
    """timm's ``features_only`` model names ConvNeXt's ``stem.0`` ``stem_0``: a file of ``timm.create_model(name)``'s
    state dict loads all the same."""
    import timm

    if "test_convnext" not in timm.list_models("test_*"):
        pytest.skip("this timm has no tiny test models")
    reference = timm.create_model("test_convnext", pretrained=False)
    torch.nn.init.constant_(reference.stem[0].weight, 0.125)
    torch.nn.init.constant_(reference.stages[1].blocks[0].conv_dw.weight, -0.5)
    torch.save(reference.state_dict(), tmp_path / "convnext.pth")
    m = build_model({"backbone": {"name": "test_convnext", "checkpoint": str(tmp_path / "convnext.pth")}})
    assert torch.all(m.backbone.body.stem_0.weight == 0.125)
    assert torch.all(m.backbone.body.stages_1.blocks[0].conv_dw.weight == -0.5)


def test_channels_last_backbone_stages_are_read_as_nchw():
    """Backbones whose stages come out (B, H, W, C) (timm's ``output_fmt`` NHWC: MambaOut, Swin) feed the model."""
    import timm

    if "test_mambaout" not in timm.list_models("test_*"):
        pytest.skip("this timm has no tiny test models")
    torch.manual_seed(0)
    m = build_model({"num_classes": 5, "backbone": {"name": "test_mambaout"}, "channels": 16,
                     "transformer": {"layers": 1, "dim": 32, "heads": 2}}).eval()
    x = torch.randn(1, 3, 64, 96)
    stages = m.backbone(x)
    assert [tuple(f.shape[1:]) for f in stages] == [(c, 64 // r, 96 // r) for c, r in
                                                    zip(m.backbone.channels, m.backbone.strides, strict=True)]
    out = m(x)
    assert out.probs.shape == (1, 5, 64, 96)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(1, 64, 96))


def test_the_model_keeps_its_own_config():
    from spxseg.config import ModelConfig, from_dict

    cfg = from_dict(ModelConfig, {"num_classes": 4, "backbone": {"name": "resnet18"}, "channels": 16,
                                  "transformer": {"layers": 1, "dim": 32, "heads": 2}})
    m = build_model(cfg)
    cfg.backbone.freeze_bn, cfg.loss.superpixel_weight = True, 123.0  # the caller edits its config afterwards
    assert not m.cfg.backbone.freeze_bn and m.cfg.loss.superpixel_weight != 123.0


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(SMALL)
    images = torch.randn(2, 3, 64, 64)
    labels = torch.zeros(2, 64, 64, dtype=torch.int64)
    labels[:, :, 32:] = 1
    labels[:, 40:, :] = 2
    labels[:, 10:20, 10:20] = 3
    images[:, 0] += labels * 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = segmentation_loss(model(images), labels, model.cfg.loss, model.stride).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses


def test_a_hand_written_loss_loop_over_the_documented_outputs_trains():
    """Users train with their own loss on ``out.probs`` (B, K, H, W): nll_loss's backward must accept it."""
    torch.manual_seed(0)
    model = build_model({**SMALL, "backbone": {"name": "resnet18"}})
    images, labels = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 64, 96))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(images)
    loss = torch.nn.functional.nll_loss(out.probs.clamp_min(1e-8).log(), labels)
    loss.backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():  # inference keeps the faster channels-last layout; same values either way
        assert torch.allclose(model.eval()(images).probs, model(images).probs.contiguous())


@pytest.mark.parametrize("architecture", ["spx", "fpn"])
def test_freeze_bn_keeps_backbone_statistics_and_trains_affine(architecture) -> None:
    """model.backbone.freeze_bn: training steps leave the backbone's running statistics as loaded (also after
    an eval / train round trip) while its BN weights still learn; without it the statistics move."""
    if architecture == "fpn":
        pytest.importorskip("segmentation_models_pytorch")
    from torch.nn.modules.batchnorm import _BatchNorm

    def run(freeze: bool) -> tuple[bool, bool]:
        torch.manual_seed(0)
        cfg = {"architecture": architecture, "num_classes": 3, "backbone": {"name": "resnet18", "freeze_bn": freeze}}
        if architecture == "spx":
            cfg.update(cell=4, channels=16, transformer={"layers": 1, "dim": 32, "heads": 2})
        model = build_model(cfg)
        norms = [m for m in model.backbone.modules() if isinstance(m, _BatchNorm)]
        stats = [m.running_mean.clone() for m in norms]
        weights = [m.weight.detach().clone() for m in norms]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            model.eval()
            model.train()  # the trainer's evaluation round trip must not unfreeze
            out = model(torch.randn(2, 3, 64, 64))
            model_loss(out, torch.randint(0, 3, (2, 64, 64)), model.cfg).total.backward()
            opt.step()
            opt.zero_grad()
        same_stats = all(torch.equal(a, m.running_mean) for a, m in zip(stats, norms))
        same_weights = all(torch.equal(a, m.weight) for a, m in zip(weights, norms))
        return same_stats, same_weights

    assert run(freeze=True) == (True, False)
    assert run(freeze=False) == (False, False)


def test_distance_prior_favours_the_own_cell_and_trains() -> None:
    from spxseg.models.tokenizer import distance_prior

    prior = distance_prior(4)
    assert prior.shape == (9, 16)
    assert (prior.argmax(0) == 4).all()  # every pixel is closest to its own cell's centre
    assert prior[0, 0] > prior[8, 0]  # the top-left pixel is nearer the top-left neighbour than the bottom-right
    torch.manual_seed(0)
    model = build_model({"num_classes": 3, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
                         "tokenizer": {"position_bias": True}, "transformer": {"layers": 1, "dim": 32, "heads": 2}})
    torch.testing.assert_close(model.tokenizer.position_bias.detach(), prior)
    out = model(torch.randn(1, 3, 64, 64))
    segmentation_loss(out, torch.randint(0, 3, (1, 64, 64)), model.cfg.loss, model.stride).total.backward()
    assert model.tokenizer.position_bias.grad.abs().sum() > 0


def test_shared_qk_has_no_key_projections_and_every_weight_trains() -> None:
    """``tokenizer.shared_qk``: the superpixel keys use the pixel query's weights, so the key layers are not
    built (DDP would otherwise wait for their gradients), and every tokenizer weight still gets a gradient."""
    torch.manual_seed(0)
    model = build_model({"num_classes": 3, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
                         "tokenizer": {"shared_qk": True}, "transformer": {"layers": 1, "dim": 32, "heads": 2}})
    names = [name for name, _ in model.tokenizer.named_parameters()]
    assert not any("key" in name for name in names), names
    out = model(torch.randn(1, 3, 64, 64))
    segmentation_loss(out, torch.randint(0, 3, (1, 64, 64)), model.cfg.loss, model.stride).total.backward()
    no_grad = [name for name, p in model.tokenizer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad


def test_cell_max_is_the_max_over_each_cells_image_pixels() -> None:
    """``transformer.cell_max``: the second half of every token is the channel-wise max of its cell's image
    pixels, a plain max-pool of the stride-s features with the padding left out (features can be negative)."""
    from spxseg.models.superpixel_model import _cell_max

    torch.manual_seed(0)
    pix = torch.randn(2, 8, 20, 12, dtype=torch.float64) - 1.0  # (B, C, h, w): mostly negative
    valid = torch.ones(1, 1, 20, 12, dtype=torch.float64)
    valid[..., 18:, :] = 0  # the last two rows are padding
    valid[..., 11:] = 0  # and the last column
    plain = torch.nn.functional.max_pool2d(pix.masked_fill(valid == 0, float("-inf")), 4)  # (B, C, 5, 3)
    cells = _cell_max(ops.to_cells(pix, 4), ops.to_cells(valid, 4).transpose(-1, -2).expand(2, -1, -1, -1, -1))
    torch.testing.assert_close(cells, plain.permute(0, 2, 3, 1), rtol=0, atol=0)
    torch.testing.assert_close(_cell_max(ops.to_cells(pix, 4), None), torch.nn.functional.max_pool2d(pix, 4)
                               .permute(0, 2, 3, 1), rtol=0, atol=0)


def test_sample_on_grid_is_pytorchs_bilinear_resize() -> None:
    """``sample_on_grid`` (``transformer.backbone_skip``) against ``F.interpolate`` by the cell's scale, in float64:
    superpixels of 16 pixels over stride-16 / 32 maps (a crop, a 2x upsampling) and of 12 (scales 4/3 and 8/3)."""
    from spxseg.models.superpixel_model import sample_on_grid

    torch.manual_seed(0)
    maps = [torch.randn(2, 5, 24, 30, dtype=torch.float64), torch.randn(2, 7, 12, 15, dtype=torch.float64)]
    for cell_pixels, gh, gw in ((16, 23, 30), (12, 30, 40)):
        plain = [torch.nn.functional.interpolate(m, scale_factor=r / cell_pixels, mode="bilinear", align_corners=False,
                                                 recompute_scale_factor=False)[..., :gh, :gw]
                 for m, r in zip(maps, (16, 32), strict=True)]
        torch.testing.assert_close(sample_on_grid(maps, [16, 32], cell_pixels, gh, gw),
                                   torch.cat(plain, 1).permute(0, 2, 3, 1), rtol=0, atol=1e-12)
    # a grid reaching past the map (the resize would be too small): the map's edge, as PyTorch clamps
    edge = sample_on_grid(maps[:1], [16], 16, 25, 30)
    torch.testing.assert_close(edge[:, 24], maps[0][:, :, 23].transpose(1, 2), rtol=0, atol=0)
    # bf16 maps (autocast) of a wide image: positions past 256 stay exact (bf16 would round 259 up to 260,
    # past the map's last column)
    wide = torch.randn(1, 2, 1, 260, dtype=torch.float64)
    got = sample_on_grid([wide.bfloat16()], [16], 16, 1, 260)
    torch.testing.assert_close(got.double(), sample_on_grid([wide.bfloat16().double()], [16], 16, 1, 260),
                               rtol=0, atol=0)


@pytest.mark.parametrize("options", [{"tokenizer": {"final_pool": True}}, {"transformer": {"cell_max": True}},
                                     {"transformer": {"backbone_skip": True}}])
def test_final_pool_and_cell_max_build_and_every_weight_trains(options) -> None:
    """``tokenizer.final_pool`` adds ``Wf`` (C -> C), ``transformer.cell_max`` widens the transformer's input
    projection to 2C, ``transformer.backbone_skip`` to C plus the backbone's two coarsest stages (256 + 512 channels
    for ResNet-18); on a padded image (57x60) the outputs stay finite and every head weight gets a gradient."""
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
           "transformer": {"layers": 1, "dim": 32, "heads": 2}}
    cfg = {**cfg, **{k: {**cfg.get(k, {}), **v} for k, v in options.items()}}
    model = build_model(cfg)
    if "tokenizer" in options:
        assert model.tokenizer.final_out.weight.shape == (16, 16)
    elif options["transformer"].get("cell_max"):
        assert model.transformer.input.weight.shape == (32, 32)
    else:
        assert model.transformer.input.weight.shape == (32, 16 + 256 + 512)
    out = model(torch.randn(1, 3, 57, 60))
    assert torch.isfinite(out.probs).all() and torch.isfinite(out.sp_logits).all()
    segmentation_loss(out, torch.randint(0, 3, (1, 57, 60)), model.cfg.loss, model.stride).total.backward()
    heads = [(name, p) for name, p in model.named_parameters() if not name.startswith("backbone")]
    no_grad = [name for name, p in heads if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
