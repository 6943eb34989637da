"""train.py end to end: outputs agree with each other, runs are reproducible, the authors'
README commands work, and bad input fails cleanly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import read_gray, count_video_frames
from conftest import REPO
from simulate import moving_texture, simulate_events, write_sequence

APS_TIMES = np.linspace(0.05, 0.55, 6)  # inside the span of the events, so every one is rendered
SMALL = ["--iters", "6", "--train_resolution", "4", "--net_width", "32", "--net_layers", "1", "--log_interval", "3"]


def train(*arguments):
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *arguments],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """A small simulated recording in the authors' folder layout, with APS frames."""
    folder = str(tmp_path_factory.mktemp("data") / "sim")
    render = moving_texture(20, 24, 0.6, "pan", seed=1, speed=25.0)
    events = simulate_events(render, 0.6, threshold=0.2)
    write_sequence(folder, render, events, APS_TIMES)
    assert events["t"][0] < APS_TIMES[0] and events["t"][-1] > APS_TIMES[-1]
    return folder


def read_timestamps(folder):
    with open(os.path.join(folder, "timestamps.txt")) as f:
        return [line.split() for line in f]


@pytest.mark.slow
def test_end_to_end_outputs_agree(sequence, tmp_path):
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "run", *SMALL)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    frames = sorted(os.listdir(run / "frames"))
    stamps = read_timestamps(run)
    assert len(frames) == len(stamps) == count_video_frames(str(run / "video.mp4")) == 6
    assert frames[0] == "frame_0000000000.png"
    np.testing.assert_allclose([float(t) for _, t in stamps], APS_TIMES, atol=1e-9)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_frames"] == 5 and 0 <= metrics["mse"] <= 1 and -1 <= metrics["ssim"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["iters"] == 6 and config["config"]["H"] == 20 and config["config"]["W"] == 24
    for key in ("load_s", "event_frames_s", "train_s", "render_s", "ms_per_iter", "total_s"):
        assert key in config["timings"]
    assert (run / "preview.png").exists() and (run / "model.pt").exists()
    assert f"wrote 6 frames to {run}" in result.stdout
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")], "work folder left behind"

    rendered = train("--render_only", str(run / "model.pt"), "-o", str(tmp_path), "-n", "again")
    assert rendered.returncode == 0, rendered.stderr
    for name in frames:
        assert (run / "frames" / name).read_bytes() == (tmp_path / "again" / "frames" / name).read_bytes()


@pytest.mark.slow
def test_same_seed_same_frames_and_other_seed_differs(sequence, tmp_path):
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert train("-d", sequence, "-o", str(tmp_path), "-n", name, "--seed", seed, "--no_video", *SMALL).returncode == 0
        runs[name] = [(tmp_path / name / "frames" / f).read_bytes() for f in sorted(os.listdir(tmp_path / name / "frames"))]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.slow
def test_frames_at_fps_and_time_file(sequence, tmp_path):
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "fps", "--frames_at", "10", "--no_video", *SMALL)
    assert result.returncode == 0, result.stderr
    stamps = [float(t) for _, t in read_timestamps(tmp_path / "fps")]
    np.testing.assert_allclose(np.diff(stamps), 0.1)  # 10 frames per second over the events' span
    assert not (tmp_path / "fps" / "metrics.json").exists()
    times = tmp_path / "times.txt"
    times.write_text("0.25\n0.05\n")
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "file", "--frames_at", str(times), "--no_video", *SMALL)
    assert result.returncode == 0, result.stderr
    assert [float(t) for _, t in read_timestamps(tmp_path / "file")] == [0.05, 0.25]


@pytest.fixture(scope="module")
def standard_npy(tmp_path_factory):
    """Standard (t, x, y, p) rows from a 240 x 180 sensor, p in {0, 1}: x reaches 239."""
    rng = np.random.default_rng(0)
    n = 20000
    rows = np.stack([np.sort(rng.uniform(0, 1, n)), rng.integers(0, 240, n), rng.integers(0, 180, n),
                     rng.integers(0, 2, n)], axis=1)
    rows[0, 1:3] = (239, 179)
    path = str(tmp_path_factory.mktemp("npy") / "events.npy")
    np.save(path, rows)
    return path


@pytest.mark.parametrize("sizes", [["--H", "240", "--W", "180"], ["--H", "180", "--W", "240"]])
@pytest.mark.slow
def test_authors_ijrr_command_gives_correctly_oriented_frames(standard_npy, tmp_path, sizes):
    result = train("-n", "ijrr", "-d", standard_npy, "-o", str(tmp_path), *sizes, *SMALL,
                   "--frames_at", "uniform", "--val_resolution", "2", "--no_video")
    assert result.returncode == 0, result.stderr
    image = read_gray(str(tmp_path / "ijrr" / "frames" / "frame_0000000000.png"))
    assert image.shape == (180, 240)
    if sizes[1] == "240":  # the authors' README order, H and W swapped
        assert "transposed" in result.stderr  # corrected, but never silently


@pytest.mark.slow
def test_authors_ced_and_aed_commands_run(tmp_path):
    rng = np.random.default_rng(1)
    for name, width, height, extra in (("ced", 346, 260, ["--color_event"]), ("aed", 408, 306, ["--event_thresh", "0.25"])):
        n = 5000
        rows = np.stack([np.sort(rng.uniform(0, 1, n)), rng.integers(0, width, n), rng.integers(0, height, n),
                         rng.choice([-1, 1], n)], axis=1)
        path = tmp_path / f"{name}.npy"
        np.save(path, rows)
        flags = ["--H", str(height), "--W", str(width)] if name == "ced" else ["--H", "408", "--W", "306"]
        result = train("-n", name, "-d", str(path), "-o", str(tmp_path / "out"), *flags, *extra,
                       "--iters", "2", "--train_resolution", "2", "--net_width", "16", "--net_layers", "1",
                       "--frames_at", "uniform", "--val_resolution", "2", "--no_video")
        assert result.returncode == 0, result.stderr
        image = read_gray(str(tmp_path / "out" / name / "frames" / "frame_0000000000.png"))
        assert image.shape == (height, width)


def events_file(tmp_path, rows, name="events.npy"):
    path = tmp_path / name
    np.save(path, np.asarray(rows, dtype=np.float64))
    return str(path)


GOOD = [[0.0, 1, 1, 1], [0.1, 2, 2, 0], [0.2, 3, 1, 1]]


@pytest.mark.parametrize("case, problem", [
    ("missing", "no such file"),
    ("empty", "empty"),
    ("nan", "NaN"),
    ("shape", "[N, 4]"),
    ("unsorted", "not sorted"),
    ("outside", "outside"),
    ("no_events_in_window", "no events"),
    ("no_events_in_any_window", "no events"),
    ("unknown_format", "unknown event format"),
])
def test_bad_input_fails_cleanly(tmp_path, case, problem):
    rows, extra = GOOD, []
    if case == "missing":
        path = str(tmp_path / "absent.npy")
    elif case == "empty":
        path = str(tmp_path / "empty.npy")
        open(path, "w").close()
    elif case == "unknown_format":
        path = str(tmp_path / "events.xyz")
        open(path, "w").write("1 2 3\n")
    else:
        rows = {"nan": [[0.0, 1, 1, 1], [float("nan"), 2, 2, 0]], "shape": [[0.0, 1, 1], [0.1, 2, 2]],
                "unsorted": [[0.2, 1, 1, 1], [0.1, 2, 2, 0]]}.get(case, GOOD)
        extra = {"outside": ["--H", "2", "--W", "3"], "no_events_in_window": ["--t_start", "5"],
                 "no_events_in_any_window": ["--t_start", "5", "--window", "1"]}.get(case, [])
        path = events_file(tmp_path, rows)
    out = tmp_path / "out"
    result = train("-d", path, "-o", str(out), "-n", "bad", *SMALL, *extra)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert problem in lines[0] and os.path.basename(path) in lines[0]
    assert not (out / "bad").exists()


def test_existing_output_is_never_overwritten_silently(sequence, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "keep.txt").write_text("finished work")
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "run", *SMALL)
    assert result.returncode != 0 and "already exists" in result.stderr and "Traceback" not in result.stderr
    assert (folder / "keep.txt").read_text() == "finished work"
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "run", "--overwrite", "--no_video", *SMALL)
    assert result.returncode == 0 and not (folder / "keep.txt").exists() and (folder / "frames").is_dir()


def test_render_only_with_a_broken_checkpoint_fails_cleanly(tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a checkpoint")
    result = train("--render_only", str(broken), "-o", str(tmp_path), "-n", "render")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {broken}: not a model.pt")
    assert not (tmp_path / "render").exists()


@pytest.mark.parametrize("flags", [["--iters", "0"], ["--window", "0.2", "--windows_batch", "0"], ["--window", "-1"]])
def test_bad_numbers_on_the_command_line_fail_cleanly(sequence, tmp_path, flags):
    result = train("-d", sequence, "-o", str(tmp_path), "-n", "bad", *SMALL, *flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --"), result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_stacked_windows_render_and_rerender_like_one_by_one(sequence, tmp_path):
    """--windows_batch writes the same outputs as one-by-one windows, and its model.pt (one
    network per window) re-renders the same frames."""
    flags = ["-d", sequence, "-o", str(tmp_path), "--window", "0.2", "--frames_at", "40", "--no_video", *SMALL]
    assert train(*flags, "-n", "one_by_one").returncode == 0
    result = train(*flags, "-n", "stacked", "--windows_batch", "2")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "stacked" / "config.json") as f:
        summary = json.load(f)
    assert len(summary["data"]["spans"]) == 3 and summary["config"]["windows_batch"] == 2
    assert read_timestamps(tmp_path / "stacked") == read_timestamps(tmp_path / "one_by_one")
    result = train("--render_only", str(tmp_path / "stacked" / "model.pt"), "-d", sequence, "-o", str(tmp_path),
                   "-n", "again", "--frames_at", "40", "--no_video")
    assert result.returncode == 0, result.stderr
    for name in sorted(os.listdir(tmp_path / "stacked" / "frames")):
        assert np.array_equal(read_gray(str(tmp_path / "stacked" / "frames" / name)),
                              read_gray(str(tmp_path / "again" / "frames" / name))), name
