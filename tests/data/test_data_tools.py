"""tools/dataset_info.py: images per split and the class pixel histogram."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dataset_info_generates_and_reports(tmp_path: Path) -> None:
    root = tmp_path / "syn"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data:\n  dataset: cityscapes\n  root: " + str(root) + "\n"
        "  synthetic: {generate: true, train: 3, val: 2, size: [48, 96], seed: 0}\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "dataset_info.py"),
            "--config",
            str(cfg),
            "--opts",
            "data.synthetic.seed=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "train: 3 images" in out and "val: 2 images" in out
    rows = [ln for ln in out.splitlines() if re.match(r"^\s*\d+  ", ln)]
    assert len(rows) == 20  # 19 classes + ignore
    assert any("road" in r for r in rows) and any("traffic sign" in r for r in rows)
    train_pct = [float(re.findall(r"([\d.]+)%", r)[0]) for r in rows]
    assert all(r.count("%") == 2 for r in rows)  # one column per split
    assert abs(sum(train_pct) - 100.0) < 0.1
    assert (root / "synthetic.json").is_file()


def test_dataset_info_missing_root(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{dataset: cityscapes, root: {tmp_path / 'nothing'}}}\n")
    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "dataset_info.py"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "unavailable" in res.stdout and "leftImg8bit" in res.stdout
