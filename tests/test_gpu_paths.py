"""The logic of the GPU paths, tested where it runs (on the CPU) and, marked `cuda`, on a GPU
(scripts/gpu_check.sh runs those): the static-buffer training step that CUDA graphs capture,
graph replay against eager steps, and the stacked-batch size chosen from free memory."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from config import Config, float32_matmul_precision, parse_config
import optim
import plan
import render
import train
from event_data import events_from_columns
from model import StackedEvINR, make_model, query_times
from simulate import moving_texture, simulate_events

SENSOR = (16, 20)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (run scripts/gpu_check.sh on one)")


def simulated(sensor=SENSOR, duration=0.4):
    render = moving_texture(*sensor, duration, "pan", seed=2, speed=30.0)
    columns = simulate_events(render, duration, threshold=0.2)
    return events_from_columns(columns["t"], columns["x"], columns["y"], columns["p"], "sim", "sim", sensor=sensor)


def small_config(**changes):
    return dataclasses.replace(parse_config(["--net_width", "32", "--net_layers", "1", "--train_resolution", "6",
                                                   "--log_interval", "5", "--iters", "10", "--no_c2f"]), **changes)


def test_the_static_step_is_the_fit_loop():
    """Calling make_step's function N times on its fixed buffers gives the parameters that fit()
    gives after N iterations, from the same start."""
    events = simulated()
    config = small_config(cuda_graph="off", lr_schedule="cosine")
    window = train.Window(events, float(events.t[0]), float(events.t[-1]), SENSOR, config, torch.device("cpu"))
    torch.manual_seed(0)
    start = make_model(SENSOR, config)
    fitted = copy.deepcopy(start)
    train.fit(fitted, [window], config)
    stepped = copy.deepcopy(start)
    frames, boundaries, midpoints = window.frames(config.train_resolution)
    optimizer = optim.make_optimizer(stepped, config)
    step = train.make_step(stepped, optimizer, frames, query_times(boundaries, midpoints), config)
    addresses = [p.data_ptr() for p in stepped.parameters()]
    rates = optim.learning_rates(config)  # a cosine schedule: a tensor rate, set in place
    assert rates is not None
    for iteration in range(config.iters):
        optimizer.param_groups[0]["lr"].fill_(rates[iteration])
        loss, parts = step()
    # static: the parameters are updated where a captured graph reads and writes them
    assert [p.data_ptr() for p in stepped.parameters()] == addresses
    for name, value in fitted.state_dict().items():
        torch.testing.assert_close(stepped.state_dict()[name], value, rtol=0, atol=0)
    assert loss.dim() == 0 and set(parts) == {"temporal", "spatial", "brightness"}


def test_stacked_batch_size_follows_the_memory_budget():
    config = Config()
    assert plan.stacked_batch_size((180, 240), config, 30, 0) == 1  # never less than one window
    sizes = [plan.stacked_batch_size((180, 240), config, 30, gb * 2**30) for gb in (1, 8, 16, 140)]
    assert sizes == sorted(sizes) and sizes[0] >= 1 and sizes[-1] == 30  # more memory, more windows, at most all
    assert 5 <= sizes[2] < 30  # 16 GB: about 0.4 GB a 240x180 window, half the memory used
    # the estimate grows with the sensor: fewer 1280x720 windows fit in the same memory
    assert plan.stacked_batch_size((720, 1280), config, 30, 16 * 2**30) < sizes[2]


def test_cuda_graph_flag_is_checked_and_off_on_a_cpu():
    assert not train.use_cuda_graph(Config(), torch.device("cpu"))
    assert train.use_cuda_graph(Config(), torch.device("cuda"))
    assert not train.use_cuda_graph(Config(cuda_graph="off"), torch.device("cuda"))
    with pytest.raises(SystemExit):
        parse_config(["--cuda_graph", "sometimes"])


# -----------------------------------------------------------------------------
# on a GPU


def fitted_parameters(config, stacked, steps=50, device="cuda", sensor=(60, 80)):
    events = simulated(sensor, duration=0.6)
    device = torch.device(device)
    spans = [(0.0, 0.3), (0.3, 0.6)] if stacked else [(float(events.t[0]), float(events.t[-1]))]
    windows = [train.Window(events, begin, end, sensor, config, device) for begin, end in spans]
    torch.manual_seed(0)
    model = make_model(sensor, config).to(device)
    if stacked:
        model = StackedEvINR([model] * len(windows)).to(device)
    train.fit(model, windows, dataclasses.replace(config, iters=steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {name: value.detach().cpu() for name, value in model.state_dict().items()}


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("stacked", [False, True])
def test_graph_replay_equals_eager_steps(stacked):
    """50 steps replayed from a CUDA graph give the parameters of 50 eager steps, one network or
    stacked windows (to within float tolerance: cuBLAS may pick other algorithms under capture)."""
    config = small_config(iters=50, log_interval=10)
    eager = fitted_parameters(dataclasses.replace(config, cuda_graph="off"), stacked)
    graphed = fitted_parameters(dataclasses.replace(config, cuda_graph="on"), stacked)
    for name, value in eager.items():
        torch.testing.assert_close(graphed[name], value, rtol=1e-4, atol=1e-5)


def assert_output_kernel_matches(stacked, device, steps, sensor=(60, 80)):
    """Fitting with the output layer's AdamW update in its backward (one Triton kernel) gives the
    parameters of the gradient-then-torch's-AdamW path, to float tolerance: the gradient's sums
    run in another order (and in TF32 on a GPU), and AdamW's normalised step turns a rounding
    difference in a near-zero gradient into up to one learning rate. Returns the largest
    difference over the largest parameter, for the record."""
    config = small_config(iters=steps, log_interval=10, cuda_graph="off")
    reference = fitted_parameters(dataclasses.replace(config, output_kernel="torch"), stacked, steps, device, sensor)
    fused = fitted_parameters(dataclasses.replace(config, output_kernel="triton"), stacked, steps, device, sensor)
    worst = 0.0
    for name, value in reference.items():
        difference = (fused[name] - value).abs().flatten()
        # all but a few elements agree to rounding; near-zero gradients may flip a step's sign
        assert float(difference.median()) <= 1e-5 * float(value.abs().max()) + 1e-7, name
        assert float(torch.quantile(difference, 0.999)) <= 0.05 * steps * config.lr, name
        assert float(difference.max()) <= 2 * steps * config.lr, name
        worst = max(worst, float(difference.max() / value.abs().max()))
    return worst


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("stacked", [False, True])
def test_output_kernel_matches_gradient_then_adamw_on_a_gpu(stacked):
    """A few steps in float32 through the whole fit (the kernel's arithmetic itself is checked in
    tests/test_loss_kernel.py; over many steps, rounding differences grow along the trajectory)."""
    with float32_matmul_precision("highest"):
        print(f"largest relative difference: {assert_output_kernel_matches(stacked, 'cuda', 8):.1e}")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("schedule", ["constant", "cosine"])  # a float rate, and a tensor rate the graph reads
def test_reconstruct_on_cuda_with_graphs_matches_without(schedule):
    events = simulated((60, 80), duration=0.6)
    config = dataclasses.replace(small_config(iters=40, lr_schedule=schedule), device="cuda", frames_at="uniform",
                                 val_resolution=5)
    with_graphs = train.reconstruct(events, config)
    without = train.reconstruct(events, dataclasses.replace(config, cuda_graph="off"))
    assert np.abs(with_graphs.frames.astype(int) - without.frames.astype(int)).max() <= 1


@cuda
@pytest.mark.cuda
def test_same_seed_same_frames_on_cuda():
    """The default GPU path (graphs, the Triton loss, TF32) is deterministic: its reductions add
    in a fixed order, so the same seed gives the same frames, bit for bit."""
    events = simulated((60, 80), duration=0.6)
    config = dataclasses.replace(small_config(iters=40), device="cuda", frames_at="uniform", val_resolution=5)
    first, second = train.reconstruct(events, config), train.reconstruct(events, config)
    assert np.array_equal(first.frames, second.frames)


@pytest.mark.parametrize("scheduled", [False, True])
def test_fused_adamw_is_torch_adamw(scheduled):
    """FusedAdamW takes the steps of torch.optim.AdamW(fused=True), bit for bit, with a float or
    a tensor learning rate."""
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    theirs = copy.deepcopy(ours)
    lr = torch.tensor(1e-2) if scheduled else 1e-2
    if not optim.FusedAdamW.supported(torch.device("cpu"), lr):
        pytest.skip("this torch has no fused AdamW kernel for the CPU (torch < 2.4)")
    optimizers = [optim.FusedAdamW(ours.parameters(), lr),
                  torch.optim.AdamW(theirs.parameters(), lr=lr.clone() if scheduled else lr, fused=True)]
    inputs = torch.randn(4, 5)
    for k in range(20):
        for model, optimizer in zip((ours, theirs), optimizers):
            if scheduled:
                optimizer.param_groups[0]["lr"].fill_(1e-2 / (k + 1))
            optimizer.zero_grad()
            model(inputs).pow(2).sum().backward()
            optimizer.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)


def test_a_fit_does_not_import_torch_dynamo():
    """torch.optim's first use imports torch._dynamo (seconds of start-up); the fit must not."""
    import os
    import subprocess
    import sys
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path[:0] = [{os.path.dirname(tests)!r}, {tests!r}, {os.path.join(os.path.dirname(tests), 'scripts')!r}]; "
            "import train; from test_gpu_paths import simulated, small_config; "
            "train.reconstruct(simulated(), small_config(frames_at='uniform', val_resolution=2)); "
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_frames_are_quantised_where_they_are_rendered_as_on_the_host():
    """render.to_images (on the device) gives utils.tone_map_to_uint8's bytes, rounding ties included."""
    import utils
    frames = torch.rand(20, 1, 30, 40, generator=torch.Generator().manual_seed(0))
    ties = [0.5, 1.5, 2.5, 127.5, 128.5, 254.5]
    frames[0, 0, 0, :len(ties) + 4] = torch.tensor([v / 255 for v in ties] + [-0.1, 1.2, 0.0, 1.0])
    expected = np.stack([utils.tone_map_to_uint8(frame[0].numpy()) for frame in frames])
    np.testing.assert_array_equal(render.to_images(frames), expected)
    colour = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(render.to_images(colour),
                                  np.stack([utils.tone_map_to_uint8(frame.permute(1, 2, 0).numpy()) for frame in colour]))
