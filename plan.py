"""
What a run will do, decided before any work: the spans of time its networks cover (one, or
consecutive --window ones), the times its frames are rendered at, and the memory and disk it
needs, refused up front when the machine does not have them.
"""

import ctypes
import dataclasses
import errno
import os
import platform
import shutil
import sys

import numpy as np
import torch

from config import DEFAULT_T_END, MAX_FRAMES, MAX_WINDOWS, UsageError
from event_data import EventDataError, EventFile
from model import channels

RENDER_BATCH = 32  # frames per forward pass when rendering: bounds memory at any resolution


def configure_host_memory():
    """Keep freed large blocks in the heap instead of returning them to the OS: the training
    loop allocates the same large tensors every iteration, and fresh pages from the OS cost a
    page fault each, a large part of a CPU iteration (docs/performance.md)."""
    if platform.system() == "Linux":
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD
            libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
        except OSError:
            pass


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


def fit_spans(events, config):
    """[(begin, end)] seconds on the recording's clock: one window, or consecutive --window ones,
    over the span the events really cover (covered_span). Checked before any work: every window
    has events, and there are at most MAX_WINDOWS."""
    t_first, t_last = covered_span(events)
    t_end = config.t_end if config.t_end is not None else (None if config.window else DEFAULT_T_END)
    begin = t_first + config.t_start
    end = t_last if t_end is None else min(t_first + t_end, t_last)
    if not end > begin:
        asked = f"{config.t_start:g}-{t_end:g} s" if t_end is not None else f"from {config.t_start:g} s"
        hint = ""
        if config.t_end is None and t_end is not None and config.t_start >= t_end:
            hint = (f"; --t_start {config.t_start:g} is not before the default --t_end {t_end:g}: give a later "
                    "--t_end, or --window to fit the whole recording")
        raise EventDataError(events.path, f"no events in the window {asked} after the first event "
                                          f"(the recording spans {t_last - t_first:.3f} s){hint}")
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
        listed = ", ".join(f"{edges[k] - t_first:.3f}-{edges[k + 1] - t_first:.3f} s" for k in quiet[:3])
        print(f"note: {events.path}: {quiet.size} of {len(counts)} windows have fewer than {config.train_resolution} events "
              f"(--train_resolution) ({listed}{', ...' if quiet.size > 3 else ''} after the first event); each is fitted "
              f"with a neighbour, {len(groups)} windows in all", file=sys.stderr)
    return [(float(edges[first]), float(edges[last + 1])) for first, last, _ in groups]


def render_times(events, config, begin, end):
    """The times (recording clock) at which frames are rendered."""
    mode = config.frames_at
    has_aps = events.aps_frames is not None and ((events.aps_t >= begin) & (events.aps_t <= end)).any()
    if mode == "auto":
        mode = "aps" if has_aps else "uniform"
    if mode == "aps":
        if not has_aps:
            raise EventDataError(events.path, f"--frames_at aps: no APS frames between {begin:.6f} and {end:.6f} s")
        return events.aps_t[(events.aps_t >= begin) & (events.aps_t <= end)].copy()
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


def span_of(times, spans):
    """The index of the window that renders each time (a time on a seam goes to the earlier one)."""
    return np.clip(np.searchsorted([end for _, end in spans], times, side="left"), 0, len(spans) - 1)


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


def memory_plan(events, config, spans, n_frames, training=True, held_networks=None):
    """[(bytes, "device" or "host", what, the flag that changes it)] that a run holds at its
    peak: fitting a batch of windows and rendering on the device; `n_frames` rendered frames and
    `held_networks` networks (default: every window's) on the host, with the events of the
    busiest window when they are read from disk (an EventFile)."""
    held_networks = len(spans) if held_networks is None else held_networks
    sensor, batch = events.sensor, config.windows_batch or 1
    pixels = sensor[0] * sensor[1] * channels(config)
    parameters = parameter_count(sensor, config)
    per_pixel = 257 * pixels > parameters / 2  # the output layer is most of the network
    network_flag = "a smaller sensor (--H/--W): the network has a weight per pixel" if per_pixel else "a lower --net_width"
    batch_flag = f" or a lower --windows_batch ({batch})" if batch > 1 else ""
    bounds = np.array(spans)
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


def check_memory(events, config, spans, n_frames, training=True, held_networks=None):
    """Refuse a plan that needs more memory than the device (and, for a GPU, the host) has free,
    naming the figures and the flag that changes its largest part."""
    device = torch.device(config.device)
    plan = memory_plan(events, config, spans, n_frames, training, held_networks)
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


def plan(events, config, times=None):
    """(config with windows_batch resolved, the windows, the times to render): what a run will
    do, decided before any work (see fit_windows and render_times)."""
    configure_host_memory()
    spans = fit_spans(events, config)
    times = render_times(events, config, spans[0][0], spans[-1][1]) if times is None else np.asarray(times, dtype=np.float64)
    batch_size = config.windows_batch or 1
    if config.windows_batch is None and config.device.startswith("cuda") and len(spans) > 1:
        device = torch.device(config.device)
        batch_size = stacked_batch_size(events.sensor, config, len(spans), torch.cuda.mem_get_info(device)[0])
    return dataclasses.replace(config, windows_batch=batch_size), spans, times


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


# The cost of one training iteration of the default network, for the estimate a run prints
# before it starts: (seconds at 240x180 with 76 event frames on average, the power of the pixel
# frames it grows with), fitted to scripts/benchmark.py's runs at 240x180 and larger sensors on a
# 2-core CPU and an H100 (docs/performance.md). A rough figure: other machines differ.
ITERATION_COST = {"cpu": (0.055, 1.6), "cuda": (0.0005, 0.8)}
REFERENCE_PIXEL_FRAMES = 240 * 180 * 76
PROCESS_BYTES = 400 << 20  # torch and the other libraries, loaded before any tensor


def estimate(events, config, spans, n_frames, held_networks):
    """What a run will do and roughly cost, in words: its windows, iterations and frames, and
    estimates of its time and peak memory from the sensor's size."""
    device = torch.device(config.device)
    height, width = events.sensor
    mean_frames = config.train_resolution if config.no_c2f else 1.5 * config.train_resolution
    seconds_at_reference, power = ITERATION_COST[device.type]
    pixel_frames = height * width * channels(config) * (mean_frames + 1)
    seconds = seconds_at_reference * (pixel_frames / REFERENCE_PIXEL_FRAMES) ** power
    seconds *= config.iters * len(spans) * config.net_width / 512
    parts = memory_plan(events, config, spans, n_frames, not config.render_only, held_networks)
    memory = PROCESS_BYTES + sum(part[0] for part in parts)
    work = "rendering only" if config.render_only else (
        f"{config.iters} iterations each, about {human_duration(seconds)} on {device.type}")
    return (f"{len(spans)} window{'s' if len(spans) > 1 else ''} over {spans[-1][1] - spans[0][0]:.3f} s, "
            f"{work}; {n_frames} frames of {width}x{height}; about {human_bytes(memory)} of memory "
            "(rough estimates)")


def human_duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
