"""
Reading events and binning them into event frames.

Every reader returns an `Events`: time stamps in seconds on the recording's own clock, column
index x, row index y, polarity p in {-1, +1}, the sensor size when the file knows it, and the
APS frames with their time stamps when the file has them. `load_events` finds the reader from
the path, runs it and validates the result, so the rest of the code can trust what it gets.

Run `python event_data.py --info PATH` for a one-line JSON summary of a recording.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch


class EventDataError(Exception):
    """Bad input. Its message is one line that names the file and the problem."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class Events:
    t: np.ndarray                    # float64 [N], seconds, recording clock, non-decreasing
    x: np.ndarray                    # int16 [N], column index
    y: np.ndarray                    # int16 [N], row index
    p: np.ndarray                    # int8 [N], -1 or +1
    sensor: tuple | None = None      # (H, W) when the file states it
    frames: np.ndarray | None = None  # uint8 [K, H, W] or [K, H, W, 3] APS frames
    frame_t: np.ndarray | None = None  # float64 [K], seconds, same clock as t
    format: str = ""
    path: str = ""

    def __len__(self):
        return len(self.t)


# -----------------------------------------------------------------------------
# readers: each is `read(path, **options) -> Events`, registered with a detector

READERS = []  # (format name, detect(path) -> bool, read(path, **options) -> Events)


def reader(name, detect):
    """Register a reader. Adding a format is writing one function with this decorator."""
    def register(read):
        READERS.append((name, detect, read))
        return read
    return register


def _polarity(values, path):
    """Map {0, 1} or {-1, +1} polarities to int8 -1/+1; anything else is an error."""
    values = np.asarray(values)
    if values.dtype == bool:
        return np.where(values, 1, -1).astype(np.int8)
    if values.size and np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise EventDataError(path, "polarity column holds NaN or inf")
    if values.size and ((values != 0) & (values != 1) & (values != -1)).any():
        bad = values[(values != 0) & (values != 1) & (values != -1)][0]
        raise EventDataError(path, f"polarity must be 0/1 or -1/+1, found {bad}")
    return np.where(values > 0, 1, -1).astype(np.int8)


def _coordinate(values, path, name):
    """Pixel coordinates must be whole numbers that fit in int16."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise EventDataError(path, f"{name} column holds NaN or inf")
        if (values != np.round(values)).any():
            raise EventDataError(path, f"{name} column holds non-integer pixel coordinates")
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.int16).max):
        bad = values[(values < 0) | (values > np.iinfo(np.int16).max)][0]
        raise EventDataError(path, f"{name} coordinate {bad} is outside the sensor")
    return values.astype(np.int16)


def events_from_columns(t, x, y, p, path, fmt, sensor=None, frames=None, frame_t=None):
    """Build `Events` from raw columns, converting types and polarity; validation comes later."""
    t = np.asarray(t, dtype=np.float64)
    return Events(t=t, x=_coordinate(x, path, "x"), y=_coordinate(y, path, "y"),
                  p=_polarity(p, path), sensor=sensor, frames=frames, frame_t=frame_t,
                  format=fmt, path=path)


def events_from_array(array, path, fmt, **extra):
    """An [N, 4] array of (t, x, y, p) rows, as the authors' events.npy holds."""
    if array.ndim != 2 or array.shape[1] != 4:
        raise EventDataError(path, f"expected an [N, 4] array of (t, x, y, p), got shape {list(array.shape)}")
    return events_from_columns(array[:, 0], array[:, 1], array[:, 2], array[:, 3], path, fmt, **extra)


def read_image_list(folder, list_name="images.txt"):
    """Read `images.txt` (lines `t relative/path.png`) and the images it names, as gray uint8."""
    import cv2
    list_path = os.path.join(folder, list_name)
    times, frames = [], []
    with open(list_path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise EventDataError(list_path, f"line {line_number}: expected 'time path', got {line.strip()!r}")
            try:
                times.append(float(parts[0]))
            except ValueError:
                raise EventDataError(list_path, f"line {line_number}: bad time {parts[0]!r}") from None
            image_path = os.path.join(folder, parts[1])
            image = cv2.imread(image_path, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise EventDataError(image_path, "missing or unreadable image")
            if image.ndim == 3:  # OpenCV reads colour as BGR; frames are stored RGB
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
            frames.append(image)
    if not frames:
        return None, None
    if len({frame.shape for frame in frames}) != 1:
        raise EventDataError(list_path, "APS frames have different sizes")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def read_ecd_txt(path):
    """ECD/IJRR `events.txt`: lines `t x y p`, no header; malformed lines are named."""
    try:
        array = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise EventDataError(path, f"malformed line: {str(error).splitlines()[0]}") from None
    if array.size == 0:
        raise EventDataError(path, "no events in file")
    return array


def _is_folder_with(*names):
    return lambda path: os.path.isdir(path) and all(os.path.isfile(os.path.join(path, n)) for n in names)


@reader("npy", lambda path: path.endswith(".npy") and os.path.isfile(path))
def read_npy(path, **options):
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return events_from_array(array, path, "npy")


@reader("evinr_folder", _is_folder_with("events.npy"))
def read_evinr_folder(path, **options):
    events = read_npy(os.path.join(path, "events.npy"))
    if os.path.isfile(os.path.join(path, "images.txt")):
        events.frames, events.frame_t = read_image_list(path)
    events.format, events.path = "evinr_folder", path
    return events


@reader("ecd_folder", _is_folder_with("events.txt"))
def read_ecd_folder(path, **options):
    events = events_from_array(read_ecd_txt(os.path.join(path, "events.txt")), os.path.join(path, "events.txt"), "ecd_folder")
    if os.path.isfile(os.path.join(path, "images.txt")):
        events.frames, events.frame_t = read_image_list(path)
    events.path = path
    return events


@reader("h5", lambda path: path.endswith((".h5", ".hdf5")) and os.path.isfile(path))
def read_h5(path, **options):
    """HDF5 in the event_cnn_minimal / HQF layout: events/{ts,xs,ys,ps}, images/image*."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if "events" not in f or not all(k in f["events"] for k in ("ts", "xs", "ys", "ps")):
                raise EventDataError(path, "missing dataset: expected events/ts, events/xs, events/ys, events/ps")
            group = f["events"]
            sensor = tuple(int(v) for v in f.attrs["sensor_resolution"]) if "sensor_resolution" in f.attrs else None
            frames = frame_t = None
            if "images" in f and len(f["images"]):
                names = sorted(f["images"].keys())
                frames = np.stack([f["images"][n][()] for n in names])
                frame_t = np.array([f["images"][n].attrs["timestamp"] for n in names], dtype=np.float64)
            return events_from_columns(group["ts"][()], group["xs"][()], group["ys"][()], group["ps"][()],
                                       path, "h5", sensor=sensor, frames=frames, frame_t=frame_t)
    except OSError as error:
        raise EventDataError(path, f"unreadable or truncated HDF5 file ({error})") from None


# -----------------------------------------------------------------------------
# loading and validation

def detect_format(path):
    if not os.path.exists(path):
        raise EventDataError(path, "no such file or folder")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise EventDataError(path, "file is empty")
    for name, detect, _ in READERS:
        if detect(path):
            return name
    raise EventDataError(path, "unknown event format (see README: supported formats)")


def validate(events, sensor=None):
    """Check that events are usable: non-empty, finite, time-sorted, inside the sensor.

    `sensor` is the (H, W) the user asked for; when the file states its own size the two must
    agree, up to the order of the two numbers, which is reported and corrected (never silently).
    Returns the sensor size to use."""
    path = events.path
    if len(events) == 0:
        raise EventDataError(path, "no events in file")
    if not np.isfinite(events.t).all():
        raise EventDataError(path, f"time stamp is NaN or inf at event {int(np.argmin(np.isfinite(events.t)))}")
    backwards = np.flatnonzero(np.diff(events.t) < 0)
    if backwards.size:
        i = int(backwards[0])
        raise EventDataError(path, f"time stamps are not sorted: event {i + 1} ({events.t[i + 1]:.6f} s) is before event {i} ({events.t[i]:.6f} s)")
    x_max, y_max = int(events.x.max()), int(events.y.max())
    if events.frames is not None:
        frame_size = tuple(events.frames.shape[1:3])
        if events.sensor is not None and tuple(events.sensor) != frame_size:
            raise EventDataError(path, f"sensor size {list(events.sensor)} disagrees with APS frame size {list(frame_size)}")
        events.sensor = events.sensor or frame_size
        if len(events.frame_t) != len(events.frames):
            raise EventDataError(path, "number of APS frames and frame time stamps differ")
    file_sensor = tuple(events.sensor) if events.sensor is not None else None
    if sensor is not None and None not in sensor:
        sensor = tuple(int(v) for v in sensor)
        if file_sensor is not None and sensor != file_sensor:
            if sensor[::-1] == file_sensor:
                print(f"note: --H {sensor[0]} --W {sensor[1]} is the file's sensor transposed; "
                      f"using the file's H={file_sensor[0]} rows, W={file_sensor[1]} columns", file=sys.stderr)
                sensor = file_sensor
            else:
                raise EventDataError(path, f"--H {sensor[0]} --W {sensor[1]} disagrees with the file's sensor size H={file_sensor[0]}, W={file_sensor[1]}")
        elif file_sensor is None and (x_max >= sensor[1] or y_max >= sensor[0]):
            if x_max < sensor[0] and y_max < sensor[1]:
                print(f"note: events reach x={x_max}, which does not fit --W {sensor[1]}; the flags are read "
                      f"as transposed: H={sensor[1]} rows, W={sensor[0]} columns", file=sys.stderr)
                sensor = sensor[::-1]
    elif file_sensor is not None:
        sensor = file_sensor
    else:
        sensor = (y_max + 1, x_max + 1)
        print(f"warning: {path}: sensor size not given and not in the file; using the largest "
              f"coordinates: H={sensor[0]}, W={sensor[1]} (set --H/--W to be sure)", file=sys.stderr)
    if x_max >= sensor[1] or y_max >= sensor[0]:
        i = int(np.flatnonzero((events.x >= sensor[1]) | (events.y >= sensor[0]))[0])
        raise EventDataError(path, f"event {i} at x={events.x[i]}, y={events.y[i]} is outside the {sensor[1]}x{sensor[0]} (WxH) sensor")
    if events.frames is not None and not np.isfinite(events.frame_t).all():
        raise EventDataError(path, "APS frame time stamp is NaN or inf")
    return sensor


def load_events(path, sensor=None, **options):
    """Read any supported recording and validate it. Returns (events, (H, W))."""
    path = os.path.normpath(path)
    name = detect_format(path)
    read = next(read for n, _, read in READERS if n == name)
    events = read(path, **options)
    events.format = events.format or name
    return events, validate(events, sensor)


def info(path, **options):
    events, sensor = load_events(path, **options)
    return {"format": events.format, "num_events": len(events), "sensor": list(sensor),
            "t_first": float(events.t[0]), "t_last": float(events.t[-1]),
            "num_frames": 0 if events.frames is None else int(len(events.frames))}


# -----------------------------------------------------------------------------
# event frames

def chunk_boundaries(t, n_chunks, t_begin, t_end, mode="count"):
    """Split the events with times `t` (sorted, inside [t_begin, t_end]) into `n_chunks`.

    Returns (starts, times): `starts[k]` is the index of the first event of chunk k
    (`starts[n_chunks] == len(t)`), and `times[k]` the time that separates chunk k-1 from
    chunk k, with `times[0] = t_begin` and `times[n_chunks] = t_end`. Every event of chunk k
    lies in [times[k], times[k+1]], so the change of the video over exactly that span is what
    the chunk's events describe.

    mode "count" gives every chunk the same number of events (the authors' choice); the inner
    boundary time is halfway between the last event of one chunk and the first of the next.
    mode "time" gives every chunk the same duration."""
    n_events = len(t)
    if mode == "count":
        starts = (np.arange(n_chunks + 1, dtype=np.int64) * n_events) // n_chunks
        inner = starts[1:-1]
        times = np.empty(n_chunks + 1, dtype=np.float64)
        times[0], times[-1] = t_begin, t_end
        times[1:-1] = 0.5 * (t[np.maximum(inner - 1, 0)] + t[np.minimum(inner, n_events - 1)])
    elif mode == "time":
        times = np.linspace(t_begin, t_end, n_chunks + 1)
        starts = np.searchsorted(t, times, side="left")
        starts[0], starts[-1] = 0, n_events
    else:
        raise ValueError(f"unknown chunking mode {mode!r}")
    return starts, times


def event_frames(x, y, p, starts, sensor, threshold=1.0, color=False):
    """Sum `threshold * p` per pixel over each chunk `starts[k]:starts[k+1]`.

    x, y, p are tensors on the device the frames are wanted on; the sum is one scatter-add,
    with no loop over chunks or events. Returns [n_chunks, C, H, W] float32, where C = 3 for
    colour (Bayer RGGB) events and 1 otherwise."""
    height, width = sensor
    n_chunks = len(starts) - 1
    counts = torch.as_tensor(np.diff(starts), device=x.device)
    chunk = torch.repeat_interleave(torch.arange(n_chunks, device=x.device), counts)
    flat = (chunk * height + y.long()) * width + x.long()
    frames = torch.zeros(n_chunks * height * width, device=x.device, dtype=torch.float32)
    frames.index_add_(0, flat, p.to(torch.float32))
    frames = frames.view(n_chunks, 1, height, width) * threshold
    return bayer_to_rgb(frames) if color else frames


def bayer_to_rgb(frames):
    """Split an RGGB Bayer mosaic [n, 1, H, W] into R, mean(G1, G2), B, each brought back to
    full size by repeating every 2x2 cell (nearest). H and W must be even."""
    red = frames[:, :, 0::2, 0::2]
    green = 0.5 * (frames[:, :, 0::2, 1::2] + frames[:, :, 1::2, 0::2])
    blue = frames[:, :, 1::2, 1::2]
    cells = torch.cat([red, green, blue], dim=1)
    return cells.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def main():
    parser = argparse.ArgumentParser(description="Summarise an event recording as one JSON line.")
    parser.add_argument("--info", metavar="PATH", required=True, help="recording: any supported format")
    parser.add_argument("--H", type=int, default=None, help="sensor height (rows), when the file lacks it")
    parser.add_argument("--W", type=int, default=None, help="sensor width (columns), when the file lacks it")
    args = parser.parse_args()
    try:
        print(json.dumps(info(args.info, sensor=(args.H, args.W))))
    except EventDataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
