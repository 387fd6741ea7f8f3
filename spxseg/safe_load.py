"""Opening model files without running them: ``torch.load(weights_only=True)`` and safetensors.

The one low-level reader of every ``.pth`` / ``.safetensors`` file spxseg opens: training checkpoints and
shared weights (:mod:`spxseg.engine.checkpoint`) and backbone weight files (:mod:`spxseg.models.weights`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """A file that needs more than tensors and plain data to load; refused before anything in it ran."""


def _legacy_numpy_rng_globals() -> list:
    """Exactly the NumPy objects that a pickled ``np.random.get_state()`` refers to, which checkpoints written
    before the RNG state was stored as plain data hold: the array rebuild function (under its NumPy 1 and
    NumPy 2 module names), ``ndarray``, ``dtype`` and the uint32 dtype class (MT19937 keys). Arrays of any
    other dtype, NumPy scalars and everything else stay refused."""
    reconstruct = np.zeros(1, np.uint32).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"), type(np.dtype(np.uint32))]


def _refusal(path: Path, err: Exception) -> ValueError:
    """A short reason from the weights-only unpickler's long message (its advice to allow-list the object, or
    to load with ``weights_only=False``, is exactly what not to do with a file from someone else)."""
    text = str(err)
    detail = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    found = (re.search(r"GLOBAL (\S+) was not an allowed global", text)
             or re.search(r"GLOBAL (\S+) whose module \S+ is blocked", text)
             or re.search(r"(?:but got|unrecognized function) (<[^>]+>|\S+)", detail))
    if found:
        reason = f"it asks for {found.group(1)}"
    else:
        with open(path, "rb") as f:
            is_pickle = f.read(1) == b"\x80"  # PROTO: a pickle (of a protocol / opcodes the safe loader refuses)
        reason = " ".join(detail.split())[:120] or "unpickling failed"
        if not is_pickle:  # garbage, not a program
            return ValueError(f"cannot read checkpoint {path} (truncated or not a torch file): {reason}")
    return UnsafeCheckpointError(
        f"refusing to load {path}: it holds more than tensors and plain data ({reason}), and unpickling such a file "
        "can run code; nothing in it was run. Use checkpoints written by spxseg, or model.safetensors files.")


def torch_load_safe(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, plus the NumPy RNG-state types of older spxseg checkpoints.

    Raises :class:`UnsafeCheckpointError` (a ``ValueError`` naming the file) for anything else the file would
    need, and ``ValueError`` when it cannot be read (truncated, not a torch file).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_rng_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # truncated, or not a torch file at all
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a torch file): {err}") from None


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a ``.safetensors`` file (on the CPU)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # SafetensorError: bad header, truncated
        raise ValueError(f"cannot read weights file {path} (truncated or not a safetensors file): {err}") from None
