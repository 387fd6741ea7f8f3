#!/usr/bin/env python
"""Segment images and draw what the model sees: colour overlay, superpixel boundaries, a panel.

    python tools/demo.py --config configs/cityscapes/spx_r50.yaml --checkpoint best.pth \\
        --input street.png --out demo/
    python tools/demo.py --checkpoint work_dirs/x/model.safetensors --input street.png --out demo/
    python tools/demo.py --config configs/synthetic/spx_r18.yaml --input images/ --out demo/   # random weights

Per input image <name>: <name>_overlay.png (class colours over the image),
<name>_superpixels.png (superpixel boundaries on the image) and <name>_panel.png (input, overlay,
superpixel boundaries and superpixel mean colours in a 2x2 grid, with a legend of the predicted classes).
<name> is the image's path under --input without its extension (sub/frame; frame_jpg where frame.png is there
too); images under --out are left out. An unreadable image is skipped and reported; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spxseg.cli import add_model_arguments, reports  # noqa: E402
from spxseg.config import ConfigError, load_tool_config  # noqa: E402

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def find_images(path: Path, out: Path | None = None) -> list[Path]:
    """``path`` itself, or the images under folder ``path`` (recursively), leaving out those under ``out``
    (a demo's own outputs, when ``out`` lies inside ``path``)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path}")
    skip = out.resolve() if out is not None else None
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS
                  and not (skip is not None and p.resolve().is_relative_to(skip)))


def output_names(images: list[Path], root: Path) -> dict[Path, str]:
    """The output name of each image (outputs are ``<name>_overlay.png``, ...): its path under ``root`` without
    the extension (``sub/frame``), keeping the extension where two images would share a name
    (``frame.png`` and ``frame.jpg`` -> ``frame_png``, ``frame_jpg``)."""
    base = root if root.is_dir() else root.parent
    stems = {p: p.relative_to(base).with_suffix("").as_posix() for p in images}
    shared = {s for s, n in Counter(stems.values()).items() if n > 1}
    return {p: f"{s}_{p.suffix.lower().lstrip('.')}" if s in shared else s for p, s in stems.items()}


@reports(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=False)
    parser.add_argument("--input", required=True, help="an image file or a folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)

    cfg = load_tool_config(args.config, args.opts, args.checkpoint)  # ConfigError: one line, exit 2
    try:
        images = find_images(Path(args.input), Path(args.out))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not images:
        print(f"error: no images ({', '.join(sorted(IMAGE_EXTS))}) under {args.input}", file=sys.stderr)
        return 2

    import warnings

    import numpy as np
    from tqdm import tqdm

    from spxseg.data.io import read_image, write_png
    from spxseg.engine.distributed import resolve_device
    from spxseg.engine.predictor import Segmenter
    from spxseg.engine.visualize import draw_boundaries, legend, make_panel, overlay, superpixel_mean_colors

    device = resolve_device(args.device)
    if args.checkpoint is None:
        banner = "!" * 78
        print(f"{banner}\n!! WARNING: no --checkpoint given: the model has RANDOM weights.\n"
              f"!! The predicted classes are meaningless; only the pipeline and the superpixels are shown.\n{banner}",
              file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the banner above already says it
        try:
            if args.checkpoint is None:
                seg = Segmenter.from_config(cfg, device=device)
            else:  # read safely: a file that needs more than tensors and plain data is refused, nothing runs
                seg = Segmenter.from_checkpoint(args.checkpoint, device=device, cfg=cfg, overrides=args.opts)
        except (FileNotFoundError, ImportError, ValueError) as err:  # ImportError: a peer without its extra
            print(f"error: {err}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = "RANDOM WEIGHTS" if args.checkpoint is None else Path(args.checkpoint).name
    superpixel_model = seg.has_superpixels
    names_out, written = output_names(images, Path(args.input)), 0
    for path in tqdm(images, desc="demo", unit="img", dynamic_ncols=True, disable=len(images) < 2):
        try:
            rgb = read_image(path)
        except Exception as err:  # noqa: BLE001 - report and go on with the other images
            print(f"skipping {path}: {err}", file=sys.stderr)
            continue
        if superpixel_model:
            labels, superpixels = seg.predict_with_superpixels(rgb, rgb=True)
        else:  # a peer decoder: no superpixels to show
            labels, superpixels = seg.predict(rgb, rgb=True), None
        over = overlay(rgb, labels, seg.palette, args.alpha)
        present, counts = np.unique(labels, return_counts=True)
        present = present[np.argsort(-counts)]
        tiles, names = [rgb, over], ["input", f"prediction ({title})"]
        if superpixels is not None:
            bounds = draw_boundaries(rgb, superpixels, color=(255, 255, 0), thickness=1 if rgb.shape[0] < 600 else 2)
            tiles += [bounds, superpixel_mean_colors(rgb, superpixels)]
            names += [f"superpixels ({len(np.unique(superpixels))})", "superpixel mean colour"]
            write_png(out / f"{names_out[path]}_superpixels.png", bounds, rgb=True)
        panel = make_panel(tiles, names, ncols=2)
        panel = make_panel([panel], footer=legend(seg.class_names, seg.palette, present.tolist(),
                                                  width=panel.shape[1], row_height=max(22, rgb.shape[0] // 24)),
                           gap=0)
        write_png(out / f"{names_out[path]}_overlay.png", over, rgb=True)
        write_png(out / f"{names_out[path]}_panel.png", panel, rgb=True)
        written += 1
        classes = ", ".join(seg.class_names[c] for c in present[:8])
        spx = f"{len(np.unique(superpixels))} superpixels, " if superpixels is not None else ""
        print(f"{path.name}: {rgb.shape[1]}x{rgb.shape[0]}, {spx}"
              f"classes (by area): {classes}{' ...' if len(present) > 8 else ''}")
    kinds = "overlay,superpixels,panel" if superpixel_model else "overlay,panel"
    skipped = len(images) - written
    if written == 0:
        print(f"error: none of the {len(images)} image(s) could be read; nothing written", file=sys.stderr)
        return 1
    print(f"wrote {out}/<name>_{{{kinds}}}.png for {written} image(s)"
          + (f"; {skipped} skipped (unreadable, above)" if skipped else "")
          + ("  [RANDOM WEIGHTS]" if args.checkpoint is None else ""))
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
