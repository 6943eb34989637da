"""
Score EvINR the way EVREAL scores event-to-video methods (docs/EVALUATION.md).

    python scripts/evaluate.py SEQUENCE -o OUT_DIR --dataset IJRR
    python scripts/evaluate.py DATASET_FOLDER -o OUT_DIR --dataset HQF --iters 500
    python scripts/evaluate.py SEQUENCE -o OUT_DIR --compare "default" "--align midpoint" "--loss autograd"
    python scripts/evaluate.py --pair PRED.png REF.png

A SEQUENCE is any recording train.py reads, with APS frames; a DATASET_FOLDER holds one sequence
per sub-folder. Every sequence is fitted by train.py (whose flags are accepted here and recorded)
over its evaluation interval from scripts/datasets.py, and the reconstructions at the APS time
stamps are scored against the APS frames:
  - time is re-zeroed to the earlier of the first APS frame and the first event;
  - frame 0 is never scored; a frame counts when its time lies in the interval and its
    reconstruction was made within 1 ms of it; non-finite scores are dropped;
  - a dataset's score is the mean over all its scored frames, not the mean of sequence means.
--dataset auto (the default) finds each sequence by name in the table and also applies that
dataset's train.py flags (sensor size, colour, contrast threshold); a sequence the table does not
know is scored whole; --dataset none scores every sequence whole, with no dataset flags.
A span longer than 2.5 s is fitted in consecutive 2 s windows (train.py --window, the length
the authors fit at once) unless --window is given; --window 0 fits the span in one piece.

Writes under OUT_DIR: results.json, per_frame.csv, sequences.{md,csv,json}, datasets.{md,csv,json},
table.{md,csv} (one row per configuration), previews/SEQUENCE.png, times/SEQUENCE.txt (the APS
times that were reconstructed) and runs/CONFIGURATION/SEQUENCE/ (train.py's folder: frames/, ...).
"""

import argparse
import csv
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass

# train.py and its modules live one folder up
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import train  # noqa: E402
import utils  # noqa: E402
from datasets import DATASETS  # noqa: E402
from event_data import EventDataError, detect_format, load_events  # noqa: E402

DEFAULT_WINDOW = 2.0       # seconds per window for a long span: what the authors fit at once
LONGEST_SINGLE_FIT = 2.5   # seconds; a longer span is fitted in DEFAULT_WINDOW windows
TIME_TOLERANCE = 1e-3      # EVREAL: a reconstruction stands for an APS frame within 1 ms of it
WHOLE_SEQUENCE = (0.0, math.inf)
METRICS = ("mse", "ssim", "lpips")
PREVIEW_ROWS = 4
TRAIN_OPTIONS = tuple(vars(train.get_parser().parse_args([])))
# train.py options that evaluate.py sets itself for every sequence
RESERVED = {"data_path": "-d/--data_path", "exp_name": "-n/--exp_name", "output_dir": "--output_dir",
            "t_start": "--t_start", "t_end": "--t_end", "frames_at": "--frames_at",
            "render_only": "--render_only", "overwrite": "--overwrite"}
# train.py options that do not change the reconstruction: left out of the method record
NOT_METHOD = set(RESERVED) | {"log_interval", "tensorboard", "no_video"}


class EvaluationError(Exception):
    """Bad input for the evaluation; the message is one line naming the sequence."""


class NothingToScore(EvaluationError):
    """No sequence has APS frames to score against (reproduce_tables.py skips such a dataset)."""


# -----------------------------------------------------------------------------
# command line


UNSET = object()  # marks the train.py options not given on a command line


def parse_given(parser, tokens, known_only=False):
    """Parse `tokens`; the namespace holds the train.py options only where they were given, so
    that flags can be stacked (defaults, then a dataset's, then the command line's)."""
    tokens, compare = train.split_configurations(tokens, "--compare")
    namespace = argparse.Namespace(**dict.fromkeys(TRAIN_OPTIONS, UNSET))
    if known_only:
        namespace, unknown = parser.parse_known_args(tokens, namespace=namespace)
    else:
        namespace, unknown = parser.parse_args(tokens, namespace=namespace), []
    for name in TRAIN_OPTIONS:
        if getattr(namespace, name) is UNSET:
            delattr(namespace, name)
    if compare is not None:
        if not compare:
            parser.error("--compare needs at least one configuration")
        namespace.compare = compare
    return namespace, unknown


def options_parser(description):
    """train.py's flags plus the evaluation options that evaluate.py and reproduce_tables.py share."""
    parser = argparse.ArgumentParser(description=description, parents=[train.get_parser()],
                                     conflict_handler="resolve", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out_dir", help="where tables, frames and previews go")
    parser.add_argument("--compare", nargs="+", metavar="FLAGS",
                        help='last on the line: several configurations in one table, each a quoted string of train.py '
                             'flags or "default", e.g. --compare "default" "--align midpoint" "--no_c2f"')
    parser.add_argument("--histeq", choices=utils.HISTEQ_MODES, default="none",
                        help="histogram equalisation of both images before scoring")
    parser.add_argument("--no_lpips", action="store_true", help="score MSE and SSIM only (no LPIPS weights needed)")
    return parser


def get_parser():
    parser = options_parser(__doc__)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="a sequence, or a folder of sequences")
    parser.add_argument("--dataset", default="auto", choices=["auto", *DATASETS, "none"],
                        help="whose evaluation intervals and train.py flags to use (auto: by sequence name)")
    parser.add_argument("--pair", nargs=2, metavar=("PRED", "REF"), help="score one image pair and print it as JSON")
    return parser


def check_reserved(given, where):
    for name in given:
        if name in RESERVED:
            raise EvaluationError(f"{where}{RESERVED[name]} is set by the evaluation for each sequence; leave it out")


def parse_train_flags(text):
    """{train option: value} of a --compare string."""
    parser = train.get_parser()
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
    if not options.compare:
        return [("default", common)]
    found = []
    for text in options.compare:
        label = " ".join(text.split())
        flags = {} if label in ("", "default") else parse_train_flags(text)
        found.append((label or "default", {**common, **flags}))
    labels = [label for label, _ in found]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"--compare: a configuration is given twice ({labels})")
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
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def evaluation_interval(name, dataset):
    """(dataset label, (start, end) in seconds after re-zeroing, or None where EVREAL does not
    score the sequence). 'other' is the label of sequences outside the table."""
    if dataset == "none":
        return "other", WHOLE_SEQUENCE
    if dataset == "auto":
        owners = [key for key, facts in DATASETS.items() if name in facts["sequences"]]
        if not owners:
            return "other", WHOLE_SEQUENCE
        dataset = owners[0]
    return dataset, DATASETS[dataset]["sequences"].get(name, WHOLE_SEQUENCE)


def dataset_flags(dataset):
    """The train.py flags the authors' README gives for a dataset's sensor."""
    if dataset not in DATASETS:
        return {}
    facts = DATASETS[dataset]
    return {"H": facts["sensor"][0], "W": facts["sensor"][1], "color_event": facts["color"],
            "event_thresh": facts["event_thresh"]}


def frames_in_interval(frame_t, t_first_event, interval):
    """EVREAL's choice of APS frames: time is re-zeroed to the earlier of the first frame and the
    first event, frame 0 is never scored. Returns (t_zero, indices of the frames in the interval)."""
    t_zero = min(float(frame_t[0]), float(t_first_event))
    relative = np.asarray(frame_t, dtype=np.float64) - t_zero
    index = np.flatnonzero((relative >= interval[0]) & (relative <= interval[1]))
    return t_zero, index[index >= 1]


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
    frame_t: np.ndarray      # their times, recording clock
    references: np.ndarray   # their images, gray float [n, H, W] in [0, 1]
    use_lpips: bool


def plan_sequence(path, dataset_choice, common, use_lpips):
    """(Sequence, None), or (None, why the sequence is skipped)."""
    name = sequence_name(path)
    dataset, interval = evaluation_interval(name, dataset_choice)
    if interval is None:
        return None, f"{name}: not in EVREAL's {dataset} evaluation set; skipped (--dataset none scores it whole)"
    flags = {**dataset_flags(dataset), **common}
    try:
        events, sensor = load_events(path, sensor=(flags.get("H"), flags.get("W")))
    except EventDataError as error:
        from_table = dataset in DATASETS and not {"H", "W"} & set(common)
        hint = f" (--H/--W are {dataset}'s sensor in scripts/datasets.py; give --H and --W to override)" if from_table else ""
        raise EvaluationError(f"{name}: {error}{hint}") from None
    if events.frames is None or len(events.frames) == 0:
        return None, f"{name}: no APS frames to score against; skipped"
    t_first, t_last = float(events.t[0]), float(events.t[-1])
    t_zero, in_interval = frames_in_interval(events.frame_t, t_first, interval)
    if in_interval.size == 0:
        relative = events.frame_t - t_zero
        raise EvaluationError(f"{name}: none of its {len(relative)} APS frames (at {relative[0]:.3f}-{relative[-1]:.3f} s "
                              f"after re-zeroing) lies in the {dataset} evaluation interval {interval[0]:g}-{interval[1]:g} s")
    # fit the interval, clipped to the events (nothing can be reconstructed where there are none)
    t_start = max(t_zero + interval[0] - t_first, 0.0)
    t_end = min(t_zero + interval[1], t_last) - t_first
    if not t_end > t_start:
        raise EvaluationError(f"{name}: no events in the evaluation interval {interval[0]:g}-{interval[1]:g} s")
    [(begin, end)] = train.fit_windows(events, argparse.Namespace(t_start=t_start, t_end=t_end, window=None))
    inside = (events.frame_t[in_interval] >= begin) & (events.frame_t[in_interval] <= end)
    chosen = in_interval[inside]
    if chosen.size == 0:
        raise EvaluationError(f"{name}: the events end before or begin after every APS frame of the evaluation interval")
    if chosen.size < in_interval.size:
        print(f"note: {name}: {in_interval.size - chosen.size} APS frames of the interval lie outside the events "
              f"and cannot be reconstructed; they are not scored", file=sys.stderr)
    frames = events.frames[chosen]
    references = np.stack([utils.gray_float(frame) for frame in frames])
    lpips_fits = min(sensor) >= utils.LPIPS_MIN_SIZE
    if use_lpips and not lpips_fits:
        print(f"note: {name}: {sensor[1]}x{sensor[0]} frames are too small for LPIPS (AlexNet needs "
              f"{utils.LPIPS_MIN_SIZE} px a side); LPIPS not scored", file=sys.stderr)
    return Sequence(name=name, path=path, dataset=dataset, interval=interval, t_zero=t_zero, t_start=t_start,
                    t_end=t_end, span=(begin, end), aps_index=chosen, frame_t=events.frame_t[chosen].copy(),
                    references=references, use_lpips=use_lpips and lpips_fits), None


# -----------------------------------------------------------------------------
# fitting and scoring


def slug(label):
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") or "default"


def train_arguments(sequence, overrides, run_dir, times_path):
    """train.py's arguments for one sequence: its defaults, the dataset's flags, the
    configuration's flags, then what the evaluation fixes."""
    args = train.get_parser().parse_args([])
    vars(args).update({**dataset_flags(sequence.dataset), **overrides})
    args.data_path, args.exp_name, args.output_dir = sequence.path, sequence.name, run_dir
    args.t_start, args.t_end = sequence.t_start, sequence.t_end
    args.frames_at, args.overwrite, args.no_video = times_path, True, True
    if args.window is None and sequence.span[1] - sequence.span[0] > LONGEST_SINGLE_FIT:
        args.window = DEFAULT_WINDOW
    return args


def reconstruct(sequence, args):
    """Fit with train.py; returns (experiment folder, frame paths, their times, wall seconds)."""
    began = time.perf_counter()
    folder = train.run(args)
    fit_seconds = time.perf_counter() - began
    times = np.loadtxt(os.path.join(folder, "timestamps.txt"), ndmin=2)[:, 1]
    frame_paths = [os.path.join(folder, "frames", name) for name in sorted(os.listdir(os.path.join(folder, "frames")))]
    if len(frame_paths) != len(sequence.aps_index) or len(times) != len(frame_paths):
        raise EvaluationError(f"{sequence.name}: train.py wrote {len(frame_paths)} frames for {len(sequence.aps_index)} APS times")
    return folder, frame_paths, times, fit_seconds


def score_sequence(sequence, frame_paths, times, histeq):
    """Per-frame scores of the reconstructions made within TIME_TOLERANCE of their APS frame."""
    rows = []
    for k, index in enumerate(sequence.aps_index):
        if abs(times[k] - sequence.frame_t[k]) > TIME_TOLERANCE:
            continue
        image = utils.read_gray(frame_paths[k])
        reference = sequence.references[k]
        if image.shape != reference.shape:
            raise EvaluationError(f"{sequence.name}: reconstruction is {image.shape[1]}x{image.shape[0]} but APS frame "
                                  f"{index} is {reference.shape[1]}x{reference.shape[0]} (WxH)")
        scores = utils.score_frame(image, reference, histeq, use_lpips=sequence.use_lpips)
        rows.append({"aps_index": int(index), "t": float(sequence.frame_t[k] - sequence.t_zero),
                     "t_reconstruction": float(times[k] - sequence.t_zero), **scores})
    return rows


def frame_weighted(rows):
    """Mean of each metric over all the frames in `rows` (non-finite and missing values dropped)."""
    summary = {}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows if row[metric] is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        summary[metric] = float(values.mean()) if values.size else None
    summary["n_frames"] = len(rows)
    return summary


def summarise(fits):
    """{sequences: {name: ...}, datasets: {name: ...}} of one configuration, from its fits
    {name: {dataset, rows, fit_seconds, seconds_fitted, ...}}."""
    sequences = {}
    for name, fit in fits.items():
        sequences[name] = {**frame_weighted(fit["rows"]), "fit_seconds": fit["fit_seconds"],
                           "seconds_fitted": fit["seconds_fitted"],
                           "fit_seconds_per_second": fit["fit_seconds"] / fit["seconds_fitted"],
                           **{key: fit[key] for key in ("dataset", "interval", "window", "method", "timings", "run")}}
    datasets = {}
    for dataset in dict.fromkeys(fit["dataset"] for fit in fits.values()):
        members = [fit for fit in fits.values() if fit["dataset"] == dataset]
        fit_seconds = sum(fit["fit_seconds"] for fit in members)
        seconds = sum(fit["seconds_fitted"] for fit in members)
        datasets[dataset] = {**frame_weighted([row for fit in members for row in fit["rows"]]),
                             "fit_seconds": fit_seconds, "seconds_fitted": seconds,
                             "fit_seconds_per_second": fit_seconds / seconds, "n_sequences": len(members)}
    return {"sequences": sequences, "datasets": datasets}


def load_lpips():
    try:
        utils.lpips_model()
    except utils.LPIPSWeightsUnavailable as error:
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
    header = ["configuration"] + [f"{name} {HEADINGS[m]}" for name in datasets for m in METRICS] + ["fit s"]
    rows = []
    for label, result in configurations_results.items():
        cells = [label]
        for name in datasets:
            summary = result["datasets"].get(name, {})
            cells += [number(summary.get(m), DIGITS[m]) for m in METRICS]
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
    columns = ["n_frames", *METRICS, "fit_seconds", "seconds_fitted", "fit_seconds_per_second"]
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
        writer = csv.DictWriter(f, ["configuration", "dataset", "sequence", "aps_index", "t", "t_reconstruction", *METRICS])
        writer.writeheader()
        writer.writerows(per_frame)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


def write_preview(path, sequence, picks, images):
    """APS frames beside each configuration's reconstruction, at a few of the scored times.
    `images`: {label: [uint8 image at each pick]}."""
    rows = []
    for k, pick in enumerate(picks):
        row = [(images[label][k], label[:28]) for label in images]
        row.append((utils.tone_map_to_uint8(sequence.references[pick]), f"APS {sequence.frame_t[pick] - sequence.t_zero:.2f}s"))
        rows.append(row)
    utils.make_preview(path, rows)


# -----------------------------------------------------------------------------
# the evaluation


def evaluate(options):
    """Evaluate every sequence under options.paths with every configuration; writes the outputs
    under options.out_dir and returns results.json's content."""
    configs = configurations(options)
    use_lpips = not options.no_lpips
    common = configs[0][1]  # the sensor flags of the first configuration choose how frames are read
    plans, skipped = [], []
    for path in find_sequences(options.paths):
        sequence, why = plan_sequence(path, options.dataset, common, use_lpips)
        if sequence is None:
            skipped.append(why)
            print(f"note: {why}", file=sys.stderr)
        else:
            plans.append(sequence)
    if not plans:
        raise NothingToScore("nothing to score: " + "; ".join(skipped))
    if any(sequence.use_lpips for sequence in plans):
        load_lpips()  # before any fitting: missing weights must not cost a fit

    os.makedirs(os.path.join(options.out_dir, "times"), exist_ok=True)
    times_paths = {}
    for sequence in plans:
        times_paths[sequence.name] = os.path.join(options.out_dir, "times", f"{sequence.name}.txt")
        np.savetxt(times_paths[sequence.name], sequence.frame_t, fmt="%.17g")  # exact: train.py renders exactly these

    picks = {s.name: np.unique(np.linspace(0, len(s.aps_index) - 1, min(PREVIEW_ROWS, len(s.aps_index))).round().astype(int))
             for s in plans}
    preview_images = {s.name: {} for s in plans}
    results = {"configurations": {}}
    per_frame = []
    for label, overrides in configs:
        fits = {}
        for sequence in plans:
            print(f"{label}: {sequence.name} ({sequence.dataset}, {len(sequence.aps_index)} APS frames, "
                  f"{sequence.span[1] - sequence.span[0]:.2f} s)", file=sys.stderr)
            args = train_arguments(sequence, overrides, os.path.join(options.out_dir, "runs", slug(label)),
                                   times_paths[sequence.name])
            try:
                folder, frame_paths, times, fit_seconds = reconstruct(sequence, args)
            except (EventDataError, train.UsageError) as error:
                raise EvaluationError(f"{sequence.name}: {error}") from None
            rows = score_sequence(sequence, frame_paths, times, options.histeq)
            with open(os.path.join(folder, "config.json")) as f:
                timings = json.load(f)["timings"]
            fits[sequence.name] = {"dataset": sequence.dataset, "rows": rows, "fit_seconds": fit_seconds,
                                   "seconds_fitted": sequence.span[1] - sequence.span[0],
                                   "interval": [bound if math.isfinite(bound) else None for bound in sequence.interval],  # None: no end
                                   "window": args.window,
                                   "method": {k: v for k, v in vars(args).items() if k not in NOT_METHOD},
                                   "timings": timings, "run": folder}
            per_frame += [{"configuration": label, "dataset": sequence.dataset, "sequence": sequence.name, **row} for row in rows]
            preview_images[sequence.name][label] = [utils.tone_map_to_uint8(utils.read_gray(frame_paths[k]))
                                                    for k in picks[sequence.name]]
        results["configurations"][label] = {"flags": overrides, **summarise(fits)}

    first = next(iter(results["configurations"].values()))
    results = {"sequences": first["sequences"], "datasets": first["datasets"], **results,
               "evaluation": {"dataset": options.dataset, "histeq": options.histeq, "lpips": use_lpips,
                              "time_tolerance_s": TIME_TOLERANCE, "default_window_s": DEFAULT_WINDOW,
                              "longest_single_fit_s": LONGEST_SINGLE_FIT},
               "skipped": skipped}
    os.makedirs(os.path.join(options.out_dir, "previews"), exist_ok=True)
    for sequence in plans:
        write_preview(os.path.join(options.out_dir, "previews", f"{sequence.name}.png"), sequence,
                      picks[sequence.name], preview_images[sequence.name])
    write_outputs(options.out_dir, results, per_frame)
    return results


def score_pair(pred_path, ref_path, histeq, use_lpips):
    """MSE, SSIM and LPIPS of one image pair (LPIPS None when skipped or the images are too small)."""
    for path in (pred_path, ref_path):
        if not os.path.isfile(path):
            raise EvaluationError(f"{path}: no such file")
    try:
        pred, ref = utils.read_gray(pred_path), utils.read_gray(ref_path)
    except (OSError, ValueError) as error:
        raise EvaluationError(str(error)) from None
    if pred.shape != ref.shape:
        raise EvaluationError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} but {ref_path} is {ref.shape[1]}x{ref.shape[0]} (WxH)")
    use_lpips = use_lpips and min(ref.shape) >= utils.LPIPS_MIN_SIZE
    if use_lpips:
        load_lpips()
    return {"pred": pred_path, "ref": ref_path, "histeq": histeq, **utils.score_frame(pred, ref, histeq, use_lpips)}


def main(argv=None):
    options, _ = parse_given(get_parser(), sys.argv[1:] if argv is None else argv)
    try:
        if options.pair:
            print(json.dumps(score_pair(*options.pair, options.histeq, not options.no_lpips)))
            return
        if not options.paths or not options.out_dir:
            raise EvaluationError("give one or more PATHs and -o OUT_DIR (or --pair PRED REF)")
        results = evaluate(options)
    except (EvaluationError, EventDataError, train.UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no tables were written", file=sys.stderr)
        sys.exit(130)
    print(markdown(*paper_table(results["configurations"])), end="")
    print(f"tables, previews and frames in {options.out_dir}")


if __name__ == "__main__":
    main()
