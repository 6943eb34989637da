"""
What the dataset converters share: turning one recording (bag, text folder or zip, HDF5, ...)
into the authors' layout, streaming, so that memory stays bounded however long it is:

    SEQUENCE/events.npy        [N, 4] float64 rows (t seconds, x, y, p = +-1), sorted by t
    SEQUENCE/images.txt        lines `t images/frame_XXXXXXXX.png` (APS frames)
    SEQUENCE/images/
    SEQUENCE/color_images.txt  (CED) lines `t color_images/frame_XXXXXXXX.png`
    SEQUENCE/color_images/
    SEQUENCE/metadata.json     sensor_resolution [H, W], where the data came from

Times stay on the recording's own clock. A sequence is written into a hidden folder beside its
destination and renamed at the end, so a failure leaves no partial output. Each converter
script is `main("DATASET")`.
"""

import argparse
import json
import os
import queue
import sys
import threading

import numpy as np
from tqdm import tqdm

import repo  # noqa: F401  (first: makes train.py's modules importable)
from datasets import DATASETS  # noqa: E402
import utils  # noqa: E402
from event_data import BATCH, EventDataError, check_events, repair_frame_times, stream_events  # noqa: E402

NPY_HEADER_BYTES = 128  # room for the .npy header of any row count, so it can be written last
FRAME_FOLDERS = ("images", "color_images")  # frame keys of event_data's streams, and folder names


def npy_header(rows, columns=4):
    """The .npy (format 1.0) header of a C-ordered float64 [rows, columns] array, padded to
    NPY_HEADER_BYTES whatever the row count."""
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {columns}), }}"
    length = NPY_HEADER_BYTES - 10  # after the magic, version and the length field itself
    return b"\x93NUMPY\x01\x00" + length.to_bytes(2, "little") + text.ljust(length - 1).encode() + b"\n"


class EventsNpyWriter:
    """Appends event batches to an [N, 4] float64 .npy as they come; the header, which holds N,
    is rewritten once N is known. A thread does the writing, so that reading the source and
    writing to disk overlap; its queue is short, so memory stays bounded. Events out of time
    order are sorted (stably) at the end from the file, holding only a time column and an index."""

    def __init__(self, path, source, sensor):
        self.path, self.source, self.sensor = path, source, sensor
        self.file = open(path, "wb")
        self.file.write(npy_header(0))
        self.count, self.last_t, self.in_order = 0, -np.inf, True
        self.pending = queue.Queue(maxsize=2)  # blocks of rows on their way to the disk; None ends
        self.write_error = None
        self.writer = threading.Thread(target=self._write_pending, daemon=True)
        self.writer.start()

    def _write_pending(self):
        while (rows := self.pending.get()) is not None:
            if self.write_error is None:  # after a failure, drain the queue so no one waits on it
                try:
                    self.file.write(rows.data)
                except OSError as error:
                    self.write_error = error

    def write(self, t, x, y, p):
        check_events(t, x, y, self.sensor, self.source, self.count)
        if len(t):
            self.in_order = self.in_order and t[0] >= self.last_t and not (np.diff(t) < 0).any()
            self.last_t = max(self.last_t, float(t.max()))
        if self.write_error is not None:
            raise self.write_error
        rows = np.empty((len(t), 4), dtype=np.float64)
        rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = t, x, y, p
        self.pending.put(rows)
        self.count += len(t)

    def abort(self):
        """Stop the writing thread and close the file, which is left incomplete."""
        self.pending.put(None)
        self.writer.join()
        self.file.close()

    def close(self):
        """Finish the file; returns the number of events."""
        self.pending.put(None)
        self.writer.join()
        self.file.seek(0)
        self.file.write(npy_header(self.count))
        self.file.close()
        if self.write_error is not None:
            raise self.write_error
        if not self.in_order:
            print(f"note: {self.source}: events are not in time order; sorting them (stable)", file=sys.stderr)
            self._sort()
        return self.count

    def _sort(self):
        events = np.load(self.path, mmap_mode="r")
        order = np.argsort(events[:, 0], kind="stable")
        sorted_path = self.path + ".sorting"
        with open(sorted_path, "wb") as f:
            f.write(npy_header(len(order)))
            for start in range(0, len(order), BATCH):
                f.write(events[order[start:start + BATCH]].data)
        del events  # release the map before replacing the file under it
        os.replace(sorted_path, self.path)


def _write_frame(folder, key, index, image):
    """KEY/frame_XXXXXXXX.png, lossless; RGB frames as colour PNGs."""
    name = f"{key}/frame_{index:08d}.png"
    utils.write_png(os.path.join(folder, name), image)
    return name


def _write_sequence(source, folder, dataset, name):
    """Stream `source` into the (empty) `folder`; returns a summary."""
    facts = DATASETS[dataset]
    sensor, writer, frames = None, None, {key: [] for key in FRAME_FOLDERS}  # key -> [(t, file)]
    pieces = stream_events(source, events_topic=facts["events_topic"], images_topic=facts["images_topic"],
                           color_images_topic=facts["color_images_topic"])
    # disable=None: no bar when stderr is not a terminal, so logs and errors stay one line each
    with tqdm(desc=name, unit="ev", unit_scale=True, leave=False, dynamic_ncols=True, disable=None) as bar:
        try:
            for piece in pieces:
                if piece[0] == "sensor":
                    sensor = tuple(piece[1])
                    if sensor != facts["sensor"]:
                        print(f"warning: {source}: the file's sensor H={sensor[0]}, W={sensor[1]} differs from "
                              f"{dataset}'s H={facts['sensor'][0]}, W={facts['sensor'][1]}; using the file's", file=sys.stderr)
                elif piece[0] == "events":
                    if writer is None:
                        writer = EventsNpyWriter(os.path.join(folder, "events.npy"), source, sensor or facts["sensor"])
                    writer.write(*piece[1:])
                    bar.update(len(piece[1]))
                elif piece[0] == "frame":
                    _, key, t, image = piece
                    if not frames[key]:
                        os.mkdir(os.path.join(folder, key))
                    frames[key].append((t, _write_frame(folder, key, len(frames[key]), image)))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    if writer is None or writer.close() == 0:
        raise EventDataError(source, "no events")
    for key, written in frames.items():
        if written:
            times = repair_frame_times([t for t, _ in written], f"{source} ({key})")
            with open(os.path.join(folder, f"{key}.txt"), "w") as f:
                f.writelines(f"{t:.9f} {file}\n" for t, (_, file) in zip(times, written))
    summary = {"dataset": dataset, "sequence": name, "source": os.path.basename(source),
               "sensor_resolution": list(sensor or facts["sensor"]), "num_events": writer.count,
               "num_frames": len(frames["images"]), "num_color_frames": len(frames["color_images"])}
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def convert_sequence(source, destination, dataset, overwrite=False):
    """Convert one recording to the authors' layout at `destination`, all or nothing."""
    destination = os.path.normpath(destination)
    if os.path.exists(destination) and not overwrite:
        raise EventDataError(destination, "already exists (pass --overwrite to replace it)")
    with utils.staged_folder(destination, replace=overwrite) as staging:
        summary = _write_sequence(source, staging, dataset, os.path.basename(destination))
    return summary


def find_sources(raw_data_dir, dataset):
    """{sequence: path} of the recordings in `raw_data_dir`: the dataset's known sequences in the
    first download form it accepts that is present, then any other recording of an accepted kind."""
    facts = DATASETS[dataset]
    sources = {}
    for name in facts["sequences"]:
        for extension in facts["sources"]:
            path = os.path.join(raw_data_dir, name + extension)
            if os.path.isfile(path) or (extension == "" and os.path.isfile(os.path.join(path, "events.txt"))):
                sources[name] = path
                break
    for entry in sorted(os.listdir(raw_data_dir)):
        stem, extension = os.path.splitext(entry)
        if stem not in sources and extension in facts["sources"] and extension:
            sources[stem] = os.path.join(raw_data_dir, entry)
    return sources


def main(dataset, argv=None):
    """The converter command line; returns the exit status: 0 every sequence converted, 2 a bad
    or missing recording (or a sequence already converted), 1 a failure of the environment (disk
    full, folder not writable; it wins when both happen), 130 interrupted (Ctrl-C, SIGTERM,
    SIGHUP). A failed sequence leaves nothing behind, not even an empty output folder."""
    utils.prepare_command_line()
    facts = DATASETS[dataset]
    parser = argparse.ArgumentParser(description=f"Convert {dataset} recordings to the EvINR layout "
                                                 f"(events.npy, images/, images.txt) without ROS.")
    parser.add_argument("--raw_data_dir", required=True, help=f"folder of the {dataset} downloads "
                        f"({', '.join(e or 'text folder' for e in facts['sources'])})")
    parser.add_argument("--output_data_dir", required=True, help="one folder per sequence is written here")
    parser.add_argument("--sequences", nargs="+", metavar="NAME", help="convert only these (default: every one found)")
    parser.add_argument("--overwrite", action="store_true", help="replace sequences already converted")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.raw_data_dir):
        print(f"error: {args.raw_data_dir}: no such folder", file=sys.stderr)
        return 2
    sources = find_sources(args.raw_data_dir, dataset)
    status = 0
    if args.sequences:
        for name in args.sequences:
            if name not in sources:
                print(f"error: {os.path.join(args.raw_data_dir, name)}: no {dataset} recording of this sequence "
                      f"({', '.join(e or 'folder' for e in facts['sources'])})", file=sys.stderr)
                status = status or 2
        sources = {name: path for name, path in sources.items() if name in args.sequences}
    elif not sources:
        print(f"error: {args.raw_data_dir}: no {dataset} recordings found", file=sys.stderr)
        return 2
    try:
        for name, path in sources.items():
            if name not in facts["sequences"]:
                print(f"note: {path}: not a known {dataset} sequence; converting it as '{name}'", file=sys.stderr)
            try:
                summary = convert_sequence(path, os.path.join(args.output_data_dir, name), dataset, args.overwrite)
                print(f"{name}: {summary['num_events']} events, {summary['num_frames']} frames"
                      + (f", {summary['num_color_frames']} colour frames" if summary["num_color_frames"] else ""))
            except EventDataError as error:
                print(f"error: {error}", file=sys.stderr)
                status = status or 2
            except OSError as error:
                print(f"error: {utils.os_error_line(error, os.path.join(args.output_data_dir, name))}", file=sys.stderr)
                status = 1
    except KeyboardInterrupt:
        print("interrupted: the sequence being converted was not written", file=sys.stderr)
        return 130
    return status
