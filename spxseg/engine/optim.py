"""AdamW with a backbone learning-rate multiplier, and the poly schedule with linear warm-up."""

from __future__ import annotations

import torch
from torch import nn

from spxseg.config import TrainConfig


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters split for the optimiser: ``model.backbone``'s / the rest (the head), each with and
    without weight decay (``_no_decay``: biases and norm scales, the 1-d parameters). Any architecture works
    whose ``backbone`` attribute is its pretrained feature extractor."""
    backbone = {id(p) for p in model.backbone.parameters()}
    groups: dict[str, list[nn.Parameter]] = {k: [] for k in ("backbone", "backbone_no_decay", "head", "head_no_decay")}
    for param in model.parameters():
        if param.requires_grad:
            part = "backbone" if id(param) in backbone else "head"
            groups[part + ("_no_decay" if param.ndim <= 1 else "")].append(param)
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; backbone at ``lr * backbone_lr_mult``; no weight decay on norms and biases."""
    groups = param_groups(model)
    spec = [
        ("backbone", cfg.lr * cfg.backbone_lr_mult, cfg.weight_decay),
        ("backbone_no_decay", cfg.lr * cfg.backbone_lr_mult, 0.0),
        ("head", cfg.lr, cfg.weight_decay),
        ("head_no_decay", cfg.lr, 0.0),
    ]
    settings = [
        {"params": groups[name], "lr": lr, "weight_decay": wd, "name": name} for name, lr, wd in spec if groups[name]
    ]
    return torch.optim.AdamW(settings, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_warmup(max_iters: int, warmup_iters: int, power: float = 0.9, warmup_start: float = 1e-3):
    """LR factor at iteration ``it``: linear from ``warmup_start`` to 1 over the warm-up, then poly decay."""

    def factor(it: int) -> float:
        poly = (1.0 - min(it, max_iters) / max_iters) ** power
        if it < warmup_iters:
            return poly * (warmup_start + (1.0 - warmup_start) * it / warmup_iters)
        return poly

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_warmup(cfg.max_iters, cfg.warmup_iters, cfg.poly_power))
