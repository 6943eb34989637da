"""
Reading events and binning them into event frames.

The formats live in the event_formats package, one module per family; each reads a recording as
a stream of pieces (see event_formats/__init__.py). `load_events` finds the format from the
path, collects its pieces into an `Events` and validates it, so the rest of the code can trust
what it gets; `EventFile` reads a recording that stays on disk a window at a time. Events have
time stamps in seconds on the recording's own clock, column index x, row index y, polarity p in
{-1, +1}, the sensor size when the file knows it, and the APS frames with their time stamps
when the file has them.

Run `python event_data.py --info PATH` for a one-line JSON summary of a recording.
"""

import json
import os
import sys
from dataclasses import dataclass

import numpy as np

import command
import event_formats
from event_formats.common import BATCH, EventDataError, event_piece


@dataclass
class Events:
    """A recording's events in memory, as every format is read into (see collect)."""
    t: np.ndarray                    # float64 [N], seconds, recording clock, non-decreasing
    x: np.ndarray                    # int16 [N], column index
    y: np.ndarray                    # int16 [N], row index
    p: np.ndarray                    # int8 [N], -1 or +1
    sensor: tuple | None = None      # (H, W) when the file states it
    aps_frames: np.ndarray | None = None  # uint8 [K, H, W] or [K, H, W, 3] APS frames
    aps_t: np.ndarray | None = None  # float64 [K], seconds, same clock as t
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
# reading: a format's pieces, gathered into Events

def detect_format(path):
    """The name of the format of the file or folder `path` (the first registered that accepts it)."""
    if not os.path.exists(path):
        raise EventDataError(path, "no such file or folder")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise EventDataError(path, "file is empty")
    for name, fmt in event_formats.FORMATS.items():
        if fmt.detect(path):
            return name
    raise EventDataError(path, "unknown event format (see docs/formats.md)")


def stream_events(path, **options):
    """The pieces of a recording in any supported format (see event_formats)."""
    path = os.path.normpath(path)
    yield from event_formats.FORMATS[detect_format(path)].stream(path, **options)


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


def repair_frame_times(aps_t, path):
    """Replace each APS time stamp that is earlier than the one before it by the mean of its two
    neighbours, as EVREAL does (HQF engineering_posters, frame 528, needs it); warns for each."""
    aps_t = np.array(aps_t, dtype=np.float64)
    for i in np.flatnonzero(np.diff(aps_t) < 0) + 1:
        repaired = 0.5 * (aps_t[i - 1] + aps_t[i + 1]) if i + 1 < len(aps_t) else aps_t[i - 1]
        print(f"warning: {path}: APS frame {i} time {aps_t[i]:.6f} s is before the previous frame's; "
              f"using {repaired:.6f} s", file=sys.stderr)
        aps_t[i] = repaired
    return aps_t


# Time stamps are seconds in every format this project writes, but many tools write
# microseconds (or nanoseconds) into the same [N, 4] arrays and text lines: integers, or floats
# with fractions (epoch microseconds in float64). Time stamps are read in the first of seconds,
# microseconds, nanoseconds in which they are plausible: they span at most SECONDS_SPAN_LIMIT
# (about 28 hours; a recording lasts minutes or hours) and read at most LATEST_CLOCK (the year
# 2100 in Unix time; a clock counts from the recording's start or from 1970). Time stamps in
# another unit are converted, with a note; plausible in none, they are refused. The span is that
# of the central 98% of the events, so that one corrupt time stamp does not decide it
# (plan.covered_span leaves those out). Nanoseconds from the recording's start spanning under
# 100 s look like microseconds 1000 times longer; the note gives the resulting length, so that shows.
SECONDS_SPAN_LIMIT = 1e5
LATEST_CLOCK = 4.1e9
TIME_UNITS = ((1.0, "seconds"), (1e6, "microseconds"), (1e9, "nanoseconds"))


def units_per_second(t, path):
    """The divisor that takes time stamps `t` (sorted) to seconds (see SECONDS_SPAN_LIMIT)."""
    n = len(t)
    return time_divisor(t[n // 100], t[n - 1 - n // 100], path) if n >= 2 else 1.0


def time_divisor(first, last, path, say=True):
    """units_per_second from the two time stamps it reads, those 1% from each end; the note
    that a unit other than seconds was taken is printed if `say`."""
    first, last = float(first), float(last)
    if not (np.isfinite(first) and np.isfinite(last)):
        return 1.0  # validation names the NaN
    for divisor, unit in TIME_UNITS:
        if (last - first) / divisor <= SECONDS_SPAN_LIMIT and max(abs(first), abs(last)) / divisor <= LATEST_CLOCK:
            if divisor != 1.0 and say:
                print(f"note: {path}: time stamps span {last - first:.0f} units, too long for seconds; read as {unit} "
                      f"({(last - first) / divisor:.3f} s)", file=sys.stderr)
            return divisor
    raise EventDataError(path, f"time stamps from {first:.6g} to {last:.6g} are plausible in no unit: as seconds, "
                               f"microseconds or nanoseconds they span more than {SECONDS_SPAN_LIMIT:g} s or reach past "
                               "the year 2100")


def collect(pieces, path, fmt, sort=False, repair=True):
    """Gather a stream of pieces into one `Events` (frames of key "images" only, each checked to
    have the first one's shape as it comes, so that frames of another size are refused before
    they are all held). The frame times are mended by repair_frame_times unless `repair` is
    False (EventFile does it once the unit of the time stamps is known)."""
    columns = _ColumnBuffer()
    sensor, aps_frames, aps_t, facts = None, [], [], {}
    for piece in pieces:
        if piece[0] == "sensor":
            sensor = tuple(int(v) for v in piece[1])
        elif piece[0] == "info":
            facts.update(piece[1])
        elif piece[0] == "events":
            columns.append(*piece[1:])
        elif piece[0] == "frame" and piece[1] == "images":
            if aps_frames and piece[3].shape != aps_frames[0].shape:
                raise EventDataError(path, f"APS frames have different sizes: frame {len(aps_frames)} is "
                                           f"{list(piece[3].shape)}, the first {list(aps_frames[0].shape)}")
            aps_t.append(piece[2])
            aps_frames.append(piece[3])
    t, x, y, p = columns.arrays()
    if sort and len(t) and not _is_sorted(t):
        print(f"note: {path}: events are not in time order; sorting them (stable)", file=sys.stderr)
        order = np.argsort(t, kind="stable")
        t, x, y, p = t[order], x[order], y[order], p[order]
    divisor = units_per_second(t, path)
    if divisor != 1.0:
        t /= divisor  # in place: the columns are this function's own
        aps_t = [value / divisor for value in aps_t]
    if aps_frames:
        aps_t = repair_frame_times(aps_t, path) if repair else np.array(aps_t, dtype=np.float64)
    return Events(t=t, x=x, y=y, p=p, sensor=sensor, aps_frames=np.stack(aps_frames) if aps_frames else None,
                  aps_t=aps_t if aps_frames else None, format=fmt, path=path, **facts)


def _is_sorted(t):
    """Non-decreasing, checked a batch at a time so that no N-sized temporaries are made."""
    return all(not (np.diff(t[start:start + BATCH + 1]) < 0).any() for start in range(0, len(t), BATCH))


def events_from_columns(t, x, y, p, path, fmt, sensor=None, aps_frames=None, aps_t=None):
    """Build `Events` from raw columns, converting types and polarity; validation comes later."""
    columns = _ColumnBuffer(len(t))
    for start in range(0, len(t), BATCH):
        part = slice(start, start + BATCH)
        columns.append(*event_piece(t[part], x[part], y[part], p[part], path)[1:])
    t, x, y, p = columns.arrays()
    return Events(t=t, x=x, y=y, p=p, sensor=sensor, aps_frames=aps_frames, aps_t=aps_t, format=fmt, path=path)


# -----------------------------------------------------------------------------
# loading and validation

def check_events(t, x, y, sensor, path, first=0):
    """Refuse the first event whose time is NaN or inf, or that lies outside the (H, W) sensor,
    on either side (a decoder's arithmetic on a corrupt file can give any coordinate); `first`
    is the index of t[0] in the recording, for the message."""
    finite = np.isfinite(t)
    if not finite.all():
        raise EventDataError(path, f"time stamp is NaN or inf at event {first + int(np.argmin(finite))}")
    outside = (x >= sensor[1]) | (y >= sensor[0]) | (x < 0) | (y < 0)
    if outside.any():
        i = int(np.argmax(outside))
        raise EventDataError(path, f"event {first + i} at x={x[i]}, y={y[i]} is outside the "
                                   f"{sensor[1]}x{sensor[0]} (WxH) sensor")


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
    if events.aps_frames is not None:
        frame_size = tuple(events.aps_frames.shape[1:3])
        if events.sensor is not None and tuple(events.sensor) != frame_size:
            raise EventDataError(path, f"sensor size {list(events.sensor)} disagrees with APS frame size "
                                       f"{list(frame_size)}")
        events.sensor = events.sensor or frame_size
        if len(events.aps_t) != len(events.aps_frames):
            raise EventDataError(path, "number of APS frames and frame time stamps differ")
        if not np.isfinite(events.aps_t).all():
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
                raise EventDataError(path, f"--H {sensor[0]} --W {sensor[1]} disagrees with the file's sensor size "
                                           f"H={file_sensor[0]}, W={file_sensor[1]}")
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
    if events.aps_frames is not None:
        keep = (events.aps_t >= begin) & (events.aps_t < end)
        events.aps_frames, events.aps_t = events.aps_frames[keep], events.aps_t[keep]
    return events


def load_events(path, sensor=None, time_range=None, **options):
    """Read any supported recording and validate it. Returns (events, (H, W)); events.sensor is
    set to that (H, W) as well. `time_range` (begin, end), in seconds on the recording's clock,
    keeps the events and frames with begin <= t < end; HDF5 files read only those (DSEC's
    through ms_to_idx), other formats are read whole and then cut."""
    path = os.path.normpath(path)
    fmt = event_formats.FORMATS[detect_format(path)]
    events = collect(fmt.stream(path, time_range=time_range, **options), path, fmt.name, fmt.sort)
    if time_range is not None:
        events = in_time_range(events, *time_range)
    events.sensor = tuple(int(v) for v in validate(events, sensor))
    return events, events.sensor


MARK_STRIDE = 1 << 12  # events between the time stamps an EventFile holds; BATCH is a multiple


class _OutOfOrder(Exception):
    """Raised by EventFile._index: time stamps out of order in a format whose readers sort them."""


class EventFile:
    """A recording left on disk and read a window at a time, for recordings too long to hold:
    columns are read by position (a .npy's rows, an HDF5 dataset's slices), so memory holds the
    events asked for and every MARK_STRIDE-th time stamp (1 billion events: 2 MB), whatever
    the length. Opening one reads the file once, a batch at a time, to validate it as
    load_events does and to keep those time stamps; the one outcome for a file, streamed or
    whole, so a bag whose events come out of time order is sorted in memory, as loading it
    sorts them. It answers what the fit asks of Events: len, positions, times_at and rows (the
    latter gives an in-memory Events)."""

    def __init__(self, path, sensor=None):
        self.path = os.path.normpath(path)
        self.format = detect_format(self.path)
        fmt = event_formats.FORMATS[self.format]
        if fmt.columns is None:
            raise EventDataError(self.path, f"{self.format} files cannot be read a window at a time; convert the "
                                            "recording (scripts/convert_*.py --format evreal) or load it whole")
        columns = fmt.columns(self.path)
        self.encoding, self.time_unit = columns.facts["encoding"], columns.facts["time_unit"]
        self.count, self._read, self.sensor = columns.count, columns.read, columns.sensor
        if self.count == 0:
            raise EventDataError(self.path, "no events in file")
        self.aps_frames, aps_t = columns.aps_frames, columns.aps_t
        if isinstance(columns.aps_frames, list):  # pieces: gathered as collect does
            aps = collect(iter(columns.aps_frames), self.path, self.format, repair=False)
            self.aps_frames, aps_t = aps.aps_frames, aps.aps_t
        self._divisor = self._time_divisor()
        try:
            x_max, y_max = self._index(may_sort=fmt.sort)
        except _OutOfOrder:  # a format whose events may come out of order (bags): sorted, as load_events does
            self._sort_in_memory()
            x_max, y_max = self._index()
        self.aps_t = None if aps_t is None else repair_frame_times(np.asarray(aps_t) / self._divisor, self.path)
        self.sensor = tuple(int(v) for v in resolve_sensor(self, x_max, y_max, sensor))
        if x_max >= self.sensor[1] or y_max >= self.sensor[0]:  # name the first event outside
            for start in range(0, self.count, BATCH):
                batch = self.rows(start, start + BATCH)
                check_events(batch.t, batch.x, batch.y, self.sensor, self.path, start)

    def _time_divisor(self, say=True):
        """units_per_second, from the two time stamps it needs read off the file."""
        n = self.count
        if n < 2:
            return 1.0
        first, last = self._raw(n // 100, n // 100 + 1)[0][0], self._raw(n - 1 - n // 100, n - n // 100)[0][0]
        return time_divisor(first, last, self.path, say)

    def _index(self, may_sort=False):
        """Read every event once, a batch at a time: check the times (finite, sorted) and keep the
        marks; returns the largest x and y, from which the sensor is decided. Time stamps out of
        order raise _OutOfOrder if the format `may_sort` its events, else are refused."""
        from tqdm import tqdm
        n = self.count
        marks, x_max, y_max, previous = [], 0, 0, np.empty(0)
        for start in tqdm(range(0, n, BATCH), desc="indexing events", unit="batch", leave=False, disable=n <= BATCH):
            batch = self.rows(start, start + BATCH)
            check_events(batch.t, batch.x, batch.y, (1 << 15, 1 << 15), self.path, start)  # the sensor comes later
            joined = np.concatenate([previous, batch.t])
            if not may_sort:
                check_sorted(joined, self.path, start - len(previous))
            elif (np.diff(joined) < 0).any():
                raise _OutOfOrder
            marks.append(batch.t[::MARK_STRIDE].copy())  # copies: a view would keep the whole batch alive
            x_max, y_max, previous = max(x_max, int(batch.x.max())), max(y_max, int(batch.y.max())), batch.t[-1:].copy()
        self._marks = np.concatenate(marks)
        return x_max, y_max

    def _sort_in_memory(self):
        """The events, out of time order, read into memory and sorted (stably, with load_events'
        note), to be read from there: a recording is then held whole, as loading it would. The
        unit of the time stamps is decided again, from the sorted ones."""
        print(f"note: {self.path}: events are not in time order; sorting them (stable)", file=sys.stderr)
        buffer = _ColumnBuffer(self.count)
        for start in range(0, self.count, BATCH):
            buffer.append(*self._raw(start, min(start + BATCH, self.count)))
        t, x, y, p = buffer.arrays()
        order = np.argsort(t, kind="stable")
        t, x, y, p = t[order], x[order], y[order], p[order]
        self._read = lambda first, last: (t[first:last].copy(), x[first:last], y[first:last], p[first:last])
        divisor = self._time_divisor(say=False)
        if divisor != self._divisor:
            self._divisor = self._time_divisor()

    def __len__(self):
        return self.count

    def _raw(self, first, last):
        try:
            return event_piece(*self._read(first, last), self.path)[1:]
        except (OSError, ValueError) as error:  # the file changed or was truncated since it was opened
            problem = str(error).splitlines()[0]
            raise EventDataError(self.path, f"events {first}-{last - 1} unreadable ({problem})") from None

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


def _by_position(path):
    """Whether EventFile reads the format of `path`."""
    return event_formats.FORMATS[detect_format(os.path.normpath(path))].columns is not None


def open_events(path, sensor=None, time_range=None, whole=False, **options):
    """An EventFile for a format read by position (unless `whole`, or a `time_range` is
    given), else load_events' Events. Either way validated, with the sensor set."""
    if not whole and time_range is None and not options and _by_position(path):
        return EventFile(path, sensor)
    return load_events(path, sensor=sensor, time_range=time_range, **options)[0]


def info(path, **options):
    events = open_events(path, **options)
    sensor, (t_first, t_last) = events.sensor, events.times_at([0, len(events) - 1])
    return {"format": events.format, "encoding": events.encoding, "time_unit": events.time_unit,
            "num_events": len(events), "sensor": list(sensor), "t_first": float(t_first),
            "t_last": float(t_last), "event_rate": len(events) / (t_last - t_first) if t_last > t_first else None,
            "num_frames": 0 if events.aps_frames is None else int(len(events.aps_frames))}


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
    import torch  # here, not at the top: reading events needs only numpy, and --info starts sooner
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
    """`--info PATH` (or `evinr info PATH`): one JSON line about a recording. Exit status as
    every command of the project: 2 bad input, 1 the environment, 130 interrupted."""
    parser = command.ArgumentParser(
        prog=command.program_name(), description="Summarise an event recording as one JSON line.",
        usage="%(prog)s [-h] (PATH | --info PATH) [--H H --W W] [--events_topic TOPIC] "
              "[--images_topic TOPIC] [--time_range BEGIN END]")
    parser.add_argument("path", nargs="?", metavar="PATH", help="recording: any supported format")
    parser.add_argument("--info", metavar="PATH", default=None, help="the same, as a flag")
    parser.add_argument("--H", type=int, default=None, help="sensor height (rows), when the file lacks it")
    parser.add_argument("--W", type=int, default=None, help="sensor width (columns), when the file lacks it")
    parser.add_argument("--events_topic", default=None, help="bags: the events topic (default: ROS 1 "
                                                             "/dvs/events; ROS 2 the bag's one topic of events)")
    parser.add_argument("--images_topic", default=None, help="bags: the sensor_msgs/Image topic (default: ROS 1 "
                                                             "/dvs/image_raw if present; ROS 2 the bag's one "
                                                             "image topic)")
    parser.add_argument("--time_range", type=float, nargs=2, metavar=("BEGIN", "END"), default=None,
                        help="only the events with BEGIN <= t < END, seconds on the recording's clock")
    args = parser.parse_args(argv)
    path = args.info or args.path
    if path is None or (args.info and args.path):
        parser.error("give one recording: PATH or --info PATH")
    command.prepare_command_line()  # SIGTERM and SIGHUP stop it like Ctrl-C; it writes nothing
    topics = {name: value for name, value in (("events_topic", args.events_topic),
                                              ("images_topic", args.images_topic)) if value is not None}
    with command.exit_status((EventDataError,), path, interrupted="interrupted", source=path):
        print(json.dumps(info(path, sensor=(args.H, args.W), time_range=args.time_range, **topics)))



if __name__ == "__main__":
    main()
