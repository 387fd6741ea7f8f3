#!/usr/bin/env python
"""Train a superpixel transformer.

    python tools/train.py --config configs/synthetic/spx_r18.yaml
    torchrun --nproc_per_node=8 tools/train.py --config configs/cityscapes/spx_r50.yaml --opts train.batch_size=1

train.batch_size is per process: the line above trains at a global batch of 8, one crop per GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.config import ConfigError, load_config  # noqa: E402


def is_first_process() -> bool:
    """Whether this is the process that writes a missing synthetic set: the only one, or under torchrun
    local rank 0 (one per machine; on a shared folder the first complete set to land wins). The other
    ranks wait for it at the trainer's first barrier before they read ``data.root``."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--work-dir",
                        help="output folder (default: the config's work_dir, else work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="resume from CKPT, or with no value from WORK_DIR/checkpoints/latest.pth if present")
    parser.add_argument("--seed", type=int, help="shortcut for --opts train.seed=N")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in batch jobs)")
    parser.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4"
    )
    args = parser.parse_args(argv)

    overrides = list(args.opts)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or cfg.work_dir or str(Path("work_dirs") / Path(args.config).stem)

    from spxseg.data import DatasetError, ensure_synthetic
    from spxseg.engine.trainer import TrainingStopped, fit, setup_training

    try:  # bad input shows up while setting up: missing data or checkpoint, unreadable files, bad values
        if is_first_process():
            # data.synthetic.generate: write a missing set first (the other ranks wait for it)
            ensure_synthetic(cfg.data, progress=not args.no_progress)
        run = setup_training(cfg, work_dir, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DatasetError, FileNotFoundError, ImportError, ValueError) as err:  # ImportError: a peer extra
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # from here on an exception is a bug (its traceback is shown), but for these two
        result = fit(run)
    except TrainingStopped as err:  # NaN / inf loss
        print(f"error: {err}", file=sys.stderr)
        return 1
    except DatasetError as err:  # an unreadable image met mid-epoch
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 130 if result["stopped"] else 0  # 130: stopped by a signal, checkpoint saved


if __name__ == "__main__":
    sys.exit(main())
