#!/usr/bin/env bash
# The GPU checks, in one prepared run (under 5 minutes on one H100/H200):
#   bash scripts/gpu_check.sh OUT_DIR
# Needs one NVIDIA GPU with torch, numpy, opencv, h5py, scikit-image and tqdm (triton comes with
# CUDA builds of torch; video is skipped if imageio is missing). Writes at most 8 files into
# OUT_DIR and prints a summary:
#   gpu.txt          the GPU, driver, torch and triton versions
#   cuda_tests.txt   pytest -m cuda: graph replay vs eager, the loss kernel vs the reference,
#                    stacked windows with and without graphs, parallel vs serial frame writing
#   bench_*.jsonl    scripts/benchmark.py: the eager float32 path (no graphs, torch loss,
#                    float32 matmuls) beside the default, and TF32, in the same run
#   demo.txt         `python train.py` (the demo) timed from the shell, default and eager
set -uo pipefail
OUT="${1:?usage: bash scripts/gpu_check.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
EAGER="--cuda_graph off --loss_kernel torch --matmul_precision highest"  # the path before graphs and kernels
bench() { timeout "$1" python scripts/benchmark.py --device cuda "${@:2}" 2>"$SCRATCH/stderr" | grep '^{'; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1; } > "$OUT/gpu.txt"

{ timeout 150 python -m pytest -q -s -p no:cacheprovider -m cuda -rfs tests/test_gpu_paths.py tests/test_loss_kernel.py 2>&1 | tail -40
  timeout 60 python -m pytest -q -p no:cacheprovider tests/test_frame_writer.py 2>&1 | tail -3; } > "$OUT/cuda_tests.txt"

# 240x180, the standard simulated workload (quality against the simulated frames)
bench 120 --configs "$EAGER" default "--loss_kernel torch" "--matmul_precision highest" > "$OUT/bench_240.jsonl"
# 346x260, 29 M events; 1280x720, 1.2 M events, 200 iterations (random events: speed only)
bench 120 --workload random --H 260 --W 346 --events 29000000 --configs "$EAGER" default > "$OUT/bench_346.jsonl"
bench 90 --workload random --H 720 --W 1280 --events 1200000 --iters 200 --configs "$EAGER" default "--loss_kernel torch" > "$OUT/bench_1280.jsonl"
# a whole 60 s recording, 31 M events, 2 s windows (stacked as GPU memory allows), 1,500 frames written
bench 150 --workload random --duration 60 --events 31000000 --configs "--window 2" > "$OUT/bench_60s.jsonl"

{ for flags in "" "$EAGER"; do
    start=$(date +%s%N)
    timeout 60 python train.py -o "$SCRATCH/demo" $flags 2>"$SCRATCH/demo_stderr" | tail -1
    grep -a -E "^(error|note|warning)|Error" "$SCRATCH/demo_stderr" | tail -3
    echo "flags: ${flags:-default}; wall from the shell: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  done; } > "$OUT/demo.txt"

echo "== $(head -1 "$OUT/gpu.txt")"
tail -3 "$OUT/cuda_tests.txt"
for file in "$OUT"/bench_*.jsonl; do
  python - "$file" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "config" in r:
        print(f"{sys.argv[1].rsplit('/', 1)[-1]:18s} {r['config'][:44]:44s} {r['ms_per_iter']:8.3f} ms/it  "
              f"total {r['total_s']:6.2f} s  load {r['event_load_s']:5.2f} s  quality {r['quality']}")
PY
done
cat "$OUT/demo.txt"
