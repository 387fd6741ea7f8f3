"""Prediction export (train ids, colour, Cityscapes label ids) and agreement with cityscapesscripts."""

from __future__ import annotations

import copy
import glob
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spxseg.data.cityscapes import CityscapesDataset, train_ids_to_label_ids
from spxseg.data.cityscapes import result_name as cityscapes_result_name
from spxseg.engine.evaluator import SegEvaluator
from spxseg.engine.predictions import PredictionWriter
from spxseg.engine.visualize import boundary_mask, colorize, draw_boundaries, make_panel, overlay

CITYSCAPES_DIR = CityscapesDataset.official_dir
from conftest import FIXTURES  # noqa: E402

REAL_FRAME = FIXTURES / "cityscapes_mini"
CITY, FRAME = "frankfurt", "frankfurt_000000_000294"


def make_cityscapes_root(root: Path, n_synthetic: int = 3, size: tuple[int, int] = (64, 128)) -> Path:
    """A small Cityscapes-layout val set: synthetic scenes plus the real fixture frame (linked, not copied).

    Only ``*_gtFine_labelIds.png`` ground truth (what the official evaluation reads; the fixture's
    labelTrainIds file differs from its labelIds on ~0.2% of pixels) and ``*_instanceIds.png``.
    """
    from spxseg.data import generate_synthetic

    generate_synthetic(root, train=0, val=n_synthetic, size=size, seed=3, progress=False)
    for gt in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):  # no instances in synthetic scenes
        os.symlink(gt.name, gt.with_name(gt.name.replace("labelIds", "instanceIds")))
    if REAL_FRAME.is_dir():
        for sub, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds"),
                            ("gtFine", "gtFine_instanceIds")):
            src = REAL_FRAME / sub / "val" / CITY / f"{FRAME}_{suffix}.png"
            dst = root / sub / "val" / CITY / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
    return root


def official_pixel_eval(root: Path, results: Path) -> dict:
    """cityscapesscripts' pixel-level evaluation of the label-id PNGs under ``results`` against
    ``root/gtFine/val/*/*_gtFine_labelIds.png``, pairing files the way the benchmark does."""
    cs = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    args = copy.copy(cs.args)
    args.cityscapesPath = str(root)
    args.predictionPath, args.predictionWalk = str(results), None
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized, args.bold, args.nocol = False, "", ""
    gts = sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")))
    preds = [cs.getPrediction(args, gt) for gt in gts]
    return cs.evaluateImgLists(preds, gts, args)


def test_train_ids_to_label_ids() -> None:
    pred = np.array([[0, 1, 2, 10], [13, 18, 255, 5]], np.uint8)
    assert train_ids_to_label_ids(pred).tolist() == [[7, 8, 11, 23], [26, 33, 0, 17]]


def test_cityscapes_result_name() -> None:
    path = "/data/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert cityscapes_result_name(path) == ("frankfurt", "frankfurt_000000_000294_leftImg8bit.png")
    assert cityscapes_result_name("x/lindau_000001_000019.jpg") == ("lindau", "lindau_000001_000019_leftImg8bit.png")
    with pytest.raises(ValueError, match="not a Cityscapes file name"):
        cityscapes_result_name("street.png")


def test_prediction_writer_layout_and_contents(tmp_path) -> None:
    palette = [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
    writer = PredictionWriter(tmp_path / "out", palette + [(0, 0, 0)] * 16, dataset="cityscapes")
    pred = np.array([[0, 1], [2, 1]], np.uint8)
    files = writer.write(pred, "/d/leftImg8bit/val/aachen/aachen_000001_000019_leftImg8bit.png")
    rel = sorted(str(f.relative_to(tmp_path / "out")) for f in files)
    assert rel == [f"{CITYSCAPES_DIR}/aachen/aachen_000001_000019_leftImg8bit.png",
                   "color/aachen/aachen_000001_000019_leftImg8bit.png",
                   "train_ids/aachen/aachen_000001_000019_leftImg8bit.png"]
    out = tmp_path / "out"
    train_ids = cv2.imread(str(out / "train_ids/aachen/aachen_000001_000019_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(train_ids, pred)
    label_ids = cv2.imread(str(out / CITYSCAPES_DIR / "aachen/aachen_000001_000019_leftImg8bit.png"),
                           cv2.IMREAD_UNCHANGED)
    assert label_ids.tolist() == [[7, 8], [11, 8]]
    color = cv2.imread(str(out / "color/aachen/aachen_000001_000019_leftImg8bit.png"))[..., ::-1]
    assert color[0, 0].tolist() == [128, 64, 128] and color[1, 0].tolist() == [70, 70, 70]
    with pytest.raises(ValueError, match="two predictions"):
        writer.write(pred, "/other/aachen/aachen_000001_000019_leftImg8bit.png")
    assert "CITYSCAPES_RESULTS" in writer.summary()

    ade = PredictionWriter(tmp_path / "ade", palette, dataset="ade20k", color=False)
    ade.write(np.array([[0, 2]], np.uint8), "ADE_val_00000001.jpg")
    sub = cv2.imread(str(tmp_path / "ade/ade20k_submission/ADE_val_00000001.png"), cv2.IMREAD_UNCHANGED)
    assert sub.tolist() == [[1, 3]] and not (tmp_path / "ade/color").exists()


def test_visualize_helpers() -> None:
    image = np.full((6, 8, 3), 100, np.uint8)
    labels = np.zeros((6, 8), np.int64)
    labels[:, 4:] = 1
    labels[0, 0] = 255
    palette = [(255, 0, 0), (0, 0, 255)]
    col = colorize(labels, palette)
    assert col[1, 1].tolist() == [255, 0, 0] and col[1, 5].tolist() == [0, 0, 255] and col[0, 0].tolist() == [0, 0, 0]
    ov = overlay(image, labels, palette, alpha=0.5)
    assert ov[1, 1].tolist() == [178, 50, 50]
    sp = np.repeat(np.repeat(np.arange(6).reshape(2, 3), 3, 0), 3, 1)[:6, :8]
    mask = boundary_mask(sp)
    assert mask[:, 2].all() and mask[2, :].all() and not mask[0, 0]
    drawn = draw_boundaries(image, sp, color=(255, 255, 0))
    assert drawn[0, 2].tolist() == [255, 255, 0] and drawn[0, 0].tolist() == [100, 100, 100]
    panel = make_panel([image, ov, drawn], ["a", "b", "c"])
    assert panel.shape[1] == 3 * 8 + 4 * 6 and panel.dtype == np.uint8
    with pytest.raises(ValueError, match="labels are"):
        overlay(image, labels[:5], palette)


def _noisy_predictions(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GT with void filled in, 25% of pixels replaced by random classes 0..17 and a block of 'train' (16)."""
    pred = label.astype(np.int64).copy()
    void = pred == 255
    pred[void] = rng.integers(0, 19, void.sum())
    flip = rng.random(pred.shape) < 0.25
    pred[flip] = rng.integers(0, 18, flip.sum())
    h, w = pred.shape
    pred[h // 3 : h // 2, w // 4 : w // 3] = 16  # a class that appears only in the predictions
    return pred.astype(np.uint8)


def test_agrees_with_cityscapesscripts(tmp_path) -> None:
    pytest.importorskip("cityscapesscripts")
    if not REAL_FRAME.is_dir():
        pytest.skip(f"fixture {REAL_FRAME} not found")
    from spxseg.config import DataConfig
    from spxseg.data import CityscapesDataset, EvalPipeline
    from spxseg.data.cityscapes import CLASS_NAMES, PALETTE

    root = make_cityscapes_root(tmp_path / "cityscapes")
    dataset = CityscapesDataset(root, "val", EvalPipeline(DataConfig()))
    assert len(dataset) == 4
    writer = PredictionWriter(tmp_path / "preds", PALETTE, dataset="cityscapes")
    evaluator = SegEvaluator(19, CLASS_NAMES)
    rng = np.random.default_rng(0)
    for i in range(len(dataset)):
        label = dataset.load_label(i)
        pred = _noisy_predictions(label, rng)
        evaluator.update(torch.from_numpy(pred), torch.from_numpy(label.astype(np.int64)))
        writer.write(pred, dataset.image_path(i))
    ours = evaluator.compute()
    official = official_pixel_eval(root, writer.official_dir)

    assert ours["mIoU"] == pytest.approx(100 * official["averageScoreClasses"], abs=0.01)
    for name in CLASS_NAMES:
        theirs = official["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(ours["per_class"][name]["IoU"]), name
        else:
            assert ours["per_class"][name]["IoU"] == pytest.approx(100 * theirs, abs=1e-6), name
    assert ours["per_class"]["train"]["IoU"] == 0.0  # only in the predictions: counted, as officially
    assert 0 < ours["num_classes_evaluated"] <= 19
