#!/usr/bin/env python
"""Export the model to ONNX for a fixed input size, check it, and compare onnxruntime with PyTorch.

    python tools/export_onnx.py --config configs/cityscapes/spx_r50.yaml --checkpoint best.pth \\
        --size 1024 2048 --out spx_r50_1024x2048.onnx
    python tools/export_onnx.py --checkpoint work_dirs/x/model.safetensors --size 1024 2048 --out x.onnx

Input ``image`` (B, 3, H, W) float32, RGB normalised with the config's mean / std (stored in the
model's metadata). Outputs ``probs`` (B, K, H, W) class probabilities, ``labels`` (B, H, W) int64
argmax and ``superpixels`` (B, H, W) int64 superpixel ids. Needs ``pip install onnx onnxscript
onnxruntime`` (the ``onnx`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.cli import add_model_arguments, reports  # noqa: E402
from spxseg.config import ConfigError, load_tool_config  # noqa: E402


@reports(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=False)
    parser.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"), help="input size")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the exported graph")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    parser.add_argument("--no-labels", action="store_true", help="do not export the argmax labels output")
    parser.add_argument("--no-probs", action="store_true",
                        help="lean graph: labels (and superpixels) only, no full-resolution probabilities output")
    parser.add_argument("--no-superpixels", action="store_true", help="do not export the superpixels output")
    parser.add_argument("--no-optimize", action="store_true", help="skip the exporter's graph optimisation (faster)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--atol", type=float, default=1e-4, help="fail when the max abs prob. difference exceeds this")
    parser.add_argument("--json", help="write the export report (sizes, differences, timings) to this JSON file")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)

    cfg = load_tool_config(args.config, args.opts, args.checkpoint)  # ConfigError: one line, exit 2
    h, w = args.size
    if h < 32 or w < 32:
        print(f"error: --size {h} {w}: the model needs H, W >= 32", file=sys.stderr)
        return 2

    import time

    import torch

    from spxseg.engine.checkpoint import build_model_for_weights, load_trained_model, write_json
    from spxseg.engine.onnx_export import compare_onnx, export_onnx
    from spxseg.engine.predictor import class_info

    if args.checkpoint:
        try:  # read safely: a file that needs more than tensors and plain data is refused before anything runs
            model, cfg, _ = load_trained_model(args.checkpoint, cfg, args.opts)
            model.eval()
        except (FileNotFoundError, ImportError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        model = build_model_for_weights(cfg.model).eval()  # no ImageNet download for a random export
        print("WARNING: no --checkpoint given: exporting a model with RANDOM weights", file=sys.stderr)
    names, _ = class_info(cfg)
    metadata = {
        "producer": "spxseg", "input": "image (B,3,H,W) float32 RGB, (x - mean) / std on the 0-255 scale",
        "mean": json.dumps(cfg.data.mean), "std": json.dumps(cfg.data.std), "class_names": json.dumps(names),
        "input_size": json.dumps([h, w]), "checkpoint": str(args.checkpoint or "none: random weights"),
        # what the evaluation resized images to (short side, px; null: kept as they are)
        "test_short_side": json.dumps(cfg.data.test_short_side),
    }
    short = cfg.data.test_short_side
    if short and min(h, w) != short:  # e.g. a CamVid model (scored at 180x240) exported at the frames' 360x480
        print(f"note: the config scores images resized to a short side of {short} px (data.test_short_side); this "
              f"export takes {h}x{w}, a resolution the model was not evaluated at: resize inputs first and export "
              f"at that size (--size), or keep it knowingly", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        path = export_onnx(model, (h, w), args.out, opset=args.opset, batch=args.batch, labels=not args.no_labels,
                           superpixels=not args.no_superpixels, optimize=not args.no_optimize, metadata=metadata,
                           probs=not args.no_probs)
    except (ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"onnx": str(path), "size": [h, w], "batch": args.batch, "opset": args.opset,
              "export_s": time.perf_counter() - t0, "file_mb": path.stat().st_size / 2**20}
    print(f"exported {path} ({report['file_mb']:.1f} MiB, opset {args.opset}, input {args.batch}x3x{h}x{w}) "
          f"in {report['export_s']:.1f} s; onnx.checker: OK")
    status = 0
    if not args.no_check:
        gen = torch.Generator().manual_seed(0)
        image = torch.randn(args.batch, 3, h, w, generator=gen)
        try:
            report.update(compare_onnx(path, model, image))
        except ImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        diff = report["max_abs_diff_probs"]
        line = "onnxruntime vs PyTorch: " + ("no probabilities output" if diff is None else
                                             f"max abs diff of probabilities {diff:.3g} (atol {args.atol:g})")
        if "labels_agreement" in report:
            line += f", labels agree on {100 * report['labels_agreement']:.4f}% of pixels"
        if "superpixels_agreement" in report:
            line += f", superpixels on {100 * report['superpixels_agreement']:.4f}%"
        print(line)
        print(f"run time (CPU, one call after a warm-up): onnxruntime {report['onnxruntime_s']:.2f} s, "
              f"PyTorch {report['torch_s']:.2f} s")
        if diff is not None and not diff <= args.atol:
            print(f"error: difference {diff:.3g} exceeds --atol {args.atol:g}", file=sys.stderr)
            status = 1
    if args.json:
        write_json(report, args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
