"""Sanity-check a dataset before training: images per split and the class pixel histogram.

    python tools/dataset_info.py --config configs/synthetic/spx_r18.yaml [--opts data.root=... ...]
    python tools/dataset_info.py --config configs/camvid/spx_lite0_base.yaml --splits train --class-weights

``--class-weights`` also prints ENet's class weights of the first split's histogram as the
``model.loss.class_weights`` line to paste into a config.

Labels are read without augmentation (train ids, 255 = ignore). The synthetic set is
generated first when the config asks for it (``data.synthetic.generate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.cli import reports  # noqa: E402
from spxseg.config import ConfigError, load_config  # noqa: E402
from spxseg.data import build_dataset, ensure_synthetic  # noqa: E402
from spxseg.models.loss import enet_class_weights  # noqa: E402


def histogram(ds, max_images: int | None, desc: str) -> np.ndarray:
    """Pixel count per label value 0..255 over (up to ``max_images``) items of ``ds``."""
    from tqdm import tqdm

    n = len(ds) if not max_images else min(len(ds), max_images)
    counts = np.zeros(256, np.int64)
    for i in tqdm(range(n), desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr):
        lab = ds.load_label(i)
        if lab is not None:
            counts += np.bincount(lab.ravel(), minlength=256)
    return counts


@reports(ConfigError)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--opts", nargs="*", default=[], help="dotted overrides, e.g. data.root=/data/cityscapes")
    ap.add_argument(
        "--splits", nargs="*", default=["train", "val"], help="splits to inspect, any of train val test "
        "(default: train val)"
    )
    ap.add_argument("--max-images", type=int, default=None, help="histogram over at most N images per split")
    ap.add_argument("--class-weights", action="store_true",
                    help="print ENet class weights 1/ln(1.02 + frequency) of the first split (normally train)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    print(f"dataset: {cfg.data.dataset}  root: {cfg.data.root}")
    try:
        ensure_synthetic(cfg.data)  # the explicit generation step, as in tools/train.py
    except ValueError as err:  # e.g. a synthetic size below 32x32
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = {}
    for split in args.splits:
        try:
            ds = build_dataset(cfg.data, split)
        except (FileNotFoundError, ValueError) as err:
            print(f"{split:>5s}: unavailable: {err}")
            continue
        print(f"{split:>5s}: {len(ds)} images")
        results[split] = (ds, histogram(ds, args.max_images, f"{split} labels"))
    if not results:
        return 1
    names = next(iter(results.values()))[0].class_names
    splits = list(results)
    header = f"{'id':>3s}  {'class':<20s}" + "".join(f"{s + ' pixels':>16s}{'%':>8s}" for s in splits)
    print("\n" + header)
    print("-" * len(header))
    rows = list(range(len(names))) + [255]
    for c in rows:
        name = names[c] if c < len(names) else "ignore (255)"
        line = f"{c:>3d}  {name:<20s}"
        for s in splits:
            counts = results[s][1]
            total = max(1, int(counts.sum()))
            line += f"{int(counts[c]):>16,d}{100.0 * counts[c] / total:>7.2f}%"
        print(line)
    for s in splits:
        counts = results[s][1]
        absent = [names[c] for c in range(len(names)) if counts[c] == 0]
        if absent and len(absent) < len(names):
            print(f"{s}: {len(absent)} classes have no pixels: {', '.join(absent)}")
    if args.class_weights:
        split = splits[0]
        try:
            weights = enet_class_weights(results[split][1][: len(names)])
        except ValueError:  # no labelled pixel in the split
            print(f"error: --class-weights: {split} has no labelled pixel to weigh the classes by", file=sys.stderr)
            return 2
        print(f"\nENet class weights of {split} (pixel-weighted mean 1), for the config:")
        print("model:\n  loss:\n    class_weights: [" + ", ".join(f"{w:.3f}" for w in weights) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
