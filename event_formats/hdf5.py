"""
HDF5 recordings: event_cnn_minimal / HQF (events/{ts,xs,ys,ps}, images/image*, attribute
sensor_resolution), DSEC (events/{t,x,y,p} in us after t_offset, ms_to_idx) and flat files
(t, x, y, p at the root). Read a batch at a time, a time range alone, or by position.

Datasets may be compressed with filters that h5py does not bring, such as the Blosc that DSEC's
events.h5 use: importing the hdf5plugin package registers them.
"""

import sys

import numpy as np

from . import event_format
from .common import BATCH, Columns, EventDataError, event_piece, is_file_with, sensor_size, shown
from .images import check_frame_array, float_frame_scale, frame_pixels

# what h5py raises for an unreadable file; KeyError too, for a corrupt object header, and
# TypeError for a type that numpy has no equivalent of
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)
_EVENT_KINDS = {"t": "iuf", "x": "iuf", "y": "iuf", "p": "biuf"}  # numpy kinds each column may hold


def _hdf5_filters():
    """Register hdf5plugin's compression filters with h5py; False if the package is absent."""
    try:
        import hdf5plugin  # noqa: F401  (importing it is what registers the filters)
    except ImportError:
        return False
    return True


def _h5_error(path, error, has_filters):
    """The EventDataError for an exception h5py raised reading `path`."""
    problem = " ".join(str(error).strip("'\"").split()) or type(error).__name__
    if not has_filters and ("filter" in problem or "plugin" in problem):
        return EventDataError(path, "its data is compressed with a filter that h5py lacks (DSEC's are Blosc): "
                                    "pip install hdf5plugin")
    return EventDataError(path, f"unreadable or truncated HDF5 file ({problem})")


def _h5_get(group, name, path):
    """group[name], or None when absent. Data kept in other files is refused: an external link,
    a dataset's external storage or a virtual dataset name files by paths that the file gives,
    which may be anything (a FIFO blocks the read forever)."""
    import h5py
    if name not in set(group):  # link names, no link followed
        return None
    link = group.get(name, getlink=True)
    where = f"{group.name.strip('/')}/{name}".lstrip("/")
    if isinstance(link, h5py.ExternalLink):
        raise EventDataError(path, f"{where} links to another file ({shown(link.filename)}); only data inside "
                                   "the file is read")
    item = group.get(name)
    if isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
        raise EventDataError(path, f"{where} is stored in other files; only data inside the file is read")
    return item


def _event_dataset(group, name, path):
    """The 1-D dataset of numbers group[name], one of the event columns."""
    import h5py
    dataset = _h5_get(group, name, path)
    kinds = _EVENT_KINDS[name.rstrip("s")]
    if (not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1 or dataset.dtype.kind not in kinds
            or dataset.dtype.fields is not None):
        where = f"{group.name.strip('/')}/{name}".lstrip("/")
        raise EventDataError(path, f"{where} must be a 1-D dataset of numbers, found {_found(dataset)}")
    return dataset


def _found(item):
    """What an HDF5 object is, for an error message."""
    import h5py
    if isinstance(item, h5py.Dataset):
        return f"{item.dtype} of shape {list(item.shape)}"
    return "a group" if isinstance(item, h5py.Group) else "a broken link"


def _t_offset(f, path):
    """DSEC's t_offset: one whole number of microseconds, added to every time stamp (0 when absent)."""
    import h5py
    offset = _h5_get(f, "t_offset", path)
    if offset is None:
        return 0
    if not isinstance(offset, h5py.Dataset) or offset.size != 1 or offset.dtype.kind not in "iu":
        raise EventDataError(path, f"t_offset must be one whole number of microseconds, found {_found(offset)}")
    return int(np.asarray(offset[()]).reshape(-1)[0])


def _h5_events_layout(f, path):
    """(datasets t, x, y, p, time-to-seconds, facts) for the event_cnn_minimal, DSEC or flat
    layout. Flat files keep t in integer microseconds (DSEC adds a `t_offset` in us, and the
    index `ms_to_idx`); float t is seconds."""
    import h5py
    events = _h5_get(f, "events", path)
    if isinstance(events, h5py.Group) and {"ts", "xs", "ys", "ps"} <= set(events):
        t, x, y, p = (_event_dataset(events, name, path) for name in ("ts", "xs", "ys", "ps"))
        return t, x, y, p, lambda t: t.astype(np.float64), {"encoding": "event_cnn_minimal", "time_unit": "s"}
    for group in (f, events):
        if isinstance(group, h5py.Group) and {"t", "x", "y", "p"} <= set(group):
            t, x, y, p = (_event_dataset(group, name, path) for name in ("t", "x", "y", "p"))
            encoding = "DSEC" if "ms_to_idx" in set(f) else "flat"
            if np.issubdtype(t.dtype, np.integer):
                offset = _t_offset(f, path)
                to_seconds = lambda t: (t.astype(np.int64) + offset) / 1e6  # exact sum, one rounding
                return t, x, y, p, to_seconds, {"encoding": encoding, "time_unit": "us"}
            return t, x, y, p, lambda t: t.astype(np.float64), {"encoding": encoding, "time_unit": "s"}
    raise EventDataError(path, "missing dataset: expected events/ts, events/xs, events/ys, events/ps "
                               "(event_cnn_minimal) or t, x, y, p (flat and DSEC, at the root or under events/)")


def _h5_events(f, path):
    """_h5_events_layout, its four datasets checked to be as long."""
    t, x, y, p, to_seconds, facts = _h5_events_layout(f, path)
    if not len(t) == len(x) == len(y) == len(p):
        raise EventDataError(path, f"event datasets differ in length: {len(t)}, {len(x)}, {len(y)}, {len(p)}")
    return t, x, y, p, to_seconds, facts


def _h5_sensor(f, path):
    """The file's sensor_resolution attribute, (H, W), or None."""
    return sensor_size(f.attrs["sensor_resolution"], path) if "sensor_resolution" in f.attrs else None


class _MillisecondIndex:
    """DSEC's ms_to_idx: entry k is the index of the first event at or after k ms (t in us after
    t_offset). Trusted only as far as checked: each entry used must be what the time stamps
    around it say (within [0, N], t[entry] >= k ms > t[entry - 1]); an index that is not 1-D
    integers, is empty or stops well before the events do, or an entry found wrong, is ignored
    from then on, with a note, and events are found by halving the range instead."""

    def __init__(self, f, t, path):
        import h5py
        self.t, self.path, self.index = t, path, _h5_get(f, "ms_to_idx", path)
        if self.index is None:
            return
        index, problem = self.index, None
        if not isinstance(index, h5py.Dataset) or index.ndim != 1 or index.dtype.kind not in "iu":
            problem = "is not a 1-D array of whole numbers"
        elif len(index) == 0 or not np.issubdtype(t.dtype, np.integer):
            problem = "is empty" if len(index) == 0 else "goes with time stamps that are not whole microseconds"
        elif len(t) and int(t[len(t) - 1]) >= (len(index) + 1) * 1000:
            problem = f"stops at {len(index)} ms, before the events do ({int(t[len(t) - 1]) // 1000} ms)"
        if problem:
            self.ignore(problem)

    def ignore(self, problem):
        print(f"note: {self.path}: its ms_to_idx {problem}; it is ignored (events are found by their time "
              "stamps)", file=sys.stderr)
        self.index = None

    def entry(self, k):
        """Entry k, checked against the time stamps around it; None (and ignored from now on) when wrong."""
        n, value = len(self.t), int(self.index[k])
        after = value == n or (0 <= value < n and int(self.t[value]) >= k * 1000)
        if after and (value == 0 or (0 < value <= n and int(self.t[value - 1]) < k * 1000)):
            return value
        self.ignore(f"entry {k} ({value}) is not the first event at or after {k} ms")
        return None

    def bounds(self, ms):
        """(low, high) positions between which the first event at or after `ms` lies."""
        n = len(self.t)
        if self.index is None:
            return 0, n
        # a millisecond more on each side: the time in float may fall either side of a boundary;
        # past the index's end, its last entry is still a lower bound
        low = 0 if ms < 1 else self.entry(min(ms - 1, len(self.index) - 1))
        high = n if low is None or ms + 2 >= len(self.index) else self.entry(max(ms + 2, 0))
        return (0, n) if low is None or high is None else (low, max(low, high))


def _h5_first_at(t, to_seconds, seconds, index, offset_us):
    """Index of the first event at or after `seconds` (t is sorted). DSEC's ms_to_idx (`index`)
    gives the events of that millisecond; without it, halving the range reads one time stamp a
    step. Either way only a few time stamps are read, not the recording's."""
    low, high = index.bounds(int(np.floor((seconds * 1e6 - offset_us) / 1000)))
    while high - low > 4096:
        middle = (low + high) // 2
        if to_seconds(t[middle:middle + 1])[0] < seconds:
            low = middle + 1
        else:
            high = middle
    return low + int(np.searchsorted(to_seconds(t[low:high]), seconds, side="left"))


def _h5_frames(f, path):
    """[(dataset, time stamp)] of the datasets in `images`, in the order of their names, checked
    from their shapes, types and attributes before any is read."""
    import h5py
    images = _h5_get(f, "images", path)
    if images is None:
        return []
    if not isinstance(images, h5py.Group):
        raise EventDataError(path, "images must be a group of image datasets, found a dataset")
    frames = []
    for name in sorted(images):
        image = _h5_get(images, name, path)
        if not isinstance(image, h5py.Dataset):
            raise EventDataError(path, f"images/{name} is a group; images holds one dataset a frame")
        check_frame_array(image.shape, image.dtype, path, f"images/{name}")
        if "timestamp" not in image.attrs:
            raise EventDataError(path, f"images/{name} has no timestamp attribute")
        stamp = np.asarray(image.attrs["timestamp"])
        if stamp.size != 1 or stamp.dtype.kind not in "iuf":
            raise EventDataError(path, f"images/{name}: timestamp must be one number, found {shown(stamp.tolist())}")
        frames.append((image, float(stamp.reshape(-1)[0])))
    return frames


def _h5_frame_pieces(f, path, time_range=None):
    frames = _h5_frames(f, path)
    floats = [image[()] for image, _ in frames if image.dtype.kind == "f"]
    scale = float_frame_scale(min(a.min() for a in floats), max(a.max() for a in floats), path) if floats else None
    for image, stamp in frames:
        if time_range is None or time_range[0] <= stamp < time_range[1]:
            yield ("frame", "images", stamp, frame_pixels(image[()], scale))


def _h5_columns(path):
    """An HDF5 file's events as EventFile reads them: dataset slices. The file is kept open (its
    layout looked up once, its chunk cache kept), as a bag is."""
    import h5py
    has_filters = _hdf5_filters()
    try:
        f = h5py.File(path, "r")
        t, x, y, p, to_seconds, facts = _h5_events(f, path)
        sensor = _h5_sensor(f, path)
        frames = list(_h5_frame_pieces(f, path))
    except _H5_ERRORS as error:
        raise _h5_error(path, error, has_filters) from None

    def read(first, last):
        try:
            return to_seconds(t[first:last]), x[first:last], y[first:last], p[first:last]
        except _H5_ERRORS as error:
            raise _h5_error(path, error, has_filters) from None
    return Columns(len(t), read, facts, sensor, aps_frames=frames)


@event_format("h5", is_file_with(".h5", ".hdf5"), columns=_h5_columns)
def stream_h5(path, time_range=None, **options):
    """An HDF5 file a batch at a time. `time_range` (begin, end) in seconds on the recording's
    clock reads only the events and frames with begin <= t < end."""
    import h5py
    has_filters = _hdf5_filters()
    try:
        with h5py.File(path, "r") as f:
            t, x, y, p, to_seconds, facts = _h5_events(f, path)
            sensor = _h5_sensor(f, path)
            if sensor is not None:
                yield ("sensor", sensor)
            yield ("info", facts)
            first, last = 0, len(t)
            if time_range is not None:
                index, offset_us = _MillisecondIndex(f, t, path), _t_offset(f, path)
                first, last = (_h5_first_at(t, to_seconds, seconds, index, offset_us) for seconds in time_range)
            for start in range(first, last, BATCH):
                part = slice(start, min(start + BATCH, last))
                yield event_piece(to_seconds(t[part]), x[part], y[part], p[part], path)
            yield from _h5_frame_pieces(f, path, time_range)
    except _H5_ERRORS as error:
        raise _h5_error(path, error, has_filters) from None
