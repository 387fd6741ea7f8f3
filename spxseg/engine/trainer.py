"""The training loop: iteration-based, AMP, DDP, exact resume, evaluation, checkpoints.

Read :func:`train` top to bottom: set-up (data, model and optimiser in a :class:`Run`), resume, then
``max_iters`` calls of :func:`train_step`, with a log line every ``log_interval``, an evaluation every
``eval_interval`` and a checkpoint every ``checkpoint_interval``; a stop signal (SIGINT / SIGTERM) saves
a checkpoint and returns. The pieces are small named functions so that each can be read alone.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from tqdm import tqdm

from spxseg.config import Config, resolve_normalization, save_config, to_dict
from spxseg.data import build_dataloader, build_dataset
from spxseg.engine import distributed as du
from spxseg.engine.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    load_model_weights,
    rng_state,
    save_weights,
    set_rng_state,
)
from spxseg.engine.evaluate import evaluate
from spxseg.engine.evaluator import SegEvaluator, format_table, to_jsonable
from spxseg.engine.inference import check_eval_config
from spxseg.engine.optim import build_optimizer, build_scheduler
from spxseg.engine.precision import autocast_context, check_amp
from spxseg.engine.run_log import LossWindow, RunLog
from spxseg.engine.signals import StopSignal
from spxseg.models import build_model, model_loss
from spxseg.models.loss import LOGGED_TERMS


class TrainingStopped(RuntimeError):
    """Training stopped early (non-finite loss); the last good checkpoint is kept."""


# DDP: how often (iterations) the ranks agree on whether a stop signal arrived. Every rank must stop at
# the same iteration, or the next collective waits forever; agreeing costs a host sync, hence not every step.
STOP_AGREE_EVERY = 10

# the checkpoint entries a run needs to resume (weights-only files can initialise a model, not resume)
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng")

# the weights to hand to others, in WORK_DIR next to config.yaml: tensors only (safetensors), no pickle.
# FINAL_WEIGHTS at the end of training, BEST_WEIGHTS whenever checkpoints/best.pth is written
FINAL_WEIGHTS, BEST_WEIGHTS = "model.safetensors", "model_best.safetensors"


def check_train_config(cfg: Config) -> None:
    """Raise ``ValueError`` naming the bad ``train.*`` / ``eval.*`` key before anything runs."""
    tc = cfg.train
    for key in ("max_iters", "batch_size", "accum_steps", "eval_interval", "checkpoint_interval", "log_interval"):
        if getattr(tc, key) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {getattr(tc, key)}")
    for key in ("warmup_iters", "keep_checkpoints"):
        if getattr(tc, key) < 0:
            raise ValueError(f"train.{key} must be >= 0, got {getattr(tc, key)}")
    if tc.lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {tc.lr}")
    if tc.grad_clip is not None and not tc.grad_clip > 0:
        raise ValueError(f"train.grad_clip must be > 0 (or null for no clipping), got {tc.grad_clip}")
    check_amp(tc.amp, "train.amp")
    check_eval_config(cfg.eval)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _batches(loader, start: int, per_epoch: int):
    """Batches from batch number ``start`` on, ``per_epoch`` per epoch, each epoch in its (seed, epoch) order.

    A resumed run replays the skipped batches of its epoch (loading them, not training on them) so
    that the augmentation random streams are exactly where an uninterrupted run would have them.
    """
    epoch, skip = divmod(start, per_epoch)
    while True:
        loader.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i >= per_epoch:
                break
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


def _val_loader(val_set, cfg: Config, dist_info: du.DistInfo):
    """Each rank scores a disjoint slice of the validation set (no padding duplicates)."""
    if dist_info.distributed:
        val_set = Subset(val_set, range(dist_info.rank, len(val_set), dist_info.world_size))
    workers = min(cfg.data.num_workers, 2)
    return build_dataloader(val_set, cfg.eval.batch_size, train=False, num_workers=workers, distributed=False)


@dataclass
class Run:
    """Everything one training run updates, and what its checkpoints hold."""

    cfg: Config
    work_dir: Path
    dist: du.DistInfo
    model: nn.Module
    ddp_model: nn.Module  # ``model`` itself without DDP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ckpts: CheckpointManager
    iteration: int = 0
    best_miou: float = -1.0
    # the data and the evaluator (setup_training passes them to build_run)
    train_loader: Any = None
    val_loader: Any = None
    evaluator: SegEvaluator | None = None
    iters_per_epoch: int = 0
    progress: bool = True

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """BatchNorm layers -> SyncBatchNorm. timm's converter: torch's turns timm's fused ``BatchNormAct2d``
    (EfficientNet-Lite's) into a plain SyncBatchNorm and silently drops its activation."""
    return timm.layers.convert_sync_batchnorm(model)


def build_run(cfg: Config, work_dir: Path, dist_info: du.DistInfo, **data: Any) -> Run:
    """Model (SyncBN under DDP when ``train.sync_bn``), optimiser, schedule and gradient scaler; ``data``: the
    :class:`Run` fields of the data (loaders, evaluator, iterations per epoch, progress)."""
    tc = cfg.train
    bb = cfg.model.backbone
    if bb.freeze_bn and not (bb.pretrained or bb.checkpoint):  # (a resumed run's own statistics are loaded later)
        warnings.warn("model.backbone.freeze_bn with neither pretrained nor checkpoint weights: the backbone's BN "
                      "statistics stay at their random-init values (mean 0, var 1)", stacklevel=2)
    model = build_model(cfg.model)
    if tc.sync_bn and dist_info.distributed:
        if dist_info.device.type == "cpu":  # torch's SyncBatchNorm raises at the first forward on CPU
            raise ValueError("train.sync_bn needs GPUs (SyncBatchNorm does not run on CPU under DDP); on CPU "
                             "use model.backbone.freeze_bn=true for small per-process batches")
        model = convert_sync_bn(model)
    model.to(dist_info.device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc)
    device = dist_info.device
    ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist_info.distributed else model
    return Run(cfg, work_dir, dist_info, model, ddp_model, optimizer, build_scheduler(optimizer, tc),
               torch.amp.GradScaler(device.type, enabled=tc.amp == "fp16"),
               CheckpointManager(work_dir / "checkpoints", keep=tc.keep_checkpoints), **data)


def resume_run(run: Run, resume: str | bool) -> None:
    """Restore ``run`` from a training checkpoint: weights, optimiser, schedule, scaler, iteration, RNG states.

    ``resume=True`` reads ``checkpoints/latest.pth`` and starts afresh when there is none.
    """
    path = run.ckpts.latest if resume is True else Path(resume)
    if not path.is_file():
        if resume is not True:
            raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
        if run.is_main:
            print(f"no checkpoint in {run.ckpts.folder}: starting from scratch")
        return
    ckpt = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"--resume: {path} is not a training checkpoint (no {', '.join(missing)}); "
                         "weights-only files can initialise a model (tools/eval.py, Segmenter), not resume")
    try:
        load_model_weights(run.model, ckpt, path, run.cfg.model)
    except RuntimeError as err:
        raise ValueError(f"--resume: {err}") from None
    configured = [(group["initial_lr"], group["weight_decay"]) for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    _keep_configured_rates(run, configured)
    if ckpt["scaler"]:  # empty when the run had no fp16 scaler (train.amp was none or bf16)
        run.scaler.load_state_dict(ckpt["scaler"])
    run.iteration, run.best_miou = ckpt["iteration"], ckpt.get("best_miou", -1.0)
    states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]  # one per rank
    if len(states) == run.dist.world_size:
        set_rng_state(states[run.dist.rank])
    elif run.is_main:
        print(f"warning: {path} was written by {len(states)} process(es), this run has "
              f"{run.dist.world_size}: random streams start afresh (the resume is not exact)")
    if run.is_main:
        print(f"resumed from {path} at iteration {run.iteration}")


def _keep_configured_rates(run: Run, configured: list[tuple[float, float]]) -> None:
    """Give the resumed optimiser the config's base learning rates, weight decays and schedule.

    The optimiser's and the schedule's states carry the rates from the checkpoint; without this a resume with a
    changed ``train.lr`` / ``backbone_lr_mult`` / ``weight_decay`` would keep the old ones while ``config.yaml``
    names the new, and a changed ``max_iters`` (a longer run) would take its first step at the old schedule's rate.
    Nothing changed, every value stays bit for bit the checkpoint's: the resume is exact.
    """
    groups, scheduler = run.optimizer.param_groups, run.scheduler
    changed = [(group, lr, wd) for group, (lr, wd) in zip(groups, configured, strict=True)
               if (group["initial_lr"], group["weight_decay"]) != (lr, wd)]
    if changed and run.is_main:
        what = "; ".join(f"{group.get('name', '?')}: lr {group['initial_lr']:g} -> {lr:g}, weight decay "
                         f"{group['weight_decay']:g} -> {wd:g}" for group, lr, wd in changed)
        print(f"resuming with the config's learning rates and weight decays, not the checkpoint's ({what})")
    for group, lr, wd in changed:
        group["initial_lr"], group["weight_decay"] = lr, wd
    scheduler.base_lrs = [group["initial_lr"] for group in groups]
    saved_lr = groups[-1]["lr"]
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)  # LambdaLR's own expression
    if groups[-1]["lr"] != saved_lr and not changed and run.is_main:
        print(f"resuming on the config's schedule (train.max_iters / warmup_iters / poly_power): learning rate "
              f"{groups[-1]['lr']:.3g} at iteration {scheduler.last_epoch}, the checkpoint's {saved_lr:.3g}")


def save_checkpoint(run: Run, is_best: bool = False) -> None:
    """Checkpoint ``run`` (rank 0 writes; every rank contributes its RNG state); the best weights also go
    to ``model_best.safetensors``, the file to share, next to ``config.yaml``."""
    rngs = _gather_rng(run.dist)
    if not run.is_main:
        return
    state = {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "iteration": run.iteration, "best_miou": run.best_miou, "rng": rngs, "config": to_dict(run.cfg),
    }
    run.ckpts.save(state, run.iteration, is_best=is_best)
    if is_best:
        save_weights(run.model, run.work_dir / BEST_WEIGHTS, run.cfg, run.iteration)


def train_step(run: Run, batches) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimiser step over ``train.accum_steps`` micro-batches.

    Returns the loss terms (:meth:`~spxseg.models.loss.LossTerms.logged`) and the gradients' global norm before
    clipping, both on the device, not synchronised, and the seconds spent waiting for data.
    """
    tc, device = run.cfg.train, run.device
    terms = torch.zeros(len(LOGGED_TERMS), device=device)
    data_time = 0.0
    for micro in range(tc.accum_steps):
        t0 = time.perf_counter()
        batch = next(batches)
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        if tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        data_time += time.perf_counter() - t0
        sync = micro == tc.accum_steps - 1 or not run.dist.distributed  # DDP: all-reduce on the last one only
        with (nullcontext() if sync else run.ddp_model.no_sync()):
            with autocast_context(device, tc.amp):
                out = run.ddp_model(images)
            loss = model_loss(out, labels, run.cfg.model)
            run.scaler.scale(loss.total / tc.accum_steps).backward()
        terms += loss.logged() / tc.accum_steps
    run.scaler.unscale_(run.optimizer)  # the true gradients' norm (a no-op without fp16 loss scaling)
    # measured with clipping or without: the log shows how far above train.grad_clip a model's gradients run
    # (on the CamVid recipe, clip 1.0: FPN's 10-30, ours 5-7 over the first 60 iterations, every step clipped)
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in run.model.parameters() if p.grad is not None])
    if tc.grad_clip:
        torch.nn.utils.clip_grads_with_norm_(run.model.parameters(), tc.grad_clip, grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.iteration += 1
    return terms, grad_norm.detach(), data_time


def evaluate_run(run: Run, log: RunLog) -> tuple[dict, bool]:
    """Score the model on the validation set, log it; returns the metrics and whether they are the best yet."""
    metrics = evaluate(run.model, run.val_loader, run.cfg.eval, run.evaluator, run.device, run.cfg.train.amp,
                       progress=run.progress and run.is_main)
    is_best = metrics["mIoU"] > run.best_miou
    run.best_miou = max(run.best_miou, metrics["mIoU"])
    log.write({"iter": run.iteration, "val/mIoU": metrics["mIoU"], "val/mAcc": metrics["mAcc"],
               "val/aAcc": metrics["aAcc"]})
    if run.is_main:
        tqdm.write(f"iter {run.iteration}: val mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  "
                   f"aAcc {metrics['aAcc']:.2f}  (best {run.best_miou:.2f})")
    return metrics, is_best


def _stop_requested(run: Run, stop: StopSignal) -> bool:
    """Whether to stop after this iteration; under DDP all ranks agree, at the same iterations."""
    if not run.dist.distributed:
        return stop.received is not None
    return run.iteration % STOP_AGREE_EVERY == 0 and du.any_rank(stop.received is not None, run.device)


def _check_finite(run: Run, window: LossWindow) -> None:
    if du.any_rank(bool(window.nonfinite.item()), run.device):
        latest = run.ckpts.latest if run.ckpts.latest.exists() else "none yet"
        raise TrainingStopped(
            f"loss became NaN/inf before iteration {run.iteration}; stopped without saving these weights. "
            f"Last good checkpoint: {latest}. Try a lower train.lr, train.grad_clip, or train.amp=none/bf16."
        )


def train(cfg: Config, work_dir: str | Path, resume: str | bool | None = None, progress: bool = True) -> dict:
    """Train ``cfg`` in ``work_dir``: :func:`fit` of :func:`setup_training`.

    Args:
        resume: a checkpoint path, ``True`` for ``work_dir/checkpoints/latest.pth`` (a fresh start
            if there is none yet), or ``None``.
    Returns:
        the final evaluation metrics with ``stopped: False``; or, when a stop signal ended the run early
        (after saving a checkpoint), ``{"stopped": True, "iteration": ..., "checkpoint": ...}``.
    """
    return fit(setup_training(cfg, work_dir, resume, progress))


def setup_training(cfg: Config, work_dir: str | Path, resume: str | bool | None = None,
                   progress: bool = True) -> Run:
    """Everything before the first step: settings checked, process group, ``config.yaml``, seeds, datasets and
    loaders, model, optimiser, and the resumed state. What goes wrong here is bad input (config, data,
    checkpoint): ``ValueError`` / ``FileNotFoundError`` / :class:`~spxseg.data.DatasetError` naming it."""
    tc = cfg.train
    check_train_config(cfg)
    resolve_normalization(cfg)  # the backbone's mean / std, written into config.yaml and the checkpoints
    dist_info = du.init_distributed(tc.device)
    work_dir = Path(work_dir)
    if dist_info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(tc.seed + dist_info.rank, tc.deterministic)

    # data: a missing synthetic set is written before train() (tools/train.py, on local rank 0): the
    # barrier keeps the other ranks from reading data.root before it is there.
    # Roles, not folder names: "train" reads data.train_split with augmentation, "val" data.val_split without
    du.barrier()
    train_set, val_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    if train_set.num_classes != cfg.model.num_classes:
        raise ValueError(f"model.num_classes={cfg.model.num_classes} but the {cfg.data.dataset} dataset has "
                         f"{train_set.num_classes} classes")
    train_loader = build_dataloader(
        train_set, tc.batch_size, train=True, num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and dist_info.device.type == "cuda", seed=tc.seed,
    )
    val_loader = _val_loader(val_set, cfg, dist_info)
    iters_per_epoch = len(train_loader) // tc.accum_steps
    if iters_per_epoch == 0:
        raise ValueError(f"train.accum_steps={tc.accum_steps} exceeds the {len(train_loader)} batches of an epoch")
    evaluator = SegEvaluator(cfg.model.num_classes, val_set.class_names, cfg.model.loss.ignore_index)

    run = build_run(cfg, work_dir, dist_info, train_loader=train_loader, val_loader=val_loader, evaluator=evaluator,
                    iters_per_epoch=iters_per_epoch, progress=progress)
    if resume:
        resume_run(run, resume)
    if dist_info.is_main:  # after the resume: a checkpoint that does not fit leaves the run's config.yaml as it was
        save_config(cfg, work_dir / "config.yaml")
    return run


def fit(run: Run) -> dict:
    """The loop, from ``run.iteration`` to ``train.max_iters``, then the final evaluation (see :func:`train`)."""
    tc, work_dir, progress = run.cfg.train, run.work_dir, run.progress
    run.model.train()
    batches = _batches(run.train_loader, run.iteration * tc.accum_steps, run.iters_per_epoch * tc.accum_steps)
    bar = tqdm(total=tc.max_iters, initial=run.iteration, desc="train", disable=not (progress and run.is_main),
               dynamic_ncols=True)
    window = LossWindow(run.device, grad_clip=tc.grad_clip)
    finished = run.iteration >= tc.max_iters  # a finished run resumed: its final evaluation runs again, logged once
    if finished and run.is_main:
        print(f"iteration {run.iteration} already reaches train.max_iters={tc.max_iters}: evaluating only")
    with RunLog(work_dir, run.iteration, enabled=run.is_main, drop_evaluations_at_start=finished) as log:
        with StopSignal() as stop, bar:
            while run.iteration < tc.max_iters:
                window.add(*train_step(run, batches))
                bar.update(1)
                it, last = run.iteration, run.iteration == tc.max_iters
                stopping = _stop_requested(run, stop)
                checkpoint_due = it % tc.checkpoint_interval == 0 or last or stopping
                eval_due = it % tc.eval_interval == 0 and not last
                if it % tc.log_interval == 0 or checkpoint_due or eval_due:
                    _check_finite(run, window)
                    record = window.record(run.iteration, run.optimizer.param_groups[-1]["lr"])
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
                is_best = evaluate_run(run, log)[1] if eval_due else False
                if checkpoint_due or is_best:
                    save_checkpoint(run, is_best=is_best)
                if window.iters == 0:  # just logged: the next window's speed excludes this evaluation / save
                    window.start = time.perf_counter()
                if stopping:
                    if run.is_main:
                        received = "a signal to another rank" if stop.received is None else f"signal {stop.received}"
                        tqdm.write(f"\nstopped by {received} at iteration {it}; saved {run.ckpts.latest}. "
                                   "Resume with --resume.")
                    du.cleanup()
                    return {"stopped": True, "iteration": it, "checkpoint": str(run.ckpts.latest)}

        # ------------------------------------------------------------ final evaluation (default signal handlers)
        metrics, is_best = evaluate_run(run, log)
    if is_best:
        save_checkpoint(run, is_best=True)
    if run.is_main:
        save_weights(run.model, work_dir / FINAL_WEIGHTS, run.cfg, run.iteration)
        print(format_table(metrics))
        summary = {**metrics, "iteration": run.iteration, "work_dir": str(work_dir),
                   "checkpoint": str(run.ckpts.latest), "weights": str(work_dir / FINAL_WEIGHTS)}
        (work_dir / "metrics.json").write_text(json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
    du.cleanup()
    return {**metrics, "stopped": False}


def _gather_rng(dist_info: du.DistInfo) -> dict | list[dict]:
    """The RNG state of every rank (each rank draws its own augmentation and dropout)."""
    state = rng_state()
    if not dist_info.distributed:
        return state
    states: list = [None] * dist_info.world_size
    torch.distributed.all_gather_object(states, state)
    return states
