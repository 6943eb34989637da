"""
The EvINR network and its losses.

The network is the authors' frame-based implicit neural representation: a SIREN-style MLP that
maps one scalar, the normalised time t in [-1, 1], to a whole log-intensity frame L(., ., t).
Its temporal change is supervised by event frames, either as a finite difference between
frames at the event-frame boundaries (`diff`) or through its exact time derivative (`autograd`).
"""

import math

import torch
import torch.nn as nn

try:  # optional: only the GPU loss kernels (TritonDifferenceLoss) need Triton
    import triton
    import triton.language as tl
except ImportError:
    triton = None


class SineLayer(nn.Module):
    """sin(w0 * (W x + b)), with SIREN's initialisation for the weights."""

    def __init__(self, in_features, out_features, w0, first=False):
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_features, out_features)
        # The first layer spreads the input over many periods; later layers keep w0 * W x
        # of unit scale so that the sines stay in their useful range at any depth.
        bound = 1.0 / in_features if first else math.sqrt(6.0 / in_features) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, inputs):
        return torch.sin(scaled_affine(inputs, self.linear.weight, self.linear.bias, self.w0))

    def forward_with_tangent(self, inputs, tangent):
        return sine_with_tangent(self.w0 * self.linear(inputs), self.w0 * (tangent @ self.linear.weight.t()))


class ScaledAffine(torch.autograd.Function):
    """scale * (x W^T + b) as one matrix product (alpha = beta = scale), and its gradients with
    the scale folded into their products too. Every layer of EvINR multiplies by w0; as a
    separate operation that is one more pass over the layer's output in each direction, and the
    output layer's output is the whole video ([T, H*W]), so at high resolutions those two passes
    are a large part of a step (docs/performance.md). Weights as nn.Linear keeps them ([out, in], bias [out]),
    or stacked as StackedEvINR does ([K, in, out], bias [K, 1, out], inputs [K, T, in])."""

    @staticmethod
    def forward(inputs, weight, bias, scale, update=None):
        if weight.dim() == 3:
            return torch.baddbmm(bias, inputs, weight, beta=scale, alpha=scale)
        return torch.addmm(bias, inputs, weight.t(), beta=scale, alpha=scale)

    @staticmethod
    def setup_context(ctx, arguments, output):
        inputs, weight, _, ctx.scale, ctx.update = arguments
        ctx.save_for_backward(inputs, weight)
        ctx.save_for_forward(inputs, weight)

    @staticmethod
    def jvp(ctx, inputs_tangent, weight_tangent, bias_tangent, *unused):
        """Forward mode (torch.func.jvp of the network): the product rule, term by term."""
        inputs, weight = ctx.saved_tensors
        product = torch.matmul if weight.dim() == 3 else (lambda a, b: a @ b.t())
        terms = [product(inputs_tangent, weight) if inputs_tangent is not None else None,
                 product(inputs, weight_tangent) if weight_tangent is not None else None, bias_tangent]
        return ctx.scale * sum(term for term in terms if term is not None)

    @staticmethod
    def backward(ctx, grad):
        inputs, weight = ctx.saved_tensors
        scale, needs = ctx.scale, ctx.needs_input_grad
        grad_inputs = grad_weight = grad_bias = None
        stacked = weight.dim() == 3
        # beta = 0: the first operand only gives the result's shape (torch ignores its values)
        if needs[0]:
            grad_inputs = (torch.baddbmm(inputs, grad, weight.transpose(1, 2), beta=0, alpha=scale) if stacked
                           else torch.addmm(inputs, grad, weight, beta=0, alpha=scale))
        if ctx.update is not None:
            # the weights' gradient goes straight into their AdamW update (OutputAdamW), now that
            # the inputs' gradient has used them as they were
            ctx.update(grad, inputs, scale)
            return grad_inputs, None, None, None, None
        if needs[1]:
            grad_weight = (torch.baddbmm(weight, inputs.transpose(1, 2), grad, beta=0, alpha=scale) if stacked
                           else torch.addmm(weight, grad.t(), inputs, beta=0, alpha=scale))
        if needs[2]:
            grad_bias = grad.sum(dim=1, keepdim=True).mul_(scale) if stacked else grad.sum(dim=0).mul_(scale)
        return grad_inputs, grad_weight, grad_bias, None, None


def scaled_affine(inputs, weight, bias, scale, update=None):
    """scale * (inputs W^T + bias) (see ScaledAffine); `update`, an OutputAdamW, takes the
    weights' gradient in the backward and updates them there."""
    return ScaledAffine.apply(inputs, weight, bias, scale, update)


def sine_with_tangent(pre, pre_tangent):
    """sin(pre) and its directional derivative (forward mode: d sin(u) = cos(u) du)."""
    return torch.sin(pre), torch.cos(pre) * pre_tangent


class EvINR(nn.Module):
    """f(t) -> log-intensity frame [channels, H, W].

    1 -> width (first sine layer) -> n_layers more sine layers of width -> a sine neck of
    `neck` -> a linear output of H*W*channels, scaled by w0 (the authors' defaults: width 512,
    n_layers 3, neck 256, w0 10 in every layer)."""

    def __init__(self, height, width, channels=1, n_layers=3, hidden=512, neck=256, w0=10.0):
        super().__init__()
        self.height, self.width, self.channels, self.w0 = height, width, channels, w0
        sizes = [hidden] * (n_layers + 1) + [neck]
        layers = [SineLayer(1, sizes[0], w0, first=True)]
        layers += [SineLayer(a, b, w0) for a, b in zip(sizes[:-1], sizes[1:])]
        self.body = nn.ModuleList(layers)
        self.head = nn.Linear(neck, height * width * channels)
        self.output_update = None  # an OutputAdamW while a fit updates the output layer in its backward
        bound = math.sqrt(6.0 / neck) / w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def _frames(self, flat):
        return flat.view(-1, self.channels, self.height, self.width)

    def forward(self, t):
        """t: [T] normalised times -> [T, channels, H, W] log intensity."""
        features = t.reshape(-1, 1)
        for layer in self.body:
            features = layer(features)
        return self._frames(scaled_affine(features, self.head.weight, self.head.bias, self.w0, self.output_update))

    def output_layer(self):
        """(weight, bias) of the output layer, the largest by far: one weight per pixel and neck unit."""
        return self.head.weight, self.head.bias

    def forward_with_derivative(self, t):
        """Log intensity and its exact derivative with respect to t, both [T, channels, H, W].

        One forward-mode pass (the tangent of the single input is 1), written out for this
        network so that it costs one extra matrix product per layer and backpropagates like any
        other expression."""
        features = t.reshape(-1, 1)
        tangent = torch.ones_like(features)
        for layer in self.body:
            features, tangent = layer.forward_with_tangent(features, tangent)
        value = self.w0 * self.head(features)
        derivative = self.w0 * (tangent @ self.head.weight.t())
        return self._frames(value), self._frames(derivative)


class StackedEvINR(nn.Module):
    """K EvINR networks of one shape, evaluated and trained together (one per time window).

    Each layer's K weight matrices are stacked on a leading model dimension and applied with
    one batched matrix product, so an iteration over K windows launches the kernels of one. On a
    GPU, where a single 240x180 network is too small to fill the device and the loop is bound by
    kernel launches, that is the lever for whole recordings. Network k only ever sees its own
    inputs, the loss is a sum of per-network terms and AdamW is elementwise: fitting K windows
    stacked gives the networks that fitting them one by one from the same start would."""

    def __init__(self, models):
        super().__init__()
        first = models[0]
        self.height, self.width, self.channels, self.w0 = first.height, first.width, first.channels, first.w0
        self.n_models, self.n_body = len(models), len(first.body)
        self.output_update = None
        linears = lambda m: [layer.linear for layer in m.body] + [m.head]
        # weights as [K, in, out] and biases as [K, 1, out]: the operands of torch.baddbmm
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([linears(m)[i].weight.detach().t() for m in models]).contiguous())
            for i in range(self.n_body + 1))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([linears(m)[i].bias.detach() for m in models]).unsqueeze(1).contiguous())
            for i in range(self.n_body + 1))

    def _frames(self, flat):
        return flat.view(self.n_models, -1, self.channels, self.height, self.width)

    def forward(self, t):
        """t: [K, T] normalised times, row k for network k -> [K, T, channels, H, W]."""
        *body, (head_weight, head_bias) = zip(self.weights, self.biases)
        features = t.reshape(self.n_models, -1, 1)
        for weight, bias in body:
            features = torch.sin(scaled_affine(features, weight, bias, self.w0))
        return self._frames(scaled_affine(features, head_weight, head_bias, self.w0, self.output_update))

    def output_layer(self):
        return self.weights[-1], self.biases[-1]

    def forward_with_derivative(self, t):
        """As EvINR.forward_with_derivative, for each network: both [K, T, channels, H, W]."""
        *body, (head_weight, head_bias) = zip(self.weights, self.biases)
        features = t.reshape(self.n_models, -1, 1)
        tangent = torch.ones_like(features)
        for weight, bias in body:
            features, tangent = sine_with_tangent(self.w0 * torch.baddbmm(bias, features, weight),
                                                  self.w0 * torch.bmm(tangent, weight))
        value = self.w0 * torch.baddbmm(head_bias, features, head_weight)
        return self._frames(value), self._frames(self.w0 * torch.bmm(tangent, head_weight))

    def unstacked(self):
        """The K networks' parameters as EvINR state dicts (what model.pt stores per window)."""
        names = [f"body.{i}.linear" for i in range(self.n_body)] + ["head"]
        return [{**{f"{name}.weight": weight[k].t().detach().clone() for name, weight in zip(names, self.weights)},
                 **{f"{name}.bias": bias[k, 0].detach().clone() for name, bias in zip(names, self.biases)}}
                for k in range(self.n_models)]


# The losses take log frames as [K, T, C, H, W]: K networks (one per window when windows are
# fitted stacked, else K = 1), T query times each. Every term is computed per network; the
# total is their sum, so each network gets exactly the gradient it would get alone.

def per_network_mean(tensor):
    """The mean of each network's values, [K]; 0 for a term with no values: a sensor one pixel
    high has no vertical neighbour differences (one wide, no horizontal), and such a term adds
    nothing rather than NaN."""
    if tensor[0].numel() == 0:
        return tensor.new_zeros(tensor.shape[0])
    return tensor.flatten(1).mean(1)


def per_pair(value, count):
    """value / count for the mean over `count` pairs of a term, or 0 when it has none (a sensor
    one pixel thin): the term then contributes nothing, to the loss and to its gradient."""
    return value / count if count else 0.0 * value


def spatial_smoothness(log_frames):
    """Mean absolute vertical and horizontal neighbour differences (the spatial regulariser), [K]."""
    vertical = log_frames[..., 1:, :] - log_frames[..., :-1, :]
    horizontal = log_frames[..., :, 1:] - log_frames[..., :, :-1]
    return per_network_mean(vertical.abs()) + per_network_mean(horizontal.abs())


def constant_brightness(log_frames):
    """Variance over time of each frame's mean log intensity, [K]: the scene's overall brightness
    should not drift, which pins the free per-pixel constant of the PDE."""
    return log_frames.mean(dim=(2, 3, 4)).var(dim=1, unbiased=False)


def loss_terms(log_frames, change, target, w):
    """The three EvINR terms from the frames, their temporal change and the event frames."""
    temporal = per_network_mean((change - target) ** 2)
    spatial = spatial_smoothness(log_frames) + per_network_mean(change.abs())
    brightness = constant_brightness(log_frames)
    total = (w["temporal"] * temporal + w["spatial"] * spatial + w["brightness"] * brightness).sum()
    return total, temporal, spatial, brightness


class FusedDifferenceLoss(torch.autograd.Function):
    """`loss_terms` for the finite-difference loss, with its gradient written out by hand.

    Autograd would keep every intermediate and, for each shifted slice, fill a full-size zero
    tensor and copy into it; here the gradient with respect to the log frames is built in place
    while the loss is computed, in about half the memory passes. The frames are large
    ([K, T, C, H, W] with T up to 101) and the loop is memory-bound on a CPU, so this is most of
    the speed-up over the plain path. tests/test_model.py checks it against `loss_terms`."""

    @staticmethod
    def forward(ctx, log_frames, target, w_temporal, w_spatial, w_brightness):
        n_networks = log_frames.shape[0]
        change = log_frames[:, 1:] - log_frames[:, :-1]
        residual = change - target
        vertical = log_frames[..., 1:, :] - log_frames[..., :-1, :]
        horizontal = log_frames[..., :, 1:] - log_frames[..., :, :-1]
        # sizes per network, and norms per network without materialising squares or absolutes
        n_change, n_vertical, n_horizontal = (tensor[0].numel() for tensor in (change, vertical, horizontal))
        norm = lambda tensor, order: torch.linalg.vector_norm(tensor.reshape(n_networks, -1), order, dim=1)
        temporal = per_pair(norm(residual, 2).square(), n_change)
        spatial = (per_pair(norm(change, 1), n_change) + per_pair(norm(vertical, 1), n_vertical)
                   + per_pair(norm(horizontal, 1), n_horizontal))
        means = log_frames.mean(dim=(2, 3, 4))
        brightness = means.var(dim=1, unbiased=False)
        total = (w_temporal * temporal + w_spatial * spatial + w_brightness * brightness).sum()

        # d total / d change = (2 w_t residual + w_s sign(change)) / n_change; each change
        # frame k is log_frames[k+1] - log_frames[k], so it adds to frame k+1 and subtracts from k.
        grad_change = residual.mul_(per_pair(2.0 * w_temporal, n_change)).add_(change.sign_(),
                                                                                alpha=per_pair(w_spatial, n_change))
        grad = torch.empty_like(log_frames)
        grad[:, 0] = -grad_change[:, 0]
        torch.sub(grad_change[:, :-1], grad_change[:, 1:], out=grad[:, 1:-1])
        grad[:, -1] = grad_change[:, -1]
        vertical_step = vertical.sign_().mul_(per_pair(w_spatial, n_vertical))
        grad[..., 1:, :] += vertical_step
        grad[..., :-1, :] -= vertical_step
        horizontal_step = horizontal.sign_().mul_(per_pair(w_spatial, n_horizontal))
        grad[..., :, 1:] += horizontal_step
        grad[..., :, :-1] -= horizontal_step
        n_times, frame_size = means.shape[1], log_frames[0, 0].numel()
        per_frame = w_brightness * 2.0 * (means - means.mean(dim=1, keepdim=True)) / (n_times * frame_size)
        grad += per_frame.view(n_networks, n_times, 1, 1, 1)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(temporal, spatial, brightness)
        return total, temporal, spatial, brightness

    @staticmethod
    def backward(ctx, grad_total, *unused):
        grad, = ctx.saved_tensors
        return grad.mul_(grad_total), None, None, None, None


# The same loss as Triton kernels, for GPUs. There the dozen elementwise and reduction passes
# of FusedDifferenceLoss are bound by kernel launches and memory traffic. In the forward, a sums
# kernel reads the frames and event frames once and writes, per tile, the partial sums of the
# frame and of the four loss terms; torch adds the partials up in a fixed order (atomic adds
# would be faster by a hair but would change the sums' rounding from run to run, and with it the
# fit: the same seed must give the same frames), and a small kernel turns them into the loss
# terms. The gradient is made in the backward, where the gradient reaching the loss is known: one
# kernel reads the frames again and writes the gradient already scaled by it, so no pass over the
# frames is spent scaling it afterwards. Nothing waits on the host, so the whole can be captured
# in a CUDA graph. The kernels exist only where Triton is installed.

def triton_available():
    """Whether Triton is installed (only the GPU loss kernels need it)."""
    return triton is not None


if triton is not None:
    # The frame kernels' grid is (tiles per frame, frames T, networks K): one program per tile of
    # BLOCK elements of one frame, a frame being its C*H*W values, row-major. sums[k, t] holds
    # (sum L, sum residual^2, sum |change|, sum |vertical|, sum |horizontal|) of frame t.

    @triton.jit
    def _sign(x):
        # 0 at 0, like torch.sign: a pixel equal to its neighbour has no L1 gradient
        return (x > 0).to(x.dtype) - (x < 0).to(x.dtype)

    @triton.jit
    def _loss_sums_kernel(frames, target, partials, n_times, frame_size, height, width,
                          target_network_stride, target_time_stride, BLOCK: tl.constexpr):
        tile, t, k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        mine = partials + ((k.to(tl.int64) * n_times + t) * tl.num_programs(0) + tile) * 5
        offsets = tile * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < frame_size
        # 64-bit frame starts: K * T * C*H*W may exceed 2**31
        frame = frames + (k.to(tl.int64) * n_times + t) * frame_size
        target_frame = target + k.to(tl.int64) * target_network_stride + t * target_time_stride
        value = tl.load(frame + offsets, mask=inside, other=0.0)
        tl.store(mine + 0, tl.sum(value))

        # the change to the next frame, against event frame t (the last frame has no next; a
        # scalar condition goes through tl.where because the interpreter mistypes `inside & it`)
        has_next = tl.where(t < n_times - 1, inside, False)
        change = tl.where(has_next, tl.load(frame + frame_size + offsets, mask=has_next, other=0.0) - value, 0.0)
        residual = change - tl.load(target_frame + offsets, mask=has_next, other=0.0)

        # differences to the neighbour above and to the left, within each channel's H x W
        column = offsets % width
        has_up = inside & ((offsets // width) % height > 0)
        has_left = inside & (column > 0)
        vertical = tl.where(has_up, tl.abs(value - tl.load(frame + offsets - width, mask=has_up, other=0.0)), 0.0)
        horizontal = tl.where(has_left, tl.abs(value - tl.load(frame + offsets - 1, mask=has_left, other=0.0)), 0.0)

        tl.store(mine + 1, tl.sum(residual * residual))
        tl.store(mine + 2, tl.sum(tl.abs(change)))
        tl.store(mine + 3, tl.sum(vertical))
        tl.store(mine + 4, tl.sum(horizontal))

    @triton.jit
    def _loss_terms_kernel(sums, temporal, spatial, brightness, weighted, n_times, frame_size,
                           inv_change, inv_vertical, inv_horizontal, w_temporal, w_spatial, w_brightness,
                           TIME_BLOCK: tl.constexpr):
        # one program per network: its frames' sums into its three terms and their weighted sum
        k = tl.program_id(0)
        times = tl.arange(0, TIME_BLOCK)
        in_time = times < n_times
        rows = sums + (k * n_times + times) * 5
        means = tl.load(rows + 0, mask=in_time, other=0.0) / frame_size
        deviations = tl.where(in_time, means - tl.sum(means) / n_times, 0.0)
        network_temporal = tl.sum(tl.load(rows + 1, mask=in_time, other=0.0)) * inv_change
        network_spatial = (tl.sum(tl.load(rows + 2, mask=in_time, other=0.0)) * inv_change
                           + tl.sum(tl.load(rows + 3, mask=in_time, other=0.0)) * inv_vertical
                           + tl.sum(tl.load(rows + 4, mask=in_time, other=0.0)) * inv_horizontal)
        network_brightness = tl.sum(deviations * deviations) / n_times
        tl.store(temporal + k, network_temporal)
        tl.store(spatial + k, network_spatial)
        tl.store(brightness + k, network_brightness)
        tl.store(weighted + k, w_temporal * network_temporal + w_spatial * network_spatial
                 + w_brightness * network_brightness)

    @triton.jit
    def _loss_gradient_kernel(frames, target, sums, grad_total, grad,
                              n_times, frame_size, height, width, target_network_stride, target_time_stride,
                              inv_change, inv_vertical, inv_horizontal, w_temporal, w_spatial, w_brightness,
                              BLOCK: tl.constexpr, TIME_BLOCK: tl.constexpr):
        tile, t, k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offsets = tile * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < frame_size
        frame_start = (k.to(tl.int64) * n_times + t) * frame_size
        frame = frames + frame_start
        target_frame = target + k.to(tl.int64) * target_network_stride + t * target_time_stride
        value = tl.load(frame + offsets, mask=inside, other=0.0)

        # brightness: the variance over time of the frame means moves every pixel of frame t by
        # the same 2 w_b (mean_t - mean of means) / (T * C*H*W)
        times = tl.arange(0, TIME_BLOCK)
        means = tl.load(sums + (k * n_times + times) * 5, mask=times < n_times, other=0.0) / frame_size
        deviation = tl.load(sums + (k * n_times + t) * 5) / frame_size - tl.sum(means) / n_times
        gradient = tl.zeros([BLOCK], dtype=value.dtype) + 2.0 * w_brightness * deviation / (n_times * frame_size)

        # temporal and |change|: frame t ends change t-1 (plus) and starts change t (minus), each
        # with d/d change = (2 w_t residual + w_s sign(change)) / n_change
        has_previous = tl.where(t > 0, inside, False)
        change_in = value - tl.load(frame - frame_size + offsets, mask=has_previous, other=0.0)
        residual_in = change_in - tl.load(target_frame - target_time_stride + offsets, mask=has_previous, other=0.0)
        has_next = tl.where(t < n_times - 1, inside, False)
        change_out = tl.load(frame + frame_size + offsets, mask=has_next, other=0.0) - value
        residual_out = change_out - tl.load(target_frame + offsets, mask=has_next, other=0.0)
        residual_scale, sign_scale = 2.0 * w_temporal * inv_change, w_spatial * inv_change
        gradient += tl.where(has_previous, residual_scale * residual_in + sign_scale * _sign(change_in), 0.0)
        gradient -= tl.where(has_next, residual_scale * residual_out + sign_scale * _sign(change_out), 0.0)

        # spatial: each pixel is the lower end of the difference to the neighbour above and the
        # upper end of the one to the neighbour below (left and right likewise)
        column = offsets % width
        row = (offsets // width) % height
        has_up, has_down = inside & (row > 0), inside & (row < height - 1)
        has_left, has_right = inside & (column > 0), inside & (column < width - 1)
        up = tl.load(frame + offsets - width, mask=has_up, other=0.0)
        down = tl.load(frame + offsets + width, mask=has_down, other=0.0)
        left = tl.load(frame + offsets - 1, mask=has_left, other=0.0)
        right = tl.load(frame + offsets + 1, mask=has_right, other=0.0)
        gradient += w_spatial * inv_vertical * (tl.where(has_up, _sign(value - up), 0.0)
                                                - tl.where(has_down, _sign(down - value), 0.0))
        gradient += w_spatial * inv_horizontal * (tl.where(has_left, _sign(value - left), 0.0)
                                                  - tl.where(has_right, _sign(right - value), 0.0))
        tl.store(grad + frame_start + offsets, gradient * tl.load(grad_total), mask=inside)


def next_power_of_two(n):
    return 1 << (n - 1).bit_length()


# no fused multiply-adds: each product is rounded as in torch's separate operations (and Triton
# 3.10 changes the default)
KERNEL_OPTIONS = dict(enable_fp_fusion=False)


class TritonDifferenceLoss(torch.autograd.Function):
    """FusedDifferenceLoss's values and gradient from the Triton kernels above (float32 frames on
    a GPU, or on the CPU with TRITON_INTERPRET=1 set before this module is imported)."""

    @staticmethod
    def forward(ctx, log_frames, target, w_temporal, w_spatial, w_brightness):
        if not triton_available():
            raise RuntimeError("TritonDifferenceLoss needs Triton, an optional dependency: pip install triton")
        if log_frames.dtype != torch.float32 or target.dtype != torch.float32:
            raise TypeError(f"the Triton loss takes float32 frames, not {log_frames.dtype} and {target.dtype}")
        n_networks, n_times, channels, height, width = log_frames.shape
        frame_size = channels * height * width
        frames = log_frames.contiguous()
        # each event frame must be contiguous, but a slice over networks or times (align=midpoint)
        # is read in place through its strides
        target = target.flatten(2)
        target = target if target.stride(2) == 1 else target.contiguous()
        # inverse counts of the changes, vertical and horizontal pairs; 0 for a term with none
        scales = (per_pair(1.0, (n_times - 1) * frame_size), per_pair(1.0, n_times * channels * (height - 1) * width),
                  per_pair(1.0, n_times * channels * height * (width - 1)), w_temporal, w_spatial, w_brightness)

        # tiles of 1024 (8 values per thread at Triton's default 4 warps) keep the partial sums
        # few; a smaller frame is one tile
        block = min(1024, next_power_of_two(frame_size))
        grid = ((frame_size + block - 1) // block, n_times, n_networks)
        on_device = dict(device=frames.device, dtype=torch.float32)
        partials = torch.empty(n_networks, n_times, grid[0], 5, **on_device)
        shape_args = (n_times, frame_size, height, width, target.stride(0), target.stride(1))
        _loss_sums_kernel[grid](frames, target, partials, *shape_args, BLOCK=block, **KERNEL_OPTIONS)
        sums = partials.sum(dim=2)
        temporal, spatial, brightness, weighted = (torch.empty(n_networks, **on_device) for _ in range(4))
        _loss_terms_kernel[(n_networks,)](sums, temporal, spatial, brightness, weighted, n_times, frame_size, *scales,
                                          TIME_BLOCK=next_power_of_two(n_times), **KERNEL_OPTIONS)
        ctx.save_for_backward(frames, target, sums)
        ctx.launch = (grid, shape_args, scales, block)
        ctx.mark_non_differentiable(temporal, spatial, brightness)
        return weighted.sum(), temporal, spatial, brightness

    @staticmethod
    def backward(ctx, grad_total, *unused):
        frames, target, sums = ctx.saved_tensors
        grid, shape_args, scales, block = ctx.launch
        grad = torch.empty_like(frames)
        _loss_gradient_kernel[grid](frames, target, sums, grad_total.to(frames.dtype).contiguous(), grad, *shape_args,
                                    *scales, BLOCK=block, TIME_BLOCK=next_power_of_two(shape_args[0]), **KERNEL_OPTIONS)
        return grad, None, None, None, None


def use_triton_loss(log_frames, kernel):
    """Whether the fused difference loss runs on the Triton kernels: kernel 'triton' or 'torch'
    forces the choice, 'auto' takes Triton for float32 frames on CUDA when it is installed."""
    if kernel not in ("auto", "triton", "torch"):
        raise ValueError(f"unknown loss kernel {kernel!r}: expected 'auto', 'triton' or 'torch'")
    if kernel == "auto":
        return log_frames.is_cuda and log_frames.dtype == torch.float32 and triton_available()
    return kernel == "triton"


SPATIAL_WEIGHT = 0.05  # the authors' weight of the spatial regulariser (--spatial_weight scales it)


def evinr_loss(model, query_times, event_frames, loss="diff", align="boundary", weights=None, fused=True,
               kernel="auto", per_network=False):
    """The EvINR objective for one iteration, for an EvINR (frames [n, C, H, W]) or a
    StackedEvINR (frames [K, n, C, H, W], query times with a leading K).

    query_times depend on `align` and `loss` (see `query_times`):
    - diff/boundary: n+1 boundary times; frame k of the n event frames is compared with
      L(boundary k+1) - L(boundary k), the change over exactly the span of its events;
    - diff/midpoint: the authors' n chunk midpoints; L(mid k+1) - L(mid k) is compared with
      event frame k, half a chunk off, and the last event frame is left out;
    - autograd: n chunk centres and the chunk durations; dL/dt * duration is compared with
      event frame k (the midpoint rule for the integral of dL/dt over the chunk).
    `fused` selects the hand-written gradient for the diff loss (same values, faster), and
    `kernel` its implementation (see `use_triton_loss`): two Triton kernels or torch operations.
    Returns (total, parts, log_frames): total summed over networks, parts a dict of detached
    terms averaged over networks (with `per_network`, each network's, [K]: a fit records them
    per window), and the network's log frames at the query times (the chunk
    centres for autograd), [K, T, C, H, W]."""
    w = {"temporal": 1.0, "spatial": SPATIAL_WEIGHT, "brightness": 0.1, **(weights or {})}
    as_networks = lambda frames: frames.reshape(-1, *frames.shape[-4:])  # a view: [K, T, C, H, W]
    event_frames = as_networks(event_frames)
    if loss == "diff":
        log_frames = as_networks(model(query_times))
        target = event_frames if align == "boundary" else event_frames[:, : log_frames.shape[1] - 1]
        if fused:
            fused_loss = TritonDifferenceLoss if use_triton_loss(log_frames, kernel) else FusedDifferenceLoss
            terms = fused_loss.apply(log_frames, target, w["temporal"], w["spatial"], w["brightness"])
        else:
            terms = loss_terms(log_frames, log_frames[:, 1:] - log_frames[:, :-1], target, w)
    elif loss == "autograd":
        centres, durations = query_times
        log_frames, rate = model.forward_with_derivative(centres)
        change = rate * durations.reshape(*durations.shape, 1, 1, 1)
        terms = loss_terms(as_networks(log_frames), as_networks(change), event_frames, w)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    total, temporal, spatial, brightness = terms
    reduce = (lambda term: term.detach()) if per_network else (lambda term: term.detach().mean())
    return total, {"temporal": reduce(temporal), "spatial": reduce(spatial),
                   "brightness": reduce(brightness)}, as_networks(log_frames)


def query_times(boundaries, chunk_midpoints, loss="diff", align="boundary"):
    """The normalised times at which the loss evaluates the network (see `evinr_loss`).

    boundaries: [n+1] normalised chunk boundary times; chunk_midpoints: [n] the authors'
    per-chunk time stamps (normalised), used only by align='midpoint'. Both may have a leading
    network dimension (stacked windows)."""
    if loss == "autograd":
        return 0.5 * (boundaries[..., 1:] + boundaries[..., :-1]), boundaries[..., 1:] - boundaries[..., :-1]
    return boundaries if align == "boundary" else chunk_midpoints


def smooth(log_frames, sigma):
    """[B, C, H, W] frames, each blurred by a Gaussian of standard deviation `sigma` pixels (0:
    unchanged); borders mirrored without repeating the edge pixel, as OpenCV's GaussianBlur does.
    The network gives every pixel output weights of its own, so the noise of each pixel's events
    (shot noise, its own threshold) reaches its frame unaveraged: --smooth (docs/threshold.md)."""
    if sigma <= 0:
        return log_frames
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, device=log_frames.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(log_frames.dtype)
    batch, channels, height, width = log_frames.shape
    planes = log_frames.reshape(batch * channels, 1, height, width)
    # mirroring needs more pixels than the radius; a thinner sensor repeats its edge instead
    mode = "reflect" if min(height, width) > radius else "replicate"
    planes = torch.nn.functional.pad(planes, (radius, radius, 0, 0), mode=mode)
    planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = torch.nn.functional.pad(planes, (0, 0, radius, radius), mode=mode)
    planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(batch, channels, height, width)


def tone_map(log_frames):
    """The authors' display mapping: exp, Reinhard x / (1 + x), gamma 1/0.6, clamp to [0, 1]."""
    intensity = torch.exp(log_frames)
    return (intensity / (1.0 + intensity)).pow(1.0 / 0.6).clamp(0.0, 1.0)


def window_edges(model, loss_frames, config, edge_times):
    """The first and last log frames of each window fitted, [K, C, H, W] each. With the default
    supervision the loss already evaluated them (its query times are the chunk boundaries, which
    begin at -1 and end at +1 exactly); otherwise they cost one more forward pass."""
    if config.loss == "diff" and config.align == "boundary":
        return loss_frames[:, 0], loss_frames[:, -1]
    stacked = isinstance(model, StackedEvINR)
    edges = model(edge_times.expand(model.n_models, 2) if stacked else edge_times).reshape(-1, 2, *loss_frames.shape[2:])
    return edges[:, 0], edges[:, 1]


def seam_loss(firsts, lasts, tie_frame):
    """Sum over window seams of the mean squared difference of the frames either side. firsts,
    lasts: [K, C, H, W], the first and last frames of K consecutive windows fitted together;
    tie_frame: [1, C, H, W], the last frame of the window fitted before them, or None. Each
    window's first frame is pulled to the last frame of the window before it, and not the other
    way round (as when windows are fitted one by one), so a window never bends its end towards
    a neighbour that has yet to converge."""
    after, before = firsts[1:], lasts[:-1].detach()
    if tie_frame is not None:
        after, before = firsts, torch.cat([tie_frame, before])
    return ((after - before) ** 2).mean(dim=(1, 2, 3)).sum()


def channels(config):
    """Values per pixel of a frame: RGB for colour events, else one."""
    return 3 if config.color_event else 1


def make_model(sensor, config):
    return EvINR(sensor[0], sensor[1], channels=channels(config),
                 n_layers=config.net_layers, hidden=config.net_width)


def empty_model(sensor, config, device):
    """A network of make_model's shape on `device` with its parameters left unset, for loading
    saved ones: drawing SIREN's random start costs 0.12 s at 240x180 on a CPU, which rendering
    each batch of windows would pay again."""
    with torch.device("meta"):
        model = make_model(sensor, config)
    return model.to_empty(device=device)
