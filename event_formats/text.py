"""
Events as text lines `t x y p` (t in seconds): ECD/IJRR's events.txt alone, in its folder or in a
zip, and E2VID's txt (a first line `W H`), alone or in a zip.
"""

import os
import warnings
import zipfile
import zlib

import numpy as np

from . import event_format
from .common import EventDataError, event_piece, is_file_with, is_folder_with
from .images import MAX_IMAGE_BYTES, MAX_LIST_BYTES, folder_image_pieces, image_list_pieces

# --- parsing `t x y p` lines ---------------------------------------------------------
#
# np.loadtxt is slow for the many millions of lines of a recording. Lines as ECD writes them
# ("0.003811000 96 133 0") are parsed instead with whole-array byte arithmetic: every byte below
# '0' is a separator, and a line must have exactly '.', ' ', ' ', ' ', '\n' as its separators;
# each field is then read as one unaligned 8-byte word ending at the field's end, and its digits
# are combined in the word (SWAR). A block that does not fit that mould (tabs, CRLF, exponents, signs) goes through
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
                yield event_piece(*columns, path)
            line += line_count
    if carry.strip():
        yield event_piece(*(_parse_txt_fast(carry + b"\n") or _parse_txt_general(carry, path, line)), path)


# --- the formats ------------------------------------------------------------------

_is_txt, _is_zip = is_file_with(".txt"), is_file_with(".zip")


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
        text = b" ".join(fields).decode(errors="replace")
        raise EventDataError(path, f"line 1: expected the sensor size 'W H', got {text!r}") from None
    return height, width


def _is_e2vid_txt(path):
    """A .txt whose first line is two fields (E2VID's `W H`)."""
    return _is_txt(path) and _first_line_fields(path) == 2


@event_format("e2vid_txt", _is_e2vid_txt)
def stream_e2vid_txt(path, **options):
    """E2VID txt: a `W H` line, then `t x y p` lines."""
    with open(path, "rb") as f:
        yield ("sensor", _e2vid_header(f, path))
        yield from _txt_pieces(f, path, first_line=2)


@event_format("ecd_txt", _is_txt)
def stream_ecd_txt(path, **options):
    """A bare ECD `events.txt`; an `images.txt` beside it adds the APS frames."""
    with open(path, "rb") as f:
        yield from _txt_pieces(f, path)
    folder = os.path.dirname(path)
    if os.path.basename(path) == "events.txt" and os.path.isfile(os.path.join(folder, "images.txt")):
        yield from folder_image_pieces(folder)


@event_format("ecd_folder", is_folder_with("events.txt"))
def stream_ecd_folder(path, **options):
    """ECD/IJRR folder: events.txt, and images.txt with images/ when present."""
    events_path = os.path.join(path, "events.txt")
    with open(events_path, "rb") as f:
        yield from _txt_pieces(f, events_path)
    if os.path.isfile(os.path.join(path, "images.txt")):
        yield from folder_image_pieces(path)


def _zip_member(archive, name):
    """The member `name`, at the top of the archive or inside its single top folder."""
    names = archive.namelist()
    if name in names:
        return name
    nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + name)]
    return nested[0] if len(nested) == 1 else None


# what reading a corrupt member raises: a bad CRC or header, a broken deflate stream, an end
# too early, a compression or an encryption that zipfile does not read (an OSError is the
# environment's, as for any file)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def _is_ecd_zip(path):
    """A zip with an events.txt of `t x y p` lines (an E2VID zip's txt starts with `W H`); one
    whose events.txt cannot be read is taken as ECD's, whose reader names the problem."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = _zip_member(archive, "events.txt")
            if member is None:
                return False
            try:
                with archive.open(member) as f:
                    return len(f.readline(4096).split()) != 2
            except _ZIP_ERRORS:
                return True
    except (OSError, zipfile.BadZipFile):
        return False


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise EventDataError(path, f"not a readable zip file ({error})") from None


def _zip_error(path, error):
    return EventDataError(path, f"unreadable or corrupt zip file ({' '.join(str(error).split()) or type(error).__name__})")


def _member_bytes(archive, name, where, limit):
    """The bytes of the member `name`, of at most `limit` bytes as the archive states and as read."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise EventDataError(where, f"is {size} bytes, more than the {limit} read of such a file")
    with archive.open(name) as f:
        return f.read(limit)


@event_format("ecd_zip", lambda path: _is_zip(path) and _is_ecd_zip(path))
def stream_ecd_zip(path, **options):
    """A zipped ECD/IJRR sequence: events.txt, images.txt, images/ (maybe under one top folder)."""
    with _open_zip(path) as archive:
        member = _zip_member(archive, "events.txt")
        prefix = member[:-len("events.txt")]
        names = set(archive.namelist())
        try:
            with archive.open(member) as f:
                yield from _txt_pieces(f, f"{path}/{member}")
            if prefix + "images.txt" in names:
                list_path = f"{path}/{prefix}images.txt"
                data = _member_bytes(archive, prefix + "images.txt", list_path, MAX_LIST_BYTES)

                def image_bytes(relative, where):
                    name = prefix + relative
                    return _member_bytes(archive, name, where, MAX_IMAGE_BYTES) if name in names else None
                yield from image_list_pieces(list_path, data, image_bytes)
        except _ZIP_ERRORS as error:
            raise _zip_error(path, error) from None


@event_format("e2vid_zip", _is_zip)
def stream_e2vid_zip(path, **options):
    """A zip holding one E2VID txt."""
    with _open_zip(path) as archive:
        texts = [n for n in archive.namelist() if n.endswith(".txt")]
        if len(texts) != 1:
            raise EventDataError(path, f"expected one .txt of events in the zip, found {len(texts)}")
        try:
            with archive.open(texts[0]) as f:
                yield ("sensor", _e2vid_header(f, f"{path}/{texts[0]}"))
                yield from _txt_pieces(f, f"{path}/{texts[0]}", first_line=2)
        except _ZIP_ERRORS as error:
            raise _zip_error(path, error) from None


