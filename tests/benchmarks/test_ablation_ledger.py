"""benchmarks/ablation_ledger.py: paired differences from the runs' metrics, and errors that name what is wrong."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture(scope="module")
def ledger_script(load_benchmark):
    return load_benchmark("ablation_ledger")


def _write_run(folder, name: str, miou: float, sign: float) -> None:
    per_class = {"sign": {"IoU": sign}, "pole": {"IoU": 1.0}, "pedestrian": {"IoU": 30.0}, "bicyclist": {"IoU": 50.0}}
    (folder / f"{name}.metrics.json").write_text(json.dumps({"mIoU": miou, "per_class": per_class}))


def _entry(**changes) -> dict:
    entry = {"option": "an option", "opts": "model.x=1", "model": "spx_lite0_mid", "section": "s",
             "reference": {0: "ref_s0", 1: "ref_s1"}, "variant": {0: "var_s0", 1: "var_s1", 2: "var_s2"}, "kept": False}
    return {**entry, **changes}


def test_pairs_by_seed(ledger_script, tmp_path) -> None:
    _write_run(tmp_path, "ref_s0", 60.0, 20.0)
    _write_run(tmp_path, "ref_s1", 62.0, 30.0)
    _write_run(tmp_path, "var_s0", 61.0, 25.0)
    _write_run(tmp_path, "var_s1", 61.4, 28.0)
    _write_run(tmp_path, "var_s2", 70.0, 90.0)  # seed 2 has no reference: in the variant's mean, not in a difference
    ledger = tmp_path / "ledger.yaml"
    ledger.write_text(yaml.safe_dump([_entry()]))

    (row,) = [ledger_script.summarise(e, tmp_path) for e in ledger_script.load_ledger(ledger)]
    assert row["seeds"] == [0, 1]
    assert row["deltas"] == pytest.approx([1.0, -0.6])
    assert row["mean_delta"] == pytest.approx(0.2)
    assert row["reference_mean"] == pytest.approx(61.0)
    assert row["variant_mean"] == pytest.approx((61.0 + 61.4 + 70.0) / 3)
    assert row["thin"]["sign"] == pytest.approx((5.0 - 2.0) / 2)
    assert row["thin"]["pole"] == pytest.approx(0.0)
    table = ledger_script.markdown([row])
    assert "| 61.0 / 61.4 / 70.0 | 0, 1 | +1.0 / -0.6 | **+0.2** | +1.5 |" in table


def test_writes_between_the_readme_markers(ledger_script, tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{ledger_script.START}\nold\n{ledger_script.END}\nafter\n")
    ledger_script.update_readme(readme, "new table")
    assert readme.read_text() == f"before\n{ledger_script.START}\nnew table\n{ledger_script.END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        ledger_script.update_readme(readme, "new table")


@pytest.mark.parametrize("entry, message", [
    (_entry(variant={0: "missing_run"}), r"'variant' seed 0: no .*missing_run\.metrics\.json"),
    (_entry(reference={"zero": "ref_s0"}), "'reference' must map seeds"),
    (_entry(kep=True), r"unknown keys \['kep'\]"),
])
def test_bad_entries_are_named(ledger_script, tmp_path, entry, message) -> None:
    _write_run(tmp_path, "ref_s0", 60.0, 20.0)
    _write_run(tmp_path, "ref_s1", 60.0, 20.0)
    for seed in range(3):
        _write_run(tmp_path, f"var_s{seed}", 60.0, 20.0)
    ledger = tmp_path / "ledger.yaml"
    ledger.write_text(yaml.safe_dump([entry]))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ledger_script.load_ledger(ledger)


def test_the_repository_ledger_loads(ledger_script) -> None:
    """Every run the committed ledger names has its metrics file, and every entry summarises."""
    entries = ledger_script.load_ledger(ledger_script.LEDGER)
    assert entries
    rows = [ledger_script.summarise(entry, ledger_script.LEDGER.parent) for entry in entries]
    assert sum(bool(row["deltas"]) for row in rows) > len(rows) // 2  # most comparisons pair at least one seed
