"""
The quality study (docs/threshold.md): simulated sequences that nobody tuned to, with known
thresholds, scored against their APS frames.

    python scripts/threshold_study.py --data FAMILY_DIR -o OUT --configurations authors recommended
    python scripts/threshold_study.py --data FAMILY_DIR -o OUT --split tune     # the tuning half only
    python scripts/threshold_study.py --data FAMILY_DIR -o OUT --split tune --tune_auto \\
        --means 0.18 0.22 --spans 1.5 2 --floors 0.15 0.2 --caps 0.5 1   # auto's targets and bounds,
                                                                      # on the saved recommended fits
    python scripts/threshold_study.py --data FAMILY_DIR -o OUT --split tune \\
        --configurations "hot:--hot_pixels auto"                         # any flags of your own
    python scripts/threshold_study.py --data FAMILY_DIR -o OUT --iterations 250 500 1000 2000 5000 \\
        --configurations recommended authors --sequences rocket-fast brick-slow

--family camera (the default) is 22 sequences as real cameras see them (the CAMERA table below);
--family ideal is the first study's 14, whose APS frames come from a linear camera metered to 18%
grey (--camera grey) or on its brightest pixel (--camera peak). The odd rows of a family are the
tuning half (what the defaults are set on), the even rows the held-out half. Sequences are
written once under --data (the authors' layout: events.npy, images/) and reused; a --data folder
holds one family.

Every configuration is fitted to every sequence with train.reconstruct, rendered at the APS
times and scored with utils.score_reconstruction (EVREAL's rules: the last frame is not scored).
Results are kept in OUT/results.jsonl, one line per (sequence, configuration, iterations), so an
interrupted study goes on where it stopped; the authors' and the recommended fits are kept in
OUT/fits/. Printed and written to OUT/: table.md (every sequence: the authors' settings, the
default, auto, each fixed C and the best of them, with the targets checked on the held-out half)
and, with --iterations, quality.png (SSIM and LPIPS against iterations) and quality.md.
"""

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

import repo  # noqa: F401  (first: makes train.py's modules importable)
from config import parse_config  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from event_data import load_events  # noqa: E402
from simulate import (METERED_GREY, image_texture, moving_object, moving_texture, sensor_noise, simulate_events,  # noqa: E402
                      textured_image, with_contrast, write_sequence)

SENSOR = (90, 120)   # (H, W)
DURATION = 1.0       # seconds
APS_RATE = 25.0      # frames per second


@dataclasses.dataclass(frozen=True)
class Sequence:
    """One simulated sequence of a family: the scene, its motion, the sensor and the APS camera."""
    name: str
    texture: str             # a scikit-image photograph, or "synthetic": simulate.textured_image of the seed
    path: str                # "pan", "circle", or "object": a still camera, `background` crossed by a disk of `texture`
    speed: float             # pixels per second
    threshold: float         # the true contrast threshold C
    spread: float = 0.0      # per-pixel spread of C (relative standard deviation)
    noise: float = 0.0       # background-activity noise events per pixel and second
    hot: int = 0             # hot pixels, each firing HOT_RATE positive events a second
    refractory: float = 0.0  # seconds
    seed: int = 0
    grey: float = None       # the APS camera's metered mean (None: the study's --camera)
    gain: float = 1.0        # the scene's log contrast, scaled (2: a high-contrast scene)
    background: str = None   # path "object": the still scene's photograph
    size: tuple = SENSOR     # (H, W)
    duration: float = DURATION
    aps_rate: float = APS_RATE


HOT_RATE = 200.0  # events per second of a hot pixel


# The first family ("ideal"): 14 sequences of 120 x 90 pixels and 1 s, photographs and synthetic
# textures panned or circled at 30-250 px/s, thresholds 0.1-0.5, some with per-pixel threshold
# spread, noise events, hot pixels or a refractory period; APS frames from the --camera.
IDEAL = [Sequence(*row) for row in [
    ("camera-pan", "camera", "pan", 40, 0.20, 0.0, 0.0, 0, 0.0, 1),
    ("coffee-pan", "coffee", "pan", 30, 0.15, 0.0, 0.0, 0, 0.0, 2),
    ("astronaut-pan", "astronaut", "pan", 50, 0.30, 0.0, 0.0, 0, 0.0, 3),
    ("chelsea-spread", "chelsea", "pan", 40, 0.10, 0.10, 0.0, 0, 0.0, 4),
    ("coins-fast", "coins", "pan", 80, 0.25, 0.0, 0.0, 0, 0.0, 5),
    ("rocket-fast", "rocket", "pan", 120, 0.40, 0.0, 0.0, 0, 0.0, 6),
    ("synthetic-high-c", "synthetic", "pan", 250, 0.50, 0.0, 0.0, 0, 0.0, 7),
    ("synthetic-noisy", "synthetic", "pan", 60, 0.20, 0.0, 0.5, 0, 0.0, 8),
    ("brick-spread", "brick", "pan", 40, 0.20, 0.20, 0.0, 0, 0.0, 9),
    ("grass-noisy", "grass", "pan", 60, 0.35, 0.0, 1.0, 5, 0.0, 10),
    ("gravel-refractory", "gravel", "pan", 50, 0.15, 0.0, 0.0, 0, 0.001, 11),
    ("moon-mixed", "moon", "pan", 150, 0.30, 0.15, 0.2, 0, 0.0, 12),
    ("camera-circle", "camera", "circle", 60, 0.45, 0.0, 0.0, 0, 0.0, 13),
    ("coffee-circle", "coffee", "circle", 50, 0.25, 0.10, 0.1, 3, 0.0005, 14),
]]

# The camera family ("camera"): 22 sequences as real cameras see them. Every sequence has noise
# events, most a per-pixel spread of C and a refractory period, some hot pixels; the APS camera is
# metered per sequence to a mean of 0.08-0.35 (DAVIS240 and DAVIS346 frames average about
# 0.2-0.3; 0.08-0.12 is a dark scene); some scenes have 1.5-2.5 times a photograph's log contrast
# (their bright parts clip in the APS frames); some are a still camera over a still scene that
# one object crosses; two are Prophesee-like, 320 x 240 for 0.25 s at a high event rate, with
# APS frames at 100 Hz. Consecutive rows are pairs of alike sequences, so each half has one of each.
CAMERA = [
    Sequence("street-object", "rocket", "object", 60, 0.25, 0.1, 0.3, 2, 0.0005, 21, grey=0.30, background="coffee"),
    Sequence("office-object", "synthetic", "object", 45, 0.20, 0.1, 0.3, 3, 0.0005, 22, grey=0.25, background="astronaut"),
    Sequence("camera-high-contrast", "camera", "pan", 40, 0.30, 0.1, 0.5, 0, 0.0, 23, grey=0.20, gain=2.0),
    Sequence("coffee-high-contrast", "coffee", "pan", 35, 0.40, 0.1, 0.3, 2, 0.0005, 24, grey=0.25, gain=2.5),
    Sequence("synthetic-high-contrast", "synthetic", "circle", 60, 0.30, 0.0, 0.3, 0, 0.001, 25, grey=0.22, gain=2.0),
    Sequence("astronaut-high-contrast", "astronaut", "circle", 50, 0.35, 0.15, 0.2, 0, 0.0, 26, grey=0.28, gain=1.5),
    Sequence("chelsea-dark", "chelsea", "pan", 40, 0.20, 0.15, 1.0, 0, 0.0005, 27, grey=0.08),
    Sequence("coins-dark", "coins", "pan", 50, 0.15, 0.1, 0.5, 5, 0.0, 28, grey=0.10),
    Sequence("grass-faint", "grass", "pan", 60, 0.20, 0.1, 0.3, 0, 0.0005, 29, grey=0.25, gain=0.5),
    Sequence("moon-faint", "moon", "pan", 80, 0.15, 0.0, 0.2, 2, 0.0, 30, grey=0.12, gain=0.7),
    Sequence("astronaut-davis", "astronaut", "pan", 50, 0.20, 0.1, 0.2, 0, 0.001, 31, grey=0.30),
    Sequence("coffee-davis", "coffee", "circle", 50, 0.25, 0.15, 0.2, 2, 0.0005, 32, grey=0.22),
    Sequence("rocket-fast", "rocket", "pan", 200, 0.30, 0.1, 0.3, 0, 0.0005, 33, grey=0.25),
    Sequence("camera-fast", "camera", "circle", 150, 0.35, 0.1, 0.3, 0, 0.0, 34, grey=0.30),
    Sequence("brick-slow", "brick", "pan", 15, 0.15, 0.1, 0.3, 0, 0.0, 35, grey=0.20),
    Sequence("gravel-slow", "gravel", "pan", 20, 0.20, 0.2, 0.2, 0, 0.001, 36, grey=0.30),
    Sequence("camera-hot", "camera", "pan", 40, 0.20, 0.1, 0.2, 30, 0.0, 37, grey=0.25),
    Sequence("coffee-noisy", "coffee", "pan", 40, 0.25, 0.1, 3.0, 5, 0.0, 38, grey=0.22),
    Sequence("synthetic-vga", "synthetic", "pan", 400, 0.15, 0.1, 2.0, 20, 0.0002, 39, grey=0.25,
             size=(240, 320), duration=0.25, aps_rate=100.0),
    Sequence("astronaut-vga", "astronaut", "circle", 300, 0.20, 0.1, 1.0, 10, 0.0002, 40, grey=0.20,
             size=(240, 320), duration=0.25, aps_rate=100.0),
    Sequence("coins-object", "coins", "object", 40, 0.25, 0.1, 0.3, 0, 0.0005, 41, grey=0.20, background="brick"),
    Sequence("chelsea-object", "astronaut", "object", 50, 0.30, 0.1, 0.5, 2, 0.0, 42, grey=0.35, background="chelsea"),
]

# The second camera family ("camera2"): a second draw of the camera family's kinds, in the same
# order and ranges, with other photographs (among them scikit-image's motorcycle, page, text,
# cell, clock, retina, IHC and Hubble images), seeds and settings. It was added after the first
# family's held-out half had shown high-contrast scenes failing, as a test of the defaults on
# sequences no choice has seen; its tuning half then adds to the first's.
CAMERA2 = [
    Sequence("motorcycle-object", "coffee", "object", 55, 0.20, 0.1, 0.3, 2, 0.0005, 51, grey=0.25, background="motorcycle_left"),
    Sequence("page-object", "rocket", "object", 40, 0.30, 0.1, 0.4, 0, 0.0005, 52, grey=0.30, background="page"),
    Sequence("motorcycle-high-contrast", "motorcycle_left", "pan", 45, 0.35, 0.1, 0.3, 0, 0.0005, 53, grey=0.22, gain=2.0),
    Sequence("chelsea-high-contrast", "chelsea", "pan", 40, 0.40, 0.1, 0.3, 2, 0.0, 54, grey=0.25, gain=2.5),
    Sequence("hubble-high-contrast", "hubble_deep_field", "circle", 55, 0.30, 0.1, 0.2, 0, 0.001, 55, grey=0.15, gain=1.5),
    Sequence("clock-high-contrast", "clock_motion", "circle", 50, 0.45, 0.15, 0.3, 0, 0.0, 56, grey=0.28, gain=2.0),
    Sequence("brick-dark", "brick", "pan", 45, 0.20, 0.1, 0.8, 0, 0.0005, 57, grey=0.09),
    Sequence("text-dark", "text", "pan", 35, 0.15, 0.15, 0.6, 3, 0.0, 58, grey=0.10),
    Sequence("ihc-faint", "ihc", "pan", 70, 0.20, 0.1, 0.3, 0, 0.0005, 59, grey=0.22, gain=0.6),
    Sequence("cell-faint", "cell", "pan", 50, 0.15, 0.0, 0.2, 2, 0.0, 60, grey=0.15, gain=0.7),
    Sequence("motorcycle-davis", "motorcycle_left", "circle", 45, 0.25, 0.1, 0.2, 0, 0.001, 61, grey=0.28),
    Sequence("gravel-davis", "gravel", "pan", 55, 0.20, 0.15, 0.2, 2, 0.0005, 62, grey=0.24),
    Sequence("page-fast", "page", "pan", 180, 0.35, 0.1, 0.3, 0, 0.0005, 63, grey=0.30),
    Sequence("chelsea-fast", "chelsea", "circle", 160, 0.30, 0.1, 0.3, 0, 0.0, 64, grey=0.25),
    Sequence("motorcycle-slow", "motorcycle_left", "pan", 18, 0.20, 0.15, 0.3, 0, 0.0, 65, grey=0.25),
    Sequence("coins-slow", "coins", "pan", 15, 0.15, 0.1, 0.2, 0, 0.001, 66, grey=0.22),
    Sequence("astronaut-hot", "astronaut", "pan", 45, 0.25, 0.1, 0.2, 25, 0.0, 67, grey=0.25),
    Sequence("retina-hot", "retina", "circle", 40, 0.20, 0.1, 0.3, 30, 0.0005, 68, grey=0.20),
    Sequence("brick-noisy", "brick", "pan", 45, 0.20, 0.1, 2.5, 5, 0.0, 69, grey=0.25),
    Sequence("motorcycle-noisy", "motorcycle_left", "circle", 40, 0.30, 0.1, 3.0, 3, 0.0005, 70, grey=0.22),
    Sequence("motorcycle-vga", "motorcycle_left", "pan", 350, 0.20, 0.1, 1.5, 15, 0.0002, 71, grey=0.22,
             size=(240, 320), duration=0.25, aps_rate=100.0),
    Sequence("coffee-vga", "coffee", "circle", 300, 0.15, 0.1, 2.0, 20, 0.0002, 72, grey=0.25,
             size=(240, 320), duration=0.25, aps_rate=100.0),
]
FAMILIES = {"ideal": IDEAL, "camera": CAMERA, "camera2": CAMERA2}


def splits(family):
    """The tuning half (the odd rows: what the defaults are set on) and the held-out half."""
    return {"tune": family[0::2], "held-out": family[1::2]}


FIXED = (0.1, 0.2, 0.3, 0.5)  # and 1.0: the authors'
CONFIGURATIONS = {"authors": ["--preset", "authors"], "recommended": ["--preset", "recommended"],
                  "auto": ["--preset", "authors", "--event_thresh", "auto"],
                  **{f"C={value:g}": ["--preset", "authors", "--event_thresh", f"{value:g}"] for value in FIXED}}


def flags_of(label):
    """The train.py flags of a configuration: a named one, or NAME:FLAGS."""
    return CONFIGURATIONS[label] if label in CONFIGURATIONS else label.split(":", 1)[1].split()


def configuration(label):
    if label not in CONFIGURATIONS and ":" not in label:
        raise argparse.ArgumentTypeError(f"{label!r}: not one of {', '.join(CONFIGURATIONS)}, nor NAME:FLAGS")
    return label


CAMERAS = {"grey": METERED_GREY, "peak": None}  # simulate.aps_frames' metering of the APS frames


def sequence_video(spec):
    """render(times) -> log intensity [len(times), H, W] of the sequence's scene and motion."""
    height, width = spec.size
    photograph = lambda name: with_contrast(image_texture(name, height, width), spec.gain)
    texture = None if spec.texture == "synthetic" else photograph(spec.texture)
    if spec.path == "object":
        carried = with_contrast(textured_image(2 * height, 2 * width, spec.seed), spec.gain) if texture is None else texture
        return moving_object(photograph(spec.background)[:height, :width], carried, spec.speed)
    if texture is None and spec.gain != 1.0:
        texture = with_contrast(textured_image(2 * height, 2 * width, spec.seed), spec.gain)
    return moving_texture(height, width, spec.duration, spec.path, spec.seed, spec.speed, texture=texture)


def write_family(folder, specs, camera="grey"):
    """Simulate and write the sequences of `specs` that are not yet under `folder`, their APS
    frames from a camera metered as the sequence says, or else as `camera` says (a folder holds
    one camera's frames)."""
    for spec in specs:
        target = os.path.join(folder, spec.name)
        if os.path.isfile(os.path.join(target, "images.txt")):
            with open(os.path.join(target, "metadata.json")) as f:
                written = json.load(f).get("camera", "peak")  # the first study's folders name none
            if spec.grey is None and written != camera:
                print(f"error: {target}: its APS frames are from the {written!r} camera, not {camera!r}; "
                      f"use another --data folder", file=sys.stderr)
                sys.exit(2)  # bad input, as the project's other commands say it
            continue
        began = time.perf_counter()
        video = sequence_video(spec)
        events = simulate_events(video, spec.duration, spec.threshold, seed=spec.seed, threshold_spread=spec.spread)
        events = sensor_noise(events, spec.duration, noise_rate=spec.noise, hot_pixels=spec.hot, hot_rate=HOT_RATE,
                              refractory=spec.refractory, seed=spec.seed)
        frame_times = np.arange(int(round(spec.duration * spec.aps_rate)) + 1) / spec.aps_rate
        grey = CAMERAS[camera] if spec.grey is None else spec.grey
        write_sequence(target + ".partial", video, events, frame_times, grey=grey)
        with open(os.path.join(target + ".partial", "metadata.json"), "w") as f:
            json.dump({"sensor_resolution": list(spec.size), "camera": camera if spec.grey is None else f"grey {grey:g}"}, f)
        os.replace(target + ".partial", target)
        print(f"{spec.name}: {len(events['t'])} events ({time.perf_counter() - began:.0f} s)", file=sys.stderr)


def score(path, flags, iters, fit_path=None):
    """{mse, ssim, lpips, n_frames, seconds, auto_threshold} of one fit of the sequence at `path`.
    With `fit_path`, the fit is saved there (torch), or, if it exists, rendered from it: "auto"
    is the authors' fit (C = 1, the constant rate, the same seed) shown with auto_exposure, so it
    is the saved authors' fit rendered again, exactly what fitting it anew would give; whichever
    of the two was fitted first, the other is shown from it."""
    events, _ = load_events(path)
    config = parse_config([*flags, "--iters", str(iters), "--frames_at", "aps"])
    wants_auto = config.auto_threshold
    began = time.perf_counter()
    if fit_path is not None and os.path.isfile(fit_path):
        fit = torch.load(fit_path, weights_only=False)
        config = dataclasses.replace(fit["config"], event_thresh="auto" if wants_auto else 1.0)
        exposure = render.run_exposure(fit["states"], config)  # None for the authors' C = 1
        result = render.render(fit["states"], fit["spans"], config, fit["times"], exposure=exposure)
        result.exposure = exposure
    else:
        result = train.reconstruct(events, config)
        if fit_path is not None:
            torch.save({"config": result.config, "states": result.states, "spans": result.spans, "times": result.times}, fit_path)
    seconds = time.perf_counter() - began
    rows = utils.score_reconstruction(result.frames, result.times, events.aps_frames, events.aps_t)
    return {**utils.mean_scores(rows), "seconds": seconds, "auto_threshold": result.exposure and result.exposure[0]}


def load_results(path):
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                results[(row["sequence"], row["configuration"], row["iters"])] = row
    return results


def run_study(folder, out, specs, labels, iterations):
    """Fit what results.jsonl lacks; returns every result, keyed by (sequence, label, iters)."""
    results_path = os.path.join(out, "results.jsonl")
    results = load_results(results_path)
    jobs = [(spec.name, label, iters) for spec in specs for label in labels for iters in iterations
            if (spec.name, label, iters) not in results]
    for number, (name, label, iters) in enumerate(jobs, 1):
        print(f"[{number}/{len(jobs)}] {name} {label} {iters} iterations", file=sys.stderr)
        os.makedirs(os.path.join(out, "fits"), exist_ok=True)
        fitted = {"authors": "authors", "auto": "authors", "recommended": "recommended"}.get(label)
        fit_path = os.path.join(out, "fits", f"{name}-{fitted}-{iters}.pt") if fitted else None
        row = {"sequence": name, "configuration": label, "flags": flags_of(label), "iters": iters, "cpu": utils.cpu_name(),
               **score(os.path.join(folder, name), flags_of(label), iters, fit_path)}
        results[(name, label, iters)] = row
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return results


def tune_auto(folder, out, specs, iters, means, spans, floors, caps, smooths=(None,)):
    """Score auto_exposure's targets (mean, log span), its bounds on C and --smooth on the saved
    recommended fits of `specs` (fitted at C = 1, so any exposure is a rendering of them): one
    line per combination, the MSE, SSIM and LPIPS averaged over the sequences, the number of
    sequences worse than the authors' settings by more than 0.02 in SSIM or LPIPS, and the mean
    relative to the authors' (a mean of None: the fit's own brightness, offset 0; a smooth of
    None: the fit's). render.AUTO_MEAN, AUTO_SPAN, AUTO_MIN_C, AUTO_MAX_C are chosen from this,
    on the tuning halves of the camera families (their tables together)."""
    lines = ["| target mean | log span | C at least | C at most | smooth (px) | MSE | SSIM | LPIPS | worse than authors' | "
             "MSE / authors' | SSIM - authors' | LPIPS - authors' |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = load_results(os.path.join(out, "results.jsonl"))
    fits = {}
    for spec in specs:
        events, _ = load_events(os.path.join(folder, spec.name))
        fits[spec.name] = (events, torch.load(os.path.join(out, "fits", f"{spec.name}-recommended-{iters}.pt"), weights_only=False),
                           results[(spec.name, "authors", iters)])
    for mean, span, floor, cap, sigma in itertools.product(means, spans, floors, caps, smooths):
        scores = []
        for events, fit, authors in fits.values():
            shown = fit["config"] if sigma is None else dataclasses.replace(fit["config"], smooth=sigma)
            exposure = render.auto_exposure(fit["states"], shown, mean, span, floor, cap)
            result = render.render(fit["states"], fit["spans"], shown, fit["times"], exposure=exposure)
            row = utils.mean_scores(utils.score_reconstruction(result.frames, result.times, events.aps_frames, events.aps_t))
            worse = row["ssim"] < authors["ssim"] - 0.02 or row["lpips"] > authors["lpips"] + 0.02
            scores.append([row["mse"], row["ssim"], row["lpips"], worse, row["mse"] / authors["mse"],
                           row["ssim"] - authors["ssim"], row["lpips"] - authors["lpips"]])
        average = np.mean(scores, axis=0)
        cells = [f"{'fit' if mean is None else f'{mean:g}'}", f"{span:g}", f"{floor:g}", f"{cap:g}",
                 "fit's" if sigma is None else f"{sigma:g}", *(f"{value:.4f}" for value in average[:3]),
                 f"{int(round(average[3] * len(scores)))}", *(f"{value:.4f}" for value in average[4:])]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def cell(row):
    return f"{row['mse']:.4f} / {row['ssim']:.3f} / {row['lpips']:.3f}" if row else "-"


def study_table(results, specs, tuning, iters):
    """Markdown: one row per sequence; the held-out half's targets checked per sequence."""
    lines = ["| sequence | split | true C | authors (C 1) | recommended | auto (C found) | best fixed C | auto vs best: MSE within 10%, SSIM and LPIPS within 0.02 | auto vs authors: MSE -30%, SSIM and LPIPS no worse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for spec in specs:
        name, split, truth = spec.name, "tune" if spec in tuning else "held-out", spec.threshold
        get = lambda label: results.get((name, label, iters))
        fixed = [(value, get(f"C={value:g}") if value != 1.0 else get("authors")) for value in (*FIXED, 1.0)]
        fixed = [(value, row) for value, row in fixed if row]
        best_value, best = min(fixed, key=lambda item: item[1]["mse"]) if fixed else (None, None)
        auto, authors = get("auto"), get("authors")
        near = far = "-"
        if auto and best:
            near = "yes" if (auto["mse"] <= 1.1 * best["mse"] and auto["ssim"] >= best["ssim"] - 0.02
                             and auto["lpips"] <= best["lpips"] + 0.02) else "no"
        if auto and authors:
            far = "yes" if (auto["mse"] <= 0.7 * authors["mse"] and auto["ssim"] >= authors["ssim"]
                            and auto["lpips"] <= authors["lpips"]) else "no"
        found = f" (C {auto['auto_threshold']:.2f})" if auto and auto.get("auto_threshold") else ""
        lines.append(f"| {name} | {split} | {truth:g} | {cell(authors)} | {cell(get('recommended'))} | {cell(auto)}{found} | "
                     f"{f'C {best_value:g}: ' + cell(best) if best else '-'} | {near} | {far} |")
    return "\n".join(lines) + "\n"


def quality_plot(path, results, names, labels, iterations):
    """SSIM and LPIPS against iterations, one line per (sequence, configuration), drawn with OpenCV
    (the project has no plotting dependency): two panels, log-spaced iteration axis."""
    width, height, margin = 560, 360, 60
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    panels = []
    for metric, (low, high) in (("ssim", (0.0, 1.0)), ("lpips", (0.0, 0.8))):
        canvas = np.full((height, width, 3), 255, np.uint8)
        x_of = lambda iters: int(margin + (np.log(iters) - np.log(iterations[0])) / (np.log(iterations[-1]) - np.log(iterations[0]))
                                 * (width - 2 * margin))
        y_of = lambda value: int(height - margin - (value - low) / (high - low) * (height - 2 * margin))
        cv2.rectangle(canvas, (margin, margin), (width - margin, height - margin), (0, 0, 0), 1)
        for iters in iterations:
            cv2.putText(canvas, str(iters), (x_of(iters) - 12, height - margin + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for tick in np.linspace(low, high, 5):
            cv2.putText(canvas, f"{tick:.2f}", (margin - 36, y_of(tick) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(canvas, f"{metric.upper()} against iterations ({'higher' if metric == 'ssim' else 'lower'} is better)",
                    (margin, margin - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        for s, name in enumerate(names):
            for c, label in enumerate(labels):
                points = [(x_of(i), y_of(results[(name, label, i)][metric])) for i in iterations if (name, label, i) in results]
                colour = colours[s % len(colours)][::-1]
                for a, b in zip(points[:-1], points[1:]):
                    cv2.line(canvas, a, b, colour, 2 if c == 0 else 1, cv2.LINE_AA if c == 0 else cv2.LINE_4)
                for point in points:
                    cv2.circle(canvas, point, 3, colour, -1 if c == 0 else 1)
        panels.append(canvas)
    # the legend beside the panels, where no line can cross it: a sequence's colour, and a thick line
    # with filled points for the first configuration, a thin one with open points for the others
    legend = np.full((height, 230, 3), 255, np.uint8)
    for row, (s, c) in enumerate((s, c) for s in range(len(names)) for c in range(len(labels))):
        y, colour = margin + 16 * row, colours[s % len(colours)][::-1]
        cv2.line(legend, (4, y - 4), (28, y - 4), colour, 2 if c == 0 else 1)
        cv2.circle(legend, (16, y - 4), 3, colour, -1 if c == 0 else 1)
        cv2.putText(legend, f"{names[s]} {labels[c]}", (34, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    utils.write_png(path, np.concatenate([*panels, legend], axis=1)[:, :, ::-1])


def get_parser():
    parser = argparse.ArgumentParser(description="Score configurations of EvINR on a family of simulated sequences.")
    parser.add_argument("--data", required=True, help="folder for the simulated sequences (written once, reused)")
    parser.add_argument("-o", "--output_dir", required=True, help="where results.jsonl and the tables go")
    parser.add_argument("--family", choices=list(FAMILIES), default="camera",
                        help="camera: 22 sequences as real cameras see them (the default); camera2: a second draw of "
                             "its kinds; ideal: the first study's 14")
    parser.add_argument("--split", choices=["all", "tune", "held-out"], default="all")
    parser.add_argument("--sequences", nargs="+", default=None, help="only these sequences of the family")
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), type=configuration,
                        help=f"{', '.join(CONFIGURATIONS)}, or NAME:FLAGS, train.py flags of your own "
                             f"(e.g. 'hot:--hot_pixels auto')")
    parser.add_argument("--tune_auto", action="store_true", help="score auto's targets on the saved authors' fits "
                                                                 "of the chosen sequences (tune.md)")
    parser.add_argument("--camera", choices=list(CAMERAS), default="grey",
                        help="the simulated APS camera's metering: 'grey' (the mean at 18%% of full scale, as light "
                             "meters are calibrated), 'peak' (the brightest pixel at full scale; the first study's)")
    parser.add_argument("--means", nargs="+", type=float, default=[0.18, 0.2, 0.22, 0.24, 0.26],
                        help="with --tune_auto: the target means to score (and the fit's own brightness)")
    parser.add_argument("--spans", nargs="+", type=float, default=[1.5, 2.0, 2.5, 3.0],
                        help="with --tune_auto: the target log spans to score")
    parser.add_argument("--floors", nargs="+", type=float, default=[render.AUTO_MIN_C],
                        help="with --tune_auto: the lower bounds on C to score (default: render.AUTO_MIN_C)")
    parser.add_argument("--caps", nargs="+", type=float, default=[render.AUTO_MAX_C],
                        help="with --tune_auto: the caps on C to score (default: render.AUTO_MAX_C)")
    parser.add_argument("--smooths", nargs="+", type=float, default=None,
                        help="with --tune_auto: the --smooth values to score (default: the fits' own)")
    parser.add_argument("--iterations", nargs="+", type=int, default=[1000],
                        help="fit each configuration with each of these --iters (several: also the quality plot)")
    return parser


def main():
    parser = get_parser()
    args = parser.parse_args()
    family = FAMILIES[args.family]
    specs = family if args.split == "all" else splits(family)[args.split]
    if args.sequences:
        unknown = set(args.sequences) - {spec.name for spec in family}
        if unknown:
            parser.error(f"not in the family: {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in args.sequences]
    os.makedirs(args.data, exist_ok=True)
    os.makedirs(args.output_dir, exist_ok=True)
    write_family(args.data, specs, args.camera)
    if args.tune_auto:
        text = tune_auto(args.data, args.output_dir, specs, args.iterations[0], (None, *args.means), args.spans, args.floors,
                         args.caps, args.smooths or (None,))
        with open(os.path.join(args.output_dir, "tune.md"), "w") as f:
            f.write(text)
        return
    results = run_study(args.data, args.output_dir, specs, args.configurations, sorted(args.iterations))
    if len(args.iterations) > 1:
        iterations = sorted(args.iterations)
        names = [spec.name for spec in specs]
        quality_plot(os.path.join(args.output_dir, "quality.png"), results, names, args.configurations, iterations)
        lines = ["| sequence | configuration | " + " | ".join(f"{i} it (SSIM / LPIPS)" for i in iterations) + " |",
                 "|---|---|" + "---|" * len(iterations)]
        for name in names:
            for label in args.configurations:
                lines.append(f"| {name} | {label} | " + " | ".join(
                    f"{results[(name, label, i)]['ssim']:.3f} / {results[(name, label, i)]['lpips']:.3f}" for i in iterations) + " |")
        text = "\n".join(lines) + "\n"
        with open(os.path.join(args.output_dir, "quality.md"), "w") as f:
            f.write(text)
        print(text)
    else:
        text = study_table(results, specs, splits(family)["tune"], args.iterations[0])
        with open(os.path.join(args.output_dir, "table.md"), "w") as f:
            f.write(text)
        print(text)


if __name__ == "__main__":
    main()
