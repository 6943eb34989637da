"""scripts/evaluate.py: EVREAL's choice of frames, frame-weighted means, the outputs end to end,
--pair, --compare, and bad input failing cleanly. (The metrics themselves: tests/test_utils.py.)"""

import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import evaluate
from lpips import lpips_available
import utils
from conftest import REPO
from simulate import moving_texture, simulate_events, write_sequence

SENSOR = ["--H", "32", "--W", "40"]  # the simulated sensor: overrides the dataset's 240x180
SMALL = ["--iters", "10", "--train_resolution", "4", "--net_width", "32", "--net_layers", "1", "--device", "cpu"]
APS_TIMES = np.arange(27) / 10  # 0.0 ... 2.6 s, exact at 1.0 and 2.5
REPAIRED = 15  # this frame's time stamp is corrupted to go backwards; it must be repaired to 1.5 s


def run_evaluate(*arguments, env=None):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), *arguments],
                          capture_output=True, text=True, timeout=300, env=env)


def simulated(folder, duration, aps_times):
    render = moving_texture(32, 40, duration, "pan", seed=1, speed=25.0)
    write_sequence(folder, render, simulate_events(render, duration, threshold=0.2), aps_times)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An IJRR-like folder: slider_depth (scored 1.0-2.5 s by the table) and a sequence without APS frames."""
    root = tmp_path_factory.mktemp("data") / "IJRR"
    slider = simulated(str(root / "slider_depth"), 2.6, APS_TIMES)
    with open(os.path.join(slider, "images.txt")) as f:
        lines = f.readlines()
    lines[REPAIRED] = lines[REPAIRED].replace("1.500000000", "1.350000000")  # before frame 14's 1.4 s
    with open(os.path.join(slider, "images.txt"), "w") as f:
        f.writelines(lines)
    os.makedirs(root / "no_frames")
    shutil.copy(os.path.join(slider, "events.npy"), root / "no_frames" / "events.npy")
    return root


@pytest.fixture(scope="module")
def short_sequence(tmp_path_factory):
    """0.9 s named slider_depth: all its APS frames lie before the table's interval (1.0-2.5 s)."""
    return simulated(str(tmp_path_factory.mktemp("short") / "slider_depth"), 0.9, np.arange(9) / 10)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -----------------------------------------------------------------------------
# the protocol, piece by piece


def test_frames_in_interval_rezeroes_and_never_scores_the_last_frame():
    aps_t = 10.0 + np.arange(8) * 0.5  # 10.0 ... 13.5 on the recording's clock
    t_zero, index = evaluate.frames_in_interval(aps_t, 10.2, (1.0, 2.5))
    assert t_zero == 10.0 and list(index) == [2, 3, 4, 5]  # 11.0 ... 12.5, both ends included
    t_zero, index = evaluate.frames_in_interval(aps_t, 9.0, (1.0, 2.5))  # events start first
    assert t_zero == 9.0 and list(index) == [0, 1, 2, 3]  # frame 0, at 1.0 s, is in the interval: scored
    _, index = evaluate.frames_in_interval(aps_t, 10.2, evaluate.WHOLE_SEQUENCE)
    assert list(index) == [0, 1, 2, 3, 4, 5, 6]  # EVREAL never reconstructs the last frame


def test_evaluation_interval_comes_from_the_dataset_table():
    assert evaluate.evaluation_interval("slider_depth", "auto") == ("IJRR", (1.0, 2.5))
    assert evaluate.evaluation_interval("indoor_flying4", "MVSEC") == ("MVSEC", (10.0, 19.8))
    assert evaluate.evaluation_interval("still_life", "auto") == ("HQF", evaluate.WHOLE_SEQUENCE)
    assert evaluate.evaluation_interval("my_recording", "auto") == ("other", evaluate.WHOLE_SEQUENCE)
    assert evaluate.evaluation_interval("my_recording", "IJRR") == ("IJRR", evaluate.WHOLE_SEQUENCE)
    assert evaluate.evaluation_interval("slider_depth", "none") == ("other", evaluate.WHOLE_SEQUENCE)
    assert evaluate.evaluation_interval("boxes_rotation", "IJRR") == ("IJRR", None)  # not scored by EVREAL
    assert evaluate.dataset_flags("IJRR") == {"H": 180, "W": 240, "color_event": False}
    assert evaluate.dataset_flags("IJRR", "authors") == {"H": 180, "W": 240, "color_event": False, "event_thresh": 1.0}
    assert evaluate.dataset_flags("AED", "authors")["event_thresh"] == 0.25 and evaluate.dataset_flags("CED")["color_event"]


def fake_fit(dataset, rows, fit_seconds=1.0, seconds_fitted=2.0):
    return {"dataset": dataset, "rows": rows, "fit_seconds": fit_seconds, "seconds_fitted": seconds_fitted,
            "interval": [0.0, None], "window": None, "clock_offset_ms": None, "aps_offset_ms": 0.0, "method": {}, "timings": {}, "run": ""}


def test_dataset_means_weight_every_frame_and_drop_non_finite_values():
    frame = lambda mse: {"mse": mse, "ssim": 0.5, "lpips": None}
    fits = {"a": fake_fit("X", [frame(0.1)] * 3 + [frame(float("nan"))]),
            "b": fake_fit("X", [frame(0.5)], fit_seconds=3.0, seconds_fitted=1.0),
            "c": fake_fit("Y", [frame(0.2)])}
    summary = evaluate.summarise(fits)
    assert summary["sequences"]["a"]["mse"] == pytest.approx(0.1) and summary["sequences"]["a"]["n_frames"] == 4
    dataset = summary["datasets"]["X"]
    assert dataset["mse"] == pytest.approx((3 * 0.1 + 0.5) / 4)  # not (0.1 + 0.5) / 2, the mean of means
    assert dataset["n_frames"] == 5 and dataset["lpips"] is None and dataset["n_sequences"] == 2
    assert dataset["fit_seconds"] == 4.0 and dataset["fit_seconds_per_second"] == pytest.approx(4.0 / 3.0)
    assert summary["datasets"]["Y"]["mse"] == pytest.approx(0.2)


def test_long_spans_get_windows_unless_the_flags_say_otherwise():
    def window(span, overrides):
        sequence = evaluate.Sequence(name="s", path="p", dataset="IJRR", interval=(5.0, 20.0), t_zero=0.0, t_start=0.0,
                                     t_end=span, span=(0.0, span), aps_index=np.array([1]), aps_t=np.array([1.0]),
                                     use_lpips=False)
        args = evaluate.sequence_config(sequence, overrides, "runs", "times.txt")
        assert (args.H, args.W, args.frames_at, args.t_end) == (180, 240, "times.txt", span)  # the dataset's flags
        return args.window
    assert window(15.0, {}) == evaluate.DEFAULT_WINDOW
    assert window(2.0, {}) is None
    assert window(15.0, {"window": 0.0}) == 0.0 and window(15.0, {"window": 5.0}) == 5.0


def test_configurations_stack_common_and_compare_flags():
    options, _ = evaluate.parse_given(evaluate.get_parser(), ["p", "-o", "out", "--iters", "7",
                                                              "--compare", "default", "--align midpoint --iters 1000"])
    assert evaluate.configurations(options) == [("default", {"iters": 7}),
                                                ("--align midpoint --iters 1000", {"iters": 1000, "align": "midpoint"})]
    for bad, problem in ((["--compare", "--no_such_flag 1"], "not train.py flags"), (["--compare", "--loss nonsense"], "invalid choice"),
                         (["--t_end", "3"], "--t_end is set by the evaluation"), (["--compare", "--data_path x"], "-d/--data_path")):
        options, _ = evaluate.parse_given(evaluate.get_parser(), ["p", "-o", "out", *bad])
        with pytest.raises(evaluate.EvaluationError, match=problem):
            evaluate.configurations(options)


# -----------------------------------------------------------------------------
# end to end


def test_dataset_folder_end_to_end(dataset, tmp_path):
    out = tmp_path / "eval"
    lpips = [] if lpips_available() else ["--no_lpips"]  # never download inside a test
    result = run_evaluate(str(dataset), "-o", str(out), "--dataset", "IJRR", *SENSOR, *SMALL, *lpips, "--layout", "evreal")
    assert result.returncode == 0, result.stderr
    assert "no_frames: no APS frames to score against; skipped" in result.stderr

    results = json.loads((out / "results.json").read_text())
    assert list(results["sequences"]) == ["slider_depth"] and list(results["datasets"]) == ["IJRR"]
    scored = [k for k, t in enumerate(APS_TIMES) if 1.0 <= t <= 2.5]
    for summary in (results["sequences"]["slider_depth"], results["datasets"]["IJRR"]):
        assert summary["n_frames"] == len(scored) == 16
        assert 0 <= summary["mse"] <= 1 and -1 <= summary["ssim"] <= 1 and summary["fit_seconds"] > 0
        assert (summary["lpips"] is None) == bool(lpips)
    sequence = results["sequences"]["slider_depth"]
    assert sequence["method"]["iters"] == 10 and sequence["method"]["H"] == 32 and sequence["window"] is None
    assert sequence["interval"] == [1.0, 2.5] and results["evaluation"]["histeq"] == "none"

    rows = read_csv(out / "per_frame.csv")
    assert [int(row["aps_index"]) for row in rows] == scored
    assert all(1.0 <= float(row["t"]) <= 2.5 and abs(float(row["t"]) - float(row["t_reconstruction"])) <= 1e-3 for row in rows)
    assert float(rows[scored.index(REPAIRED)]["t"]) == pytest.approx(1.5)  # the mean of its neighbours
    assert len(os.listdir(out / "runs" / "default" / "slider_depth" / "frames")) == 16
    assert (out / "previews" / "slider_depth.png").exists()
    for table in ("sequences", "datasets"):
        assert {(out / f"{table}.{ext}").exists() for ext in ("md", "csv", "json")} == {True}
    assert "| default |" in (out / "table.md").read_text() and "| default |" in result.stdout

    # EVREAL's tree (eval.py's): the same frames and scores, named and formatted as EVREAL writes
    # them: outputs/CONFIG/DATASET/SEQUENCE/METHOD, the dataset as EVREAL names it, idx the APS frame
    evreal = out / "outputs" / "std" / "ECD" / "slider_depth" / "EvINR"
    metrics = ["mse.txt", "ssim.txt"] + ([] if lpips else ["lpips.txt"])
    assert sorted(os.listdir(evreal)) == sorted([f"frame_{i:010d}.png" for i in scored]
                                                + ["timestamps.txt", "event_rate.txt"] + metrics)
    assert os.listdir(out / "outputs" / "std") == ["ECD"] and os.listdir(out / "outputs" / "std" / "ECD") == ["slider_depth"]
    stamps = [line.split() for line in (evreal / "timestamps.txt").read_text().splitlines()]
    assert [int(idx) for idx, _ in stamps] == scored
    assert all(len(t.split(".")[1]) == 15 for _, t in stamps)
    np.testing.assert_allclose([float(t) for _, t in stamps], [float(row["t_reconstruction"]) for row in rows], atol=1e-9)
    rates = [line.split() for line in (evreal / "event_rate.txt").read_text().splitlines()]
    assert [int(idx) for idx, _ in rates] == scored and all(float(rate) > 0 for _, rate in rates)
    for name in metrics:
        lines = [line.split() for line in (evreal / name).read_text().splitlines()]
        assert [int(idx) for idx, _ in lines] == scored and all(len(v.split(".")[1]) == 5 for _, v in lines)
        np.testing.assert_allclose([float(v) for _, v in lines], [float(row[name[:-4]]) for row in rows], atol=5e-6)


def test_compare_gives_one_row_per_configuration(dataset, tmp_path):
    out = tmp_path / "compare"
    result = run_evaluate(str(dataset / "slider_depth"), "-o", str(out), "--no_lpips", *SENSOR, *SMALL,
                          "--compare", "default", "--align midpoint")
    assert result.returncode == 0, result.stderr
    table = read_csv(out / "table.csv")
    assert [row["configuration"] for row in table] == ["default", "--align midpoint"]
    assert all(row["IJRR MSE"] and row["IJRR SSIM"] and not row["IJRR LPIPS"] for row in table)
    results = json.loads((out / "results.json").read_text())
    assert results["configurations"]["--align midpoint"]["flags"]["align"] == "midpoint"
    assert results["configurations"]["--align midpoint"]["sequences"]["slider_depth"]["method"]["align"] == "midpoint"
    assert results["sequences"] == results["configurations"]["default"]["sequences"]
    assert {row["configuration"] for row in read_csv(out / "per_frame.csv")} == {"default", "--align midpoint"}
    assert not (out / "outputs").exists()  # EVREAL's tree only when asked for


def test_aps_offset_reconstructs_after_the_time_stamps_and_scores_the_same_frames(dataset, tmp_path):
    """--aps_offset 5: every scored APS frame is reconstructed 5 ms after its time stamp and
    scored against that frame; the offset measured between the events and the frames is
    reported, and the output says that the rule is not EVREAL's."""
    out = tmp_path / "offset"
    result = run_evaluate(str(dataset / "slider_depth"), "-o", str(out), "--no_lpips", *SENSOR, *SMALL, "--aps_offset", "5")
    assert result.returncode == 0, result.stderr
    assert "not EVREAL's rule" in result.stdout and "after their time stamps" in result.stderr
    rows = read_csv(out / "per_frame.csv")
    assert [int(row["aps_index"]) for row in rows] == [k for k, t in enumerate(APS_TIMES) if 1.0 <= t <= 2.5]
    assert all(float(row["t_reconstruction"]) - float(row["t"]) == pytest.approx(0.005) for row in rows)
    # the times rendered (the clock's zero is the first APS frame's, 0.0)
    np.testing.assert_allclose(np.loadtxt(out / "times" / "slider_depth.txt"), [float(row["t_reconstruction"]) for row in rows])
    sequence = json.loads((out / "results.json").read_text())["sequences"]["slider_depth"]
    assert sequence["aps_offset_ms"] == pytest.approx(5.0) and abs(sequence["clock_offset_ms"]) <= 1e3 * utils.CLOCK_SEARCH


@pytest.mark.slow
def test_pair_prints_the_scores_of_one_image_pair(tmp_path):
    reference = np.tile(np.linspace(0, 200, 40).round().astype(np.uint8), (40, 1))
    prediction = reference + 20
    paths = [str(tmp_path / "pred.png"), str(tmp_path / "ref.png")]
    utils.write_png(paths[0], prediction)
    utils.write_png(paths[1], reference)
    result = run_evaluate("--pair", *paths, "--no_lpips")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["mse"] == pytest.approx((20 / 255) ** 2) and scores["lpips"] is None
    assert scores["ssim"] == pytest.approx(utils.ssim(prediction / 255.0, reference / 255.0))
    equalised = json.loads(run_evaluate("--pair", *paths, "--no_lpips", "--histeq", "global").stdout)
    assert equalised["mse"] == pytest.approx(utils.score_frame(prediction / 255.0, reference / 255.0, "global", False)["mse"])
    if lpips_available():
        with_lpips = json.loads(run_evaluate("--pair", *paths).stdout)
        assert with_lpips["lpips"] == pytest.approx(utils.lpips(prediction / 255.0, reference / 255.0), abs=1e-6)


# -----------------------------------------------------------------------------
# bad input


def different_sizes(short_sequence, tmp_path):
    folder = str(tmp_path / "slider_depth")
    shutil.copytree(short_sequence, folder)
    cv2.imwrite(os.path.join(folder, "images", "frame_00000003.png"), np.zeros((16, 20), np.uint8))
    return folder


@pytest.mark.parametrize("case, problem", [
    ("no_frames", "no_frames: no APS frames"),
    ("outside_interval", "slider_depth: none of its 9 APS frames"),
    ("frame_sizes", "different sizes"),
    ("lpips_offline", "--no_lpips"),
    ("pair_sizes", "40x40"),
    ("reserved_flag", "-d/--data_path is set by the evaluation"),
    ("offset_value", "neither 'auto' nor milliseconds"),
    ("offset_layout", "--aps_offset: EVREAL's tree"),
])
def test_bad_input_fails_cleanly(dataset, short_sequence, tmp_path, case, problem):
    out = tmp_path / "out"
    env = dict(os.environ)
    arguments = ["-o", str(out), "--dataset", "IJRR", *SENSOR, *SMALL, "--no_lpips"]
    if case == "no_frames":
        arguments = [str(dataset / "no_frames"), *arguments]
    elif case == "outside_interval":
        arguments = [short_sequence, *arguments]
    elif case == "frame_sizes":
        arguments = [different_sizes(short_sequence, tmp_path), *arguments]
    elif case == "lpips_offline":
        env["EVINR_LPIPS_WEIGHTS"] = str(tmp_path / "absent" / "weights.npz")  # fails before any download
        arguments = [str(dataset / "slider_depth"), *arguments[:-1]]
    elif case == "pair_sizes":
        utils.write_png(str(tmp_path / "a.png"), np.zeros((40, 40), np.uint8))
        utils.write_png(str(tmp_path / "b.png"), np.zeros((30, 40), np.uint8))
        arguments = ["--pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--no_lpips"]
    elif case == "reserved_flag":
        arguments = [str(dataset / "slider_depth"), *arguments, "-d", "x"]
    elif case == "offset_value":
        arguments = [str(dataset / "slider_depth"), *arguments, "--aps_offset", "soon"]
    elif case == "offset_layout":
        arguments = [str(dataset / "slider_depth"), *arguments, "--aps_offset", "auto", "--layout", "evreal"]
    result = run_evaluate(*arguments, env=env)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and problem in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "results.json").exists() and not (out / "table.md").exists()
    if case == "lpips_offline":
        assert "fetch_lpips" in errors[0] and not (out / "runs").exists()  # no fit was wasted


# -----------------------------------------------------------------------------
# reproduce_tables.py


def run_reproduce(*arguments):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "reproduce_tables.py"), *arguments],
                          capture_output=True, text=True, timeout=300)


def test_reproduce_tables_says_what_to_download_when_there_is_no_data(tmp_path):
    result = run_reproduce("--data_root", str(tmp_path / "nothing"), "-o", str(tmp_path / "out"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for expected in ("slider_depth", "convert_IJRR.py --raw_data_dir", "convert_HQF.py", "convert_CED.py", "AED"):
        assert expected in result.stderr
    assert not (tmp_path / "out" / "table.md").exists()


def test_reproduce_tables_evaluates_each_dataset_present(dataset, tmp_path):
    out = tmp_path / "out"
    result = run_reproduce("--data_root", str(dataset.parent), "-o", str(out), "--no_lpips", *SENSOR, *SMALL)
    assert result.returncode == 0, result.stderr
    table = read_csv(out / "table.csv")
    assert [row["configuration"] for row in table] == ["--preset authors", "--preset recommended"]
    assert table[0]["IJRR MSE"] and table[1]["IJRR MSE"]
    results = json.loads((out / "IJRR" / "results.json").read_text())["configurations"]
    assert results["--preset authors"]["datasets"]["IJRR"]["n_frames"] == 16
    used = {path.parent.parent.name: json.loads(path.read_text())["config"]["event_thresh"]
            for path in (out / "IJRR" / "runs").glob("*/*/config.json")}
    assert used == {"preset_authors": 1.0, "preset_recommended": "auto"}  # the authors': the dataset's, from the table
    assert "| --preset authors |" in result.stdout and "| --preset recommended |" in result.stdout
