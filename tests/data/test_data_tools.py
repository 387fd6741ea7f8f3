"""tools/dataset_info.py: images per split and the class pixel histogram (run in-process)."""

from __future__ import annotations

import re
from pathlib import Path

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
    with pytest.raises(SystemExit) as err:
        load_tool("dataset_info").main(["--config", str(cfg)])
    out = capsys.readouterr().out
    assert err.value.code == 1 and "unavailable" in out and "leftImg8bit" in out
