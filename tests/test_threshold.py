"""--event_thresh auto, --lr_schedule and --preset: what they resolve to, and that an auto fit's
exposure does what auto_exposure promises and travels with the saved networks."""

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import torch

from config import float32_matmul_precision, parse_config
import experiment
import optim
import render
import command
import train
from event_data import Events
from model import make_model, tone_map
from simulate import moving_texture, simulate_events, sensor_noise, write_sequence
from test_bad_input import assert_error, call
from test_streaming import read_frames

TINY = ["--iters", "40", "--train_resolution", "8", "--net_width", "32", "--net_layers", "1", "--no_video"]


@pytest.fixture(autouse=True)
def no_signal_handlers(monkeypatch):
    monkeypatch.setattr(command, "prepare_command_line", lambda: None)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("sequence"))
    render = moving_texture(36, 48, 0.6, "pan", seed=2, speed=30.0)
    events = simulate_events(render, 0.6, 0.2)
    write_sequence(folder, render, events, np.linspace(0, 0.6, 7))
    return folder


def test_presets_fill_only_the_flags_not_given():
    default = parse_config([]).resolved()  # the recommended settings are the default
    assert (default.event_thresh, default.lr_schedule, default.smooth) == ("auto", "cosine", 0.5)
    authors = parse_config(["--preset", "authors"]).resolved()
    assert (authors.event_thresh, authors.lr_schedule, authors.smooth) == (1.0, "constant", 0.0)
    mixed = parse_config(["--event_thresh", "0.3"]).resolved()  # e.g. the authors' AED command
    assert (mixed.event_thresh, mixed.lr_schedule) == (0.3, "cosine")
    assert parse_config(["--preset", "authors", "--event_thresh", "auto"]).resolved().lr_schedule == "constant"
    assert parse_config(["--lr_schedule", "constant"]).resolved().lr_schedule == "constant"
    assert parse_config(["--preset", "authors", "--lr_schedule", "cosine"]).resolved().event_thresh == 1.0


@pytest.mark.parametrize("flags, words", [
    (["--event_thresh", "often"], ["--event_thresh", "often"]),
    (["--event_thresh", "-0.2"], ["--event_thresh -0.2", "positive number, or auto"]),
    (["--preset", "mine"], ["--preset", "mine"]),
    (["--lr_schedule", "linear"], ["--lr_schedule", "linear"]),
    (["--smooth", "-1"], ["--smooth -1", "0 to"]),
    (["--smooth", "nan"], ["--smooth nan", "0 to"]),
    (["--smooth", "soft"], ["--smooth", "soft"]),
])
def test_bad_threshold_flags_are_refused(tmp_path, capsys, flags, words):
    status = call(train.main, "-o", str(tmp_path / "out"), *TINY, *flags)
    assert_error(status, capsys.readouterr().err, 2, *words)
    assert not (tmp_path / "out").exists()


def test_the_cosine_schedule_falls_from_the_rate_to_its_floor_then_as_one_over_the_iteration():
    rates = optim.learning_rates(parse_config(["--lr_schedule", "cosine", "--iters", "500", "--lr", "1e-3"]))
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(optim.LR_FLOOR * 1e-3)
    assert (np.diff(rates) <= 0).all() and len(rates) == 500
    # a fit longer than LR_HORIZON: the same cosine, then a tail whose sum grows only as a logarithm
    horizon = optim.learning_rates(parse_config(["--iters", str(optim.LR_HORIZON), "--lr", "1e-3"]))
    longer = optim.learning_rates(parse_config(["--iters", str(5 * optim.LR_HORIZON), "--lr", "1e-3"]))
    assert len(longer) == 5 * optim.LR_HORIZON and (np.diff(longer) <= 0).all()
    np.testing.assert_array_equal(longer[: optim.LR_HORIZON], horizon)
    assert longer[optim.LR_HORIZON] == pytest.approx(optim.LR_FLOOR * 1e-3 * optim.LR_HORIZON / (optim.LR_HORIZON + 1))
    assert longer[-1] == pytest.approx(optim.LR_FLOOR * 1e-3 / 5)
    assert longer[optim.LR_HORIZON:].sum() == pytest.approx(optim.LR_FLOOR * 1e-3 * optim.LR_HORIZON * np.log(5), rel=1e-3)
    assert optim.learning_rates(parse_config(["--lr_schedule", "constant"])) is None


def test_every_step_of_the_fit_uses_its_scheduled_rate(sequence, monkeypatch):
    from event_data import load_events
    events, _ = load_events(sequence)
    seen, original = [], train.make_step

    def recording(model, optimizer, *args, **options):
        step = original(model, optimizer, *args, **options)

        def recorded():
            seen.append(float(optimizer.param_groups[0]["lr"]))
            return step()
        return recorded
    monkeypatch.setattr(train, "make_step", recording)
    config = parse_config([*TINY, "--lr_schedule", "cosine"])
    train.reconstruct(events, config)
    np.testing.assert_allclose(seen, optim.learning_rates(config.resolved()), rtol=1e-6)


def shown_log_frames(result, events):
    """The first window's log frames at auto_exposure's sample times, smoothed as shown, at the
    config's matrix precision (as auto_exposure's: bfloat16 on a CPU with AMX)."""
    from config import float32_matmul_precision, matmul_precision
    from model import smooth
    model = make_model(events.sensor, result.config)
    model.load_state_dict(result.states[0])
    with torch.no_grad(), float32_matmul_precision(matmul_precision(result.config.matmul_precision, torch.device("cpu"))):
        return smooth(model(torch.linspace(-1, 1, render.AUTO_TIMES)), result.config.setting("smooth"))


def log_span(log):
    low, high = torch.quantile(log.flatten(), torch.tensor([render.AUTO_QUANTILE, 1 - render.AUTO_QUANTILE])).tolist()
    return high - low


def test_auto_exposure_gives_frames_of_the_target_mean_and_span(sequence):
    from event_data import load_events
    events, _ = load_events(sequence)
    result = train.reconstruct(events, parse_config([*TINY, "--event_thresh", "auto"]), log_frames=True)
    scale, offset = result.exposure
    assert render.AUTO_MIN_C <= scale <= render.AUTO_MAX_C and np.isfinite(offset)
    log = shown_log_frames(result, events)
    assert float(tone_map(scale * log + offset).mean()) == pytest.approx(render.AUTO_MEAN, abs=2e-3)
    if render.AUTO_MIN_C < scale < render.AUTO_MAX_C:
        assert scale * log_span(log) == pytest.approx(render.AUTO_SPAN, rel=1e-3)
    # the log frames returned are the scaled ones, and the frames their tone mapping
    expected = render.to_images(tone_map(torch.from_numpy(result.log_frames)))
    np.testing.assert_array_equal(result.frames, expected)


def test_auto_meets_the_span_within_its_bounds_on_c_and_stops_at_them_otherwise(sequence):
    from event_data import load_events
    events, _ = load_events(sequence)
    result = train.reconstruct(events, parse_config([*TINY, "--event_thresh", "auto"]))
    log = shown_log_frames(result, events)
    span = log_span(log)
    free = dict(min_c=1e-3, max_c=1e3)
    scale, offset = render.auto_exposure(result.states, result.config, None, 0.5, **free)  # the fit's own brightness
    assert offset == 0.0 and scale == pytest.approx(0.5 / span, rel=1e-3)
    for wanted in (0.5, 5.0):
        scale, offset = render.auto_exposure(result.states, result.config, 0.4, wanted, **free)
        assert scale == pytest.approx(wanted / span, rel=1e-3)
        assert float(tone_map(scale * log + offset).mean()) == pytest.approx(0.4, abs=2e-3)
    low, high = 0.5 * 2.0 / span, 2.0 * 2.0 / span  # bounds on either side of what a span of 2 wants
    assert render.auto_exposure(result.states, result.config, 0.4, 2.0, min_c=high, max_c=10 * high)[0] == pytest.approx(high)
    assert render.auto_exposure(result.states, result.config, 0.4, 2.0, min_c=low / 10, max_c=low)[0] == pytest.approx(low)


def test_smooth_blurs_each_frame_as_opencv_does():
    import cv2
    from model import smooth
    frames = torch.randn(3, 2, 18, 24)
    for sigma in (0.5, 0.8):
        expected = np.stack([[cv2.GaussianBlur(plane.numpy(), (0, 0), sigma) for plane in frame] for frame in frames])
        np.testing.assert_allclose(smooth(frames, sigma).numpy(), expected, atol=1e-5)
    assert smooth(frames, 0.0) is frames
    thin = torch.randn(2, 1, 2, 9)  # thinner than the kernel's reach: the edge is repeated, not mirrored
    assert smooth(thin, 0.5).shape == thin.shape and torch.isfinite(smooth(thin, 0.5)).all()


def test_smooth_shows_the_same_fit_smoothed_and_an_older_checkpoint_as_it_was(sequence, tmp_path):
    import dataclasses
    from event_data import load_events
    from model import smooth
    events, _ = load_events(sequence)
    fit = train.reconstruct(events, parse_config([*TINY, "--smooth", "0"]), log_frames=True)
    assert fit.config.smooth == 0.0 and fit.exposure is not None
    shown = dataclasses.replace(fit.config, smooth=0.5)
    smoothed = render.render(fit.states, fit.spans, shown, fit.times, log_frames=True)
    assert smoothed.exposure == render.auto_exposure(fit.states[:1], shown)  # chosen on the frames as shown
    (scale, offset), (fit_scale, fit_offset) = smoothed.exposure, fit.exposure
    fitted = (torch.from_numpy(fit.log_frames) - fit_offset) / fit_scale  # the fit's own log frames
    np.testing.assert_allclose(smoothed.log_frames, (scale * smooth(fitted, 0.5) + offset).numpy(), atol=1e-4)
    np.testing.assert_array_equal(smoothed.frames, render.to_images(tone_map(torch.from_numpy(smoothed.log_frames))))
    assert not np.array_equal(smoothed.frames, fit.frames)
    # a model.pt written before --smooth existed is shown as it was then, unsmoothed
    out = str(tmp_path / "out")
    assert call(train.main, "-d", sequence, "-o", out, "-n", "fit", *TINY, "--frames_at", "aps") == 0
    saved = torch.load(os.path.join(out, "fit", "model.pt"), weights_only=False)
    assert saved["config"]["smooth"] == 0.5
    del saved["config"]["smooth"]
    torch.save(saved, os.path.join(out, "fit", "model.pt"))
    assert experiment.config_for_render(os.path.join(out, "fit", "model.pt"), {}).resolved().smooth == 0.0
    assert experiment.config_for_render(os.path.join(out, "fit", "model.pt"), {"smooth": 1.0}).smooth == 1.0


def test_tune_auto_scores_every_target_and_bound_on_the_saved_fits(sequence, tmp_path):
    """threshold_study.py --tune_auto: one row per (mean, span, floor, cap, smooth), scored from the
    saved recommended fit against the authors' results; a cap below the C the span wants shows
    the frames with less contrast, and smoothing changes them."""
    import shutil
    import threshold_study
    from event_data import load_events
    folder, out = tmp_path / "family", tmp_path / "study"
    shutil.copytree(sequence, folder / "seq")
    os.makedirs(out / "fits")
    events, _ = load_events(sequence)
    fit = train.reconstruct(events, parse_config([*TINY, "--frames_at", "aps"]))
    torch.save({"config": fit.config, "states": fit.states, "spans": fit.spans, "times": fit.times},
               out / "fits" / "seq-recommended-40.pt")
    (out / "results.jsonl").write_text(json.dumps({"sequence": "seq", "configuration": "authors", "iters": 40, "mse": 0.05,
                                                   "ssim": 0.5, "lpips": 0.4}) + "\n")
    spec = threshold_study.Sequence("seq", "synthetic", "pan", 30, 0.2)
    table = threshold_study.tune_auto(str(folder), str(out), [spec], 40, (None, 0.3), (2.0,), (1e-3,), (0.01, 10.0), (0.0, 1.0))
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(row[0], row[3], row[4]) for row in rows] == [(mean, cap, sigma) for mean in ("| fit", "| 0.3")
                                                          for cap in ("0.01", "10") for sigma in ("0", "1")]
    ssim_gain = {(row[0], row[3], row[4]): float(row[10]) for row in rows}
    assert ssim_gain[("| 0.3", "0.01", "0")] != ssim_gain[("| 0.3", "10", "0")]
    assert ssim_gain[("| 0.3", "10", "0")] != ssim_gain[("| 0.3", "10", "1")]
    assert all(row[8] in ("0", "1") for row in rows)


def test_an_auto_run_records_its_threshold_and_renders_again_the_same(sequence, tmp_path):
    out = str(tmp_path / "out")
    assert call(train.main, "-d", sequence, "-o", out, "-n", "fit", *TINY, "--preset", "recommended") == 0
    summary = json.load(open(os.path.join(out, "fit", "config.json")))
    assert summary["config"]["event_thresh"] == "auto" and summary["config"]["lr_schedule"] == "cosine"
    assert summary["auto_threshold"]["event_thresh"] > 0
    assert call(train.main, "-d", sequence, "-o", out, "-n", "again", "--render_only",
                os.path.join(out, "fit", "model.pt"), "--no_video") == 0
    np.testing.assert_array_equal(read_frames(os.path.join(out, "again")), read_frames(os.path.join(out, "fit")))


def test_auto_takes_its_exposure_from_the_first_window_whatever_the_batch(sequence, tmp_path):
    """With --window, the exposure comes from the first window alone: a batch of several windows
    (on a GPU, as many as memory holds) gets the exposure of one window at a time, and the
    command line the one reconstruct finds."""
    from event_data import load_events
    events, _ = load_events(sequence)
    flags = [*TINY, "--window", "0.2", "--frames_at", "aps"]
    one, three = (train.reconstruct(events, parse_config([*flags, "--windows_batch", batch])) for batch in ("1", "3"))
    assert len(one.spans) == 3
    with float32_matmul_precision(one.config.matmul_precision):  # as reconstruct runs it
        first_only, every = (render.auto_exposure(states, one.config) for states in (one.states[:1], one.states))
    assert one.exposure == first_only != every
    np.testing.assert_allclose(three.exposure, one.exposure, rtol=1e-3)
    first = one.times <= one.spans[0][1]  # later windows start from other networks in a batch
    assert first.any() and np.abs(three.frames[first].astype(int) - one.frames[first].astype(int)).max() <= 3  # bf16 matmuls
    out = str(tmp_path / "out")
    assert call(train.main, "-d", sequence, "-o", out, "-n", "cli", *flags, "--windows_batch", "3") == 0
    summary = json.load(open(os.path.join(out, "cli", "config.json")))
    assert (summary["auto_threshold"]["event_thresh"], summary["auto_threshold"]["offset"]) == pytest.approx(three.exposure)


def test_sensor_noise_adds_and_removes_events_as_asked():
    n = 1000
    events = {"t": np.linspace(0, 1, n), "x": np.zeros(n, np.int16), "y": np.zeros(n, np.int16), "p": np.ones(n, np.int8),
              "sensor": (10, 20)}
    noisy = sensor_noise(events, 1.0, noise_rate=5.0, hot_pixels=2, hot_rate=100.0, seed=1)
    assert len(noisy["t"]) > n + 500 and (np.diff(noisy["t"]) >= 0).all()
    thinned = sensor_noise(events, 1.0, refractory=0.0025, seed=1)  # one pixel firing every 1 ms
    assert 300 <= len(thinned["t"]) <= 600 and (np.diff(thinned["t"]) >= 0.001).all()


def test_per_pixel_thresholds_spread_the_event_counts():
    render = moving_texture(20, 30, 0.5, "pan", seed=1, speed=30.0)
    even = simulate_events(render, 0.5, 0.2)
    spread = simulate_events(render, 0.5, 0.2, seed=3, threshold_spread=0.3)
    assert len(spread["t"]) != len(even["t"]) and (np.diff(spread["t"]) >= 0).all()


def test_camera_samples_judges_each_configuration_and_writes_a_preview(sequence, tmp_path, capsys):
    """scripts/camera_samples.py: one row per configuration with the frames' event agreement,
    mean and spread, a preview of the event count beside each configuration's frames, and a bad
    flag as one error line."""
    import camera_samples
    out = tmp_path / "samples"
    camera_samples.main([sequence, "-o", str(out), *TINY, "--compare", "--preset authors", "--preset recommended"])
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 4 and "`--preset authors`" in table[2] and "`--preset recommended`" in table[3]
    agreement = [float(line.split(" | ")[2]) for line in table[2:]]
    assert all(-1 <= value <= 1 for value in agreement)
    preview = cv2.imread(str(out / f"{os.path.basename(sequence)}.png"))
    assert preview.shape[1] == 3 * 48  # the events and two configurations, side by side
    with pytest.raises(SystemExit) as ended:
        camera_samples.main([sequence, "-o", str(out), "--iters", "many"])
    assert ended.value.code == 2 and "--iters" in capsys.readouterr().err


@pytest.mark.parametrize("name, samples", [("camera", ("street-object", "camera-high-contrast", "synthetic-vga")),
                                           ("camera2", ("motorcycle-object", "hubble-high-contrast", "motorcycle-vga"))])
def test_the_camera_families_are_twenty_or_more_seeded_sequences_in_two_halves(tmp_path, name, samples):
    """threshold_study.CAMERA and CAMERA2: at least 20 sequences each, each with its own name and
    seed (the second family shares none with the first), the tuning and held-out halves of one
    size; a sequence of each kind writes its events and APS frames at the metering it names."""
    import threshold_study
    from event_data import load_events
    family = threshold_study.FAMILIES[name]
    if name == "camera2":
        first = threshold_study.CAMERA
        assert not {spec.name for spec in family} & {spec.name for spec in first}
        assert not {spec.seed for spec in family} & {spec.seed for spec in first}
    assert len(family) >= 20
    assert len({spec.name for spec in family}) == len({spec.seed for spec in family}) == len(family)
    halves = threshold_study.splits(family)
    assert len(halves["tune"]) == len(halves["held-out"]) and not set(halves["tune"]) & set(halves["held-out"])
    small = [threshold_study.dataclasses.replace(spec, size=(24, 32), duration=0.2, speed=spec.speed / 4)
             for spec in family if spec.name in samples]
    assert len(small) == len(samples)
    threshold_study.write_family(str(tmp_path), small)
    for spec in small:
        events, _ = load_events(str(tmp_path / spec.name))
        assert events.sensor == (24, 32) and len(events.t) > 0
        assert float(events.aps_frames.mean()) / 255 == pytest.approx(spec.grey, abs=0.02)


def test_auto_spatial_weight_is_the_authors_times_the_share_of_pixels_that_fired(monkeypatch):
    """--spatial_weight auto (the recommended preset's) is the authors' 0.05 times the share of the
    sensor's pixels with events in the first span, one number for the run (recorded in its
    config); a number is used as given, and the authors' preset keeps 0.05."""
    from model import SPATIAL_WEIGHT
    x = np.array([0, 1, 1, 5, 19], np.int16)  # 4 distinct pixels of 200, one of them twice
    y = np.array([0, 0, 0, 3, 9], np.int16)
    events = Events(t=np.linspace(0.0, 0.1, 5), x=x, y=y, p=np.ones(5, np.int8), sensor=(10, 20), path="few")
    config = dataclasses.replace(parse_config([]).resolved(), H=10, W=20)
    assert config.spatial_weight == "auto"
    assert train.with_spatial_weight(config, events, [(0.0, 0.1)]).spatial_weight == pytest.approx(SPATIAL_WEIGHT * 4 / 200)
    assert train.with_spatial_weight(config, events, [(0.05, 0.1)]).spatial_weight == pytest.approx(SPATIAL_WEIGHT * 3 / 200)
    given = dataclasses.replace(config, spatial_weight=0.02)
    assert train.with_spatial_weight(given, events, [(0.0, 0.1)]) is given and train.spatial_weight(given) == 0.02
    assert train.spatial_weight(parse_config(["--preset", "authors"])) == SPATIAL_WEIGHT
    seen = []
    real = train.evinr_loss
    monkeypatch.setattr(train, "evinr_loss", lambda *args, weights=None, **kwargs: seen.append(weights["spatial"])
                        or real(*args, weights=weights, **kwargs))
    dense = moving_texture(12, 16, 0.2, "pan", seed=1, speed=40.0)
    recording = simulate_events(dense, 0.2, 0.2)
    result = train.reconstruct(Events(t=recording["t"], x=recording["x"], y=recording["y"], p=recording["p"],
                                      sensor=(12, 16), path="dense"), parse_config([*TINY, "--no_c2f", "--window", "0.1"]))
    share = np.count_nonzero(np.bincount(recording["y"][recording["t"] <= result.spans[0][1]].astype(int) * 16
                                         + recording["x"][recording["t"] <= result.spans[0][1]], minlength=192)) / 192
    assert result.config.spatial_weight == pytest.approx(SPATIAL_WEIGHT * share)
    assert len(result.spans) == 2 and seen and set(seen) == {result.config.spatial_weight}


@pytest.mark.parametrize("value, words", [("lots", ["--spatial_weight", "lots"]), ("-0.1", ["--spatial_weight -0.1", "0 or more"]),
                                          ("nan", ["--spatial_weight nan", "0 or more"])])
def test_a_bad_spatial_weight_is_one_line(value, words, tmp_path, capsys):
    assert_error(call(train.main, "-o", str(tmp_path / "out"), "--iters", "1", "--spatial_weight", value),
                 capsys.readouterr().err, 2, *words)
