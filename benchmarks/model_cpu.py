#!/usr/bin/env python
"""Parameters per backbone variant, and CPU forward latency of the ResNet-50 model against its backbone alone.

    python benchmarks/model_cpu.py                       # 512x1024, batch 1, fp32, all CPU threads
    python benchmarks/model_cpu.py --iters 9 --threads 2 --json model_cpu.json

Latency: median of ``--iters`` (>= 5) forwards after ``--warmup`` untimed ones, the full model and the
bare backbone (the model's own ``backbone`` module) timed in interleaved rounds on the same random
input, with spxseg.benchmark (the timing code of tools/profile_latency.py). Random weights;
nothing is downloaded. The ratio full / backbone is what issue 2 bounds (<= 1.3x).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("resnet18", "resnet50", "convnext_tiny")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--backbone", default="resnet50", help="variant timed against its backbone")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=7, help="timed forwards per model (at least 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", metavar="OUT", help="also write the tables as JSON")
    args = parser.parse_args(argv)
    if args.iters < 5:
        parser.error("--iters must be at least 5")

    import torch

    from spxseg import benchmark as prof
    from spxseg.engine.checkpoint import write_json
    from spxseg.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"parameters ({args.num_classes} classes, default architecture: s=4, c=8, C=128, T=3, L=4, D=256)")
    params = []
    for name in VARIANTS:
        model = build_model({"num_classes": args.num_classes, "backbone": {"name": name}})
        total, backbone = prof.count_params(model), prof.count_params(model.backbone)
        params.append({"backbone": name, "params_M": total / 1e6, "backbone_M": backbone / 1e6,
                       "head_M": (total - backbone) / 1e6})
    print(_table(["backbone", "total M", "backbone M", "head M"],
                 [[p["backbone"], f"{p['params_M']:.2f}", f"{p['backbone_M']:.2f}", f"{p['head_M']:.2f}"]
                  for p in params]))

    h, w = args.size
    model = build_model({"num_classes": args.num_classes, "backbone": {"name": args.backbone}}).eval()
    x = torch.randn(1, 3, h, w)
    fns = {}
    for name, module in ((f"spx_{args.backbone}", model), (f"{args.backbone} backbone alone", model.backbone)):
        fns[name] = lambda module=module: _forward(module, x)
    timings = prof.time_interleaved(fns, "cpu", args.iters, args.warmup, args.rounds)
    full, bare = (timings[n].median_ms for n in fns)
    print(f"\nCPU forward latency, {h}x{w}, batch 1, fp32, {prof.device_name(torch.device('cpu'))}, "
          f"median of {args.iters} after {args.warmup} warm-up per round, {args.rounds} interleaved rounds")
    rows = [[name, f"{t.median_ms:.0f}", f"{t.p90_ms:.0f}", f"{t.min_ms:.0f}", f"{t.median_ms / bare:.2f}"]
            for name, t in timings.items()]
    print(_table(["model", "median ms", "p90 ms", "min ms", "x backbone"], rows))
    print(f"full model / backbone alone: {full / bare:.3f}")
    if args.json:
        out = {"params": params, "latency": {n: t.summary() for n, t in timings.items()}, "ratio": full / bare,
               "size": [h, w], "threads": torch.get_num_threads(), "device": prof.device_name(torch.device("cpu")),
               "torch": torch.__version__}
        write_json(out, args.json)
    return 0


def _forward(module, x):
    import torch

    with torch.inference_mode():
        return module(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{wd}}}" if i == 0 else f"{{:>{wd}}}" for i, wd in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*["-" * wd for wd in widths])] + [fmt.format(*r) for r in rows])


if __name__ == "__main__":
    sys.exit(main())
