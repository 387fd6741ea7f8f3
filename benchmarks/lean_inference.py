#!/usr/bin/env python
"""The lean label path (``model.predict``) against the full forward + argmax: same labels? how much faster?

    python benchmarks/lean_inference.py --checkpoint work_dirs/camvid/spx_lite0_base/model.safetensors
    python benchmarks/lean_inference.py --checkpoint A.safetensors --checkpoint B.safetensors --skip-timing

1. Labels, per trained model, on its config's val split:
   * at the test resolution (``test_resize_labels``: output size = input size), where the lean path must
     give the labels of the full path (``resample_argmax`` is exact up to float near-ties), and
   * at the label files' resolution (CamVid: 180x240 input, 360x480 labels), where the lean path
     resamples the stride-s probabilities once and the full path twice (to the input, then to the labels).
   Reported: pixel agreement and the val mIoU of both paths.
2. CPU latency at ``--size`` (1 thread by default; run it on a quiet machine, never beside a training):
   the full forward followed by the argmax, against ``predict`` (labels only), for each model, in
   interleaved rounds with the project's timer; and the same at ``--size`` input with labels at twice the size.
3. The part that differs, alone (ours): from the stride-s probabilities of a real val frame at ``--size``
   to the outputs, ``forward``'s tail (bilinear resize of the probabilities, the association in (B, 9, h, w),
   the hard ids; then the argmax) against ``predict``'s (``resample_argmax``). Milliseconds, so many calls:
   steadier than the whole-model figures, which move by several per cent on this shared machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def label_agreement(checkpoint: str, resize_labels: bool) -> dict:
    """Both paths over the val split, at the test resolution or at the label files' one."""
    import torch
    from tqdm import tqdm

    from spxseg.data import build_dataset
    from spxseg.engine.checkpoint import load_trained_model
    from spxseg.engine.evaluator import SegEvaluator
    from spxseg.engine.inference import infer_labels, infer_probs

    model, cfg, _ = load_trained_model(checkpoint)
    model.eval()
    cfg.data.test_resize_labels = resize_labels
    dataset = build_dataset(cfg.data, cfg.data.val_split, augment=False)
    full, lean = SegEvaluator(cfg.model.num_classes), SegEvaluator(cfg.model.num_classes)
    same = total = 0
    for i in tqdm(range(len(dataset)), desc=f"labels ({'test' if resize_labels else 'file'} size)", leave=False,
                  disable=None):  # no bar when the output is not a terminal
        item = dataset[i]
        x, label = item["image"][None], item["label"]
        size = tuple(label.shape[-2:])
        with torch.no_grad():
            plain = infer_probs(model, x, cfg.eval, out_size=size).argmax(1)[0]
            fast = infer_labels(model, x, cfg.eval, out_size=size)[0]
        full.update(plain, label)
        lean.update(fast, label)
        same += int((plain == fast).sum())
        total += plain.numel()
    return {"input": list(x.shape[-2:]), "labels": list(size), "images": len(dataset),
            "pixel_agreement": same / total, "mIoU_full": full.compute()["mIoU"], "mIoU_lean": lean.compute()["mIoU"]}


def timing(checkpoints: list[str], size: tuple[int, int], threads: int, iters: int, rounds: int) -> dict:
    import torch
    import torch.nn.functional as F

    from spxseg.benchmark.timing import time_interleaved
    from spxseg.engine.checkpoint import load_trained_model

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    big = (2 * size[0], 2 * size[1])
    fns = {}
    for path in checkpoints:
        model = load_trained_model(path)[0].eval()
        name = Path(path).parent.name

        def full(model=model) -> torch.Tensor:
            return model(x).probs.argmax(1)

        def full_big(model=model) -> torch.Tensor:
            return F.interpolate(model(x).probs, size=big, mode="bilinear", align_corners=False).argmax(1)

        fns[f"{name}: forward + argmax"] = full
        fns[f"{name}: predict"] = lambda model=model: model.predict(x).labels
        fns[f"{name}: forward + resize x2 + argmax"] = full_big
        fns[f"{name}: predict(size=x2)"] = lambda model=model: model.predict(x, size=big).labels
    with torch.inference_mode():
        timings = time_interleaved(fns, "cpu", iters, warmup=2, rounds=rounds)
    return {name: t.median_ms for name, t in timings.items()}


def tail_timing(checkpoint: str, size: tuple[int, int], threads: int, iters: int, rounds: int) -> dict:
    """Milliseconds of forward's and predict's tails after the shared stride-s part, on a real val frame."""
    import torch
    import torch.nn.functional as F

    from spxseg.benchmark.timing import time_interleaved
    from spxseg.data import build_dataset
    from spxseg.engine.checkpoint import load_trained_model
    from spxseg.models import superpixel_ops as ops
    from spxseg.models.factory import has_superpixels
    from spxseg.models.resample_argmax import resample_argmax

    torch.set_num_threads(threads)
    model, cfg, _ = load_trained_model(checkpoint)
    if not has_superpixels(model):
        return {}
    model.eval()
    cfg.data.test_short_side = size[0]
    image = build_dataset(cfg.data, cfg.data.val_split, augment=False)[0]["image"][None]
    height, width = image.shape[-2:]
    with torch.inference_mode():
        coarse = model.coarse(image)  # what forward and predict share

        def forward_tail() -> torch.Tensor:
            probs = F.interpolate(coarse.probs, size=coarse.padded, mode="bilinear", align_corners=False)
            model._hard_ids(coarse.assoc)[:, :height, :width]
            ops.assoc_from_cells(coarse.assoc, model.cell)
            return probs[:, :, :height, :width].argmax(1)

        def predict_tail() -> torch.Tensor:
            return resample_argmax(coarse.probs, (height, width), (1 / model.stride, 1 / model.stride))

        assert torch.equal(forward_tail(), predict_tail())
        timings = time_interleaved({"forward tail + argmax": forward_tail, "predict tail": predict_tail}, "cpu",
                                   iters, warmup=5, rounds=rounds)
    return {"input": [height, width], **{name: t.median_ms for name, t in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, help="trained weights (repeat for more)")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"), help="timing input")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-labels", action="store_true")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results: dict = {"labels": {}, "timing_ms": None, "size": args.size, "threads": args.threads}
    if not args.skip_labels:
        for path in args.checkpoint:
            results["labels"][path] = {key: label_agreement(path, resize) for key, resize in
                                       (("test_size", True), ("label_size", False))}
            for key, r in results["labels"][path].items():
                print(f"{path} [{key}: input {r['input']} -> labels {r['labels']}, {r['images']} images]: "
                      f"{100 * r['pixel_agreement']:.4f}% of pixels agree; mIoU full {r['mIoU_full']:.2f}, "
                      f"lean {r['mIoU_lean']:.2f}")
    if not args.skip_timing:
        results["tail_ms"] = {path: tail_timing(path, tuple(args.size), args.threads, 20 * args.iters, args.rounds)
                              for path in args.checkpoint}
        for path, tail in results["tail_ms"].items():
            if tail:
                print(f"{path} at {tail['input']}: forward's tail + argmax {tail['forward tail + argmax']:.2f} ms, "
                      f"predict's tail {tail['predict tail']:.2f} ms")
        results["timing_ms"] = timing(args.checkpoint, tuple(args.size), args.threads, args.iters, args.rounds)
        for name, ms in results["timing_ms"].items():
            print(f"{name:60s} {ms:8.1f} ms")
    if args.json:
        from spxseg.engine.checkpoint import write_json

        write_json(results, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
