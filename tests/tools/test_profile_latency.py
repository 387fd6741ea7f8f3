"""tools/profile_latency.py: runs on the CPU at a small size, writes the documented JSON, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from spxseg import benchmark as prof

REPO = Path(__file__).resolve().parents[2]
from conftest import FIXTURES  # noqa: E402

TINY = {"num_classes": 19, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
        "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 64, "heads": 2}}
KEYS = {"model", "device", "dtype", "size", "batch", "median_ms", "p90_ms", "fps", "params_M", "gflops", "peak_mem_MiB"}


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("profile_latency")


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    data = {"model": TINY, "data": {"dataset": "cityscapes", "root": str(FIXTURES / "cityscapes_mini")}}
    path.write_text(yaml.safe_dump(data))
    return path


def test_cpu_run_writes_json_rows(tool, config, tmp_path, capsys):
    out = tmp_path / "latency.json"
    threads = torch.get_num_threads()
    rc = tool.main(["--config", str(config), "--size", "64", "128", "--device", "cpu", "--baselines",
                    "lraspp_mobilenet_v3_large", "--warmup", "1", "--iters", "2", "--rounds", "1", "--json", str(out)])
    torch.set_num_threads(threads)
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["spx_resnet18", "lraspp_mobilenet_v3_large"]
    for row in rows:
        assert KEYS <= row.keys()
        assert row["device"] == "cpu" and row["dtype"] == "fp32" and row["size"] == [64, 128] and row["batch"] == 1
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["fps"] > 0
        assert row["params_M"] > 0 and row["gflops"] > 0
        assert row["peak_mem_MiB"] is None  # CUDA only
        assert row["threads"] >= 1 and row["mode"] == "model"
    stages = rows[0]["stages_ms"]
    assert set(stages) == {"backbone", "pixel_decoder", "tokenizer", "transformer", "head", "total"}
    assert all(v > 0 for k, v in stages.items() if k != "head")
    printed = capsys.readouterr().out
    assert "spx_resnet18" in printed and "lraspp_mobilenet_v3_large" in printed and "per stage" in printed


def test_bf16_autocast_and_backbone_baseline(tool, config, tmp_path):
    out = tmp_path / "bf16.json"
    rc = tool.main(["--config", str(config), "--size", "64", "96", "--dtype", "bf16", "--baselines", "backbone",
                    "--warmup", "0", "--iters", "1", "--no-breakdown", "--no-flops", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["spx_resnet18", "backbone"]
    assert all(r["dtype"] == "bf16" and r["gflops"] is None for r in rows)


@pytest.mark.skipif(not (FIXTURES / "cityscapes_mini").is_dir(), reason="shared fixtures not available")
def test_end_to_end_mode_on_real_images(tool, config, tmp_path, capsys):
    out = tmp_path / "e2e.json"
    rc = tool.main(["--config", str(config), "--size", "64", "128", "--dataset", "val",  # default baselines
                    "--warmup", "0", "--iters", "2", "--no-flops", "--json", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())  # the backbone baseline (features, no class scores) is left out
    assert row["mode"] == "end-to-end" and row["median_ms"] > 0
    printed = capsys.readouterr().out
    assert "inside the timer" in printed and "leaves out the 'backbone' baseline" in printed


def test_labels_mode_times_the_lean_path(tool, config, tmp_path, monkeypatch):
    """--labels: ours runs predict (counted), the backbone baseline its forward; model-only and end-to-end."""
    from spxseg.models import SuperpixelModel

    calls = []
    real = SuperpixelModel.predict
    monkeypatch.setattr(SuperpixelModel, "predict", lambda self, *a, **k: calls.append(k) or real(self, *a, **k))
    out = tmp_path / "labels.json"
    rc = tool.main(["--config", str(config), "--size", "64", "96", "--labels", "--baselines", "backbone",
                    "--warmup", "0", "--iters", "2", "--rounds", "1", "--no-flops", "--no-breakdown",
                    "--json", str(out)])
    assert rc == 0 and len(calls) >= 2
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert rows["spx_resnet18"]["output"] == "labels" and rows["backbone"]["output"] == "probs"
    if (FIXTURES / "cityscapes_mini").is_dir():
        calls.clear()
        rc = tool.main(["--config", str(config), "--size", "64", "128", "--dataset", "val", "--labels",
                        "--warmup", "0", "--iters", "2", "--no-flops", "--json", str(out)])
        assert rc == 0 and calls and all(k.get("size") for k in calls)  # labels straight at the original size
        (row,) = json.loads(out.read_text())
        assert row["mode"] == "end-to-end" and row["output"] == "labels"


def test_end_to_end_cuda_graphs_need_compile(tool, config, capsys):
    with pytest.raises(SystemExit) as exc:
        tool.main(["--config", str(config), "--size", "64", "64", "--dataset", "--cuda-graphs"])
    assert exc.value.code == 2
    assert "add --compile" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--dtype", "fp16"], "fp16 is not supported on the CPU"),
    (["--baselines", "nope"], "unknown baseline"),
    (["--cuda-graphs"], "CUDA graphs need --device cuda"),
    (["--freeze"], "--freeze is a torch.compile option: add --compile"),
    (["--compile", "--freeze", "--compile-mode", "max-autotune"], "cannot be combined with --compile-mode"),
])
def test_clear_errors(tool, config, capsys, args, message):
    rc = tool.main(["--config", str(config), "--size", "64", "64", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_flops_count_attention_on_every_device():
    from spxseg import benchmark as prof

    q = torch.randn(1, 2, 64, 16)
    flops = prof.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * 2 * 64 * 64 * 16)  # QK^T and AV, 2 FLOPs per multiply-add (was 0 on the CPU)


def test_timing_helpers():
    timing = prof.time_callable(lambda: None, "cpu", iters=5, warmup=1)
    assert len(timing.samples_ms) == 5 and timing.min_ms <= timing.median_ms <= timing.p90_ms
    timings = prof.time_interleaved({"a": lambda: None, "b": lambda: None}, "cpu", iters=4, rounds=2)
    assert [len(t.samples_ms) for t in timings.values()] == [4, 4]
    lin = torch.nn.Linear(8, 4)
    assert prof.count_flops(lambda: lin(torch.randn(3, 8))) == 2 * 3 * 8 * 4
