"""
Time one training step on a GPU, and list where its time goes.

    python scripts/profile_step.py                        # 240x180, the second stage (101 query times)
    python scripts/profile_step.py --H 720 --W 1280 --profile
    python scripts/profile_step.py --variants "--cuda_graph off" "" "--matmul_precision highest"

For each variant (train.py flags) it builds the step that `train.fit` runs, on random events, warms
it up, and times `--steps` replayed steps with CUDA events, in blocks: one JSON line each with the
median milliseconds per step. With --profile, torch's profiler records a few eager steps and the
kernels are listed by GPU time, with how many of each one step launches (a captured graph
launches the same kernels, without the host's gaps between them).
"""

import argparse
import dataclasses
import json
import shlex
import sys
import time

import numpy as np
import torch

import repo  # noqa: F401  (first: makes train.py's modules importable)
from config import float32_matmul_precision, parse_config, split_configurations  # noqa: E402
import optim  # noqa: E402
import train  # noqa: E402
from event_data import events_from_columns  # noqa: E402
from model import StackedEvINR, make_model, query_times  # noqa: E402
from optim import OutputAdamW  # noqa: E402
from utils import cpu_name  # noqa: E402


def random_windows(sensor, n_windows, events_per_window, config, device, seed=0):
    rng = np.random.default_rng(seed)
    n_events = n_windows * events_per_window
    events = events_from_columns(np.sort(rng.uniform(0.0, n_windows, n_events)), rng.integers(0, sensor[1], n_events),
                                 rng.integers(0, sensor[0], n_events), rng.choice([-1.0, 1.0], n_events),
                                 "random", "random", sensor=sensor)
    return [train.Window(events, float(k), float(k + 1), sensor, config, device) for k in range(n_windows)]


def build_step(sensor, config, windows, device):
    torch.manual_seed(config.seed)
    model = make_model(sensor, config).to(device)
    if len(windows) > 1:
        model = StackedEvINR([model] * len(windows)).to(device)
    graphs = train.use_cuda_graph(config, device)
    optimizer = optim.make_optimizer(model, config)
    frames, boundaries, midpoints = train.stage_frames(windows, config.train_resolution * (1 if config.no_c2f else 2),
                                                       len(windows) > 1)
    queries = query_times(boundaries, midpoints, config.loss, config.align)
    step = train.make_step(model, optimizer, frames, queries, config, n_windows=len(windows))
    return train.GraphedStep(step, fallback=False) if graphs else step


def time_steps(step, n_steps, device, blocks=5):
    """Milliseconds per step in each of `blocks` blocks, after ten warm-up steps: CUDA events on a
    GPU, the host clock on a CPU."""
    for _ in range(10):
        step()
    per_step = []
    for _ in range(blocks):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        began = time.perf_counter()
        for _ in range(n_steps // blocks):
            loss, _ = step()
        if device.type == "cuda":
            end.record()
            end.synchronize()
            per_step.append(start.elapsed_time(end) / (n_steps // blocks))
        else:
            float(loss)
            per_step.append(1000 * (time.perf_counter() - began) / (n_steps // blocks))
    return per_step


def kernel_table(step, n_steps=5, rows=25):
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as recorded:
        for _ in range(n_steps):
            step()
        torch.cuda.synchronize()
    kernels = [event for event in recorded.key_averages() if event.device_type.name == "CUDA"]
    device_time = lambda event: getattr(event, "self_device_time_total", None) or event.self_cuda_time_total
    kernels.sort(key=device_time, reverse=True)
    total = sum(device_time(event) for event in kernels) / n_steps
    print(f"  kernels per step: {sum(event.count for event in kernels) / n_steps:.0f}, GPU time {total / 1000:.3f} ms")
    for event in kernels[:rows]:
        print(f"  {device_time(event) / n_steps / 1000:8.4f} ms  x{event.count / n_steps:5.1f}  {event.key[:110]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--H", type=int, default=180)
    parser.add_argument("--W", type=int, default=240)
    parser.add_argument("--windows", type=int, default=1, help="stacked windows (one network each)")
    parser.add_argument("--events", type=int, default=3_000_000, help="events per window")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="also list the kernels of eager steps (GPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--output_tiles", nargs="+", default=[None], metavar="OUT,IN,T,WARPS",
                        help="tile sizes and warps of the output layer's AdamW kernel to try (optim.OutputAdamW)")
    parser.add_argument("--variants", nargs="*", metavar="FLAGS", help="last on the line: train.py flags, one quoted string each")
    argv, variants = split_configurations(sys.argv[1:], "--variants")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sensor = (args.H, args.W)
    runs = [(flags, tiles) for flags in variants or [""] for tiles in args.output_tiles]
    for flags, tiles in runs:
        if tiles is not None:
            OutputAdamW.BLOCK_OUT, OutputAdamW.BLOCK_IN, OutputAdamW.BLOCK_T, OutputAdamW.WARPS = map(int, tiles.split(","))
        config = train.prepare(parse_config(shlex.split(flags) + ["--device", args.device]),
                               events_from_columns(*[np.zeros(1)] * 3, np.ones(1), "none", "none", sensor=sensor))
        with float32_matmul_precision(config.matmul_precision):
            windows = random_windows(sensor, args.windows, args.events, config, device)
            step = build_step(sensor, config, windows, device)
            per_step = time_steps(step, args.steps, device)
            print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(), "sensor": list(sensor), "windows": args.windows,
                              "flags": flags or "default", "output_tiles": tiles, "ms_per_step_median": round(float(np.median(per_step)), 4),
                              "ms_per_step": [round(v, 4) for v in per_step]}), flush=True)
            if args.profile and device.type == "cuda":
                eager = build_step(sensor, dataclasses.replace(config, cuda_graph="off"), windows, device)
                kernel_table(eager)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
