"""Synthetic street scenes: determinism, Cityscapes layout and label ids, explicit generation, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from spxseg.data import (
    CityscapesDataset,
    DatasetNotFoundError,
    build_dataset,
    ensure_synthetic,
    generate_synthetic,
    render_scene,
)
from spxseg.data.cityscapes import LABEL_IDS
from spxseg.data.synthetic import MARKER, SYNTHETIC_CLASSES

REPO = Path(__file__).resolve().parents[2]
SCENES_SHA256 = "de7d4ec61822cba14e0bd993ef03cd0ab8a7dc663c861421e03e63ba7d5b10ce"  # see test_scenes_are_unchanged


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_deterministic_bytes_and_layout(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", train=3, val=2, size=(64, 128), seed=7, progress=False)
    b = generate_synthetic(tmp_path / "b", train=3, val=2, size=(64, 128), seed=7, progress=False)
    fa, fb = files(a), files(b)
    assert len(fa) == 10 and fa == fb
    c = generate_synthetic(tmp_path / "c", train=3, val=2, size=(64, 128), seed=8, progress=False)
    assert files(c) != fa
    assert "leftImg8bit/train/synthtrain/synthtrain_000000_000019_leftImg8bit.png" in fa
    assert "gtFine/val/synthval/synthval_000001_000019_gtFine_labelIds.png" in fa
    assert (a / MARKER).read_bytes() == (b / MARKER).read_bytes()


def test_an_existing_set_is_replaced_only_when_asked(tmp_path: Path) -> None:
    out = generate_synthetic(tmp_path / "s", train=2, val=1, size=(48, 64), seed=0, progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(out, train=1, val=1, size=(48, 64), seed=5, progress=False)
    generate_synthetic(out, train=1, val=1, size=(48, 64), seed=5, progress=False, overwrite=True)
    assert len(list((out / "leftImg8bit" / "train").rglob("*.png"))) == 1  # no scene of the old set left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not deleting"):
        generate_synthetic(other, train=1, val=1, size=(48, 64), overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_readable_by_cityscapes_loader_with_label_ids(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "s", train=4, val=2, size=(64, 128), seed=0, progress=False)
    allowed_ids = {LABEL_IDS[c] for c in SYNTHETIC_CLASSES}
    _, raw = render_scene((64, 128), [0, 0, 0])
    assert set(np.unique(raw).tolist()) <= allowed_ids  # label ids, not train ids
    ds = CityscapesDataset(root, "train", None)
    assert len(ds) == 4 and ds.label_path(0).name.endswith("_gtFine_labelIds.png")
    seen: set[int] = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds.load_label(i)).tolist())
    names = {ds.class_names[t] for t in seen}
    assert names <= set(SYNTHETIC_CLASSES) and {"road", "sky", "building"} <= names
    val = CityscapesDataset(root, "val", None)
    assert len(val) == 2


def test_ensure_synthetic_generates_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "data" / "synthetic"
    cfg = {
        "dataset": "cityscapes",
        "root": str(root),
        "base_size": [64, 128],
        "crop_size": [64, 128],
        "synthetic": {"generate": True, "train": 2, "val": 1, "size": [64, 128], "seed": 3},
    }
    with pytest.raises(DatasetNotFoundError, match="tools/train.py"):
        build_dataset(cfg, "train")  # building a dataset never writes
    assert not root.parent.exists()
    assert ensure_synthetic(cfg, progress=False) is True  # the explicit generation step
    ds = build_dataset(cfg, "train")
    assert len(ds) == 2 and (root / MARKER).is_file()
    assert [p.name for p in root.parent.iterdir()] == ["synthetic"]  # no temp folder left behind
    item = ds[0]
    assert item["image"].shape == (3, 64, 128) and item["label"].shape == (64, 128)
    before = files(root)
    assert ensure_synthetic(cfg) is False  # exists: nothing regenerated
    assert files(root) == before
    assert len(build_dataset(cfg, "val")) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ensure_synthetic(dict(cfg, root=str(empty)), progress=False) is True  # an empty folder counts as missing
    assert (empty / MARKER).is_file() and files(empty) == files(root)  # the same seed: the same bytes
    assert ensure_synthetic(dict(cfg, root=str(tmp_path / "off"), synthetic={"generate": False})) is False
    assert not (tmp_path / "off").exists()


def test_scenes_are_unchanged() -> None:
    """The scenes of a given seed are fixed (the quickstart's numbers depend on them): the pixels and labels
    of the first train and val scenes of seed 0 at 64x128 (decoded arrays, so PNG encoder versions do not
    matter). A renderer change that moves them must be deliberate, and update this digest and the README."""
    digest = hashlib.sha256()
    for split_index, i in ((0, 0), (0, 1), (1, 0)):
        img, lab = render_scene((64, 128), [0, split_index, i])
        digest.update(img.tobytes() + lab.tobytes())
    assert digest.hexdigest() == SCENES_SHA256


def test_make_synthetic_cli(tmp_path: Path, capsys, load_tool) -> None:
    tool = load_tool("make_synthetic")
    out = tmp_path / "cli"
    tool.main(
        [
            "--out",
            str(out),
            "--train",
            "2",
            "--val",
            "1",
            "--size",
            "48",
            "96",
            "--seed",
            "1",
            "--no-progress",
        ]
    )
    assert "wrote 2 train + 1 val scenes of 48x96" in capsys.readouterr().out
    assert len(list((out / "leftImg8bit" / "train" / "synthtrain").glob("*.png"))) == 2
    assert len(list((out / "gtFine" / "val" / "synthval").glob("*_labelIds.png"))) == 1


@pytest.mark.slow
def test_torchrun_generates_a_missing_set_once_before_training(tmp_path: Path) -> None:
    """tools/train.py writes the set on local rank 0 before training; the other rank waits for it at the trainer's
    barrier (building the datasets writes nothing), and both train on the complete set."""
    root = tmp_path / "data" / "synthetic"
    cfg = {
        "model": {
            "num_classes": 19, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
            "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2},
        },
        "data": {"dataset": "cityscapes", "root": str(root), "base_size": [64, 128], "crop_size": [64, 128],
                 "num_workers": 0, "pin_memory": False,
                 "synthetic": {"generate": True, "train": 4, "val": 2, "size": [64, 128], "seed": 0}},
        "train": {"max_iters": 2, "batch_size": 2, "lr": 1e-3, "warmup_iters": 1, "eval_interval": 1000,
                  "checkpoint_interval": 1000, "log_interval": 1, "amp": "none", "device": "cpu"},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "tools" / "train.py"), "--config", str(config), "--work-dir", str(tmp_path / "work"),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root / MARKER).is_file() and [p.name for p in root.parent.iterdir()] == ["synthetic"]  # no temp folder
    assert len(list((root / "leftImg8bit" / "train").rglob("*.png"))) == 4
    assert json.loads((tmp_path / "work" / "metrics.json").read_text())["mIoU"] >= 0
