#!/usr/bin/env bash
# The GPU checks, in one prepared run (about 5 minutes on one H100/H200):
#   bash scripts/gpu_check.sh OUT_DIR
# Needs one NVIDIA GPU with torch, numpy, opencv, h5py, scikit-image and tqdm (triton comes with
# CUDA builds of torch; video is skipped if imageio is missing). Writes 8 files into OUT_DIR and
# prints a summary:
#   gpu.txt          the GPU, driver, torch and triton versions
#   cuda_tests.txt   pytest -m cuda: graph replay vs eager, the loss kernel vs the reference, the
#                    output layer's AdamW kernel vs gradient-then-AdamW, stacked windows with and
#                    without graphs, parallel vs serial frame writing
#   bench_*.jsonl    scripts/benchmark.py: the eager float32 path (no graphs, no Triton kernels,
#                    float32 matmuls) beside the default and single levers, in the same run
#   steps.txt        scripts/profile_step.py: one step timed per output-kernel tiling, and the
#                    kernels of a step listed by GPU time
#   demo.txt         `python train.py` (the demo) timed from the shell, default and eager, with
#                    and without a bytecode cache; import torch and CUDA's start; a profile by function
set -uo pipefail
OUT="${1:?usage: bash scripts/gpu_check.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
# the path before graphs and kernels
EAGER="--cuda_graph off --loss_kernel torch --output_kernel torch --matmul_precision highest"
bench() { timeout "$1" python scripts/benchmark.py --device cuda "${@:2}" 2>"$SCRATCH/stderr" | grep '^{'; }
step() { timeout 150 python scripts/profile_step.py "$@" 2>&1 | grep -v -i warn; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1; } > "$OUT/gpu.txt"

# The demo first, before anything has compiled Python's bytecode: some machines (this project's
# lent H100/H200) keep none for their packages, so every process compiles torch's sources anew.
# Then again with a bytecode cache, as an installed torch has.
demo() {
  start=$(date +%s%N)
  timeout 90 python train.py -o "$SCRATCH/demo" --overwrite $1 2>"$SCRATCH/demo_stderr" | tail -1
  grep -a -E "^(error|note|warning)|Error" "$SCRATCH/demo_stderr" | tail -3
  echo "flags: ${1:-default}; $2; wall from the shell: $(( ($(date +%s%N) - start) / 1000000 )) ms"
}
{ PYTHONPYCACHEPREFIX="$SCRATCH/no_cache_$RANDOM" demo "" "no bytecode cache (as the machine comes)"
  export PYTHONPYCACHEPREFIX="$SCRATCH/pycache"
  demo "" "bytecode cache being written"
  for flags in "" "$EAGER"; do demo "$flags" "with a bytecode cache"; done
  python -c "import json, sys; print('timings of the last run:', json.load(open(sys.argv[1]))['timings'])" \
    "$SCRATCH/demo/demo/config.json"
  python -c "import time; began = time.perf_counter(); import torch; imported = time.perf_counter(); \
torch.zeros(1, device='cuda'); torch.cuda.synchronize(); \
print(f'import torch {imported - began:.2f} s; CUDA initialised {time.perf_counter() - imported:.2f} s')"
  # where the demo's time goes, by function
  timeout 90 python -m cProfile -o "$SCRATCH/demo.prof" train.py -o "$SCRATCH/demo" --overwrite > /dev/null 2>&1
  python -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(30)" "$SCRATCH/demo.prof" \
    | grep -v "^ *$" | cut -c1-150; } > "$OUT/demo.txt" 2>&1
export PYTHONPYCACHEPREFIX="$SCRATCH/pycache"

{ timeout 200 python -m pytest -q -s -p no:cacheprovider -m cuda -rfs tests/test_gpu_paths.py tests/test_loss_kernel.py 2>&1 | tail -40
  timeout 60 python -m pytest -q -p no:cacheprovider tests/test_frame_writer.py 2>&1 | tail -3; } > "$OUT/cuda_tests.txt"

# 240x180, the standard simulated workload (quality against the simulated frames)
bench 150 --configs "$EAGER" default "--output_kernel torch" "--loss_kernel torch" "--matmul_precision highest" > "$OUT/bench_240.jsonl"
# 346x260, 29 M events; 1280x720, 1.2 M events, 200 iterations (random events: speed only)
bench 120 --workload random --H 260 --W 346 --events 29000000 --configs "$EAGER" default > "$OUT/bench_346.jsonl"
bench 90 --workload random --H 720 --W 1280 --events 1200000 --iters 200 --configs "$EAGER" default "--output_kernel torch" > "$OUT/bench_1280.jsonl"
# a whole 60 s recording, 31 M events, 2 s windows (stacked as GPU memory allows), 1,500 frames written
bench 150 --workload random --duration 60 --events 31000000 --configs "--window 2" > "$OUT/bench_60s.jsonl"

TILES="32,32,16,4 64,64,16,8 64,32,16,4 32,64,16,4"
{ step --profile --variants "" "--output_kernel torch"
  step --steps 300 --output_tiles $TILES
  step --H 260 --W 346 --events 5000000 --steps 200 --output_tiles $TILES
  step --H 720 --W 1280 --events 1000000 --steps 40 --profile --output_tiles $TILES
  step --windows 30 --events 1000000 --steps 40 --output_tiles $TILES; } > "$OUT/steps.txt"

echo "== $(head -1 "$OUT/gpu.txt")"
tail -3 "$OUT/cuda_tests.txt"
for file in "$OUT"/bench_*.jsonl; do
  python - "$file" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "config" in r:
        print(f"{sys.argv[1].rsplit('/', 1)[-1]:18s} {r['config'][:44]:44s} {r['ms_per_iter']:8.3f} ms/it "
              f"(median {r['ms_per_iter_median']}) total {r['total_s']:6.2f} s  load {r['event_load_s']:5.2f} s  "
              f"quality {r['quality']}")
PY
done
grep '^{' "$OUT/steps.txt" | python -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print('step', r['sensor'], 'x%d' % r['windows'], r['flags'], r['output_tiles'], r['ms_per_step_median'], 'ms')"
head -12 "$OUT/demo.txt"
