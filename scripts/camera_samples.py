"""
Camera samples without APS frames (Prophesee RAW and DAT, AEDAT4, bags): fit each recording
with each configuration, judge the frames with a measure that needs no reference, and write a
preview to look at.

    python scripts/camera_samples.py path/to/evt2.raw path/to/sample.aedat4 -o OUT \\
        --compare "--preset authors" "--preset recommended"

The measure is utils.event_agreement: per frame, the correlation of the frame's gradient
magnitude with the count of the events around its time (from halfway to the frame before to
halfway to the frame after). Near 0: a flat or noisy frame; higher: the frame shows the
structure the events show. Printed and written to OUT/table.md, one row per (recording,
configuration): the median over frames, the frames' mean brightness and their spread (the 1st to
the 99th percentile of their pixel values), auto's C where it applies, and the fit's time.
OUT/NAME.png shows, at four times, the event count and each configuration's frame.
"""

import argparse
import os
import sys
import time

import numpy as np

import repo  # noqa: F401  (first: makes train.py's modules importable)
import train  # noqa: E402
import utils  # noqa: E402
import command  # noqa: E402
from config import UsageError, parse_config, split_configurations  # noqa: E402
from event_data import EventDataError, load_events  # noqa: E402


def judged(events, result):
    """{agreement, mean, spread}: the frames' median event agreement, mean and 1-99% spread (/255)."""
    scores = []
    for index, image in enumerate(result.frames):
        first, last = utils.agreement_events(result.times, events.t, index)
        scores.append(utils.event_agreement(image, events.x[first:last], events.y[first:last]))
    low, high = np.percentile(result.frames, [1, 99])
    return {"agreement": float(np.nanmedian(scores)), "mean": float(result.frames.mean()) / 255,
            "spread": float(high - low) / 255}


def count_image(events, times, index):
    """The event count around frame `index`, as a gray image: black where nothing fired, white at
    the 99th percentile of the counts that are not zero."""
    height, width = events.sensor
    first, last = utils.agreement_events(times, events.t, index)
    count = np.bincount(events.y[first:last].astype(np.int64) * width + events.x[first:last],
                        minlength=height * width).reshape(height, width).astype(np.float64)
    top = np.percentile(count[count > 0], 99) if (count > 0).any() else 1.0
    return utils.tone_map_to_uint8(np.clip(count / top, 0, 1))


def sample(path, configurations, out, extra):
    """Fit, judge and preview one recording; returns its table rows."""
    events, _ = load_events(path)
    name = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    rows, columns = [], []
    for label in configurations:
        began = time.perf_counter()
        result = train.reconstruct(events, parse_config([*label.split(), *extra]))
        seconds = time.perf_counter() - began
        rows.append({"recording": name, "configuration": label, **judged(events, result), "seconds": seconds,
                     "C": result.exposure[0] if result.exposure else None})
        columns.append((label, result))
        print(f"{name} {label}: agreement {rows[-1]['agreement']:.3f} ({seconds:.0f} s)", file=sys.stderr)
    times = columns[0][1].times
    picks = utils.preview_picks(len(times))
    preview = [("events", [count_image(events, times, index) for index in picks])]
    preview += [(label, [result.frames[index] for index in picks]) for label, result in columns]
    utils.write_preview(os.path.join(out, f"{name}.png"), times[picks], preview)
    return rows


def table(rows):
    lines = ["| recording | configuration | event agreement (median) | mean | spread (1-99%) | C | fit s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        found = f"{row['C']:.2f}" if row["C"] else "-"
        lines.append(f"| {row['recording']} | `{row['configuration']}` | {row['agreement']:.3f} | {row['mean']:.3f} | "
                     f"{row['spread']:.3f} | {found} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Exit status: 0 done, 2 bad input or flags, 1 the environment, 130 interrupted."""
    command.prepare_command_line()
    argv, configurations = split_configurations(sys.argv[1:] if argv is None else argv, "--compare")
    parser = argparse.ArgumentParser(description="Fit camera samples without APS frames; judge the frames "
                                                 "against their events; write previews.")
    parser.add_argument("paths", nargs="+", help="recordings (any format train.py reads)")
    parser.add_argument("-o", "--output_dir", required=True)
    parser.add_argument("--compare", metavar="FLAGS", help="configurations, each one quoted string of train.py "
                                                           "flags, last on the line (default: the recommended "
                                                           "preset); flags before it apply to every one")
    args, extra = parser.parse_known_args(argv)
    with command.exit_status((UsageError, EventDataError), args.output_dir, source=", ".join(args.paths)):
        os.makedirs(args.output_dir, exist_ok=True)
        rows = []
        for path in args.paths:
            rows += sample(path, configurations or ["--preset recommended"], args.output_dir, extra)
        text = table(rows)
        with open(os.path.join(args.output_dir, "table.md"), "w") as f:
            f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
