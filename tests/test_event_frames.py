"""Event frames: chunking, scatter-sum against a brute-force loop, polarity conventions, colour."""

import numpy as np
import pytest
import torch

from event_data import bayer_to_rgb, chunk_boundaries, event_frames, events_from_columns


def random_events(n=5000, height=12, width=17, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, 1.0, n))
    return t, rng.integers(0, width, n), rng.integers(0, height, n), rng.choice([-1, 1], n), (height, width)


def brute_force(t, x, y, p, starts, sensor, threshold):
    frames = np.zeros((len(starts) - 1, 1) + sensor)
    for k in range(len(starts) - 1):
        for i in range(starts[k], starts[k + 1]):
            frames[k, 0, y[i], x[i]] += threshold * p[i]
    return frames


def as_tensors(x, y, p):
    return torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(p)


@pytest.mark.parametrize("mode", ["count", "time"])
def test_event_frames_equal_brute_force_sum(mode):
    t, x, y, p, sensor = random_events()
    starts, times = chunk_boundaries(t, 7, 0.0, 1.0, mode)
    frames = event_frames(*as_tensors(x, y, p), starts, sensor, threshold=0.25)
    np.testing.assert_array_equal(frames.numpy(), brute_force(t, x, y, p, starts, sensor, 0.25))
    assert starts[0] == 0 and starts[-1] == len(t)


@pytest.mark.parametrize("mode", ["count", "time"])
def test_every_event_lies_inside_its_chunk_span(mode):
    t, *_ = random_events()
    starts, times = chunk_boundaries(t, 9, 0.0, 1.0, mode)
    assert times[0] == 0.0 and times[-1] == 1.0
    for k in range(9):
        chunk = t[starts[k]:starts[k + 1]]
        assert (chunk >= times[k]).all() and (chunk <= times[k + 1]).all()


def test_count_chunks_have_equal_event_counts():
    t, *_ = random_events(n=700)
    starts, _ = chunk_boundaries(t, 7, 0.0, 1.0, "count")
    assert set(np.diff(starts)) == {100}


def test_polarity_conventions_give_the_same_frames():
    t, x, y, p, sensor = random_events()
    signed = events_from_columns(t, x, y, p, "signed", "test")
    zero_one = events_from_columns(t, x, y, (p > 0).astype(np.float64), "zero_one", "test")
    boolean = events_from_columns(t, x, y, p > 0, "bool", "test")
    starts, _ = chunk_boundaries(t, 5, 0.0, 1.0)
    results = [event_frames(*as_tensors(e.x.astype(np.int64), e.y.astype(np.int64), e.p), starts, sensor)
               for e in (signed, zero_one, boolean)]
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    torch.testing.assert_close(results[0], results[2], rtol=0, atol=0)
    assert (results[0] < 0).any(), "negative events were lost"


def test_bayer_split_into_rgb_channels():
    mosaic = torch.zeros(1, 1, 4, 4)
    mosaic[0, 0, 0::2, 0::2] = 1.0   # R
    mosaic[0, 0, 0::2, 1::2] = 2.0   # G on red rows
    mosaic[0, 0, 1::2, 0::2] = 4.0   # G on blue rows
    mosaic[0, 0, 1::2, 1::2] = 8.0   # B
    rgb = bayer_to_rgb(mosaic)
    assert rgb.shape == (1, 3, 4, 4)
    assert (rgb[0, 0] == 1.0).all() and (rgb[0, 1] == 3.0).all() and (rgb[0, 2] == 8.0).all()
