"""
The run folder: frames/, timestamps.txt, video.mp4, preview.png, metrics.json (when the
recording has APS frames), model.pt and config.json, written as the run goes so that memory
holds one batch of windows however long the recording. Also reading model.pt back, and where
the bundled demo recording is.
"""

import dataclasses
import errno
import json
import os
import platform
import re
import sys
import time

import numpy as np
import torch

import command
import lpips
import utils
from config import FIT_FIELDS, NOT_SAVED, Config, UsageError
from event_data import EventDataError, event_sum

REPO = os.path.dirname(os.path.abspath(__file__))
DEMO_NAME = "slider_depth_demo.h5"


def load_checkpoint(path):
    """(saved settings as a dict, one state dict per window, the spans or None, the exposure of
    --event_thresh auto or None) of a model.pt.
    The networks are read when used: from the file's map, or from networks/ beside it. A model.pt
    written before the networks' key was "networks" holds them under "windows"."""
    if not os.path.isfile(path):
        raise EventDataError(path, "no such checkpoint")
    try:
        # mapped: --render_only reads the settings first and the networks later, each from the map
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        states = checkpoint["networks"] if "networks" in checkpoint else checkpoint["windows"]
        config, spans, exposure = checkpoint["config"], checkpoint.get("spans"), checkpoint.get("exposure")
    except Exception:  # torch raises many kinds for a file that is not a checkpoint
        raise EventDataError(path, "not a model.pt written by train.py (unreadable or truncated)") from None
    if not all(isinstance(state, dict) or (isinstance(state, str) and NETWORK_FILE.match(state)) for state in states):
        raise EventDataError(path, "not a model.pt written by train.py (a network is neither saved nor named)")
    return config, SavedNetworks(path, states), spans, exposure


class SavedNetworks:
    """A model.pt's networks by window: each a state dict, read from networks/ on access when
    the run saved it there."""

    def __init__(self, path, states):
        self.folder, self.states = os.path.dirname(path), states

    def __len__(self):
        return len(self.states)

    def __getitem__(self, k):
        if isinstance(self.states[k], dict):
            return self.states[k]
        path = os.path.join(self.folder, self.states[k])
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except FileNotFoundError:
            raise EventDataError(path, f"missing: model.pt names it for window {k + 1}") from None
        except Exception:
            raise EventDataError(path, "not a network saved by train.py (unreadable or truncated)") from None


def config_for_render(checkpoint, given):
    """The settings of a saved fit with the command line's flags (`given`) on top. Flags that would
    change the fitted networks or their time axis are refused rather than ignored."""
    saved = load_checkpoint(checkpoint)[0]
    saved.setdefault("smooth", 0.0)  # saved before --smooth existed: rendered as it was then
    names = {spec.name for spec in dataclasses.fields(Config)}
    config = Config(**{name: value for name, value in saved.items() if name in names and name not in NOT_SAVED})
    for name in FIT_FIELDS:
        if name in given and given[name] != getattr(config, name):
            raise UsageError(f"--{name}: a saved fit is rendered with its own ({getattr(config, name)}); leave it out with --render_only")
    return dataclasses.replace(config, **given)


def demo_data():
    """The bundled demo recording: assets/ beside this file, in a checkout and where pip installed
    the package evinr alike."""
    return os.path.join(REPO, "assets", DEMO_NAME)


def experiment_path(config, data_path):
    """OUTPUT_DIR/EXP_NAME. A name taken by a finished run is refused without --overwrite; with no
    -n, the data's name is numbered (name-2, name-3, ...) instead."""
    if config.exp_name is not None:
        final = os.path.join(config.output_dir, config.exp_name)
        if os.path.exists(final) and not config.overwrite:
            raise UsageError(f"{final}: experiment folder already exists; pass --overwrite to replace it, or choose another -n")
        return final
    name = "demo" if config.data_path is None else command.safe_name(os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0])
    final, number = os.path.join(config.output_dir, name), 1
    while os.path.exists(final) and not config.overwrite:
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
        return writer.finish(reconstruction.timings, started)


# Networks a run holds for model.pt: beyond this, every network is written to networks/ as it
# is fitted and model.pt names the files (a 240x180 network is 48 MB; an hour of 2 s windows 87 GB).
HELD_NETWORK_BYTES = 1 << 30


def networks_held(n_networks, network_bytes, batch_size):
    """How many networks a run holds in memory at most: HELD_NETWORK_BYTES' worth, and a batch."""
    return min(n_networks, HELD_NETWORK_BYTES // network_bytes + batch_size)


NETWORK_FILE = re.compile(r"^networks/window-\d{6}\.pt$")


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

    def finish(self, timings, started=None):
        """Write the rest; returns config.json's content (see write_experiment)."""
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
                   "metrics": {k: v for k, v in metrics.items() if k != "per_frame"} if metrics else None}
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
