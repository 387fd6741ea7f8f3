"""ONNX export of a model for a fixed input size (:func:`export_onnx`) and a check of an onnxruntime run
against PyTorch (:func:`compare_onnx`). Needs the ``onnx`` extra."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from spxseg.models.factory import has_superpixels


class ExportWrapper(nn.Module):
    """The model with plain tensor outputs for export: ``probs`` (B, K, H, W) float32, ``labels``
    (B, H, W) int64 (argmax) and ``superpixels`` (B, H, W) int64; input ``image`` (B, 3, H, W),
    normalised with the config's mean / std.

    Without ``probs`` the graph is the lean label path (the model's ``predict``): no full-resolution
    probabilities are output, and the association is only computed for ``superpixels``.
    """

    def __init__(self, model: nn.Module, labels: bool = True, superpixels: bool = True, probs: bool = True) -> None:
        super().__init__()
        self.model = model
        self.labels = labels
        # a peer decoder (model.architecture fpn / deeplabv3plus) has no superpixels to export
        self.superpixels = superpixels and has_superpixels(model)
        self.probs = probs
        if not (probs or labels):
            raise ValueError("nothing to export: keep the probabilities or the labels output")

    @property
    def output_names(self) -> list[str]:
        return ((["probs"] if self.probs else []) + (["labels"] if self.labels else [])
                + (["superpixels"] if self.superpixels else []))

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if not self.probs:
            pred = self.model.predict(image, superpixels=self.superpixels)
            return (pred.labels,) + ((pred.superpixels,) if self.superpixels else ())
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
                metadata: dict[str, str] | None = None, probs: bool = True) -> Path:
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
    wrapper = ExportWrapper(copy.deepcopy(model), labels, superpixels, probs).eval().cpu().float()
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

    Returns ``max_abs_diff_probs`` (None when the file has no probabilities), ``labels_agreement``
    (fraction of equal argmax labels), ``superpixels_agreement`` (when exported), and both run times in
    seconds (a second call each, after the first has done the lazy initialisation). ``model`` itself is left as it was.
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
    wrapper = ExportWrapper(copy.deepcopy(model), "labels" in names, "superpixels" in names,
                            "probs" in names).eval().cpu().float()
    with torch.no_grad():
        ref = dict(zip(wrapper.output_names, (t.numpy() for t in wrapper(image))))
        t0 = time.perf_counter()
        wrapper(image)
        t_torch = time.perf_counter() - t0
    diff = float(np.abs(results["probs"] - ref["probs"]).max()) if "probs" in results else None
    report = {"max_abs_diff_probs": diff, "onnxruntime_s": t_ort, "torch_s": t_torch}
    if "labels" in results:
        report["labels_agreement"] = float((results["labels"] == ref["labels"]).mean())
    if "superpixels" in results:
        report["superpixels_agreement"] = float((results["superpixels"] == ref["superpixels"]).mean())
    return report
