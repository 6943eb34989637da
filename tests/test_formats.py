"""Readers of what cameras and datasets write: Prophesee RAW (EVT 2.0, 2.1, 3.0) and DAT,
DSEC's Blosc-compressed HDF5, width-first sensor sizes, ROS 2 bags. Files are written by the
writers in scripts/benchmark_io.py or word by word here; the real samples are read when they
are in ../shared/data."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, shared_data
import benchmark_io as formats
import event_data
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
    assert len(words) * words.itemsize < 0.5 * len(recording["t"]) * (2 if encoding == "evt3" else 8)  # packed
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
        monkeypatch.setattr(event_data, "_RAW_BLOCK", block)
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
    monkeypatch.setattr(event_data, "_RAW_BLOCK", 101)
    pieces = load_events(path)[0]
    for name in "txyp":
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name))


def test_decoders_agree_with_the_writers_at_scale():
    """Many blocks, every word type the writers make, compared event by event (not via files)."""
    recording = formats.synthetic_recording(300_000, rate=500_000)
    for words, decoder in ((formats.evt3_words(recording), event_data.Evt3Decoder()),
                           (formats.evt2_words(recording), event_data.Evt2Decoder()),
                           (formats.evt21_words(recording), event_data.Evt21Decoder(legacy=True))):
        data = words.tobytes()
        parts = [decoder.feed(data[start:start + 65_537]) for start in range(0, len(data), 65_537)]
        t, x, y, p = (np.concatenate(column) for column in zip(*parts))
        np.testing.assert_array_equal(t, recording["t_us"])
        np.testing.assert_array_equal(x, recording["x"])
        np.testing.assert_array_equal(y, recording["y"])
        np.testing.assert_array_equal(p, recording["p"])


def test_bit_count_without_numpy_2():
    words = np.random.default_rng(0).integers(0, 2 ** 63, 1000, dtype=np.int64).view(np.uint64) * np.uint64(3)
    expected = [bin(int(w)).count("1") for w in words]
    np.testing.assert_array_equal(event_data._bit_count_by_bytes(words), expected)


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
    "raw truncated inside a word": (lambda tmp: _raw_file(tmp, "cut.raw", cut=1), "truncated: the file ends 1 bytes into a 2-byte EVT 3.0 word"),
    "raw truncated in its header": (lambda tmp: _text(tmp, "head.raw", b"% evt 3.0\n% geometry 64"), "corrupt header: the file ends inside its header"),
    "raw binary header": (lambda tmp: _text(tmp, "binary.raw", b"%\x00\x81 evt\n" + bytes(8)), "corrupt header: the first '%' line"),
    "raw header names no encoding": (lambda tmp: _raw_file(tmp, "none.raw", header=b"% geometry 240x180\n% end\n"), "corrupt header: no '% evt'"),
    "raw header bad geometry": (lambda tmp: _raw_file(tmp, "geometry.raw", header=b"% evt 3.0\n% geometry 240 by 180\n"), "corrupt header: sensor size"),
    "raw unknown encoding": (lambda tmp: _raw_file(tmp, "evt4.raw", header=b"% format EVT4;height=180;width=240\n% end\n"), "unknown encoding 'EVT4'"),
    "raw unknown evt version": (lambda tmp: _raw_file(tmp, "evt9.raw", header=b"% evt 9.0\n% end\n"), "unknown encoding 'evt 9.0'"),
    "dat truncated": (lambda tmp: _raw_file(tmp, "cut.dat", cut=3), "truncated: the file ends 5 bytes into a 8-byte DAT event"),
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
    path = make(tmp_path)
    result = subprocess.run([sys.executable, os.path.join(REPO, "event_data.py"), "--info", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and words in lines[0], result.stderr
    assert result.stdout == ""
