"""Training-pipeline throughput on Cityscapes-sized frames (1024x2048 -> 512x1024 crops).

Writes a few synthetic street scenes at 1024x2048 in the Cityscapes layout (rendered at
a quarter of the size and upsampled, with fresh sensor noise, to keep this quick), then
times ``build_dataloader(build_dataset(cfg, "train"), ...)`` with the Cityscapes training
pipeline: PNG decode, label-id mapping and check, random resize 0.5-2.0, 512x1024 crop
with cat_max_ratio, flip, photometric distortion, normalisation, collate.

    python benchmarks/data_loading.py [--workers 2] [--batch 4] [--images 96] [--frames 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.config import DataConfig  # noqa: E402
from spxseg.data import build_dataloader, build_dataset  # noqa: E402
from spxseg.data.io import write_png  # noqa: E402
from spxseg.data.synthetic import SPLIT_CITIES, render_scene  # noqa: E402


def write_frames(root: Path, n: int, size: tuple[int, int] = (1024, 2048)) -> None:
    city = SPLIT_CITIES["train"]
    (root / "leftImg8bit" / "train" / city).mkdir(parents=True)
    (root / "gtFine" / "train" / city).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img, lab = render_scene((size[0] // 4, size[1] // 4), [0, 0, i])
        img = cv2.resize(img, size[::-1], interpolation=cv2.INTER_CUBIC).astype(np.float32)
        img = np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
        lab = cv2.resize(lab, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        stem = f"{city}_{i:06d}_000019"
        write_png(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", img, rgb=True)
        write_png(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", lab, rgb=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=96, help="images to time (after one warm-up batch)")
    ap.add_argument("--frames", type=int, default=8, help="distinct 1024x2048 frames written")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cityscapes_like"
        t = time.time()
        write_frames(root, args.frames)
        print(f"wrote {args.frames} frames of 1024x2048 in {time.time() - t:.1f} s")
        cfg = DataConfig(
            dataset="cityscapes",
            root=str(root),
            base_size=[1024, 2048],
            crop_size=[512, 1024],
            scale_range=[0.5, 2.0],
            cat_max_ratio=0.75,
        )
        ds = build_dataset(cfg, "train")
        loader = build_dataloader(ds, args.batch, train=True, num_workers=args.workers, seed=0)
        it = loader.infinite()
        batch = next(it)  # warm-up: workers start, first batch
        assert batch["image"].shape[1:] == (3, 512, 1024)
        n, t = 0, time.time()
        while n < args.images:
            n += next(it)["image"].shape[0]
        dt = time.time() - t
        del it
    print(
        f"{n} images of 512x1024 (from 1024x2048 frames), batch {args.batch}, {args.workers} workers: "
        f"{n / dt:.1f} images/s ({1000 * dt / n:.0f} ms/image)"
    )


if __name__ == "__main__":
    main()
