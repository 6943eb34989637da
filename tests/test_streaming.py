"""Recordings left on disk (event_data.EventFile) and runs written window batch by batch: the same
events, frames and errors as a recording loaded whole, with memory that does not grow with the
recording. The hour-long figures come from scripts/long_recording.py, not from a test."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import benchmark_io as formats
import event_data
from config import parse_config
import experiment
import plan
import command
import train
from conftest import REPO, shared_data
from event_data import EventDataError, EventFile, load_events
from test_bad_input import TINY, assert_error, assert_nothing_left, call


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


@pytest.fixture(scope="module")
def recording():
    return formats.synthetic_recording(300_000, rate=100_000)  # 3 s, APS frames at 20 Hz


WRITERS = {
    "npy": lambda folder, rec: formats.write_npy(os.path.join(folder, "events.npy"), rec) or os.path.join(folder, "events.npy"),
    "evreal_folder": lambda folder, rec: formats.write_evreal_folder(folder, rec) or folder,
    "h5_flat": lambda folder, rec: formats.write_h5_flat(os.path.join(folder, "e.h5"), rec) or os.path.join(folder, "e.h5"),
    "h5_dsec": lambda folder, rec: formats.write_h5_dsec(os.path.join(folder, "e.h5"), rec) or os.path.join(folder, "e.h5"),
    "h5_event_cnn": lambda folder, rec: formats.write_h5_event_cnn(os.path.join(folder, "e.h5"), rec) or os.path.join(folder, "e.h5"),
    "bag": lambda folder, rec: formats.write_bag(os.path.join(folder, "e.bag"), rec) or os.path.join(folder, "e.bag"),
    "bag_bz2": lambda folder, rec: formats.write_bag(os.path.join(folder, "e.bag"), rec, compression="bz2") or os.path.join(folder, "e.bag"),
}


@pytest.mark.parametrize("layout", sorted(WRITERS))
@pytest.mark.slow
def test_an_event_file_reads_what_loading_the_whole_file_gives(tmp_path, recording, layout, monkeypatch):
    monkeypatch.setattr(event_data, "MARK_STRIDE", 1 << 10)  # many marks and blocks in a small file
    monkeypatch.setattr(event_data, "BATCH", 1 << 16)
    path = WRITERS[layout](str(tmp_path), recording)
    whole, sensor = load_events(path, sensor=(180, 240))
    lazy = EventFile(path, sensor=(180, 240))
    assert lazy.sensor == sensor and len(lazy) == len(whole) and lazy.format == whole.format
    assert (lazy.encoding, lazy.time_unit) == (whole.encoding, whole.time_unit)
    t = whole.t
    # every kind of query: on an event, between two, on runs of equal times, on a mark, outside
    queries = np.concatenate([t[[0, 1, 1023, 1024, 1025, 150_000, -2, -1]], t[[5, 70_000]] + 1e-7, t[[9, 90_000]] - 1e-7,
                              [t[0] - 1.0, t[-1] + 1.0], np.random.default_rng(0).uniform(t[0], t[-1], 50)])
    for side in ("left", "right"):
        np.testing.assert_array_equal(lazy.positions(queries, side), whole.positions(queries, side))
        assert lazy.positions(float(t[500]), side) == whole.positions(float(t[500]), side)
    for first, last in ((0, 1), (1000, 70_000), (299_000, 300_000)):
        part, expected = lazy.rows(first, last), whole.rows(first, last)
        for column in "txyp":
            np.testing.assert_array_equal(getattr(part, column), getattr(expected, column))
            assert getattr(part, column).dtype == getattr(expected, column).dtype
    np.testing.assert_array_equal(lazy.times_at([0, 7, len(t) - 1]), t[[0, 7, -1]])
    if whole.aps_frames is None:
        assert lazy.aps_frames is None
    else:
        np.testing.assert_array_equal(lazy.aps_t, whole.aps_t)
        assert len(lazy.aps_frames) == len(whole.aps_frames)
        for k in (0, len(whole.aps_frames) - 1):
            np.testing.assert_array_equal(np.asarray(lazy.aps_frames[k]), whole.aps_frames[k])


@pytest.mark.parametrize("name", ["slider_depth_first200k.bag", "slider_depth_first200k_bz2_by_rosbag.bag"])
@pytest.mark.slow
def test_a_real_bag_is_read_by_time_range_as_it_loads(name):
    path = shared_data("bags", name)
    whole, _ = load_events(path)
    lazy = EventFile(path)
    assert lazy.sensor == whole.sensor and len(lazy) == len(whole) and len(lazy.aps_frames) == len(whole.aps_frames)
    queries = np.random.default_rng(1).uniform(whole.t[0], whole.t[-1], 200)
    for side in ("left", "right"):
        np.testing.assert_array_equal(lazy.positions(queries, side), whole.positions(queries, side))
    for first, last in ((0, 1), (5, 150_000), (199_990, 200_000)):
        part, expected = lazy.rows(first, last), whole.rows(first, last)
        for column in "txyp":
            np.testing.assert_array_equal(getattr(part, column), getattr(expected, column))


def test_microsecond_time_stamps_in_an_npy_are_read_as_such(tmp_path, recording, capsys):
    path = str(tmp_path / "events.npy")
    np.save(path, np.stack([recording["t_us"], recording["x"], recording["y"], recording["p"]], axis=1).astype(np.float64))
    lazy = EventFile(path, sensor=(180, 240))
    assert lazy.time_unit == "s" and "read as microseconds" in capsys.readouterr().err
    np.testing.assert_allclose(lazy.times_at([0, 1000]), recording["t"][[0, 1000]], rtol=1e-12)
    assert lazy.positions(recording["t"][1000] + 1e-9, "right") == np.searchsorted(recording["t"], recording["t"][1000], "right")


@pytest.mark.parametrize("spoil, words", [
    (lambda rows: rows.__setitem__((123_456, 0), rows[123_456, 0] - 1.0), "time stamps are not sorted: event 123456"),
    (lambda rows: rows.__setitem__((200_001, 0), np.nan), "NaN or inf at event 200001"),
    (lambda rows: rows.__setitem__((250_000, 1), 240), "event 250000 at x=240, y="),
    (lambda rows: rows.__setitem__((3, 2), -1), "y coordinate -1"),
    (lambda rows: rows.__setitem__((4, 3), 7), "polarity"),
])
def test_an_event_file_refuses_what_loading_refuses(tmp_path, recording, spoil, words):
    rows = np.stack([recording["t"], recording["x"], recording["y"], recording["p"]], axis=1).astype(np.float64)
    spoil(rows)
    path = str(tmp_path / "events.npy")
    np.save(path, rows)
    for read in (lambda: load_events(path, sensor=(180, 240)), lambda: EventFile(path, sensor=(180, 240))):
        with pytest.raises(EventDataError, match=words.replace("(", r"\(")):
            read()


def test_formats_read_whole_are_named(tmp_path, recording):
    path = str(tmp_path / "events.txt")
    formats.write_e2vid_txt(path, recording)
    with pytest.raises(EventDataError, match="cannot be read a window at a time; convert"):
        EventFile(path)
    assert isinstance(event_data.open_events(path), event_data.Events)  # and open_events loads them whole


def read_frames(folder):
    names = sorted(os.listdir(os.path.join(folder, "frames")))
    return np.stack([cv2.imread(os.path.join(folder, "frames", name), cv2.IMREAD_GRAYSCALE) for name in names])


@pytest.mark.slow
def test_a_windowed_run_from_disk_writes_the_frames_of_the_in_memory_fit(tmp_path, recording, monkeypatch):
    """--window streams an EVREAL folder batch by batch; reconstruct() fits the loaded recording
    at once. Same seed, same events: the same frames, byte for byte, and the networks beyond the
    held budget (set to one network here) are in networks/ and render the same frames again."""
    path = WRITERS["evreal_folder"](str(tmp_path / "rec"), recording)
    flags = ["--window", "1", "--windows_batch", "2", "--frames_at", "aps", *TINY]
    config = parse_config(["-d", path, "-o", str(tmp_path / "out"), "-n", "run", *flags])
    monkeypatch.setattr(experiment, "HELD_NETWORK_BYTES", 1)
    summary = train.run(config)
    assert len(summary["data"]["spans"]) == 3 and summary["timings"]["read_s_per_window"] > 0
    folder = summary["folder"]
    expected = train.reconstruct(load_events(path)[0], config)
    np.testing.assert_array_equal(read_frames(folder), expected.frames)
    saved = sorted(os.listdir(os.path.join(folder, "networks")))
    assert saved == [f"window-{k:06d}.pt" for k in (1, 2, 3)]
    states = experiment.load_checkpoint(os.path.join(folder, "model.pt"))[1]
    for state, fitted in zip([states[k] for k in range(3)], expected.states):
        assert all(torch.equal(state[name], fitted[name]) for name in fitted)
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert metrics["n_frames"] == len(expected.frames) - 1  # every APS frame but the last is scored (EVREAL)

    assert call(train.main, "-d", path, "-o", str(tmp_path / "out"), "-n", "again", "--render_only",
                os.path.join(folder, "model.pt"), "--no_video") == 0
    np.testing.assert_array_equal(read_frames(str(tmp_path / "out" / "again")), expected.frames)


def test_a_checkpoint_naming_files_outside_networks_is_refused(tmp_path, recording, capsys):
    path = WRITERS["evreal_folder"](str(tmp_path / "rec"), recording)
    torch.save({"config": {}, "windows": ["../../etc/passwd"], "spans": None}, tmp_path / "model.pt")
    status = call(train.main, "-d", path, "-o", str(tmp_path / "out"), "--render_only", str(tmp_path / "model.pt"))
    assert_error(status, capsys.readouterr().err, 2, "model.pt", "neither saved nor named")
    torch.save({"config": train.dataclasses.asdict(parse_config(["-d", path, *TINY])), "windows": ["networks/window-000001.pt"],
                "spans": None}, tmp_path / "model.pt")
    status = call(train.main, "-d", path, "-o", str(tmp_path / "out"), "-n", "r", "--render_only", str(tmp_path / "model.pt"))
    assert_error(status, capsys.readouterr().err, 2, "window-000001.pt", "missing")
    assert_nothing_left(tmp_path / "out")


def test_a_run_that_cannot_fit_on_the_disk_is_refused_before_any_work(tmp_path, recording, capsys, monkeypatch):
    path = WRITERS["evreal_folder"](str(tmp_path / "rec"), recording)
    usage = plan.shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda folder: usage._replace(free=10 << 20))
    status = call(train.main, "-d", path, "-o", str(tmp_path / "out"), "-n", "run", "--window", "0.3", *TINY)
    assert_error(status, capsys.readouterr().err, 1, str(tmp_path / "out" / "run"), "10 networks", "10 MB is free", "--window")
    assert_nothing_left(tmp_path / "out")


MEMORY_PROBE = """
import sys
sys.path.insert(0, {repo!r})
import event_data

def peak_kb():  # VmHWM starts afresh at exec, where ru_maxrss keeps the parent's peak at the fork
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

started = peak_kb()
events = event_data.EventFile({path!r}, sensor=(180, 240))
opened = peak_kb()
step = len(events) // 40
for first in range(0, len(events), step):
    begin, end = events.times_at([first, min(first + step, len(events)) - 1])
    a, b = events.positions([begin, end], "left")
    part = events.rows(a, b)
print(started, opened, peak_kb())
"""


def test_reading_a_recording_window_by_window_holds_one_window(tmp_path):
    """20 M events (260 MB as EVREAL columns) opened and read in 40 windows: the reader's peak
    memory grows by about one window's events (a few MB), not by the recording."""
    recording = formats.synthetic_recording(20_000_000, frame_rate=0.1, seed=3)
    folder = str(tmp_path / "rec")
    formats.write_evreal_folder(folder, recording)
    del recording
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE.format(repo=REPO, path=folder)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    started_kb, opened_kb, peak_kb = (int(v) for v in result.stdout.split())
    assert opened_kb - started_kb < 120_000, f"opening grew the peak by {(opened_kb - started_kb) / 1024:.0f} MB"
    assert peak_kb - opened_kb < 40_000, f"reading windows grew the peak by {(peak_kb - opened_kb) / 1024:.0f} MB"
