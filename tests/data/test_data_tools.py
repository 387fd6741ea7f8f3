"""tools/dataset_info.py: images per split and the class pixel histogram (run in-process)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest


def test_dataset_info_generates_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool) -> None:
    root = tmp_path / "syn"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data:\n  dataset: cityscapes\n  root: " + str(root) + "\n"
        "  synthetic: {generate: true, train: 3, val: 2, size: [48, 96], seed: 0}\n"
    )
    load_tool("dataset_info").main(["--config", str(cfg), "--opts", "data.synthetic.seed=1"])
    out = capsys.readouterr().out
    assert "train: 3 images" in out and "val: 2 images" in out
    rows = [ln for ln in out.splitlines() if re.match(r"^\s*\d+  ", ln)]
    assert len(rows) == 20  # 19 classes + ignore
    assert any("road" in r for r in rows) and any("traffic sign" in r for r in rows)
    assert all(r.count("%") == 2 for r in rows)  # one column per split
    train_pct = [float(re.findall(r"([\d.]+)%", r)[0]) for r in rows]
    assert abs(sum(train_pct) - 100.0) < 0.1
    assert (root / "synthetic.json").is_file()


def test_dataset_info_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: cityscapes, root: {tmp_path / 'nothing'}}}\n")
    code = load_tool("dataset_info").main(["--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 1 and "unavailable" in out and "leftImg8bit" in out


def test_dataset_info_misspelt_key_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool) -> None:
    """A misspelt ``--opts`` key ends in one ``error:`` line naming the closest key, as in the other tools."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: cityscapes, root: {tmp_path}}}\n")
    assert load_tool("dataset_info").main(["--config", str(cfg), "--opts", "data.rooot=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "data.root" in err and "Traceback" not in err


def test_dataset_info_camvid(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool, make_camvid) -> None:
    make_camvid(tmp_path / "camvid", "train", n=3)
    make_camvid(tmp_path / "camvid", "val", n=2, seed=1)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: camvid, root: {tmp_path / 'camvid'}}}\n")
    load_tool("dataset_info").main(["--config", str(cfg), "--splits", "train", "val", "test"])
    out = capsys.readouterr().out
    assert "train: 3 images" in out and "val: 2 images" in out
    assert "test: unavailable" in out and str(tmp_path / "camvid" / "test") in out
    rows = [ln for ln in out.splitlines() if re.match(r"^\s*\d+  ", ln)]
    assert len(rows) == 12  # 11 classes + ignore (void)
    assert rows[0].split()[1] == "sky" and rows[10].split()[1] == "bicyclist" and "ignore (255)" in rows[11]
    assert float(re.findall(r"([\d.]+)%", rows[11])[0]) > 0  # the void pixels


def test_dataset_info_camvid_shared(capsys: pytest.CaptureFixture, load_tool, camvid_root: Path,
                                    tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: camvid, root: {camvid_root}}}\n")
    load_tool("dataset_info").main(["--config", str(cfg), "--max-images", "2"])
    out = capsys.readouterr().out
    assert "train: 367 images" in out and "val: 101 images" in out
    assert len([ln for ln in out.splitlines() if re.match(r"^\s*\d+  ", ln)]) == 12


def test_dataset_info_prints_class_weights(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool,
                                           make_camvid) -> None:
    from spxseg.config import load_config
    from spxseg.data import build_dataset
    from spxseg.models.loss import enet_class_weights

    make_camvid(tmp_path / "camvid", "train", n=3)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: camvid, root: {tmp_path / 'camvid'}}}\nmodel: {{num_classes: 11}}\n")
    load_tool("dataset_info").main(["--config", str(cfg), "--splits", "train", "--class-weights"])
    out = capsys.readouterr().out
    line = re.search(r"class_weights: \[(.*)\]", out)
    assert line, out
    printed = [float(v) for v in line.group(1).split(",")]
    ds = build_dataset(load_config(str(cfg)).data, "train")
    counts = sum(np.bincount(ds.load_label(i).ravel(), minlength=256) for i in range(len(ds)))[:11]
    assert printed == pytest.approx(enet_class_weights(counts), abs=5e-4)  # printed to 3 decimals
    # the printed line is a config that builds
    from spxseg.models import build_model
    build_model({"num_classes": 11, "backbone": {"name": "resnet18"}, "loss": {"class_weights": printed}})


def test_dataset_info_class_weights_need_labelled_pixels(tmp_path: Path, capsys: pytest.CaptureFixture, load_tool,
                                                         make_camvid) -> None:
    import cv2

    make_camvid(tmp_path / "camvid", "train", n=2)
    for path in (tmp_path / "camvid" / "trainannot").glob("*.png"):  # every pixel void (11)
        cv2.imwrite(str(path), np.full((24, 32), 11, np.uint8))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: camvid, root: {tmp_path / 'camvid'}}}\n")
    assert load_tool("dataset_info").main(["--config", str(cfg), "--splits", "train", "--class-weights"]) == 2
    assert "train has no labelled pixel" in capsys.readouterr().err
