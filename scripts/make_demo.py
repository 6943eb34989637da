"""
Make the bundled demo, assets/slider_depth_demo.h5, from the real IJRR slider_depth sequence.

    python scripts/make_demo.py path/to/slider_depth assets/slider_depth_demo.h5

The demo is the part of the recording from 0.95 s to 2.55 s (it holds the EVREAL evaluation
interval, 1.0-2.5 s), events and APS frames on the recording's own clock, in the
event_cnn_minimal HDF5 layout with gzip compression, so it stays a few MB.
"""

import argparse
import os

import h5py
import numpy as np

import repo  # noqa: F401  (first: makes train.py's modules importable)
from event_data import load_events  # noqa: E402

BEGIN, END = 0.95, 2.55


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("source", help="the slider_depth folder (events.txt, images.txt, images/)")
    parser.add_argument("output", help="the .h5 file to write")
    args = parser.parse_args()
    events, sensor = load_events(args.source)
    keep = (events.t >= BEGIN) & (events.t < END)
    keep_frames = (events.aps_t >= BEGIN) & (events.aps_t < END)
    compression = {"compression": "gzip", "compression_opts": 9, "shuffle": True}
    with h5py.File(args.output, "w") as f:
        f.create_dataset("events/ts", data=events.t[keep], **compression)
        f.create_dataset("events/xs", data=events.x[keep], **compression)
        f.create_dataset("events/ys", data=events.y[keep], **compression)
        f.create_dataset("events/ps", data=events.p[keep] > 0, **compression)
        t_kept = events.t[keep]
        for k, (frame, t) in enumerate(zip(events.aps_frames[keep_frames], events.aps_t[keep_frames])):
            image = f.create_dataset(f"images/image{k:09d}", data=frame, **compression)
            image.attrs["timestamp"] = t
            image.attrs["event_idx"] = int(np.searchsorted(t_kept, t))
        f.attrs["sensor_resolution"] = list(sensor)
        f.attrs["num_events"] = int(keep.sum())
        f.attrs["num_imgs"] = int(keep_frames.sum())
        f.attrs["t0"], f.attrs["tk"] = float(t_kept[0]), float(t_kept[-1])
    print(f"wrote {args.output}: {keep.sum()} events, {keep_frames.sum()} frames, {os.path.getsize(args.output) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
