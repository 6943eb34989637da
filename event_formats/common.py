"""
What the format modules share: the error they raise, the columns a format offers for reading by
position, the checks that turn raw columns into an ("events", ...) piece, and the APS frames
named by an images.txt (ECD's and the authors' folders, ECD's zips).
"""

import os
from dataclasses import dataclass

import numpy as np

BATCH = 1 << 20  # events per piece: large enough for numpy to be efficient, small next to a recording


class EventDataError(Exception):
    """Bad input. Its message is one line that names the file and the problem."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


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


# --- APS frames as image files ----------------------------------------------------

def decode_image(data, where):
    """PNG/JPEG bytes -> uint8 gray or RGB."""
    import cv2
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data is not None else None
    if image is None:
        raise EventDataError(where, "missing or unreadable image")
    if image.ndim == 3:  # OpenCV decodes colour as BGR; frames are stored RGB
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return image


def image_list_pieces(list_path, text, load, key="images"):
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
        yield ("frame", key, t, decode_image(load(parts[1]), os.path.join(os.path.dirname(list_path), parts[1])))


def _file_bytes(path):
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def folder_image_pieces(folder, list_name="images.txt", key="images"):
    """The frames that `folder`/`list_name` names, files relative to the folder."""
    list_path = os.path.join(folder, list_name)
    with open(list_path) as f:
        text = f.read()
    return image_list_pieces(list_path, text, lambda relative: _file_bytes(os.path.join(folder, relative)), key)
