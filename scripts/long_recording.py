"""
An hour-long recording in bounded memory: write one, fit it with --window, report the memory.

    python scripts/long_recording.py --dir /big/disk/long                 # 1.2 billion events, ~16 GB
    python scripts/long_recording.py --dir LONG_DIR --events 20000000     # a quick look

The recording is a real one played end to end: the events of a source recording (default: the
bundled slider_depth demo, 0.53 M events in 1.6 s) repeated with their times shifted, until
--events are written, into an EVREAL folder (events_ts.npy, events_xy.npy, events_p.npy; no APS
frames). It is written a repetition at a time, so this script never holds it either. Then
train.py fits it in a child process:

    train.py -d DIR/recording --window W --iters 5 --frames_at 1 -o DIR/runs

and one JSON line gives the recording, the run's peak resident memory (the child's ru_maxrss,
which counts the pages of mapped files it touched too, and starts from what this script held
when it started the child: a few hundred MB, far below the run's own peak), the time spent opening (indexing) the
recording and reading each window's events, and the total. Existing recordings are reused.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

import repo  # noqa: F401  (first: makes train.py's modules importable)
from event_data import load_events  # noqa: E402
from experiment import demo_data  # noqa: E402
from utils import cpu_name  # noqa: E402

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")


def append_npy(path, dtype, shape):
    """A .npy of `shape` whose rows are then written in order: (open file positioned at row 0)."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # writes the header, maps nothing yet
    offset = header.offset
    del header
    f = open(path, "r+b")
    f.seek(offset)
    return f


def write_recording(folder, source, n_events):
    """`n_events` events of `source` (an Events) repeated end to end into an EVREAL folder; the
    gap between repetitions is the source's mean time between events."""
    os.makedirs(folder, exist_ok=True)
    period = float(source.t[-1] - source.t[0]) + float(source.t[-1] - source.t[0]) / len(source)
    files = [append_npy(os.path.join(folder, name), dtype, shape) for name, dtype, shape in (
        ("events_ts.npy", np.float64, (n_events,)), ("events_xy.npy", np.int16, (n_events, 2)),
        ("events_p.npy", np.uint8, (n_events,)))]
    xy = np.stack([source.x, source.y], axis=1)
    p = (source.p > 0).astype(np.uint8)
    written, repetition = 0, 0
    while written < n_events:
        count = min(len(source), n_events - written)
        t = source.t[:count] - source.t[0] + repetition * period
        for f, column in zip(files, (t, xy[:count], p[:count])):
            f.write(np.ascontiguousarray(column).tobytes())
        written, repetition = written + count, repetition + 1
    for f in files:
        f.close()
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump({"sensor_resolution": [int(v) for v in source.sensor]}, f)
    return repetition * period


def main():
    parser = argparse.ArgumentParser(description="Fit an hour-long recording with --window and report its peak memory.")
    parser.add_argument("--dir", required=True, help="folder for the recording (~13 bytes an event) and the run")
    parser.add_argument("--events", type=int, default=1_200_000_000, help="events in the recording (default: one hour "
                                                                         "of the demo's 333 k events/s)")
    parser.add_argument("--source", default=None, help="recording to repeat (default: the bundled demo)")
    parser.add_argument("--window", type=float, default=10.0, help="train.py --window, seconds (a network is 48 MB at "
                                                                   "240x180; an hour of 10 s windows is 17 GB of them)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("train_flags", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args()
    folder = os.path.join(args.dir, f"recording-{args.events}")
    if not os.path.isfile(os.path.join(folder, "metadata.json")):
        source, _ = load_events(args.source or demo_data())
        began = time.perf_counter()
        write_recording(folder, source, args.events)
        print(f"wrote {args.events} events to {folder} in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    name = f"window-{args.window:g}-{int(time.time())}"
    command = [sys.executable, TRAIN, "-d", folder, "--window", str(args.window), "--iters", str(args.iters),
               "--frames_at", "1", "-o", os.path.join(args.dir, "runs"), "-n", name, *args.train_flags]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.path.join(args.dir, "runs", name, "config.json")) as f:
        summary = json.load(f)
    timings, data = summary["timings"], summary["data"]
    print(json.dumps({"cpu": cpu_name(), "events": data["num_events"], "duration_s": round(data["t_last"] - data["t_first"], 1),
                      "windows": len(data["spans"]), "frames": summary["frames"]["count"], "iters": args.iters,
                      "peak_rss_mb": round(peak_kb / 1024), "open_s": round(timings["load_s"], 1),
                      "read_s_per_window": round(timings["read_s_per_window"], 4), "train_s": round(timings["train_s"], 1),
                      "render_s": round(timings["render_s"], 1), "wall_s": round(wall, 1),
                      "command": " ".join(command)}))


if __name__ == "__main__":
    main()
