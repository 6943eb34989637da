"""
Write a synthetic recording in every format event_data reads, then time reading it back (and
converting it, for the converters' inputs). One JSON line per format:

    python scripts/benchmark_io.py                       # 3 M events, every format
    python scripts/benchmark_io.py --events 50000000 --formats bag ecd_folder npy h5 --memory

--memory reads (and converts) each file again in a fresh process and reports that process's
peak resident memory, beside the peak of a process that only imports event_data and reads a
tiny file (torch alone is a few hundred MB), so the difference is what the reader needs.

The writers are also the test suite's source of known files in each format.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import cv2
import h5py
import numpy as np

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
import repo  # noqa: F401  (first: makes train.py's modules importable)
from convert_common import convert_sequence  # noqa: E402
from event_data import collect, detect_format, stream_events  # noqa: E402

DVS_EVENT_MSG = "uint16 x\nuint16 y\ntime ts\nbool polarity\n"
DVS_EVENT_ARRAY_MSG = "std_msgs/Header header\nuint32 height\nuint32 width\ndvs_msgs/Event[] events\n"


def synthetic_recording(n_events, sensor=(180, 240), rate=300_000, frame_rate=20.0, t0_us=0, seed=0):
    """Events with integer-microsecond times (some equal, as real ones are) at about `rate` per
    second, from time t0_us, and gray APS frames over the same span. t = t_us / 1e6."""
    rng = np.random.default_rng(seed)
    height, width = sensor
    gap_us = rng.integers(0, max(2, round(2e6 / rate) + 1), n_events, dtype=np.int64)  # mean about 1e6 / rate
    t_us = t0_us + np.cumsum(gap_us)
    n_frames = max(2, int((t_us[-1] - t_us[0]) / 1e6 * frame_rate))
    frame_t_us = np.linspace(t_us[0], t_us[-1], n_frames).astype(np.int64)
    return {"sensor": sensor, "t_us": t_us, "t": t_us / 1e6,
            "x": rng.integers(0, width, n_events).astype(np.int16),
            "y": rng.integers(0, height, n_events).astype(np.int16),
            "p": rng.choice(np.array([-1, 1], dtype=np.int8), n_events),
            "frame_t_us": frame_t_us, "frame_t": frame_t_us / 1e6,
            "frames": rng.integers(0, 256, (n_frames, height, width), dtype=np.uint8)}


def bag_time(t_us):
    """The seconds a reader gets back from a ROS time of `t_us` microseconds: sec + nsec / 1e9."""
    t_us = np.asarray(t_us, dtype=np.int64)
    return t_us // 1_000_000 + (t_us % 1_000_000 * 1000) / 1e9


# --- writers ------------------------------------------------------------------------

def write_npy(path, recording):
    np.save(path, np.stack([recording["t"], recording["x"], recording["y"], recording["p"]], axis=1))


def _event_lines(recording, polarity_01=True):
    """`t x y p` text lines, t with 9 decimals as ECD writes it, a million at a time."""
    p = (recording["p"] > 0).astype(np.int8) if polarity_01 else recording["p"]
    for start in range(0, len(recording["t"]), 1_000_000):
        part = slice(start, start + 1_000_000)
        yield "".join(f"{t:.9f} {x} {y} {q}\n" for t, x, y, q in
                      zip(recording["t"][part].tolist(), recording["x"][part].tolist(),
                          recording["y"][part].tolist(), p[part].tolist())).encode()


def _image_list(recording, folder="images"):
    return "".join(f"{t:.9f} {folder}/frame_{i:08d}.png\n" for i, t in enumerate(recording["frame_t"]))


def _png(image):
    return cv2.imencode(".png", image)[1].tobytes()


def write_ecd_folder(folder, recording):
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    with open(os.path.join(folder, "events.txt"), "wb") as f:
        f.writelines(_event_lines(recording))
    with open(os.path.join(folder, "images.txt"), "w") as f:
        f.write(_image_list(recording))
    for i, image in enumerate(recording["frames"]):
        cv2.imwrite(os.path.join(folder, "images", f"frame_{i:08d}.png"), image)


def write_ecd_zip(path, recording, top_folder=""):
    prefix = top_folder + "/" if top_folder else ""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(prefix + "events.txt", "w", force_zip64=True) as f:
            f.writelines(_event_lines(recording))
        archive.writestr(prefix + "images.txt", _image_list(recording))
        for i, image in enumerate(recording["frames"]):
            archive.writestr(f"{prefix}images/frame_{i:08d}.png", _png(image))


def write_e2vid_txt(path, recording):
    height, width = recording["sensor"]
    with open(path, "wb") as f:
        f.write(f"{width} {height}\n".encode())
        f.writelines(_event_lines(recording))


def write_e2vid_zip(path, recording):
    height, width = recording["sensor"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("events.txt", "w", force_zip64=True) as f:
            f.write(f"{width} {height}\n".encode())
            f.writelines(_event_lines(recording))


def write_h5_event_cnn(path, recording):
    """The event_cnn_minimal / HQF layout."""
    with h5py.File(path, "w") as f:
        f.create_dataset("events/ts", data=recording["t"])
        f.create_dataset("events/xs", data=recording["x"])
        f.create_dataset("events/ys", data=recording["y"])
        f.create_dataset("events/ps", data=recording["p"] > 0)
        for i, (t, image) in enumerate(zip(recording["frame_t"], recording["frames"])):
            dataset = f.create_dataset(f"images/image{i:09d}", data=image)
            dataset.attrs["timestamp"] = t
            dataset.attrs["event_idx"] = int(np.searchsorted(recording["t"], t))
        f.attrs["sensor_resolution"] = recording["sensor"]
        f.attrs["num_events"] = len(recording["t"])
        f.attrs["num_imgs"] = len(recording["frames"])


def write_h5_flat(path, recording, group="", t_offset_us=0):
    """The flat layout: t in integer microseconds (less `t_offset_us`, stored as t_offset), p 0/1."""
    with h5py.File(path, "w") as f:
        prefix = group + "/" if group else ""
        f.create_dataset(prefix + "t", data=recording["t_us"] - t_offset_us)
        f.create_dataset(prefix + "x", data=recording["x"].astype(np.uint16))
        f.create_dataset(prefix + "y", data=recording["y"].astype(np.uint16))
        f.create_dataset(prefix + "p", data=(recording["p"] > 0).astype(np.uint8))
        if t_offset_us:
            f.create_dataset("t_offset", data=np.int64(t_offset_us))


def write_evreal_folder(folder, recording):
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "events_ts.npy"), recording["t"])
    np.save(os.path.join(folder, "events_xy.npy"), np.stack([recording["x"], recording["y"]], axis=1))
    np.save(os.path.join(folder, "events_p.npy"), recording["p"] > 0)
    np.save(os.path.join(folder, "images.npy"), recording["frames"][..., None])
    np.save(os.path.join(folder, "images_ts.npy"), recording["frame_t"])
    np.save(os.path.join(folder, "image_event_indices.npy"), np.searchsorted(recording["t"], recording["frame_t"]))
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump({"sensor_resolution": list(recording["sensor"])}, f)


def dvs_typestore():
    """A ROS1 type store that knows dvs_msgs/Event and dvs_msgs/EventArray."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
    typestore = get_typestore(Stores.ROS1_NOETIC)
    typestore.register(get_types_from_msg(DVS_EVENT_MSG, "dvs_msgs/msg/Event"))
    typestore.register(get_types_from_msg(DVS_EVENT_ARRAY_MSG, "dvs_msgs/msg/EventArray"))
    return typestore


def _ros_header_bytes(seq, t_us):
    return struct.pack("<4I", seq, t_us // 1_000_000, t_us % 1_000_000 * 1000, 0)  # empty frame_id


def _event_array_bytes(seq, recording, part):
    """A raw EventArray, serialised with numpy (much faster than through message objects)."""
    height, width = recording["sensor"]
    t_us = recording["t_us"][part]
    records = np.empty(len(t_us), np.dtype([("x", "<u2"), ("y", "<u2"), ("sec", "<u4"), ("nsec", "<u4"), ("polarity", "u1")]))
    records["x"], records["y"] = recording["x"][part], recording["y"][part]
    records["sec"], records["nsec"] = t_us // 1_000_000, t_us % 1_000_000 * 1000
    records["polarity"] = recording["p"][part] > 0
    return _ros_header_bytes(seq, int(t_us[0])) + struct.pack("<3I", height, width, len(t_us)) + records.tobytes()


def _event_objects(typestore, recording, part):
    """dvs_msgs/Event message objects of the recording's events `part`."""
    types = typestore.types
    Time = types["builtin_interfaces/msg/Time"]
    return [types["dvs_msgs/msg/Event"](x=int(x), y=int(y), ts=Time(sec=int(t // 1_000_000), nanosec=int(t % 1_000_000 * 1000)),
                                        polarity=bool(p > 0))
            for x, y, t, p in zip(recording["x"][part], recording["y"][part], recording["t_us"][part], recording["p"][part])]


def _event_array_message(typestore, seq, recording, part):
    """The same EventArray built as message objects and serialised by rosbags."""
    types = typestore.types
    Time = types["builtin_interfaces/msg/Time"]
    height, width = recording["sensor"]
    events = _event_objects(typestore, recording, part)
    stamp_us = int(recording["t_us"][part][0])
    header = types["std_msgs/msg/Header"](seq=seq, stamp=Time(sec=stamp_us // 1_000_000, nanosec=stamp_us % 1_000_000 * 1000), frame_id="")
    message = types["dvs_msgs/msg/EventArray"](header=header, height=height, width=width, events=events)
    return typestore.serialize_ros1(message, "dvs_msgs/msg/EventArray")


def _image_message(typestore, seq, t_us, image, encoding):
    """sensor_msgs/Image; `image` is gray for mono8 and bayer encodings, RGB for rgb8 / bgr8."""
    types = typestore.types
    Time = types["builtin_interfaces/msg/Time"]
    data = image[..., ::-1] if encoding == "bgr8" else image
    header = types["std_msgs/msg/Header"](seq=seq, stamp=Time(sec=t_us // 1_000_000, nanosec=t_us % 1_000_000 * 1000), frame_id="")
    message = types["sensor_msgs/msg/Image"](header=header, height=image.shape[0], width=image.shape[1], encoding=encoding,
                                             is_bigendian=0, step=image.shape[1] * (image.shape[2] if image.ndim == 3 else 1),
                                             data=np.ascontiguousarray(data).reshape(-1))
    return typestore.serialize_ros1(message, "sensor_msgs/msg/Image")


def write_bag(path, recording, compression=None, events_topic="/dvs/events", image_topics=None,
              packet_us=1000, serializer="numpy"):
    """A ROS1 bag: EventArrays of `packet_us` of events each, recorded 1 ms after their first
    event; images on `image_topics` {topic: (encoding, frames)} (default: the gray frames, mono8,
    on /dvs/image_raw), stamped at the frame time and recorded 5 ms later, so that a reader that
    took record times would be caught. compression: None, "bz2" or "lz4". serializer "rosbags"
    builds message objects (slow; an independent check of the numpy serialisation)."""
    from rosbags.rosbag1 import Writer
    typestore = dvs_typestore()
    image_topics = image_topics if image_topics is not None else {"/dvs/image_raw": ("mono8", recording["frames"])}
    if os.path.exists(path):
        os.remove(path)
    writer = Writer(path)
    if compression:
        writer.set_compression({"bz2": Writer.CompressionFormat.BZ2, "lz4": Writer.CompressionFormat.LZ4}[compression])
    messages = []  # (record time in ns, connection, raw bytes), written in record-time order
    with writer:
        events = writer.add_connection(events_topic, "dvs_msgs/msg/EventArray", typestore=typestore)
        t_us = recording["t_us"]
        packet_starts = np.flatnonzero(np.diff(t_us // packet_us, prepend=-1))
        bounds = list(packet_starts) + [len(t_us)]
        for seq, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = slice(start, end)
            raw = (_event_array_bytes(seq, recording, part) if serializer == "numpy"
                   else _event_array_message(typestore, seq, recording, part))
            messages.append(((int(t_us[start]) + 1000) * 1000, events, raw))
        # a test may give the frames header stamps that are off, recorded at the right times
        frame_record_us = recording.get("frame_record_us", recording["frame_t_us"])
        for topic, (encoding, frames) in image_topics.items():
            connection = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=typestore)
            for seq, (frame_us, record_us, image) in enumerate(zip(recording["frame_t_us"], frame_record_us, frames)):
                messages.append(((int(record_us) + 5000) * 1000, connection, _image_message(typestore, seq, int(frame_us), image, encoding)))
        messages.sort(key=lambda message: message[0])
        for record_ns, connection, raw in messages:
            writer.write(connection, record_ns, raw)


# --- ROS 2 bags --------------------------------------------------------------------------

def _cdr_event_array_bytes(recording, part, stamp_us):
    """A dvs_msgs/EventArray (ROS 2) in little-endian CDR, serialised with numpy."""
    from event_formats.rosbag2 import CDR_EVENT, CDR_FIRST_EVENT
    height, width = recording["sensor"]
    t_us = recording["t_us"][part]
    count = len(t_us)
    # encapsulation, stamp, frame_id "" (length 1: its NUL), padding to 4, height, width, count
    head = bytes([0, 1, 0, 0]) + struct.pack("<iII", stamp_us // 1_000_000, stamp_us % 1_000_000 * 1000, 1) + bytes(4)
    head += struct.pack("<3I", height, width, count)
    events = bytearray(16 * count - 2 if count else 0)  # with the last event's padding, dropped below
    parts = [(np.ndarray((min(count, 1),), CDR_FIRST_EVENT, events, 0), slice(0, 1))]
    if count > 1:
        parts.append((np.ndarray((count - 1,), CDR_EVENT, events, 14), slice(1, None)))
    for records, rows in parts:
        records["x"], records["y"] = recording["x"][part][rows], recording["y"][part][rows]
        records["sec"], records["nsec"] = t_us[rows] // 1_000_000, t_us[rows] % 1_000_000 * 1000
        records["polarity"] = recording["p"][part][rows] > 0
    return head + bytes(events[:-1])


def _ros2_stamp(typestore, t_us):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    return typestore.types["std_msgs/msg/Header"](stamp=Time(sec=int(t_us) // 1_000_000, nanosec=int(t_us) % 1_000_000 * 1000), frame_id="")


def _cdr_event_array_message(typestore, recording, part, stamp_us):
    """The same EventArray built as message objects and serialised by rosbags."""
    types = typestore.types
    height, width = recording["sensor"]
    events = _event_objects(typestore, recording, part)
    message = types["dvs_msgs/msg/EventArray"](header=_ros2_stamp(typestore, stamp_us), height=height, width=width, events=events)
    return bytes(typestore.serialize_cdr(message, "dvs_msgs/msg/EventArray"))


def _event_packet(typestore, recording, seq, stamp_us, encoding, data):
    height, width = recording["sensor"]
    message = typestore.types["event_camera_msgs/msg/EventPacket"](
        header=_ros2_stamp(typestore, stamp_us), height=height, width=width, seq=seq, time_base=0,
        encoding=encoding, is_bigendian=False, events=np.frombuffer(data, np.uint8))
    return bytes(typestore.serialize_cdr(message, "event_camera_msgs/msg/EventPacket"))


def mono_words(recording, part, stamp_us):
    """event_camera_msgs "mono" words: polarity bit 63, y bits 48-62, x 32-47, ns after the stamp."""
    dt_ns = (recording["t_us"][part] - stamp_us).astype(np.uint64) * np.uint64(1000)
    return ((recording["p"][part] > 0).astype(np.uint64) << np.uint64(63) | recording["y"][part].astype(np.uint64) << np.uint64(48)
            | recording["x"][part].astype(np.uint64) << np.uint64(32) | dt_ns).astype("<u8")


def write_ros2_bag(path, recording, storage="sqlite3", events="dvs", events_topic="/dvs/events",
                   image_topic="/dvs/image_raw", packet_us=1000, serializer="numpy", evt3_packet_words=4001):
    """A ROS 2 bag folder (SQLite or MCAP storage). `events`: "dvs" (dvs_msgs/EventArray), "evt3"
    (event_camera_msgs/EventPacket holding one EVT 3.0 stream cut into packets of
    `evt3_packet_words` words, wherever that falls, each stamped with the time of its first
    event) or "mono"; images (mono8) on `image_topic` (or on each of a list of topics) unless
    None. Messages of `packet_us` of
    events, recorded 1 ms after their stamp; frames stamped at the frame time, recorded 5 ms
    later."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from event_formats.rosbag2 import ros2_typestore
    typestore = ros2_typestore()
    shutil.rmtree(path, ignore_errors=True)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    messages = []  # (record time in ns, connection, raw bytes)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        msgtype = "dvs_msgs/msg/EventArray" if events == "dvs" else "event_camera_msgs/msg/EventPacket"
        connection = writer.add_connection(events_topic, msgtype, typestore=typestore)
        t_us = recording["t_us"]
        if events == "evt3":
            words = evt3_words(recording)
            # the first event of each packet: count the events of the words before it
            kind = words >> 12
            pixels = np.unpackbits((words & 0xFFF).astype("<u2").view(np.uint8)).reshape(-1, 16).sum(axis=1)
            per_word = np.where(kind == 0x2, 1, np.where(kind == 0x4, pixels, 0))
            before = np.concatenate([[0], np.cumsum(per_word)])
            for seq, start in enumerate(range(0, len(words), evt3_packet_words)):
                first_event = min(int(before[start]), len(t_us) - 1)
                stamp_us = int(t_us[first_event])
                raw = _event_packet(typestore, recording, seq, stamp_us, "evt3", words[start:start + evt3_packet_words].tobytes())
                messages.append(((stamp_us + 1000) * 1000, connection, raw))
        else:
            starts = np.flatnonzero(np.diff(t_us // packet_us, prepend=-1))
            for seq, (start, end) in enumerate(zip(starts, list(starts[1:]) + [len(t_us)])):
                part, stamp_us = slice(start, end), int(t_us[start])
                if events == "mono":
                    raw = _event_packet(typestore, recording, seq, stamp_us, "mono", mono_words(recording, part, stamp_us).tobytes())
                elif serializer == "numpy":
                    raw = _cdr_event_array_bytes(recording, part, stamp_us)
                else:
                    raw = _cdr_event_array_message(typestore, recording, part, stamp_us)
                messages.append(((stamp_us + 1000) * 1000, connection, raw))
        for topic in [image_topic] if isinstance(image_topic, str) else image_topic or []:
            images = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=typestore)
            for frame_us, image in zip(recording["frame_t_us"], recording["frames"]):
                message = typestore.types["sensor_msgs/msg/Image"](
                    header=_ros2_stamp(typestore, frame_us), height=image.shape[0], width=image.shape[1], encoding="mono8",
                    is_bigendian=0, step=image.shape[1], data=np.ascontiguousarray(image).reshape(-1))
                messages.append(((int(frame_us) + 5000) * 1000, images, bytes(typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))))
        messages.sort(key=lambda message: message[0])
        for record_ns, target, raw in messages:
            writer.write(target, record_ns, raw)


# --- Prophesee RAW and DAT ---------------------------------------------------------------
#
# Encoders that write what a Metavision camera would: a time-high word when the high bits of
# the time change, EVT 3.0's time-low and row words only when those change, and events that
# share a time, row and polarity packed into vector words (EVT 3.0, EVT 2.1) where they fit.
# The bits kept of each time-high word are those the format has, so that a long recording
# wraps as a camera's does.

def _interleave(slots):
    """One array from per-event optional words, in event order: `slots` is a list of (present,
    words), each an array over the events (present may be True for every event); an event's
    words come in the order of the slots."""
    n_events = len(slots[-1][1])
    present = [np.broadcast_to(np.asarray(mask, dtype=bool), (n_events,)) for mask, _ in slots]
    counts = np.sum(present, axis=0)
    first = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), dtype=slots[-1][1].dtype)
    for k, ((_, words), mask) in enumerate(zip(slots, present)):
        out[(first + np.sum(present[:k], axis=0, dtype=np.int64))[mask]] = np.asarray(words)[mask]
    return out


def _groups(recording, width, vectors):
    """Consecutive events that can share one vector word: the same time, row and polarity, x
    rising inside the same `width`-pixel span. Returns (index of each group's first event,
    group of each event)."""
    t, x, y, p = recording["t_us"], recording["x"].astype(np.int64), recording["y"], recording["p"]
    new = np.ones(len(t), dtype=bool)
    if vectors:
        new[1:] = ((t[1:] != t[:-1]) | (y[1:] != y[:-1]) | (p[1:] != p[:-1]) | (x[1:] // width != x[:-1] // width)
                   | (x[1:] <= x[:-1]))
    return np.flatnonzero(new), np.cumsum(new) - 1


def evt2_words(recording):
    t, x, y = recording["t_us"], recording["x"].astype(np.uint32), recording["y"].astype(np.uint32)
    high = t >> 6
    new_high = np.diff(high, prepend=-1) != 0
    cd = (((recording["p"] > 0).astype(np.uint32) << 28) | ((t & 0x3F).astype(np.uint32) << 22) | (x << 11) | y)
    time_high = ((0x8 << 28) | (high & 0x0FFFFFFF)).astype(np.uint32)
    return _interleave([(new_high, time_high), (True, cd)]).astype("<u4")


def evt21_words(recording, legacy=True, vectors=True):
    """64-bit words as two 32-bit halves; `legacy` (IMX636) puts the typed half first."""
    first, group = _groups(recording, 32, vectors)
    t, x = recording["t_us"][first], recording["x"].astype(np.int64)
    mask = np.zeros(len(first), np.uint64)
    np.bitwise_or.at(mask, group, np.left_shift(1, x & 31).astype(np.uint64))
    high = t >> 6
    new_high = np.diff(high, prepend=-1) != 0
    typed = (((recording["p"][first] > 0).astype(np.int64) << 28) | ((t & 0x3F) << 22) | ((x[first] & ~31) << 11)
             | recording["y"][first]).astype(np.uint32)
    time_high = ((0x8 << 28) | (high & 0x0FFFFFFF)).astype(np.uint32)
    pairs = [(time_high, np.zeros_like(time_high)), (typed, mask.astype(np.uint32))]
    if not legacy:
        pairs = [(b, a) for a, b in pairs]
    words = [np.stack(pair, axis=1).view(np.uint64)[:, 0] for pair in pairs]
    return _interleave([(new_high, words[0]), (True, words[1])]).view("<u4")


def evt3_words(recording, vectors=True):
    first, group = _groups(recording, 12, vectors)
    t, y, x = recording["t_us"][first], recording["y"][first], recording["x"].astype(np.int64)
    size = np.bincount(group)
    on = (recording["p"][first] > 0).astype(np.int64)
    mask = np.zeros(len(first), np.int64)
    np.bitwise_or.at(mask, group, np.left_shift(1, x % 12))
    new_time = np.diff(t, prepend=-1) != 0
    new_high = np.diff(t >> 12, prepend=-1) != 0
    new_row = np.diff(y, prepend=-1) != 0
    single = size == 1
    return _interleave([
        (new_high, (0x8 << 12) | ((t >> 12) & 0xFFF)),  # EVT_TIME_HIGH
        (new_time, (0x6 << 12) | (t & 0xFFF)),  # EVT_TIME_LOW
        (new_row, y.astype(np.int64)),  # EVT_ADDR_Y
        (single, (0x2 << 12) | (on << 11) | x[first]),  # EVT_ADDR_X
        (~single, (0x3 << 12) | (on << 11) | (x[first] // 12 * 12)),  # VECT_BASE_X
        (~single, (0x4 << 12) | mask),  # VECT_12
    ]).astype("<u2")


def prophesee_header(recording, encoding):
    height, width = recording["sensor"]
    format_line = {"evt2": "EVT2", "evt21": "EVT21;endianness=legacy", "evt3": "EVT3"}[encoding]
    return (f"% date 2024-01-01 00:00:00\n% evt {dict(evt2='2.0', evt21='2.1', evt3='3.0')[encoding]}\n"
            f"% format {format_line};height={height};width={width}\n% geometry {width}x{height}\n"
            f"% integrator_name Prophesee\n% end\n").encode()


def write_prophesee_raw(path, recording, encoding="evt3", header=None, **options):
    """A RAW file; `header` (bytes) replaces the usual one."""
    words = {"evt2": evt2_words, "evt21": evt21_words, "evt3": evt3_words}[encoding](recording, **options)
    with open(path, "wb") as f:
        f.write(prophesee_header(recording, encoding) if header is None else header)
        f.write(words.tobytes())


def write_prophesee_dat(path, recording):
    height, width = recording["sensor"]
    events = np.empty(len(recording["t_us"]), np.dtype([("t", "<u4"), ("xyp", "<u4")]))
    events["t"] = recording["t_us"] & 0xFFFFFFFF
    events["xyp"] = (recording["x"].astype(np.uint32) | (recording["y"].astype(np.uint32) << 14)
                     | ((recording["p"] > 0).astype(np.uint32) << 28))
    with open(path, "wb") as f:
        f.write(f"% Date 2024-01-01 00:00:00\n% Height {height}\n% Version 2\n% Width {width}\n".encode())
        f.write(bytes([0x0C, 8]))  # CD events, 8 bytes each
        f.write(events.tobytes())


# --- DSEC HDF5 ----------------------------------------------------------------------------

def write_h5_dsec(path, recording, t_offset_us=None, compression="blosc"):
    """DSEC's events.h5: events/{p, t, x, y} with t in us after t_offset, ms_to_idx (the first
    event at or after each millisecond), compressed with Blosc (zstd) as DSEC's are."""
    import hdf5plugin
    t_offset_us = recording["t_us"][0] if t_offset_us is None else t_offset_us
    t = recording["t_us"] - t_offset_us
    filters = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE) if compression == "blosc" else {}
    with h5py.File(path, "w") as f:
        for name, values in (("p", (recording["p"] > 0).astype(np.uint8)), ("t", t.astype(np.uint32 if t[-1] < 2 ** 32 else np.int64)),
                             ("x", recording["x"].astype(np.uint16)), ("y", recording["y"].astype(np.uint16))):
            f.create_dataset(f"events/{name}", data=values, chunks=(min(len(values), 1 << 16),), **filters)
        f.create_dataset("ms_to_idx", data=np.searchsorted(t, np.arange(0, t[-1] // 1000 + 1) * 1000).astype(np.uint64), **filters)
        f.create_dataset("t_offset", data=np.int64(t_offset_us))


# --- benchmark ------------------------------------------------------------------------

FORMATS = {  # name -> (file or folder name, writer)
    "npy": ("events.npy", write_npy),
    "ecd_folder": ("ecd", write_ecd_folder),
    "ecd_zip": ("ecd.zip", write_ecd_zip),
    "e2vid_txt": ("e2vid.txt", write_e2vid_txt),
    "h5": ("events.h5", write_h5_event_cnn),
    "h5_flat": ("flat.h5", write_h5_flat),
    "evreal_folder": ("evreal", write_evreal_folder),
    "bag": ("events.bag", write_bag),
    "bag_lz4": ("events_lz4.bag", lambda path, recording: write_bag(path, recording, "lz4")),
    "bag_bz2": ("events_bz2.bag", lambda path, recording: write_bag(path, recording, "bz2")),
    "evt2": ("evt2.raw", lambda path, recording: write_prophesee_raw(path, recording, "evt2")),
    "evt21": ("evt21.raw", lambda path, recording: write_prophesee_raw(path, recording, "evt21")),
    "evt3": ("evt3.raw", lambda path, recording: write_prophesee_raw(path, recording, "evt3")),
    "dat": ("events.dat", write_prophesee_dat),
    "h5_dsec": ("dsec.h5", write_h5_dsec),
    "ros2_db3": ("ros2_db3", write_ros2_bag),
    "ros2_mcap": ("ros2_mcap", lambda path, recording: write_ros2_bag(path, recording, "mcap")),
    "ros2_evt3": ("ros2_evt3", lambda path, recording: write_ros2_bag(path, recording, "mcap", events="evt3", image_topic=None)),
    "ros2_mono": ("ros2_mono", lambda path, recording: write_ros2_bag(path, recording, events="mono", image_topic=None)),
}
CONVERTED = ("bag", "ecd_folder", "ecd_zip")  # what the dataset converters take


def time_read(path):
    start = time.perf_counter()
    events = collect(stream_events(path), path, detect_format(path))
    return len(events), time.perf_counter() - start


def peak_memory_mb(path, convert_to=None):
    """Peak resident memory (MB) of a fresh process that reads `path` (or converts it to `convert_to`).
    Taken from VmHWM, not getrusage: Linux carries ru_maxrss over exec, so a child started from
    this (large) process would report this process's size."""
    work = ("convert_common.convert_sequence(sys.argv[2], sys.argv[3], 'IJRR')" if convert_to
            else "benchmark_io.time_read(sys.argv[2])")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import benchmark_io, convert_common; "
            f"{work}; print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
    result = subprocess.run([sys.executable, "-c", code, SCRIPTS, path, str(convert_to)], capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1]) / 1024  # kB -> MB


def main():
    parser = argparse.ArgumentParser(description="Events/s reading (and converting) each supported format.")
    parser.add_argument("--events", type=int, default=3_000_000, help="events in the synthetic recording")
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--memory", action="store_true", help="also measure each reader's peak memory in a fresh process")
    parser.add_argument("--no_convert", action="store_true", help="skip timing the converters")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder, removed)")
    args = parser.parse_args()

    recording = synthetic_recording(args.events)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        if args.memory:
            tiny = os.path.join(folder, "tiny.npy")
            write_npy(tiny, synthetic_recording(1000))
            print(json.dumps({"format": "baseline (import event_data, read 1000 events)", "peak_rss_mb": round(peak_memory_mb(tiny))}), flush=True)
        for name in args.formats:
            file_name, write = FORMATS[name]
            path = os.path.join(folder, file_name)
            start = time.perf_counter()
            write(path, recording)
            result = {"format": name, "events": args.events, "write_s": round(time.perf_counter() - start, 2)}
            count, seconds = time_read(path)
            assert count == args.events, f"{name}: read {count} events of {args.events}"
            result.update(read_s=round(seconds, 3), read_events_per_s=round(count / seconds))
            if name in CONVERTED and not args.no_convert:
                start = time.perf_counter()
                convert_sequence(path, os.path.join(folder, "converted", name), "IJRR")
                seconds = time.perf_counter() - start
                result.update(convert_s=round(seconds, 3), convert_events_per_s=round(count / seconds))
            if args.memory:
                result["read_peak_rss_mb"] = round(peak_memory_mb(path))
                if name in CONVERTED and not args.no_convert:
                    result["convert_peak_rss_mb"] = round(peak_memory_mb(path, os.path.join(folder, "converted", "memory")))
            print(json.dumps(result), flush=True)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            shutil.rmtree(os.path.join(folder, "converted"), ignore_errors=True)


if __name__ == "__main__":
    main()
