"""The encoder interface of the RL stage and the one registry of encoder names.

`rl.encoders` (the CNN and frozen MultiMAE encoders) and `rl.gaze` (the gaze encoders) build on this
module and register their factories here; `rl.encoders` imports `rl.gaze`, so importing it gives the
whole registry. Neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from data.preprocess import frames_to_tensor

ENCODERS: dict[str, Callable[..., "Encoder"]] = {}
#: encoder name -> the label tables and plots show (the paper's names for Table I)
ENCODER_LABELS: dict[str, str] = {}


def register_encoder(name: str, label: str):
    """Class/function decorator adding a factory `f(config, image_size, runs) -> Encoder` under `name`,
    shown as `label` in reports."""

    def deco(factory):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} registered twice")
        ENCODERS[name], ENCODER_LABELS[name] = factory, label
        return factory

    return deco


def encoder_names() -> list[str]:
    """Every registered encoder (the gaze encoders included), in registration order."""
    return list(ENCODERS)


class Encoder(nn.Module):
    """Maps an observation dict of R runs to features [R, B, out_dim]."""

    #: observation fields this encoder reads
    obs_keys: tuple[str, ...] = ("pixels",)
    #: feature size returned by forward
    out_dim: int = 0
    #: frozen encoders run once per env step and the replay buffer stores their output
    frozen: bool = False
    #: forward does no host work (no .item(), no numpy): updates can be captured as CUDA graphs
    graph_safe: bool = True

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [R, B, out_dim]
        raise NotImplementedError

    def pack_signature(self) -> tuple:
        """Runs whose encoders have equal signatures can share a pack (their networks stack)."""
        return (type(self).__name__, self.out_dim, self.obs_keys)

    # -- hooks for methods with their own learning signal (no-ops by default) -----------------
    def host_memory(self, steps: int) -> int:
        """Bytes of host RAM the encoder's own buffers hold per run after `steps` env steps (0: none)."""
        return 0

    def on_env_step(self, obs: dict[str, torch.Tensor], rewards: np.ndarray, dones: np.ndarray) -> None:
        """Called once per vector-env step with the observations [R, N, ...] the policy acted on."""

    def auxiliary_update(self, step: int) -> list[dict[str, float]]:
        """Called after every SAC update; returns metrics to log, one dict per run ([] for none)."""
        return []

    def extra_state(self, run: int) -> dict[str, Any]:
        """Run `run`'s non-parameter state to checkpoint (auxiliary buffers, rngs)."""
        return {}

    def load_extra_state(self, states: list[dict[str, Any]]) -> None:
        """Restore every run's extra state (one dict per run, as `extra_state` wrote them)."""


def image_input(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 [..., C, H, W] -> float [..., C, size, size] in [0, 1] through `data.preprocess.frames_to_tensor`."""
    lead = x.shape[:-3]
    flat = frames_to_tensor(x.reshape(-1, *x.shape[-3:]).permute(0, 2, 3, 1), size=size)  # [N, C, s, s]
    return flat.view(*lead, *flat.shape[1:])
