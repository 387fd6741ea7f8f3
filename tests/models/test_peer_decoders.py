"""Peer decoders (smp FPN / DeepLabV3+) on our backbones: build, loss, one training run, eval and profile tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from spxseg.config import ModelConfig, from_dict
from spxseg.models import DenseOutput, build_model, model_loss

smp = pytest.importorskip("segmentation_models_pytorch", reason="the test extra installs segmentation-models-pytorch")

REPO = Path(__file__).resolve().parents[2]
PEERS = ("fpn", "deeplabv3plus")


@pytest.mark.parametrize("arch", PEERS)
def test_peer_output_loss_and_backbone_groups(arch: str) -> None:
    cfg = from_dict(ModelConfig, {"architecture": arch, "num_classes": 5, "backbone": {"name": "resnet10t"}})
    model = build_model(cfg)
    x, labels = torch.randn(2, 3, 50, 70), torch.randint(0, 5, (2, 50, 70))  # not a multiple of 32: padded
    labels[0, :10] = 255
    out = model(x)
    assert isinstance(out, DenseOutput) and out.probs.shape == out.logits.shape == (2, 5, 50, 70)
    assert torch.allclose(out.probs.sum(1), torch.ones(2, 50, 70), atol=1e-5)
    loss = model_loss(out, labels, cfg)
    keep = labels != 255
    expect = torch.nn.functional.cross_entropy(out.logits.permute(0, 2, 3, 1)[keep], labels[keep])
    assert torch.allclose(loss.total, expect, atol=1e-5) and loss.superpixel.item() == 0.0
    from spxseg.engine.optim import param_groups

    groups = param_groups(model)
    n_backbone = sum(p.numel() for p in groups["backbone"] + groups["backbone_no_decay"])
    assert n_backbone == sum(p.numel() for p in model.backbone.parameters()) > 0
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", PEERS)
def test_one_image_per_process_trains_or_says_why_not(arch: str) -> None:
    """FPN trains on one image; DeepLabV3+'s image-pooling BatchNorm cannot (one value per channel): a clear error
    naming the settings that work, not PyTorch's; in eval mode both take one image."""
    model = build_model({"architecture": arch, "num_classes": 3,
                         "backbone": {"name": "resnet10t", "freeze_bn": True}}).train()
    x = torch.randn(1, 3, 64, 64)
    if arch == "deeplabv3plus":
        with pytest.raises(ValueError, match=r"train.batch_size >= 2, or train.sync_bn"):
            model(x)
        assert model(torch.randn(2, 3, 64, 64)).probs.shape == (2, 3, 64, 64)
    else:
        model(x).probs.sum().backward()
    assert model.eval()(x).probs.shape == (1, 3, 64, 64)


def test_unknown_architecture_and_out_indices_are_named() -> None:
    with pytest.raises(ValueError, match="did you mean 'deeplabv3plus'"):
        build_model({"architecture": "deeplabv3+", "backbone": {"name": "resnet10t"}})
    with pytest.raises(ValueError, match="out_indices"):
        build_model({"architecture": "fpn", "backbone": {"name": "resnet10t", "out_indices": [1, 2]}})


@pytest.fixture(scope="module")
def camvid_tiny(tmp_path_factory, make_camvid) -> Path:
    root = tmp_path_factory.mktemp("camvid_tiny")
    make_camvid(root, "train", n=4, size=(48, 64), seed=1)
    make_camvid(root, "val", n=2, size=(48, 64), seed=2)
    return root


def _tiny_config(tmp: Path, root: Path, arch: str) -> Path:
    model = {"architecture": arch, "num_classes": 11, "backbone": {"name": "resnet10t"}}
    if arch == "spx":
        model.update(cell=2, channels=16, tokenizer={"iters": 1}, transformer={"layers": 1, "dim": 32, "heads": 2})
    cfg = {
        "model": model,
        "data": {"dataset": "camvid", "root": str(root), "base_size": [48, 64], "crop_size": [32, 32],
                 "num_workers": 0},
        "train": {"max_iters": 2, "batch_size": 2, "lr": 1e-3, "warmup_iters": 0, "eval_interval": 100,
                  "checkpoint_interval": 1, "log_interval": 1, "amp": "none", "device": "cpu"},
    }
    path = tmp / f"{arch}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("arch", PEERS)
def test_peer_trains_through_the_trainer_and_evaluates(arch: str, camvid_tiny: Path, tmp_path: Path, load_tool,
                                                       capsys) -> None:
    config = _tiny_config(tmp_path, camvid_tiny, arch)
    work = tmp_path / "work"
    assert load_tool("train").main(["--config", str(config), "--work-dir", str(work), "--no-progress"]) == 0
    ckpt = torch.load(work / "checkpoints" / "latest.pth", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["config"]["model"]["architecture"] == arch
    first = torch.load(work / "checkpoints" / "iter_0000001.pth", weights_only=True)["model"]
    changed = [k for k, v in first.items() if v.is_floating_point() and not torch.equal(v, ckpt["model"][k])]
    assert any(k.startswith("net.decoder") for k in changed) and any(k.startswith("net.encoder") for k in changed)
    logged = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in logged if "loss" in r] == [1, 2] and all(r["loss"] > 0 for r in logged if "loss" in r)

    out = tmp_path / "eval"
    rc = load_tool("eval").main(["--config", str(config), "--checkpoint", str(work / "checkpoints" / "latest.pth"),
                                 "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and len(metrics["per_class"]) == 11 and "pedestrian" in metrics["per_class"]


def test_eval_saves_camvid_predictions_of_our_model(camvid_tiny: Path, tmp_path: Path, load_tool, capsys,
                                                   make_camvid) -> None:
    import cv2

    config = _tiny_config(tmp_path, camvid_tiny, "spx")
    work = tmp_path / "work"
    assert load_tool("train").main(["--config", str(config), "--work-dir", str(work), "--no-progress"]) == 0
    preds = tmp_path / "preds"
    rc = load_tool("eval").main(["--config", str(config), "--checkpoint", str(work / "checkpoints" / "latest.pth"),
                                 "--out", str(tmp_path / "eval"), "--save-preds", str(preds), "--device", "cpu",
                                 "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    files = sorted((preds / "train_ids").rglob("*.png"))
    assert [f.name for f in files] == sorted(p.name for p in (camvid_tiny / "val").glob("*.png"))
    pred = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert pred.shape == (48, 64) and pred.max() <= 10

    # --split test for a root that has the test split (CamVid's standard 233 frames live there)
    assert load_tool("eval").main(["--config", str(config), "--checkpoint", str(work / "checkpoints" / "latest.pth"),
                                   "--split", "test", "--out", str(tmp_path / "eval_test"), "--device", "cpu",
                                   "--no-progress"]) == 2  # no test/ folder yet: a named error
    assert "test" in capsys.readouterr().err
    root = tmp_path / "with_test"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for f in (camvid_tiny / split).glob("*.png"):
            (root / split / f.name).symlink_to(f)
            (root / f"{split}annot" / f.name).symlink_to(camvid_tiny / f"{split}annot" / f.name)
    make_camvid(root, "test", n=3, size=(48, 64), seed=3)
    rc = load_tool("eval").main(["--config", str(config), "--checkpoint", str(work / "checkpoints" / "latest.pth"),
                                 "--split", "test", "--out", str(tmp_path / "eval_test"), "--device", "cpu",
                                 "--no-progress", "--opts", f"data.root={root}"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval_test" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 3


def test_profile_latency_times_a_peer(tmp_path: Path, load_tool, capsys) -> None:
    config = _tiny_config(tmp_path, tmp_path, "fpn")
    out = tmp_path / "latency.json"
    rc = load_tool("profile_latency").main(["--config", str(config), "--size", "64", "64", "--iters", "1",
                                            "--warmup", "0", "--rounds", "1", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["fpn_resnet10t", "backbone"] and rows[0]["median_ms"] > 0
    assert rows[0]["params_M"] > rows[1]["params_M"] > 0 and rows[0]["stages_ms"] is None


def test_segmenter_demo_and_onnx_wrapper_take_a_peer(camvid_tiny: Path, tmp_path: Path, load_tool, capsys) -> None:
    from spxseg import Segmenter
    from spxseg.config import Config
    from spxseg.engine.onnx_export import ExportWrapper

    cfg = from_dict(Config, {"model": {"architecture": "fpn", "num_classes": 11, "backbone": {"name": "resnet10t"}},
                             "data": {"dataset": "camvid"}})
    model = build_model(cfg.model)
    seg = Segmenter(model, cfg, device="cpu")
    image = (torch.rand(40, 56, 3) * 255).to(torch.uint8).numpy()
    labels = seg.predict(image, rgb=True)
    assert labels.shape == (40, 56) and labels.max() <= 10
    with pytest.raises(ValueError, match="no superpixels"):
        seg.predict_with_superpixels(image, rgb=True)
    outputs = ExportWrapper(model.eval())(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(1, 11, 64, 64), (1, 64, 64)]  # probs, labels; no superpixels

    config = _tiny_config(tmp_path, camvid_tiny, "fpn")
    out = tmp_path / "demo"
    rc = load_tool("demo").main(["--config", str(config), "--input", str(camvid_tiny / "val"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name.split("_")[-1] for p in out.glob("*.png")) == ["overlay.png", "overlay.png", "panel.png",
                                                                      "panel.png"]
