"""Inference: class probabilities for images of any size, and evaluation over a data loader."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from spxseg.config import EvalConfig
from spxseg.engine.evaluator import SegEvaluator


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for ``amp`` in {none, bf16, fp16}."""
    if amp == "none":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_probs(model: nn.Module, image: Tensor, cfg: EvalConfig, out_size: tuple[int, int] | None = None) -> Tensor:
    """Class probabilities (B, K, H', W') for normalised images (B, 3, H, W), whole-image mode.

    ``out_size`` (H', W') resizes the probabilities (bilinear), e.g. to the original label size.
    """
    probs = model(image).probs.float()
    if out_size is not None and tuple(probs.shape[-2:]) != tuple(out_size):
        probs = F.interpolate(probs, size=out_size, mode="bilinear", align_corners=False)
    return probs


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    cfg: EvalConfig,
    evaluator: SegEvaluator,
    device: torch.device,
    amp: str = "none",
    progress: bool = True,
) -> dict:
    """Run the model over ``loader`` and score predictions at the labels' original resolution.

    Items are dicts with ``image`` (3, h, w) and ``label`` (H, W); the loader may yield a list of
    items (images of different sizes) or a collated batch. Reduces over DDP ranks.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        items = batch if isinstance(batch, list) else _split_batch(batch)
        for item in items:
            image = item["image"].unsqueeze(0).to(device, non_blocking=True)
            label = item["label"]
            with autocast_context(device, amp):
                probs = predict_probs(model, image, cfg, out_size=tuple(label.shape[-2:]))
            evaluator.update(probs.argmax(1)[0].cpu(), label)
    evaluator.reduce()
    model.train(was_training)
    return evaluator.compute()


def _split_batch(batch: dict) -> list[dict]:
    n = batch["image"].shape[0]
    return [{key: value[i] for key, value in batch.items()} for i in range(n)]
