"""denoise.py: hot pixels found exactly, on a scene whose busiest real pixels are busier than the
recording's level; the background-activity filter against a slow reference that states its rule;
noise taken out of a moving edge's events; the flags, their presets and bounds; and a fit with
both filters on."""

import time

import numpy as np
import pytest
from test_bad_input import assert_error, call

import command
import denoise
import train
from config import parse_config
from event_data import EventDataError, Events

SENSOR = (48, 64)  # (H, W)


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


def moving_edge(sensor=SENSOR, rows=(8, 40), speed=200.0, per_crossing=2, busy_rows=(20, 23), busy=40,
                jitter=1e-3, seed=0):
    """(t, x, y) of a vertical edge over `rows` moving right at `speed` pixels per second from
    column 0 to the last column: each pixel it crosses fires `per_crossing` events within `jitter`
    seconds of the crossing, those of `busy_rows` (a high-contrast stretch of the edge) `busy`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[rows[0]:rows[1], 0:sensor[1]]
    counts = np.where((y >= busy_rows[0]) & (y < busy_rows[1]), busy, per_crossing).ravel()
    x, y = np.repeat(x.ravel(), counts), np.repeat(y.ravel(), counts)
    t = x / speed + rng.uniform(0, jitter, len(x))
    return t, x, y


def merged(*parts):
    """(t, x, y, which part each event came from), sorted by time (stable)."""
    t, x, y = (np.concatenate(column) for column in zip(*parts))
    source = np.repeat(np.arange(len(parts)), [len(part[0]) for part in parts])
    order = np.argsort(t, kind="stable")
    return t[order], x[order].astype(np.int16), y[order].astype(np.int16), source[order]


def firing(pixels, rate, duration, seed):
    """(t, x, y) of pixels [(y, x), ...] each firing at `rate` per second, uniformly at random."""
    rng = np.random.default_rng(seed)
    n = len(pixels) * int(rate * duration)
    which = np.repeat(np.arange(len(pixels)), int(rate * duration))
    rows, columns = np.array(pixels).T
    return rng.uniform(0, duration, n), columns[which], rows[which]


# -----------------------------------------------------------------------------
# hot pixels

# (y, x) of hot pixels: inside and outside the edge's sweep, the sensor's corners, an adjacent pair
HOT = [(30, 10), (2, 50), (0, 0), (47, 63), (25, 40), (25, 41)]


def test_hot_pixels_are_found_exactly_and_a_busy_moving_edge_is_not():
    edge = moving_edge()
    _, x, y, _ = merged(edge, firing(HOT, 1000.0, 0.3, seed=1))
    mask = denoise.hot_pixel_mask(x, y, SENSOR)
    expected = np.zeros(SENSOR, dtype=bool)
    expected[tuple(np.array(HOT).T)] = True
    assert np.array_equal(mask, expected), np.argwhere(mask ^ expected)
    # the edge's busy stretch is above the recording's level: only its neighbours clear it
    counts = denoise.pixel_counts(edge[1], edge[2], SENSOR)
    fired = counts[counts > 0]
    typical = np.median(fired)
    spread = max(1.4826 * np.median(np.abs(fired - typical)), np.sqrt(typical))
    assert counts[21, 5] > typical + denoise.HOT_SPREADS * spread


def test_no_hot_pixels_in_a_quiet_or_uniform_recording():
    assert not denoise.hot_pixel_mask(np.array([], np.int16), np.array([], np.int16), SENSOR).any()
    _, x, y = moving_edge()
    assert not denoise.hot_pixel_mask(x, y, SENSOR).any()
    rng = np.random.default_rng(0)  # random noise alone: no pixel stands out
    x, y = rng.integers(0, SENSOR[1], 20000), rng.integers(0, SENSOR[0], 20000)
    assert not denoise.hot_pixel_mask(x, y, SENSOR).any()


def test_second_largest_neighbour_counts_beyond_the_border_as_zero():
    counts = np.arange(12).reshape(3, 4)
    second = denoise.second_largest_neighbour(counts)
    for row in range(3):
        for column in range(4):
            around = [counts[row + dy, column + dx] if 0 <= row + dy < 3 and 0 <= column + dx < 4 else 0
                      for dy, dx in denoise.NEIGHBOURS]
            assert second[row, column] == sorted(around)[-2]


# -----------------------------------------------------------------------------
# background activity

def supported_slowly(t, x, y, window_s):
    """The rule itself, event by event: kept when an event of one of the 8 neighbouring pixels
    (not its own) lies at most `window_s` seconds before it, or at the same time."""
    keep = np.zeros(len(t), dtype=bool)
    for i in range(len(t)):
        near = np.maximum(np.abs(x.astype(int) - x[i]), np.abs(y.astype(int) - y[i])) == 1
        keep[i] = (near & (t[i] - t >= 0) & (t[i] - t <= window_s)).any()
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_background_activity_matches_the_slow_rule(seed):
    """Random events on a small sensor (most pixels at its border), with time stamps rounded to
    make many ties, and a few at the corners; a pixel at the end of a row and one at the start of
    the next are not neighbours."""
    rng = np.random.default_rng(seed)
    height, width = 4 + seed % 3, 5 + seed
    n = 400
    t = np.sort(np.round(rng.uniform(0, 1, n), 2))
    x, y = rng.integers(0, width, n).astype(np.int16), rng.integers(0, height, n).astype(np.int16)
    corners = rng.choice(n, 20, replace=False)
    x[corners], y[corners] = rng.choice([0, width - 1], 20), rng.choice([0, height - 1], 20)
    for window_s in (0.0, 0.02, 0.1):
        keep = denoise.background_activity_mask(t, x, y, (height, width), window_s)
        expected = supported_slowly(t, x, y, window_s)
        assert np.array_equal(keep, expected), (window_s, np.flatnonzero(keep ^ expected))
        assert 0 < expected.sum() < n  # the cases are not all one way


def test_background_activity_by_hand():
    """On a 2 x 4 sensor: a neighbour's earlier event supports (event 2), its later one (0) or
    one too old (3) or the pixel's own (1) do not; a row's last pixel and the next row's first
    are not neighbours (4); events at the same time support each other (5, 6)."""
    t = np.array([0.0, 0.001, 0.003, 0.010, 0.012, 0.030, 0.030])
    x = np.array([1, 1, 2, 3, 0, 3, 2], np.int16)
    y = np.array([0, 0, 1, 0, 1, 1, 0], np.int16)
    keep = denoise.background_activity_mask(t, x, y, (2, 4), window_s=0.005)
    assert keep.tolist() == [False, False, True, False, False, True, True]


def test_noise_is_taken_out_and_a_moving_edge_kept():
    rng = np.random.default_rng(3)
    n_noise = 400  # about 0.4 events per pixel and second, at random
    noise = rng.uniform(0, 0.32, n_noise), rng.integers(0, SENSOR[1], n_noise), rng.integers(0, SENSOR[0], n_noise)
    t, x, y, source = merged(moving_edge(), noise)
    keep = denoise.background_activity_mask(t, x, y, SENSOR, window_s=0.005)
    assert keep[source == 0].mean() > 0.97
    assert keep[source == 1].mean() < 0.15


def test_both_filters_are_fast():
    """Far under a second for 200,000 events on a 640 x 480 sensor (about 0.1 s on 2 cores)."""
    rng = np.random.default_rng(0)
    n, sensor = 200_000, (480, 640)
    t = np.sort(rng.uniform(0, 1, n))
    x, y = rng.integers(0, 640, n).astype(np.int16), rng.integers(0, 480, n).astype(np.int16)
    began = time.perf_counter()
    denoise.hot_pixel_mask(x, y, sensor)
    denoise.background_activity_mask(t, x, y, sensor, 0.005)
    assert time.perf_counter() - began < 2.0


# -----------------------------------------------------------------------------
# the flags, and the fit

def noisy_recording(seed=0):
    """A moving edge, two hot pixels and random noise on a 24 x 32 sensor, as Events."""
    rng = np.random.default_rng(seed)
    sensor = (24, 32)
    noise = rng.uniform(0, 0.16, 100), rng.integers(0, 32, 100), rng.integers(0, 24, 100)
    edge = moving_edge(sensor, rows=(4, 20), busy_rows=(10, 12), busy=6)
    t, x, y, source = merged(edge, firing([(2, 3), (22, 28)], 2000.0, 0.16, seed), noise)
    p = np.where(source == 0, 1, rng.choice([-1, 1], len(t))).astype(np.int8)
    return Events(t=t, x=x, y=y, p=p, sensor=sensor, path="noisy"), source


def test_the_recommended_preset_drops_hot_pixels_only_and_the_authors_preset_keeps_every_event():
    events, source = noisy_recording()
    recommended = parse_config([]).resolved()
    assert (recommended.hot_pixels, recommended.noise_filter) == ("auto", 0.0)
    assert denoise.noise_filters_on(parse_config([]))
    kept = denoise.filtered(events, events.sensor, recommended)
    hot = np.unique(events.y[source == 1].astype(int) * 32 + events.x[source == 1])
    at_hot = np.isin(events.y.astype(int) * 32 + events.x, hot)
    assert len(kept.t) == np.count_nonzero(~at_hot)  # the hot pixels' events go, the edge's and the noise stay
    authors = parse_config(["--preset", "authors"]).resolved()
    assert (authors.hot_pixels, authors.noise_filter) == ("off", 0.0)
    assert denoise.filtered(events, events.sensor, authors) is events
    assert not denoise.noise_filters_on(parse_config(["--preset", "authors"]))
    assert (authors.event_thresh, authors.lr_schedule, authors.smooth) == (1.0, "constant", 0.0)


def test_filtered_takes_out_the_hot_pixels_and_the_noise():
    events, source = noisy_recording()
    config = parse_config(["--hot_pixels", "auto", "--noise_filter", "5"])
    kept = denoise.filtered(events, events.sensor, config)
    assert not ((kept.x == 3) & (kept.y == 2)).any() and not ((kept.x == 28) & (kept.y == 22)).any()
    assert (source == 0).sum() * 0.95 < len(kept) < (source == 0).sum() + 20
    assert kept.path == "noisy" and kept.sensor == events.sensor and kept.p.dtype == np.int8
    only_hot = denoise.filtered(events, events.sensor, parse_config(["--hot_pixels", "auto"]))
    at_hot = ((events.x == 3) & (events.y == 2)) | ((events.x == 28) & (events.y == 22))
    assert np.array_equal(only_hot.t, events.t[~at_hot]) and np.array_equal(only_hot.x, events.x[~at_hot])


@pytest.mark.parametrize("flags, words", [
    (["--hot_pixels", "on"], ["--hot_pixels", "on"]),
    (["--noise_filter", "-1"], ["--noise_filter -1", "0 to 1000 milliseconds"]),
    (["--noise_filter", "5000"], ["--noise_filter 5000", "0 to 1000 milliseconds"]),
    (["--noise_filter", "nan"], ["--noise_filter nan", "0 to 1000"]),
    (["--noise_filter", "soon"], ["--noise_filter", "soon"]),
])
def test_bad_filter_flags_are_refused(tmp_path, capsys, flags, words):
    status = call(train.main, "-o", str(tmp_path / "out"), "--iters", "1", *flags)
    assert_error(status, capsys.readouterr().err, 2, *words)
    assert not (tmp_path / "out").exists()


FIT = ["--iters", "5", "--train_resolution", "4", "--net_width", "16", "--net_layers", "1", "--log_interval", "5",
       "--event_thresh", "0.2", "--frames_at", "uniform", "--val_resolution", "2"]  # a C given: no auto exposure


def test_a_fit_with_both_filters_runs_and_counts_what_they_took():
    events, source = noisy_recording()
    result = train.reconstruct(events, parse_config([*FIT, "--hot_pixels", "auto", "--noise_filter", "5"]))
    assert result.frames.shape[1:] == (24, 32) and len(result.frames) > 0
    assert (source != 0).sum() - 20 <= result.fit["noise_events"] <= (source != 0).sum() + 0.05 * (source == 0).sum()
    assert "noise_events" not in train.reconstruct(events, parse_config([*FIT, "--hot_pixels", "off"])).fit


def test_a_window_of_noise_alone_is_refused_as_empty():
    t = np.linspace(0, 1, 30)  # 34 ms apart: none within 1 ms of another
    x, y = (np.arange(30) * 7 % 32).astype(np.int16), (np.arange(30) * 5 % 24).astype(np.int16)
    events = Events(t=t, x=x, y=y, p=np.ones(30, np.int8), sensor=(24, 32), path="sparse")
    with pytest.raises(EventDataError, match="no events between .* noise filters"):
        train.reconstruct(events, parse_config([*FIT, "--hot_pixels", "off", "--noise_filter", "1"]))
