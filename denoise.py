"""
Which events are sensor noise, so that the fit can leave them out.

An event camera's pixels also fire when the light does not change. A few "hot" pixels fire all
the time, at a high rate; every pixel fires now and then at random ("background activity", from
leakage and shot noise). EvINR fits those events like any others: a hot pixel becomes a dot whose
brightness runs away, background activity a speckle over the frames. What tells real changes
apart is that they come from edges that move: an edge fires a line of neighbouring pixels, and
each of them shortly after its neighbours. Noise has no such neighbours. Two filters use that:

- hot_pixel_mask (--hot_pixels auto): the pixels that fire far more than the typical pixel of the
  events given (a fitted window's) and far more than their neighbours; all their events go.
- background_activity_mask (--noise_filter MS): the nearest-neighbour background-activity filter
  (jAER's BackgroundActivityFilter): an event is kept when one of its 8 neighbouring pixels fired
  in the MS milliseconds before it.

`filtered` applies those a config asks for to one window's events (train.Window). Both are numpy
and vectorised: a million events take a fraction of a second.
"""

import dataclasses

import numpy as np

from event_data import EventDataError

# The 8 neighbours of a pixel, as (row offset, column offset).
NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))

# hot_pixel_mask's rule: a pixel is hot when its event count is above both
# - the events' level: the median count of the pixels that fired, plus HOT_SPREADS times
#   their spread (1.4826 times the median absolute deviation, which is the standard deviation of
#   normally distributed counts, and at least the square root of the median, which is how much
#   the count of a pixel firing at random varies), and
# - HOT_NEIGHBOUR_RATIO times the second largest count among its 8 neighbours.
# The first keeps a sparse recording's ordinary pixels from being taken for hot ones, the second
# keeps busy textures: every pixel a moving edge crosses has neighbours it crosses too, at least
# two (along the edge and along its motion; three at a corner of the swept area), with about the
# same count. The second largest rather than the largest lets two adjacent hot pixels be found.
# What it can mistake: a feature one pixel thin, moving along its own row or column and far busier
# than the rest, at the two ends of its track (the lens blurs most features over more pixels).
HOT_SPREADS = 8.0
HOT_NEIGHBOUR_RATIO = 5.0


def pixel_counts(x, y, sensor):
    """The number of events of each pixel, int64 [H, W]."""
    height, width = sensor
    return np.bincount(y.astype(np.int64) * width + x, minlength=height * width).reshape(height, width)


def second_largest_neighbour(counts):
    """For each pixel of `counts` [H, W], the second largest of its 8 neighbours' counts; pixels
    beyond the sensor's border count 0."""
    height, width = counts.shape
    padded = np.pad(counts, 1)
    largest, second = np.zeros_like(counts), np.zeros_like(counts)
    for dy, dx in NEIGHBOURS:
        neighbour = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        second = np.maximum(second, np.minimum(largest, neighbour))
        largest = np.maximum(largest, neighbour)
    return second


def hot_pixel_mask(x, y, sensor, spreads=HOT_SPREADS, neighbour_ratio=HOT_NEIGHBOUR_RATIO):
    """bool [H, W]: the pixels whose events `x` (columns), `y` (rows) are too many for a real
    scene, both for this recording and next to their neighbours (see HOT_SPREADS)."""
    counts = pixel_counts(x, y, sensor)
    fired = counts[counts > 0]
    if fired.size == 0:
        return np.zeros(sensor, dtype=bool)
    typical = np.median(fired)
    spread = max(1.4826 * np.median(np.abs(fired - typical)), np.sqrt(typical))
    above_recording = counts > typical + spreads * spread
    return above_recording & (counts > neighbour_ratio * second_largest_neighbour(counts))


def background_activity_mask(t, x, y, sensor, window_s):
    """bool [N]: True for each event that one of its 8 neighbouring pixels (not its own) fired
    within `window_s` seconds before: some neighbour's event j with 0 <= t - t[j] <= window_s.
    `t` must be sorted. A neighbour's event at the same time stamp counts: events read out
    together share a time stamp, and their order in the stream says nothing about which came
    first, so the result does not depend on it.

    How: with the events ordered by pixel, and by time within a pixel, the latest event of a
    pixel q at or before time t is found by one binary search for (q, t); this is done for all
    events at once, once per neighbour offset."""
    height, width = sensor
    n = len(t)
    pixel = y.astype(np.int64) * width + x
    # each event's stream position after the last event of its time stamp
    after = np.searchsorted(t, t, side="right")
    order = np.argsort(pixel, kind="stable")  # stable: by time within a pixel, t being sorted
    pixel, t, after = pixel[order], t[order], after[order]
    x, y = x[order].astype(np.int64), y[order].astype(np.int64)  # int16 would wrap at the border
    # key of an event: (pixel, position in the stream) as one sortable integer; the last key
    # below (q, after) is then pixel q's last event at or before this event's time
    keys = pixel * n + order
    kept = np.zeros(n, dtype=bool)
    for dy, dx in NEIGHBOURS:
        inside = (x + dx >= 0) & (x + dx < width) & (y + dy >= 0) & (y + dy < height)
        neighbour = pixel + dy * width + dx
        latest = np.searchsorted(keys, neighbour * n + after, side="left") - 1
        found = inside & (latest >= 0)
        latest = np.maximum(latest, 0)
        found &= (pixel[latest] == neighbour) & (t - t[latest] <= window_s)
        kept |= found
    keep = np.empty(n, dtype=bool)
    keep[order] = kept
    return keep


def noise_filters_on(config):
    """Whether `config` (resolved or not: the preset fills in) asks for a noise filter."""
    return config.setting("hot_pixels") == "auto" or bool(config.setting("noise_filter"))


def filtered(events, sensor, config):
    """`events` (event_data.Events) less those that --hot_pixels and --noise_filter take for noise;
    the same object when both are off. Hot pixels go first, so that their stream of events does
    not make their neighbours' noise look supported. A window left with no events is refused, as
    one that had none."""
    if not noise_filters_on(config) or not len(events):
        return events
    keep = np.arange(len(events))
    if config.setting("hot_pixels") == "auto":
        keep = keep[~hot_pixel_mask(events.x, events.y, sensor)[events.y, events.x]]
    window_ms = config.setting("noise_filter")
    if window_ms:
        t, x, y = events.t[keep], events.x[keep], events.y[keep]
        keep = keep[background_activity_mask(t, x, y, sensor, window_ms / 1000.0)]
    if not len(keep):
        raise EventDataError(events.path, f"no events between {events.t[0]:.6f} and {events.t[-1]:.6f} s "
                                          "once the noise filters (--hot_pixels, --noise_filter) took all "
                                          f"{len(events)} for noise")
    return dataclasses.replace(events, t=events.t[keep], x=events.x[keep], y=events.y[keep],
                               p=events.p[keep])
