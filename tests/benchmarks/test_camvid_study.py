"""benchmarks/camvid_study.py: the timing it asks for is the timing its table reports."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def study_script(load_benchmark):
    return load_benchmark("camvid_study")


def test_iters_are_calls_per_round(study_script, monkeypatch) -> None:
    """--iters 10 --rounds 32 must time 320 calls per model in 32 rounds (the table's caption says so), not hand
    profile_models (whose ``iters`` counts all rounds) 10 calls that it spreads over 10 rounds."""
    from spxseg import benchmark as prof

    asked = []

    def fake_profile_models(models, size, batch, settings, iters, rounds, **kwargs):
        asked.append((iters, rounds))
        return []

    monkeypatch.setattr(prof, "profile_models", fake_profile_models)
    study_script.time_models(["deeplabv3plus_lite0"], (64, 64), threads=1, iters=10, rounds=32, opts=[])
    assert asked == [(320, 32), (320, 32)]
