"""
Fit EvINR to an event recording and render the video: the command line, and the library under it.

    python train.py                                   # the bundled slider_depth demo
    python train.py -n EXP -d DATA_PATH --H 180 --W 240
    python train.py -n EXP -d DATA_PATH --window 2    # a whole recording, 2 s at a time

From Python (no files written):

    from event_data import load_events
    from train import Config, reconstruct
    events, _ = load_events("recording.h5")
    result = reconstruct(events, Config(iters=500))
    result.frames                                     # uint8 [N, H, W], at result.times (seconds)

`run(config)` is the command line: load, reconstruct (or render a saved fit), write
OUTPUT_DIR/EXP_NAME/ (frames/, timestamps.txt, video.mp4, preview.png, model.pt, config.json and,
when the recording has APS frames, metrics.json) and print a summary.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import json
import math
import os
import platform
import re
import runpy
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

import utils
from event_data import EventDataError, EventFile, chunk_boundaries, event_frames, event_sum, open_events, validate
from model import EvINR, OutputAdamW, StackedEvINR, evinr_loss, query_times, smooth, tone_map, triton_available

REPO = os.path.dirname(os.path.abspath(__file__))
DEMO_NAME = "slider_depth_demo.h5"
RENDER_BATCH = 32  # frames per forward pass when rendering: bounds memory at any resolution


class UsageError(Exception):
    """A bad request on the command line (as opposed to a bad input file)."""


# -----------------------------------------------------------------------------
# configuration: every option once, with its default and help; the command line is made from it

def option(default, help, short=None, type=None, choices=None, metavar=None):
    return field(default=default, metadata={"help": help, "short": short, "type": type, "choices": choices, "metavar": metavar})


# Limits of the flags: far beyond what a fit can use, low enough that a typo is caught at once.
MAX_SENSOR_SIDE = 32767    # pixel coordinates are int16
MAX_NET_WIDTH = 16384      # 16384 wide: 4 GB of weights and optimizer state per hidden layer
MAX_NET_LAYERS = 64
MAX_SMOOTH = 10.0          # --smooth in pixels; beyond it a frame is a blur, not a reconstruction
MAX_FRAMES = 1_000_000     # frames rendered by one run (9 hours at 30 frames per second)
MAX_WINDOWS = 100_000      # windows of one run (55 hours of 2 s windows)


def is_plain_name(name):
    """A name that stays one folder inside its parent."""
    return bool(name) and name not in (".", "..") and name.isprintable() and not any(
        separator and separator in name for separator in (os.sep, os.altsep))


def contrast_threshold(text):
    """--event_thresh's value: a number, or auto."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


# What --preset gives the flags left unset (None). README, "Choosing the contrast threshold",
# has the measurements behind "recommended".
PRESETS = {"recommended": {"event_thresh": "auto", "lr_schedule": "cosine", "smooth": 0.5},
           "authors": {"event_thresh": 1.0, "lr_schedule": "constant", "smooth": 0.0}}


@dataclass
class Config:
    # the authors' flags, same names and meanings
    exp_name: str = option(None, "experiment name (default: the data's name, numbered -2, -3, ... when taken)", short="-n", type=str)
    data_path: str = option(None, "event recording, any supported format (default: the bundled demo)", short="-d", type=str)
    output_dir: str = option("runs", "where the experiment folder goes", short="-o")
    t_start: float = option(0.0, "window start, seconds after the first event")
    t_end: float = option(None, "window end, seconds after the first event (default 2, or the whole recording with --window)", type=float)
    H: int = option(None, "sensor height in pixels (rows); default: from the data", type=int)
    W: int = option(None, "sensor width in pixels (columns); default: from the data", type=int)
    color_event: bool = option(False, "colour events on an RGGB Bayer sensor (CED)")
    event_thresh: object = option(None, "contrast threshold C: an event is a log-intensity change of C; auto: fit "
                                        "with C = 1, then choose C and the exposure from the video itself (README); "
                                        "default: the --preset's", type=contrast_threshold, metavar="C|auto")
    train_resolution: int = option(50, "number of event frames (doubled half-way unless --no_c2f)")
    val_resolution: int = option(50, "frames on the uniform grid of --frames_at uniform")
    no_c2f: bool = option(False, "keep the number of event frames fixed (no coarse-to-fine)")
    iters: int = option(1000, "training iterations (per window)")
    log_interval: int = option(100, "iterations between loss reports")
    lr: float = option(3e-4, "AdamW learning rate")
    lr_schedule: str = option(None, "the learning rate over the iterations: constant (the authors'), or cosine: decayed "
                                    "along half a cosine to LR_FLOOR x --lr at iteration min(--iters, LR_HORIZON), then "
                                    "falling as 1 / iteration, so a longer fit drifts little; default: the "
                                    "--preset's",
                              choices=("constant", "cosine"), type=str)
    preset: str = option("recommended", "settings of the flags not given: recommended (--event_thresh auto "
                                        "--lr_schedule cosine --smooth 0.5; README, \"Choosing the contrast threshold\"), "
                                        "or authors (their exact settings: --event_thresh 1 --lr_schedule constant "
                                        "--smooth 0, for reproducing their tables)",
                         choices=tuple(PRESETS))
    net_layers: int = option(3, "hidden sine layers after the first")
    net_width: int = option(512, "width of the hidden sine layers")
    device: str = option("auto", "torch device; auto: cuda when available, else cpu")
    # new in this implementation
    frames_at: str = option("auto", "when to render: 'aps' (every APS frame in the window), 'uniform' (--val_resolution "
                                    "frames), a number (frames per second), or a text file of times in seconds on the "
                                    "recording's clock; 'auto' is aps when the recording has APS frames, else uniform")
    smooth: float = option(None, "standard deviation in pixels of a Gaussian that smooths each rendered frame: each pixel "
                                 "has its own output weights, so its events' noise reaches it unaveraged (README, \"Choosing "
                                 "the contrast threshold\"); 0: none; default: the --preset's", type=float, metavar="PIXELS")
    loss: str = option("diff", "temporal supervision: finite differences of frames, or the exact time derivative",
                       choices=("diff", "autograd"))
    align: str = option("boundary", "boundary: compare each event frame with the change over its own span (fixed); "
                                    "midpoint: the authors' half-chunk-shifted comparison", choices=("boundary", "midpoint"))
    chunking: str = option("count", "event frames of equal event count (the authors') or of equal duration",
                           choices=("count", "time"))
    window: float = option(None, "fit a whole recording as consecutive windows of about this many seconds (equal windows, "
                                 "0.67-1.5x this long), each warm-started from the previous one and tied to its last frame",
                           type=float)
    window_tie: float = option(1.0, "weight of the boundary-frame tie between windows")
    windows_batch: int = option(None, "with --window: fit this many consecutive windows at once, one network each with their "
                                      "weights stacked (batched matrix products). Each batch starts from the previous batch's "
                                      "last network, and each window is tied to the one before it. Default: 1 (one by one) on "
                                      "a CPU; on a GPU as many as half its free memory holds", type=int)
    seed: int = option(0, "random seed: the same seed gives the same frames")
    overwrite: bool = option(False, "replace an existing experiment folder")
    tensorboard: bool = option(False, "also log losses to TensorBoard (needs the tensorboard package)")
    render_only: str = option(None, "render from a saved model.pt without training; its settings, with the flags given "
                                    "here on top", type=str, metavar="CHECKPOINT")
    plain: bool = option(False, "reference path: autograd loss and unfused AdamW (same results, slower; for checking)")
    matmul_precision: str = option("auto", "torch.set_float32_matmul_precision: 'high' allows TF32 on NVIDIA GPUs, 'medium' "
                                           "also bfloat16 (on GPUs, and on CPUs with AMX). auto: high on a GPU, medium on a "
                                           "CPU with AMX (where scripts/benchmark.py measured the same quality), highest "
                                           "elsewhere", choices=("auto", "highest", "high", "medium"))
    no_video: bool = option(False, "skip video.mp4")
    loss_kernel: str = option("auto", "implementation of the fused difference loss: 'triton' (two GPU kernels, needs the "
                                       "triton package), 'torch' (the reference); auto: triton on CUDA when installed",
                              choices=("auto", "triton", "torch"))
    output_kernel: str = option("auto", "the output layer's AdamW update: 'triton' (one GPU kernel inside the backward that "
                                         "forms the weight gradient and applies AdamW to it, needs the triton package; for "
                                         "--loss diff --align boundary), 'torch' (the gradient, then torch's fused AdamW); "
                                         "auto: triton on CUDA when it applies", choices=("auto", "triton", "torch"))
    cuda_graph: str = option("auto", "capture one training step per coarse-to-fine stage as a CUDA graph and replay it "
                                     "(removes the launch cost of ~30 small kernels a step). auto: on CUDA devices, falling "
                                     "back to eager steps with a note if capture fails; on: fail instead",
                             choices=("auto", "on", "off"))

    def resolved(self):
        """This config with the preset's values in the flags left unset."""
        unset = {name: value for name, value in PRESETS.get(self.preset, {}).items() if getattr(self, name) is None}
        return dataclasses.replace(self, **unset)

    def check(self):
        """Refuse settings that cannot work, before any work is done: one line naming the flag."""
        def need(ok, flag, why):
            if not ok:  # written as `ok`, not `bad`, so that NaN (which fails every comparison) is refused too
                raise UsageError(f"--{flag} {getattr(self, flag)}: {why}")
        for name in ("iters", "train_resolution", "log_interval"):
            need(getattr(self, name) >= 1, name, "must be at least 1")
        need(1 <= self.val_resolution <= MAX_FRAMES, "val_resolution", f"must be 1 to {MAX_FRAMES} frames")
        need(1 <= self.net_width <= MAX_NET_WIDTH, "net_width", f"must be 1 to {MAX_NET_WIDTH}")
        need(0 <= self.net_layers <= MAX_NET_LAYERS, "net_layers", f"must be 0 to {MAX_NET_LAYERS}")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "the learning rate must be a positive number")
        need(self.smooth is None or 0 <= self.smooth <= MAX_SMOOTH, "smooth", f"must be 0 to {MAX_SMOOTH} pixels")
        # every flag with choices (as the command line offers them; unset, None, takes the preset's)
        for spec in dataclasses.fields(self):
            choices = spec.metadata.get("choices")
            if choices:
                need(getattr(self, spec.name) in choices or getattr(self, spec.name) is spec.default is None, spec.name,
                     f"must be one of {', '.join(choices)}")
        need(self.event_thresh in (None, "auto") or (math.isfinite(self.event_thresh) and self.event_thresh > 0), "event_thresh",
             "the contrast threshold must be a positive number, or auto")
        need(math.isfinite(self.t_start) and self.t_start >= 0, "t_start", "must be 0 or more seconds after the first event")
        need(self.t_end is None or (math.isfinite(self.t_end) and self.t_end > self.t_start), "t_end",
             f"must be a number of seconds after --t_start ({self.t_start:g})")
        if (self.H is None) != (self.W is None):
            raise UsageError("--H and --W go together: give both, or neither to take the size from the data")
        for name in ("H", "W"):
            need(getattr(self, name) is None or 1 <= getattr(self, name) <= MAX_SENSOR_SIDE, name,
                 f"the sensor side must be 1 to {MAX_SENSOR_SIDE} pixels")
        need(self.window is None or (math.isfinite(self.window) and self.window >= 0), "window",
             "must be a positive number of seconds (or 0: one piece)")
        need(math.isfinite(self.window_tie) and self.window_tie >= 0, "window_tie", "must be 0 or more")
        need(self.windows_batch is None or self.windows_batch >= 1, "windows_batch", "must be at least 1")
        need(0 <= self.seed < 2 ** 63, "seed", "must be 0 to 2**63 - 1")
        if self.exp_name is not None and not is_plain_name(self.exp_name):
            raise UsageError(f"-n {self.exp_name!r}: the experiment name must be one printable folder name, "
                             f"without '/' and not '.' or '..' (it goes inside -o {self.output_dir})")
        try:  # a number of frames per second; anything else is a mode or a file, read when rendering
            fps = float(self.frames_at)
        except ValueError:
            fps = None
        need(fps is None or (math.isfinite(fps) and fps > 0), "frames_at", "frames per second must be a positive number")
        resolve_device(self.device)


# Fields that shape the fitted networks and their time axis: a saved fit is rendered with its own.
FIT_FIELDS = ("t_start", "t_end", "H", "W", "color_event", "net_layers", "net_width", "window", "event_thresh")
SAVED_ONLY = ("render_only",)  # never restored from a checkpoint


def add_config_arguments(parser, suppress_defaults=False, skip=()):
    """Add Config's fields to `parser` as --NAME flags. With suppress_defaults, a flag not given
    is absent from the parsed namespace, so layers of settings can be stacked (a checkpoint's or a
    dataset's, then the command line's)."""
    for spec in dataclasses.fields(Config):
        if spec.name in skip:
            continue
        meta = spec.metadata
        names = ([meta["short"]] if meta["short"] else []) + [f"--{spec.name}"]
        default = argparse.SUPPRESS if suppress_defaults else spec.default
        if isinstance(spec.default, bool):
            parser.add_argument(*names, action="store_true", default=default, help=meta["help"])
        else:
            # the default is written into the help, which a suppressed default would leave out
            parser.add_argument(*names, default=default, help=f"{meta['help']} (default: {spec.default})",
                                choices=meta["choices"], metavar=meta["metavar"], type=meta["type"] or type(spec.default))
    return parser


def get_parser(suppress_defaults=False):
    parser = utils.ArgumentParser(description="EvINR: fit an implicit neural representation to events and render video.")
    return add_config_arguments(parser, suppress_defaults)


def parse_config(argv):
    """A Config from command-line flags; those not given keep their defaults."""
    return Config(**vars(get_parser(suppress_defaults=True).parse_args(argv)))


def split_configurations(argv, flag):
    """(arguments before `flag`, the strings after it) for scripts that take several train.py
    configurations last on their line (`--compare`, `--configs`): taking everything after the
    flag as a configuration lets a lone switch such as "--plain" stand as one, where argparse
    would read it as an option. The strings are None when `flag` is absent."""
    if flag not in argv:
        return list(argv), None
    split = argv.index(flag)
    return list(argv[:split]), list(argv[split + 1:])


def resolve_device(choice):
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise UsageError(f"--device {choice!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    return device


def matmul_precision(choice, device):
    """Resolve --matmul_precision auto to what scripts/benchmark.py measured to keep quality:
    TF32 ('high') on NVIDIA GPUs (H200, 240x180: 1.4x faster, MSE and SSIM within float32's
    run-to-run spread), bfloat16 ('medium') on CPUs with AMX tiles, which multiply bfloat16
    natively (same quality, 11% faster), float32 on other CPUs."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "high"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "medium" if device.type == "cpu" and amx else "highest"


@contextlib.contextmanager
def float32_matmul_precision(precision):
    """torch's float32 matmul precision for the block only: torch keeps it process-wide, and a
    library call must not change it under its caller."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def configure_host_memory():
    """Keep freed large blocks in the heap instead of returning them to the OS: the training
    loop allocates the same large tensors every iteration, and fresh pages from the OS cost a
    page fault each (measured: a quarter of a CPU iteration at 240x180)."""
    if platform.system() == "Linux":
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD
            libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
        except OSError:
            pass


# -----------------------------------------------------------------------------
# time windows and render times

# An outlier is an event more than OUTLIER_GAP times the span of the bulk of the recording (its
# central 98% of events, by index, the events being sorted) plus 1 s away from that bulk. No
# camera pauses for ten times the length of what it recorded, with so few events on the far side;
# a corrupt time stamp (one flipped bit of a bag's seconds gives 956,302,312 s in a recording of
# seconds) lies millions of times beyond. The bulk leaves out 1% at each end, so at most that
# many events can be outliers, and recordings of under OUTLIER_MIN_EVENTS are taken whole.
OUTLIER_GAP = 10.0
OUTLIER_MIN_EVENTS = 100


def covered_span(events):
    """(first, last) time stamp of the events that make up the recording: outliers (see
    OUTLIER_GAP) are reported by event index on stderr and left out of every window."""
    n = len(events)
    first, last = 0, n - 1
    if n >= OUTLIER_MIN_EVENTS:
        low, high = events.times_at([n // 100, n - 1 - n // 100])
        reach = OUTLIER_GAP * (high - low) + 1.0
        first = int(events.positions(low - reach, side="left"))
        last = int(events.positions(high + reach, side="right")) - 1
        for start, stop, where in ((0, first, "before"), (last + 1, n, "after")):
            if stop > start:
                t_start, t_stop, t_first, t_last = events.times_at([start, stop - 1, first, last])
                which = f"event {start} at {t_start:.6f} s lies" if stop - start == 1 else \
                    f"events {start}-{stop - 1} at {t_start:.6f}-{t_stop:.6f} s lie"
                print(f"warning: {events.path}: {which} far {where} the other events "
                      f"({t_first:.6f}-{t_last:.6f} s): corrupt time stamps, left out", file=sys.stderr)
    return tuple(float(t) for t in events.times_at([first, last]))


def fit_windows(events, config):
    """[(begin, end)] seconds on the recording's clock: one window, or consecutive --window ones,
    over the span the events really cover (covered_span). Checked before any work: every window
    has events, and there are at most MAX_WINDOWS."""
    t_first, t_last = covered_span(events)
    t_end = config.t_end if config.t_end is not None else (None if config.window else 2.0)
    begin = t_first + config.t_start
    end = t_last if t_end is None else min(t_first + t_end, t_last)
    if not end > begin:
        asked = f"{config.t_start:g}-{t_end:g} s" if t_end is not None else f"from {config.t_start:g} s"
        raise EventDataError(events.path, f"no events in the window {asked} after the first event "
                                          f"(the recording spans {t_last - t_first:.3f} s)")
    if not config.window:
        if events_between(events, begin, end) == 0:
            raise EventDataError(events.path, f"no events between {begin - t_first:.6f} and {end - t_first:.6f} s "
                                              "after the first event; choose another --t_start/--t_end")
        return [(begin, end)]
    # Equal windows as close to --window as a whole number of them allows, rather than full
    # windows and a leftover sliver with too few events to fit.
    ratio = (end - begin) / config.window
    if not ratio <= MAX_WINDOWS + 0.5:
        raise UsageError(f"--window {config.window:g}: {ratio:.3g} windows over {end - begin:.3f} s, more than "
                         f"{MAX_WINDOWS}; use a longer --window")
    n_windows = max(1, int(np.ceil(ratio - 0.5)))
    return merge_quiet_windows(events, np.linspace(begin, end, n_windows + 1), config, t_first)


def events_between(events, begin, end):
    return int(events.positions(end, side="right") - events.positions(begin, side="left"))


def merge_quiet_windows(events, edges, config, t_first):
    """Windows between consecutive `edges`, each with at least --train_resolution events (one per
    event frame): a quieter window (the camera still, nothing moving) is fitted together with the
    window before it, or the leading ones with the first window after them that has enough.
    So a quiet spell is fitted through, where it used to fail when its window was reached."""
    positions = events.positions(edges, side="left")
    positions[-1] = events.positions(edges[-1], side="right")  # the last window ends with its edge
    counts = np.diff(positions)
    groups = []  # [index of the first window, index of the last, events]
    for k, count in enumerate(counts):
        if groups and (count < config.train_resolution or groups[-1][2] < config.train_resolution):
            groups[-1][1:] = [k, groups[-1][2] + count]
        else:
            groups.append([k, k, count])
    quiet = np.flatnonzero(counts < config.train_resolution)
    if quiet.size and len(groups) < len(counts):
        spans = ", ".join(f"{edges[k] - t_first:.3f}-{edges[k + 1] - t_first:.3f} s" for k in quiet[:3])
        print(f"note: {events.path}: {quiet.size} of {len(counts)} windows have fewer than {config.train_resolution} events "
              f"(--train_resolution) ({spans}{', ...' if quiet.size > 3 else ''} after the first event); each is fitted "
              f"with a neighbour, {len(groups)} windows in all", file=sys.stderr)
    return [(float(edges[first]), float(edges[last + 1])) for first, last, _ in groups]


def render_times(events, config, begin, end):
    """The times (recording clock) at which frames are rendered."""
    mode = config.frames_at
    has_aps = events.frames is not None and ((events.frame_t >= begin) & (events.frame_t <= end)).any()
    if mode == "auto":
        mode = "aps" if has_aps else "uniform"
    if mode == "aps":
        if not has_aps:
            raise EventDataError(events.path, f"--frames_at aps: no APS frames between {begin:.6f} and {end:.6f} s")
        return events.frame_t[(events.frame_t >= begin) & (events.frame_t <= end)].copy()
    if mode == "uniform":
        return np.linspace(begin, end, config.val_resolution)
    if os.path.isfile(mode):
        try:
            times = np.atleast_1d(np.loadtxt(mode, dtype=np.float64))
        except ValueError as error:
            raise EventDataError(mode, f"not a list of times in seconds ({str(error).splitlines()[0]})") from None
        if times.size == 0 or not np.isfinite(times).all():
            raise EventDataError(mode, "no usable times in file")
        outside = times[(times < begin) | (times > end)]
        if outside.size:
            raise EventDataError(mode, f"time {outside[0]:.6f} s is outside the fitted window {begin:.6f}-{end:.6f} s")
        if times.size > MAX_FRAMES:
            raise EventDataError(mode, f"{times.size} times, more than the {MAX_FRAMES} frames one run renders")
        return np.sort(times)
    try:
        fps = float(mode)
    except ValueError:
        raise UsageError(f"--frames_at {mode!r}: expected aps, uniform, auto, a number of frames per second, or an existing file") from None
    if not fps > 0:
        raise UsageError("--frames_at: frames per second must be positive")
    count = (end - begin) * fps
    if not count < MAX_FRAMES:
        raise UsageError(f"--frames_at {mode}: {count:.3g} frames over {end - begin:.3f} s, more than the {MAX_FRAMES} "
                         "one run renders; ask for fewer frames per second")
    return np.arange(begin, end + 1e-12, 1.0 / fps)


def normalised(times, begin, end):
    """Map recording-clock seconds in [begin, end] to the network's input range [-1, 1]."""
    return 2.0 * (np.asarray(times, dtype=np.float64) - begin) / (end - begin) - 1.0


def window_of(times, windows):
    """The index of the window that renders each time (a time on a seam goes to the earlier one)."""
    return np.clip(np.searchsorted([end for _, end in windows], times, side="left"), 0, len(windows) - 1)


# -----------------------------------------------------------------------------
# fitting

class Window:
    """The events of one time window, read (from memory, or from disk for an EventFile) and moved
    to the device once, and their event frames."""

    def __init__(self, events, begin, end, sensor, config, device):
        first, last = events.positions(begin, side="left"), events.positions(end, side="right")
        if last <= first:
            raise EventDataError(events.path, f"no events between {begin:.6f} and {end:.6f} s")
        self.begin, self.end, self.sensor, self.config = begin, end, sensor, config
        began = time.perf_counter()
        part = events.rows(first, last)
        self.read_s = time.perf_counter() - began
        self.t = part.t
        # moved as stored (int16, int8): a quarter of the bytes of int64 to copy to a GPU, and
        # no copy at all on the CPU; event_frames widens the indices where it needs them
        self.x, self.y, self.p = (torch.from_numpy(column).to(device) for column in (part.x, part.y, part.p))
        self.device = device

    def frames(self, n_chunks):
        """(event frames [n, C, H, W], boundary times [n+1], authors' chunk midpoints [n]), times normalised."""
        n_chunks = min(n_chunks, len(self.t))
        starts, times = chunk_boundaries(self.t, n_chunks, self.begin, self.end, self.config.chunking)
        frames = event_frames(self.x, self.y, self.p, starts, self.sensor, fit_threshold(self.config), self.config.color_event)
        # The authors stamp each chunk with the midpoint of its first and last event.
        first = self.t[np.minimum(starts[:-1], len(self.t) - 1)]
        last = self.t[np.maximum(starts[1:] - 1, 0)]
        midpoints = np.where(starts[1:] > starts[:-1], 0.5 * (first + last), 0.5 * (times[:-1] + times[1:]))
        as_tensor = lambda values: torch.tensor(normalised(values, self.begin, self.end), dtype=torch.float32, device=self.device)
        return frames, as_tensor(times), as_tensor(midpoints)


def channels(config):
    """Values per pixel of a frame: RGB for colour events, else one."""
    return 3 if config.color_event else 1


def make_model(sensor, config):
    return EvINR(sensor[0], sensor[1], channels=channels(config),
                 n_layers=config.net_layers, hidden=config.net_width)


def empty_model(sensor, config, device):
    """A network of make_model's shape on `device` with its parameters left unset, for loading
    saved ones: drawing SIREN's random start costs 0.12 s at 240x180 on a CPU, which rendering
    each batch of windows would pay again."""
    with torch.device("meta"):
        model = make_model(sensor, config)
    return model.to_empty(device=device)


# --lr_schedule cosine ends at this fraction of --lr. With --smooth taking out the per-pixel
# jitter that a falling rate also damps, a higher floor keeps learning to the last iteration:
# 0.3 scored better than 0.05 on the study's tuning half and on slider_depth (README).
LR_FLOOR = 0.3
# The cosine spans at most this many iterations (the authors' count); a longer fit goes on from
# the floor at a rate falling as 1 / iteration. Adam moves a parameter by about the rate each
# step however small its gradient, so along a direction the loss barely sees (a pattern fixed in
# time, which no event constrains) a fit drifts in proportion to the sum of its rates. The tail
# keeps that sum growing only as the logarithm of the iterations: 5000 iterations add 0.74 times
# the cosine's sum, where a cosine stretched over them would add 4 (README, "Convergence").
LR_HORIZON = 1000


def learning_rates(config):
    """The learning rate of each iteration, or None when it is constant: half a cosine from --lr
    to LR_FLOOR x --lr over the first LR_HORIZON iterations (all of them, if fewer), then the
    floor times LR_HORIZON / iteration."""
    if config.resolved().lr_schedule == "constant":
        return None
    span = min(config.iters, LR_HORIZON)
    progress = np.arange(span) / max(span - 1, 1)
    cosine = LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + np.cos(np.pi * progress))
    tail = LR_FLOOR * span / np.arange(span + 1, config.iters + 1)
    return config.lr * np.concatenate([cosine, tail])


class FusedAdamW:
    """torch.optim.AdamW with fused=True (torch's defaults: betas 0.9, 0.999, eps 1e-8, weight
    decay 0.01), calling the same kernel, torch._fused_adamw_, without torch.optim: its first use
    imports torch._dynamo, which costs 1.3 s of start-up on this project's CPU machine and 5.4 s
    on the lent H100 machine, whose packages have no bytecode cache: several times the demo's
    whole fit there. The state is made up front (zeros, as torch makes it at the
    first step) and the step count lives on the device, so a CUDA graph can replay `step`;
    `lr` is a float, or a tensor changed in place (a schedule under a graph). `zero_grad` lets
    backward create the gradients afresh: under a graph they come from the graph's own memory,
    at the addresses the captured update reads, and no step spends a pass zeroing them or a
    pass adding into them (measured on an H100: 0.58 -> 0.49 ms per step at 240x180, 7.1 -> 5.8
    at 1280x720)."""

    BETAS, EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-8, 1e-2

    def __init__(self, parameters, lr, output_layer=None):
        """`output_layer`: (weight, bias) to update in the layer's backward instead (OutputAdamW,
        self.output_update), with the same settings and learning rate."""
        self.output_update = None
        if output_layer is not None:  # a scheduled rate is one tensor, which then sets both
            self.output_update = OutputAdamW(*output_layer, lr, self.BETAS, self.EPS, self.WEIGHT_DECAY)
        self.parameters = [p for p in parameters if not any(p is q for q in output_layer or ())]
        self.param_groups = [{"lr": lr}]  # torch's layout, where the learning rate is read and set
        self.exp_avgs = [torch.zeros_like(p) for p in self.parameters]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.parameters]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.parameters]

    @staticmethod
    def supported(device, lr):
        """Whether this torch has the fused kernel for `device` and a learning rate like `lr`
        (CUDA since torch 2.1, the CPU since 2.4, a tensor rate since 2.2)."""
        one = lambda: [torch.zeros(1, device=device)]
        try:
            FusedAdamW._update(one(), one(), one(), one(), [torch.zeros((), device=device)], lr)
            return True
        except (AttributeError, NotImplementedError, RuntimeError, TypeError):
            return False

    @staticmethod
    def _update(parameters, gradients, exp_avgs, exp_avg_sqs, steps, lr):
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(parameters, gradients, exp_avgs, exp_avg_sqs, [], steps, lr=lr,
                            beta1=FusedAdamW.BETAS[0], beta2=FusedAdamW.BETAS[1], weight_decay=FusedAdamW.WEIGHT_DECAY,
                            eps=FusedAdamW.EPS, amsgrad=False, maximize=False, grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none=True):
        """Let the gradients go (torch's signature; setting them to zero instead is not offered)."""
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self):
        self._update(self.parameters, [p.grad for p in self.parameters], self.exp_avgs, self.exp_avg_sqs, self.steps,
                     self.param_groups[0]["lr"])


def use_output_kernel(config, device):
    """Whether the output layer is updated in its backward (--output_kernel): it needs FusedAdamW
    (not --plain) and the supervision whose step runs the network forward once, through that
    layer (--loss diff --align boundary: the seam tie reuses the loss's frames)."""
    if config.output_kernel == "torch" or config.plain or config.loss != "diff" or config.align != "boundary":
        return False
    return config.output_kernel == "triton" or (device.type == "cuda" and triton_available())


def make_optimizer(model, config):
    """AdamW: FusedAdamW (one fused kernel a step, graph-safe, the output layer's update in its
    backward where use_output_kernel says so, installed on the model as `output_update` until
    release_optimizer) unless --plain or a torch without its kernel for the device, which get
    torch.optim.AdamW's default loop. Under a schedule the learning rate is a tensor, changed in
    place, which a captured step reads afresh at each replay."""
    device = next(model.parameters()).device
    lr = config.lr if learning_rates(config) is None else torch.tensor(config.lr, device=device)
    if not config.plain and FusedAdamW.supported(device, lr):
        optimizer = FusedAdamW(model.parameters(), lr, model.output_layer() if use_output_kernel(config, device) else None)
        model.output_update = optimizer.output_update
        return optimizer
    return torch.optim.AdamW(model.parameters(), lr=lr, capturable=device.type == "cuda")


def release_optimizer(model):
    """After a fit: the model's forward no longer updates its output layer."""
    model.output_update = None


def stage_frames(windows, n_chunks, stacked):
    """The event frames and query times of one coarse-to-fine stage: one window's, or every
    window's stacked on a leading dimension (all with the same number of chunks)."""
    n_chunks = min([n_chunks] + [len(window.t) for window in windows])
    per_window = [window.frames(n_chunks) for window in windows]
    return per_window[0] if not stacked else [torch.stack(parts) for parts in zip(*per_window)]


def window_edges(model, loss_frames, config, edge_times):
    """The first and last log frames of each window fitted, [K, C, H, W] each. With the default
    supervision the loss already evaluated them (its query times are the chunk boundaries, which
    begin at -1 and end at +1 exactly); otherwise they cost one more forward pass."""
    if config.loss == "diff" and config.align == "boundary":
        return loss_frames[:, 0], loss_frames[:, -1]
    stacked = isinstance(model, StackedEvINR)
    edges = model(edge_times.expand(model.n_models, 2) if stacked else edge_times).reshape(-1, 2, *loss_frames.shape[2:])
    return edges[:, 0], edges[:, 1]


def seam_loss(firsts, lasts, tie_frame):
    """Sum over window seams of the mean squared difference of the frames either side. firsts,
    lasts: [K, C, H, W], the first and last frames of K consecutive windows fitted together;
    tie_frame: [1, C, H, W], the last frame of the window fitted before them, or None. Each
    window's first frame is pulled to the last frame of the window before it, and not the other
    way round (as when windows are fitted one by one), so a window never bends its end towards
    a neighbour that has yet to converge."""
    after, before = firsts[1:], lasts[:-1].detach()
    if tie_frame is not None:
        after, before = firsts, torch.cat([tie_frame, before])
    return ((after - before) ** 2).mean(dim=(1, 2, 3)).sum()


def make_step(model, optimizer, frames, queries, config, tie_frame=None, n_windows=1):
    """One optimisation step on fixed inputs, as a function of nothing: every tensor it reads
    (event frames, query times, the tie frame, the parameters and the optimizer's state) stays
    at one address, so the step can be captured once as a CUDA graph and replayed. The gradients
    are let go before each backward, which creates them afresh: under a graph, once, from the
    graph's memory (see FusedAdamW). Returns (loss, parts) as device tensors; reading them is the
    only host synchronisation."""
    edge_times = torch.tensor([-1.0, 1.0], device=frames.device)
    tied = config.window_tie != 0 and (tie_frame is not None or n_windows > 1)

    def step():
        loss, parts, log_frames = evinr_loss(model, queries, frames, config.loss, config.align, fused=not config.plain,
                                             kernel=config.loss_kernel)
        if tied:
            loss = loss + config.window_tie * seam_loss(*window_edges(model, log_frames, config, edge_times), tie_frame)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), parts
    return step


class GraphedStep:
    """Runs `step` eagerly for a few warm-up calls (on a side stream, as CUDA graph capture wants:
    the optimizer's state and cuBLAS's workspace are created there), then captures the next call
    as a CUDA graph and replays it for every later call. Every call is one real step: a capture
    only records, so the capturing call replays once. If capture fails, `fallback` says whether
    to go on eagerly (with a note) or to raise."""

    WARM_UP = 3

    def __init__(self, step, fallback=True):
        self.step, self.fallback, self.calls, self.graph, self.outputs, self.failed = step, fallback, 0, None, None, False

    def eager(self):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self.step()
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def __call__(self):
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.calls <= self.WARM_UP or self.failed:
            return self.eager()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.outputs = self.step()
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            if not self.fallback:
                raise UsageError(f"--cuda_graph on: capturing a training step failed ({reason}); use --cuda_graph off") from None
            print(f"note: CUDA graph capture failed ({reason}); fitting with eager steps", file=sys.stderr)
            self.failed = True
            torch.cuda.synchronize()
            return self.eager()
        self.graph = graph
        graph.replay()
        return self.outputs


def use_cuda_graph(config, device):
    return config.cuda_graph != "off" and device.type == "cuda"


BYTES_PER_PARAMETER = 16   # float32 weight, gradient and AdamW's two moments
FRAME_COPIES = 13          # [T, C, H, W] tensors alive in one step: frames, gradients, loss temporaries, events
EVENT_BYTES = 29           # per event of a window on the device: x, y, p as stored, p as float32, two int64 indices
READ_BYTES = 45            # per event read from disk: t, x, y, p as stored (13), and a file's [N, 4] rows read (32)


def parameter_count(sensor, config):
    """Parameters of one network: mostly its output layer, one weight per pixel and neck unit."""
    width_hidden, pixels = config.net_width, sensor[0] * sensor[1] * channels(config)
    return 2 * width_hidden + config.net_layers * (width_hidden + 1) * width_hidden + (width_hidden + 1) * 256 + 257 * pixels


def fit_bytes(sensor, config):
    """Device memory of fitting one window: (the network and its optimizer state, the event
    frames and the loss's temporaries)."""
    pixels = sensor[0] * sensor[1] * channels(config)
    n_times = (config.train_resolution if config.no_c2f else 2 * config.train_resolution) + 1
    return BYTES_PER_PARAMETER * parameter_count(sensor, config), 4 * FRAME_COPIES * n_times * pixels


def stacked_batch_size(sensor, config, n_windows, free_bytes):
    """How many windows to fit at once on a device with `free_bytes` free: as many as half of it
    holds (the rest is headroom for the allocator and rendering), at most all of them."""
    per_window = sum(fit_bytes(sensor, config))
    return int(max(1, min(n_windows, free_bytes // 2 // per_window)))


def available_memory(device):
    """Bytes this run can still allocate on `device`: CUDA's free memory on a GPU; on the host,
    MemAvailable from /proc/meminfo, or less when a cgroup (a container, a batch job) or
    `ulimit -v` caps the memory lower. None where it cannot be told (not Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f_max, open("/sys/fs/cgroup/memory.current") as f_current:
            limit, used = f_max.read().strip(), int(f_current.read())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    import resource  # Unix only; here /proc/meminfo was read, so this is Linux
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]  # `ulimit -v`: address space, of which this process holds VmSize
    if limit != resource.RLIM_INFINITY:
        with open("/proc/self/status") as f:
            used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        available = min(available, limit - used)
    return available


def memory_plan(events, config, windows, n_frames, training=True, held_networks=None):
    """[(bytes, "device" or "host", what, the flag that changes it)] that a run holds at its
    peak: fitting a batch of windows and rendering on the device; `n_frames` rendered frames and
    `held_networks` networks (default: every window's) on the host, with the events of the
    busiest window when they are read from disk (an EventFile)."""
    held_networks = len(windows) if held_networks is None else held_networks
    sensor, batch = events.sensor, config.windows_batch or 1
    pixels = sensor[0] * sensor[1] * channels(config)
    parameters = parameter_count(sensor, config)
    per_pixel = 257 * pixels > parameters / 2  # the output layer is most of the network
    network_flag = "a smaller sensor (--H/--W): the network has a weight per pixel" if per_pixel else "a lower --net_width"
    batch_flag = f" or a lower --windows_batch ({batch})" if batch > 1 else ""
    bounds = np.array(windows)
    most_events = int(np.max(events.positions(bounds[:, 1], side="right") - events.positions(bounds[:, 0])))
    network, frames = fit_bytes(sensor, config)
    plan = [(4 * 3 * RENDER_BATCH * pixels, "device", "rendering", "fewer pixels (--H/--W)"),
            (4 * held_networks * parameters, "host", f"the {held_networks} fitted networks", "fewer, longer windows (--window)"),
            (2 * n_frames * pixels, "host", f"the {n_frames} rendered frames", "fewer frames (--frames_at, --val_resolution)")]
    if training:
        plan += [(batch * network, "device", "the network and its optimizer", network_flag + batch_flag),
                 (batch * frames, "device", "the event frames", "a lower --train_resolution or a smaller sensor (--H/--W)" + batch_flag),
                 (EVENT_BYTES * most_events, "device", f"the {most_events} events of the busiest window", "shorter windows (--window)")]
    if isinstance(events, EventFile):
        plan.append((READ_BYTES * most_events, "host", f"the {most_events} events of the busiest window", "shorter windows (--window)"))
    return plan


def human_bytes(count):
    for unit, size in (("TB", 2 ** 40), ("GB", 2 ** 30)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 2 ** 20:.0f} MB"


def check_memory(events, config, windows, n_frames, training=True, held_networks=None):
    """Refuse a plan that needs more memory than the device (and, for a GPU, the host) has free,
    naming the figures and the flag that changes its largest part."""
    device = torch.device(config.device)
    plan = memory_plan(events, config, windows, n_frames, training, held_networks)
    if device.type == "cuda":
        groups = [("GPU", device, [part for part in plan if part[1] == "device"]),
                  ("host", torch.device("cpu"), [part for part in plan if part[1] == "host"])]
    else:
        groups = [("host", device, plan)]
    for name, place, parts in groups:
        needed, available = sum(part[0] for part in parts), available_memory(place)
        if available is not None and needed > available:
            size, _, what, flag = max(parts)
            raise UsageError(f"the run needs about {human_bytes(needed)} of {name} memory for the {events.sensor[1]}x"
                             f"{events.sensor[0]} (WxH) sensor and {human_bytes(available)} is free; most of it "
                             f"({human_bytes(size)}) for {what}: ask for {flag}")


def fit(model, windows, config, tie_frame=None, log=None, label=""):
    """Run the optimisation on a list of windows: one window for an EvINR, one per network for a
    StackedEvINR. `tie_frame`, the previous window's last log frame, pins the first window's
    first frame so brightness is continuous across windows. Returns the timings."""
    stacked = isinstance(model, StackedEvINR)
    device = windows[0].device
    graphs = use_cuda_graph(config, device)
    optimizer = make_optimizer(model, config)
    rates = learning_rates(config)
    schedule = [config.train_resolution] if config.no_c2f else [config.train_resolution, 2 * config.train_resolution]
    start_of_stage = [0] if config.no_c2f else [0, config.iters // 2]
    timings = {"event_frames_s": 0.0, "train_s": 0.0}
    start = time.perf_counter()
    log_points = [(0, start)]  # (iteration, time): the loss read-out syncs the device anyway
    try:
        # closed on any error too, so that the error message gets a line of its own
        with tqdm(range(config.iters), desc=f"fitting{label}", unit="it", leave=False, dynamic_ncols=True) as bar:
            for iteration in bar:
                if iteration in start_of_stage:
                    began = time.perf_counter()
                    frames, boundaries, midpoints = stage_frames(windows, schedule[start_of_stage.index(iteration)], stacked)
                    queries = query_times(boundaries, midpoints, config.loss, config.align)
                    step = make_step(model, optimizer, frames, queries, config, tie_frame, len(windows))
                    if graphs:
                        step = GraphedStep(step, fallback=config.cuda_graph == "auto")
                    timings["event_frames_s"] += time.perf_counter() - began
                if rates is not None:
                    optimizer.param_groups[0]["lr"].fill_(rates[iteration])
                loss, parts = step()
                utils.check_terminated()
                if (iteration + 1) % config.log_interval == 0 or iteration + 1 == config.iters:
                    total = float(loss)  # a host synchronisation: only here, so a CUDA graph replays undisturbed
                    if not math.isfinite(total):
                        raise UsageError(f"--lr {config.lr:g}: the loss became {total} by iteration {iteration + 1}{label}, the fit "
                                         f"diverged; lower --lr, or check --event_thresh ({config.event_thresh})")
                    log_points.append((iteration + 1, time.perf_counter()))
                    bar.set_postfix(loss=f"{total:.4g}")
                    if log is not None:
                        log(iteration, total, {name: float(value) for name, value in parts.items()})
    finally:
        release_optimizer(model)
    timings["train_s"] = time.perf_counter() - start - timings["event_frames_s"]
    # The first interval holds the warm-up (allocation, first kernels, graph capture); the
    # median of the others is the steady-state cost per iteration.
    steady = [1000.0 * (t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(log_points[1:], log_points[2:])]
    timings["steady_ms_per_iter"] = steady
    return timings


# -----------------------------------------------------------------------------
# the library: reconstruct and render in memory

@dataclass
class Reconstruction:
    """What a fit gives, in memory."""
    frames: np.ndarray            # uint8 [N, H, W] (or [N, H, W, 3] for colour events), tone-mapped
    times: np.ndarray             # float64 [N], seconds on the recording's clock
    states: list                  # one EvINR state dict per window (CPU tensors)
    windows: list                 # [(begin, end)] seconds, the span each network covers
    config: Config                # the settings used, with the sensor and device resolved
    timings: dict
    log_frames: np.ndarray = None  # float32 [N, C, H, W] log intensity, when asked for
    exposure: tuple = None        # --event_thresh auto: (C, offset) applied to the fitted log frames


# --event_thresh auto. The events fix log intensity up to a scale (C) and an offset (the exposure,
# which no event tells). Fitted with C = 1, the video's log frames L are shown as
# tone_map(C * L + offset), with C and offset chosen so that the frames' intensity has the mean
# and spread of a typical camera frame: the mean of a camera metered to 18% grey, as light meters
# are calibrated (a DAVIS frame is linear; slider_depth's average 0.22), and the spread that the
# tuning half of scripts/threshold_study.py's family, simulated with such a camera, scored best
# (README, "Choosing the contrast threshold"). A run takes them from its first window: run_exposure.
AUTO_MEAN, AUTO_STD = 0.18, 0.1
# ... but never a C above 0.5, the top of the range real DAVIS sensors are set to (0.1-0.5): a
# scene of little contrast (grass, the moon) would otherwise have its faint texture, and the
# detail a longer fit adds to it, stretched to the spread of a typical frame. With the authors'
# 1 as the cap, such a scene's frames got more contrasty with every iteration (README).
AUTO_MAX_C = 0.5
AUTO_TIMES = 16          # log frames per window sampled to choose them
AUTO_SAMPLES = 200_000   # of whose values at most this many, evenly spaced


def fit_threshold(config):
    """The C the events are fitted with: the given one (or the preset's), or 1 for --event_thresh auto."""
    value = config.resolved().event_thresh
    return 1.0 if value == "auto" else value


@torch.no_grad()
def auto_exposure(states, config, mean="default", std=None, max_c=None):
    """(C, offset) for --event_thresh auto, from the log frames of fitted networks (one state per
    window) at AUTO_TIMES times each: those that give tone-mapped frames of mean `mean` and
    standard deviation `std` (default AUTO_MEAN, AUTO_STD; a mean of None keeps the fit's own
    brightness: offset 0), with C at most `max_c` (default AUTO_MAX_C; and then
    a smaller spread). For a fixed C the mean grows with the offset, and for the matching offset
    the spread grows with C: two nested bisections."""
    mean = AUTO_MEAN if mean == "default" else mean
    std = AUTO_STD if std is None else std
    max_c = AUTO_MAX_C if max_c is None else max_c
    device = resolve_device(config.device)
    model = empty_model((config.H, config.W), config, device)
    samples = []
    for state in states:
        model.load_state_dict(state)
        samples.append(model(torch.linspace(-1.0, 1.0, AUTO_TIMES, device=device)).flatten().float().cpu())
    values = torch.cat(samples)
    values = values[::max(1, len(values) // AUTO_SAMPLES)]

    def offset_for(scale):
        if mean is None:
            return 0.0
        low, high = -30.0, 30.0
        for _ in range(30):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if tone_map(scale * values + middle).mean() < mean else (low, middle)
        return 0.5 * (low + high)
    low, high = math.log(1e-3), math.log(max_c)  # bisected in log C
    for _ in range(25):
        middle = 0.5 * (low + high)
        scale = math.exp(middle)
        low, high = (middle, high) if tone_map(scale * values + offset_for(scale)).std() < std else (low, middle)
    scale = math.exp(0.5 * (low + high))
    return scale, offset_for(scale)


def run_exposure(states, config):
    """The (C, offset) a run shows its frames with: for --event_thresh auto, auto_exposure of the
    first window's network alone, kept for the whole recording, so that a --window batch (on a
    GPU, as many windows as memory holds) does not change the frames and brightness does not
    jump between windows; None for a given C."""
    return auto_exposure(states[:1], config) if config.event_thresh == "auto" else None


def check_kernels(config, device):
    """--loss_kernel or --output_kernel triton asks for Triton kernels: refuse the run when Triton
    is missing or cannot run them on `device` (CUDA; the CPU only in Triton's interpreter,
    TRITON_INTERPRET=1, which the tests use)."""
    for flag in ("loss_kernel", "output_kernel"):
        if getattr(config, flag) != "triton":
            continue
        if not triton_available():
            raise UsageError(f"--{flag} triton: the triton package is not installed (pip install triton), or use --{flag} auto")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise UsageError(f"--{flag} triton: Triton's kernels run on CUDA devices and this run is on {device}; "
                             f"use --{flag} auto")


def prepare(config, events):
    """The settings as they will be used: the sensor from the events, the device and matmul
    precision resolved, the preset applied. Seeds torch's random generators."""
    config.check()
    config = config.resolved()
    if events.sensor is None:  # Events built by hand rather than by load_events: check them first
        events.sensor = tuple(int(v) for v in validate(events, (config.H, config.W)))
    sensor = events.sensor
    if config.color_event and (sensor[0] % 2 or sensor[1] % 2):
        raise EventDataError(events.path, f"--color_event needs an even sensor size for the 2x2 Bayer cells, got H={sensor[0]}, W={sensor[1]}")
    device = resolve_device(config.device)
    check_kernels(config, device)
    precision = matmul_precision(config.matmul_precision, device)
    torch.manual_seed(config.seed)
    return dataclasses.replace(config, H=int(sensor[0]), W=int(sensor[1]), device=str(device), matmul_precision=precision)


def plan(events, config, times=None):
    """(config with windows_batch resolved, the windows, the times to render): what a run will
    do, decided before any work (see fit_windows and render_times)."""
    configure_host_memory()
    windows = fit_windows(events, config)
    times = render_times(events, config, windows[0][0], windows[-1][1]) if times is None else np.asarray(times, dtype=np.float64)
    batch_size = config.windows_batch or 1
    if config.windows_batch is None and config.device.startswith("cuda") and len(windows) > 1:
        device = torch.device(config.device)
        batch_size = stacked_batch_size(events.sensor, config, len(windows), torch.cuda.mem_get_info(device)[0])
    return dataclasses.replace(config, windows_batch=batch_size), windows, times


def reconstruct(events, config=None, times=None, log_frames=False, tensorboard_dir=None):
    """Fit EvINR to `events` (an event_data.Events, e.g. from load_events) and render frames at
    `times` (seconds on the recording's clock; default: config.frames_at). No file is written."""
    config = prepare(config or Config(), events)
    with float32_matmul_precision(config.matmul_precision):
        config, windows, times = plan(events, config, times)
        check_memory(events, config, windows, len(times))
        states, timings = [], {}
        for batch, fitted in fit_batches(events, config, windows, timings, tensorboard_dir):
            states += fitted
        result = render(states, windows, config, times, log_frames)
        result.timings = {**timings, **result.timings}
        return result


def fit_batches(events, config, windows, timings, tensorboard_dir=None):
    """Fit the windows in order, config.windows_batch at a time, each batch starting from copies
    of the network fitted last (or of a fresh one), the first frame of each tied to the last of
    the window before. Yields (the batch's window indices, their state dicts on the CPU), so a
    caller can render and write each batch and let it go; fills `timings` as it goes, and with
    the costs per iteration once the last batch is done."""
    device = torch.device(config.device)
    writer = None
    if tensorboard_dir is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        writer = SummaryWriter(tensorboard_dir)
    timings.update(read_s=0.0, event_frames_s=0.0, train_s=0.0)
    steady_ms, tie_frame, model = [], None, make_model(events.sensor, config).to(device)
    batch_size = config.windows_batch
    with tqdm(total=len(windows), desc="windows", unit="window", disable=len(windows) == 1) as progress:
        for first in range(0, len(windows), batch_size):
            batch = range(first, min(first + batch_size, len(windows)))
            name = f"window {first + 1}" if len(batch) == 1 else f"windows {first + 1}-{batch[-1] + 1}"
            log = None
            if writer is not None:
                log = lambda i, total, parts, name=name: [writer.add_scalar(f"{name}/{part}", value, i)
                                                          for part, value in {"total": total, **parts}.items()]
            trained = model if len(batch) == 1 else StackedEvINR([model] * len(batch)).to(device)
            fitting = [Window(events, *windows[k], events.sensor, config, device) for k in batch]
            timings["read_s"] += sum(window.read_s for window in fitting)
            spent = fit(trained, fitting, config, tie_frame, log, label=f" {name}/{len(windows)}" if len(windows) > 1 else "")
            del fitting
            steady_ms += spent.pop("steady_ms_per_iter")
            for part, value in spent.items():
                timings[part] += value
            fitted = trained.unstacked() if len(batch) > 1 else [model.state_dict()]
            model.load_state_dict(fitted[-1])
            if len(windows) > 1:
                with torch.no_grad():
                    tie_frame = model(torch.ones(1, device=device)).detach()
            yield batch, [{name: value.detach().cpu().clone() for name, value in state.items()} for state in fitted]
            progress.update(len(batch))
    if writer is not None:
        writer.close()
    # An iteration is one optimisation step; with stacked windows it advances every window of
    # its batch, so the cost per window and iteration is reported too.
    n_fits = -(-len(windows) // batch_size)
    timings["ms_per_iter"] = 1000.0 * timings["train_s"] / (config.iters * n_fits)
    timings["ms_per_window_iter"] = 1000.0 * timings["train_s"] / (config.iters * len(windows))
    timings["ms_per_iter_median"] = float(np.median(steady_ms)) if steady_ms else None
    timings["read_s_per_window"] = timings["read_s"] / len(windows)


@torch.no_grad()
def render(states, windows, config, times, log_frames=False, exposure=None):
    """Frames of fitted networks (one state per window) at `times`, seconds on the recording's
    clock: the render-only path, also the last step of `reconstruct`. `config` must name the
    sensor (H, W), as a Reconstruction's or a checkpoint's does; `exposure` (C, offset) maps
    the log frames of a fit at C = 1 (--event_thresh auto; see auto_exposure). For an auto
    config it defaults to run_exposure's, as a run takes it. Each frame is smoothed by the
    config's --smooth before it is shown (and in `log_frames`)."""
    began = time.perf_counter()
    device = resolve_device(config.device)
    with float32_matmul_precision(matmul_precision(config.matmul_precision, device)):
        exposure = run_exposure(states, config) if exposure is None else exposure
        sigma = config.resolved().smooth
        times = np.asarray(times, dtype=np.float64)
        model = empty_model((config.H, config.W), config, device)
        images, logs = [None] * len(times), [None] * len(times) if log_frames else None
        owner = window_of(times, windows)
        for k, (begin, end) in enumerate(windows):
            mine = np.flatnonzero(owner == k)
            if not mine.size:
                continue
            model.load_state_dict(states[k])
            inputs = normalised(times[mine], begin, end)
            for offset in range(0, len(mine), RENDER_BATCH):
                batch = torch.tensor(inputs[offset:offset + RENDER_BATCH], dtype=torch.float32, device=device)
                log_batch = smooth(model(batch), sigma)
                if exposure is not None:
                    log_batch = exposure[0] * log_batch + exposure[1]
                indices = mine[offset:offset + RENDER_BATCH]
                for index, image in zip(indices, to_images(tone_map(log_batch))):
                    images[index] = image
                if log_frames:
                    for index, log_image in zip(indices, log_batch.cpu().numpy()):
                        logs[index] = log_image
        stack = lambda arrays, dtype: np.stack(arrays) if arrays else np.empty((0, config.H, config.W), dtype=dtype)
        return Reconstruction(frames=stack(images, np.uint8), times=times, states=states, windows=list(windows), config=config,
                              timings={"render_s": time.perf_counter() - began},
                              log_frames=stack(logs, np.float32) if log_frames else None, exposure=exposure)


def to_images(frames):
    """[B, C, H, W] tensor in [0, 1] -> uint8 [B, H, W] or [B, H, W, 3] array, rounded as
    utils.tone_map_to_uint8 rounds (in float64, half to even) but where the frames are: on a GPU
    only a quarter of the bytes then cross to the host, and no per-frame work is left there."""
    quantised = torch.round(frames.double().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return quantised[..., 0] if quantised.shape[-1] == 1 else quantised


# -----------------------------------------------------------------------------
# checkpoints and outputs

def load_checkpoint(path):
    """(saved settings as a dict, one state dict per window, the windows or None, the exposure of
    --event_thresh auto or None) of a model.pt.
    The networks are read when used: from the file's map, or from networks/ beside it."""
    if not os.path.isfile(path):
        raise EventDataError(path, "no such checkpoint")
    try:
        # mapped: --render_only reads the settings first and the networks later, each from the map
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        config, states, spans, exposure = checkpoint["config"], checkpoint["windows"], checkpoint.get("spans"), checkpoint.get("exposure")
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
    config = Config(**{name: value for name, value in saved.items() if name in names and name not in SAVED_ONLY})
    for name in FIT_FIELDS:
        if name in given and given[name] != getattr(config, name):
            raise UsageError(f"--{name}: a saved fit is rendered with its own ({getattr(config, name)}); leave it out with --render_only")
    return dataclasses.replace(config, **given)


def bundled(folder, package, name):
    """The path of `name` in one of the repository's folders: in the checkout, or where pip
    installed that folder as the data package `package` (the checkout's layout is kept flat)."""
    local = os.path.join(REPO, folder, name)
    if os.path.exists(local):
        return local
    from importlib.util import find_spec
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{folder}/{name}: not found beside train.py, and {package} is not installed (pip install .)")
    return os.path.join(list(spec.submodule_search_locations)[0], name)


def demo_data():
    """The bundled demo recording."""
    return bundled("assets", "evinr_assets", DEMO_NAME)


def experiment_path(config, data_path):
    """OUTPUT_DIR/EXP_NAME. A name taken by a finished run is refused without --overwrite; with no
    -n, the data's name is numbered (name-2, name-3, ...) instead."""
    if config.exp_name is not None:
        final = os.path.join(config.output_dir, config.exp_name)
        if os.path.exists(final) and not config.overwrite:
            raise UsageError(f"{final}: experiment folder already exists; pass --overwrite to replace it, or choose another -n")
        return final
    name = "demo" if config.data_path is None else utils.safe_name(os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0])
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
    with ExperimentWriter(folder, reconstruction.config, events, reconstruction.times, reconstruction.windows) as writer:
        writer.exposure = reconstruction.exposure
        writer.add(np.arange(len(reconstruction.times)), reconstruction.frames, reconstruction.states)
        return writer.finish(reconstruction.timings, started)


# Networks a run holds for model.pt: beyond this, every network is written to networks/ as it
# is fitted and model.pt names the files (a 240x180 network is 48 MB; an hour of 2 s windows 87 GB).
HELD_NETWORK_BYTES = 1 << 30
NETWORK_FILE = re.compile(r"^networks/window-\d{6}\.pt$")


class ExperimentWriter:
    """Writes a run into `folder` while it goes, so that memory holds one batch of windows however
    long the recording: frames/ and video.mp4 as frames arrive (PNGs on a thread pool), scores
    against the APS frames, the networks (see HELD_NETWORK_BYTES); then, at finish,
    timestamps.txt, preview.png, metrics.json, model.pt and config.json."""

    def __init__(self, folder, config, events, times, windows):
        self.folder, self.config, self.events, self.times, self.windows = folder, config, events, times, windows
        spacing = np.median(np.diff(times)) if len(times) > 1 else 1.0
        self.frame_writer = utils.FrameWriter(os.path.join(folder, "frames"), total=len(times), progress=len(windows) == 1,
                                              video=None if config.no_video else os.path.join(folder, "video.mp4"),
                                              fps=float(np.clip(1.0 / spacing, 1.0, 240.0)))
        self.picks, self.preview = set(utils.preview_picks(len(times)).tolist()), {}
        self.rows, self.states, self.held_bytes, self.spilled = [], [], 0, False
        self.exposure = None  # --event_thresh auto's (C, offset), saved with the networks
        self.use_lpips = utils.lpips_available() and min(events.sensor) >= utils.LPIPS_MIN_SIZE
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
        if self.events.frames is not None:
            self.rows += utils.score_reconstruction(frames, self.times[indices], self.events.frames, self.events.frame_t,
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
        save_checkpoint(os.path.join(self.folder, "model.pt"), {"config": saved, "windows": self.states, "spans": self.windows,
                                                                "exposure": self.exposure})
        device = torch.device(config.device)
        t_first, t_last = events.times_at([0, len(events) - 1])
        summary = {"config": saved,
                   "data": {"path": os.path.abspath(events.path), "format": events.format, "num_events": len(events),
                            "sensor": [int(v) for v in events.sensor], "t_first": float(t_first), "t_last": float(t_last),
                            "windows": [[float(b), float(e)] for b, e in self.windows]},
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
            why = (f"frames under {utils.LPIPS_MIN_SIZE} px a side" if min(sensor) < utils.LPIPS_MIN_SIZE
                   else f"its weights are not cached; {utils.FETCH_HINT}")
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
    aps = utils.nearest_aps(times[picks], events.frame_t) if events.frames is not None else np.full(len(picks), -1)
    columns = [("events", [utils.event_frame_to_rgb(event_sum(events, times[k] - spacing, times[k])) for k in picks]),
               ("EvINR", [frames[k] for k in picks])]
    if (aps >= 0).any():
        columns.append(("APS", [events.frames[index] if index >= 0 else None for index in aps]))
    utils.write_preview(path, times[picks], columns)


# -----------------------------------------------------------------------------
# the command line

def start_device(device):
    """Initialise CUDA and load the first kernels in a thread, while the events are read: both
    take a second or more, and neither needs the other."""
    def touch():
        if device.type == "cuda":
            torch.cuda.init()
            probe = torch.ones(64, 64, device=device)
            torch.sin(probe @ probe).sum().item()
    thread = threading.Thread(target=touch, daemon=True)
    thread.start()
    return thread


def run(config):
    """load, then fit (or render config.render_only) and write batch by batch, then publish.
    Returns config.json's content, with the folder it went to under "folder"."""
    wall_start = time.perf_counter()
    config.check()
    config = config.resolved()
    data_path = config.data_path or demo_data()
    states = spans = exposure = None
    if config.render_only:
        _, states, spans, exposure = load_checkpoint(config.render_only)
    if not config.no_video and not utils.video_available():
        print("note: video.mp4 skipped: writing it needs the imageio-ffmpeg package (pip install imageio-ffmpeg)",
              file=sys.stderr)
        config = dataclasses.replace(config, no_video=True)
    warm_up = start_device(resolve_device(config.device))
    began = time.perf_counter()
    # With --window, a file that can be read by position stays on disk and each window's events
    # are read when it is fitted: memory then holds one batch of windows, however long the recording.
    events = open_events(data_path, sensor=(config.H, config.W), whole=not config.window)
    timings = {"load_s": time.perf_counter() - began}
    warm_up.join()
    final = experiment_path(config, data_path)
    config = prepare(config, events)
    with float32_matmul_precision(config.matmul_precision):
        if config.render_only:
            windows = spans or fit_windows(events, config)
            if len(windows) != len(states):
                raise EventDataError(config.render_only, f"holds {len(states)} networks for {len(windows)} windows of {data_path}")
            times = render_times(events, config, windows[0][0], windows[-1][1])
            batches = ((range(k, k + 1), [states[k]]) for k in range(len(windows)))
        else:
            config, windows, times = plan(events, config)
        owner = window_of(times, windows)
        batch_size = config.windows_batch or 1
        network_bytes = 4 * parameter_count(events.sensor, config)
        check_memory(events, config, windows, int(np.add.reduceat(np.bincount(owner, minlength=len(windows)),
                                                                  np.arange(0, len(windows), batch_size)).max()),
                     training=not config.render_only,
                     held_networks=min(len(windows), HELD_NETWORK_BYTES // network_bytes + batch_size))
        check_disk(final, network_bytes * len(windows) + len(times) * events.sensor[0] * events.sensor[1] * channels(config),
                   f"{len(windows)} networks of {human_bytes(network_bytes)} and {len(times)} frames")
        try:
            with utils.staged_folder(final, replace=config.overwrite) as work:
                if not config.render_only:
                    batches = fit_batches(events, config, windows, timings,
                                          tensorboard_dir=os.path.join(work, "tensorboard") if config.tensorboard else None)
                timings["render_s"] = 0.0
                with ExperimentWriter(work, config, events, times, windows) as writer:
                    for batch, fitted in batches:
                        if exposure is None:  # the first batch's first window's, for every batch
                            exposure = writer.exposure = run_exposure(fitted, config)
                        mine = np.flatnonzero((owner >= batch[0]) & (owner <= batch[-1]))
                        part = render(fitted, windows[batch[0]:batch[-1] + 1], config, times[mine], exposure=exposure)
                        timings["render_s"] += part.timings["render_s"]
                        writer.add(mine, part.frames, fitted)
                    summary = writer.finish(timings, started=wall_start)
        except OSError as error:
            error.filename = final if error.filename is None else error.filename  # a failed write() names no file
            raise
    metrics = summary.get("metrics")
    ssim = f" SSIM {metrics['ssim']:.3f}" if metrics and metrics["ssim"] is not None else ""
    quality = f", MSE {metrics['mse']:.4f}{ssim} over {metrics['n_frames']} APS frames" if metrics else ""
    speed = f" ({summary['timings']['ms_per_iter']:.1f} ms/iteration)" if "ms_per_iter" in summary["timings"] else ""
    print(f"wrote {len(times)} frames to {final} in {summary['timings']['total_s']:.1f} s{speed}{quality}")
    return {**summary, "folder": final}


def check_disk(folder, needed, what):
    """Refuse a run whose output (`needed` bytes, `what` in words) would not fit on the disk that
    is to hold `folder`, before any work: an environment failure, as a full disk is."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"the run writes up to {human_bytes(needed)} ({what}) and {human_bytes(free)} is free on "
                                    "this disk; ask for fewer, longer windows (--window) or fewer frames (--frames_at)", folder)


def main(argv=None):
    """The command line. Exit status: 0 done, 2 bad input or flags, 1 a failure of the
    environment (disk full, folder not writable, out of memory), 130 interrupted (Ctrl-C,
    SIGTERM, SIGHUP); an error is one line, `error: PATH: problem`, and leaves nothing behind."""
    utils.prepare_command_line()
    given = vars(get_parser(suppress_defaults=True).parse_args(argv))
    with utils.exit_status((EventDataError, UsageError), given.get("output_dir", "runs"),
                           memory_hint="; lower --net_width, --train_resolution or --window"):
        run(config_for_render(given["render_only"], given) if given.get("render_only") else Config(**given))


# `evinr COMMAND ...`: the installed command; each command is one of the repository's scripts.
COMMANDS = {
    "reconstruct": ("train.py", "fit a recording and write its video (train.py's flags)"),
    "info": ("event_data.py", "one JSON line about a recording: evinr info PATH"),
    "convert": ("scripts/convert_{}.py", "convert a dataset to the authors' layout: evinr convert ijrr|hqf|ced ..."),
    "evaluate": ("scripts/evaluate.py", "score reconstructions against APS frames, EVREAL's protocol"),
    "benchmark": ("scripts/benchmark.py", "time the pipeline on a simulated recording"),
}


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "usage: evinr COMMAND [ARGS]\n\n" + "\n".join(f"  {name:12s} {text}" for name, (_, text) in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{usage}\nerror: unknown command {command!r}", file=sys.stderr)
        sys.exit(2)
    if command == "reconstruct":
        return main(rest)
    if command == "info":
        import event_data
        return event_data.main(["--info", *rest] if rest and not rest[0].startswith("-") else rest)
    script = COMMANDS[command][0]
    if command == "convert":
        datasets = {"ijrr": "IJRR", "hqf": "HQF", "ced": "CED"}
        if not rest or rest[0].lower() not in datasets:
            print(f"usage: evinr convert {'|'.join(datasets)} --raw_data_dir DIR --output_data_dir DIR", file=sys.stderr)
            sys.exit(2)
        script, rest = script.format(datasets[rest[0].lower()]), rest[1:]
    try:
        path = bundled("scripts", "evinr_scripts", os.path.basename(script))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, os.path.dirname(path))  # the script's own helpers, as when it is run directly
    sys.argv = [path, *rest]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
