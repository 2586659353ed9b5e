"""Packed layers: the networks of R independent runs stored as one tensor each, run-major.

Every parameter has a leading dimension of R x (members per run), so a step of R runs is a few
large kernels (one `baddbmm` per linear layer) instead of R x many small ones, and one optimiser step
over the stacked tensors is R independent steps (Adam is element-wise). The conv trunk stores its
runs' kernels stacked too but convolves each run alone (faster on CPU than a grouped convolution).
A pack of one is the single-run network, with the same kernels as before.

Packs are built from packs of one (`stack_states`): each run is initialised alone under its own
seed, so run k's initial weights never depend on which runs share its process, and a run's slice
(`slice_state`) is again a pack of one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.precision import full_precision


class PackedLinear(nn.Module):
    """`members` independent Linear layers as one batched matmul: [members, B, in] -> [members, B, out].

    init "orthogonal": orthogonal weights, zero bias (the paper's SAC-AE weight_init);
    init "default": nn.Linear's uniform(+-1/sqrt(in)) for weight and bias.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, init: str = "orthogonal"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        with torch.no_grad():
            for i in range(members):
                if init == "orthogonal":
                    self.weight[i] = nn.init.orthogonal_(torch.empty(out_dim, in_dim)).T
                elif init == "default":
                    bound = 1.0 / math.sqrt(in_dim)
                    self.weight[i].uniform_(-bound, bound)
                    self.bias[i].uniform_(-bound, bound)
                else:
                    raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [members, B, in] -> [members, B, out]
        return torch.baddbmm(self.bias, x, self.weight)


class PackedMLP(nn.Module):
    """Linear -> ReLU -> ... -> Linear for `members` independent networks: [members, B, in] -> [members, B, out].

    The output layer always computes in float32, also inside a bf16 autocast region: it is cheap (few
    outputs) and its values (Q-values, the policy's mean and log-std) need more than bf16's 8 bits.
    """

    def __init__(self, members: int, dims: Sequence[int], init: str = "orthogonal"):
        super().__init__()
        self.layers = nn.ModuleList(PackedLinear(members, a, b, init) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, head = self.layers
        for layer in hidden:
            x = F.relu(layer(x))
        with full_precision(x.device):
            return head(x.float())


class PackedConvTrunk(nn.Module):
    """The paper's CNN (after RAD/SGQN) for R runs: 11 conv layers of 32 3x3 filters, stride 2 then 1,
    no padding, ReLU between layers (the trunk ends on the last convolution, as SGQN's shared CNN). The
    runs' kernels of a layer are stored as one grouped-convolution weight [R * 32, c_in, 3, 3].

    Initialised as the references' `weight_init` (SAC-AE, RAD, SGQN): delta-orthogonal kernels (an
    orthogonal matrix at the kernel's centre tap, ReLU gain, zeros elsewhere) and zero biases, so a
    signal passes the 11 layers at its scale and the features of different frames differ at init
    (with nn.Conv2d's default uniform init they are nearly one constant vector).

    64x64 input -> feature map [R, B, 32, 11, 11]: (64 - 3) // 2 + 1 = 31, then ten more unpadded
    layers take 2 px each. (The paper's text says 12x12, which these layers cannot give at 64 px.)
    """

    def __init__(self, runs: int, in_channels: int, num_layers: int = 11, num_filters: int = 32):
        super().__init__()
        self.runs, self.in_channels, self.num_filters = runs, in_channels, num_filters
        chans = [in_channels] + [num_filters] * num_layers
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        gain = nn.init.calculate_gain("relu")
        for c_in in chans[:-1]:
            weight = torch.zeros(runs * num_filters, c_in, 3, 3)
            for r in range(runs):  # each run's filters [32, c_in] orthogonal at the centre tap
                nn.init.orthogonal_(weight[r * num_filters : (r + 1) * num_filters, :, 1, 1], gain)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(runs * num_filters)))

    def feature_shape(self, image_size: int) -> tuple[int, int, int]:
        side = (image_size - 3) // 2 + 1 - 2 * (len(self.weights) - 1)
        return self.num_filters, side, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [R, B, C, H, W] float in [0, 1] -> [R, B, 32, h, w]
        # One convolution per run in channels-last layout: on CPU oneDNN runs these ~1.5x faster than one
        # grouped convolution over the runs (bench/conv_trunk.py), and each run computes exactly what it
        # would alone.
        f = self.num_filters
        outputs = []
        for r in range(x.shape[0]):
            h = x[r].contiguous(memory_format=torch.channels_last)  # [B, C, H, W]
            for i, (w, bias) in enumerate(zip(self.weights, self.biases)):
                if i:
                    h = F.relu(h)
                h = F.conv2d(h, w[r * f : (r + 1) * f], bias[r * f : (r + 1) * f], stride=2 if i == 0 else 1)
            outputs.append(h)  # [B, 32, h', w']
        return torch.stack(outputs)  # [R, B, 32, h', w']


class PackedProjection(nn.Module):
    """Flattened features -> Linear -> LayerNorm -> tanh per run (the paper's 100-d 'projection with normalisation')."""

    def __init__(self, runs: int, in_dim: int, out_dim: int = 100):
        super().__init__()
        self.linear = PackedLinear(runs, in_dim, out_dim, init="orthogonal")  # the references' weight_init
        self.norm_weight = nn.Parameter(torch.ones(runs, 1, out_dim))
        self.norm_bias = nn.Parameter(torch.zeros(runs, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [R, B, in_dim] -> [R, B, out_dim]
        h = self.linear(x)
        h = F.layer_norm(h, h.shape[-1:]) * self.norm_weight + self.norm_bias
        return torch.tanh(h)


# -- packs from packs of one and back ------------------------------------------------------------------


def stack_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the state dicts of packs (usually packs of one) along every tensor's leading dim."""
    out: dict[str, Any] = {}
    for key, first in states[0].items():
        if isinstance(first, torch.Tensor) and first.dim() > 0:
            out[key] = torch.cat([s[key] for s in states], 0)
        elif isinstance(first, dict):
            out[key] = stack_states([s[key] for s in states])
        else:  # scalars shared by the pack (step counters of optimisers that step together), never aliased
            out[key] = first.clone() if isinstance(first, torch.Tensor) else first
    return out


def slice_state(state: dict[str, Any], run: int, runs: int) -> dict[str, Any]:
    """Run `run`'s slice of a pack's state dict (a pack of one's state dict)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            per = value.shape[0] // runs
            out[key] = value[run * per : (run + 1) * per].clone()
        elif isinstance(value, dict):
            out[key] = slice_state(value, run, runs)
        else:
            out[key] = value.clone() if isinstance(value, torch.Tensor) else value
    return out
