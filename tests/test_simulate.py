"""The ideal event simulator: its defining property, exact crossing times, order, determinism,
the benchmark workload's size and the written sequence layout."""

import numpy as np
import pytest

from simulate import events_array, moving_texture, simulate_events, standard_workload, textured_image, write_sequence


def net_polarity(events):
    """Sum of polarities per pixel, [H, W]."""
    height, width = events["sensor"]
    pixel = events["y"].astype(np.int64) * width + events["x"]
    return np.bincount(pixel, weights=events["p"], minlength=height * width).reshape(height, width)


def ramp_video(intercept, slope):
    """A video whose every pixel is a straight line in log intensity: intercept + slope * t."""
    def render(times):
        return intercept[None] + slope[None] * np.asarray(times, dtype=np.float64)[:, None, None]
    return render


@pytest.mark.parametrize("path", ["pan", "circle"])
def test_reference_after_all_events_is_within_one_threshold_of_the_last_frame(path):
    duration, threshold = 0.5, 0.15
    render = moving_texture(30, 40, duration, path=path, seed=3, speed=60.0)
    events = simulate_events(render, duration, threshold)
    assert len(events["t"]) > 1000
    assert events["sensor"] == (30, 40) and events["threshold"] == threshold
    first, last = render(np.array([0.0, duration]))
    reference = first + threshold * net_polarity(events)
    assert np.abs(last - reference).max() < threshold + 1e-9


def test_circle_path_closes_and_pan_moves_at_its_speed():
    circle = moving_texture(20, 30, 0.8, path="circle", seed=0, speed=50.0)
    np.testing.assert_allclose(circle(np.array([0.8]))[0], circle(np.zeros(1))[0], atol=1e-9)
    pan = moving_texture(20, 30, 1.0, path="pan", seed=0, speed=50.0)
    offset_x, offset_y = pan.offset(np.array([0.0, 0.5]))
    assert np.hypot(offset_x[1] - offset_x[0], offset_y[1] - offset_y[0]) == pytest.approx(25.0)
    # a whole-pixel shift shows the texture itself, moved
    time = 1.0 / 50.0 / np.cos(0.5) * 4  # offset_x = 4 pixels exactly
    shifted = pan(np.array([time]))[0]
    _, offset_y = pan.offset(np.array([time]))
    row = int(np.floor(offset_y[0]))
    fraction = offset_y[0] - row
    texture = pan.texture
    expected = (1 - fraction) * texture[row:row + 20, 4:34] + fraction * texture[row + 1:row + 21, 4:34]
    np.testing.assert_allclose(shifted, expected, atol=1e-9)


def test_times_sorted_inside_duration_and_types():
    duration = 0.4
    events = simulate_events(moving_texture(24, 32, duration, seed=1, speed=80.0), duration, 0.2)
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"][0] >= 0 and events["t"][-1] <= duration
    assert events["t"].dtype == np.float64 and events["x"].dtype == np.int16
    assert events["y"].dtype == np.int16 and events["p"].dtype == np.int8
    assert set(np.unique(events["p"])) <= {-1, 1}
    assert events["x"].max() < 32 and events["y"].max() < 24


@pytest.mark.parametrize("substeps", [None, 3, 40])
def test_linear_ramp_fires_at_the_analytic_crossing_times(substeps):
    # one row of pixels with different slopes: some fire many times within one step of 3, one never
    duration, threshold = 1.0, 0.2
    slope = np.array([[0.5, -0.7, 3.3, -9.1, 0.0, 13.7]])
    intercept = np.array([[0.1, -0.3, 0.05, 1.0, 0.4, -2.0]])
    events = simulate_events(ramp_video(intercept, slope), duration, threshold, substeps=substeps)
    step = duration / (substeps or 256)
    for x in range(slope.shape[1]):
        mine = events["x"] == x
        crossings = int(abs(slope[0, x]) * duration / threshold)
        expected_t = threshold * np.arange(1, crossings + 1) / abs(slope[0, x])
        assert mine.sum() == crossings
        np.testing.assert_allclose(events["t"][mine], expected_t, rtol=0, atol=1e-9 * step)
        assert np.all(events["p"][mine] == np.sign(slope[0, x]))


def test_same_seed_same_events_and_different_seed_different_texture():
    first = simulate_events(moving_texture(20, 30, 0.3, seed=5, speed=50.0), 0.3, 0.2, seed=5)
    second = simulate_events(moving_texture(20, 30, 0.3, seed=5, speed=50.0), 0.3, 0.2, seed=5)
    for key in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(textured_image(20, 30, seed=5), textured_image(20, 30, seed=6))


def test_textured_image_range_and_periodic_smoothness():
    image = textured_image(64, 96, seed=2)
    assert image.shape == (64, 96) and image.dtype == np.float64
    assert -1.5 < image.min() < -0.5 and 0.5 < image.max() < 1.5
    # periodic: the jump across the border is no larger than jumps inside the image
    inside = np.abs(np.diff(image, axis=1)).max()
    assert np.abs(image[:, 0] - image[:, -1]).max() <= inside


def test_standard_workload_hits_its_target_count():
    render, events = standard_workload(height=36, width=48, duration=0.5, target_events=150_000, seed=1)
    assert abs(len(events["t"]) - 150_000) < 0.2 * 150_000
    assert events["sensor"] == (36, 48) and render(np.zeros(1)).shape == (1, 36, 48)


def test_write_sequence_layout_is_readable(tmp_path):
    import cv2
    from event_data import load_events
    duration = 0.3
    render = moving_texture(24, 32, duration, seed=0, speed=40.0)
    events = simulate_events(render, duration, 0.2)
    frame_times = np.array([0.0, 0.1, 0.2, 0.3])
    write_sequence(str(tmp_path), render, events, frame_times)

    array = np.load(tmp_path / "events.npy")
    assert array.shape == (len(events["t"]), 4) and array.dtype == np.float64
    np.testing.assert_array_equal(array, events_array(events))
    lines = (tmp_path / "images.txt").read_text().splitlines()
    assert len(lines) == len(frame_times)
    for line, t in zip(lines, frame_times):
        stamp, name = line.split()
        assert float(stamp) == pytest.approx(t) and name.startswith("images/frame_")
        image = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (24, 32) and image.dtype == np.uint8
    # the project's own reader accepts it, with the frames and the sensor size
    loaded, sensor = load_events(str(tmp_path))
    assert sensor == (24, 32) and len(loaded) == len(events["t"]) and loaded.aps_frames.shape == (4, 24, 32)
    # the brightest pixel of the sequence is 255, the mapping is linear in intensity
    assert loaded.aps_frames.max() == 255
    log_intensity = render(frame_times)
    expected = np.round(255 * np.exp(log_intensity - log_intensity.max()))
    assert np.abs(loaded.aps_frames.astype(float) - expected).max() <= 0


def test_aps_metering_peak_and_grey():
    """The peak-metered camera puts the sequence's brightest pixel at 255; the grey-metered one its
    mean at METERED_GREY of full scale (up to rounding, and the pixels it saturates)."""
    from simulate import METERED_GREY, aps_frames
    render = moving_texture(40, 60, 1.0, "pan", seed=3, speed=30.0)
    times = np.linspace(0.0, 1.0, 11)
    peak = aps_frames(render, times)
    assert peak.dtype == np.uint8 and peak.max() == 255
    grey = aps_frames(render, times, grey=METERED_GREY)
    assert abs(grey.mean() / 255 - METERED_GREY) < 0.01
    assert grey.mean() < peak.mean()


def test_a_still_camera_sees_only_the_object_that_crosses_it():
    """simulate.moving_object: the background stays as it is where the disk has not been, the
    disk carries its texture along, and only pixels the disk crosses fire events."""
    from simulate import moving_object
    height, width = 30, 40
    background = textured_image(height, width, seed=1)
    texture = textured_image(2 * height, 2 * width, seed=2)
    render = moving_object(background, texture, speed=20.0)
    frames = render(np.array([0.0, 0.5]))
    radius = 0.3 * height
    columns = np.arange(width)
    untouched = columns > 0.25 * width + 10 + radius + 1  # right of where the disk ends up by 0.5 s
    np.testing.assert_array_equal(frames[0][:, untouched], background[:, untouched])
    np.testing.assert_array_equal(frames[1][:, untouched], background[:, untouched])
    centre_row = height // 2
    # the disk's middle shows the texture, moved 10 px by 0.5 s
    np.testing.assert_allclose(frames[1][centre_row, 20], texture[centre_row, 10], atol=1e-12)
    events = simulate_events(render, 0.5, 0.2)
    assert len(events["t"]) > 100
    assert events["x"].max() <= 0.25 * width + 10 + radius + 1 and events["x"].min() >= 0.25 * width - radius - 1


def test_with_contrast_scales_the_log_texture_about_its_mean():
    from simulate import with_contrast
    texture = textured_image(20, 30, seed=4)
    doubled = with_contrast(texture, 2.0)
    assert doubled.mean() == pytest.approx(texture.mean())
    assert doubled.std() == pytest.approx(2 * texture.std())
    np.testing.assert_allclose(with_contrast(texture, 1.0), texture, atol=1e-12)
