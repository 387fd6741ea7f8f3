"""Every tool that opens a checkpoint refuses a crafted payload without running it; the shareable
``model.safetensors`` + ``config.yaml`` pair and checkpoints of the previous format still evaluate."""

from __future__ import annotations

import json
import pathlib
import random

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import TouchPayload, tiny_training_config

from spxseg.config import load_config
from spxseg.data.synthetic import generate_synthetic
from spxseg.engine import trainer
from spxseg.engine.checkpoint import load_checkpoint, save_weights, set_rng_state


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 2-iteration tiny training on a synthetic Cityscapes-layout set, and an image for the demo."""
    tmp = tmp_path_factory.mktemp("doors")
    root = generate_synthetic(tmp / "data", train=4, val=2, size=(64, 128), seed=0, progress=False)
    cfg = tiny_training_config(root, max_iters=2, eval_interval=100, keep_checkpoints=0)
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    trainer.train(load_config(config), tmp / "work", progress=False)
    image = tmp / "street.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8))
    return {"tmp": tmp, "config": str(config), "work": tmp / "work", "image": str(image)}


def _miou(load_tool, capsys, out: pathlib.Path, *args: str) -> float:
    rc = load_tool("eval").main([*args, "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    return json.loads((out / "metrics.json").read_text())["mIoU"]


def test_every_door_refuses_a_payload_without_running_it(run, tmp_path, capsys, load_tool) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": {}, "x": TouchPayload(marker)}, evil)
    cfg, image = run["config"], run["image"]
    doors = {
        "eval": ["--checkpoint", str(evil)],
        "eval --config": ["--config", cfg, "--checkpoint", str(evil), "--device", "cpu"],
        "demo": ["--checkpoint", str(evil), "--input", image, "--out", str(tmp_path / "demo"), "--device", "cpu"],
        "demo --config": ["--config", cfg, "--checkpoint", str(evil), "--input", image, "--out", str(tmp_path / "d")],
        "export_onnx": ["--checkpoint", str(evil), "--size", "64", "64", "--out", str(tmp_path / "m.onnx")],
        "export_onnx --config": ["--config", cfg, "--checkpoint", str(evil), "--size", "64", "64",
                                 "--out", str(tmp_path / "m.onnx")],
        "train --resume": ["--config", cfg, "--work-dir", str(tmp_path / "w"), "--resume", str(evil), "--no-progress"],
    }
    for door, argv in doors.items():
        rc = load_tool(door.split()[0]).main(argv)
        err = capsys.readouterr().err
        assert rc != 0, door
        assert not marker.exists(), f"{door} ran the payload"
        assert f"refusing to load {evil}" in err and "nothing in it was run" in err, (door, err)
        assert len(err.strip().splitlines()) <= 3, (door, err)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "demo").exists()


@pytest.mark.slow  # three evaluations, a demo and an ONNX export
def test_weights_pair_evaluates_like_the_checkpoint_it_came_from(run, tmp_path, capsys, load_tool) -> None:
    work = run["work"]
    assert {p.name for p in work.iterdir()} >= {"config.yaml", "model.safetensors", "model_best.safetensors"}
    reference = _miou(load_tool, capsys, tmp_path / "pth", "--config", run["config"],
                      "--checkpoint", str(work / "checkpoints" / "latest.pth"))
    pair = _miou(load_tool, capsys, tmp_path / "pair", "--checkpoint", str(work / "model.safetensors"))
    explicit = _miou(load_tool, capsys, tmp_path / "explicit", "--config", run["config"],
                     "--checkpoint", str(work / "model.safetensors"))
    assert pair == explicit == reference
    record = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    assert record["config"] == str(work / "config.yaml") and record["iteration"] == 2

    # moved without its config.yaml: the config stored in the file's metadata
    lone = tmp_path / "lone" / "model.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((work / "model.safetensors").read_bytes())
    assert _miou(load_tool, capsys, tmp_path / "lone_out", "--checkpoint", str(lone)) == reference

    assert load_tool("demo").main(["--checkpoint", str(work / "model.safetensors"), "--input", run["image"],
                                   "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    assert (tmp_path / "demo" / "street_panel.png").is_file()
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    rc = load_tool("export_onnx").main(["--checkpoint", str(work / "model.safetensors"), "--size", "64", "64",
                                        "--out", str(tmp_path / "m.onnx"), "--no-check", "--no-optimize"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "m.onnx").is_file()


def test_a_checkpoint_of_the_previous_format_still_evaluates(run, tmp_path, capsys, load_tool) -> None:
    """Written as the previous release's trainer did: the raw NumPy / Python RNG state objects."""
    latest = run["work"] / "checkpoints" / "latest.pth"
    ckpt = load_checkpoint(latest)
    set_rng_state(ckpt["rng"])
    ckpt["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    old = tmp_path / "old.pth"
    torch.save(ckpt, old)
    assert _miou(load_tool, capsys, tmp_path / "old", "--checkpoint", str(old)) == \
        _miou(load_tool, capsys, tmp_path / "new", "--checkpoint", str(latest))


def test_mismatched_config_gets_a_short_error(run, tmp_path, capsys, load_tool) -> None:
    latest = run["work"] / "checkpoints" / "latest.pth"
    rc = load_tool("eval").main(["--config", run["config"], "--checkpoint", str(latest), "--device", "cpu",
                                 "--out", str(tmp_path), "--opts", "model.channels=24"])
    err = capsys.readouterr().err
    assert rc == 2 and f"weights in {latest} do not fit" in err and "model.channels=16 (this config: 24)" in err
    assert len(err.strip().splitlines()) <= 10, err
    (tmp_path / "orphan.safetensors").write_bytes((run["work"] / "model.safetensors").read_bytes()[:100])
    assert load_tool("eval").main(["--checkpoint", str(tmp_path / "orphan.safetensors")]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    bare = tmp_path / "bare" / "model.safetensors"  # no config.yaml next to it, none inside
    save_weights(load_checkpoint(latest)["model"], bare)
    assert load_tool("eval").main(["--checkpoint", str(bare)]) == 2
    assert f"{bare}: no config.yaml next to it; pass the training config" in capsys.readouterr().err
