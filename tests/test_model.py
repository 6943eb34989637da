"""The network, its derivative, the losses and the time alignment of the supervision."""


import numpy as np
import pytest
import torch

from event_data import events_from_columns
from model import EvINR, StackedEvINR, evinr_loss, query_times, tone_map
from simulate import moving_texture, simulate_events
from config import Config
from plan import normalised
from train import Window


def small_model(height=6, width=5, channels=1, seed=0):
    torch.manual_seed(seed)
    return EvINR(height, width, channels=channels, n_layers=2, hidden=32, neck=16).double()


def test_architecture_follows_the_authors_defaults():
    model = EvINR(180, 240)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(512, 1), (512, 512), (512, 512), (512, 512), (256, 512), (43200, 256)]
    assert model.w0 == 10.0
    assert linears[0].weight.abs().max() <= 1.0                     # U(-1/in, 1/in), in = 1
    assert linears[1].weight.abs().max() <= np.sqrt(6 / 512) / 10    # U(-sqrt(6/in)/w0, ...)
    assert model(torch.zeros(3)).shape == (3, 1, 180, 240)
    assert EvINR(4, 6, channels=3)(torch.zeros(2)).shape == (2, 3, 4, 6)


def test_forward_mode_derivative_matches_jvp_and_finite_differences():
    model = small_model()
    t = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64)
    value, derivative = model.forward_with_derivative(t)
    torch.testing.assert_close(value, model(t))
    _, jvp = torch.func.jvp(model, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(derivative, jvp)
    step = 1e-6
    central = (model(t + step) - model(t - step)) / (2 * step)
    torch.testing.assert_close(derivative, central, rtol=1e-5, atol=1e-6)


def test_autograd_and_difference_losses_agree_on_a_smooth_signal():
    """With fine chunks, the change between boundaries and derivative * duration coincide."""
    model = small_model()
    n = 400
    boundaries = torch.linspace(-1, 1, n + 1, dtype=torch.float64)
    with torch.no_grad():
        target = model(boundaries)[1:] - model(boundaries)[:-1]   # the model's own exact changes
    diff_loss, diff_parts, _ = evinr_loss(model, query_times(boundaries, None, "diff"), target, "diff")
    auto_loss, auto_parts, _ = evinr_loss(model, query_times(boundaries, None, "autograd"), target, "autograd")
    assert float(diff_parts["temporal"]) < 1e-20
    assert float(auto_parts["temporal"]) < 1e-6 * float((target ** 2).mean())
    torch.testing.assert_close(auto_loss, diff_loss, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("align", ["boundary", "midpoint"])
def test_fused_difference_loss_equals_the_plain_one(align):
    """Same seed, same loss terms and the same gradient for every parameter."""
    boundaries = torch.linspace(-1, 1, 8, dtype=torch.float64)
    target = torch.randn(7, 1, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = {}
    for fused in (True, False):
        model = small_model(seed=2)
        total, parts, _ = evinr_loss(model, boundaries, target, "diff", align, weights={"brightness": 0.7}, fused=fused)
        total.backward()
        results[fused] = (total.detach(), parts, [p.grad for p in model.parameters()])
    torch.testing.assert_close(results[True][0], results[False][0])
    for name in ("temporal", "spatial", "brightness"):
        torch.testing.assert_close(results[True][1][name], results[False][1][name])
    for fused_grad, plain_grad in zip(results[True][2], results[False][2]):
        torch.testing.assert_close(fused_grad, plain_grad)


def test_stacked_networks_are_their_members_side_by_side():
    members = [small_model(seed=seed) for seed in (3, 4, 5)]
    stacked = StackedEvINR(members)
    t = torch.linspace(-1, 1, 7, dtype=torch.float64)
    times = torch.stack([t, t.flip(0), 0.5 * t])
    values, derivatives = stacked.forward_with_derivative(times)
    torch.testing.assert_close(values, stacked(times))
    assert values.shape == (3, 7, 1, 6, 5)
    for k, member in enumerate(members):
        value, derivative = member.forward_with_derivative(times[k])
        torch.testing.assert_close(values[k], value)
        torch.testing.assert_close(derivatives[k], derivative)
        # unstacking gives back each member's parameters exactly, in EvINR's state-dict layout
        restored = small_model(seed=99)
        restored.load_state_dict(stacked.unstacked()[k])
        for (name, mine), theirs in zip(restored.state_dict().items(), member.state_dict().values()):
            assert torch.equal(mine, theirs), name


def member_gradient(stacked, k):
    """Network k's gradients in a StackedEvINR, named as EvINR's parameters."""
    names = [f"body.{i}.linear" for i in range(stacked.n_body)] + ["head"]
    grads = {}
    for name, weight, bias in zip(names, stacked.weights, stacked.biases):
        grads[f"{name}.weight"], grads[f"{name}.bias"] = weight.grad[k].t(), bias.grad[k, 0]
    return grads


@pytest.mark.parametrize("loss, align, fused", [("diff", "boundary", True), ("diff", "boundary", False),
                                                ("diff", "midpoint", True), ("autograd", "boundary", False)])
def test_stacked_loss_is_the_sum_of_the_members_losses(loss, align, fused):
    """Same total (summed), same parts (averaged) and the same gradient for every member, so a
    stacked fit steps each network exactly as a fit of it alone would."""
    generator = torch.Generator().manual_seed(6)
    boundaries = torch.sort(torch.rand(2, 9, dtype=torch.float64, generator=generator) * 2 - 1).values
    midpoints = 0.5 * (boundaries[:, 1:] + boundaries[:, :-1])
    target = torch.randn(2, 8, 1, 6, 5, dtype=torch.float64, generator=generator)
    stacked = StackedEvINR([small_model(seed=7), small_model(seed=8)])
    total, parts, _ = evinr_loss(stacked, query_times(boundaries, midpoints, loss, align), target, loss, align, fused=fused)
    total.backward()
    alone_total, alone_parts = 0.0, {name: 0.0 for name in parts}
    for k in range(2):
        member = small_model(seed=7 + k)
        member_total, member_parts, _ = evinr_loss(member, query_times(boundaries[k], midpoints[k], loss, align),
                                                target[k], loss, align, fused=fused)
        member_total.backward()
        alone_total += member_total.detach()
        alone_parts = {name: alone_parts[name] + member_parts[name] / 2 for name in parts}
        for name, grad in member_gradient(stacked, k).items():
            torch.testing.assert_close(grad, dict(member.named_parameters())[name].grad, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(total.detach(), alone_total)
    for name in parts:
        torch.testing.assert_close(parts[name], alone_parts[name])


def test_loss_gradients_flow_to_every_parameter():
    model = small_model()
    boundaries = torch.linspace(-1, 1, 6, dtype=torch.float64)
    target = torch.randn(5, 1, 6, 5, dtype=torch.float64)
    for loss in ("diff", "autograd"):
        model.zero_grad()
        total, _, _ = evinr_loss(model, query_times(boundaries, None, loss), target, loss)
        total.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_tone_map_is_the_authors():
    log_frames = torch.tensor([-10.0, 0.0, 1.0, 10.0])
    expected = (np.exp(log_frames.numpy()) / (1 + np.exp(log_frames.numpy()))) ** (1 / 0.6)
    torch.testing.assert_close(tone_map(log_frames), torch.tensor(expected, dtype=torch.float32))


class GroundTruth(torch.nn.Module):
    """A stand-in network that returns the simulator's true log frames for a window."""

    def __init__(self, render, begin, end):
        super().__init__()
        self.render, self.begin, self.end = render, begin, end

    def forward(self, t):
        seconds = self.begin + (t.double().numpy() + 1.0) * 0.5 * (self.end - self.begin)
        return torch.from_numpy(self.render(seconds))[:, None]


def window_args(**overrides):
    return Config(**{"chunking": "count", "event_thresh": 0.2, "color_event": False, **overrides})


def test_boundary_alignment_compares_each_event_frame_with_its_own_span():
    """With the true video in place of the network, each event frame must equal the true change
    over its chunk's span up to the sensor's quantisation (less than one threshold per pixel);
    the authors' midpoint alignment is off by half a chunk and so is measurably worse."""
    duration, threshold = 0.5, 0.05  # a fine threshold, so quantisation does not hide the shift
    render = moving_texture(16, 20, duration, "pan", seed=3, speed=30.0)
    simulated = simulate_events(render, duration, threshold)
    events = events_from_columns(simulated["t"], simulated["x"], simulated["y"], simulated["p"], "sim", "sim")
    window = Window(events, 0.0, duration, (16, 20), window_args(event_thresh=threshold), torch.device("cpu"))
    truth = GroundTruth(render, 0.0, duration)
    frames, boundaries, midpoints = window.frames(10)
    change = truth(boundaries)[1:] - truth(boundaries)[:-1]
    # Quantisation: each pixel's leftover against its reference is under one threshold at both ends.
    assert (change - frames.double()).abs().max() < 2 * threshold
    errors = {}
    for align in ("boundary", "midpoint"):
        _, parts, _ = evinr_loss(truth, query_times(boundaries, midpoints, "diff", align), frames.double(), "diff", align)
        errors[align] = float(parts["temporal"])
    assert errors["boundary"] < 0.25 * errors["midpoint"], errors


def test_normalised_time_maps_window_onto_unit_interval():
    np.testing.assert_allclose(normalised([2.0, 3.0, 4.0], 2.0, 4.0), [-1.0, 0.0, 1.0])
