"""Tests for the path-safe PNG writer and the parallel FrameWriter: same bytes as serial
cv2.imwrite, names and order, generators, bounded memory, errors that surface, and the video."""

import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

import utils
from helpers import count_video_frames


def frames(count, size=(24, 32)):
    """Smooth frames with some noise, gray and RGB alternating (a writer must take both)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size[1], dtype=np.float32)[None, :].repeat(size[0], axis=0)
    for i in range(count):
        gray = np.clip(ramp + 3 * i + rng.normal(0, 8, size), 0, 255).astype(np.uint8)
        yield gray if i % 2 == 0 else np.stack([gray, 255 - gray, gray // 2], axis=2)


def test_write_png_bytes_match_imwrite(tmp_path):
    for i, image in enumerate(frames(4)):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        assert cv2.imwrite(str(tmp_path / f"imwrite{i}.png"), bgr)
        utils.write_png(str(tmp_path / f"ours{i}.png"), image)
        assert (tmp_path / f"ours{i}.png").read_bytes() == (tmp_path / f"imwrite{i}.png").read_bytes()


@pytest.mark.skipif(sys.platform != "linux", reason="names that are not UTF-8 are a Linux matter")
def test_write_png_takes_names_that_are_not_utf8(tmp_path):
    image = next(frames(1))
    folder = os.fsencode(tmp_path) + b"/\xfe dir"
    utils.write_png(folder + b"/\xff.png", image)  # bytes path, folder created
    utils.write_png(os.fsdecode(folder + b"/\xfd.png"), image)  # the same name as str
    assert sorted(os.listdir(folder)) == [b"\xfd.png", b"\xff.png"]
    with open(folder + b"/\xff.png", "rb") as f:
        stored = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, image)

    paths = utils.write_frames(folder + b"/frames", frames(3))
    assert [os.path.basename(os.fsencode(path)) for path in paths] == [
        b"frame_0000000000.png", b"frame_0000000001.png", b"frame_0000000002.png"]
    assert len(os.listdir(folder + b"/frames")) == 3


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_parallel_frames_match_serial(tmp_path, workers):
    for index, image in enumerate(frames(23)):
        utils.write_png(str(tmp_path / "serial" / f"frame_{index + 7:010d}.png"), image)
    paths = utils.write_frames(tmp_path / "parallel", frames(23), workers=workers, start_index=7)
    names = [f"frame_{index:010d}.png" for index in range(7, 30)]
    assert paths == [os.path.join(tmp_path, "parallel", name) for name in names]
    assert sorted(os.listdir(tmp_path / "parallel")) == names
    for name in names:
        assert (tmp_path / "parallel" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()


def test_frame_writer_takes_batches_and_numbers_on(tmp_path):
    with utils.FrameWriter(tmp_path, workers=2) as writer:
        first = writer.extend(list(frames(3)))
        second = writer.extend(frames(2))
        last = writer.append(np.zeros((24, 32), np.uint8))
    assert [os.path.basename(p) for p in first + second + [last]] == [f"frame_{i:010d}.png" for i in range(6)]
    assert all(os.path.isfile(path) for path in first + second + [last])
    with pytest.raises(ValueError):
        writer.append(np.zeros((24, 32), np.uint8))


def test_appending_blocks_while_pending_frames_fill_up(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(utils, "write_png", lambda path, image: release.wait())
    taken = []

    def counted():
        for index, image in enumerate(frames(10)):
            taken.append(index)
            yield image

    writer = utils.FrameWriter(tmp_path, workers=1, pending=3)
    feeder = threading.Thread(target=writer.extend, args=(counted(),))
    feeder.start()
    time.sleep(0.3)
    assert len(taken) == 4  # three frames in flight, the fourth waits for a slot
    release.set()
    feeder.join(timeout=10)
    writer.close()
    assert len(taken) == 10


def test_worker_error_is_raised_by_close(tmp_path):
    os.makedirs(tmp_path / "frame_0000000005.png")  # a folder where a frame goes: open() fails
    writer = utils.FrameWriter(tmp_path, workers=2)
    writer.extend(frames(6))
    with pytest.raises(IsADirectoryError):
        writer.close()
    assert os.path.isfile(tmp_path / "frame_0000000004.png")  # the other frames were written


def test_worker_error_stops_the_with_block(tmp_path):
    os.makedirs(tmp_path / "frame_0000000002.png")
    with pytest.raises(OSError):
        utils.write_frames(tmp_path, frames(200), workers=2)


def test_video_error_does_not_block_appending(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):  # the video's folder cannot be made
        utils.write_frames(tmp_path / "frames", frames(40), workers=2, video=tmp_path / "file" / "v.mp4", fps=10)


@pytest.mark.skipif(not utils.video_available(), reason="writing mp4 needs the imageio-ffmpeg package")
def test_video_from_the_writer(tmp_path):
    images = [image for image in frames(13, size=(35, 47))]  # odd size: padded for the encoder
    video = str(tmp_path / "out" / "video.mp4")
    paths = utils.write_frames(tmp_path / "frames", iter(images), video=video, fps=10.0)
    assert len(paths) == 13 and count_video_frames(video) == 13
    serial = str(tmp_path / "serial.mp4")
    utils.write_video(serial, images, fps=10.0)
    with utils.imageio.get_reader(video) as ours, utils.imageio.get_reader(serial) as theirs:
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)  # the same arrays went to the same encoder
