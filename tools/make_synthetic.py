"""Write the synthetic street-scene set in the Cityscapes layout (Cityscapes label ids).

python tools/make_synthetic.py --out data/synthetic --train 300 --val 50 --size 128 256 --seed 0 [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.config import SyntheticConfig  # noqa: E402
from spxseg.data.synthetic import generate_synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = SyntheticConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (gets leftImg8bit/ and gtFine/)")
    ap.add_argument("--train", type=int, default=d.train, help=f"training scenes (default {d.train})")
    ap.add_argument("--val", type=int, default=d.val, help=f"validation scenes (default {d.val})")
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=list(d.size),
        metavar=("H", "W"),
        help=f"image size (default {d.size[0]} {d.size[1]})",
    )
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--overwrite", action="store_true", help="replace a synthetic set already in --out")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    t = time.time()
    try:
        out = generate_synthetic(
            args.out, args.train, args.val, args.size, args.seed, progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.train} train + {args.val} val scenes of {args.size[0]}x{args.size[1]} to {out} "
        f"in {time.time() - t:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
