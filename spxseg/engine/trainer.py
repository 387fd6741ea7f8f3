"""The training loop: iteration-based, AMP, DDP, exact resume, evaluation, checkpoints.

Read it top to bottom: :func:`train` sets everything up, then runs ``max_iters`` iterations,
evaluating every ``eval_interval`` and checkpointing every ``checkpoint_interval``.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
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
from spxseg.engine.evaluator import SegEvaluator, format_table, to_jsonable
from spxseg.engine.inference import autocast_context, check_eval_config, evaluate
from spxseg.engine.optim import build_optimizer, build_scheduler
from spxseg.models import build_model, model_loss


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
    if tc.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"train.amp must be none, bf16 or fp16, got {tc.amp!r}")
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


class _StopSignal:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each iteration (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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


def train(cfg: Config, work_dir: str | Path, resume: str | bool | None = None, progress: bool = True) -> dict:
    """Train ``cfg`` in ``work_dir``; returns the final evaluation metrics.

    Args:
        resume: a checkpoint path, ``True`` for ``work_dir/checkpoints/latest.pth`` (a fresh start
            if there is none yet), or ``None``.
    """
    tc = cfg.train
    check_train_config(cfg)
    resolve_normalization(cfg)  # the backbone's mean / std, written into config.yaml and the checkpoints
    dist_info = du.init_distributed(tc.device)
    device, is_main = dist_info.device, dist_info.is_main
    work_dir = Path(work_dir)
    ckpts = CheckpointManager(work_dir / "checkpoints", keep=tc.keep_checkpoints)
    if is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")
    seed_everything(tc.seed + dist_info.rank, tc.deterministic)

    # data; a missing synthetic set is written before train() (tools/train.py, on local rank 0): the
    # barrier keeps the other ranks from reading data.root before it is there
    # roles, not folder names: "train" reads data.train_split with augmentation, "val" data.val_split without
    du.barrier()
    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val")
    if train_set.num_classes != cfg.model.num_classes:
        raise ValueError(
            f"model.num_classes={cfg.model.num_classes} but the {cfg.data.dataset} dataset has "
            f"{train_set.num_classes} classes"
        )
    train_loader = build_dataloader(
        train_set, tc.batch_size, train=True, num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda", seed=tc.seed,
    )
    val_loader = _val_loader(val_set, cfg, dist_info)
    iters_per_epoch = len(train_loader) // tc.accum_steps
    if iters_per_epoch == 0:
        raise ValueError(f"train.accum_steps={tc.accum_steps} exceeds the {len(train_loader)} batches of an epoch")

    # model, optimiser, schedule, mixed precision
    model = build_model(cfg.model)
    if tc.sync_bn and dist_info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.amp == "fp16")
    start_iter, best_miou = 0, -1.0

    if resume:
        path = ckpts.latest if resume is True else Path(resume)
        if path.is_file():
            ckpt = load_checkpoint(path)
            missing = [key for key in RESUME_KEYS if key not in ckpt]
            if missing:
                raise ValueError(f"--resume: {path} is not a training checkpoint (no {', '.join(missing)}); "
                                 "weights-only files can initialise a model (tools/eval.py, Segmenter), not resume")
            try:
                load_model_weights(model, ckpt, path, cfg.model)
            except RuntimeError as err:
                raise ValueError(f"--resume: {err}") from None
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt["scaler"]:  # empty when the run had no fp16 scaler (train.amp was none or bf16)
                scaler.load_state_dict(ckpt["scaler"])
            start_iter, best_miou = ckpt["iteration"], ckpt.get("best_miou", -1.0)
            states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]  # one per rank
            if len(states) == dist_info.world_size:
                set_rng_state(states[dist_info.rank])
            elif is_main:
                print(f"warning: {path} was written by {len(states)} process(es), this run has "
                      f"{dist_info.world_size}: random streams start afresh (the resume is not exact)")
            if is_main:
                print(f"resumed from {path} at iteration {start_iter}")
        elif resume is True:
            if is_main:
                print(f"no checkpoint in {ckpts.folder}: starting from scratch")
        else:
            raise FileNotFoundError(f"--resume: checkpoint not found: {path}")

    ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist_info.distributed else model

    if is_main and start_iter > 0:
        _truncate_log(work_dir / "metrics.jsonl", start_iter)  # drop what the interrupted run logged after it
    log_file = open(work_dir / "metrics.jsonl", "a") if is_main else None
    tb = _tensorboard(work_dir, purge_step=start_iter + 1 if start_iter > 0 else None) if is_main else None

    def close_logs() -> None:
        if log_file is not None:
            log_file.close()
        if tb is not None:
            tb.close()
    evaluator = SegEvaluator(cfg.model.num_classes, val_set.class_names, cfg.model.loss.ignore_index)

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")
            log_file.flush()
        if tb is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, (int, float)) and math.isfinite(value):
                    tb.add_scalar(key, value, record["iter"])

    def save(iteration: int, is_best: bool = False) -> None:
        rngs = _gather_rng(dist_info)
        if is_main:
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "iteration": iteration, "best_miou": best_miou, "rng": rngs, "config": to_dict(cfg),
            }
            ckpts.save(state, iteration, is_best=is_best)
            if is_best:  # the weights to share, next to config.yaml (see save_weights)
                save_weights(model, work_dir / BEST_WEIGHTS, cfg, iteration)

    def run_eval(iteration: int) -> dict:
        nonlocal best_miou
        metrics = evaluate(model, val_loader, cfg.eval, evaluator, device, tc.amp, progress=progress and is_main)
        is_best = metrics["mIoU"] > best_miou
        best_miou = max(best_miou, metrics["mIoU"])
        log({"iter": iteration, "val/mIoU": metrics["mIoU"], "val/mAcc": metrics["mAcc"], "val/aAcc": metrics["aAcc"]})
        if is_main:
            tqdm.write(f"iter {iteration}: val mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  "
                       f"aAcc {metrics['aAcc']:.2f}  (best {best_miou:.2f})")
        return {**metrics, "is_best": is_best}

    # ---------------------------------------------------------------- the loop
    model.train()
    batches = _batches(train_loader, start_iter * tc.accum_steps, iters_per_epoch * tc.accum_steps)
    bar = tqdm(total=tc.max_iters, initial=start_iter, desc="train", disable=not (progress and is_main),
               dynamic_ncols=True)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    window_loss = torch.zeros(3, device=device)  # total, pixel, superpixel since the last log
    window_start, window_iters, data_time = time.perf_counter(), 0, 0.0
    iteration = start_iter
    with _StopSignal() as stop:
        while iteration < tc.max_iters:
            for micro in range(tc.accum_steps):
                t0 = time.perf_counter()
                batch = next(batches)
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                data_time += time.perf_counter() - t0
                sync = micro == tc.accum_steps - 1 or not dist_info.distributed
                with (nullcontext() if sync else ddp_model.no_sync()):
                    with autocast_context(device, tc.amp):
                        out = ddp_model(images)
                    loss = model_loss(out, labels, cfg.model)
                    scaler.scale(loss.total / tc.accum_steps).backward()
                terms = torch.stack([loss.total, loss.pixel, loss.superpixel]).detach()
                nonfinite |= ~torch.isfinite(terms).all()
                window_loss += terms / tc.accum_steps
            if tc.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            iteration += 1
            window_iters += 1
            bar.update(1)

            last = iteration == tc.max_iters
            if not dist_info.distributed:
                stopping = stop.received is not None
            else:  # all ranks agree at the same iterations (see STOP_AGREE_EVERY)
                stopping = iteration % STOP_AGREE_EVERY == 0 and du.any_rank(stop.received is not None, device)
            checkpoint_due = iteration % tc.checkpoint_interval == 0 or last or stopping
            eval_due = iteration % tc.eval_interval == 0 and not last
            if iteration % tc.log_interval == 0 or checkpoint_due or eval_due:
                # one host sync per log step, not per iteration
                if du.any_rank(bool(nonfinite.item()), device):
                    bar.close()
                    close_logs()
                    raise TrainingStopped(
                        f"loss became NaN/inf before iteration {iteration}; stopped without saving these weights. "
                        f"Last good checkpoint: {ckpts.latest if ckpts.latest.exists() else 'none yet'}. "
                        "Try a lower train.lr, train.grad_clip, or train.amp=none/bf16."
                    )
                mean = du.all_reduce_mean(window_loss / window_iters).tolist()
                elapsed = time.perf_counter() - window_start
                lr = optimizer.param_groups[-1]["lr"]
                record = {
                    "iter": iteration, "loss": mean[0], "loss_pixel": mean[1], "loss_superpixel": mean[2], "lr": lr,
                    "it_per_s": window_iters / elapsed, "data_time": data_time / window_iters,
                }
                if device.type == "cuda":
                    record["mem_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
                log(record)
                bar.set_postfix(loss=f"{mean[0]:.3f}", lr=f"{lr:.2e}")
                window_loss.zero_()
                window_iters, data_time = 0, 0.0

            is_best = False
            if eval_due:
                is_best = run_eval(iteration)["is_best"]
            if checkpoint_due or is_best:
                save(iteration, is_best=is_best)
            if window_iters == 0:  # just logged: the next window's speed excludes this evaluation / save
                window_start = time.perf_counter()
            if stopping:
                bar.close()
                close_logs()
                if is_main:
                    received = f"signal {stop.received}" if stop.received is not None else "a signal to another rank"
                    print(f"\nstopped by {received} at iteration {iteration}; "
                          f"saved {ckpts.latest}. Resume with --resume.")
                du.cleanup()
                raise KeyboardInterrupt
    bar.close()

    # ---------------------------------------------------------------- final evaluation
    metrics = run_eval(iteration)
    if metrics.pop("is_best"):
        save(iteration, is_best=True)
    if is_main:
        save_weights(model, work_dir / FINAL_WEIGHTS, cfg, iteration)
        print(format_table(metrics))
        summary = {**metrics, "iteration": iteration, "work_dir": str(work_dir),
                   "checkpoint": str(ckpts.latest), "weights": str(work_dir / FINAL_WEIGHTS)}
        (work_dir / "metrics.json").write_text(json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
    close_logs()
    du.cleanup()
    return metrics


def _gather_rng(dist_info: du.DistInfo) -> dict | list[dict]:
    """The RNG state of every rank (each rank draws its own augmentation and dropout)."""
    state = rng_state()
    if not dist_info.distributed:
        return state
    states: list = [None] * dist_info.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _tensorboard(work_dir: Path, purge_step: int | None = None):
    """A TensorBoard writer for ``work_dir/tb`` (None without tensorboard); ``purge_step`` hides the events
    an interrupted run wrote from that step on."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional extra
        return None
    return SummaryWriter(str(work_dir / "tb"), purge_step=purge_step)


def _truncate_log(path: Path, last_iter: int) -> None:
    """Rewrite the JSON-lines log without the records after ``last_iter`` (atomically)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["iter"] > last_iter:
                continue
        except (ValueError, KeyError, TypeError):  # a torn last line of a killed run
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
