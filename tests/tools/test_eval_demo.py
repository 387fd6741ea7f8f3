"""tools/eval.py (metrics.json, exported predictions == official Cityscapes evaluation), tools/demo.py, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from spxseg.config import from_dict, to_dict

REPO = Path(__file__).resolve().parents[2]
from conftest import FIXTURES  # noqa: E402

REAL_FRAME = FIXTURES / "cityscapes_mini"
STREET = FIXTURES / "images" / "cityscapes_street_1024x512.png"
CITY, FRAME = "frankfurt", "frankfurt_000000_000294"
TINY = {"num_classes": 19, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


# The official pixel-level evaluation as `csEvalPixelLevelSemanticLabeling` runs it (instance scores included).
# cityscapesscripts 2.3.0 calls np.in1d, removed in numpy 2.4 (mcordts/cityscapesScripts PR #196, open):
# alias it to np.isin (same result after the script's reshape) when missing.
OFFICIAL_EVAL = (
    "import numpy as np, runpy\n"
    "if not hasattr(np, 'in1d'): np.in1d = np.isin\n"
    "runpy.run_module('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling', run_name='__main__')\n"
)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a tool as a script from outside the repository (it must find spxseg by itself)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO.parent,
                          env={**os.environ, **(env or {})}, timeout=600)


def _diverse_random_model(model: torch.nn.Module, image_path: Path) -> torch.nn.Module:
    """Random weights, with the classifier re-drawn on whitened superpixel tokens of one image, so that the
    predictions spread over many classes (a plain random init predicts one class everywhere)."""
    from spxseg.data.io import read_image

    img = torch.from_numpy(read_image(image_path)).float()
    x = ((img - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])).permute(2, 0, 1)
    tokens: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(lambda mod, inp, out: tokens.append(inp[0].detach()))
    model.eval()
    with torch.no_grad():
        model(x[None])
        hook.remove()
        t = tokens[0].reshape(-1, tokens[0].shape[-1])
        weight = torch.randn_like(model.classifier.weight) / (t.std(0) + 1e-6) * 3
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(-(weight @ t.mean(0)))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Cityscapes-layout val set (3 synthetic scenes + the real frame, labelIds + instanceIds), config, checkpoint."""
    from spxseg.data import generate_synthetic

    tmp = tmp_path_factory.mktemp("evaldemo")
    root = generate_synthetic(tmp / "cityscapes", train=0, val=3, size=(64, 128), seed=5, progress=False)
    for gt in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):
        os.symlink(gt.name, gt.with_name(gt.name.replace("labelIds", "instanceIds")))
    has_real = REAL_FRAME.is_dir()
    if has_real:  # linked, never copied; labelIds only, as the official evaluation reads
        for sub, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds"),
                            ("gtFine", "gtFine_instanceIds")):
            src = REAL_FRAME / sub / "val" / CITY / f"{FRAME}_{suffix}.png"
            (root / sub / "val" / CITY).mkdir(parents=True, exist_ok=True)
            os.symlink(src, root / sub / "val" / CITY / src.name)
    cfg_dict = {"model": TINY, "data": {"dataset": "cityscapes", "root": str(root), "num_workers": 0},
                "eval": {"batch_size": 2}}
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg_dict))
    torch.manual_seed(0)
    from spxseg.config import Config
    from spxseg.models import build_model

    cfg = from_dict(Config, cfg_dict)
    ckpt = tmp / "tiny.pth"
    model = _diverse_random_model(build_model(cfg.model), sorted(root.glob("leftImg8bit/val/*/*.png"))[0])
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "iteration": 123}, ckpt)
    return {"tmp": tmp, "root": root, "config": str(config), "ckpt": str(ckpt), "has_real": has_real}


@pytest.mark.slow  # subprocess, torchrun or export: tens of seconds
def test_eval_metrics_json_and_official_cityscapes_agreement(setup) -> None:
    tmp = setup["tmp"]
    out, preds = tmp / "eval_out", tmp / "preds"
    proc = _run(str(REPO / "tools" / "eval.py"), "--config", setup["config"], "--checkpoint", setup["ckpt"],
                "--out", str(out), "--save-preds", str(preds), "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "traffic light" in proc.stdout and "mIoU" in proc.stdout and "images/s" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    n_images = 4 if setup["has_real"] else 3
    assert metrics["num_images"] == n_images and metrics["iteration"] == 123 and metrics["images_per_s"] > 0
    assert metrics["config"] == setup["config"] and metrics["checkpoint"] == setup["ckpt"]
    assert len(metrics["per_class"]) == 19 and set(metrics["per_class"]["road"]) == {"IoU", "Acc"}
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU"):
        assert 0.0 <= metrics[key] <= 100.0
    label_ids = sorted((preds / "cityscapes_label_ids").rglob("*.png"))
    assert len(label_ids) == n_images and len(list((preds / "color").rglob("*.png"))) == n_images
    if setup["has_real"]:
        real = preds / "cityscapes_label_ids" / CITY / f"{FRAME}_leftImg8bit.png"
        assert cv2.imread(str(real), cv2.IMREAD_UNCHANGED).shape == (128, 256)  # original resolution

    pytest.importorskip("cityscapesscripts")
    export_dir = tmp / "cs_export"
    export_dir.mkdir()
    official = _run("-c", OFFICIAL_EVAL,
                    env={"CITYSCAPES_DATASET": str(setup["root"]), "CITYSCAPES_EXPORT_DIR": str(export_dir),
                         "CITYSCAPES_RESULTS": str(preds / "cityscapes_label_ids")})
    assert official.returncode == 0, official.stdout[-2000:] + official.stderr[-2000:]
    result = json.loads((export_dir / "resultPixelLevelSemanticLabeling.json").read_text())
    print(f"\ntools/eval.py mIoU {metrics['mIoU']:.4f} vs cityscapesscripts {100 * result['averageScoreClasses']:.4f} "
          f"({metrics['num_classes_evaluated']} classes evaluated)")
    assert metrics["mIoU"] == pytest.approx(100 * result["averageScoreClasses"], abs=0.01)
    for name, row in metrics["per_class"].items():
        theirs = result["classScores"][name]
        assert (row["IoU"] is None) == (theirs != theirs), name  # NaN <-> null
        if row["IoU"] is not None:
            assert row["IoU"] == pytest.approx(100 * theirs, abs=1e-6), name


def test_eval_sliding_window_and_flip_by_opts(setup, capsys, load_tool) -> None:
    tool = load_tool("eval")
    out = setup["tmp"] / "slide"
    rc = tool.main(["--config", setup["config"], "--checkpoint", setup["ckpt"], "--out", str(out), "--device", "cpu",
                    "--no-progress", "--opts", "eval.mode=slide", "eval.crop_size=[64,64]", "eval.stride=[48,48]",
                    "eval.flip=true"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["mode"] == "slide" and metrics["eval"]["flip"] is True


@pytest.mark.slow  # subprocess, torchrun or export: tens of seconds
@pytest.mark.skipif(not STREET.is_file(), reason="street image fixture not found")
def test_demo_on_street_image_with_random_weights(setup) -> None:
    out = setup["tmp"] / "demo"
    proc = _run(str(REPO / "tools" / "demo.py"), "--config", setup["config"], "--input", str(STREET),
                "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr
    stem = STREET.stem
    overlay = cv2.imread(str(out / f"{stem}_overlay.png"))
    bounds = cv2.imread(str(out / f"{stem}_superpixels.png"))
    panel = cv2.imread(str(out / f"{stem}_panel.png"))
    assert overlay.shape == bounds.shape == (512, 1024, 3)
    assert panel.shape[0] > 2 * 512 and panel.shape[1] > 2 * 1024
    yellow = (bounds[..., 0] == 0) & (bounds[..., 1] == 255) & (bounds[..., 2] == 255)  # BGR
    assert 0.02 < yellow.mean() < 0.6  # superpixel boundaries are drawn, not everywhere


def test_demo_folder_with_checkpoint(setup, capsys, load_tool) -> None:
    tool = load_tool("demo")
    out = setup["tmp"] / "demo_dir"
    rc = tool.main(["--config", setup["config"], "--checkpoint", setup["ckpt"], "--device", "cpu",
                    "--input", str(setup["root"] / "leftImg8bit" / "val" / "synthval"), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM" not in captured.err
    assert len(list(out.glob("*_panel.png"))) == 3 and len(list(out.glob("*.png"))) == 9


def test_demo_names_outputs_by_path_and_skips_its_own(setup, tmp_path, capsys, load_tool) -> None:
    tool = load_tool("demo")
    src = tmp_path / "in dir"
    (src / "sub").mkdir(parents=True)
    first = sorted((setup["root"] / "leftImg8bit" / "val" / "synthval").glob("*.png"))[0]
    image = cv2.imread(str(first))
    cv2.imwrite(str(src / "frame.png"), image)
    cv2.imwrite(str(src / "frame.jpg"), image)
    cv2.imwrite(str(src / "sub" / "frame.png"), image[:32, :48])
    out = src / "out"  # inside --input: a second run must not take the first run's outputs as images
    argv = ["--config", setup["config"], "--checkpoint", setup["ckpt"], "--device", "cpu",
            "--input", str(src), "--out", str(out)]
    for _ in range(2):
        assert tool.main(argv) == 0, capsys.readouterr().err
        assert "for 3 image(s)" in capsys.readouterr().out
    panels = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_panel.png"))
    assert panels == ["frame_jpg_panel.png", "frame_png_panel.png", "sub/frame_panel.png"]
    assert cv2.imread(str(out / "sub" / "frame_overlay.png")).shape == (32, 48, 3)
    assert len(list(out.rglob("*.png"))) == 9

    (src / "sub" / "broken.png").write_bytes(b"not a png")  # skipped, said, and the exit status says so
    assert tool.main(argv) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "for 3 image(s); 1 skipped" in captured.out
    only_broken = ["--config", setup["config"], "--checkpoint", setup["ckpt"], "--device", "cpu",
                   "--input", str(src / "sub" / "broken.png"), "--out", str(tmp_path / "o")]
    assert tool.main(only_broken) == 1
    assert "nothing written" in capsys.readouterr().err


def test_eval_reports_a_bad_label_as_an_error(setup, tmp_path, capsys, load_tool) -> None:
    tool = load_tool("eval")
    root = tmp_path / "cityscapes"
    shutil.copytree(setup["root"], root, symlinks=False)
    label = sorted(root.glob("gtFine/val/synthval/*_gtFine_labelIds.png"))[0]
    lab = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 40  # not a Cityscapes label id
    cv2.imwrite(str(label), lab)
    rc = tool.main(["--config", setup["config"], "--checkpoint", setup["ckpt"], "--device", "cpu", "--no-progress",
                    "--out", str(tmp_path / "e"), "--opts", f"data.root={root}"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and label.name in err and "[40]" in err


def test_option_typo_without_config_is_blamed_on_opts(setup, tmp_path, capsys, load_tool) -> None:
    tool = load_tool("eval")
    rc = tool.main(["--checkpoint", setup["ckpt"], "--out", str(tmp_path / "e"), "--opts", "eval.mod=slide"])
    err = capsys.readouterr().err
    assert rc == 2 and "--opts" in err and "eval.mode" in err and "does not match" not in err


def test_clear_errors(setup, tmp_path, capsys, load_tool) -> None:
    eval_tool, demo_tool, onnx_tool = load_tool("eval"), load_tool("demo"), load_tool("export_onnx")
    missing = str(tmp_path / "nope.pth")
    assert eval_tool.main(["--config", setup["config"], "--checkpoint", missing]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert eval_tool.main(["--config", str(tmp_path / "no.yaml"), "--checkpoint", setup["ckpt"]]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert eval_tool.main(["--config", setup["config"], "--checkpoint", setup["ckpt"], "--opts", "eval.mod=slide"]) == 2
    assert "eval.mode" in capsys.readouterr().err  # unknown key, closest valid one named
    assert demo_tool.main(["--config", setup["config"], "--input", str(tmp_path / "x.png"), "--out", "o"]) == 2
    assert "input not found" in capsys.readouterr().err
    assert demo_tool.main(["--config", setup["config"], "--checkpoint", missing, "--input", str(STREET),
                           "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert onnx_tool.main(["--config", setup["config"], "--checkpoint", missing, "--size", "64", "64",
                           "--out", str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(setup["ckpt"]).read_bytes()[:5000])
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    for tool, extra in ((eval_tool, []), (demo_tool, ["--input", str(image), "--out", str(tmp_path / "o")]),
                        (onnx_tool, ["--size", "64", "64", "--out", str(tmp_path / "m.onnx")])):
        assert tool.main(["--config", setup["config"], "--checkpoint", str(truncated), *extra]) == 2
        assert "cannot read checkpoint" in capsys.readouterr().err
