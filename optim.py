"""
The optimiser: AdamW as one fused kernel a step, the output layer's AdamW update inside its
backward (a Triton kernel), and the learning-rate schedule.
"""

import numpy as np
import torch

from model import KERNEL_OPTIONS, triton_available

try:  # optional: only the output layer's GPU kernel (OutputAdamW) needs Triton
    import triton
    import triton.language as tl
except ImportError:
    triton = None

# --lr_schedule cosine ends at this fraction of --lr. With --smooth taking out the per-pixel
# jitter that a falling rate also damps, a higher floor keeps learning to the last iteration:
# 0.3 scored better than 0.05 on the study's tuning half (docs/threshold.md).
LR_FLOOR = 0.3
# The cosine spans at most this many iterations (the authors' count); a longer fit goes on from
# the floor at a rate falling as 1 / iteration. Adam moves a parameter by about the rate each
# step however small its gradient, so along a direction the loss barely sees (a pattern fixed in
# time, which no event constrains) a fit drifts in proportion to the sum of its rates. The tail
# keeps that sum growing only as the logarithm of the iterations, where a cosine stretched over
# all of them would grow it in proportion (docs/convergence.md).
LR_HORIZON = 1000


def learning_rates(config):
    """The learning rate of each iteration, or None when it is constant: half a cosine from --lr
    to LR_FLOOR x --lr over the first LR_HORIZON iterations (all of them, if fewer), then the
    floor times LR_HORIZON / iteration."""
    if config.setting("lr_schedule") == "constant":
        return None
    span = min(config.iters, LR_HORIZON)
    progress = np.arange(span) / max(span - 1, 1)
    cosine = LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + np.cos(np.pi * progress))
    tail = LR_FLOOR * span / np.arange(span + 1, config.iters + 1)
    return config.lr * np.concatenate([cosine, tail])


class FusedAdamW:
    """torch.optim.AdamW with fused=True (torch's defaults: betas 0.9, 0.999, eps 1e-8, weight
    decay 0.01), calling the same kernel, torch._fused_adamw_, without torch.optim: its first use
    imports torch._dynamo, which costs seconds of start-up (more than a whole small fit on a GPU;
    docs/performance.md). The state is made up front (zeros, as torch makes it at the
    first step) and the step count lives on the device, so a CUDA graph can replay `step`;
    `lr` is a float, or a tensor changed in place (a schedule under a graph). `zero_grad` lets
    backward create the gradients afresh: under a graph they come from the graph's own memory,
    at the addresses the captured update reads, and no step spends a pass zeroing them or a
    pass adding into them."""

    BETAS, EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-8, 1e-2

    def __init__(self, parameters, lr, output_layer=None):
        """`output_layer`: (weight, bias) to update in the layer's backward instead (OutputAdamW,
        self.output_update), with the same settings and learning rate."""
        self.output_update = None
        if output_layer is not None:  # a scheduled rate is one tensor, which then sets both
            self.output_update = OutputAdamW(*output_layer, lr, self.BETAS, self.EPS, self.WEIGHT_DECAY)
        self.parameters = [p for p in parameters if not any(p is q for q in output_layer or ())]
        self.param_groups = [{"lr": lr}]  # torch's layout, where the learning rate is read and set
        self.exp_avgs = [torch.zeros_like(p) for p in self.parameters]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.parameters]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.parameters]

    @staticmethod
    def supported(device, lr):
        """Whether this torch has the fused kernel for `device` and a learning rate like `lr`
        (CUDA since torch 2.1, the CPU since 2.4, a tensor rate since 2.2)."""
        one = lambda: [torch.zeros(1, device=device)]
        try:
            FusedAdamW._update(one(), one(), one(), one(), [torch.zeros((), device=device)], lr)
            return True
        except (AttributeError, NotImplementedError, RuntimeError, TypeError):
            return False

    @staticmethod
    def _update(parameters, gradients, exp_avgs, exp_avg_sqs, steps, lr):
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(parameters, gradients, exp_avgs, exp_avg_sqs, [], steps, lr=lr,
                            beta1=FusedAdamW.BETAS[0], beta2=FusedAdamW.BETAS[1], weight_decay=FusedAdamW.WEIGHT_DECAY,
                            eps=FusedAdamW.EPS, amsgrad=False, maximize=False, grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none=True):
        """Let the gradients go (torch's signature; setting them to zero instead is not offered)."""
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self):
        self._update(self.parameters, [p.grad for p in self.parameters], self.exp_avgs, self.exp_avg_sqs, self.steps,
                     self.param_groups[0]["lr"])


def use_output_kernel(config, device):
    """Whether the output layer is updated in its backward (--output_kernel): it needs FusedAdamW
    (not --plain) and the supervision whose step runs the network forward once, through that
    layer (--loss diff --align boundary: the seam tie reuses the loss's frames)."""
    if config.output_kernel == "torch" or config.plain or config.loss != "diff" or config.align != "boundary":
        return False
    return config.output_kernel == "triton" or (device.type == "cuda" and triton_available())


def make_optimizer(model, config):
    """AdamW: FusedAdamW (one fused kernel a step, graph-safe, the output layer's update in its
    backward where use_output_kernel says so, installed on the model as `output_update` until
    release_optimizer) unless --plain or a torch without its kernel for the device, which get
    torch.optim.AdamW's default loop. Under a schedule the learning rate is a tensor, changed in
    place, which a captured step reads afresh at each replay."""
    device = next(model.parameters()).device
    lr = config.lr if learning_rates(config) is None else torch.tensor(config.lr, device=device)
    if not config.plain and FusedAdamW.supported(device, lr):
        optimizer = FusedAdamW(model.parameters(), lr, model.output_layer() if use_output_kernel(config, device) else None)
        model.output_update = optimizer.output_update
        return optimizer
    return torch.optim.AdamW(model.parameters(), lr=lr, capturable=device.type == "cuda")


def release_optimizer(model):
    """After a fit: the model's forward no longer updates its output layer."""
    model.output_update = None


# The output layer's AdamW update, in its backward. The output layer holds nearly all of the
# parameters (one weight per pixel and neck unit: 11 M at 240x180, 236 M at 1280x720), and a step
# is bound by the memory traffic over them: its weight gradient written by one matrix product and
# read back by AdamW, which then reads and writes the weights and both moments. One kernel that
# forms each tile of the gradient (a product over the T query times, in registers) and applies
# AdamW to it there reads the moments and weights once and never writes the gradient.

if triton is not None:
    @triton.jit
    def _adamw(parameter, average, average_sq, gradient, mask, rate, step_size, correction2_sqrt,
               beta1, beta2, eps, weight_decay):
        # torch's fused AdamW (decoupled weight decay), element by element
        new_average = beta1 * tl.load(average, mask=mask, other=0.0) + (1.0 - beta1) * gradient
        new_average_sq = beta2 * tl.load(average_sq, mask=mask, other=0.0) + (1.0 - beta2) * gradient * gradient
        value = tl.load(parameter, mask=mask, other=0.0)
        value = value - rate * weight_decay * value
        value = value - step_size * new_average / (tl.sqrt(new_average_sq) / correction2_sqrt + eps)
        tl.store(average, new_average, mask=mask)
        tl.store(average_sq, new_average_sq, mask=mask)
        tl.store(parameter, value, mask=mask)

    @triton.jit
    def _output_adamw_kernel(grad_out, features, weight, bias, weight_avg, weight_avg_sq, bias_avg, bias_avg_sq, step, lr,
                             n_times, n_out, n_in, grad_k, grad_t, features_k, features_t, weight_k, weight_out, weight_in,
                             bias_k, scale, beta1, beta2, eps, weight_decay,
                             BLOCK_OUT: tl.constexpr, BLOCK_IN: tl.constexpr, BLOCK_T: tl.constexpr,
                             PRECISION: tl.constexpr):
        # grid (blocks of BLOCK_IN inputs, blocks of BLOCK_OUT outputs, networks K): each program
        # updates one [BLOCK_OUT, BLOCK_IN] tile of the weights, whose gradient is
        # scale * sum_t grad_out[t, out] features[t, in], and the programs of the first input
        # block the bias, whose gradient is scale * sum_t grad_out[t, out]. The input blocks of
        # one output block are neighbours in the launch order, so they run together and all but
        # the first read its slice of grad_out from the cache. Small tiles keep the pointers and
        # moments of the update in registers.
        chunk, block, k = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
        outs = block * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
        ins = chunk * BLOCK_IN + tl.arange(0, BLOCK_IN)
        in_out, in_in = outs < n_out, ins < n_in
        weight_gradient = tl.zeros([BLOCK_OUT, BLOCK_IN], dtype=tl.float32)
        bias_gradient = tl.zeros([BLOCK_OUT], dtype=tl.float32)
        for start in range(0, n_times, BLOCK_T):
            times = start + tl.arange(0, BLOCK_T)
            in_t = times < n_times
            g = tl.load(grad_out + k * grad_k + times[:, None] * grad_t + outs[None, :],
                        mask=in_t[:, None] & in_out[None, :], other=0.0)
            f = tl.load(features + k * features_k + times[:, None] * features_t + ins[None, :],
                        mask=in_t[:, None] & in_in[None, :], other=0.0)
            weight_gradient = tl.dot(tl.trans(g), f, weight_gradient, input_precision=PRECISION)
            bias_gradient += tl.sum(g, axis=0)

        # the step was counted before this launch; beta ** step as exp(step log beta)
        step_count, rate = tl.load(step), tl.load(lr)
        correction1 = 1.0 - tl.exp(step_count * tl.log(beta1))
        correction2_sqrt = tl.sqrt(1.0 - tl.exp(step_count * tl.log(beta2)))
        step_size = rate / correction1
        offsets = k * weight_k + outs[:, None] * weight_out + ins[None, :] * weight_in
        mask = in_out[:, None] & in_in[None, :]
        _adamw(weight + offsets, weight_avg + offsets, weight_avg_sq + offsets, weight_gradient * scale, mask,
               rate, step_size, correction2_sqrt, beta1, beta2, eps, weight_decay)
        if chunk == 0:
            bias_offsets = k * bias_k + outs
            _adamw(bias + bias_offsets, bias_avg + bias_offsets, bias_avg_sq + bias_offsets, bias_gradient * scale, in_out,
                   rate, step_size, correction2_sqrt, beta1, beta2, eps, weight_decay)


class OutputAdamW:
    """AdamW for an output layer's weight and bias, applied by _output_adamw_kernel inside the
    layer's backward (ScaledAffine): a model whose `output_update` is one calls it there, and
    the layer's parameters then get no .grad. Same arithmetic as torch's fused AdamW on the
    same gradient, to float rounding (the gradient is summed in another order, in TF32 under
    matmul precision 'high'). `lr` is a float or a tensor changed in place (a schedule)."""

    BLOCK_OUT, BLOCK_IN, BLOCK_T, WARPS = 32, 64, 16, 4

    def __init__(self, weight, bias, lr, betas, eps, weight_decay):
        if not triton_available():
            raise RuntimeError("OutputAdamW needs Triton, an optional dependency: pip install triton")
        self.weight, self.bias = weight, bias
        self.moments = [torch.zeros_like(weight), torch.zeros_like(weight), torch.zeros_like(bias), torch.zeros_like(bias)]
        self.step = torch.zeros((), dtype=torch.float32, device=weight.device)
        self.lr = lr if torch.is_tensor(lr) else torch.tensor(float(lr), device=weight.device)
        self.constants = (*betas, eps, weight_decay)

    @torch.no_grad()
    def __call__(self, grad_out, features, scale):
        """One AdamW step from the layer's output gradient [K, T, out] (or [T, out]) and its
        inputs [K, T, in] (or [T, in]); weights [K, in, out] stacked, else [out, in]."""
        weight, bias = self.weight, self.bias
        stacked = weight.dim() == 3
        grad_out, features = grad_out.reshape(-1, *grad_out.shape[-2:]), features.reshape(-1, *features.shape[-2:])
        grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
        features = features if features.stride(-1) == 1 else features.contiguous()
        n_networks, n_times, n_out = grad_out.shape
        n_in = features.shape[-1]
        weight_strides = (weight.stride(0), weight.stride(2), weight.stride(1)) if stacked else (0, weight.stride(0), weight.stride(1))
        self.step.add_(1)
        precision = "ieee" if torch.get_float32_matmul_precision() == "highest" or not grad_out.is_cuda else "tf32"
        grid = (triton.cdiv(n_in, self.BLOCK_IN), triton.cdiv(n_out, self.BLOCK_OUT), n_networks)
        _output_adamw_kernel[grid](grad_out, features, weight, bias, *self.moments, self.step, self.lr,
                                   n_times, n_out, n_in, grad_out.stride(0), grad_out.stride(1),
                                   features.stride(0), features.stride(1), *weight_strides,
                                   bias.stride(0) if stacked else 0, scale, *self.constants,
                                   BLOCK_OUT=self.BLOCK_OUT, BLOCK_IN=self.BLOCK_IN,
                                   BLOCK_T=self.BLOCK_T, PRECISION=precision, num_warps=self.WARPS, **KERNEL_OPTIONS)
