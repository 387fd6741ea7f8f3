"""Writing the synthetic set to disk: :func:`generate_synthetic` (a folder in the Cityscapes layout) and
:func:`ensure_synthetic` (generate ``data.root`` when a config asks for it and it is missing).

Generation is deterministic: image ``i`` of a split uses
``np.random.default_rng([seed, split_index, i])``, so the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import write_png
from .canvas import SYNTHETIC_CLASSES
from .scene import render

SPLIT_CITIES = {"train": "synthtrain", "val": "synthval"}
MARKER = "synthetic.json"


def generate_synthetic(
    out_dir: str | Path,
    train: int = 300,
    val: int = 50,
    size: Sequence[int] = (128, 256),
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``train`` + ``val`` scenes to ``out_dir`` in the Cityscapes layout.

    ``leftImg8bit/{split}/<city>/<city>_<i:06d>_000019_leftImg8bit.png`` and
    ``gtFine/{split}/<city>/<city>_<i:06d>_000019_gtFine_labelIds.png`` (Cityscapes label ids).
    Deterministic: the same arguments write the same bytes. Returns ``out_dir``.

    ``out_dir`` must be missing or empty, so that two sets never mix; ``overwrite`` replaces a
    synthetic set written there before (and nothing else: other files are never deleted).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"synthetic size must be at least 32x32, got {h}x{w}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty: choose a new folder, or overwrite the synthetic set there "
                                  "(tools/make_synthetic.py --overwrite)")
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} holds files but no synthetic set ({MARKER} is missing): not deleting them")
        for name in ("leftImg8bit", "gtFine"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MARKER).unlink()
    jobs = [("train", 0, i) for i in range(int(train))] + [("val", 1, i) for i in range(int(val))]
    for split in ("train", "val"):
        city = SPLIT_CITIES[split]
        (out / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (out / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
    for split, sid, i in tqdm(
        jobs, desc=f"synthetic scenes -> {out}", unit="img", disable=not progress, dynamic_ncols=True
    ):
        img, lab = render(h, w, np.random.default_rng([int(seed), sid, i]))
        city = SPLIT_CITIES[split]
        stem = f"{city}_{i:06d}_000019"
        write_png(out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img, rgb=True)
        write_png(out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab, rgb=False)
    meta = {
        "generator": "spxseg.data.synthetic",
        "train": int(train),
        "val": int(val),
        "size": [h, w],
        "seed": int(seed),
        "classes": SYNTHETIC_CLASSES,
    }
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ensure_synthetic(data_cfg, progress: bool = True) -> bool:
    """Generate the synthetic set into ``data_cfg.root`` if ``data_cfg.synthetic.generate`` is
    true and the root does not exist (or is an empty folder). Returns True when it generated.

    The explicit generation step (``tools/train.py`` runs it before training; building a dataset
    never writes). Generation writes to a temporary sibling folder that is renamed into place at
    the end, so an interrupted run never leaves a half-written set at ``root`` and a reader sees
    either no set or a complete one. Concurrent callers (e.g. one per machine on a shared folder)
    each generate; the first rename wins, the others discard theirs.
    """
    from spxseg.config import data_config

    cfg = data_config(data_cfg)
    syn = cfg.synthetic
    root = Path(cfg.root)
    empty_folder = root.is_dir() and not any(root.iterdir())  # counts as missing
    if not syn.generate or (root.exists() and not empty_folder):
        return False  # not asked for, or already there
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        generate_synthetic(tmp, syn.train, syn.val, tuple(syn.size), syn.seed, progress=progress)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():
                raise
            return False  # another process finished first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True
