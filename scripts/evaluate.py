"""
Score EvINR the way EVREAL scores event-to-video methods (docs/evaluation.md).

    python scripts/evaluate.py SEQUENCE -o OUT_DIR --dataset IJRR
    python scripts/evaluate.py DATASET_FOLDER -o OUT_DIR --dataset HQF --iters 500
    python scripts/evaluate.py SEQUENCE -o OUT_DIR --compare "default" "--align midpoint" "--loss autograd"
    python scripts/evaluate.py --pair PRED.png REF.png

A SEQUENCE is any recording train.py reads, with APS frames; a DATASET_FOLDER holds one sequence
per sub-folder. Every sequence is fitted in memory with train.reconstruct (train.py's flags are
accepted here and recorded) over its evaluation interval from scripts/datasets.py, and the
reconstructions at the APS time stamps are scored against the APS frames by utils'
scorer (utils.score_reconstruction):
  - time is re-zeroed to the earlier of the first APS frame and the first event;
  - every APS frame but the recording's last counts (EVREAL reconstructs frames 0 .. K-2) when
    its time lies in the interval, both ends included, and its reconstruction was made within
    1 ms of it; non-finite scores are dropped;
  - a dataset's score is the mean over all its scored frames, not the mean of sequence means.
The offset between the events' clock and the APS frames' (utils.event_clock_offset, from the
events and frames alone) is reported for each sequence; --aps_offset MS|auto reconstructs each
frame that much after its time stamp instead, outside EVREAL's rule (docs/evaluation.md).
--dataset auto (the default) finds each sequence by name in the table and also applies that
dataset's train.py flags (sensor size, colour, contrast threshold); a sequence the table does not
know is scored whole; --dataset none scores every sequence whole, with no dataset flags.
A span longer than 2.5 s is fitted in consecutive 2 s windows (train.py --window, the length
the authors fit at once) unless --window is given; --window 0 fits the span in one piece.
With --ray [ADDRESS] each (sequence, configuration) fit is a Ray task (fanout.py), on this
machine or a cluster; the files written are the same as one after another.

Writes under OUT_DIR: results.json, per_frame.csv, sequences.{md,csv,json}, datasets.{md,csv,json},
table.{md,csv} (one row per configuration), previews/SEQUENCE.png, times/SEQUENCE.txt (the APS
times that were reconstructed) and runs/CONFIGURATION/SEQUENCE/ (train.py's folder: frames/, ...).
With --layout evreal, also EVREAL's tree as its eval.py writes it, so that its tools compare
EvINR with other methods: outputs/std/DATASET/SEQUENCE/METHOD/ (DATASET as EVREAL names it: ECD,
MVSEC, HQF) holding frame_XXXXXXXXXX.png, timestamps.txt (`idx t`, t on EVREAL's clock with 15
decimals), event_rate.txt (`idx events-per-second`) and mse.txt, ssim.txt, lpips.txt (`idx score`
with 5 decimals, over the scored frames; written even when empty); idx is the APS frame's index
in the recording. METHOD is "EvINR" for the default configuration, else the configuration's
label as a folder name. (EVREAL also reconstructs the 10 s before an interval, to warm up a
recurrent network; EvINR needs no warm-up, so the tree holds the interval's frames.)
"""

import argparse
import csv
import dataclasses
import errno
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass

# train.py and its modules live one folder up
import repo  # noqa: F401  (first: makes train.py's modules importable)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from config import Config, UsageError, add_config_arguments, split_configurations  # noqa: E402
import experiment  # noqa: E402
import plan  # noqa: E402
import train  # noqa: E402
import command  # noqa: E402
import lpips  # noqa: E402
import utils  # noqa: E402
from datasets import DATASETS, WHOLE_SEQUENCE, dataset_named, find_sequence  # noqa: E402
import fanout  # noqa: E402
from event_data import EventDataError, detect_format, load_events  # noqa: E402

DEFAULT_WINDOW = 2.0       # seconds per window for a long span: what the authors fit at once
LONGEST_SINGLE_FIT = 2.5   # seconds; a longer span is fitted in DEFAULT_WINDOW windows
# train.py options that evaluate.py has its own of: -o is where the evaluation goes, --overwrite replaces it
OWN_OPTIONS = ("output_dir", "overwrite")
TRAIN_OPTIONS = tuple(spec.name for spec in dataclasses.fields(Config) if spec.name not in OWN_OPTIONS)
# train.py options that evaluate.py sets itself for every sequence (-o is this script's own folder)
RESERVED = {"data_path": "-d/--data_path", "exp_name": "-n/--exp_name",
            "t_start": "--t_start", "t_end": "--t_end", "frames_at": "--frames_at",
            "render_only": "--render_only"}
# train.py options that do not change the reconstruction: left out of the method record
NOT_METHOD = set(RESERVED) | {"overwrite", "log_interval", "tensorboard", "no_video", "ray", "gpus_per_fit"}
EVREAL_CONFIG = "std"  # EVREAL's evaluation configuration whose rules (and tree) these are


class EvaluationError(Exception):
    """Bad input for the evaluation; the message is one line naming the sequence."""


class NothingToScore(EvaluationError):
    """No sequence has APS frames to score against (reproduce_tables.py skips such a dataset)."""


# -----------------------------------------------------------------------------
# command line


def parse_given(parser, tokens, known_only=False):
    """Parse `tokens`; the namespace holds the train.py options only where they were given (their
    defaults are suppressed), so that flags can be stacked: defaults, then a dataset's, then the
    command line's."""
    tokens, compare = split_configurations(tokens, "--compare")
    if known_only:
        namespace, unknown = parser.parse_known_args(tokens)
    else:
        namespace, unknown = parser.parse_args(tokens), []
    if compare is not None:
        if not compare:
            parser.error("--compare needs at least one configuration")
        namespace.compare = compare
    return namespace, unknown


def aps_offset(text):
    """--aps_offset: 'auto', or milliseconds, finite and within a second."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and abs(value) <= 1000.0):
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor milliseconds within +-1000")
    return value


def train_flags_parser(parser):
    """Add train.py's flags, defaults suppressed, but for this script's own (OWN_OPTIONS)."""
    return add_config_arguments(parser, suppress_defaults=True, skip=OWN_OPTIONS)


def options_parser(description):
    """train.py's flags plus the evaluation options that evaluate.py and reproduce_tables.py share."""
    parser = command.ArgumentParser(prog=command.program_name(), description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output_dir", "--out_dir", dest="out_dir", help="where tables, frames and previews go")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in -o")
    parser.add_argument("--compare", nargs="+", metavar="FLAGS",
                        help='last on the line: several configurations in one table, each a quoted string of train.py '
                             'flags or "default", e.g. --compare "default" "--align midpoint" "--no_c2f"')
    parser.add_argument("--histeq", choices=utils.HISTEQ_MODES, default="none",
                        help="histogram equalisation of both images before scoring")
    parser.add_argument("--no_lpips", action="store_true", help="score MSE and SSIM only (no LPIPS weights needed)")
    parser.add_argument("--layout", choices=["evinr", "evreal"], default="evinr",
                        help="evreal: also write EVREAL's output tree (outputs/std/DATASET/SEQUENCE/METHOD/)")
    parser.add_argument("--aps_offset", type=aps_offset, default=0.0, metavar="MS|auto",
                        help="reconstruct each scored APS frame this many milliseconds after its time stamp; auto: "
                             "the offset measured between the events and the APS frames (utils.event_clock_offset); "
                             "0 (the default) is EVREAL's rule, and any other value is outside it")
    train_flags_parser(parser.add_argument_group("train.py's flags (for every sequence)"))
    return parser


def get_parser():
    parser = options_parser(__doc__)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="a sequence, or a folder of sequences")
    parser.add_argument("--dataset", default="auto", type=lambda name: dataset_named(name) or name,
                        choices=["auto", *DATASETS, "none"],
                        help="whose evaluation intervals and train.py flags to use (auto: by sequence name)")
    parser.add_argument("--pair", nargs=2, metavar=("PRED", "REF"), help="score one image pair and print it as JSON")
    return parser


def check_reserved(given, where):
    for name in given:
        if name in RESERVED:
            raise EvaluationError(f"{where}{RESERVED[name]} is set by the evaluation for each sequence; leave it out")


def parse_train_flags(text):
    """{train option: value} of a --compare string."""
    parser = train_flags_parser(argparse.ArgumentParser(add_help=False))
    parser.exit_on_error = False  # a bad string is reported as this configuration's error
    try:
        given, unknown = parse_given(parser, shlex.split(text), known_only=True)
    except (argparse.ArgumentError, ValueError) as error:
        raise EvaluationError(f"--compare {text!r}: {error}") from None
    if unknown:
        raise EvaluationError(f"--compare {text!r}: not train.py flags: {' '.join(unknown)}")
    check_reserved(vars(given), f"--compare {text!r}: ")
    return vars(given)


def configurations(options):
    """[(label, {train option: value})]: the flags given on the command line, then each --compare
    string's on top of them."""
    common = {name: getattr(options, name) for name in TRAIN_OPTIONS if hasattr(options, name)}
    check_reserved(common, "")
    found = [("default", common)]
    if options.compare:
        found = []
        for text in options.compare:
            label = " ".join(text.split())
            flags = {} if label in ("", "default") else parse_train_flags(text)
            found.append((label or "default", {**common, **flags}))
    labels = [label for label, _ in found]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"--compare: a configuration is given twice ({labels})")
    folders = {}
    for label in labels:  # runs/FOLDER and EVREAL's method folder are named by slug(label)
        if folders.setdefault(slug(label), label) != label:
            raise EvaluationError(f"--compare: {folders[slug(label)]!r} and {label!r} would share the folder "
                                  f"runs/{slug(label)}; write one of them otherwise")
    for label, flags in found:  # every flag's range, before anything is read or written
        try:
            Config(**flags).check()
        except UsageError as error:
            raise EvaluationError(f"{error}" if label == "default" else f"--compare {label!r}: {error}") from None
    return found


# -----------------------------------------------------------------------------
# sequences and the frames to score


def is_recording(path):
    try:
        detect_format(path)
        return True
    except EventDataError:
        return False


def find_sequences(paths):
    """[path]: each PATH is a recording, or a folder holding one recording per sub-folder."""
    found = []
    for path in map(os.path.normpath, paths):
        if is_recording(path):
            found.append(path)
        elif os.path.isdir(path):
            folders = [os.path.join(path, name) for name in sorted(os.listdir(path))
                       if not name.startswith(".") and os.path.isdir(os.path.join(path, name))]
            recordings = [folder for folder in folders if is_recording(folder)]
            for folder in sorted(set(folders) - set(recordings)):
                print(f"note: {folder}: not a recording; skipped", file=sys.stderr)
            if not recordings:
                raise EvaluationError(f"{path}: neither a recording nor a folder of recordings")
            found += recordings
        else:
            detect_format(path)  # raises with the reason (missing, empty, unknown format)
    names = [sequence_name(path) for path in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise EvaluationError(f"{twice[0]}: two sequences of that name; evaluate them separately")
    return found


def sequence_name(path):
    """The name of a sequence, from its path, usable as a folder and file name."""
    return command.safe_name(os.path.splitext(os.path.basename(os.path.normpath(path)))[0], fallback="sequence")


def evaluation_interval(name, dataset):
    """(dataset label, (start, end) in seconds after re-zeroing, or None where EVREAL does not
    score the sequence). 'other' is the label of sequences outside the table."""
    if dataset == "none":
        return "other", WHOLE_SEQUENCE
    if dataset == "auto":
        owners = [key for key in DATASETS if find_sequence(key, name)]
        if not owners:
            return "other", WHOLE_SEQUENCE
        dataset = owners[0]
    known = find_sequence(dataset, name)  # under EVREAL's name or the other one (MVSEC's _data)
    return dataset, DATASETS[dataset]["sequences"][known] if known else WHOLE_SEQUENCE


def dataset_flags(dataset, preset=None):
    """The train.py flags the authors' README gives for a dataset's sensor, and under `preset`
    "authors" their contrast threshold for it (the recommended preset chooses its own)."""
    if dataset not in DATASETS:
        return {}
    facts = DATASETS[dataset]
    flags = {"H": facts["sensor"][0], "W": facts["sensor"][1], "color_event": facts["color"]}
    return {**flags, "event_thresh": facts["event_thresh"]} if preset == "authors" else flags


def frames_in_interval(aps_t, t_first_event, interval):
    """EVREAL's choice of APS frames: time is re-zeroed to the earlier of the first frame and the
    first event, and every frame but the last counts (utils.scored_aps). Returns (t_zero, indices
    of the frames in the interval, both ends included)."""
    t_zero = min(float(aps_t[0]), float(t_first_event))
    relative = np.asarray(aps_t, dtype=np.float64) - t_zero
    index = np.flatnonzero((relative >= interval[0]) & (relative <= interval[1]))
    return t_zero, index[index < len(aps_t) - 1]


@dataclass
class Sequence:
    """One sequence to evaluate: what to fit and the APS frames to score."""
    name: str
    path: str
    dataset: str
    interval: tuple
    t_zero: float
    t_start: float           # the fit, seconds after the first event (train.py's --t_start/--t_end)
    t_end: float
    span: tuple              # (begin, end) of the fit on the recording's clock
    aps_index: np.ndarray    # the APS frames to reconstruct and score
    aps_t: np.ndarray      # their times, recording clock
    use_lpips: bool
    clock_offset: float = None   # seconds the events trail the APS frames (utils.event_clock_offset), None: unknown
    render_offset: float = 0.0   # seconds after each APS time that its frame is reconstructed (--aps_offset)

    @property
    def render_t(self):
        """The times reconstructed: the APS frames' plus --aps_offset."""
        return self.aps_t + self.render_offset


def read_sequence(path, dataset, common):
    """(events, sensor) of a sequence, read with the dataset's sensor flags unless given."""
    flags = {**dataset_flags(dataset), **common}
    try:
        return load_events(path, sensor=(flags.get("H"), flags.get("W")))
    except EventDataError as error:
        from_table = dataset in DATASETS and not {"H", "W"} & set(common)
        hint = f" (--H/--W are {dataset}'s sensor in scripts/datasets.py; give --H and --W to override)" if from_table else ""
        raise EvaluationError(f"{sequence_name(path)}: {error}{hint}") from None


def plan_sequence(path, dataset_choice, common, use_lpips, offset_ms=0.0):
    """(Sequence, None), or (None, why the sequence is skipped). `offset_ms`: --aps_offset."""
    name = sequence_name(path)
    dataset, interval = evaluation_interval(name, dataset_choice)
    if interval is None:
        return None, f"{name}: not in EVREAL's {dataset} evaluation set; skipped (--dataset none scores it whole)"
    events, sensor = read_sequence(path, dataset, common)
    if events.aps_frames is None or len(events.aps_frames) == 0:
        return None, f"{name}: no APS frames to score against; skipped"
    t_first, t_last = float(events.t[0]), float(events.t[-1])
    t_zero, in_interval = frames_in_interval(events.aps_t, t_first, interval)
    if in_interval.size == 0:
        relative = events.aps_t - t_zero
        raise EvaluationError(f"{name}: none of its {len(relative)} APS frames (at {relative[0]:.3f}-{relative[-1]:.3f} s "
                              f"after re-zeroing) lies in the {dataset} evaluation interval {interval[0]:g}-{interval[1]:g} s")
    clock_offset, agreement = utils.event_clock_offset(events.aps_frames[in_interval], events.aps_t[in_interval],
                                                       events.t, events.x, events.y)
    if clock_offset is not None:
        at_stamps = "none" if agreement["at_stamps"] is None else f"{agreement['at_stamps']:.3f}"
        edge = f", the edge of the +-{1e3 * utils.CLOCK_SEARCH:g} ms searched" if agreement["at_edge"] else ""
        print(f"note: {name}: the events trace the APS frames' edges best {1e3 * clock_offset:+.1f} ms after their "
              f"time stamps (edge agreement {agreement['at_offset']:.3f}, at the stamps {at_stamps}{edge})", file=sys.stderr)
    render_offset = (clock_offset or 0.0) if offset_ms == "auto" else 1e-3 * offset_ms
    # fit the interval (moved by --aps_offset), clipped to the events: nothing can be reconstructed where there are none
    t_start = max(t_zero + interval[0] + render_offset - t_first, 0.0)
    t_end = min(t_zero + interval[1] + render_offset, t_last) - t_first
    if not t_end > t_start:
        raise EvaluationError(f"{name}: no events in the evaluation interval {interval[0]:g}-{interval[1]:g} s")
    [(begin, end)] = plan.fit_spans(events, Config(t_start=t_start, t_end=t_end))
    rendered = events.aps_t[in_interval] + render_offset
    inside = (rendered >= begin) & (rendered <= end)
    chosen = in_interval[inside]
    if chosen.size == 0:
        raise EvaluationError(f"{name}: the events end before or begin after every APS frame of the evaluation interval")
    if chosen.size < in_interval.size:
        print(f"note: {name}: {in_interval.size - chosen.size} APS frames of the interval lie outside the events "
              f"and cannot be reconstructed; they are not scored", file=sys.stderr)
    lpips_fits = min(sensor) >= lpips.LPIPS_MIN_SIZE
    if use_lpips and not lpips_fits:
        print(f"note: {name}: {sensor[1]}x{sensor[0]} frames are too small for LPIPS (AlexNet needs "
              f"{lpips.LPIPS_MIN_SIZE} px a side); LPIPS not scored", file=sys.stderr)
    if min(sensor) < utils.SSIM_MIN_SIZE:
        print(f"note: {name}: {sensor[1]}x{sensor[0]} frames are too small for SSIM (its Gaussian window needs "
              f"{utils.SSIM_MIN_SIZE} px a side); SSIM not scored", file=sys.stderr)
    return Sequence(name=name, path=path, dataset=dataset, interval=interval, t_zero=t_zero, t_start=t_start,
                    t_end=t_end, span=(begin, end), aps_index=chosen, aps_t=events.aps_t[chosen].copy(),
                    use_lpips=use_lpips and lpips_fits, clock_offset=clock_offset, render_offset=render_offset), None


# -----------------------------------------------------------------------------
# fitting and scoring


def slug(label):
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") or "default"


def sequence_config(sequence, overrides, run_dir, times_path):
    """Config for one sequence: its defaults, the dataset's flags, the configuration's
    flags, then what the evaluation fixes (the times file records the rendered APS times)."""
    preset = overrides.get("preset", Config.preset)
    config = Config(**{**dataset_flags(sequence.dataset, preset), **overrides})
    window = config.window
    if window is None and sequence.span[1] - sequence.span[0] > LONGEST_SINGLE_FIT:
        window = DEFAULT_WINDOW
    return dataclasses.replace(config, data_path=sequence.path, exp_name=sequence.name, output_dir=run_dir,
                               t_start=sequence.t_start, t_end=sequence.t_end, frames_at=times_path,
                               overwrite=True, no_video=True, window=window)


def fit_and_score(sequence, events, config, histeq, folder):
    """Reconstruct the sequence's APS times in memory, write train.py's experiment folder at
    `folder`, and score. Returns (Reconstruction, per-frame rows with times re-zeroed, seconds)."""
    began = time.perf_counter()
    try:
        result = train.reconstruct(events, config, times=sequence.render_t)
    except (EventDataError, UsageError) as error:
        raise EvaluationError(f"{sequence.name}: {error}") from None
    with command.staged_folder(folder) as work:  # a folder of its own: configurations' folders differ (configurations)
        experiment.write_experiment(work, result, events)
    seconds = time.perf_counter() - began
    try:
        rows = utils.score_reconstruction(result.frames, result.times - sequence.render_offset, events.aps_frames,
                                          events.aps_t, histeq, sequence.use_lpips)
    except ValueError as error:
        raise EvaluationError(f"{sequence.name}: {error}") from None
    for row in rows:
        row["t"] -= sequence.t_zero
        row["t_reconstruction"] += sequence.render_offset - sequence.t_zero
    return result, rows, seconds


def evreal_method(label):
    """EVREAL's method folder name of a configuration."""
    return "EvINR" if label == "default" else slug(label)


def evreal_folder(sequence, label):
    """outputs/std/DATASET/SEQUENCE/METHOD, the folder EVREAL's eval.py writes one method's
    reconstruction of one sequence to, with the dataset as EVREAL names it."""
    dataset = DATASETS[sequence.dataset]["evreal_name"] if sequence.dataset in DATASETS else sequence.dataset
    return os.path.join("outputs", EVREAL_CONFIG, dataset, sequence.name, evreal_method(label))


def event_rates(events_t, aps_t, indices):
    """EVREAL's event_rate.txt values of APS frames `indices`: the events EVREAL hands a method
    with frame i, [iei[i - 1], iei[i]) where iei is the last event at or before each frame (none
    for frame 0), per second of their own span; 0 for one event or none."""
    ends = np.clip(np.searchsorted(events_t, aps_t, side="right") - 1, 0, len(events_t) - 1)
    rates = []
    for i in indices:
        first, last = ends[i - 1] if i else ends[0], ends[i]
        span = events_t[last - 1] - events_t[first] if last > first else 0.0
        rates.append((last - first) / span if last - first > 1 and span > 0 else 0.0)
    return rates


def write_evreal(folder, result, rows, events, t_zero, use_lpips):
    """One sequence and method in EVREAL's output layout (see the module's docstring): the
    frames, timestamps.txt and event_rate.txt for the frames reconstructed, and one file per
    metric over the scored frames with a finite score, idx being the APS frame's index."""
    indices = utils.nearest_aps(result.times, events.aps_t)  # rendered at the APS frames' times
    utils.write_frames(folder, result.frames, start_index=int(indices[0]))
    with open(os.path.join(folder, "timestamps.txt"), "w") as f:
        f.writelines(f"{idx} {t - t_zero:.15f}\n" for idx, t in zip(indices, result.times))
    with open(os.path.join(folder, "event_rate.txt"), "w") as f:
        f.writelines(f"{idx} {rate:.5f}\n" for idx, rate in zip(indices, event_rates(events.t, events.aps_t, indices)))
    for metric in [name for name in utils.METRICS if name != "lpips" or use_lpips]:
        with open(os.path.join(folder, f"{metric}.txt"), "w") as f:
            f.writelines(f"{row['aps_index']} {row[metric]:.5f}\n" for row in rows
                         if row[metric] is not None and math.isfinite(row[metric]))


def run_job(sequence, label, overrides, options, common, root, events=None):
    """Fit and score one configuration on one sequence: its run folder (and EVREAL's tree) are
    written under `root` as they will be under -o. Returns the fit's record for the tables and
    the frames of its preview. `events`: the sequence, when the caller has read it already."""
    if events is None:
        events, _ = read_sequence(sequence.path, sequence.dataset, common)
    run = os.path.join("runs", slug(label))
    config = sequence_config(sequence, overrides, os.path.join(options.out_dir, run),
                             os.path.join(options.out_dir, "times", f"{sequence.name}.txt"))
    result, rows, seconds = fit_and_score(sequence, events, config, options.histeq,
                                          os.path.join(root, run, sequence.name))
    if options.layout == "evreal":
        write_evreal(os.path.join(root, evreal_folder(sequence, label)), result, rows, events, sequence.t_zero,
                     sequence.use_lpips)
    record = {"dataset": sequence.dataset, "rows": rows, "fit_seconds": seconds,
              "seconds_fitted": sequence.span[1] - sequence.span[0],
              "interval": [bound if math.isfinite(bound) else None for bound in sequence.interval],  # None: no end
              "window": config.window, "clock_offset_ms": None if sequence.clock_offset is None else 1e3 * sequence.clock_offset,
              "aps_offset_ms": 1e3 * sequence.render_offset,
              "method": {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_METHOD},
              "timings": result.timings, "run": os.path.join(options.out_dir, run, sequence.name)}
    picks = utils.preview_picks(len(sequence.aps_index))
    return record, {"frames": [result.frames[k] for k in picks],
                    "aps": [events.aps_frames[sequence.aps_index[k]] for k in picks]}


def remote_job(sequence, label, overrides, options, common):
    """run_job as a Ray task: written under a folder of the task's own, then returned as files
    ({path under -o: bytes}) for the caller to write, so that no file system is shared."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        record, preview = run_job(sequence, label, overrides, options, common, root)
        files = {}
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, root)] = f.read()
    return record, preview, files


def run_jobs(plans, configs, options, common, work):
    """{(sequence name, label): (record, preview) or JobFailed} of every job: one after another
    here, or as Ray tasks with --ray (their files written under `work` as they come). A job that
    fails for a reason in its data is reported, and the others go on, either way."""
    jobs = [(sequence, label, overrides) for sequence in plans for label, overrides in configs]
    if getattr(options, "ray", None) is None:
        results, events = {}, {}
        for sequence, label, overrides in jobs:
            print(f"{label}: {sequence.name} ({sequence.dataset}, {len(sequence.aps_index)} APS frames, "
                  f"{sequence.span[1] - sequence.span[0]:.2f} s)", file=sys.stderr)
            try:
                if sequence.name not in events:  # read once for all configurations
                    events = {sequence.name: read_sequence(sequence.path, sequence.dataset, common)[0]}
                results[sequence.name, label] = run_job(sequence, label, overrides, options, common, work,
                                                        events[sequence.name])
            except (EvaluationError, EventDataError, UsageError) as error:
                print(f"note: {label}: {sequence.name}: failed: {error}", file=sys.stderr)
                results[sequence.name, label] = fanout.JobFailed(error)
        return results
    done = fanout.run_jobs(remote_job, [(*job, options, common) for job in jobs], options.ray,
                           common.get("gpus_per_fit", 1.0), describe=lambda job: f"{job[1]}: {job[0].name}")
    results = {}
    for (sequence, label, _), result in zip(jobs, done):
        if not isinstance(result, fanout.JobFailed):
            record, preview, files = result
            for path, content in files.items():
                os.makedirs(os.path.dirname(os.path.join(work, path)), exist_ok=True)
                with open(os.path.join(work, path), "wb") as f:
                    f.write(content)
            result = (record, preview)
        results[sequence.name, label] = result
    return results


def summarise(fits):
    """{sequences: {name: ...}, datasets: {name: ...}} of one configuration, from its fits
    {name: {dataset, rows, fit_seconds, seconds_fitted, ...}}."""
    sequences = {}
    for name, fit in fits.items():
        sequences[name] = {**utils.mean_scores(fit["rows"]), "fit_seconds": fit["fit_seconds"],
                           "seconds_fitted": fit["seconds_fitted"],
                           "fit_seconds_per_second": fit["fit_seconds"] / fit["seconds_fitted"],
                           **{key: fit[key] for key in ("dataset", "interval", "window", "clock_offset_ms", "aps_offset_ms",
                                                        "method", "timings", "run")}}
    datasets = {}
    for dataset in dict.fromkeys(fit["dataset"] for fit in fits.values()):
        members = [fit for fit in fits.values() if fit["dataset"] == dataset]
        fit_seconds = sum(fit["fit_seconds"] for fit in members)
        seconds = sum(fit["seconds_fitted"] for fit in members)
        datasets[dataset] = {**utils.mean_scores([row for fit in members for row in fit["rows"]]),
                             "fit_seconds": fit_seconds, "seconds_fitted": seconds,
                             "fit_seconds_per_second": fit_seconds / seconds, "n_sequences": len(members)}
    return {"sequences": sequences, "datasets": datasets}


def load_lpips():
    try:
        lpips.lpips_model()
    except lpips.LPIPSWeightsUnavailable as error:
        raise EvaluationError(f"LPIPS: {error}; or pass --no_lpips to score without LPIPS") from None


# -----------------------------------------------------------------------------
# tables


def number(value, digits):
    return "" if value is None else f"{value:.{digits}f}"


DIGITS = {"mse": 4, "ssim": 3, "lpips": 3, "fit_seconds": 1, "seconds_fitted": 2, "fit_seconds_per_second": 1}
HEADINGS = {"mse": "MSE", "ssim": "SSIM", "lpips": "LPIPS", "n_frames": "frames", "fit_seconds": "fit s",
            "seconds_fitted": "s fitted", "fit_seconds_per_second": "fit s per s"}


def paper_table(configurations_results):
    """Rows are configurations, columns MSE, SSIM and LPIPS per dataset and the total fit time.
    `configurations_results`: {label: {"datasets": {name: summary}}}. Returns (header, rows) of text."""
    datasets = list(dict.fromkeys(name for result in configurations_results.values() for name in result["datasets"]))
    header = ["configuration"] + [f"{name} {HEADINGS[m]}" for name in datasets for m in utils.METRICS] + ["fit s"]
    rows = []
    for label, result in configurations_results.items():
        cells = [label]
        for name in datasets:
            summary = result["datasets"].get(name, {})
            cells += [number(summary.get(m), DIGITS[m]) for m in utils.METRICS]
        cells.append(number(sum(s["fit_seconds"] for s in result["datasets"].values()), 1))
        rows.append(cells)
    return header, rows


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(path_without_extension, header, rows, records=None):
    """The same table as Markdown and CSV (and `records` as JSON, when given)."""
    with open(path_without_extension + ".md", "w") as f:
        f.write(markdown(header, rows))
    with open(path_without_extension + ".csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    if records is not None:
        with open(path_without_extension + ".json", "w") as f:
            json.dump(records, f, indent=2)


def write_outputs(out_dir, results, per_frame):
    columns = ["n_frames", *utils.METRICS, "fit_seconds", "seconds_fitted", "fit_seconds_per_second"]
    cells = lambda summary: [summary["n_frames"]] + [number(summary[key], DIGITS[key]) for key in columns[1:]]
    configs = results["configurations"]
    sequence_rows = [[label, s["dataset"], name, *cells(s)] for label, r in configs.items() for name, s in r["sequences"].items()]
    write_table(os.path.join(out_dir, "sequences"), ["configuration", "dataset", "sequence"] + [HEADINGS[c] for c in columns],
                sequence_rows, {label: r["sequences"] for label, r in configs.items()})
    dataset_rows = [[label, name, s["n_sequences"], *cells(s)] for label, r in configs.items() for name, s in r["datasets"].items()]
    write_table(os.path.join(out_dir, "datasets"), ["configuration", "dataset", "sequences"] + [HEADINGS[c] for c in columns],
                dataset_rows, {label: r["datasets"] for label, r in configs.items()})
    write_table(os.path.join(out_dir, "table"), *paper_table(configs))
    with open(os.path.join(out_dir, "per_frame.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["configuration", "dataset", "sequence", "aps_index", "t", "t_reconstruction", *utils.METRICS])
        writer.writeheader()
        writer.writerows(per_frame)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


def check_output_folder(out_dir, overwrite):
    """Refuse, before any fit, an -o that another run is writing, that holds earlier results
    (without --overwrite), or that is a file or a symbolic link to nothing. (Another run may
    still finish there first: its results are then kept, see evaluate.)"""
    writer = command.folder_in_use(out_dir)
    if writer is not None:
        raise EvaluationError(f"{out_dir}: being written by another run (process {writer}); let it finish, or choose another -o")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        what = "a symbolic link to nothing" if os.path.islink(out_dir) else "a file"
        raise NotADirectoryError(errno.ENOTDIR, f"{what} is in the way of the output folder", out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise EvaluationError(f"{out_dir}: already holds results; pass --overwrite to replace them, or choose another -o")


def sequences_to_score(paths, dataset, common, use_lpips, offset_ms=0.0):
    """(the plans of the sequences under `paths` that can be scored, why each of the others is
    not, {sequence: why its data cannot be scored}); refuses a run where none can be. A sequence
    whose data is bad is reported and left out, and the others are scored."""
    plans, skipped, failed = [], [], {}
    for path in find_sequences(paths):
        try:
            sequence, why = plan_sequence(path, dataset, common, use_lpips, offset_ms)
        except (EvaluationError, EventDataError) as error:
            failed[sequence_name(path)] = str(error)
            print(f"note: {sequence_name(path)}: left out: {error}", file=sys.stderr)
            continue
        if sequence is None:
            skipped.append(why)
            print(f"note: {why}", file=sys.stderr)
        else:
            plans.append(sequence)
    if not plans and failed:
        raise EvaluationError("; ".join(failed.values()))
    if not plans:
        raise NothingToScore("nothing to score: " + "; ".join(skipped))
    return plans, skipped, failed


def evaluate(options):
    """Evaluate every sequence under options.paths with every configuration; writes the outputs
    under options.out_dir, all or nothing, and returns results.json's content."""
    configs = configurations(options)
    if options.aps_offset != 0 and options.layout == "evreal":
        raise EvaluationError("--aps_offset: EVREAL's tree holds the frames at the APS time stamps (its rule); "
                              "leave out --layout evreal or --aps_offset")
    if getattr(options, "ray", None) is not None:
        fanout.require_ray()
    check_output_folder(options.out_dir, options.overwrite)
    use_lpips = not options.no_lpips
    common = configs[0][1]  # the sensor flags of the first configuration choose how frames are read
    plans, skipped, failed = sequences_to_score(options.paths, options.dataset, common, use_lpips, options.aps_offset)
    if any(sequence.use_lpips for sequence in plans):
        load_lpips()  # before any fitting: missing weights must not cost a fit

    # Written into a hidden folder that becomes -o at the end; the paths recorded (in the runs'
    # config.json and results.json) are the ones the files will have then. Results another run
    # finished there meanwhile are replaced only with --overwrite (an empty folder always).
    with command.staged_folder(options.out_dir, replace=options.overwrite, replace_empty=True) as work:
        for folder in ("times", "previews"):
            os.makedirs(os.path.join(work, folder))
        for sequence in plans:  # exact: train.py --frames_at renders exactly these
            np.savetxt(os.path.join(work, "times", f"{sequence.name}.txt"), sequence.render_t, fmt="%.17g")
        done = run_jobs(plans, configs, options, common, work)
        failed.update({f"{label}: {name}": str(result.error) for (name, label), result in done.items()
                       if isinstance(result, fanout.JobFailed)})
        if all(isinstance(result, fanout.JobFailed) for result in done.values()):
            raise EvaluationError("; ".join(failed.values()))
        fits, per_frame = {label: {} for label, _ in configs}, []
        for sequence in plans:
            columns = []
            for label, _ in configs:
                if isinstance(done[sequence.name, label], fanout.JobFailed):
                    continue
                record, preview = done[sequence.name, label]
                fits[label][sequence.name] = record
                per_frame += [{"configuration": label, "dataset": sequence.dataset, "sequence": sequence.name, **row}
                              for row in record["rows"]]
                columns.append((label, preview["frames"]))
            if columns:
                columns.append(("APS", preview["aps"]))
                picks = utils.preview_picks(len(sequence.aps_index))
                utils.write_preview(os.path.join(work, "previews", f"{sequence.name}.png"),
                                    sequence.aps_t[picks] - sequence.t_zero, columns)
        results = {"configurations": {label: {"flags": {k: v for k, v in overrides.items() if k not in ("ray", "gpus_per_fit")},
                                              **summarise(fits[label])} for label, overrides in configs}}
        first = next(iter(results["configurations"].values()))
        results = {"sequences": first["sequences"], "datasets": first["datasets"], **results,
                   "evaluation": {"dataset": options.dataset, "histeq": options.histeq, "lpips": use_lpips,
                                  "time_tolerance_s": utils.TIME_TOLERANCE, "aps_offset": options.aps_offset,
                                  "default_window_s": DEFAULT_WINDOW,
                                  "longest_single_fit_s": LONGEST_SINGLE_FIT},
                   "skipped": skipped, "failed": failed}
        write_outputs(work, results, per_frame)
    return results


def read_image(path):
    """uint8 gray [H, W] or RGB [H, W, 3] as stored."""
    if not os.path.isfile(path):
        raise EvaluationError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8:
        raise EvaluationError(f"{path}: not an 8-bit image")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def score_pair(pred_path, ref_path, histeq, use_lpips):
    """MSE, SSIM and LPIPS of one image pair (LPIPS None when skipped or the images are too
    small). MSE and SSIM are scored in gray, as EVREAL does; LPIPS in colour when both images
    are colour (as the LPIPS reference does), else in gray. `lpips_on` says which."""
    pred, ref = read_image(pred_path), read_image(ref_path)
    if pred.shape[:2] != ref.shape[:2]:
        raise EvaluationError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} but {ref_path} is {ref.shape[1]}x{ref.shape[0]} (WxH)")
    if min(ref.shape[:2]) < utils.SSIM_MIN_SIZE:
        raise EvaluationError(f"{pred_path}: {ref.shape[1]}x{ref.shape[0]} images are too small to score: SSIM's Gaussian "
                              f"window needs {utils.SSIM_MIN_SIZE} px a side")
    if use_lpips and min(ref.shape[:2]) < lpips.LPIPS_MIN_SIZE:
        print(f"note: {pred_path}: {ref.shape[1]}x{ref.shape[0]} images are too small for LPIPS (AlexNet needs "
              f"{lpips.LPIPS_MIN_SIZE} px a side); lpips is null", file=sys.stderr)
    use_lpips = use_lpips and min(ref.shape[:2]) >= lpips.LPIPS_MIN_SIZE
    scores = utils.score_frame(utils.gray_float(pred), utils.gray_float(ref), histeq, use_lpips=False)
    colour = pred.ndim == 3 and ref.ndim == 3 and histeq == "none"
    if use_lpips:
        load_lpips()
        as_float = (lambda image: image / 255.0) if colour else (lambda image: utils.histogram_equalize(utils.gray_float(image), histeq))
        scores["lpips"] = utils.lpips(as_float(pred), as_float(ref))
    return {"pred": pred_path, "ref": ref_path, "histeq": histeq, "lpips_on": ("rgb" if colour else "gray") if use_lpips else None,
            **scores}


def main(argv=None):
    """Exit status: 0 done, 2 bad input or flags, 1 a failure of the environment (disk full,
    folder not writable), 130 interrupted (Ctrl-C, SIGTERM, SIGHUP); -o is written whole or not
    at all."""
    command.prepare_command_line()
    options, _ = parse_given(get_parser(), sys.argv[1:] if argv is None else argv)
    read = options.pair or options.paths
    with command.exit_status((EvaluationError, EventDataError, UsageError), options.out_dir,
                             source=", ".join(read) if read else None):
        if options.pair:
            print(json.dumps(score_pair(*options.pair, options.histeq, not options.no_lpips)))
            return
        if not options.paths or not options.out_dir:
            raise EvaluationError("give one or more PATHs and -o OUT_DIR (or --pair PRED REF)")
        results = evaluate(options)
    print(markdown(*paper_table(results["configurations"])), end="")
    if options.aps_offset != 0:
        shift = "the measured offset" if options.aps_offset == "auto" else f"{options.aps_offset:g} ms"
        print(f"(reconstructed {shift} after the APS time stamps, --aps_offset: not EVREAL's rule)")
    print(f"tables, previews and frames in {options.out_dir}")
    if results["failed"]:  # the others' results are written; the exit status says not all are
        first = next(iter(results["failed"].items()))
        print(f"error: {len(results['failed'])} left out of the tables, as results.json's \"failed\" says; "
              f"{first[0]}: {first[1]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
