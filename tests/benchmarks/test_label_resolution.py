"""benchmarks/label_resolution.py: block labels on hand-made maps, and the table on a small CamVid folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("label_resolution")


def test_block_labels_keep_each_blocks_most_frequent_labelled_class(script) -> None:
    labels = torch.zeros(1, 6, 8, dtype=torch.int64)
    labels[:, :, 5] = 2  # a pole one pixel wide: a quarter of the blocks it crosses at stride 4
    labels[:, 4:, :4] = 1  # a 2x4 patch: the most frequent class of the bottom-left blocks' labelled pixels
    labels[:, :2, 6:] = 255  # unlabelled; the block's other pixels decide
    blocks = script.block_labels(labels, 4, 3)
    assert blocks.shape == (1, 6, 8)
    assert (blocks[:, :4] == 0).all()  # the pole is gone, the unlabelled corner takes its block's class
    assert (blocks[:, 4:, :4] == 1).all() and (blocks[:, 4:, 4:] == 0).all()  # a 2x4 block of the padded grid
    assert torch.equal(script.block_labels(labels, 1, 3), labels)
    wholly_void = torch.full((1, 4, 4), 255)
    assert (script.block_labels(wholly_void, 2, 3) == 255).all()


def test_table_on_a_small_camvid_folder(script, tmp_path, make_camvid) -> None:
    import yaml

    make_camvid(tmp_path / "camvid", "val", n=2, size=(64, 96))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"num_classes": 11}, "data": {
        "dataset": "camvid", "root": str(tmp_path / "camvid"), "test_resize_labels": True}}))
    result = script.label_resolution(str(config), [1, 4, 16])
    assert result[1]["mIoU"] == 100.0
    assert 0 < result[16]["mIoU"] < result[4]["mIoU"] < 100.0
