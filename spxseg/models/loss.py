"""Training losses: pixel NLL on the projected probabilities + superpixel soft cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spxseg.config import LossConfig, ModelConfig
from spxseg.models import superpixel_ops as ops
from spxseg.models.peer_decoders import DenseOutput
from spxseg.models.superpixel_model import SegOutput


def superpixel_targets(
    assoc: Tensor, labels: Tensor, num_classes: int, stride: int, cell: int, ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """Association-weighted label histogram of each superpixel.

    Args:
        assoc: (B, 9, h, w) association at stride s over the padded grid.
        labels: (B, H, W) train ids, ``ignore_index`` for unlabelled pixels.
        stride: s, pixel stride of the association.
        cell: c, cell size of the association.
    Returns:
        histogram (B, Gh, Gw, K) summing to 1 where there is labelled mass, and that mass (B, Gh, Gw).
    """
    h, w = assoc.shape[-2:]
    # labels sampled at the stride-s pixel centres, padded with ignore up to the grid
    small = labels[:, stride // 2 :: stride, stride // 2 :: stride]
    small = F.pad(small, (0, w - small.shape[-1], 0, h - small.shape[-2]), value=ignore_index)
    labelled = small != ignore_index  # (B, h, w)
    onehot = F.one_hot(torch.where(labelled, small, 0), num_classes).to(assoc.dtype)  # (B, h, w, K)
    onehot = onehot * labelled.unsqueeze(-1)
    weights = ops.assoc_to_cells(assoc * labelled.unsqueeze(1), cell)  # (B, Gh, Gw, 9, n)
    total, mass = ops.pooled_sums(weights, ops.to_cells(onehot.permute(0, 3, 1, 2), cell))
    mass = mass.squeeze(-1)
    return total / mass.clamp_min(1e-6).unsqueeze(-1), mass


@dataclass
class LossTerms:
    total: Tensor
    pixel: Tensor
    superpixel: Tensor


def segmentation_loss(
    out: SegOutput, labels: Tensor, cfg: LossConfig, stride: int
) -> LossTerms:
    """Pixel NLL of log(P) at full resolution + weighted superpixel soft cross-entropy.

    Args:
        out: model output for images (B, 3, H, W).
        labels: (B, H, W) int64 train ids, ``cfg.ignore_index`` = unlabelled.
        stride: the model's pixel stride s.
    """
    if labels.shape[-2:] != out.probs.shape[-2:]:
        raise ValueError(
            f"labels {tuple(labels.shape[-2:])} and predictions {tuple(out.probs.shape[-2:])} differ in size"
        )
    # contiguous: nll_loss's backward rejects channels-last-like layouts
    log_probs = out.probs.float().clamp_min(1e-8).log().contiguous()
    # mean over the labelled pixels; a crop with none of them (possible with batch 1 per GPU) gives 0, not
    # the NaN of nll_loss's "mean" (that would stop training), and nothing here waits for the device
    labelled = (labels != cfg.ignore_index).sum().clamp_min(1)
    pixel = F.nll_loss(log_probs, labels.contiguous(), ignore_index=cfg.ignore_index, reduction="sum") / labelled
    if cfg.superpixel_weight <= 0:
        return LossTerms(pixel, pixel, torch.zeros_like(pixel))

    num_classes, gh = out.sp_logits.shape[1], out.sp_logits.shape[2]
    cell = out.assoc.shape[-2] // gh
    with torch.no_grad():
        target, mass = superpixel_targets(out.assoc.float(), labels, num_classes, stride, cell, cfg.ignore_index)
    sp_log_probs = out.sp_logits.float().permute(0, 2, 3, 1).log_softmax(-1)  # (B, Gh, Gw, K)
    per_sp = -(target * sp_log_probs).sum(-1)
    has_labels = (mass > 1e-3).to(per_sp.dtype)  # skip superpixels with no labelled mass
    superpixel = (per_sp * has_labels).sum() / has_labels.sum().clamp_min(1.0)
    total = pixel + cfg.superpixel_weight * superpixel
    return LossTerms(total, pixel, superpixel)


def cross_entropy_loss(out: DenseOutput, labels: Tensor, cfg: LossConfig) -> LossTerms:
    """Pixel cross-entropy of a peer decoder's logits (mean over labelled pixels; 0 when there are none)."""
    if labels.shape[-2:] != out.logits.shape[-2:]:
        raise ValueError(
            f"labels {tuple(labels.shape[-2:])} and predictions {tuple(out.logits.shape[-2:])} differ in size"
        )
    labelled = (labels != cfg.ignore_index).sum().clamp_min(1)
    pixel = F.cross_entropy(out.logits.float().contiguous(), labels.contiguous(), ignore_index=cfg.ignore_index,
                            reduction="sum") / labelled
    return LossTerms(pixel, pixel, torch.zeros_like(pixel))


def model_loss(out: SegOutput | DenseOutput, labels: Tensor, cfg: ModelConfig) -> LossTerms:
    """The training loss of either architecture: :func:`segmentation_loss` for ours, cross-entropy for peers."""
    if isinstance(out, DenseOutput):
        return cross_entropy_loss(out, labels, cfg.loss)
    return segmentation_loss(out, labels, cfg.loss, cfg.pixel_stride)
