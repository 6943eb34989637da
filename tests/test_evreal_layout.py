"""EVREAL's layouts, checked against a written description of its rules (EVREAL's code is not
vendored: its licence and this project's differ). The rules, as EVREAL's dataset.py,
tools/bag_to_npy.py and eval.py apply them:

A sequence folder (MemMapDataset):
- events_ts.npy float64 [N] seconds, non-decreasing; events_xy.npy integer [N, 2] (x, y);
  events_p.npy [N] 0/1 (EVREAL maps p to 2p - 1).
- images.npy uint8 [K, H, W, 1] (a frame is read as images[k][:, :, 0]); images_ts.npy float64
  [K, 1]; image_event_indices.npy int64 [K, 1] (read as row[0]):
  searchsorted(events_ts, images_ts, "right") - 1, clipped to [0, N - 1].
- metadata.json {"sensor_resolution": [H, W]}.
- The clock is zeroed at the earlier of the first frame and the first event.
- Item i of K - 1 is APS frame i with the events [iei[i - 1], iei[i]) (item 0: none); the last
  frame is never an item.
"""

import json

import numpy as np

import benchmark_io as formats
import convert_common
from event_data import load_events

RULES = {  # file: (dtype kind, number of dimensions, trailing shape)
    "events_ts.npy": ("f", 1, ()),
    "events_xy.npy": ("iu", 2, (2,)),
    "events_p.npy": ("iub", 1, ()),
    "images.npy": ("u", 4, (1,)),
    "images_ts.npy": ("f", 2, (1,)),
    "image_event_indices.npy": ("i", 2, (1,)),
}


def assert_evreal_layout(folder):
    """Every file of an EVREAL sequence folder as EVREAL's rules (above) want it."""
    arrays = {name: np.load(folder / name) for name in RULES}
    for name, (kinds, n_dims, trailing) in RULES.items():
        array = arrays[name]
        assert array.dtype.kind in kinds and array.ndim == n_dims, (name, array.dtype, array.shape)
        assert array.shape[1:][len(array.shape[1:]) - len(trailing):] == trailing, (name, array.shape)
    t, images_t = arrays["events_ts.npy"], arrays["images_ts.npy"][:, 0]
    assert arrays["images.npy"].dtype == np.uint8 and arrays["events_ts.npy"].dtype == np.float64
    assert not (np.diff(t) < 0).any()
    assert set(np.unique(arrays["events_p.npy"]).tolist()) <= {0, 1}
    assert min(t[0], images_t.min()) == 0.0
    expected = np.clip(np.searchsorted(t, images_t, side="right") - 1, 0, len(t) - 1)
    np.testing.assert_array_equal(arrays["image_event_indices.npy"][:, 0], expected)
    height, width = arrays["images.npy"].shape[1:3]
    assert json.loads((folder / "metadata.json").read_text())["sensor_resolution"] == [height, width]
    xy = arrays["events_xy.npy"]
    assert (xy[:, 0] < width).all() and (xy[:, 1] < height).all() and (xy >= 0).all()


def evreal_items(folder):
    """The (events t, x, y, p in +-1, frame [H, W] in [0, 1], frame time) of each item, by the
    rules above: what EVREAL's loader hands a method."""
    t, xy, p = (np.load(folder / f"events_{name}.npy") for name in ("ts", "xy", "p"))
    images, images_t = np.load(folder / "images.npy"), np.load(folder / "images_ts.npy")
    indices = np.load(folder / "image_event_indices.npy")
    for item in range(len(images) - 1):
        first = indices[item - 1][0] if item else indices[0][0]
        last = indices[item][0]
        yield (t[first:last], xy[first:last, 0], xy[first:last, 1], p[first:last] * 2.0 - 1.0,
               images[item][:, :, 0] / 255.0, images_t[item].item())


def test_a_converted_sequence_follows_evreals_rules_and_its_items_are_evreals(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    recording = formats.synthetic_recording(8_000, rate=40_000)
    formats.write_ecd_folder(raw / "slider_depth", recording)
    convert_common.convert_sequence(str(raw / "slider_depth"), str(tmp_path / "ECD" / "slider_depth"), "IJRR",
                                    fmt="evreal")
    folder = tmp_path / "ECD" / "slider_depth"
    assert_evreal_layout(folder)

    source, _ = load_events(str(raw / "slider_depth"), sensor=(180, 240))
    t_zero = min(source.t[0], source.aps_t[0])
    items = list(evreal_items(folder))
    assert len(items) == len(source.aps_t) - 1 and len(items[0][0]) == 0  # item 0 has no events
    for k, (t, x, y, p, frame, frame_t) in enumerate(items):
        assert frame_t == source.aps_t[k] - t_zero
        np.testing.assert_array_equal(frame, source.aps_frames[k] / 255.0)
        if k:  # from the last event at or before the previous frame, up to the last at or before this one
            first = max(np.searchsorted(source.t, source.aps_t[k - 1], side="right") - 1, 0)
            last = max(np.searchsorted(source.t, source.aps_t[k], side="right") - 1, 0)
            np.testing.assert_array_equal(t, source.t[first:last] - t_zero)
            np.testing.assert_array_equal(p, np.where(source.p[first:last] > 0, 1.0, -1.0))
            np.testing.assert_array_equal(x, source.x[first:last])
