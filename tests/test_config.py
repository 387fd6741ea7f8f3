"""YAML configs: _base_ inheritance, dotted overrides, unknown keys and wrong types."""

from pathlib import Path

import pytest

from spxseg.config import Config, ConfigError, load_config, load_tool_config, model_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_inheritance_merges_recursively(tmp_path):
    write(tmp_path / "base.yaml", "model: {num_classes: 7, backbone: {name: resnet18}}\ntrain: {lr: 0.5}\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nmodel: {cell: 4}\ntrain: {max_iters: 10}\n")
    cfg = load_config(child)
    assert cfg.model.num_classes == 7 and cfg.model.backbone.name == "resnet18" and cfg.model.cell == 4
    assert cfg.model.backbone.pretrained is False  # default kept
    assert cfg.train.lr == 0.5 and cfg.train.max_iters == 10


def test_overrides_are_yaml_typed(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", "data.crop_size=[64, 128]", "model.backbone.checkpoint=null",
                             "train.grad_clip=2", "model.tokenizer.dual_path=true"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.crop_size == [64, 128]
    assert cfg.model.backbone.checkpoint is None
    assert cfg.train.grad_clip == 2.0
    assert cfg.model.tokenizer.dual_path is True


def test_mapping_overrides_and_empty_sections_keep_the_other_keys(tmp_path):
    write(tmp_path / "base.yaml", "model: {num_classes: 7, backbone: {name: resnet50, pretrained: true}}\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nmodel:\n  # cell: 4\ntrain:\n")
    cfg = load_config(child, ["model.backbone={name: resnet18}", "data.coco.categories.7=0"])
    assert cfg.model.num_classes == 7  # the empty 'model:' section kept the base's
    assert cfg.model.backbone.name == "resnet18" and cfg.model.backbone.pretrained is True  # merged, not replaced
    assert cfg.data.coco.categories == {7: 0}  # an int key through a dotted override
    assert load_config(child, ["model.cell=2"]).model.cell == 2


def test_a_mapping_value_is_replaced_not_merged(tmp_path):
    write(tmp_path / "base.yaml", "data: {coco: {categories: {1: 0, 2: 1}, background: 0}}\n")
    cleared = write(tmp_path / "cleared.yaml", "_base_: base.yaml\ndata:\n  coco: {categories: null}\n")
    other = write(tmp_path / "other.yaml", "_base_: base.yaml\ndata:\n  coco: {categories: {5: 0}}\n")
    assert load_config(cleared).data.coco.categories is None  # null: derive the mapping from the json
    assert load_config(cleared).data.coco.background == 0  # the section itself still merged
    assert load_config(other).data.coco.categories == {5: 0}
    assert load_config(other, ["data.coco={categories: {8: 1}}"]).data.coco.categories == {8: 1}


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train: {max_iter: 10}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_iter'; did you mean 'train.max_iters'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="model.tokenizer.head'; did you mean 'model.tokenizer.heads'"):
        load_config(None, ["model.tokenizer.head=4"])
    with pytest.raises(ConfigError, match="unknown config key 'trian'; did you mean 'train'"):
        load_config(None, ["trian.lr=1"])


def test_wrong_types_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.max_iters: expected int, got 'ten'"):
        load_config(None, ["train.max_iters=ten"])
    with pytest.raises(ConfigError, match="model.cell: expected int, got 4.5"):
        load_config(None, ["model.cell=4.5"])
    with pytest.raises(ConfigError, match="data.crop_size: expected a list"):
        load_config(None, ["data.crop_size=512"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(None, ["train.lr"])
    for spelled in ("nan", "inf", "-infinity", ".nan", ".inf"):
        with pytest.raises(ConfigError, match="train.lr: expected float"):
            load_config(None, [f"train.lr={spelled}"])
    with pytest.raises(ConfigError, match=r"out_indices\[1\]: expected int, got 'a'"):  # the inner error
        load_config(None, ["model.backbone.out_indices=[1, a]"])


def test_out_of_range_values_are_refused(tmp_path):
    # -1 read as "off" would resize every test image to a 1-pixel short side
    with pytest.raises(ConfigError, match="data.test_short_side: .* got -1"):
        load_config(None, ["data.test_short_side=-1"])
    assert load_config(None, ["data.test_short_side=0"]).data.test_short_side == 0  # keep the size


def test_missing_and_circular_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_tool_config_checks_the_checkpoint(tmp_path):
    write(tmp_path / "c.yaml", "train: {max_iters: 7}\n")
    assert load_tool_config(tmp_path / "c.yaml", ["train.lr=0.5"]).train.lr == 0.5
    with pytest.raises(ConfigError, match="checkpoint not found: .*missing.pth"):
        load_tool_config(tmp_path / "c.yaml", None, tmp_path / "missing.pth")
    (tmp_path / "ok.pth").write_bytes(b"")
    assert load_tool_config(tmp_path / "c.yaml", None, tmp_path / "ok.pth").train.max_iters == 7


SHIPPED = sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_load(path):
    from spxseg.data import dataset_class

    cfg = load_config(CONFIGS / path)
    assert isinstance(cfg, Config)
    assert cfg.model.num_classes == len(dataset_class(cfg.data.dataset).class_names) in (11, 19, 150)
    assert cfg.data.mean is not None and len(cfg.data.mean) == 3  # resolved from the backbone


def test_shipped_configs_train_into_their_own_work_dirs():
    """Two shipped configs with one work dir would overwrite each other's checkpoints, and ``--resume`` would
    pick up the other's: each names its own (tools/train.py falls back to ``work_dirs/<config name>``, which
    ``cityscapes/spx_r50.yaml`` and ``ade20k/spx_r50.yaml`` share)."""
    work_dirs = {path: load_config(CONFIGS / path).work_dir for path in SHIPPED}
    assert all(work_dirs.values()), [str(p) for p, w in work_dirs.items() if not w]
    assert len(set(work_dirs.values())) == len(work_dirs), work_dirs


def test_model_config_accepts_sections_and_whole_configs():
    assert model_config({"num_classes": 3}).num_classes == 3
    assert model_config({"model": {"num_classes": 4}}).num_classes == 4
    assert model_config(Config()).num_classes == 19
