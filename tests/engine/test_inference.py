"""Inference modes (whole, sliding window, flip / multi-scale TTA, mixed-size batches), evaluate() and Segmenter."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from spxseg import Segmenter
from spxseg.config import Config, ConfigError, EvalConfig, from_dict, to_dict
from spxseg.engine.evaluate import evaluate
from spxseg.engine.evaluator import SegEvaluator, confusion_matrix, metrics_from_confusion
from spxseg.engine.inference import infer_batch, infer_labels, infer_probs, window_boxes
from spxseg.models import build_model

TINY = {"num_classes": 5, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


class _Out(NamedTuple):
    probs: torch.Tensor


class PixelModel(nn.Module):
    """Per-pixel classifier: translation- and flip-equivariant, so every inference mode agrees."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x: torch.Tensor) -> _Out:
        return _Out(self.conv(x).softmax(1))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TINY).eval()


def test_window_boxes_cover_the_image() -> None:
    boxes = window_boxes((70, 100), (64, 64), (32, 32))
    assert boxes == [(0, 64, 0, 64), (0, 64, 32, 96), (0, 64, 36, 100),
                     (6, 70, 0, 64), (6, 70, 32, 96), (6, 70, 36, 100)]
    count = np.zeros((70, 100))
    for y0, y1, x0, x1 in window_boxes((70, 100), (64, 64), (48, 40)):
        assert (y1 - y0, x1 - x0) == (64, 64)
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1
    assert window_boxes((50, 60), (64, 64), (32, 32)) == [(0, 50, 0, 60)]  # crop larger than the image


def test_whole_equals_slide_when_one_window_covers_the_image(model) -> None:
    x = torch.randn(2, 3, 70, 100)
    whole = infer_probs(model, x, EvalConfig(mode="whole"))
    for crop in ([70, 100], [128, 128]):
        slide = infer_probs(model, x, EvalConfig(mode="slide", crop_size=crop, stride=[32, 32]))
        assert torch.equal(whole, slide)


def test_slide_count_map_with_overlapping_windows() -> None:
    m = PixelModel()
    x = torch.randn(1, 3, 70, 100)
    whole = infer_probs(m, x, EvalConfig())
    slide = infer_probs(m, x, EvalConfig(mode="slide", crop_size=[32, 48], stride=[20, 30], batch_size=4))
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)
    assert torch.allclose(slide.sum(1), torch.ones(1, 70, 100), atol=1e-5)


def test_slide_real_model_runs_with_batched_windows(model) -> None:
    x = torch.randn(1, 3, 70, 100)
    one = infer_probs(model, x, EvalConfig(mode="slide", crop_size=[64, 64], stride=[32, 32], batch_size=1))
    four = infer_probs(model, x, EvalConfig(mode="slide", crop_size=[64, 64], stride=[32, 32], batch_size=4))
    assert one.shape == (1, 5, 70, 100)
    torch.testing.assert_close(four, one, rtol=0, atol=1e-5)
    assert torch.allclose(one.sum(1), torch.ones(1, 70, 100), atol=1e-4)


def test_flip_tta_on_a_flip_symmetric_input(model) -> None:
    half = torch.randn(1, 3, 64, 48)
    x = torch.cat([half, half.flip(-1)], -1)  # x == flip(x)
    plain = infer_probs(model, x, EvalConfig())
    tta = infer_probs(model, x, EvalConfig(flip=True))
    assert torch.equal(tta, tta.flip(-1))  # the averaged prediction is mirror-symmetric
    assert torch.equal(tta, (plain + plain.flip(-1)) / 2)
    assert not torch.equal(plain, plain.flip(-1))  # the model itself is not flip-equivariant


def test_tta_with_equivariant_model_equals_plain() -> None:
    m = PixelModel()
    x = torch.randn(1, 3, 64, 96)
    plain = infer_probs(m, x, EvalConfig())
    torch.testing.assert_close(infer_probs(m, x, EvalConfig(flip=True)), plain, rtol=0, atol=1e-6)
    const = torch.ones(1, 3, 64, 96) * torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    ms = infer_probs(m, const, EvalConfig(scales=[0.5, 0.75, 1.5], flip=True), out_size=(40, 50))
    assert ms.shape == (1, 5, 40, 50)
    torch.testing.assert_close(ms, infer_probs(m, const, EvalConfig(), out_size=(40, 50)), rtol=0, atol=1e-6)


def test_multiscale_real_model(model) -> None:
    x = torch.randn(1, 3, 64, 96)
    assert torch.equal(infer_probs(model, x, EvalConfig(scales=[1.0])), infer_probs(model, x, EvalConfig()))
    probs = infer_probs(model, x, EvalConfig(scales=[0.5, 1.0, 1.5], flip=True), out_size=(128, 192))
    assert probs.shape == (1, 5, 128, 192)
    assert torch.allclose(probs.sum(1), torch.ones(1, 128, 192), atol=1e-4)


def test_channels_last_feeds_nhwc_images_with_the_same_result(model) -> None:
    seen: list[bool] = []
    hook = model.backbone.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        x = torch.randn(2, 3, 64, 96)
        nhwc = infer_probs(model, x, EvalConfig(channels_last=True))
        nchw = infer_probs(model, x, EvalConfig(channels_last=False))
        slide = EvalConfig(mode="slide", crop_size=[64, 64], stride=[32, 32], batch_size=2)
        infer_probs(model, x, slide)  # the sliding windows too (one batched forward)
        seg = Segmenter(model, from_dict(Config, {"model": TINY}), device="cpu")
        seg.predict(np.zeros((64, 96, 3), np.uint8))  # with its superpixels, from its own forward
        seg.cfg.eval.channels_last = False
        seg.predict(np.zeros((64, 96, 3), np.uint8))
    finally:
        hook.remove()
    assert EvalConfig().channels_last  # the default: fast on CPU and GPU alike
    assert seen == [True, False, True, True, False]
    torch.testing.assert_close(nhwc, nchw, rtol=0, atol=1e-5)


def test_batch_with_different_sizes_matches_single_images(model) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 96, generator=g), torch.randn(3, 96, 64, generator=g),
              torch.randn(3, 64, 96, generator=g), torch.randn(3, 50, 70, generator=g)]
    sizes = [(64, 96), (100, 70), None, (50, 70)]
    out = infer_batch(model, images, EvalConfig(batch_size=2), sizes)
    for img, size, probs in zip(images, sizes, out):
        ref = infer_probs(model, img[None], EvalConfig(), out_size=size)[0]
        assert probs.shape == ref.shape
        torch.testing.assert_close(probs, ref, rtol=0, atol=1e-5)


def test_labels_take_the_lean_path_for_one_whole_view(model, monkeypatch) -> None:
    """infer_labels / infer_batch(labels=True): argmax of the probabilities; whole single views go through the
    model's predict (counted here), TTA through infer_probs."""
    double = build_model(TINY).double().eval()
    double.load_state_dict(model.state_dict())
    calls = []
    real_predict = double.predict
    monkeypatch.setattr(double, "predict", lambda *a, **k: calls.append(k) or real_predict(*a, **k))
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, 64, 96, generator=g, dtype=torch.float64) for _ in range(3)]
    sizes = [(64, 96), None, (64, 96)]
    labels = infer_batch(double, images, EvalConfig(batch_size=3), sizes, labels=True)
    assert len(calls) == 1 and calls[0]["size"] == (64, 96)  # one forward for the three
    probs = infer_batch(double, images, EvalConfig(batch_size=3), sizes)
    for lab, p in zip(labels, probs):
        assert lab.dtype == torch.int64 and torch.equal(lab, p.argmax(0))
    flip = EvalConfig(flip=True)
    got = infer_labels(double, images[0][None], flip)
    assert len(calls) == 1  # TTA averages probabilities: no lean path
    assert torch.equal(got, infer_probs(double, images[0][None], flip).argmax(1))
    # mixed output sizes in one batch: each image at its own size
    mixed = infer_batch(double, images[:2], EvalConfig(batch_size=2), [(64, 96), (32, 48)], labels=True)
    assert [tuple(m.shape) for m in mixed] == [(64, 96), (32, 48)]
    assert torch.equal(mixed[0], probs[0].argmax(0))


def test_bad_eval_config_is_named() -> None:
    with pytest.raises(ValueError, match="eval.mode"):
        infer_probs(PixelModel(), torch.randn(1, 3, 32, 32), EvalConfig(mode="tiles"))
    with pytest.raises(ValueError, match="eval.scales"):
        infer_probs(PixelModel(), torch.randn(1, 3, 32, 32), EvalConfig(scales=[]))
    with pytest.raises(ValueError, match=r"eval.stride \[150, 150\] must not exceed eval.crop_size"):
        infer_probs(PixelModel(), torch.randn(1, 3, 300, 300),
                    EvalConfig(mode="slide", crop_size=[100, 100], stride=[150, 150]))


def _items(n: int = 4, k: int = 5) -> list[dict]:
    """Images at half the label resolution (as with data.test_short_side), labels at full resolution."""
    g = torch.Generator().manual_seed(2)
    items = []
    for i in range(n):
        h, w = 32 + 8 * (i % 2), 48
        label = torch.randint(0, k, (2 * h, 2 * w), generator=g)
        label[:3] = 255
        items.append({"image": torch.randn(3, h, w, generator=g), "label": label, "path": f"x/{i}.png"})
    return items


def test_evaluate_scores_at_label_resolution_for_list_and_collated_batches() -> None:
    from spxseg.data import eval_collate

    m = PixelModel()
    items = _items()
    conf = torch.zeros(5, 5, dtype=torch.long)
    for item in items:
        probs = infer_probs(m, item["image"][None], EvalConfig(), out_size=tuple(item["label"].shape))
        conf += confusion_matrix(probs.argmax(1)[0], item["label"], 5)
    expected = metrics_from_confusion(conf)
    seen: list[tuple] = []
    as_lists = evaluate(m, [items[:3], items[3:]], EvalConfig(batch_size=2), SegEvaluator(5), torch.device("cpu"),
                        progress=False, on_prediction=lambda pred, item: seen.append((pred.shape, item["path"])))
    collated = evaluate(m, [eval_collate(items[:3]), eval_collate(items[3:])], EvalConfig(), SegEvaluator(5),
                        torch.device("cpu"), progress=False)
    for got in (as_lists, collated):
        assert got["num_images"] == 4 and got["images_per_s"] > 0
        for key in ("mIoU", "mAcc", "aAcc", "fwIoU"):
            assert got[key] == pytest.approx(expected[key])
    assert seen == [(tuple(it["label"].shape), it["path"]) for it in items]


def test_evaluate_real_model_restores_training_mode(model) -> None:
    items = _items(2)
    model.eval()
    conf = torch.zeros(5, 5, dtype=torch.long)
    with torch.no_grad():  # what evaluate must compute: the eval-mode model (BatchNorm running statistics)
        for item in items:
            probs = infer_probs(model, item["image"][None], EvalConfig(), out_size=tuple(item["label"].shape))
            conf += confusion_matrix(probs.argmax(1)[0], item["label"], 5)
    model.train()
    metrics = evaluate(model, [items], EvalConfig(), SegEvaluator(5), torch.device("cpu"), progress=False)
    assert model.training
    assert metrics["aAcc"] == pytest.approx(metrics_from_confusion(conf)["aAcc"])
    assert metrics["mIoU"] == pytest.approx(metrics_from_confusion(conf)["mIoU"])
    model.eval()


# --------------------------------------------------------------------------- Segmenter


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model) -> str:
    cfg = from_dict(Config, {"model": TINY, "data": {"dataset": "cityscapes"}})
    cfg.model.num_classes = 19
    torch.manual_seed(0)
    net = build_model(cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": net.state_dict(), "config": to_dict(cfg), "iteration": 7}, path)
    return str(path)


def test_segmenter_from_checkpoint(checkpoint) -> None:
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    assert seg.num_classes == 19 and seg.class_names[0] == "road" and len(seg.palette) == 19
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (75, 110, 3), dtype=np.uint8)
    labels = seg.predict(bgr)
    assert labels.shape == (75, 110) and labels.dtype == np.uint8 and labels.max() < 19
    assert np.array_equal(seg.predict(np.ascontiguousarray(bgr[..., ::-1]), rgb=True), labels)
    labels2, sp = seg.predict_with_superpixels(bgr)
    assert np.array_equal(labels2, labels)
    assert sp.shape == (75, 110) and sp.min() >= 0 and seg.superpixels is sp
    # probabilities agree with the model run on the normalised RGB image
    x = (torch.from_numpy(bgr[..., ::-1].copy()).float() - torch.tensor(seg.cfg.data.mean)) / torch.tensor(
        seg.cfg.data.std)
    with torch.no_grad():
        ref = seg.model(x.permute(2, 0, 1)[None]).probs[0]
    torch.testing.assert_close(seg.predict_probs(bgr), ref, rtol=0, atol=1e-5)
    other = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    batch = seg.predict_batch([bgr, other, bgr])
    assert np.array_equal(batch[0], labels) and np.array_equal(batch[2], labels) and batch[1].shape == (64, 64)


def test_segmenter_errors(tmp_path, checkpoint) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Segmenter.from_checkpoint(tmp_path / "missing.pth")
    torch.save({"weights": {}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an spxseg checkpoint"):
        Segmenter.from_checkpoint(tmp_path / "bad.pth")
    cfg = from_dict(Config, {"model": {**TINY, "channels": 48, "num_classes": 19}})
    with pytest.raises(RuntimeError, match="do not fit the model"):
        Segmenter.from_config(cfg, checkpoint)
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match="expected an image"):
        seg.predict(np.zeros((4, 5, 6, 7), np.uint8))
    # pixels not on the 0-255 scale of uint8 would be normalised wrongly without a word: refused, with the fix
    with pytest.raises(ValueError, match=r"uint16.*257"):
        seg.predict(np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(ValueError, match=r"float32.*255"):
        seg.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match="eval.mode"):  # the overrides apply to a given config too
        Segmenter.from_checkpoint(checkpoint, cfg=seg.cfg, overrides=["eval.mod=slide"])


def test_segmenter_grey_inputs_and_overrides_with_a_config(checkpoint) -> None:
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    grey = np.random.default_rng(1).integers(0, 256, (30, 41), dtype=np.uint8)
    labels = seg.predict(grey)
    assert labels.shape == (30, 41)
    assert np.array_equal(seg.predict(grey[..., None]), labels)  # (H, W, 1)
    grey_alpha = np.stack([grey, np.full_like(grey, 255)], -1)  # (H, W, 2): grey and alpha
    assert np.array_equal(seg.predict(grey_alpha), labels)
    flipped = Segmenter.from_checkpoint(checkpoint, device="cpu", cfg=seg.cfg, overrides=["eval.flip=true"])
    assert flipped.cfg.eval.flip and not seg.cfg.eval.flip


def test_segmenter_label_maps_past_256_classes_do_not_wrap() -> None:
    cfg = from_dict(Config, {"model": {**TINY, "num_classes": 300}, "data": {"dataset": "cityscapes"}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[299] = 100.0  # every superpixel says class 299
    seg = Segmenter(model, cfg, device="cpu")
    labels = seg.predict(np.zeros((40, 48, 3), np.uint8))
    assert labels.dtype == np.uint16 and np.all(labels == 299)


def test_segmenter_ignores_backbone_init_of_stored_config(tmp_path, checkpoint) -> None:
    """A checkpoint trained from ImageNet / a local backbone file loads offline, without that file."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ckpt["config"]["model"]["backbone"].update(pretrained=True, checkpoint=str(tmp_path / "gone" / "resnet18.pth"))
    torch.save(ckpt, tmp_path / "moved.pth")
    seg = Segmenter.from_checkpoint(tmp_path / "moved.pth", device="cpu")
    assert seg.cfg.model.backbone.pretrained  # the stored config is kept as it was
    assert seg.predict(np.zeros((40, 40, 3), np.uint8)).shape == (40, 40)
