"""Latency profiling: our model against its backbone and against other segmentation models.

Everything :mod:`tools/profile_latency.py <tools.profile_latency>` and ``benchmarks/`` report comes
from here, so that every figure is measured the same way:

* **timing** (:func:`time_callable`): warm-up calls, then one wall-clock sample per call. CPU:
  ``time.perf_counter`` around the call. CUDA: a pair of CUDA events around each call, read after a
  final synchronisation (GPU time of the call, launch gaps included), with ``cudnn.benchmark`` on.
  Reported: median, p90, min, mean; FPS = batch / median. Several models are timed in interleaved
  rounds on the CPU, so that a change in machine load hits all of them alike.
* **peak memory** (CUDA only): ``torch.cuda.max_memory_allocated`` from the model's first call after
  FLOP counting (the compiling / graph-recording one) to its last timed call, alone on the GPU, minus
  what was allocated before it was moved there (weights, activations, workspaces, CUDA-graph pools;
  compile-time allocations included).
* **parameters**, and **FLOPs** from :class:`torch.utils.flop_counter.FlopCounterMode` over one
  forward (2 FLOPs per multiply-add; matmuls, convolutions and attention only).
* **per-stage breakdown** of our model (backbone, pixel decoder, tokenizer, global transformer, and
  the rest: cell layout, centroids, classifier, projection, upsampling, hard ids) from forward hooks
  on the eager model, timed like the whole.
* **baselines** with random weights and the same number of classes, on the same input:
  ``backbone`` (our model's own backbone module alone), torchvision's ``deeplabv3_resnet50`` and
  ``lraspp_mobilenet_v3_large``, and SegFormer ``segformer_b0`` / ``segformer_b2`` from
  ``transformers`` (optional; built from a config, nothing is downloaded).

Model-only mode feeds a random normalised tensor (B, 3, H, W) already on the device. End-to-end
mode (:func:`end_to_end_callable`) feeds decoded RGB images; see there for what the timer covers.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BASELINES = ("backbone", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large", "segformer_b0", "segformer_b2")
STAGES = ("backbone", "pixel_decoder", "tokenizer", "transformer")

# SegFormer (Xie et al. 2021) MiT-B0 / B2 hyper-parameters, as in the released configs
_SEGFORMER = {
    "segformer_b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "segformer_b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
}


# --------------------------------------------------------------------------- settings


@dataclass
class RunSettings:
    """How models are run: device, precision, memory format, compilation."""

    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    compile_mode: str | None = None  # torch.compile mode; default: "reduce-overhead" with cuda_graphs
    freeze: bool = False  # inductor freezing: weights become constants (BN folded into convs, prepacked)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but CUDA is not available (torch.cuda.is_available() is False)")
        if dev.type == "cpu" and self.dtype == "fp16":
            raise ValueError("fp16 is not supported on the CPU (no fast fp16 kernels, autocast rejects it); "
                             "use --dtype bf16 (autocast) or fp32")
        if self.cuda_graphs and dev.type != "cuda":
            raise ValueError("CUDA graphs need --device cuda")
        if self.freeze and not self.compile:
            raise ValueError("--freeze is a torch.compile option: add --compile")
        if self.freeze and self.compile_mode not in (None, "default"):
            raise ValueError(f"--freeze cannot be combined with --compile-mode {self.compile_mode} "
                             "(torch.compile takes a mode or inductor options, not both)")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self) -> AbstractContextManager:
        """Autocast context for ``dtype`` (none for fp32)."""
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(self.torch_device.type, dtype=DTYPES[self.dtype])

    def describe(self) -> str:
        flags = [self.dtype if self.dtype == "fp32" else f"{self.dtype} autocast"]
        flags += [name for name, on in (("channels-last", self.channels_last), ("compiled", self.compile),
                                        ("frozen weights", self.freeze), ("CUDA graphs", self.cuda_graphs)) if on]
        return ", ".join(flags)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """Human-readable name of the device (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


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


# --------------------------------------------------------------------------- models


class _Logits(nn.Module):
    """Wraps a segmentation model so that it returns class scores (B, K, H, W) at the input size."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "torchvision":
            return self.model(x)["out"]  # torchvision upsamples to the input size itself
        logits = self.model(pixel_values=x).logits  # SegFormer: (B, K, H/4, W/4), upsampled at inference
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_baseline(name: str, num_classes: int, model: nn.Module | None = None) -> nn.Module:
    """A comparison model with random weights and ``num_classes`` classes; never downloads anything.

    ``backbone`` is ``model.backbone`` (our model's own feature extractor) when ``model`` is given.
    """
    if name == "backbone":
        if model is None or not hasattr(model, "backbone"):
            raise ValueError("the 'backbone' baseline needs our model")
        return model.backbone
    if name in ("deeplabv3_resnet50", "lraspp_mobilenet_v3_large"):
        import torchvision.models.segmentation as seg

        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
        if name == "deeplabv3_resnet50":
            kwargs["aux_loss"] = False
        return _Logits(getattr(seg, name)(**kwargs), "torchvision")
    if name in _SEGFORMER:
        try:
            from transformers import SegformerConfig, SegformerForSemanticSegmentation
        except ImportError as err:
            raise ImportError(f"baseline {name} needs the transformers package: pip install 'spxseg[bench]' "
                              f"(or pip install transformers); {err}") from None
        config = SegformerConfig(num_labels=num_classes, **_SEGFORMER[name])
        return _Logits(SegformerForSemanticSegmentation(config), "segformer")
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def available_baselines() -> list[str]:
    """Baselines whose packages are installed."""
    names = list(BASELINES[:3])
    try:
        import transformers  # noqa: F401

        names += list(_SEGFORMER)
    except ImportError:
        pass
    return names


def prepare(model: nn.Module, settings: RunSettings) -> nn.Module:
    """Eval mode, on the device, in the memory format of ``settings`` (weights stay float32)."""
    model = model.eval().to(settings.torch_device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compiled(model: nn.Module, settings: RunSettings) -> Callable[..., Any]:
    """``model`` through ``torch.compile`` as ``settings`` ask, or unchanged when they do not.

    Mode ``reduce-overhead`` (CUDA graphs) with ``cuda_graphs`` unless ``compile_mode`` names one; with
    ``freeze``, inductor's freezing (parameters folded in as constants: inference only).
    """
    if settings.compile and settings.freeze:
        # inductor options instead of a mode: freezing, plus CUDA graphs as reduce-overhead would add
        return torch.compile(model, options={"freezing": True, "triton.cudagraphs": settings.cuda_graphs})
    if settings.compile:
        return torch.compile(model, mode=settings.compile_mode or ("reduce-overhead" if settings.cuda_graphs else None))
    return model


def make_runner(model: nn.Module, x: Tensor, settings: RunSettings) -> Callable[[], Any]:
    """A no-argument callable running ``model(x)`` under ``settings`` (autocast, compile, CUDA graphs).

    Compiled: see :func:`compiled`. CUDA graphs without compile: the eager forward captured once with
    :class:`torch.cuda.CUDAGraph` (static input) and replayed.
    """
    model = compiled(model, settings)

    def run() -> Any:
        with torch.inference_mode(), settings.autocast():
            return model(x)

    if settings.cuda_graphs and not settings.compile:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up on a side stream before capture, as torch.cuda.graphs requires
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return graph.replay
    return run


# --------------------------------------------------------------------------- stage breakdown


def stage_breakdown(model: nn.Module, x: Tensor, settings: RunSettings, iters: int = 5, warmup: int = 1
                    ) -> dict[str, float]:
    """Median time (ms) of each stage of our (eager) model, from forward hooks on its sub-modules.

    Returns ``backbone``, ``pixel_decoder``, ``tokenizer``, ``transformer``, ``head`` (everything
    else: padding, cell layout, centroids, classifier, projection, upsampling, hard ids) and
    ``total``. On CUDA each stage is timed with events recorded by the hooks, so stages run back to
    back without extra synchronisation.
    """
    device = settings.torch_device
    cuda = device.type == "cuda"
    marks: dict[str, list] = {}
    handles = []

    def stamp() -> Any:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def pre_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: Any) -> None:
            marks[name] = [stamp()]

        return hook

    def post_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            marks[name].append(stamp())

        return hook

    for name in STAGES:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))

    def elapsed(start: Any, end: Any) -> float:
        return start.elapsed_time(end) if cuda else (end - start) * 1e3

    samples: dict[str, list[float]] = {name: [] for name in (*STAGES, "head", "total")}
    try:
        with torch.inference_mode(), settings.autocast():
            for i in range(warmup + iters):
                marks.clear()
                synchronize(device)
                start = stamp()
                model(x)
                end = stamp()
                synchronize(device)
                if i < warmup:
                    continue
                total = elapsed(start, end)
                parts = {name: elapsed(*marks[name]) for name in STAGES}
                samples["total"].append(total)
                samples["head"].append(total - sum(parts.values()))
                for name, value in parts.items():
                    samples[name].append(value)
    finally:
        for handle in handles:
            handle.remove()
    return {name: statistics.median(values) for name, values in samples.items()}


# --------------------------------------------------------------------------- end-to-end mode


def end_to_end_callable(model_fn: Callable[[Tensor], Any], images: Sequence[np.ndarray], size: tuple[int, int],
                        mean: Sequence[float], std: Sequence[float], settings: RunSettings) -> Callable[[], Any]:
    """A callable running one image (cycling through ``images``) through the whole inference path.

    Inside the timer: resize of the decoded RGB uint8 image to ``size`` (OpenCV, bilinear), float
    conversion and normalisation (:func:`spxseg.data.transforms.preprocess_image`, as in evaluation
    and ``Segmenter``), host-to-device copy, the forward, bilinear resize of the class
    scores back to the original resolution, argmax, and the device-to-host copy of the label map
    (which also synchronises). Outside the timer: reading and decoding the files.
    """
    from spxseg.data.transforms import preprocess_image

    device = settings.torch_device
    state = {"i": 0}

    def run() -> np.ndarray:
        image = images[state["i"] % len(images)]
        state["i"] += 1
        orig = image.shape[:2]
        x = preprocess_image(image, mean, std, size_hw=size).unsqueeze(0).to(device, non_blocking=True)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), settings.autocast():
            scores = model_fn(x)
            scores = F.interpolate(scores.float(), size=orig, mode="bilinear", align_corners=False)
            pred = scores.argmax(1)[0].to(torch.uint8)
        return pred.cpu().numpy()

    return run


def scores_of(output: Any) -> Tensor:
    """Class scores (B, K, H, W) of a model output: our ``SegOutput.probs`` or a baseline's logits."""
    return output.probs if hasattr(output, "probs") else output


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
) -> list[Row]:
    """Measure every model in ``models`` on the same input; returns one :class:`Row` each.

    Args:
        models: name -> module (built, not yet prepared); weights are random, only speed matters.
        size: (H, W) of the input.
        breakdown: name of the model in ``models`` to break down per stage (our model), or None.
        images: decoded RGB images for end-to-end mode (batch must be 1), with ``mean_std``.
        rounds: interleaved timing rounds on the CPU (CUDA times each model in one go, alone on the GPU).
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

    def runner_for(module: nn.Module) -> Callable[[], Any]:
        if not end_to_end:
            return make_runner(module, x, settings)
        fn = compiled(module, settings)
        return end_to_end_callable(lambda t: scores_of(fn(t)), images, size, *mean_std, settings)

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
        rows[name] = _row(name, module, size, batch, settings, flop_count, None, compile_s, end_to_end)
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
        rows[name] = _row(name, module, size, batch, settings, flop_count, peak, compile_s, end_to_end)
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
         flop_count: int | None, peak: float | None, compile_s: float | None, end_to_end: bool) -> Row:
    return Row(
        model=name, device=settings.torch_device.type, dtype=settings.dtype, size=list(size), batch=batch,
        median_ms=math.nan, p90_ms=math.nan, fps=math.nan, params_M=count_params(module) / 1e6,
        gflops=None if flop_count is None else flop_count / 1e9, peak_mem_MiB=peak,
        mode="end-to-end" if end_to_end else "model", device_name=device_name(settings.torch_device),
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
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{wd}}}" for i, wd in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*["-" * wd for wd in widths])]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out)


def format_stages(stages: dict[str, float]) -> str:
    total = stages["total"]
    parts = [f"{name} {stages[name]:.1f} ms ({100 * stages[name] / total:.0f}%)" for name in (*STAGES, "head")]
    return f"per stage (eager, total {total:.1f} ms): " + ", ".join(parts)
