"""The Triton finite-difference loss (TritonDifferenceLoss) against FusedDifferenceLoss.

On the CPU the kernels run in Triton's interpreter. TRITON_INTERPRET=1 must be set before Triton
is imported, and must not reach the other tests, so those comparisons run in a subprocess that
calls `compare_in_interpreter` below. On a GPU (tests marked `cuda`) they run compiled, at the
real frame size."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from model import EvINR, FusedDifferenceLoss, StackedEvINR, TritonDifferenceLoss, evinr_loss, use_triton_loss
from optim import OutputAdamW

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
WEIGHTS = (1.0, 0.05, 0.7)  # temporal, spatial, brightness: brightness raised so its gradient counts
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (optional: pip install triton)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def random_frames(shape, device, seed, quantised=False):
    """Log frames [K, T, C, H, W] with a brightness that drifts over time, and event frames
    [K, T-1, C, H, W]. Quantised values make many differences exactly zero, where the L1 terms'
    gradient, sign(0), must be 0 in both implementations."""
    generator = torch.Generator().manual_seed(seed)
    n_networks, n_times, *frame_shape = shape
    if quantised:
        frames = torch.randint(0, 3, shape, generator=generator) * 0.5
        target = torch.randint(-1, 2, (n_networks, n_times - 1, *frame_shape), generator=generator) * 0.5
    else:
        frames = torch.randn(shape, generator=generator) + torch.randn(n_networks, n_times, 1, 1, 1, generator=generator)
        target = torch.randn(n_networks, n_times - 1, *frame_shape, generator=generator)
    return frames.to(device), target.to(device)


def assert_matches_reference(log_frames, target, rtol=1e-4):
    """TritonDifferenceLoss's total, terms and gradient equal FusedDifferenceLoss's on the same
    input; returns the largest relative differences (terms, gradient) for the record."""
    results = []
    for loss_function in (FusedDifferenceLoss, TritonDifferenceLoss):
        frames = log_frames.clone().requires_grad_()
        total, *terms = loss_function.apply(frames, target, *WEIGHTS)
        (3.0 * total).backward()  # the backward scales the gradient by grad_total
        results.append(([total.detach(), *terms], frames.grad))
    (reference_terms, reference_grad), (terms, grad) = results
    for name, mine, reference in zip(("total", "temporal", "spatial", "brightness"), terms, reference_terms):
        assert mine.shape == reference.shape, name
        torch.testing.assert_close(mine, reference, rtol=rtol, atol=0.0, msg=lambda m: f"{name}: {m}")
    grad_scale = reference_grad.abs().max()
    torch.testing.assert_close(grad, reference_grad, rtol=rtol, atol=rtol * grad_scale)
    term_error = max(float(((mine - reference) / reference).abs().max()) for mine, reference in zip(terms, reference_terms))
    return term_error, float((grad - reference_grad).abs().max() / grad_scale)


def compare_in_interpreter():
    """Every comparison of the CPU test, run under TRITON_INTERPRET=1 (tiny shapes: the
    interpreter runs each program in Python)."""
    cases = {
        "K=1, T=2": random_frames((1, 2, 1, 3, 4), "cpu", seed=0),
        "K=2, C=3, odd H and W": random_frames((2, 5, 3, 5, 7), "cpu", seed=1),
        "two tiles per frame, not row-aligned": random_frames((2, 3, 3, 20, 30), "cpu", seed=2),
        "ties (sign 0)": random_frames((3, 4, 1, 9, 6), "cpu", seed=3, quantised=True),
    }
    # align=midpoint hands the loss a slice of the event frames: strided over networks
    frames, events = random_frames((2, 4, 1, 7, 5), "cpu", seed=4)
    cases["event frames as a strided slice"] = (frames, torch.cat([events, events[:, :1]], dim=1)[:, :3])
    for name, (frames, target) in cases.items():
        term_error, grad_error = assert_matches_reference(frames, target)
        print(f"{name}: largest relative difference {term_error:.1e} in the terms, {grad_error:.1e} in the gradient")

    # through evinr_loss and a stacked network: the same parameter gradients as the torch kernel
    members = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        members.append(EvINR(6, 5, n_layers=2, hidden=32, neck=16))
    boundaries = torch.sort(torch.rand(2, 6, generator=torch.Generator().manual_seed(7)) * 2 - 1).values
    event_frames = torch.randn(2, 5, 1, 6, 5, generator=torch.Generator().manual_seed(8))
    gradients = {}
    for kernel in ("torch", "triton"):
        stacked = StackedEvINR(members)
        total, _, _ = evinr_loss(stacked, boundaries, event_frames, weights={"brightness": 0.7}, kernel=kernel)
        total.backward()
        gradients[kernel] = [parameter.grad for parameter in stacked.parameters()]
    for mine, reference in zip(gradients["triton"], gradients["torch"]):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


def run_python(code, **environment):
    """Run `code` in a fresh interpreter with the repository, its scripts and the tests importable."""
    path = [REPO, os.path.join(REPO, "scripts"), TESTS, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **environment, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_triton
def test_triton_loss_matches_the_torch_loss_in_the_interpreter():
    print(run_python("import test_loss_kernel; test_loss_kernel.compare_in_interpreter()", TRITON_INTERPRET="1"))


def compare_output_update(device, stacked, precision="highest", rtol=2e-4):
    """One OutputAdamW step against the gradient formed by torch in float64 and torch's fused
    AdamW, from random weights, moments and step count (so that the update depends on the
    gradient's value, not only its sign, as AdamW's first step would): returns the largest
    relative differences of the weights, moments and bias."""
    import optim
    from config import float32_matmul_precision
    generator = torch.Generator().manual_seed(9)
    random = lambda *shape: torch.randn(*shape, generator=generator).to(device)
    n_networks, n_times, n_out, n_in, scale = 2, 37, 300, 48, 10.0
    weight = random(n_networks, n_in, n_out) if stacked else random(n_out, n_in)
    bias = random(n_networks, 1, n_out) if stacked else random(n_out)
    grad_out, features = random(n_networks, n_times, n_out) * 1e-3, random(n_networks, n_times, n_in)
    if not stacked:
        grad_out, features = grad_out[0], features[0]
    mine = [weight.clone(), bias.clone()]
    update = OutputAdamW(*mine, 1e-3, optim.FusedAdamW.BETAS, optim.FusedAdamW.EPS, optim.FusedAdamW.WEIGHT_DECAY)
    moments = [random(*weight.shape) * 1e-3, random(*weight.shape).square() * 1e-6,
               random(*bias.shape) * 1e-3, random(*bias.shape).square() * 1e-6]
    for state, value in zip(update.moments, moments):
        state.copy_(value)
    update.step.fill_(4)
    with float32_matmul_precision(precision):
        update(grad_out, features, scale)

    wide = lambda tensor: tensor.double()
    if stacked:
        weight_gradient = scale * torch.bmm(wide(features).transpose(1, 2), wide(grad_out))
        bias_gradient = scale * wide(grad_out).sum(dim=1, keepdim=True)
    else:
        weight_gradient = scale * wide(grad_out).t() @ wide(features)
        bias_gradient = scale * wide(grad_out).sum(dim=0)
    reference = [weight.clone(), bias.clone()]
    reference_moments = [moment.clone() for moment in moments]
    steps = [torch.full((), 4.0, device=device), torch.full((), 4.0, device=device)]
    optim.FusedAdamW._update(reference, [weight_gradient.float(), bias_gradient.float()], reference_moments[0::2],
                             reference_moments[1::2], steps, 1e-3)
    errors = {}
    for name, value, expected in zip(("weight", "bias", "weight moment", "weight second moment", "bias moment",
                                      "bias second moment"),
                                     [*mine, *update.moments], [*reference, *reference_moments]):
        # the update, not the whole value, is what the step computed
        before = {"weight": weight, "bias": bias}.get(name)
        change, expected_change = (value - before, expected - before) if before is not None else (value, expected)
        errors[name] = float((change - expected_change).abs().max() / expected_change.abs().max())
        assert errors[name] <= rtol, (name, errors[name])
    assert float(update.step) == 5.0
    return errors


@needs_triton
def test_output_update_matches_torch_in_the_interpreter():
    code = ("import test_loss_kernel\n"
            "for stacked in (False, True):\n"
            "    print(stacked, test_loss_kernel.compare_output_update('cpu', stacked))\n")
    print(run_python(code, TRITON_INTERPRET="1"))


@pytest.mark.cuda
@needs_cuda
@needs_triton
@pytest.mark.parametrize("stacked", [False, True])
def test_output_update_matches_torch_on_a_gpu(stacked):
    """In float32 (IEEE products) to rounding (H100: 1.7e-5 of the largest change); in TF32, the
    default, to what its 10-bit mantissa leaves of a near-cancelling sum (H100: 2.4e-2)."""
    print("float32", compare_output_update("cuda", stacked))
    print("TF32", compare_output_update("cuda", stacked, "high", rtol=5e-2))


@needs_triton
def test_a_schedule_sets_the_output_layers_rate_too():
    """With --lr_schedule the rate is one tensor, read by FusedAdamW and by the output layer's
    update alike; a constant rate stays a float for FusedAdamW (torch before 2.2 has no fused
    AdamW with a tensor rate)."""
    import optim
    from model import make_model
    from test_gpu_paths import small_config
    for schedule, scheduled in (("cosine", True), ("constant", False)):
        config = small_config(lr_schedule=schedule, output_kernel="triton")
        model = make_model((6, 5), config)
        optimizer = optim.make_optimizer(model, config)
        assert model.output_update is optimizer.output_update is not None
        assert (optimizer.param_groups[0]["lr"] is model.output_update.lr) == scheduled
        assert all(p is not q for p in optimizer.parameters for q in model.output_layer())
        optim.release_optimizer(model)
        assert model.output_update is None


@needs_triton
@pytest.mark.slow
def test_output_kernel_matches_gradient_then_adamw_in_the_interpreter():
    """The output layer's AdamW-in-the-backward kernel, one network and stacked windows (see
    test_gpu_paths.assert_output_kernel_matches)."""
    code = ("import test_gpu_paths\n"
            "for stacked in (False, True):\n"
            "    print(stacked, test_gpu_paths.assert_output_kernel_matches(stacked, 'cpu', 8, (16, 20)))\n")
    print(run_python(code, TRITON_INTERPRET="1"))


def test_model_works_without_triton():
    """Triton is optional: with it unimportable the module loads and 'auto' takes torch."""
    print(run_python(
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, model\n"
        "assert not model.triton_available()\n"
        "net = model.EvINR(4, 3, n_layers=1, hidden=8, neck=8)\n"
        "total, _, _ = model.evinr_loss(net, torch.linspace(-1, 1, 4), torch.randn(3, 1, 4, 3))\n"
        "total.backward()\n"))


def test_kernel_choice():
    cpu_frames = torch.zeros(1, 2, 1, 3, 3)
    assert not use_triton_loss(cpu_frames, "auto")   # Triton runs on CUDA only (or interpreted)
    assert not use_triton_loss(cpu_frames, "torch")
    assert use_triton_loss(cpu_frames, "triton")
    with pytest.raises(ValueError, match="unknown loss kernel"):
        use_triton_loss(cpu_frames, "cuda")


@pytest.mark.cuda
@needs_cuda
@needs_triton
@pytest.mark.parametrize("n_networks", [1, 4])
def test_triton_loss_matches_the_torch_loss_on_a_gpu(n_networks):
    """The standard workload's frames: 240x180, T=101 boundary times, one or four windows."""
    frames, target = random_frames((n_networks, 101, 1, 180, 240), "cuda", seed=n_networks)
    term_error, grad_error = assert_matches_reference(frames, target)
    print(f"K={n_networks}: largest relative difference {term_error:.1e} in the terms, {grad_error:.1e} in the gradient")
    assert use_triton_loss(frames, "auto")


@pytest.mark.cuda
@needs_cuda
@needs_triton
def test_triton_loss_replays_in_a_cuda_graph():
    """Forward and backward captured once, replayed on new frames written into the same tensors:
    the kernels neither synchronise with the host nor depend on values read at capture."""
    shape = (2, 11, 1, 180, 240)
    frames, target = random_frames(shape, "cuda", seed=10)
    frames.requires_grad_()
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):  # compiles the kernels before the capture
        TritonDifferenceLoss.apply(frames, target, *WEIGHTS)[0].backward()
    torch.cuda.current_stream().wait_stream(side_stream)
    frames.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        total, *terms = TritonDifferenceLoss.apply(frames, target, *WEIGHTS)
        total.backward()

    new_frames, new_target = random_frames(shape, "cuda", seed=11)
    with torch.no_grad():
        frames.copy_(new_frames)
        target.copy_(new_target)
    graph.replay()
    reference_frames = new_frames.clone().requires_grad_()
    reference_total, *reference_terms = FusedDifferenceLoss.apply(reference_frames, new_target, *WEIGHTS)
    reference_total.backward()
    for mine, reference in zip([total, *terms], [reference_total, *reference_terms]):
        torch.testing.assert_close(mine.detach(), reference.detach(), rtol=1e-4, atol=0.0)
    grad_scale = reference_frames.grad.abs().max()
    torch.testing.assert_close(frames.grad, reference_frames.grad, rtol=1e-4, atol=1e-4 * grad_scale)
