"""
What --ray gains: an evaluation of simulated sequences, one fit after another and as Ray tasks,
on this machine (or the cluster at --ray_address), back to back, with Ray's own start-up cost.

    python scripts/benchmark_ray.py                          # 4 sequences x 2 configurations
    python scripts/benchmark_ray.py --sequences 8 --iters 300

Prints one JSON line: the wall time of each run, their ratio, Ray's start-up (connecting, or
starting a local Ray, and a first empty task), and whether both runs gave the same scores.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import repo  # noqa: F401  (first: makes train.py's modules importable)
import command  # noqa: E402
from simulate import moving_texture, simulate_events, write_sequence  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write_family(folder, count, duration, seed=0):
    """`count` simulated sequences (48x64 pans of different textures) in `folder`."""
    for k in range(count):
        render = moving_texture(48, 64, duration, "pan", seed=seed + k, speed=25.0)
        write_sequence(os.path.join(folder, f"sequence{k}"), render,
                       simulate_events(render, duration, threshold=0.2, seed=seed + k),
                       np.arange(int(duration * 20) + 1) / 20)


def ray_start_up(address):
    """Seconds to connect to (or start) Ray and run one empty task, in a fresh process."""
    code = ("import time, ray; began = time.perf_counter(); "
            f"ray.init(address={address!r}, include_dashboard=False, logging_level='ERROR'); "
            "ray.get(ray.remote(lambda: None).remote()); print(time.perf_counter() - began)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def evaluate(family, out, flags):
    """Wall seconds of one evaluate.py run, and its per-sequence scores."""
    began = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), family, "-o", out, *flags], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - began
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    scores = {label: {name: [sequence[key] for key in ("mse", "ssim")] for name, sequence in c["sequences"].items()}
              for label, c in results["configurations"].items()}
    return seconds, scores


def main(argv=None):
    parser = command.ArgumentParser(prog=command.program_name(), description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=4, help="simulated sequences (default 4)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds each (default 1)")
    parser.add_argument("--iters", type=int, default=200, help="iterations a fit (default 200)")
    parser.add_argument("--ray_address", default=None, help="a Ray cluster (default: Ray started here)")
    args = parser.parse_args(argv)
    flags = ["--iters", str(args.iters), "--no_lpips", "--dataset", "none", "--H", "48", "--W", "64"]
    compare = ["--compare", "default", "--preset authors"]  # last on the line
    ray_flags = ["--ray", *([args.ray_address] if args.ray_address else [])]
    with tempfile.TemporaryDirectory() as scratch:
        family = os.path.join(scratch, "family")
        write_family(family, args.sequences, args.duration)
        start_up = ray_start_up(args.ray_address)
        serial_s, serial = evaluate(family, os.path.join(scratch, "serial"), flags + compare)
        ray_s, parallel = evaluate(family, os.path.join(scratch, "ray"), flags + ray_flags + compare)
    print(json.dumps({"sequences": args.sequences, "configurations": 2, "iters": args.iters, "cpus": os.cpu_count(),
                      "serial_s": round(serial_s, 2), "ray_s": round(ray_s, 2), "speed_up": round(serial_s / ray_s, 3),
                      "ray_start_up_s": round(start_up, 2), "same_scores": serial == parallel}))


if __name__ == "__main__":
    main()
