"""
Frames from fitted networks: each network's log frames at the times asked, smoothed (--smooth),
shown with the exposure (--event_thresh auto chooses C and the offset from the video itself)
and tone-mapped to 8 bits.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from config import Config, float32_matmul_precision, matmul_precision, resolve_device
from model import empty_model, smooth, tone_map
from plan import RENDER_BATCH, normalised, span_of


@dataclass
class Reconstruction:
    """What a fit gives, in memory."""
    frames: np.ndarray            # uint8 [N, H, W] (or [N, H, W, 3] for colour events), tone-mapped
    times: np.ndarray             # float64 [N], seconds on the recording's clock
    states: list                  # one EvINR state dict per window (CPU tensors)
    spans: list                 # [(begin, end)] seconds, the span each network covers
    config: Config                # the settings used, with the sensor and device resolved
    timings: dict
    log_frames: np.ndarray = None  # float32 [N, C, H, W] log intensity, when asked for
    exposure: tuple = None        # --event_thresh auto: (C, offset) applied to the fitted log frames
    fit: dict = None              # the fit's record: loss curve ("losses") and convergence ("windows")


# --event_thresh auto. The events fix log intensity up to a scale (C) and an offset (the exposure,
# which no event tells). Fitted with C = 1, the video's log frames L are shown as
# tone_map(C * L + offset): C gives the frames the log-intensity span of a typical scene, the
# offset the brightness of a typical camera frame. Both are priors, chosen on the tuning halves
# of scripts/threshold_study.py's two camera families (docs/threshold.md); a run takes them from
# its first window (run_exposure).
AUTO_MEAN = 0.22        # the frames' mean intensity: DAVIS frames average 0.2-0.3 (slider_depth 0.22)
AUTO_SPAN = 2.5         # log intensity from the frames' AUTO_QUANTILE to their 1 - AUTO_QUANTILE
AUTO_QUANTILE = 0.01    # percentiles, not the extremes: hot pixels and noise do not set the span


# C stays within bounds, whatever the span: a scene of little contrast (grass, the moon) or a
# short clip that settled little would otherwise have its faint texture and its noise stretched
# to a typical span (the cap); a scene of high contrast would be squeezed flat (the floor).
# Real sensors are set to 0.1-0.5; the cap sits above that because a fit keeps less of its
# events' contrast than they say (the slower the motion, the less), and a fine texture that
# moves slowly shows more of its structure with the higher C.
AUTO_MIN_C, AUTO_MAX_C = 0.25, 0.6


AUTO_TIMES = 16          # log frames per window sampled to choose them


AUTO_SAMPLES = 200_000   # of whose values at most this many, evenly spaced


def fit_threshold(config):
    """The C the events are fitted with: the given one (or the preset's), or 1 for --event_thresh auto."""
    return 1.0 if config.auto_threshold else config.setting("event_thresh")


@torch.no_grad()
def auto_exposure(states, config, mean="default", span=None, min_c=None, max_c=None):
    """(C, offset) for --event_thresh auto, from the log frames of fitted networks (one state per
    window) at AUTO_TIMES times each, smoothed as they are shown (--smooth): C such that the span
    between their AUTO_QUANTILE and 1 - AUTO_QUANTILE quantiles is `span` (default AUTO_SPAN),
    kept within [min_c, max_c] (AUTO_MIN_C, AUTO_MAX_C); then the offset that gives the
    tone-mapped frames the mean `mean` (default AUTO_MEAN; None keeps the fit's own brightness:
    offset 0). For a fixed C the mean grows with the offset: one bisection."""
    mean = AUTO_MEAN if mean == "default" else mean
    span = AUTO_SPAN if span is None else span
    min_c = AUTO_MIN_C if min_c is None else min_c
    max_c = AUTO_MAX_C if max_c is None else max_c
    device = resolve_device(config.device)
    model = empty_model((config.H, config.W), config, device)
    sigma = config.setting("smooth")
    samples = []
    # the config's precision, as render's: the same (C, offset) wherever it is called from
    with float32_matmul_precision(matmul_precision(config.matmul_precision, device)):
        for state in states:
            model.load_state_dict(state)
            log_frames = smooth(model(torch.linspace(-1.0, 1.0, AUTO_TIMES, device=device)), sigma)
            samples.append(log_frames.flatten().float().cpu())
    values = torch.cat(samples)
    values = values[::max(1, len(values) // AUTO_SAMPLES)]
    low, high = torch.quantile(values, torch.tensor([AUTO_QUANTILE, 1.0 - AUTO_QUANTILE])).tolist()
    scale = min(max(span / max(high - low, 1e-6), min_c), max_c)
    if mean is None:
        return scale, 0.0
    low, high = -30.0, 30.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if tone_map(scale * values + middle).mean() < mean else (low, middle)
    return scale, 0.5 * (low + high)


def run_exposure(states, config):
    """The (C, offset) a run shows its frames with: for --event_thresh auto, auto_exposure of the
    first window's network alone, kept for the whole recording, so that a --window batch (on a
    GPU, as many windows as memory holds) does not change the frames and brightness does not
    jump between windows; None for a given C."""
    return auto_exposure(states[:1], config) if config.auto_threshold else None


@torch.no_grad()
def render(states, spans, config, times, log_frames=False, exposure=None):
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
        sigma = config.setting("smooth")
        times = np.asarray(times, dtype=np.float64)
        model = empty_model((config.H, config.W), config, device)
        images, logs = [None] * len(times), [None] * len(times) if log_frames else None
        owner = span_of(times, spans)
        for k, (begin, end) in enumerate(spans):
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
        return Reconstruction(frames=stack(images, np.uint8), times=times, states=states, spans=list(spans), config=config,
                              timings={"render_s": time.perf_counter() - began},
                              log_frames=stack(logs, np.float32) if log_frames else None, exposure=exposure)


def to_images(frames):
    """[B, C, H, W] tensor in [0, 1] -> uint8 [B, H, W] or [B, H, W, 3] array, rounded as
    utils.tone_map_to_uint8 rounds (in float64, half to even) but where the frames are: on a GPU
    only a quarter of the bytes then cross to the host, and no per-frame work is left there."""
    quantised = torch.round(frames.double().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return quantised[..., 0] if quantised.shape[-1] == 1 else quantised
