"""How far does colour alone get on the synthetic street scenes?

Fits a multinomial logistic regression on the RGB of single pixels (plus degree-2
polynomial features) sampled from the synthetic *train* split, evaluates it on every
pixel of the *val* split and prints the val mIoU (classes present in the ground truth or
the predictions, as spxseg.engine.evaluator does). Two fits are reported: plain and class-balanced
(inverse-frequency weights); the task must keep both at most 35 mIoU, so that a model has
to use shape, texture and context.

    python benchmarks/synthetic_difficulty.py [--root DIR] [--train N --val M --size H W --seed S]

Without ``--root`` the set is generated into a temporary folder with the given (default:
config default) parameters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.config import SyntheticConfig  # noqa: E402
from spxseg.data.cityscapes import CLASS_NAMES, CityscapesDataset  # noqa: E402
from spxseg.data.synthetic import generate_synthetic  # noqa: E402


def features(rgb: np.ndarray) -> torch.Tensor:
    """(N, 3) uint8 RGB -> (N, 9) float: r, g, b and their degree-2 products."""
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([r, g, b, r * r, g * g, b * b, r * g, r * b, g * b], 1)


def load_pixels(ds: CityscapesDataset) -> tuple[np.ndarray, np.ndarray]:
    """All pixels of a dataset: (N, 3) uint8 RGB and (N,) train ids (255 removed)."""
    rgbs, labs = [], []
    for i in range(len(ds)):
        img, lab = ds.load_image(i), ds.load_label(i)
        keep = lab.ravel() != 255
        rgbs.append(img.reshape(-1, 3)[keep])
        labs.append(lab.ravel()[keep])
    return np.concatenate(rgbs), np.concatenate(labs)


def fit(x: torch.Tensor, y: torch.Tensor, k: int, balanced: bool, iters: int = 150) -> torch.nn.Linear:
    lin = torch.nn.Linear(x.shape[1], k)
    counts = torch.bincount(y, minlength=k).float()
    weight = None
    if balanced:
        weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)
    opt = torch.optim.LBFGS(
        lin.parameters(), lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y, weight=weight) + 1e-5 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def miou(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """mIoU (percent) over classes present in the ground truth or predictions, and per-class IoU."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou) * 100), iou * 100


def main() -> None:
    d = SyntheticConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="an existing synthetic set (Cityscapes layout); default: generate one")
    ap.add_argument("--train", type=int, default=d.train)
    ap.add_argument("--val", type=int, default=d.val)
    ap.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--samples", type=int, default=300_000, help="training pixels sampled")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "synthetic"
        if not args.root:
            t = time.time()
            generate_synthetic(root, args.train, args.val, args.size, args.seed)
            print(
                f"generated {args.train}+{args.val} scenes of {args.size[0]}x{args.size[1]} "
                f"in {time.time() - t:.1f} s"
            )
        train = CityscapesDataset(root, "train", pipeline=None)
        val = CityscapesDataset(root, "val", pipeline=None)
        xtr, ytr = load_pixels(train)
        xva, yva = load_pixels(val)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ytr), size=min(args.samples, len(ytr)), replace=False)
    x, y = features(xtr[pick]), torch.from_numpy(ytr[pick].astype(np.int64))
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xv = (features(xva) - mu) / sd
    k = len(CLASS_NAMES)
    results = {}
    for balanced in (False, True):
        lin = fit((x - mu) / sd, y, k, balanced)
        with torch.no_grad():
            pred = lin(xv).argmax(1).numpy()
        conf = np.bincount(yva.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
        m, iou = miou(conf)
        name = "balanced" if balanced else "plain"
        results[name] = m
        print(f"\nper-pixel RGB logistic regression ({name}), val IoU per class:")
        for c in np.flatnonzero(~np.isnan(iou)):
            print(f"  {CLASS_NAMES[c]:<14s} {iou[c]:6.2f}")
        print(f"  pixel accuracy {100 * np.trace(conf) / conf.sum():.2f}")
    worst = max(results.values())
    print(f"\ncolour-only val mIoU: plain {results['plain']:.2f}, balanced {results['balanced']:.2f}")
    print(f"val mIoU {worst:.2f} (max of the two; the synthetic task requires <= 35)")


if __name__ == "__main__":
    main()
