"""Prediction export (train-id PNGs, colour PNGs, official benchmark formats) and ONNX model export.

:class:`PredictionWriter` writes, for every prediction (H, W) of train ids at the original
image resolution::

    DIR/train_ids/<name>.png            train ids (uint8, 0..K-1)
    DIR/color/<name>.png                colour visualisation (dataset palette)
    DIR/cityscapes_label_ids/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (Cityscapes only)
    DIR/ade20k_submission/<name>.png    class index + 1, 0 = other        (ADE20K only)

For CamVid, ``train_ids/`` already is the dataset's own label format (class indices 0..10, named
like the input images, as in ``<split>annot/``), so nothing else is written.

The Cityscapes files hold official *label ids* (``road`` = 7, ...), one folder per city, named
after the input image, which is what ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``
and the benchmark server expect: point ``CITYSCAPES_RESULTS`` at ``DIR/cityscapes_label_ids``
(not at ``DIR``: the other folders hold files with the same names and would be found twice).
Note: cityscapesscripts 2.3.0's script calls ``np.in1d``, which numpy 2.4 removed; with numpy >= 2.4
alias it first (``np.in1d = np.isin``, see tests/tools/test_eval_demo.py) or use numpy < 2.4.

:func:`export_onnx` writes the model as ONNX for a fixed input size and :func:`compare_onnx` checks
an onnxruntime run against PyTorch.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from spxseg.data.io import write_png
from spxseg.engine.visualize import Color, colorize

# Official cityscapesScripts labels.py: train id -> label id for the 19 evaluated classes
CITYSCAPES_TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_IMG_SUFFIX = "_leftImg8bit"
CITYSCAPES_DIR = "cityscapes_label_ids"


def train_ids_to_label_ids(pred: np.ndarray, void_id: int = 0) -> np.ndarray:
    """Cityscapes train ids (H, W) -> official label ids (H, W) uint8; ids outside 0..18 -> ``void_id``."""
    lut = np.full(256, void_id, np.uint8)
    lut[: len(CITYSCAPES_TRAIN_ID_TO_LABEL_ID)] = CITYSCAPES_TRAIN_ID_TO_LABEL_ID
    return lut[np.asarray(pred).astype(np.uint8)]


def cityscapes_result_name(image_path: str | Path) -> tuple[str, str]:
    """``(city, file name)`` of the result for a Cityscapes image, e.g.
    ``.../frankfurt/frankfurt_000000_000294_leftImg8bit.png`` -> ``("frankfurt",
    "frankfurt_000000_000294_leftImg8bit.png")``. The name must start with ``<city>_<seq>_<frame>``,
    which is how ``cityscapesscripts`` pairs results with ground truth."""
    path = Path(image_path)
    stem = path.stem
    parts = stem.split("_")
    if len(parts) < 3:
        raise ValueError(
            f"{path.name} is not a Cityscapes file name (<city>_<sequence>_<frame>_leftImg8bit.png); "
            "the official evaluation cannot pair it with its ground truth"
        )
    city = parts[0]
    if not stem.endswith(CITYSCAPES_IMG_SUFFIX):
        stem = "_".join(parts[:3]) + CITYSCAPES_IMG_SUFFIX
    return city, stem + ".png"


class PredictionWriter:
    """Writes predictions of one dataset in the layouts above.

    Args:
        out_dir: output root ``DIR``.
        palette: colours of the train ids, for ``color/``.
        dataset: ``cityscapes`` adds ``cityscapes_label_ids/``, ``ade20k`` adds ``ade20k_submission/``
            (for ``camvid`` ``train_ids/`` is the dataset's label format already).
        color: also write the colour PNGs.
    """

    def __init__(self, out_dir: str | Path, palette: Sequence[Color], dataset: str = "", color: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.palette = list(palette)
        self.dataset = dataset.lower()
        self.color = color
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._names: set[str] = set()

    @property
    def cityscapes_dir(self) -> Path:
        return self.out_dir / CITYSCAPES_DIR

    def _relative_name(self, image_path: Path) -> str:
        if self.dataset == "cityscapes":
            return f"{image_path.parent.name}/{image_path.stem}"
        return image_path.stem

    def write(self, pred: np.ndarray, image_path: str | Path) -> list[Path]:
        """Write the (H, W) train-id prediction of the image at ``image_path``; returns the files written."""
        pred = np.asarray(pred)
        if pred.ndim != 2:
            raise ValueError(f"prediction must be (H, W), got shape {pred.shape}")
        if pred.max(initial=0) > 255 or pred.min(initial=0) < 0:
            raise ValueError("prediction ids must fit in uint8 (0..255)")
        pred = pred.astype(np.uint8)
        image_path = Path(image_path)
        name = self._relative_name(image_path)
        if name in self._names:
            raise ValueError(f"two predictions for images named {name!r}; file names must be unique")
        self._names.add(name)
        files = [write_png(self.out_dir / "train_ids" / f"{name}.png", pred, rgb=False)]
        if self.color:
            files.append(write_png(self.out_dir / "color" / f"{name}.png", colorize(pred, self.palette), rgb=True))
        if self.dataset == "cityscapes":
            city, fname = cityscapes_result_name(image_path)
            files.append(write_png(self.cityscapes_dir / city / fname, train_ids_to_label_ids(pred), rgb=False))
        elif self.dataset == "ade20k":
            files.append(write_png(self.out_dir / "ade20k_submission" / f"{name}.png",
                                   np.where(pred == 255, 0, pred.astype(np.int32) + 1).astype(np.uint8), rgb=False))
        self.count += 1
        return files

    def __call__(self, pred: np.ndarray, item: dict) -> None:
        """Callback for :func:`spxseg.engine.inference.evaluate` (``on_prediction``)."""
        self.write(pred, item["path"])

    def summary(self) -> str:
        text = f"wrote {self.count} predictions to {self.out_dir} (train_ids/" + (", color/" if self.color else "")
        if self.dataset == "cityscapes":
            text += f", {CITYSCAPES_DIR}/): official evaluation: CITYSCAPES_DATASET=<root> " \
                    f"CITYSCAPES_RESULTS={self.cityscapes_dir} csEvalPixelLevelSemanticLabeling"
        elif self.dataset == "ade20k":
            text += ", ade20k_submission/)"
        elif self.dataset == "camvid":
            text += "): train_ids/ are CamVid label PNGs (class indices 0..10, named like <split>annot/)"
        else:
            text += ")"
        return text


# --------------------------------------------------------------------------- ONNX model export


class ExportWrapper(nn.Module):
    """The model with plain tensor outputs for export: ``probs`` (B, K, H, W) float32, ``labels``
    (B, H, W) int64 (argmax) and ``superpixels`` (B, H, W) int64; input ``image`` (B, 3, H, W),
    normalised with the config's mean / std."""

    def __init__(self, model: nn.Module, labels: bool = True, superpixels: bool = True) -> None:
        super().__init__()
        self.model = model
        self.labels = labels
        self.superpixels = superpixels

    @property
    def output_names(self) -> list[str]:
        return ["probs"] + (["labels"] if self.labels else []) + (["superpixels"] if self.superpixels else [])

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image)
        probs = out.probs.float()
        outputs = [probs]
        if self.labels:
            outputs.append(probs.argmax(1))
        if self.superpixels:
            outputs.append(out.superpixels)
        return tuple(outputs)


def export_onnx(model: nn.Module, size: Sequence[int], path: str | Path, opset: int = 18, batch: int = 1,
                labels: bool = True, superpixels: bool = True, optimize: bool = True,
                metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (eval mode, fp32, CPU) to ONNX for images of a fixed ``size`` (H, W).

    Uses the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, needs the
    ``onnx`` and ``onnxscript`` packages). Input ``image`` (batch, 3, H, W); outputs as
    :class:`ExportWrapper`. ``metadata`` goes into the model's ``metadata_props`` (e.g. mean, std,
    class names). Returns ``path``.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or newer")
    try:
        import onnx
        import onnxscript  # noqa: F401 - required by the exporter
    except ImportError as err:
        raise ImportError(f"ONNX export needs the onnx and onnxscript packages ({err}); "
                          "pip install onnx onnxscript onnxruntime (or pip install spxseg[onnx])") from None
    h, w = int(size[0]), int(size[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a copy: the caller's model keeps its device, dtype and training mode
    wrapper = ExportWrapper(copy.deepcopy(model), labels, superpixels).eval().cpu().float()
    example = torch.zeros(batch, 3, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), opset_version=opset, dynamo=True, optimize=optimize,
                          input_names=["image"], output_names=wrapper.output_names, external_data=False,
                          verbose=False)
    proto = onnx.load(str(path))
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)
    return path


def compare_onnx(path: str | Path, model: nn.Module, image: Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and the PyTorch model on ``image`` (B, 3, H, W).

    Returns ``max_abs_diff_probs``, ``labels_agreement`` (fraction of equal argmax labels),
    ``superpixels_agreement`` (when exported), and both run times in seconds (a second call each,
    after the first has done the lazy initialisation). ``model`` itself is left as it was.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("comparing with onnxruntime needs the onnxruntime package: pip install onnxruntime") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(None, {"image": image.numpy()})))
    t0 = time.perf_counter()
    session.run(None, {"image": image.numpy()})
    t_ort = time.perf_counter() - t0
    wrapper = ExportWrapper(copy.deepcopy(model), "labels" in names, "superpixels" in names).eval().cpu().float()
    with torch.no_grad():
        ref = dict(zip(wrapper.output_names, (t.numpy() for t in wrapper(image))))
        t0 = time.perf_counter()
        wrapper(image)
        t_torch = time.perf_counter() - t0
    report = {"max_abs_diff_probs": float(np.abs(results["probs"] - ref["probs"]).max()),
              "onnxruntime_s": t_ort, "torch_s": t_torch}
    if "labels" in results:
        report["labels_agreement"] = float((results["labels"] == ref["labels"]).mean())
    if "superpixels" in results:
        report["superpixels_agreement"] = float((results["superpixels"] == ref["superpixels"]).mean())
    return report
