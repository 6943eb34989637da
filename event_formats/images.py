"""
APS frames: the image files that an images.txt names (ECD's and the authors' folders, ECD's
zips), and frames stored as arrays (HDF5, EVREAL). Nothing a file says is trusted: an image's
size is read from its header before it is decoded, so that a small file which decodes to
gigabytes (a PNG of 20000 x 20000 px of one colour compresses to a few kB) is refused, not
decoded; every frame must have the size of the first; the paths an images.txt names must be
regular files inside the sequence's folder; and frames of float values are read only when
they are plainly 8-bit brightness, in [0, 1] or in [0, 255].
"""

import os
import struct
import sys

import numpy as np

from .common import MAX_SIDE, EventDataError, read_file_inside, read_regular_file, shown

MAX_PIXELS = 1 << 26  # pixels of a frame at most (8192 x 8192): far more than any event camera's
MAX_IMAGE_BYTES = 1 << 28  # bytes of one image file at most
MAX_LIST_BYTES = 1 << 26  # bytes of an images.txt at most (a million lines)


# --- an image file's size, from its header ----------------------------------------

def _png_size(data):
    return struct.unpack_from(">II", data, 16) if len(data) >= 24 and data[12:16] == b"IHDR" else None


def _jpeg_size(data):
    """(W, H) of a JPEG's first start-of-frame segment."""
    offset = 2
    while offset + 9 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte, or a marker without length
            offset += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-SOF15 (not DHT, JPG, DAC)
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return width, height
        offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
    return None


def _bmp_size(data):
    if len(data) < 26:
        return None
    if struct.unpack_from("<I", data, 14)[0] == 12:  # OS/2 header: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height stores the rows top down


def _tiff_size(data):
    """(W, H) from the first image directory's ImageWidth (256) and ImageLength (257) tags."""
    order = "<" if data.startswith(b"II") else ">"
    try:
        offset = struct.unpack_from(order + "I", data, 4)[0]
        sizes = {}
        for entry in range(struct.unpack_from(order + "H", data, offset)[0]):
            tag, kind = struct.unpack_from(order + "HH", data, offset + 2 + 12 * entry)
            if tag in (256, 257):
                sizes[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, offset + 10 + 12 * entry)[0]
    except struct.error:
        return None
    return (sizes[256], sizes[257]) if len(sizes) == 2 else None


def _webp_size(data):
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def _pnm_size(data):
    """(W, H) of a PBM, PGM or PPM (P1-P6): the first two numbers after the magic, comments skipped."""
    lines = [line.split(b"#")[0] for line in data[2:256].split(b"\n")]
    fields = b" ".join(lines).split()
    try:
        return int(fields[0]), int(fields[1])
    except (IndexError, ValueError):
        return None


_IMAGE_FORMATS = ((b"\x89PNG\r\n\x1a\n", _png_size), (b"\xff\xd8", _jpeg_size), (b"BM", _bmp_size),
                  (b"II*\0", _tiff_size), (b"MM\0*", _tiff_size), (b"RIFF", _webp_size),
                  *((b"P%d" % k, _pnm_size) for k in range(1, 7)))


def image_size(data, where):
    """(W, H) that an image file's header states, or None when the header is cut short or
    corrupt. Formats whose size is not read here are refused: decoding them would be trusting
    them with any amount of memory."""
    for signature, size in _IMAGE_FORMATS:
        if data.startswith(signature) and (signature != b"RIFF" or data[8:12] == b"WEBP"):
            return size(data)
    raise EventDataError(where, "not an image of a format read here (PNG, JPEG, BMP, TIFF, WebP, PBM/PGM/PPM)")


def size_problem(width, height):
    """What is wrong with a frame of width x height px (empty, or larger than any sensor), or None."""
    if 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS:
        return None
    return f"{width}x{height} px; a frame has 1 to {MAX_SIDE} px a side and at most {MAX_PIXELS} px"


def check_frame_size(size, where, first=None):
    """Refuse a frame (W, H) larger than any sensor (MAX_SIDE a side, MAX_PIXELS), empty, or
    not of the size `first` (W, H) of the recording's first frame."""
    width, height = size
    if size_problem(width, height):
        raise EventDataError(where, f"image is {size_problem(width, height)}")
    if first is not None and tuple(size) != tuple(first):
        raise EventDataError(where, f"APS frames have different sizes: this one is {width}x{height} px, "
                                    f"the first {first[0]}x{first[1]} px")


def decode_image(data, where, first=None):
    """Image file bytes -> uint8 (or uint16) gray [H, W] or RGB [H, W, 3], its size read from the
    header and checked (check_frame_size) before it is decoded."""
    size = image_size(data, where) if data is not None else None
    if size is None:
        raise EventDataError(where, "missing or unreadable image")
    check_frame_size(size, where, first)
    import cv2  # here: a refused image needs none of it
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a corrupt image is said in one error line
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None and image.ndim == 3 and image.shape[2] in (3, 4):  # OpenCV decodes BGR; frames are RGB
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    except cv2.error:
        image = None
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    if image is None:
        raise EventDataError(where, "missing or unreadable image")
    if image.shape[1::-1] != tuple(size):
        raise EventDataError(where, f"image decodes to {image.shape[1]}x{image.shape[0]} px, not the "
                                    f"{size[0]}x{size[1]} px its header states")
    if image.dtype.kind not in "u" or (image.ndim == 3 and image.shape[2] != 3):
        channels = image.shape[2] if image.ndim == 3 else 1
        raise EventDataError(where, f"image of {image.dtype} values in {channels} channels; APS frames are 8 or "
                                    "16-bit gray or RGB")
    return image


# --- the images an images.txt names ---------------------------------------------------

def image_list_pieces(list_path, data, load, key="images"):
    """Frames named by an images.txt's bytes `data` (lines `t relative/path.png`); `load(relative,
    where)` gives the file's bytes, or None when it is missing."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EventDataError(list_path, f"not UTF-8 text (byte {error.start}); expected lines 't path'") from None
    first = None
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise EventDataError(list_path, f"line {line_number}: expected 'time path', got {shown(line.strip())}")
        try:
            t = float(parts[0])
        except ValueError:
            raise EventDataError(list_path, f"line {line_number}: bad time {shown(parts[0])}") from None
        if os.path.isabs(parts[1]) or ".." in parts[1].replace("\\", "/").split("/"):
            raise EventDataError(list_path, f"line {line_number}: {shown(parts[1])} leads out of the sequence's "
                                            "folder; frames are read from files inside it")
        where = os.path.join(os.path.dirname(list_path), parts[1])
        image = decode_image(load(parts[1], where), where, first)
        first = first or image.shape[1::-1]
        yield ("frame", key, t, image)


def folder_image_pieces(folder, list_name="images.txt", key="images"):
    """The frames that `folder`/`list_name` names, files relative to the folder: regular files
    inside it (see common.file_inside), of at most MAX_IMAGE_BYTES each."""
    list_path = os.path.join(folder, list_name)
    data = read_regular_file(list_path, MAX_LIST_BYTES)
    if data is None:
        raise EventDataError(list_path, "missing")
    return image_list_pieces(list_path, data, lambda relative, where: read_file_inside(
        os.path.join(folder, relative), folder, where, MAX_IMAGE_BYTES), key)


# --- frames stored as arrays -----------------------------------------------------------

def check_frame_array(shape, dtype, where, name="APS frames"):
    """Refuse a frame stored as an array (of `shape` [H, W] or [H, W, C], and `dtype`) that is
    not numbers, not gray or colour (1, 3 or 4 channels), or of a size no sensor has: checked
    from the shape and type alone, before anything is read. `name` says which, for the message."""
    if dtype.kind not in "uif" or dtype.fields is not None:
        raise EventDataError(where, f"{name}: expected numbers, found values of type {dtype}")
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise EventDataError(where, f"{name}: a frame must be [H, W] or [H, W, C] with 1, 3 or 4 channels, "
                                    f"found shape {list(shape)}")
    if size_problem(shape[1], shape[0]):
        raise EventDataError(where, f"{name}: a frame is {size_problem(shape[1], shape[0])}")


def float_frame_scale(low, high, path):
    """The factor that takes frames of float values, from `low` to `high`, to 8-bit brightness:
    255 for values in [0, 1], 1 for values in [0, 255]; anything else is refused, as is a NaN.
    Said with a note: the frames are converted."""
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
        raise EventDataError(path, f"APS frames hold float values from {low:g} to {high:g}; expected 8-bit "
                                   "brightness (uint8), or floats in [0, 1] or [0, 255]")
    scale = 255.0 if high <= 1 else 1.0
    print(f"note: {path}: APS frames hold float values in [0, {255 / scale:g}]; read as 8-bit brightness"
          f"{' (x 255)' if scale != 1 else ''}", file=sys.stderr)
    return scale


def frame_pixels(image, scale=None):
    """A frame as the readers give it: float values times `scale` rounded to uint8 (see
    float_frame_scale), any other as it is."""
    image = np.asarray(image)
    if image.dtype.kind == "f":
        return np.rint(image.astype(np.float64) * scale).astype(np.uint8)
    return image
