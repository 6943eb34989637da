"""
ROS 1 bags of dvs_msgs/EventArray and sensor_msgs/Image messages, read with `rosbags` (no ROS
install; uncompressed, bz2 and lz4 chunks), whole or by position. ROS 2 bags (rosbag2) share the
message type names, the topic lookup and the image decoding defined here.

Messages are parsed from their raw ROS 1 serialisation with numpy rather than deserialised into
message objects, which is much slower. EventArray: Header, uint32 height, uint32 width,
uint32 count, count x 13-byte events; Header: uint32 seq, uint32 sec, uint32 nsec, string
frame_id (uint32 length + bytes).
"""

import struct

import numpy as np

from . import event_format
from .common import BATCH, Columns, EventDataError, event_piece, is_file_with, sensor_size
from .images import size_problem

ROS_EVENT = np.dtype([("x", "<u2"), ("y", "<u2"), ("sec", "<u4"), ("nsec", "<u4"), ("polarity", "u1")])
EVENT_ARRAY_TYPE, IMAGE_TYPE = "dvs_msgs/msg/EventArray", "sensor_msgs/msg/Image"
BAG_FACTS = {"encoding": "dvs_msgs/EventArray", "time_unit": "ns"}
# OpenCV names a Bayer pattern by the second row's second and third pixels: ROS rggb is BG
_BAYER_TO_RGB = {"bayer_rggb8": "COLOR_BayerBG2RGB", "bayer_bggr8": "COLOR_BayerRG2RGB",
                 "bayer_gbrg8": "COLOR_BayerGR2RGB", "bayer_grbg8": "COLOR_BayerGB2RGB"}
_PIXEL_BYTES = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4,
                "bgra8": 4, **{encoding: 1 for encoding in _BAYER_TO_RGB}}


# --- what ROS 1 and ROS 2 bags share ------------------------------------------------

def topic_list(bag):
    """The bag's topics and their message types, for an error message."""
    return ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in bag.connections)) or "none"


def topic_connections(bag, topic, msgtypes, path, required=True):
    """The connections of `topic`, checked to hold one of the message types `msgtypes`; none
    when the bag lacks a topic that is not `required`."""
    connections = [c for c in bag.connections if c.topic == topic]
    if not connections:
        if not required:
            return []
        raise EventDataError(path, f"no topic {topic} in the bag (topics: {topic_list(bag)})")
    if any(c.msgtype not in msgtypes for c in connections):
        raise EventDataError(path, f"topic {topic} holds {connections[0].msgtype}, expected {' or '.join(msgtypes)}")
    return connections


def message_sensor(height, width, path, topic):
    """The sensor (H, W) that an EventArray message states, checked; None when it states none (0)."""
    if not (height and width):
        return None
    return sensor_size((height, width), path, f"the sensor size of the EventArray messages on {topic}")


def image_pixels(rows, width, encoding, big_endian, path, topic):
    """The [height, step] bytes of a sensor_msgs/Image -> uint8 gray [H, W] or RGB [H, W, 3]; its
    size, and its row length (step) for its encoding, checked first."""
    import cv2
    if encoding not in _PIXEL_BYTES:
        raise EventDataError(path, f"image encoding {encoding!r} on {topic} is not supported")
    if size_problem(width, len(rows)):
        raise EventDataError(path, f"image on {topic} is {size_problem(width, len(rows))}")
    if rows.shape[1] < width * _PIXEL_BYTES[encoding]:
        raise EventDataError(path, f"image on {topic}: rows of {rows.shape[1]} bytes (step) cannot hold {width} "
                                   f"px of {encoding}")
    if encoding in ("mono8", "8UC1"):
        image = rows[:, :width]
    elif encoding in ("mono16", "16UC1"):  # keep the 8 most significant bits
        image = (rows[:, :2 * width].view(">u2" if big_endian else "<u2") >> 8).astype(np.uint8)
    elif encoding in ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8"):
        channels = 4 if encoding.endswith("a8") else 3
        image = rows[:, :channels * width].reshape(len(rows), width, channels)[..., :3]
        if encoding.startswith("bgr") or encoding == "8UC3":  # 8UC3 follows OpenCV: BGR
            image = image[..., ::-1]
    else:  # Bayer
        try:
            image = cv2.cvtColor(np.ascontiguousarray(rows[:, :width]), getattr(cv2, _BAYER_TO_RGB[encoding]))
        except cv2.error as error:
            problem = " ".join(str(error).split())[:120]
            raise EventDataError(path, f"image on {topic} cannot be demosaiced as {encoding} ({problem})") from None
    return np.ascontiguousarray(image)


# --- ROS 1 messages -----------------------------------------------------------------

def _ros_header(raw):
    """(stamp in seconds, offset of the first field after the header)."""
    _, sec, nsec, frame_id_length = struct.unpack_from("<4I", raw, 0)
    return sec + nsec / 1e9, 16 + frame_id_length


def _ros_image(raw, path, topic):
    """ROS 1 sensor_msgs/Image -> (stamp in seconds, uint8 gray [H, W] or RGB [H, W, 3])."""
    stamp, offset = _ros_header(raw)
    height, width, encoding_length = struct.unpack_from("<3I", raw, offset)
    offset += 12
    encoding = bytes(raw[offset:offset + encoding_length]).decode()
    big_endian, step, size = struct.unpack_from("<BII", raw, offset + encoding_length)
    offset += encoding_length + 9
    if size < height * step or len(raw) < offset + size:
        raise EventDataError(path, f"image message on {topic} is truncated")
    rows = np.frombuffer(raw, np.uint8, height * step, offset).reshape(height, step)
    return stamp, image_pixels(rows, width, encoding, big_endian, path, topic)


def _event_array(raw, path, topic):
    """(height, width, the events' bytes) of an EventArray message's raw ROS 1 serialisation."""
    _, offset = _ros_header(raw)
    height, width, count = struct.unpack_from("<3I", raw, offset)
    offset += 12
    if len(raw) != offset + ROS_EVENT.itemsize * count:
        raise EventDataError(path, f"EventArray message on {topic} is truncated or malformed")
    return height, width, memoryview(raw)[offset:]


def _ros_events(payloads, path):
    """One event piece from the raw event bytes of several EventArray messages."""
    records = np.frombuffer(b"".join(payloads), ROS_EVENT)
    t = records["sec"] + records["nsec"] / 1e9
    return event_piece(t, records["x"], records["y"], records["polarity"], path)


# --- reading a bag ------------------------------------------------------------------

def _bag_errors():
    """What reading a ROS 1 bag raises: rosbags' ReaderError, the failures of a truncated file,
    and what rosbags asserts or looks up for a corrupt record."""
    from rosbags.rosbag1 import ReaderError
    return (ReaderError, OSError, EOFError, struct.error, ValueError, RuntimeError,
            AssertionError, KeyError, IndexError)


def _bag_error(path, error):
    # rosbags asserts, and looks up what a corrupt record names
    corrupt = isinstance(error, (AssertionError, KeyError, IndexError))
    problem = "a corrupt record" if corrupt else " ".join(str(error).split()) or type(error).__name__
    return EventDataError(path, f"unreadable or truncated bag ({problem})")


def _image_connections(bag, images_topic, path):
    """The connections of the frames' topic: `images_topic`; when None, /dvs/image_raw if the
    bag has it; none for ""."""
    if images_topic == "":
        return []
    return topic_connections(bag, images_topic or "/dvs/image_raw", (IMAGE_TYPE,), path, images_topic is not None)


def _bag_columns(path, events_topic="/dvs/events", images_topic=None):
    """A ROS 1 bag's events as EventFile reads them: opening notes each EventArray message's
    record time and event count; a read then asks the bag's index for the messages of that time
    range only. The bag is kept open (its index read once)."""
    from rosbags.rosbag1 import Reader
    errors = _bag_errors()
    try:
        bag = Reader(path)
        bag.open()
        events = topic_connections(bag, events_topic, (EVENT_ARRAY_TYPE,), path)
        images = _image_connections(bag, images_topic, path)
        image_ids = {c.id for c in images}
        stamps, counts, frames, sensor = [], [], [], None
        for connection, stamp, raw in bag.messages(connections=events + images):
            if connection.id in image_ids:
                frames.append(("frame", "images", *_ros_image(raw, path, connection.topic)))
                continue
            height, width, payload = _event_array(raw, path, events_topic)
            sensor = sensor or message_sensor(height, width, path, events_topic)
            stamps.append(stamp)
            counts.append(len(payload) // ROS_EVENT.itemsize)
    except errors as error:
        raise _bag_error(path, error) from None
    stamps, starts = np.array(stamps, dtype=np.int64), np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def read(first, last):
        """Events first:last: the messages that hold them, found by their record times."""
        if last <= first:
            return np.empty(0), np.empty(0, np.int16), np.empty(0, np.int16), np.empty(0, np.int8)
        head, tail = np.searchsorted(starts, first, side="right") - 1, np.searchsorted(starts, last, side="left")
        skip = head - np.searchsorted(stamps, stamps[head], side="left")  # earlier messages of the same record time
        payloads = []
        try:
            for _, _, raw in bag.messages(connections=events, start=int(stamps[head]), stop=int(stamps[tail - 1]) + 1):
                if skip:
                    skip -= 1
                    continue
                payloads.append(_event_array(raw, path, events_topic)[2])
                if len(payloads) == tail - head:
                    break
        except errors as error:
            raise _bag_error(path, error) from None
        records = np.frombuffer(b"".join(payloads), ROS_EVENT)[first - starts[head]:last - starts[head]]
        return records["sec"] + records["nsec"] / 1e9, records["x"], records["y"], records["polarity"]
    return Columns(int(starts[-1]), read, BAG_FACTS, sensor, frames)


@event_format("bag", is_file_with(".bag"), columns=_bag_columns, sort=True)
def stream_bag(path, events_topic="/dvs/events", images_topic=None, color_images_topic=None, **options):
    """A ROS 1 bag's pieces. Events keep their own time stamps, frames take their header stamp (not
    the time they were recorded). `images_topic` defaults to /dvs/image_raw when the bag has it
    ("" for no frames); `color_images_topic` (CED: /dvs/image_color) gives frames of key
    "color_images"."""
    from rosbags.rosbag1 import Reader
    errors = _bag_errors()
    try:
        with Reader(path) as bag:
            topics = {"events": topic_connections(bag, events_topic, (EVENT_ARRAY_TYPE,), path),
                      "images": _image_connections(bag, images_topic, path)}
            if color_images_topic:
                topics["color_images"] = topic_connections(bag, color_images_topic, (IMAGE_TYPE,), path)
            yield ("info", BAG_FACTS)
            yield from _bag_pieces(bag, topics, path, events_topic)
    except errors as error:
        raise _bag_error(path, error) from None


def _bag_pieces(bag, topics, path, events_topic):
    """The sensor, event and frame pieces of the messages on `topics` ({key: connections})."""
    key_of = {c.id: key for key, connections in topics.items() for c in connections}
    sensor, payloads, pending, total = None, [], 0, 0
    for connection, _, raw in bag.messages(connections=[c for cs in topics.values() for c in cs]):
        if key_of[connection.id] != "events":
            yield ("frame", key_of[connection.id], *_ros_image(raw, path, connection.topic))
            continue
        height, width, payload = _event_array(raw, path, events_topic)
        if sensor is None and height and width:
            sensor = message_sensor(height, width, path, events_topic)
            yield ("sensor", sensor)
        payloads.append(payload)
        pending += len(payload) // ROS_EVENT.itemsize
        if pending >= BATCH:
            yield _ros_events(payloads, path)
            total, payloads, pending = total + pending, [], 0
    if pending:
        yield _ros_events(payloads, path)
    if total + pending == 0:
        raise EventDataError(path, f"no events on {events_topic}")
