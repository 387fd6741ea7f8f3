"""Latency profiling (outside the library core): our model against its backbone and against other models.

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

from spxseg.benchmark.profile import Row, format_stages, format_table, profile_models
from spxseg.benchmark.runners import STAGES, stage_breakdown
from spxseg.benchmark.settings import DTYPES, RunSettings, device_name
from spxseg.benchmark.timing import Timing, count_flops, count_params, time_callable, time_interleaved
from spxseg.benchmark.zoo import BASELINES, available_baselines, build_baseline

__all__ = [
    "BASELINES", "DTYPES", "STAGES", "Row", "RunSettings", "Timing", "available_baselines", "build_baseline",
    "count_flops", "count_params", "device_name", "format_stages", "format_table", "profile_models",
    "stage_breakdown", "time_callable", "time_interleaved",
]
