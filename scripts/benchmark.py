"""
Speed benchmark: the whole pipeline, file to written frames, on a simulated recording with a
known ground truth, for one or several configurations in one process.

    python scripts/benchmark.py                                   # 240x180, 2 s, ~7 M events, 1000 iterations
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --configs "" "--plain" "--loss autograd"   # side by side, with ratios
    python scripts/benchmark.py --duration 60 --events 30000000 --configs "--window 2" "--window 2 --windows_batch 10"

Prints one JSON line per configuration (device, torch, event_load_s, event_frames_s,
ms_per_iter, ms_per_iter_median, ms_per_window_iter, total_s, peak host/device memory, quality
against the simulator's frames), then one line of ratios against the first configuration.
The last example is the whole-recording case: a 60 s recording fitted in 2 s windows, one by
one and ten at a time.
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import threading
import time

import numpy as np
import torch

import repo  # noqa: F401  (first: makes train.py's modules importable)
import command  # noqa: E402
from config import UsageError, parse_config, split_configurations  # noqa: E402
from event_data import EventDataError  # noqa: E402
import train  # noqa: E402
from simulate import standard_workload, write_sequence  # noqa: E402

APS_RATE = 25.0  # frames per second of simulated APS frames, as a DAVIS240 gives


class PeakHostMemory:
    """Highest resident set size while the block runs, sampled every 5 ms from /proc (the
    process-wide ru_maxrss cannot be reset between configurations)."""

    def __enter__(self):
        self.peak, self.running = self.resident(), True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @staticmethod
    def resident():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def sample(self):
        while self.running:
            self.peak = max(self.peak, self.resident())
            time.sleep(0.005)


def make_workload(folder, args):
    """The recording to fit: the simulator's pan (with APS frames, so quality is scored), or, with
    --workload random, uniformly random events (no APS frames): the time per iteration does not
    depend on what the events show, and the simulator is slow at high resolutions."""
    began = time.perf_counter()
    if args.workload == "random":
        rng = np.random.default_rng(args.seed)
        rows = np.stack([np.sort(rng.uniform(0.0, args.duration, args.events)), rng.integers(0, args.W, args.events),
                         rng.integers(0, args.H, args.events), rng.choice([-1.0, 1.0], args.events)], axis=1)
        os.makedirs(folder)
        np.save(os.path.join(folder, "events.npy"), rows)
        with open(os.path.join(folder, "metadata.json"), "w") as f:
            json.dump({"sensor_resolution": [args.H, args.W]}, f)
        return args.events, time.perf_counter() - began
    render, events = standard_workload(args.H, args.W, args.duration, args.events, seed=args.seed)
    frame_times = np.arange(0.0, args.duration, 1.0 / APS_RATE)[1:]
    write_sequence(folder, render, events, frame_times)
    return len(events["t"]), time.perf_counter() - began


def run_config(data, out, extra, args, index):
    """train.run on the workload with one configuration's flags; returns its summary, in memory."""
    config = dataclasses.replace(parse_config(shlex.split(extra)), data_path=data, output_dir=out,
                                 exp_name=f"config{index}", iters=args.iters, device=args.device, no_video=True,
                                 frames_at=str(APS_RATE) if args.workload == "random" else "aps")
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with PeakHostMemory() as host:
        summary = train.run(config)
    timings, metrics = summary["timings"], summary["metrics"] or {}
    device = summary["environment"]["device"]
    return {"config": extra or "default", "device": device, "torch": torch.__version__,
            "sensor": [args.H, args.W], "events": summary["data"]["num_events"], "iters": args.iters,
            "event_load_s": round(timings["load_s"], 4), "event_frames_s": round(timings["event_frames_s"], 4),
            "train_s": round(timings["train_s"], 3), "ms_per_iter": round(timings["ms_per_iter"], 3),
            "ms_per_iter_median": timings["ms_per_iter_median"] and round(timings["ms_per_iter_median"], 3),
            "windows": len(summary["data"]["spans"]), "ms_per_window_iter": round(timings["ms_per_window_iter"], 3),
            "render_write_s": round(timings["render_s"] + timings["write_s"], 3), "total_s": round(timings["total_s"], 3),
            "peak_mem_mb": round(host.peak / 2**20, 1),
            "peak_device_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if args.device.startswith("cuda") else None,
            "quality": {"mse": metrics.get("mse"), "ssim": metrics.get("ssim"), "n_frames": metrics.get("n_frames")}}


def main():
    parser = command.ArgumentParser(prog=command.program_name(), description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--H", type=int, default=180, help="sensor height (rows)")
    parser.add_argument("--W", type=int, default=240, help="sensor width (columns)")
    parser.add_argument("--events", type=int, default=7_000_000, help="about how many events to simulate")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of simulated recording")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workload", choices=["simulated", "random"], default="simulated",
                        help="the simulator's textured pan with APS frames (quality scored), or uniformly random events")
    parser.add_argument("--configs", nargs="*", metavar="FLAGS",
                        help="last on the line: train.py flags for each configuration, one quoted string each "
                             "('' or 'default' = the defaults)")
    argv, configs = split_configurations(sys.argv[1:], "--configs")
    args = parser.parse_args(argv)
    args.configs = [("" if c == "default" else c) for c in configs or []] or [""]
    with tempfile.TemporaryDirectory(prefix="evinr_benchmark_") as scratch:
        data = os.path.join(scratch, "workload")
        n_events, simulate_s = make_workload(data, args)
        print(json.dumps({"workload": {"sensor": [args.H, args.W], "events": n_events, "duration_s": args.duration,
                                       "simulate_s": round(simulate_s, 2)}}), flush=True)
        # A short untimed run of each configuration first, so that imports, first-call set-up and
        # Triton's compilation of its kernels (once per machine, then cached on disk) are not
        # charged to whichever configuration happens to use them first.
        warm_up = argparse.Namespace(**{**vars(args), "iters": 2})
        for index, extra in enumerate(args.configs):
            run_config(data, os.path.join(scratch, f"warm_up{index}"), extra, warm_up, index)
        results = []
        for index, extra in enumerate(args.configs):
            try:
                results.append(run_config(data, os.path.join(scratch, "runs"), extra, args, index))
            except (EventDataError, UsageError) as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)
            print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        base = results[0]
        print(json.dumps({"ratios_vs": base["config"], **{
            r["config"]: {key: round(r[key] / base[key], 3) for key in ("ms_per_iter", "ms_per_window_iter", "total_s") if base[key]}
            for r in results[1:]}}))


if __name__ == "__main__":
    main()
