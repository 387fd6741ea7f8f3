"""The training loop: exact resume, NaN stop, atomic checkpoints, torchrun DDP, outputs."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spxseg.config import load_config
from spxseg.data.synthetic import generate_synthetic
from spxseg.engine import checkpoint as ckpt_mod
from spxseg.engine import trainer
from spxseg.engine.checkpoint import atomic_save, load_checkpoint
from spxseg.engine.optim import poly_warmup

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A tiny synthetic set and a tiny model that trains an iteration in a fraction of a second."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, train=8, val=2, size=(64, 128), seed=0, progress=False)
    cfg = {
        "model": {
            "num_classes": 19, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
            "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2},
        },
        "data": {"dataset": "cityscapes", "root": str(root), "base_size": [64, 128], "crop_size": [64, 128],
                 "scale_range": [0.75, 1.25], "num_workers": 0, "pin_memory": False},
        "train": {"max_iters": 20, "batch_size": 2, "lr": 1e-3, "warmup_iters": 5, "eval_interval": 1000,
                  "checkpoint_interval": 10, "log_interval": 5, "deterministic": True, "amp": "none",
                  "device": "cpu", "keep_checkpoints": 1},
    }
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _reject_nan(constant: str):
    raise AssertionError(f"{constant} is not valid JSON")


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def _stop_at(monkeypatch, call: int, action):
    """Wrap the training loss so that ``action(loss)`` runs at its ``call``-th call (1-based)."""
    real = trainer.model_loss
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return action(loss) if calls["n"] >= call else loss

    monkeypatch.setattr(trainer, "model_loss", wrapped)


def test_resume_continues_exactly(tiny_config, tmp_path, monkeypatch):
    cfg = load_config(tiny_config)
    straight = trainer.train(cfg, tmp_path / "straight", progress=False)

    # the same run, stopped by SIGTERM during iteration 10, then resumed
    def sigterm(loss):
        os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(trainer, "model_loss", real_loss)
        return loss

    real_loss = trainer.model_loss
    _stop_at(monkeypatch, 10, sigterm)
    stopped = trainer.train(load_config(tiny_config), tmp_path / "split", progress=False)
    assert stopped["stopped"] and stopped["iteration"] == 10
    assert load_checkpoint(tmp_path / "split/checkpoints/latest.pth")["iteration"] == 10
    resumed = trainer.train(load_config(tiny_config), tmp_path / "split", resume=True, progress=False)

    a, b = _weights(tmp_path / "straight/checkpoints/latest.pth"), _weights(tmp_path / "split/checkpoints/latest.pth")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["mIoU"] == resumed["mIoU"]

    # outputs a user relies on
    out = tmp_path / "straight"
    for name in ("metrics.json", "metrics.jsonl", "config.yaml", "checkpoints/latest.pth", "checkpoints/best.pth"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=_reject_nan)  # strict JSON
    assert {"mIoU", "mAcc", "aAcc", "per_class"} <= metrics.keys()
    lines = [json.loads(line, parse_constant=_reject_nan) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if "loss" in r] == [5, 10, 15, 20]
    for r in (r for r in lines if "loss" in r):  # the gradients' mean norm before clipping at 1.0, and how often
        assert 0 <= r["clipped"] <= 1
        if r["clipped"] in (0, 1):  # every step of the window clipped (each norm > 1.0) or none (each <= 1.0)
            assert (r["grad_norm"] > 1.0) == (r["clipped"] == 1)
    assert load_config(out / "config.yaml").train.max_iters == 20
    assert sorted(p.name for p in (out / "checkpoints").glob("iter_*.pth")) == ["iter_0000020.pth"]  # keep 1


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    def poison(loss):
        return type(loss)(*(t * float("nan") for t in (loss.total, loss.pixel, loss.superpixel)))

    _stop_at(monkeypatch, 13, poison)
    with pytest.raises(trainer.TrainingStopped, match="NaN/inf before iteration 15.*latest.pth"):
        trainer.train(load_config(tiny_config), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoints/latest.pth")
    assert ckpt["iteration"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_crash_and_resume_logs_each_step_once(tiny_config, tmp_path, monkeypatch):
    def crash(loss):
        raise RuntimeError("simulated crash")

    no_clip = ["train.grad_clip=null"]  # and without clipping: the norm is logged, no clipped fraction
    _stop_at(monkeypatch, 17, crash)  # after the log of iteration 15, before the checkpoint of 20
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(load_config(tiny_config, no_clip), tmp_path, progress=False)
    monkeypatch.undo()
    trainer.train(load_config(tiny_config, no_clip), tmp_path, resume=True, progress=False)  # from iteration 10
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if "loss" in r] == [5, 10, 15, 20]
    assert all(r["grad_norm"] > 0 and "clipped" not in r for r in lines if "loss" in r)


def test_rerun_before_a_checkpoint_and_resuming_a_finished_run_log_each_step_once(tiny_config, tmp_path, monkeypatch):
    def crash(loss):
        raise RuntimeError("simulated crash")

    _stop_at(monkeypatch, 7, crash)  # after the log of iteration 5, before the first checkpoint (10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(load_config(tiny_config), tmp_path, progress=False)
    monkeypatch.undo()
    first = trainer.train(load_config(tiny_config), tmp_path, resume=True, progress=False)  # no checkpoint: afresh
    again = trainer.train(load_config(tiny_config), tmp_path, resume=True, progress=False)  # finished: evaluates
    assert again["mIoU"] == first["mIoU"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if "loss" in r] == [5, 10, 15, 20]
    assert [r["iter"] for r in lines if "val/mIoU" in r] == [20]


def test_resume_takes_the_configs_learning_rate_and_a_failed_one_keeps_config_yaml(tiny_config, tmp_path,
                                                                                   monkeypatch):
    def crash(loss):
        raise RuntimeError("simulated crash")

    _stop_at(monkeypatch, 12, crash)  # after the checkpoint of iteration 10
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(load_config(tiny_config), tmp_path, progress=False)
    monkeypatch.undo()
    saved = [(g["initial_lr"], g["lr"]) for g in load_checkpoint(tmp_path / "checkpoints/latest.pth")["optimizer"]
             ["param_groups"]]
    assert all(base == 1e-3 or base == 1e-4 for base, _ in saved)  # head, backbone (x0.1)

    with pytest.raises(ValueError, match="--resume"):  # a checkpoint that does not fit the model
        trainer.setup_training(load_config(tiny_config, ["model.channels=32"]), tmp_path, resume=True)
    assert load_config(tmp_path / "config.yaml").model.channels == 16  # the run's config.yaml untouched

    run = trainer.setup_training(load_config(tiny_config, ["train.lr=3e-3"]), tmp_path, resume=True, progress=False)
    assert run.iteration == 10
    for group, (base, lr) in zip(run.optimizer.param_groups, saved, strict=True):
        assert group["initial_lr"] == pytest.approx(base * 3)  # backbone_lr_mult kept
        assert group["lr"] == pytest.approx(lr * 3)  # at iteration 10 of the same schedule
    assert load_config(tmp_path / "config.yaml").train.lr == 3e-3
    longer = trainer.setup_training(load_config(tiny_config, ["train.max_iters=40"]), tmp_path, resume=True,
                                    progress=False)
    factor = poly_warmup(40, 5, 0.9)(10)  # iteration 10 of a 40-iteration schedule, 5 of warm-up
    assert [g["lr"] for g in longer.optimizer.param_groups] == pytest.approx([base * factor for base, _ in saved])


def test_bad_settings_and_checkpoints_are_named_before_training(tiny_config, tmp_path):
    for override, key in (("train.eval_interval=0", "train.eval_interval"), ("train.max_iters=0", "train.max_iters"),
                          ("train.accum_steps=0", "train.accum_steps"), ("eval.mode=slid", "eval.mode"),
                          ("train.grad_clip=-1", "train.grad_clip")):
        with pytest.raises(ValueError, match=key):
            trainer.train(load_config(tiny_config, [override]), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()  # nothing written

    weights_only = tmp_path / "weights.pth"
    torch.save({"model": {}, "config": {}}, weights_only)
    with pytest.raises(ValueError, match="not a training checkpoint.*optimizer"):
        trainer.train(load_config(tiny_config), tmp_path / "w", resume=str(weights_only), progress=False)


def test_checkpoint_rotation_after_resuming_from_an_older_one(tmp_path):
    manager = ckpt_mod.CheckpointManager(tmp_path, keep=3)
    for it in (800, 900, 1000, 600, 700):  # a run to 1000, then resumed from an iteration-500 checkpoint
        manager.save({"model": {}, "iteration": it}, it)
    names = sorted(p.name for p in tmp_path.glob("iter_*.pth"))
    assert names == ["iter_0000600.pth", "iter_0000700.pth", "iter_0000800.pth", "iter_0000900.pth",
                     "iter_0001000.pth"]  # nothing newer deleted, the new ones kept
    manager.save({"model": {}, "iteration": 800}, 800)
    assert load_checkpoint(tmp_path / "iter_0000800.pth")["iteration"] == 800
    manager.save({"model": {}, "iteration": 900}, 900)
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth"))[0] == "iter_0000700.pth"  # 600 rotated out
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "latest.pth").stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as torch.save's


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    atomic_save({"model": {"w": torch.ones(3)}, "iteration": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(3)}, "iteration": 2}, path)
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert ckpt["iteration"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert list(tmp_path.iterdir()) == [path]  # no stray temp file


def test_resume_from_a_missing_path_is_an_error(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        trainer.train(load_config(tiny_config), tmp_path, resume=str(tmp_path / "nope.pth"), progress=False)


@pytest.mark.slow  # subprocess, torchrun or export: tens of seconds
def test_torchrun_two_processes(tiny_config, tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "tools/train.py"), "--config", str(tiny_config), "--work-dir", str(tmp_path), "--no-progress",
        "--opts", "train.max_iters=4", "train.checkpoint_interval=2", "train.log_interval=2", "train.batch_size=2",
        "model.backbone.freeze_bn=true",  # the small-batch BN setting under DDP
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "checkpoints/latest.pth")
    assert ckpt["iteration"] == 4 and isinstance(ckpt["rng"], list) and len(ckpt["rng"]) == 2
    model = trainer.build_model(load_config(tiny_config).model)
    model.load_state_dict(ckpt["model"])
    assert json.loads((tmp_path / "metrics.json").read_text())["mIoU"] >= 0
    # frozen backbone BN on both ranks: the running statistics are still the initial ones (mean 0, var 1),
    # while the pixel decoder's BN (not frozen) moved
    stats = {k: v for k, v in ckpt["model"].items() if k.endswith("running_mean")}
    assert all(not v.any() for k, v in stats.items() if k.startswith("backbone."))
    assert any(v.any() for k, v in stats.items() if not k.startswith("backbone."))


def test_sync_bn_on_cpu_ddp_is_a_named_error(tiny_config, tmp_path):
    """SyncBatchNorm only runs on accelerators: on CPU under DDP the setting is refused before training."""
    from spxseg.engine import distributed as du

    cfg = load_config(tiny_config, ["train.sync_bn=true"])
    with pytest.raises(ValueError, match="train.sync_bn needs GPUs.*freeze_bn"):
        trainer.build_run(cfg, tmp_path, du.DistInfo(rank=0, world_size=2))

    # and freezing random-init statistics (no ImageNet weights) is worth a warning when training starts
    cfg = load_config(tiny_config, ["model.backbone.freeze_bn=true"])
    with pytest.warns(UserWarning, match="freeze_bn with neither pretrained nor checkpoint"):
        trainer.build_run(cfg, tmp_path, du.DistInfo())


DDP_STOP = """
import os, signal, sys
sys.path.insert(0, {tools!r})
from spxseg.engine import trainer
trainer.STOP_AGREE_EVERY = 2
real, calls = trainer.model_loss, [0]
def loss(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's signal reaches one rank first
    return real(*args, **kwargs)
trainer.model_loss = loss
import train
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow  # subprocess, torchrun or export: tens of seconds
def test_torchrun_stop_signal_on_one_rank_stops_all_at_the_same_iteration(tiny_config, tmp_path):
    script = tmp_path / "train_sigterm.py"
    script.write_text(DDP_STOP.format(tools=str(REPO / "tools")))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
        "--config", str(tiny_config), "--work-dir", str(tmp_path / "w"), "--no-progress",
        "--opts", "train.max_iters=8", "train.log_interval=100", "train.checkpoint_interval=100",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)  # hung before the fix
    output = result.stdout + result.stderr
    assert "stopped by a signal to another rank" in output, output[-6000:]  # rank 0 stopped for rank 1
    assert load_checkpoint(tmp_path / "w/checkpoints/latest.pth")["iteration"] == 4  # agreed at the next even step


def test_sync_bn_conversion_keeps_timm_fused_activations():
    """train.sync_bn under DDP: every BatchNorm becomes SyncBatchNorm and the model computes the same function
    (EfficientNet-Lite fuses BN with ReLU6 in one timm module, which torch's own converter would strip)."""
    import torch.nn as nn

    from spxseg.models import build_model

    torch.manual_seed(0)
    model = build_model({"num_classes": 3, "backbone": {"name": "tf_efficientnet_lite0"}, "cell": 2, "channels": 16,
                         "transformer": {"layers": 1, "dim": 32, "heads": 2}}).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x).probs
        synced = trainer.convert_sync_bn(model).eval()
        after = synced(x).probs
    norms = [m for m in synced.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    torch.testing.assert_close(after, before)
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x).probs, before, atol=1e-4)  # what the test guards against
