"""
Events in .npy files: an [N, 4] (t, x, y, p) array (the authors' events.npy), the authors'
folder around one, and EVREAL's folder of column arrays. All are read by position as well.
"""

import json
import os

import numpy as np

from . import event_format
from .common import (BATCH, Columns, EventDataError, event_piece, file_inside, is_file_with, is_folder_with,
                     read_regular_file, sensor_size)
from .images import check_frame_array, float_frame_scale, folder_image_pieces, frame_pixels

ROWS_FACTS = {"encoding": "[N, 4] array (t, x, y, p)", "time_unit": "s"}
EVREAL_FACTS = {"encoding": "EVREAL arrays", "time_unit": "s"}


def _load_npy(path, what="numbers"):
    """A map of the .npy `path`, a regular file (a FIFO would block the open), whose values
    must be numbers (`what` names them for the message)."""
    if os.path.lexists(path):
        file_inside(path, os.path.dirname(os.path.realpath(path)), path)  # a regular file, wherever it lies
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise EventDataError(path, f"unreadable or truncated .npy file ({str(error).splitlines()[0]})") from None
    if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
        raise EventDataError(path, f"expected {what}, found values of type {array.dtype}")
    return array


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


def _npy_rows(path, first, last):
    """Rows first:last of a .npy, copied out of a map of the file that is dropped at once, so
    that its pages do not stay resident (see _npy_batches)."""
    return np.array(_load_npy(path)[first:last])


def _check_rows(array, path):
    if array.ndim != 2 or array.shape[1] != 4 or array.dtype.kind == "b":
        raise EventDataError(path, f"expected an [N, 4] array of (t, x, y, p), got shape {list(array.shape)}")


def _metadata_sensor(folder):
    """`sensor_resolution` [H, W] from a metadata.json (EVREAL's, and this project's converters')."""
    metadata_path = os.path.join(folder, "metadata.json")
    if not os.path.isfile(metadata_path):
        return None
    try:
        size = json.loads(read_regular_file(metadata_path, 1 << 20))["sensor_resolution"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise EventDataError(metadata_path, "expected a JSON object with sensor_resolution [H, W]") from None
    return sensor_size(size, metadata_path)


# --- an [N, 4] array ----------------------------------------------------------------

def _npy_columns(path, sensor=None, aps_frames=None):
    """An [N, 4] .npy's events as EventFile reads them."""
    array = _load_npy(path)
    _check_rows(array, path)

    def read(first, last):
        rows = _npy_rows(path, first, last)
        return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    return Columns(len(array), read, ROWS_FACTS, sensor, aps_frames)


@event_format("npy", is_file_with(".npy"), columns=_npy_columns)
def stream_npy(path, **options):
    """An [N, 4] (t, x, y, p) array, as the authors' events.npy, read a batch at a time."""
    _check_rows(_load_npy(path), path)
    yield ("info", ROWS_FACTS)
    for rows in _npy_batches(path):
        yield event_piece(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], path)


# --- the authors' folder ------------------------------------------------------------

def _evinr_folder_columns(path):
    """The folder's events.npy as EventFile reads it, with the folder's sensor and frames."""
    has_images = os.path.isfile(os.path.join(path, "images.txt"))
    return _npy_columns(os.path.join(path, "events.npy"), _metadata_sensor(path),
                        list(folder_image_pieces(path)) if has_images else None)


@event_format("evinr_folder", is_folder_with("events.npy"), columns=_evinr_folder_columns)
def stream_evinr_folder(path, **options):
    """The authors' layout: events.npy, images.txt + images/, maybe color_images.txt + color_images/."""
    sensor = _metadata_sensor(path)
    if sensor:
        yield ("sensor", sensor)
    yield from stream_npy(os.path.join(path, "events.npy"))
    if os.path.isfile(os.path.join(path, "images.txt")):
        yield from folder_image_pieces(path)
    if os.path.isfile(os.path.join(path, "color_images.txt")):
        yield from folder_image_pieces(path, "color_images.txt", key="color_images")


# --- EVREAL's folder ----------------------------------------------------------------

def _is_column(array):
    """[N], or [N, 1] as some tools save a column."""
    return array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)


def _evreal_event_files(path):
    """The paths of an EVREAL folder's three event arrays, checked to hold the same number of
    events (and x, y as pairs); and that number."""
    files = [os.path.join(path, f"events_{name}.npy") for name in ("ts", "xy", "p")]
    t, xy, p = (_load_npy(file) for file in files)
    if not (_is_column(t) and _is_column(p) and xy.ndim == 2 and xy.shape[1] == 2 and len(t) == len(xy) == len(p)):
        raise EventDataError(path, f"events_ts [N], events_xy [N, 2] and events_p [N] disagree: shapes {t.shape}, "
                                   f"{xy.shape}, {p.shape}")
    return files, len(t)


def _evreal_images(path):
    """(images.npy's frames, the frame times from images_ts.npy), checked to be as many; None
    when the folder has no images. Both are checked here, before any events are read."""
    images_path = os.path.join(path, "images.npy")
    if not os.path.lexists(images_path):
        return None
    frames = _NpyFrames(images_path)
    times_path = os.path.join(path, "images_ts.npy")
    aps_t = _load_npy(times_path, "frame time stamps (numbers)")
    if aps_t.dtype.kind == "b" or not _is_column(aps_t):
        raise EventDataError(times_path, f"expected [K] frame time stamps, found {aps_t.dtype} of shape "
                                         f"{list(aps_t.shape)}")
    aps_t = np.asarray(aps_t, dtype=np.float64).reshape(-1)
    if len(frames) != len(aps_t):
        raise EventDataError(path, f"{len(frames)} images but {len(aps_t)} image time stamps")
    return frames, aps_t


class _NpyFrames:
    """The frames of an images.npy [K, H, W(, 1)] or [K, H, W, 3], read one at a time (see
    _npy_rows); its shape and type are checked on opening, and float values scaled to 8 bits
    (see images.float_frame_scale), which needs a pass over them."""

    def __init__(self, path):
        self.path = path
        array = _load_npy(path, "APS frames (numbers)")
        self.shape = array.shape[:3] if array.ndim == 4 and array.shape[3] == 1 else array.shape
        if len(self.shape) < 3:
            raise EventDataError(path, f"expected frames [K, H, W], found shape {list(array.shape)}")
        check_frame_array(self.shape[1:], array.dtype, path)
        self.scale = None
        if array.dtype.kind == "f" and len(array):
            ranges = [(part.min(), part.max()) for part in
                      (_npy_rows(path, start, start + 16) for start in range(0, len(array), 16))]
            self.scale = float_frame_scale(min(low for low, _ in ranges), max(high for _, high in ranges), path)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if not 0 <= index < self.shape[0]:
            raise IndexError(index)
        return frame_pixels(_npy_rows(self.path, index, index + 1)[0].reshape(self.shape[1:]), self.scale)


def _evreal_columns(path):
    """An EVREAL folder's events as EventFile reads them; its frames stay on disk too."""
    files, count = _evreal_event_files(path)

    def read(first, last):
        t, xy, p = (_npy_rows(file, first, last) for file in files)
        return t.reshape(-1), xy[:, 0], xy[:, 1], p.reshape(-1)
    columns = Columns(count, read, EVREAL_FACTS, _metadata_sensor(path))
    images = _evreal_images(path)
    if images is not None:
        columns.aps_frames, columns.aps_t = images
    return columns


@event_format("evreal_folder", is_folder_with("events_ts.npy", "events_xy.npy", "events_p.npy"),
              columns=_evreal_columns)
def stream_evreal_folder(path, **options):
    """EVREAL: events_ts.npy (s), events_xy.npy [N, 2], events_p.npy, images.npy [K, H, W, 1],
    images_ts.npy, metadata.json."""
    files, _ = _evreal_event_files(path)
    sensor, images = _metadata_sensor(path), _evreal_images(path)  # checked before any events are read
    if sensor:
        yield ("sensor", sensor)
    yield ("info", EVREAL_FACTS)
    for t, xy, p in zip(*(_npy_batches(file) for file in files)):
        yield event_piece(t.reshape(-1), xy[:, 0], xy[:, 1], p.reshape(-1), path)
    if images is None:
        return
    frames, aps_t = images
    for k, t_image in enumerate(aps_t):
        yield ("frame", "images", float(t_image), frames[k])
