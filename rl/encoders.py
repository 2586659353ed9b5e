"""The encoder interface of the RL stage, the registry of encoder names, and the CNN trunk.

Every encoder of the paper's Table I (and the gaze method) is an `Encoder`: it declares which
observation fields it consumes, its output size, and whether it is frozen. The SAC loop only talks
to this interface; methods with extra learning (the gaze head's contrastive loss) use the two
hooks, which are no-ops by default, so the loop has no special cases.

Observation fields (batched tensors on the agent's device):
  "pixels":   uint8 [B, 3, H, W]
  "saliency": uint8 [B, 1, H, W]   (predicted or oracle map x 255)
  "state":    float32 [B, 39]
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

ENCODERS: dict[str, Callable[..., "Encoder"]] = {}


def register_encoder(name: str):
    """Class/function decorator adding a factory `f(config, obs_shapes) -> Encoder` under `name`."""

    def deco(factory):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} registered twice")
        ENCODERS[name] = factory
        return factory

    return deco


class Encoder(nn.Module):
    """Maps an observation dict to a feature vector [B, out_dim]."""

    #: observation fields this encoder reads
    obs_keys: tuple[str, ...] = ("pixels",)
    #: feature size returned by forward
    out_dim: int = 0
    #: frozen encoders are run once per env step and the replay buffer stores their output
    frozen: bool = False

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [B, out_dim]
        raise NotImplementedError

    # -- hooks for methods with their own learning signal (no-ops by default) -----------------
    def on_env_step(self, obs: dict[str, np.ndarray], rewards: np.ndarray, dones: np.ndarray) -> None:
        """Called once per vector-env step with the observations the policy acted on."""

    def auxiliary_update(self, step: int) -> dict[str, float]:
        """Called after every SAC update; returns metrics to log."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (auxiliary optimisers, buffers)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class ConvTrunk(nn.Module):
    """The paper's CNN (after RAD/SGQN): 11 conv layers of 32 3x3 filters, stride 2 then 1, no padding.

    64x64 input -> feature map [B, 32, 11, 11]: (64 - 3) // 2 + 1 = 31, then ten more unpadded
    layers take 2 px each. (The paper's text says 12x12, which these layers cannot give at 64 px.)
    """

    def __init__(self, in_channels: int, num_layers: int = 11, num_filters: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_filters, 3, stride=2)]
        for _ in range(num_layers - 1):
            layers += [nn.ReLU(inplace=True), nn.Conv2d(num_filters, num_filters, 3, stride=1)]
        layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels

    def feature_shape(self, image_size: int) -> tuple[int, int, int]:
        with torch.no_grad():
            return tuple(self.net(torch.zeros(1, self.in_channels, image_size, image_size)).shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] float in [0, 1] -> [B, 32, h, w]
        return self.net(x)


class Projection(nn.Module):
    """Flattened features -> Linear -> LayerNorm -> tanh (the paper's 100-d 'projection with normalisation')."""

    def __init__(self, in_dim: int, out_dim: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in_dim] -> [B, out_dim]
        return self.net(x)
