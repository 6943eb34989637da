"""Fuzzing the readers: copies of the real recordings (a ROS bag, uncompressed and bz2, an AEDAT4
file and the HDF5 demo), and of a Prophesee RAW file and a ROS 2 bag written here, with a few
random bytes flipped, read by `event_data.py --info` and, for some bags, fitted by train.py
with tiny settings. Every case must end in a correct run or in one
line `error: PATH: problem` with exit status 2: never a traceback, a crash (a signal), a hang
(a timeout) or a runaway allocation (each process runs under a 3 GB address-space limit, where a
MemoryError would show as a traceback). A flipped byte in an event's seconds gives a time stamp
days away, which train.py --window must leave out rather than plan millions of windows for."""

import concurrent.futures
import json
import os
import resource
import subprocess
import sys

import shutil

import numpy as np

import benchmark_io as formats
from conftest import REPO, shared_data

MEMORY_LIMIT = 3 << 30
# seconds before a process counts as hung: --info reads a small file in well under one; a tiny
# fit of a bag (which a corrupt time stamp no longer stops: its events are sorted) takes several,
# many more on a machine busy with other work
TIMEOUT = {"event_data.py": 60, "train.py": 180}
CASES_PER_FILE = 15
CASES_PER_WRITTEN_FILE = 12
TRAIN_CASES = 4  # bags, which are the files most often still readable after a flip
TINY = ["--window", "2", "--iters", "2", "--train_resolution", "4", "--net_width", "16", "--net_layers", "1", "--no_video",
        "--frames_at", "uniform", "--val_resolution", "4"]


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def flipped_copies(source, folder, rng, count):
    """`count` copies of `source`, each with 1 to 8 bytes xor-ed with random values; every other
    copy has them in its first 64 kB, where the headers and indices are."""
    data = open(source, "rb").read()
    name, extension = os.path.splitext(os.path.basename(source))
    paths = []
    for case in range(count):
        corrupt = bytearray(data)
        region = len(data) if case % 2 else min(len(data), 1 << 16)
        for position in rng.integers(0, region, rng.integers(1, 9)):
            corrupt[position] ^= int(rng.integers(1, 256))
        path = os.path.join(folder, f"{name}_{case}{extension}")
        with open(path, "wb") as f:
            f.write(corrupt)
        paths.append(path)
    return paths


def flipped_bag_copies(folder, parent, rng, count):
    """`count` copies of the ROS 2 bag `folder`, each with its .db3 flipped as flipped_copies does."""
    storage = next(name for name in os.listdir(folder) if name.endswith(".db3"))
    paths = []
    for case, flipped in enumerate(flipped_copies(os.path.join(folder, storage), parent, rng, count)):
        copy = os.path.join(parent, f"bag_{case}")
        shutil.copytree(folder, copy)
        os.replace(flipped, os.path.join(copy, storage))
        paths.append(copy)
    return paths


def run(arguments):
    try:
        return subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                              timeout=TIMEOUT[os.path.basename(arguments[0])],
                              preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        return None


def assert_clean_endings(commands, results):
    """Each command ended in a correct run or in one error line naming its file, exit status 2;
    returns how many of each."""
    outcomes = {"ran": 0, "refused": 0}
    for (path, arguments), result in zip(commands, results):
        case = f"{os.path.basename(arguments[0])} {os.path.basename(path)}"
        assert result is not None, f"{case}: no answer within {TIMEOUT[os.path.basename(arguments[0])]} s"
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, f"{case}:\n{result.stderr}"
        if result.returncode == 0:
            outcomes["ran"] += 1
            if arguments[0].endswith("event_data.py"):
                summary = json.loads(result.stdout)
                assert summary["num_events"] > 0 and summary["t_last"] >= summary["t_first"], case
            else:
                assert "wrote 4 frames" in result.stdout, f"{case}:\n{result.stderr}"
        else:
            outcomes["refused"] += 1
            errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
            assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {path}"), \
                f"{case}: exit {result.returncode}\n{result.stderr}"
    return outcomes


def test_flipped_bytes_end_in_a_correct_run_or_one_clean_error(tmp_path):
    sources = [shared_data("bags", "slider_depth_first200k.bag"), shared_data("bags", "slider_depth_first200k_bz2_by_rosbag.bag"),
               shared_data("aedat4", "sample.aedat4"), os.path.join(REPO, "assets", "slider_depth_demo.h5")]
    rng = np.random.default_rng(11)
    files = [path for source in sources for path in flipped_copies(source, str(tmp_path), rng, CASES_PER_FILE)]
    commands = [(path, [os.path.join(REPO, "event_data.py"), "--info", path]) for path in files]
    commands += [(path, [os.path.join(REPO, "train.py"), "-d", path, "-o", str(tmp_path / "runs"), "-n", f"run{k}", *TINY])
                 for k, path in enumerate(files[1:2 * TRAIN_CASES:2])]  # bags with flips anywhere, in the events too
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [arguments for _, arguments in commands]))
    outcomes = assert_clean_endings(commands, results)
    assert outcomes["ran"] and outcomes["refused"], outcomes  # both kinds of ending were exercised
    runs = tmp_path / "runs"
    assert not runs.exists() or not [name for name in os.listdir(runs) if name.startswith(".")]  # no work folder left


def test_flipped_prophesee_raw_and_ros2_bags_end_in_a_correct_run_or_one_clean_error(tmp_path):
    """Files written here by benchmark_io's writers: an EVT 3.0 RAW file and a ROS 2 bag (SQLite,
    with frames), each copied with 1 to 8 bytes flipped; SQLite must neither hang nor crash."""
    recording = formats.synthetic_recording(20_000, rate=200_000)
    raw, bag = str(tmp_path / "events.raw"), str(tmp_path / "bag")
    formats.write_prophesee_raw(raw, recording, "evt3")
    formats.write_ros2_bag(bag, recording)
    rng = np.random.default_rng(24)
    cases = tmp_path / "cases"
    cases.mkdir()
    files = flipped_copies(raw, str(cases), rng, CASES_PER_WRITTEN_FILE)
    files += flipped_bag_copies(bag, str(cases), rng, CASES_PER_WRITTEN_FILE)
    commands = [(path, [os.path.join(REPO, "event_data.py"), "--info", path]) for path in files]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [arguments for _, arguments in commands]))
    for source, part in (("RAW", slice(0, CASES_PER_WRITTEN_FILE)), ("ROS 2", slice(CASES_PER_WRITTEN_FILE, None))):
        outcomes = assert_clean_endings(commands[part], results[part])
        assert outcomes["ran"] and outcomes["refused"], (source, outcomes)
