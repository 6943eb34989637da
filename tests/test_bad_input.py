"""Bad or hostile input, and a hostile environment, for every command: each case ends in one line
`error: PATH: problem` with the project's exit status (2 bad input or flags, 1 the environment,
130 interrupted), no traceback and no partial output, hidden work folders included; or, where
the input can be made sense of (outlier time stamps, microseconds, a quiet gap), in a correct
run that says what it did.

Most cases call the commands' main() in this process (fast: no interpreter and torch start-up);
signals, a full disk, a read-only folder and a dead process's leftovers need a process of their
own."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import convert_common
import evaluate
import event_data
from config import Config, UsageError
import plan
import train
import command
import utils
from conftest import REPO, shared_data
from simulate import moving_texture, simulate_events, write_sequence

SENSOR = ["--H", "20", "--W", "24"]
TINY = ["--iters", "4", "--train_resolution", "4", "--net_width", "16", "--net_layers", "1", "--no_video"]


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    """main() in this process must not install its SIGTERM handlers into pytest's."""
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


def recording(n=2000, duration=2.0, seed=0):
    """[N, 4] (t, x, y, p) rows of a 24 x 20 sensor, sorted, over `duration` seconds."""
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.uniform(0, duration, n)), rng.integers(0, 24, n), rng.integers(0, 20, n),
                     rng.integers(0, 2, n)], axis=1)


def save(folder, rows, name="events.npy"):
    path = os.path.join(folder, name)
    np.save(path, np.asarray(rows, dtype=np.float64))
    return path


def call(main, *argv):
    """Exit status of a command's main(): its SystemExit code, or what it returns."""
    try:
        return main(list(argv)) or 0
    except SystemExit as exit:
        return exit.code


def assert_error(status, err, code, *words):
    assert status == code, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    for word in words:
        assert word in errors[0], err


def assert_nothing_left(folder, *kept):
    """`folder` is gone, or holds only `kept` (no result, no hidden work folder)."""
    if os.path.exists(folder):
        assert sorted(os.listdir(folder)) == sorted(kept)


def run_script(script, *arguments, **options):
    return subprocess.run([sys.executable, os.path.join(REPO, script), *arguments], capture_output=True, text=True,
                          timeout=120, **options)


def dead_pid():
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -----------------------------------------------------------------------------
# train.py: flags, refused before any work


@pytest.mark.parametrize("flags, words", [
    (["--lr", "-1"], ["--lr -1", "positive"]),
    (["--lr", "nan"], ["--lr nan"]),
    (["--net_width", "0"], ["--net_width 0"]),
    (["--net_width", "100000000"], ["--net_width", "16384"]),
    (["--net_layers", "-1"], ["--net_layers -1"]),
    (["--event_thresh", "0"], ["--event_thresh 0"]),
    (["--event_thresh", "-1"], ["--event_thresh -1"]),
    (["--event_thresh", "nan"], ["--event_thresh nan"]),
    (["--t_start", "-1"], ["--t_start -1"]),
    (["--t_end", "inf"], ["--t_end inf"]),
    (["--H", "20"], ["--H and --W go together"]),
    (["--H", "100000", "--W", "100000"], ["--H 100000", "32767"]),
    (["--device", "bogus"], ["--device 'bogus'"]),
    (["--window", "-1"], ["--window -1"]),
    (["--window", "1e-9"], ["--window 1e-09", "2e+09 windows", "longer --window"]),
    (["--frames_at", "1e7"], ["--frames_at 1e7", "2e+07 frames", "1000000"]),
    (["--frames_at", "-3"], ["--frames_at -3"]),
    (["--seed", "-1"], ["--seed -1"]),
    (["--align", "midpoint", "--train_resolution", "1"], ["--train_resolution 1", "midpoint"]),
    (["--output_kernel", "triton", "--device", "cpu"], ["--output_kernel triton"]),
    (["--loss_kernel", "triton", "--device", "cpu"], ["--loss_kernel triton"]),
    (["-n", "a/b"], ["-n 'a/b'", "without '/'"]),
    (["-n", ".."], ["-n '..'"]),
    (["-n", os.fsdecode(b"bad\xff")], ["-n 'bad"]),
])
def test_impossible_flags_are_refused_before_any_work(tmp_path, capsys, flags, words):
    data, out = save(tmp_path, recording()), tmp_path / "out"
    sensor = [] if "--H" in flags else SENSOR
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *sensor, *TINY, *flags)
    err = capsys.readouterr().err
    assert_error(status, err, 2, *words)
    assert "fitting" not in err  # refused before the fit
    assert_nothing_left(out)


def test_a_diverging_fit_stops_with_the_flag_to_change(tmp_path, capsys):
    data, out = save(tmp_path, recording()), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--lr", "1e6")
    assert_error(status, capsys.readouterr().err, 2, "--lr 1e+06", "nan", "lower --lr", "--event_thresh")
    assert_nothing_left(out)


def test_a_plan_beyond_memory_is_refused_with_the_figure(tmp_path, capsys):
    """One event at (32767, 32767) in a file without a sensor size: a 32768 x 32768 sensor."""
    rows = recording()
    rows[-1, 1:3] = 32767
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *TINY)
    assert_error(status, capsys.readouterr().err, 2, "TB of host memory", "32768x32768", "--H/--W")
    assert_nothing_left(out)


def test_on_a_gpu_device_and_host_memory_are_planned_apart(monkeypatch):
    """The fit and rendering against the GPU's free memory, the networks kept per window and the
    frames against the host's (no GPU here: the free figures are given)."""
    events = event_data.Events(t=np.linspace(0.0, 2.0, 100_000), x=None, y=None, p=None, sensor=(180, 240), path="rec")
    config = Config(window=0.01, device="cuda")
    windows = [(k * 0.01, (k + 1) * 0.01) for k in range(200)]  # 200 networks of 12 M parameters: 9.3 GB
    free = {"cuda": 10 << 30, "cpu": 1 << 30}
    monkeypatch.setattr(plan, "available_memory", lambda device: free[device.type])
    with pytest.raises(UsageError, match=r"9\.\d GB of host memory .* for the 200 fitted networks: ask for fewer, longer"):
        plan.check_memory(events, config, windows, 50)
    free["cpu"] = 100 << 30
    plan.check_memory(events, config, windows, 50)
    free["cuda"] = 100 << 20
    with pytest.raises(UsageError, match=r"of GPU memory .* 100 MB is free; most of it .* for the event frames"):
        plan.check_memory(events, config, windows, 50)


def test_an_empty_span_is_named_before_any_work(tmp_path, capsys):
    rows = recording()
    rows = rows[(rows[:, 0] < 0.5) | (rows[:, 0] > 1.5)]
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--t_start", "0.7", "--t_end", "1.2")
    assert_error(status, capsys.readouterr().err, 2, "events.npy", "no events between", "--t_start/--t_end")
    assert_nothing_left(out)


# -----------------------------------------------------------------------------
# train.py: input it can make sense of


def windows_of(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)["data"]["spans"]


def test_a_corrupt_time_stamp_is_reported_and_left_out(tmp_path, capsys):
    rows = np.concatenate([recording(), [[1e9, 1, 1, 1]]])
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--window", "0.5")
    err = capsys.readouterr().err
    assert status == 0, err
    assert "event 2000 at 1000000000.000000 s lies far after the other events" in err
    windows = windows_of(out / "run")
    assert len(windows) == 4 and windows[-1][1] < 2.0


def test_a_quiet_gap_is_fitted_through(tmp_path, capsys):
    rows = recording(duration=6.0)
    rows = rows[(rows[:, 0] < 1.0) | (rows[:, 0] > 5.0)]
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--window", "1")
    err = capsys.readouterr().err
    assert status == 0, err
    assert "4 of 6 windows have fewer than 4 events" in err and "fitted with a neighbour, 2 windows in all" in err
    windows = windows_of(out / "run")
    assert len(windows) == 2 and windows[0][1] == pytest.approx(windows[1][0]) and 4.9 < windows[1][0] < 5.1


@pytest.mark.parametrize("unit, factor", [("microseconds", 1e6), ("nanoseconds", 1e9)])
def test_time_stamps_in_other_units_are_converted_and_said(tmp_path, capsys, unit, factor):
    rows = recording()
    rows[:, 0] = np.round(rows[:, 0] * factor) + (1.6e9 * factor if unit == "nanoseconds" else 0)  # ns on the Unix clock
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--window", "1")
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"read as {unit}" in err
    windows = windows_of(out / "run")
    assert len(windows) == 2 and windows[-1][1] - windows[0][0] == pytest.approx(2.0, abs=0.01)
    times = np.loadtxt(out / "run" / "timestamps.txt")[:, 1]
    assert len(np.unique(times)) == len(times) == 50


@pytest.mark.parametrize("name", ["events.npy", "events.txt"])
def test_info_says_which_unit_it_read(tmp_path, capsys, name):
    rows = recording()
    rows[:, 0] = np.round(rows[:, 0] * 1e6)
    if name.endswith(".npy"):
        path = save(tmp_path, rows)
    else:
        path = str(tmp_path / name)
        np.savetxt(path, rows, fmt="%d")
    status = call(event_data.main, "--info", path)
    captured = capsys.readouterr()
    assert status == 0 and "read as microseconds" in captured.err
    summary = json.loads(captured.out)
    assert summary["t_last"] - summary["t_first"] == pytest.approx(2.0, abs=0.01)


# -----------------------------------------------------------------------------
# output locations


def test_names_from_data_files_are_sanitised(tmp_path, capsys):
    """A data file whose name is not valid UTF-8 (the experiment name comes from it)."""
    data, out = save(tmp_path, recording(), os.fsdecode(b"rec\xff\xfe.npy")), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), *SENSOR, *TINY)
    assert status == 0, capsys.readouterr().err
    assert os.listdir(out) == ["rec__"] and len(os.listdir(out / "rec__" / "frames")) == 50


def test_a_file_in_the_way_of_the_output_folder(tmp_path, capsys):
    data, blocker = save(tmp_path, recording()), tmp_path / "out"
    blocker.write_text("not a folder")
    for output in (blocker, blocker / "deeper"):
        status = call(train.main, "-d", data, "-o", str(output), "-n", "run", *SENSOR, *TINY)
        assert_error(status, capsys.readouterr().err, 1, str(blocker), "a file is in the way")
    assert blocker.read_text() == "not a folder"


def without_root_privileges():
    """For preexec_fn: a process of root that file permissions stop like anyone else's (its
    capabilities to override them, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, dropped)."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_output_folder(tmp_path):
    data, out = save(str(tmp_path), recording()), tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = run_script("train.py", "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY,
                            preexec_fn=without_root_privileges if os.geteuid() == 0 else None)
    finally:
        out.chmod(0o755)
    assert_error(result.returncode, result.stderr, 1, str(out), "Permission denied")
    assert_nothing_left(out)


def test_a_full_disk_while_saving_the_model(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writing past it fails as a full disk does (EFBIG
    rather than ENOSPC), and torch.save reports it as a RuntimeError. model.pt (0.5 MB) is the
    only file over the limit."""
    import resource
    data, out = save(str(tmp_path), recording()), tmp_path / "out"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    result = run_script("train.py", "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, preexec_fn=limit)
    assert_error(result.returncode, result.stderr, 1, "model.pt", "could not be written, is the disk full?")
    assert_nothing_left(out)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.slow
def test_termination_signals_clean_up_like_ctrl_c(tmp_path, signal_number):
    data, out = save(str(tmp_path), recording()), tmp_path / "out"
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "-d", data, "-o", str(out), "-n", "run",
                                *SENSOR, *TINY, "--iters", "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and os.listdir(out)) and time.monotonic() < deadline:  # the work folder: fitting has begun
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal_number)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 130 and "interrupted: nothing was written" in err and "Traceback" not in err, err
    assert_nothing_left(out)


def test_leftovers_of_dead_processes_are_removed_and_overwrite_survives_them(tmp_path, capsys):
    data, out = save(tmp_path, recording()), tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "old.txt").write_text("the run being replaced")
    stale = [out / f".run.partial-{command.HOST}-{dead_pid()}-abc", out / f".run.replaced-{command.HOST}-{dead_pid()}-xyz" / "run"]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "frame.png").write_bytes(b"half written")
    alive = out / f".run.partial-{command.HOST}-{os.getpid()}-def"  # a live process's: not touched
    alive.mkdir()
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY, "--overwrite")
    err = capsys.readouterr().err
    assert status == 0, err
    assert sorted(os.listdir(out)) == sorted([alive.name, "run"]) and not (out / "run" / "old.txt").exists()
    assert err.count("which is gone") == 2


def test_a_replaced_result_whose_replacement_never_came_is_put_back(tmp_path):
    trash = tmp_path / f".run.replaced-{command.HOST}-{dead_pid()}-xyz"
    (trash / "run").mkdir(parents=True)
    (trash / "run" / "model.pt").write_text("the only copy")
    command.remove_stale_work_folders(str(tmp_path))
    assert os.listdir(tmp_path) == ["run"] and (tmp_path / "run" / "model.pt").read_text() == "the only copy"


def test_results_and_their_parents_get_the_users_umask(tmp_path, capsys):
    data, out = save(tmp_path, recording()), tmp_path / "new" / "out"
    previous = os.umask(0o027)
    try:
        status = call(train.main, "-d", data, "-o", str(out), "-n", "run", *SENSOR, *TINY)
    finally:
        os.umask(previous)
    assert status == 0, capsys.readouterr().err
    for folder in (tmp_path / "new", out, out / "run", out / "run" / "frames"):
        assert folder.stat().st_mode & 0o777 == 0o750, folder


# -----------------------------------------------------------------------------
# converters


@pytest.fixture
def raw_bag(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    data = open(shared_data("bags", "slider_depth_first200k.bag"), "rb").read()
    (raw / "slider_depth.bag").write_bytes(data[:len(data) // 3])  # truncated
    return raw


def test_a_failed_conversion_leaves_no_empty_output_folder(raw_bag, tmp_path, capsys):
    out = tmp_path / "converted" / "IJRR"
    status = call(lambda argv: convert_common.main("IJRR", argv), "--raw_data_dir", str(raw_bag), "--output_data_dir", str(out))
    assert_error(status, capsys.readouterr().err, 2, "slider_depth.bag", "truncated")
    assert not (tmp_path / "converted").exists()


def test_a_converter_refuses_a_file_in_the_way(raw_bag, tmp_path, capsys):
    out = tmp_path / "converted"
    out.write_text("a file")
    status = call(lambda argv: convert_common.main("IJRR", argv), "--raw_data_dir", str(raw_bag), "--output_data_dir", str(out))
    assert_error(status, capsys.readouterr().err, 1, str(out), "a file is in the way")


def test_an_interrupted_conversion_leaves_nothing_and_no_traceback(raw_bag, tmp_path, capsys, monkeypatch):
    out = tmp_path / "converted"
    out.mkdir()
    stale = out / f".slider_depth.partial-{command.HOST}-{dead_pid()}-abc"  # a killed conversion's staging folder
    stale.mkdir()
    (stale / "events.npy").write_bytes(b"0" * 1000)

    def interrupted(source, folder, dataset, name, fmt):
        (open(os.path.join(folder, "events.npy"), "wb")).write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(convert_common, "_write_sequence", interrupted)
    status = call(lambda argv: convert_common.main("IJRR", argv), "--raw_data_dir", str(raw_bag), "--output_data_dir", str(out))
    err = capsys.readouterr().err
    assert status == 130 and "interrupted" in err and "Traceback" not in err
    assert_nothing_left(out)


# -----------------------------------------------------------------------------
# evaluate.py


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """A simulated recording with APS frames, in the authors' folder layout."""
    folder = str(tmp_path_factory.mktemp("data") / "sim")
    render = moving_texture(20, 24, 0.6, "pan", seed=1, speed=25.0)
    write_sequence(folder, render, simulate_events(render, 0.6, threshold=0.2), np.linspace(0.05, 0.55, 6))
    return folder


def test_evaluate_refuses_existing_results_without_overwrite(sequence, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text("{}")
    status = call(evaluate.main, sequence, "-o", str(out), "--dataset", "none", "--no_lpips", *TINY)
    assert_error(status, capsys.readouterr().err, 2, str(out), "already holds results", "--overwrite")
    assert os.listdir(out) == ["results.json"]
    status = call(evaluate.main, sequence, "-o", str(out), "--dataset", "none", "--no_lpips", "--overwrite", *TINY)
    assert status == 0, capsys.readouterr().err
    assert (out / "table.md").exists() and not [name for name in os.listdir(out) if name.startswith(".")]
    run = json.loads((out / "results.json").read_text())["sequences"]["sim"]["run"]
    assert run == str(out / "runs" / "default" / "sim") and os.path.isdir(run)


def test_evaluate_refuses_a_file_as_output(sequence, tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("a file")
    status = call(evaluate.main, sequence, "-o", str(out), "--no_lpips", *TINY)
    assert_error(status, capsys.readouterr().err, 1, str(out), "a file is in the way")


def test_evaluate_checks_flags_before_anything_is_written(sequence, tmp_path, capsys):
    out = tmp_path / "results"
    status = call(evaluate.main, sequence, "-o", str(out), "--dataset", "none", "--no_lpips", *TINY, "--compare", "default",
                  "--lr -1")
    assert_error(status, capsys.readouterr().err, 2, "--compare '--lr -1'", "--lr -1")
    assert_nothing_left(out)


def test_evaluate_leaves_a_corrupt_time_stamp_out(sequence, tmp_path, capsys):
    """evaluate.py fits spans over 2.5 s in 2 s windows: one event at 1e9 s once planned 5e8 of them."""
    folder = tmp_path / "sim"
    shutil.copytree(sequence, folder)
    rows = np.load(folder / "events.npy")
    np.save(folder / "events.npy", np.concatenate([rows, [[1e9, 1, 1, 1]]]))
    status = call(evaluate.main, str(folder), "-o", str(tmp_path / "out"), "--dataset", "none", "--no_lpips", *TINY)
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"event {len(rows)} at 1000000000.000000 s lies far after the other events" in err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["sequences"]["sim"]["window"] is None


def test_pair_of_tiny_images(tmp_path, capsys):
    for size, name in ((8, "small"), (16, "medium")):
        utils.write_png(str(tmp_path / f"{name}_a.png"), np.zeros((size, size), np.uint8))
        utils.write_png(str(tmp_path / f"{name}_b.png"), np.full((size, size), 40, np.uint8))
    status = call(evaluate.main, "--pair", str(tmp_path / "small_a.png"), str(tmp_path / "small_b.png"))
    assert_error(status, capsys.readouterr().err, 2, "8x8 images are too small", "11 px")
    status = call(evaluate.main, "--pair", str(tmp_path / "medium_a.png"), str(tmp_path / "medium_b.png"))
    captured = capsys.readouterr()
    assert status == 0 and json.loads(captured.out)["lpips"] is None
    assert "too small for LPIPS" in captured.err and "lpips is null" in captured.err
