#!/usr/bin/env bash
# Where a GPU run's time goes, in one prepared run (about 3 minutes on one H100/H200; the
# numbers to report come from scripts/gpu_check.sh):
#   bash scripts/gpu_profile.sh OUT_DIR
# Writes into OUT_DIR: steps.txt (one training step timed and its kernels listed, at 240x180,
# 346x260, 1280x720 and 30 stacked 240x180 windows; see scripts/profile_step.py) and demo.txt
# (the start-up costs, and `python train.py` timed from the shell and profiled by function).
set -uo pipefail
OUT="${1:?usage: bash scripts/gpu_profile.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
step() { timeout 120 python scripts/profile_step.py "$@" 2>&1 | grep -v Warning; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  step --profile --variants "" "--cuda_graph off --loss_kernel torch --output_kernel torch --matmul_precision highest"
  step --H 260 --W 346 --events 5000000 --steps 300 --profile
  step --H 720 --W 1280 --events 1000000 --steps 50 --profile
  step --windows 30 --events 1000000 --steps 50 --profile
} > "$OUT/steps.txt"

{ python - <<'PY'
import time
began = time.perf_counter()
import torch
imported = time.perf_counter()
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
initialised = time.perf_counter()
import torch._dynamo  # noqa: F401  (what torch.optim's first use imports)
print(f"import torch {imported - began:.2f} s; CUDA initialised {initialised - imported:.2f} s; "
      f"import torch._dynamo {time.perf_counter() - initialised:.2f} s")
PY
  for run in 1 2; do
    start=$(date +%s%N)
    timeout 60 python train.py -o "$SCRATCH/demo$run" 2>/dev/null | tail -1
    echo "wall from the shell: $(( ($(date +%s%N) - start) / 1000000 )) ms"
    python -c "import json, sys; print(json.load(open(sys.argv[1]))['timings'])" "$SCRATCH/demo$run/demo/config.json"
  done
  timeout 60 python -m cProfile -o "$SCRATCH/demo.prof" train.py -o "$SCRATCH/demo3" > /dev/null 2>&1
  python -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(45)" "$SCRATCH/demo.prof" \
    | grep -v "^ *$" | cut -c1-150
} > "$OUT/demo.txt" 2>&1
cat "$OUT/steps.txt"
head -12 "$OUT/demo.txt"
