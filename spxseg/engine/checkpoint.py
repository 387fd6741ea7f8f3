"""Checkpoints: the one path by which the trainer, the tools and ``Segmenter`` read and write model files
(backbone weight files go through :mod:`spxseg.models.weights`; both read with :mod:`spxseg.safe_load`).

Written atomically, last N kept, ``latest.pth`` and ``best.pth`` maintained; the shareable weights
``model.safetensors`` written next to the run's ``config.yaml``. Every file is read safely: ``.pth``
files with ``torch.load(weights_only=True)`` (tensors and plain data only), ``.safetensors`` files with
safetensors; a file that would need anything else to unpickle is refused before anything in it runs.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from spxseg.config import (
    Config,
    ConfigError,
    ModelConfig,
    apply_overrides,
    config_from_data,
    from_dict,
    load_yaml,
    to_dict,
)
from spxseg.safe_load import UnsafeCheckpointError, load_safetensors, torch_load_safe  # noqa: F401 - re-exported

WEIGHTS_SUFFIX = ".safetensors"


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``.

    An interrupted write leaves the previous file untouched (and at worst a stray temp file). The file
    gets the permissions a plain ``open`` would give it (mkstemp's are owner-only).
    """
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_json(obj: Any, path: str | Path) -> None:
    """``obj`` as indented JSON (with a final newline) at ``path``, its folder made if needed, atomically: the
    reports of the tools and benchmarks, so a run killed while writing never leaves half a file."""
    write_text(json.dumps(obj, indent=2) + "\n", path)


def write_text(text: str, path: str | Path) -> None:
    """``text`` (UTF-8) at ``path``, its folder made if needed, atomically (see :func:`atomic_save`)."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)`` into a temp file next to ``path``, fsync, rename over ``path`` (see :func:`atomic_save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)  # there is no way to read the umask without setting it
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
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


# ----------------------------------------------------------------------------- reading


class WeightsMismatchError(RuntimeError, ValueError):
    """Weights that do not fit the model built from the config (a ``ValueError``: the tools report it in one
    line; a ``RuntimeError`` like ``load_state_dict``'s own error, for callers that catch that)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by the trainer (a dict with at least ``model``), or a ``model.safetensors``
    weights file: then ``model`` holds its tensors and ``config`` the ``config.yaml`` next to it (else the
    config stored in its metadata), ``config_file`` that file's path.

    Raises ``FileNotFoundError`` when it is missing, :class:`UnsafeCheckpointError` when it needs more than
    tensors and plain data to load, and ``ValueError`` naming the file when it cannot be read (truncated, not
    a torch file) or is not an spxseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == WEIGHTS_SUFFIX:
        return _weights_file(path)
    ckpt = torch_load_safe(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an spxseg checkpoint: expected a dict with a 'model' state_dict, got {keys}")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise ValueError(f"{path} is not an spxseg checkpoint: its 'model' entry is not a state_dict of tensors "
                         f"(got {type(ckpt['model']).__name__})")
    return ckpt


def _weights_file(path: Path) -> dict:
    state, meta = load_safetensors(path)
    ckpt: dict[str, Any] = {"model": state, "config": None, "config_file": None}
    if meta.get("iteration", "").isdigit():
        ckpt["iteration"] = int(meta["iteration"])
    stored = None
    if meta.get("config"):
        try:
            stored = json.loads(meta["config"])
        except ValueError:
            pass
    beside = path.with_name("config.yaml")
    if beside.is_file():
        ckpt["config"], ckpt["config_file"] = load_yaml(beside), str(beside)
        if stored is not None and stored.get("model") != ckpt["config"].get("model"):
            # a later run in the same work dir rewrote config.yaml: the weights go with the config saved with them
            warnings.warn(f"{beside} has another model: section than the config stored in {path}; using the stored "
                          "one (pass --config to choose)", stacklevel=2)
            ckpt["config"], ckpt["config_file"] = stored, f"the config stored in {path}"
    elif stored is not None:
        ckpt["config"] = stored
    return ckpt


def config_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint", overrides: list[str] | None = None) -> Config:
    """The :class:`Config` a checkpoint was trained with (its stored ``config``; for a ``.safetensors`` file the
    ``config.yaml`` next to it), with dotted ``overrides`` applied."""
    if not isinstance(ckpt.get("config"), dict):
        where = "no config.yaml next to it" if Path(path).suffix == WEIGHTS_SUFFIX else "it stores no config"
        raise ConfigError(f"{path}: {where}; pass the training config explicitly (e.g. --config)")
    try:
        return config_from_data(ckpt["config"], overrides)
    except ConfigError as err:
        if overrides:  # a typo in the overrides themselves: say so, not that the file is at fault
            try:
                from_dict(Config, apply_overrides({}, overrides))
            except ConfigError as opts_err:
                raise ConfigError(f"--opts: {opts_err}") from None
        source = ckpt.get("config_file") or f"the config stored in {path}"
        raise ConfigError(f"{source}: does not match this version of spxseg (or --opts): {err}") from None


# ----------------------------------------------------------------------------- model weights

# model config keys that only say how the backbone was initialised before training: a full checkpoint
# replaces those weights, so they do not have to match
_INIT_ONLY = ("model.backbone.pretrained", "model.backbone.checkpoint")


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def config_differences(stored: dict | None, model_cfg: ModelConfig | None) -> list[tuple[str, Any, Any]]:
    """``(key, value in the stored config, value in model_cfg)`` for the ``model.*`` keys that differ."""
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict) or model_cfg is None:
        return []
    theirs, ours = _flatten(stored["model"], "model."), _flatten(to_dict(model_cfg), "model.")
    norm = (lambda v: list(v) if isinstance(v, tuple) else v)  # noqa: E731 - YAML/torch give lists, dataclasses tuples
    return [(key, theirs[key], ours[key]) for key in ours
            if key in theirs and key not in _INIT_ONLY and norm(theirs[key]) != norm(ours[key])]


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def weights_mismatch(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                     stored_config: dict | None = None, model_cfg: ModelConfig | None = None) -> str | None:
    """Why ``state`` does not fit ``model``, in at most ten lines, or ``None`` when it fits.

    The file, how many keys are missing / unexpected / of another shape, the first few of each, and the
    ``model.*`` config values that differ when the file carries its config (``stored_config``).
    """
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if not (missing or unexpected or shapes):
        return None
    lines = [f"weights in {path} do not fit the model built from the config (another backbone, width or number "
             f"of classes?): {len(missing)} keys missing, {len(unexpected)} unexpected, {len(shapes)} of another shape"]
    if missing:
        lines.append(f"  missing:    {_few(missing)}")
    if unexpected:
        lines.append(f"  unexpected: {_few(unexpected)}")
    if shapes:
        lines.append("  shape:      " + _few([f"{key} {list(state[key].shape)} in the file, {list(own[key].shape)} "
                                              "in the model" for key in shapes], 2))
    diffs = config_differences(stored_config, model_cfg)
    if diffs:
        lines.append("  trained with " + _few([f"{key}={a!r} (this config: {b!r})" for key, a, b in diffs], 3))
    lines.append("  use the config it was trained with (stored in a training checkpoint, the config.yaml next to a "
                 f"{WEIGHTS_SUFFIX} file; eval, demo and export_onnx take it when --config is left out)")
    return "\n".join(lines)


def load_model_weights(model: nn.Module, ckpt: dict, path: str | Path = "checkpoint",
                       model_cfg: ModelConfig | None = None) -> None:
    """Load ``ckpt["model"]`` into ``model`` strictly (``module.`` / ``_orig_mod.`` prefixes stripped).

    Raises ``RuntimeError`` with the short :func:`weights_mismatch` message when the weights do not fit
    (``model_cfg``, the config ``model`` was built from, lets it name the config values that differ).
    """
    state = {}
    for key, value in ckpt["model"].items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    problem = weights_mismatch(model, state, path, ckpt.get("config"), model_cfg)
    if problem:
        raise WeightsMismatchError(problem)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # pragma: no cover - keys and shapes fit; e.g. a tensor of another kind
        first = str(err).strip().splitlines()[-1].strip()[:300]
        raise WeightsMismatchError(f"weights in {path} do not fit the model built from the config: {first}") from None


def build_model_for_weights(model_cfg: ModelConfig) -> nn.Module:
    """The model of ``model_cfg`` without its backbone initialisation (no ImageNet download, no
    ``backbone.checkpoint`` file needed): for loading a full checkpoint over it."""
    import copy

    from spxseg.models import build_model

    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.pretrained = False
    cfg.backbone.checkpoint = None
    return build_model(cfg)


def save_weights(model: nn.Module | dict[str, torch.Tensor], path: str | Path, cfg: Config | None = None,
                 iteration: int | None = None) -> Path:
    """Write the model weights as a ``.safetensors`` file, atomically: tensors only, nothing that runs.

    The metadata holds ``format=pt``, the ``iteration`` and the config as JSON (used when no ``config.yaml``
    lies next to the file); the trainer writes it next to the run's ``config.yaml``.
    """
    from safetensors.torch import save

    state = model.state_dict() if isinstance(model, nn.Module) else model
    # own copies: safetensors refuses tensors that share memory (tied or sliced parameters)
    tensors = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}
    meta = {"format": "pt", "producer": "spxseg"}
    if iteration is not None:
        meta["iteration"] = str(iteration)
    if cfg is not None:
        meta["config"] = json.dumps(to_dict(cfg))
    data = save(tensors, metadata=meta)
    _atomic_write(path, lambda f: f.write(data))
    return Path(path)


# ----------------------------------------------------------------------------- random state

def rng_state() -> dict:
    """The Python, NumPy, torch (and CUDA) random states as tensors and plain data (loads with weights_only).

    Python's is ``random.getstate()`` (a tuple of ints); NumPy's the MT19937 dict of
    ``np.random.get_state(legacy=False)`` with its key array as an int64 tensor.
    """
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {**np_state["state"],
                                      "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64))}}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (or the raw NumPy / Python state objects of checkpoints written before it)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    if isinstance(np_state, dict):  # the plain form; a tuple is np.random.get_state()'s own (older checkpoints)
        key = np_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        np_state = {**np_state, "state": {**np_state["state"], "key": key.astype(np.uint32)}}
    np.random.set_state(np_state)
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


def load_trained_model(path: str | Path, cfg: Config | None = None, overrides: list[str] | None = None
                       ) -> tuple[nn.Module, Config, dict]:
    """``(model, config, checkpoint)`` of a training checkpoint or ``.safetensors`` weights file: read safely,
    the config is ``cfg`` or the one the file was trained with, ``overrides`` applied to either, weights loaded
    strictly."""
    if cfg is not None and overrides:  # ConfigError on a bad key, as for the file's own config
        cfg = config_from_data(to_dict(cfg), overrides)
    ckpt = load_checkpoint(path)
    if cfg is not None:
        warn_normalization_differs(ckpt.get("config"), cfg, path)
    cfg = cfg if cfg is not None else config_from_checkpoint(ckpt, path, overrides)
    model = build_model_for_weights(cfg.model)
    load_model_weights(model, ckpt, path, cfg.model)
    return model, cfg, ckpt


def warn_normalization_differs(stored: dict | None, cfg: Config, path: str | Path) -> None:
    """Warn when ``cfg`` normalises images otherwise than the config ``path`` was trained with: its weights learned
    that input scale, and the predictions quietly degrade under another (the weights themselves still fit)."""
    data = stored.get("data") if isinstance(stored, dict) else None
    if not isinstance(data, dict):
        return
    for key in ("mean", "std"):
        theirs, ours = data.get(key), getattr(cfg.data, key)
        if theirs is not None and ours is not None and [float(v) for v in theirs] != [float(v) for v in ours]:
            warnings.warn(f"data.{key} {list(ours)} differs from the {list(theirs)} that {path} was trained with: "
                          f"its predictions assume the latter (drop --config to use the stored config, or set "
                          f"data.{key})", stacklevel=2)
