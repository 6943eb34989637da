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
import torch.nn.functional as F


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
        return torch.sin(self.w0 * self.linear(inputs))

    def forward_with_tangent(self, inputs, tangent):
        """The layer and its directional derivative (forward-mode: d sin(u) = cos(u) du)."""
        pre = self.w0 * self.linear(inputs)
        return torch.sin(pre), torch.cos(pre) * (self.w0 * (tangent @ self.linear.weight.t()))


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
        return self._frames(self.w0 * self.head(features))

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


def spatial_smoothness(log_frames):
    """Mean absolute vertical and horizontal neighbour differences (the spatial regulariser)."""
    vertical = (log_frames[:, :, 1:, :] - log_frames[:, :, :-1, :]).abs().mean()
    horizontal = (log_frames[:, :, :, 1:] - log_frames[:, :, :, :-1]).abs().mean()
    return vertical + horizontal


def constant_brightness(log_frames):
    """Variance over time of each frame's mean log intensity: the scene's overall brightness
    should not drift, which pins the free per-pixel constant of the PDE."""
    return log_frames.mean(dim=(1, 2, 3)).var(unbiased=False)


def evinr_loss(model, query_times, event_frames, loss="diff", align="boundary", weights=None):
    """The EvINR objective for one iteration.

    query_times depend on `align` and `loss` (see `query_times`):
    - diff/boundary: n+1 boundary times; frame k of the n event frames is compared with
      L(boundary k+1) - L(boundary k), the change over exactly the span of its events;
    - diff/midpoint: the authors' n chunk midpoints; L(mid k+1) - L(mid k) is compared with
      event frame k, half a chunk off, and the last event frame is left out;
    - autograd: n chunk centres and the chunk durations; dL/dt * duration is compared with
      event frame k (the midpoint rule for the integral of dL/dt over the chunk).
    Returns (total, parts) with parts a dict of detached terms."""
    w = {"temporal": 1.0, "spatial": 0.05, "brightness": 0.1, **(weights or {})}
    if loss == "diff":
        log_frames = model(query_times)
        change = log_frames[1:] - log_frames[:-1]
        target = event_frames if align == "boundary" else event_frames[: len(change)]
    elif loss == "autograd":
        centres, durations = query_times
        log_frames, rate = model.forward_with_derivative(centres)
        change = rate * durations.view(-1, 1, 1, 1)
        target = event_frames
    else:
        raise ValueError(f"unknown loss {loss!r}")
    temporal = F.mse_loss(change, target)
    spatial = spatial_smoothness(log_frames) + change.abs().mean()
    brightness = constant_brightness(log_frames)
    total = w["temporal"] * temporal + w["spatial"] * spatial + w["brightness"] * brightness
    return total, {"temporal": temporal.detach(), "spatial": spatial.detach(), "brightness": brightness.detach()}


def query_times(boundaries, chunk_midpoints, loss="diff", align="boundary"):
    """The normalised times at which the loss evaluates the network (see `evinr_loss`).

    boundaries: [n+1] normalised chunk boundary times; chunk_midpoints: [n] the authors'
    per-chunk time stamps (normalised), used only by align='midpoint'."""
    if loss == "autograd":
        return 0.5 * (boundaries[1:] + boundaries[:-1]), boundaries[1:] - boundaries[:-1]
    return boundaries if align == "boundary" else chunk_midpoints


def tone_map(log_frames):
    """The authors' display mapping: exp, Reinhard x / (1 + x), gamma 1/0.6, clamp to [0, 1]."""
    intensity = torch.exp(log_frames)
    return (intensity / (1.0 + intensity)).pow(1.0 / 0.6).clamp(0.0, 1.0)
