"""Issue 24, "trust nothing a file says": checkpoints, output folders and commands under hostile
input. A model.pt is data, never instructions: every field is checked against the flags' bounds
and every network against the shapes its settings describe, before anything is built from it,
and it never says where a run writes or whether it may replace a folder. Output folders never
follow a symlink planted in them. evaluate.py never replaces the results of another run without
--overwrite. A reader's ValueError or cv2.error ends in one line, not a traceback. A sensor one
row high fits. Each case writes its own files; each failure is one line `error: PATH: problem`
with exit status 2 (bad input) or 1 (the environment), and leaves nothing behind."""

import copy
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import command
import evaluate
import train
from conftest import REPO
from test_bad_input import (SENSOR, TINY, assert_error, assert_nothing_left, call, dead_pid, recording, save,
                            sequence)  # noqa: F401  (sequence: a fixture)


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    """main() in this process must not install its SIGTERM handlers into pytest's."""
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(the recording, the model.pt of a tiny fit of it): what the tampered checkpoints start from."""
    folder = tmp_path_factory.mktemp("fitted")
    data = save(str(folder), recording())
    assert call(train.main, "-d", data, "-o", str(folder / "runs"), "-n", "fit", *SENSOR, *TINY) == 0
    return data, str(folder / "runs" / "fit" / "model.pt")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def tampered(fitted, folder, change):
    """A copy of the fit's model.pt in `folder`/ck, as `change` (a function of its content) leaves it."""
    content = copy.deepcopy(load(fitted[1]))
    content = change(content)
    os.makedirs(folder / "ck", exist_ok=True)
    path = str(folder / "ck" / "model.pt")
    torch.save(content, path)
    load(path)  # a plain checkpoint: torch's weights_only loader takes it
    return path


def render_only(checkpoint, data, out, *flags):
    return call(train.main, "--render_only", checkpoint, "-d", data, "-o", str(out), *flags)


def changed(where, edit):
    """A change of a checkpoint's content: `edit` applied to the part `where` picks; the
    content, edited in place, is what is saved."""
    def change(content):
        edit(where(content))
        return content
    return change


def setting(name, value):
    return changed(lambda content: content["config"], lambda table: table.update({name: value}))


def network(key, value):
    return changed(lambda content: content["networks"][0], lambda table: table.update({key: value}))


def replaced(key, value):
    return changed(lambda content: content, lambda table: table.update({key: value}))


def dropped(key, where=lambda content: content):
    return changed(where, lambda table: table.pop(key))


def without_networks_key(value):
    def change(content):
        del content["networks"]
        content["windows"] = value  # the key of a model.pt written before "networks"
        return content
    return change


def first_network(content):
    return content["networks"][0]


# -----------------------------------------------------------------------------
# checkpoints: every field checked before anything is built from it

TAMPERED = {
    # the 13 of the issue
    "width_mismatch": (setting("net_width", 32), ["window 1", "body.0.linear.weight", "16x1", "32x1", "--net_width 32"]),
    "wrong_tensor_shape": (network("head.weight", torch.zeros(3, 3)), ["head.weight", "3x3", "480x256"]),
    "string_tensor": (network("head.bias", "bias"), ["head.bias", "not a tensor", "'bias'"]),
    "config_a_list": (replaced("config", [1, 2]), ["settings", "not a table"]),
    "string_iters": (setting("iters", "5"), ["saved settings", "--iters '5'", "whole number"]),
    "string_width": (setting("net_width", "16"), ["saved settings", "--net_width '16'", "whole number"]),
    "bad_event_thresh": (setting("event_thresh", -1.0), ["saved settings", "--event_thresh -1", "positive"]),
    "net_layers_none": (setting("net_layers", None), ["saved settings", "--net_layers None", "whole number"]),
    "networks_an_int": (replaced("networks", 3), ["networks", "not a list"]),
    "windows_an_int": (without_networks_key(3), ["networks", "not a list"]),
    "reversed_spans": (replaced("spans", [(1.9, 0.1)]), ["spans", "window 1", "ends before it begins"]),
    "string_spans": (replaced("spans", "0-2"), ["spans", "not a list of (begin, end) pairs"]),
    "short_exposure": (replaced("exposure", (0.5,)), ["exposure", "not a (C, offset) pair"]),
    "string_exposure": (replaced("exposure", "bright"), ["exposure", "not a (C, offset) pair"]),
    # and their neighbours
    "string_spans_values": (replaced("spans", [("a", "b")]), ["spans", "not a list of (begin, end) pairs"]),
    "overlapping_spans": (replaced("spans", [(0.1, 1.0), (0.5, 1.9)]), ["spans", "window 2", "before window 1 ends"]),
    "negative_exposure": (replaced("exposure", (-0.5, 0.0)), ["exposure", "C must be positive"]),
    "float64_tensor": (changed(first_network, lambda state: state.update({"head.bias": state["head.bias"].double()})),
                       ["head.bias", "torch.float64", "torch.float32"]),
    "missing_tensor": (dropped("head.bias", first_network), ["missing", "'head.bias'"]),
    "extra_tensor": (network("evil", torch.zeros(1)), ["unexpected", "'evil'"]),
    "nan_weight": (changed(first_network, lambda state: state["head.bias"].__setitem__(0, float("nan"))),
                   ["head.bias", "NaN or infinite"]),
    "network_a_string": (replaced("networks", ["not a network"]), ["neither saved nor named"]),
    "no_networks": (replaced("networks", []), ["no networks"]),
    "not_a_table": (lambda content: [content], ["not a model.pt"]),
    "no_settings": (dropped("config"), ["not a model.pt"]),
    "no_sensor": (changed(lambda content: content["config"], lambda table: table.update(H=None, W=None)),
                  ["saved settings", "sensor"]),
    "string_device": (setting("device", 5), ["saved settings", "--device 5", "text"]),
    "bad_choice": (setting("loss", "diff\nerror: forged"), ["saved settings", "--loss 'diff\\nerror: forged'"]),
    "huge_width": (setting("net_width", 1 << 40), ["saved settings", "--net_width", "16384"]),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_checkpoint_is_one_line_naming_it(fitted, tmp_path, capsys, case):
    change, words = TAMPERED[case]
    checkpoint, out = tampered(fitted, tmp_path, change), tmp_path / "out"
    status = render_only(checkpoint, fitted[0], out, "-n", "render")
    assert_error(status, capsys.readouterr().err, 2, f"error: {checkpoint}: ", *words)
    assert_nothing_left(out)


def test_unknown_settings_are_ignored_with_a_note(fitted, tmp_path, capsys):
    """A setting this version does not know (a later version's, or a made-up one) cannot do
    anything: it is left out, and the run says so."""
    checkpoint = tampered(fitted, tmp_path, changed(lambda content: content["config"],
                                                    lambda table: table.update({"evil": "rm -rf /", 7: 1})))
    status = render_only(checkpoint, fitted[0], tmp_path / "out", "-n", "render")
    err = capsys.readouterr().err
    assert status == 0, err
    assert "saved settings this version does not know are ignored: 'evil', 7" in err
    assert len(os.listdir(tmp_path / "out" / "render" / "frames")) == 50


def test_an_older_checkpoint_with_windows_renders(fitted, tmp_path, capsys):
    """Written before the networks' key was "networks", and before spans and the exposure were saved."""
    def older(content):
        content["windows"] = content.pop("networks")
        del content["spans"], content["exposure"]
        return content
    checkpoint = tampered(fitted, tmp_path, older)
    assert render_only(checkpoint, fitted[0], tmp_path / "out", "-n", "r") == 0, capsys.readouterr().err


def test_a_checkpoint_renders_as_before(fitted, tmp_path, capsys):
    """The checks change nothing for a good checkpoint: the frames of the fit, byte for byte."""
    assert render_only(fitted[1], fitted[0], tmp_path, "-n", "again") == 0, capsys.readouterr().err
    original = os.path.join(os.path.dirname(fitted[1]), "frames")
    for name in sorted(os.listdir(original)):
        with open(os.path.join(original, name), "rb") as a, open(tmp_path / "again" / "frames" / name, "rb") as b:
            assert a.read() == b.read(), name


# -----------------------------------------------------------------------------
# checkpoints: never instructions about where to write

def test_a_checkpoint_never_says_where_to_write_or_what_to_replace(fitted, tmp_path, capsys):
    victim = tmp_path / "parent" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("someone's finished work")
    settings = {"output_dir": str(tmp_path / "parent"), "exp_name": "victim", "overwrite": True,
                "render_only": str(victim / "model.pt")}
    checkpoint = tampered(fitted, tmp_path, changed(lambda content: content["config"], lambda table: table.update(settings)))
    out = tmp_path / "out"
    status = render_only(checkpoint, fitted[0], out)
    assert status == 0, capsys.readouterr().err
    assert os.listdir(tmp_path / "parent") == ["victim"] and os.listdir(victim) == ["keep.txt"]
    assert os.listdir(out) == ["events"]  # named after the data, not the checkpoint's -n


def test_rerendering_a_run_fitted_with_overwrite_replaces_nothing_without_it(fitted, tmp_path, capsys):
    out = tmp_path / "out"
    assert call(train.main, "-d", fitted[0], "-o", str(out), "-n", "run", *SENSOR, *TINY, "--overwrite") == 0
    checkpoint = str(out / "run" / "model.pt")
    assert load(checkpoint)["config"]["overwrite"] is True
    before = {name: (out / "run" / name).stat().st_mtime_ns for name in os.listdir(out / "run")}
    capsys.readouterr()
    status = render_only(checkpoint, fitted[0], out, "-n", "run")
    assert_error(status, capsys.readouterr().err, 2, str(out / "run"), "already exists", "--overwrite")
    assert {name: (out / "run" / name).stat().st_mtime_ns for name in os.listdir(out / "run")} == before
    assert render_only(checkpoint, fitted[0], out) == 0  # a name of its own
    assert sorted(os.listdir(out)) == ["events", "run"]
    assert render_only(checkpoint, fitted[0], out, "-n", "run", "--overwrite") == 0  # asked for on the command line
    assert sorted(os.listdir(out)) == ["events", "run"]


# -----------------------------------------------------------------------------
# checkpoints: files they name are regular files inside networks/, never links

@pytest.fixture
def spilled(fitted, tmp_path):
    """A copy of the fit whose model.pt names its network in networks/ (as a long run writes it)."""
    folder = tmp_path / "run"
    (folder / "networks").mkdir(parents=True)
    content = load(fitted[1])
    torch.save(content["networks"][0], folder / "networks" / "window-000001.pt")
    content["networks"] = ["networks/window-000001.pt"]
    torch.save(content, folder / "model.pt")
    return folder


def test_a_spilled_network_renders(fitted, spilled, tmp_path, capsys):
    assert render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r") == 0, capsys.readouterr().err


def test_a_network_file_that_is_a_symlink_is_refused(fitted, spilled, tmp_path, capsys):
    outside = tmp_path / "elsewhere.pt"
    (spilled / "networks" / "window-000001.pt").rename(outside)
    (spilled / "networks" / "window-000001.pt").symlink_to(outside)
    status = render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r")
    assert_error(status, capsys.readouterr().err, 2, "window-000001.pt", "a symbolic link")
    assert_nothing_left(tmp_path / "out")


def test_a_networks_folder_that_is_a_symlink_is_refused(fitted, spilled, tmp_path, capsys):
    shutil.move(spilled / "networks", tmp_path / "elsewhere")
    (spilled / "networks").symlink_to(tmp_path / "elsewhere")
    status = render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r")
    assert_error(status, capsys.readouterr().err, 2, str(spilled / "networks"), "a symbolic link")
    assert_nothing_left(tmp_path / "out")


def test_a_network_file_that_is_not_a_regular_file_is_refused(fitted, spilled, tmp_path, capsys):
    (spilled / "networks" / "window-000001.pt").unlink()
    os.mkfifo(spilled / "networks" / "window-000001.pt")  # reading it would wait for ever
    status = render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r")
    assert_error(status, capsys.readouterr().err, 2, "window-000001.pt", "not a regular file")


def test_a_network_file_of_the_wrong_shape_is_refused(fitted, spilled, tmp_path, capsys):
    torch.save({"head.weight": torch.zeros(2)}, spilled / "networks" / "window-000001.pt")
    status = render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r")
    assert_error(status, capsys.readouterr().err, 2, "window-000001.pt", "missing")
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize("name", ["networks/window-000001.pt\n", "networks/window-000001.pt\nerror: forged",
                                  "networks/window-\u0661\u0662\u0663\u0664\u0665\u0666.pt"])
def test_a_network_name_is_one_line_and_ascii_digits(fitted, spilled, tmp_path, capsys, name):
    content = load(spilled / "model.pt")
    content["networks"] = [name]
    torch.save(content, spilled / "model.pt")
    status = render_only(str(spilled / "model.pt"), fitted[0], tmp_path / "out", "-n", "r")
    err = capsys.readouterr().err
    assert_error(status, err, 2, "neither saved nor named", repr(name))
    assert len(err.strip().splitlines()) == 1, err


def test_a_saved_data_path_that_is_not_a_file_is_refused(fitted, tmp_path, capsys):
    fifo = tmp_path / "events.npy"
    os.mkfifo(fifo)
    checkpoint = tampered(fitted, tmp_path, setting("data_path", str(fifo)))
    status = call(train.main, "--render_only", checkpoint, "-o", str(tmp_path / "out"))
    assert_error(status, capsys.readouterr().err, 2, checkpoint, "--data_path", "not a regular file or folder")


# -----------------------------------------------------------------------------
# output folders: symlinks and leftovers planted in -o

def test_a_dangling_symlink_in_place_of_the_run_is_named(fitted, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run").symlink_to(tmp_path / "nowhere")
    status = call(train.main, "-d", fitted[0], "-o", str(out), "-n", "run", *SENSOR, *TINY)
    assert_error(status, capsys.readouterr().err, 2, f"error: {out / 'run'}: ", "already exists")
    assert os.listdir(out) == ["run"] and os.path.islink(out / "run")
    assert call(train.main, "-d", fitted[0], "-o", str(out), *SENSOR, *TINY) == 0  # numbered past it
    assert sorted(os.listdir(out)) == ["events", "run"]


def test_staged_folder_names_a_symlink_that_appeared_in_its_place(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(FileExistsError) as error:
        with command.staged_folder(str(final)):
            final.symlink_to(tmp_path / "nowhere")
    assert error.value.filename == str(final) and os.listdir(tmp_path) == ["run"]
    with command.staged_folder(str(final), replace=True) as work:  # replaced: the link, not what it points to
        (tmp_path / "nowhere").mkdir()
        open(os.path.join(work, "new.txt"), "w").close()
    assert not final.is_symlink() and os.listdir(final) == ["new.txt"] and (tmp_path / "nowhere").is_dir()


def test_a_planted_replaced_symlink_never_moves_a_folder_from_outside(tmp_path):
    outside, parent = tmp_path / "outside", tmp_path / "out"
    (outside / "run").mkdir(parents=True)
    (outside / "run" / "secret.txt").write_text("not yours")
    parent.mkdir()
    planted = parent / f".run.replaced-{command.HOST}-{dead_pid()}-x"
    planted.symlink_to(outside)
    command.remove_stale_work_folders(str(parent))
    assert (outside / "run" / "secret.txt").read_text() == "not yours"
    assert os.listdir(parent) == [planted.name] and not (parent / "run").exists()


def test_a_planted_link_inside_a_replaced_folder_is_not_put_back(tmp_path):
    outside, parent = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    trash = parent / f".run.replaced-{command.HOST}-{dead_pid()}-x"
    trash.mkdir(parents=True)
    (trash / "run").symlink_to(outside)
    command.remove_stale_work_folders(str(parent))
    assert outside.is_dir() and not (parent / "run").exists() and os.listdir(parent) == []


def test_a_replaced_result_is_kept_when_a_symlink_took_its_name(tmp_path):
    parent = tmp_path / "out"
    trash = parent / f".run.replaced-{command.HOST}-{dead_pid()}-x"
    (trash / "run").mkdir(parents=True)
    (trash / "run" / "model.pt").write_text("the only copy")
    (parent / "run").symlink_to(tmp_path / "nowhere")
    command.remove_stale_work_folders(str(parent))
    assert (trash / "run" / "model.pt").read_text() == "the only copy"


def test_an_output_folder_that_is_a_dangling_symlink_is_named(fitted, tmp_path, capsys):
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    status = call(train.main, "-d", fitted[0], "-o", str(out), "-n", "run", *SENSOR, *TINY)
    assert_error(status, capsys.readouterr().err, 1, f"error: {out}: ", "a symbolic link to nothing")
    assert os.listdir(tmp_path) == ["out"] and os.path.islink(out) and not (tmp_path / "nowhere").exists()


def test_a_planted_work_folder_with_an_impossible_process_id(fitted, tmp_path, capsys):
    out = tmp_path / "out"
    (out / f".run.partial-{command.HOST}-{'9' * 30}-x").mkdir(parents=True)
    status = call(train.main, "-d", fitted[0], "-o", str(out), "-n", "run", *SENSOR, *TINY)
    assert status == 0, capsys.readouterr().err
    assert os.listdir(out) == ["run"]


def test_a_run_in_progress_holds_its_name(fitted, tmp_path, capsys):
    """Another run (this process, standing in for it) is writing -o/run: a second is refused at
    once rather than failing at its end, and without -n it takes the next number. (With
    --overwrite it goes on, and replaces the other's result if it finishes later, as asked:
    tests/test_bad_input.py.)"""
    out = tmp_path / "out"
    with command.staged_folder(str(out / "run")):
        status = call(train.main, "-d", fitted[0], "-o", str(out), "-n", "run", *SENSOR, *TINY)
        assert_error(status, capsys.readouterr().err, 2, str(out / "run"), "being written by another run",
                     f"process {os.getpid()}")
        assert call(train.main, "-d", fitted[0], "-o", str(out), "-n", "events", *SENSOR, *TINY) == 0
        assert call(train.main, "-d", fitted[0], "-o", str(out), *SENSOR, *TINY) == 0
    assert sorted(os.listdir(out)) == ["events", "events-2", "run"]


# -----------------------------------------------------------------------------
# evaluate.py: -o is one run's at a time

def evaluate_call(sequence, out, *flags):
    return call(evaluate.main, sequence, "-o", str(out), "--dataset", "none", "--no_lpips", *TINY, *flags)


def results_of(out):
    return {name: (out / name).read_bytes() for name in ("results.json", "table.md", "per_frame.csv")}


def test_evaluate_keeps_results_that_another_run_finished_meanwhile(sequence, tmp_path, capsys, monkeypatch):
    """Two runs start on an empty -o; the other finishes first. This one must not replace its
    results at its end: one line, and the other's results as they were."""
    out, other = tmp_path / "results", tmp_path / "other"
    assert evaluate_call(sequence, other) == 0
    kept = results_of(other)
    write_outputs = evaluate.write_outputs

    def other_run_finishes_first(*arguments):
        write_outputs(*arguments)
        os.rename(other, out)
    monkeypatch.setattr(evaluate, "write_outputs", other_run_finishes_first)
    capsys.readouterr()
    status = evaluate_call(sequence, out)
    assert_error(status, capsys.readouterr().err, 1, str(out), "appeared while", "kept as it is")
    assert results_of(out) == kept and not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_evaluate_replaces_an_empty_folder_and_with_overwrite_results(sequence, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()  # made beforehand, empty: nothing to keep
    assert evaluate_call(sequence, out) == 0, capsys.readouterr().err
    first = results_of(out)
    assert_error(evaluate_call(sequence, out), capsys.readouterr().err, 2, str(out), "already holds results")
    assert results_of(out) == first
    assert evaluate_call(sequence, out, "--overwrite", "--seed", "1") == 0
    assert results_of(out) != first


def test_evaluate_refuses_an_output_folder_another_run_is_writing(sequence, tmp_path, capsys):
    """Two processes: the first fits for long; the second, given the same -o, is refused at once
    (even with --overwrite), and the first, interrupted, leaves nothing."""
    out = tmp_path / "results"
    first = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), sequence, "-o", str(out),
                              "--dataset", "none", "--no_lpips", *TINY, "--iters", "1000000"],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not [name for name in os.listdir(tmp_path) if name.startswith(".results.partial-")]:
            assert time.monotonic() < deadline and first.poll() is None, "the first run never began writing"
            time.sleep(0.1)
        status = evaluate_call(sequence, out, "--overwrite")
        assert_error(status, capsys.readouterr().err, 2, str(out), "being written by another run", f"process {first.pid}")
    finally:
        first.terminate()
        err = first.communicate(timeout=60)[1]
    assert first.returncode == 130, err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_evaluate_refuses_configurations_that_share_a_folder(sequence, tmp_path, capsys):
    status = evaluate_call(sequence, tmp_path / "results", "--compare", "--seed 1", "--seed=1")
    assert_error(status, capsys.readouterr().err, 2, "--compare", "'--seed=1'", "'--seed 1'", "runs/seed_1")
    assert_nothing_left(tmp_path / "results")


# -----------------------------------------------------------------------------
# commands: a reader's ValueError, cv2.error or MemoryError is one line

def failing_reader(error):
    def read(*arguments, **options):
        raise error
    return read


READER_ERRORS = [
    (ValueError("cannot reshape array of size 7 into shape (4)"), 2, ["cannot reshape array"]),
    (ValueError("first line\nsecond line"), 2, ["first line"]),
    (ValueError(), 2, ["ValueError"]),
    (MemoryError(), 1, ["out of memory"]),
]


@pytest.mark.parametrize("error, code, words", READER_ERRORS)
def test_exit_status_names_the_input_a_reader_failed_on(capsys, error, code, words):
    with pytest.raises(SystemExit) as exit:
        with command.exit_status((), "out", source="recording.h5"):
            raise error
    err = capsys.readouterr().err
    assert_error(exit.value.code, err, code, "error: recording.h5: ", *words)
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("error, code, words", READER_ERRORS + [(OSError(5, "Input/output error", "rec.npy"), 1, ["rec.npy"])])
def test_a_reader_error_in_train_is_one_line(fitted, tmp_path, capsys, monkeypatch, error, code, words):
    monkeypatch.setattr(train, "open_events", failing_reader(error))
    status = call(train.main, "-d", fitted[0], "-o", str(tmp_path / "out"), "-n", "run", *SENSOR, *TINY)
    err = capsys.readouterr().err
    assert_error(status, err, code, *words)
    assert len(err.strip().splitlines()) == 1, err
    assert_nothing_left(tmp_path / "out")


def test_a_cv2_error_is_one_line_naming_the_input(sequence, tmp_path, capsys, monkeypatch):
    import cv2
    monkeypatch.setattr(evaluate, "read_sequence", failing_reader(cv2.error("OpenCV(4.9) error: (-215:Assertion failed)")))
    status = evaluate_call(sequence, tmp_path / "out")
    assert_error(status, capsys.readouterr().err, 2, f"error: {sequence}: ", "Assertion failed")
    assert_nothing_left(tmp_path / "out")


def test_a_programming_error_is_not_masked(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "open_events", failing_reader(TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        train.main(["-d", fitted[0], "-o", str(tmp_path / "out"), "-n", "run", *SENSOR, *TINY])


# -----------------------------------------------------------------------------
# a sensor one row (or one column) high

@pytest.mark.parametrize("flags", [[], ["--plain"], ["--loss", "autograd"]])
@pytest.mark.parametrize("height, width", [(1, 32), (32, 1)])
def test_a_sensor_one_pixel_thin_fits(tmp_path, capsys, flags, height, width):
    rng = np.random.default_rng(0)
    n = 500
    rows = np.stack([np.sort(rng.uniform(0, 1, n)), rng.integers(0, width, n), rng.integers(0, height, n),
                     rng.integers(0, 2, n)], axis=1)
    data, out = save(tmp_path, rows), tmp_path / "out"
    status = call(train.main, "-d", data, "-o", str(out), "-n", "run", "--H", str(height), "--W", str(width), *TINY, *flags)
    assert status == 0, capsys.readouterr().err
    assert len(os.listdir(out / "run" / "frames")) == 50


def thin_frames(shape, seed):
    from test_loss_kernel import random_frames
    return random_frames(shape, "cpu", seed=seed)


THIN_SHAPES = [(1, 3, 1, 1, 6), (2, 4, 3, 5, 1), (1, 2, 1, 1, 1)]


def test_the_fused_loss_of_a_thin_sensor_is_the_plain_one():
    """A term with no pairs adds 0 in both paths: same terms, same gradient."""
    from model import FusedDifferenceLoss, loss_terms
    weights = {"temporal": 1.0, "spatial": 0.05, "brightness": 0.7}
    for seed, shape in enumerate(THIN_SHAPES):
        frames, target = thin_frames(shape, seed)
        results = []
        for fused in (True, False):
            log_frames = frames.clone().requires_grad_()
            terms = (FusedDifferenceLoss.apply(log_frames, target, *weights.values()) if fused else
                     loss_terms(log_frames, log_frames[:, 1:] - log_frames[:, :-1], target, weights))
            terms[0].backward()
            results.append(([term.detach() for term in terms], log_frames.grad))
        (fused_terms, fused_grad), (plain_terms, plain_grad) = results
        for mine, reference in zip(fused_terms, plain_terms):
            assert torch.isfinite(mine).all()
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not __import__("model").triton_available(), reason="triton is not installed")
def test_the_triton_loss_of_a_thin_sensor_in_the_interpreter():
    from test_loss_kernel import run_python
    run_python("import test_hostile_runs as t, test_loss_kernel as k\n"
               "for seed, shape in enumerate(t.THIN_SHAPES):\n"
               "    k.assert_matches_reference(*t.thin_frames(shape, seed))", TRITON_INTERPRET="1")


# -----------------------------------------------------------------------------
# fuzz: a real model.pt with bytes flipped renders, or ends in one line with exit 2

FUZZ_CASES = 12
MEMORY_LIMIT = 3 << 30


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def pickle_span(path):
    """(offset, length) of model.pt's data.pkl, the settings, the spans and the tensors' names
    and shapes (torch does not check its CRC: a flip there changes what they say)."""
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))
    return info.header_offset + 30 + len(info.filename) + len(info.extra), info.compress_size


def test_flipped_bytes_in_a_checkpoint_render_or_end_in_one_clean_error(fitted, tmp_path):
    """Every third copy has one or two bytes flipped in its pickle, the others up to eight in
    the whole file or its first 64 kB; each is rendered in a process of its own under a 3 GB
    address-space limit (a runaway allocation would be a MemoryError's traceback)."""
    import concurrent.futures
    data = open(fitted[1], "rb").read()
    rng = np.random.default_rng(24)
    paths = []
    for case in range(FUZZ_CASES):
        corrupt = bytearray(data)
        first, count = ((0, len(data)), pickle_span(fitted[1]), (0, min(len(data), 1 << 16)))[case % 3]
        for position in first + rng.integers(0, count, rng.integers(1, 3 if case % 3 == 1 else 9)):
            corrupt[position] ^= int(rng.integers(1, 256))
        (tmp_path / f"ck{case}").mkdir()
        paths.append(str(tmp_path / f"ck{case}" / "model.pt"))
        with open(paths[-1], "wb") as f:
            f.write(corrupt)

    def render(k):
        arguments = [os.path.join(REPO, "train.py"), "--render_only", paths[k], "-d", fitted[0], "-o",
                     str(tmp_path / "runs"), "-n", f"r{k}", "--no_video", "--frames_at", "uniform", "--val_resolution", "4"]
        return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(render, range(FUZZ_CASES)))
    outcomes = {"ran": 0, "refused": 0}
    for path, result in zip(paths, results):
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, f"{path}:\n{result.stderr}"
        if result.returncode == 0:
            outcomes["ran"] += 1
            assert "wrote 4 frames" in result.stdout, result.stderr
        else:
            outcomes["refused"] += 1
            errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
            assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {path}"), \
                f"{path}: exit {result.returncode}\n{result.stderr}"
    assert outcomes["refused"], outcomes
    runs = tmp_path / "runs"
    assert not runs.exists() or not [name for name in os.listdir(runs) if name.startswith(".")]
