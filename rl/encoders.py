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


# -- the encoders of the paper's Table I -----------------------------------------------------------

def image_input(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float [B, C, size, size] in [0, 1] through `data.preprocess.frames_to_tensor`."""
    from data.preprocess import frames_to_tensor

    return frames_to_tensor(x.permute(0, 2, 3, 1), size=size)


@register_encoder("state")
class StateEncoder(Encoder):
    """The 39-d simulator state as the feature (the sanity check: no vision)."""

    obs_keys = ("state",)

    def __init__(self, cfg: Any = None, image_size: int = 64, state_dim: int = 39):
        super().__init__()
        self.out_dim = state_dim

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [B, 39]
        return obs["state"].float()


class CNNEncoder(Encoder):
    """ConvTrunk + Projection, trained through the critic; the actor reads its detached output."""

    #: name -> (observation fields, input channels)
    VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
        "cnn_rgb": (("pixels",), 3),
        "cnn_saliency": (("saliency",), 1),
        "cnn_rgb_x_saliency": (("pixels", "saliency"), 3),
        "cnn_rgbs": (("pixels", "saliency"), 4),
    }

    def __init__(self, variant: str, image_size: int, feature_dim: int):
        super().__init__()
        self.variant = variant
        self.obs_keys, channels = self.VARIANTS[variant]
        self.trunk = ConvTrunk(channels)
        c, h, w = self.trunk.feature_shape(image_size)
        self.projection = Projection(c * h * w, feature_dim)
        self.out_dim = feature_dim

    def inputs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # [B, C, H, W] float in [0, 1]
        if self.variant == "cnn_rgb":
            return image_input(obs["pixels"])
        if self.variant == "cnn_saliency":
            return image_input(obs["saliency"])
        rgb, sal = image_input(obs["pixels"]), image_input(obs["saliency"])
        return rgb * sal if self.variant == "cnn_rgb_x_saliency" else torch.cat([rgb, sal], dim=1)

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [B, feature_dim]
        h = self.trunk(self.inputs(obs)).flatten(1)  # [B, 32 * 11 * 11]
        if detach:
            h = h.detach()
        return self.projection(h)


for _name in CNNEncoder.VARIANTS:
    register_encoder(_name)(lambda cfg, image_size=64, state_dim=39, _n=_name: CNNEncoder(_n, image_size, cfg.feature_dim))


class MMAEEncoder(Encoder):
    """A frozen pretrained MultiMAE encoder (mean of its tokens); the replay buffer stores its output."""

    frozen = True

    #: name -> (default export folder under runs/mmae, inputs fed to the encoder)
    VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
        "mmae_rgb": ("rgb", ("rgb",)),
        "mmae_rgbs_po": ("rgbs", ("rgb",)),
        "mmae_rgbs": ("rgbs", ("rgb", "saliency")),
    }

    def __init__(self, module: nn.Module, inputs: tuple[str, ...], image_size: int = 64):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.inputs = tuple(inputs)
        self.obs_keys = ("pixels", "saliency") if "saliency" in self.inputs else ("pixels",)
        self.out_dim = int(module.out_dim)
        self.size = int(getattr(module, "image_size", 64))

    def train(self, mode: bool = True) -> "MMAEEncoder":
        super().train(mode)
        self.module.eval()  # frozen: dropout/norm layers always in inference mode
        return self

    @torch.no_grad()
    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [B, out_dim]
        rgb = image_input(obs["pixels"], self.size)
        sal = image_input(obs["saliency"], self.size) if "saliency" in self.inputs else None
        return self.module(rgb, sal)


def mmae_command(folder: str) -> str:
    """The pretraining command whose default output is runs/mmae/<folder>/encoder.pt."""
    modalities = "rgb,saliency" if folder == "rgbs" else "rgb"
    return f"python -m pretrain.multimae --modalities {modalities}"


def _mmae_factory(name: str):
    folder, inputs = MMAEEncoder.VARIANTS[name]

    def factory(cfg: Any, image_size: int = 64, state_dim: int = 39) -> MMAEEncoder:
        from pathlib import Path

        path = Path(cfg.mmae or f"runs/mmae/{folder}/encoder.pt")
        if not path.exists():
            raise FileNotFoundError(
                f"encoder {name!r} needs the frozen MultiMAE encoder {path}, which does not exist; "
                f"produce it with `{mmae_command(folder)}` or pass --mmae PATH")
        from pretrain.frozen import FrozenEncoder

        return MMAEEncoder(FrozenEncoder.load(str(path), inputs=inputs), inputs, image_size)

    return factory


for _name in MMAEEncoder.VARIANTS:
    register_encoder(_name)(_mmae_factory(_name))


def build_encoder(cfg: Any, image_size: int = 64, state_dim: int = 39) -> Encoder:
    """The encoder named by cfg.encoder (gaze encoders are registered by importing rl.gaze)."""
    import rl.gaze  # noqa: F401

    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; valid encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[cfg.encoder](cfg, image_size, state_dim)
