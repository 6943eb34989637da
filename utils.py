"""
Images, videos (PNG frames written in parallel), previews, and the reconstruction metrics (MSE,
SSIM, LPIPS).

The metrics follow the EVREAL protocol (docs/evaluation.md): gray images as floats in [0, 1], the
prediction clipped to [0, 1], optional histogram equalisation of both images, then MSE, SSIM
(Gaussian weights, as skimage) and LPIPS v0.1 AlexNet (lpips.py); `score_reconstruction`
applies EVREAL's rules for which frames count.
"""

import concurrent.futures
import os
import platform
import queue
import threading

import cv2
import imageio.v2 as imageio
import numpy as np
from tqdm import tqdm

from lpips import lpips

# -----------------------------------------------------------------------------
# images


def tone_map_to_uint8(image):
    """Float image in [0, 1] ([H, W] or [H, W, 3]) -> uint8, clipped then rounded.

    np.rint rounds half to even, the same as skimage's img_as_ubyte that EVREAL uses."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return np.rint(image * 255.0).astype(np.uint8)


def _as_rgb(image):
    """uint8 gray [H, W] (or [H, W, 1]) or RGB [H, W, 3] -> RGB [H, W, 3]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected a gray [H, W] or RGB [H, W, 3] image, got shape {image.shape}")


def write_png(path, image_uint8):
    """Write a uint8 gray [H, W] or RGB [H, W, 3] image (RGB order) as PNG, creating its folder.

    The PNG is encoded in memory and written with Python's open(), so any path Python can open
    works: str or bytes, names that are not valid UTF-8 included (cv2.imwrite fails on those).
    The bytes are the ones cv2.imwrite writes. Safe to call from several threads at once."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise TypeError(f"write_png wants uint8 (see tone_map_to_uint8), got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(_as_rgb(image), cv2.COLOR_RGB2BGR)  # OpenCV stores BGR
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path!r} as PNG")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(encoded)


def cpu_name():
    """The processor's model name (for timings: CPUs with and without AMX differ by 1.7x here)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def gray_float(image_uint8):
    """uint8 gray [H, W] or RGB [H, W, 3] -> gray float [H, W] in [0, 1], the form the metrics
    take (colour converted with OpenCV's BT.601 weights, as read_gray does)."""
    image = np.asarray(image_uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float64) / 255.0




def event_frame_to_rgb(event_frame, percentile=99.0):
    """Signed per-pixel event sum [H, W] -> uint8 RGB: white where nothing happened, red for
    positive and blue for negative, saturating at a robust maximum (a percentile of the
    non-zero magnitudes) so that a few hot pixels do not wash out the rest."""
    frame = np.asarray(event_frame, dtype=np.float32)
    if frame.ndim != 2:
        raise ValueError(f"expected an event frame [H, W], got shape {frame.shape}")
    magnitude = np.abs(frame)
    active = magnitude[magnitude > 0]
    scale = np.percentile(active, percentile) if active.size else 1.0
    strength = np.clip(magnitude / scale, 0.0, 1.0)
    fade = 1.0 - strength  # the two colour channels a polarity does not own fade towards 0
    rgb = np.ones(frame.shape + (3,), dtype=np.float32)
    positive, negative = frame > 0, frame < 0
    rgb[positive, 1] = rgb[positive, 2] = fade[positive]
    rgb[negative, 0] = rgb[negative, 1] = fade[negative]
    return tone_map_to_uint8(rgb)


CAPTION_HEIGHT = 18  # pixels of white caption strip above every preview cell


def make_preview(path, columns):
    """Write a PNG grid. `columns` is a list of rows (one row per time point); each row is a
    list of cells, a cell being a uint8 image (gray or RGB) or an (image, caption) pair, e.g.
    [(event_rgb, "events"), (reconstruction, "EvINR"), (aps, "APS")]. All images share H, W.
    Every cell gets a caption strip on top, so the image content itself is never covered."""
    rows = [[cell if isinstance(cell, tuple) else (cell, "") for cell in row] for row in columns]
    if not rows or not any(rows):
        raise ValueError("make_preview needs at least one image")
    sizes = {np.asarray(image).shape[:2] for row in rows for image, _ in row}
    if len(sizes) != 1:
        raise ValueError(f"preview images must share one size, got {sorted(sizes)}")
    (height, width), n_columns = sizes.pop(), max(len(row) for row in rows)
    cell_height = CAPTION_HEIGHT + height
    grid = np.full((len(rows) * cell_height, n_columns * width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            top, left = r * cell_height, c * width
            grid[top + CAPTION_HEIGHT:top + cell_height, left:left + width] = _as_rgb(image)
            cv2.putText(grid, caption or "", (left + 3, top + CAPTION_HEIGHT - 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    write_png(path, grid)


PREVIEW_ROWS = 4  # time points in a preview


def preview_picks(count, n_rows=PREVIEW_ROWS):
    """Indices of up to n_rows evenly spread items of `count`."""
    return np.unique(np.linspace(0, count - 1, min(n_rows, count)).round().astype(int)) if count else np.zeros(0, int)


def write_preview(path, times, columns):
    """A preview grid: one row per time, one column per (title, images) pair of `columns` (one
    image per time, or None where a column has nothing at that time). The first cell of a row is
    captioned with its time."""
    blank = np.full(np.shape(next(image for _, images in columns for image in images if image is not None))[:2], 255, np.uint8)
    rows = []
    for k, t in enumerate(times):
        row = []
        for c, (title, images) in enumerate(columns):
            caption = f"{title} {t:.3f}s" if c == 0 else title[:28]
            row.append((images[k] if images[k] is not None else blank, caption if images[k] is not None else ""))
        rows.append(row)
    make_preview(path, rows)


# -----------------------------------------------------------------------------
# video


def write_video(path, frames_uint8, fps):
    """Write uint8 frames ([H, W] or [H, W, 3], all one size) as an H.264 mp4; returns the
    number of frames written. libx264 with yuv420p needs even sizes: an odd size is padded by
    repeating the last row/column (imageio's default would instead rescale the content)."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    n_frames = 0
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                macro_block_size=1, ffmpeg_log_level="error")
    try:
        for frame in frames_uint8:
            frame = _as_rgb(frame)
            pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
            writer.append_data(np.pad(frame, pad, mode="edge"))
            n_frames += 1
    finally:
        writer.close()
    if n_frames == 0:
        os.remove(path)
        raise ValueError(f"no frames given for {path}")
    return n_frames


class FrameWriter:
    """Writes numbered PNG frames, folder/frame_%010d.png, on a pool of threads and, optionally,
    the same frames as an mp4, while the caller goes on producing (e.g. rendering) the next ones:

        with FrameWriter("out/frames", video="out/video.mp4", fps=30.0) as writer:
            for batch in batches:
                writer.extend(batch)
        # here every PNG is on disk and the video is closed

    Frames are numbered in the order they are appended, from start_index, and the video gets
    them in that order. PNG encoding (cv2.imencode) and file writes release the GIL, so the
    `workers` threads (default min(8, CPUs)) run in parallel. One more thread feeds the video
    writer from the same arrays, so the video is encoded alongside the PNGs and never from PNGs
    read back. At most `pending` frames (default 4 per worker) wait for each of the two; append
    blocks beyond that, so memory stays bounded however fast frames come. An appended array is
    read later by those threads: do not modify it afterwards.

    The first error of any thread (e.g. OSError for a full disk) is raised by the next append and
    by close, which always waits for all work first. When the with block itself raises, frames not
    yet started are dropped and that error is the one that propagates."""

    def __init__(self, folder, workers=None, start_index=0, video=None, fps=None, pending=None,
                 progress=False, total=None):
        if video is not None and fps is None:
            raise ValueError("a video needs its fps")
        self.folder = os.fsdecode(folder)  # bytes work too: open() encodes the name back as it was
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.pending = pending or 4 * self.workers
        self.next_index = start_index
        self.error = None
        self.closed = False
        os.makedirs(self.folder, exist_ok=True)
        self._lock = threading.Lock()  # guards error and the progress bar, shared by the threads
        self._slots = threading.BoundedSemaphore(self.pending)  # one per PNG not yet written
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="png")
        # the bar appears with the first frame (not while a fit runs first), and only on a terminal
        self._bar_options = dict(total=total, desc="writing frames", unit="frame", leave=False,
                                 disable=None if progress else True)
        self._bar = None
        self._video = None
        if video is not None:
            self._video_frames = queue.Queue(maxsize=self.pending)
            self._video = threading.Thread(target=self._encode_video, args=(video, fps), daemon=True)
            self._video.start()

    def append(self, image):
        """Queue one uint8 frame (gray [H, W] or RGB [H, W, 3]); returns the path it will have."""
        if self.closed:
            raise ValueError("FrameWriter is closed")
        self._raise_first_error()  # stop the caller early rather than after every frame failed
        path = os.path.join(self.folder, f"frame_{self.next_index:010d}.png")
        self.next_index += 1
        if self._bar is None:
            self._bar = tqdm(**self._bar_options)
        self._slots.acquire()
        self._pool.submit(write_png, path, image).add_done_callback(self._png_done)
        if self._video is not None:
            self._video_frames.put(image)
        return path

    def extend(self, images):
        """Queue every frame of an iterable (a generator is consumed as it goes); returns paths."""
        return [self.append(image) for image in images]

    def close(self):
        """Wait until every frame is written and the video closed; raise the first error met."""
        self._shutdown(cancel=False)
        self._raise_first_error()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self._shutdown(cancel=True)

    def _png_done(self, future):
        with self._lock:
            if not future.cancelled() and future.exception() is not None and self.error is None:
                self.error = future.exception()
            self._bar.update(1)  # made by append before the frame was submitted
        self._slots.release()

    def _encode_video(self, path, fps):
        frames = self._queued_video_frames()
        try:
            write_video(path, frames, fps)
        except Exception as error:
            with self._lock:
                self.error = self.error or error
        for _ in frames:  # after a failure keep taking frames, so that append never blocks forever
            pass

    def _queued_video_frames(self):
        while (frame := self._video_frames.get()) is not None:  # None marks the end
            yield frame

    def _shutdown(self, cancel):
        if self.closed:
            return
        self.closed = True
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if self._video is not None:
            self._video_frames.put(None)
            self._video.join()
        if self._bar is not None:
            self._bar.close()

    def _raise_first_error(self):
        if self.error is not None:
            raise self.error


def write_frames(folder, images, workers=None, start_index=0, video=None, fps=None,
                 progress=False):
    """Write uint8 frames (any iterable) as folder/frame_%010d.png from start_index, in parallel,
    and optionally as an mp4 at `video` too (see FrameWriter); returns the PNG paths in order."""
    total = len(images) if hasattr(images, "__len__") else None
    with FrameWriter(folder, workers, start_index, video, fps, progress=progress,
                     total=total) as writer:
        return writer.extend(images)


def video_available():
    """Whether mp4 videos can be written: imageio's FFMPEG plugin needs the imageio-ffmpeg package."""
    from importlib.util import find_spec
    return find_spec("imageio_ffmpeg") is not None




# -----------------------------------------------------------------------------
# metrics (images: gray float [H, W] in [0, 1])


def mse(pred, ref):
    """Mean squared error of two [0, 1] images."""
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.mean((pred - ref) ** 2))


# EVREAL's SSIM: skimage's structural_similarity with a Gaussian window (sigma 1.5, truncated at
# 3.5 sigma: 11 taps), population covariance and the mean over the image less a 5-pixel border.
# Computed here with OpenCV's separable filter in float64, because importing skimage (and scipy)
# costs a noticeable part of a run's start-up; tests/test_utils.py checks it against skimage to 1e-9.
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5
SSIM_MIN_SIZE = 2 * SSIM_RADIUS + 1  # skimage refuses images smaller than its window
SSIM_TAPS = np.exp(-0.5 * (np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
SSIM_TAPS /= SSIM_TAPS.sum()


def ssim(pred, ref):
    """SSIM with EVREAL's settings (above) of two [0, 1] images; None for images under
    SSIM_MIN_SIZE pixels a side."""
    if min(np.shape(pred)[:2]) < SSIM_MIN_SIZE:
        return None
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    # the border the filter would have to invent is left out of the mean, so its mode is moot
    blur = lambda image: cv2.sepFilter2D(image, cv2.CV_64F, SSIM_TAPS, SSIM_TAPS, borderType=cv2.BORDER_REFLECT)
    mean_ref, mean_pred = blur(ref), blur(pred)
    var_ref = blur(ref * ref) - mean_ref * mean_ref
    var_pred = blur(pred * pred) - mean_pred * mean_pred
    covariance = blur(ref * pred) - mean_ref * mean_pred
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # data range 1
    index = ((2 * mean_ref * mean_pred + c1) * (2 * covariance + c2)
             / ((mean_ref ** 2 + mean_pred ** 2 + c1) * (var_ref + var_pred + c2)))
    inner = (slice(SSIM_RADIUS, -SSIM_RADIUS),) * 2
    return float(index[inner].mean())


HISTEQ_MODES = ("none", "global", "clahe", "local")


def histogram_equalize(image, mode):
    """Histogram equalisation as EVREAL applies it to both images before scoring.

    none:   the image unchanged.
    global: skimage.exposure.equalize_hist on the float image (256 bins over its own range),
            as EVREAL does; no uint8 round trip.
    clahe:  the image rounded to uint8, OpenCV CLAHE (clip limit 2.0, 8x8 tiles), / 255.
    local:  the image rounded to uint8, skimage.filters.rank.equalize over a disk of radius 55
            around each pixel, / 255, as EVREAL's `local` mode.
    Returns float32 [H, W] in [0, 1] for global, clahe and local."""
    if mode == "none":
        return image
    if mode == "global":
        from skimage import exposure  # imported on use, as in ssim
        return exposure.equalize_hist(np.asarray(image, dtype=np.float64)).astype(np.float32)
    if mode == "clahe":
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        return clahe.apply(tone_map_to_uint8(image)).astype(np.float32) / 255.0
    if mode == "local":
        from skimage.filters.rank import equalize  # imported on use, as in ssim
        from skimage.morphology import disk
        return equalize(tone_map_to_uint8(image), footprint=disk(55)).astype(np.float32) / 255.0
    raise ValueError(f"unknown histogram equalisation {mode!r}; choose from {HISTEQ_MODES}")


def score_frame(pred, ref, histeq="none", use_lpips=True):
    """Score one reconstruction against its reference frame: {mse, ssim, lpips (or None)}."""
    pred = histogram_equalize(np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0), histeq)
    ref = histogram_equalize(np.clip(np.asarray(ref, dtype=np.float64), 0.0, 1.0), histeq)
    return {"mse": mse(pred, ref), "ssim": ssim(pred, ref),
            "lpips": lpips(pred, ref) if use_lpips else None}


TIME_TOLERANCE = 1e-3  # EVREAL: a reconstruction stands for an APS frame made within 1 ms of it
METRICS = ("mse", "ssim", "lpips")


def nearest_aps(times, aps_t):
    """For each time, the index of the APS frame within TIME_TOLERANCE of it, or -1."""
    times, aps_t = np.asarray(times, dtype=np.float64), np.asarray(aps_t, dtype=np.float64)
    if not len(aps_t):
        return np.full(len(times), -1)
    after = np.clip(np.searchsorted(aps_t, times), 1, len(aps_t) - 1) if len(aps_t) > 1 else np.zeros(len(times), int)
    before = np.maximum(after - 1, 0)
    nearest = np.where(np.abs(aps_t[before] - times) <= np.abs(aps_t[after] - times), before, after)
    return np.where(np.abs(aps_t[nearest] - times) <= TIME_TOLERANCE, nearest, -1)


def scored_aps(times, aps_t):
    """EVREAL's frame rule, for every dataset: the APS frame each time is scored against, or -1.
    A reconstruction stands for the APS frame made within TIME_TOLERANCE of it, and every APS
    frame of the recording counts but the last (EVREAL reconstructs one item per frame but the
    last: item i ends at frame i). An evaluation interval, where there is one, is the caller's."""
    index = nearest_aps(times, aps_t)
    return np.where(index == len(aps_t) - 1, -1, index)


def score_reconstruction(images, times, aps_frames, aps_t, histeq="none", use_lpips=True):
    """Score reconstructions against a recording's APS frames by EVREAL's rule (scored_aps).
    Returns one row per scored frame: {aps_index, t, t_reconstruction, mse, ssim, lpips}.
    Images: uint8 (gray or RGB, scored in gray); times in seconds."""
    rows = []
    for image, t, index in zip(images, times, scored_aps(times, aps_t)):
        if index < 0:
            continue
        prediction, reference = gray_float(image), gray_float(aps_frames[index])
        if prediction.shape != reference.shape:
            raise ValueError(f"reconstruction is {prediction.shape[1]}x{prediction.shape[0]} but APS frame {index} "
                             f"is {reference.shape[1]}x{reference.shape[0]} (WxH)")
        rows.append({"aps_index": int(index), "t": float(aps_t[index]), "t_reconstruction": float(t),
                     **score_frame(prediction, reference, histeq, use_lpips)})
    return rows


def mean_scores(rows):
    """Each metric's mean over all the frames in `rows` (EVREAL: non-finite and missing values
    dropped), and the number of frames."""
    summary = {}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows if row[metric] is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        summary[metric] = float(values.mean()) if values.size else None
    summary["n_frames"] = len(rows)
    return summary


# A measure that needs no APS frame, for recordings that have none (Prophesee cameras, most
# event-only files): do the frame's edges lie where the events fire? Events fire where a moving
# edge crosses a pixel, so over a short time the event count of a pixel grows with the
# brightness gradient there. A frame that shows the scene has strong gradients where the count
# is high; a flat or noisy frame does not.
AGREEMENT_SIGMA = 1.0  # pixels; both maps are blurred alike, so a one-pixel offset between them costs little


def event_agreement(image, x, y):
    """The Pearson correlation, over pixels, of the frame's gradient magnitude with the count of
    the events (columns `x`, rows `y`) near its time, both blurred by AGREEMENT_SIGMA: near 0 for
    a flat or noisy frame, higher the more of the structure the events show the frame shows.
    `image`: uint8 gray or RGB. NaN when either map is constant."""
    return edge_agreement(edge_map(image), x, y)


def edge_map(image):
    """event_agreement's view of a frame: its gradient magnitude after a blur of AGREEMENT_SIGMA."""
    smoothed = cv2.GaussianBlur(gray_float(image).astype(np.float32), (0, 0), AGREEMENT_SIGMA)
    return np.hypot(cv2.Sobel(smoothed, cv2.CV_32F, 1, 0), cv2.Sobel(smoothed, cv2.CV_32F, 0, 1))


def edge_agreement(gradient, x, y):
    """event_agreement of a frame given as its edge_map (made once for a frame judged often)."""
    height, width = gradient.shape
    count = np.bincount(np.asarray(y, np.int64) * width + np.asarray(x, np.int64),
                        minlength=height * width).astype(np.float32).reshape(height, width)
    density = cv2.GaussianBlur(count, (0, 0), AGREEMENT_SIGMA)
    if gradient.std() == 0 or density.std() == 0:
        return float("nan")
    return float(np.corrcoef(gradient.ravel(), density.ravel())[0, 1])


# The two clocks of a DAVIS: an APS frame integrates light over its exposure and may be stamped at
# the exposure's start, and an event is stamped when its pixel has responded, some milliseconds
# after the light changed. The events that trace a frame's edges best can therefore come after
# its time stamp. EVREAL scores reconstructions at the stamps; the offset is measured here, from
# the events and the APS frames alone (no reconstruction), so that scores can be read with it in
# mind (scripts/evaluate.py reports it, and --aps_offset renders at the stamps plus it).
CLOCK_SEARCH = 0.02             # seconds either side of the stamps searched
CLOCK_STEP = 0.001              # seconds between the offsets tried
CLOCK_FRAMES = 50               # APS frames used at most, evenly spread
CLOCK_EVENTS_PER_PIXEL = 0.25   # events around each time tried, per pixel: a few ms of a moving scene


def event_clock_offset(aps_frames, aps_t, t, x, y):
    """(offset, agreement): the time in seconds by which the events that trace the APS frames'
    edges best trail the frames' time stamps (negative: precede them), to a fraction of
    CLOCK_STEP, or None where no offset within CLOCK_SEARCH has events; and the mean
    event_agreement of the frames at that offset and at the stamps themselves (0), and whether
    the best offset is the search's edge (the true one may lie beyond). Each frame is
    judged against the CLOCK_EVENTS_PER_PIXEL * H * W events nearest in time to its stamp plus
    the offset tried. `t` sorted; `aps_frames` uint8 [N, H, W] (or RGB) at times `aps_t`."""
    aps_t = np.asarray(aps_t, dtype=np.float64)
    picks = np.unique(np.linspace(0, len(aps_t) - 1, min(len(aps_t), CLOCK_FRAMES)).round().astype(np.int64))
    steps = round(CLOCK_SEARCH / CLOCK_STEP)
    offsets = CLOCK_STEP * np.arange(-steps, steps + 1)
    half = max(1, int(CLOCK_EVENTS_PER_PIXEL * aps_frames[0].shape[0] * aps_frames[0].shape[1]) // 2)
    curve = np.full((len(offsets), len(picks)), np.nan)
    for j, k in enumerate(picks):
        gradient = edge_map(aps_frames[k])
        centres = np.searchsorted(t, aps_t[k] + offsets)
        for i, centre in enumerate(centres):
            first, last = max(centre - half, 0), min(centre + half, len(t))
            if last - first >= half:  # a frame with too few events near it says nothing
                curve[i, j] = edge_agreement(gradient, x[first:last], y[first:last])
    judged = np.isfinite(curve).sum(axis=1)
    mean = np.where(judged > 0, np.nansum(curve, axis=1) / np.maximum(judged, 1), np.nan)  # NaN: no frame had events
    if np.isnan(mean).all():
        return None, {"at_offset": None, "at_stamps": None, "at_edge": False}
    best = int(np.nanargmax(mean))
    offset = offsets[best]
    if 0 < best < len(offsets) - 1 and np.isfinite(mean[best - 1:best + 2]).all():
        before, peak, after = mean[best - 1:best + 2]  # the parabola through the peak and its neighbours
        bend = before - 2.0 * peak + after
        if bend < 0:
            offset += CLOCK_STEP * 0.5 * (before - after) / bend
    at_stamps = mean[np.argmin(np.abs(offsets))]
    return float(offset), {"at_offset": float(mean[best]), "at_stamps": None if np.isnan(at_stamps) else float(at_stamps),
                           "at_edge": best in (0, len(offsets) - 1)}


def agreement_events(times, t, frame_index):
    """[first, last) positions in the sorted event times `t` of the events that frame
    `frame_index` (of frames at `times`) is judged against: those from halfway to the frame before
    to halfway to the frame after (a lone frame: all of them)."""
    times = np.asarray(times, dtype=np.float64)
    begin = -np.inf if frame_index == 0 else 0.5 * (times[frame_index - 1] + times[frame_index])
    end = np.inf if frame_index == len(times) - 1 else 0.5 * (times[frame_index] + times[frame_index + 1])
    return int(np.searchsorted(t, begin, side="left")), int(np.searchsorted(t, end, side="left"))
