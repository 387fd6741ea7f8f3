"""Checkpoints: written atomically, last N kept, ``latest.pth`` and ``best.pth`` maintained."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``.

    An interrupted write leaves the previous file untouched (and at worst a stray temp file). The file
    gets the permissions a plain ``open`` would give it (mkstemp's are owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)  # there is no way to read the umask without setting it
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link when possible), atomically."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by the trainer (a dict with at least ``model``).

    Raises ``FileNotFoundError`` when it is missing and ``ValueError`` naming the file when it cannot be
    read (truncated, not a torch file) or is not an spxseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated, or not a torch file at all
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a torch file): {err}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an spxseg checkpoint: expected a dict with a 'model' state_dict, got {keys}")
    return ckpt


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Keeps ``latest.pth``, ``best.pth`` and the last ``keep`` ``iter_XXXXXXX.pth`` in ``folder``."""

    def __init__(self, folder: str | Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = keep

    @property
    def latest(self) -> Path:
        return self.folder / "latest.pth"

    @property
    def best(self) -> Path:
        return self.folder / "best.pth"

    def save(self, state: dict, iteration: int, is_best: bool = False) -> Path:
        atomic_save(state, self.latest)
        if self.keep > 0:
            link_or_copy(self.latest, self.folder / f"iter_{iteration:07d}.pth")
            self._prune(iteration)
        if is_best:
            link_or_copy(self.latest, self.best)
        return self.latest

    def _prune(self, iteration: int) -> None:
        """Keep the last ``keep`` numbered checkpoints up to ``iteration``.

        Later ones were left by a run that this one resumed before the end of: they stay until this
        run overwrites them (deleting the newest file instead would lose the one just written).
        """
        numbered = sorted(p for p in self.folder.glob("iter_*.pth") if re.fullmatch(r"iter_\d+\.pth", p.name))
        upto = [p for p in numbered if int(p.stem[len("iter_"):]) <= iteration]
        for old in upto[: -self.keep]:
            old.unlink()
