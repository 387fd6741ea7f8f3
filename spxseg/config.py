"""Typed configuration: plain dataclasses built from YAML.

A config file is YAML whose top-level sections mirror :class:`Config`. A file may name
one or more parent files with ``_base_: path`` (or a list); parents are merged first,
recursively, and the child's keys win. Dotted overrides (``train.lr=3e-4``) are parsed
with YAML typing. Unknown keys and wrong types are errors that name the key and, for
unknown keys, the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a :class:`Config`."""


# --------------------------------------------------------------------------- model


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    pretrained: bool = False  # ImageNet weights through timm (downloads); off by default
    checkpoint: str | None = None  # local weights file, for offline machines
    out_indices: list[int] | None = None  # timm feature stages; None = all
    # keep the backbone's BatchNorm layers in eval mode while training: the ImageNet running statistics
    # normalise (the affine parameters still learn), whatever the per-GPU batch. For one or two images per
    # GPU without train.sync_bn; measured in benchmarks/README.md, Small batches
    freeze_bn: bool = False


@dataclass
class TokenizerConfig:
    iters: int = 3
    heads: int = 2
    dual_path: bool = False
    ffn_ratio: float = 2.0
    # a learned bias per neighbour and position in the cell added to every association's logits, started
    # at SSN's distance prior (-squared distance to the neighbour's cell centre, in cells): the first
    # associations favour nearby superpixels instead of being near uniform over the 9
    position_bias: bool = False
    # superpixel keys through the pixels' query projection and norm (Wk = Wq): the first association is a
    # soft k-means on feature similarity (the superpixels start as their cells' mean features) instead of a
    # random bilinear form, near uniform over the 9 neighbours. CamVid study: 59.2 / 58.1 over two seeds
    # against 58.8 / 58.8 (default sizes), 55.4 / 56.3 against 54.9 / 56.3 (light): off in every config
    shared_qk: bool = False
    # one more pool after the final association A*: S <- S + Wf pool(A*, F), so the token that is classified
    # describes the pixels its class is projected to (A*, which the reconstruction loss shapes), not those of
    # the last iteration's association. CamVid study (spx_lite0_mid): alone 62.3 / 61.4 val mIoU against
    # 62.3 / 61.9 (seeds 0 / 1); with loss.reconstruction_hard_fraction=0.1, 63.1 / 62.3 / 63.1 against
    # 62.3 / 61.9 / 62.0 (seeds 0-2), spx_lite0_base 62.5 / 61.2 / 60.7 against 60.5 / 59.2; +0.7% FLOPs. On in
    # spx_lite0_base and spx_lite0_mid (benchmarks/README.md, the token that is classified)
    final_pool: bool = False
    # LayerScale on the superpixel updates (each iteration's pool and FFN, the final pool): learned per-channel
    # scales starting at this value, so the superpixels start near their cells' mean features; 0 = off (no
    # parameters). CamVid study (spx_lite0_base): 62.2 val mIoU against 62.6 at 0.1 (seed 0), signs -2.2: off in
    # every config (benchmarks/README.md, after LayerScale)
    layer_scale: float = 0.0


@dataclass
class TransformerConfig:
    layers: int = 4
    dim: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    # on the attention weights and the MLP's hidden layer. 0.1 on spx_lite0_base: 62.4 / 61.4 val mIoU against
    # 62.6 / 61.7 (seeds 0 / 1): off in every config (benchmarks/README.md, transformer dropout)
    dropout: float = 0.0
    # each token also gets the channel-wise max of its cell's pixel features (concatenated before the input
    # projection): a thin object's strong activations survive a max where the superpixel's mean dilutes them.
    # CamVid study (spx_lite0_mid): 62.4 / 62.1 val mIoU against 62.3 / 61.9 (seeds 0 / 1), signs 24.5 / 23.4
    # against 20.9 / 25.4, +0.8% FLOPs: within the seeds' spread, off in every config (benchmarks/README.md,
    # the token that is classified)
    cell_max: bool = False
    # each token also gets the backbone's two coarsest stages (Lite0: 112 + 320 channels at strides 16 and 32)
    # sampled bilinearly at the centre of its superpixel's starting cell and layer-normalised, concatenated before
    # the input projection: the backbone's semantics reach the transformer directly, not only through the C pixel
    # channels the tokenizer pools (C=64 in spx_lite0). CamVid study: on spx_lite0 60.3 / 59.3 / 60.7 / 59.9 / 58.5 val
    # mIoU against 59.4 / 59.5 / 59.6 / 59.4 / 57.1 (seeds 0-4, +0.7 on the mean), on in that config; on
    # spx_lite0_base 62.1 against 62.6 (seed 0), off there (benchmarks/README.md, backbone features in the tokens)
    backbone_skip: bool = False
    # LayerScale: each encoder layer's attention and MLP outputs scaled channel-wise by learned vectors that
    # start at this value, so the stack starts near the identity (CaiT uses 0.1 up to depth 18); 0 = off. 0.1 in
    # spx_lite0_base and spx_lite0_mid; 0.01 and 0.001 start faster and end at the same 62.6 (spx_lite0_base, seed 0)
    layer_scale: float = 0.0
    # stochastic depth: in training each layer's attention and MLP branches are dropped per sample, layer i of L
    # with probability drop_path * i / (L - 1) (none for the first layer, nor for a one-layer stack); 0 = off.
    # 0.2 on spx_lite0_base: 62.8 / 61.5 val mIoU against 62.6 / 61.7 (seeds 0 / 1): off in every config
    # (benchmarks/README.md, stochastic depth and QK-norm)
    drop_path: float = 0.0
    # a LayerNorm on each head's queries and keys before their dot product (bounds the attention logits, which
    # the head learning rate of 1e-3 may otherwise grow); 2 x 2 x D / heads parameters per layer. On spx_lite0_base:
    # 62.6 / 61.6 val mIoU against 62.6 / 61.7 (seeds 0 / 1): off in every config (benchmarks/README.md,
    # stochastic depth and QK-norm)
    qk_norm: bool = False


@dataclass
class LossConfig:
    superpixel_weight: float = 0.5
    # the superpixel cross-entropy averaged over its hardest fraction of the superpixels with labelled mass
    # (OHEM-style, as hard_pixel_fraction for the pixels) instead of all of them; 1.0 = all. Ours only.
    # At 0.1 on spx_lite0_mid: 58.6 / 60.4 val mIoU against 62.3 / 61.9 (road and sidewalk lose most): off in
    # every config (benchmarks/README.md, where spx_lite0_mid loses to its oracle)
    superpixel_hard_fraction: float = 1.0
    # SSN-style label reconstruction through the association (gradient into A*, not detached): pool the
    # one-hot labels into superpixels and project them back; 0 = off. Ours only (peers have no A*).
    reconstruction_weight: float = 0.0
    # pixel loss over the hardest fraction of the labelled pixels of a batch (OHEM-style); 1.0 = all of
    # them. Applies to every architecture, so the peers can be given the same loss.
    hard_pixel_fraction: float = 1.0
    # the reconstruction averaged over its worst-reconstructed fraction of the labelled pixels (the thin
    # structures and boundaries the superpixels cut wrong) instead of all of them; 1.0 = all. Ours only.
    # At 0.1 on spx_lite0_mid its superpixels carry more (oracle 73.7 mIoU against 70.0-70.2, signs 39-41
    # against 18-21) but alone the model does not use it: 63.0 / 61.3 val mIoU against 62.3 / 61.9; with
    # tokenizer.final_pool it does (63.1 / 62.3 / 63.1 against 62.3 / 61.9 / 62.0), and spx_lite0_base and
    # spx_lite0_mid use both; the light variant gains 0.6 on both seeds from it alone and uses it. Off by
    # default (benchmarks/README.md, the reconstruction over its worst pixels; the token that is classified)
    reconstruction_hard_fraction: float = 1.0
    # the superpixel targets and the reconstruction take each stride-s pixel's labels as the class shares of its
    # s x s block of image pixels instead of the label at its centre: thin classes (a pole 1-3 pixels wide at
    # 180x240) keep their share of the targets where the centre sample (1 pixel in 16 at stride 4) keeps a pole
    # in some columns and not others. The pixel loss is at full resolution either way. Ours only. CamVid study:
    # spx_lite0_mid 63.3 / 62.8 val mIoU against 63.1 / 62.3 (seeds 0 / 1, inside the seeds' spread), poles lower;
    # the light variant 59.4 / 59.2 against 59.4 / 59.5: off in every config (benchmarks/README.md, more seeds)
    area_labels: bool = False
    # training-only dense cross-entropy of a 1x1 classifier on the stride-s pixel features (deep supervision,
    # as PSPNet's auxiliary loss): dense per-pixel gradient into the pixel decoder and the backbone, which
    # otherwise learn only through the superpixels. The classifier is not used at inference; 0 = off (and
    # not built). Ours only. CamVid study: faster start, same end (58.9 against 58.8), -1.2 on the light
    # variant: off in every config (benchmarks/README.md, under-fitting)
    aux_pixel_weight: float = 0.0
    # deep supervision of the global transformer (as Mask2Former's per decoder layer): the tokens of each layer
    # but the last go through the final norm, the classifier and the association like the last layer's, and get
    # the pixel and superpixel terms; their mean over those layers, times this weight, joins the loss. Training
    # only, no weights of its own; needs transformer.layers >= 2. 0 = off. Ours only. CamVid study (spx_lite0_base,
    # 1.0): 62.0 / 61.2 val mIoU against 62.6 / 61.7 (seeds 0 / 1), no faster start; the intermediate layers' loss
    # matched the last one's throughout: off in every config (benchmarks/README.md, deep supervision)
    layer_weight: float = 0.0
    # Lovász-softmax (Berman et al., CVPR 2018; segmentation-models-pytorch's) of the pixel predictions, times this
    # weight, added to the pixel loss: a surrogate of each present class's IoU, so a thin class counts as much as the
    # road however few its pixels. Not scaled by class_weights (it averages over classes already). Applies to every
    # architecture, so the peers can be given the same loss; needs segmentation-models-pytorch. Training only, but a
    # sort per class: a CamVid step (batch 8, 180x240, one CPU thread) went from 2.3 to 3.8 s. CamVid study, 1.0
    # added to each config's loss: FPN with hard pixels 63.4 / 62.8 val mIoU against 62.7 / 61.8 (seeds 0 / 1),
    # spx_lite0_base 63.0 / 61.9 against 62.6 / 61.7, spx_lite0_mid 64.3 / 64.0 against 63.6 / 63.6, spx_lite0
    # 60.2 / 60.3 against 59.4 / 59.5. It helps the baseline as much as ours or more, so it is a change of the recipe
    # for every model at once, not ours alone: off in every config and in the study (benchmarks/README.md, the
    # Lovász-softmax loss). 0 = off.
    lovasz_weight: float = 0.0
    # one weight per class for every loss term but the Lovász (pixel, superpixel, reconstruction; the peers'
    # cross-entropy), so rare classes count more; None = all 1. tools/dataset_info.py --class-weights prints ENet's
    # 1 / ln(1.02 + class frequency) for a config's train split, scaled to a pixel-weighted mean of 1
    class_weights: list[float] | None = None
    ignore_index: int = 255


@dataclass
class ModelConfig:
    architecture: str = "spx"  # spx (the superpixel transformer) | fpn | deeplabv3plus (smp peers, same backbone)
    num_classes: int = 19
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_stride: int = 4  # s: stride of the pixel features
    cell: int = 8  # c: superpixel cell size in pixel-feature units
    channels: int = 128  # C: pixel feature width
    fuse_conv: str = "separable"  # pixel decoder's 3x3 conv: separable | full
    # 3x3 conv-BN-ReLU layers at the end of the pixel decoder, each of kind fuse_conv. CamVid study (spx_lite0_mid):
    # a second dense one gave 60.1 against 59.8 / 60.0, within seed noise, for 48 ms at 360x480: 1 in every config
    fuse_layers: int = 1
    # dense 3x3 conv-BN-ReLU on the pixel decoder's top-down sum at each of this many coarsest backbone stages
    # (stride 32, then 16, ...) before it is upsampled, as FPN's per-level 3x3s: context where a dense conv is
    # cheap. 0 = the plain 1x1 sum. CamVid study (spx_lite0_mid): N = 1, +0.5% FLOPs, +0.3 val mIoU on the mean of
    # five seeds (ahead on each), signs +4.0, fence -2.1: 1 in spx_lite0_mid; N = 2, +2.4% FLOPs, four seeds: the
    # same mIoU (62.85 against 62.95), signs +4.0 and poles +0.8, fence -3.8 and pedestrians -4.5. N = 1 cost
    # spx_lite0_base 1.1 / 0.9 (seeds 0 / 1) and the light variant 0.5 (seed 0): 0 in both (benchmarks/README.md,
    # one context conv; more seeds)
    context_convs: int = 0
    # pad the image to a multiple of the backbone's coarsest stride (32) before the backbone, as the smp peers
    # must; false runs the backbone on the image itself (its stage maps are the ceil of size / stride, which the
    # pixel decoder resizes between): 384x480 -> 360x480 is 6% fewer backbone pixels. Ours only. CamVid study
    # (spx_lite0, seed 0): 57.9 val mIoU against 59.4 padded, the same with or without the stage-aligned
    # upsampling: true in every config (benchmarks/README.md, the token that is classified)
    pad_input: bool = True
    # the stride f of the final association, through which the superpixels' classes reach the pixels; 0 = the
    # pixel stride s. A finer f (a power-of-two fraction of s) refines the stride-s association with the
    # backbone's stages at strides f to s/2 (spxseg/models/fine_association.py), so boundaries are those of f x f
    # blocks rather than s x s: CamVid val labels kept per 8x8 block score 70.0 mIoU, per 4x4 block 81.0. Ours
    # only. CamVid study: the light variant at f=4, 59.0 / 59.4 val mIoU against 59.4 / 59.5 (seeds 0 / 1;
    # bicyclists +3.7, signs -3.4), +4.5 ms; spx_lite0_mid at f=2, 64.1 / 62.3 against 63.5 / 62.4 (signs +1.1),
    # +14.6 ms after the backbone (360x480, one thread): off in every config (benchmarks/README.md, a finer
    # projection)
    projection_stride: int = 0
    projection_channels: int = 32  # width of the fine association's pixel features and keys
    # the final association refined after the global transformer: the fine association's prior log A* plus dot
    # products of the pixel features (at the projection stride; projection_channels wide) with keys from the
    # transformer's tokens, which have seen the whole image, rather than from the tokenizer's superpixels. Ours only.
    reassociate: bool = False
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @property
    def association_stride(self) -> int:
        """The stride of the final association and of the outputs: projection_stride, or the pixel stride."""
        return self.projection_stride or self.pixel_stride


# --------------------------------------------------------------------------- data


@dataclass
class SyntheticConfig:
    generate: bool = False  # write the synthetic set to data.root when it is missing
    train: int = 300
    val: int = 50
    size: list[int] = field(default_factory=lambda: [128, 256])  # H, W (the quickstart size)
    seed: int = 0


@dataclass
class CocoConfig:
    train_images: str = "images/train"  # relative to data.root unless absolute
    train_json: str = "annotations/train.json"
    val_images: str = "images/val"
    val_json: str = "annotations/val.json"
    categories: dict[int, int] | None = None  # COCO category id -> class index
    class_names: list[str] | None = None
    background: int = 255  # class index of unannotated pixels (255 = ignore)


@dataclass
class DataConfig:
    dataset: str = "cityscapes"  # cityscapes | ade20k | coco | camvid
    root: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    # training pipeline
    base_size: list[int] = field(default_factory=lambda: [1024, 2048])  # H, W before ratio
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: list[int] = field(default_factory=lambda: [512, 1024])  # H, W
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True
    # normalisation (RGB, 0-255 scale); None = what the backbone's ImageNet weights expect (timm's pretrained
    # config: 127.5 / 127.5 for tf_efficientnet_lite*, the ImageNet statistics for ResNets), filled in by
    # resolve_normalization when a config is loaded
    mean: list[float] | None = None
    std: list[float] | None = None
    # test pipeline: resize so the short side is this many pixels (None = keep size)
    test_short_side: int | None = None
    test_resize_labels: bool = False  # also resize val/test labels (nearest): score at the test resolution
    num_workers: int = 4
    pin_memory: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)

    def __post_init__(self) -> None:
        if self.test_short_side is not None and self.test_short_side < 0:  # -1 for "off" would shrink to 1x1
            raise ConfigError(f"data.test_short_side: expected a number of pixels > 0, or 0 / null to keep each "
                              f"image's size, got {self.test_short_side}")


# --------------------------------------------------------------------------- train / eval


@dataclass
class TrainConfig:
    max_iters: int = 80000
    batch_size: int = 8  # per process
    lr: float = 1e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    poly_power: float = 0.9
    warmup_iters: int = 1500
    grad_clip: float | None = 1.0  # max global grad norm; None disables
    amp: str = "none"  # none | bf16 | fp16
    accum_steps: int = 1
    eval_interval: int = 4000
    checkpoint_interval: int = 4000
    keep_checkpoints: int = 3  # iteration checkpoints kept besides latest/best
    log_interval: int = 50
    seed: int = 0
    deterministic: bool = False
    sync_bn: bool = False
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    channels_last: bool = False


@dataclass
class EvalConfig:
    mode: str = "whole"  # whole | slide
    crop_size: list[int] = field(default_factory=lambda: [1024, 1024])  # slide window H, W
    stride: list[int] = field(default_factory=lambda: [768, 768])
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    batch_size: int = 1
    # feed the model NHWC images: same result, its convolutions run 1.3x faster on CPU (benchmarks/README.md)
    channels_last: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    work_dir: str | None = None


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        detail = f" ({errors[-1]})" if errors and not errors[-1].startswith(f"{key}: expected") else ""
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{detail}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:  # an empty section: the defaults
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = args[:1] or (Any,)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        ktp, vtp = args or (Any, Any)
        if ktp is int:  # keys of a dotted override (data.coco.categories.7=0) arrive as strings
            value = {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v for k, v in value.items()}
        return {_convert(k, ktp, f"{key} key"): _convert(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):  # not "nan" / "inf" spelled out
                return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key_error(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; missing keys keep defaults."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key_error(cls, str(key), prefix)
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


@functools.cache  # one type-hint resolution per (dataclass, key), not one per key of every merged file
def _section_type(cls: type | None, key: str) -> type | None:
    """The dataclass of section ``key`` of ``cls`` (``Config`` -> ``"model"`` -> ``ModelConfig``), None for a value."""
    if cls is None:
        return None
    tp = typing.get_type_hints(cls).get(key)
    return tp if dataclasses.is_dataclass(tp) else None


def _merge(base: dict, child: dict, cls: type | None = Config) -> dict:
    """``child`` over ``base``, both raw config dicts at the level of dataclass ``cls``: sections merge key by key,
    values (a mapping such as ``data.coco.categories`` included) are replaced."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        section = _section_type(cls, key)
        if section is not None and value is None and isinstance(out.get(key), dict):
            continue  # an empty section (every key commented out) keeps the base's
        if section is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, section)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``_base_`` files relative to it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(map(str, _seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    bases = raw.pop("_base_", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, load_yaml(path.parent / base, _seen + (path,)))
    return _merge(merged, raw)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value")
        dotted, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': cannot parse value: {err}") from err
        node, cls = data, Config
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # missing, or an empty section in the file
                node[part] = {}
            node, cls = node[part], _section_type(cls, part)
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        last = parts[-1]
        # a mapping value updates a section like a child config file does, keeping the other keys
        section = _section_type(cls, last)
        if section is not None and isinstance(value, dict) and isinstance(node.get(last), dict):
            value = _merge(node[last], value, section)
        node[last] = value
    return data


def config_from_data(data: dict, overrides: list[str] | None = None) -> Config:
    """A :class:`Config` from a (nested, possibly partial) dict plus dotted overrides, its normalisation resolved:
    what a YAML file, a checkpoint's stored config and a config given with overrides all go through."""
    return resolve_normalization(from_dict(Config, apply_overrides(data, overrides)))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a :class:`Config` from a YAML file (with ``_base_``) plus dotted overrides."""
    data = load_yaml(path) if path is not None else {}
    where = f"{path}: " if path is not None else ""
    try:
        return config_from_data(data, overrides)
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"{where}{err}") from None


def resolve_normalization(cfg: Config) -> Config:
    """Fill ``data.mean`` / ``data.std`` left unset (None) from the backbone's timm pretrained config, in place.

    Called by :func:`load_config`, the trainer and ``Segmenter``, so every pipeline, the resolved
    ``config.yaml`` and the checkpoints hold the values the model was trained with. Also checks the values
    that are set (3 each, std > 0). Imports timm when a value is missing.
    """
    for key in ("mean", "std"):
        values = getattr(cfg.data, key)
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            rule = "3 values > 0" if key == "std" else "3 values"
            raise ConfigError(f"data.{key}: expected {rule} (RGB, 0-255 scale), got {values}")
    if cfg.data.mean is None or cfg.data.std is None:
        from spxseg.models.backbone import input_normalization  # timm: only when a value is missing

        mean, std = input_normalization(cfg.model.backbone.name)
        cfg.data.mean = mean if cfg.data.mean is None else cfg.data.mean
        cfg.data.std = std if cfg.data.std is None else cfg.data.std
    return cfg


def load_tool_config(path: str | Path | None, overrides: list[str] | None = None,
                     checkpoint: str | Path | None = None) -> Config | None:
    """:func:`load_config` for the command-line tools that take ``--config`` and / or ``--checkpoint``.

    Checks that the ``--checkpoint`` (when given) is a file, so every tool reports both mistakes the same
    way, as a ConfigError. Without ``--config`` returns None: the config comes from the checkpoint.
    """
    if path is None and checkpoint is None:
        raise ConfigError("give --config, --checkpoint or both")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    return load_config(path, overrides) if path is not None else None


def _section(cfg: Any, name: str, cls: type) -> Any:
    """Section ``name`` (of dataclass ``cls``) from itself, a whole :class:`Config`, or a (partial) dict of either."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, Config):
        return getattr(cfg, name)
    if isinstance(cfg, dict):
        if name in cfg:
            return getattr(from_dict(Config, cfg), name)
        return from_dict(cls, cfg, prefix=f"{name}.")
    raise TypeError(f"expected {cls.__name__}, Config or dict, got {type(cfg).__name__}")


def model_config(cfg: Any) -> ModelConfig:
    """Accept a :class:`ModelConfig`, a whole :class:`Config`, or a (partial) dict of either."""
    return _section(cfg, "model", ModelConfig)


def data_config(cfg: Any) -> DataConfig:
    """Accept a :class:`DataConfig`, a whole :class:`Config`, or a (partial) dict of either."""
    return _section(cfg, "data", DataConfig)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
