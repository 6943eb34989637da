"""Converters: each dataset's script turns a folder of small generated downloads into the
authors' layout, exactly, all or nothing, and what it writes reads back like its source."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
import benchmark_io as formats
import convert_common
from test_evreal_layout import assert_evreal_layout
import event_data
import event_formats.rosbag1
from datasets import DATASETS, dataset_named, evaluated_sequences, find_sequence


def convert(dataset, raw, out, *flags):
    script = os.path.join(REPO, "scripts", f"convert_{dataset}.py")
    return subprocess.run([sys.executable, script, "--raw_data_dir", str(raw), "--output_data_dir", str(out), *flags],
                          capture_output=True, text=True)


def assert_converted(folder, recording, t, aps_t, frames_key="images", frames=None):
    """events.npy holds exactly (t, x, y, +-1) and KEY.txt names KEY/frame_XXXXXXXX.png files
    holding the frames, at their times."""
    events = np.load(os.path.join(folder, "events.npy"))
    assert events.dtype == np.float64 and events.shape == (len(t), 4)
    np.testing.assert_array_equal(events[:, 0], t)
    np.testing.assert_array_equal(events[:, 1], recording["x"])
    np.testing.assert_array_equal(events[:, 2], recording["y"])
    np.testing.assert_array_equal(events[:, 3], recording["p"])
    lines = [line.split() for line in open(os.path.join(folder, f"{frames_key}.txt")).read().splitlines()]
    assert [name for _, name in lines] == [f"{frames_key}/frame_{i:08d}.png" for i in range(len(aps_t))]
    np.testing.assert_allclose([float(time) for time, _ in lines], aps_t, rtol=0, atol=1e-9)
    written = [cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED) for _, name in lines]
    expected = recording["frames"] if frames is None else frames
    for image, frame in zip(written, expected):
        np.testing.assert_array_equal(image[..., ::-1] if image.ndim == 3 else image, frame)


def assert_info_agrees(converted, source, **options):
    mine, theirs = event_data.info(str(converted)), event_data.info(str(source), **options)
    for key in ("num_events", "sensor", "t_first", "t_last", "num_frames"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-9), key


def test_dataset_table():
    assert DATASETS["IJRR"]["sensor"] == DATASETS["HQF"]["sensor"] == (180, 240)
    assert DATASETS["CED"]["sensor"] == (260, 346) and DATASETS["CED"]["color"]
    assert DATASETS["AED"]["event_thresh"] == 0.25
    assert evaluated_sequences("IJRR")["office_zigzag"] == (5.0, 12.0)
    assert evaluated_sequences("IJRR")["slider_depth"] == (1.0, 2.5)
    assert len(evaluated_sequences("HQF")) == 14 and evaluated_sequences("HQF")["desk"][1] == float("inf")
    assert evaluated_sequences("MVSEC")["indoor_flying4_data"] == (10.0, 19.8)  # EVREAL's folder name
    assert find_sequence("MVSEC", "indoor_flying4") == find_sequence("MVSEC", "indoor_flying4_data") == "indoor_flying4_data"
    assert dataset_named("ECD") == dataset_named("IJRR") == "IJRR"


def test_ijrr_text_zip_and_bags(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    text, zipped, bagged = (formats.synthetic_recording(6_000, rate=50_000, seed=seed) for seed in range(3))
    formats.write_ecd_folder(raw / "boxes_6dof", text)
    formats.write_ecd_zip(raw / "shapes_6dof.zip", zipped, top_folder="shapes_6dof")
    formats.write_bag(raw / "poster_6dof.bag", bagged, compression="lz4")
    formats.write_bag(raw / "my_own_recording.bag", bagged)
    result = convert("IJRR", raw, out)
    assert result.returncode == 0, result.stderr
    assert "not a known IJRR sequence" in result.stderr
    assert sorted(os.listdir(out)) == ["boxes_6dof", "my_own_recording", "poster_6dof", "shapes_6dof"]
    assert_converted(out / "boxes_6dof", text, text["t"], text["frame_t"])
    assert_converted(out / "shapes_6dof", zipped, zipped["t"], zipped["frame_t"])
    assert_converted(out / "poster_6dof", bagged, formats.bag_time(bagged["t_us"]), formats.bag_time(bagged["frame_t_us"]))
    assert_info_agrees(out / "boxes_6dof", raw / "boxes_6dof", sensor=(180, 240))
    assert_info_agrees(out / "poster_6dof", raw / "poster_6dof.bag")


def test_hqf_picks_sequences(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    desk = formats.synthetic_recording(4_000, rate=50_000)
    raw.mkdir()
    formats.write_bag(raw / "desk.bag", desk, compression="bz2")
    formats.write_bag(raw / "boxes.bag", formats.synthetic_recording(1_000))
    result = convert("HQF", raw, out, "--sequences", "desk", "not_a_sequence")
    assert result.returncode == 2  # bad input
    assert result.stderr.strip().splitlines() == [f"error: {raw / 'not_a_sequence'}: no HQF recording of this sequence (.bag, .h5)"]
    assert os.listdir(out) == ["desk"]
    assert_converted(out / "desk", desk, formats.bag_time(desk["t_us"]), formats.bag_time(desk["frame_t_us"]))


def test_ced_colour_frames(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    recording = formats.synthetic_recording(5_000, sensor=(260, 346), rate=50_000)
    colour = np.random.default_rng(2).integers(0, 256, recording["frames"].shape + (3,), dtype=np.uint8)
    formats.write_bag(raw / "simple_fruit.bag", recording, image_topics={
        "/dvs/image_raw": ("mono8", recording["frames"]), "/dvs/image_color": ("bgr8", colour)})
    result = convert("CED", raw, out)
    assert result.returncode == 0, result.stderr
    folder = out / "simple_fruit"
    aps_t = formats.bag_time(recording["frame_t_us"])
    assert_converted(folder, recording, formats.bag_time(recording["t_us"]), aps_t)
    assert_converted(folder, recording, formats.bag_time(recording["t_us"]), aps_t, "color_images", colour)
    assert event_data.info(str(folder))["sensor"] == [260, 346]
    result = convert("CED", raw, tmp_path / "evreal", "--format", "evreal")  # one stream of frames: the gray ones
    assert result.returncode == 0 and f"{len(colour)} colour frames are not written" in result.stderr, result.stderr
    assert_same_recording(tmp_path / "evreal" / "simple_fruit", folder)


@pytest.mark.slow
def test_no_overwrite_unless_asked(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    formats.write_bag(raw / "desk.bag", formats.synthetic_recording(1_000))
    assert convert("HQF", raw, out).returncode == 0
    (out / "desk" / "mine.txt").write_text("keep me")
    result = convert("HQF", raw, out)
    assert result.returncode == 2 and "already exists (pass --overwrite" in result.stderr
    assert (out / "desk" / "mine.txt").exists()
    assert convert("HQF", raw, out, "--overwrite").returncode == 0
    assert not (out / "desk" / "mine.txt").exists() and (out / "desk" / "events.npy").exists()


@pytest.mark.parametrize("problem, words", [("truncated", "truncated"), ("outside the sensor", "outside the 240x180")])
def test_failure_leaves_no_output(tmp_path, problem, words):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    recording = formats.synthetic_recording(20_000, sensor=(180, 320), rate=50_000)
    if problem == "outside the sensor":
        recording["sensor"] = (180, 240)  # the messages say 240 wide, the events reach x = 319
    formats.write_bag(raw / "desk.bag", recording)
    if problem == "truncated":
        data = (raw / "desk.bag").read_bytes()
        (raw / "desk.bag").write_bytes(data[: len(data) * 2 // 3])
    result = convert("HQF", raw, out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {raw / 'desk.bag'}: ") and words in lines[0], result.stderr
    assert not out.exists()  # neither the sequence nor its staging folder, nor the output folder made for them


def test_streaming_sorts_and_repairs(tmp_path, monkeypatch, capsys):
    """Written a small batch at a time, events out of order come out sorted (stably), and a
    decreasing frame time is replaced by the mean of its neighbours."""
    monkeypatch.setattr(event_data, "BATCH", 1_000)
    monkeypatch.setattr(event_formats.rosbag1, "BATCH", 1_000)
    monkeypatch.setattr(convert_common, "BATCH", 700)
    recording = formats.synthetic_recording(20_000, rate=50_000)
    t_us, frame_t_us = recording["t_us"].copy(), recording["frame_t_us"].copy()
    later = np.flatnonzero(t_us // 1000 == t_us[10] // 1000)[-1]  # in the same 1 ms message
    assert t_us[later] > t_us[10]
    t_us[[10, later]] = t_us[[later, 10]]
    frame_t_us[2] = frame_t_us[0]
    source = tmp_path / "desk.bag"
    formats.write_bag(source, dict(recording, t_us=t_us, frame_t_us=frame_t_us, frame_record_us=recording["frame_t_us"]))
    summary = convert_common.convert_sequence(str(source), str(tmp_path / "out" / "desk"), "HQF")
    assert summary["num_events"] == 20_000
    order = np.argsort(t_us, kind="stable")
    sorted_recording = {key: recording[key][order] for key in ("x", "y", "p")}
    expected_frame_t = formats.bag_time(frame_t_us)
    expected_frame_t[2] = 0.5 * (expected_frame_t[1] + expected_frame_t[3])
    assert_converted(tmp_path / "out" / "desk", dict(recording, **sorted_recording), formats.bag_time(t_us)[order], expected_frame_t)
    err = capsys.readouterr().err
    assert "not in time order" in err and "APS frame 2" in err
    # EVREAL's layout goes through the same sorting and repair, column file by column file
    convert_common.convert_sequence(str(source), str(tmp_path / "evreal" / "desk"), "HQF", fmt="evreal")
    assert_same_recording(tmp_path / "evreal" / "desk", tmp_path / "out" / "desk")


def assert_same_recording(folder, source, **options):
    """An EVREAL folder holds its source's events and frames, on EVREAL's clock: shifted by the
    t_zero its metadata.json records."""
    mine, _ = event_data.load_events(str(folder))
    theirs, _ = event_data.load_events(str(source), **options)
    t_zero = json.loads((folder / "metadata.json").read_text())["t_zero"]
    assert t_zero == min(theirs.t[0], theirs.aps_t[0])
    theirs.t, theirs.aps_t = theirs.t - t_zero, theirs.aps_t - t_zero
    for key in ("t", "x", "y", "p", "aps_t", "aps_frames"):
        np.testing.assert_array_equal(getattr(mine, key), getattr(theirs, key), err_msg=key)


def test_evreal_format(tmp_path):
    """--format evreal writes EVREAL's npy folder, typed as EVREAL writes it, and it reads back
    as the same events and frames as its source."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    recording = formats.synthetic_recording(6_000, rate=50_000)
    formats.write_ecd_folder(raw / "boxes_6dof", recording)
    result = convert("IJRR", raw, out, "--format", "evreal")
    assert result.returncode == 0, result.stderr
    folder = out / "boxes_6dof"
    assert sorted(os.listdir(folder)) == ["events_p.npy", "events_ts.npy", "events_xy.npy", "image_event_indices.npy",
                                          "images.npy", "images_ts.npy", "metadata.json"]
    load = lambda name: np.load(folder / f"{name}.npy")
    t, xy, p, images = load("events_ts"), load("events_xy"), load("events_p"), load("images")
    assert (t.dtype, xy.dtype, xy.shape, p.dtype) == (np.float64, np.int16, (6_000, 2), np.uint8)
    np.testing.assert_array_equal(p, recording["p"] > 0)
    assert images.dtype == np.uint8 and images.shape == recording["frames"].shape + (1,)
    assert_evreal_layout(folder)
    assert json.loads((folder / "metadata.json").read_text())["sensor_resolution"] == [180, 240]
    assert event_data.detect_format(str(folder)) == "evreal_folder"
    assert_same_recording(folder, raw / "boxes_6dof", sensor=(180, 240))


def test_npy_header_fits_any_count(tmp_path):
    for rows in (0, 1, 10 ** 12):
        header = convert_common.npy_header(rows)
        assert len(header) == convert_common.NPY_HEADER_BYTES
        path = tmp_path / "header.npy"
        path.write_bytes(header)
        with open(path, "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            assert np.lib.format.read_array_header_1_0(f) == ((rows, 4), False, np.dtype("<f8"))
    path.write_bytes(convert_common.npy_header(7, (), np.uint8) + bytes(range(7)))  # EVREAL's one-column files
    np.testing.assert_array_equal(np.load(path), np.arange(7, dtype=np.uint8))


@pytest.mark.slow
def test_train_runs_on_converted_output(tmp_path):
    train = os.path.join(REPO, "train.py")
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    formats.write_bag(raw / "slider_depth.bag", formats.synthetic_recording(20_000, rate=50_000))
    assert convert("IJRR", raw, out).returncode == 0
    result = subprocess.run([sys.executable, train, "-d", str(out / "slider_depth"), "-o", str(tmp_path / "runs"), "-n", "x",
                             "--iters", "4", "--train_resolution", "4", "--H", "180", "--W", "240"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(os.listdir(tmp_path / "runs" / "x" / "frames")) > 0
