"""
Fit EvINR to an event recording and render the video.

    python train.py                                   # the bundled slider_depth demo
    python train.py -n EXP -d DATA_PATH --H 180 --W 240
    python train.py -n EXP -d DATA_PATH --window 2    # a whole recording, 2 s at a time

Writes OUTPUT_DIR/EXP_NAME/: frames/, timestamps.txt, video.mp4, preview.png, model.pt,
config.json and, when the recording has APS frames, metrics.json.
"""

import argparse
import ctypes
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

import utils
from event_data import EventDataError, chunk_boundaries, event_frames, load_events
from model import EvINR, StackedEvINR, evinr_loss, query_times, tone_map

REPO = os.path.dirname(os.path.abspath(__file__))
DEMO_DATA = os.path.join(REPO, "assets", "slider_depth_demo.h5")
RENDER_BATCH = 32  # frames per forward pass when rendering: bounds memory at any resolution


class UsageError(Exception):
    """A bad request on the command line (as opposed to a bad input file)."""


def get_parser():
    parser = argparse.ArgumentParser(description="EvINR: fit an implicit neural representation to events and render video.")
    # the authors' flags, same names and meanings
    parser.add_argument("-n", "--exp_name", default=None, help="experiment name (default: the data's name)")
    parser.add_argument("-d", "--data_path", default=None, help="event recording, any supported format (default: bundled demo)")
    parser.add_argument("-o", "--output_dir", default="runs", help="where the experiment folder goes")
    parser.add_argument("--t_start", type=float, default=0.0, help="window start, seconds after the first event")
    parser.add_argument("--t_end", type=float, default=None, help="window end, seconds after the first event (default 2, or the whole recording with --window)")
    parser.add_argument("--H", type=int, default=None, help="sensor height in pixels (rows); default: from the data")
    parser.add_argument("--W", type=int, default=None, help="sensor width in pixels (columns); default: from the data")
    parser.add_argument("--color_event", action="store_true", help="colour events on an RGGB Bayer sensor (CED)")
    parser.add_argument("--event_thresh", type=float, default=1.0, help="contrast threshold C: an event is a log-intensity change of C")
    parser.add_argument("--train_resolution", type=int, default=50, help="number of event frames (doubled half-way unless --no_c2f)")
    parser.add_argument("--val_resolution", type=int, default=50, help="frames on the uniform grid of --frames_at uniform")
    parser.add_argument("--no_c2f", action="store_true", help="keep the number of event frames fixed (no coarse-to-fine)")
    parser.add_argument("--iters", type=int, default=1000, help="training iterations (per window)")
    parser.add_argument("--log_interval", type=int, default=100, help="iterations between loss reports")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    parser.add_argument("--net_layers", type=int, default=3, help="hidden sine layers after the first")
    parser.add_argument("--net_width", type=int, default=512, help="width of the hidden sine layers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    # new in this implementation
    parser.add_argument("--frames_at", default="auto",
                        help="when to render: 'aps' (every APS frame in the window), 'uniform' (--val_resolution frames), "
                             "a number (frames per second), or a text file of times in seconds on the recording's clock; "
                             "'auto' is aps when the recording has APS frames, else uniform")
    parser.add_argument("--loss", choices=["diff", "autograd"], default="diff",
                        help="temporal supervision: finite differences of frames, or the exact time derivative")
    parser.add_argument("--align", choices=["boundary", "midpoint"], default="boundary",
                        help="boundary: compare each event frame with the change over its own span (fixed); "
                             "midpoint: the authors' half-chunk-shifted comparison")
    parser.add_argument("--chunking", choices=["count", "time"], default="count",
                        help="event frames of equal event count (the authors') or of equal duration")
    parser.add_argument("--window", type=float, default=None,
                        help="fit a whole recording as consecutive windows of about this many seconds (equal "
                             "windows, 0.67-1.5x this long), each warm-started from the previous one and tied to "
                             "its last frame")
    parser.add_argument("--window_tie", type=float, default=1.0, help="weight of the boundary-frame tie between windows")
    parser.add_argument("--windows_batch", type=int, default=1,
                        help="with --window: fit this many consecutive windows at once, one network each with "
                             "their weights stacked (batched matrix products). Each batch starts from the previous "
                             "batch's last network, and each window is tied to the one before it. 1 fits windows one by one")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same frames")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing experiment folder")
    parser.add_argument("--tensorboard", action="store_true", help="also log losses to TensorBoard (needs the tensorboard package)")
    parser.add_argument("--render_only", metavar="CHECKPOINT", default=None, help="render from a saved model.pt without training")
    parser.add_argument("--plain", action="store_true",
                        help="reference path: autograd loss and unfused AdamW (same results, slower; for checking)")
    parser.add_argument("--matmul_precision", choices=["auto", "highest", "high", "medium"], default="auto",
                        help="torch.set_float32_matmul_precision: 'high' allows TF32 on NVIDIA GPUs, 'medium' also "
                             "bfloat16 (on GPUs, and on CPUs with AMX). auto: medium on a CPU with AMX (where "
                             "scripts/benchmark.py measured the same quality, 11%% faster), highest elsewhere")
    parser.add_argument("--no_video", action="store_true", help="skip video.mp4")
    return parser


def split_configurations(argv, flag):
    """(arguments before `flag`, the strings after it) for scripts that take several train.py
    configurations last on their line (`--compare`, `--configs`): taking everything after the
    flag as a configuration lets a lone switch such as "--plain" stand as one, where argparse
    would read it as an option. The strings are None when `flag` is absent."""
    if flag not in argv:
        return list(argv), None
    split = argv.index(flag)
    return list(argv[:split]), list(argv[split + 1:])


# -----------------------------------------------------------------------------
# time windows and render times

def fit_windows(events, args):
    """[(begin, end)] seconds on the recording's clock: one window, or consecutive --window ones."""
    t_first, t_last = float(events.t[0]), float(events.t[-1])
    t_end = args.t_end if args.t_end is not None else (None if args.window else 2.0)
    begin = t_first + args.t_start
    end = t_last if t_end is None else min(t_first + t_end, t_last)
    if not end > begin:
        asked = f"{args.t_start:g}-{t_end:g} s" if t_end is not None else f"from {args.t_start:g} s"
        raise EventDataError(events.path, f"no events in the window {asked} after the first event "
                                          f"(the recording spans {t_last - t_first:.3f} s)")
    if not args.window:
        return [(begin, end)]
    if args.window <= 0:
        raise UsageError("--window must be positive")
    # Equal windows as close to --window as a whole number of them allows, rather than full
    # windows and a leftover sliver with too few events to fit.
    n_windows = max(1, int(np.ceil((end - begin) / args.window - 0.5)))
    edges = np.linspace(begin, end, n_windows + 1)
    return list(zip(edges[:-1], edges[1:]))


def render_times(events, args, begin, end):
    """The times (recording clock) at which frames are rendered, and which APS frame each one is
    (index into events.frames, or -1)."""
    mode = args.frames_at
    has_aps = events.frames is not None and ((events.frame_t >= begin) & (events.frame_t <= end)).any()
    if mode == "auto":
        mode = "aps" if has_aps else "uniform"
    if mode == "aps":
        if not has_aps:
            raise EventDataError(events.path, f"--frames_at aps: no APS frames between {begin:.6f} and {end:.6f} s")
        index = np.flatnonzero((events.frame_t >= begin) & (events.frame_t <= end))
        return events.frame_t[index], index
    if mode == "uniform":
        times = np.linspace(begin, end, args.val_resolution)
    elif os.path.isfile(mode):
        try:
            times = np.atleast_1d(np.loadtxt(mode, dtype=np.float64))
        except ValueError as error:
            raise EventDataError(mode, f"not a list of times in seconds ({str(error).splitlines()[0]})") from None
        if times.size == 0 or not np.isfinite(times).all():
            raise EventDataError(mode, "no usable times in file")
        outside = times[(times < begin) | (times > end)]
        if outside.size:
            raise EventDataError(mode, f"time {outside[0]:.6f} s is outside the fitted window {begin:.6f}-{end:.6f} s")
        times = np.sort(times)
    else:
        try:
            fps = float(mode)
        except ValueError:
            raise UsageError(f"--frames_at {mode!r}: expected aps, uniform, auto, a number of frames per second, or an existing file") from None
        if not fps > 0:
            raise UsageError("--frames_at: frames per second must be positive")
        times = np.arange(begin, end + 1e-12, 1.0 / fps)
    return times, np.full(len(times), -1)


# -----------------------------------------------------------------------------
# fitting one window

def normalised(times, begin, end):
    """Map recording-clock seconds in [begin, end] to the network's input range [-1, 1]."""
    return 2.0 * (np.asarray(times, dtype=np.float64) - begin) / (end - begin) - 1.0


class Window:
    """The events of one time window, moved to the device once, and their event frames."""

    def __init__(self, events, begin, end, sensor, args, device):
        first = np.searchsorted(events.t, begin, side="left")
        last = np.searchsorted(events.t, end, side="right")
        if last <= first:
            raise EventDataError(events.path, f"no events between {begin:.6f} and {end:.6f} s")
        self.begin, self.end, self.sensor, self.args = begin, end, sensor, args
        self.t = events.t[first:last]
        # moved as stored (int16, int8): a quarter of the bytes of int64 to copy to a GPU, and
        # no copy at all on the CPU; event_frames widens the indices where it needs them
        self.x, self.y, self.p = (torch.from_numpy(column[first:last]).to(device) for column in (events.x, events.y, events.p))
        self.device = device

    def frames(self, n_chunks):
        """(event frames [n, C, H, W], boundary times [n+1], authors' chunk midpoints [n]), times normalised."""
        n_chunks = min(n_chunks, len(self.t))
        starts, times = chunk_boundaries(self.t, n_chunks, self.begin, self.end, self.args.chunking)
        frames = event_frames(self.x, self.y, self.p, starts, self.sensor, self.args.event_thresh, self.args.color_event)
        # The authors stamp each chunk with the midpoint of its first and last event.
        first = self.t[np.minimum(starts[:-1], len(self.t) - 1)]
        last = self.t[np.maximum(starts[1:] - 1, 0)]
        midpoints = np.where(starts[1:] > starts[:-1], 0.5 * (first + last), 0.5 * (times[:-1] + times[1:]))
        as_tensor = lambda values: torch.tensor(normalised(values, self.begin, self.end), dtype=torch.float32, device=self.device)
        return frames, as_tensor(times), as_tensor(midpoints)


def make_model(sensor, args):
    return EvINR(sensor[0], sensor[1], channels=3 if args.color_event else 1,
                 n_layers=args.net_layers, hidden=args.net_width)


def make_optimizer(model, args):
    """AdamW; the fused single-kernel update unless --plain (torch before 2.4 has no fused CPU
    AdamW, and falls back to the default)."""
    if not args.plain:
        try:
            return torch.optim.AdamW(model.parameters(), lr=args.lr, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(model.parameters(), lr=args.lr)


def stage_frames(windows, n_chunks, stacked):
    """The event frames and query times of one coarse-to-fine stage: one window's, or every
    window's stacked on a leading dimension (all with the same number of chunks)."""
    n_chunks = min([n_chunks] + [len(window.t) for window in windows])
    per_window = [window.frames(n_chunks) for window in windows]
    return per_window[0] if not stacked else [torch.stack(parts) for parts in zip(*per_window)]


def window_edges(model, loss_frames, args, edge_times):
    """The first and last log frames of each window fitted, [K, C, H, W] each. With the default
    supervision the loss already evaluated them (its query times are the chunk boundaries, which
    begin at -1 and end at +1 exactly); otherwise they cost one more forward pass."""
    if args.loss == "diff" and args.align == "boundary":
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


def fit(model, windows, args, tie_frame=None, log=None, label=""):
    """Run the optimisation on a list of windows: one window for an EvINR, one per network for a
    StackedEvINR. `tie_frame`, the previous window's last log frame, pins the first window's
    first frame so brightness is continuous across windows."""
    stacked = isinstance(model, StackedEvINR)
    edge_times = torch.tensor([-1.0, 1.0], device=windows[0].device)
    optimizer = make_optimizer(model, args)
    schedule = [args.train_resolution] if args.no_c2f else [args.train_resolution, 2 * args.train_resolution]
    start_of_stage = [0] if args.no_c2f else [0, args.iters // 2]
    tied = args.window_tie != 0 and (tie_frame is not None or len(windows) > 1)
    timings = {"event_frames_s": 0.0, "train_s": 0.0}
    bar = tqdm(range(args.iters), desc=f"fitting{label}", unit="it", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    log_points = [(0, start)]  # (iteration, time): the loss read-out syncs the device anyway
    for iteration in bar:
        if iteration in start_of_stage:
            began = time.perf_counter()
            frames, boundaries, midpoints = stage_frames(windows, schedule[start_of_stage.index(iteration)], stacked)
            queries = query_times(boundaries, midpoints, args.loss, args.align)
            timings["event_frames_s"] += time.perf_counter() - began
        loss, parts, log_frames = evinr_loss(model, queries, frames, args.loss, args.align, fused=not args.plain)
        if tied:
            loss = loss + args.window_tie * seam_loss(*window_edges(model, log_frames, args, edge_times), tie_frame)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (iteration + 1) % args.log_interval == 0 or iteration + 1 == args.iters:
            total = float(loss.detach())
            log_points.append((iteration + 1, time.perf_counter()))
            bar.set_postfix(loss=f"{total:.4g}")
            if log is not None:
                log(iteration, total, {name: float(value) for name, value in parts.items()})
    timings["train_s"] = time.perf_counter() - start - timings["event_frames_s"]
    # The first interval holds the warm-up (allocation, first kernels); the median of the others
    # is the steady-state cost per iteration.
    steady = [1000.0 * (t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(log_points[1:], log_points[2:])]
    timings["steady_ms_per_iter"] = steady
    return timings


@torch.no_grad()
def render(model, times_normalised, device):
    """Tone-mapped frames [T, C, H, W] in [0, 1] and log frames at the given normalised times."""
    images = []
    for first in range(0, len(times_normalised), RENDER_BATCH):
        batch = torch.tensor(times_normalised[first:first + RENDER_BATCH], dtype=torch.float32, device=device)
        images.append(tone_map(model(batch)).cpu())
    return torch.cat(images) if images else torch.empty(0)


def to_image(frame):
    """[C, H, W] tensor in [0, 1] -> uint8 [H, W] or [H, W, 3]."""
    array = frame.permute(1, 2, 0).numpy()
    return utils.tone_map_to_uint8(array[:, :, 0] if array.shape[2] == 1 else array)


# -----------------------------------------------------------------------------
# outputs

def experiment_folder(args, data_path):
    name = args.exp_name or os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0]
    final = os.path.join(args.output_dir, name)
    if os.path.exists(final) and not args.overwrite:
        raise UsageError(f"{final}: experiment folder already exists; pass --overwrite to replace it, or choose another -n")
    os.makedirs(args.output_dir, exist_ok=True)
    # Everything is written into a hidden sibling folder and moved into place at the end, so a
    # failed or interrupted run never leaves a half-written experiment behind.
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=args.output_dir)
    return final, work


def publish(work, final):
    if os.path.exists(final):
        trash = final + ".replaced"
        os.rename(final, trash)
        os.rename(work, final)
        shutil.rmtree(trash)
    else:
        os.rename(work, final)


def event_image(events, sensor, begin, end):
    """The events between two times as a red/blue picture (a mosaic sum for colour sensors)."""
    first, last = np.searchsorted(events.t, [begin, end])
    flat = events.y[first:last].astype(np.int64) * sensor[1] + events.x[first:last]
    summed = np.bincount(flat, weights=events.p[first:last], minlength=sensor[0] * sensor[1])
    return utils.event_frame_to_rgb(summed.reshape(sensor))


def write_preview(path, events, sensor, times, images, aps_index, n_points=4):
    picks = np.unique(np.linspace(0, len(times) - 1, min(n_points, len(times))).round().astype(int))
    spacing = np.median(np.diff(times)) if len(times) > 1 else 0.02
    rows = []
    for k in picks:
        row = [(event_image(events, sensor, times[k] - spacing, times[k]), f"events {times[k]:.3f}s"),
               (images[k], "EvINR")]
        if aps_index[k] >= 0:
            row.append((events.frames[aps_index[k]], "APS"))
        rows.append(row)
    utils.make_preview(path, rows)


def score(events, images, aps_index, times):
    """MSE and SSIM (and LPIPS when its weights are cached) against the APS frames, EVREAL-style:
    the recording's first APS frame is not scored."""
    per_frame = []
    use_lpips = utils.lpips_available() and min(events.frames.shape[1:3]) >= utils.LPIPS_MIN_SIZE
    for image, index, t in zip(images, aps_index, times):
        if index <= 0:
            continue
        scores = utils.score_frame(utils.gray_float(image), utils.gray_float(events.frames[index]), use_lpips=use_lpips)
        per_frame.append({"aps_index": int(index), "t": float(t), **scores})
    if not per_frame:
        return None
    summary = {name: float(np.mean([f[name] for f in per_frame])) for name in ("mse", "ssim")}
    summary["lpips"] = float(np.mean([f["lpips"] for f in per_frame])) if use_lpips else None
    return {**summary, "n_frames": len(per_frame), "per_frame": per_frame}


# -----------------------------------------------------------------------------
# the run

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


def matmul_precision(choice, device):
    """Resolve --matmul_precision auto. bfloat16 matrix products are used only where the benchmark
    showed unchanged quality: CPUs with AMX tiles, which multiply bfloat16 natively. Elsewhere
    (GPUs included, not measured here) full float32."""
    if choice != "auto":
        return choice
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "medium" if device.type == "cpu" and amx else "highest"


def run(args):
    wall_start = time.perf_counter()
    checkpoint = None
    if args.render_only:
        if not os.path.isfile(args.render_only):
            raise EventDataError(args.render_only, "no such checkpoint")
        try:
            checkpoint = torch.load(args.render_only, map_location="cpu", weights_only=True)
            saved = checkpoint["config"]
        except Exception:  # torch raises many kinds for a file that is not a checkpoint
            raise EventDataError(args.render_only, "not a model.pt written by train.py (unreadable or truncated)") from None
        for name in ("data_path", "t_start", "t_end", "H", "W", "color_event", "net_layers", "net_width", "window", "event_thresh"):
            if name != "data_path" or args.data_path is None:
                setattr(args, name, saved[name])
    demo = args.data_path is None
    data_path = DEMO_DATA if demo else args.data_path
    if demo and args.exp_name is None:
        args.exp_name = "demo"
    if min(args.iters, args.train_resolution, args.val_resolution, args.log_interval, args.windows_batch) < 1:
        raise UsageError("--iters, --train_resolution, --val_resolution, --log_interval and --windows_batch must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    torch.manual_seed(args.seed)
    torch.set_float32_matmul_precision(matmul_precision(args.matmul_precision, device))
    configure_host_memory()

    began = time.perf_counter()
    events, sensor = load_events(data_path, sensor=(args.H, args.W))
    load_s = time.perf_counter() - began
    if args.color_event and (sensor[0] % 2 or sensor[1] % 2):
        raise EventDataError(data_path, f"--color_event needs an even sensor size for the 2x2 Bayer cells, got H={sensor[0]}, W={sensor[1]}")
    windows = fit_windows(events, args)
    times, aps_index = render_times(events, args, windows[0][0], windows[-1][1])
    final, work = experiment_folder(args, data_path)
    try:
        summary = fit_and_write(args, events, sensor, windows, times, aps_index, device, work, checkpoint, data_path)
        summary["timings"]["load_s"] = load_s
        summary["timings"]["total_s"] = time.perf_counter() - wall_start
        with open(os.path.join(work, "config.json"), "w") as f:
            json.dump(summary, f, indent=2)
        publish(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    result = summary.get("metrics")
    quality = f", MSE {result['mse']:.4f} SSIM {result['ssim']:.3f} over {result['n_frames']} APS frames" if result else ""
    print(f"wrote {len(times)} frames to {final} in {summary['timings']['total_s']:.1f} s "
          f"({summary['timings'].get('ms_per_iter', 0):.1f} ms/iteration){quality}")
    return final


def fit_and_write(args, events, sensor, windows, times, aps_index, device, work, checkpoint, data_path):
    writer = None
    if args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        writer = SummaryWriter(os.path.join(work, "tensorboard"))
    timings = {"event_frames_s": 0.0, "train_s": 0.0, "render_s": 0.0}
    steady_ms = []
    states, images, tie_frame, model = [], [None] * len(times), None, None
    window_of = np.clip(np.searchsorted([end for _, end in windows], times, side="left"), 0, len(windows) - 1)
    batch_size = 1 if checkpoint is not None else args.windows_batch
    progress = tqdm(total=len(windows), desc="windows", unit="window", disable=len(windows) == 1)
    for first in range(0, len(windows), batch_size):
        batch = range(first, min(first + batch_size, len(windows)))
        if model is None or checkpoint is not None:
            model = make_model(sensor, args)
        model = model.to(device)
        if checkpoint is None:
            name = f"window {first + 1}" if len(batch) == 1 else f"windows {first + 1}-{batch[-1] + 1}"
            log = None
            if writer is not None:
                log = lambda i, total, parts, name=name: [writer.add_scalar(f"{name}/{part}", value, i)
                                                          for part, value in {"total": total, **parts}.items()]
            # a batch of windows starts from copies of the network fitted last (or of the fresh one)
            trained = model if len(batch) == 1 else StackedEvINR([model] * len(batch)).to(device)
            spent = fit(trained, [Window(events, *windows[k], sensor, args, device) for k in batch], args, tie_frame, log,
                        label=f" {name}/{len(windows)}" if len(windows) > 1 else "")
            steady_ms += spent.pop("steady_ms_per_iter")
            for part, value in spent.items():
                timings[part] += value
            if len(batch) > 1:
                fitted = trained.unstacked()
        for k in batch:
            if checkpoint is not None:
                model.load_state_dict(checkpoint["windows"][k])
            elif len(batch) > 1:
                model.load_state_dict(fitted[k - first])
            began = time.perf_counter()
            mine = np.flatnonzero(window_of == k)
            for index, frame in zip(mine, render(model, normalised(times[mine], *windows[k]), device)):
                images[index] = to_image(frame)
            timings["render_s"] += time.perf_counter() - began
            states.append({name: value.detach().cpu().clone() for name, value in model.state_dict().items()})
        if len(windows) > 1 and checkpoint is None:
            with torch.no_grad():
                tie_frame = model(torch.ones(1, device=device)).detach()
        progress.update(len(batch))
    progress.close()
    if writer is not None:
        writer.close()

    began = time.perf_counter()
    os.makedirs(os.path.join(work, "frames"))
    utils.write_frames(os.path.join(work, "frames"), images, progress=True)
    with open(os.path.join(work, "timestamps.txt"), "w") as f:
        f.writelines(f"{index} {t:.9f}\n" for index, t in enumerate(times))
    if not args.no_video:
        spacing = np.median(np.diff(times)) if len(times) > 1 else 1.0
        utils.write_video(os.path.join(work, "video.mp4"), images, fps=float(np.clip(1.0 / spacing, 1.0, 240.0)))
    write_preview(os.path.join(work, "preview.png"), events, sensor, times, images, aps_index)
    metrics = score(events, images, aps_index, times) if events.frames is not None else None
    if metrics is not None:
        with open(os.path.join(work, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    config = {name: value for name, value in vars(args).items()}
    config.update(data_path=os.path.abspath(data_path), H=int(sensor[0]), W=int(sensor[1]),
                  matmul_precision_used=torch.get_float32_matmul_precision())
    torch.save({"config": config, "windows": states}, os.path.join(work, "model.pt"))
    timings["write_s"] = time.perf_counter() - began
    if not args.render_only:
        # An iteration is one optimisation step; with stacked windows it advances every window
        # of its batch, so the cost per window and iteration is reported too.
        n_fits = -(-len(windows) // args.windows_batch)
        timings["ms_per_iter"] = 1000.0 * timings["train_s"] / (args.iters * n_fits)
        timings["ms_per_window_iter"] = 1000.0 * timings["train_s"] / (args.iters * len(windows))
        timings["ms_per_iter_median"] = float(np.median(steady_ms)) if steady_ms else None
    return {"config": config,
            "data": {"format": events.format, "num_events": len(events), "sensor": [int(v) for v in sensor],
                     "t_first": float(events.t[0]), "t_last": float(events.t[-1]),
                     "windows": [[float(b), float(e)] for b, e in windows]},
            "frames": {"count": len(times), "at": args.frames_at},
            "environment": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                            "threads": torch.get_num_threads()},
            "timings": timings,
            "metrics": {k: v for k, v in metrics.items() if k != "per_frame"} if metrics else None}


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        run(args)
    except (EventDataError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
