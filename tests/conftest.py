"""Shared test fixtures."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Read-only data shared next to the checkout (../shared): fixtures/, datasets/ (see their README.md files)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"  # the one place tests find them: ``from conftest import FIXTURES``
# the small superpixel model of tests/models (resnet18, C=32, cell 4, one global layer): ``from conftest import
# SMALL_MODEL``; a dict of model.* keys for build_model
SMALL_MODEL = {
    "num_classes": 5,
    "backbone": {"name": "resnet18"},
    "channels": 32,
    "cell": 4,
    "tokenizer": {"iters": 2, "heads": 2},
    "transformer": {"layers": 1, "dim": 64, "heads": 4},
}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder ``../shared`` (it may be absent: tests using its contents skip then)."""
    return SHARED


@pytest.fixture(scope="session")
def camvid_root(shared_dir: Path) -> Path:
    """The real CamVid frames (``../shared/datasets/camvid``: train 367, val 101); skips when absent."""
    root = shared_dir / "datasets" / "camvid"
    if not root.is_dir():
        pytest.skip(f"the shared CamVid copy is not here ({root} does not exist)")
    return root


@pytest.fixture(scope="session")
def make_camvid() -> Callable[..., list]:
    """``make_camvid(root, split="train", n=2, size=(24, 32), seed=0)`` writes ``n`` random images and labels
    (values 0..11) in the CamVid layout ``root/<split>/*.png`` + ``root/<split>annot/*.png``; returns the labels."""
    import cv2
    import numpy as np

    def make(root: Path, split: str = "train", n: int = 2, size: tuple[int, int] = (24, 32), seed: int = 0) -> list:
        rng = np.random.default_rng(seed)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        labels = []
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            cv2.imwrite(str(root / split / name), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            lab = rng.integers(0, 12, size, dtype=np.uint8)
            cv2.imwrite(str(root / f"{split}annot" / name), lab)
            labels.append(lab)
        return labels

    return make


@pytest.fixture(scope="session")
def load_tool() -> Callable[[str], ModuleType]:
    """``load_tool("eval")`` imports ``tools/eval.py`` as a module (tools/ is not a package), so tests call
    its ``main(argv)`` in-process instead of paying a second torch import in a subprocess."""

    return lambda name: _load_script(TOOLS / f"{name}.py", f"tool_{name}")


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """``load_benchmark("ab_latency")`` imports ``benchmarks/ab_latency.py`` as a module, as :func:`load_tool`."""
    return lambda name: _load_script(BENCHMARKS / f"{name}.py", f"benchmark_{name}")


def _load_script(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TouchPayload:
    """Unpickling it creates ``marker``: what a malicious checkpoint does, harmlessly
    (``from conftest import TouchPayload``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def tiny_training_config(root: Path, **train) -> dict:
    """A config for a few iterations of a tiny ResNet-18 model on the synthetic Cityscapes-layout set at ``root``
    (64x128, deterministic, CPU); ``train`` overrides the ``train:`` section (``from conftest import ...``)."""
    return {
        "model": {"num_classes": 19, "backbone": {"name": "resnet18"}, "cell": 4, "channels": 16,
                  "tokenizer": {"iters": 1, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2}},
        "data": {"dataset": "cityscapes", "root": str(root), "base_size": [64, 128], "crop_size": [64, 128],
                 "num_workers": 0, "pin_memory": False},
        "train": {"batch_size": 2, "lr": 1e-3, "warmup_iters": 1, "checkpoint_interval": 2, "log_interval": 2,
                  "deterministic": True, "amp": "none", "device": "cpu", **train},
    }
