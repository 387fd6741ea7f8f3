"""build_dataloader: batching, collate of mixed sizes, (seed, epoch) determinism, samplers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from spxseg.config import Config, DataConfig
from spxseg.data import EpochRandomSampler, build_dataloader, build_dataset, eval_collate


def make_tree(root: Path, split: str, sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(len(sizes))
    for i, (h, w) in enumerate(sizes):
        d_img = root / "leftImg8bit" / split / "c"
        d_gt = root / "gtFine" / split / "c"
        d_img.mkdir(parents=True, exist_ok=True)
        d_gt.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(d_img / f"c_{i:06d}_000019_leftImg8bit.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        )
        lab = np.full((h, w), 7, np.uint8)
        lab[h // 2 :] = 26
        lab[:, : w // 3] = 23
        cv2.imwrite(str(d_gt / f"c_{i:06d}_000019_gtFine_labelIds.png"), lab)


@pytest.fixture
def cfg(tmp_path: Path) -> DataConfig:
    make_tree(tmp_path, "train", [(40, 64)] * 6)
    make_tree(tmp_path, "val", [(40, 64), (40, 64), (36, 50)])
    return DataConfig(root=str(tmp_path), base_size=[40, 64], crop_size=[32, 48], scale_range=[0.5, 1.5])


def batches(loader, n: int, epoch: int | None = None) -> list[dict]:
    if epoch is not None:
        loader.set_epoch(epoch)
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            break
    assert len(out) == n, f"the loader gave {len(out)} batches, expected {n}"
    return out


def test_train_batches_and_determinism(cfg: DataConfig) -> None:
    ds = build_dataset(cfg, "train")
    loader = build_dataloader(ds, 4, train=True, num_workers=0, seed=3)
    assert isinstance(loader.sampler, EpochRandomSampler) and loader.drop_last
    assert len(loader) == 1  # 6 items, batch 4, drop_last
    b = batches(loader, 1, epoch=0)[0]
    assert b["image"].shape == (4, 3, 32, 48) and b["image"].dtype == torch.float32
    assert b["label"].shape == (4, 32, 48) and b["label"].dtype == torch.int64 and len(b["path"]) == 4
    again = batches(loader, 1, epoch=0)[0]
    assert again["path"] == b["path"] and torch.equal(again["image"], b["image"])
    other = batches(build_dataloader(ds, 4, train=True, seed=3), 1, epoch=5)[0]
    assert other["path"] != b["path"] or not torch.equal(other["image"], b["image"])
    # a fresh loader with the same (seed, epoch) reproduces it
    fresh = batches(build_dataloader(ds, 4, train=True, seed=3), 1, epoch=0)[0]
    assert fresh["path"] == b["path"] and torch.equal(fresh["image"], b["image"])
    # iterating again without set_epoch moves on to a new epoch
    loader.set_epoch(0)
    first = [x["path"] for x in loader]
    second = [x["path"] for x in loader]
    assert len(first) == len(second) == 1 and all(len(paths) == 4 for paths in first + second)
    assert loader.epoch == 1 and first != second


def test_training_images_without_augmentation(cfg: DataConfig) -> None:
    """What tools/eval.py --split train scores: whole training images, labels at full size, every time alike."""
    ds = build_dataset(cfg, "train", augment=False)
    a, b = ds[0], ds[0]
    assert a["label"].shape == (40, 64) and torch.equal(a["image"], b["image"])
    assert build_dataset(cfg, "val", augment=True)[0]["label"].shape == (32, 48)  # the training crop


def test_persistent_workers_only_for_evaluation(cfg: DataConfig) -> None:
    with pytest.raises(ValueError, match="persistent_workers"):
        build_dataloader(build_dataset(cfg, "train"), 2, train=True, num_workers=1, persistent_workers=True)
    build_dataloader(build_dataset(cfg, "val"), 1, train=False, num_workers=1, persistent_workers=True)


def test_workers_reproducible(cfg: DataConfig) -> None:
    ds = build_dataset(cfg, "train")
    a = batches(build_dataloader(ds, 2, train=True, num_workers=1, seed=1), 2, epoch=2)
    b = batches(build_dataloader(ds, 2, train=True, num_workers=1, seed=1), 2, epoch=2)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b, strict=True):
        assert x["path"] == y["path"] and torch.equal(x["image"], y["image"])
        assert torch.equal(x["label"], y["label"])
    assert a[0]["path"] != a[1]["path"]  # two different batches, not one batch twice


def test_infinite_iterator(cfg: DataConfig) -> None:
    ds = build_dataset(cfg, "train")
    loader = build_dataloader(ds, 4, train=True, seed=0)
    it = loader.infinite(start_epoch=10)
    got = [next(it) for _ in range(3)]  # 1 batch per epoch: epochs 10, 11, 12
    assert loader.epoch == 12 and all(g["image"].shape[0] == 4 for g in got)
    again = next(build_dataloader(ds, 4, train=True, seed=0).infinite(start_epoch=11))
    assert again["path"] == got[1]["path"] and torch.equal(again["image"], got[1]["image"])


def test_eval_loader_mixed_sizes(cfg: DataConfig) -> None:
    ds = build_dataset(Config(data=cfg), "val")
    loader = build_dataloader(ds, 3, train=False)
    (b,) = list(loader)
    assert isinstance(b["image"], list) and [t.shape for t in b["label"]] == [(40, 64), (40, 64), (36, 50)]
    assert b["orig_size"] == [(40, 64), (40, 64), (36, 50)]
    same = list(build_dataloader(ds, 2, train=False))[0]
    assert same["image"].shape == (2, 3, 40, 64) and same["label"].shape == (2, 40, 64)
    assert [x["path"] for x in list(build_dataloader(ds, 1, train=False))] == [
        [str(ds.image_path(i))] for i in range(3)
    ]
    one = eval_collate([ds[2]])
    assert one["image"].shape == (1, 3, 36, 50)


def test_too_small_training_set(cfg: DataConfig) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(build_dataset(cfg, "train"), 16, train=True)


def test_distributed_sampler(cfg: DataConfig, tmp_path: Path) -> None:
    ds = build_dataset(cfg, "train")
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        loader = build_dataloader(ds, 2, train=True, distributed=True, seed=4)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
        assert loader.sampler.seed == 4
        loader.set_epoch(3)
        assert loader.sampler.epoch == 3
        auto = build_dataloader(build_dataset(cfg, "val"), 1, train=False)  # auto-detected
        assert isinstance(auto.sampler, DistributedSampler) and not auto.sampler.shuffle
    finally:
        torch.distributed.destroy_process_group()
