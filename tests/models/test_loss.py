"""The loss options: label reconstruction through the association (SSN), hard-pixel averaging (OHEM) and class
weights."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from spxseg.config import LossConfig
from spxseg.models import build_model, model_loss
from spxseg.models import superpixel_ops as ops
from spxseg.models.loss import (
    LOGGED_TERMS,
    enet_class_weights,
    label_distribution_at_stride,
    labels_at_stride,
    lovasz_loss,
    pixel_mean,
    reconstruction_loss,
    segmentation_loss,
    superpixel_targets,
)
from spxseg.models.superpixel_model import SegOutput

TINY = {"num_classes": 4, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


def _cell_labels(gh: int, gw: int, cell: int, classes: int) -> torch.Tensor:
    """(1, gh*cell, gw*cell) labels constant over each cell, neighbouring cells differing."""
    grid = (torch.arange(gh).view(gh, 1) + 2 * torch.arange(gw).view(1, gw)) % classes
    return grid.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[None]


def test_reconstruction_is_zero_when_superpixels_follow_the_labels() -> None:
    labels = _cell_labels(3, 4, 2, classes=3)
    own_cell = torch.zeros(1, 9, 6, 8, dtype=torch.float64)
    own_cell[:, 4] = 1.0  # every pixel belongs to the superpixel of its own cell: pure superpixels
    loss = reconstruction_loss(own_cell, labels, num_classes=3, stride=1, cell=2)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_penalises_mixed_superpixels_and_trains_the_association() -> None:
    labels = _cell_labels(3, 4, 2, classes=3)
    logits = torch.zeros(1, 9, 6, 8, dtype=torch.float64, requires_grad=True)  # uniform over the 9 neighbours
    assoc = logits.softmax(1)
    loss = reconstruction_loss(assoc, labels, num_classes=3, stride=1, cell=2)
    assert loss.item() > 0.5  # each superpixel mixes its neighbours' classes
    loss.backward()
    grad = logits.grad
    assert grad.abs().sum() > 0
    # descending the gradient moves mass onto the own cell (the only label-pure choice here)
    assert (grad[:, 4] < 0).float().mean() > 0.9


def test_reconstruction_ignores_unlabelled_pixels() -> None:
    labels = _cell_labels(3, 4, 2, classes=3)
    assoc = torch.zeros(1, 9, 6, 8, dtype=torch.float64).softmax(1)
    base = reconstruction_loss(assoc, labels, 3, 1, 2)
    unlabelled = torch.full_like(labels, 255)
    assert reconstruction_loss(assoc, unlabelled, 3, 1, 2).item() == 0.0
    assert torch.isfinite(base)


def test_hard_pixel_fraction_averages_the_hardest_pixels() -> None:
    torch.manual_seed(0)
    per_pixel = torch.rand(2, 8, 10)
    labels = torch.randint(0, 3, (2, 8, 10))
    labels[0, :2] = 255
    labelled = per_pixel[labels != 255]
    everything = pixel_mean(per_pixel, labels, LossConfig())
    assert everything.item() == pytest.approx(labelled.mean().item(), rel=1e-6)
    hardest = pixel_mean(per_pixel, labels, LossConfig(hard_pixel_fraction=0.25))
    keep = math.ceil(0.25 * labelled.numel())
    assert hardest.item() == pytest.approx(labelled.sort(descending=True).values[:keep].mean().item(), rel=1e-6)
    assert pixel_mean(per_pixel, torch.full_like(labels, 255), LossConfig(hard_pixel_fraction=0.25)).item() == 0.0


def test_reconstruction_hard_fraction_averages_the_worst_reconstructed_pixels() -> None:
    """Against its plain formulation: the mean of the largest ceil(f * n) per-pixel -log Y'_i[y_i]."""
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 6, 8))
    labels[0, :2] = 255
    assoc = torch.randn(2, 9, 6, 8, dtype=torch.float64).softmax(1)
    hist, _ = superpixel_targets(assoc, labels, 3, 1, 2)
    recon = ops.project(assoc, hist.permute(0, 3, 1, 2))  # (B, K, h, w)
    labelled = labels != 255
    nll = -recon.gather(1, labels.clamp_max(2)[:, None])[:, 0].log()[labelled]
    assert reconstruction_loss(assoc, labels, 3, 1, 2).item() == pytest.approx(nll.mean().item(), rel=1e-9)
    keep = math.ceil(0.1 * nll.numel())
    hardest = nll.sort(descending=True).values[:keep].mean()
    got = reconstruction_loss(assoc, labels, 3, 1, 2, hard_fraction=0.1)
    assert got.item() == pytest.approx(hardest.item(), rel=1e-9)
    assert got > nll.mean()


def test_superpixel_hard_fraction_averages_the_hardest_superpixels() -> None:
    """Against its plain formulation: the mean of the largest ceil(f * n) soft cross-entropies -sum_k t_k log p_k
    over the superpixels with labelled mass."""
    torch.manual_seed(0)
    model = build_model(TINY).double()
    x, labels = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.randint(0, 4, (2, 64, 64))
    labels[0, :20] = 255  # the first row of superpixels: little or no labelled mass
    out = model(x)
    target, mass = superpixel_targets(out.assoc, labels, 4, model.stride, model.cell)
    per_sp = -(target * out.sp_logits.permute(0, 2, 3, 1).log_softmax(-1)).sum(-1)[mass > 1e-3]
    for fraction in (1.0, 0.25):
        terms = segmentation_loss(out, labels, LossConfig(superpixel_hard_fraction=fraction), model.stride)
        keep = math.ceil(fraction * per_sp.numel())
        plain = per_sp.sort(descending=True).values[:keep].mean()
        assert terms.superpixel.item() == pytest.approx(plain.item(), rel=1e-6)  # the loss computes in float32
    assert terms.superpixel > per_sp.mean()


def test_area_labels_are_the_class_shares_of_each_block() -> None:
    """Against a loop over the s x s blocks: class counts over labelled pixels / their number, and the labelled
    share of the block; the image is not a multiple of s and the grid is padded past it (unlabelled)."""
    torch.manual_seed(0)
    s, k = 4, 3
    labels = torch.randint(0, k, (2, 10, 13))
    labels[0, :3, :5] = 255
    dist, share = label_distribution_at_stride(labels, s, (4, 5), k, area=True, dtype=torch.float64)
    assert dist.shape == (2, k, 4, 5) and share.shape == (2, 4, 5)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                block = labels[b, y * s : (y + 1) * s, x * s : (x + 1) * s]
                block = block[block != 255]
                assert share[b, y, x].item() == pytest.approx(block.numel() / s**2)
                for c in range(k):
                    want = (block == c).sum().item() / block.numel() if block.numel() else 0.0
                    assert dist[b, c, y, x].item() == pytest.approx(want)


def test_area_labels_keep_a_pole_the_centre_sample_misses() -> None:
    """A one-pixel pole in a column the stride-4 centres (columns 2, 6, ...) skip: the centre targets have no pole,
    the area targets a quarter of each block it crosses, and the superpixel's histogram carries it."""
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :, 4] = 1  # column 4: not a centre column at stride 4
    own_cell = torch.zeros(1, 9, 4, 4, dtype=torch.float64)
    own_cell[:, 4] = 1.0
    centre, _ = superpixel_targets(own_cell, labels, 2, stride=4, cell=2)
    area, mass = superpixel_targets(own_cell, labels, 2, stride=4, cell=2, area_labels=True)
    assert centre[..., 1].max().item() == 0.0
    # superpixel (y, 0) covers an 8x8 block of image pixels (columns 0-7): the pole is 8 of its 64
    assert area[0, :, 0, 1].tolist() == pytest.approx([8 / 64] * 2)
    assert area[0, :, 1, 1].tolist() == [0.0, 0.0]
    assert mass[0].tolist() == [[4.0, 4.0]] * 2  # four stride-4 pixels, each fully labelled


def test_centre_labels_of_a_partly_covered_last_block() -> None:
    """At stride 8 a 20-row, 10-column image ends in blocks of 4 rows and 2 columns: they take the labels at the
    centres of their parts inside the image, not nothing (a centre past the edge)."""
    labels = torch.arange(20 * 10).reshape(1, 20, 10)
    small = labels_at_stride(labels, 8, (3, 2))
    rows, cols = [4, 12, 18], [4, 9]  # full blocks at 4 and 12; the partial ones at 16 + 4 // 2 and 8 + 2 // 2
    assert small[0].tolist() == [[r * 10 + c for c in cols] for r in rows]
    assert torch.equal(labels_at_stride(labels, 2, (10, 5)), labels[:, 1::2, 1::2])  # whole blocks: as before
    # a 2-pixel-wide image at stride 4 keeps its labels for the superpixel losses
    hist, mass = superpixel_targets(torch.full((1, 9, 16, 1), 1 / 9), torch.zeros(1, 64, 2, dtype=torch.long), 3, 4, 1)
    assert mass.sum() > 0


def test_area_labels_at_stride_1_are_the_centre_labels() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 6, 8))
    labels[0, :2] = 255
    assoc = torch.randn(2, 9, 6, 8, dtype=torch.float64).softmax(1)
    for fraction in (1.0, 0.1):
        centre = reconstruction_loss(assoc, labels, 3, 1, 2, hard_fraction=fraction)
        area = reconstruction_loss(assoc, labels, 3, 1, 2, hard_fraction=fraction, area_labels=True)
        assert area.item() == pytest.approx(centre.item(), rel=1e-9)
    hist, mass = superpixel_targets(assoc, labels, 3, 1, 2)
    hist_area, mass_area = superpixel_targets(assoc, labels, 3, 1, 2, area_labels=True)
    torch.testing.assert_close(hist_area, hist)
    torch.testing.assert_close(mass_area, mass)


def test_area_reconstruction_is_the_kl_of_the_block_shares() -> None:
    """Against its plain formulation: ``Y' = A (A^T (share * Y) / mass)`` and the per-pixel
    ``sum_k w_k Y_k log(Y_k / Y'_k)`` over the pixels with labelled share, averaged (or over its largest fraction)."""
    torch.manual_seed(0)
    s, cell, k = 2, 2, 3
    labels = torch.randint(0, k, (2, 12, 16))
    labels[1, 4:8] = 255
    labels[0, :, 5] = 255
    assoc = torch.randn(2, 9, 6, 8, dtype=torch.float64, requires_grad=True).softmax(1)
    weights = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    dist, share = label_distribution_at_stride(labels, s, (6, 8), k, area=True, dtype=torch.float64)
    # the pool, written out: superpixel m gets sum_p A[j(p, m), p] share_p Y_p / sum_p A[j(p, m), p] share_p
    hist = torch.zeros(2, k, 3, 4, dtype=torch.float64)
    mass = torch.zeros(2, 3, 4, dtype=torch.float64)
    for b in range(2):
        for y in range(6):
            for x in range(8):
                for j, (dy, dx) in enumerate(ops.OFFSETS):
                    gy, gx = y // cell + dy, x // cell + dx
                    if 0 <= gy < 3 and 0 <= gx < 4:
                        a = assoc[b, j, y, x] * share[b, y, x]
                        hist[b, :, gy, gx] += a * dist[b, :, y, x]
                        mass[b, gy, gx] += a
    recon = ops.project(assoc, hist / mass.clamp_min(1e-6)[:, None])
    per_pixel = (weights.view(1, k, 1, 1) * (torch.xlogy(dist, dist) - dist * recon.log())).sum(1)[share > 0]
    for fraction in (1.0, 0.25):
        got = reconstruction_loss(assoc, labels, k, s, cell, class_weights=weights, hard_fraction=fraction,
                                  area_labels=True)
        keep = math.ceil(fraction * per_pixel.numel())
        assert got.item() == pytest.approx(per_pixel.sort(descending=True).values[:keep].mean().item(), rel=1e-9)
    got.backward()  # the gradient reaches the association


@pytest.mark.parametrize("architecture", ["spx", "fpn"])
def test_loss_options_reach_the_total(architecture) -> None:
    if architecture == "fpn":
        pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    cfg = {**TINY, "architecture": architecture,
           "loss": {"reconstruction_weight": 2.0, "hard_pixel_fraction": 0.5, "aux_pixel_weight": 0.3,
                    "area_labels": True}}
    model = build_model(cfg if architecture == "spx" else {k: v for k, v in cfg.items() if k in
                                                           ("architecture", "num_classes", "backbone", "loss")})
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    out = model(x)
    terms = model_loss(out, labels, model.cfg)
    logged = terms.logged()
    assert logged.shape == (len(LOGGED_TERMS),) and not logged.requires_grad
    if architecture == "spx":
        assert terms.reconstruction is not None and terms.reconstruction > 0
        assert terms.aux is not None and terms.aux > 0 and logged[4] == terms.aux
        expected = terms.pixel + 0.5 * terms.superpixel + 2.0 * terms.reconstruction + 0.3 * terms.aux
        assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    else:  # peers have no association: the hard-pixel mean alone
        assert terms.reconstruction is None and terms.aux is None and logged[3] == logged[4] == 0
        per_pixel = F.cross_entropy(out.logits, labels, reduction="none").flatten()
        top = per_pixel.sort(descending=True).values[: per_pixel.numel() // 2].mean()
        assert terms.total.item() == pytest.approx(top.item(), rel=1e-5)
    terms.total.backward()


def test_lovasz_of_hard_predictions_is_one_minus_the_iou_of_each_present_class() -> None:
    """The Lovász extension is exact on one-hot predictions: mean over the classes in the labels of 1 - IoU_c,
    unlabelled pixels left out (a class only predicted, or only on unlabelled pixels, is not averaged)."""
    pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 12, 16))  # classes 0-2 present, class 3 only predicted
    labels[:, :2] = 255
    pred = torch.where(torch.rand(labels.shape) < 0.3, torch.randint(0, 4, labels.shape), labels.clamp_max(3))
    log_probs = F.one_hot(pred, 4).permute(0, 3, 1, 2).double().clamp_min(1e-30).log()
    labelled = labels != 255
    ious = [((pred == c) & (labels == c)).sum() / (((pred == c) | (labels == c)) & labelled).sum() for c in range(3)]
    expected = 1 - torch.stack(ious).double().mean()
    assert lovasz_loss(log_probs, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    assert lovasz_loss(F.one_hot(labels.clamp_max(3), 4).permute(0, 3, 1, 2).double() * 50, labels).item() == \
        pytest.approx(0.0, abs=1e-6)  # logits: perfect and confident
    assert lovasz_loss(log_probs, torch.full_like(labels, 255)).item() == 0.0  # nothing labelled: 0, not empty


@pytest.mark.parametrize("architecture", ["spx", "fpn"])
def test_lovasz_joins_the_total_and_trains(architecture) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    cfg = {**TINY, "architecture": architecture, "loss": {"lovasz_weight": 0.7}}
    model = build_model(cfg if architecture == "spx" else {k: v for k, v in cfg.items() if k in
                                                           ("architecture", "num_classes", "backbone", "loss")})
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    out = model(x)
    terms = model_loss(out, labels, model.cfg)
    # ours: on the projected probabilities P (softmax of log P); peers: on their logits
    scores = out.probs.clamp_min(1e-8).log() if architecture == "spx" else out.logits
    assert terms.lovasz.item() == pytest.approx(lovasz_loss(scores, labels).item(), rel=1e-6)
    assert 0 < terms.lovasz < 1
    assert terms.logged()[LOGGED_TERMS.index("loss_lovasz")] == terms.lovasz
    without = model_loss(out, labels, replace(model.cfg, loss=replace(model.cfg.loss, lovasz_weight=0.0)))
    assert without.lovasz is None
    assert terms.total.item() == pytest.approx((without.total + 0.7 * terms.lovasz).item(), rel=1e-6)
    model.zero_grad()
    terms.lovasz.backward()
    head = model.classifier if architecture == "spx" else model.net.segmentation_head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("key, value, message", [
    ("hard_pixel_fraction", 0.0, "hard_pixel_fraction must be in"),
    ("hard_pixel_fraction", 1.5, "hard_pixel_fraction must be in"),
    ("reconstruction_hard_fraction", 0.0, "reconstruction_hard_fraction must be in"),
    ("superpixel_hard_fraction", 1.1, "superpixel_hard_fraction must be in"),
    ("reconstruction_weight", -1.0, "reconstruction_weight must be >= 0"),
    ("lovasz_weight", -0.5, "lovasz_weight must be >= 0"),
    ("class_weights", [1.0, 2.0, 3.0], "class_weights has 3 values, model.num_classes is 4"),
    ("class_weights", [1.0, 0.0, 1.0, 1.0], "class_weights must be finite and > 0, got 0.0"),
])
def test_bad_loss_values_are_named(key, value, message) -> None:
    with pytest.raises(ValueError, match=f"model.loss.{message}"):
        build_model({**TINY, "loss": {key: value}})


def test_class_weights_scale_every_term_as_written() -> None:
    """Each term against its plain formulation: pixel ``mean_i w[y_i] (-log P_i[y_i])``, superpixel
    ``mean_j -sum_k w_k t_jk log p_jk``, reconstruction ``sum_i w[y_i] (-log Y'_i[y_i]) / #labelled``
    (a float64 model; the loss itself computes in float32)."""
    torch.manual_seed(0)
    model = build_model({**TINY, "loss": {"reconstruction_weight": 1.0}}).double().eval()
    x, labels = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.randint(0, 4, (2, 64, 64))
    labels[0, :10] = 255
    weights = [0.5, 1.0, 2.0, 4.0]
    with torch.no_grad():
        out = model(x)
    w = torch.tensor(weights, dtype=torch.float64)
    weighted = segmentation_loss(out, labels, LossConfig(class_weights=weights, reconstruction_weight=1.0), 4)
    plain = segmentation_loss(out, labels, LossConfig(reconstruction_weight=1.0), 4)

    labelled = labels != 255
    safe = torch.where(labelled, labels, 0)
    nll = -out.probs.clamp_min(1e-8).log().gather(1, safe[:, None])[:, 0]
    assert weighted.pixel.item() == pytest.approx((w[safe] * nll)[labelled].mean().item(), rel=1e-6)

    target, mass = superpixel_targets(out.assoc, labels, 4, stride=4, cell=4)
    log_p = out.sp_logits.permute(0, 2, 3, 1).log_softmax(-1)
    per_sp = -(w * target * log_p).sum(-1)[mass > 1e-3]
    assert weighted.superpixel.item() == pytest.approx(per_sp.mean().item(), rel=1e-6)

    small = labels[:, 2::4, 2::4]  # the stride-4 pixel centres (64 = 16 * 4: no padding)
    recon = ops.project(out.assoc, target.permute(0, 3, 1, 2))
    ok = small != 255
    rec_nll = -recon.clamp_min(1e-8).log().gather(1, torch.where(ok, small, 0)[:, None])[:, 0]
    assert weighted.reconstruction.item() == pytest.approx((w[torch.where(ok, small, 0)] * rec_nll)[ok].mean().item(),
                                                           rel=1e-6)
    # all-ones weights are the unweighted loss
    ones = segmentation_loss(out, labels, LossConfig(class_weights=[1.0] * 4, reconstruction_weight=1.0), 4)
    assert ones.total.item() == pytest.approx(plain.total.item(), rel=1e-12)


def test_class_weights_reach_the_peers_cross_entropy() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    weights = [0.5, 1.0, 2.0, 4.0]
    model = build_model({"architecture": "fpn", "num_classes": 4, "backbone": {"name": "resnet18"},
                         "loss": {"class_weights": weights}})
    x, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 4, (1, 64, 64))
    out = model(x)
    terms = model_loss(out, labels, model.cfg)
    per_pixel = F.cross_entropy(out.logits, labels, reduction="none")
    expected = (torch.tensor(weights)[labels] * per_pixel).mean()
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_enet_class_weights() -> None:
    counts = [700, 200, 90, 10, 0]
    weights = enet_class_weights(counts)
    freq = torch.tensor(counts, dtype=torch.float64) / 1000
    raw = 1 / torch.log(1.02 + freq)
    assert weights == pytest.approx((raw / (freq * raw).sum()).tolist(), rel=1e-12)
    assert float((freq * torch.tensor(weights, dtype=torch.float64)).sum()) == pytest.approx(1.0)  # keeps the scale
    assert weights == sorted(weights)  # rarer classes weigh more; an absent class the most
    assert max(weights) / min(weights) < math.log(2.02) / math.log(1.02)
    with pytest.raises(ValueError, match="class pixel counts"):
        enet_class_weights([0, 0, 0])


def test_aux_pixel_classifier_trains_only() -> None:
    """The auxiliary classifier's loss is the plain cross-entropy at the stride-s pixel centres; eval mode
    (and a model without the option) has no auxiliary output and no extra weights."""
    torch.manual_seed(0)
    model = build_model({**TINY, "loss": {"aux_pixel_weight": 0.4}})
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    labels[0, :20] = 255
    out = model(x)
    assert out.aux_logits.shape == (2, TINY["num_classes"], 16, 16)
    terms = model_loss(out, labels, model.cfg)
    small = labels[:, 2::4, 2::4]  # stride 4: the pixel centres
    expected = F.cross_entropy(out.aux_logits.double(), small, ignore_index=255)
    assert terms.aux.item() == pytest.approx(expected.item(), rel=1e-6)
    terms.total.backward()
    assert model.aux_classifier.weight.grad.abs().sum() > 0
    assert model.eval()(x).aux_logits is None
    plain = build_model(TINY)
    assert plain.aux_classifier is None and not any(k.startswith("aux") for k in plain.state_dict())


def test_deep_supervision_classifies_every_layer_through_the_same_head() -> None:
    """With ``loss.layer_weight`` each transformer layer but the last is classified as if the stack ended there
    (the same model with its later layers removed gives those probabilities, in float64, on a padded input), and
    the loss adds the weight times the mean of those layers' pixel and superpixel terms; eval mode and weight 0
    compute none of it, and a one-layer transformer is refused, naming the keys."""
    torch.manual_seed(0)
    cfg = {**TINY, "transformer": {"layers": 3, "dim": 64, "heads": 2}, "loss": {"layer_weight": 0.5}}
    model = build_model(cfg).double()
    x, labels = torch.randn(2, 3, 60, 72, dtype=torch.float64), torch.randint(0, 4, (2, 60, 72))
    labels[1, :30] = 255
    out = model(x)
    gh, gw = -(-60 // 16), -(-72 // 16)
    assert out.layer_probs.shape == (2, 2, 4, 60, 72) and out.layer_sp_logits.shape == (2, 2, 4, gh, gw)
    layers = model.transformer.layers
    for kept in (1, 2):
        model.transformer.layers = layers[:kept]
        truncated = model(x)
        torch.testing.assert_close(out.layer_probs[kept - 1], truncated.probs)
        torch.testing.assert_close(out.layer_sp_logits[kept - 1], truncated.sp_logits)
    model.transformer.layers = layers
    torch.testing.assert_close(out.probs, model(x).probs)

    terms = model_loss(out, labels, model.cfg)
    plain_cfg = LossConfig()  # superpixel weight 0.5, the rest off, as the model's
    per_layer = [segmentation_loss(SegOutput(p, s, out.assoc, out.superpixels), labels, plain_cfg, 4)
                 for p, s in zip(out.layer_probs, out.layer_sp_logits)]
    expected = torch.stack([t.pixel + 0.5 * t.superpixel for t in per_layer]).mean()
    torch.testing.assert_close(terms.layers, expected)
    torch.testing.assert_close(terms.total, terms.pixel + 0.5 * terms.superpixel + 0.5 * expected)
    assert terms.logged()[LOGGED_TERMS.index("loss_layers")] == terms.layers

    assert model.eval()(x).layer_probs is None
    plain = build_model({**cfg, "loss": {}})
    assert plain(x.float()).layer_probs is None and model_loss(plain(x.float()), labels, plain.cfg).layers is None
    assert set(build_model(cfg).state_dict()) == set(plain.state_dict())  # no weights of its own
    with pytest.raises(ValueError, match="model.loss.layer_weight=0.5 .* needs model.transformer.layers >= 2, got 1"):
        build_model({**cfg, "transformer": {"layers": 1, "dim": 64, "heads": 2}})
