"""Metrics on hand-built confusion matrices and label maps, and DDP reduction (2 gloo processes)."""

from __future__ import annotations

import json
import math
import socket
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from spxseg.config import EvalConfig
from spxseg.engine.evaluate import evaluate
from spxseg.engine.evaluator import (
    SegEvaluator,
    confusion_matrix,
    format_table,
    metrics_from_confusion,
    to_jsonable,
)

# label / prediction of a 2x4 image, 4 classes: class 3 is absent from both, one ignore pixel
LABEL = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 1]])
PRED = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 1]])


def test_hand_built_label_maps() -> None:
    ev = SegEvaluator(4, ["a", "b", "c", "d"])
    ev.update(PRED, LABEL)
    # (gt, pred) pairs without the ignore pixel: (0,0) (0,1) (1,1) (1,1) (1,1) (2,2) (2,0)
    expected = torch.tensor([[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(ev.confusion, expected)
    m = ev.compute()
    iou = {"a": 1 / 3, "b": 3 / 4, "c": 1 / 2}
    for name, value in iou.items():
        assert m["per_class"][name]["IoU"] == pytest.approx(100 * value)
    assert math.isnan(m["per_class"]["d"]["IoU"]) and math.isnan(m["per_class"]["d"]["Acc"])
    assert m["mIoU"] == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)  # absent class excluded
    assert m["mAcc"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert m["aAcc"] == pytest.approx(100 * 5 / 7)
    assert m["fwIoU"] == pytest.approx(100 * (2 / 7 * 1 / 3 + 3 / 7 * 3 / 4 + 2 / 7 * 1 / 2))
    assert m["num_pixels"] == 7
    assert m["num_classes_evaluated"] == 3 and m["absent_classes"] == ["d"]


def test_class_only_in_predictions_counts_as_zero_iou() -> None:
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])  # class 2 predicted, never in the labels
    m = metrics_from_confusion(confusion_matrix(pred, label, 3))
    assert m["per_class"]["2"]["IoU"] == 0.0
    assert math.isnan(m["per_class"]["2"]["Acc"])  # recall undefined: excluded from mAcc
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)
    assert m["mAcc"] == pytest.approx(100 * (1 / 2 + 1) / 2)


def test_matches_brute_force_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    k = 6
    label = rng.integers(0, k - 1, (3, 40, 50))  # class k-1 never in the labels
    label[rng.random(label.shape) < 0.1] = 255
    pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, k, label.shape))
    pred[pred == 255] = 0
    ev = SegEvaluator(k)
    for p, lab in zip(pred, label):  # accumulated image by image
        ev.update(torch.from_numpy(p), torch.from_numpy(lab))
    m = ev.compute()
    valid = label != 255
    ious, accs = [], []
    for c in range(k):
        tp = np.sum((pred == c) & (label == c) & valid)
        fp = np.sum((pred == c) & (label != c) & valid)
        fn = np.sum((pred != c) & (label == c) & valid)
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
        if tp + fn:
            accs.append(tp / (tp + fn))
        assert m["per_class"][str(c)]["IoU"] == pytest.approx(100 * tp / (tp + fp + fn))
    assert m["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert m["mAcc"] == pytest.approx(100 * np.mean(accs))
    assert m["aAcc"] == pytest.approx(100 * np.mean(pred[valid] == label[valid]))


def test_all_ignored_gives_nan_and_table() -> None:
    ev = SegEvaluator(3, ["x", "y", "z"])
    ev.update(torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 255))
    m = ev.compute()
    assert m["num_pixels"] == 0 and all(math.isnan(m[k]) for k in ("mIoU", "mAcc", "aAcc", "fwIoU"))
    table = format_table(m)
    assert "n/a" in table and "3 class(es) absent" in table
    json.dumps(to_jsonable(m), allow_nan=False)  # strict JSON: NaN -> null


def test_format_table_is_aligned() -> None:
    ev = SegEvaluator(4, ["road", "traffic light", "c", "d"])
    ev.update(PRED, LABEL)
    lines = format_table(ev.compute()).splitlines()
    rows = lines[2:6]
    assert rows[1].startswith("traffic light") and len({len(r) for r in rows}) == 1
    assert lines[-2].startswith("mIoU 52.78")


def test_invalid_values_raise() -> None:
    ev = SegEvaluator(3)
    with pytest.raises(ValueError, match="differ in shape"):
        ev.update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="label value 7"):
        ev.update(torch.zeros(2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="predicted class 5"):
        ev.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class names"):
        SegEvaluator(3, ["a"])


# --------------------------------------------------------------------------- DDP


class _Out(NamedTuple):
    probs: torch.Tensor


class PixelModel(nn.Module):
    """Per-pixel classifier (1x1 conv + softmax), returns an object with ``probs`` like the real model."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x: torch.Tensor) -> _Out:
        return _Out(self.conv(x).softmax(1))


def _dataset(n: int = 5, k: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        h, w = 16 + 4 * i, 20
        label = torch.randint(0, k, (h, w), generator=g)
        label[torch.rand(h, w, generator=g) < 0.1] = 255
        items.append({"image": torch.randn(3, h, w, generator=g), "label": label, "path": f"img{i}.png"})
    return items


def _ddp_worker(rank: int, world: int, port: int, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        k = 4
        rng = np.random.default_rng(0)
        label = torch.from_numpy(rng.integers(0, k, (4, 30, 30)))
        pred = torch.from_numpy(rng.integers(0, k, (4, 30, 30)))
        ev = SegEvaluator(k)
        ev.update(pred[rank::world], label[rank::world])  # each rank scores half of the images
        ev.reduce()
        # evaluate() with a DistributedSampler: 5 items on 2 ranks -> rank 1 gets one padding repeat
        data = _dataset()
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler, collate_fn=lambda b: b)
        metrics = evaluate(PixelModel(k), loader, EvalConfig(), SegEvaluator(k), torch.device("cpu"), progress=False)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump({"confusion": ev.confusion.tolist(), "metrics": to_jsonable(metrics)}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_reduce_equals_single_process(tmp_path) -> None:
    out_file = str(tmp_path / "rank0.json")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out_file), nprocs=2, join=True)
    result = json.loads(open(out_file).read())

    k = 4
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, k, (4, 30, 30)))
    pred = torch.from_numpy(rng.integers(0, k, (4, 30, 30)))
    single = SegEvaluator(k)
    single.update(pred, label)
    assert torch.equal(torch.tensor(result["confusion"]), single.confusion)

    data = _dataset()
    ref = evaluate(PixelModel(k), [data[:2], data[2:]], EvalConfig(), SegEvaluator(k), torch.device("cpu"),
                   progress=False)
    got = result["metrics"]
    assert got["num_images"] == len(data) == ref["num_images"]  # padding repeat not counted
    assert got["num_pixels"] == ref["num_pixels"]
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9)
