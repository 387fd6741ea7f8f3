"""Training losses: pixel NLL on the projected probabilities + superpixel soft cross-entropy, and the
optional label reconstruction through the association (SSN) and hard-pixel (OHEM-style) averaging."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spxseg.config import LossConfig, ModelConfig
from spxseg.models import superpixel_ops as ops
from spxseg.models.peer_decoders import DenseOutput
from spxseg.models.superpixel_model import SegOutput


def labels_at_stride(labels: Tensor, stride: int, size: tuple[int, int], ignore_index: int = 255) -> Tensor:
    """Labels (B, H, W) -> (B, h, w): sampled at the stride-s pixel centres, padded with ``ignore_index`` up to
    ``size`` (h, w), the association's padded grid.

    A last stride-s pixel that the image covers only in part (H or W not a multiple of s) takes the label at the
    centre of that part: at stride 8, the last 4 rows of a 180-row crop (a centre at row 180, past the image, left
    them without a label for the superpixel and reconstruction losses until the fix)."""
    h, w = size
    rows, cols = (_centres(n, stride, labels.device) for n in labels.shape[-2:])
    small = labels[:, rows][:, :, cols]
    return F.pad(small, (0, w - small.shape[-1], 0, h - small.shape[-2]), value=ignore_index)


def _centres(n: int, stride: int, device: torch.device) -> Tensor:
    """The centre of each stride-s block of ``n`` pixels, the last one's covering only its part inside the image."""
    starts = torch.arange(0, n, stride, device=device)
    return starts + (n - starts).clamp_max(stride) // 2


def label_distribution_at_stride(labels: Tensor, stride: int, size: tuple[int, int], num_classes: int,
                                 ignore_index: int = 255, area: bool = False, dtype: torch.dtype = torch.float32
                                 ) -> tuple[Tensor, Tensor]:
    """The labels of each stride-s pixel as a class distribution, and how much of it is labelled.

    ``area=False``: the one-hot label at the stride-s pixel's centre (:func:`labels_at_stride`), labelled 1 or 0.
    ``area=True``: the class shares of the labelled image pixels of its s x s block, labelled by the share of
    the block that is: a pole two pixels wide at stride 4 is half of every block it crosses, where the centre
    sample keeps it in half of the columns it crosses and in none of them at one pixel wide.

    Args:
        labels: (B, H, W) train ids, ``ignore_index`` for unlabelled pixels.
        size: (h, w), the association's padded grid (>= ceil(H / s), ceil(W / s)); padding is unlabelled.
        dtype: of both outputs.
    Returns:
        distribution (B, K, h, w) summing to 1 where labelled (0 elsewhere), labelled share (B, h, w) in [0, 1].
    """
    h, w = size
    if not area:
        small = labels_at_stride(labels, stride, size, ignore_index)
        labelled = small != ignore_index
        onehot = F.one_hot(torch.where(labelled, small, 0), num_classes).permute(0, 3, 1, 2).to(dtype)
        return onehot * labelled.unsqueeze(1), labelled.to(dtype)
    labelled = labels != ignore_index
    onehot = F.one_hot(torch.where(labelled, labels, 0), num_classes).permute(0, 3, 1, 2).to(dtype)
    onehot = onehot * labelled.unsqueeze(1)
    rows, cols = labels.shape[-2:]
    # padded with unlabelled pixels up to the grid's image size, so each block sums its own s x s pixels
    onehot = F.pad(onehot, (0, w * stride - cols, 0, h * stride - rows))
    counts = F.avg_pool2d(onehot, stride) * stride**2  # (B, K, h, w) labelled pixels of each class per block
    total = counts.sum(1)  # (B, h, w)
    return counts / total.clamp_min(1.0).unsqueeze(1), total / stride**2


def superpixel_targets(
    assoc: Tensor, labels: Tensor, num_classes: int, stride: int, cell: int, ignore_index: int = 255,
    area_labels: bool = False,
) -> tuple[Tensor, Tensor]:
    """Association-weighted label histogram of each superpixel.

    Args:
        assoc: (B, 9, h, w) association at stride s over the padded grid.
        labels: (B, H, W) train ids, ``ignore_index`` for unlabelled pixels.
        stride: s, pixel stride of the association.
        cell: c, cell size of the association.
        area_labels: each stride-s pixel brings its s x s block's class shares (weighted by its labelled
            share) rather than the label at its centre (:func:`label_distribution_at_stride`).
    Returns:
        histogram (B, Gh, Gw, K) summing to 1 where there is labelled mass, and that mass (B, Gh, Gw).
    """
    dist, labelled = label_distribution_at_stride(labels, stride, assoc.shape[-2:], num_classes, ignore_index,
                                                  area_labels, assoc.dtype)
    return _pooled_histograms(assoc, dist, labelled, cell)


def _pooled_histograms(assoc: Tensor, dist: Tensor, labelled: Tensor, cell: int) -> tuple[Tensor, Tensor]:
    """:func:`superpixel_targets` from the stride-s label distribution (B, K, h, w) and labelled share (B, h, w)
    of :func:`label_distribution_at_stride`."""
    weights = ops.assoc_to_cells(assoc * labelled.unsqueeze(1), cell)  # (B, Gh, Gw, 9, n)
    total, mass = ops.pooled_sums(weights, ops.to_cells(dist, cell))
    mass = mass.squeeze(-1)
    return total / mass.clamp_min(1e-6).unsqueeze(-1), mass


# the training log's names of the entries of LossTerms.logged(), in order
LOGGED_TERMS = ("loss", "loss_pixel", "loss_superpixel", "loss_reconstruction", "loss_aux", "loss_layers",
                "loss_lovasz")


@dataclass
class LossTerms:
    total: Tensor
    pixel: Tensor
    superpixel: Tensor
    reconstruction: Tensor | None = None  # None = 0 (off, or a peer decoder)
    aux: Tensor | None = None  # the auxiliary pixel classifier's cross-entropy; None = 0 (off)
    layers: Tensor | None = None  # the intermediate transformer layers' mean loss (deep supervision); None = 0 (off)
    lovasz: Tensor | None = None  # the Lovász-softmax of the pixel predictions; None = 0 (off)

    def logged(self) -> Tensor:
        """(7,) detached total, pixel, superpixel, reconstruction, auxiliary, intermediate-layer and Lovász terms,
        for the training log (named by ``LOGGED_TERMS``)."""
        zero = torch.zeros_like(self.total)
        optional = [zero if term is None else term
                    for term in (self.reconstruction, self.aux, self.layers, self.lovasz)]
        return torch.stack([self.total, self.pixel, self.superpixel, *optional]).detach()


def check_loss_config(cfg: LossConfig, num_classes: int) -> None:
    """Raise ``ValueError`` naming the ``model.loss.*`` value that cannot train."""
    for key in ("hard_pixel_fraction", "reconstruction_hard_fraction", "superpixel_hard_fraction"):
        if not 0.0 < getattr(cfg, key) <= 1.0:
            raise ValueError(f"model.loss.{key} must be in (0, 1], got {getattr(cfg, key)}")
    for key in ("superpixel_weight", "reconstruction_weight", "aux_pixel_weight", "layer_weight", "lovasz_weight"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"model.loss.{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.lovasz_weight > 0:
        _smp_lovasz()  # missing segmentation-models-pytorch: an error when the model is built, not at the first step
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != num_classes:
            raise ValueError(f"model.loss.class_weights has {len(cfg.class_weights)} values, model.num_classes is "
                             f"{num_classes}: give one weight per class (tools/dataset_info.py --class-weights)")
        bad = [w for w in cfg.class_weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"model.loss.class_weights must be finite and > 0, got {bad[0]}")


def enet_class_weights(counts: Sequence[int] | Tensor, c: float = 1.02) -> list[float]:
    """ENet's class weights ``1 / ln(c + p_k)`` (Paszke et al., 2016) from labelled pixel counts per class,
    scaled so that their pixel-weighted mean ``sum_k p_k w_k`` is 1 (a loss keeps its scale; only the
    classes' shares change). With c = 1.02 no two weights are more than ln(2.02) / ln(1.02) ~ 36x apart,
    where inverse frequencies have no bound. A class with no pixel gets the largest weight."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.sum() <= 0:
        raise ValueError(f"class pixel counts must be a 1-d sequence with labelled pixels, got {counts.tolist()}")
    freq = counts / counts.sum()
    weights = 1.0 / torch.log(c + freq)
    return (weights / (freq * weights).sum()).tolist()


def class_weight_tensor(cfg: LossConfig, like: Tensor) -> Tensor | None:
    """``cfg.class_weights`` as a tensor of ``like``'s dtype and device, or None when unweighted."""
    if cfg.class_weights is None:
        return None
    return torch.tensor(cfg.class_weights, dtype=like.dtype, device=like.device)


def pixel_mean(per_pixel: Tensor, labels: Tensor, cfg: LossConfig) -> Tensor:
    """Mean of per-pixel losses (B, H, W) over the labelled pixels, or over their hardest
    ``cfg.hard_pixel_fraction`` (OHEM-style: the rest get no gradient). 0, not NaN, with no labelled pixel,
    and, at fraction 1, nothing waits for the device."""
    return hardest_mean(per_pixel, labels != cfg.ignore_index, cfg.hard_pixel_fraction)


def hardest_mean(per_pixel: Tensor, labelled: Tensor, fraction: float) -> Tensor:
    """Mean of the per-pixel (or per-superpixel) losses where ``labelled`` (both of one shape) over their largest
    ``fraction`` (all of them at 1); 0 with no labelled pixel."""
    if fraction >= 1.0:
        return (per_pixel * labelled).sum() / labelled.sum().clamp_min(1)
    losses = per_pixel[labelled]  # data-dependent size: one host sync per step, like any OHEM
    keep = max(1, math.ceil(fraction * losses.numel())) if losses.numel() else 0
    return losses.topk(keep, sorted=False).values.sum() / max(keep, 1)


def reconstruction_loss(assoc: Tensor, labels: Tensor, num_classes: int, stride: int, cell: int,
                        ignore_index: int = 255, class_weights: Tensor | None = None, hard_fraction: float = 1.0,
                        area_labels: bool = False) -> Tensor:
    """SSN's label reconstruction: how well the superpixels, as the association cuts them, carry the labels.

    The one-hot labels at the stride-s pixel centres are pooled into superpixel histograms through the
    association and projected back through it, ``Y' = A* (A*^T Y / mass)``; the loss is the cross-entropy of
    ``Y'`` against the labels over the labelled pixels. The gradient reaches ``A*`` through both the pool
    and the projection, so it pulls superpixel boundaries onto label boundaries independently of how well
    the classifier already does (a thin object must own a superpixel to be reconstructed).

    Args:
        assoc: (B, 9, h, w) association at stride s over the padded grid, float32.
        labels: (B, H, W) train ids.
        class_weights: (K,) weight of each pixel's term by its class, or None.
        hard_fraction: average over the worst-reconstructed fraction of the labelled pixels only (the thin
            structures and boundaries a superpixel cuts wrong); 1 = all of them.
        area_labels: Y is each stride-s pixel's s x s block of class shares (:func:`label_distribution_at_stride`),
            pooled by its labelled share, and the per-pixel term is ``KL(Y || Y')`` (the cross-entropy less Y's
            own entropy, so that a block that is half pole is not among the worst for its entropy alone), over
            the pixels with any labelled share; with class weights, ``sum_k w_k Y_k log(Y_k / Y'_k)``.
    Returns:
        scalar loss: the (weighted) sum over the (hardest) labelled pixels / their number (0 when none).
    """
    dist, labelled = label_distribution_at_stride(labels, stride, assoc.shape[-2:], num_classes, ignore_index,
                                                  area_labels, assoc.dtype)
    hist, _ = _pooled_histograms(assoc, dist, labelled, cell)  # (B, Gh, Gw, K)
    recon = ops.project(assoc, hist.permute(0, 3, 1, 2))  # (B, K, h, w)
    if not area_labels:
        return _nll_at_stride(recon.clamp_min(1e-8).log(), labels, stride, ignore_index, class_weights, hard_fraction)
    terms = torch.xlogy(dist, dist) - dist * recon.clamp_min(1e-8).log()  # (B, K, h, w); 0 where Y_k = 0
    if class_weights is not None:
        terms = terms * class_weights.to(terms.dtype).view(1, -1, 1, 1)
    return hardest_mean(terms.sum(1), labelled > 0, hard_fraction)


def _nll_at_stride(log_probs: Tensor, labels: Tensor, stride: int, ignore_index: int,
                   class_weights: Tensor | None, hard_fraction: float = 1.0) -> Tensor:
    """NLL of stride-s log-probabilities (B, K, h, w) against the labels at the stride-s pixel centres: the
    (weighted) sum over the labelled pixels, or their hardest ``hard_fraction``, / their number (0 when none)."""
    small = labels_at_stride(labels, stride, log_probs.shape[-2:], ignore_index)
    if hard_fraction < 1.0:
        per_pixel = F.nll_loss(log_probs, small, weight=class_weights, ignore_index=ignore_index, reduction="none")
        return hardest_mean(per_pixel, small != ignore_index, hard_fraction)
    labelled = (small != ignore_index).sum().clamp_min(1)
    nll = F.nll_loss(log_probs, small, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    return nll / labelled


def lovasz_loss(scores: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Lovász-softmax (Berman et al., CVPR 2018), segmentation-models-pytorch's: a convex surrogate of the Jaccard
    loss of each class present in the batch's labels, averaged over those classes, on the softmax of ``scores``.

    Args:
        scores: (B, K, H, W) logits; for ours log P, whose softmax is P.
        labels: (B, H, W) train ids.
    Returns:
        scalar loss, 0 when no pixel is labelled.
    """
    if not (labels != ignore_index).any():  # smp returns an empty tensor, not 0, with no labelled pixel
        return scores.float().sum() * 0.0
    return _smp_lovasz()("multiclass", ignore_index=ignore_index)(scores.float(), labels.contiguous())


def _smp_lovasz() -> type:
    """segmentation-models-pytorch's ``LovaszLoss``, or an ImportError saying which option needs it."""
    try:
        from segmentation_models_pytorch.losses import LovaszLoss
    except ImportError as err:
        raise ImportError(f"model.loss.lovasz_weight needs segmentation-models-pytorch: pip install 'spxseg[peers]' "
                          f"({err})") from None
    return LovaszLoss


def aux_pixel_loss(aux_logits: Tensor, labels: Tensor, stride: int, ignore_index: int = 255,
                   class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of the auxiliary pixel classifier (B, K, h, w) against the labels at the stride-s pixel
    centres (the labels the reconstruction uses): mean over the labelled ones, 0 when there are none."""
    return _nll_at_stride(aux_logits.float().log_softmax(1), labels, stride, ignore_index, class_weights)


def segmentation_loss(
    out: SegOutput, labels: Tensor, cfg: LossConfig, stride: int
) -> LossTerms:
    """Pixel NLL of log(P) at full resolution (over the hardest ``cfg.hard_pixel_fraction`` of the pixels) +
    weighted superpixel soft cross-entropy (over the hardest ``cfg.superpixel_hard_fraction`` of the superpixels
    with labelled mass) (+ the reconstruction,
    + the auxiliary pixel classifier's cross-entropy when the model computed ``out.aux_logits``,
    + those two terms for each intermediate transformer layer, averaged, when it computed ``out.layer_probs``,
    + the Lovász-softmax of P, :func:`lovasz_loss`, with ``cfg.lovasz_weight``).
    With ``cfg.class_weights`` each pixel's term is scaled by its class's weight and each superpixel's
    cross-entropy ``-sum_k w_k t_k log p_k``; means stay over pixels / superpixels, not over weights (the
    Lovász term is not weighted: it already averages over classes).

    Args:
        out: model output for images (B, 3, H, W).
        labels: (B, H, W) int64 train ids, ``cfg.ignore_index`` = unlabelled.
        stride: the stride of ``out.assoc``, the model's ``stride`` (its pixel stride s unless
            ``model.projection_stride``).
    """
    if labels.shape[-2:] != out.probs.shape[-2:]:
        raise ValueError(
            f"labels {tuple(labels.shape[-2:])} and predictions {tuple(out.probs.shape[-2:])} differ in size"
        )
    weights = class_weight_tensor(cfg, out.probs.float())
    num_classes, gh = out.sp_logits.shape[1], out.sp_logits.shape[2]
    cell = out.assoc.shape[-2] // gh
    target = mass = None
    if cfg.superpixel_weight > 0:
        with torch.no_grad():
            target, mass = superpixel_targets(out.assoc.float(), labels, num_classes, stride, cell, cfg.ignore_index,
                                              cfg.area_labels)
        if weights is not None:
            target = target * weights

    def log_of(probs: Tensor) -> Tensor:
        # contiguous: nll_loss's backward rejects channels-last-like layouts
        return probs.float().clamp_min(1e-8).log().contiguous()

    def class_terms(log_probs: Tensor, sp_logits: Tensor) -> tuple[Tensor, Tensor]:
        """The pixel and superpixel terms of one set of predictions (the model's, or one layer's), from log P."""
        # a crop with no labelled pixel (possible with batch 1 per GPU) gives 0, not the NaN of nll_loss's
        # "mean" (that would stop training)
        per_pixel = F.nll_loss(log_probs, labels.contiguous(), weight=weights, ignore_index=cfg.ignore_index,
                               reduction="none")
        pixel = pixel_mean(per_pixel, labels, cfg)
        if target is None:
            return pixel, torch.zeros_like(pixel)
        sp_log_probs = sp_logits.float().permute(0, 2, 3, 1).log_softmax(-1)  # (B, Gh, Gw, K)
        per_sp = -(target * sp_log_probs).sum(-1)
        # skip superpixels with no labelled mass; mean over the rest, or their hardest fraction
        return pixel, hardest_mean(per_sp, mass > 1e-3, cfg.superpixel_hard_fraction)

    log_probs = log_of(out.probs)  # (B, K, H, W), for the pixel term and the Lovász
    pixel, superpixel = class_terms(log_probs, out.sp_logits)
    total, reconstruction = pixel + cfg.superpixel_weight * superpixel, None
    if cfg.reconstruction_weight > 0:
        reconstruction = reconstruction_loss(out.assoc.float(), labels, num_classes, stride, cell, cfg.ignore_index,
                                             weights, cfg.reconstruction_hard_fraction, cfg.area_labels)
        total = total + cfg.reconstruction_weight * reconstruction
    aux = None
    if cfg.aux_pixel_weight > 0 and out.aux_logits is not None:
        # the auxiliary classifier is at the pixel stride, a multiple of the association's: both cover the padded grid
        aux_stride = stride * out.assoc.shape[-2] // out.aux_logits.shape[-2]
        aux = aux_pixel_loss(out.aux_logits, labels, aux_stride, cfg.ignore_index, weights)
        total = total + cfg.aux_pixel_weight * aux
    layers = None
    if cfg.layer_weight > 0 and out.layer_probs is not None:
        per_layer = [class_terms(log_of(probs), logits) for probs, logits in zip(out.layer_probs, out.layer_sp_logits)]
        layers = torch.stack([p + cfg.superpixel_weight * sp for p, sp in per_layer]).mean()
        total = total + cfg.layer_weight * layers
    lovasz = None
    if cfg.lovasz_weight > 0:
        lovasz = lovasz_loss(log_probs, labels, cfg.ignore_index)
        total = total + cfg.lovasz_weight * lovasz
    return LossTerms(total, pixel, superpixel, reconstruction, aux, layers, lovasz)


def cross_entropy_loss(out: DenseOutput, labels: Tensor, cfg: LossConfig) -> LossTerms:
    """Pixel cross-entropy of a peer decoder's logits (mean over labelled pixels, or their hardest
    ``cfg.hard_pixel_fraction``; 0 when there are none), + ``cfg.lovasz_weight`` x their Lovász-softmax."""
    if labels.shape[-2:] != out.logits.shape[-2:]:
        raise ValueError(
            f"labels {tuple(labels.shape[-2:])} and predictions {tuple(out.logits.shape[-2:])} differ in size"
        )
    logits = out.logits.float().contiguous()
    per_pixel = F.cross_entropy(logits, labels.contiguous(), weight=class_weight_tensor(cfg, logits),
                                ignore_index=cfg.ignore_index, reduction="none")
    pixel = pixel_mean(per_pixel, labels, cfg)
    if cfg.lovasz_weight > 0:
        lovasz = lovasz_loss(logits, labels, cfg.ignore_index)
        return LossTerms(pixel + cfg.lovasz_weight * lovasz, pixel, torch.zeros_like(pixel), lovasz=lovasz)
    return LossTerms(pixel, pixel, torch.zeros_like(pixel))


def model_loss(out: SegOutput | DenseOutput, labels: Tensor, cfg: ModelConfig) -> LossTerms:
    """The training loss of either architecture: :func:`segmentation_loss` for ours, :func:`cross_entropy_loss`
    for peers."""
    if isinstance(out, DenseOutput):
        return cross_entropy_loss(out, labels, cfg.loss)
    return segmentation_loss(out, labels, cfg.loss, cfg.association_stride)
