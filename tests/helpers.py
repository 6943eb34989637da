"""Helpers the tests share: reading back what a run wrote."""

import cv2
import imageio.v2 as imageio
import numpy as np


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


def count_video_frames(path):
    """Number of frames in a video, counted by decoding it (container metadata can be off)."""
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return sum(1 for _ in reader)
