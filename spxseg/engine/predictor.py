"""Python inference API: :class:`Segmenter` turns numpy images into label maps and superpixel maps.

Example::

    from spxseg import Segmenter
    seg = Segmenter.from_checkpoint("work_dirs/cityscapes/spx_r50/checkpoints/best.pth")  # or model.safetensors
    labels = seg.predict(cv2.imread("street.png"))             # (H, W) uint8 train ids, BGR input
    labels, superpixels = seg.predict_with_superpixels(rgb_image, rgb=True)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from spxseg.config import Config, resolve_normalization
from spxseg.data.io import read_image
from spxseg.data.transforms import mean_std, preprocess_image
from spxseg.engine.checkpoint import load_trained_model
from spxseg.engine.distributed import resolve_device
from spxseg.engine.inference import infer_batch, infer_labels, infer_probs, model_input, single_view
from spxseg.engine.precision import autocast_context
from spxseg.engine.visualize import Color, default_palette
from spxseg.models import build_model
from spxseg.models.factory import has_superpixels


def class_info(cfg: Config, num_classes: int | None = None) -> tuple[list[str], list[Color]]:
    """Class names and palette for ``cfg.data.dataset`` without reading the dataset from disk."""
    k = num_classes if num_classes is not None else cfg.model.num_classes
    names: list[str] | None = None
    palette: list[Color] | None = None
    dataset = cfg.data.dataset.lower()
    from spxseg.data.builder import dataset_class

    try:
        cls = dataset_class(dataset)
    except ValueError:  # not a registered dataset: numbered classes, default palette
        cls = None
    if cls is not None and cls.class_names:
        names, palette = list(cls.class_names), [tuple(c) for c in cls.palette]
    if dataset == "coco" and cfg.data.coco.class_names:
        names = list(cfg.data.coco.class_names)
    if names is None or len(names) != k:
        names = [str(i) for i in range(k)]
    if palette is None or len(palette) < k:
        palette = default_palette(k)
    return names, palette  # type: ignore[return-value]


class Segmenter:
    """Semantic segmentation of numpy images with a trained model (ours, or a peer decoder of ``model.architecture``).

    Inference follows ``cfg.eval`` (whole / slide, flip, scales) and ``cfg.data`` (mean / std,
    ``test_short_side``); predictions are returned at the input image's resolution.

    Args:
        model: the model (moved to ``device`` and set to eval mode).
        cfg: the whole config.
        device: default CUDA when available, else CPU.
        amp: autocast for inference: none | bf16 | fp16.
    """

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device | str | None = None,
                 amp: str = "none") -> None:
        self.device = resolve_device("auto" if device is None else str(device))
        self.model = model.to(self.device).eval()
        self.cfg = resolve_normalization(copy.deepcopy(cfg))  # data.mean / std unset: the backbone's
        self.amp = amp
        self.class_names, self.palette = class_info(cfg)
        self.superpixels: np.ndarray | None = None  # superpixel map (H, W) of the last prediction

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str | None = None,
                        cfg: Config | None = None, amp: str = "none", overrides: list[str] | None = None
                        ) -> Segmenter:
        """Build the model from the config the checkpoint was trained with (or ``cfg``) and load its weights.

        ``path`` is a training checkpoint (``.pth``, its config stored inside) or a ``model.safetensors``
        weights file (its config the ``config.yaml`` next to it); ``overrides`` (``"eval.flip=true"``, ...)
        apply to that config, or to ``cfg`` when given. A file that would need more than tensors and plain data
        to load is refused (``ValueError`` naming it) without running anything.
        """
        model, cfg, _ = load_trained_model(path, cfg, overrides)
        return cls(model, cfg, device=device, amp=amp)

    @classmethod
    def from_config(cls, cfg: Config, checkpoint: str | Path | None = None,
                    device: torch.device | str | None = None, amp: str = "none") -> Segmenter:
        """Model from ``cfg``; weights from ``checkpoint`` when given, else random (warns)."""
        if checkpoint is not None:
            model = load_trained_model(checkpoint, cfg)[0]
        else:
            model = build_model(cfg.model)
            warnings.warn("Segmenter built without a checkpoint: the model has RANDOM weights", stacklevel=2)
        return cls(model, cfg, device=device, amp=amp)

    @property
    def has_superpixels(self) -> bool:
        """Whether the model is ours (:meth:`predict_with_superpixels` works), not a peer decoder."""
        return has_superpixels(self.model)

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    # ------------------------------------------------------------------ preprocessing

    def preprocess(self, image: np.ndarray | str | Path, rgb: bool = False) -> tuple[Tensor, tuple[int, int]]:
        """Image (H, W, 3) uint8 BGR (OpenCV order; RGB when ``rgb``; a 4th channel, alpha, is dropped), grey
        (H, W) / (H, W, 1) / grey and alpha (H, W, 2), or a file path -> normalised (1, 3, h, w) tensor on the
        device, and the original size (H, W)."""
        if isinstance(image, (str, Path)):  # read as the datasets read it (EXIF orientation ignored)
            if not Path(image).is_file():
                raise FileNotFoundError(f"cannot read image {image}")
            image, rgb = read_image(image), True
        image = np.asarray(image)
        if image.dtype != np.uint8:  # the normalisation's mean / std are on the 0-255 scale of 8-bit pixels
            hint = ("(img / 257).astype(np.uint8) for full-range 16-bit pixels" if image.dtype == np.uint16 else
                    "(img * 255).round().astype(np.uint8) for floats in [0, 1]")
            raise ValueError(f"expected 8-bit pixels (uint8, 0-255), got {image.dtype}: convert first, e.g. {hint}")
        if image.ndim == 3 and image.shape[2] in (1, 2):  # grey, or grey and alpha
            image = image[..., 0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an image (H, W, 3), (H, W, 4) or (H, W), got shape {image.shape}")
        image = image[..., :3]
        if not rgb:
            image = image[..., ::-1]
        x = preprocess_image(image, *mean_std(self.cfg.data), short_side=self.cfg.data.test_short_side)
        return x.unsqueeze(0).to(self.device), image.shape[:2]

    # ------------------------------------------------------------------ prediction

    @torch.inference_mode()
    def predict_probs(self, image: np.ndarray | str | Path, rgb: bool = False) -> Tensor:
        """Class probabilities (K, H, W) at the input resolution (float32, on the device)."""
        x, size = self.preprocess(image, rgb)
        with autocast_context(self.device, self.amp):
            return infer_probs(self.model, x, self.cfg.eval, out_size=size)[0]

    @torch.inference_mode()
    def predict(self, image: np.ndarray | str | Path, rgb: bool = False) -> np.ndarray:
        """Label map (H, W) uint8 of train ids (``class_names[i]``; uint16 past 256 classes) at the input
        resolution (the lean path of :func:`~spxseg.engine.inference.infer_labels`: no full-resolution
        probabilities are written)."""
        x, size = self.preprocess(image, rgb)
        with autocast_context(self.device, self.amp):
            labels = infer_labels(self.model, x, self.cfg.eval, out_size=size)[0]
        return self._label_array(labels)

    @torch.inference_mode()
    def predict_with_superpixels(self, image: np.ndarray | str | Path, rgb: bool = False
                                 ) -> tuple[np.ndarray, np.ndarray]:
        """Label map (H, W) uint8 and superpixel map (H, W) int32 (row-major grid ids) at the input size.

        The superpixels come from a single whole-image forward pass (no TTA); also stored in
        :attr:`superpixels`.
        """
        if not self.has_superpixels:
            raise ValueError(f"model.architecture={self.cfg.model.architecture!r} has no superpixels: use predict()")
        x, size = self.preprocess(image, rgb)
        ev = self.cfg.eval
        with autocast_context(self.device, self.amp):
            pred = self.model.predict(model_input(x, ev.channels_last), superpixels=True, size=size)
            labels = pred.labels if single_view(ev) else infer_labels(self.model, x, ev, out_size=size)
        self.superpixels = pred.superpixels[0].to(torch.int32).cpu().numpy()
        return self._label_array(labels[0]), self.superpixels

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray], rgb: bool = False) -> list[np.ndarray]:
        """Label maps (H_i, W_i) uint8 for a list of images of any sizes (same-size images share a
        forward pass, up to ``cfg.eval.batch_size``)."""
        prepared = [self.preprocess(img, rgb) for img in images]
        labels = infer_batch(self.model, [x[0] for x, _ in prepared], self.cfg.eval,
                             [size for _, size in prepared], self.device, self.amp, labels=True)
        return [self._label_array(pred) for pred in labels]

    def _label_array(self, labels: Tensor) -> np.ndarray:
        """Class ids as numpy: uint8 up to 256 classes (what PNG label maps hold), uint16 past that."""
        return labels.cpu().numpy().astype(np.uint8 if self.num_classes <= 256 else np.uint16)

    def __repr__(self) -> str:
        m = self.cfg.model
        return (f"Segmenter(backbone={m.backbone.name}, classes={m.num_classes}, dataset={self.cfg.data.dataset}, "
                f"eval={self.cfg.eval.mode}, device={self.device})")
