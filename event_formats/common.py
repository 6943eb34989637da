"""
What the format modules share: the error they raise, the columns a format offers for reading by
position, the checks that turn raw columns into an ("events", ...) piece, and the checks of
what a file states that is no event: its sensor size, and the paths of other files it names
(nothing a file says is trusted).
"""

import errno
import os
import stat
from dataclasses import dataclass

import numpy as np

BATCH = 1 << 20  # events per piece: large enough for numpy to be efficient, small next to a recording


class EventDataError(Exception):
    """Bad input. Its message is one line that names the file and the problem."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # pickled as made (a Ray task's error reaches its caller so)
        return type(self), (self.path, self.problem)


@dataclass
class Columns:
    """A recording's event columns on disk, read by position (see event_data.EventFile)."""
    count: int
    read: object                  # (first, last) -> the raw t (seconds, or the file's unit), x, y, p of those events
    facts: dict                   # "encoding" and "time_unit", as an ("info", ...) piece
    sensor: tuple | None = None
    aps_frames: object = None     # a list of ("frame", ...) pieces, or an array-like [K, H, W] read on demand
    aps_t: np.ndarray | None = None


# --- raw columns -> an events piece ------------------------------------------------

def polarity_column(values, path):
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


def coordinate_column(values, path, name):
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


def event_piece(t, x, y, p, path):
    """A ("events", ...) piece from raw columns of one batch, typed and checked."""
    return ("events", np.asarray(t, dtype=np.float64), coordinate_column(x, path, "x"),
            coordinate_column(y, path, "y"), polarity_column(p, path))


# --- detection ----------------------------------------------------------------------

def is_file_with(*extensions, any_case=False):
    """Detect a file by the end of its name (in any letter case if `any_case`)."""
    def detect(path):
        name = path.lower() if any_case else path
        return name.endswith(extensions) and os.path.isfile(path)
    return detect


def is_folder_with(*names):
    """Detect a folder that holds all the files `names`."""
    return lambda path: os.path.isdir(path) and all(os.path.isfile(os.path.join(path, n)) for n in names)


# --- what a file states: sizes, and the paths it names --------------------------------

MAX_SIDE = np.iinfo(np.int16).max  # pixels a side at most: coordinates are int16


def shown(value, limit=60):
    """A value from a file, for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sensor_size(values, where, name="sensor_resolution"):
    """(H, W) from a sensor size that a file states: two whole numbers from 1 to MAX_SIDE (a
    file can hold anything there: one value, three, text, nulls)."""
    try:
        array = None if isinstance(values, (str, bytes)) else np.asarray(values)
    except (ValueError, TypeError):  # ragged lists
        array = None
    valid = array is not None and array.shape == (2,) and array.dtype.kind in "iuf"
    if valid:
        with np.errstate(invalid="ignore"):
            valid = bool(np.isfinite(array).all() and (array == np.round(array)).all()
                         and (array >= 1).all() and (array <= MAX_SIDE).all())
    if not valid:
        raise EventDataError(where, f"{name} must be two whole numbers [H, W] from 1 to {MAX_SIDE}, "
                                    f"got {shown(values if array is None else array.tolist())}")
    return int(array[0]), int(array[1])


def file_inside(path, folder, where):
    """Check, before anything opens it, that `path` (named by a file: bag metadata, an
    images.txt) is a regular file inside `folder`, symbolic links followed. A FIFO would block
    the open forever (SQLite retries an interrupted open, so not even SIGTERM ends it), a device
    can be endless, and a path leading out of the folder reads what the recording does not hold.
    Returns False when nothing is there. An OSError other than a missing file or a loop of links
    is the environment's (permissions), and is left to say so."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, base]) != base:
        raise EventDataError(where, "names a file outside its folder; only files inside it are read")
    try:
        status = os.stat(real)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise EventDataError(where, "is a loop of symbolic links") from None
    if not stat.S_ISREG(status.st_mode):
        raise EventDataError(where, "is not a regular file (a FIFO, device or folder); only regular files are read")
    return True


def read_file_inside(path, folder, where, limit):
    """The bytes of `path`, a regular file inside `folder` (see file_inside) of at most `limit`
    bytes; None when it is missing. Opened without blocking and checked again once open, so
    that a file swapped for a FIFO after the check cannot block either."""
    if not file_inside(path, folder, where):
        return None
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        status = os.fstat(f.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise EventDataError(where, "is not a regular file; only regular files are read")
        if status.st_size > limit:
            raise EventDataError(where, f"is {status.st_size} bytes, more than the {limit} read of such a file")
        return f.read(limit)


def read_regular_file(path, limit):
    """The bytes of `path`, a file whose name the format gives (metadata.json, images.txt): it may
    lie anywhere, but must be a regular file of at most `limit` bytes (see read_file_inside)."""
    return read_file_inside(path, os.path.dirname(os.path.realpath(path)), path, limit)
