#!/usr/bin/env python
"""How far can a trained model's superpixels carry the labels? The superpixel oracle, per class.

    python benchmarks/superpixel_oracle.py --checkpoint work_dirs/camvid/spx_lite0_base/model.safetensors

For every val image (train image with ``--split train``), the model's own association ``A*`` is kept and each
superpixel's predicted class distribution is replaced by its true label histogram (the labels pooled through
``A*``, as the superpixel loss's target); projecting those back through ``A*`` and taking the argmax gives the
*oracle* labels. Its per-class IoU is what perfect superpixel classification would reach with these
superpixels: where the model is far below its oracle, the classifier is what fails; where the oracle itself is
low, the superpixels (their size, their boundaries) are.

Two more rows split the model's loss further. *hard*: every pixel takes the predicted class of its hard
superpixel (the association's argmax) instead of the association-weighted mixture of its 9 neighbours'; where it
beats the model, the soft projection blurs thin classes into their neighbours. *recall chain*, per class k, over
the labelled pixels of class k: the share whose hard superpixel's label histogram peaks at k (*carried*: the
superpixel could predict it), of those the share whose superpixel the classifier predicts as k (*recognised*),
and of those the share the model's output labels k (*kept*: the projection does not lose it). Their product is a
lower bound of the model's recall. *false positives*, per class k, over the labelled pixels the model labels k
but are not: per 100 pixels of class k, how many (*per_100*), and the share whose hard superpixel's histogram
peaks at k (*cut*: the superpixel spills over its object), whose superpixel does not peak at k but is predicted
k (*misrecognised*), and the rest (*spread*: k came from a neighbouring superpixel through the soft projection).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def oracle(checkpoint: str, split: str = "val") -> dict:
    import torch
    import torch.nn.functional as F

    from spxseg.data import build_dataset, dataset_class
    from spxseg.engine.checkpoint import load_trained_model
    from spxseg.engine.evaluator import SegEvaluator
    from spxseg.models import superpixel_ops as ops
    from spxseg.models.factory import has_superpixels
    from spxseg.models.loss import superpixel_targets

    model, cfg, _ = load_trained_model(checkpoint)
    if not has_superpixels(model):
        raise SystemExit(f"error: {checkpoint} is a {cfg.model.architecture} model: it has no superpixels")
    model.eval()
    dataset = build_dataset(cfg.data, cfg.data.train_split if split == "train" else cfg.data.val_split, augment=False)
    names = list(dataset_class(cfg.data.dataset).class_names)
    k = cfg.model.num_classes
    own, best, hard = SegEvaluator(k, names), SegEvaluator(k, names), SegEvaluator(k, names)
    # per class: carried, carried and recognised, carried, recognised and kept (labelled pixels: own.confusion)
    chain = torch.zeros(3, k, dtype=torch.float64)
    # per predicted class: false positives that are cut, misrecognised (all of them: own.confusion)
    false_pos = torch.zeros(2, k, dtype=torch.float64)
    for i in range(len(dataset)):
        item = dataset[i]
        x, label = item["image"][None], item["label"][None]
        height, width = x.shape[-2:]
        with torch.no_grad():
            out = model(x)
            if tuple(label.shape[-2:]) != (height, width):
                raise SystemExit("error: the oracle needs labels at the input size: set data.test_resize_labels "
                                 "or data.test_short_side=None in the checkpoint's config")
            padded = (out.assoc.shape[-2] * model.stride, out.assoc.shape[-1] * model.stride)
            label_padded = F.pad(label, (0, padded[1] - width, 0, padded[0] - height), value=255)
            hist, _ = superpixel_targets(out.assoc.float(), label_padded, k, model.stride, model.cell)
            projected = ops.project(out.assoc.float(), hist.permute(0, 3, 1, 2))  # (1, K, h, w)
            projected = F.interpolate(projected, size=padded, mode="bilinear", align_corners=False)
        labels_own = out.probs.argmax(1)[0]
        own.update(labels_own, label[0])
        best.update(projected[:, :, :height, :width].argmax(1)[0], label[0])
        ids = out.superpixels[0]  # (H, W) row-major index into the Gh x Gw grid
        sp_pred = out.sp_logits[0].argmax(0).flatten()[ids]  # (H, W) predicted class of each pixel's superpixel
        sp_major = hist[0].argmax(-1).flatten()[ids]  # (H, W) the peak of its label histogram
        hard.update(sp_pred, label[0])
        gt = label[0]
        labelled = gt != 255
        carried = labelled & (sp_major == gt)
        recognised = carried & (sp_pred == gt)
        kept = recognised & (labels_own == gt)
        for row, mask in enumerate((carried, recognised, kept)):
            chain[row] += torch.bincount(gt[mask], minlength=k).double()
        wrong = labelled & (labels_own != gt)
        cut = wrong & (sp_major == labels_own)
        misrecognised = wrong & (sp_major != labels_own) & (sp_pred == labels_own)
        for row, mask in enumerate((cut, misrecognised)):
            false_pos[row] += torch.bincount(labels_own[mask], minlength=k).double()
    result = {}
    for key, ev in (("model", own), ("oracle", best), ("hard", hard)):
        m = ev.compute()
        result[key] = {"mIoU": m["mIoU"], "per_class_IoU": {c: v["IoU"] for c, v in m["per_class"].items()}}
    confusion = own.confusion.double()  # rows: ground truth, columns: the model's labels
    labelled_pixels, false_positives = confusion.sum(1), confusion.sum(0) - confusion.diagonal()
    # carried of labelled, recognised of carried, kept of recognised
    share = chain / torch.cat([labelled_pixels[None], chain[:-1]]).clamp_min(1)
    result["recall_chain"] = {
        step: {c: round(100 * share[row, i].item(), 1) for i, c in enumerate(names)}
        for row, step in enumerate(("carried", "recognised", "kept"))
    }
    fp = false_positives.clamp_min(1)
    shares = {"per_100": 100 * false_positives / labelled_pixels.clamp_min(1), "cut": 100 * false_pos[0] / fp,
              "misrecognised": 100 * false_pos[1] / fp, "spread": 100 * (false_positives - false_pos.sum(0)) / fp}
    result["false_positives"] = {
        step: {c: round(v[i].item(), 1) for i, c in enumerate(names)} for step, v in shares.items()
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, help="our trained weights (repeatable)")
    parser.add_argument("--split", choices=["val", "train"], default="val",
                        help="the config's split to score (train: without augmentation, to tell under-fitting "
                             "from generalisation)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)
    results = {}
    for path in args.checkpoint:
        results[path] = oracle(path, args.split)
        for key, r in results[path].items():
            if key in ("recall_chain", "false_positives"):
                for step, shares in r.items():
                    print(f"{path} {step:10s} | " + " ".join(f"{c} {v:.1f}" for c, v in shares.items()))
                continue
            classes = " ".join(f"{c} {v:.1f}" for c, v in r["per_class_IoU"].items())
            print(f"{path} {key:6s} mIoU {r['mIoU']:.1f} | {classes}")
    if args.json:
        from spxseg.engine.checkpoint import write_json

        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
