"""
AEDAT4 (iniVation DV) files, read with the `aedat` package: events (t in us) and frames.
"""

import struct

import numpy as np

from . import event_format
from .common import BATCH, EventDataError, event_piece, is_file_with


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


def _aedat_events(packets, path):
    """One event piece from the events of several packets."""
    records = np.concatenate(packets)
    return event_piece(records["t"] / 1e6, records["x"], records["y"], records["on"], path)


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


@event_format("aedat4", is_file_with(".aedat4"))
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
                    yield _aedat_events(packets, path)
                    packets, pending = [], 0
            elif "frame" in packet:
                yield ("frame", "images", *_aedat_frame(packet["frame"]))
        if packets:
            yield _aedat_events(packets, path)
    except (OSError, RuntimeError, ValueError) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise EventDataError(path, f"unreadable or truncated AEDAT4 file ({problem})") from None
    except BaseException as error:
        # a panic of the aedat package's Rust code (pyo3's PanicException, a BaseException)
        if type(error).__name__ != "PanicException":
            raise
        problem = " ".join(str(error).split()) or "the decoder panicked"
        raise EventDataError(path, f"unreadable or corrupt AEDAT4 file ({problem})") from None
