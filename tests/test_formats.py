"""Readers of what cameras and datasets write: Prophesee RAW (EVT 2.0, 2.1, 3.0) and DAT,
DSEC's Blosc-compressed HDF5, width-first sensor sizes, ROS 2 bags. Files are written by the
writers in scripts/benchmark_io.py or word by word here; the real samples are read when they
are in ../shared/data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_info_fails, REPO, shared_data
import benchmark_io as formats
import event_data
import event_formats.prophesee
import event_formats.rosbag2
from event_data import EventDataError, load_events


@pytest.fixture(scope="module")
def recording():
    return formats.synthetic_recording(20_000, rate=100_000)


def assert_events(events, recording, t=None):
    np.testing.assert_array_equal(events.t, recording["t"] if t is None else t)
    np.testing.assert_array_equal(events.x, recording["x"])
    np.testing.assert_array_equal(events.y, recording["y"])
    np.testing.assert_array_equal(events.p, recording["p"])
    assert events.t.dtype == np.float64 and events.x.dtype == events.y.dtype == np.int16 and events.p.dtype == np.int8


def burst_recording(n_bursts=3_000, sensor=(100, 300), seed=1):
    """Runs of neighbouring pixels of one row firing at once, as moving edges make them: what
    cameras pack into vector words (several per run, across 12- and 32-pixel spans)."""
    rng = np.random.default_rng(seed)
    height, width = sensor
    lengths = rng.integers(1, 40, n_bursts)
    burst = np.repeat(np.arange(n_bursts), lengths)
    start = np.cumsum(lengths) - lengths
    t_us = (np.cumsum(rng.integers(0, 3, n_bursts)) + 1_000)[burst]
    x = rng.integers(0, width - 40, n_bursts)[burst] + np.arange(len(burst)) - start[burst]
    keep = rng.random(len(burst)) < 0.7  # gaps inside a run
    y = rng.integers(0, height, n_bursts)[burst]
    p = rng.choice(np.array([-1, 1], np.int8), n_bursts)[burst]
    t_us, x, y, p = t_us[keep], x[keep], y[keep], p[keep]
    return {"sensor": sensor, "t_us": t_us, "t": t_us / 1e6, "x": x.astype(np.int16), "y": y.astype(np.int16), "p": p}


# --- Prophesee RAW and DAT ---------------------------------------------------------------

RAW_CASES = {  # name -> (writer options, encoding reported)
    "evt2": (dict(encoding="evt2"), "EVT 2.0"),
    "evt21_legacy": (dict(encoding="evt21"), "EVT 2.1"),
    "evt21": (dict(encoding="evt21", legacy=False, header=b"% format EVT21;height=180;width=240\n% end\n"), "EVT 2.1"),
    "evt21_unstated": (dict(encoding="evt21", legacy=False, header=b"% evt 2.1\n% geometry 240x180\n"), "EVT 2.1"),
    "evt21_legacy_unstated": (dict(encoding="evt21", header=b"% evt 2.1\n% geometry 240x180\n"), "EVT 2.1"),
    "evt3": (dict(encoding="evt3"), "EVT 3.0"),
    "evt3_singles": (dict(encoding="evt3", vectors=False), "EVT 3.0"),
}


@pytest.mark.parametrize("case", RAW_CASES)
def test_raw_round_trip(tmp_path, recording, case):
    options, encoding = RAW_CASES[case]
    path = str(tmp_path / "events.raw")
    formats.write_prophesee_raw(path, recording, **options)
    events, sensor = load_events(path)
    assert events.format == "prophesee_raw" and events.encoding == encoding and events.time_unit == "us"
    assert sensor == (180, 240)
    assert_events(events, recording)


@pytest.mark.parametrize("encoding", ["evt21", "evt3"])
def test_raw_vector_words(tmp_path, encoding):
    recording = burst_recording()
    words = {"evt21": formats.evt21_words, "evt3": formats.evt3_words}[encoding](recording)
    assert len(words) * words.itemsize < 0.5 * len(recording["t"]) * (2 if encoding == "evt3" else 8)  # under half a word an event
    path = str(tmp_path / "bursts.raw")
    formats.write_prophesee_raw(path, recording, encoding=encoding)
    assert_events(load_events(path)[0], recording)


def test_dat_round_trip(tmp_path, recording):
    path = str(tmp_path / "events.dat")
    formats.write_prophesee_dat(path, recording)
    events, sensor = load_events(path)
    assert events.format == "prophesee_dat" and events.encoding == "DAT CD" and sensor == (180, 240)
    assert_events(events, recording)


def evt3(*words):
    """EVT 3.0 words from (type, payload) pairs."""
    return np.array([(kind << 12) | payload for kind, payload in words], "<u2").tobytes()


Y, X, BASE, V12, V8, LOW, HIGH = 0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8
ON = 1 << 11
HAND_WORDS = evt3(
    (LOW, 5), (Y, 3), (X, ON | 7),  # before the first time high: no time, dropped
    (HIGH, 1), (X, 8),  # t = 1 << 12, row 3, OFF
    (LOW, 10), (Y, ON | 4),  # row 4 (bit 11 is the system type, not part of y)
    (BASE, ON | 100), (V12, 0b1000_0000_0101), (V8, 0b1000_0001),  # x 100, 102, 111, then from 112: 112, 119
    (0xE, 0x123), (0xF, 0xFFF), (0x7, 0xF), (0xA, 0x101),  # OTHERS, CONTINUED_12, CONTINUED_4, EXT_TRIGGER
    (X, ON | 5),
    (HIGH, 2), (V12, 0b1))  # a time high alone sets the low bits to 0; the vector goes on from 120
HAND_EVENTS = [(4096, 8, 3, -1)] + [(4106, x, 4, 1) for x in (100, 102, 111, 112, 119, 5)] + [(8192, 120, 4, 1)]


@pytest.mark.parametrize("block", [None, 1, 3, 6])
def test_evt3_words_by_hand(tmp_path, monkeypatch, block):
    """Vector words, the row and vector state, a time high alone, words without events, and
    blocks ending anywhere (inside a word too): the state is carried from block to block."""
    if block:
        monkeypatch.setattr(event_formats.prophesee, "_RAW_BLOCK", block)
    path = tmp_path / "hand.raw"
    path.write_bytes(b"% evt 3.0\n% geometry 640x480\n% end\n" + HAND_WORDS)
    events, sensor = load_events(str(path))
    assert sensor == (480, 640)
    got = list(zip(np.round(events.t * 1e6).astype(int).tolist(), events.x.tolist(), events.y.tolist(), events.p.tolist()))
    assert got == HAND_EVENTS


@pytest.mark.parametrize("encoding, t0_us", [("evt3", (1 << 24) - 30_000), ("evt2", (1 << 34) - 30_000),
                                             ("evt21", (1 << 34) - 30_000), ("dat", (1 << 32) - 30_000)])
def test_time_high_wraparound(tmp_path, encoding, t0_us):
    """A recording across the time at which the format's time stamps wrap (EVT 3.0: every
    16.8 s) reads with times that go on rising."""
    recording = formats.synthetic_recording(20_000, rate=200_000, t0_us=t0_us)
    assert recording["t_us"][-1] > t0_us + 30_000  # it does cross
    path = str(tmp_path / ("events.dat" if encoding == "dat" else "events.raw"))
    formats.write_prophesee_dat(path, recording) if encoding == "dat" else formats.write_prophesee_raw(path, recording, encoding)
    assert_events(load_events(path)[0], recording)


def test_raw_header_variants(tmp_path):
    """Binary that starts with '%' after a `% end` line, and after a header without one (its
    first byte is not followed by a line of text); the sensor from a Gen3 plugin name."""
    recording = formats.synthetic_recording(200, sensor=(480, 640), t0_us=0x25 << 6)  # time high 0x25: '%'
    words = formats.evt2_words(recording).tobytes()
    assert words[:1] == b"%"
    for header in (b"% evt 2.0\n% plugin_name hal_plugin_gen3_fx3\n% end\n", b"% evt 2.0\n% plugin_name hal_plugin_gen3_fx3\n"):
        path = tmp_path / "percent.raw"
        path.write_bytes(header + words)
        events, sensor = load_events(str(path))
        assert sensor == (480, 640)
        assert_events(events, recording)


def test_raw_blocks_of_any_size_read_the_same(tmp_path, monkeypatch):
    recording = burst_recording(500)
    path = str(tmp_path / "bursts.raw")
    formats.write_prophesee_raw(path, recording, encoding="evt3")
    whole = load_events(path)[0]
    monkeypatch.setattr(event_formats.prophesee, "_RAW_BLOCK", 101)
    pieces = load_events(path)[0]
    for name in "txyp":
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name))


@pytest.mark.parametrize("make", [lambda: formats.synthetic_recording(300_000, rate=500_000), lambda: burst_recording(20_000)],
                         ids=["random", "bursts"])
def test_decoders_agree_with_the_writers_at_scale(make):
    """Many blocks, every word type the writers make, compared event by event (not via files)."""
    recording = make()
    for words, decoder in ((formats.evt3_words(recording), event_formats.prophesee.Evt3Decoder()),
                           (formats.evt2_words(recording), event_formats.prophesee.Evt2Decoder()),
                           (formats.evt21_words(recording), event_formats.prophesee.Evt21Decoder(legacy=True))):
        data = words.tobytes()
        parts = [decoder.feed(data[start:start + 65_537]) for start in range(0, len(data), 65_537)]
        assert all(part[0].dtype == np.int64 and part[1].dtype == part[2].dtype == np.int16 and part[3].dtype == np.int8
                   for part in parts)
        t, x, y, p = (np.concatenate(column) for column in zip(*parts))
        np.testing.assert_array_equal(t, recording["t_us"])
        np.testing.assert_array_equal(x, recording["x"])
        np.testing.assert_array_equal(y, recording["y"])
        np.testing.assert_array_equal(p, recording["p"])


def test_bit_count_without_numpy_2():
    words = np.random.default_rng(0).integers(0, 2 ** 63, 1000, dtype=np.int64).view(np.uint64) * np.uint64(3)
    expected = [bin(int(w)).count("1") for w in words]
    np.testing.assert_array_equal(event_formats.prophesee._bit_count_by_bytes(words), expected)


# --- the real samples --------------------------------------------------------------------

def test_real_evt2_sample():
    path = shared_data("prophesee", "evt2.raw")
    events, sensor = load_events(path)
    assert len(events) == 521_252 and sensor == (480, 640)
    assert events.encoding == "EVT 2.0" and events.format == "prophesee_raw"
    assert events.t[0] == 913.716224 and events.t[-1] == 913.812095  # a Gen3 camera's clock, 0.096 s
    assert set(np.unique(events.p)) == {-1, 1}
    assert events.x.max() < 640 and events.y.max() < 480


def test_real_evt2_info_line():
    path = shared_data("prophesee", "evt2.raw")
    result = subprocess.run([sys.executable, os.path.join(REPO, "event_data.py"), "--info", path],
                            capture_output=True, text=True, check=True)
    info = json.loads(result.stdout)
    assert info["num_events"] == 521_252 and info["sensor"] == [480, 640]
    assert info["encoding"] == "EVT 2.0" and info["time_unit"] == "us"
    assert info["event_rate"] == pytest.approx(521_252 / (913.812095 - 913.716224), rel=1e-6)


def test_real_evt3_and_dat_samples_agree():
    """faery's samples: the same 1,218,618 events as EVT 3.0 and as DAT, on clocks 11.194368 s apart."""
    raw, raw_sensor = load_events(shared_data("prophesee", "evt3.raw"))
    dat, dat_sensor = load_events(shared_data("prophesee", "gen4.dat"))
    assert len(raw) == len(dat) == 1_218_618 and raw_sensor == dat_sensor == (720, 1280)
    assert raw.encoding == "EVT 3.0" and dat.encoding == "DAT CD"
    for name in "xyp":
        np.testing.assert_array_equal(getattr(raw, name), getattr(dat, name))
    np.testing.assert_array_equal(np.round((raw.t - dat.t) * 1e6), 11_194_368)
    assert raw.t[0] == 11.200224 and raw.t[-1] == 21.968221  # across the 16.8 s wrap of EVT 3.0's time


# --- bad input ---------------------------------------------------------------------------

def _raw_file(tmp_path, name, header=None, cut=0, extra=b""):
    recording = formats.synthetic_recording(3_000, rate=100_000)
    path = tmp_path / name
    if name.endswith(".dat"):
        formats.write_prophesee_dat(path, recording)
    else:
        formats.write_prophesee_raw(path, recording, "evt3", header=header)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut] + extra)
    return path


BAD_FILES = {  # case -> (make(tmp_path) -> path, words the one-line error must hold)
    "raw truncated inside a word": (lambda tmp: _raw_file(tmp, "cut.raw", cut=1), "truncated: the file ends inside its last 2-byte EVT 3.0 word (1 of its bytes)"),
    "raw truncated in its header": (lambda tmp: _text(tmp, "head.raw", b"% evt 3.0\n% geometry 64"), "corrupt header: the file ends inside its header"),
    "raw binary header": (lambda tmp: _text(tmp, "binary.raw", b"%\x00\x81 evt\n" + bytes(8)), "corrupt header: the first '%' line"),
    "raw header names no encoding": (lambda tmp: _raw_file(tmp, "none.raw", header=b"% geometry 240x180\n% end\n"), "corrupt header: no '% evt'"),
    "raw header bad geometry": (lambda tmp: _raw_file(tmp, "geometry.raw", header=b"% evt 3.0\n% geometry 240 by 180\n"), "corrupt header: sensor size"),
    "raw unknown encoding": (lambda tmp: _raw_file(tmp, "evt4.raw", header=b"% format EVT4;height=180;width=240\n% end\n"), "unknown encoding 'EVT4'"),
    "raw unknown evt version": (lambda tmp: _raw_file(tmp, "evt9.raw", header=b"% evt 9.0\n% end\n"), "unknown encoding 'evt 9.0'"),
    "dat truncated": (lambda tmp: _raw_file(tmp, "cut.dat", cut=3), "truncated: the file ends inside its last 8-byte DAT event (5 of its bytes)"),
    "dat without event type": (lambda tmp: _text(tmp, "bare.dat", b"% Height 180\n% Width 240\n"), "truncated: no event type"),
    "dat corrupt header": (lambda tmp: _text(tmp, "corrupt.dat", b"% Height 180\n% Width wide\n\x0c\x08" + bytes(16)), "corrupt header: sensor size"),
    "dat unknown event type": (lambda tmp: _text(tmp, "trigger.dat", b"% Height 180\n% Width 240\n\x0e\x08" + bytes(16)), "unknown encoding: DAT event type 0x0E"),
    "dat polarity": (lambda tmp: _text(tmp, "polarity.dat", b"% Height 180\n% Width 240\n\x0c\x08" + bytes(4) + (3 << 28).to_bytes(4, "little")), "polarity"),
}


def _text(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_input_cli(tmp_path, case):
    make, words = BAD_FILES[case]
    assert_info_fails(make(tmp_path), words)


# --- HDF5: DSEC, time ranges, width-first sizes -----------------------------------------

def test_dsec_blosc_round_trip(tmp_path):
    import h5py
    recording = formats.synthetic_recording(30_000, sensor=(480, 640), t0_us=1_600_000_000_123_456)
    path = str(tmp_path / "events.h5")
    formats.write_h5_dsec(path, recording)
    with h5py.File(path) as f:
        assert "32001" in f["events/x"]._filters  # Blosc's registered filter id
    events, sensor = load_events(path, sensor=(480, 640))
    assert events.encoding == "DSEC" and events.time_unit == "us" and sensor == (480, 640)
    assert_events(events, recording)


@pytest.mark.parametrize("layout", ["dsec", "flat"])
@pytest.mark.parametrize("window", ["inside", "from an event", "before", "after", "all"])
def test_h5_time_range(tmp_path, layout, window):
    """A window reads only its events: through ms_to_idx (DSEC) or by halving (flat)."""
    recording = formats.synthetic_recording(40_000, rate=200_000, t0_us=5_000_000_321)
    path = str(tmp_path / "events.h5")
    if layout == "dsec":
        formats.write_h5_dsec(path, recording)
    else:
        formats.write_h5_flat(path, recording)
    t = recording["t"]
    begin, end = {"inside": (t[1234] + 1e-7, t[31_000] + 2e-7), "from an event": (t[5000], t[5001]),
                  "before": (t[0] - 5, t[0] - 1), "after": (t[-1] + 1e-6, t[-1] + 5), "all": (t[0] - 1, t[-1] + 1)}[window]
    pieces = [piece for piece in event_data.stream_events(path, time_range=(begin, end)) if piece[0] == "events"]
    keep = (t >= begin) & (t < end)
    got = np.concatenate([piece[1] for piece in pieces]) if pieces else np.zeros(0)
    np.testing.assert_array_equal(got, t[keep])  # the reader itself cut the window
    if keep.any():
        events, _ = load_events(path, sensor=(180, 240), time_range=(begin, end))
        np.testing.assert_array_equal(events.x, recording["x"][keep])


def test_time_range_of_any_format(tmp_path, recording):
    formats.write_ecd_folder(tmp_path / "seq", recording)
    begin, end = recording["t"][100], recording["frame_t"][-1]
    events, _ = load_events(str(tmp_path / "seq"), sensor=(180, 240), time_range=(begin, end))
    keep = (recording["t"] >= begin) & (recording["t"] < end)
    np.testing.assert_array_equal(events.t, recording["t"][keep])
    np.testing.assert_array_equal(events.aps_t, recording["frame_t"][(recording["frame_t"] >= begin) & (recording["frame_t"] < end)])


def test_missing_hdf5plugin_is_one_clear_line(tmp_path):
    path = str(tmp_path / "events.h5")
    formats.write_h5_dsec(path, formats.synthetic_recording(2_000))
    code = ("import sys; sys.modules['hdf5plugin'] = None; sys.path.insert(0, sys.argv[1]); import event_data; "
            "event_data.main(['--info', sys.argv[2]])")
    result = subprocess.run([sys.executable, "-c", code, REPO, path], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: its data is compressed with a filter that h5py lacks (DSEC's are Blosc): pip install hdf5plugin"


def test_width_first_sensor_resolution(tmp_path, recording, capsys):
    """ssl_e2vid's rosbag_to_h5 writes [W, H] without an image topic: the events only fit that order."""
    import h5py
    path = str(tmp_path / "events.h5")
    formats.write_h5_event_cnn(path, recording)
    with h5py.File(path, "a") as f:
        f.attrs["sensor_resolution"] = [240, 180]
    events, sensor = load_events(path)
    assert sensor == events.sensor == (180, 240)
    assert_events(events, recording)
    note = capsys.readouterr().err
    assert "note:" in note and "read as [W, H]: H=180 rows, W=240 columns" in note
    formats.write_h5_event_cnn(path, recording)  # [H, W] as written: no note
    assert load_events(path)[1] == (180, 240) and capsys.readouterr().err == ""


def test_info_reports_unit_encoding_and_rate(tmp_path, recording):
    formats.write_h5_flat(tmp_path / "flat.h5", recording)
    formats.write_npy(tmp_path / "events.npy", recording)
    duration = recording["t"][-1] - recording["t"][0]
    for name, unit, encoding in (("flat.h5", "us", "flat"), ("events.npy", "s", "[N, 4] array (t, x, y, p)")):
        info = event_data.info(str(tmp_path / name), sensor=(180, 240))
        assert info["time_unit"] == unit and info["encoding"] == encoding
        assert info["event_rate"] == pytest.approx(len(recording["t"]) / duration)


# --- ROS 2 bags --------------------------------------------------------------------------

ROS2_CASES = {  # name -> (writer options, encoding reported)
    "db3 dvs": (dict(), "dvs_msgs/EventArray"),
    "mcap dvs": (dict(storage="mcap"), "dvs_msgs/EventArray"),
    "db3 dvs by rosbags": (dict(serializer="rosbags"), "dvs_msgs/EventArray"),
    "mcap evt3": (dict(storage="mcap", events="evt3", events_topic="/event_camera/events"), "event_camera_msgs/EventPacket evt3"),
    "db3 evt3": (dict(events="evt3", evt3_packet_words=333), "event_camera_msgs/EventPacket evt3"),
    "db3 mono": (dict(events="mono"), "event_camera_msgs/EventPacket mono"),
}


@pytest.mark.parametrize("case", ROS2_CASES)
def test_ros2_bag_round_trip(tmp_path, recording, case):
    options, encoding = ROS2_CASES[case]
    path = str(tmp_path / "bag")
    formats.write_ros2_bag(path, recording, **options)
    events, sensor = load_events(path)
    assert events.format == "ros2_bag" and events.encoding == encoding and sensor == (180, 240)
    assert_events(events, recording, t=formats.bag_time(recording["t_us"]))
    np.testing.assert_array_equal(events.aps_frames, recording["frames"])  # the bag's one image topic
    np.testing.assert_array_equal(events.aps_t, formats.bag_time(recording["frame_t_us"]))  # header stamps


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_ros2_storage_file_alone(tmp_path, recording, storage):
    """The .db3 or .mcap inside a bag folder reads on its own."""
    folder = tmp_path / "bag"
    formats.write_ros2_bag(str(folder), recording, storage=storage, events="evt3", image_topic=None)
    (storage_file,) = [name for name in os.listdir(folder) if name.endswith((".db3", ".mcap"))]
    events, _ = load_events(str(folder / storage_file))
    assert_events(events, recording, t=formats.bag_time(recording["t_us"]))


def test_ros2_event_array_is_the_cdr_serialisation(recording):
    """The numpy layout of a CDR EventArray, for 0, 1, 2 and many events, is rosbags' own."""
    typestore = event_formats.rosbag2.ros2_typestore()
    for part in (slice(100, 400), slice(7, 8), slice(9, 11), slice(3, 3)):
        stamp = int(recording["t_us"][part.start])
        raw = formats._cdr_event_array_bytes(recording, part, stamp)
        assert raw == formats._cdr_event_array_message(typestore, recording, part, stamp)
        arrays = event_formats.rosbag2._CdrEventArrays("bag", "/dvs/events")
        assert arrays.add(raw) == (180, 240, part.stop - part.start)
        t, x, y, polarity = arrays.take()
        np.testing.assert_array_equal(t, formats.bag_time(recording["t_us"][part]))
        np.testing.assert_array_equal(x, recording["x"][part])
        np.testing.assert_array_equal(polarity, recording["p"][part] > 0)


def test_ros2_topics(tmp_path, recording):
    path = str(tmp_path / "bag")
    formats.write_ros2_bag(path, recording, events_topic="/cam/events", image_topic="/cam/image")
    with pytest.raises(EventDataError, match="no topic /dvs/events in the bag"):
        load_events(path, events_topic="/dvs/events")
    with pytest.raises(EventDataError, match="topic /cam/image holds sensor_msgs/msg/Image, expected"):
        load_events(path, events_topic="/cam/image")
    assert load_events(path, images_topic="")[0].aps_frames is None
    assert len(load_events(path, events_topic="/cam/events", images_topic="/cam/image")[0].aps_frames) == len(recording["frames"])


def test_ros2_several_image_topics(tmp_path, recording, capsys):
    path = str(tmp_path / "bag")
    formats.write_ros2_bag(path, recording, image_topic=["/left/image", "/right/image"])
    assert load_events(path)[0].aps_frames is None
    assert "several image topics (/left/image, /right/image); no frames are read unless images_topic names one" in capsys.readouterr().err
    assert len(load_events(path, images_topic="/right/image")[0].aps_frames) == len(recording["frames"])


def test_ros2_bag_without_message_definitions(tmp_path, recording):
    """Bags recorded before ROS 2 Iron hold no definitions: the built-in ones read them."""
    import sqlite3
    path = tmp_path / "bag"
    formats.write_ros2_bag(str(path), recording, image_topic=None)
    (database,) = path.glob("*.db3")
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM message_definitions")
    events, _ = load_events(str(path))
    assert_events(events, recording, t=formats.bag_time(recording["t_us"]))


def _ros2_bag(tmp_path, name, cut=None, **options):
    path = tmp_path / name
    formats.write_ros2_bag(str(path), formats.synthetic_recording(3_000, rate=100_000), **options)
    if cut:
        (storage_file,) = [p for p in path.iterdir() if p.suffix in (".db3", ".mcap")]
        storage_file.write_bytes(storage_file.read_bytes()[:int(storage_file.stat().st_size * cut)])
    return path


def _rewritten_packets(tmp_path, name, events, change):
    """A bag of EventPackets written, then written again with `change(message)` applied to the last."""
    from rosbags.rosbag2 import Reader, Writer
    path = _ros2_bag(tmp_path, name, events=events, image_topic=None, events_topic="/event_camera/events")
    with Reader(path) as bag:
        connection, raws = bag.connections[0], [raw for _, _, raw in bag.messages()]
    typestore = event_formats.rosbag2.ros2_typestore()
    messages = [typestore.deserialize_cdr(raw, connection.msgtype) for raw in raws]
    change(messages[-1])
    formats.shutil.rmtree(path)
    with Writer(path, version=9) as writer:
        target = writer.add_connection("/event_camera/events", connection.msgtype, typestore=typestore)
        for record_ns, message in enumerate(messages, 1):
            writer.write(target, record_ns, bytes(typestore.serialize_cdr(message, connection.msgtype)))
    return path


def _set(message, **fields):
    for name, value in fields.items():
        setattr(message, name, value)


def _images_only_bag(tmp_path):
    from rosbags.rosbag2 import Writer
    path = tmp_path / "images_only"
    recording = formats.synthetic_recording(1_000)
    typestore = event_formats.rosbag2.ros2_typestore()
    image = recording["frames"][0]
    message = typestore.types["sensor_msgs/msg/Image"](
        header=formats._ros2_stamp(typestore, 0), height=image.shape[0], width=image.shape[1], encoding="mono8",
        is_bigendian=0, step=image.shape[1], data=image.reshape(-1))
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=typestore)
        writer.write(connection, 1, bytes(typestore.serialize_cdr(message, "sensor_msgs/msg/Image")))
    return path


def _cut_dsec(tmp_path):
    path = tmp_path / "dsec.h5"
    formats.write_h5_dsec(path, formats.synthetic_recording(50_000))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _corrupt_metadata(tmp_path):
    path = _ros2_bag(tmp_path, "metadata", image_topic=None)
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [not: a: mapping\n")
    return path


BAD_FILES.update({
    "ros2 db3 truncated": (lambda tmp: _ros2_bag(tmp, "cut_db3", cut=0.5), "unreadable or truncated bag"),
    "ros2 mcap truncated": (lambda tmp: _ros2_bag(tmp, "cut_mcap", cut=0.6, storage="mcap"), "unreadable or truncated bag"),
    "ros2 corrupt metadata": (_corrupt_metadata, "unreadable or truncated bag"),
    "ros2 no events topic": (_images_only_bag, "no events topic in the bag; name one (topics: /camera/image (sensor_msgs/msg/Image))"),
    "dsec truncated": (_cut_dsec, "unreadable or truncated HDF5 file"),
    "ros2 unknown packet encoding": (lambda tmp: _rewritten_packets(tmp, "trigger", "mono", lambda m: _set(m, encoding="trigger")),
                                     "unknown encoding 'trigger' of EventPacket on /event_camera/events"),
    "ros2 evt3 truncated word": (lambda tmp: _rewritten_packets(tmp, "odd", "evt3", lambda m: _set(m, events=m.events[:-1])),
                                 "truncated: the EVT 3.0 data on /event_camera/events ends inside a 2-byte word"),
    "ros2 mono not whole events": (lambda tmp: _rewritten_packets(tmp, "mono", "mono", lambda m: _set(m, events=m.events[:-3])),
                                   "mono EventPacket on /event_camera/events is not whole 8-byte events"),
})
