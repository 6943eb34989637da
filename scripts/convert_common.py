"""
What the dataset converters share: turning one recording (bag, text folder or zip, HDF5, ...)
into the authors' layout (--format evinr, the default), streaming, so that memory stays bounded
however long it is:

    SEQUENCE/events.npy        [N, 4] float64 rows (t seconds, x, y, p = +-1), sorted by t
    SEQUENCE/images.txt        lines `t images/frame_XXXXXXXX.png` (APS frames)
    SEQUENCE/images/
    SEQUENCE/color_images.txt  (CED) lines `t color_images/frame_XXXXXXXX.png`
    SEQUENCE/color_images/
    SEQUENCE/metadata.json     sensor_resolution [H, W], where the data came from

or into EVREAL's npy folder (--format evreal), as EVREAL's tools/bag_to_npy.py writes it, so
that EVREAL's MemMapDataset loads it unchanged (event_data reads it as "evreal_folder"):

    SEQUENCE/events_ts.npy            [N] float64 seconds, sorted, on EVREAL's clock (below)
    SEQUENCE/events_xy.npy            [N, 2] int16 (x, y)
    SEQUENCE/events_p.npy             [N] uint8 polarity 0/1
    SEQUENCE/images.npy               [K, H, W, 1] uint8 gray APS frames
    SEQUENCE/images_ts.npy            [K, 1] float64 seconds, on EVREAL's clock
    SEQUENCE/image_event_indices.npy  [K, 1] int64: the last event at or before each frame,
                                      searchsorted(events_ts, images_ts, "right") - 1, in [0, N-1]
    SEQUENCE/metadata.json            sensor_resolution [H, W], and t_zero (below)

The authors' layout keeps the recording's own clock. EVREAL's re-zeroes it, as EVREAL does, to
the earlier of the first APS frame and the first event (after decreasing frame times are
repaired); its dataset intervals are on that clock, and metadata.json's t_zero is the recording
time of its zero. A sequence is written into a hidden folder beside its destination and
renamed at the end, so a failure leaves no partial output. Each converter script is
`main("DATASET")`.
"""

import json
import os
import queue
import sys
import threading

import cv2
import numpy as np
from tqdm import tqdm

import repo  # noqa: F401  (first: makes train.py's modules importable)
from datasets import DATASETS, find_sequence  # noqa: E402
import command  # noqa: E402
import utils  # noqa: E402
from event_data import BATCH, EventDataError, check_events, repair_frame_times, stream_events  # noqa: E402

NPY_HEADER_BYTES = 128  # room for the .npy header of any row count, so it can be written last
FRAME_FOLDERS = ("images", "color_images")  # frame keys of event_data's streams, and folder names
FORMATS = ("evinr", "evreal")
# The event files of each layout: (name, dtype, shape of one row). EVREAL's polarity is 0/1.
EVENT_FILES = {"evinr": [("events.npy", np.float64, (4,))],
               "evreal": [("events_ts.npy", np.float64, ()), ("events_xy.npy", np.int16, (2,)), ("events_p.npy", np.uint8, ())]}


def npy_header(rows, row_shape=(4,), dtype=np.float64):
    """The .npy (format 1.0) header of a C-ordered [rows, *row_shape] array, padded to
    NPY_HEADER_BYTES whatever the row count."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {(rows, *row_shape)}, }}"
    length = NPY_HEADER_BYTES - 10  # after the magic, version and the length field itself
    return b"\x93NUMPY\x01\x00" + length.to_bytes(2, "little") + text.ljust(length - 1).encode() + b"\n"


class NpyAppender:
    """A .npy array written a block of rows at a time: its header, which holds the row count, is
    written first with room to spare and rewritten by close, once the count is known."""

    def __init__(self, path, dtype, row_shape):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.file = open(path, "wb")
        self.file.write(npy_header(0, self.row_shape, self.dtype))
        self.count = 0

    def append(self, rows):
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self.file.write(rows.data)
        self.count += len(rows)

    def close(self):
        self.file.seek(0)
        self.file.write(npy_header(self.count, self.row_shape, self.dtype))
        self.file.close()


def _event_rows(fmt, t, x, y, p):
    """One batch as the rows of each of the layout's event files (EVENT_FILES)."""
    if fmt == "evinr":
        rows = np.empty((len(t), 4), dtype=np.float64)
        rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = t, x, y, p
        return [rows]
    xy = np.empty((len(t), 2), dtype=np.int16)
    xy[:, 0], xy[:, 1] = x, y
    return [np.array(t, dtype=np.float64), xy, (p > 0).astype(np.uint8)]  # copies: the thread writes them later


class EventsNpyWriter:
    """Appends event batches to the layout's .npy files in `folder` (events.npy [N, 4] float64,
    or EVREAL's events_ts/xy/p.npy) as they come. A thread does the writing, so that reading the
    source and writing to disk overlap; its queue is short, so memory stays bounded. Events out of
    time order are sorted (stably) at the end from the files, holding only a time column and an index."""

    def __init__(self, folder, source, sensor, fmt="evinr"):
        self.source, self.sensor, self.fmt = source, sensor, fmt
        self.files = [NpyAppender(os.path.join(folder, name), dtype, shape) for name, dtype, shape in EVENT_FILES[fmt]]
        self.count, self.last_t, self.in_order = 0, -np.inf, True
        self.pending = queue.Queue(maxsize=2)  # blocks of rows on their way to the disk; None ends
        self.write_error = None
        self.writer = threading.Thread(target=self._write_pending, daemon=True)
        self.writer.start()

    def _write_pending(self):
        while (block := self.pending.get()) is not None:
            if self.write_error is None:  # after a failure, drain the queue so no one waits on it
                try:
                    for file, rows in zip(self.files, block):
                        file.append(rows)
                except OSError as error:
                    self.write_error = error

    def write(self, t, x, y, p):
        check_events(t, x, y, self.sensor, self.source, self.count)
        if len(t):
            self.in_order = self.in_order and t[0] >= self.last_t and not (np.diff(t) < 0).any()
            self.last_t = max(self.last_t, float(t.max()))
        if self.write_error is not None:
            raise self.write_error
        self.pending.put(_event_rows(self.fmt, t, x, y, p))
        self.count += len(t)

    def abort(self):
        """Stop the writing thread and close the files, which are left incomplete."""
        self.pending.put(None)
        self.writer.join()
        for file in self.files:
            file.file.close()

    def close(self):
        """Finish the files; returns the number of events."""
        self.pending.put(None)
        self.writer.join()
        for file in self.files:
            file.close()
        if self.write_error is not None:
            raise self.write_error
        if not self.in_order:
            print(f"note: {self.source}: events are not in time order; sorting them (stable)", file=sys.stderr)
            self._sort()
        return self.count

    def _sort(self):
        first = np.load(self.files[0].path, mmap_mode="r")  # the time column comes first in both layouts
        order = np.argsort(first if first.ndim == 1 else first[:, 0], kind="stable")
        del first
        for file in self.files:
            column = np.load(file.path, mmap_mode="r")
            sorted_file = NpyAppender(file.path + ".sorting", file.dtype, file.row_shape)
            for start in range(0, len(order), BATCH):
                sorted_file.append(column[order[start:start + BATCH]])
            sorted_file.close()
            del column  # release the map before replacing the file under it
            os.replace(sorted_file.path, file.path)


class FolderFrames:
    """The authors' frames: KEY/frame_XXXXXXXX.png, lossless (RGB frames as colour PNGs), listed
    with their times in KEY.txt."""

    def __init__(self, folder):
        self.folder, self.written = folder, {key: [] for key in FRAME_FOLDERS}  # key -> [(t, file)]

    def add(self, key, t, image):
        if not self.written[key]:
            os.mkdir(os.path.join(self.folder, key))
        name = f"{key}/frame_{len(self.written[key]):08d}.png"
        utils.write_png(os.path.join(self.folder, name), image)
        self.written[key].append((t, name))

    def abort(self):
        """Nothing to do: each PNG is closed once written."""

    def close(self, source):
        """Write the lists of frames; returns ({key: number of frames}, None: the clock is kept)."""
        for key, written in self.written.items():
            if written:
                times = repair_frame_times([t for t, _ in written], f"{source} ({key})")
                with open(os.path.join(self.folder, f"{key}.txt"), "w") as f:
                    f.writelines(f"{t:.9f} {name}\n" for t, (_, name) in zip(times, written))
        return {key: len(written) for key, written in self.written.items()}, None


class EvrealFrames:
    """EVREAL's frames: images.npy [K, H, W, 1] uint8, gray as EVREAL's converter makes them (an
    RGB frame is converted), appended as they come; then images_ts.npy and
    image_event_indices.npy, on EVREAL's clock (see rezero_evreal). EVREAL's layout has no colour
    frames beside the gray ones: those are left out, with a note."""

    def __init__(self, folder):
        self.folder, self.images, self.times, self.skipped = folder, None, [], 0

    def add(self, key, t, image):
        if key != "images":
            self.skipped += 1
            return
        image = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image)[..., None]
        if self.images is None:
            self.images = NpyAppender(os.path.join(self.folder, "images.npy"), np.uint8, image.shape)
        if image.shape != self.images.row_shape:
            raise EventDataError(self.folder, f"frame {len(self.times)} is {image.shape[1]}x{image.shape[0]} but the first "
                                              f"is {self.images.row_shape[1]}x{self.images.row_shape[0]} (WxH)")
        self.images.append(image[None])
        self.times.append(t)

    def abort(self):
        if self.images is not None:
            self.images.file.close()

    def close(self, source):
        """Finish images.npy, re-zero the clock and write the frames' times and event indices
        (after the events are finished: their times are shifted and searched); returns
        ({key: number of frames}, the recording time of EVREAL's zero)."""
        if self.skipped:
            print(f"note: {source}: EVREAL's layout holds one stream of frames; {self.skipped} colour frames "
                  f"are not written", file=sys.stderr)
        times = np.zeros(0)
        if self.images is not None:
            self.images.close()
            times = repair_frame_times(self.times, f"{source} (images)")
        t_zero = rezero_evreal(self.folder, times)
        return {"images": len(self.times), "color_images": 0}, t_zero


def rezero_evreal(folder, frame_times):
    """Put an EVREAL folder's events (events_ts.npy, rewritten in place a batch at a time) and
    its frames' times on EVREAL's clock, whose zero is the earlier of the first frame and the
    first event; write images_ts.npy [K, 1] and image_event_indices.npy [K, 1] (the last event
    at or before each frame, clipped to the events) when there are frames. Returns the zero."""
    events_t = np.load(os.path.join(folder, "events_ts.npy"), mmap_mode="r+")
    t_zero = float(min(events_t[0], frame_times.min())) if len(frame_times) else float(events_t[0])
    for start in range(0, len(events_t), BATCH):
        events_t[start:start + BATCH] -= t_zero
    events_t.flush()
    if len(frame_times):
        frame_times = (np.asarray(frame_times, dtype=np.float64) - t_zero)[:, None]
        indices = np.clip(np.searchsorted(events_t, frame_times[:, 0], side="right") - 1, 0, len(events_t) - 1)
        np.save(os.path.join(folder, "images_ts.npy"), frame_times)
        np.save(os.path.join(folder, "image_event_indices.npy"), indices.astype(np.int64)[:, None])
    del events_t  # release the map before the folder is renamed
    return t_zero


def _write_sequence(source, folder, dataset, name, fmt="evinr"):
    """Stream `source` into the (empty) `folder` in layout `fmt`; returns a summary."""
    facts = DATASETS[dataset]
    sensor, writer = None, None
    frames = FolderFrames(folder) if fmt == "evinr" else EvrealFrames(folder)
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
                        writer = EventsNpyWriter(folder, source, sensor or facts["sensor"], fmt)
                    writer.write(*piece[1:])
                    bar.update(len(piece[1]))
                elif piece[0] == "frame":
                    frames.add(*piece[1:])
        except BaseException:
            if writer is not None:
                writer.abort()
            frames.abort()
            raise
    if writer is None or writer.close() == 0:
        frames.abort()
        raise EventDataError(source, "no events")
    summary = {"dataset": dataset, "sequence": name, "source": os.path.basename(source),
               "sensor_resolution": list(sensor or facts["sensor"]), "num_events": writer.count}
    counts, t_zero = frames.close(source)  # after the events: EVREAL's clock starts at them or a frame
    if t_zero is not None:
        summary["t_zero"] = t_zero
    summary.update(num_frames=counts["images"], num_color_frames=counts["color_images"])
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def convert_sequence(source, destination, dataset, overwrite=False, fmt="evinr"):
    """Convert one recording to the authors' layout (or EVREAL's) at `destination`, all or nothing."""
    destination = os.path.normpath(destination)
    if os.path.exists(destination) and not overwrite:
        raise EventDataError(destination, "already exists (pass --overwrite to replace it)")
    with command.staged_folder(destination, replace=overwrite) as staging:
        summary = _write_sequence(source, staging, dataset, os.path.basename(destination), fmt)
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
        name = find_sequence(dataset, stem) or stem  # a known sequence under its other name
        if name not in sources and extension in facts["sources"] and extension:
            sources[name] = os.path.join(raw_data_dir, entry)
    return sources


def main(dataset, argv=None):
    """The converter command line; returns the exit status: 0 every sequence converted, 2 a bad
    or missing recording (or a sequence already converted), 1 a failure of the environment (disk
    full, folder not writable; it wins when both happen), 130 interrupted (Ctrl-C, SIGTERM,
    SIGHUP). A failed sequence leaves nothing behind, not even an empty output folder."""
    command.prepare_command_line()
    facts = DATASETS[dataset]
    parser = command.ArgumentParser(prog=command.program_name(), description=f"Convert {dataset} recordings to the EvINR layout "
                                                 f"(events.npy, images/, images.txt) or EVREAL's, without ROS.")
    parser.add_argument("--raw_data_dir", required=True, help=f"folder of the {dataset} downloads "
                        f"({', '.join(e or 'text folder' for e in facts['sources'])})")
    parser.add_argument("--output_data_dir", required=True, help="one folder per sequence is written here")
    parser.add_argument("--sequences", nargs="+", metavar="NAME", help="convert only these (default: every one found)")
    parser.add_argument("--overwrite", action="store_true", help="replace sequences already converted")
    parser.add_argument("--format", choices=FORMATS, default="evinr",
                        help="evinr: the authors' layout; evreal: EVREAL's npy folder (events_ts/xy/p.npy, images.npy, ...)")
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
                summary = convert_sequence(path, os.path.join(args.output_data_dir, name), dataset, args.overwrite,
                                           args.format)
                print(f"{name}: {summary['num_events']} events, {summary['num_frames']} frames"
                      + (f", {summary['num_color_frames']} colour frames" if summary["num_color_frames"] else ""))
            except EventDataError as error:
                print(f"error: {error}", file=sys.stderr)
                status = status or 2
            except OSError as error:
                print(f"error: {command.os_error_line(error, os.path.join(args.output_data_dir, name))}", file=sys.stderr)
                status = 1
    except KeyboardInterrupt:
        print("interrupted: the sequence being converted was not written", file=sys.stderr)
        return 130
    return status
