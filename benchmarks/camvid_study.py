#!/usr/bin/env python
"""The CamVid study: our models against FPN and DeepLabV3+ on the same ImageNet Lite0 backbone.

    python benchmarks/camvid_study.py                      # train + evaluate + time all six, update README
    python benchmarks/camvid_study.py --skip-train         # re-time and re-tabulate finished trainings
    python benchmarks/camvid_study.py --gpu                # also time at 360x480 on CUDA (bf16, compiled)

1. Trains the models of ``configs/camvid/`` (``MODELS``: ours at three sizes, FPN, FPN with our hard-pixel
   loss, DeepLabV3+; one CPU recipe, the same data, schedule and evaluator) with
   ``tools/train.py``, ``--jobs`` at a time with ``--threads`` threads each (2 x 1 on a 2-core
   machine), each in ``WORK_ROOT/<model>`` with its log in ``train.log``. The final val
   evaluation (``metrics.json``) is what the table shows. Running the study again reuses finished
   trainings and resumes interrupted ones (their training time adds up over the processes).
2. After every training has finished (never while one runs), times them all and the Lite0 backbone
   alone with the project's profiler (:func:`spxseg.benchmark.profile_models`: random
   weights, model only, batch 1, fp32, interleaved rounds) at ``--size`` (360x480), and counts
   parameters and GFLOPs.
3. Writes ``OUT/<model>.json`` (metrics, per-class IoU, latency, params, GFLOPs, training time),
   ``OUT/study.json``, ``OUT/camvid_study.png`` (val mIoU against CPU latency) and the table between
   the ``camvid-study`` markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("spx_lite0_base", "spx_lite0_mid", "spx_lite0", "fpn_lite0", "fpn_lite0_ohem", "deeplabv3plus_lite0")
LABELS = {
    "spx_lite0_base": "spxseg, default sizes",
    "spx_lite0_mid": "spxseg, one transformer layer, dense fuse, context conv, cell 3",
    "spx_lite0": "spxseg, light",
    "fpn_lite0": "FPN (smp)",
    "fpn_lite0_ohem": "FPN (smp), hardest 10% of pixels",
    "deeplabv3plus_lite0": "DeepLabV3+ (smp)",
}
BACKBONE = "backbone (Lite0 alone)"
START, END = "<!-- camvid-study:start -->", "<!-- camvid-study:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated configs of configs/camvid/")
    parser.add_argument("--work-root", default="work_dirs/camvid_study", help="one work dir per model under it")
    parser.add_argument("--out", default="benchmarks/results/camvid", help="JSON and plot folder")
    parser.add_argument("--readme", default="benchmarks/README.md", help="README whose study section is rewritten")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per training and for timing (default 1)")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"), help="timing input")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per model and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--skip-train", action="store_true", help="use the finished trainings in WORK_ROOT")
    parser.add_argument("--gpu", action="store_true", help="also time on CUDA (bf16, compiled, CUDA graphs)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for every model (e.g. data.root=...)")
    return parser.parse_args(argv)


def train_one(name: str, work_dir: Path, threads: int, opts: list[str]) -> dict:
    """Run tools/train.py for one model in a fresh process; returns its final metrics and wall time."""
    from spxseg.engine.checkpoint import write_json

    work_dir.mkdir(parents=True, exist_ok=True)
    timing_file, metrics_file = work_dir / "train_time.json", work_dir / "metrics.json"
    if metrics_file.is_file() and timing_file.is_file():  # finished earlier: reuse, do not retrain or re-time
        print(f"[{time.strftime('%H:%M:%S')}] {name}: finished earlier in {work_dir}, reused", flush=True)
        return json.loads(metrics_file.read_text())
    # an interrupted training resumes (--resume): its time is the sum over the processes
    earlier = json.loads(timing_file.read_text())["train_s"] if timing_file.is_file() else 0.0
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    config = ROOT / "configs" / "camvid" / f"{name}.yaml"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config),
           "--work-dir", str(work_dir), "--resume", "--no-progress"] + (["--opts", *opts] if opts else [])
    print(f"[{time.strftime('%H:%M:%S')}] training {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(work_dir / "train.log", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = earlier + time.perf_counter() - t0
    if code != 0:
        if code == 130:  # stopped by a signal after saving a checkpoint: the next run resumes it
            write_json({"train_s": seconds, "threads": threads}, timing_file)
        raise RuntimeError(f"training {name} failed (exit {code}); see {work_dir / 'train.log'}")
    write_json({"train_s": seconds, "threads": threads}, timing_file)
    print(f"[{time.strftime('%H:%M:%S')}] {name} done in {seconds / 60:.1f} min", flush=True)
    return json.loads((work_dir / "metrics.json").read_text())


def time_models(names: list[str], size: tuple[int, int], threads: int, iters: int, rounds: int, opts: list[str],
                device: str = "cpu") -> dict[str, dict]:
    """Profile every model (and the Lite0 backbone alone) in one interleaved run; rows by name."""
    import torch

    from spxseg import benchmark as prof
    from spxseg.config import load_config
    from spxseg.engine.checkpoint import build_model_for_weights

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {}
    for name in names:
        cfg = load_config(ROOT / "configs" / "camvid" / f"{name}.yaml", opts)
        models[name] = build_model_for_weights(cfg.model)
    spx = next((n for n in names if n.startswith("spx")), None)
    if spx is not None:
        models[BACKBONE] = prof.build_baseline("backbone", 11, models[spx])
    if device == "cuda":
        settings = prof.RunSettings("cuda", "bf16", False, True, True)
    else:
        settings = prof.RunSettings("cpu", "fp32", False, False, False)
    # profile_models takes the calls over all rounds (and caps the rounds at that number): ``iters`` per round
    # here, as --iters says; passing it through gave 10 calls in 10 rounds where the table claimed 320 in 32
    calls = iters * rounds
    rows = prof.profile_models(models, size, 1, settings, iters=calls, rounds=rounds, breakdown=spx)
    # what a deployment runs: each model's label map (ours without the full-resolution probabilities)
    lean = prof.profile_models(models, size, 1, settings, iters=calls, rounds=rounds, flops=False, labels=True)
    results = {row.model: row.as_dict() for row in rows}
    for row in lean:
        results[row.model]["labels_ms"] = row.median_ms
    return results


def markdown_table(results: dict[str, dict], class_names: list[str], backbone_ms: float | None) -> str:
    head = ["model", "val mIoU", *class_names, "CPU ms", "x backbone", "labels ms", "x backbone", "params", "GFLOPs",
            "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    best = max((r["mIoU"] for r in results.values() if r.get("mIoU") is not None), default=None)
    if backbone_ms is not None:
        lines.append("| " + " | ".join([BACKBONE, "", *[""] * len(class_names), f"{backbone_ms:.1f}", "1.00",
                                        f"{backbone_ms:.1f}", "1.00", "", "", ""]) + " |")
    for name, r in results.items():
        miou = f"{r['mIoU']:.1f}" if r.get("mIoU") is not None else "-"
        if best is not None and r.get("mIoU") == best:
            miou = f"**{miou}**"
        ious = [f"{r['per_class_IoU'][c]:.1f}" if r["per_class_IoU"].get(c) is not None else "-" for c in class_names]
        ms = r.get("cpu_ms")
        ratio = f"{ms / backbone_ms:.2f}" if ms and backbone_ms else ""
        lean = r.get("labels_ms")
        lean_ratio = f"{lean / backbone_ms:.2f}" if lean and backbone_ms else ""
        lines.append("| " + " | ".join([
            f"{LABELS.get(name, name)} (`{name}`)", miou, *ious, f"{ms:.1f}" if ms else "", ratio,
            f"{lean:.1f}" if lean else "", lean_ratio,
            f"{r['params_M']:.2f} M" if r.get("params_M") else "", f"{r['gflops']:.2f}" if r.get("gflops") else "",
            f"{r['train_s'] / 60:.1f}" if r.get("train_s") else "",
        ]) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict], backbone_ms: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, r in results.items():
        if r.get("cpu_ms") is None or r.get("mIoU") is None:
            continue
        ours = name.startswith("spx")
        ax.scatter(r["cpu_ms"], r["mIoU"], s=70, marker="o" if ours else "s", color="tab:red" if ours else "tab:blue",
                   zorder=3, label="spxseg (ours)" if ours else "segmentation-models-pytorch")
        # the config name, ours right of the point and the peers' left: models of about the same latency and
        # mIoU (spx_lite0_base and fpn_lite0_ohem: 0.2 mIoU, 1 ms apart) then keep readable labels
        ax.annotate(name, (r["cpu_ms"], r["mIoU"]), textcoords="offset points", xytext=(7, 0) if ours else (-7, 0),
                    ha="left" if ours else "right", va="center", fontsize=9)
    if backbone_ms:
        ax.axvline(backbone_ms, color="gray", linestyle=":", linewidth=1)
        ax.annotate("Lite0 backbone alone", (backbone_ms, ax.get_ylim()[1]), textcoords="offset points",
                    xytext=(3, -12), fontsize=8, color="gray")
    ax.margins(x=0.3, y=0.15)  # room for the labels beside the points
    ax.set_xlabel("CPU latency, ms (batch 1, 1 thread, fp32)")
    ax.set_ylabel("CamVid val mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per family, not per point
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # the whole title and every label, whatever their length
    plt.close(fig)


def update_readme(readme: Path, section: str) -> None:
    text = readme.read_text() if readme.is_file() else ""
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## CamVid study (real street scenes)\n\n" + block + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    from spxseg.engine.checkpoint import write_json

    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if not (ROOT / "configs" / "camvid" / f"{n}.yaml").is_file()]
    if unknown:
        print(f"error: no config configs/camvid/<name>.yaml for {unknown}; choose from {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    work_root, out = ROOT / args.work_root, ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    metrics: dict[str, dict] = {}
    if args.skip_train:
        for name in names:
            path = work_root / name / "metrics.json"
            if not path.is_file():
                print(f"error: --skip-train: {path} is missing; train {name} first", file=sys.stderr)
                return 2
            metrics[name] = json.loads(path.read_text())
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {n: pool.submit(train_one, n, work_root / n, args.threads, args.opts) for n in names}
            for name, future in futures.items():
                metrics[name] = future.result()

    print(f"[{time.strftime('%H:%M:%S')}] timing {', '.join(names)} and the backbone at {args.size[0]}x{args.size[1]}, "
          f"{args.threads} thread(s)", flush=True)
    rows = time_models(names, tuple(args.size), args.threads, args.iters, args.rounds, args.opts)
    gpu_rows = time_models(names, tuple(args.size), args.threads, 50, 1, args.opts, device="cuda") if args.gpu else {}
    backbone_ms = rows[BACKBONE]["median_ms"] if BACKBONE in rows else None

    results: dict[str, dict] = {}
    class_names: list[str] = []
    for name in names:
        m = metrics[name]
        class_names = class_names or list(m["per_class"])
        timing_file = work_root / name / "train_time.json"
        train_s = json.loads(timing_file.read_text())["train_s"] if timing_file.is_file() else None
        row = rows[name]
        results[name] = {
            "model": name, "config": f"configs/camvid/{name}.yaml", "mIoU": m["mIoU"], "mAcc": m["mAcc"],
            "aAcc": m["aAcc"], "per_class_IoU": {c: v["IoU"] for c, v in m["per_class"].items()},
            "iteration": m.get("iteration"), "cpu_ms": row["median_ms"], "cpu_p90_ms": row["p90_ms"],
            "cpu_ms_x_backbone": row["median_ms"] / backbone_ms if backbone_ms else None,
            "labels_ms": row.get("labels_ms"),
            "params_M": row["params_M"], "gflops": row["gflops"], "stages_ms": row.get("stages_ms"),
            "train_s": train_s, "train_threads": args.threads, "timing": row,
            "gpu": gpu_rows.get(name),
        }
        write_json(results[name], out / f"{name}.json")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"{rows[names[0]]['device_name']}")
    study = {"models": results, "backbone_cpu_ms": backbone_ms, "size": args.size, "threads": args.threads,
             "machine": machine, "command": "python benchmarks/camvid_study.py " + " ".join(argv or sys.argv[1:]),
             "wall_s": time.perf_counter() - t_start, "date": time.strftime("%Y-%m-%d")}
    write_json(study, out / "study.json")
    plot(results, backbone_ms, out / "camvid_study.png",
         f"CamVid val (180x240), Lite0 ImageNet backbone; latency at {args.size[0]}x{args.size[1]}")

    table = markdown_table(results, class_names, backbone_ms)
    readme = ROOT / args.readme
    rel_png = os.path.relpath(out / "camvid_study.png", readme.parent)
    section = (
        f"Made by `{study['command'].strip()}` on {study['date']} ({machine}; trainings {args.jobs} at a time with "
        f"{args.threads} thread(s) each, then timing alone: model only, random weights, batch 1, fp32, "
        f"{args.size[0]}x{args.size[1]}, median of {args.iters * args.rounds} calls in {args.rounds} interleaved "
        f"rounds; *CPU ms* is the full forward, *labels ms* the label map alone, each model's `predict`). "
        f"Val mIoU and per-class IoU (%) from the final evaluation of each run.\n\n{table}\n\n"
        f"![CamVid val mIoU against CPU latency]({rel_png})"
    )
    update_readme(readme, section)
    print(table)
    print(f"wrote {out}/*.json, {out / 'camvid_study.png'} and the study section of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
