#!/usr/bin/env python
"""Issue 13's ablations at a glance: every option against its reference, paired by seed.

    python benchmarks/ablation_ledger.py                 # print the ledger as markdown
    python benchmarks/ablation_ledger.py --write         # also the README's ledger section and the plot

Reads ``benchmarks/results/camvid/ablations/ledger.yaml`` (one entry per comparison: the option, the config it
was tried on, ``reference`` and ``variant`` as seed -> run name, and whether it was kept) and each run's final
val evaluation, ``<run>.metrics.json`` beside it. For every entry the table gives each side's mIoU by seed, the
seeds both sides have, the difference seed for seed over those (a seed on one side only is shown, not
differenced), its mean, and the mean difference on the classes issue 13 names as thin (sign, pole, pedestrian,
bicyclist); :func:`summarise` also returns each side's mean over all its seeds. With ``--write`` the table
goes between the ``ablation-ledger`` markers of ``benchmarks/README.md`` and the paired differences to
``results/camvid/ablation_ledger.png``.

Seeds of one config spread by about 1 mIoU on this recipe (``spx_lite0_mid``: 62.3-63.3 over five), so a mean
difference under that, on two seeds, is noise: the plot shows every seed's difference so it can be seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / "benchmarks" / "results" / "camvid" / "ablations" / "ledger.yaml"
THIN = ("sign", "pole", "pedestrian", "bicyclist")
START, END = "<!-- ablation-ledger:start -->", "<!-- ablation-ledger:end -->"
KEYS = {"option", "opts", "model", "section", "reference", "variant", "kept"}


def load_ledger(path: Path) -> list[dict]:
    """The ledger's entries, checked: each has the schema's keys, seeds are ints and every run's metrics exist."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ledger file (see this script's docstring for its schema)")
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i} ({entry.get('option', '?') if isinstance(entry, dict) else entry!r})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        missing, unknown = KEYS - set(entry), set(entry) - KEYS
        if missing or unknown:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        for side in ("reference", "variant"):
            runs = entry[side]
            if not isinstance(runs, dict) or not runs or not all(isinstance(s, int) for s in runs):
                raise ValueError(f"{where}: '{side}' must map seeds (ints) to run names, got {runs!r}")
            for seed, run in runs.items():
                if not (path.parent / f"{run}.metrics.json").is_file():
                    raise FileNotFoundError(f"{where}: '{side}' seed {seed}: no {path.parent / run}.metrics.json")
    return entries


def _metrics(folder: Path, run: str) -> dict:
    return json.loads((folder / f"{run}.metrics.json").read_text())


def summarise(entry: dict, folder: Path) -> dict:
    """Means, paired differences and thin-class differences of one entry (IoU in %)."""
    ref = {seed: _metrics(folder, run) for seed, run in entry["reference"].items()}
    var = {seed: _metrics(folder, run) for seed, run in entry["variant"].items()}
    paired = sorted(set(ref) & set(var))
    deltas = [var[s]["mIoU"] - ref[s]["mIoU"] for s in paired]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    def class_delta(name: str) -> float | None:
        pairs = [(var[s]["per_class"].get(name), ref[s]["per_class"].get(name)) for s in paired]
        if not pairs or any(v is None or r is None for v, r in pairs):
            return None
        return mean([v["IoU"] - r["IoU"] for v, r in pairs])

    return {
        "option": entry["option"], "model": entry["model"], "kept": bool(entry["kept"]), "section": entry["section"],
        "reference": [ref[s]["mIoU"] for s in sorted(ref)], "variant": [var[s]["mIoU"] for s in sorted(var)],
        "reference_mean": mean([m["mIoU"] for m in ref.values()]),
        "variant_mean": mean([m["mIoU"] for m in var.values()]),
        "seeds": paired, "deltas": deltas, "mean_delta": mean(deltas),
        "thin": {name: class_delta(name) for name in THIN},
    }


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.1f}" if sign else f"{value:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| option | on | reference, by seed | with it, by seed | paired seeds | difference, seed for seed "
        "| mean difference | " + " | ".join(THIN) + " | kept |",
        "|---|---|---|---|---|---|---:|" + "---:|" * len(THIN) + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['option']} | `{r['model']}` | {' / '.join(_fmt(v) for v in r['reference'])} "
            f"| {' / '.join(_fmt(v) for v in r['variant'])} | {', '.join(str(seed) for seed in r['seeds'])} "
            f"| {' / '.join(_fmt(d, True) for d in r['deltas']) or 'no seed in common'} "
            f"| {'**' + _fmt(r['mean_delta'], True) + '**' if r['deltas'] else ''} | "
            + " | ".join(_fmt(r["thin"][c], True) for c in THIN)
            + f" | {'yes' if r['kept'] else 'no'} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["deltas"]]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2), dpi=120)
    for y, r in enumerate(rows):
        color = "tab:green" if r["kept"] else "tab:gray"
        ax.scatter(r["deltas"], [y] * len(r["deltas"]), s=18, color=color, alpha=0.8, zorder=3)
        ax.scatter([r["mean_delta"]], [y], s=80, marker="|", color="black", zorder=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['option']} ({r['model']})" for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the ledger's order, top to bottom
    ax.set_xlabel("val mIoU difference to its reference, seed for seed (dots; bar: mean)")
    ax.set_title("Issue 13 ablations on CamVid (green: kept)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def update_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} markers to write the ledger between")
    text = text[: text.index(START)] + f"{START}\n{section}\n{END}" + text[text.index(END) + len(END):]
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=Path, default=LEDGER, help="the ledger YAML (runs' metrics beside it)")
    parser.add_argument("--write", action="store_true", help="write the README section and the plot")
    parser.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "results" / "camvid" / "ablation_ledger.png")
    args = parser.parse_args(argv)

    rows = [summarise(entry, args.ledger.parent) for entry in load_ledger(args.ledger)]
    table = markdown(rows)
    print(table)
    if args.write:
        plot(rows, args.plot)
        section = (f"Made by `python benchmarks/ablation_ledger.py --write` from `{args.ledger.relative_to(ROOT)}`"
                   if args.ledger.is_relative_to(ROOT) else "Made by `python benchmarks/ablation_ledger.py --write`")
        section += (": val mIoU (%) of each run's final evaluation, the study's recipe; differences seed for seed, "
                    "the thin classes' IoU differences averaged over the paired seeds.\n\n" + table
                    + f"\n\n![Paired differences]({Path(os.path.relpath(args.plot, args.readme.parent)).as_posix()})")
        update_readme(args.readme, section)
        print(f"wrote {args.readme} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
