#!/usr/bin/env python
"""Latency, throughput, parameters and FLOPs of the config's model and its peers.

The config's ``model:`` section is profiled (``architecture: spx``, ours, or an smp peer: ``fpn``,
``deeplabv3plus``); the per-stage breakdown is for ours.

    python tools/profile_latency.py --config configs/cityscapes/spx_r50.yaml --size 512 1024 \\
        --device cpu --baselines backbone,deeplabv3_resnet50 --json latency.json
    python tools/profile_latency.py --config configs/cityscapes/spx_r50.yaml --size 1024 2048 \\
        --device cuda --dtype bf16 --compile --baselines backbone,deeplabv3_resnet50,segformer_b2
    python tools/profile_latency.py ... --dataset --opts data.root=/data/cityscapes   # end-to-end

All models run with random weights (latency does not depend on them; nothing is downloaded) on the
same input, under the same settings (dtype via autocast, memory format, torch.compile, CUDA graphs).
Model-only mode (default) times the forward on a random normalised batch already on the device.
End-to-end mode (--dataset, batch 1) times resize + normalise + host-to-device + forward + resize of
the scores to the original resolution + argmax + device-to-host, on real images of the config's
data split (decoded before timing). CPU: perf_counter per call, models timed in interleaved rounds;
CUDA: CUDA events per call (end-to-end: wall clock, each call ends with a device-to-host copy), each
model alone on the GPU, with its peak memory. FLOPs come from
torch.utils.flop_counter.FlopCounterMode (2 per multiply-add). Baselines: backbone (our model's
backbone alone), deeplabv3_resnet50, lraspp_mobilenet_v3_large (torchvision), segformer_b0,
segformer_b2 (transformers, optional 'bench' extra). See spxseg/benchmark/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config; its model: section is profiled")
    parser.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"), help="input size")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="fp32, or bf16 / fp16 through autocast (fp16: CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for models and input")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode (default: reduce-overhead with --cuda-graphs, else default)")
    parser.add_argument("--freeze", action="store_true",
                        help="with --compile: inductor freezing (weights as constants, BN folded into convs, "
                             "prepacked CPU conv weights); inference only")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay CUDA graphs (with --compile: mode reduce-overhead; else manual capture)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (per round on CPU)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds on the CPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--baselines", default="backbone",
                        help="comma-separated: backbone, deeplabv3_resnet50, lraspp_mobilenet_v3_large, "
                             "segformer_b0, segformer_b2; 'all' = those installed; 'none' = ours only")
    parser.add_argument("--labels", action="store_true",
                        help="time the lean label path (model.predict: label map, no probabilities) instead of "
                             "the full forward, for ours and the peer decoders")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-stage breakdown of our model")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--dataset", nargs="?", const="val", default=None, metavar="SPLIT",
                        help="end-to-end mode on real images of the config's data split (default val)")
    parser.add_argument("--num-images", type=int, default=8, help="images decoded for --dataset")
    parser.add_argument("--json", metavar="OUT", help="write the result rows as a JSON list")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        parser.error(f"--size must be at least 32x32, got {args.size[0]}x{args.size[1]}")
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--batch and --iters must be >= 1 and --warmup >= 0")
    if args.dataset and args.batch != 1:
        parser.error("--dataset (end-to-end mode) runs one image at a time: use --batch 1")
    if args.dataset and args.cuda_graphs and not args.compile:
        parser.error("--dataset (end-to-end mode) replays CUDA graphs through torch.compile: add --compile")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spxseg.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.opts)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import torch

    from spxseg import benchmark as prof
    from spxseg.engine.checkpoint import build_model_for_weights, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = prof.RunSettings(args.device, args.dtype, args.channels_last, args.compile, args.cuda_graphs,
                                    args.compile_mode, args.freeze)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    if names == ["all"]:
        names = prof.available_baselines()
    elif names == ["none"]:
        names = []
    unknown = [n for n in names if n not in prof.BASELINES]
    if unknown:
        print(f"error: unknown baseline(s) {unknown}; choose from {', '.join(prof.BASELINES)}", file=sys.stderr)
        return 2
    if args.dataset and "backbone" in names:  # it outputs features, not class scores to resize and argmax
        names.remove("backbone")
        print("note: end-to-end mode leaves out the 'backbone' baseline (it outputs features, not class scores)")

    # random weights: latency does not depend on them, and nothing may be downloaded
    torch.manual_seed(0)
    ours = f"{cfg.model.architecture}_{cfg.model.backbone.name}"  # spx_resnet50, fpn_tf_efficientnet_lite0, ...
    model = build_model_for_weights(cfg.model)
    models = {ours: model}
    for name in names:
        try:
            models[name] = prof.build_baseline(name, cfg.model.num_classes, model)
        except ImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    images = mean_std = None
    if args.dataset:
        from spxseg.data import DatasetError, build_dataset

        try:
            ds = build_dataset(cfg.data, args.dataset)
        except (DatasetError, FileNotFoundError, ValueError) as err:
            print(f"error: --dataset: {err}", file=sys.stderr)
            return 2
        if len(ds) == 0:
            print(f"error: --dataset: no images in split {args.dataset!r} under {cfg.data.root}", file=sys.stderr)
            return 2
        images = [ds.load_image(i) for i in range(min(args.num_images, len(ds)))]
        mean_std = (cfg.data.mean, cfg.data.std)

    h, w = args.size
    device = settings.torch_device
    mode = "end-to-end" if images is not None else "model only"
    print(f"{ours} vs {', '.join(names) or 'no baselines'}: {h}x{w}, batch {args.batch}, {settings.describe()}, "
          f"{mode}, on {prof.device_name(device)}, torch {torch.__version__}")
    if images is not None:
        print(f"  end-to-end: {len(images)} images of {cfg.data.dataset}/{args.dataset}; inside the timer: resize to "
              f"{h}x{w}, normalise, host->device, forward, resize scores to the original size, argmax, device->host")
    else:
        print("  model only: random normalised input already on the device; inside the timer: the forward")
    if args.labels:
        print("  --labels: ours and peer decoders run their lean label path (predict: labels, no probabilities)")

    rows = prof.profile_models(
        models, (h, w), args.batch, settings, warmup=args.warmup, iters=args.iters, rounds=args.rounds,
        flops=not args.no_flops, images=images, mean_std=mean_std, labels=args.labels,
        breakdown=None if args.no_breakdown or cfg.model.architecture != "spx" else ours,
    )
    print()
    print(prof.format_table(rows, reference=ours))
    ours_row = rows[0]
    if ours_row.stages_ms:
        print(prof.format_stages(ours_row.stages_ms))
    for row in rows[1:]:
        print(f"{ours} / {row.model}: {ours_row.median_ms / row.median_ms:.2f}x the latency "
              f"({row.median_ms / ours_row.median_ms:.2f}x speed-up)")
    if args.json:
        write_json([r.as_dict() for r in rows], args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
