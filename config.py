"""
The settings of a run: every flag once, with its default, its bounds and its help, in `Config`;
the command line is made from it. Also the presets, and the device and matmul precision a run
resolves to.
"""

import argparse
import contextlib
import dataclasses
import math
import numbers
import os
import reprlib
from dataclasses import dataclass, field

import torch

import command
from model import SPATIAL_WEIGHT


class UsageError(Exception):
    """A bad request on the command line (as opposed to a bad input file)."""


# Limits of the flags: far beyond what a fit can use, low enough that a typo is caught at once.
MAX_SENSOR_SIDE = 32767    # pixel coordinates are int16
MAX_NET_WIDTH = 16384      # 16384 wide: 4 GB of weights and optimizer state per hidden layer
MAX_NET_LAYERS = 64
MAX_SMOOTH = 10.0          # --smooth in pixels; beyond it a frame is a blur, not a reconstruction
MAX_FRAMES = 1_000_000     # frames rendered by one run (9 hours at 30 frames per second)
MAX_WINDOWS = 100_000      # windows of one run (55 hours of 2 s windows)
MAX_NOISE_FILTER_MS = 1000.0  # --noise_filter: beyond a second, any event has a neighbour's before it
DEFAULT_T_END = 2.0        # --t_end without --window: the authors' default window, seconds

# The sections of --help, in order.
GROUPS = {"data": "the recording", "fitting": "the fit", "output": "what is written",
          "performance": "speed, memory and numerical precision"}


def option(default, help, group, short=None, type=None, choices=None, metavar=None, valid=None, why=None,
           bare=None):
    """A Config field. `valid(value)` (with `why`, the reason given when it fails) is checked by
    Config.check for a value that is set; written as what is valid, not what is not, so that NaN,
    which fails every comparison, is refused too. `bare`: the value of the flag given without one."""
    return field(default=default, metadata={"help": help, "group": group, "short": short, "type": type,
                                            "choices": choices, "metavar": metavar, "valid": valid, "why": why,
                                            "bare": bare})


def at_least(low):
    return lambda value: value >= low


def between(low, high):
    return lambda value: low <= value <= high


def positive(value):
    return not isinstance(value, bool) and math.isfinite(value) and value > 0


def non_negative(value):
    return math.isfinite(value) and value >= 0


# What a value of each annotated type must be (a checkpoint's settings are read without
# argparse's types): numpy's numbers are numbers, True is not one.
KINDS = {int: ((numbers.Integral,), "must be a whole number"), float: ((numbers.Real,), "must be a number"),
         bool: ((bool,), "must be true or false"), str: ((str, os.PathLike), "must be text")}


def of_kind(value, kind):
    """Whether `value` is of the annotated type `kind` (anything for an unlisted one)."""
    if kind not in KINDS:
        return True
    return isinstance(value, KINDS[kind][0]) and (kind is bool or not isinstance(value, bool))


def holds(valid, value):
    """valid(value), with a value of the wrong type (a string where a number goes) as not valid
    rather than a TypeError."""
    try:
        return bool(valid(value))
    except (TypeError, ValueError, OverflowError):
        return False


# a value a file holds, in an error line: short, on one line
SHORT = reprlib.Repr()
SHORT.maxstring, SHORT.maxother = 80, 80


def shown(value):
    """A value in an error line: as given when it is a number or printable text, else its repr,
    shortened (a string with a newline must not break the line, nor pass for text that it is not)."""
    plain = isinstance(value, numbers.Real) or (isinstance(value, str) and value.isprintable() and value.strip() == value)
    return value if plain and value != "" else SHORT.repr(value)


def is_plain_name(name):
    """A name that stays one folder inside its parent."""
    return bool(name) and name not in (".", "..") and name.isprintable() and not any(
        separator and separator in name for separator in (os.sep, os.altsep))


def number_or_auto(text):
    """--event_thresh's and --spatial_weight's value: a number, or auto."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


# What --preset gives the flags left unset (None); docs/threshold.md has the measurements behind
# "recommended".
PRESETS = {"recommended": {"event_thresh": "auto", "lr_schedule": "cosine", "smooth": 0.5, "hot_pixels": "auto",
                           "noise_filter": 0.0, "spatial_weight": "auto"},
           "authors": {"event_thresh": 1.0, "lr_schedule": "constant", "smooth": 0.0, "hot_pixels": "off",
                       "noise_filter": 0.0, "spatial_weight": SPATIAL_WEIGHT}}


@dataclass
class Config:
    # the authors' flags, same names and meanings
    exp_name: str = option(None, "experiment name (default: the data's name, numbered -2, -3, ... when taken)",
                           "output", short="-n", type=str)
    data_path: str = option(None, "event recording, any supported format (default: the bundled demo)", "data",
                            short="-d", type=str)
    output_dir: str = option("runs", "where the experiment folder goes", "output", short="-o")
    t_start: float = option(0.0, "window start, seconds after the first event", "data",
                            valid=non_negative,
                            why="must be 0 or more seconds after the first event")
    t_end: float = option(None, "window end, seconds after the first event (default: 2, or the whole recording "
                                "with --window)", "data", type=float)
    H: int = option(None, "sensor height in pixels (rows) (default: from the data)", "data", type=int,
                    valid=between(1, MAX_SENSOR_SIDE), why=f"the sensor side must be 1 to {MAX_SENSOR_SIDE} pixels")
    W: int = option(None, "sensor width in pixels (columns) (default: from the data)", "data", type=int,
                    valid=between(1, MAX_SENSOR_SIDE), why=f"the sensor side must be 1 to {MAX_SENSOR_SIDE} pixels")
    color_event: bool = option(False, "colour events on an RGGB Bayer sensor (CED)", "data")
    event_thresh: object = option(None, "contrast threshold C: an event is a log-intensity change of C; auto: fit "
                                        "with C = 1, then choose C and the exposure from the video itself "
                                        "(docs/threshold.md) (default: the --preset's)", "fitting",
                                  type=number_or_auto, metavar="C|auto",
                                  valid=lambda c: c == "auto" or positive(c),
                                  why="the contrast threshold must be a positive number, or auto")
    spatial_weight: object = option(None, f"weight of the spatial regulariser (the authors' {SPATIAL_WEIGHT:g}); "
                                          "auto: theirs times the share of the sensor's pixels that have events "
                                          "in the first fitted window, one number for the run (docs/threshold.md) "
                                          "(default: the --preset's)",
                                    "fitting", type=number_or_auto, metavar="W|auto",
                                    valid=lambda w: w == "auto" or non_negative(w),
                                    why="the spatial weight must be 0 or more, or auto")
    train_resolution: int = option(50, "number of event frames (doubled half-way unless --no_c2f)", "fitting",
                                   valid=at_least(1), why="must be at least 1")
    val_resolution: int = option(50, "frames on the uniform grid of --frames_at uniform", "output",
                                 valid=between(1, MAX_FRAMES), why=f"must be 1 to {MAX_FRAMES} frames")
    no_c2f: bool = option(False, "keep the number of event frames fixed (no coarse-to-fine)", "fitting")
    iters: int = option(1000, "training iterations (per window)", "fitting", valid=at_least(1),
                        why="must be at least 1")
    log_interval: int = option(100, "iterations between loss reports", "output", valid=at_least(1),
                               why="must be at least 1")
    lr: float = option(3e-4, "AdamW learning rate", "fitting", valid=positive,
                       why="the learning rate must be a positive number")
    lr_schedule: str = option(None, "the learning rate over the iterations: constant (the authors'), or cosine: "
                                    "decayed along half a cosine to 30%% of --lr by iteration min(--iters, 1000), "
                                    "then falling as 1 / iteration, so a longer fit drifts little "
                                    "(default: the --preset's)", "fitting",
                              choices=("constant", "cosine"), type=str)
    preset: str = option("recommended", "settings of the flags not given: recommended (--event_thresh auto "
                                        "--lr_schedule cosine --smooth 0.5; docs/threshold.md), or authors (their "
                                        "exact settings: --event_thresh 1 --lr_schedule constant --smooth 0, for "
                                        "reproducing their tables)", "fitting", choices=tuple(PRESETS))
    net_layers: int = option(3, "hidden sine layers after the first", "fitting", valid=between(0, MAX_NET_LAYERS),
                             why=f"must be 0 to {MAX_NET_LAYERS}")
    net_width: int = option(512, "width of the hidden sine layers", "fitting", valid=between(1, MAX_NET_WIDTH),
                            why=f"must be 1 to {MAX_NET_WIDTH}")
    device: str = option("auto", "torch device; auto: cuda when available, else cpu", "performance")
    # new in this implementation
    events_topic: str = option(None, "ROS bags: the events' topic (default: /dvs/events in a ROS 1 bag, the "
                                     "event topic of a ROS 2 bag)", "data", type=str)
    images_topic: str = option(None, "ROS bags: the APS frames' topic; '' for none (default: /dvs/image_raw when "
                                     "the bag has it)", "data", type=str)
    hot_pixels: str = option(None, "auto: find each fitted window's hot pixels (those firing far more than its "
                                   "typical pixel and than their neighbours; denoise.py) and leave out their "
                                   "events; off: keep them (default: the --preset's)", "data",
                             choices=("auto", "off"), type=str)
    noise_filter: float = option(None, "leave out each event that none of its 8 neighbouring pixels fired in the MS "
                                       "milliseconds before (background activity; denoise.py); 0: off (default: the "
                                       "--preset's)", "data", type=float, metavar="MS",
                                 valid=between(0, MAX_NOISE_FILTER_MS),
                                 why=f"must be 0 to {MAX_NOISE_FILTER_MS:g} milliseconds")
    frames_at: str = option("auto", "when to render: 'aps' (every APS frame in the window), 'uniform' "
                                    "(--val_resolution frames), a number (frames per second), or a text file of "
                                    "times in seconds on the recording's clock; 'auto' is aps when the recording "
                                    "has APS frames, else uniform", "output")
    smooth: float = option(None, "standard deviation in pixels of a Gaussian that smooths each rendered frame: "
                                 "each pixel has its own output weights, so its events' noise reaches it "
                                 "unaveraged (docs/threshold.md); 0: none (default: the --preset's)", "fitting",
                           type=float, metavar="PIXELS", valid=between(0, MAX_SMOOTH),
                           why=f"must be 0 to {MAX_SMOOTH} pixels")
    loss: str = option("diff", "temporal supervision: finite differences of frames, or the exact time derivative",
                       "fitting", choices=("diff", "autograd"))
    align: str = option("boundary", "boundary: compare each event frame with the change over its own span "
                                    "(fixed); midpoint: the authors' half-chunk-shifted comparison", "fitting",
                        choices=("boundary", "midpoint"))
    chunking: str = option("count", "event frames of equal event count (the authors') or of equal duration",
                           "fitting", choices=("count", "time"))
    window: float = option(None, "fit a whole recording as consecutive windows of about this many seconds "
                                 "(equal windows, 0.67-1.5x this long), each warm-started from the previous one "
                                 "and tied to its last frame", "data", type=float,
                           valid=non_negative,
                           why="must be a positive number of seconds (or 0: one piece)")
    window_tie: float = option(1.0, "weight of the boundary-frame tie between windows", "fitting",
                               valid=non_negative, why="must be 0 or more")
    windows_batch: int = option(None, "with --window: fit this many consecutive windows at once, one network each "
                                      "with their weights stacked (batched matrix products); each batch starts "
                                      "from the previous batch's last network, and each window is tied to the one "
                                      "before it (default: 1 on a CPU; on a GPU as many as half its free memory "
                                      "holds)", "performance", type=int, valid=at_least(1), why="must be at least 1")
    seed: int = option(0, "random seed: the same seed gives the same frames", "fitting",
                       valid=lambda seed: 0 <= seed < 2 ** 63, why="must be 0 to 2**63 - 1")
    retry: int = option(0, "refit a window whose fit did not converge (judged from its events alone: "
                           "docs/convergence.md) up to this many times, from --seed + 1000 k, keeping the fit of "
                           "the lowest loss", "fitting", valid=between(0, 100), why="must be 0 to 100")
    overwrite: bool = option(False, "replace an existing experiment folder", "output")
    tensorboard: bool = option(False, "also log losses to TensorBoard (needs the tensorboard package)", "output")
    render_only: str = option(None, "render from a saved model.pt without training; its settings, with the flags "
                                    "given here on top", "output", type=str, metavar="CHECKPOINT")
    plain: bool = option(False, "reference path: autograd loss and unfused AdamW (same results, slower; for "
                                "checking)", "performance")
    matmul_precision: str = option("auto", "torch.set_float32_matmul_precision: 'high' allows TF32 on NVIDIA "
                                           "GPUs, 'medium' also bfloat16 (on GPUs, and on CPUs with AMX); auto: "
                                           "high on a GPU, medium on a CPU with AMX, highest elsewhere",
                                   "performance", choices=("auto", "highest", "high", "medium"))
    no_video: bool = option(False, "skip video.mp4", "output")
    loss_kernel: str = option("auto", "implementation of the fused difference loss: 'triton' (two GPU kernels, "
                                      "needs the triton package), 'torch' (the reference); auto: triton on CUDA "
                                      "when installed", "performance", choices=("auto", "triton", "torch"))
    output_kernel: str = option("auto", "the output layer's AdamW update: 'triton' (one GPU kernel inside the "
                                        "backward that forms the weight gradient and applies AdamW to it, needs "
                                        "the triton package; for --loss diff --align boundary), 'torch' (the "
                                        "gradient, then torch's fused AdamW); auto: triton on CUDA when it applies",
                                "performance", choices=("auto", "triton", "torch"))
    cuda_graph: str = option("auto", "capture one training step per coarse-to-fine stage as a CUDA graph and "
                                     "replay it (removes the launch cost of ~30 small kernels a step); auto: on "
                                     "CUDA devices, falling back to eager steps with a note if capture fails; on: "
                                     "fail instead", "performance", choices=("auto", "on", "off"))
    ray: str = option(None, "with --window: fit runs of consecutive windows in parallel, one Ray task each "
                            "(docs/whole-recordings.md); ADDRESS: a Ray cluster (auto, ray://HOST:PORT; "
                            "default: RAY_ADDRESS, or Ray started on this machine)", "performance", type=str,
                      metavar="ADDRESS", bare="local")
    gpus_per_fit: float = option(1.0, "with --ray on GPUs: the share of a GPU one fit reserves (0.5: two small "
                                      "fits a GPU)", "performance", valid=between(0.01, 1.0),
                                 why="must be 0.01 to 1 GPU")

    def resolved(self):
        """This config with the preset's values in the flags left unset."""
        return dataclasses.replace(self, **{name: self.setting(name) for name in PRESETS.get(self.preset, {})})

    def setting(self, name):
        """A flag's value as the run uses it: the one given, or the preset's when left unset (the
        one question every module asks of the presets, so that a config need not be resolved)."""
        value = getattr(self, name)
        return PRESETS.get(self.preset, {}).get(name) if value is None else value

    @property
    def auto_threshold(self):
        """Whether C is chosen from the video (--event_thresh auto, given or the preset's)."""
        return self.setting("event_thresh") == "auto"

    def reader_options(self):
        """The options a recording's reader takes from the flags (bag topics), those given."""
        return {name: getattr(self, name) for name in ("events_topic", "images_topic") if getattr(self, name) is not None}

    def check(self):
        """Refuse settings that cannot work, before any work is done: one line naming the flag.
        Each field's type and bounds are in its annotation and metadata (`valid`, `choices`);
        the rest relate two flags."""
        self.check_values()
        resolve_device(self.device)

    def check_values(self):
        """check(), but for whether the device exists here: what a saved fit's settings must
        pass too (experiment.load_checkpoint), when rendered on another machine perhaps. A value
        of the wrong type (a checkpoint's string where a number goes) is refused like one out of
        bounds: UsageError, never a TypeError."""
        def need(ok, flag, why, exact=False):  # exact: a value of the wrong type is shown as what it is
            if not ok:
                value = getattr(self, flag)
                raise UsageError(f"--{flag} {SHORT.repr(value) if exact else shown(value)}: {why}")
        for spec in dataclasses.fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if value is None and spec.default is None:  # unset: the preset's, or the data's
                continue
            if spec.type in KINDS:
                need(of_kind(value, spec.type), spec.name, KINDS[spec.type][1], exact=True)
            if meta["choices"]:
                need(holds(lambda value: value in meta["choices"], value), spec.name,
                     f"must be one of {', '.join(meta['choices'])}")
            if meta["valid"]:
                need(holds(meta["valid"], value), spec.name, meta["why"])
        need(self.t_end is None or (math.isfinite(self.t_end) and self.t_end > self.t_start), "t_end",
             f"must be a number of seconds after --t_start ({self.t_start:g})")
        need(self.align != "midpoint" or self.train_resolution >= 2, "train_resolution",
             "--align midpoint compares the midpoints of consecutive event frames: give at least 2")
        if (self.H is None) != (self.W is None):
            raise UsageError("--H and --W go together: give both, or neither to take the size from the data")
        if self.exp_name is not None and not (isinstance(self.exp_name, str) and is_plain_name(self.exp_name)):
            raise UsageError(f"-n {self.exp_name!r}: the experiment name must be one printable folder name, "
                             f"without '/' and not '.' or '..' (it goes inside -o {self.output_dir})")
        try:  # a number of frames per second; anything else is a mode or a file, read when rendering
            fps = float(self.frames_at)
        except (TypeError, ValueError):  # a path given as an os.PathLike is a file too
            fps = None
        need(fps is None or positive(fps), "frames_at", "frames per second must be a positive number")


# Fields that shape the fitted networks and their time axis: a saved fit is rendered with its own.
FIT_FIELDS = ("t_start", "t_end", "H", "W", "color_event", "net_layers", "net_width", "window", "event_thresh")
# Fields a checkpoint never sets: where a render writes, and whether it may replace a folder,
# are the command line's alone.
NOT_SAVED = ("render_only", "output_dir", "exp_name", "overwrite", "ray")


def add_config_arguments(parser, suppress_defaults=False, skip=()):
    """Add Config's fields to `parser` (or to a group of it) as --NAME flags, in --help's groups. With
    suppress_defaults, a flag not given is absent from the parsed namespace, so layers of
    settings can be stacked (a checkpoint's or a dataset's, then the command line's)."""
    if isinstance(parser, argparse.ArgumentParser):
        groups = {name: parser.add_argument_group(f"{name} ({text})") for name, text in GROUPS.items()}
    else:  # a group of another command's flags: these go in it as they are
        groups = dict.fromkeys(GROUPS, parser)
    for spec in dataclasses.fields(Config):
        if spec.name in skip:
            continue
        meta = spec.metadata
        names = ([meta["short"]] if meta["short"] else []) + [f"--{spec.name}"]
        default = argparse.SUPPRESS if suppress_defaults else spec.default
        group = groups[meta["group"]]
        if isinstance(spec.default, bool):
            group.add_argument(*names, action="store_true", default=default, help=meta["help"])
            continue
        # the default is written into the help once: by the help text when it describes it
        shown = "" if "(default:" in meta["help"] or spec.default is None else f" (default: {spec.default})"
        bare = {"nargs": "?", "const": meta["bare"]} if meta["bare"] is not None else {}
        group.add_argument(*names, default=default, help=meta["help"] + shown, choices=meta["choices"],
                           metavar=meta["metavar"], type=meta["type"] or type(spec.default), **bare)
    return parser


def get_parser(suppress_defaults=False, prog=None):
    parser = command.ArgumentParser(
        prog=prog, usage="%(prog)s [-h] [-d DATA_PATH] [-n EXP_NAME] [-o OUTPUT_DIR] [FLAG ...]",
        description="EvINR: fit an implicit neural representation to events and render video.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32, width=100))
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
    """Resolve --matmul_precision auto to the fastest precision that scripts/benchmark.py found
    to keep quality: TF32 ('high') on NVIDIA GPUs, bfloat16 ('medium') on CPUs with AMX tiles,
    which multiply bfloat16 natively, float32 on other CPUs (docs/performance.md)."""
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
