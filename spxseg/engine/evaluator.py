"""Semantic segmentation metrics from a confusion matrix.

Definitions (all in percent, classes indexed by train id, ``ignore_index`` pixels excluded):

* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; NaN when class c is neither in the labels nor in the
  predictions (of labelled pixels).
* ``mIoU`` = mean of the non-NaN ``IoU_c``: classes present in the ground truth *or* the predictions.
  This is exactly the Cityscapes "Score Average" of ``cityscapesscripts`` (which averages the 19
  evaluated classes whose IoU is not NaN and counts false positives only on non-void ground truth).
* ``mAcc`` = mean per-class recall ``TP_c / (TP_c + FN_c)`` over classes present in the ground truth.
* ``aAcc`` = overall pixel accuracy; ``fwIoU`` = IoU weighted by ground-truth class frequency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from spxseg.cli import text_table


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """K x K int64 confusion matrix (rows: ground truth, columns: prediction) on ``label``'s device.

    Args:
        pred: predicted train ids, any shape, values in ``0..K-1``.
        label: ground-truth train ids of the same shape, values in ``0..K-1`` or ``ignore_index``.
    """
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    pred = pred.to(label.device).reshape(-1).long()
    label = label.reshape(-1).long()
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    k = num_classes
    if label.numel():
        lo, hi = torch.aminmax(label)
        if int(lo) < 0 or int(hi) >= k:
            bad = int(hi) if int(hi) >= k else int(lo)
            raise ValueError(f"label value {bad} outside 0..{k - 1} and not the ignore index {ignore_index}")
        lo, hi = torch.aminmax(pred)
        if int(lo) < 0 or int(hi) >= k:
            bad = int(hi) if int(hi) >= k else int(lo)
            raise ValueError(f"predicted class {bad} outside 0..{k - 1}; does the model have {k} classes?")
    return torch.bincount(label * k + pred, minlength=k * k).view(k, k)


def metrics_from_confusion(confusion: Tensor | np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
    """mIoU, mAcc, aAcc, fwIoU (percent) and per-class IoU / Acc from a K x K confusion matrix.

    Returns a dict with ``mIoU``, ``mAcc``, ``aAcc``, ``fwIoU`` (float, NaN when undefined),
    ``per_class`` ({name: {"IoU", "Acc"}}, NaN for undefined), ``num_pixels``, ``num_classes_evaluated``
    (classes averaged in mIoU) and ``absent_classes`` (names with NaN IoU, excluded from mIoU).
    """
    conf = torch.as_tensor(confusion).detach().cpu().double()
    k = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    tp = conf.diag()
    gt = conf.sum(1)
    predicted = conf.sum(0)
    union = gt + predicted - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
    total = conf.sum()
    present = ~torch.isnan(iou)

    def pct(x: Tensor | float) -> float:
        return float(x) * 100.0

    def nanmean(x: Tensor) -> float:
        valid = x[~torch.isnan(x)]
        return pct(valid.mean()) if valid.numel() else float("nan")

    if total > 0:
        a_acc = pct(tp.sum() / total)
        fw = pct(((gt / total)[present] * iou[present]).sum())
    else:
        a_acc = fw = float("nan")
    return {
        "mIoU": nanmean(iou),
        "mAcc": nanmean(acc),
        "aAcc": a_acc,
        "fwIoU": fw,
        "per_class": {name: {"IoU": pct(iou[i]), "Acc": pct(acc[i])} for i, name in enumerate(names)},
        "num_pixels": int(total),
        "num_classes_evaluated": int(present.sum()),
        "absent_classes": [name for i, name in enumerate(names) if not bool(present[i])],
    }


class SegEvaluator:
    """Accumulates a K x K confusion matrix (rows: ground truth, columns: prediction).

    Pixels labelled ``ignore_index`` are skipped. The matrix lives on ``device`` (see :meth:`to`),
    so counting stays on the GPU when predictions are there. Under DDP call :meth:`reduce` once
    before :meth:`compute` so every rank sees the sum over all ranks.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None = None, ignore_index: int = 255,
                 device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def to(self, device: torch.device | str) -> SegEvaluator:
        """Move the confusion matrix (and future counting) to ``device``."""
        self.confusion = self.confusion.to(device)
        return self

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add predictions and labels of the same shape (any shape, e.g. (H, W) or (B, H, W)), train ids."""
        label = torch.as_tensor(label).to(self.confusion.device)
        conf = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.confusion += conf

    def update_confusion(self, confusion: Tensor) -> None:
        """Add a precomputed K x K confusion matrix."""
        confusion = torch.as_tensor(confusion)
        if confusion.shape != self.confusion.shape:
            raise ValueError(f"confusion matrix {tuple(confusion.shape)} != {tuple(self.confusion.shape)}")
        self.confusion += confusion.to(self.confusion.device, torch.int64)

    def reduce(self) -> None:
        """Sum the confusion matrix over all DDP ranks (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            confusion = self.confusion.to(device)
            dist.all_reduce(confusion)
            self.confusion = confusion.to(self.confusion.device)

    def compute(self) -> dict[str, Any]:
        """Metrics of the accumulated matrix, see :func:`metrics_from_confusion`."""
        return metrics_from_confusion(self.confusion, self.class_names)


def format_table(metrics: dict) -> str:
    """Aligned per-class table (IoU, Acc in percent) plus the summary line."""
    def fmt(x: float | None) -> str:
        return "   n/a" if x is None or math.isnan(x) else f"{x:6.2f}"

    rows = [[name, fmt(row["IoU"]), fmt(row["Acc"])] for name, row in metrics["per_class"].items()]
    lines = text_table(["class", "IoU", "Acc"], rows)
    lines.append("-" * len(lines[0]))
    lines.append(
        f"mIoU {fmt(metrics['mIoU']).strip()}  mAcc {fmt(metrics['mAcc']).strip()}  "
        f"aAcc {fmt(metrics['aAcc']).strip()}  fwIoU {fmt(metrics['fwIoU']).strip()}"
    )
    absent = metrics.get("absent_classes")
    if absent:
        lines.append(f"n/a: {len(absent)} class(es) absent from labels and predictions, excluded from mIoU")
    return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
    """Replace NaN / inf floats by None (strict JSON), recursively; tensors and numpy scalars to Python."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (Tensor, np.ndarray)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
