"""
ROS 2 bags, read with rosbags' AnyReader: a bag folder (with its metadata.yaml), or the .db3
(SQLite) or .mcap file inside one. Events come as dvs_msgs/EventArray ported to ROS 2, or as
event_camera_msgs/EventPacket (the metavision and libcaer drivers'), whose `events` bytes are
raw EVT 3.0 words (encoding "evt3", decoded by prophesee's `Evt3Decoder`, its state carried from
message to message) or "mono" 64-bit words: polarity in bit 63, y in bits 48-62, x in 32-47,
and in 0-31 the ns after the header stamp. Bags from before ROS 2 Iron hold no message
definitions; the ones here are then used. EventArrays are parsed from their CDR bytes with
numpy, as the ROS 1 ones are, rather than into a Python object per event.
"""

import os
import struct
import sys
from pathlib import PurePath

import numpy as np

from . import event_format
from .common import BATCH, EventDataError, event_piece, file_inside, read_regular_file
from .prophesee import _RAW_BLOCK, Evt3Decoder
from .rosbag1 import EVENT_ARRAY_TYPE, IMAGE_TYPE, image_pixels, message_sensor, topic_connections, topic_list

ROS2_MESSAGE_DEFINITIONS = {
    "dvs_msgs/msg/Event": "uint16 x\nuint16 y\nbuiltin_interfaces/Time ts\nbool polarity\n",
    "dvs_msgs/msg/EventArray": "std_msgs/Header header\nuint32 height\nuint32 width\ndvs_msgs/Event[] events\n",
    "event_camera_msgs/msg/EventPacket": ("std_msgs/Header header\nuint32 height\nuint32 width\nuint64 seq\n"
                                          "uint64 time_base\nstring encoding\nbool is_bigendian\nuint8[] events\n"),
}
EVENT_PACKET_TYPE = "event_camera_msgs/msg/EventPacket"
ROS2_EVENT_TYPES = (EVENT_ARRAY_TYPE, EVENT_PACKET_TYPE)
# A dvs_msgs/Event in CDR: x, y (uint16), sec, nanosec (4-aligned), polarity (bool). After the
# array's uint32 count the first event starts 4-aligned (13 bytes); each later one starts 2
# bytes past a 4-aligned place, so 2 bytes of padding come before its sec, and one after its
# polarity but the last one's: events lie 16 bytes apart.
_CDR_EVENT_FIELDS = {"names": ["x", "y", "sec", "nsec", "polarity"], "formats": ["<u2", "<u2", "<i4", "<u4", "u1"]}
CDR_FIRST_EVENT = np.dtype(dict(_CDR_EVENT_FIELDS, offsets=[0, 2, 4, 8, 12], itemsize=13))
CDR_EVENT = np.dtype(dict(_CDR_EVENT_FIELDS, offsets=[0, 2, 6, 10, 14], itemsize=16))


def _is_ros2_bag(path):
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "metadata.yaml"))
    return path.endswith((".db3", ".mcap")) and os.path.isfile(path)


def _check_storage_files(path):
    """Check, before rosbags opens anything, that the storage files a bag folder's metadata.yaml
    names are regular files inside the folder (see common.file_inside): SQLite retries an
    interrupted open, so a FIFO named there would block forever, SIGTERM or not. rosbags
    takes each name's last part, in the folder; so is it checked here."""
    if not os.path.isdir(path):
        return
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    metadata_path = os.path.join(path, "metadata.yaml")
    data = read_regular_file(metadata_path, 1 << 24)
    if data is None:
        return
    try:
        names = YAML(typ="safe").load(data)["rosbag2_bagfile_information"]["relative_file_paths"]
    except (YAMLError, ValueError, TypeError, KeyError, IndexError, RecursionError):
        return  # rosbags reads it again, and names the problem before it opens any file
    for name in names if isinstance(names, list) else ():
        if isinstance(name, str):
            storage_path = os.path.join(path, PurePath(name).name)
            file_inside(storage_path, path, storage_path)


def ros2_typestore():
    """A ROS 2 type store that also knows the event message types."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    for name, definition in ROS2_MESSAGE_DEFINITIONS.items():
        typestore.register(get_types_from_msg(definition, name))
    return typestore


class _CdrEventArrays:
    """dvs_msgs/EventArray messages in CDR, kept as bytes and parsed a batch at a time with numpy
    (a Python object per event would cost far more): each message's first event apart from the
    later ones."""

    def __init__(self, path, topic):
        self.path, self.topic = path, topic
        self.firsts, self.others, self.counts = [], [], []

    def add(self, raw):
        """Keep one message's events; returns (height, width, number of events)."""
        malformed = EventDataError(self.path, f"EventArray message on {self.topic} is truncated or malformed")
        if len(raw) < 4:
            raise malformed
        if raw[1] != 1:
            raise EventDataError(self.path, f"EventArray on {self.topic} is big-endian CDR; only little-endian is read")
        body = memoryview(raw)[4:]  # offsets and alignment count from after the 4-byte encapsulation header
        try:
            frame_id_length = struct.unpack_from("<I", body, 8)[0]
            offset = (12 + frame_id_length + 3) & ~3
            height, width, count = struct.unpack_from("<3I", body, offset)
        except struct.error:
            raise malformed from None
        offset += 12
        if len(body) != offset + (0 if count == 0 else 16 * count - 3):
            raise malformed
        if count:
            self.firsts.append(body[offset:offset + 13])
        if count > 1:
            self.others += [body[offset + 14:], b"\0"]  # the last event's padding byte, which CDR leaves out
        self.counts.append(count)
        return height, width, count

    def take(self):
        """(t, x, y, polarity) of the messages kept since the last call, in their order."""
        firsts = np.frombuffer(b"".join(self.firsts), CDR_FIRST_EVENT)
        others = np.frombuffer(b"".join(self.others), CDR_EVENT)
        counts = np.array(self.counts, np.int64)
        is_first = np.zeros(int(counts.sum()), bool)
        is_first[(np.cumsum(counts) - counts)[counts > 0]] = True
        columns = {}
        for name in CDR_EVENT.names:
            columns[name] = np.empty(len(is_first), CDR_EVENT[name])
            columns[name][is_first], columns[name][~is_first] = firsts[name], others[name]
        self.firsts, self.others, self.counts = [], [], []
        return columns["sec"] + columns["nsec"] / 1e9, columns["x"], columns["y"], columns["polarity"]


def _seconds(ns):
    """Integer ns -> float seconds, as sec + nsec / 1e9 (the way the other bag readers do)."""
    return ns // 1_000_000_000 + (ns % 1_000_000_000) / 1e9


class _EventPackets:
    """event_camera_msgs/EventPacket messages of one topic -> events on the bag's clock (times in
    integer ns until handed on), a batch at a time. Once the clock offset is known, EVT 3.0
    bytes wait until a block's worth has come, as a file's do: decoding each small message
    alone would be much slower."""

    def __init__(self, path, topic):
        self.path, self.topic = path, topic
        self.evt3 = Evt3Decoder()
        self.offset_ns = None  # EVT 3.0's sensor clock -> the bag's clock
        self.evt3_bytes, self.evt3_size = [], 0  # not decoded yet
        self.batch = []  # decoded: (t_ns, x, y, p) per message or block

    def add(self, message):
        """Take one message; returns (height, width, number of events it decoded now)."""
        stamp_ns = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
        data = np.asarray(message.events, np.uint8)
        if message.encoding == "mono":
            if len(data) % 8:
                raise EventDataError(self.path, f"mono EventPacket on {self.topic} is not whole 8-byte events")
            words = data.view("<u8")
            self.batch.append((stamp_ns + (words & 0xFFFFFFFF).astype(np.int64), (words >> 32) & 0xFFFF,
                               (words >> 48) & 0x7FFF, words >> 63))
            return message.height, message.width, len(words)
        if message.encoding != "evt3":
            raise EventDataError(self.path, f"unknown encoding {message.encoding!r} of EventPacket on {self.topic} "
                                            "(evt3 and mono are read)")
        self.evt3_bytes.append(data.tobytes())
        self.evt3_size += len(data)
        if self.offset_ns is not None and self.evt3_size < _RAW_BLOCK:
            return message.height, message.width, 0
        return message.height, message.width, self._decode_evt3(stamp_ns)

    def _decode_evt3(self, stamp_ns=None):
        t_us, x, y, p = self.evt3.feed(b"".join(self.evt3_bytes))
        self.evt3_bytes, self.evt3_size = [], 0
        if len(t_us) and self.offset_ns is None:
            # the sensor's clock is moved once, so that the first event is at its message's
            # stamp: time differences stay the sensor's own, free of the stamps' jitter
            self.offset_ns = stamp_ns - int(t_us[0]) * 1000
        self.batch.append((t_us * 1000 + (self.offset_ns or 0), x, y, p))
        return len(t_us)

    def take(self):
        """(t, x, y, polarity) of the events since the last call, the EVT 3.0 bytes waiting included."""
        if self.evt3_bytes:
            self._decode_evt3()
        if self.batch:
            t_ns, x, y, p = (np.concatenate(column) for column in zip(*self.batch))
        else:
            t_ns, x, y, p = (np.zeros(0, np.int64),) * 4
        self.batch = []
        return _seconds(t_ns), x, y, p


def _ros2_connections(bag, topic, msgtypes, path, what):
    """The connections of `topic`, or when None, of the bag's one topic of the types `msgtypes`."""
    if topic is None:
        topics = sorted({c.topic for c in bag.connections if c.msgtype in msgtypes})
        if len(topics) != 1:
            raise EventDataError(path, f"{'no' if not topics else 'more than one'} {what} topic in the bag; "
                                       f"name one (topics: {topic_list(bag)})")
        topic = topics[0]
    return topic_connections(bag, topic, msgtypes, path)


def _ros2_topics(bag, path, events_topic, images_topic, color_images_topic):
    """{key: connections} of the events and of the frames to read (see stream_ros2_bag)."""
    topics = {"events": _ros2_connections(bag, events_topic, ROS2_EVENT_TYPES, path, "events")}
    image_topics = sorted({c.topic for c in bag.connections if c.msgtype == IMAGE_TYPE})
    if images_topic is None and len(image_topics) > 1:
        print(f"note: {path}: several image topics ({', '.join(image_topics)}); no frames are read "
              f"unless images_topic names one", file=sys.stderr)
    if images_topic or (images_topic is None and len(image_topics) == 1):
        topics["images"] = topic_connections(bag, images_topic or image_topics[0], (IMAGE_TYPE,), path)
    if color_images_topic:
        topics["color_images"] = topic_connections(bag, color_images_topic, (IMAGE_TYPE,), path)
    return topics


def _deserialize(bag, raw, connection, path):
    """A message object from its CDR bytes; what rosbags raises for corrupt bytes is named."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.serde import SerdeError
    try:
        return bag.deserialize(raw, connection.msgtype)
    except (AnyReaderError, SerdeError, struct.error, IndexError, ValueError, TypeError, KeyError, AssertionError):
        raise EventDataError(path, f"{connection.msgtype} message on {connection.topic} is truncated or "
                                   "malformed") from None


def _ros2_image(bag, raw, connection, path):
    """A sensor_msgs/Image message -> (header stamp in seconds, uint8 gray [H, W] or RGB [H, W, 3])."""
    image = _deserialize(bag, raw, connection, path)
    data = np.asarray(image.data, np.uint8)
    if len(data) < image.height * image.step:
        raise EventDataError(path, f"image message on {connection.topic} is truncated")
    rows = data[:image.height * image.step].reshape(image.height, image.step)
    stamp = _seconds(image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec)
    return stamp, image_pixels(rows, image.width, image.encoding, image.is_bigendian, path, connection.topic)


def _add_events(messages, bag, raw, connection, path):
    """Hand one events message to `messages` (_CdrEventArrays or _EventPackets); returns (height,
    width, number of events decoded now, the encoding's name)."""
    if isinstance(messages, _CdrEventArrays):
        return (*messages.add(raw), "dvs_msgs/EventArray")
    message = _deserialize(bag, raw, connection, path)
    return (*messages.add(message), f"event_camera_msgs/EventPacket {message.encoding}")


def _ros2_pieces(bag, topics, path):
    """The info, sensor, event and frame pieces of the messages on `topics` ({key: connections})."""
    key_of = {c.id: key for key, connections in topics.items() for c in connections}
    events_name = topics["events"][0].topic
    is_array = topics["events"][0].msgtype == EVENT_ARRAY_TYPE
    messages = (_CdrEventArrays if is_array else _EventPackets)(path, events_name)
    sensor, pending, total, encoding = None, 0, 0, None
    for connection, _, raw in bag.messages(connections=[c for cs in topics.values() for c in cs]):
        key = key_of[connection.id]
        if key != "events":
            yield ("frame", key, *_ros2_image(bag, raw, connection, path))
            continue
        height, width, count, kind = _add_events(messages, bag, raw, connection, path)
        if encoding is None:
            encoding = kind
            yield ("info", {"encoding": kind, "time_unit": "us" if kind.endswith("evt3") else "ns"})
        if sensor is None and height and width:
            sensor = message_sensor(height, width, path, events_name)
            yield ("sensor", sensor)
        pending += count
        if pending >= BATCH:
            yield event_piece(*messages.take(), path)
            total, pending = total + pending, 0
    last = messages.take()  # with what still waits to be decoded
    if len(last[0]):
        yield event_piece(*last, path)
    if total + len(last[0]) == 0:
        raise EventDataError(path, f"no events on {events_name}")
    if isinstance(messages, _EventPackets) and messages.evt3.rest:
        raise EventDataError(path, f"truncated: the EVT 3.0 data on {events_name} ends inside a 2-byte word")


def _storage_errors():
    """What rosbags' storage plugins raise for a corrupt file, besides its ReaderError: SQLite's
    (through apsw or sqlite3) and the zstd decompressor's, where those are installed."""
    import importlib
    import sqlite3
    errors = [sqlite3.Error]
    for module, name in (("apsw", "Error"), ("compression.zstd", "ZstdError"), ("backports.zstd", "ZstdError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


@event_format("ros2_bag", _is_ros2_bag, sort=True)
def stream_ros2_bag(path, events_topic=None, images_topic=None, color_images_topic=None, **options):
    """ROS 2 bag (folder, .db3 or .mcap) with dvs_msgs/EventArray or event_camera_msgs/EventPacket
    events and sensor_msgs/Image frames (header stamps). `events_topic` defaults to the bag's one
    topic of events, `images_topic` to its one image topic if it has exactly one ("" for no
    frames); `color_images_topic` gives frames of key "color_images"."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError
    _check_storage_files(path)
    errors = (AnyReaderError, ReaderError, OSError, EOFError, struct.error, ValueError, RuntimeError, KeyError,
              *_storage_errors())
    try:
        with AnyReader([Path(path)], default_typestore=ros2_typestore()) as bag:
            topics = _ros2_topics(bag, path, events_topic, images_topic, color_images_topic)
            yield from _ros2_pieces(bag, topics, path)
    except errors as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise EventDataError(path, f"unreadable or truncated bag ({problem})") from None
