"""benchmarks/ab_latency.py: variants parsed as documented, each built as its overrides say, figures written."""

from __future__ import annotations

import json

import pytest
import yaml

TINY = {"num_classes": 5, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}


@pytest.fixture(scope="module")
def ab(load_benchmark):
    return load_benchmark("ab_latency")


def test_parse_variant(ab):
    dense = ab.parse_variant(["dense", "model.fuse_conv=full"], "a.yaml")
    assert dense == ("dense", "a.yaml", ["model.fuse_conv=full"])
    assert ab.parse_variant(["light", "b.yaml", "model.cell=2"], "a.yaml") == ("light", "b.yaml", ["model.cell=2"])
    with pytest.raises(SystemExit, match="first word is the variant's label"):
        ab.parse_variant(["model.fuse_conv=full"], "a.yaml")
    with pytest.raises(SystemExit, match="no config"):
        ab.parse_variant(["plain"], None)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ab.parse_variant(["plain", "a.yaml", "fuse"], None)


def test_variants_timed_with_their_overrides(ab, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY}))
    out = tmp_path / "ab.json"
    ab.main(["--config", str(config), "--variant", "separable", "--variant", "dense", "model.fuse_conv=full",
             "--size", "64", "64", "--iters", "2", "--rounds", "2", "--json", str(out)])
    rows = {row["variant"]: row for row in json.loads(out.read_text())["variants"]}
    assert rows["dense"]["overrides"] == ["model.fuse_conv=full"]
    # a dense 3x3 over C=32 channels has 32*32*9 weights where the depthwise-separable one has 32*9 + 32*32
    assert rows["dense"]["params"] - rows["separable"]["params"] == 32 * 32 * 9 - (32 * 9 + 32 * 32)
    assert all(row["iters"] == 2 and row["median_ms"] > 0 for row in rows.values())
    assert "dense" in capsys.readouterr().out


def test_decoder_mode_replays_the_backbone_exactly(ab, tmp_path):
    import torch

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY}))
    torch.manual_seed(0)
    model = ab.build_variant(str(config), [])
    x = torch.randn(1, 3, 50, 70)  # not a multiple of the model's size: the replay must pad as the model does
    with torch.no_grad():
        expected = model.predict(x).labels
        backbone_alone = ab.replay_backbone(model, x)
        assert len(backbone_alone()) == len(model.backbone.channels)
        assert torch.equal(model.predict(x).labels, expected)  # the replayed stage maps: the same labels
        # whatever the input now, the backbone's output is the replayed one: only the decoder runs
        other = model.predict(torch.randn_like(x)).labels
        assert torch.equal(other, expected)

    out = tmp_path / "ab.json"
    ab.main(["--config", str(config), "--variant", "a", "--variant", "b", "model.transformer.layers=2",
             "--size", "50", "70", "--iters", "2", "--rounds", "2", "--decoder", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["decoder_only"] and result["backbone"]["median_ms"] > 0
    assert all(row["x_backbone"] > 0 for row in result["variants"])
    with pytest.raises(SystemExit, match="not be 'backbone'"):
        ab.main(["--config", str(config), "--variant", "backbone", "--variant", "b", "--decoder"])


def test_backbone_mode_times_whole_models_against_the_unpadded_backbone(ab, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY}))
    out = tmp_path / "ab.json"
    ab.main(["--config", str(config), "--variant", "padded", "--variant", "unpadded", "model.pad_input=false",
             "--size", "50", "70", "--iters", "2", "--rounds", "2", "--backbone", "--json", str(out)])
    result = json.loads(out.read_text())
    assert not result["decoder_only"] and result["backbone"]["median_ms"] > 0
    rows = {row["variant"]: row for row in result["variants"]}
    assert rows["unpadded"]["overrides"] == ["model.pad_input=false"]
    assert all(row["x_backbone"] > 0 for row in rows.values())  # a ratio, not a timed target
    assert "unpadded" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--backbone is for whole models"):
        ab.main(["--config", str(config), "--variant", "a", "--variant", "b", "--decoder", "--backbone"])
