"""
The run folder: frames/, timestamps.txt, video.mp4, preview.png, metrics.json (when the
recording has APS frames), model.pt and config.json, written as the run goes so that memory
holds one batch of windows however long the recording. Also reading model.pt back, and where
the bundled demo recording is.
"""

import dataclasses
import errno
import json
import math
import numbers
import os
import platform
import re
import stat
import sys
import time

import numpy as np
import torch

import command
import lpips
import utils
from config import FIT_FIELDS, MAX_WINDOWS, NOT_SAVED, SHORT, Config, UsageError, shown
from event_data import EventDataError, event_sum
from model import make_model

REPO = os.path.dirname(os.path.abspath(__file__))
DEMO_NAME = "slider_depth_demo.h5"


def load_checkpoint(path):
    """(saved settings as a dict, one state dict per window, the spans or None, the exposure of
    --event_thresh auto or None) of a model.pt. A model.pt is data, never instructions: every
    part is checked before anything is built from it (see checked_checkpoint; and each network
    against the shapes its settings describe), and a file that fails is bad input,
    EventDataError naming it. The networks are read when used: from the file's map, or from
    networks/ beside it (checked again then). A model.pt written before the networks' key was
    "networks" holds them under "windows"."""
    content, states, config, _, spans, exposure = checked_checkpoint(path)
    networks = SavedNetworks(path, states, network_shapes(config))
    for k, state in enumerate(states):
        if isinstance(state, dict):
            check_network(path, k, state, networks.shapes)
    return content["config"], networks, spans, exposure


def checked_checkpoint(path):
    """(a model.pt's content, its networks, the Config of its settings, the settings this
    version does not know, its spans, its exposure), each checked but the networks' tensors:
    the networks a list of state dicts or of files in networks/ that are there, the settings
    against the flags' types and bounds, the spans and the exposure for what they must be."""
    content = read_checkpoint(path)
    states = content["networks"] if "networks" in content else content["windows"]
    check_network_list(path, states)
    for k, state in enumerate(states):
        if isinstance(state, str):
            network_file(os.path.dirname(path), state, k)  # there, and a regular file: before any work
    config, unknown = saved_config(path, content["config"])
    spans = checked_spans(path, content.get("spans"), len(states))
    return content, states, config, unknown, spans, checked_exposure(path, content.get("exposure"))


def not_written_by_train(path, why):
    return EventDataError(path, f"not a model.pt written by train.py ({why})")


def read_checkpoint(path):
    """A model.pt's content, a dict with the settings and the networks, read by torch's loader
    for weights only (no code runs), mapped rather than read: the networks are read when used."""
    if not os.path.lexists(path):
        raise EventDataError(path, "no such checkpoint")
    if not os.path.isfile(path):
        raise EventDataError(path, "not a regular file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many kinds for a file that is not a checkpoint
        raise not_written_by_train(path, "unreadable or truncated") from None
    if not isinstance(content, dict) or "config" not in content or not {"networks", "windows"} & set(content):
        raise not_written_by_train(path, "no settings and networks in it")
    return content


def saved_config(path, saved):
    """(the Config of a model.pt's settings, checked as the flags are, the settings this version
    does not know). Those are left out: a later version's setting, or a made-up one, cannot do
    anything here. So are those a checkpoint never sets (NOT_SAVED: where a render writes, and
    whether it may replace a folder, are the command line's alone)."""
    if not isinstance(saved, dict):
        raise not_written_by_train(path, f"its settings are not a table but {type(saved).__name__}")
    names = {spec.name for spec in dataclasses.fields(Config)}
    known = {name: value for name, value in saved.items() if name in names and name not in NOT_SAVED}
    known.setdefault("smooth", 0.0)  # saved before --smooth existed: rendered as it was then
    config = Config(**known)
    try:
        config.check_values()
    except UsageError as error:
        raise EventDataError(path, f"its saved settings are not train.py's: {error}") from None
    if config.H is None:
        raise EventDataError(path, "its saved settings are not train.py's: they give no sensor size (--H, --W)")
    return config, [name for name in saved if name not in names]


def check_network_list(path, states):
    """A model.pt's networks: a list of state dicts, or of the names of files in networks/."""
    if not isinstance(states, (list, tuple)):
        raise not_written_by_train(path, f"its networks are not a list but {type(states).__name__}")
    if not states:
        raise not_written_by_train(path, "it holds no networks")
    if len(states) > MAX_WINDOWS:
        raise not_written_by_train(path, f"{len(states)} networks, more than the {MAX_WINDOWS} windows of one run")
    for k, state in enumerate(states):
        if not (isinstance(state, dict) or (isinstance(state, str) and NETWORK_FILE.fullmatch(state))):
            raise not_written_by_train(path, f"a network is neither saved nor named: window {k + 1} is {SHORT.repr(state)}")


def is_finite_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def checked_spans(path, spans, n_networks):
    """A model.pt's (begin, end) of each network's window, seconds on the recording's clock, in
    order and apart, one per network; None when it has none (written before they were saved)."""
    if spans is None:
        return None
    pairs = isinstance(spans, (list, tuple)) and all(
        isinstance(span, (list, tuple)) and len(span) == 2 and all(map(is_finite_number, span)) for span in spans)
    if not pairs or not spans:
        raise not_written_by_train(path, "its spans are not a list of (begin, end) pairs of seconds")
    for k, (begin, end) in enumerate(spans):
        if not end > begin:
            raise EventDataError(path, f"its spans are impossible: window {k + 1} ends before it begins ({begin:g}-{end:g} s)")
        if k and begin < spans[k - 1][1]:
            raise EventDataError(path, f"its spans are impossible: window {k + 1} begins at {begin:g} s, "
                                       f"before window {k} ends at {spans[k - 1][1]:g} s")
    if len(spans) != n_networks:
        raise EventDataError(path, f"holds {n_networks} networks for {len(spans)} spans")
    return [(float(begin), float(end)) for begin, end in spans]


def checked_exposure(path, exposure):
    """A model.pt's (C, offset) of --event_thresh auto: a positive C and a number, or None."""
    if exposure is None:
        return None
    if not (isinstance(exposure, (list, tuple)) and len(exposure) == 2 and all(map(is_finite_number, exposure))):
        raise not_written_by_train(path, f"its exposure is not a (C, offset) pair of numbers but {SHORT.repr(exposure)}")
    if not exposure[0] > 0:
        raise EventDataError(path, f"its exposure is impossible: C must be positive, not {exposure[0]:g}")
    return float(exposure[0]), float(exposure[1])


def network_shapes(config):
    """What a saved network must match: {"tensors": {name: (shape, dtype)} of the state dict of
    the network `config` describes, built on the meta device (no memory, whatever its size),
    "settings": those settings as flags, for the error line}."""
    with torch.device("meta"):
        model = make_model((config.H, config.W), config)
    shapes = {name: (tuple(value.shape), value.dtype) for name, value in model.state_dict().items()}
    settings = (f"--H {config.H} --W {config.W}{' --color_event' if config.color_event else ''} "
                f"--net_layers {config.net_layers} --net_width {config.net_width}")
    return {"settings": settings, "tensors": shapes}


def size(shape):
    return "x".join(map(str, shape)) or "a scalar"


def check_network(path, k, state, shapes):
    """Refuse a saved network that is not the one its settings describe (names, shapes, types of
    its tensors, finite weights): load_state_dict would fail with a traceback, or load it cast."""
    def refuse(why):
        raise EventDataError(path, f"window {k + 1}'s network does not match its settings: {why}")
    if not isinstance(state, dict):
        refuse(f"not a table of tensors but {type(state).__name__}")
    expected = shapes["tensors"]
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        refuse(", ".join([f"missing {SHORT.repr(name)}" for name in missing[:3]] +
                         [f"unexpected {SHORT.repr(name)}" for name in unexpected[:3]]))
    for name, (shape, dtype) in expected.items():
        value = state[name]
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            refuse(f"{name} is not a tensor but {SHORT.repr(value)}")
        if tuple(value.shape) != shape:
            refuse(f"{name} is {size(value.shape)}, where {shapes['settings']} give {size(shape)}")
        if value.dtype != dtype:
            refuse(f"{name} holds {value.dtype}, not {dtype}")
        if not torch.isfinite(value).all():
            refuse(f"{name} holds NaN or infinite weights")


class SavedNetworks:
    """A model.pt's networks by window: each a state dict, read from networks/ on access when
    the run saved it there, and checked then against the shapes of `shapes` (network_shapes)."""

    def __init__(self, path, states, shapes):
        self.folder, self.states, self.shapes = os.path.dirname(path), states, shapes

    def __len__(self):
        return len(self.states)

    def __getitem__(self, k):
        if isinstance(self.states[k], dict):
            return self.states[k]  # checked by load_checkpoint
        path = network_file(self.folder, self.states[k], k)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            raise EventDataError(path, "not a network saved by train.py (unreadable or truncated)") from None
        check_network(path, k, state, self.shapes)
        return state


def network_file(folder, name, k):
    """The path of a network model.pt names (networks/window-NNNNNN.pt, see NETWORK_FILE): a
    regular file in a folder networks/ beside it, neither of them a symbolic link, so that no
    name in a file leads reading elsewhere (nor to a pipe that would block for ever)."""
    path = os.path.join(folder, name)
    for where, is_kind, kind in ((os.path.dirname(path), stat.S_ISDIR, "a folder"), (path, stat.S_ISREG, "a regular file")):
        try:
            mode = os.lstat(where).st_mode
        except FileNotFoundError:
            raise EventDataError(path, f"missing: model.pt names it for window {k + 1}") from None
        if stat.S_ISLNK(mode):
            raise EventDataError(where, f"a symbolic link, where model.pt's networks must be {kind} beside it")
        if not is_kind(mode):
            raise EventDataError(where, f"not {kind}, where model.pt names the network of window {k + 1}")
    return path


def config_for_render(checkpoint, given):
    """The settings of a saved fit with the command line's flags (`given`) on top. Flags that would
    change the fitted networks or their time axis are refused rather than ignored. The checkpoint
    is checked first (checked_checkpoint: its settings as flags are); a saved recording must be
    a regular file or a folder."""
    config, unknown = checked_checkpoint(checkpoint)[2:4]
    if unknown:
        listed = ", ".join(SHORT.repr(name) for name in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        print(f"note: {checkpoint}: saved settings this version does not know are ignored: {listed}", file=sys.stderr)
    for name in FIT_FIELDS:
        if name in given and given[name] != getattr(config, name):
            raise UsageError(f"--{name}: a saved fit is rendered with its own ({getattr(config, name)}); leave it out with --render_only")
    if "data_path" not in given and config.data_path is not None:
        try:
            mode = os.stat(config.data_path).st_mode
        except (OSError, ValueError):  # missing: the reader says so
            mode = None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise EventDataError(checkpoint, f"its saved --data_path {shown(config.data_path)} is not a regular file or folder")
    return dataclasses.replace(config, **given)


def demo_data():
    """The bundled demo recording: assets/ beside this file, in a checkout and where pip installed
    the package evinr alike."""
    return os.path.join(REPO, "assets", DEMO_NAME)


def experiment_path(config, data_path):
    """OUTPUT_DIR/EXP_NAME. Without --overwrite, a name taken by a finished run (or by anything:
    a file, a symbolic link, dangling or not) is refused, and so is one another run is writing,
    at once rather than at the end (with --overwrite, the run to finish last replaces the other's
    result, as asked); with no -n, the data's name is numbered (name-2, name-3, ...) instead."""
    if config.exp_name is not None:
        final = os.path.join(config.output_dir, config.exp_name)
        writer = command.folder_in_use(final)
        if writer is not None and not config.overwrite:
            raise UsageError(f"{final}: being written by another run (process {writer}); let it finish, "
                             f"choose another -n, or pass --overwrite to replace its result")
        if os.path.lexists(final) and not config.overwrite:
            what = "already exists as a symbolic link" if os.path.islink(final) else "experiment folder already exists"
            raise UsageError(f"{final}: {what}; pass --overwrite to replace it, or choose another -n")
        return final
    name = "demo" if config.data_path is None else command.safe_name(os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0])
    final, number = os.path.join(config.output_dir, name), 1
    while (os.path.lexists(final) and not config.overwrite) or command.folder_in_use(final) is not None:
        number += 1
        final = os.path.join(config.output_dir, f"{name}-{number}")
    return final


def write_experiment(folder, reconstruction, events, started=None):
    """Write a reconstruction into `folder`: frames/, timestamps.txt, video.mp4 (unless
    config.no_video), preview.png, metrics.json (when there are APS frames), model.pt and
    config.json. `started`, the time.perf_counter() at which the run began, adds its total time.
    Returns config.json's content."""
    with ExperimentWriter(folder, reconstruction.config, events, reconstruction.times, reconstruction.spans) as writer:
        writer.exposure = reconstruction.exposure
        writer.add(np.arange(len(reconstruction.times)), reconstruction.frames, reconstruction.states)
        return writer.finish(reconstruction.timings, started, fit=reconstruction.fit)


# Networks a run holds for model.pt: beyond this, every network is written to networks/ as it
# is fitted and model.pt names the files (a 240x180 network is 48 MB; an hour of 2 s windows 87 GB).
HELD_NETWORK_BYTES = 1 << 30


def networks_held(n_networks, network_bytes, batch_size):
    """How many networks a run holds in memory at most: HELD_NETWORK_BYTES' worth, and a batch."""
    return min(n_networks, HELD_NETWORK_BYTES // network_bytes + batch_size)


NETWORK_FILE = re.compile(r"networks/window-[0-9]{6}\.pt")  # the whole name: fullmatch


class ExperimentWriter:
    """Writes a run into `folder` while it goes, so that memory holds one batch of windows however
    long the recording: frames/ and video.mp4 as frames arrive (PNGs on a thread pool), scores
    against the APS frames, the networks (see HELD_NETWORK_BYTES); then, at finish,
    timestamps.txt, preview.png, metrics.json, model.pt and config.json."""

    def __init__(self, folder, config, events, times, spans):
        self.folder, self.config, self.events, self.times, self.spans = folder, config, events, times, spans
        spacing = np.median(np.diff(times)) if len(times) > 1 else 1.0
        self.frame_writer = utils.FrameWriter(os.path.join(folder, "frames"), total=len(times), progress=len(spans) == 1,
                                              video=None if config.no_video else os.path.join(folder, "video.mp4"),
                                              fps=float(np.clip(1.0 / spacing, 1.0, 240.0)))
        self.picks, self.preview = set(utils.preview_picks(len(times)).tolist()), {}
        self.rows, self.states, self.held_bytes, self.spilled = [], [], 0, False
        self.exposure = None  # --event_thresh auto's (C, offset), saved with the networks
        self.use_lpips = lpips.lpips_available() and min(events.sensor) >= lpips.LPIPS_MIN_SIZE
        self.write_s = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.frame_writer.__exit__(*error)

    def add(self, indices, frames, states=()):
        """The frames at times[indices] (the next ones, in order), and the networks of the next windows."""
        began = time.perf_counter()
        self.frame_writer.extend(frames)
        self.preview.update((int(index), frame) for index, frame in zip(indices, frames) if index in self.picks)
        if self.events.aps_frames is not None:
            self.rows += utils.score_reconstruction(frames, self.times[indices], self.events.aps_frames, self.events.aps_t,
                                                    use_lpips=self.use_lpips)
        for state in states:
            self.states.append(state)
            self.held_bytes += sum(value.numel() * value.element_size() for value in state.values())
            if self.held_bytes > HELD_NETWORK_BYTES or self.spilled:
                self._spill()
        self.write_s += time.perf_counter() - began

    def _spill(self):
        """Write the networks held to networks/, one file each, and hold their names instead."""
        os.makedirs(os.path.join(self.folder, "networks"), exist_ok=True)
        for k, state in enumerate(self.states):
            if isinstance(state, dict):
                self.states[k] = f"networks/window-{k + 1:06d}.pt"
                save_checkpoint(os.path.join(self.folder, self.states[k]), state)
        self.held_bytes, self.spilled = 0, True

    def finish(self, timings, started=None, fit=None):
        """Write the rest; returns config.json's content (see write_experiment). `fit`: the fit's
        record (train.fit_batches: its loss curve and each window's convergence), or None for a
        render of a saved fit."""
        began = time.perf_counter()
        config, events, times = self.config, self.events, self.times
        self.frame_writer.close()
        with open(os.path.join(self.folder, "timestamps.txt"), "w") as f:
            f.writelines(f"{index} {t:.9f}\n" for index, t in enumerate(times))
        write_preview(os.path.join(self.folder, "preview.png"), times, self.preview, events)
        metrics = self.metrics()
        if metrics is not None:
            with open(os.path.join(self.folder, "metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)
        saved = dataclasses.asdict(config)
        save_checkpoint(os.path.join(self.folder, "model.pt"), {"config": saved, "networks": self.states, "spans": self.spans,
                                                                "exposure": self.exposure})
        device = torch.device(config.device)
        t_first, t_last = events.times_at([0, len(events) - 1])
        summary = {"config": saved,
                   "data": {"path": os.path.abspath(events.path), "format": events.format, "num_events": len(events),
                            "sensor": [int(v) for v in events.sensor], "t_first": float(t_first), "t_last": float(t_last),
                            "spans": [[float(b), float(e)] for b, e in self.spans]},
                   "frames": {"count": len(times), "at": config.frames_at},
                   "auto_threshold": None if self.exposure is None else {"event_thresh": self.exposure[0], "offset": self.exposure[1]},
                   "environment": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else utils.cpu_name(),
                                   "threads": torch.get_num_threads()},
                   "timings": {**timings, "write_s": self.write_s + time.perf_counter() - began},
                   "metrics": {k: v for k, v in metrics.items() if k != "per_frame"} if metrics else None,
                   "fit": fit or None}
        if started is not None:
            summary["timings"]["total_s"] = time.perf_counter() - started
        with open(os.path.join(self.folder, "config.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary

    def metrics(self):
        """metrics.json's content: the EVREAL-protocol scores of the frames, or None."""
        if not self.rows:
            return None
        sensor = self.events.sensor
        if not self.use_lpips:
            why = (f"frames under {lpips.LPIPS_MIN_SIZE} px a side" if min(sensor) < lpips.LPIPS_MIN_SIZE
                   else f"its weights are not cached; {lpips.FETCH_HINT}")
            print(f"note: LPIPS not scored: {why}", file=sys.stderr)
        if min(sensor) < utils.SSIM_MIN_SIZE:
            print(f"note: SSIM not scored: frames under {utils.SSIM_MIN_SIZE} px a side (its Gaussian window)", file=sys.stderr)
        return {**utils.mean_scores(self.rows), "per_frame": self.rows}


def save_checkpoint(path, content):
    """torch.save, with a failed write (a full disk) as the OSError it is: torch reports it as
    a RuntimeError ("enforce fail at inline_container.cc ... unexpected pos")."""
    try:
        torch.save(content, path)
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise OSError(errno.EIO, f"could not be written, is the disk full? ({reason})", path) from None


def write_preview(path, times, frames, events):
    """A few time points (`frames`: {index: frame} of the picks): the events just before (red +,
    blue -), the reconstruction, the APS frame."""
    picks = sorted(frames)
    spacing = np.median(np.diff(times)) if len(times) > 1 else 0.02
    aps = utils.nearest_aps(times[picks], events.aps_t) if events.aps_frames is not None else np.full(len(picks), -1)
    columns = [("events", [utils.event_frame_to_rgb(event_sum(events, times[k] - spacing, times[k])) for k in picks]),
               ("EvINR", [frames[k] for k in picks])]
    if (aps >= 0).any():
        columns.append(("APS", [events.aps_frames[index] if index >= 0 else None for index in aps]))
    utils.write_preview(path, times[picks], columns)
