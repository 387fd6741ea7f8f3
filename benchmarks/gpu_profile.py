#!/usr/bin/env python
"""Where the GPU time of the superpixel transformer goes: kernel-level profiles on CUDA (no internet needed).

    python benchmarks/gpu_profile.py --config configs/cityscapes/spx_r50.yaml --size 1024 2048 --out DIR

Prints (and writes to DIR/gpu_profile.txt) for bf16 autocast, batch 1:
  1. eager: time per stage (CUDA events via hooks) and the top operators by CUDA time;
  2. compiled (torch.compile default mode; CUDA graphs would hide kernels from the profiler): the top
     kernels by CUDA time for the whole model and for the backbone alone, so that the difference (the
     head) can be read kernel by kernel, with each kernel's count per forward.
Takes about two minutes on an H100/H200, most of it compiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cityscapes/spx_r50.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--rows", type=int, default=40, help="kernels / operators listed per table")
    parser.add_argument("--out", default=".", help="folder for gpu_profile.txt")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from spxseg import benchmark as prof
    from spxseg.config import load_config
    from spxseg.models import build_model

    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    cfg = load_config(args.config)
    cfg.model.backbone.pretrained, cfg.model.backbone.checkpoint = False, None
    settings = prof.RunSettings("cuda", args.dtype)
    model = build_model(cfg.model).cuda().eval()
    x = torch.randn(1, 3, *args.size, device="cuda")
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size[0]}x{args.size[1]}, {args.dtype}")
    say(prof.format_stages(prof.stage_breakdown(model, x, settings, iters=10, warmup=3)))

    def trace(fn, iters: int = 5):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
            for _ in range(iters):
                fn()
            torch.cuda.synchronize()
        return p, iters

    def table(p, iters: int, title: str) -> None:
        events = [e for e in p.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        if not events:  # older torch: kernels are reported through cuda_time on CPU-side keys
            events = list(p.key_averages())
        attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
        events.sort(key=lambda e: getattr(e, attr), reverse=True)
        total = sum(getattr(e, attr) for e in events) / iters / 1e3
        say(f"\n== {title}: {total:.3f} ms of kernels per forward")
        for e in events[: args.rows]:
            ms = getattr(e, attr) / iters / 1e3
            say(f"{ms:8.4f} ms  x{e.count // iters:<4d} {e.key[:150]}")

    def runner(module):
        def run():
            with torch.inference_mode(), settings.autocast():
                return module(x)
        return run

    p, n = trace(runner(model))
    table(p, n, "eager, whole model")
    for name, module in (("compiled, whole model", model), ("compiled, backbone alone", model.backbone)):
        t0 = time.perf_counter()
        compiled = torch.compile(module)
        run = runner(compiled)
        run()
        torch.cuda.synchronize()
        say(f"\n(compiled {name.split(', ')[1]} in {time.perf_counter() - t0:.0f} s)")
        timing = prof.time_callable(run, "cuda", iters=20, warmup=3)
        say(f"{name}: median {timing.median_ms:.3f} ms (no CUDA graphs)")
        p, n = trace(run)
        table(p, n, name)
        torch._dynamo.reset()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_profile.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
