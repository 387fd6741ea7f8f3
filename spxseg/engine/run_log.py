"""A training run's logs: ``metrics.jsonl`` (one strict-JSON object per log step and evaluation) and
TensorBoard scalars (when tensorboard is installed), opened and closed as one context manager; and the
window of loss terms between two log lines."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spxseg.engine import distributed as du
from spxseg.engine.checkpoint import write_text
from spxseg.engine.evaluator import to_jsonable
from spxseg.models.loss import LOGGED_TERMS


class RunLog:
    """``with RunLog(work_dir, start_iter, enabled=is_main) as log: log.write({"iter": 5, "loss": ...})``.

    A run first drops what an earlier run in ``work_dir`` logged after ``start_iter`` (from ``metrics.jsonl``,
    and from TensorBoard through its purge step): a resumed run's steps, and a run started afresh (``start_iter``
    0: a rerun, or ``--resume`` before the first checkpoint) all of them, so that every step is logged once.
    ``drop_evaluations_at_start`` also drops the evaluations logged at ``start_iter`` itself: a finished run
    resumed at its last iteration evaluates again. Disabled (non-zero ranks) it writes nothing.
    """

    def __init__(self, work_dir: str | Path, start_iter: int = 0, enabled: bool = True,
                 drop_evaluations_at_start: bool = False) -> None:
        self.path = Path(work_dir) / "metrics.jsonl"
        self.work_dir, self.start_iter, self.enabled = Path(work_dir), start_iter, enabled
        self.drop_evaluations_at_start = drop_evaluations_at_start
        self._file = None
        self._tb = None

    def __enter__(self) -> RunLog:
        if self.enabled:
            truncate_log(self.path, self.start_iter, self.drop_evaluations_at_start)
            self._file = open(self.path, "a")  # noqa: SIM115 - closed by __exit__
            self._tb = _tensorboard(self.work_dir, purge_step=self.start_iter + 1)
        return self

    def write(self, record: dict) -> None:
        """Append ``record`` (it has an ``iter``) to metrics.jsonl, and its finite numbers to TensorBoard."""
        if self._file is not None:
            self._file.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["iter"])

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._file = self._tb = None


@dataclass
class LossWindow:
    """Loss terms, gradient norms and timings since the last log line, kept on the device (one host sync per log
    line). ``grad_norm`` is the mean global norm before clipping over the window's finite ones (fp16 loss scaling
    skips steps with inf gradients); ``clipped``, with a ``grad_clip``, the fraction of steps it clipped."""

    device: torch.device
    grad_clip: float | None = None
    terms: torch.Tensor = None  # type: ignore[assignment]
    grads: torch.Tensor = None  # type: ignore[assignment]  # (3,) sum of finite norms, their count, clipped steps
    nonfinite: torch.Tensor = None  # type: ignore[assignment]
    iters: int = 0
    data_time: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.terms = torch.zeros(len(LOGGED_TERMS), device=self.device)
        self.grads = torch.zeros(3, device=self.device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    def add(self, terms: torch.Tensor, grad_norm: torch.Tensor, data_time: float) -> None:
        self.nonfinite |= ~torch.isfinite(terms).all()
        self.terms += terms
        grad_norm = grad_norm.float()
        finite = torch.isfinite(grad_norm)
        clipped = finite & (grad_norm > self.grad_clip) if self.grad_clip else torch.zeros_like(finite)
        self.grads += torch.stack([torch.where(finite, grad_norm, 0.0), finite.float(), clipped.float()])
        self.iters += 1
        self.data_time += data_time

    def record(self, iteration: int, lr: float) -> dict:
        """The log record of this window (averaged over the ranks), then start a new window."""
        mean = du.all_reduce_mean(torch.cat([self.terms / self.iters, self.grads])).tolist()
        *losses, norm_sum, finite, clipped = mean
        record = {
            "iter": iteration, **dict(zip(LOGGED_TERMS, losses, strict=True)),
            "grad_norm": norm_sum / finite if finite else math.nan,
            "lr": lr, "it_per_s": self.iters / (time.perf_counter() - self.start),
            "data_time": self.data_time / self.iters,
        }
        if self.grad_clip:
            record["clipped"] = clipped / self.iters
        if self.device.type == "cuda":
            record["mem_MiB"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.terms.zero_()
        self.grads.zero_()
        self.iters, self.data_time = 0, 0.0
        return record


def _tensorboard(work_dir: Path, purge_step: int | None = None):
    """A TensorBoard writer for ``work_dir/tb`` (None without tensorboard); ``purge_step`` hides the events
    an interrupted run wrote from that step on."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional extra
        return None
    return SummaryWriter(str(work_dir / "tb"), purge_step=purge_step)


def truncate_log(path: Path, last_iter: int, drop_evaluations_at_last: bool = False) -> None:
    """Rewrite the JSON-lines log without the records after ``last_iter`` (atomically), and without the evaluations
    (``val/...`` records) at ``last_iter`` with ``drop_evaluations_at_last``."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            if record["iter"] > last_iter or (
                drop_evaluations_at_last and record["iter"] == last_iter and any(k.startswith("val/") for k in record)
            ):
                continue
        except (ValueError, KeyError, TypeError):  # a torn last line of a killed run
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        write_text("".join(kept), path)
