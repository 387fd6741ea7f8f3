#!/usr/bin/env python
"""Interleaved A/B latency of config variants in one process: what does an option cost?

    python benchmarks/ab_latency.py --config configs/camvid/spx_lite0.yaml \
        --variant separable model.fuse_conv=separable --variant dense model.fuse_conv=full
    python benchmarks/ab_latency.py --variant base configs/camvid/spx_lite0_base.yaml \
        --variant light configs/camvid/spx_lite0.yaml --call forward --json ab.json

Each ``--variant LABEL [CONFIG.yaml] [KEY=VALUE ...]`` is a model built from its config (``--config`` when
it names none) with those overrides, on random weights (latency does not depend on them; the backbone's
weight file is not read, nothing is downloaded). All variants are built first, then timed in ``--rounds``
alternating rounds of ``--iters / --rounds`` calls each, on the same input, so that a change in the
machine's load hits every variant alike. On the 2-core machine of benchmarks/README.md whole-model medians
moved by 20-50% between separate runs even with nothing else running, while the differences measured this
way were steady to a few per cent: compare options here, not across two profiler runs.

``--call predict`` (default) times the label map (``model.predict``: what a deployment runs), ``forward``
the full output (probabilities at the input size, association, hard superpixel ids). ``--decoder`` times
what comes after the backbone: each variant's backbone runs once and its stage maps are replayed on every
call, and the first variant's backbone alone (on the input padded as the model pads it) is timed in the
same rounds, as the row ``backbone``; each variant's *x backbone* is then its decoder's share, the figure of
a decoder budget such as "at most 0.3x the backbone". ``--backbone`` adds the first variant's backbone alone
on the input itself (unpadded: the study's *backbone alone* row) to a whole-model run, for the whole model's
*x backbone*, as in "at most 1.3x the backbone". Run it on a quiet machine, never beside a training.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_variant(tokens: list[str], default_config: str | None) -> tuple[str, str, list[str]]:
    """``LABEL [CONFIG.yaml] [KEY=VALUE ...]`` -> (label, config path, overrides)."""
    label, rest = tokens[0], tokens[1:]
    if "=" in label:
        raise SystemExit(f"--variant {' '.join(tokens)}: the first word is the variant's label, got {label!r}; "
                         f"write e.g. --variant dense {label}")
    config = default_config
    if rest and rest[0].endswith((".yaml", ".yml")):
        config, rest = rest[0], rest[1:]
    if config is None:
        raise SystemExit(f"--variant {label}: no config; give --config or a CONFIG.yaml after the label")
    bad = [t for t in rest if "=" not in t]
    if bad:
        raise SystemExit(f"--variant {label}: expected KEY=VALUE overrides, got {bad[0]!r}")
    return label, config, rest


def build_variant(config: str, overrides: list[str]):
    """The model of ``config`` + ``overrides`` on random weights, in eval mode."""
    from spxseg.config import load_config
    from spxseg.engine.checkpoint import build_model_for_weights

    return build_model_for_weights(load_config(config, overrides).model).eval()


def replay_backbone(model, x):
    """Make ``model.backbone`` return, from now on, its stage maps for ``x`` (padded as ``model.coarse`` pads
    it), so that a call of the model costs only what comes after the backbone. Returns the backbone's own
    call on that padded input, to time it alone."""
    import torch

    from spxseg.models.superpixel_model import SuperpixelModel, pad_to_multiple

    if not isinstance(model, SuperpixelModel):
        raise SystemExit(f"--decoder needs superpixel models (architecture: spx), got {type(model).__name__}")
    padded = pad_to_multiple(x, model.size_multiple)
    backbone_forward = model.backbone.forward
    with torch.no_grad():
        feats = backbone_forward(padded)
    model.backbone.forward = lambda images: feats
    return lambda: backbone_forward(padded)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", help="config of the variants that name none")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="LABEL",
                        help="LABEL [CONFIG.yaml] [KEY=VALUE ...]; give two or more (the first is the reference)")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=30, help="timed calls per variant, over all rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--call", choices=["predict", "forward"], default="predict")
    parser.add_argument("--decoder", action="store_true",
                        help="time what comes after the backbone, against the backbone alone (see above)")
    parser.add_argument("--backbone", action="store_true",
                        help="whole models against the first variant's backbone alone on the unpadded input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    variants = [parse_variant(tokens, args.config) for tokens in args.variant]
    labels = [label for label, _, _ in variants]
    if args.decoder and args.backbone:
        raise SystemExit("--backbone is for whole models; --decoder already times the backbone alone")
    with_backbone = args.decoder or args.backbone
    if len(set(labels)) != len(labels) or (with_backbone and "backbone" in labels):
        raise SystemExit(f"--variant labels must differ (and not be 'backbone' with --decoder / --backbone), "
                         f"got {labels}")

    import torch

    from spxseg.benchmark.timing import count_params, time_interleaved
    from spxseg.engine.checkpoint import write_json

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(args.seed))
    models, fns = {}, {}
    for label, config, overrides in variants:
        model = models[label] = build_variant(config, overrides)
        if args.decoder:
            backbone_alone = replay_backbone(model, x)
            fns.setdefault("backbone", backbone_alone)
        elif args.backbone:
            fns.setdefault("backbone", lambda backbone=model.backbone: backbone(x))
        call = model.predict if args.call == "predict" else model
        fns[label] = lambda call=call: call(x)
    with torch.inference_mode():
        timings = time_interleaved(fns, "cpu", args.iters, warmup=1, rounds=args.rounds)

    ref = timings[labels[0]].median_ms
    backbone_ms = timings["backbone"].median_ms if with_backbone else None
    what = "after the backbone (its stage maps replayed)" if args.decoder else "whole model"
    print(f"{args.call}, {what}, batch 1, fp32, {args.size[0]}x{args.size[1]}, {args.threads} thread(s), "
          f"{args.iters} calls each in {args.rounds} interleaved rounds "
          f"({platform.machine()}, torch {torch.__version__})")
    if with_backbone:
        t = timings["backbone"]
        on = "padded as the model pads it" if args.decoder else "unpadded"
        print(f"{'backbone':<16} {t.median_ms:>10.1f} {t.min_ms:>8.1f} {t.p90_ms:>8.1f}  "
              f"(alone, of the first variant, {on})")
    print(f"{'variant':<16} {'median ms':>10} {'min ms':>8} {'p90 ms':>8} {'vs first':>9} "
          f"{'x backbone ' if with_backbone else ''}{'params':>8}  config / overrides")
    rows = []
    for label, config, overrides in variants:
        t = timings[label]
        params = count_params(models[label])
        share = f"{t.median_ms / backbone_ms:>10.3f} " if with_backbone else ""
        print(f"{label:<16} {t.median_ms:>10.1f} {t.min_ms:>8.1f} {t.p90_ms:>8.1f} {t.median_ms - ref:>+8.1f}  "
              f"{share}{params / 1e6:>6.2f} M  {config} {' '.join(overrides)}")
        rows.append({"variant": label, "config": config, "overrides": overrides, "params": params, **t.summary()})
        if with_backbone:
            rows[-1]["x_backbone"] = t.median_ms / backbone_ms
    result = {"call": args.call, "decoder_only": args.decoder, "size": args.size, "threads": args.threads,
              "rounds": args.rounds, "machine": platform.machine(), "torch": torch.__version__, "variants": rows}
    if with_backbone:
        result["backbone"] = timings["backbone"].summary()
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
