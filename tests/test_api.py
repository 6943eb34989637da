"""The library under the command line: Config, reconstruct() and render() in memory, the
one scorer (utils.score_reconstruction) and the installable `evinr` command."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cli
from config import Config, UsageError, get_parser, parse_config
import experiment
import render
import train
import utils
from conftest import REPO
from event_data import load_events
from simulate import moving_texture, simulate_events, write_sequence

APS_TIMES = np.linspace(0.05, 0.55, 6)
SMALL = ["--iters", "6", "--train_resolution", "4", "--net_width", "32", "--net_layers", "1", "--log_interval", "3"]


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("data") / "sim")
    render = moving_texture(20, 24, 0.6, "pan", seed=1, speed=25.0)
    write_sequence(folder, render, simulate_events(render, 0.6, threshold=0.2), APS_TIMES)
    return folder


def test_config_is_the_command_line():
    """Every Config field is a flag with its default, and parse_config gives the defaults for
    the flags not given."""
    assert parse_config([]) == Config()
    config = parse_config(["-n", "x", "--iters", "7", "--no_c2f", "--window", "2"])
    assert (config.exp_name, config.iters, config.no_c2f, config.window) == ("x", 7, True, 2.0)
    help_text = get_parser().format_help()
    for spec in dataclasses.fields(Config):
        assert f"--{spec.name}" in help_text
    assert "(default: 1000)" in help_text and "(default: 0.0003)" in help_text


def test_reconstruct_in_memory_equals_the_written_frames(sequence, tmp_path):
    flags = ["-d", sequence, "-o", str(tmp_path), "-n", "cli", "--no_video", *SMALL]
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *flags], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    events, _ = load_events(sequence)
    reconstruction = train.reconstruct(events, parse_config(flags), log_frames=True)
    written = sorted(os.listdir(tmp_path / "cli" / "frames"))
    assert len(written) == len(reconstruction.frames) == len(reconstruction.times) == 6
    for name, frame in zip(written, reconstruction.frames):
        in_memory = tmp_path / "memory.png"
        utils.write_png(str(in_memory), frame)
        assert in_memory.read_bytes() == (tmp_path / "cli" / "frames" / name).read_bytes(), name
    np.testing.assert_allclose(reconstruction.times, APS_TIMES, atol=1e-12)
    assert reconstruction.log_frames.shape == (6, 1, 20, 24) and reconstruction.log_frames.dtype == np.float32
    assert reconstruction.config.H == 20 and reconstruction.config.W == 24 and len(reconstruction.states) == 1

    rendered = render.render(reconstruction.states, reconstruction.spans, reconstruction.config, reconstruction.times)
    assert np.array_equal(rendered.frames, reconstruction.frames)
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())["config"]
    assert Config(**saved) == reconstruction.config  # the full configuration used is written


def test_render_at_other_times_and_windows(sequence):
    events, _ = load_events(sequence)
    config = parse_config([*SMALL, "--window", "0.2", "--matmul_precision", "medium"])
    before = torch.get_float32_matmul_precision()
    reconstruction = train.reconstruct(events, config, times=[0.1, 0.3, 0.5])
    assert torch.get_float32_matmul_precision() == before  # a library call leaves the caller's setting alone
    assert len(reconstruction.states) == len(reconstruction.spans) == 3
    again = render.render(reconstruction.states, reconstruction.spans, reconstruction.config, [0.5, 0.1])
    assert np.array_equal(again.frames, reconstruction.frames[[2, 0]])


def test_render_only_overrides_go_on_top_of_the_checkpoint(sequence, tmp_path):
    config = parse_config(["-d", sequence, "-o", str(tmp_path), "-n", "fit", "--frames_at", "uniform",
                                 "--val_resolution", "5", "--no_video", *SMALL])
    train.run(config)
    checkpoint = str(tmp_path / "fit" / "model.pt")
    again = experiment.config_for_render(checkpoint, {"render_only": checkpoint, "exp_name": "again"})
    assert (again.frames_at, again.val_resolution, again.iters, again.exp_name) == ("uniform", 5, 6, "again")
    with pytest.raises(UsageError, match="--net_width"):
        experiment.config_for_render(checkpoint, {"render_only": checkpoint, "net_width": 64})


def test_without_a_name_runs_are_numbered_and_with_one_refused(sequence, tmp_path):
    config = parse_config(["-d", sequence, "-o", str(tmp_path), "--no_video", *SMALL])
    assert train.run(config)["folder"] == os.path.join(str(tmp_path), "sim")
    assert train.run(config)["folder"] == os.path.join(str(tmp_path), "sim-2")
    with pytest.raises(UsageError, match="already exists"):
        train.run(dataclasses.replace(config, exp_name="sim"))


# -----------------------------------------------------------------------------
# the one scorer


def test_scorer_applies_the_evreal_rules():
    reference = np.tile(np.linspace(0, 250, 16).round().astype(np.uint8), (16, 1))
    aps = np.stack([reference] * 4)
    aps_t = np.array([1.0, 1.1, 1.2, 1.3])
    images = np.stack([reference, reference, reference + 5, reference])
    times = np.array([1.0, 1.1009, 1.202, 1.3])  # frame 0 at its time, 0.9 ms off, 2 ms off, the last frame
    rows = utils.score_reconstruction(images, times, aps, aps_t, use_lpips=False)
    assert [row["aps_index"] for row in rows] == [0, 1]  # over 1 ms off: not scored; the last frame: never
    assert rows[0]["mse"] == 0.0 and rows[1]["mse"] == 0.0
    assert rows[1]["t"] == 1.1 and rows[1]["t_reconstruction"] == 1.1009
    rows = utils.score_reconstruction(images, aps_t, aps, aps_t, use_lpips=False)
    assert [row["aps_index"] for row in rows] == [0, 1, 2] and rows[2]["mse"] == pytest.approx((5 / 255) ** 2)
    summary = utils.mean_scores(rows + [{"mse": float("nan"), "ssim": float("inf"), "lpips": None}])
    assert summary["mse"] == pytest.approx((5 / 255) ** 2 / 3) and summary["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rows]))
    assert summary["lpips"] is None and summary["n_frames"] == 4
    with pytest.raises(ValueError, match="WxH"):
        utils.score_reconstruction(images[:, :8], times, aps, aps_t, use_lpips=False)


def test_nearest_aps_frame_within_a_millisecond():
    aps_t = np.array([0.0, 0.04, 0.08])
    np.testing.assert_array_equal(utils.nearest_aps([0.0, 0.0405, 0.06, 0.0791, 0.2], aps_t), [0, 1, -1, 2, -1])
    np.testing.assert_array_equal(utils.nearest_aps([0.5, 0.7], np.array([0.5])), [0, -1])


# -----------------------------------------------------------------------------
# the evinr command


@pytest.mark.slow
def test_evinr_command_dispatches_to_every_tool(sequence, tmp_path):
    def evinr(*arguments):
        return subprocess.run([sys.executable, "-c", "import sys, cli; cli.cli()", *arguments], capture_output=True,
                              text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": REPO})
    listing = evinr("--help")
    assert listing.returncode == 0 and all(name in listing.stdout for name in cli.COMMANDS)
    info = evinr("info", sequence)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["sensor"] == [20, 24]
    for command in (["evaluate", "--help"], ["benchmark", "--help"], ["convert", "ijrr", "--help"], ["reconstruct", "--help"]):
        result = evinr(*command)
        assert result.returncode == 0 and "usage" in result.stdout, (command, result.stderr)
    assert evinr("nonsense").returncode == 2 and evinr("convert", "xyz").returncode == 2
    run = evinr("reconstruct", "-d", sequence, "-n", "here", "--no_video", *SMALL)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "runs" / "here" / "frames").is_dir()


@pytest.mark.slow
def test_pip_install_gives_a_working_evinr_command(tmp_path):
    """`pip install .` installs the modules, the scripts and the demo: the command works from any
    folder, without the checkout on the path."""
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), REPO], capture_output=True, text=True)
    if install.returncode != 0 and "setuptools" in install.stderr:
        pytest.skip("building the package needs setuptools in this environment")
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evinr = lambda *arguments: subprocess.run([str(target / "bin" / "evinr"), *arguments], capture_output=True, text=True,
                                              cwd=str(elsewhere), env=env)
    assert evinr("--help").returncode == 0
    assert evinr("evaluate", "--help").returncode == 0 and evinr("convert", "hqf", "--help").returncode == 0
    version = evinr("--version")
    assert version.returncode == 0 and version.stdout.startswith("evinr ")
    python = lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         cwd=str(elsewhere), env=env)
    assert python("import evinr; evinr.reconstruct; evinr.load_events; evinr.Config").returncode == 0
    for generic in ("utils", "model", "train", "event_data", "config", "plan"):  # nothing generic is claimed
        assert python(f"import evinr, {generic}").returncode != 0, generic
    run = evinr("reconstruct", "--no_video", *SMALL)  # the bundled demo, found where pip put it
    assert run.returncode == 0, run.stderr
    assert "wrote 41 frames" in run.stdout and (elsewhere / "runs" / "demo" / "frames").is_dir()
    config = json.loads((elsewhere / "runs" / "demo" / "config.json").read_text())
    assert config["data"]["path"].startswith(str(target))
