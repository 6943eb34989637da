"""
The `evinr` command, installed by pip: one subcommand per job, each the command line of the
module or script that does it (`evinr reconstruct` is `python train.py`, and so on).
"""

import os
import runpy
import sys

import command

VERSION = "0.3.0"
HERE = os.path.dirname(os.path.abspath(__file__))

# subcommand -> (the module or script that does it, what it does)
COMMANDS = {
    "reconstruct": ("train", "fit a recording and write its video (train.py's flags)"),
    "info": ("event_data", "one JSON line about a recording: evinr info PATH"),
    "convert": ("scripts/convert_{}.py", "convert a dataset (ijrr, hqf or ced) to the authors' layout"),
    "evaluate": ("scripts/evaluate.py", "score reconstructions against APS frames, EVREAL's protocol"),
    "benchmark": ("scripts/benchmark.py", "time the pipeline on a simulated recording"),
}
DATASETS = {"ijrr": "IJRR", "hqf": "HQF", "ced": "CED"}


def usage():
    lines = [f"  {name:12s} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(["usage: evinr [-h] [--version] COMMAND [ARGS]", "", "commands:", *lines, "",
                      "evinr COMMAND --help lists a command's flags."])


def fail(message):
    print(f"error: {message} (evinr --help lists the commands)", file=sys.stderr)
    sys.exit(2)


def run_script(relative, argv, program):
    """Run one of scripts/ as its command line, as `python scripts/NAME.py ARGS` would."""
    path = os.path.join(HERE, relative)
    if not os.path.isfile(path):
        fail(f"{relative}: not found beside {HERE}")
    if not __package__:  # a checkout: the script imports its helpers from its own folder
        sys.path.insert(0, os.path.dirname(path))
    sys.argv = [program, *argv]
    runpy.run_path(path, run_name="__main__")


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] == "--version":
        print(f"evinr {VERSION}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        fail(f"unknown command {name!r}")
    command.PROGRAM = f"evinr {name}"
    if name == "reconstruct":
        from train import main
        return main(rest)
    if name == "info":
        from event_data import main
        return main(rest)
    script = COMMANDS[name][0]
    if name == "convert":
        if not rest or rest[0] in ("-h", "--help"):
            print(f"usage: evinr convert {{{','.join(DATASETS)}}} --raw_data_dir DIR --output_data_dir DIR [...]\n\n"
                  "evinr convert DATASET --help lists the flags.")
            return
        if rest[0].lower() not in DATASETS:
            fail(f"evinr convert {rest[0]!r}: the dataset is one of {', '.join(DATASETS)}")
        command.PROGRAM = f"evinr convert {rest[0].lower()}"
        script, rest = script.format(DATASETS[rest[0].lower()]), rest[1:]
    run_script(script, rest, command.PROGRAM)
