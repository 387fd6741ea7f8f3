"""Semantic segmentation metrics from a confusion matrix (DESIGN §6)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


class SegEvaluator:
    """Accumulates a K x K confusion matrix (rows: ground truth, columns: prediction).

    Pixels labelled ``ignore_index`` are skipped. Under DDP call :meth:`reduce` once before
    :meth:`compute` so every rank sees the sum over all ranks.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None = None, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add predictions and labels of the same shape (any shape), train ids."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        if label.numel() and (int(label.max()) >= self.num_classes or int(label.min()) < 0):
            raise ValueError(f"label value {int(label.max())} outside 0..{self.num_classes - 1} and not ignore")
        k = self.num_classes
        counts = torch.bincount(label * k + pred, minlength=k * k)
        self.confusion += counts.view(k, k).to(self.confusion.device, torch.int64)

    def reduce(self) -> None:
        """Sum the confusion matrix over all DDP ranks (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            confusion = self.confusion.to(device)
            dist.all_reduce(confusion)
            self.confusion = confusion.cpu()

    def compute(self) -> dict:
        """mIoU, mAcc, aAcc, fwIoU in percent, and per-class IoU / Acc (NaN for absent classes)."""
        conf = self.confusion.double()
        tp = conf.diag()
        gt = conf.sum(1)
        predicted = conf.sum(0)
        union = gt + predicted - tp
        iou = tp / union  # NaN where the class is neither in the labels nor in the predictions
        acc = tp / gt  # NaN where the class is absent from the labels
        total = conf.sum()
        freq = gt / total if total > 0 else gt
        present = ~torch.isnan(iou)
        fw = (freq[present] * iou[present]).sum() if total > 0 else torch.tensor(float("nan"))

        def pct(x: Tensor) -> float:
            return float(x) * 100.0

        def nanmean(x: Tensor) -> float:
            valid = x[~torch.isnan(x)]
            return pct(valid.mean()) if valid.numel() else float("nan")

        return {
            "mIoU": nanmean(iou),
            "mAcc": nanmean(acc),
            "aAcc": pct(tp.sum() / total) if total > 0 else float("nan"),
            "fwIoU": pct(fw),
            "per_class": {
                name: {"IoU": pct(iou[i]), "Acc": pct(acc[i])} for i, name in enumerate(self.class_names)
            },
            "num_pixels": int(total),
        }


def format_table(metrics: dict) -> str:
    """Aligned per-class table plus the summary line."""
    names = list(metrics["per_class"])
    width = max([len("class"), *map(len, names)])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]

    def fmt(x: float) -> str:
        return "   n/a" if math.isnan(x) else f"{x:6.2f}"

    for name in names:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {fmt(row['IoU'])}  {fmt(row['Acc'])}")
    lines.append("-" * (width + 16))
    lines.append(
        f"mIoU {fmt(metrics['mIoU']).strip()}  mAcc {fmt(metrics['mAcc']).strip()}  "
        f"aAcc {fmt(metrics['aAcc']).strip()}  fwIoU {fmt(metrics['fwIoU']).strip()}"
    )
    return "\n".join(lines)
