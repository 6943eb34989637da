"""
Prophesee / Metavision recordings: RAW files of EVT 2.0, 2.1 or 3.0 words, and DAT files. The
word decoders here also read the EVT 3.0 bytes of ROS 2 EventPackets (see rosbag2).
"""

import numpy as np

from . import event_format
from .common import EventDataError, is_file_with, polarity_column, sensor_size

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
_VECTOR_X_LIMIT = (1 << 15) - 16  # the largest x of a vector word's first pixel (see Evt3Decoder._vectors)
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


def _still_header(head, offset):
    """Whether the bytes from `offset` are still header: a `% end` line comes later, or the next
    line is a '%' line of text. Then a '%' line that is not text is a corrupt header line, not
    the first binary word."""
    if head.find(b"\n% end", offset - 1) >= 0:
        return True
    end = head.find(b"\n", offset, offset + _HEADER_LINE_LIMIT)
    return head.startswith(b"%", offset) and end >= 0 and _header_text(head[offset + 1:end]) is not None


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
        if text is None and end >= 0 and _still_header(head, end + 1):
            line, number = head[offset:end].decode("ascii", errors="backslashreplace"), head.count(b"\n", 0, offset) + 1
            raise EventDataError(path, f"corrupt header: line {number} is not ASCII text: {line[:80]}")
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
                height, width = int(height), int(width)
            except ValueError:
                problem = f"corrupt header: sensor size {width}x{height} is not two whole numbers"
                raise EventDataError(path, problem) from None
            return sensor_size((height, width), path, "the header's sensor size")
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
            raise EventDataError(path, f"unknown encoding {name.strip()!r} in the header "
                                       "(EVT2, EVT21 and EVT3 are read)")
        return encoding + ("_legacy" if encoding == "evt21" and "endianness=legacy" in fields else "")
    if "evt" in header:
        encoding = {"2.0": "evt2", "2.1": "evt21", "3.0": "evt3"}.get(header["evt"])
        if encoding is None:
            raise EventDataError(path, f"unknown encoding 'evt {header['evt']}' in the header "
                                       "(2.0, 2.1 and 3.0 are read)")
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
    that only the positions asked for are visited, where a cumsum would add up every word."""
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
        # thousands of vector words after one VECT_BASE_X (a corrupt file) would take x past int16:
        # held where it stays out of any sensor, and whole with a word's 12 bits added
        x = np.where(base_x < 0, -1, np.minimum(base_x + before - base_before, _VECTOR_X_LIMIT))
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
        x, y = (xyp & 0x3FFF).astype(np.int16), ((xyp >> 14) & 0x3FFF).astype(np.int16)
        return t, x, y, polarity_column(xyp >> 28, self.path)


def _decoded_pieces(f, decoder, path, word_name):
    """Event pieces from the rest of an open file, decoded a block at a time."""
    while block := f.read(_RAW_BLOCK):
        t, x, y, p = decoder.feed(block)
        if len(t):
            yield ("events", t / 1e6, x, y, p)
    if decoder.rest:
        raise EventDataError(path, f"truncated: the file ends inside its last {word_name} "
                                   f"({len(decoder.rest)} of its bytes)")


@event_format("prophesee_raw", is_file_with(".raw", any_case=True))
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


@event_format("prophesee_dat", is_file_with(".dat", any_case=True))
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
            raise EventDataError(path, f"unknown encoding: DAT event type 0x{kind:02X} of {size} bytes "
                                       "(CD events, type 0x0C of 8 bytes, are read)")
        if header.get("version", "2") != "2":
            raise EventDataError(path, f"unknown encoding: DAT version {header['version']} (version 2 is read)")
        sensor = _prophesee_sensor(header, path)
        if sensor:
            yield ("sensor", sensor)
        yield ("info", {"encoding": "DAT CD", "time_unit": "us"})
        yield from _decoded_pieces(f, DatDecoder(path), path, "8-byte DAT event")


