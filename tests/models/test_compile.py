"""The full model compiles as one graph: no graph breaks under torch._dynamo, for any input size."""

from __future__ import annotations

import pytest
import torch

from spxseg import build_model

SMALL = {"num_classes": 5, "backbone": {"name": "resnet18"}, "channels": 32, "cell": 4,
         "tokenizer": {"iters": 2, "heads": 2}, "transformer": {"layers": 1, "dim": 32, "heads": 2}}


pytestmark = pytest.mark.slow  # torch.compile traces: tens of seconds each


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SMALL)


@pytest.mark.parametrize("size, train", [((64, 64), False), ((50, 70), False), ((64, 96), True)])
def test_no_graph_breaks(model, size, train):
    """Eval and training forwards, unpadded and padded inputs: one graph, nothing falls back to Python."""
    torch._dynamo.reset()
    model.train(train)
    x = torch.randn(2 if train else 1, 3, *size)
    with torch.set_grad_enabled(train):
        explained = torch._dynamo.explain(model)(x)
    reasons = [r.reason for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


def test_no_graph_breaks_dual_path_bf16():
    torch._dynamo.reset()
    model = build_model({**SMALL, "tokenizer": {"iters": 2, "heads": 2, "dual_path": True}}).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
