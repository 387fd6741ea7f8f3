"""benchmarks/superpixel_oracle.py: its rows and its recall chain on a model whose every superpixel says class 0."""

from __future__ import annotations

import pytest
import torch

TINY = {"num_classes": 11, "backbone": {"name": "resnet18"}, "channels": 16, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2}}


@pytest.fixture(scope="module")
def oracle_script(load_benchmark):
    return load_benchmark("superpixel_oracle")


def test_a_classifier_that_always_says_class_zero(oracle_script, tmp_path, make_camvid) -> None:
    from spxseg.config import Config, from_dict, to_dict
    from spxseg.models import build_model

    make_camvid(tmp_path / "camvid", "val", n=2, size=(64, 96))
    cfg = from_dict(Config, {"model": TINY, "data": {"dataset": "camvid", "root": str(tmp_path / "camvid"),
                                                     "test_resize_labels": True}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():  # every superpixel: class 0, whatever its features
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.arange(11) == 0).mul_(20.0)
    checkpoint = tmp_path / "zero.pth"
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "iteration": 1}, checkpoint)

    result = oracle_script.oracle(str(checkpoint))
    assert set(result) == {"model", "oracle", "hard", "recall_chain", "false_positives"}
    # both projections of one class everywhere label every pixel 0
    assert result["hard"] == result["model"]
    assert result["model"]["per_class_IoU"]["sky"] > 0
    assert all(v == 0 for c, v in result["model"]["per_class_IoU"].items() if c != "sky")
    # the oracle uses the labels: random labels give every class some IoU
    assert sum(v > 0 for v in result["oracle"]["per_class_IoU"].values()) > 5
    chain = result["recall_chain"]
    names = list(chain["carried"])
    assert chain["recognised"]["sky"] == 100.0 and chain["kept"]["sky"] == 100.0
    assert all(chain["recognised"][c] == 0.0 for c in chain["recognised"] if c != "sky")
    # random labels: a superpixel's histogram peaks at some class, not at every pixel's own
    assert all(0.0 <= v < 100.0 for v in chain["carried"].values()) and any(chain["carried"].values())
    # every false positive is a sky one, and its superpixel (predicted sky) is cut, misrecognised or not
    false_pos = result["false_positives"]
    assert false_pos["per_100"]["sky"] > 100 and all(false_pos["per_100"][c] == 0 for c in names if c != "sky")
    assert false_pos["spread"]["sky"] == 0.0
    assert false_pos["cut"]["sky"] + false_pos["misrecognised"]["sky"] == pytest.approx(100.0, abs=0.2)
