#!/usr/bin/env python
"""Evaluate a checkpoint: per-class IoU table and metrics.json, optionally exported predictions.

    python tools/eval.py --config configs/cityscapes/spx_r50.yaml --checkpoint work_dirs/x/checkpoints/best.pth
    python tools/eval.py --checkpoint work_dirs/x/model.safetensors   # config: work_dirs/x/config.yaml
    python tools/eval.py ... --opts eval.mode=slide eval.flip=true "eval.scales=[0.75,1.0,1.25]"
    python tools/eval.py ... --save-preds preds/    # train_ids/, color/, cityscapes_label_ids/<city>/
    torchrun --nproc_per_node=4 tools/eval.py ...   # data split over the processes, metrics summed

Metrics are computed at the labels' resolution (original, or resized with data.test_resize_labels); mIoU
averages the classes present in the labels or the predictions (the Cityscapes "Score Average" of cityscapesscripts; see
spxseg/engine/evaluator.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.cli import add_model_arguments, reports  # noqa: E402
from spxseg.config import ConfigError, load_tool_config, to_dict  # noqa: E402


@reports(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=True)
    parser.add_argument("--out", help="folder for metrics.json (default: work_dirs/eval/NAME, NAME the config's "
                        "name, else the checkpoint's work dir, else the checkpoint's file name)")
    parser.add_argument("--save-preds", metavar="DIR", help="write predictions (train ids, colour, official format)")
    parser.add_argument("--split", default="val", choices=["val", "test", "train"], help="split to evaluate")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"], help="default: train.amp")
    parser.add_argument("--num-workers", type=int, help="data loader workers (default: data.num_workers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. eval.mode=slide eval.flip=true")
    args = parser.parse_args(argv)

    cfg = load_tool_config(args.config, args.opts, args.checkpoint)  # ConfigError: one line, exit 2
    ckpt_path = Path(args.checkpoint)

    import torch

    from spxseg.data import DatasetError, build_dataloader, build_dataset
    from spxseg.engine.checkpoint import load_trained_model
    from spxseg.engine.distributed import cleanup, init_distributed
    from spxseg.engine.evaluate import evaluate
    from spxseg.engine.evaluator import SegEvaluator, format_table, to_jsonable
    from spxseg.engine.inference import check_eval_config
    from spxseg.engine.predictions import PredictionWriter

    try:  # read safely: a file that needs more than tensors and plain data is refused before anything runs
        model, cfg, ckpt = load_trained_model(ckpt_path, cfg, args.opts)
    except (FileNotFoundError, ImportError, ValueError) as err:  # ImportError: a peer without its extra
        print(f"error: {err}", file=sys.stderr)
        return 2
    config_source = str(args.config) if args.config else ckpt.get("config_file") or f"stored in {ckpt_path}"

    try:
        check_eval_config(cfg.eval)
        dist_info = init_distributed(args.device)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    is_main = dist_info.is_main
    try:
        dataset = build_dataset(cfg.data, args.split, augment=False)  # whole images, labels as scored
        if dataset.num_classes != cfg.model.num_classes:
            raise ValueError(f"the {args.split} set has {dataset.num_classes} classes but model.num_classes is "
                             f"{cfg.model.num_classes}")
        loader = build_dataloader(dataset, cfg.eval.batch_size, train=False,
                                  num_workers=cfg.data.num_workers if args.num_workers is None else args.num_workers,
                                  pin_memory=dist_info.device.type == "cuda")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        cleanup()
        return 2
    model.to(dist_info.device).eval()
    amp = args.amp or cfg.train.amp
    writer = None
    if args.save_preds:
        writer = PredictionWriter(args.save_preds, dataset.palette, dataset=cfg.data.dataset)
    if is_main:
        ev = cfg.eval
        print(f"evaluating {ckpt_path} (iteration {ckpt.get('iteration', '?')}) on {len(dataset)} {args.split} "
              f"images of {dataset!r}; eval mode={ev.mode} flip={ev.flip} scales={ev.scales} amp={amp} "
              f"device={dist_info.device} x{dist_info.world_size}")
    evaluator = SegEvaluator(cfg.model.num_classes, dataset.class_names, cfg.model.loss.ignore_index)
    try:
        metrics = evaluate(model, loader, cfg.eval, evaluator, dist_info.device, amp,
                           progress=is_main and not args.no_progress, on_prediction=writer)
    except DatasetError as err:  # an unreadable image or a label value outside the class set, met on the way
        print(f"error: {err}", file=sys.stderr)
        cleanup()
        return 2
    if writer is not None:
        print(f"[rank {dist_info.rank}] {writer.summary()}" if dist_info.distributed else writer.summary())
    if is_main:
        print(format_table(metrics))
        print(f"{metrics['num_images']} images in {metrics['seconds']:.1f} s: {metrics['images_per_s']:.2f} images/s")
        out_dir = Path(args.out) if args.out else Path("work_dirs") / "eval" / _run_name(args.config, ckpt_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"], "fwIoU": metrics["fwIoU"],
            "per_class": metrics["per_class"],
            "num_classes_evaluated": metrics["num_classes_evaluated"], "absent_classes": metrics["absent_classes"],
            "num_images": metrics["num_images"], "num_pixels": metrics["num_pixels"],
            "seconds": metrics["seconds"], "images_per_s": metrics["images_per_s"],
            "config": config_source, "opts": list(args.opts), "checkpoint": str(ckpt_path),
            "iteration": ckpt.get("iteration"), "split": args.split, "dataset": cfg.data.dataset,
            "data_root": cfg.data.root, "eval": to_dict(cfg.eval), "amp": amp, "device": str(dist_info.device),
            "world_size": dist_info.world_size, "torch": torch.__version__,
            "predictions": str(args.save_preds) if args.save_preds else None,
            "miou_definition": "mean IoU over classes present in the labels or predictions (percent)",
        }
        path = out_dir / "metrics.json"
        path.write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
        print(f"wrote {path}")
    cleanup()
    return 0


def _run_name(config: str | None, checkpoint: Path) -> str:
    """The config's name, else the work dir of the checkpoint (WORK_DIR/model.safetensors,
    WORK_DIR/checkpoints/best.pth), else the checkpoint's name."""
    if config:
        return Path(config).stem
    folder = checkpoint.resolve().parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder.name if (folder / "config.yaml").is_file() else checkpoint.stem


if __name__ == "__main__":
    sys.exit(main())
