import math

import pytest
import torch

from spxseg.engine.run_log import LossWindow
from spxseg.models.loss import LOGGED_TERMS


def _window(grad_clip, norms):
    window = LossWindow(torch.device("cpu"), grad_clip=grad_clip)
    for i, norm in enumerate(norms):
        window.add(torch.full((len(LOGGED_TERMS),), float(i)), torch.tensor(norm), data_time=0.1)
    return window


def test_window_averages_losses_and_finite_grad_norms_and_counts_clipped_steps():
    # an fp16 step with inf gradients is skipped by the scaler: neither averaged nor counted as clipped
    record = _window(1.0, [0.5, 2.0, math.inf]).record(iteration=3, lr=1e-3)
    assert record["loss"] == pytest.approx(1.0)  # terms 0, 1, 2
    assert record["grad_norm"] == pytest.approx(1.25)
    assert record["clipped"] == pytest.approx(1 / 3)
    assert record["data_time"] == pytest.approx(0.1)


def test_window_without_clipping_logs_the_norm_only_and_restarts_after_a_record():
    window = _window(None, [3.0, 5.0])
    record = window.record(iteration=2, lr=1e-3)
    assert record["grad_norm"] == pytest.approx(4.0) and "clipped" not in record
    window.add(torch.zeros(len(LOGGED_TERMS)), torch.tensor(1.0), data_time=0.0)
    assert window.record(iteration=3, lr=1e-3)["grad_norm"] == pytest.approx(1.0)
    assert math.isnan(_window(None, [math.inf]).record(iteration=1, lr=1e-3)["grad_norm"])
