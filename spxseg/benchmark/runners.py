"""Callables that run a prepared model as a benchmark asks: eager, compiled, CUDA graphs, per stage, end to end."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.benchmark.settings import RunSettings, synchronize

# in call order; fine_association only in models with a finer model.projection_stride or model.reassociate (then
# it runs after the transformer; each stage is timed by its own hooks, so the order here is only the report's)
STAGES = ("backbone", "pixel_decoder", "tokenizer", "fine_association", "transformer")

class LabelMap(nn.Module):
    """A model's lean label path as a module: ``model.predict(x, size=size).labels`` (B, H, W) int64.

    What a deployment runs (``Segmenter``, evaluation): for ours, no full-resolution probabilities, no
    association or superpixel ids; for a peer, the argmax of its logits. Compiles like any module.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return self.model.predict(x, size=size).labels


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

    Returns ``backbone``, ``pixel_decoder``, ``tokenizer``, ``fine_association`` (models that have one),
    ``transformer``, ``head`` (everything
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

    stages = [name for name in STAGES if getattr(model, name, None) is not None]
    for name in stages:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))

    def elapsed(start: Any, end: Any) -> float:
        return start.elapsed_time(end) if cuda else (end - start) * 1e3

    samples: dict[str, list[float]] = {name: [] for name in (*stages, "head", "total")}
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
                parts = {name: elapsed(*marks[name]) for name in stages}
                samples["total"].append(total)
                samples["head"].append(total - sum(parts.values()))
                for name, value in parts.items():
                    samples[name].append(value)
    finally:
        for handle in handles:
            handle.remove()
    return {name: statistics.median(values) for name, values in samples.items()}


# --------------------------------------------------------------------------- end-to-end mode


def end_to_end_callable(labels_fn: Callable[[Tensor, tuple[int, int]], Tensor], images: Sequence[np.ndarray],
                        size: tuple[int, int], mean: Sequence[float], std: Sequence[float], settings: RunSettings
                        ) -> Callable[[], Any]:
    """A callable running one image (cycling through ``images``) through the whole inference path.

    Inside the timer: resize of the decoded RGB uint8 image to ``size`` (OpenCV, bilinear), float
    conversion and normalisation (:func:`spxseg.data.transforms.preprocess_image`, as in evaluation
    and ``Segmenter``), host-to-device copy, ``labels_fn(x, original size)`` (the forward and the label map
    at the original resolution: :func:`labels_from_scores` for a model's class scores, or a
    :class:`LabelMap`), and the device-to-host copy of the label map (which also synchronises). Outside the
    timer: reading and decoding the files.
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
            pred = labels_fn(x, orig)[0].to(torch.uint8)
        return pred.cpu().numpy()

    return run


def labels_from_scores(scores_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor, tuple[int, int]], Tensor]:
    """``(x, size) -> labels``: the class scores of ``scores_fn(x)`` resized bilinearly to ``size``, then argmax."""

    def labels(x: Tensor, size: tuple[int, int]) -> Tensor:
        scores = F.interpolate(scores_fn(x).float(), size=size, mode="bilinear", align_corners=False)
        return scores.argmax(1)

    return labels


def scores_of(output: Any) -> Tensor:
    """Class scores (B, K, H, W) of a model output: our ``SegOutput.probs`` or a baseline's logits."""
    return output.probs if hasattr(output, "probs") else output
