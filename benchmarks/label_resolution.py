#!/usr/bin/env python
"""What a prediction at stride s can score at best: the val labels kept at one class per s x s block.

    python benchmarks/label_resolution.py --config configs/camvid/spx_lite0.yaml --strides 2 4 8 16

Each block of s x s image pixels takes the most frequent class among its labelled pixels (the area shares of
:func:`spxseg.models.loss.label_distribution_at_stride`), every pixel of the block gets that class back, and the
result is scored against the labels themselves (mIoU and per-class IoU, the evaluator's). A model whose classes
reach the pixels at stride s and are then resized cannot draw a boundary sharper than such a block (its bilinear
resize softens the steps a little, so this is a guide, not a strict bound): where this table is far above a
model, resolution is not what it lacks. The split is the config's val split as the study scores it
(``data.test_short_side``, ``data.test_resize_labels``).
"""

from __future__ import annotations

import argparse
import sys


def block_labels(labels, stride: int, num_classes: int, ignore_index: int = 255):
    """Labels (B, H, W) -> (B, H, W): each s x s block's most frequent labelled class, unlabelled blocks ignored."""
    import torch

    from spxseg.models.loss import label_distribution_at_stride

    height, width = labels.shape[-2:]
    size = (-(-height // stride), -(-width // stride))
    dist, labelled = label_distribution_at_stride(labels, stride, size, num_classes, ignore_index, area=True)
    blocks = torch.where(labelled > 0, dist.argmax(1), ignore_index)  # (B, h, w)
    return blocks.repeat_interleave(stride, -2).repeat_interleave(stride, -1)[:, :height, :width]


def label_resolution(config: str, strides: list[int]) -> dict:
    from spxseg.config import load_config
    from spxseg.data import build_dataset, dataset_class
    from spxseg.engine.evaluator import SegEvaluator

    cfg = load_config(config)
    dataset = build_dataset(cfg.data, cfg.data.val_split, augment=False)
    names = list(dataset_class(cfg.data.dataset).class_names)
    k, ignore = cfg.model.num_classes, cfg.model.loss.ignore_index
    evaluators = {s: SegEvaluator(k, names, ignore) for s in strides}
    for i in range(len(dataset)):
        label = dataset[i]["label"][None]
        for s, evaluator in evaluators.items():
            evaluator.update(block_labels(label, s, k, ignore), label)
    results = {}
    for s, evaluator in evaluators.items():
        m = evaluator.compute()
        results[s] = {"mIoU": round(m["mIoU"], 1),
                      "per_class_IoU": {c: round(v["IoU"], 1) for c, v in m["per_class"].items()}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="its data section and val split are used")
    parser.add_argument("--strides", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)
    results = label_resolution(args.config, args.strides)
    for s, r in results.items():
        classes = " ".join(f"{c} {v:.1f}" for c, v in r["per_class_IoU"].items())
        print(f"stride {s:2d}: mIoU {r['mIoU']:.1f} | {classes}")
    if args.json:
        from spxseg.engine.checkpoint import write_json

        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
