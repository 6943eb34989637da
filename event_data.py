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
import signal
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np


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
    encoding: str = ""               # how the file stores events, when a format has several
    time_unit: str = ""              # the unit of the file's time stamps ("s", "us", "ns")

    def __len__(self):
        return len(self.t)

    # What the fit reads of a recording, also offered by EventFile (a recording left on disk):
    def positions(self, times, side="left"):
        """Index of the first event at (side "left") or after ("right") each time."""
        return np.searchsorted(self.t, times, side=side)

    def times_at(self, indices):
        return self.t[indices]

    def rows(self, first, last):
        """Events first:last (views of these columns)."""
        return Events(t=self.t[first:last], x=self.x[first:last], y=self.y[first:last], p=self.p[first:last],
                      sensor=self.sensor, format=self.format, path=self.path)


# -----------------------------------------------------------------------------
# readers
#
# Every format is read as a stream of pieces, so that a recording of any length can be
# converted without ever being whole in memory, and loaded with a single copy of it:
#   ("sensor", (H, W))          the sensor size, when the file states it
#   ("events", t, x, y, p)      a batch of events, typed as in `Events`
#   ("frame", key, t, image)    one APS frame (uint8, gray [H, W] or RGB [H, W, 3]); key is
#                               "images", or "color_images" for a bag's second, colour topic
#   ("info", {name: value})     facts about how the file stores events, for --info: "encoding"
#                               and "time_unit" (the unit of its time stamps)
# `collect` gathers a stream into an `Events`; `stream_events` gives the pieces of any format.

READERS = []  # (format name, detect(path) -> bool, read(path, **options) -> Events)
STREAMS = {}  # format name -> stream(path, **options) yielding pieces
BATCH = 1 << 20  # events per piece: large enough for numpy to be efficient, small next to a recording
COLUMN_READERS = {}  # format name -> columns(path) -> Columns, for the formats EventFile reads by position


@dataclass
class Columns:
    """A recording's event columns on disk, read by position (see EventFile)."""
    count: int
    read: object                  # (first, last) -> the raw t (seconds, or the file's unit), x, y, p of those events
    facts: dict                   # "encoding" and "time_unit", as an ("info", ...) piece
    sensor: tuple | None = None
    frames: object = None         # a list of ("frame", ...) pieces, or an array-like [K, H, W] read on demand
    frame_t: np.ndarray | None = None


def reader(name, detect):
    """Register a reader. Adding a format is writing one function with this decorator."""
    def register(read):
        READERS.append((name, detect, read))
        return read
    return register


def stream_reader(name, detect, sort=False):
    """Register a format read piece by piece; its whole-file reader collects the pieces.
    `sort`: the format may hold events out of time order (bags), so the reader sorts them."""
    def register(stream):
        STREAMS[name] = stream
        reader(name, detect)(lambda path, **options: collect(stream(path, **options), path, name, sort))
        return stream
    return register


def _polarity(values, path):
    """Map {0, 1} or {-1, +1} polarities to int8 -1/+1; anything else is an error."""
    values = np.asarray(values)
    if values.dtype == bool:
        return np.where(values, 1, -1).astype(np.int8)
    # One pass decides: a value is -1, 0 or 1 exactly when its square is its magnitude (NaN fails;
    # an infinity passes that but not the bound; integer wrap-around admits no other value).
    magnitude = np.abs(values)
    valid = np.square(values) == magnitude
    if np.issubdtype(values.dtype, np.floating):
        valid &= magnitude <= 1
    if not valid.all():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise EventDataError(path, "polarity column holds NaN or inf")
        raise EventDataError(path, f"polarity must be 0/1 or -1/+1, found {values[~valid][0]}")
    return (values > 0).view(np.int8) * np.int8(2) - np.int8(1)


def _coordinate(values, path, name):
    """Pixel coordinates must be whole numbers that fit in int16."""
    values = np.asarray(values)
    if not values.size:
        return values.astype(np.int16)
    # the common case in three passes: in range (NaN fails the comparisons), then whole numbers
    # (the int16 of an in-range value is its integer part); any failure is named by the checks below
    low, high = values.min(), values.max()
    if low >= 0 and high <= np.iinfo(np.int16).max:
        whole = values.astype(np.int16)
        if not np.issubdtype(values.dtype, np.floating) or (whole == values).all():
            return whole
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise EventDataError(path, f"{name} column holds NaN or inf")
        if (values != np.round(values)).any():
            raise EventDataError(path, f"{name} column holds non-integer pixel coordinates")
    bad = values[(values < 0) | (values > np.iinfo(np.int16).max)][0]
    raise EventDataError(path, f"{name} coordinate {bad} is outside the sensor")


def _event_piece(t, x, y, p, path):
    """A ("events", ...) piece from raw columns of one batch, typed and checked."""
    return ("events", np.asarray(t, dtype=np.float64), _coordinate(x, path, "x"), _coordinate(y, path, "y"),
            _polarity(p, path))


class _ColumnBuffer:
    """Event columns that grow in place: numpy's resize is a realloc, which the C library does by
    remapping pages rather than copying, so collecting N events costs one copy of N events, not
    the two that a list of batches followed by a concatenation needs."""

    def __init__(self, capacity=BATCH):
        self.size = 0
        self.columns = [np.empty(capacity, dtype) for dtype in (np.float64, np.int16, np.int16, np.int8)]

    def append(self, *batch):
        n = len(batch[0])
        if self.size + n > len(self.columns[0]):
            # grow by a quarter: resize zero-fills the new room, so little slack stays resident
            capacity = max(self.size + n, len(self.columns[0]) + len(self.columns[0]) // 4)
            for column in self.columns:
                column.resize(capacity, refcheck=False)
        for column, values in zip(self.columns, batch):
            column[self.size:self.size + n] = values
        self.size += n

    def arrays(self):
        for column in self.columns:
            column.resize(self.size, refcheck=False)
        return self.columns


def repair_frame_times(frame_t, path):
    """Replace each APS time stamp that is earlier than the one before it by the mean of its two
    neighbours, as EVREAL does (HQF engineering_posters, frame 528, needs it); warns for each."""
    frame_t = np.array(frame_t, dtype=np.float64)
    for i in np.flatnonzero(np.diff(frame_t) < 0) + 1:
        repaired = 0.5 * (frame_t[i - 1] + frame_t[i + 1]) if i + 1 < len(frame_t) else frame_t[i - 1]
        print(f"warning: {path}: APS frame {i} time {frame_t[i]:.6f} s is before the previous frame's; "
              f"using {repaired:.6f} s", file=sys.stderr)
        frame_t[i] = repaired
    return frame_t


# Time stamps are seconds in every format this project writes, but many tools write integer
# microseconds (or nanoseconds) into the same [N, 4] arrays and text lines. Whole-number time
# stamps are read in the first of seconds, microseconds, nanoseconds in which they are plausible:
# they span at most SECONDS_SPAN_LIMIT (about 28 hours; a recording lasts minutes or hours) and
# read at most LATEST_CLOCK (the year 2100 in Unix time; a clock counts from the recording's start
# or from 1970). Time stamps in another unit are converted, with a note. The span is that of the
# central 98% of the events, so that one corrupt time stamp does not decide it (train.covered_span
# leaves those out). Nanoseconds from the recording's start spanning under 100 s look like
# microseconds 1000 times longer; the note gives the resulting length, so that shows.
SECONDS_SPAN_LIMIT = 1e5
LATEST_CLOCK = 4.1e9
TIME_UNITS = ((1.0, "seconds"), (1e6, "microseconds"), (1e9, "nanoseconds"))


def units_per_second(t, path):
    """The divisor that takes time stamps `t` (sorted) to seconds (see SECONDS_SPAN_LIMIT)."""
    n = len(t)
    return time_divisor(t[:BATCH], t[n // 100], t[n - 1 - n // 100], path) if n >= 2 else 1.0


def time_divisor(head, first, last, path):
    """units_per_second from what it reads of the time stamps: the first batch (`head`; whole
    numbers are checked on it: enough to tell, and bounded), and those 1% from each end."""
    if not (head == np.round(head)).all():
        return 1.0
    first, last = float(first), float(last)
    for divisor, unit in TIME_UNITS:
        if (last - first) / divisor <= SECONDS_SPAN_LIMIT and max(abs(first), abs(last)) / divisor <= LATEST_CLOCK:
            if divisor != 1.0:
                print(f"note: {path}: time stamps span {last - first:.0f} units, too long for seconds; read as {unit} "
                      f"({(last - first) / divisor:.3f} s)", file=sys.stderr)
            return divisor
    return 1.0  # plausible in no unit (unsorted, corrupt): validation and planning name the problem


def collect(pieces, path, fmt, sort=False):
    """Gather a stream of pieces into one `Events` (frames of key "images" only)."""
    columns = _ColumnBuffer()
    sensor, frames, frame_t, facts = None, [], [], {}
    for piece in pieces:
        if piece[0] == "sensor":
            sensor = tuple(int(v) for v in piece[1])
        elif piece[0] == "info":
            facts.update(piece[1])
        elif piece[0] == "events":
            columns.append(*piece[1:])
        elif piece[0] == "frame" and piece[1] == "images":
            frame_t.append(piece[2])
            frames.append(piece[3])
    t, x, y, p = columns.arrays()
    if sort and len(t) and not _is_sorted(t):
        print(f"note: {path}: events are not in time order; sorting them (stable)", file=sys.stderr)
        order = np.argsort(t, kind="stable")
        t, x, y, p = t[order], x[order], y[order], p[order]
    divisor = units_per_second(t, path)
    if divisor != 1.0:
        t /= divisor  # in place: the columns are this function's own
        frame_t = [value / divisor for value in frame_t]
    if frames and len({frame.shape for frame in frames}) != 1:
        raise EventDataError(path, "APS frames have different sizes")
    return Events(t=t, x=x, y=y, p=p, sensor=sensor,
                  frames=np.stack(frames) if frames else None,
                  frame_t=repair_frame_times(frame_t, path) if frames else None, format=fmt, path=path, **facts)


def _is_sorted(t):
    """Non-decreasing, checked a batch at a time so that no N-sized temporaries are made."""
    return all(not (np.diff(t[start:start + BATCH + 1]) < 0).any() for start in range(0, len(t), BATCH))


def events_from_columns(t, x, y, p, path, fmt, sensor=None, frames=None, frame_t=None):
    """Build `Events` from raw columns, converting types and polarity; validation comes later."""
    columns = _ColumnBuffer(len(t))
    for start in range(0, len(t), BATCH):
        part = slice(start, start + BATCH)
        columns.append(*_event_piece(t[part], x[part], y[part], p[part], path)[1:])
    t, x, y, p = columns.arrays()
    return Events(t=t, x=x, y=y, p=p, sensor=sensor, frames=frames, frame_t=frame_t, format=fmt, path=path)


def _check_rows(array, path):
    if array.ndim != 2 or array.shape[1] != 4:
        raise EventDataError(path, f"expected an [N, 4] array of (t, x, y, p), got shape {list(array.shape)}")


def _decode_image(data, where):
    """PNG/JPEG bytes -> uint8 gray or RGB."""
    import cv2
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data is not None else None
    if image is None:
        raise EventDataError(where, "missing or unreadable image")
    if image.ndim == 3:  # OpenCV decodes colour as BGR; frames are stored RGB
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return image


def _image_list_pieces(list_path, text, load, key="images"):
    """Frames named by an images.txt (lines `t relative/path.png`); `load(relative)` gives the
    file's bytes, or None when it is missing."""
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise EventDataError(list_path, f"line {line_number}: expected 'time path', got {line.strip()!r}")
        try:
            t = float(parts[0])
        except ValueError:
            raise EventDataError(list_path, f"line {line_number}: bad time {parts[0]!r}") from None
        yield ("frame", key, t, _decode_image(load(parts[1]), os.path.join(os.path.dirname(list_path), parts[1])))


def _file_bytes(path):
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def _folder_image_pieces(folder, list_name="images.txt", key="images"):
    list_path = os.path.join(folder, list_name)
    with open(list_path) as f:
        text = f.read()
    return _image_list_pieces(list_path, text, lambda relative: _file_bytes(os.path.join(folder, relative)), key)


def _is_folder_with(*names):
    return lambda path: os.path.isdir(path) and all(os.path.isfile(os.path.join(path, n)) for n in names)


# --- numpy ------------------------------------------------------------------------

def _load_npy(path):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise EventDataError(path, f"unreadable or truncated .npy file ({str(error).splitlines()[0]})") from None


def _npy_batches(path):
    """A .npy array BATCH rows at a time. The file is read, not mapped: every page of a map that
    is touched counts as resident memory, as much as the array it is copied into."""
    array = _load_npy(path)  # a map of the file, used only for its layout
    if not array.flags.c_contiguous:  # Fortran order: rows are not contiguous in the file
        for start in range(0, len(array), BATCH):
            yield np.array(array[start:start + BATCH])
        return
    row_items = int(np.prod(array.shape[1:], dtype=np.int64))
    with open(path, "rb") as f:
        f.seek(array.offset)
        for start in range(0, len(array), BATCH):
            rows = min(BATCH, len(array) - start)
            yield np.fromfile(f, dtype=array.dtype, count=rows * row_items).reshape((rows,) + array.shape[1:])


@stream_reader("npy", lambda path: path.endswith(".npy") and os.path.isfile(path))
def stream_npy(path, **options):
    """An [N, 4] (t, x, y, p) array, as the authors' events.npy, read a batch at a time."""
    _check_rows(_load_npy(path), path)
    yield ("info", {"encoding": "[N, 4] array (t, x, y, p)", "time_unit": "s"})
    for rows in _npy_batches(path):
        yield _event_piece(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], path)


def _npy_rows(path, first, last):
    """Rows first:last of a .npy, copied out of a map of the file that is dropped at once, so
    that its pages do not stay resident (see _npy_batches)."""
    return np.array(_load_npy(path)[first:last])


def _npy_columns(path, sensor=None, frames=None):
    """An [N, 4] .npy's events as EventFile reads them."""
    array = _load_npy(path)
    _check_rows(array, path)

    def read(first, last):
        rows = _npy_rows(path, first, last)
        return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    return Columns(len(array), read, {"encoding": "[N, 4] array (t, x, y, p)", "time_unit": "s"}, sensor, frames)


COLUMN_READERS["npy"] = _npy_columns


def _metadata_sensor(folder):
    """`sensor_resolution` [H, W] from a metadata.json (EVREAL's, and this project's converters')."""
    metadata_path = os.path.join(folder, "metadata.json")
    if not os.path.isfile(metadata_path):
        return None
    try:
        with open(metadata_path) as f:
            height, width = json.load(f)["sensor_resolution"]
    except (ValueError, KeyError, TypeError):
        raise EventDataError(metadata_path, "expected a JSON object with sensor_resolution [H, W]") from None
    return int(height), int(width)


@stream_reader("evinr_folder", _is_folder_with("events.npy"))
def stream_evinr_folder(path, **options):
    """The authors' layout: events.npy, images.txt + images/, maybe color_images.txt + color_images/."""
    sensor = _metadata_sensor(path)
    if sensor:
        yield ("sensor", sensor)
    yield from stream_npy(os.path.join(path, "events.npy"))
    if os.path.isfile(os.path.join(path, "images.txt")):
        yield from _folder_image_pieces(path)
    if os.path.isfile(os.path.join(path, "color_images.txt")):
        yield from _folder_image_pieces(path, "color_images.txt", key="color_images")


@stream_reader("evreal_folder", _is_folder_with("events_ts.npy", "events_xy.npy", "events_p.npy"))
def stream_evreal_folder(path, **options):
    """EVREAL: events_ts.npy (s), events_xy.npy [N, 2], events_p.npy, images.npy [K, H, W, 1],
    images_ts.npy, metadata.json."""
    files = [os.path.join(path, f"events_{name}.npy") for name in ("ts", "xy", "p")]
    t, xy, p = (_load_npy(file) for file in files)
    if xy.ndim != 2 or xy.shape[1] != 2 or not len(t) == len(xy) == len(p):
        raise EventDataError(path, f"events_ts, events_xy [N, 2] and events_p disagree: shapes {t.shape}, {xy.shape}, {p.shape}")
    sensor = _metadata_sensor(path)
    if sensor:
        yield ("sensor", sensor)
    yield ("info", {"encoding": "EVREAL arrays", "time_unit": "s"})
    for t, xy, p in zip(*(_npy_batches(file) for file in files)):
        yield _event_piece(t.reshape(-1), xy[:, 0], xy[:, 1], p.reshape(-1), path)
    if os.path.isfile(os.path.join(path, "images.npy")):
        images = _load_npy(os.path.join(path, "images.npy"))
        images_t = np.asarray(_load_npy(os.path.join(path, "images_ts.npy")), dtype=np.float64).reshape(-1)
        if len(images) != len(images_t):
            raise EventDataError(path, f"{len(images)} images but {len(images_t)} image time stamps")
        for image, t_image in zip(images, images_t):
            image = np.asarray(image)
            yield ("frame", "images", float(t_image), image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)


COLUMN_READERS["evinr_folder"] = lambda path: _npy_columns(
    os.path.join(path, "events.npy"), _metadata_sensor(path),
    list(_folder_image_pieces(path)) if os.path.isfile(os.path.join(path, "images.txt")) else None)


class _NpyFrames:
    """The frames of an images.npy [K, H, W(, 1)], read one at a time (see _npy_rows)."""

    def __init__(self, path):
        self.path = path
        array = _load_npy(path)
        self.shape = array.shape[:3] if array.ndim == 4 and array.shape[3] == 1 else array.shape

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        return _npy_rows(self.path, index, index + 1)[0].reshape(self.shape[1:])


def _evreal_columns(path):
    """An EVREAL folder's events as EventFile reads them; its frames stay on disk too."""
    files = [os.path.join(path, f"events_{name}.npy") for name in ("ts", "xy", "p")]
    t, xy, p = (_load_npy(file) for file in files)
    if xy.ndim != 2 or xy.shape[1] != 2 or not len(t) == len(xy) == len(p):
        raise EventDataError(path, f"events_ts, events_xy [N, 2] and events_p disagree: shapes {t.shape}, {xy.shape}, {p.shape}")

    def read(first, last):
        t, xy, p = (_npy_rows(file, first, last) for file in files)
        return t.reshape(-1), xy[:, 0], xy[:, 1], p.reshape(-1)
    columns = Columns(len(t), read, {"encoding": "EVREAL arrays", "time_unit": "s"}, _metadata_sensor(path))
    if os.path.isfile(os.path.join(path, "images.npy")):
        columns.frames = _NpyFrames(os.path.join(path, "images.npy"))
        columns.frame_t = np.asarray(_load_npy(os.path.join(path, "images_ts.npy")), dtype=np.float64).reshape(-1)
        if len(columns.frames) != len(columns.frame_t):
            raise EventDataError(path, f"{len(columns.frames)} images but {len(columns.frame_t)} image time stamps")
    return columns


COLUMN_READERS["evreal_folder"] = _evreal_columns


# --- text events: `t x y p` lines ----------------------------------------------
#
# np.loadtxt manages about 1 M lines/s. Lines as ECD writes them ("0.003811000 96 133 0")
# are parsed instead with whole-array byte arithmetic: every byte below '0' is a separator, and
# a line must have exactly '.', ' ', ' ', ' ', '\n' as its separators; each field is then read as
# one unaligned 8-byte word ending at the field's end, and its digits are combined in the word
# (SWAR). A block that does not fit that mould (tabs, CRLF, exponents, signs) goes through
# np.fromstring, and a malformed line is then looked for line by line to name it.

_TXT_BLOCK = 1 << 20  # bytes per block: about 50 k lines, small enough to stay in cache
_TXT_PAD = b"0" * 16  # before each block, so that a word ending in the first field stays inside
_SEPARATORS = np.array([ord("."), ord(" "), ord(" "), ord(" "), ord("\n")], dtype=np.uint8)
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_POW10_FLOAT = 10.0 ** np.arange(19)  # exact: every power of ten up to 1e22 is a double
# _KEEP[n] keeps the n most significant bytes of a little-endian word: the last n characters
_KEEP = np.array([(2 ** 64 - 1) ^ (2 ** (8 * (8 - n)) - 1) for n in range(9)], dtype=np.uint64)
_ASCII_ZEROS = np.uint64(0x3030303030303030)


def _digits8(words, end, length):
    """Value of the `length` (<= 8) characters before each `end`, or None if one is not a digit."""
    keep = _KEEP[length]
    digits = (words[end - 8] & keep) ^ (_ASCII_ZEROS & keep)  # '0'..'9' -> 0..9, bytes outside -> 0
    if (((digits + np.uint64(0x7676767676767676)) | digits) & np.uint64(0x8080808080808080)).any():
        return None  # some byte is above 9: not a digit
    # pairs, then quadruples, then the octuple: the first character is the most significant
    digits = ((digits & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(10 * 2 ** 8 + 1)) >> np.uint64(8)
    digits = ((digits & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(100 * 2 ** 16 + 1)) >> np.uint64(16)
    digits = ((digits & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(10000 * 2 ** 32 + 1)) >> np.uint64(32)
    return digits.astype(np.int64)


def _digits(words, end, length):
    """Value of 1 to 16 digit characters before each `end`, or None."""
    if len(length) and (length.min() < 1 or length.max() > 16):
        return None
    low = _digits8(words, end, np.minimum(length, 8))
    if low is None or length.max() <= 8:
        return low
    high = _digits8(words, end - 8, np.maximum(length - 8, 0))
    return None if high is None else high * 10 ** 8 + low


def _parse_txt_fast(block):
    """(t, x, y, p) from a block of ECD-style lines, or None when the block is of another kind."""
    buffer = np.frombuffer(_TXT_PAD + block, np.uint8)
    words = np.ndarray((len(buffer) - 7,), dtype="<u8", buffer=buffer, strides=(1,))
    separators = np.flatnonzero(buffer < ord("0"))
    if len(separators) % 5:
        return None
    separators = separators.reshape(-1, 5)
    if not (buffer[separators] == _SEPARATORS).all():
        return None
    dot, space1, space2, space3, newline = separators.T
    line_start = np.concatenate([[len(_TXT_PAD)], newline[:-1] + 1])
    fraction_length = space1 - dot - 1
    if (dot - line_start + fraction_length).max() > 15:
        return None  # more digits than a double holds exactly
    whole = _digits(words, dot, dot - line_start)
    fraction = _digits(words, space1, fraction_length)
    x = _digits(words, space2, space2 - space1 - 1)
    y = _digits(words, space3, space3 - space2 - 1)
    if (newline - space3 == 2).all():  # one-character polarities, the usual case: no word needed
        p = buffer[newline - 1] - np.uint8(ord("0"))
        p = None if (p > 9).any() else p
    else:
        p = _digits(words, newline, newline - space3 - 1)
    if any(v is None for v in (whole, fraction, x, y, p)):
        return None
    # all digits as one integer below 2**53, then one correctly rounded division: exactly float(text)
    t = (whole * _POW10[fraction_length] + fraction) / _POW10_FLOAT[fraction_length]
    return t, x, y, p


def _parse_txt_general(block, path, first_line):
    """(t, x, y, p) from any whitespace-separated lines of 4 numbers; names a malformed line."""
    lines = block.split(b"\n")
    counts = [len(line.split()) for line in lines]
    values = None
    if all(count in (0, 4) for count in counts):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns, rather than fails, on text it cannot read
            try:
                values = np.fromstring(block, dtype=np.float64, sep=" ")
            except (ValueError, DeprecationWarning):
                values = None
    if values is None or len(values) != 4 * sum(count == 4 for count in counts):
        for number, line in enumerate(lines, first_line):
            try:
                if len(line.split()) not in (0, 4):
                    raise ValueError
                [float(field) for field in line.split()]
            except ValueError:
                text = line.decode(errors="replace").strip()
                raise EventDataError(path, f"line {number}: expected 't x y p', got {text[:80]!r}") from None
        raise EventDataError(path, f"lines {first_line}-{first_line + len(lines) - 1}: unreadable numbers")
    rows = values.reshape(-1, 4)
    return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]


def _txt_pieces(stream, path, first_line=1):
    """Event pieces from a binary stream of `t x y p` lines, a block of whole lines at a time."""
    yield ("info", {"encoding": "text lines (t x y p)", "time_unit": "s"})
    carry, line = b"", first_line
    while True:
        data = stream.read(_TXT_BLOCK)
        if not data:
            break
        data = carry + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > _TXT_BLOCK:  # not lines of text: stop before holding it all
            raise EventDataError(path, f"line {line}: longer than {_TXT_BLOCK} bytes; not a text file of events")
        block, carry = data[:cut], data[cut:]
        if block:
            columns = _parse_txt_fast(block)  # one event per line when it succeeds
            line_count = len(columns[0]) if columns else block.count(b"\n")
            columns = columns or _parse_txt_general(block, path, line)
            if len(columns[0]):
                yield _event_piece(*columns, path)
            line += line_count
    if carry.strip():
        yield _event_piece(*(_parse_txt_fast(carry + b"\n") or _parse_txt_general(carry, path, line)), path)


def _first_line_fields(path):
    try:
        with open(path, "rb") as f:
            return len(f.readline(4096).split())
    except OSError:
        return 0


def _e2vid_header(stream, path):
    """The `W H` first line of an E2VID txt -> sensor (H, W)."""
    fields = stream.readline(4096).split()
    try:
        width, height = (int(v) for v in fields)
    except ValueError:
        raise EventDataError(path, f"line 1: expected the sensor size 'W H', got {b' '.join(fields).decode(errors='replace')!r}") from None
    return height, width


@stream_reader("e2vid_txt", lambda path: path.endswith(".txt") and os.path.isfile(path) and _first_line_fields(path) == 2)
def stream_e2vid_txt(path, **options):
    """E2VID txt: a `W H` line, then `t x y p` lines."""
    with open(path, "rb") as f:
        yield ("sensor", _e2vid_header(f, path))
        yield from _txt_pieces(f, path, first_line=2)


@stream_reader("ecd_txt", lambda path: path.endswith(".txt") and os.path.isfile(path))
def stream_ecd_txt(path, **options):
    """A bare ECD `events.txt`; an `images.txt` beside it adds the APS frames."""
    with open(path, "rb") as f:
        yield from _txt_pieces(f, path)
    folder = os.path.dirname(path)
    if os.path.basename(path) == "events.txt" and os.path.isfile(os.path.join(folder, "images.txt")):
        yield from _folder_image_pieces(folder)


@stream_reader("ecd_folder", _is_folder_with("events.txt"))
def stream_ecd_folder(path, **options):
    """ECD/IJRR folder: events.txt, and images.txt with images/ when present."""
    events_path = os.path.join(path, "events.txt")
    with open(events_path, "rb") as f:
        yield from _txt_pieces(f, events_path)
    if os.path.isfile(os.path.join(path, "images.txt")):
        yield from _folder_image_pieces(path)


def _zip_member(archive, name):
    """The member `name`, at the top of the archive or inside its single top folder."""
    names = archive.namelist()
    if name in names:
        return name
    nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + name)]
    return nested[0] if len(nested) == 1 else None


def _is_ecd_zip(path):
    """A zip with an events.txt of `t x y p` lines (an E2VID zip's txt starts with `W H`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = _zip_member(archive, "events.txt")
            if member is None:
                return False
            with archive.open(member) as f:
                return len(f.readline(4096).split()) != 2
    except (OSError, zipfile.BadZipFile):
        return False


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise EventDataError(path, f"not a readable zip file ({error})") from None


@stream_reader("ecd_zip", lambda path: path.endswith(".zip") and os.path.isfile(path) and _is_ecd_zip(path))
def stream_ecd_zip(path, **options):
    """A zipped ECD/IJRR sequence: events.txt, images.txt, images/ (maybe under one top folder)."""
    with _open_zip(path) as archive:
        member = _zip_member(archive, "events.txt")
        prefix = member[:-len("events.txt")]
        with archive.open(member) as f:
            yield from _txt_pieces(f, f"{path}/{member}")
        if prefix + "images.txt" in archive.namelist():
            names = set(archive.namelist())
            text = archive.read(prefix + "images.txt").decode()
            yield from _image_list_pieces(f"{path}/{prefix}images.txt", text,
                                          lambda relative: archive.read(prefix + relative) if prefix + relative in names else None)


@stream_reader("e2vid_zip", lambda path: path.endswith(".zip") and os.path.isfile(path))
def stream_e2vid_zip(path, **options):
    """A zip holding one E2VID txt."""
    with _open_zip(path) as archive:
        texts = [n for n in archive.namelist() if n.endswith(".txt")]
        if len(texts) != 1:
            raise EventDataError(path, f"expected one .txt of events in the zip, found {len(texts)}")
        with archive.open(texts[0]) as f:
            yield ("sensor", _e2vid_header(f, f"{path}/{texts[0]}"))
            yield from _txt_pieces(f, f"{path}/{texts[0]}", first_line=2)


# --- Prophesee RAW (EVT 2.0, 2.1, 3.0) and DAT -------------------------------------------
#
# Metavision files start with `% key value` text lines (newer RAW files close them with
# `% end`), then binary words. The decoders are whole-array numpy, no loop over words: each word
# type is picked out by comparing the 4-bit type field, and the state that a word leaves for
# the words after it (the high bits of the time; in EVT 3.0 also the row and the vector base)
# reaches each event through a running count of the words that set it (`_latest`). A file is
# decoded a block at a time and that state is carried from block to block, so memory stays
# bounded and the result does not depend on where the blocks end. As Metavision's own decoders
# do, events that come before the state they need (the first time-high word, in EVT 3.0 also
# the first row) are dropped: their time or row is unknown.

_RAW_BLOCK = 1 << 19  # bytes decoded at once
_HEADER_LIMIT = 1 << 16  # bytes of `%` lines at most; longer is not a header
_HEADER_LINE_LIMIT = 1 << 10  # bytes of one header line at most
# Sensor (H, W) of the camera plugins and sensor generations that name it, for the files whose
# header has no geometry (Gen3 cameras' files): the plugin name holds the sensor's name.
_PROPHESEE_SENSORS = {"gen3": (480, 640), "gen31": (480, 640), "gen41": (720, 1280), "gen42": (720, 1280),
                      "imx636": (720, 1280)}
_ENCODING_NAMES = {"evt2": "EVT 2.0", "evt21": "EVT 2.1", "evt21_legacy": "EVT 2.1", "evt3": "EVT 3.0"}


def _header_text(line):
    """A header line's text, or None if the bytes are not a line of printable ASCII."""
    return line.decode("ascii").strip() if all(32 <= byte < 127 or byte in (9, 13) for byte in line) else None


def _prophesee_header(f, path):
    """The `% key value` lines at the start of an open file -> {key (lower case): value}; the file
    is left at the first byte after them. Without `% end`, a '%' that does not start a line of
    text is the first binary word, whose first byte happens to be '%'."""
    head = f.read(_HEADER_LIMIT)
    header, offset = {}, 0
    while head.startswith(b"%", offset):
        end = head.find(b"\n", offset, offset + _HEADER_LINE_LIMIT)
        text = _header_text(head[offset + 1:end if end >= 0 else len(head)])
        if end < 0 and text is not None and len(head) < _HEADER_LIMIT:
            raise EventDataError(path, "corrupt header: the file ends inside its header (truncated)")
        if end < 0 or text is None:
            if not header:
                raise EventDataError(path, "corrupt header: the first '%' line is not a line of text")
            break
        offset = end + 1
        if text == "end":
            break
        key, _, value = text.partition(" ")
        if key:
            header[key.lower()] = value.strip()
    f.seek(offset)
    return header


def _prophesee_sensor(header, path):
    """(H, W) from the header: the `format` line's height and width, `geometry WxH`, a DAT's
    Height and Width lines, or else the camera plugin or sensor generation; None if none says."""
    fields = dict(part.strip().split("=", 1) for part in header.get("format", "").split(";")[1:] if "=" in part)
    sizes = [(fields.get("height"), fields.get("width"))]
    if "geometry" in header:
        width, _, height = header["geometry"].lower().partition("x")
        sizes.append((height, width))
    sizes.append((header.get("height"), header.get("width")))
    for height, width in sizes:
        if height is not None and width is not None:
            try:
                return int(height), int(width)
            except ValueError:
                raise EventDataError(path, f"corrupt header: sensor size {width}x{height} is not two whole numbers") from None
    names = header.get("plugin_name", "").lower().split("_")
    names.append("gen" + header.get("sensor_generation", "").replace(".0", "").replace(".", ""))
    return next((_PROPHESEE_SENSORS[name] for name in names if name in _PROPHESEE_SENSORS), None)


def _raw_encoding(header, path):
    """'evt2', 'evt21', 'evt21_legacy' or 'evt3', from the `format` line (newer files) or the `evt`
    line. EVT 2.1 from an IMX636 (`endianness=legacy`) sends the 32 bits that hold the type first."""
    if "format" in header:
        name, *fields = header["format"].split(";")
        encoding = {"EVT2": "evt2", "EVT21": "evt21", "EVT3": "evt3"}.get(name.strip().upper())
        if encoding is None:
            raise EventDataError(path, f"unknown encoding {name.strip()!r} in the header (EVT2, EVT21 and EVT3 are read)")
        return encoding + ("_legacy" if encoding == "evt21" and "endianness=legacy" in fields else "")
    if "evt" in header:
        encoding = {"2.0": "evt2", "2.1": "evt21", "3.0": "evt3"}.get(header["evt"])
        if encoding is None:
            raise EventDataError(path, f"unknown encoding 'evt {header['evt']}' in the header (2.0, 2.1 and 3.0 are read)")
        return encoding
    raise EventDataError(path, "corrupt header: no '% evt' or '% format' line names the encoding")


# the set bits of every byte value: how many, and where (rising, then padding)
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
_BYTE_BIT_COUNT = _BYTE_BITS.sum(axis=1, dtype=np.intp)
_BYTE_BIT_POSITIONS = np.argsort(1 - _BYTE_BITS, axis=1, kind="stable")


def _bit_count_by_bytes(words):
    """Set bits of each uint64, from the byte table (numpy 1 has no np.bitwise_count)."""
    return _BYTE_BIT_COUNT[words.view(np.uint8)].reshape(len(words), 8).sum(axis=1)


_bit_count = getattr(np, "bitwise_count", _bit_count_by_bytes)


def _unwrap(counter, last, period):
    """Values of a counter that wraps at `period`, made to count on: a fall of more than half a
    period is one wrap. `last` is the unwrapped value before counter[0], or None."""
    counter = counter.astype(np.int64)
    if last is None:
        last = int(counter[0]) if len(counter) else 0
    wraps = np.cumsum(np.diff(counter, prepend=last % period) < -(period // 2))
    return counter + (last // period + wraps) * period


def _held(at, values, previous, length):
    """The value that each of `length` words sees of a state set by the words at positions `at`
    (sorted, with `values`): `previous` before the first, -1 if that is None. For states set
    rarely (time high): each value is repeated over its run of words."""
    runs = np.diff(at, prepend=0, append=length)
    return np.repeat(np.concatenate([[-1 if previous is None else previous], values]).astype(np.int64), runs)


def _latest(at, *states):
    """The value that each word at the positions `at` sees of each state (is_setter, values,
    previous): the value of the last word at or before it where `is_setter`, `previous` before
    the first (-1 if that is None). For states set often (EVT 3.0's row and time): the number
    of setters up to each position indexes `values`. It is read from the setters packed 64 to a
    word (those before, counted once, plus the bits of its own word up to the position), so
    that only the positions asked for are visited; a cumsum would add up every word, at twice
    the cost."""
    word = at >> 6
    shift = ~at.view(np.uint64) & np.uint64(63)  # drops the bits after each position
    seen = []
    for is_setter, values, previous in states:
        packed = np.packbits(is_setter, bitorder="little")
        packed = np.concatenate([packed, np.zeros(-len(packed) % 8, np.uint8)]).view("<u8")
        counts = _bit_count(packed)
        before = np.cumsum(counts, dtype=np.int64) - counts
        values_with_previous = np.empty(len(values) + 1, np.result_type(values.dtype, np.int16))
        values_with_previous[0] = -1 if previous is None else previous
        values_with_previous[1:] = values
        seen.append(values_with_previous[before[word] + _bit_count(packed[word] << shift)])
    return seen


def _set_bits(masks):
    """(index of the mask, position of the bit) of every set bit of the unsigned `masks`: mask by
    mask, and by rising bit inside one, which is the order of a vector word's events. Read a
    byte at a time from tables, so that the cost follows the events, not the mask width."""
    size = masks.dtype.itemsize  # 1, 2, 4 or 8
    byte = np.ascontiguousarray(masks, masks.dtype.newbyteorder("<")).view(np.uint8)
    count = _BYTE_BIT_COUNT[byte]
    source = np.repeat(np.arange(len(byte)), count)  # the byte that holds each set bit
    rank = np.arange(len(source)) - np.repeat(np.cumsum(count) - count, count)
    shift = size.bit_length() - 1
    return source >> shift, _BYTE_BIT_POSITIONS[byte[source], rank] + ((source & (size - 1)) << 3)


def _splice(column, vectors, count, events):
    """`column` with the entry at each position in `vectors` replaced by that vector word's
    `count` entries of `events` (in order)."""
    pieces, start = [], 0
    for at, vector_events in zip(vectors.tolist(), np.split(events, np.cumsum(count)[:-1])):
        pieces += [column[start:at], vector_events]
        start = at + 1
    return np.concatenate(pieces + [column[start:]])


def _vector_events(t, x, y, p, vectors, masks):
    """Events of words that each hold one event (t, x, y, p) but for the words at positions
    `vectors`, whose events are the set bits of `masks`: bit k is an event at x + k. Events keep
    the order of their words, and of x inside a word."""
    word, bit = _set_bits(masks)
    count = np.bincount(word, minlength=len(vectors))  # events of each vector word
    if len(vectors) <= 64:  # few: copying the runs between them costs less than gathering every event
        x_events = np.repeat(x[vectors], count) + bit.astype(x.dtype)
        return (_splice(t, vectors, count, np.repeat(t[vectors], count)), _splice(x, vectors, count, x_events),
                _splice(y, vectors, count, np.repeat(y[vectors], count)), _splice(p, vectors, count, np.repeat(p[vectors], count)))
    events_per_word = np.ones(len(t), np.intp)
    events_per_word[vectors] = count
    source = np.repeat(np.arange(len(t)), events_per_word)  # the word of each event
    t, x, y, p = t[source], x[source], y[source], p[source]
    # a vector word's first event comes after the extra events of the vector words before it
    first = vectors + np.cumsum(count - 1) - (count - 1)
    x[first[word] + np.arange(len(word)) - (np.cumsum(count) - count)[word]] += bit.astype(x.dtype)
    return t, x, y, p


class _WordDecoder:
    """Bytes in, events out (t in integer us, x, y, p as in `Events`), with the state that words
    leave for later words kept between calls; a partial word at the end of one call's bytes is
    completed by the next call's."""
    word = np.dtype("<u2")

    def __init__(self):
        self.rest = b""

    def feed(self, data):
        if self.rest:
            data = self.rest + bytes(data)
        whole = len(data) - len(data) % self.word.itemsize
        self.rest = bytes(data[whole:])
        return self.decode(np.frombuffer(data, self.word, whole // self.word.itemsize))


def _polarities(on):
    """0/1 (OFF/ON) -> int8 -1/+1."""
    return (on.astype(np.int8) << 1) - 1


def _time_high(decoder, typed):
    """EVT 2.0 / 2.1: the unwrapped time high (28 bits) that each word sees, -1 before the first
    EVT_TIME_HIGH; the decoder's carried value is updated."""
    at = np.flatnonzero((typed >> 28) == 0x8)
    highs = _unwrap(typed[at] & 0x0FFFFFFF, decoder.time_high, 1 << 28)
    held = _held(at, highs, decoder.time_high, len(typed))
    if len(highs):
        decoder.time_high = int(highs[-1])
    return held


class Evt2Decoder(_WordDecoder):
    """EVT 2.0, 32-bit words; type in bits 28-31. CD_OFF (0x0) and CD_ON (0x1): time low in bits
    22-27, x in 11-21, y in 0-10. EVT_TIME_HIGH (0x8): the 28 time bits above those 6. Other
    types (triggers, OTHERS, CONTINUED) carry no CD event."""
    word = np.dtype("<u4")

    def __init__(self):
        super().__init__()
        self.time_high = None  # unwrapped 28-bit value of the last EVT_TIME_HIGH

    def decode(self, words):
        high = _time_high(self, words)
        cd = np.flatnonzero(((words >> 28) <= 0x1) & (high >= 0))
        cd_words, high = words[cd], high[cd]
        t = (high << 6) | ((cd_words >> 22) & 0x3F)
        return (t, ((cd_words >> 11) & 0x7FF).astype(np.int16), (cd_words & 0x7FF).astype(np.int16),
                _polarities(cd_words >> 28))


class Evt21Decoder(_WordDecoder):
    """EVT 2.1, 64-bit words: the 32 bits that hold the type are laid out as an EVT 2.0 word (type,
    time low, x, y; EVT_NEG 0x0, EVT_POS 0x1, EVT_TIME_HIGH 0x8), and the other 32 bits of a CD
    word are a mask: bit k set is an event at x + k. `legacy` (IMX636) stores the typed half
    first; otherwise the word is one little-endian 64-bit number, mask first. None: decide from
    the first words, as files that only say `% evt 2.1` do not tell."""
    word = np.dtype([("low", "<u4"), ("high", "<u4")])

    def __init__(self, legacy=None):
        super().__init__()
        self.legacy = legacy
        self.time_high = None

    @staticmethod
    def _plausible(typed):
        """Fraction of words whose type field is one of EVT 2.1's types."""
        return np.isin(typed >> 28, [0x0, 0x1, 0x8, 0xA, 0xE, 0xF]).mean()

    def decode(self, words):
        if self.legacy is None and len(words):
            # the mask half's top bits are pixels, any of 16 values; the typed half's, 6 values
            self.legacy = self._plausible(words["low"][:4096]) > self._plausible(words["high"][:4096])
        typed, mask = (words["low"], words["high"]) if self.legacy else (words["high"], words["low"])
        high = _time_high(self, typed)
        cd = np.flatnonzero(((typed >> 28) <= 0x1) & (high >= 0))
        cd_typed, high = typed[cd], high[cd]
        t = (high << 6) | ((cd_typed >> 22) & 0x3F)
        x = ((cd_typed >> 11) & 0x7FF).astype(np.int16)
        return _vector_events(t, x, (cd_typed & 0x7FF).astype(np.int16), _polarities(cd_typed >> 28),
                              np.arange(len(cd)), np.ascontiguousarray(mask[cd]))


class Evt3Decoder(_WordDecoder):
    """EVT 3.0, 16-bit words; type in bits 12-15, and a state that words update:
    EVT_ADDR_Y 0x0 sets the row (bits 0-10); EVT_TIME_HIGH 0x8 sets the high 12 bits of a 24-bit
    us time (which wraps every 16.8 s) and EVT_TIME_LOW 0x6 the low 12; EVT_ADDR_X 0x2 is one
    event at x (bits 0-10) with polarity bit 11; VECT_BASE_X 0x3 sets the x and polarity of the
    vector words after it: VECT_12 0x4 and VECT_8 0x5 hold 12 or 8 pixels from that x (bit k
    set: an event at x + k) and move it on by 12 or 8. Other words (triggers, OTHERS,
    CONTINUED_4 0x7, CONTINUED_12 0xF) carry no CD event."""

    def __init__(self):
        super().__init__()
        self.y = None
        self.time_high = None  # unwrapped high 12 bits, of the last EVT_TIME_HIGH
        self.time = None  # us, the time that the last time word set
        self.vector_x = None  # x of the next vector word's first pixel
        self.vector_p = None  # its polarity (0/1)

    def decode(self, words):
        kind = words >> 12
        is_row, is_time = kind == 0x0, (kind == 0x6) | (kind == 0x8)
        times = self._times(words[np.flatnonzero(is_time)])
        in_family = (kind - 0x3) < 3  # VECT_BASE_X, VECT_12, VECT_8 (kind is unsigned: below 3 wraps round)
        has_vectors = np.count_nonzero(in_family) > 0
        producing = np.flatnonzero((kind == 0x2) | (kind == 0x4) | (kind == 0x5) if has_vectors else kind == 0x2)
        rows = np.flatnonzero(is_row)
        # before a stream's first time-high and row words, events have no time or row
        state_known = self.time_high is not None and self.y is not None
        t, y = _latest(producing, (is_time, times, self.time), (is_row, (words[rows] & 0x7FF).astype(np.int16), self.y))
        if len(times):
            self.time = int(times[-1])
        if len(rows):
            self.y = int(words[rows[-1]] & 0x7FF)

        event_words = words[producing]
        x, p = (event_words & 0x7FF).astype(np.int16), _polarities((event_words >> 11) & 1)
        known = None if state_known else (t >= 0) & (y >= 0)
        if has_vectors:
            vectors = np.flatnonzero(event_words >= 0x4000)  # VECT_12 and VECT_8 among the words that hold events
            x[vectors], p[vectors] = self._vectors(words[np.flatnonzero(in_family)])
            if (x[vectors] < 0).any():  # vector words before the first VECT_BASE_X
                known = (x >= 0) if known is None else known & (x >= 0)
        if known is not None and not known.all():
            t, x, y, p, event_words = t[known], x[known], y[known], p[known], event_words[known]
        if not has_vectors:  # one event per word
            return t, x, y, p
        vectors = np.flatnonzero(event_words >= 0x4000)
        masks = (event_words[vectors] & np.where(event_words[vectors] >= 0x5000, 0xFF, 0xFFF)).astype("<u2")
        return _vector_events(t, x, y, p, vectors, masks)

    def _times(self, time_words):
        """The time (us) that each EVT_TIME_HIGH / EVT_TIME_LOW word sets, -1 before the first
        EVT_TIME_HIGH; a EVT_TIME_HIGH sets the low bits to 0."""
        high_at = np.flatnonzero(time_words >= 0x8000)
        highs = _unwrap(time_words[high_at] & 0xFFF, self.time_high, 1 << 12)
        high = _held(high_at, highs, self.time_high, len(time_words))
        if len(highs):
            self.time_high = int(highs[-1])
        low = time_words & 0xFFF
        low[high_at] = 0
        times = (high << 12) | low
        times[high < 0] = -1
        return times

    def _vectors(self, family_words):
        """(x of the first pixel, polarity) of each vector word among VECT_BASE_X and vector words:
        its VECT_BASE_X's x moved on by the widths of the vector words between them; x is -1
        where no VECT_BASE_X came before."""
        kind = family_words >> 12
        is_base = kind == 0x3
        width = np.where(kind == 0x4, 12, np.where(kind == 0x5, 8, 0))
        before = np.cumsum(width) - width  # pixels of the vector words before each word
        every = np.arange(len(family_words))
        # the carried state acts as a VECT_BASE_X at the start of the block
        base_x, base_before, polarity = _latest(
            every, (is_base, (family_words[is_base] & 0x7FF).astype(np.int64), self.vector_x),
            (is_base, before[is_base], 0), (is_base, ((family_words[is_base] >> 11) & 1).astype(np.int8), self.vector_p))
        x = np.where(base_x < 0, -1, base_x + before - base_before)
        self.vector_x = None if base_x[-1] < 0 else int(x[-1] + width[-1])
        self.vector_p = None if polarity[-1] < 0 else int(polarity[-1])
        return x[~is_base], (polarity[~is_base] << 1) - 1


class DatDecoder(_WordDecoder):
    """DAT CD events, 8 bytes each: a 32-bit us time (wraps every 71.6 min), then x in bits 0-13, y
    in 14-27 and polarity in 28-31 of a second 32-bit word."""
    word = np.dtype([("t", "<u4"), ("xyp", "<u4")])

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.t = None

    def decode(self, words):
        t = _unwrap(words["t"], self.t, 1 << 32)
        if len(t):
            self.t = int(t[-1])
        xyp = words["xyp"]
        return t, (xyp & 0x3FFF).astype(np.int16), ((xyp >> 14) & 0x3FFF).astype(np.int16), _polarity(xyp >> 28, self.path)


def _decoded_pieces(f, decoder, path, word_name):
    """Event pieces from the rest of an open file, decoded a block at a time."""
    while block := f.read(_RAW_BLOCK):
        t, x, y, p = decoder.feed(block)
        if len(t):
            yield ("events", t / 1e6, x, y, p)
    if decoder.rest:
        raise EventDataError(path, f"truncated: the file ends inside its last {word_name} ({len(decoder.rest)} of its bytes)")


def _is_file_with(*extensions):
    return lambda path: path.lower().endswith(extensions) and os.path.isfile(path)


@stream_reader("prophesee_raw", _is_file_with(".raw"))
def stream_prophesee_raw(path, **options):
    """Prophesee / Metavision RAW: a `% key value` header, then EVT 2.0, 2.1 or 3.0 words."""
    with open(path, "rb") as f:
        header = _prophesee_header(f, path)
        encoding = _raw_encoding(header, path)
        sensor = _prophesee_sensor(header, path)
        if sensor:
            yield ("sensor", sensor)
        yield ("info", {"encoding": _ENCODING_NAMES[encoding], "time_unit": "us"})
        if encoding.startswith("evt21"):  # `% evt 2.1` alone does not say which half comes first
            decoder = Evt21Decoder(legacy=encoding == "evt21_legacy" if "format" in header else None)
        else:
            decoder = Evt2Decoder() if encoding == "evt2" else Evt3Decoder()
        yield from _decoded_pieces(f, decoder, path, f"{decoder.word.itemsize}-byte {_ENCODING_NAMES[encoding]} word")


@stream_reader("prophesee_dat", _is_file_with(".dat"))
def stream_prophesee_dat(path, **options):
    """Prophesee DAT: a `% key value` header, a byte for the event type and one for the event size,
    then 8-byte CD events (type 0x0C, or 0x00 for the TD events of older ATIS files)."""
    with open(path, "rb") as f:
        header = _prophesee_header(f, path)
        kind_and_size = f.read(2)
        if len(kind_and_size) < 2:
            raise EventDataError(path, "truncated: no event type and size after the header")
        kind, size = kind_and_size
        if kind not in (0x00, 0x0C) or size != 8:
            raise EventDataError(path, f"unknown encoding: DAT event type 0x{kind:02X} of {size} bytes (CD events, type 0x0C of 8 bytes, are read)")
        if header.get("version", "2") != "2":
            raise EventDataError(path, f"unknown encoding: DAT version {header['version']} (version 2 is read)")
        sensor = _prophesee_sensor(header, path)
        if sensor:
            yield ("sensor", sensor)
        yield ("info", {"encoding": "DAT CD", "time_unit": "us"})
        yield from _decoded_pieces(f, DatDecoder(path), path, "8-byte DAT event")


# --- HDF5 -------------------------------------------------------------------------
#
# Datasets may be compressed with filters that h5py does not bring, such as the Blosc that
# DSEC's events.h5 use: importing the hdf5plugin package registers them.

def _hdf5_filters():
    """Register hdf5plugin's compression filters with h5py; False if the package is absent."""
    try:
        import hdf5plugin  # noqa: F401  (importing it is what registers the filters)
    except ImportError:
        return False
    return True


def _h5_events_layout(f, path):
    """(datasets t, x, y, p, time-to-seconds, facts) for the event_cnn_minimal, DSEC or flat
    layout. Flat files keep t in integer microseconds (DSEC adds a `t_offset` in us, and the
    index `ms_to_idx`); float t is seconds."""
    import h5py
    if "events" in f and all(k in f["events"] for k in ("ts", "xs", "ys", "ps")):
        group = f["events"]
        return (group["ts"], group["xs"], group["ys"], group["ps"], lambda t: t.astype(np.float64),
                {"encoding": "event_cnn_minimal", "time_unit": "s"})
    for group in (f, f.get("events")):
        if isinstance(group, h5py.Group) and all(k in group for k in ("t", "x", "y", "p")):
            encoding = "DSEC" if "ms_to_idx" in f else "flat"
            if np.issubdtype(group["t"].dtype, np.integer):
                offset = int(f["t_offset"][()]) if "t_offset" in f else 0
                to_seconds = lambda t: (t.astype(np.int64) + offset) / 1e6  # exact sum, one rounding
                return group["t"], group["x"], group["y"], group["p"], to_seconds, {"encoding": encoding, "time_unit": "us"}
            return (group["t"], group["x"], group["y"], group["p"], lambda t: t.astype(np.float64),
                    {"encoding": encoding, "time_unit": "s"})
    raise EventDataError(path, "missing dataset: expected events/ts, events/xs, events/ys, events/ps "
                               "(event_cnn_minimal) or t, x, y, p (flat and DSEC, at the root or under events/)")


def _h5_first_at(t, to_seconds, seconds, f):
    """Index of the first event at or after `seconds` (t is sorted). DSEC's ms_to_idx gives the
    events of that millisecond; without it, halving the range reads one time stamp a step. Either
    way only a few time stamps are read, not the recording's."""
    low, high = 0, len(t)
    if "ms_to_idx" in f:
        ms_to_idx = f["ms_to_idx"]
        offset_us = int(f["t_offset"][()]) if "t_offset" in f else 0
        ms = int(np.floor((seconds * 1e6 - offset_us) / 1000))
        # a millisecond more on each side: `seconds` in float may fall either side of a boundary
        low = 0 if ms < 1 else int(ms_to_idx[ms - 1]) if ms - 1 < len(ms_to_idx) else len(t)
        high = len(t) if ms + 2 >= len(ms_to_idx) else max(low, int(ms_to_idx[max(ms + 2, 0)]))
    while high - low > 4096:
        middle = (low + high) // 2
        if to_seconds(t[middle:middle + 1])[0] < seconds:
            low = middle + 1
        else:
            high = middle
    return low + int(np.searchsorted(to_seconds(t[low:high]), seconds, side="left"))


@stream_reader("h5", lambda path: path.endswith((".h5", ".hdf5")) and os.path.isfile(path))
def stream_h5(path, time_range=None, **options):
    """HDF5, event_cnn_minimal / HQF layout (events/{ts,xs,ys,ps}, images/image*, attribute
    sensor_resolution), DSEC layout (events/{t,x,y,p} in us after t_offset, ms_to_idx) or flat
    layout (t, x, y, p), read a batch at a time. `time_range` (begin, end) in seconds on the
    recording's clock reads only the events and frames with begin <= t < end."""
    import h5py
    has_filters = _hdf5_filters()
    try:
        with h5py.File(path, "r") as f:
            t, x, y, p, to_seconds, facts = _h5_events_layout(f, path)
            if not len(t) == len(x) == len(y) == len(p):
                raise EventDataError(path, f"event datasets differ in length: {len(t)}, {len(x)}, {len(y)}, {len(p)}")
            if "sensor_resolution" in f.attrs:
                yield ("sensor", tuple(int(v) for v in f.attrs["sensor_resolution"]))
            yield ("info", facts)
            first, last = 0, len(t)
            if time_range is not None:
                first, last = (_h5_first_at(t, to_seconds, seconds, f) for seconds in time_range)
            for start in range(first, last, BATCH):
                part = slice(start, min(start + BATCH, last))
                yield _event_piece(to_seconds(t[part]), x[part], y[part], p[part], path)
            yield from _h5_frame_pieces(f, path, time_range)
    except (OSError, KeyError, ValueError, RuntimeError) as error:  # h5py raises KeyError for a corrupt object header
        raise _h5_error(path, error, has_filters) from None


def _h5_frame_pieces(f, path, time_range=None):
    for name in sorted(f["images"].keys()) if "images" in f else ():
        image = f["images"][name]
        if "timestamp" not in image.attrs:
            raise EventDataError(path, f"images/{name} has no timestamp attribute")
        stamp = float(image.attrs["timestamp"])
        if time_range is None or time_range[0] <= stamp < time_range[1]:
            yield ("frame", "images", stamp, image[()])


def _h5_error(path, error, has_filters):
    """The EventDataError for an exception h5py raised reading `path`."""
    problem = " ".join(str(error).strip("'\"").split()) or type(error).__name__
    if not has_filters and ("filter" in problem or "plugin" in problem):
        return EventDataError(path, "its data is compressed with a filter that h5py lacks (DSEC's are Blosc): "
                                    "pip install hdf5plugin")
    return EventDataError(path, f"unreadable or truncated HDF5 file ({problem})")


def _h5_columns(path):
    """An HDF5 file's events as EventFile reads them: dataset slices. The file is kept open (its
    layout looked up once, its chunk cache kept), as a bag is."""
    import h5py
    has_filters = _hdf5_filters()
    try:
        f = h5py.File(path, "r")
        t, x, y, p, to_seconds, facts = _h5_events_layout(f, path)
        if not len(t) == len(x) == len(y) == len(p):
            raise EventDataError(path, f"event datasets differ in length: {len(t)}, {len(x)}, {len(y)}, {len(p)}")
        sensor = tuple(int(v) for v in f.attrs["sensor_resolution"]) if "sensor_resolution" in f.attrs else None
        frames = list(_h5_frame_pieces(f, path))
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise _h5_error(path, error, has_filters) from None

    def read(first, last):
        try:
            return to_seconds(t[first:last]), x[first:last], y[first:last], p[first:last]
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            raise _h5_error(path, error, has_filters) from None
    return Columns(len(t), read, facts, sensor, frames=frames)


COLUMN_READERS["h5"] = _h5_columns


# --- ROS1 bags --------------------------------------------------------------------
#
# Messages are parsed from their raw ROS1 serialisation with numpy, not deserialised into
# message objects (about 17x faster). EventArray: Header, uint32 height, uint32 width,
# uint32 count, count x 13-byte events; Header: uint32 seq, uint32 sec, uint32 nsec, string
# frame_id (uint32 length + bytes).

ROS_EVENT = np.dtype([("x", "<u2"), ("y", "<u2"), ("sec", "<u4"), ("nsec", "<u4"), ("polarity", "u1")])
EVENT_ARRAY_TYPE, IMAGE_TYPE = "dvs_msgs/msg/EventArray", "sensor_msgs/msg/Image"
# OpenCV names a Bayer pattern by the second row's second and third pixels: ROS rggb is BG
_BAYER_TO_RGB = {"bayer_rggb8": "COLOR_BayerBG2RGB", "bayer_bggr8": "COLOR_BayerRG2RGB",
                 "bayer_gbrg8": "COLOR_BayerGR2RGB", "bayer_grbg8": "COLOR_BayerGB2RGB"}


def _ros_header(raw):
    """(stamp in seconds, offset of the first field after the header)."""
    _, sec, nsec, frame_id_length = struct.unpack_from("<4I", raw, 0)
    return sec + nsec / 1e9, 16 + frame_id_length


def _ros_image(raw, path, topic):
    """ROS 1 sensor_msgs/Image -> (stamp in seconds, uint8 gray [H, W] or RGB [H, W, 3])."""
    stamp, offset = _ros_header(raw)
    height, width, encoding_length = struct.unpack_from("<3I", raw, offset)
    offset += 12
    encoding = bytes(raw[offset:offset + encoding_length]).decode()
    big_endian, step, size = struct.unpack_from("<BII", raw, offset + encoding_length)
    offset += encoding_length + 9
    if size < height * step or len(raw) < offset + size:
        raise EventDataError(path, f"image message on {topic} is truncated")
    rows = np.frombuffer(raw, np.uint8, height * step, offset).reshape(height, step)
    return stamp, _image_pixels(rows, width, encoding, big_endian, path, topic)


def _image_pixels(rows, width, encoding, big_endian, path, topic):
    """The [height, step] bytes of a sensor_msgs/Image -> uint8 gray [H, W] or RGB [H, W, 3]."""
    import cv2
    if encoding in ("mono8", "8UC1"):
        image = rows[:, :width]
    elif encoding in ("mono16", "16UC1"):  # keep the 8 most significant bits
        image = (rows[:, :2 * width].view(">u2" if big_endian else "<u2") >> 8).astype(np.uint8)
    elif encoding in ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8"):
        channels = 4 if encoding.endswith("a8") else 3
        image = rows[:, :channels * width].reshape(len(rows), width, channels)[..., :3]
        if encoding.startswith("bgr") or encoding == "8UC3":  # 8UC3 follows OpenCV: BGR
            image = image[..., ::-1]
    elif encoding in _BAYER_TO_RGB:
        image = cv2.cvtColor(np.ascontiguousarray(rows[:, :width]), getattr(cv2, _BAYER_TO_RGB[encoding]))
    else:
        raise EventDataError(path, f"image encoding {encoding!r} on {topic} is not supported")
    return np.ascontiguousarray(image)


def _ros_events(payloads, path):
    """One event piece from the raw event bytes of several EventArray messages."""
    records = np.frombuffer(b"".join(payloads), ROS_EVENT)
    t = records["sec"] + records["nsec"] / 1e9
    return _event_piece(t, records["x"], records["y"], records["polarity"], path)


def _bag_errors():
    """What reading a ROS 1 bag raises: rosbags' ReaderError, the failures of a truncated file,
    and what rosbags asserts or looks up for a corrupt record."""
    from rosbags.rosbag1 import ReaderError
    return ReaderError, OSError, EOFError, struct.error, ValueError, RuntimeError, AssertionError, KeyError, IndexError


def _bag_connections(bag, topic, msgtype, path, required):
    connections = [c for c in bag.connections if c.topic == topic]
    if not connections:
        if not required:
            return []
        available = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in bag.connections)) or "none"
        raise EventDataError(path, f"no topic {topic} in the bag (topics: {available})")
    if any(c.msgtype != msgtype for c in connections):
        raise EventDataError(path, f"topic {topic} holds {connections[0].msgtype}, expected {msgtype}")
    return connections


@stream_reader("bag", lambda path: path.endswith(".bag") and os.path.isfile(path), sort=True)
def stream_bag(path, events_topic="/dvs/events", images_topic=None, color_images_topic=None, **options):
    """ROS1 bag with dvs_msgs/EventArray and sensor_msgs/Image topics, read with `rosbags` (no ROS
    install; uncompressed, bz2 and lz4 chunks). Events keep their own time stamps, frames take
    their header stamp (not the time they were recorded). `images_topic` defaults to
    /dvs/image_raw when the bag has it ("" for no frames); `color_images_topic` (CED: /dvs/image_color) gives
    frames of key "color_images"."""
    from rosbags.rosbag1 import Reader
    errors = _bag_errors()
    try:
        with Reader(path) as bag:
            topics = {"events": _bag_connections(bag, events_topic, EVENT_ARRAY_TYPE, path, True)}
            if images_topic != "":
                topics["images"] = _bag_connections(bag, images_topic or "/dvs/image_raw", IMAGE_TYPE, path, images_topic is not None)
            if color_images_topic:
                topics["color_images"] = _bag_connections(bag, color_images_topic, IMAGE_TYPE, path, True)
            key_of = {c.id: key for key, connections in topics.items() for c in connections}
            topic_of = {c.id: c.topic for connections in topics.values() for c in connections}
            yield ("info", {"encoding": "dvs_msgs/EventArray", "time_unit": "ns"})
            sensor, payloads, pending, total = None, [], 0, 0
            for connection, _, raw in bag.messages(connections=[c for cs in topics.values() for c in cs]):
                if key_of[connection.id] != "events":
                    stamp, image = _ros_image(raw, path, topic_of[connection.id])
                    yield ("frame", key_of[connection.id], stamp, image)
                    continue
                height, width, payload = _event_array(raw, path, events_topic)
                if sensor is None and height and width:
                    sensor = (int(height), int(width))
                    yield ("sensor", sensor)
                payloads.append(payload)
                pending += len(payload) // ROS_EVENT.itemsize
                if pending >= BATCH:
                    yield _ros_events(payloads, path)
                    total, payloads, pending = total + pending, [], 0
            if pending:
                yield _ros_events(payloads, path)
            if total + pending == 0:
                raise EventDataError(path, f"no events on {events_topic}")
    except errors as error:
        raise _bag_error(path, error) from None


def _bag_error(path, error):
    corrupt = isinstance(error, (AssertionError, KeyError, IndexError))  # rosbags asserts, and looks up what a corrupt record names
    problem = "a corrupt record" if corrupt else " ".join(str(error).split()) or type(error).__name__
    return EventDataError(path, f"unreadable or truncated bag ({problem})")


def _event_array(raw, path, topic):
    """(height, width, the events' bytes) of an EventArray message's raw ROS 1 serialisation."""
    _, offset = _ros_header(raw)
    height, width, count = struct.unpack_from("<3I", raw, offset)
    offset += 12
    if len(raw) != offset + ROS_EVENT.itemsize * count:
        raise EventDataError(path, f"EventArray message on {topic} is truncated or malformed")
    return height, width, memoryview(raw)[offset:]


def _bag_columns(path, events_topic="/dvs/events", images_topic=None):
    """A ROS 1 bag's events as EventFile reads them: opening notes each EventArray message's
    record time and event count; a read then asks the bag's index for the messages of that time
    range only. The bag is kept open (its index read once)."""
    from rosbags.rosbag1 import Reader
    errors = _bag_errors()
    try:
        bag = Reader(path)
        bag.open()
        events = _bag_connections(bag, events_topic, EVENT_ARRAY_TYPE, path, True)
        images = [] if images_topic == "" else _bag_connections(bag, images_topic or "/dvs/image_raw", IMAGE_TYPE, path,
                                                                images_topic is not None)
        image_ids = {c.id for c in images}
        stamps, counts, frames, sensor = [], [], [], None
        for connection, stamp, raw in bag.messages(connections=events + images):
            if connection.id in image_ids:
                frames.append(("frame", "images", *_ros_image(raw, path, connection.topic)))
                continue
            height, width, payload = _event_array(raw, path, events_topic)
            sensor = sensor or ((int(height), int(width)) if height and width else None)
            stamps.append(stamp)
            counts.append(len(payload) // ROS_EVENT.itemsize)
    except errors as error:
        raise _bag_error(path, error) from None
    stamps, starts = np.array(stamps, dtype=np.int64), np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def read(first, last):
        """Events first:last: the messages that hold them, found by their record times."""
        if last <= first:
            return np.empty(0), np.empty(0, np.int16), np.empty(0, np.int16), np.empty(0, np.int8)
        head, tail = np.searchsorted(starts, first, side="right") - 1, np.searchsorted(starts, last, side="left")
        skip = head - np.searchsorted(stamps, stamps[head], side="left")  # earlier messages of the same record time
        payloads = []
        try:
            for _, _, raw in bag.messages(connections=events, start=int(stamps[head]), stop=int(stamps[tail - 1]) + 1):
                if skip:
                    skip -= 1
                    continue
                payloads.append(_event_array(raw, path, events_topic)[2])
                if len(payloads) == tail - head:
                    break
        except errors as error:
            raise _bag_error(path, error) from None
        records = np.frombuffer(b"".join(payloads), ROS_EVENT)[first - starts[head]:last - starts[head]]
        return records["sec"] + records["nsec"] / 1e9, records["x"], records["y"], records["polarity"]
    return Columns(int(starts[-1]), read, {"encoding": "dvs_msgs/EventArray", "time_unit": "ns"}, sensor, frames)


COLUMN_READERS["bag"] = _bag_columns


# --- ROS 2 bags -------------------------------------------------------------------
#
# Read with rosbags' AnyReader: a bag folder (with its metadata.yaml), or the .db3 (SQLite) or
# .mcap file inside one. Events come as dvs_msgs/EventArray ported to ROS 2, or as
# event_camera_msgs/EventPacket (the metavision and libcaer drivers'), whose `events` bytes are
# raw EVT 3.0 words (encoding "evt3", decoded by `Evt3Decoder`, its state carried from message
# to message) or "mono" 64-bit words: polarity in bit 63, y in bits 48-62, x in 32-47, and in
# 0-31 the ns after the header stamp. Bags from before ROS 2 Iron hold no message definitions;
# the ones here are then used. EventArrays are parsed from their CDR bytes with numpy, as the
# ROS 1 ones are, rather than into a Python object per event.

ROS2_MESSAGE_DEFINITIONS = {
    "dvs_msgs/msg/Event": "uint16 x\nuint16 y\nbuiltin_interfaces/Time ts\nbool polarity\n",
    "dvs_msgs/msg/EventArray": "std_msgs/Header header\nuint32 height\nuint32 width\ndvs_msgs/Event[] events\n",
    "event_camera_msgs/msg/EventPacket": ("std_msgs/Header header\nuint32 height\nuint32 width\nuint64 seq\n"
                                          "uint64 time_base\nstring encoding\nbool is_bigendian\nuint8[] events\n"),
}
EVENT_PACKET_TYPE = "event_camera_msgs/msg/EventPacket"
ROS2_EVENT_TYPES = (EVENT_ARRAY_TYPE, EVENT_PACKET_TYPE)
# A dvs_msgs/Event in CDR: x, y (uint16), sec, nanosec (4-aligned), polarity (bool). After the
# array's uint32 count the first event starts 4-aligned (13 bytes); each later one starts 2
# bytes past a 4-aligned place, so 2 bytes of padding come before its sec, and one after its
# polarity but the last one's: events lie 16 bytes apart.
_CDR_EVENT_FIELDS = {"names": ["x", "y", "sec", "nsec", "polarity"], "formats": ["<u2", "<u2", "<i4", "<u4", "u1"]}
CDR_FIRST_EVENT = np.dtype(dict(_CDR_EVENT_FIELDS, offsets=[0, 2, 4, 8, 12], itemsize=13))
CDR_EVENT = np.dtype(dict(_CDR_EVENT_FIELDS, offsets=[0, 2, 6, 10, 14], itemsize=16))


def _is_ros2_bag(path):
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "metadata.yaml"))
    return path.endswith((".db3", ".mcap")) and os.path.isfile(path)


def ros2_typestore():
    """A ROS 2 type store that also knows the event message types."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    for name, definition in ROS2_MESSAGE_DEFINITIONS.items():
        typestore.register(get_types_from_msg(definition, name))
    return typestore


class _CdrEventArrays:
    """dvs_msgs/EventArray messages in CDR, kept as bytes and parsed a batch at a time with numpy
    (a Python object per event would cost about 20x): each message's first event apart from the
    later ones."""

    def __init__(self, path, topic):
        self.path, self.topic = path, topic
        self.firsts, self.others, self.counts = [], [], []

    def add(self, raw):
        """Keep one message's events; returns (height, width, number of events)."""
        if raw[1] != 1:
            raise EventDataError(self.path, f"EventArray on {self.topic} is big-endian CDR; only little-endian is read")
        body = memoryview(raw)[4:]  # offsets and alignment count from after the 4-byte encapsulation header
        frame_id_length = struct.unpack_from("<I", body, 8)[0]
        offset = (12 + frame_id_length + 3) & ~3
        height, width, count = struct.unpack_from("<3I", body, offset)
        offset += 12
        if len(body) != offset + (0 if count == 0 else 16 * count - 3):
            raise EventDataError(self.path, f"EventArray message on {self.topic} is truncated or malformed")
        if count:
            self.firsts.append(body[offset:offset + 13])
        if count > 1:
            self.others += [body[offset + 14:], b"\0"]  # the last event's padding byte, which CDR leaves out
        self.counts.append(count)
        return height, width, count

    def take(self):
        """(t, x, y, polarity) of the messages kept since the last call, in their order."""
        firsts, others = np.frombuffer(b"".join(self.firsts), CDR_FIRST_EVENT), np.frombuffer(b"".join(self.others), CDR_EVENT)
        counts = np.array(self.counts, np.int64)
        is_first = np.zeros(int(counts.sum()), bool)
        is_first[(np.cumsum(counts) - counts)[counts > 0]] = True
        columns = {}
        for name in CDR_EVENT.names:
            columns[name] = np.empty(len(is_first), CDR_EVENT[name])
            columns[name][is_first], columns[name][~is_first] = firsts[name], others[name]
        self.firsts, self.others, self.counts = [], [], []
        return columns["sec"] + columns["nsec"] / 1e9, columns["x"], columns["y"], columns["polarity"]


def _seconds(ns):
    """Integer ns -> float seconds, as sec + nsec / 1e9 (the way the other bag readers do)."""
    return ns // 1_000_000_000 + (ns % 1_000_000_000) / 1e9


class _EventPackets:
    """event_camera_msgs/EventPacket messages of one topic -> events on the bag's clock (times in
    integer ns until handed on), a batch at a time. Once the clock offset is known, EVT 3.0
    bytes wait until a block's worth has come, as a file's do: decoding each small message
    alone would cost several times more."""

    def __init__(self, path, topic):
        self.path, self.topic = path, topic
        self.evt3 = Evt3Decoder()
        self.offset_ns = None  # EVT 3.0's sensor clock -> the bag's clock
        self.evt3_bytes, self.evt3_size = [], 0  # not decoded yet
        self.batch = []  # decoded: (t_ns, x, y, p) per message or block

    def add(self, message):
        """Take one message; returns (height, width, number of events it decoded now)."""
        stamp_ns = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
        data = np.asarray(message.events, np.uint8)
        if message.encoding == "mono":
            if len(data) % 8:
                raise EventDataError(self.path, f"mono EventPacket on {self.topic} is not whole 8-byte events")
            words = data.view("<u8")
            self.batch.append((stamp_ns + (words & 0xFFFFFFFF).astype(np.int64), (words >> 32) & 0xFFFF,
                               (words >> 48) & 0x7FFF, words >> 63))
            return message.height, message.width, len(words)
        if message.encoding != "evt3":
            raise EventDataError(self.path, f"unknown encoding {message.encoding!r} of EventPacket on {self.topic} (evt3 and mono are read)")
        self.evt3_bytes.append(data.tobytes())
        self.evt3_size += len(data)
        if self.offset_ns is not None and self.evt3_size < _RAW_BLOCK:
            return message.height, message.width, 0
        return message.height, message.width, self._decode_evt3(stamp_ns)

    def _decode_evt3(self, stamp_ns=None):
        t_us, x, y, p = self.evt3.feed(b"".join(self.evt3_bytes))
        self.evt3_bytes, self.evt3_size = [], 0
        if len(t_us) and self.offset_ns is None:
            # the sensor's clock is moved once, so that the first event is at its message's
            # stamp: time differences stay the sensor's own, free of the stamps' jitter
            self.offset_ns = stamp_ns - int(t_us[0]) * 1000
        self.batch.append((t_us * 1000 + (self.offset_ns or 0), x, y, p))
        return len(t_us)

    def take(self):
        """(t, x, y, polarity) of the events since the last call, the EVT 3.0 bytes waiting included."""
        if self.evt3_bytes:
            self._decode_evt3()
        t_ns, x, y, p = (np.concatenate(column) for column in zip(*self.batch)) if self.batch else (np.zeros(0, np.int64),) * 4
        self.batch = []
        return _seconds(t_ns), x, y, p


def _ros2_connections(bag, topic, msgtypes, path, what):
    """The connections of `topic`, or when None, of the bag's one topic of the types `msgtypes`."""
    if topic is None:
        topics = sorted({c.topic for c in bag.connections if c.msgtype in msgtypes})
        if len(topics) != 1:
            listed = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in bag.connections)) or "none"
            raise EventDataError(path, f"{'no' if not topics else 'more than one'} {what} topic in the bag; "
                                       f"name one (topics: {listed})")
        topic = topics[0]
    connections = [c for c in bag.connections if c.topic == topic]
    if not connections:
        listed = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in bag.connections)) or "none"
        raise EventDataError(path, f"no topic {topic} in the bag (topics: {listed})")
    if any(c.msgtype not in msgtypes for c in connections):
        raise EventDataError(path, f"topic {topic} holds {connections[0].msgtype}, expected {' or '.join(msgtypes)}")
    return connections


@stream_reader("ros2_bag", _is_ros2_bag, sort=True)
def stream_ros2_bag(path, events_topic=None, images_topic=None, color_images_topic=None, **options):
    """ROS 2 bag (folder, .db3 or .mcap) with dvs_msgs/EventArray or event_camera_msgs/EventPacket
    events and sensor_msgs/Image frames (header stamps). `events_topic` defaults to the bag's one
    topic of events, `images_topic` to its one image topic if it has exactly one ("" for no
    frames); `color_images_topic` gives frames of key "color_images"."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError
    try:
        with AnyReader([Path(path)], default_typestore=ros2_typestore()) as bag:
            topics = {"events": _ros2_connections(bag, events_topic, ROS2_EVENT_TYPES, path, "events")}
            image_topics = sorted({c.topic for c in bag.connections if c.msgtype == IMAGE_TYPE})
            if images_topic is None and len(image_topics) > 1:
                print(f"note: {path}: several image topics ({', '.join(image_topics)}); no frames are read "
                      f"unless images_topic names one", file=sys.stderr)
            if images_topic or (images_topic is None and len(image_topics) == 1):
                topics["images"] = _ros2_connections(bag, images_topic or image_topics[0], (IMAGE_TYPE,), path, "image")
            if color_images_topic:
                topics["color_images"] = _ros2_connections(bag, color_images_topic, (IMAGE_TYPE,), path, "image")
            key_of = {c.id: key for key, connections in topics.items() for c in connections}
            events_name = topics["events"][0].topic
            messages = (_CdrEventArrays if topics["events"][0].msgtype == EVENT_ARRAY_TYPE else _EventPackets)(path, events_name)
            sensor, pending, total, encoding = None, 0, 0, None
            for connection, _, raw in bag.messages(connections=[c for cs in topics.values() for c in cs]):
                key = key_of[connection.id]
                if key != "events":
                    image = bag.deserialize(raw, connection.msgtype)
                    rows = np.asarray(image.data, np.uint8)[:image.height * image.step].reshape(image.height, image.step)
                    yield ("frame", key, _seconds(image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec),
                           _image_pixels(rows, image.width, image.encoding, image.is_bigendian, path, connection.topic))
                    continue
                if isinstance(messages, _CdrEventArrays):
                    height, width, count = messages.add(raw)
                    kind = "dvs_msgs/EventArray"
                else:
                    message = bag.deserialize(raw, connection.msgtype)
                    height, width, count = messages.add(message)
                    kind = f"event_camera_msgs/EventPacket {message.encoding}"
                if encoding is None:
                    encoding = kind
                    yield ("info", {"encoding": kind, "time_unit": "us" if kind.endswith("evt3") else "ns"})
                if sensor is None and height and width:
                    sensor = (int(height), int(width))
                    yield ("sensor", sensor)
                pending += count
                if pending >= BATCH:
                    yield _event_piece(*messages.take(), path)
                    total, pending = total + pending, 0
            last = messages.take()  # with what still waits to be decoded
            if len(last[0]):
                yield _event_piece(*last, path)
            if total + len(last[0]) == 0:
                raise EventDataError(path, f"no events on {events_name}")
            if isinstance(messages, _EventPackets) and messages.evt3.rest:
                raise EventDataError(path, f"truncated: the EVT 3.0 data on {events_name} ends inside a 2-byte word")
    except (AnyReaderError, ReaderError, OSError, EOFError, struct.error, ValueError, RuntimeError, KeyError) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise EventDataError(path, f"unreadable or truncated bag ({problem})") from None


# --- AEDAT4 -----------------------------------------------------------------------

def _aedat_frame(frame):
    """An aedat frame packet -> (time in s, uint8 gray or RGB). The time is the middle of the
    exposure when the packet has it: that is when the image's light was gathered."""
    pixels = np.asarray(frame["pixels"])
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3:
        pixels = pixels[..., :3][..., ::-1] if str(frame.get("format", "")).startswith("BGR") else pixels[..., :3]
    if "exposure_begin_t" in frame and "exposure_end_t" in frame:
        t = 0.5 * (frame["exposure_begin_t"] + frame["exposure_end_t"]) / 1e6
    else:
        t = frame["t"] / 1e6
    return t, np.ascontiguousarray(pixels)


def _check_aedat_header(path):
    """Refuse an AEDAT4 file whose header the `aedat` package would crash on: its Rust code
    aborts the whole process (no exception to catch) when the header's XML description is not
    UTF-8, as after one flipped bit."""
    with open(path, "rb") as f:
        start = f.read(18)
        if len(start) < 18 or not start.startswith(b"#!AER-DAT4.0"):
            raise EventDataError(path, "not an AEDAT4 file (no #!AER-DAT4.0 signature)")
        header = f.read(min(struct.unpack_from("<I", start, 14)[0], 1 << 24))
    begin = header.find(b"<dv")  # the description: a flatbuffer string, its length just before it
    if begin >= 4:
        length = struct.unpack_from("<I", header, begin - 4)[0]
        try:
            header[begin:begin + length].decode("utf-8")
        except UnicodeDecodeError:
            raise EventDataError(path, "corrupt AEDAT4 header (its description is not UTF-8 text)") from None


@stream_reader("aedat4", lambda path: path.endswith(".aedat4") and os.path.isfile(path))
def stream_aedat4(path, **options):
    """AEDAT4 (iniVation DV) via the `aedat` package: events (t in us) and frames."""
    import aedat
    _check_aedat_header(path)
    try:
        decoder = aedat.Decoder(path)
        streams = decoder.id_to_stream()
        event_streams = sorted(i for i, s in streams.items() if s["type"] == "events")
        if not event_streams:
            raise EventDataError(path, "no event stream in the file")
        events_id = event_streams[0]
        if streams[events_id].get("width") and streams[events_id].get("height"):
            yield ("sensor", (int(streams[events_id]["height"]), int(streams[events_id]["width"])))
        yield ("info", {"encoding": "AEDAT4", "time_unit": "us"})
        packets, pending = [], 0
        for packet in decoder:
            if "events" in packet and packet["stream_id"] == events_id:
                packets.append(packet["events"])
                pending += len(packet["events"])
                if pending >= BATCH:
                    records = np.concatenate(packets)
                    yield _event_piece(records["t"] / 1e6, records["x"], records["y"], records["on"], path)
                    packets, pending = [], 0
            elif "frame" in packet:
                yield ("frame", "images", *_aedat_frame(packet["frame"]))
        if packets:
            records = np.concatenate(packets)
            yield _event_piece(records["t"] / 1e6, records["x"], records["y"], records["on"], path)
    except (OSError, RuntimeError, ValueError) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise EventDataError(path, f"unreadable or truncated AEDAT4 file ({problem})") from None
    except BaseException as error:
        if type(error).__name__ != "PanicException":  # a panic of the aedat package's Rust code (pyo3's, a BaseException)
            raise
        problem = " ".join(str(error).split()) or "the decoder panicked"
        raise EventDataError(path, f"unreadable or corrupt AEDAT4 file ({problem})") from None


def stream_events(path, **options):
    """The pieces of a recording in any supported format (see the top of this section)."""
    path = os.path.normpath(path)
    name = detect_format(path)
    if name in STREAMS:
        yield from STREAMS[name](path, **options)
        return
    events = next(read for n, _, read in READERS if n == name)(path, **options)
    if events.sensor is not None:
        yield ("sensor", tuple(events.sensor))
    for start in range(0, len(events), BATCH):
        part = slice(start, start + BATCH)
        yield ("events", events.t[part], events.x[part], events.y[part], events.p[part])
    if events.frames is not None:
        for t, image in zip(events.frame_t, events.frames):
            yield ("frame", "images", float(t), image)


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


def check_events(t, x, y, sensor, path, first=0):
    """Refuse the first event whose time is NaN or inf, or that lies outside the (H, W) sensor;
    `first` is the index of t[0] in the recording, for the message."""
    finite = np.isfinite(t)
    if not finite.all():
        raise EventDataError(path, f"time stamp is NaN or inf at event {first + int(np.argmin(finite))}")
    outside = (x >= sensor[1]) | (y >= sensor[0])
    if outside.any():
        i = int(np.argmax(outside))
        raise EventDataError(path, f"event {first + i} at x={x[i]}, y={y[i]} is outside the {sensor[1]}x{sensor[0]} (WxH) sensor")


def _sensor_order(file_sensor, x_max, y_max, path):
    """The file's (H, W), or its transpose when only that order holds the events: some files
    store the size width first (ssl_e2vid's rosbag_to_h5 writes sensor_resolution [W, H] when
    it has no image topic). Reported, as transposed --H/--W are."""
    height, width = file_sensor
    if (x_max >= width or y_max >= height) and x_max < height and y_max < width:
        print(f"note: {path}: events reach x={x_max}, y={y_max}, outside the file's sensor size "
              f"{list(file_sensor)} read as [H, W]; it is read as [W, H]: H={width} rows, W={height} columns",
              file=sys.stderr)
        return width, height
    return file_sensor


def validate(events, sensor=None):
    """Check that events are usable: non-empty, finite, time-sorted, inside the sensor.

    `sensor` is the (H, W) the user asked for; when the file states its own size the two must
    agree, up to the order of the two numbers, which is reported and corrected (never silently).
    Returns the sensor size to use."""
    if len(events) == 0:
        raise EventDataError(events.path, "no events in file")
    sensor = resolve_sensor(events, int(events.x.max()), int(events.y.max()), sensor)
    # a batch at a time: whole-array temporaries would cost several copies of a long recording
    for start in range(0, len(events), BATCH):
        stop = start + BATCH
        check_events(events.t[start:stop], events.x[start:stop], events.y[start:stop], sensor, events.path, start)
        check_sorted(events.t[start:stop + 1], events.path, start)
    return sensor


def check_sorted(t, path, first=0):
    """Refuse time stamps that go backwards; `first` is the index of t[0] in the recording."""
    backwards = np.flatnonzero(np.diff(t) < 0)
    if backwards.size:
        i = int(backwards[0])
        raise EventDataError(path, f"time stamps are not sorted: event {first + i + 1} ({t[i + 1]:.6f} s) is before "
                                   f"event {first + i} ({t[i]:.6f} s)")


def resolve_sensor(events, x_max, y_max, sensor=None):
    """The (H, W) to use for `events` (an Events or EventFile), whose coordinates reach x_max and
    y_max: the user's `sensor`, the file's (events.sensor, corrected in place when it is stored
    width first), the APS frames', or else the largest coordinates. Disagreements are errors."""
    path = events.path
    if events.sensor is not None:
        events.sensor = _sensor_order(tuple(events.sensor), x_max, y_max, path)
    if events.frames is not None:
        frame_size = tuple(events.frames.shape[1:3])
        if events.sensor is not None and tuple(events.sensor) != frame_size:
            raise EventDataError(path, f"sensor size {list(events.sensor)} disagrees with APS frame size {list(frame_size)}")
        events.sensor = events.sensor or frame_size
        if len(events.frame_t) != len(events.frames):
            raise EventDataError(path, "number of APS frames and frame time stamps differ")
        if not np.isfinite(events.frame_t).all():
            raise EventDataError(path, "APS frame time stamp is NaN or inf")
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
    return sensor


def in_time_range(events, begin, end):
    """The events, and APS frames, with begin <= t < end (seconds on the recording's clock)."""
    keep = (events.t >= begin) & (events.t < end)
    events.t, events.x, events.y, events.p = events.t[keep], events.x[keep], events.y[keep], events.p[keep]
    if events.frames is not None:
        keep = (events.frame_t >= begin) & (events.frame_t < end)
        events.frames, events.frame_t = events.frames[keep], events.frame_t[keep]
    return events


def load_events(path, sensor=None, time_range=None, **options):
    """Read any supported recording and validate it. Returns (events, (H, W)); events.sensor is
    set to that (H, W) as well. `time_range` (begin, end), in seconds on the recording's clock,
    keeps the events and frames with begin <= t < end; HDF5 files read only those (DSEC's
    through ms_to_idx), other formats are read whole and then cut."""
    path = os.path.normpath(path)
    name = detect_format(path)
    read = next(read for n, _, read in READERS if n == name)
    events = read(path, time_range=time_range, **options)
    if time_range is not None:
        events = in_time_range(events, *time_range)
    events.format = events.format or name
    events.sensor = tuple(int(v) for v in validate(events, sensor))
    return events, events.sensor


MARK_STRIDE = 1 << 12  # events between the time stamps an EventFile holds; BATCH is a multiple


class EventFile:
    """A recording left on disk and read a window at a time, for recordings too long to hold:
    columns are read by position (a .npy's rows, an HDF5 dataset's slices), so memory holds the
    events asked for and every MARK_STRIDE-th time stamp (1 billion events: 2 MB), whatever
    the length. Opening one reads the file once, a batch at a time, to validate it as
    load_events does and to keep those time stamps. It answers what the fit asks of Events:
    len, positions, times_at and rows (the latter gives an in-memory Events)."""

    def __init__(self, path, sensor=None):
        from tqdm import tqdm
        self.path = os.path.normpath(path)
        self.format = detect_format(self.path)
        if self.format not in COLUMN_READERS:
            raise EventDataError(self.path, f"{self.format} files cannot be read a window at a time; convert the "
                                            "recording (scripts/convert_*.py --format evreal) or load it whole")
        columns = COLUMN_READERS[self.format](self.path)
        self.encoding, self.time_unit = columns.facts["encoding"], columns.facts["time_unit"]
        self.count, self._read, self.sensor = columns.count, columns.read, columns.sensor
        if self.count == 0:
            raise EventDataError(self.path, "no events in file")
        if isinstance(columns.frames, list):  # pieces: gathered as collect does
            frames = collect(iter(columns.frames), self.path, self.format)
            self.frames, self.frame_t = frames.frames, frames.frame_t
        else:
            self.frames, self.frame_t = columns.frames, columns.frame_t
        self._divisor = 1.0
        n = self.count
        head = self._raw(0, min(n, BATCH))[0]
        self._divisor = time_divisor(head, self._raw(n // 100, n // 100 + 1)[0][0],
                                     self._raw(n - 1 - n // 100, n - n // 100)[0][0], self.path) if n >= 2 else 1.0
        if self.frame_t is not None:
            self.frame_t = self.frame_t / self._divisor
        marks, x_max, y_max, previous = [], 0, 0, np.empty(0)
        for start in tqdm(range(0, n, BATCH), desc="indexing events", unit="batch", leave=False, disable=n <= BATCH):
            batch = self.rows(start, start + BATCH)
            check_events(batch.t, batch.x, batch.y, (1 << 15, 1 << 15), self.path, start)  # the sensor comes later
            check_sorted(np.concatenate([previous, batch.t]), self.path, start - len(previous))
            marks.append(batch.t[::MARK_STRIDE].copy())  # copies: a view would keep the whole batch alive
            x_max, y_max, previous = max(x_max, int(batch.x.max())), max(y_max, int(batch.y.max())), batch.t[-1:].copy()
        self._marks = np.concatenate(marks)
        self.sensor = tuple(int(v) for v in resolve_sensor(self, x_max, y_max, sensor))
        if x_max >= self.sensor[1] or y_max >= self.sensor[0]:  # name the first event outside
            for start in range(0, n, BATCH):
                batch = self.rows(start, start + BATCH)
                check_events(batch.t, batch.x, batch.y, self.sensor, self.path, start)

    def __len__(self):
        return self.count

    def _raw(self, first, last):
        try:
            return _event_piece(*self._read(first, last), self.path)[1:]
        except (OSError, ValueError) as error:  # the file changed or was truncated since it was opened
            raise EventDataError(self.path, f"events {first}-{last - 1} unreadable ({str(error).splitlines()[0]})") from None

    def rows(self, first, last):
        t, x, y, p = self._raw(first, min(last, self.count))
        if self._divisor != 1.0:
            t /= self._divisor
        return Events(t=t, x=x, y=y, p=p, sensor=self.sensor, format=self.format, path=self.path)

    def times_at(self, indices):
        return np.array([self.rows(i, i + 1).t[0] for i in np.atleast_1d(indices)]).reshape(np.shape(indices))

    def positions(self, times, side="left"):
        """As Events.positions: through the time stamps held, then one block of the file read."""
        times = np.asarray(times, dtype=np.float64)
        blocks = np.searchsorted(self._marks, times, side=side)
        found = np.zeros(times.shape, dtype=np.int64)
        for i, (time, block) in enumerate(zip(times.flat, blocks.flat)):
            if block > 0:  # the answer lies after the mark before `block` and at most at the mark `block`
                first = (block - 1) * MARK_STRIDE
                found.flat[i] = first + np.searchsorted(self.rows(first, block * MARK_STRIDE + 1).t, time, side=side)
        return found if found.ndim else int(found)


def open_events(path, sensor=None, time_range=None, whole=False, **options):
    """An EventFile for a format read by position (unless `whole`, or a `time_range` is
    given), else load_events' Events. Either way validated, with the sensor set."""
    if not whole and time_range is None and not options and detect_format(os.path.normpath(path)) in COLUMN_READERS:
        return EventFile(path, sensor)
    return load_events(path, sensor=sensor, time_range=time_range, **options)[0]


def info(path, **options):
    events = open_events(path, **options)
    sensor, (t_first, t_last) = events.sensor, events.times_at([0, len(events) - 1])
    return {"format": events.format, "encoding": events.encoding, "time_unit": events.time_unit,
            "num_events": len(events), "sensor": list(sensor), "t_first": float(t_first),
            "t_last": float(t_last), "event_rate": len(events) / (t_last - t_first) if t_last > t_first else None,
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
    import torch  # here, not at the top: reading events needs only numpy, and --info starts 2 s sooner
    height, width = sensor
    n_chunks = len(starts) - 1
    counts = torch.as_tensor(np.diff(starts), device=x.device)
    chunk = torch.repeat_interleave(torch.arange(n_chunks, device=x.device), counts)
    flat = (chunk * height + y.long()) * width + x.long()
    frames = torch.zeros(n_chunks * height * width, device=x.device, dtype=torch.float32)
    frames.index_add_(0, flat, p.to(torch.float32))
    frames = frames.view(n_chunks, 1, height, width) * threshold
    return bayer_to_rgb(frames) if color else frames


def event_sum(events, begin, end):
    """The per-pixel sum of polarities of the events between two times, float32 [H, W] (a colour
    sensor's mosaic as it is): one chunk of `event_frames`."""
    import torch
    first, last = events.positions([begin, end])
    part = events.rows(first, last)
    columns = (torch.from_numpy(column) for column in (part.x, part.y, part.p))
    return event_frames(*columns, np.array([0, last - first]), events.sensor)[0, 0].numpy()


def bayer_to_rgb(frames):
    """Split an RGGB Bayer mosaic [n, 1, H, W] into R, mean(G1, G2), B, each brought back to
    full size by repeating every 2x2 cell (nearest). H and W must be even."""
    import torch
    red = frames[:, :, 0::2, 0::2]
    green = 0.5 * (frames[:, :, 0::2, 1::2] + frames[:, :, 1::2, 0::2])
    blue = frames[:, :, 1::2, 1::2]
    cells = torch.cat([red, green, blue], dim=1)
    return cells.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Summarise an event recording as one JSON line.")
    parser.add_argument("--info", metavar="PATH", required=True, help="recording: any supported format")
    parser.add_argument("--H", type=int, default=None, help="sensor height (rows), when the file lacks it")
    parser.add_argument("--W", type=int, default=None, help="sensor width (columns), when the file lacks it")
    parser.add_argument("--events_topic", default=None, help="bags: the events topic (default: ROS 1 /dvs/events; "
                                                             "ROS 2 the bag's one topic of events)")
    parser.add_argument("--images_topic", default=None, help="bags: the sensor_msgs/Image topic (default: ROS 1 "
                                                             "/dvs/image_raw if present; ROS 2 the bag's one image topic)")
    parser.add_argument("--time_range", type=float, nargs=2, metavar=("BEGIN", "END"), default=None,
                        help="only the events with BEGIN <= t < END, seconds on the recording's clock")
    args = parser.parse_args(argv)
    # Exit status as every command of the project: 2 bad input, 1 the environment, 130 interrupted.
    # SIGTERM and SIGHUP stop it like Ctrl-C (there is nothing to clean up: it writes nothing).
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.default_int_handler)
    topics = {name: value for name, value in (("events_topic", args.events_topic), ("images_topic", args.images_topic))
              if value is not None}
    try:
        print(json.dumps(info(args.info, sensor=(args.H, args.W), time_range=args.time_range, **topics)))
    except EventDataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: {error.filename or args.info}: {error.strerror or error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
