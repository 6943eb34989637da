"""
Reproduce the paper's tables: every dataset found under a data root, scored with the EVREAL protocol.

    python scripts/reproduce_tables.py --data_root DATA -o OUT
    python scripts/reproduce_tables.py --data_root DATA -o OUT --compare "default" "--align midpoint"

Without --compare, two configurations are scored: "--preset authors" (their settings, with each
dataset's contrast threshold from the table: their tables) and "--preset recommended" (the
default: the contrast threshold chosen per sequence, the cosine learning-rate schedule).

DATA holds one folder per dataset, named as in scripts/datasets.py (IJRR, HQF, CED, MVSEC, AED),
each holding converted sequence folders. Every dataset goes through scripts/evaluate.py with its
evaluation intervals and the authors' train.py flags for its sensor (both from the dataset table);
any other evaluate.py or train.py flag given here applies to all of them. OUT/DATASET/ receives
evaluate.py's outputs, and OUT/table.{md,csv,json} the paper-style table: one row per
configuration, MSE, SSIM and LPIPS per dataset.
"""

import argparse
import os
import sys

import evaluate
import command
from datasets import DATASETS
from event_data import EventDataError
from config import UsageError

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
PRESET_CONFIGURATIONS = ("--preset authors", "--preset recommended")
SOURCE_KINDS = {"": "text folder", ".zip": "zip", ".bag": "ROS bag", ".h5": "HDF5", ".npy": "[N, 4] events.npy"}


def get_parser():
    parser = evaluate.options_parser(__doc__)
    parser.add_argument("--data_root", required=True, help="folder holding one folder of converted sequences per dataset")
    return parser


def present_datasets(data_root):
    """[(dataset, folder)] of the table's datasets that have a non-empty folder under data_root."""
    found = []
    for name in DATASETS:
        folder = os.path.join(data_root, name)
        if os.path.isdir(folder) and any(not entry.startswith(".") and os.path.isdir(os.path.join(folder, entry))
                                         for entry in os.listdir(folder)):
            found.append((name, folder))
    return found


def download_instructions(data_root):
    """What to fetch and which converter to run, for each dataset of the table."""
    lines = [f"no converted datasets under {data_root}. For each dataset, download its recordings (the links are in "
             "the authors' README: Data Preparation, and AED Dataset), convert them, and run this again:"]
    for name, facts in DATASETS.items():
        scored = [sequence for sequence, interval in facts["sequences"].items() if interval is not None]
        if scored:
            what = f"the sequences {', '.join(scored)}"
        elif facts["sequences"]:
            what = "no sequence yet: the table gives none of them an evaluation interval, so it is skipped"
        else:
            what = "its sequences, each scored whole"
        kinds = " or ".join(SOURCE_KINDS.get(kind, kind) for kind in facts["sources"])
        converter = f"convert_{name}.py"
        if os.path.isfile(os.path.join(SCRIPTS, converter)):
            step = f"python scripts/{converter} --raw_data_dir DOWNLOADS --output_data_dir {os.path.join(data_root, name)}"
        elif facts["sources"] == (".npy",):
            step = f"no conversion: put each sequence's events.npy in its own folder under {os.path.join(data_root, name)}"
        else:
            step = f"no converter yet: put one folder per converted sequence under {os.path.join(data_root, name)}"
        lines.append(f"  {name}: {what} ({kinds}); then {step}")
    return "\n".join(lines)


def reproduce(options):
    """Evaluate every dataset present; returns {configuration: {"datasets": {...}}} merged over
    the datasets, or None when there is no data."""
    datasets = present_datasets(options.data_root)
    if not datasets:
        return None
    merged = {}
    for name, folder in datasets:
        print(f"== {name}: {folder}", file=sys.stderr)
        dataset_options = argparse.Namespace(**{**vars(options), "paths": [folder], "dataset": name,
                                                "out_dir": os.path.join(options.out_dir, name)})
        try:
            results = evaluate.evaluate(dataset_options)
        except evaluate.NothingToScore as error:
            print(f"note: {name}: skipped, {error}", file=sys.stderr)
            continue
        for label, result in results["configurations"].items():
            merged.setdefault(label, {"flags": result["flags"], "datasets": {}})["datasets"].update(result["datasets"])
    if not merged:
        raise evaluate.EvaluationError(f"{options.data_root}: no dataset has APS frames to score against")
    return merged


def main(argv=None):
    """Exit status as evaluate.py's: 0 done, 2 bad input (no data included), 1 the environment,
    130 interrupted."""
    command.prepare_command_line()
    options, _ = evaluate.parse_given(get_parser(), sys.argv[1:] if argv is None else argv)
    with command.exit_status((evaluate.EvaluationError, EventDataError, UsageError), options.out_dir,
                             interrupted="interrupted: no table was written", source=options.data_root):
        if not options.out_dir:
            raise evaluate.EvaluationError("give -o OUT_DIR")
        if not options.compare:
            options.compare = list(PRESET_CONFIGURATIONS)
        merged = reproduce(options)
        if merged is not None:
            header, rows = evaluate.paper_table(merged)
            evaluate.write_table(os.path.join(options.out_dir, "table"), header, rows, merged)
    if merged is None:
        print(download_instructions(options.data_root), file=sys.stderr)
        sys.exit(2)
    print(evaluate.markdown(header, rows), end="")
    print(f"written to {os.path.join(options.out_dir, 'table.md')} (and .csv, .json)")


if __name__ == "__main__":
    main()
