"""
Fit EvINR to an event recording and render the video: the fitting loop, the library call that
runs it, and the command line.

    python train.py                                   # the bundled slider_depth demo
    python train.py -n EXP -d DATA_PATH --H 180 --W 240
    python train.py -n EXP -d DATA_PATH --window 2    # a whole recording, 2 s at a time

From Python (no files written):

    from config import Config
    from event_data import load_events
    from train import reconstruct
    events, _ = load_events("recording.h5")        # (events, sensor size)
    result = reconstruct(events, Config(iters=500))
    result.frames                                     # uint8 [N, H, W], at result.times (seconds)

`run(config)` is the command line: load, fit (or render a saved fit), write the run folder
(experiment.py) batch by batch, and print a summary. Both go through one pipeline:
fit_batches yields fitted networks a batch of windows at a time, fitted_frames renders them.
"""

import dataclasses
import math
import os
import sys
import threading
import time

import numpy as np
import torch
from tqdm import tqdm

import command
import convergence
import denoise
import fanout
import utils
from config import (Config, UsageError, float32_matmul_precision, get_parser, matmul_precision,
                    resolve_device)
from event_data import EventDataError, chunk_boundaries, event_frames, open_events, validate
from experiment import (ExperimentWriter, config_for_render, demo_data, experiment_path,
                        load_checkpoint, networks_held)
from model import (SPATIAL_WEIGHT, StackedEvINR, channels, evinr_loss, make_model, query_times,
                   seam_loss, triton_available, window_edges)
from optim import learning_rates, make_optimizer, release_optimizer
from plan import (check_disk, check_memory, estimate, fit_spans, human_bytes, normalised,
                  parameter_count, plan, render_times, span_of)
from render import Reconstruction, fit_threshold, render, run_exposure


# -----------------------------------------------------------------------------
# fitting

class Window:
    """The events of one time window, read (from memory, or from disk for an EventFile) and moved
    to the device once, and their event frames."""

    def __init__(self, events, begin, end, sensor, config, device):
        first, last = events.positions(begin, side="left"), events.positions(end, side="right")
        if last <= first:
            raise EventDataError(events.path, f"no events between {begin:.6f} and {end:.6f} s")
        self.begin, self.end, self.sensor, self.config = begin, end, sensor, config
        began = time.perf_counter()
        part = events.rows(first, last)
        self.read_s = time.perf_counter() - began
        kept = denoise.filtered(part, sensor, config)  # without the events of sensor noise
        self.noise_events, part = len(part) - len(kept), kept
        self.t = part.t
        # moved as stored (int16, int8): a quarter of the bytes of int64 to copy to a GPU, and
        # no copy at all on the CPU; event_frames widens the indices where it needs them
        self.x, self.y, self.p = (torch.from_numpy(column).to(device)
                                  for column in (part.x, part.y, part.p))
        self.device = device

    def frames(self, n_chunks):
        """(event frames [n, C, H, W], boundary times [n+1], authors' chunk midpoints [n]), the
        times normalised."""
        n_chunks = min(n_chunks, len(self.t))
        config = self.config
        starts, times = chunk_boundaries(self.t, n_chunks, self.begin, self.end, config.chunking)
        frames = event_frames(self.x, self.y, self.p, starts, self.sensor, fit_threshold(config),
                              config.color_event)
        # The authors stamp each chunk with the midpoint of its first and last event.
        first = self.t[np.minimum(starts[:-1], len(self.t) - 1)]
        last = self.t[np.maximum(starts[1:] - 1, 0)]
        midpoints = np.where(starts[1:] > starts[:-1], 0.5 * (first + last),
                             0.5 * (times[:-1] + times[1:]))
        return frames, self.normalised(times), self.normalised(midpoints)

    def normalised(self, times):
        return torch.tensor(normalised(times, self.begin, self.end), dtype=torch.float32,
                            device=self.device)


def stage_frames(windows, n_chunks, stacked):
    """The event frames and query times of one coarse-to-fine stage: one window's, or every
    window's stacked on a leading dimension (all with the same number of chunks)."""
    n_chunks = min([n_chunks] + [len(window.t) for window in windows])
    per_window = [window.frames(n_chunks) for window in windows]
    return per_window[0] if not stacked else [torch.stack(parts) for parts in zip(*per_window)]


def with_spatial_weight(config, events, spans):
    """`config` with --spatial_weight auto made a number, the one every window of the run is fitted
    with: the authors' weight times the share of the sensor's pixels with events in the first
    span (one number, so that --windows_batch and --ray fit each window as a lone fit would). The
    regulariser acts on every pixel and the events on those that fired: on a large sensor where
    few pixels fire, the authors' weight flattens what the events say (docs/threshold.md)."""
    if config.setting("spatial_weight") != "auto":
        return config
    (begin, end), (height, width) = spans[0], (config.H, config.W)
    part = events.rows(events.positions(begin, side="left"), events.positions(end, side="right"))
    part = denoise.filtered(part, (height, width), config)  # the events the window is fitted to
    # np.unique, not a sensor-sized count: memory in proportion to the events
    fired = np.unique(part.y.astype(np.int64) * width + part.x)
    share = len(fired) / (height * width)
    return dataclasses.replace(config, spatial_weight=SPATIAL_WEIGHT * share)


def spatial_weight(config):
    """The weight a step uses: the run's (with_spatial_weight), or the authors' where a step is
    made outside a run with auto left unresolved."""
    weight = config.setting("spatial_weight")
    return SPATIAL_WEIGHT if weight == "auto" else float(weight)


def make_step(model, optimizer, frames, queries, config, tie_frame=None, n_windows=1):
    """One optimisation step on fixed inputs, as a function of nothing: every tensor it reads
    (event frames, query times, the tie frame, the parameters and the optimizer's state) stays
    at one address, so the step can be captured once as a CUDA graph and replayed. The gradients
    are let go before each backward, which creates them afresh: under a graph, once, from the
    graph's memory (see FusedAdamW). Returns (loss, parts) as device tensors; reading them is the
    only host synchronisation."""
    edge_times = torch.tensor([-1.0, 1.0], device=frames.device)
    spatial = spatial_weight(config)
    tied = config.window_tie != 0 and (tie_frame is not None or n_windows > 1)

    def step():
        loss, parts, log_frames = evinr_loss(model, queries, frames, config.loss, config.align,
                                             weights={"spatial": spatial}, fused=not config.plain,
                                             kernel=config.loss_kernel, per_network=True)
        if tied:
            edges = window_edges(model, log_frames, config, edge_times)
            loss = loss + config.window_tie * seam_loss(*edges, tie_frame)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), parts
    return step


def data_energy(frames, config):
    """Each window's mean squared event frame over the frames its data term compares, [K]: the
    data (temporal) term of a network that predicts no change at all, against which
    convergence.py judges a fit's."""
    frames = frames.reshape(-1, *frames.shape[-4:])
    if config.loss == "diff" and config.align == "midpoint":
        frames = frames[:, :-1]
    return frames.float().square().flatten(1).mean(1)


def stage_step(model, optimizer, windows, n_chunks, config, tie_frame, graphs):
    """(the step of one coarse-to-fine stage of `n_chunks` event frames, graphed when asked,
    each window's data_energy at that stage as a list)."""
    frames, boundaries, midpoints = stage_frames(windows, n_chunks, isinstance(model, StackedEvINR))
    queries = query_times(boundaries, midpoints, config.loss, config.align)
    step = make_step(model, optimizer, frames, queries, config, tie_frame, len(windows))
    if graphs:
        step = GraphedStep(step, fallback=config.cuda_graph == "auto")
    return step, data_energy(frames, config).tolist()


class GraphedStep:
    """Runs `step` eagerly for a few warm-up calls (on a side stream, as CUDA graph capture wants:
    the optimizer's state and cuBLAS's workspace are created there), then captures the next call
    as a CUDA graph and replays it for every later call. Every call is one real step: a capture
    only records, so the capturing call replays once. If capture fails, `fallback` says whether
    to go on eagerly (with a note) or to raise."""

    WARM_UP = 3

    def __init__(self, step, fallback=True):
        self.step, self.fallback = step, fallback
        self.calls, self.graph, self.outputs, self.failed = 0, None, None, False

    def eager(self):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self.step()
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def __call__(self):
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.calls <= self.WARM_UP or self.failed:
            return self.eager()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.outputs = self.step()
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            if not self.fallback:
                raise UsageError(f"--cuda_graph on: capturing a training step failed ({reason}); "
                                 "use --cuda_graph off") from None
            print(f"note: CUDA graph capture failed ({reason}); fitting with eager steps",
                  file=sys.stderr)
            self.failed = True
            torch.cuda.synchronize()
            return self.eager()
        self.graph = graph
        graph.replay()
        return self.outputs


def use_cuda_graph(config, device):
    return config.cuda_graph != "off" and device.type == "cuda"


def check_loss(total, config, when):
    """The loss, refused when it is not a number (a diverged fit)."""
    if not math.isfinite(total):
        raise UsageError(f"--lr {config.lr:g}: the loss became {total} by {when}, the fit "
                         f"diverged; lower --lr, or check --event_thresh ({config.event_thresh})")
    return total


def fit(model, windows, config, tie_frame=None, log=None, label=""):
    """Run the optimisation on a list of windows: one window for an EvINR, one per network for a
    StackedEvINR. `tie_frame`, the previous window's last log frame, pins the first window's
    first frame so brightness is continuous across windows. At each log point it calls
    `log(iteration, total, parts, energies)`: the loss, its terms per window (lists) and each
    window's event-frame energy at the current stage (data_energy). Returns the timings."""
    graphs = use_cuda_graph(config, windows[0].device)
    optimizer = make_optimizer(model, config)
    rates = learning_rates(config)
    # coarse to fine: the number of event frames doubles half-way
    stages = {0: config.train_resolution} if config.no_c2f else {
        0: config.train_resolution, config.iters // 2: 2 * config.train_resolution}
    timings = {"event_frames_s": 0.0, "train_s": 0.0}
    start = time.perf_counter()
    log_points = [(0, start)]  # (iteration, time): the loss read-out syncs the device anyway
    try:
        # closed on any error too, so that the error message gets a line of its own
        with tqdm(range(config.iters), desc=f"fitting{label}", unit="it", leave=False,
                  dynamic_ncols=True, disable=None) as bar:
            for iteration in bar:
                if iteration in stages:
                    began = time.perf_counter()
                    step, energies = stage_step(model, optimizer, windows, stages[iteration],
                                                config, tie_frame, graphs)
                    timings["event_frames_s"] += time.perf_counter() - began
                if rates is not None:
                    optimizer.param_groups[0]["lr"].fill_(rates[iteration])
                loss, parts = step()
                command.check_terminated()
                if (iteration + 1) % config.log_interval == 0 or iteration + 1 == config.iters:
                    # a host synchronisation: only here, so a CUDA graph replays undisturbed
                    total = check_loss(float(loss), config, f"iteration {iteration + 1}{label}")
                    log_points.append((iteration + 1, time.perf_counter()))
                    bar.set_postfix(loss=f"{total:.4g}")
                    if log is not None:
                        log(iteration, total, {name: value.reshape(-1).tolist()
                                               for name, value in parts.items()}, energies)
    finally:
        release_optimizer(model)
    timings["train_s"] = time.perf_counter() - start - timings["event_frames_s"]
    # The first interval holds the warm-up (allocation, first kernels, graph capture); the
    # median of the others is the steady-state cost per iteration.
    timings["steady_ms_per_iter"] = [1000.0 * (t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1)
                                     in zip(log_points[1:], log_points[2:])]
    return timings


# -----------------------------------------------------------------------------
# the pipeline: fitted batches of windows, rendered as they come

def check_kernels(config, device):
    """--loss_kernel or --output_kernel triton asks for Triton kernels: refuse the run when Triton
    is missing or cannot run them on `device` (CUDA; the CPU only in Triton's interpreter,
    TRITON_INTERPRET=1, which the tests use)."""
    for flag in ("loss_kernel", "output_kernel"):
        if getattr(config, flag) != "triton":
            continue
        if not triton_available():
            raise UsageError(f"--{flag} triton: the triton package is not installed "
                             f"(pip install triton), or use --{flag} auto")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise UsageError(f"--{flag} triton: Triton's kernels run on CUDA devices and this run "
                             f"is on {device}; use --{flag} auto")


def prepare(config, events):
    """The settings as they will be used, from a checked config with its preset applied
    (Config.resolved): the sensor from the events, the device and matmul precision resolved.
    Seeds torch's random generators."""
    if events.sensor is None:  # Events built by hand rather than by load_events: check them first
        events.sensor = tuple(int(v) for v in validate(events, (config.H, config.W)))
    height, width = events.sensor
    if config.color_event and (height % 2 or width % 2):
        raise EventDataError(events.path, "--color_event needs an even sensor size for the 2x2 "
                                          f"Bayer cells, got H={height}, W={width}")
    device = resolve_device(config.device)
    check_kernels(config, device)
    precision = matmul_precision(config.matmul_precision, device)
    torch.manual_seed(config.seed)
    return dataclasses.replace(config, H=int(height), W=int(width), device=str(device),
                               matmul_precision=precision)


def tensorboard_log(folder):
    """(a function logging a window's loss terms to TensorBoard under `folder`, the writer)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: "
                         "pip install tensorboard") from None
    writer = SummaryWriter(folder)

    def log(name, iteration, total, parts):
        for part, value in {"total": total, **parts}.items():
            writer.add_scalar(f"{name}/{part}", value, iteration)
    return log, writer


def fresh_network(model, n_windows, config, seed, device):
    """A network of `model`'s shape (stacked for a batch of windows) drawn from `seed`, torch's
    random state left as it was: what --retry refits a window from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = make_model((model.height, model.width), config)
    return (network if n_windows == 1 else StackedEvINR([network] * n_windows)).to(device)


def fit_windows(trained, windows, numbers, config, tie_frame, log, label):
    """Fit one batch of windows (numbered from 1: `numbers`) from `trained`, and with --retry N,
    while a window has not converged (convergence.verdict), again from fresh networks of seeds
    seed + 1000 k, k = 1..N, keeping the fit of the lowest final loss. Returns (the kept states,
    the timings of all attempts, the kept fit's loss record, its verdicts, its seed or None)."""
    best, spent_all, seeds = None, {}, [None] + [config.seed + 1000 * k for k in range(1, config.retry + 1)]
    for seed in seeds:
        if seed is not None:
            trained = fresh_network(trained, len(numbers), config, seed, windows[0].device)
        entries = []

        def record(iteration, total, parts, energies):
            entries.extend(convergence.loss_entries(numbers, iteration + 1, total, parts, energies))
            if log is not None:
                log(iteration, total, {name: float(np.mean(values)) for name, values in parts.items()})
        for part, value in fit(trained, windows, config, tie_frame, record, label).items():
            spent_all[part] = spent_all.get(part, 0.0 if part != "steady_ms_per_iter" else []) + value
        verdicts = [convergence.verdict(entries, number) for number in numbers]
        loss = convergence.final_loss(entries, numbers[0]) if entries else 0.0
        states = trained.unstacked() if len(numbers) > 1 else [trained.state_dict()]
        if best is None or loss < best[0]:
            best = (loss, states, entries, verdicts, seed)
        if all(result is None or result["converged"] for result in verdicts):
            break
    return best[1], spent_all, best[2], best[3], best[4]


def report_windows(record, verdicts, seed, events, config):
    """Add a batch's verdicts to the fit record, and warn (one line each) of those that did not converge."""
    for result in filter(None, verdicts):
        record["windows"].append({**result, "seed": config.seed if seed is None else seed})
        if not result["converged"]:
            convergence.warn(events.path or "events", result, config.retry)
        elif seed is not None:
            print(f"note: {events.path or 'events'}: window {result['window']} converged when refitted from "
                  f"--seed {seed}", file=sys.stderr)


def fit_batches(events, config, spans, timings, tensorboard_dir=None, record=None):
    """Fit the windows in order, config.windows_batch at a time, each batch starting from copies
    of the network fitted last (or of a fresh one), the first frame of each tied to the last of
    the window before. Yields (the batch's window indices, their state dicts on the CPU), so a
    caller can render and write each batch and let it go; fills `timings` as it goes, and with
    the costs per iteration once the last batch is done, and `record` (a dict, config.json's
    "fit") with the loss curve ("losses") and each window's convergence ("windows")."""
    device = torch.device(config.device)
    log, writer = tensorboard_log(tensorboard_dir) if tensorboard_dir else (None, None)
    timings.update(read_s=0.0, event_frames_s=0.0, train_s=0.0)
    record = {} if record is None else record
    record.update(losses=[], windows=[])
    steady_ms, tie_frame, model = [], None, make_model(events.sensor, config).to(device)
    batch_size, n_spans = config.windows_batch, len(spans)
    with tqdm(total=n_spans, desc="windows", unit="window", disable=True if n_spans == 1 else None,
              leave=False, dynamic_ncols=True) as progress:
        for first in range(0, n_spans, batch_size):
            batch = range(first, min(first + batch_size, n_spans))
            last = f"-{batch[-1] + 1}" if len(batch) > 1 else ""
            name = f"window{'s' if last else ''} {first + 1}{last}"
            trained = model if len(batch) == 1 else StackedEvINR([model] * len(batch)).to(device)
            windows = [Window(events, *spans[k], events.sensor, config, device) for k in batch]
            timings["read_s"] += sum(window.read_s for window in windows)
            if denoise.noise_filters_on(config):  # config.json's "fit" says how many were noise
                noise = sum(window.noise_events for window in windows)
                record["noise_events"] = record.get("noise_events", 0) + noise
            window_log = log and (lambda *logged, name=name: log(name, *logged))
            fitted, spent, entries, verdicts, seed = fit_windows(
                trained, windows, [k + 1 for k in batch], config, tie_frame, window_log,
                label=f" {name}/{n_spans}" if n_spans > 1 else "")
            del windows
            record["losses"] += entries
            report_windows(record, verdicts, seed, events, config)
            steady_ms += spent.pop("steady_ms_per_iter")
            for part, value in spent.items():
                timings[part] += value
            model.load_state_dict(fitted[-1])
            if n_spans > 1:
                with torch.no_grad():
                    tie_frame = model(torch.ones(1, device=device)).detach()
            yield batch, [{key: value.detach().cpu().clone() for key, value in state.items()}
                          for state in fitted]
            progress.update(len(batch))
    if writer is not None:
        writer.close()
    finish_timings(timings, config, n_spans, steady_ms)


def finish_timings(timings, config, n_spans, steady_ms):
    """The costs per iteration, once every batch is fitted. An iteration is one optimisation
    step; with stacked windows it advances every window of its batch, so the cost per window and
    iteration is reported too."""
    n_fits = -(-n_spans // config.windows_batch)
    timings["ms_per_iter"] = 1000.0 * timings["train_s"] / (config.iters * n_fits)
    timings["ms_per_window_iter"] = 1000.0 * timings["train_s"] / (config.iters * n_spans)
    timings["ms_per_iter_median"] = float(np.median(steady_ms)) if steady_ms else None
    timings["read_s_per_window"] = timings["read_s"] / n_spans


def fitted_frames(batches, config, spans, times, timings, exposure=None, log_frames=False):
    """The pipeline under `reconstruct` and `run`: for each (window indices, states) of `batches`
    (fit_batches, or a checkpoint's networks), the frames its windows render, as (indices into
    `times`, the Reconstruction of those frames, the states). The exposure (--event_thresh auto)
    is the first window's, for every batch, unless given."""
    owner = span_of(times, spans)
    timings["render_s"] = 0.0
    for batch, states in batches:
        if exposure is None:
            exposure = run_exposure(states, config)
        mine = np.flatnonzero((owner >= batch[0]) & (owner <= batch[-1]))
        part = render(states, spans[batch[0]:batch[-1] + 1], config, times[mine], log_frames,
                      exposure)
        timings["render_s"] += part.timings["render_s"]
        yield mine, part, states


def reconstruct(events, config=None, times=None, log_frames=False, tensorboard_dir=None):
    """Fit EvINR to `events` (an event_data.Events, e.g. from load_events) and render frames at
    `times` (seconds on the recording's clock; default: config.frames_at). No file is written."""
    config = config or Config()
    config.check()
    config = prepare(config.resolved(), events)
    with float32_matmul_precision(config.matmul_precision):
        config, spans, times = plan(events, config, times)
        check_memory(events, config, spans, len(times))
        config = with_spatial_weight(config, events, spans)
        timings, states, exposure, record = {}, [], None, {}
        color = (3,) if config.color_event else ()
        frames = np.zeros((len(times), config.H, config.W) + color, np.uint8)
        logs = np.zeros((len(times), channels(config), config.H, config.W), np.float32) \
            if log_frames else None
        batches = fit_batches(events, config, spans, timings, tensorboard_dir, record)
        for mine, part, fitted in fitted_frames(batches, config, spans, times, timings,
                                                log_frames=log_frames):
            states, exposure = states + fitted, part.exposure
            if mine.size:
                frames[mine] = part.frames
            if mine.size and log_frames:
                logs[mine] = part.log_frames
        return Reconstruction(frames=frames, times=times, states=states, spans=spans, config=config,
                              timings=timings, log_frames=logs, exposure=exposure, fit=record)


def window_runs(n_spans, n_workers):
    """Contiguous runs of windows, one per worker at most: [(first, end)] window indices."""
    edges = np.linspace(0, n_spans, min(n_workers, n_spans) + 1).round().astype(int)
    return [(int(first), int(end)) for first, end in zip(edges[:-1], edges[1:])]


def fit_run(data_path, config, spans):
    """One Ray task of --window --ray: open the recording where the task runs and fit these
    consecutive windows, the first from a fresh network (nothing to warm-start from or tie to)
    and the others as fit_batches chains them. Returns (their states, the timings, the fit
    record: fit_batches')."""
    events = open_events(data_path, sensor=(config.H, config.W), whole=False,
                         **config.reader_options())
    torch.manual_seed(config.seed)
    timings, record = {}, {}
    with float32_matmul_precision(config.matmul_precision):
        batches = fit_batches(events, config, spans, timings, record=record)
        states = [state for _, fitted in batches for state in fitted]
    return states, timings, record


def ray_batches(data_path, config, spans, timings, record):
    """fit_batches' yield, from runs of windows fitted in parallel as Ray tasks (fanout.py): a
    run starts untied, where fitting one after another ties every window to the one before."""
    data_path = os.path.abspath(data_path)  # where a worker finds it, whatever its folder
    resources = fanout.connect(config.ray).cluster_resources()
    workers = resources.get("GPU", 0) / config.gpus_per_fit or resources["CPU"]
    runs = window_runs(len(spans), int(workers))
    jobs = [(data_path, config, spans[first:end]) for first, end in runs]
    describe = lambda job: f"{data_path}, the windows from {job[2][0][0]:.3f} s"  # noqa: E731
    results = fanout.run_jobs(fit_run, jobs, config.ray, config.gpus_per_fit, describe)
    timings.update(read_s=0.0, event_frames_s=0.0, train_s=0.0)
    for (first, end), result in zip(runs, results):
        if isinstance(result, fanout.JobFailed):
            raise result.error
        states, part, run_record = result
        for key in ("losses", "windows"):  # numbered within the run: renumbered in the recording
            record.setdefault(key, []).extend({**entry, "window": entry["window"] + first}
                                              for entry in run_record[key])
        if "noise_events" in run_record:
            record["noise_events"] = record.get("noise_events", 0) + run_record["noise_events"]
        for name in ("read_s", "event_frames_s", "train_s"):
            timings[name] += part[name]
        yield range(first, end), states
    timings["ms_per_window_iter"] = 1000.0 * timings["train_s"] / (config.iters * len(spans))
    timings["ray_runs"] = len(runs)


# -----------------------------------------------------------------------------
# the command line

def start_device(device):
    """Initialise CUDA and load the first kernels in a thread, while the events are read: both
    take a second or more, and neither needs the other."""
    def touch():
        if device.type == "cuda":
            torch.cuda.init()
            probe = torch.ones(64, 64, device=device)
            torch.sin(probe @ probe).sum().item()
    thread = threading.Thread(target=touch, daemon=True)
    thread.start()
    return thread


def saved_batches(config, events, checkpoint):
    """For --render_only: (the config, the spans, the times, (window indices, states) per
    window) of a saved fit, checked against the recording."""
    _, states, spans, _ = checkpoint
    spans = spans or fit_spans(events, config)
    if len(spans) != len(states):
        raise EventDataError(config.render_only, f"holds {len(states)} networks for {len(spans)} "
                                                 f"windows of {events.path}")
    times = render_times(events, config, spans[0][0], spans[-1][1])
    return config, spans, times, ((range(k, k + 1), [states[k]]) for k in range(len(spans)))


def check_resources(events, config, spans, times, final):
    """Refuse a run whose memory or disk the machine lacks, before any work; returns the plan
    and its estimated cost, in words."""
    batch_size = config.windows_batch or 1
    network_bytes = 4 * parameter_count(events.sensor, config)
    frames_per_window = np.bincount(span_of(times, spans), minlength=len(spans))
    frames_per_batch = np.add.reduceat(frames_per_window, np.arange(0, len(spans), batch_size))
    held = networks_held(len(spans), network_bytes, batch_size)
    check_memory(events, config, spans, int(frames_per_batch.max()),
                 training=not config.render_only, held_networks=held)
    frame_bytes = len(times) * events.sensor[0] * events.sensor[1] * channels(config)
    check_disk(final, network_bytes * len(spans) + frame_bytes,
               f"{len(spans)} networks of {human_bytes(network_bytes)} and {len(times)} frames")
    return estimate(events, config, spans, len(times), held)


def summary_line(summary, n_frames, final):
    """The last line a run prints: frames, folder, time, and the scores and C where known."""
    timings, metrics = summary["timings"], summary.get("metrics")
    line = f"wrote {n_frames} frames to {final} in {timings['total_s']:.1f} s"
    if "ms_per_iter" in timings:
        line += f" ({timings['ms_per_iter']:.1f} ms/iteration)"
    if metrics:
        scores = [f"MSE {metrics['mse']:.4f}"] + [f"{name.upper()} {metrics[name]:.3f}"
                                                   for name in ("ssim", "lpips")
                                                   if metrics.get(name) is not None]
        line += f", {' '.join(scores)} over {metrics['n_frames']} APS frames"
    if summary.get("auto_threshold"):
        line += f", auto C {summary['auto_threshold']['event_thresh']:.3f}"
    return line


def run(config):
    """Load, then fit (or render config.render_only) and write batch by batch, then publish.
    Returns config.json's content, with the folder it went to under "folder"."""
    wall_start = time.perf_counter()
    config.check()
    config = config.resolved()
    data_path = config.data_path or demo_data()
    checkpoint = load_checkpoint(config.render_only) if config.render_only else None
    if config.ray is not None:
        fanout.require_ray()
    if not config.no_video and not utils.video_available():
        print("note: video.mp4 skipped: writing it needs the imageio-ffmpeg package "
              "(pip install imageio-ffmpeg)", file=sys.stderr)
        config = dataclasses.replace(config, no_video=True)
    warm_up = start_device(resolve_device(config.device))
    began = time.perf_counter()
    # With --window, a file that can be read by position stays on disk and each window's events
    # are read when it is fitted: memory then holds one batch of windows, however long.
    events = open_events(data_path, sensor=(config.H, config.W), whole=not config.window,
                         **config.reader_options())
    timings = {"load_s": time.perf_counter() - began}
    warm_up.join()
    final = experiment_path(config, data_path)
    config = prepare(config, events)
    with float32_matmul_precision(config.matmul_precision):
        if checkpoint:
            config, spans, times, batches = saved_batches(config, events, checkpoint)
        else:
            config, spans, times = plan(events, config)
        print(f"plan: {check_resources(events, config, spans, times, final)}", file=sys.stderr)
        if not checkpoint:  # after the plan is checked: it reads the first window
            config = with_spatial_weight(config, events, spans)
        try:
            record = {}  # the loss curve and convergence, filled as the windows are fitted
            with command.staged_folder(final, replace=config.overwrite) as work:
                if not checkpoint and config.ray and len(spans) > 1:
                    batches = ray_batches(data_path, config, spans, timings, record)
                elif not checkpoint:
                    board = os.path.join(work, "tensorboard") if config.tensorboard else None
                    batches = fit_batches(events, config, spans, timings, board, record)
                with ExperimentWriter(work, config, events, times, spans) as writer:
                    exposure = checkpoint[3] if checkpoint else None
                    for mine, part, fitted in fitted_frames(batches, config, spans, times, timings,
                                                            exposure):
                        writer.exposure = part.exposure
                        writer.add(mine, part.frames, fitted)
                    summary = writer.finish(timings, started=wall_start, fit=record)
        except OSError as error:
            if error.filename is None:  # a failed write() names no file
                error.filename = final
            raise
    print(summary_line(summary, len(times), final))
    return {**summary, "folder": final}


def main(argv=None):
    """The command line. Exit status: 0 done, 2 bad input or flags, 1 a failure of the
    environment (disk full, folder not writable, out of memory), 130 interrupted (Ctrl-C,
    SIGTERM, SIGHUP); an error is one line, `error: PATH: problem`, and leaves nothing behind."""
    command.prepare_command_line()
    parser = get_parser(suppress_defaults=True, prog=command.program_name())
    given = vars(parser.parse_args(argv))
    source = given.get("data_path") or given.get("render_only") or demo_data()
    hint = "; lower --net_width, --train_resolution or --window"
    with command.exit_status((EventDataError, UsageError), given.get("output_dir", "runs"),
                             source=source, memory_hint=hint):
        render_only = given.get("render_only")
        run(config_for_render(render_only, given) if render_only else Config(**given))


if __name__ == "__main__":
    main()
