"""Joint image / label transforms with OpenCV on numpy arrays.

Images are RGB uint8 ``(H, W, 3)`` until :func:`normalize`, labels are uint8 ``(H, W)`` train
ids with 255 = ignore. Every random choice draws from an explicit ``np.random.Generator``
so a pipeline is reproducible given its generator. Labels are only ever resized with
nearest neighbour (``cv2.INTER_NEAREST_EXACT``: the pixel-centre convention that matches
the bilinear image resize, so image and label stay aligned), so they never acquire values
that were not in the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

IGNORE = 255
LABEL_INTERP = cv2.INTER_NEAREST_EXACT


def resize(
    image: np.ndarray, label: np.ndarray | None, size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize image (bilinear) and label (nearest) to ``size_hw`` = (H, W)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if label is not None:
            label = cv2.resize(label, (w, h), interpolation=LABEL_INTERP)
    return image, label


def rescale_size(hw: tuple[int, int], scale_hw: Sequence[float]) -> tuple[int, int]:
    """Size of ``hw`` rescaled, keeping the aspect ratio, to fit inside ``scale_hw``.

    Like mmcv's ``rescale_size(keep_ratio=True)``: the long side is bounded by the long side
    of the scale and the short side by its short side.
    """
    h, w = hw
    long_t, short_t = max(scale_hw), min(scale_hw)
    factor = min(long_t / max(h, w), short_t / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def random_resize(
    image: np.ndarray,
    label: np.ndarray,
    base_size: Sequence[int],
    ratio_range: Sequence[float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomResize(scale=base_size, ratio_range, keep_ratio=True)``.

    A ratio r is drawn uniformly from ``ratio_range``; the image is rescaled, keeping its
    aspect ratio, to fit inside ``base_size * r`` (H, W).
    """
    lo, hi = float(ratio_range[0]), float(ratio_range[1])
    ratio = rng.uniform(lo, hi) if hi > lo else lo
    target = (base_size[0] * ratio, base_size[1] * ratio)
    return resize(image, label, rescale_size(image.shape[:2], target))


def crop_box(
    label: np.ndarray,
    crop_hw: Sequence[int],
    cat_max_ratio: float,
    rng: np.random.Generator,
    max_tries: int = 10,
    ignore: int = IGNORE,
) -> tuple[int, int, int, int]:
    """Pick a crop ``(y0, y1, x0, x1)`` in which no class covers ``cat_max_ratio`` or more.

    Ignore pixels are not counted. As in mmseg, a crop needs at least two classes and is
    re-drawn up to ``max_tries`` times; if none qualifies the least dominated crop drawn is
    used (mmseg keeps the last one). ``cat_max_ratio >= 1`` disables the check.
    """
    h, w = label.shape[:2]
    ch, cw = min(int(crop_hw[0]), h), min(int(crop_hw[1]), w)

    def draw() -> tuple[int, int, int, int]:
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        return y0, y0 + ch, x0, x0 + cw

    box = draw()
    if cat_max_ratio >= 1.0:
        return box
    best, best_ratio = box, 2.0
    for attempt in range(max_tries):
        if attempt:
            box = draw()
        cnt = np.bincount(label[box[0] : box[1], box[2] : box[3]].ravel(), minlength=256)
        cnt[ignore] = 0
        cnt = cnt[cnt > 0]
        ratio = cnt.max() / cnt.sum() if cnt.size > 1 else 1.0
        if ratio < cat_max_ratio:
            return box
        if ratio < best_ratio:
            best, best_ratio = box, ratio
    return best


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop_hw: Sequence[int],
    cat_max_ratio: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Random crop of at most ``crop_hw`` honouring ``cat_max_ratio`` (see :func:`crop_box`)."""
    y0, y1, x0, x1 = crop_box(label, crop_hw, cat_max_ratio, rng)
    return image[y0:y1, x0:x1], label[y0:y1, x0:x1]


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of both with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion``: brightness, contrast, saturation, hue, each with p=0.5.

    Contrast is applied either before or after the HSV steps (p=0.5). Returns float32
    RGB in [0, 255]. ``hue_delta`` is in OpenCV's 8-bit hue units (180 = full turn).
    """
    img = image.astype(np.float32)
    if rng.integers(2):
        img += rng.uniform(-brightness_delta, brightness_delta)
        np.clip(img, 0, 255, out=img)
    contrast_first = bool(rng.integers(2))

    def contrast(x: np.ndarray) -> np.ndarray:
        if rng.integers(2):
            x *= rng.uniform(*contrast_range)
            np.clip(x, 0, 255, out=x)
        return x

    if contrast_first:
        img = contrast(img)
    do_sat, do_hue = bool(rng.integers(2)), bool(rng.integers(2))
    sat = rng.uniform(*saturation_range) if do_sat else 1.0
    hue = float(rng.integers(-hue_delta, hue_delta + 1)) * 2.0 if do_hue else 0.0  # degrees
    if do_sat or do_hue:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float: H in [0, 360), S in [0, 1], V as input
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0.0, 1.0)
        if do_hue:
            hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        np.clip(img, 0, 255, out=img)
    if not contrast_first:
        img = contrast(img)
    return img


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) RGB on the 0-255 scale -> float32 tensor (3, H, W), ``(x - mean) / std``."""
    out = np.empty((3, *image.shape[:2]), np.float32)
    for c in range(3):  # per channel: writes straight into the (3, H, W) layout, no transpose copy
        np.subtract(image[..., c], np.float32(mean[c]), out=out[c], dtype=np.float32)
        out[c] *= np.float32(1.0 / std[c])
    return torch.from_numpy(out)


def pad_to(
    image: torch.Tensor, label: torch.Tensor, size_hw: Sequence[int], ignore: int = IGNORE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (3, h, w) image with 0 (i.e. the mean after normalisation) and label with ``ignore``
    at the bottom / right up to ``size_hw``."""
    h, w = image.shape[-2:]
    ph, pw = max(0, int(size_hw[0]) - h), max(0, int(size_hw[1]) - w)
    if ph or pw:
        image = torch.nn.functional.pad(image, (0, pw, 0, ph), value=0.0)
        label = torch.nn.functional.pad(label, (0, pw, 0, ph), value=ignore)
    return image, label


# a bare DataConfig with data.mean / std unset (None) normalises like timm's ImageNet default; configs that
# are loaded (load_config) or trained (train) hold the backbone's own values (spxseg.config.resolve_normalization)
IMAGENET_MEAN_255, IMAGENET_STD_255 = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def mean_std(cfg) -> tuple[list[float], list[float]]:
    """(mean, std) on the 0-255 scale of a DataConfig: its own, or the ImageNet default where unset."""
    mean = IMAGENET_MEAN_255 if cfg.mean is None else cfg.mean
    std = IMAGENET_STD_255 if cfg.std is None else cfg.std
    return list(mean), list(std)


def label_tensor(label: np.ndarray) -> torch.Tensor:
    """(H, W) label -> int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


class TrainPipeline:
    """Random resize -> random crop (cat_max_ratio) -> flip -> photometric -> normalise -> pad.

    Built from a :class:`~spxseg.config.DataConfig`; ``__call__(image, label, rng)`` returns
    ``{"image": (3, ch, cw) float32, "label": (ch, cw) int64}``.
    """

    def __init__(self, cfg) -> None:
        self.base_size = tuple(cfg.base_size)
        self.scale_range = tuple(cfg.scale_range)
        self.crop_size = tuple(cfg.crop_size)
        self.cat_max_ratio = float(cfg.cat_max_ratio)
        self.flip = bool(cfg.flip)
        self.photometric = bool(cfg.photometric)
        self.mean, self.std = mean_std(cfg)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> dict:
        image, label = random_resize(image, label, self.base_size, self.scale_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, rng)
        if self.flip:
            image, label = random_flip(image, label, rng)
        img = photometric_distortion(image, rng) if self.photometric else image
        img_t, lab_t = pad_to(normalize(img, self.mean, self.std), label_tensor(label), self.crop_size)
        return {"image": img_t, "label": lab_t}


def short_side_size(hw: Sequence[int], short_side: int | None) -> tuple[int, int]:
    """(H, W) rescaled so that its short side is ``short_side`` (aspect ratio kept, rounded to the
    nearest pixel); unchanged when ``short_side`` is 0 / None."""
    h, w = int(hw[0]), int(hw[1])
    if not short_side:
        return h, w
    f = float(short_side) / min(h, w)
    return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))


def preprocess_image(
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    short_side: int | None = None,
    size_hw: Sequence[int] | None = None,
) -> torch.Tensor:
    """Test-time preprocessing of one image, the same for the datasets (:class:`EvalPipeline`),
    :class:`~spxseg.engine.predictor.Segmenter` and the latency profiler's end-to-end path.

    RGB (H, W, 3) on the 0-255 scale (as :func:`~spxseg.data.io.read_image` returns it) -> float32
    tensor (3, h, w): resized (bilinear) to ``size_hw`` = (h, w) when given, else so that the short
    side is ``short_side`` (:func:`short_side_size`; no resize when it is 0 / None), then
    normalised ``(x - mean) / std`` (:func:`normalize`).
    """
    size = short_side_size(image.shape[:2], short_side) if size_hw is None else (int(size_hw[0]), int(size_hw[1]))
    image, _ = resize(np.ascontiguousarray(image), None, size)
    return normalize(image, mean, std)


class EvalPipeline:
    """Optional resize (short side = ``test_short_side``) -> normalise (:func:`preprocess_image`); label at
    original size, or resized with the image (nearest) when ``test_resize_labels`` (scoring at the test
    resolution).

    ``__call__(image, label)`` returns ``{"image": (3, h, w) float32, "label": (H, W) int64,
    "orig_size": (H, W)}`` (the label's size: predictions are resized to it).
    """

    def __init__(self, cfg) -> None:
        self.short_side = cfg.test_short_side
        self.resize_labels = bool(getattr(cfg, "test_resize_labels", False))
        self.mean, self.std = mean_std(cfg)

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator | None = None
    ) -> dict:
        h, w = image.shape[:2]
        size = short_side_size((h, w), self.short_side)
        if self.resize_labels:
            if label is not None and (h, w) != size:
                label = cv2.resize(label, (size[1], size[0]), interpolation=LABEL_INTERP)
            h, w = size
        if label is None:
            label = np.full((h, w), IGNORE, np.uint8)
        return {
            "image": preprocess_image(image, self.mean, self.std, size_hw=size),
            "label": label_tensor(label),
            "orig_size": (h, w),
        }
