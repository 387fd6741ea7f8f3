"""The whole profiling run: every model on the same input, one :class:`Row` each, and their tables."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from spxseg.benchmark.runners import (
    STAGES,
    LabelMap,
    compiled,
    end_to_end_callable,
    labels_from_scores,
    make_runner,
    prepare,
    scores_of,
    stage_breakdown,
)
from spxseg.benchmark.settings import RunSettings, device_name
from spxseg.benchmark.timing import Timing, count_flops, count_params, time_callable, time_interleaved
from spxseg.cli import text_table

# --------------------------------------------------------------------------- the whole run


@dataclass
class Row:
    """One result row (the JSON schema of ``tools/profile_latency.py``)."""

    model: str
    device: str
    dtype: str
    size: list[int]
    batch: int
    median_ms: float
    p90_ms: float
    fps: float
    params_M: float
    gflops: float | None
    peak_mem_MiB: float | None
    min_ms: float = 0.0
    mean_ms: float = 0.0
    iters: int = 0
    mode: str = "model"
    output: str = "probs"  # probs: the full forward; labels: the lean label path (LabelMap)
    device_name: str = ""
    threads: int = 0
    channels_last: bool = False
    compiled: bool = False
    frozen: bool = False
    cuda_graphs: bool = False
    compile_s: float | None = None
    stages_ms: dict[str, float] | None = None
    torch: str = torch.__version__

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_models(
    models: dict[str, nn.Module],
    size: tuple[int, int],
    batch: int,
    settings: RunSettings,
    warmup: int = 3,
    iters: int = 10,
    rounds: int = 3,
    flops: bool = True,
    breakdown: str | None = None,
    images: Sequence[np.ndarray] | None = None,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    log: Callable[[str], None] = print,
    labels: bool = False,
) -> list[Row]:
    """Measure every model in ``models`` on the same input; returns one :class:`Row` each.

    Args:
        models: name -> module (built, not yet prepared); weights are random, only speed matters.
        size: (H, W) of the input.
        breakdown: name of the model in ``models`` to break down per stage (our model), or None.
        images: decoded RGB images for end-to-end mode (batch must be 1), with ``mean_std``.
        rounds: interleaved timing rounds on the CPU (CUDA times each model in one go, alone on the GPU).
        labels: time each model's lean label path (:class:`~spxseg.benchmark.runners.LabelMap`: label map,
            no probabilities) instead of its full forward; modules without ``predict`` (the backbone alone,
            the zoo's models) run their forward either way.
    """
    device = settings.torch_device
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (all models alike)
    h, w = size
    end_to_end = images is not None
    if end_to_end and batch != 1:
        raise ValueError("end-to-end mode runs one image at a time: use --batch 1")
    if end_to_end and settings.cuda_graphs and not settings.compile:
        raise ValueError("end-to-end mode replays CUDA graphs through torch.compile: add --compile to --cuda-graphs")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, h, w, generator=gen).to(device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def output(module: nn.Module) -> str:
        """What ``module`` is timed producing: its lean label map when asked and it has one, else its forward."""
        return "labels" if labels and hasattr(module, "predict") else "probs"

    def runner_for(module: nn.Module) -> Callable[[], Any]:
        timed = LabelMap(module) if output(module) == "labels" else module
        if not end_to_end:
            return make_runner(timed, x, settings)
        fn = compiled(timed, settings)
        labels_fn = fn if timed is not module else labels_from_scores(lambda t: scores_of(fn(t)))
        return end_to_end_callable(labels_fn, images, size, *mean_std, settings)

    rows: dict[str, Row] = {}
    runners: dict[str, Callable[[], Any]] = {}
    for name, module in models.items():
        if cuda:  # measured one at a time, alone on the GPU, below
            continue
        module = prepare(module, settings)
        flop_count = _flops(module, x, settings) if flops else None
        t0 = time.perf_counter()
        runners[name] = runner_for(module)
        runners[name]()  # first call: compiles when asked
        compile_s = time.perf_counter() - t0 if settings.compile else None
        rows[name] = _row(name, module, size, batch, settings, flop_count, None, compile_s, end_to_end,
                          output(module))
        log(f"  prepared {name}" + (f" (first call {compile_s:.1f} s)" if compile_s else ""))
    if not cuda and runners:
        timings = time_interleaved(runners, device, iters, warmup, rounds)
        for name, timing in timings.items():
            _fill_timing(rows[name], timing, batch)

    for name, module in models.items():
        if not cuda:
            continue
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        module = prepare(module, settings)
        flop_count = _flops(module, x, settings) if flops else None
        # peak over the model's whole stay on the GPU after FLOP counting: CUDA-graph pools are allocated
        # while recording (first calls), not during replays, so a peak taken around a replay misses them
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        run = runner_for(module)
        run()
        torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - t0 if settings.compile else None
        # end-to-end calls end with a device-to-host copy (a synchronisation): wall-clock time is their latency
        timing = time_callable(run, "cpu" if end_to_end else device, iters, warmup)
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        rows[name] = _row(name, module, size, batch, settings, flop_count, peak, compile_s, end_to_end,
                          output(module))
        _fill_timing(rows[name], timing, batch)
        log(f"  {name}: {rows[name].median_ms:.2f} ms" + (f" (compile {compile_s:.1f} s)" if compile_s else ""))
        del run
        models[name] = module.cpu()  # free the GPU for the next model
        if settings.compile:
            torch._dynamo.reset()

    if breakdown is not None and not end_to_end:
        module = prepare(models[breakdown], settings)
        rows[breakdown].stages_ms = stage_breakdown(module, x, settings, iters=max(3, min(iters, 10)))
        if cuda:
            models[breakdown] = module.cpu()
    return [rows[name] for name in models]


def _flops(module: nn.Module, x: Tensor, settings: RunSettings) -> int | None:
    try:
        with torch.inference_mode(), settings.autocast():
            return count_flops(lambda: module(x))
    except Exception as err:  # counting must never stop a latency run
        print(f"  (FLOP counting failed for {type(module).__name__}: {err})")
        return None


def _row(name: str, module: nn.Module, size: tuple[int, int], batch: int, settings: RunSettings,
         flop_count: int | None, peak: float | None, compile_s: float | None, end_to_end: bool,
         output: str = "probs") -> Row:
    return Row(
        model=name, device=settings.torch_device.type, dtype=settings.dtype, size=list(size), batch=batch,
        median_ms=math.nan, p90_ms=math.nan, fps=math.nan, params_M=count_params(module) / 1e6,
        gflops=None if flop_count is None else flop_count / 1e9, peak_mem_MiB=peak,
        mode="end-to-end" if end_to_end else "model", output=output, device_name=device_name(settings.torch_device),
        threads=torch.get_num_threads(), channels_last=settings.channels_last, compiled=settings.compile,
        frozen=settings.freeze, cuda_graphs=settings.cuda_graphs, compile_s=compile_s,
    )


def _fill_timing(row: Row, timing: Timing, batch: int) -> None:
    row.median_ms, row.p90_ms = timing.median_ms, timing.p90_ms
    row.min_ms, row.mean_ms, row.iters = timing.min_ms, timing.mean_ms, len(timing.samples_ms)
    row.fps = batch * 1000.0 / row.median_ms


def format_table(rows: Sequence[Row], reference: str | None = None) -> str:
    """A plain-text table of ``rows``; ratios against ``reference`` (a model name) when given."""
    ref = next((r for r in rows if r.model == reference), None)
    header = ["model", "median ms", "p90 ms", "min ms", "FPS", "params M", "GFLOPs", "peak MiB"]
    if ref is not None:
        header.append(f"x {reference}")
    lines = []
    for r in rows:
        cells = [r.model, f"{r.median_ms:.1f}", f"{r.p90_ms:.1f}", f"{r.min_ms:.1f}", f"{r.fps:.2f}",
                 f"{r.params_M:.2f}", "-" if r.gflops is None else f"{r.gflops:.1f}",
                 "-" if r.peak_mem_MiB is None else f"{r.peak_mem_MiB:.0f}"]
        if ref is not None:
            cells.append(f"{r.median_ms / ref.median_ms:.2f}")
        lines.append(cells)
    return "\n".join(text_table(header, lines))


def format_stages(stages: dict[str, float]) -> str:
    total = stages["total"]
    parts = [f"{name} {stages[name]:.1f} ms ({100 * stages[name] / total:.0f}%)" for name in (*STAGES, "head")
             if name in stages]
    return f"per stage (eager, total {total:.1f} ms): " + ", ".join(parts)
