"""Model export: torch.export (small size) and ONNX vs onnxruntime at 512x1024 (the one slow test here)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import yaml

from spxseg.engine.onnx_export import ExportWrapper, export_onnx
from spxseg.models import build_model

TINY = {"num_classes": 19, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


@pytest.mark.slow  # subprocess, torchrun or export: tens of seconds
def test_torch_export_succeeds() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 64, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (x,))  # the bare model, SegOutput and all
    out = program.module()(x)
    with torch.no_grad():
        ref = model(x)
    for name in ("probs", "sp_logits", "assoc"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=0, atol=1e-5)
    assert torch.equal(out.superpixels, ref.superpixels)
    assert [o.shape for o in ExportWrapper(model)(x)] == [(1, 19, 64, 96), (1, 64, 96), (1, 64, 96)]


@pytest.mark.slow
@pytest.mark.parametrize("option", [{"projection_stride": 2},
                                    {"transformer": {**TINY["transformer"], "backbone_skip": True}}])
def test_onnx_export_with_a_finer_projection_or_the_backbone_skip(tmp_path, option) -> None:
    """model.projection_stride: the fine association (stride 2 here) exports; model.transformer.backbone_skip: the
    grid sampling of the backbone's stages exports; onnxruntime agrees."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from spxseg.engine.onnx_export import compare_onnx

    torch.manual_seed(0)
    model = build_model({**TINY, **option}).eval()
    x = torch.randn(1, 3, 64, 96)
    path = export_onnx(model, (64, 96), tmp_path / "option.onnx", optimize=False)
    report = compare_onnx(path, model, x)
    assert report["max_abs_diff_probs"] < 1e-4
    assert report["labels_agreement"] > 0.999 and report["superpixels_agreement"] > 0.999


@pytest.mark.slow
def test_lean_onnx_graph_has_labels_and_no_probabilities(tmp_path) -> None:
    """export_onnx(probs=False): the graph of predict (labels, superpixels), equal to PyTorch's outputs."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import onnx

    from spxseg.engine.onnx_export import compare_onnx

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    wrapper = ExportWrapper(model, probs=False)
    assert wrapper.output_names == ["labels", "superpixels"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        labels, superpixels = wrapper(x)
        ref = model(x)
    assert torch.equal(labels, ref.probs.argmax(1)) and torch.equal(superpixels, ref.superpixels)
    path = export_onnx(model, (64, 96), tmp_path / "lean.onnx", probs=False, optimize=False)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["labels", "superpixels"]
    report = compare_onnx(path, model, x)
    assert report["max_abs_diff_probs"] is None
    assert report["labels_agreement"] > 0.999 and report["superpixels_agreement"] > 0.999
    with pytest.raises(ValueError, match="nothing to export"):
        ExportWrapper(model, labels=False, probs=False)


def test_export_onnx_rejects_old_opset(tmp_path) -> None:
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(torch.nn.Identity(), (64, 64), tmp_path / "m.onnx", opset=16)


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_at_512x1024(tmp_path, capsys, load_tool) -> None:
    """SLOW (~1 min on 2 CPU cores): one export + one run at 512x1024 fp32 through tools/export_onnx.py."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    # scored at a short side of 256: an export at 512x1024 says that it is not the scored resolution
    cfg = {"model": {"num_classes": 19, "backbone": {"name": "resnet18"}},
           "data": {"dataset": "cityscapes", "test_short_side": 256}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"model": build_model(cfg["model"]).state_dict(), "config": cfg}, tmp_path / "model.pth")
    tool = load_tool("export_onnx")
    rc = tool.main(["--config", str(tmp_path / "cfg.yaml"), "--checkpoint", str(tmp_path / "model.pth"),
                    "--size", "512", "1024", "--out", str(tmp_path / "model.onnx"), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, printed
    assert "short side of 256 px" in captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    print(f"\nONNX 512x1024: max abs diff {report['max_abs_diff_probs']:.3g}, labels agree "
          f"{report['labels_agreement']:.6f}, export {report['export_s']:.1f} s, ort {report['onnxruntime_s']:.2f} s, "
          f"torch {report['torch_s']:.2f} s")
    assert report["max_abs_diff_probs"] <= 1e-4
    assert report["labels_agreement"] > 0.999 and report["superpixels_agreement"] > 0.999
    assert "onnx.checker: OK" in printed and "max abs diff" in printed

    import onnx

    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"])[0] == "road" and json.loads(meta["input_size"]) == [512, 1024]
    assert json.loads(meta["test_short_side"]) == 256
    assert [o.name for o in proto.graph.output] == ["probs", "labels", "superpixels"]
