"""--ray: the same results as one fit after another, on a local Ray of 2 CPUs; a worker killed in
the middle of a task is retried and the table completes; a job whose data fails is reported for
its sequence while the others finish; whole recordings fitted as runs of windows in parallel."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import REPO
from event_data import EventDataError
from simulate import moving_texture, simulate_events, write_sequence

pytest.importorskip("ray", reason="Ray is an optional extra: pip install .[ray]")
pytestmark = pytest.mark.slow

SMALL = ["--iters", "10", "--train_resolution", "4", "--net_width", "32", "--net_layers", "1", "--device", "cpu",
         "--H", "32", "--W", "40", "--no_lpips", "--dataset", "none"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def simulated(folder, duration, seed):
    render = moving_texture(32, 40, duration, "pan", seed=seed, speed=25.0)
    write_sequence(folder, render, simulate_events(render, duration, threshold=0.2, seed=seed),
                   np.arange(int(duration * 10) + 1) / 10)
    return folder


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    for seed in range(4):
        simulated(str(root / f"sequence{seed}"), 1.0, seed)
    return root


def evaluate(*arguments, wait=True):
    command = [sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), *arguments]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


def scores(folder):
    """results.json without what differs from run to run (timings, and the folders it names)."""
    results = json.loads((folder / "results.json").read_text())
    varying = ("timings", "fit_seconds", "fit_seconds_per_second", "run")
    for configuration in results["configurations"].values():
        for sequence in configuration["sequences"].values():
            sequence["method"].pop("output_dir")  # -o
            for key in varying:
                sequence.pop(key)
        for dataset in configuration["datasets"].values():
            for key in varying:
                dataset.pop(key, None)
    return results["configurations"]


def frames(folder):
    found = {}
    for root, _, names in os.walk(folder / "runs"):
        for name in names:
            if name.endswith(".png"):
                with open(os.path.join(root, name), "rb") as f:
                    found[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return found


@pytest.fixture(scope="module")
def serial(family, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    result = evaluate(str(family), "-o", str(out), *SMALL, "--compare", "default", "--align midpoint")
    assert result.returncode == 0, result.stderr
    return out


def test_ray_gives_the_scores_and_frames_of_a_serial_run(family, serial, tmp_path):
    out = tmp_path / "ray"
    result = evaluate(str(family), "-o", str(out), *SMALL, "--ray", "--compare", "default", "--align midpoint")
    assert result.returncode == 0, result.stderr
    assert scores(out) == scores(serial)
    assert frames(out) == frames(serial) and len(frames(out)) >= 4 * 2 * 5


def ray_workers():
    """Process ids of Ray workers running one of evaluate's jobs (Ray names them by the task)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if "ray::with_threads" in line]


def test_a_worker_killed_in_a_task_is_retried_and_the_table_completes(family, serial, tmp_path):
    out = tmp_path / "killed"
    slow = [*SMALL[:1], "150", *SMALL[2:]]  # long enough a task to be killed in the middle of it
    run = evaluate(str(family), "-o", str(out), *slow, "--ray", "--compare", "default", "--align midpoint", wait=False)
    deadline, killed = time.time() + 120, None
    while killed is None and time.time() < deadline and run.poll() is None:
        workers = ray_workers()
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    _, stderr = run.communicate(timeout=600)
    assert killed is not None, "no Ray worker was seen running a job"
    assert run.returncode == 0, stderr
    results = json.loads((out / "results.json").read_text())
    assert not results["failed"] and all(len(c["sequences"]) == 4 for c in results["configurations"].values())


def test_a_sequence_whose_data_fails_is_reported_and_the_others_finish(family, tmp_path):
    bad = tmp_path / "family"
    shutil.copytree(family, bad)
    frame = bad / "sequence2" / "images" / sorted(os.listdir(bad / "sequence2" / "images"))[5]
    cv2.imwrite(str(frame), np.zeros((16, 20), np.uint8))  # a frame of another size
    out = tmp_path / "out"
    result = evaluate(str(bad), "-o", str(out), *SMALL, "--ray")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 left out of the tables") and "different sizes" in last
    results = json.loads((out / "results.json").read_text())
    assert list(results["failed"]) == ["sequence2"]
    assert sorted(results["sequences"]) == ["sequence0", "sequence1", "sequence3"]


def fail_on_odd(number):
    if number % 2:
        raise EventDataError(f"job{number}", "bad data")
    return number * 10


def test_a_task_that_raises_is_reported_for_its_job_and_the_others_finish(capsys, monkeypatch):
    import ray
    import fanout
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.abspath(__file__)))  # the workers import this module
    try:
        results = fanout.run_jobs(fail_on_odd, [(k,) for k in range(4)], describe=lambda job: f"job{job[0]}")
    finally:
        ray.shutdown()
    assert results[0] == 0 and results[2] == 20
    assert all(isinstance(results[k], fanout.JobFailed) for k in (1, 3))
    assert isinstance(results[1].error, EventDataError) and "job1: bad data" in str(results[1].error)
    assert "note: job1: failed: job1: bad data" in capsys.readouterr().err


def test_runs_of_windows_fit_in_parallel_and_the_first_run_is_the_serial_fit(tmp_path):
    sequence = simulated(str(tmp_path / "long"), 2.0, 5)
    flags = ["-d", sequence, "-o", str(tmp_path / "out"), "--window", "0.5", "--iters", "20", "--train_resolution", "4",
             "--net_width", "32", "--net_layers", "1", "--device", "cpu", "--no_video", "--frames_at", "uniform",
             "--val_resolution", "40", "--H", "32", "--W", "40"]
    train = lambda *more: subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *flags, *more],
                                         capture_output=True, text=True, timeout=600, env=ENV)
    assert train("-n", "serial").returncode == 0
    result = train("-n", "ray", "--ray")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "ray" / "config.json").read_text())
    assert config["timings"]["ray_runs"] == 2 and len(config["data"]["spans"]) == 4
    read = lambda name: [open(os.path.join(tmp_path, "out", name, "frames", file), "rb").read()
                         for file in sorted(os.listdir(tmp_path / "out" / name / "frames"))]
    serial, parallel = read("serial"), read("ray")
    first_run = 40 // 2 - 1  # the frames of windows 1-2, fitted by the first task as a serial fit does
    assert serial[:first_run] == parallel[:first_run] and serial != parallel


def test_ray_missing_is_one_line_with_the_way_to_install_it(family, tmp_path):
    code = ("import os, sys, runpy; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
            "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code, os.path.join(REPO, "scripts", "evaluate.py"), str(family),
                             "-o", str(tmp_path / "out"), *SMALL, "--ray"], capture_output=True, text=True, env=ENV)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--ray needs the ray package: pip install" in result.stderr
