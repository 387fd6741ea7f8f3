"""Wall-clock timing of callables (CPU perf_counter, CUDA events), parameter and FLOP counts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from spxseg.benchmark.settings import synchronize

# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call wall-clock samples (ms) and their summary."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    def summary(self) -> dict[str, float]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "min_ms": self.min_ms, "mean_ms": self.mean_ms,
                "iters": len(self.samples_ms)}


def time_callable(fn: Callable[[], Any], device: torch.device | str, iters: int, warmup: int = 0,
                  timing: Timing | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` timed calls (appended to ``timing``).

    CPU: ``perf_counter`` around each call. CUDA: CUDA events around each call, read after one
    synchronisation at the end (no synchronisation between calls, so the host can queue ahead as it
    would in a real pipeline; the events still give each call's own GPU span).
    """
    device = torch.device(device)
    timing = timing if timing is not None else Timing()
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        timing.samples_ms.extend(start.elapsed_time(end) for start, end in events)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            timing.samples_ms.append((time.perf_counter() - t0) * 1e3)
    return timing


def time_interleaved(fns: dict[str, Callable[[], Any]], device: torch.device | str, iters: int, warmup: int = 1,
                     rounds: int = 3) -> dict[str, Timing]:
    """Time several callables in ``rounds`` alternating rounds of about ``iters / rounds`` calls each.

    On a shared or thermally throttled machine, load changes then hit every callable alike, which
    keeps their ratios honest. Each callable gets ``warmup`` untimed calls before each round.
    """
    rounds = max(1, min(rounds, iters))
    per_round = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    timings = {name: Timing() for name in fns}
    for n in per_round:
        for name, fn in fns.items():
            time_callable(fn, device, n, warmup, timings[name])
    return timings


# --------------------------------------------------------------------------- counting


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (2 per multiply-add) from :class:`~torch.utils.flop_counter.FlopCounterMode`.

    Attention runs through SDPA's math backend while counting: the counter has no formula for the CPU
    flash kernel (it would count attention as 0 on the CPU), and its matmuls give the same count on
    every device.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return int(counter.get_total_flops())
