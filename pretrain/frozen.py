"""The pretrained MultiMAE encoder, frozen, as RL sees it: all tokens in, no masking, mean token out.

    enc = FrozenEncoder.load("runs/mmae/rgbs/encoder.pt")                   # rgb + saliency
    enc = FrozenEncoder.load("runs/mmae/rgbs/encoder.pt", inputs=("rgb",))  # the paper's PO variant
    feats = enc(rgb, saliency)  # rgb [B, 3, 64, 64], saliency [B, 1, 64, 64] in [0, 1] -> [B, 256]
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.multimae import ModelConfig, MultiMAE

ENCODER_FORMAT = "visarl-mmae-encoder/1"


class FrozenEncoder(nn.Module):
    """Input adapters + encoder of a pretrained MultiMAE; eval mode, no gradients."""

    def __init__(self, model_config: ModelConfig, inputs: Sequence[str] | None = None):
        super().__init__()
        self.model = MultiMAE(model_config, decoders=False)
        self.inputs = tuple(inputs or model_config.modalities)
        missing = [m for m in self.inputs if m not in model_config.modalities]
        if missing or "rgb" not in self.inputs:
            raise ValueError(
                f"inputs {self.inputs} must include rgb and only modalities the model was pretrained on "
                f"({', '.join(model_config.modalities)})")
        self.out_dim = model_config.dim
        self.register_buffer("shift", torch.zeros(model_config.dim))  # standardisation (identity unless loaded so)
        self.register_buffer("scale", torch.ones(model_config.dim))
        self.image_size = model_config.image_size

    @classmethod
    def load(cls, path: str | Path, inputs: Sequence[str] | None = None, device: torch.device | str = "cpu",
             standardize: bool = False) -> "FrozenEncoder":
        """Load `encoder.pt` (written by pretraining) with `inputs` None (all pretrained modalities) or a subset.

        `standardize=True` returns (feature - mean) / std with per-dimension statistics measured on
        training frames at export (the paper uses raw features: the default).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pretrain first with `python -m pretrain.multimae --out {path.parent}`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
            raise ValueError(f"{path} is not a MultiMAE encoder export ({ENCODER_FORMAT}); use runs/mmae/<name>/encoder.pt")
        enc = cls(ModelConfig.from_dict(blob["model_config"]), inputs)
        enc.model.load_state_dict(blob["state_dict"])
        enc.meta = {k: blob[k] for k in ("step", "epoch", "saliency_source", "data") if k in blob}
        if standardize:
            stats = blob.get("feature_stats", {}).get(",".join(enc.inputs))
            if stats is None:
                raise ValueError(f"{path} has no feature statistics for inputs {enc.inputs}; re-export it or load with standardize=False")
            enc.shift.copy_(stats["mean"])
            enc.scale.copy_(stats["std"].clamp(min=1e-8))
        enc.requires_grad_(False)
        return enc.to(device).eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)  # always eval: frozen

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor, saliency: torch.Tensor | None = None) -> torch.Tensor:
        """rgb float [B, 3, H, W], saliency float [B, 1, H, W] (both in [0, 1]) -> [B, dim]."""
        if "saliency" in self.inputs and saliency is None:
            raise ValueError("this encoder takes saliency: pass saliency [B, 1, H, W], or load it with inputs=('rgb',)")
        batch = {"rgb": rgb, "saliency": saliency}
        x = {}
        for m in self.inputs:
            t = batch[m].float()
            if t.shape[-1] != self.image_size or t.shape[-2] != self.image_size:
                t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            x[m] = t
        tokens = self.model.tokenize(x)  # [B, M*L, E] every token, no masking
        feats = self.model.encode(tokens).mean(dim=1)  # [B, E] mean over global + all patch tokens
        return (feats - self.shift) / self.scale
