"""Checkpoints are data, not programs: safe loading, plain RNG state, old checkpoints, safetensors, short errors."""

from __future__ import annotations

import os
import pathlib
import pickle
import random

import numpy as np
import pytest
import torch
import yaml
from conftest import TouchPayload, tiny_training_config

from spxseg import Segmenter
from spxseg.config import load_config
from spxseg.data.synthetic import generate_synthetic
from spxseg.engine import trainer
from spxseg.engine.checkpoint import (
    UnsafeCheckpointError,
    atomic_save,
    build_model_for_weights,
    load_checkpoint,
    load_model_weights,
    rng_state,
    set_rng_state,
    write_json,
)


class SystemPayload(TouchPayload):
    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _write_payload(path: pathlib.Path, marker: pathlib.Path, how: str) -> pathlib.Path:
    obj = {"model": {}, "x": SystemPayload(marker) if how == "system" else TouchPayload(marker)}
    if how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif how == "raw_pickle":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        torch.save(obj, path)
    return path


def _old_rng_state() -> dict:
    """The RNG entry as the trainer wrote it before plain data: NumPy's own state tuple (ndarray inside)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), np.random.randn(3).tolist(), torch.rand(3).tolist()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["zip", "legacy", "raw_pickle", "system"])
def test_a_payload_is_refused_without_running(tmp_path, how) -> None:
    marker = tmp_path / "MARKER"
    path = _write_payload(tmp_path / f"evil_{how}.pth", marker, how)
    with pytest.raises(UnsafeCheckpointError, match=f"refusing to load {path}.*nothing in it was run") as info:
        load_checkpoint(path)
    assert not marker.exists()
    assert len(str(info.value)) < 400 and "weights_only" not in str(info.value)  # short, no advice to load unsafely
    with pytest.raises(ValueError, match=f"refusing to load {path}"):  # the public door too
        Segmenter.from_checkpoint(path, device="cpu")
    assert not marker.exists()
    if how == "zip":  # the payload is real: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_rng_state_is_plain_data_and_restores_exactly(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    np.random.randn()  # a cached Gaussian in NumPy's state
    torch.manual_seed(3)
    atomic_save({"model": {}, "rng": rng_state()}, tmp_path / "c.pth")
    expected = _draws()
    state = torch.load(tmp_path / "c.pth", weights_only=True)["rng"]  # no allow-list needed
    set_rng_state(state)
    assert _draws() == expected


def test_old_rng_state_loads_with_exactly_the_numpy_types_it_needs(tmp_path) -> None:
    np.random.seed(5)
    np.random.randn()
    torch.save({"model": {}, "rng": _old_rng_state()}, tmp_path / "old.pth")
    expected = _draws()
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only needs the allow-list
        torch.load(tmp_path / "old.pth", weights_only=True)
    set_rng_state(load_checkpoint(tmp_path / "old.pth")["rng"])
    assert _draws() == expected
    # nothing broader: other arrays, NumPy scalars and object arrays stay refused
    for i, value in enumerate((np.zeros(3), np.float64(1.0), np.array([None, 1], dtype=object), np.int64(3))):
        torch.save({"model": {}, "x": value}, tmp_path / f"np{i}.pth")
        with pytest.raises(UnsafeCheckpointError, match=f"np{i}.pth"):
            load_checkpoint(tmp_path / f"np{i}.pth")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 4-iteration tiny training: checkpoints at 2 and 4, evaluations at 2 and 4."""
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, train=4, val=2, size=(64, 128), seed=0, progress=False)
    cfg = tiny_training_config(root, max_iters=4, eval_interval=2, keep_checkpoints=2)
    config = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path_factory.mktemp("run")
    trainer.train(load_config(config), work, progress=False)
    return {"config": config, "work": work}


def test_trainer_checkpoints_load_weights_only(run) -> None:
    for name in ("latest.pth", "best.pth", "iter_0000002.pth"):
        ckpt = torch.load(run["work"] / "checkpoints" / name, weights_only=True)  # no allow-list at all
        assert ckpt["iteration"] in (2, 4)


def test_safetensors_weights_next_to_config(run) -> None:
    work = run["work"]
    final, best = load_checkpoint(work / "model.safetensors"), load_checkpoint(work / "model_best.safetensors")
    assert final["config_file"] == str(work / "config.yaml") and final["iteration"] == 4
    for weights, ckpt in ((final, "latest.pth"), (best, "best.pth")):
        expected = load_checkpoint(work / "checkpoints" / ckpt)["model"]
        assert weights["model"].keys() == expected.keys()
        assert all(torch.equal(weights["model"][k], expected[k]) for k in expected)
    image = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    a = Segmenter.from_checkpoint(work / "model.safetensors", device="cpu")
    b = Segmenter.from_checkpoint(work / "checkpoints" / "latest.pth", device="cpu")
    assert np.array_equal(a.predict(image), b.predict(image))
    assert a.cfg == b.cfg


def test_a_config_that_normalises_otherwise_is_warned_about(run) -> None:
    import warnings

    from spxseg.engine.checkpoint import load_trained_model

    ckpt = run["work"] / "checkpoints" / "latest.pth"
    same = load_config(run["config"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config it was trained with: no warning
        load_trained_model(ckpt, same)
    other = load_config(run["config"], ["data.mean=[0,0,0]"])
    with pytest.warns(UserWarning, match=r"data.mean \[0.0, 0.0, 0.0\] differs .*latest.pth"):
        load_trained_model(ckpt, other)


def test_old_format_checkpoint_resumes_exactly(run, tmp_path) -> None:
    """A checkpoint as the previous release wrote it (raw NumPy RNG state) resumes to the same weights."""
    ckpt = load_checkpoint(run["work"] / "checkpoints" / "iter_0000002.pth")
    set_rng_state(ckpt["rng"])
    ckpt["rng"] = _old_rng_state()
    old = tmp_path / "old_iter2.pth"
    torch.save(ckpt, old)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(old, weights_only=True)  # it does hold the NumPy objects
    trainer.train(load_config(run["config"]), tmp_path / "resumed", resume=str(old), progress=False)
    a = load_checkpoint(run["work"] / "checkpoints" / "latest.pth")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_that_do_not_fit_get_a_short_message(run, tmp_path) -> None:
    latest = run["work"] / "checkpoints" / "latest.pth"
    ckpt = load_checkpoint(latest)
    cases = {
        "model.channels=24": "model.channels=16 (this config: 24)",
        "model.backbone.name=resnet34": "model.backbone.name='resnet18' (this config: 'resnet34')",
        "model.num_classes=7": "model.num_classes=19 (this config: 7)",
    }
    for override, differs in cases.items():
        cfg = load_config(run["config"], [override])
        with pytest.raises(RuntimeError) as info:
            load_model_weights(build_model_for_weights(cfg.model), ckpt, latest, cfg.model)
        message = str(info.value)
        print(f"\n{override}:\n{message}")
        assert len(message.splitlines()) <= 10, message
        assert message.startswith(f"weights in {latest} do not fit the model") and differs in message
        assert "keys missing" in message and "unexpected" in message
    cfg = load_config(run["config"], ["model.backbone.name=resnet34"])
    with pytest.raises(RuntimeError, match=r"(?s)\d+ keys missing, 0 unexpected.*missing: .*\(\+\d+ more\)"):
        load_model_weights(build_model_for_weights(cfg.model), ckpt, latest, cfg.model)
    # foreign names (no config carried): counts and first keys, no config line
    foreign = {"model": {f"encoder.{k}": v for k, v in ckpt["model"].items()}}
    with pytest.raises(RuntimeError) as info:
        load_model_weights(build_model_for_weights(load_config(run["config"]).model), foreign, "foreign.safetensors")
    message = str(info.value)
    n = len(ckpt["model"])
    assert f"{n} keys missing, {n} unexpected" in message and "unexpected: encoder." in message
    assert "\n  trained with" not in message and len(message.splitlines()) <= 10
    # the trainer's --resume says the same
    with pytest.raises(ValueError) as info:
        trainer.train(load_config(run["config"], ["model.channels=24"]), tmp_path / "w", resume=str(latest),
                      progress=False)
    assert str(info.value).startswith(f"--resume: weights in {latest} do not fit")
    assert "model.channels=16 (this config: 24)" in str(info.value) and len(str(info.value).splitlines()) <= 10


def test_write_json_makes_the_folder_and_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch) -> None:
    """The tools' and benchmarks' reports: indented JSON with a final newline, in a folder made on the way; a
    write that fails half way (here: the fsync) leaves the previous report whole and no temp file behind."""
    import json

    path = tmp_path / "new" / "folder" / "report.json"
    write_json({"mIoU": 63.5, "classes": ["sky"]}, path)
    assert path.read_text().endswith("}\n") and json.loads(path.read_text()) == {"mIoU": 63.5, "classes": ["sky"]}

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json({"mIoU": 0.0}, path)
    assert json.loads(path.read_text())["mIoU"] == 63.5
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
