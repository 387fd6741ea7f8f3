"""The evaluation loop: a model over a data loader, scored at the labels' resolution, reduced over DDP ranks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from spxseg.config import EvalConfig
from spxseg.engine.evaluator import SegEvaluator
from spxseg.engine.inference import check_eval_config, infer_batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    cfg: EvalConfig,
    evaluator: SegEvaluator,
    device: torch.device,
    amp: str = "none",
    progress: bool = True,
    on_prediction: Callable[[np.ndarray, dict], None] | None = None,
) -> dict:
    """Run the model over ``loader`` and score predictions at the labels' resolution.

    Items are dicts with ``image`` (3, h, w) and ``label`` (H, W); the loader may yield a list of
    items or a collated batch (stacked, or lists for images of different sizes). Reduces over DDP
    ranks; the repeats a :class:`~torch.utils.data.DistributedSampler` adds to even out the ranks
    are not counted. ``on_prediction(pred, item)`` is called with every (H, W) uint8 train-id prediction (e.g. to
    export it). Returns :meth:`SegEvaluator.compute` plus ``num_images``, ``seconds`` and
    ``images_per_s`` (all ranks together, data loading included).
    """
    check_eval_config(cfg)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    evaluator.to(device)
    evaluator.reset()
    num_images = 0
    seen = 0  # items of this rank so far, to skip DistributedSampler's padding repeats
    padding = _padding_positions(loader)
    start = time.perf_counter()
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True, unit="batch"):
        items = batch if isinstance(batch, list) else _split_batch(batch)
        if padding is not None:
            rank, world, total = padding
            keep = [(seen + i) * world + rank < total for i in range(len(items))]
            seen += len(items)
            items = [item for item, k in zip(items, keep) if k]
            if not items:
                continue
        labels = [item["label"] for item in items]
        preds = infer_batch(model, [item["image"] for item in items], cfg,
                            [tuple(lab.shape[-2:]) for lab in labels], device, amp, labels=True)
        for item, label, pred in zip(items, labels, preds):
            evaluator.update(pred, label)
            if on_prediction is not None:
                on_prediction(pred.to(torch.uint8).cpu().numpy(), item)
        num_images += len(items)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    evaluator.reduce()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        where = device if dist.get_backend() == "nccl" else torch.device("cpu")
        count = torch.tensor([num_images], dtype=torch.float64, device=where)
        longest = torch.tensor([seconds], dtype=torch.float64, device=where)
        dist.all_reduce(count)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        num_images, seconds = int(count.item()), float(longest.item())
    model.train(was_training)
    metrics = evaluator.compute()
    metrics.update(num_images=num_images, seconds=seconds, images_per_s=num_images / max(seconds, 1e-9))
    return metrics


def _split_batch(batch: dict) -> list[dict]:
    """A collated batch -> list of per-image dicts.

    ``image`` / ``label`` may be stacked tensors (B, ...) or lists of tensors (images of different
    sizes, see :func:`spxseg.data.eval_collate`); other tensors and lists of length B are split too.
    """
    n = len(batch["image"])
    items: list[dict] = [{} for _ in range(n)]
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
            parts = list(value.unbind(0))
        elif isinstance(value, (list, tuple)) and len(value) == n:
            parts = list(value)
        else:
            continue
        for item, part in zip(items, parts):
            item[key] = part
    return items


def _padding_positions(loader) -> tuple[int, int, int] | None:
    """(rank, world, dataset size) when ``loader`` uses a DistributedSampler that pads with repeats."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler) and not sampler.drop_last:
        return sampler.rank, sampler.num_replicas, len(sampler.dataset)  # type: ignore[arg-type]
    return None
