"""tools/train.py: bad input ends in one ``error:`` line naming it, not a traceback."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "synthetic" / "spx_r18.yaml")


def test_missing_data_and_unreadable_checkpoint_are_named(load_tool, tmp_path, capsys) -> None:
    train = load_tool("train")
    no_data = ["data.root=" + str(tmp_path / "nowhere"), "data.synthetic.generate=false"]
    assert train.main(["--config", CONFIG, "--work-dir", str(tmp_path / "w"), "--opts", *no_data]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "nowhere") in err and "Traceback" not in err

    bad = tmp_path / "latest.pth"
    bad.write_bytes(b"not a checkpoint")
    tiny_data = ["data.root=" + str(tmp_path / "syn"),
                 "data.synthetic={generate: true, train: 4, val: 2, size: [64, 64]}"]
    assert train.main(["--config", CONFIG, "--work-dir", str(tmp_path / "w"), "--resume", str(bad),
                       "--no-progress", "--opts", *tiny_data]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
