"""Inference: class probabilities for images of any size (the evaluation loop is :mod:`spxseg.engine.evaluate`).

Modes (driven by :class:`~spxseg.config.EvalConfig`):

* ``whole``: one forward pass per image (the model pads internally to its size multiple).
* ``slide``: windows of ``crop_size`` every ``stride`` (the last window of a row / column is
  shifted back to end at the border, as in mmsegmentation); the windows' class
  *probabilities* are summed and divided by a count map of how many windows cover each pixel.
  The model outputs probabilities (a mixture over superpixels) and no pixel logits, so the
  probabilities are what is averaged.
* test-time augmentation: every scale in ``scales`` (image resized by that factor) times
  {identity, horizontal flip} when ``flip``; each view's probabilities are un-flipped, resized
  to the output size and averaged.

Label maps (:func:`infer_labels`, ``infer_batch(..., labels=True)``; what evaluation, ``Segmenter`` and
the demo use) take the lean path of the models' ``predict`` for a single whole-image view (``whole``,
``scales: [1.0]``, no flip): the argmax of the resized probabilities without writing them
(:mod:`spxseg.models.resample_argmax`), no association or superpixel ids. Other modes average
probabilities, so they take the argmax of :func:`infer_probs`.

Images of different sizes in one batch are grouped by size and each group runs as a batch of
up to ``batch_size`` images, so a result never depends on which other images shared its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spxseg.config import EvalConfig
from spxseg.engine.precision import autocast_context


def check_eval_config(cfg: EvalConfig) -> None:
    """Raise ``ValueError`` naming the bad ``eval.*`` key."""
    if cfg.mode not in ("whole", "slide"):
        raise ValueError(f"eval.mode must be 'whole' or 'slide', got {cfg.mode!r}")
    if cfg.mode == "slide":
        for key in ("crop_size", "stride"):
            value = getattr(cfg, key)
            if len(value) != 2 or min(value) <= 0:
                raise ValueError(f"eval.{key} must be two positive integers [H, W], got {value}")
        if any(s > c for s, c in zip(cfg.stride, cfg.crop_size)):
            raise ValueError(f"eval.stride {cfg.stride} must not exceed eval.crop_size {cfg.crop_size}: "
                             "the windows would leave pixels between them unscored")
    if not cfg.scales or min(cfg.scales) <= 0:
        raise ValueError(f"eval.scales must be a non-empty list of positive factors, got {cfg.scales}")
    if cfg.batch_size < 1:
        raise ValueError(f"eval.batch_size must be >= 1, got {cfg.batch_size}")


def model_input(images: Tensor, channels_last: bool) -> Tensor:
    """``images`` in the memory format inference feeds the model (``eval.channels_last``).

    NHWC images make the backbone's convolutions run NHWC throughout (PyTorch follows the input's
    memory format): faster, same result.
    """
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def forward_probs(model: nn.Module, images: Tensor, channels_last: bool = False) -> Tensor:
    """One forward pass: float32 class probabilities (B, K, H, W) for images (B, 3, H, W), NHWC with
    ``channels_last`` (see :func:`model_input`)."""
    return model(model_input(images, channels_last)).probs.float()


def window_boxes(size: tuple[int, int], crop_size: Sequence[int], stride: Sequence[int]) -> list[tuple[int, ...]]:
    """Sliding windows ``(y0, y1, x0, x1)`` covering an image of ``size`` (H, W).

    Windows are ``min(crop, H) x min(crop, W)``, start every ``stride`` pixels, and the last one of
    each row / column is shifted back so that it ends at the border (mmsegmentation's grid).
    """
    h, w = size
    ch, cw = min(int(crop_size[0]), h), min(int(crop_size[1]), w)
    sh, sw = int(stride[0]), int(stride[1])
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        y1 = min(r * sh + ch, h)
        for c in range(cols):
            x1 = min(c * sw + cw, w)
            box = (y1 - ch, y1, x1 - cw, x1)
            if box not in boxes:
                boxes.append(box)
    return boxes


def slide_probs(model: nn.Module, images: Tensor, crop_size: Sequence[int], stride: Sequence[int],
                windows_per_batch: int = 1, channels_last: bool = False) -> Tensor:
    """Sliding-window probabilities (B, K, H, W) for images (B, 3, H, W), averaged by a count map.

    ``windows_per_batch`` windows (of every image in ``images``) run in one forward pass.
    """
    b, _, h, w = images.shape
    boxes = window_boxes((h, w), crop_size, stride)
    total: Tensor | None = None
    count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    step = max(1, int(windows_per_batch))
    for i in range(0, len(boxes), step):
        chunk = boxes[i : i + step]
        crops = torch.cat([images[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in chunk])
        probs = forward_probs(model, crops, channels_last)  # (len(chunk) * B, K, ch, cw)
        if total is None:
            total = probs.new_zeros((b, probs.shape[1], h, w))
        for k, (y0, y1, x0, x1) in enumerate(chunk):
            total[:, :, y0:y1, x0:x1] += probs[k * b : (k + 1) * b]
            count[:, :, y0:y1, x0:x1] += 1
    if total is None or not bool((count > 0).all()):
        raise ValueError(f"sliding windows of {crop_size} every {stride} do not cover a {h}x{w} image")
    return total / count


def _single_view(model: nn.Module, images: Tensor, cfg: EvalConfig) -> Tensor:
    if cfg.mode == "slide":
        return slide_probs(model, images, cfg.crop_size, cfg.stride, cfg.batch_size, cfg.channels_last)
    return forward_probs(model, images, cfg.channels_last)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def infer_probs(model: nn.Module, image: Tensor, cfg: EvalConfig, out_size: tuple[int, int] | None = None) -> Tensor:
    """Class probabilities (B, K, H', W') for normalised images (B, 3, H, W), as ``cfg`` says.

    Runs ``cfg.mode`` (whole | slide) at every scale in ``cfg.scales``, with and without a
    horizontal flip when ``cfg.flip``, and averages the views' probabilities at the output size.
    ``out_size`` (H', W') defaults to (H, W), e.g. pass the original label size.
    """
    check_eval_config(cfg)
    h, w = image.shape[-2:]
    out_size = (int(out_size[0]), int(out_size[1])) if out_size is not None else (h, w)
    total: Tensor | None = None
    views = 0
    for scale in cfg.scales:
        if scale == 1.0:
            scaled = image
        else:
            size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
            scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True) if cfg.flip else (False,):
            x = scaled.flip(-1) if flip else scaled
            probs = _single_view(model, x, cfg)
            if flip:
                probs = probs.flip(-1)
            probs = _resize(probs, out_size)
            total = probs if total is None else total + probs
            views += 1
    assert total is not None
    return total / views if views > 1 else total


def single_view(cfg: EvalConfig) -> bool:
    """Whether ``cfg`` runs one whole-image forward pass per image (the lean label path applies)."""
    return cfg.mode == "whole" and not cfg.flip and [float(s) for s in cfg.scales] == [1.0]


@torch.no_grad()
def infer_labels(model: nn.Module, image: Tensor, cfg: EvalConfig, out_size: tuple[int, int] | None = None
                 ) -> Tensor:
    """Label maps (B, H', W') int64 for normalised images (B, 3, H, W): ``infer_probs(...).argmax(1)``,
    through the model's lean ``predict`` when ``cfg`` is a single whole-image view.

    With ``out_size`` different from (H, W) the lean path resamples the stride-s probabilities to it in
    one bilinear step, where ``infer_probs`` resizes twice (to the input, then to ``out_size``): labels
    may differ at a few boundary pixels (measured in benchmarks/README.md, Lean inference).
    """
    check_eval_config(cfg)
    if single_view(cfg) and hasattr(model, "predict"):
        size = None if out_size is None else (int(out_size[0]), int(out_size[1]))
        return model.predict(model_input(image, cfg.channels_last), size=size).labels
    return infer_probs(model, image, cfg, out_size).argmax(1)


@torch.no_grad()
def infer_batch(model: nn.Module, images: Sequence[Tensor], cfg: EvalConfig,
                  out_sizes: Sequence[tuple[int, int] | None] | None = None,
                  device: torch.device | str | None = None, amp: str = "none", labels: bool = False
                  ) -> list[Tensor]:
    """Probabilities (or, with ``labels``, label maps) for a list of images of possibly different sizes.

    Args:
        images: normalised images, each (3, h_i, w_i).
        out_sizes: per image the output size (H_i, W_i), e.g. its label size; None = input size.
        device: where to run (default: the model's device).
        labels: return (H_i, W_i) int64 label maps from :func:`infer_labels` instead of probabilities.
    Returns:
        one (K, H_i, W_i) float32 tensor (or (H_i, W_i) int64 labels) per image, on ``device``, in input order.

    Same-size images run together in batches of ``cfg.batch_size`` (sliding-window mode runs one
    image at a time and batches its windows instead).
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    sizes = list(out_sizes) if out_sizes is not None else [None] * len(images)
    if len(sizes) != len(images):
        raise ValueError(f"{len(sizes)} output sizes for {len(images)} images")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"image {i} must be (3, H, W), got {tuple(img.shape)}")
        groups.setdefault(tuple(img.shape), []).append(i)
    per_forward = 1 if cfg.mode == "slide" else cfg.batch_size
    results: list[Tensor | None] = [None] * len(images)
    for idx in groups.values():
        for start in range(0, len(idx), per_forward):
            chunk = idx[start : start + per_forward]
            batch = torch.stack([images[i] for i in chunk]).to(device, non_blocking=True)
            if labels:
                for i, pred in zip(chunk, _chunk_labels(model, batch, cfg, [sizes[i] for i in chunk], amp)):
                    results[i] = pred
                continue
            with autocast_context(device, amp):
                probs = infer_probs(model, batch, cfg)
            for k, i in enumerate(chunk):
                size = sizes[i]
                results[i] = _resize(probs[k : k + 1], tuple(size))[0] if size is not None else probs[k]
    return results  # type: ignore[return-value]


def _chunk_labels(model: nn.Module, batch: Tensor, cfg: EvalConfig, sizes: list[tuple[int, int] | None],
                  amp: str) -> list[Tensor]:
    """Label maps for one batch of same-size images whose output sizes may differ."""
    input_size = tuple(batch.shape[-2:])
    targets = {input_size if size is None else tuple(size) for size in sizes}
    with autocast_context(batch.device, amp):
        if len(targets) == 1:  # the usual case: one forward, labels at the one output size
            return list(infer_labels(model, batch, cfg, targets.pop()))
        return [infer_labels(model, batch[k : k + 1], cfg, size)[0] for k, size in enumerate(sizes)]
