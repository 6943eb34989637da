"""
HDF5 recordings: event_cnn_minimal / HQF (events/{ts,xs,ys,ps}, images/image*, attribute
sensor_resolution), DSEC (events/{t,x,y,p} in us after t_offset, ms_to_idx) and flat files
(t, x, y, p at the root). Read a batch at a time, a time range alone, or by position.

Datasets may be compressed with filters that h5py does not bring, such as the Blosc that DSEC's
events.h5 use: importing the hdf5plugin package registers them.
"""

import numpy as np

from . import event_format
from .common import BATCH, Columns, EventDataError, event_piece, is_file_with

# what h5py raises for an unreadable file; KeyError too, for a corrupt object header
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError)


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
                return (group["t"], group["x"], group["y"], group["p"], to_seconds,
                        {"encoding": encoding, "time_unit": "us"})
            return (group["t"], group["x"], group["y"], group["p"], lambda t: t.astype(np.float64),
                    {"encoding": encoding, "time_unit": "s"})
    raise EventDataError(path, "missing dataset: expected events/ts, events/xs, events/ys, events/ps "
                               "(event_cnn_minimal) or t, x, y, p (flat and DSEC, at the root or under events/)")


def _h5_events(f, path):
    """_h5_events_layout, its four datasets checked to be as long."""
    t, x, y, p, to_seconds, facts = _h5_events_layout(f, path)
    if not len(t) == len(x) == len(y) == len(p):
        raise EventDataError(path, f"event datasets differ in length: {len(t)}, {len(x)}, {len(y)}, {len(p)}")
    return t, x, y, p, to_seconds, facts


def _h5_sensor(f):
    """The file's sensor_resolution attribute, (H, W), or None."""
    return tuple(int(v) for v in f.attrs["sensor_resolution"]) if "sensor_resolution" in f.attrs else None


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


def _h5_frame_pieces(f, path, time_range=None):
    for name in sorted(f["images"].keys()) if "images" in f else ():
        image = f["images"][name]
        if "timestamp" not in image.attrs:
            raise EventDataError(path, f"images/{name} has no timestamp attribute")
        stamp = float(image.attrs["timestamp"])
        if time_range is None or time_range[0] <= stamp < time_range[1]:
            yield ("frame", "images", stamp, image[()])


def _h5_columns(path):
    """An HDF5 file's events as EventFile reads them: dataset slices. The file is kept open (its
    layout looked up once, its chunk cache kept), as a bag is."""
    import h5py
    has_filters = _hdf5_filters()
    try:
        f = h5py.File(path, "r")
        t, x, y, p, to_seconds, facts = _h5_events(f, path)
        sensor = _h5_sensor(f)
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
            sensor = _h5_sensor(f)
            if sensor is not None:
                yield ("sensor", sensor)
            yield ("info", facts)
            first, last = 0, len(t)
            if time_range is not None:
                first, last = (_h5_first_at(t, to_seconds, seconds, f) for seconds in time_range)
            for start in range(first, last, BATCH):
                part = slice(start, min(start + BATCH, last))
                yield event_piece(to_seconds(t[part]), x[part], y[part], p[part], path)
            yield from _h5_frame_pieces(f, path, time_range)
    except _H5_ERRORS as error:
        raise _h5_error(path, error, has_filters) from None
