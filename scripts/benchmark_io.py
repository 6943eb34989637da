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


def _event_array_message(typestore, seq, recording, part):
    """The same EventArray built as message objects and serialised by rosbags."""
    types = typestore.types
    Time = types["builtin_interfaces/msg/Time"]
    height, width = recording["sensor"]
    events = [types["dvs_msgs/msg/Event"](x=int(x), y=int(y), ts=Time(sec=int(t // 1_000_000), nanosec=int(t % 1_000_000 * 1000)),
                                          polarity=bool(p > 0))
              for x, y, t, p in zip(recording["x"][part], recording["y"][part], recording["t_us"][part], recording["p"][part])]
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
