"""Readers: every format gives back exactly the events and frames written into it, the real
sample files read as they should, and bad files fail with one line that names them."""

import os

import cv2
import h5py
import numpy as np
import pytest

from conftest import assert_info_fails, shared_data
import benchmark_io as formats
import event_data
import event_formats.aedat
import event_formats.text
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


def assert_frames(events, recording, aps_t=None):
    np.testing.assert_array_equal(events.aps_frames, recording["frames"])
    np.testing.assert_array_equal(events.aps_t, recording["frame_t"] if aps_t is None else aps_t)


# --- round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["ecd_folder", "ecd_txt", "ecd_zip", "ecd_zip_in_folder"])
def test_ecd_round_trip(tmp_path, recording, layout):
    if layout == "ecd_zip":
        path = tmp_path / "seq.zip"
        formats.write_ecd_zip(path, recording)
    elif layout == "ecd_zip_in_folder":
        path = tmp_path / "seq.zip"
        formats.write_ecd_zip(path, recording, top_folder="seq")
    else:
        formats.write_ecd_folder(tmp_path / "seq", recording)
        path = tmp_path / "seq" / ("events.txt" if layout == "ecd_txt" else "")
    events, sensor = load_events(str(path), sensor=(180, 240))
    assert events.format == layout.replace("_in_folder", "")
    assert_events(events, recording)
    assert_frames(events, recording)
    assert sensor == (180, 240)


@pytest.mark.parametrize("zipped", [False, True])
def test_e2vid_round_trip(tmp_path, recording, zipped):
    path = tmp_path / ("events.zip" if zipped else "events.txt")
    (formats.write_e2vid_zip if zipped else formats.write_e2vid_txt)(path, recording)
    events, sensor = load_events(str(path))
    assert events.format == ("e2vid_zip" if zipped else "e2vid_txt")
    assert_events(events, recording)
    assert events.sensor == sensor == (180, 240)


def test_text_blocks_and_odd_lines(tmp_path, monkeypatch):
    """Many blocks, a last line without newline, and lines the fast parser leaves to the general
    one (CRLF, tabs, signs, exponents, blank lines, long times) all read as Python reads them."""
    monkeypatch.setattr(event_formats.text, "_TXT_BLOCK", 64)
    lines = ["0.000001000 1 2 0", "1e-3 5 6 -1", "", "0.002000000 7 8 1\r", "0.5\t3 4 1",
             "3 11 12 1", "4.25 13 14 0", "86399.12345678901 9 10 0"]
    path = tmp_path / "events.txt"
    path.write_text("\n".join(lines))  # no final newline
    events, _ = load_events(str(path), sensor=(20, 20))
    rows = [[float(v) for v in line.split()] for line in lines if line.strip()]
    np.testing.assert_array_equal(events.t, [row[0] for row in rows])
    np.testing.assert_array_equal(events.x, [row[1] for row in rows])
    np.testing.assert_array_equal(events.p, [1 if row[3] > 0 else -1 for row in rows])


def test_fast_text_parser_matches_python(recording):
    block = b"".join(formats._event_lines(recording))
    t, x, y, p = event_formats.text._parse_txt_fast(block)
    rows = np.array([[float(v) for v in line.split()] for line in block.decode().splitlines()])
    np.testing.assert_array_equal(t, rows[:, 0])
    np.testing.assert_array_equal(np.stack([x, y, p], axis=1), rows[:, 1:])


def test_npy_and_evreal_round_trip(tmp_path, recording):
    formats.write_npy(tmp_path / "events.npy", recording)
    events, _ = load_events(str(tmp_path / "events.npy"), sensor=(180, 240))
    assert_events(events, recording)
    formats.write_evreal_folder(tmp_path / "evreal", recording)
    events, sensor = load_events(str(tmp_path / "evreal"))
    assert events.format == "evreal_folder" and sensor == (180, 240)
    assert_events(events, recording)
    assert_frames(events, recording)


def test_h5_event_cnn_round_trip(tmp_path, recording):
    formats.write_h5_event_cnn(tmp_path / "events.h5", recording)
    events, sensor = load_events(str(tmp_path / "events.h5"))
    assert sensor == (180, 240)
    assert_events(events, recording)
    assert_frames(events, recording)


@pytest.mark.parametrize("group, t_offset_us", [("", 0), ("events", 0), ("", 1_600_000_000_000_000)])
def test_h5_flat_round_trip(tmp_path, group, t_offset_us):
    recording = formats.synthetic_recording(5_000, t0_us=t_offset_us + 123)
    formats.write_h5_flat(tmp_path / "flat.h5", recording, group=group, t_offset_us=t_offset_us)
    events, _ = load_events(str(tmp_path / "flat.h5"), sensor=(180, 240))
    assert_events(events, recording)  # integer microseconds -> seconds


@pytest.mark.parametrize("compression, serializer", [(None, "rosbags"), ("bz2", "rosbags"), ("lz4", "numpy"), (None, "numpy")])
def test_bag_round_trip(tmp_path, recording, compression, serializer):
    path = str(tmp_path / "events.bag")
    formats.write_bag(path, recording, compression=compression, serializer=serializer)
    events, sensor = load_events(path)
    assert sensor == (180, 240)
    assert_events(events, recording, t=formats.bag_time(recording["t_us"]))
    # header stamps, not the record times (which the writer puts 5 ms later)
    assert_frames(events, recording, aps_t=formats.bag_time(recording["frame_t_us"]))


def test_numpy_event_array_is_the_ros_serialisation(recording):
    part = slice(100, 400)
    typestore = formats.dvs_typestore()
    assert formats._event_array_bytes(7, recording, part) == bytes(formats._event_array_message(typestore, 7, recording, part))


def test_bag_topics_and_encodings(tmp_path):
    recording = formats.synthetic_recording(3_000, sensor=(6, 8), rate=20_000)
    rgb = np.random.default_rng(1).integers(0, 256, recording["frames"].shape + (3,), dtype=np.uint8)
    # a uniform colour seen through an RGGB mosaic
    mosaic = np.empty(recording["frames"].shape, np.uint8)
    mosaic[:, 0::2, 0::2], mosaic[:, 0::2, 1::2], mosaic[:, 1::2, 0::2], mosaic[:, 1::2, 1::2] = 200, 100, 100, 50
    path = str(tmp_path / "topics.bag")
    formats.write_bag(path, recording, events_topic="/cam/events", image_topics={
        "/cam/gray": ("mono8", recording["frames"]), "/cam/rgb": ("rgb8", rgb), "/cam/bgr": ("bgr8", rgb),
        "/cam/bayer": ("bayer_rggb8", mosaic)})
    with pytest.raises(EventDataError, match="no topic /dvs/events"):
        load_events(path)
    events, _ = load_events(path, events_topic="/cam/events", images_topic="/cam/gray")
    assert_frames(events, recording, aps_t=formats.bag_time(recording["frame_t_us"]))
    for topic in ("/cam/rgb", "/cam/bgr"):
        np.testing.assert_array_equal(load_events(path, events_topic="/cam/events", images_topic=topic)[0].aps_frames, rgb)
    bayer = load_events(path, events_topic="/cam/events", images_topic="/cam/bayer")[0].aps_frames
    np.testing.assert_array_equal(bayer[:, 2:-2, 2:-2], np.broadcast_to([200, 100, 50], bayer[:, 2:-2, 2:-2].shape))
    assert load_events(path, events_topic="/cam/events")[0].aps_frames is None  # no /dvs/image_raw: no frames


def test_bag_events_out_of_order_are_sorted_stably(tmp_path, capsys):
    recording = formats.synthetic_recording(4_000, rate=100_000)
    t_us = recording["t_us"].copy()
    later = np.flatnonzero(t_us // 1000 == t_us[5] // 1000)[-1]  # in the same 1 ms message
    assert t_us[later] > t_us[6]
    t_us[[5, later]] = t_us[[later, 5]]  # equal times elsewhere test that the sort is stable
    path = str(tmp_path / "unsorted.bag")
    formats.write_bag(path, dict(recording, t_us=t_us))
    events, _ = load_events(path)
    order = np.argsort(t_us, kind="stable")
    np.testing.assert_array_equal(events.t, formats.bag_time(t_us)[order])
    np.testing.assert_array_equal(events.x, recording["x"][order])
    np.testing.assert_array_equal(events.y, recording["y"][order])
    assert "not in time order" in capsys.readouterr().err


def test_frame_time_repair(capsys):
    repaired = event_data.repair_frame_times([0.0, 1.0, 0.5, 3.0, 2.0], "seq")
    np.testing.assert_array_equal(repaired, [0.0, 1.0, 2.0, 3.0, 3.0])
    assert capsys.readouterr().err.count("warning: seq: APS frame") == 2


# --- real files -------------------------------------------------------------------------

def test_real_bags_agree():
    plain, _ = load_events(shared_data("bags", "slider_depth_first200k.bag"))
    bz2, _ = load_events(shared_data("bags", "slider_depth_first200k_bz2_by_rosbag.bag"))
    assert len(plain) == len(bz2) == 200_000 and len(plain.aps_frames) == len(bz2.aps_frames) == 10
    for name in ("t", "x", "y", "p", "aps_frames", "aps_t"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(bz2, name))
    assert plain.sensor == (180, 240)


def test_real_slider_depth_and_bag_agree():
    folder, sensor = load_events(shared_data("slider_depth"))
    assert len(folder) == 1_078_541 and len(folder.aps_frames) == 87 and sensor == (180, 240)
    bag, _ = load_events(shared_data("bags", "slider_depth_first200k.bag"))
    # the bag is the first 200k events and 10 frames, every stamp shifted by +1000 s
    np.testing.assert_allclose(bag.t - 1000.0, folder.t[:200_000], rtol=0, atol=1e-9)
    np.testing.assert_allclose(bag.aps_t - 1000.0, folder.aps_t[:10], rtol=0, atol=1e-9)
    for name in ("x", "y", "p"):
        np.testing.assert_array_equal(getattr(bag, name), getattr(folder, name)[:200_000])
    np.testing.assert_array_equal(bag.aps_frames, folder.aps_frames[:10])


def test_real_aedat4():
    events, sensor = load_events(shared_data("aedat4", "sample.aedat4"))
    assert len(events) == 111_954 and sensor == (240, 320) and events.aps_frames is None
    assert 0.55 < events.t[-1] - events.t[0] < 0.62
    assert set(np.unique(events.p)) == {-1, 1}


def test_aedat_frames():
    """No frame-bearing AEDAT4 sample is at hand, so the packet conversion is checked alone."""
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    timing = {"t": 10, "exposure_begin_t": 1_000_000, "exposure_end_t": 1_000_500}
    t, image = event_formats.aedat._aedat_frame({**timing, "format": "BGR", "pixels": rgb[..., ::-1]})
    assert t == 1.00025 and (image == rgb).all()
    t, image = event_formats.aedat._aedat_frame({"t": 2_000_000, "format": "RGBA", "pixels": np.dstack([rgb, rgb[..., :1]])})
    assert t == 2.0 and (image == rgb).all()
    gray = rgb[..., 0]
    assert (event_formats.aedat._aedat_frame({"t": 0, "format": "L", "pixels": gray[..., None]})[1] == gray).all()


# --- bad input --------------------------------------------------------------------------

def _bad_bag(tmp_path, name, truncate=False, **options):
    recording = formats.synthetic_recording(3_000, rate=100_000)
    if options.pop("empty", False):
        recording.update({key: recording[key][:0] for key in ("t_us", "x", "y", "p")})
    path = tmp_path / name
    formats.write_bag(path, recording, **options)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _bad_h5(tmp_path, name, truncate=False):
    path = tmp_path / name
    formats.write_h5_event_cnn(path, formats.synthetic_recording(3_000, rate=100_000))
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with h5py.File(path, "a") as f:
            del f["events/ps"]
    return path


def _text_file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path / name


BAD_FILES = {  # case -> (make(tmp_path) -> path, words the one-line error must hold)
    "truncated bag": (lambda tmp: _bad_bag(tmp, "truncated.bag", truncate=True), "truncated"),
    "missing topic": (lambda tmp: _bad_bag(tmp, "topic.bag", events_topic="/other/events"), "no topic /dvs/events"),
    "bag without events": (lambda tmp: _bad_bag(tmp, "empty.bag", empty=True), "no events"),
    "truncated h5": (lambda tmp: _bad_h5(tmp, "truncated.h5", truncate=True), "truncated"),
    "h5 missing a dataset": (lambda tmp: _bad_h5(tmp, "missing.h5"), "missing dataset"),
    "malformed txt line": (lambda tmp: _text_file(tmp, "events.txt", "0.1 1 2 1\n0.2 3 4 1\n0.3 5 six 0\n0.4 7 8 1\n"), "line 3"),
    "unknown extension": (lambda tmp: _text_file(tmp, "events.xyz", "0.1 1 2 1\n"), "unknown event format"),
    "outside the sensor": (lambda tmp: _text_file(tmp, "small.txt", "4 3\n0.1 1 2 1\n0.2 9 1 0\n"), "outside the 4x3"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_input_cli(tmp_path, case):
    make, words = BAD_FILES[case]
    assert_info_fails(make(tmp_path), words)


def test_bad_bag_image_is_named(tmp_path):
    recording = formats.synthetic_recording(2_000, sensor=(4, 4), rate=100_000)
    path = str(tmp_path / "odd.bag")
    formats.write_bag(path, recording, image_topics={"/dvs/image_raw": ("yuv422", recording["frames"])})
    with pytest.raises(EventDataError, match="image encoding 'yuv422' on /dvs/image_raw is not supported"):
        load_events(path)


def test_image_list_is_checked(tmp_path, recording):
    formats.write_ecd_folder(tmp_path / "seq", recording)
    os.remove(tmp_path / "seq" / "images" / "frame_00000001.png")
    with pytest.raises(EventDataError, match="frame_00000001.png: missing or unreadable image"):
        load_events(str(tmp_path / "seq"))
    cv2.imwrite(str(tmp_path / "seq" / "images" / "frame_00000001.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(EventDataError, match="APS frames have different sizes"):
        load_events(str(tmp_path / "seq"))
