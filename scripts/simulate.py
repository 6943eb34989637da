"""
An ideal event camera simulator, for tests and benchmarks with a known ground truth.

A video is a function `render(times) -> float64 [len(times), H, W]` of log intensity. The ideal
sensor keeps a reference level per pixel, starting at the log intensity at t=0, and fires an
event each time the log intensity reaches reference +- threshold; each event moves the reference
by exactly one threshold. There is no noise, no refractory period and no bandwidth limit, so
after all events every pixel satisfies

    L(t_end) - L(0) = threshold * (sum of its polarities) + r,   |r| < threshold.

The video is sampled at fine time steps and assumed linear between two samples: a pixel that
crosses several levels within one step fires once per level, at times interpolated linearly.

Run `python scripts/simulate.py OUT_FOLDER` to write a sequence in the authors' layout
(events.npy, images/, images.txt).
"""

import argparse
import os

import numpy as np

PAN_DIRECTION = (np.cos(0.5), np.sin(0.5))  # (x, y) unit vector; an irrational slope never retraces the periodic texture
BLOCK_BYTES = 2 * 2**20                      # frames rendered at once; small enough to stay in cache
INITIAL_STEP_COUNT = 256                     # adaptive stepping starts from duration / this


# -----------------------------------------------------------------------------
# synthetic videos

def _periodic_blur(image, sigma):
    """Gaussian blur in the Fourier domain: the result wraps around, so textures tile seamlessly."""
    freq_y = np.fft.fftfreq(image.shape[0])[:, None]
    freq_x = np.fft.rfftfreq(image.shape[1])[None, :]
    gain = np.exp(-2 * np.pi**2 * sigma**2 * (freq_y**2 + freq_x**2))
    return np.fft.irfft2(np.fft.rfft2(image) * gain, s=image.shape)


def textured_image(height, width, seed=0, smoothness=6.0):
    """A periodic random log-intensity texture: blurred noise at two scales plus a few soft-edged
    disks and rectangles. float64 [H, W], within (-1.5, 1.5).

    `smoothness` is the blur (Gaussian sigma, pixels) of the fine noise. Shape edges are blurred by
    one pixel so the spatial gradient stays bounded, and with it the number of time steps the
    simulator needs."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((height, width))
    for sigma, weight in ((smoothness, 0.6), (4 * smoothness, 1.0)):
        noise = _periodic_blur(rng.standard_normal((height, width)), sigma)
        texture += weight * noise / noise.std()

    rows = np.arange(height)[:, None]
    columns = np.arange(width)[None, :]
    shapes = np.zeros((height, width))
    for _ in range(8):
        center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
        half_height, half_width = rng.uniform(0.04, 0.15, size=2) * min(height, width)
        contrast = rng.choice([-1, 1]) * rng.uniform(0.8, 1.6)
        # signed distances that wrap around, so shapes crossing the border stay seamless
        dy = (rows - center_y + height / 2) % height - height / 2
        dx = (columns - center_x + width / 2) % width - width / 2
        if rng.random() < 0.5:  # a disk, its radius the half height
            inside = dy**2 + dx**2 < half_height**2
        else:
            inside = (np.abs(dy) < half_height) & (np.abs(dx) < half_width)
        shapes += contrast * inside
    texture += _periodic_blur(shapes, 1.0)

    # normalised by the standard deviation, not the maximum, so that the statistics do not depend on
    # the image size; tanh keeps the rare extremes inside (-1.5, 1.5)
    texture = (texture - texture.mean()) / texture.std()
    return 1.5 * np.tanh(0.5 * texture)


def image_texture(name, height, width):
    """The log intensity of a photograph (one of scikit-image's bundled images, e.g. "camera",
    "coffee", "astronaut", "chelsea", "coins", "rocket", or a path), gray, resized to H x W and
    mirrored into a seamless periodic 2H x 2W texture: log(I + 0.02), I in [0, 1], so a black
    pixel sits about 4 below a white one, as a sensor with some dark current sees it."""
    import cv2
    folder = os.path.join(os.path.dirname(__import__("skimage.data").data.__file__))
    path = name if os.path.isfile(name) else next((os.path.join(folder, file) for file in sorted(os.listdir(folder))
                                                   if os.path.splitext(file)[0] == name), None)
    image = None if path is None else cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"no image {name!r} among scikit-image's bundled images or on disk")
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    mirrored = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    return np.log(mirrored + 0.02)


def moving_texture(height, width, duration, path="pan", seed=0, speed=40.0, texture=None):
    """A video of a periodic texture, twice the view in each dimension, moving behind an H x W view.
    `texture`: the log intensity [2H, 2W] to move (default: textured_image's, of `seed`).

    path "pan": constant velocity `speed` (pixels/s) along PAN_DIRECTION.
    path "circle": one turn of a circle over `duration` at `speed`, so the last frame equals the first
    (the pan does not need `duration`: the periodic texture never runs out).
    Returns render(times) -> float64 [len(times), H, W]. Sub-pixel positions are interpolated
    bilinearly in exact floating point (cv2.remap quantises positions to 1/32 pixel, which would
    make the video a staircase in time). render.offset(times) -> (offset_x, offset_y) is the known
    path: the view shows texture[y + offset_y, x + offset_x], wrapped."""
    texture = textured_image(2 * height, 2 * width, seed) if texture is None else texture
    # padded by wrapping, so every view window, wherever the path puts it, is a plain slice
    padded = np.pad(texture, ((0, height + 1), (0, width + 1)), mode="wrap")

    if path == "pan":
        def offset(times):
            times = np.asarray(times, dtype=np.float64)
            return speed * PAN_DIRECTION[0] * times, speed * PAN_DIRECTION[1] * times
    elif path == "circle":
        radius = speed * duration / (2 * np.pi)
        def offset(times):
            angle = 2 * np.pi * np.asarray(times, dtype=np.float64) / duration
            return radius * (1 - np.cos(angle)), radius * np.sin(angle)
    else:
        raise ValueError(f"unknown path {path!r}: expected 'pan' or 'circle'")

    def render(times):
        offset_x, offset_y = offset(np.atleast_1d(times))
        frames = np.empty((len(offset_x), height, width))
        for frame, shift_x, shift_y in zip(frames, offset_x, offset_y):
            _view(padded, texture.shape, shift_x, shift_y, frame)
        return frames

    render.offset = offset
    render.texture = texture
    return render


def _view(padded, texture_shape, shift_x, shift_y, out):
    """out[y, x] = texture[y + shift_y, x + shift_x], wrapped and bilinearly interpolated, from
    the texture `padded` by wrapping with out's size + 1 (so every view is a plain slice)."""
    height, width = out.shape
    column, row = int(np.floor(shift_x)), int(np.floor(shift_y))
    frac_x, frac_y = shift_x - column, shift_y - row
    row, column = row % texture_shape[0], column % texture_shape[1]
    window = padded[row:row + height + 1, column:column + width + 1]
    np.multiply(window[:-1, :-1], (1 - frac_y) * (1 - frac_x), out=out)
    out += (1 - frac_y) * frac_x * window[:-1, 1:]
    out += frac_y * (1 - frac_x) * window[1:, :-1]
    out += frac_y * frac_x * window[1:, 1:]
    return out


def moving_object(background, texture, speed, radius_fraction=0.3):
    """A still camera over a still scene (`background`, log intensity [H, W]) crossed by one
    object: a disk of radius `radius_fraction` * H carrying `texture` (log intensity, periodic,
    at least H x W), moving left to right at `speed` pixels/s from a quarter of the width, its
    edge anti-aliased over one pixel. Only the object fires events, as a parked camera over a
    street sees cars and not the street. Returns render(times) -> float64 [len(times), H, W]."""
    height, width = background.shape
    radius = radius_fraction * height
    padded = np.pad(texture, ((0, height + 1), (0, width + 1)), mode="wrap")
    rows, columns = np.arange(height)[:, None], np.arange(width)[None, :]

    def render(times):
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        frames = np.empty((len(times), height, width))
        carried = np.empty((height, width))
        for frame, t in zip(frames, times):
            center_x, center_y = 0.25 * width + speed * t, 0.5 * height
            inside = np.clip(radius - np.hypot(columns - center_x, rows - center_y) + 0.5, 0.0, 1.0)
            _view(padded, texture.shape, -(center_x - 0.25 * width), 0.0, carried)  # the texture moves with it
            np.multiply(1.0 - inside, background, out=frame)
            frame += inside * carried
        return frames

    return render


def with_contrast(log_texture, gain):
    """The log texture with its contrast scaled by `gain` about its mean (gain 2: a scene of twice
    the log contrast, whose brightest parts a metered camera clips)."""
    mean = log_texture.mean()
    return mean + gain * (log_texture - mean)


# -----------------------------------------------------------------------------
# the simulator

def _block_events(times, frames, fired, thresholds, width):
    """Turn one block's threshold crossings into events sorted by time.

    times: [S+1] sample times, frames: [S+1, H*W] log intensity (row 0 is the last sample of the
    previous block); fired: (step s from frames[s] to frames[s+1], pixels, their signed crossing
    counts, their reference levels before the step) for every step where some pixel fired;
    thresholds: [H*W], each pixel's."""
    step_index = np.concatenate([np.full(len(pixels), s) for s, pixels, _, _ in fired])
    pixel = np.concatenate([pixels for _, pixels, _, _ in fired])
    crossings = np.concatenate([counts for _, _, counts, _ in fired])
    reference = np.concatenate([levels for _, _, _, levels in fired])

    counts = np.abs(crossings)
    owner = np.repeat(np.arange(len(counts)), counts)  # which (step, pixel) each event comes from
    nth = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    polarity = np.sign(crossings)[owner]
    level = reference[owner] + thresholds[pixel][owner] * polarity * nth

    start = frames[step_index, pixel]
    span = frames[step_index + 1, pixel] - start
    # a crossing with no change (only possible by rounding at the level itself) fires at the step start
    span[span == 0] = np.inf
    fraction = np.clip((level - start[owner]) / span[owner], 0.0, 1.0)
    t = times[step_index][owner] + fraction * (times[step_index + 1] - times[step_index])[owner]

    order = np.argsort(t, kind="stable")  # stable: a pixel's crossings in one step keep their order
    pixel = pixel[owner][order]
    return t[order], (pixel % width).astype(np.int16), (pixel // width).astype(np.int16), polarity[order].astype(np.int8)


def _threshold_crossings(frames, initial, thresholds, reference, net_count, distance, fires):
    """[(step, pixels, signed counts, references before)] of the pixels whose log intensity moved
    a whole threshold or more from its reference at each of `frames` after the first; updates
    `reference` and `net_count` in place (`distance` and `fires` are scratch arrays)."""
    fired = []
    for s in range(1, len(frames)):
        # the hot loop: in-place passes over the frame, then work on the few pixels that fire
        np.subtract(frames[s], reference, out=distance)
        np.abs(distance, out=distance)
        np.greater_equal(distance, thresholds, out=fires)
        pixels = np.flatnonzero(fires)
        if len(pixels):
            # truncation toward zero: the number of whole thresholds passed, signed by direction
            counts = np.trunc((frames[s][pixels] - reference[pixels]) / thresholds[pixels]).astype(np.int64)
            fired.append((s - 1, pixels, counts, reference[pixels]))
            net_count[pixels] += counts
            # recomputed from the count, not accumulated, so the reference never drifts by rounding
            reference[pixels] = initial[pixels] + thresholds[pixels] * net_count[pixels]
    return fired


def simulate_events(render, duration, threshold=0.2, substeps=None, seed=0, threshold_spread=0.0):
    """Ideal events of the video `render` over [0, duration].

    substeps: number of equal time steps over the duration; None picks steps adaptively so that no
    pixel changes by more than one threshold between two samples (several crossings per step are
    handled either way). threshold_spread: each pixel's threshold is `threshold` times
    1 + threshold_spread * N(0, 1) (at least a quarter of it), drawn with `seed`, as real
    sensors' thresholds vary from pixel to pixel; with no spread the model draws nothing.
    Returns {"t": float64 [N] sorted, "x": int16 [N] column, "y": int16 [N] row, "p": int8 [N],
    "sensor": (H, W), "threshold": threshold}."""
    first = np.asarray(render(np.zeros(1)), dtype=np.float64)[0]
    height, width = first.shape
    initial = first.ravel()
    thresholds = np.full(initial.shape, float(threshold))
    if threshold_spread:
        spread = np.random.default_rng(seed).standard_normal(initial.shape)
        thresholds *= np.maximum(1.0 + threshold_spread * spread, 0.25)
    smallest = thresholds.min()
    net_count = np.zeros(height * width, dtype=np.int64)  # sum of polarities so far, per pixel
    reference = initial.copy()
    distance = np.empty_like(initial)        # |log intensity - reference|, per pixel
    fires = np.empty(initial.shape, dtype=bool)
    frames_per_block = int(np.clip(BLOCK_BYTES // (8 * height * width), 2, 512))

    adaptive = substeps is None
    time_step = duration / INITIAL_STEP_COUNT
    grid = None if adaptive else np.linspace(0.0, duration, substeps + 1)  # ends exactly at duration
    min_time_step = duration * 1e-9  # a true jump in the video never gets under a threshold; stop refining
    t_prev, frame_prev, steps_done = 0.0, initial, 0
    chunks = []
    while t_prev < duration:
        if adaptive:
            times = t_prev + time_step * np.arange(1, frames_per_block + 1)
            if times[-1] >= duration:
                times = np.append(times[times < duration], duration)
        else:
            times = grid[steps_done + 1:steps_done + 1 + frames_per_block]
        frames = np.asarray(render(times), dtype=np.float64).reshape(len(times), -1)
        frames = np.concatenate([frame_prev[None], frames])

        if adaptive:
            change = np.abs(np.diff(frames, axis=0)).max()
            if change > smallest and time_step > min_time_step:  # too coarse: redo the block finer
                time_step = max(time_step * 0.9 * smallest / change, min_time_step)
                continue
            if change < 0.5 * smallest:  # grow, but at most double, for the next block
                time_step *= min(2.0, 0.9 * smallest / max(change, 1e-12))

        fired = _threshold_crossings(frames, initial, thresholds, reference, net_count, distance, fires)
        if fired:
            block_times = np.concatenate([[t_prev], times])
            chunks.append(_block_events(block_times, frames, fired, thresholds, width))
        t_prev, frame_prev, steps_done = times[-1], frames[-1], steps_done + len(times)

    # blocks cover consecutive time intervals and are sorted inside, so joining them keeps the order
    columns = [np.concatenate([chunk[i] for chunk in chunks]) if chunks else np.zeros(0, dtype)
               for i, dtype in enumerate((np.float64, np.int16, np.int16, np.int8))]
    t, x, y, p = columns
    return {"t": t, "x": x, "y": y, "p": p, "sensor": (height, width), "threshold": threshold}


def sensor_noise(events, duration, noise_rate=0.0, hot_pixels=0, hot_rate=0.0, refractory=0.0, seed=0):
    """What a real sensor adds to and takes from ideal `events` (simulate_events' dict; a new dict
    is returned): background noise events at `noise_rate` per pixel and second (uniform times,
    pixels and polarities); `hot_pixels` pixels firing positive events at `hot_rate` per second;
    then a refractory period: an event closer than `refractory` seconds to the last event its
    pixel fired is dropped."""
    rng = np.random.default_rng(seed)
    height, width = events["sensor"]
    n_noise = rng.poisson(noise_rate * height * width * duration)
    hot = rng.choice(height * width, size=hot_pixels, replace=False)
    n_hot = rng.poisson(hot_rate * duration, size=hot_pixels)
    hot_pixel = np.repeat(hot, n_hot)
    t = np.concatenate([events["t"], rng.uniform(0, duration, n_noise), rng.uniform(0, duration, n_hot.sum())])
    pixel = np.concatenate([events["y"].astype(np.int64) * width + events["x"], rng.integers(0, height * width, n_noise), hot_pixel])
    p = np.concatenate([events["p"], rng.choice(np.array([-1, 1], np.int8), n_noise), np.ones(n_hot.sum(), np.int8)])
    order = np.argsort(t, kind="stable")
    t, pixel, p = t[order], pixel[order], p[order]
    if refractory > 0:
        by_pixel = np.lexsort((t, pixel))  # each pixel's events in time order
        keep = np.ones(len(t), dtype=bool)
        last_pixel, last_t = -1, -np.inf
        for index, pixel_now, t_now in zip(by_pixel.tolist(), pixel[by_pixel].tolist(), t[by_pixel].tolist()):
            if pixel_now == last_pixel and t_now - last_t < refractory:
                keep[index] = False  # within the refractory period of the pixel's last event fired
            else:
                last_pixel, last_t = pixel_now, t_now
        t, pixel, p = t[keep], pixel[keep], p[keep]
    return {**events, "t": t, "x": (pixel % width).astype(np.int16), "y": (pixel // width).astype(np.int16), "p": p}


# -----------------------------------------------------------------------------
# files and workloads

def events_array(events):
    """[N, 4] float64 rows (t, x, y, p): the authors' events.npy layout."""
    return np.stack([events["t"], events["x"], events["y"], events["p"]], axis=1).astype(np.float64)


# A camera metered as light meters are calibrated: the scene's mean to 18% of full scale. A DAVIS
# frame is linear, and IJRR's slider_depth frames average 0.22; the peak-metered default
# gives frames of mean 0.3-0.65.
METERED_GREY = 0.18


def aps_frames(render, frame_times, grey=None):
    """APS frames as uint8 from a linear camera whose exposure is set once for the sequence:
    with `grey` None, so that its brightest pixel just reaches 255; with a `grey` in (0, 1), so
    that its mean intensity is that fraction of full scale, brighter pixels saturating at 255."""
    log_intensity = render(np.asarray(frame_times, dtype=np.float64))
    intensity = np.exp(log_intensity - log_intensity.max())
    if grey is not None:
        intensity *= grey / intensity.mean()
    return np.clip(np.round(255 * intensity), 0, 255).astype(np.uint8)


def write_sequence(folder, render, events, frame_times, grey=None):
    """Write events.npy, images/frame_%08d.png and images.txt ('t images/frame_XXXXXXXX.png'), the
    frames from aps_frames (`grey`: its metering)."""
    import cv2
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    np.save(os.path.join(folder, "events.npy"), events_array(events))
    lines = []
    for index, (t, frame) in enumerate(zip(frame_times, aps_frames(render, frame_times, grey))):
        name = f"images/frame_{index:08d}.png"
        if not cv2.imwrite(os.path.join(folder, name), frame):
            raise OSError(f"could not write {os.path.join(folder, name)}")
        lines.append(f"{t:.9f} {name}\n")
    with open(os.path.join(folder, "images.txt"), "w") as f:
        f.writelines(lines)


def standard_workload(height=180, width=240, duration=2.0, target_events=7_000_000, seed=0):
    """A pan at threshold 0.2 whose speed is chosen so that about `target_events` events fire.
    Returns (render, events). Used by the speed benchmark."""
    threshold = 0.2
    texture = textured_image(2 * height, 2 * width, seed)  # the same texture moving_texture makes
    grad_y, grad_x = np.gradient(texture)
    along_path = np.abs(PAN_DIRECTION[0] * grad_x + PAN_DIRECTION[1] * grad_y).mean()
    # every pixel fires about |dL/dt| / threshold events per second, with |dL/dt| = speed * along_path
    speed = target_events * threshold / (height * width * duration * along_path)
    # the estimate ignores the events lost where the log intensity turns back; a probe over the
    # first eighth of the duration measures the real rate, which scales with the speed
    probe_duration = duration / 8
    probe = simulate_events(moving_texture(height, width, duration, "pan", seed, speed), probe_duration, threshold)
    speed *= target_events * probe_duration / duration / max(len(probe["t"]), 1)
    render = moving_texture(height, width, duration, "pan", seed, speed)
    return render, simulate_events(render, duration, threshold)


def main():
    parser = argparse.ArgumentParser(description="Write a synthetic event sequence (moving texture, ideal events).")
    parser.add_argument("out_folder")
    parser.add_argument("--H", type=int, default=180, help="rows")
    parser.add_argument("--W", type=int, default=240, help="columns")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds")
    parser.add_argument("--threshold", type=float, default=0.2, help="contrast threshold (log intensity)")
    parser.add_argument("--fps", type=float, default=25.0, help="APS frame rate")
    parser.add_argument("--path", default="pan", choices=["pan", "circle"])
    parser.add_argument("--speed", type=float, default=40.0, help="pixels per second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    render = moving_texture(args.H, args.W, args.duration, args.path, args.seed, args.speed)
    events = simulate_events(render, args.duration, args.threshold, seed=args.seed)
    frame_times = np.arange(int(np.floor(args.duration * args.fps + 1e-9)) + 1) / args.fps
    write_sequence(args.out_folder, render, events, frame_times)
    print(f"{args.out_folder}: {len(events['t'])} events, {len(frame_times)} frames, "
          f"{args.W}x{args.H} (WxH), {args.duration} s, threshold {args.threshold}, {args.path} at {args.speed} px/s")


if __name__ == "__main__":
    main()
