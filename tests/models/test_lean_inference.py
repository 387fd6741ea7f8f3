"""The lean label path: resample_argmax against the plain resize + argmax, and each model's ``predict``
against ``argmax(forward(...).probs)`` (float64, so only exact ties could differ)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spxseg.models import build_model
from spxseg.models.resample_argmax import resample_argmax, upsample_argmax

TINY = {"num_classes": 5, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


@pytest.mark.parametrize("h, w, out_h, out_w", [(12, 17, 48, 68), (12, 17, 45, 60), (12, 17, 100, 33),
                                                (9, 9, 9, 9), (20, 30, 7, 11), (1, 4, 8, 16)])
def test_resample_argmax_equals_resize_then_argmax(h, w, out_h, out_w) -> None:
    gen = torch.Generator().manual_seed(h * w + out_h)
    # smooth maps (like real probabilities): large same-class regions, some boundaries
    coarse = torch.randn(2, 6, max(h // 3, 1), max(w // 3, 1), generator=gen, dtype=torch.float64)
    scores = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
    ref = F.interpolate(scores, size=(out_h, out_w), mode="bilinear", align_corners=False).argmax(1)
    got = resample_argmax(scores, (out_h, out_w), (h / out_h, w / out_w))
    assert got.dtype == torch.int64 and got.shape == (2, out_h, out_w)
    assert torch.equal(got, ref)


def test_resample_argmax_upsampling_cropped_to_the_image() -> None:
    """Our model's case: a stride-4 map over the padded input, labels for the unpadded image only."""
    scores = torch.randn(1, 4, 16, 24, dtype=torch.float64).softmax(1)
    ref = F.interpolate(scores, size=(64, 96), mode="bilinear", align_corners=False)[..., :61, :90].argmax(1)
    assert torch.equal(resample_argmax(scores, (61, 90), (0.25, 0.25)), ref)


@pytest.mark.parametrize("factor, crop", [(4, (61, 90)), (4, (64, 96)), (2, (31, 47)), (8, (128, 190)),
                                         (3, (45, 70))])
def test_upsample_argmax_equals_upsample_then_argmax(factor, crop) -> None:
    gen = torch.Generator().manual_seed(factor)
    coarse = torch.randn(2, 5, 6, 8, generator=gen, dtype=torch.float64)
    scores = F.interpolate(coarse, size=(16, 24), mode="bilinear", align_corners=False).softmax(1)
    scores = scores.contiguous(memory_format=torch.channels_last)
    full = F.interpolate(scores, size=(16 * factor, 24 * factor), mode="bilinear", align_corners=False)
    ref = full[..., : crop[0], : crop[1]].argmax(1)
    assert torch.equal(upsample_argmax(scores, factor, crop), ref)


def test_resample_argmax_channels_last_float32() -> None:
    scores = torch.randn(2, 11, 23, 31).softmax(1).contiguous(memory_format=torch.channels_last)
    ref = F.interpolate(scores, size=(92, 124), mode="bilinear", align_corners=False).argmax(1)
    got = resample_argmax(scores, (92, 124), (0.25, 0.25))
    assert (got == ref).float().mean() > 0.9999  # float32: only near-ties may round differently


@pytest.fixture(scope="module")
def spx_model():
    torch.manual_seed(0)
    return build_model(TINY).double().eval()


@pytest.mark.parametrize("size", [(64, 96), (70, 101)])  # padded or not
def test_predict_equals_forward_argmax(spx_model, size) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        out = spx_model(x)
        lean = spx_model.predict(x)
        with_sp = spx_model.predict(x, superpixels=True)
    assert lean.superpixels is None  # the hard ids only when asked for
    assert torch.equal(lean.labels, out.probs.argmax(1))
    assert torch.equal(with_sp.labels, lean.labels)
    assert torch.equal(with_sp.superpixels, out.superpixels)


def test_predict_to_another_size_is_one_resample(spx_model) -> None:
    """size=... resamples the stride-s map straight to the output: what that one bilinear step gives, and
    nearly what the two-step path (forward, then resize) gives."""
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        out = spx_model(x)
        lean = spx_model.predict(x, size=(100, 150), superpixels=True)
        coarse = spx_model.coarse(x).probs
    one_step = F.interpolate(coarse, size=(100, 150), mode="bilinear", align_corners=False)
    assert torch.equal(lean.labels, one_step.argmax(1))  # no padding here: the one step covers the padded map
    two_step = F.interpolate(out.probs, size=(100, 150), mode="bilinear", align_corners=False).argmax(1)
    assert (lean.labels == two_step).double().mean() > 0.97
    assert lean.superpixels.shape == (1, 100, 150)
    assert set(lean.superpixels.unique().tolist()) <= set(out.superpixels.unique().tolist())


def test_predict_compiled_path_is_the_plain_argmax(spx_model, monkeypatch) -> None:
    """Under torch.compile / export the labels come from the static resize + argmax (no nonzero)."""
    x = torch.randn(1, 3, 70, 101, dtype=torch.float64)
    with torch.no_grad():
        ref = spx_model(x).probs.argmax(1)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        assert torch.equal(spx_model.predict(x).labels, ref)


def test_peer_predict_equals_argmax_and_has_no_superpixels() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    peer = build_model({"architecture": "fpn", "num_classes": 5, "backbone": {"name": "resnet18"}}).double().eval()
    x = torch.randn(1, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        out = peer(x)
        assert torch.equal(peer.predict(x).labels, out.probs.argmax(1))
        resized = F.interpolate(out.probs, size=(96, 120), mode="bilinear", align_corners=False).argmax(1)
        assert torch.equal(peer.predict(x, size=(96, 120)).labels, resized)
    with pytest.raises(ValueError, match="no superpixels"):
        peer.predict(x, superpixels=True)
