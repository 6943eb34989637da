"""
How often a fit ends in noise, and how often the convergence check (convergence.py) says so:
fits of small simulated sequences over many seeds, on the fused and plain paths, each scored
against its APS frames and judged by the check from its events alone.

    python scripts/convergence_sweep.py -o SWEEP_DIR --seeds 20 --iters 500 1000 --paths fused plain

A fit "ends in noise" when its SSIM is below NOISE_FRACTION of the median SSIM of its group (the
same sequence, path and iteration count): the scene's structure is gone while its siblings keep
it. For each group it prints the fits, those in noise, those warned, the fits in noise that were
not warned (which must be none) and the warned fits that were not in noise, with, for each kind,
the highest data ratio (the data term over the event frames' energy) and the range of the rise
(the last data term over the lowest of its stage) that convergence.verdict reads. Results are kept in
SWEEP_DIR/results.json, and a rerun skips the fits already there. A benchmark, not a test: a
20-seed sweep of two sequences at 500 and 1000 iterations is some 160 fits.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402
import utils  # noqa: E402
from config import parse_config  # noqa: E402
from event_data import load_events  # noqa: E402
from simulate import image_texture, moving_texture, simulate_events, write_sequence  # noqa: E402

NOISE_FRACTION = 0.7  # an SSIM below this fraction of its group's median: the structure is gone
# name: (texture: a scikit-image photograph, or None for simulate's synthetic one; pan speed in
# pixels per second; contrast threshold)
SEQUENCES = {"coffee": ("coffee", 150.0, 0.15), "synthetic": (None, 600.0, 0.2)}
DURATION, APS_RATE = 0.5, 25.0


def write_sequences(folder, names, height, width):
    """Simulate each named pan (SEQUENCES) at height x width unless it is already there; returns
    {name: (path, threshold)}."""
    paths = {}
    for name in names:
        texture_name, speed, threshold = SEQUENCES[name]
        path = os.path.join(folder, f"{name}-{width}x{height}")
        if not os.path.isfile(os.path.join(path, "images.txt")):
            texture = image_texture(texture_name, height, width) if texture_name else None
            render = moving_texture(height, width, DURATION, "pan", 0, speed, texture=texture)
            frame_times = np.arange(int(DURATION * APS_RATE) + 1) / APS_RATE
            write_sequence(path, render, simulate_events(render, DURATION, threshold), frame_times, grey=0.18)
        paths[name] = (path, threshold)
    return paths


def fit_one(path, threshold, seed, iters, plain, precision):
    """{ssim, mse, data_ratio, converged} of one --preset authors fit of the sequence at `path`."""
    flags = ["--preset", "authors", "--event_thresh", str(threshold), "--iters", str(iters), "--seed", str(seed),
             "--matmul_precision", precision, "--frames_at", "aps", "--log_interval", "10"]
    events, _ = load_events(path)
    result = train.reconstruct(events, parse_config(flags + (["--plain"] if plain else [])))
    scores = utils.mean_scores(utils.score_reconstruction(result.frames, result.times, events.aps_frames,
                                                          events.aps_t, use_lpips=False))
    window = result.fit["windows"][0]
    return {"ssim": scores["ssim"], "mse": scores["mse"], "data_ratio": window["data_ratio"],
            "rise": window["rise"], "converged": window["converged"]}


def group_line(key, rows):
    """One line of the table for a group of fits (the same sequence, path and iterations)."""
    median = float(np.median([row["ssim"] for row in rows]))
    noise = [row for row in rows if row["ssim"] < NOISE_FRACTION * median]
    warned = [row for row in rows if not row["converged"]]
    missed = [row for row in noise if row["converged"]]
    false_alarms = [row for row in warned if row not in noise]
    ratios = lambda kind: (f"{max(r['data_ratio'] for r in kind):.2f}/{min(r['rise'] for r in kind):.2f}-"
                           f"{max(r['rise'] for r in kind):.2f}" if kind else "-")
    good = [row for row in rows if row not in noise]
    return (f"{key:<32} {len(rows):>4} {len(noise):>5} {len(warned):>6} {len(missed):>6} {len(false_alarms):>7}"
            f" {median:>7.3f}  {ratios(good):>15}  {ratios(noise):>15}")


def main():
    parser = argparse.ArgumentParser(description="Failure and warning rates of fits over many seeds.")
    parser.add_argument("-o", "--out", required=True, help="folder for the sequences and results.json")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1")
    parser.add_argument("--iters", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--paths", nargs="+", default=["fused", "plain"], choices=["fused", "plain"])
    parser.add_argument("--sequences", nargs="+", default=list(SEQUENCES), choices=list(SEQUENCES))
    parser.add_argument("--size", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    parser.add_argument("--matmul_precision", default="highest", choices=["highest", "high", "medium"])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "results.json")
    results = json.load(open(store)) if os.path.isfile(store) else {}
    for name, (path, threshold) in write_sequences(args.out, args.sequences, *args.size).items():
        for iters in args.iters:
            for kind in args.paths:
                key = f"{name} {kind} {iters} {args.matmul_precision}"
                rows = results.setdefault(key, {})
                for seed in range(args.seeds):
                    if str(seed) not in rows:
                        rows[str(seed)] = fit_one(path, threshold, seed, iters, kind == "plain", args.matmul_precision)
                        with open(store, "w") as f:
                            json.dump(results, f, indent=1)
                print(group_line(key, list(rows.values())), flush=True)
    print(f"{'group':<32} {'fits':>4} {'noise':>5} {'warned':>6} {'missed':>6} {'f.alarm':>7} {'median':>7}"
          f"  {'ok: ratio/rise':>15}  {'noise: ratio/rise':>15}")
    for key, rows in results.items():
        print(group_line(key, list(rows.values())))


if __name__ == "__main__":
    main()
