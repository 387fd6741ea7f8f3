#!/usr/bin/env bash
# GPU latency check for issue 6 (run on a lent H100/H200; needs no internet, installs nothing from a registry).
#
#   bash benchmarks/gpu_check.sh            # JSON and logs go to $OUT (or ./gpu_check_out)
#
# Three runs of tools/profile_latency.py at 1024x2048, bf16 autocast, each model alone on the GPU:
#   1. eager, batch 1, ours vs backbone vs deeplabv3_resnet50      (fast; a fallback if compiling runs long)
#   2. torch.compile + CUDA graphs (mode reduce-overhead), batch 1, same models   -> the issue's "must show"
#   3. torch.compile + CUDA graphs, batch 8 throughput, ours vs backbone
# Every run has its own time limit (LIMIT_EAGER, LIMIT_B1, LIMIT_B8: 50 + 270 + 140 s), so the whole script stays
# under about 8 minutes even if compiling is slow; a run cut short still prints the models it finished.
# Needs torch, torchvision, timm, PyYAML on the machine (the 'cuda' image has them); the package itself is
# used from this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/spxseg_inductor}"
PY="${PYTHON:-python3}"
CONFIG="${CONFIG:-configs/cityscapes/spx_r50.yaml}"

{
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
  "$PY" - <<'PY'
import importlib, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("torchvision", "timm", "yaml", "transformers"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as err:
        print(name, "MISSING", err)
PY
  "$PY" -m pip install -q -e . --no-deps --no-build-isolation >/dev/null 2>&1 || echo "(pip install -e . skipped; using PYTHONPATH)"
} 2>&1 | tee "$OUT/env.log"

run() {  # run NAME LIMIT_S ARGS...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=15 "$limit" "$PY" tools/profile_latency.py --config "$CONFIG" \
    --device cuda --dtype bf16 --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}

# time limits (seconds), overridable; compiling dominates (about a minute per model on 16 cores)
run eager_b1 "${LIMIT_EAGER:-50}" --size 1024 2048 --batch 1 --baselines backbone,deeplabv3_resnet50 \
  --warmup 5 --iters 30
run compiled_b1 "${LIMIT_B1:-270}" --size 1024 2048 --batch 1 --compile --cuda-graphs \
  --baselines backbone,deeplabv3_resnet50 --warmup 5 --iters 50 --no-breakdown
run compiled_b8 "${LIMIT_B8:-140}" --size 1024 2048 --batch 8 --compile --cuda-graphs --baselines backbone \
  --warmup 3 --iters 20 --no-breakdown --no-flops
ls -l "$OUT"
