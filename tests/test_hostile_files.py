"""Event files that lie (issue 24, "trust nothing a file says"): every case is a file written
here, and each must end, for `event_data.py --info` as for load_events and open_events, in one
line `error: PATH: problem` with exit status 2 and no traceback; or, where the file can be made
sense of (a wrong DSEC index, time stamps in another unit, frames of float brightness, a bag's
corrupt time stamp), in the right events with a note that says what was done, the same whether
the recording is loaded whole or left on disk (EventFile).

A FIFO, a device or a file outside the recording's folder named by a file must be refused
before it is opened (a FIFO blocks the open forever, and SQLite ignores SIGTERM while it
waits); those cases, and the image that decodes to gigabytes, run in a process of their own,
under a time limit and an address-space limit."""

import json
import os
import re
import resource
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import zipfile
import zlib

import cv2
import h5py
import numpy as np
import pytest

import benchmark_io as formats
import command
import event_data
from conftest import REPO
from event_data import EventDataError, EventFile, load_events, open_events

SENSOR = (18, 24)
MEMORY_LIMIT = 2 << 30  # the address space of a process that reads a hostile file


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    """main() in this process must not install its SIGTERM handlers into pytest's."""
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


@pytest.fixture(scope="module")
def recording():
    """3000 events over 30 ms of a 24 x 18 sensor, with 2 APS frames."""
    return formats.synthetic_recording(3000, sensor=SENSOR, rate=100_000)


@pytest.fixture(scope="module")
def long_recording():
    """30000 events over 0.3 s (DSEC's index and --time_range need some milliseconds)."""
    return formats.synthetic_recording(30_000, sensor=SENSOR, rate=100_000)


def info(path, *flags):
    """The exit status of `event_data.py --info PATH` run in this process (its output is capsys')."""
    try:
        status = event_data.main(["--info", str(path), *flags]) or 0
    except SystemExit as exit:
        status = exit.code
    return status


def assert_one_error_line(status, err, path, words):
    assert status == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}"), err
    assert words in errors[0], err


def assert_refused(path, words, capsys):
    """--info, load_events and open_events all refuse `path` in one line that holds `words`."""
    status = info(path)
    captured = capsys.readouterr()
    assert_one_error_line(status, captured.err, path, words)
    assert captured.out == ""
    for read in (load_events, open_events):
        with pytest.raises(EventDataError, match=re.escape(words)):
            read(str(path))
    capsys.readouterr()


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def assert_refused_in_a_process(path, words):
    """`event_data.py --info PATH` in a process of its own, which must end within 60 s (a FIFO
    opened blocks for ever) and within MEMORY_LIMIT of address space, in one error line."""
    try:
        result = subprocess.run([sys.executable, os.path.join(REPO, "event_data.py"), "--info", str(path)],
                                capture_output=True, text=True, timeout=60, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--info {path} did not end within 60 s")
    assert_one_error_line(result.returncode, result.stderr, path, words)
    assert "MemoryError" not in result.stderr


# -----------------------------------------------------------------------------
# ROS 2 bag metadata: the storage files it names


@pytest.fixture
def ros2_bag(tmp_path, recording):
    """A ROS 2 bag folder (SQLite storage); returns (folder, the .db3 path its metadata names)."""
    folder = tmp_path / "bag"
    formats.write_ros2_bag(str(folder), recording)
    return folder, folder / "bag.db3"


def test_bag_metadata_naming_a_fifo_is_refused_before_opening_it(ros2_bag):
    folder, storage = ros2_bag
    storage.unlink()
    os.mkfifo(storage)
    assert_refused_in_a_process(folder, "is not a regular file")


def test_bag_metadata_naming_a_folder_is_refused(ros2_bag, capsys):
    folder, storage = ros2_bag
    storage.unlink()
    storage.mkdir()
    assert_refused(folder, "is not a regular file", capsys)


def test_bag_metadata_naming_a_device_is_refused(ros2_bag):
    folder, storage = ros2_bag
    storage.unlink()
    try:
        os.mknod(storage, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("making a device node needs privileges this test does not have")
    assert_refused_in_a_process(folder, "is not a regular file")


def test_bag_metadata_naming_a_symlink_out_of_the_folder_is_refused(ros2_bag, tmp_path, capsys):
    folder, storage = ros2_bag
    storage.rename(tmp_path / "elsewhere.db3")
    storage.symlink_to(tmp_path / "elsewhere.db3")
    assert_refused(folder, "outside its folder", capsys)


def test_bag_metadata_naming_a_symlink_to_a_device_is_refused(ros2_bag):
    folder, storage = ros2_bag
    storage.unlink()
    storage.symlink_to("/dev/zero")
    assert_refused_in_a_process(folder, "outside its folder")


def test_a_bag_whose_metadata_is_a_fifo_is_not_read(ros2_bag):
    folder, _ = ros2_bag
    (folder / "metadata.yaml").unlink()
    os.mkfifo(folder / "metadata.yaml")
    assert_refused_in_a_process(folder, "unknown event format")


# -----------------------------------------------------------------------------
# APS frames named by an images.txt


@pytest.fixture
def ecd_folder(tmp_path, recording):
    folder = tmp_path / "seq"
    formats.write_ecd_folder(str(folder), recording)
    return folder


def name_in_image_list(folder, name):
    """The images.txt with its first frame's file replaced by `name`."""
    lines = (folder / "images.txt").read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} {name}"
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


def png_of_one_colour(width, height):
    """A 1-bit gray PNG of width x height px, all black: a few kB that decode to width x height bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row, compressor = bytes(1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_an_image_that_decodes_to_gigabytes_is_refused_before_decoding(ecd_folder):
    """One PNG of 20000 x 20000 px, 40 kB, listed 14 times: 5.6 GB decoded. Refused from its
    header, in a process limited to 2 GB."""
    (ecd_folder / "images" / "bomb.png").write_bytes(png_of_one_colour(20000, 20000))
    (ecd_folder / "images.txt").write_text("".join(f"0.00{k} images/bomb.png\n" for k in range(14)))
    assert_refused_in_a_process(ecd_folder, "20000x20000 px")


@pytest.mark.parametrize("kind, words", [("jpg", "40000x"), ("bmp", "40000x"), ("tiff", "40000x")])
def test_image_headers_of_every_format_are_read_before_decoding(ecd_folder, capsys, kind, words):
    """A small image whose header states 40000 px a side, in each format whose size is read."""
    data = bytearray(cv2.imencode(f".{kind}", np.zeros((8, 8), np.uint8))[1].tobytes())
    if kind == "jpg":
        sof = next(k for k in range(2, len(data)) if data[k] == 0xFF and data[k + 1] == 0xC0)
        struct.pack_into(">H", data, sof + 7, 40000)
    elif kind == "bmp":
        struct.pack_into("<i", data, 18, 40000)
    else:
        ifd = struct.unpack_from("<I", data, 4)[0]
        for entry in range(struct.unpack_from("<H", data, ifd)[0]):
            if struct.unpack_from("<H", data, ifd + 2 + 12 * entry)[0] == 256:
                struct.pack_into("<HII", data, ifd + 4 + 12 * entry, 4, 1, 40000)  # LONG, one value
    (ecd_folder / "images" / f"frame.{kind}").write_bytes(bytes(data))
    name_in_image_list(ecd_folder, f"images/frame.{kind}")
    assert_refused(ecd_folder, words, capsys)


@pytest.mark.parametrize("case, words", [
    ("fifo", "is not a regular file"),
    ("outside", "'../outside.png' leads out of the sequence's folder"),
    ("absolute", "leads out of the sequence's folder"),
    ("symlink out", "outside its folder"),
    ("folder", "is not a regular file"),
])
def test_images_txt_names_only_regular_files_inside_the_folder(ecd_folder, tmp_path, capsys, case, words):
    outside = tmp_path / "outside.png"
    shutil.copy(ecd_folder / "images" / "frame_00000000.png", outside)
    if case == "fifo":
        os.mkfifo(ecd_folder / "images" / "fifo.png")
        name_in_image_list(ecd_folder, "images/fifo.png")
        return assert_refused_in_a_process(ecd_folder, words)
    names = {"outside": "../outside.png", "absolute": str(outside), "symlink out": "images/link.png",
             "folder": "images"}
    (ecd_folder / "images" / "link.png").symlink_to(outside)
    name_in_image_list(ecd_folder, names[case])
    assert_refused(ecd_folder, words, capsys)


def test_a_symlink_to_a_frame_inside_the_folder_is_read(ecd_folder, recording):
    (ecd_folder / "images" / "link.png").symlink_to(ecd_folder / "images" / "frame_00000001.png")
    name_in_image_list(ecd_folder, "images/link.png")
    np.testing.assert_array_equal(load_events(str(ecd_folder))[0].aps_frames[0], recording["frames"][1])


def test_frames_of_another_size_are_refused_as_they_come(ecd_folder, capsys):
    cv2.imwrite(str(ecd_folder / "images" / "frame_00000001.png"), np.zeros((5, 5), np.uint8))
    assert_refused(ecd_folder, "APS frames have different sizes", capsys)


def test_an_image_of_an_unread_format_is_refused(ecd_folder, capsys):
    (ecd_folder / "images" / "frame.gif").write_bytes(b"GIF89a" + bytes(100))
    name_in_image_list(ecd_folder, "images/frame.gif")
    assert_refused(ecd_folder, "not an image of a format read here", capsys)


def test_an_image_of_float_values_is_refused(ecd_folder, capsys):
    cv2.imwrite(str(ecd_folder / "images" / "frame.tiff"), np.full(SENSOR, 0.5, np.float32))
    name_in_image_list(ecd_folder, "images/frame.tiff")
    assert_refused(ecd_folder, "APS frames are 8 or 16-bit", capsys)


def test_an_images_txt_that_is_not_utf8_is_refused_in_a_folder(ecd_folder, capsys):
    (ecd_folder / "images.txt").write_bytes(b"0.001 images/\xff\xfe.png\n")
    assert_refused(ecd_folder, "not UTF-8 text", capsys)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_an_images_txt_that_is_not_utf8_is_refused_in_a_zip(tmp_path, recording, capsys):
    path = tmp_path / "seq.zip"
    formats.write_ecd_zip(str(path), recording)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("images.txt", b"0.001 images/\xff\xfe.png\n")  # a second member of that name: the last counts
    assert_refused(path, "not UTF-8 text", capsys)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_corrupt_zip_member_is_one_line(tmp_path, recording, capsys, compression):
    """A flipped byte: a CRC that no longer matches, or a deflate stream broken at its start
    (which detection reads too)."""
    path = tmp_path / "seq.zip"
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("events.txt", "".join(chunk.decode() for chunk in formats._event_lines(recording)))
    data = bytearray(path.read_bytes())
    data[200 if compression == zipfile.ZIP_STORED else 45] ^= 0x5A
    path.write_bytes(bytes(data))
    assert_refused(path, "unreadable or corrupt zip file", capsys)


# -----------------------------------------------------------------------------
# Prophesee RAW


def test_a_header_line_that_is_not_ascii_is_named(tmp_path, recording, capsys):
    path = tmp_path / "geometry.raw"
    header = formats.prophesee_header(recording, "evt3").replace(b"% geometry 24x18", "% geometry 24×18".encode())
    formats.write_prophesee_raw(str(path), recording, "evt3", header=header)
    assert_refused(path, "corrupt header: line 4 is not ASCII text", capsys)


def test_evt3_vector_words_cannot_wrap_x_round(tmp_path, recording, capsys):
    """3000 VECT_12 words after one VECT_BASE_X reach x = 38000, past int16, where x once turned
    negative and passed validation."""
    path = tmp_path / "vectors.raw"
    words = np.array([0x8000, 0x6001, 0x0005, 0x3000 | 2040] + [0x4FFF] * 3000, "<u2")
    path.write_bytes(formats.prophesee_header(recording, "evt3") + words.tobytes())
    assert_refused(path, "outside the 24x18 (WxH) sensor", capsys)


@pytest.mark.parametrize("geometry", ["0x0", "100000x100000"])
def test_a_header_sensor_size_beyond_any_sensor_is_refused(tmp_path, recording, capsys, geometry):
    path = tmp_path / "size.raw"
    header = (f"% evt 3.0\n% geometry {geometry}\n% end\n").encode()
    formats.write_prophesee_raw(str(path), recording, "evt3", header=header)
    assert_refused(path, "the header's sensor size must be two whole numbers", capsys)


def test_validation_checks_both_bounds_of_every_coordinate():
    for x, y in ((-1, 0), (0, -3)):
        events = event_data.Events(t=np.array([0.0, 1.0]), x=np.array([0, x], np.int16), y=np.array([0, y], np.int16),
                                   p=np.array([1, -1], np.int8), path="rec")
        with pytest.raises(EventDataError, match=f"event 1 at x={x}, y={y} is outside"):
            event_data.validate(events, (10, 10))


# -----------------------------------------------------------------------------
# HDF5 and DSEC


def h5_file(tmp_path, recording, change, writer=formats.write_h5_event_cnn):
    path = tmp_path / "rec.h5"
    writer(str(path), recording)
    with h5py.File(path, "a") as f:
        change(f)
    return path


def replace(f, name, data, **options):
    del f[name]
    return f.create_dataset(name, data=data, **options)


def image_group_with_a_subgroup(f):
    f["images"].create_group("extra")


H5_CASES = {  # case -> (change(f), words)
    "sensor_resolution of 1 value": (lambda f: f.attrs.__setitem__("sensor_resolution", [18]), "sensor_resolution"),
    "sensor_resolution of 3 values": (lambda f: f.attrs.__setitem__("sensor_resolution", [18, 24, 3]),
                                      "sensor_resolution must be two whole numbers"),
    "sensor_resolution a scalar": (lambda f: f.attrs.__setitem__("sensor_resolution", 18), "got 18"),
    "images a dataset": (lambda f: (f.__delitem__("images"), f.create_dataset("images", data=np.zeros((2, 18, 24)))),
                         "images must be a group"),
    "images with a subgroup": (image_group_with_a_subgroup, "images/extra is a group"),
    "array-valued timestamp": (lambda f: f["images/image000000000"].attrs.__setitem__("timestamp", [0.1, 0.2]),
                               "timestamp must be one number"),
    "2-D time stamps": (lambda f: replace(f, "events/ts", np.zeros((3000, 2))), "events/ts must be a 1-D dataset"),
    "2-D x": (lambda f: replace(f, "events/xs", np.zeros((3000, 1), np.int16)), "events/xs must be a 1-D dataset"),
    "compound p": (lambda f: replace(f, "events/ps", np.zeros(3000, [("a", "u1"), ("b", "u1")])), "events/ps must be"),
    "text p": (lambda f: replace(f, "events/ps", np.array([b"on"] * 3000)), "events/ps must be"),
    "an image of 100000 px a side": (lambda f: f.create_dataset("images/image999999999", shape=(100_000, 100_000),
                                                                dtype=np.uint8, chunks=(64, 64)), "100000x100000 px"),
    "an empty image": (lambda f: replace(f, "images/image000000000", np.zeros((0, 24), np.uint8)), "24x0 px"),
    "frames of float values outside [0, 255]": (
        lambda f: replace(f, "images/image000000000", np.full(SENSOR, 1000.0)).attrs.__setitem__("timestamp", 0.0),
        "APS frames hold float values from"),
}


@pytest.mark.parametrize("case", H5_CASES)
def test_hdf5_structure_is_checked(tmp_path, recording, capsys, case):
    change, words = H5_CASES[case]
    assert_refused(h5_file(tmp_path, recording, change), words, capsys)


def test_dsec_t_offset_must_be_one_number(tmp_path, recording, capsys):
    path = h5_file(tmp_path, recording, lambda f: replace(f, "t_offset", np.array([1, 2])), formats.write_h5_dsec)
    assert_refused(path, "t_offset must be one whole number", capsys)


def test_data_kept_in_other_files_is_refused(tmp_path, recording, capsys):
    """An external link, and a dataset whose bytes are in another file, name paths that the file
    gives: neither is followed."""
    other = tmp_path / "other.h5"
    formats.write_h5_event_cnn(str(other), recording)
    path = h5_file(tmp_path, recording, lambda f: (f.__delitem__("events"),
                                                   f.__setitem__("events", h5py.ExternalLink(str(other), "events"))))
    assert_refused(path, "events links to another file", capsys)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.zeros(3000).tobytes())
    path = h5_file(tmp_path, recording, lambda f: replace(f, "events/ts", None, shape=(3000,), dtype=np.float64,
                                                          external=[(str(raw), 0, 3000 * 8)]))
    assert_refused(path, "events/ts is stored in other files", capsys)


def test_frames_of_float_brightness_are_read_as_8_bit_with_a_note(tmp_path, recording, capsys):
    frames = recording["frames"].astype(np.float64) / 255

    def float_frames(f):
        for k, frame in enumerate(frames):
            replace(f, f"images/image{k:09d}", frame).attrs["timestamp"] = recording["frame_t"][k]
    path = h5_file(tmp_path, recording, float_frames)
    for read in (lambda: load_events(str(path))[0], lambda: EventFile(str(path))):
        np.testing.assert_array_equal(read().aps_frames, recording["frames"])
        assert "APS frames hold float values in [0, 1]; read as 8-bit brightness (x 255)" in capsys.readouterr().err


def broken_index(kind, index):
    return {"zero": np.zeros_like(index), "reversed": index[::-1].copy(), "negative": -index - 1,
            "shifted": np.minimum(index + 500, index[-1]), "short": index[:50], "empty": index[:0],
            "2-D": np.stack([index, index], axis=1), "float": index.astype(np.float64)}[kind]


@pytest.mark.parametrize("kind", ["zero", "reversed", "negative", "shifted", "short", "empty", "2-D", "float"])
def test_a_wrong_dsec_index_is_ignored_with_a_note(tmp_path, long_recording, capsys, kind):
    """ms_to_idx is checked where it is used, against the time stamps: a wrong one gives the same
    events for --time_range 0.1 0.2 as the right one, found by halving, and says so."""
    path = tmp_path / "dsec.h5"
    formats.write_h5_dsec(str(path), long_recording, t_offset_us=0)
    expected, _ = load_events(str(path), sensor=SENSOR, time_range=(0.1, 0.2))
    assert capsys.readouterr().err == "" and 9000 < len(expected) < 11000
    with h5py.File(path, "a") as f:
        replace(f, "ms_to_idx", broken_index(kind, f["ms_to_idx"][()]))
    events, _ = load_events(str(path), sensor=SENSOR, time_range=(0.1, 0.2))
    np.testing.assert_array_equal(events.t, expected.t)
    np.testing.assert_array_equal(events.x, expected.x)
    err = capsys.readouterr().err
    assert "its ms_to_idx" in err and "it is ignored" in err and err.count("\n") == 1, err
    assert info(path, "--H", "18", "--W", "24", "--time_range", "0.1", "0.2") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_events"] == len(expected)


# -----------------------------------------------------------------------------
# ROS 1 bags


def test_an_empty_bayer_image_in_a_ros1_bag_is_one_line(tmp_path, recording, capsys):
    path = tmp_path / "bayer.bag"
    formats.write_bag(str(path), recording, image_topics={"/dvs/image_raw": ("bayer_rggb8", np.zeros((2, 0, 0), np.uint8))})
    assert_refused(path, "image on /dvs/image_raw is 0x0 px", capsys)


def test_a_ros1_sensor_size_beyond_any_sensor_is_refused(tmp_path, recording, capsys):
    path = tmp_path / "wide.bag"
    formats.write_bag(str(path), dict(recording, sensor=(70000, 24)), image_topics={})
    assert_refused(path, "the sensor size of the EventArray messages on /dvs/events must be", capsys)


def test_a_corrupt_time_stamp_in_a_bag_reads_the_same_streamed_or_whole(tmp_path, recording, capsys):
    """One bit of one event's seconds flipped: loading sorts the events, with a note; so does an
    EventFile (train.py --window), which used to refuse the file as unsorted."""
    path = tmp_path / "flipped.bag"
    formats.write_bag(str(path), recording)
    data, k = bytearray(path.read_bytes()), 1500
    record = struct.pack("<HHIIB", int(recording["x"][k]), int(recording["y"][k]), 0, int(recording["t_us"][k]) * 1000,
                         int(recording["p"][k] > 0))
    at = data.find(record)
    assert at > 0 and data.find(record, at + 1) < 0
    data[at + 7] ^= 0x10  # bit 28 of its seconds: 268435456 s
    path.write_bytes(bytes(data))
    whole, _ = load_events(str(path))
    whole_err = capsys.readouterr().err
    lazy = EventFile(str(path))
    assert capsys.readouterr().err == whole_err and "not in time order; sorting them" in whole_err
    assert len(lazy) == len(whole) and lazy.sensor == whole.sensor
    for column in "txyp":
        np.testing.assert_array_equal(getattr(lazy.rows(0, len(whole)), column), getattr(whole, column))
    np.testing.assert_array_equal(lazy.positions(whole.t[[0, 10, 2999]]), whole.positions(whole.t[[0, 10, 2999]]))
    assert info(path) == 0 and json.loads(capsys.readouterr().out)["num_events"] == 3000


# -----------------------------------------------------------------------------
# ROS 2 bags: messages


def set_message(folder, topic, data, which=0):
    """Replace the bytes of the `which`-th message on `topic` in a ROS 2 bag's .db3."""
    with sqlite3.connect(next(folder.glob("*.db3"))) as db:
        ids = [row[0] for row in db.execute("SELECT messages.id FROM messages JOIN topics ON topics.id = topic_id "
                                            "WHERE topics.name = ? ORDER BY timestamp", (topic,))]
        db.execute("UPDATE messages SET data = ? WHERE id = ?", (data, ids[which]))


@pytest.mark.parametrize("data", [b"", b"\x00"])
def test_an_empty_ros2_event_array_message_is_one_line(ros2_bag, capsys, data):
    folder, _ = ros2_bag
    set_message(folder, "/dvs/events", data)
    assert_refused(folder, "EventArray message on /dvs/events is truncated or malformed", capsys)


def test_an_empty_bayer_image_in_a_ros2_bag_is_one_line(ros2_bag, capsys):
    from event_formats.rosbag2 import ros2_typestore
    folder, _ = ros2_bag
    typestore = ros2_typestore()
    header = formats._ros2_stamp(typestore, 1000)
    image = typestore.types["sensor_msgs/msg/Image"](header=header, height=0, width=0, encoding="bayer_rggb8",
                                                     is_bigendian=0, step=0, data=np.zeros(0, np.uint8))
    set_message(folder, "/dvs/image_raw", bytes(typestore.serialize_cdr(image, "sensor_msgs/msg/Image")))
    assert_refused(folder, "image on /dvs/image_raw is 0x0 px", capsys)


def test_a_corrupt_ros2_image_message_is_one_line(ros2_bag, capsys):
    folder, _ = ros2_bag
    set_message(folder, "/dvs/image_raw", b"\x00\x01\x00\x00\x07")
    assert_refused(folder, "sensor_msgs/msg/Image message on /dvs/image_raw is truncated or malformed", capsys)


# -----------------------------------------------------------------------------
# .npy files: the authors' folder and EVREAL's


@pytest.fixture
def evreal_folder(tmp_path, recording):
    folder = tmp_path / "evreal"
    formats.write_evreal_folder(str(folder), recording)
    return folder


@pytest.mark.parametrize("size", [["a", "b"], [None, None], [18, 24, 3], "18x24", [[18], [24, 1]], [0, 24], [18.5, 24]])
def test_metadata_json_sensor_resolution_is_checked(evreal_folder, capsys, size):
    (evreal_folder / "metadata.json").write_text(json.dumps({"sensor_resolution": size}))
    assert_refused(evreal_folder, "sensor_resolution must be two whole numbers", capsys)


def test_metadata_json_nested_beyond_recursion_is_one_line(evreal_folder, capsys):
    (evreal_folder / "metadata.json").write_text("[" * 100_000)
    assert_refused(evreal_folder, "expected a JSON object with sensor_resolution", capsys)


@pytest.mark.parametrize("case, words", [
    ("frame times as text", "expected frame time stamps (numbers), found values of type <U"),
    ("frames [K, H, W, 1, 1]", "a frame must be [H, W] or [H, W, C]"),
    ("frames [K, H, W, 2]", "a frame must be [H, W] or [H, W, C]"),
    ("frames of float values outside [0, 255]", "APS frames hold float values from -1 to 2"),
    ("frames of NaN", "APS frames hold float values from nan"),
    ("event times [N, 3]", "events_ts [N], events_xy [N, 2] and events_p [N] disagree"),
])
def test_evreal_arrays_are_checked_before_any_fit(evreal_folder, recording, capsys, case, words):
    """Refused on opening (load_events, open_events: before any fit), not where they are used."""
    frames = recording["frames"]
    change = {
        "frame times as text": ("images_ts.npy", recording["frame_t"].astype(str)),
        "frames [K, H, W, 1, 1]": ("images.npy", frames[..., None, None]),
        "frames [K, H, W, 2]": ("images.npy", np.stack([frames, frames], axis=-1)),
        "frames of float values outside [0, 255]": ("images.npy", np.linspace(-1, 2, frames.size).reshape(frames.shape)),
        "frames of NaN": ("images.npy", np.full(frames.shape, np.nan)),
        "event times [N, 3]": ("events_ts.npy", np.repeat(recording["t"][:, None], 3, axis=1)),
    }[case]
    np.save(evreal_folder / change[0], change[1])
    assert_refused(evreal_folder, words, capsys)


def test_evreal_frames_of_float_brightness_are_read_alike_whole_and_streamed(evreal_folder, recording, capsys):
    np.save(evreal_folder / "images.npy", recording["frames"][..., None].astype(np.float32))
    whole = load_events(str(evreal_folder))[0]
    whole_err = capsys.readouterr().err
    lazy = EventFile(str(evreal_folder))
    assert capsys.readouterr().err == whole_err and "read as 8-bit brightness" in whole_err
    np.testing.assert_array_equal(whole.aps_frames, recording["frames"])
    np.testing.assert_array_equal(np.stack([lazy.aps_frames[k] for k in range(len(lazy.aps_frames))]), recording["frames"])


def test_evreal_frame_times_are_mended_alike_whole_and_streamed(evreal_folder, recording, capsys):
    np.save(evreal_folder / "images_ts.npy", recording["frame_t"][::-1].copy())
    whole = load_events(str(evreal_folder))[0]
    whole_err = capsys.readouterr().err
    lazy = EventFile(str(evreal_folder))
    assert capsys.readouterr().err == whole_err and "is before the previous frame's" in whole_err
    np.testing.assert_array_equal(lazy.aps_t, whole.aps_t)


@pytest.mark.parametrize("kind", ["zero", "reversed", "negative", "2-D", "text", "fifo"])
def test_evreal_image_event_indices_are_never_trusted(evreal_folder, recording, capsys, kind):
    """image_event_indices.npy is not read at all (frames are placed by their times): a wrong or
    hostile one changes nothing, streamed or whole."""
    expected = load_events(str(evreal_folder))[0]
    indices = evreal_folder / "image_event_indices.npy"
    if kind == "fifo":  # in a process of its own: were it opened, it would block for ever
        indices.unlink()
        os.mkfifo(indices)
        result = subprocess.run([sys.executable, os.path.join(REPO, "event_data.py"), "--info", str(evreal_folder)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and json.loads(result.stdout)["num_frames"] == len(expected.aps_t), result.stderr
        return
        good = np.load(indices)
        np.save(indices, {"zero": good * 0, "reversed": good[::-1], "negative": -good - 1,
                          "2-D": np.stack([good, good], axis=1), "text": good.astype(str)}[kind])
    for read in (lambda: load_events(str(evreal_folder))[0], lambda: EventFile(str(evreal_folder))):
        events = read()
        np.testing.assert_array_equal(events.positions(expected.aps_t), expected.positions(expected.aps_t))
        np.testing.assert_array_equal(events.aps_t, expected.aps_t)
    assert capsys.readouterr().err == ""


def test_an_evreal_array_that_is_a_fifo_is_refused_before_opening_it(evreal_folder):
    (evreal_folder / "images_ts.npy").unlink()
    os.mkfifo(evreal_folder / "images_ts.npy")
    assert_refused_in_a_process(evreal_folder, "is not a regular file")


def test_an_npy_of_text_is_refused(tmp_path, capsys):
    path = tmp_path / "events.npy"
    np.save(path, np.array([["0.1", "1", "2", "1"]] * 10))
    assert_refused(path, "expected numbers, found values of type <U", capsys)


# -----------------------------------------------------------------------------
# time stamps in implausible units


@pytest.mark.parametrize("unit, factor, clock", [("microseconds", 1e6, 1.6e9), ("nanoseconds", 1e9, 1.6e9),
                                                 ("microseconds", 1e6, 0.0)])
def test_float_time_stamps_in_other_units_are_converted_with_a_note(tmp_path, recording, capsys, unit, factor, clock):
    """Float time stamps with fractions, on the Unix clock in microseconds (1.6e15) or
    nanoseconds, or microseconds from the start spanning 300 s (3e8: days as seconds), are read
    in that unit, loaded whole or left on disk, with the note."""
    t = (clock + recording["t"] * (1 if clock else 1e4)) * factor + 0.25
    path = tmp_path / "events.npy"
    np.save(path, np.stack([t, recording["x"], recording["y"], recording["p"]], axis=1))
    for read in (lambda: load_events(str(path))[0], lambda: EventFile(str(path))):
        events = read()
        assert f"read as {unit}" in capsys.readouterr().err
        np.testing.assert_allclose(events.times_at([0, 2999]), t[[0, 2999]] / factor, rtol=1e-12)


def test_time_stamps_plausible_in_no_unit_are_refused(tmp_path, recording, capsys):
    path = tmp_path / "events.npy"
    t = np.linspace(0, 1e20, 3000)
    np.save(path, np.stack([t, recording["x"], recording["y"], recording["p"]], axis=1))
    assert_refused(path, "are plausible in no unit", capsys)
