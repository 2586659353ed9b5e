"""The pretrained MultiMAE encoder, frozen, as RL sees it: all tokens in, no masking, pooled features out.

    enc = FrozenEncoder.load("runs/mmae/rgbs/encoder.pt")                   # rgb + saliency
    enc = FrozenEncoder.load("runs/mmae/rgbs/encoder.pt", inputs=("rgb",))  # the paper's PO variant
    enc = FrozenEncoder.load(path, pool="grid2")                            # 2x2 grid of mean tokens, [B, 4*256]
    enc = FrozenEncoder.load("runs/mmae/rgbs/encoder.safetensors")          # the hub copy (pretrain.export): same encoder
    enc.save_pretrained("hub/mmae_rgbs"); FrozenEncoder.from_pretrained("hub/mmae_rgbs")  # huggingface_hub's API, local folders
    feats = enc(rgb, saliency)  # rgb [B, 3, 64, 64], saliency [B, 1, 64, 64] in [0, 1] -> [B, enc.out_dim]

Pools (`pretrain.model.POOLS`): "mean" of all tokens (the paper, the default), "global" token,
"grid2"/"grid4": per-region means of the patch tokens on a 2x2 / 4x4 grid, flattened. Features are
standardised per dimension with statistics stored in encoder.pt at export (measured on training
frames) whenever the export has them: raw mean features vary by ~0.1 % of their magnitude, below
float16's resolution, and standardised ones keep their information in float16 (see
`python -m pretrain.probe`). RL standardises by default (`--mmae-features`, README "Faithful to
the paper": measured on reach-v3, issue #24). RGB is normalised inside the model (ImageNet mean/std for models
trained with it): callers always pass [0, 1] images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.hub import HubFolder, hub_mixins, markdown_table, model_card, read_safetensors, write_hub_folder
from common.io import safe_torch_load
from pretrain.model import POOLS, ModelConfig, MultiMAE

ENCODER_FORMAT = "visarl-mmae-encoder/1"
_, PyTorchModelHubMixin = hub_mixins()
#: encoder.pt fields kept as FrozenEncoder.meta (and as JSON metadata in encoder.safetensors)
META_KEYS = ("step", "epoch", "saliency_source", "data", "task", "code_version")


class MissingStatisticsError(ValueError):
    """An export lacks the feature statistics that standardised features need."""


def statistics_inputs(model_config: ModelConfig) -> list[tuple[str, ...]]:
    """The input sets an export stores feature statistics for (each with every pool): all modalities, rgb alone."""
    return list(dict.fromkeys([model_config.modalities, ("rgb",)]))


def identity_statistics(model_config: ModelConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Feature statistics that change nothing (mean 0, std 1) for every input set and pool: what a random-init
    export of tests and benchmarks stores, having no training frames to measure (its "standardised" features are
    its raw ones)."""
    return {
        f"{','.join(inputs)}|{pool}": {
            "mean": torch.zeros(POOLS[pool] * model_config.dim),
            "std": torch.ones(POOLS[pool] * model_config.dim),
        }
        for inputs in statistics_inputs(model_config)
        for pool in POOLS
    }


def encoder_blob(model: MultiMAE, feature_stats: dict[str, dict[str, torch.Tensor]], **meta: Any) -> dict:
    """The encoder.pt dict of `model`'s encoder: format, config, weights, `meta` (step, epoch, ...) and the feature
    statistics (`export_feature_stats` of training frames, `identity_statistics`, or {} for none)."""
    return {
        "format": ENCODER_FORMAT,
        "model_config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.encoder_state_dict().items()},
        "feature_stats": feature_stats,
        **meta,
    }


def encoder_safetensors(blob: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An encoder.pt dict -> (tensors, metadata) of encoder.safetensors: weights under "state_dict.",
    feature statistics under "feature_stats.<inputs|pool>.mean/std", the rest as JSON strings."""
    tensors = {f"state_dict.{k}": v for k, v in blob["state_dict"].items()}
    for key, stats in blob.get("feature_stats", {}).items():
        tensors.update({f"feature_stats.{key}.{s}": stats[s] for s in ("mean", "std")})
    meta = {
        "format": blob["format"],
        "model_config": json.dumps(blob["model_config"]),
        "meta": json.dumps({k: blob[k] for k in META_KEYS if k in blob}),
    }
    return tensors, meta


def read_encoder_file(path: Path) -> Any:
    """The encoder.pt dict of `path`: encoder.pt itself, or encoder.safetensors rebuilt into the same dict."""
    if path.suffix != ".safetensors":
        return safe_torch_load(path, what="MultiMAE encoder")
    tensors, meta = read_safetensors(path, what="MultiMAE encoder")
    if meta.get("format") != ENCODER_FORMAT:
        return meta
    blob: dict[str, Any] = {
        "format": meta["format"],
        "model_config": json.loads(meta["model_config"]),
        **json.loads(meta.get("meta", "{}")),
        "state_dict": {},
        "feature_stats": {},
    }
    for name, t in tensors.items():
        group, _, rest = name.partition(".")
        if group == "state_dict":
            blob["state_dict"][rest] = t
        elif group == "feature_stats":
            key, _, stat = rest.rpartition(".")
            blob["feature_stats"].setdefault(key, {})[stat] = t
    return blob


class FrozenEncoder(
    HubFolder,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="visarl",
    license="mit",
    pipeline_tag="image-feature-extraction",
    tags=["visarl", "multimae", "reinforcement-learning", "meta-world"],
):
    """Input adapters + encoder of a pretrained MultiMAE and a pooling; eval mode, no gradients.

    `save_pretrained(folder)` / `FrozenEncoder.from_pretrained(folder)` (huggingface_hub's mixin) write and read
    model.safetensors (weights and feature statistics), config.json (architecture, inputs, pool) and a model card."""

    def __init__(self, model_config: ModelConfig | dict, inputs: Sequence[str] | None = None, pool: str = "mean"):
        super().__init__()
        if isinstance(model_config, dict):  # as config.json holds it
            model_config = ModelConfig.from_dict(model_config)
        self.model_config = model_config
        self.model = MultiMAE(model_config, decoders=False)
        self.inputs = tuple(inputs or model_config.modalities)
        missing = [m for m in self.inputs if m not in model_config.modalities]
        if missing or "rgb" not in self.inputs:
            raise ValueError(
                f"inputs {self.inputs} must include rgb and only modalities the model was pretrained on "
                f"({', '.join(model_config.modalities)})"
            )
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.pool = pool
        self.out_dim = POOLS[pool] * model_config.dim
        self.register_buffer("shift", torch.zeros(self.out_dim))  # standardisation (identity unless loaded so)
        self.register_buffer("scale", torch.ones(self.out_dim))
        self.standardized = False
        self.image_size = model_config.image_size
        self.meta: dict = {}

    @classmethod
    def load(
        cls,
        path: str | Path,
        inputs: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
        standardize: bool | None = None,
        pool: str = "mean",
    ) -> "FrozenEncoder":
        """Load `encoder.pt` (written by pretraining) or its `encoder.safetensors` copy, with `inputs`
        None (all pretrained modalities) or a subset.

        `standardize`: None (default) applies the per-dimension statistics stored for these inputs
        and pool when the export has them, else returns raw features; True requires them; False
        returns the raw features.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: pretrain first with `python -m pretrain.multimae --out {path.parent}`"
            )
        blob = read_encoder_file(path)
        if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
            raise ValueError(
                f"{path} is not a MultiMAE encoder export ({ENCODER_FORMAT}); use runs/mmae/<name>/encoder.pt "
                "(or its encoder.safetensors)"
            )
        enc = cls(ModelConfig.from_dict(blob["model_config"]), inputs, pool)
        try:
            enc.model.load_state_dict(blob["state_dict"])
        except RuntimeError as err:
            raise ValueError(
                f"{path}: weights do not match its model_config ({str(err).splitlines()[0]}); re-export it"
            ) from None
        enc.meta = {k: blob[k] for k in META_KEYS if k in blob and k != "code_version"}
        key = ",".join(enc.inputs)
        stats_all = blob.get("feature_stats", {})
        stats = stats_all.get(f"{key}|{pool}") or (stats_all.get(key) if pool == "mean" else None)
        if standardize and stats is None:
            raise MissingStatisticsError(
                f"{path} has no feature statistics for inputs {enc.inputs} and pool {pool!r}; "
                "re-export it or load with standardize=False"
            )
        if stats is not None and standardize is not False:
            enc.set_standardization(stats["mean"], stats["std"])
        enc.requires_grad_(False)
        return enc.to(device).eval()

    @classmethod
    def random_init(
        cls, model_config: ModelConfig, inputs: Sequence[str] | None = None, pool: str = "mean", seed: int = 0
    ) -> "FrozenEncoder":
        """The same architecture at its initialisation (seeded), raw features: the probe's baseline."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            enc = cls(model_config, inputs, pool)
        return enc.requires_grad_(False).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors, config.json and README.md: what `from_pretrained` reads (huggingface_hub calls this)."""
        config = {
            "model_config": self.model_config.to_dict(),
            "inputs": list(self.inputs),
            "pool": self.pool,
            "standardized": self.standardized,
            "meta": self.meta,
            "out_dim": self.out_dim,
        }
        write_hub_folder(
            Path(save_directory),
            self.state_dict(),
            {"format": ENCODER_FORMAT, "inputs": ",".join(self.inputs), "pool": self.pool},
            config,
            self.card(),
        )

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, config: dict[str, Any] | None = None, map_location: str = "cpu", **hub_kwargs: Any
    ) -> "FrozenEncoder":
        """The encoder of a folder `save_pretrained` wrote; every weight must fit (no partial loads)."""
        config = config or {}
        tensors, _ = read_safetensors(Path(model_id) / "model.safetensors", what="MultiMAE encoder")
        enc = cls(config["model_config"], config.get("inputs"), config.get("pool", "mean"))
        try:
            enc.load_state_dict(tensors)
        except RuntimeError as err:
            raise ValueError(f"{model_id}: weights do not match its config.json ({str(err).splitlines()[0]})") from None
        enc.standardized, enc.meta = bool(config.get("standardized")), dict(config.get("meta") or {})
        return enc.requires_grad_(False).to(map_location).eval()

    def card(self) -> str:
        """The model card of a `save_pretrained` folder: what the encoder reads and returns, and how to load it."""
        mc = self.model_config
        rows = [
            ["inputs", " + ".join(self.inputs)],
            ["pool", f"{self.pool} ({self.out_dim}-d features)"],
            [
                "standardised",
                "yes (per-dimension statistics of training frames)" if self.standardized else "no (raw features)",
            ],
            [
                "ViT",
                f"patch {mc.patch_size}, {mc.image_size}x{mc.image_size}, dim {mc.dim}, depth {mc.depth}, {mc.num_heads} heads",
            ],
            *[[k, str(v)] for k, v in self.meta.items()],
        ]
        body = "\n".join(
            [
                f"# Frozen MultiMAE encoder ({'+'.join(self.inputs)}, {self.pool} pool)",
                "",
                "The encoder of a MultiMAE pretrained for ViSaRL (visual RL guided by human saliency) on Meta-World frames; "
                "RL reads its pooled features with no masking.",
                "",
                markdown_table(["", ""], rows),
                "",
                "```python",
                "from pretrain.frozen import FrozenEncoder  # pretrain/frozen.py of the ViSaRL pipeline",
                "enc = FrozenEncoder.from_pretrained(FOLDER)",
                f"feats = enc(rgb{', saliency' if 'saliency' in self.inputs else ''})  # [B, C, H, W] floats in [0, 1] -> [B, {self.out_dim}]",
                "```",
            ]
        )
        return model_card(
            {
                "library_name": "visarl",
                "pipeline_tag": "image-feature-extraction",
                "tags": [
                    "visarl",
                    "multimae",
                    *(["saliency"] if "saliency" in self.inputs else []),
                    "reinforcement-learning",
                    "meta-world",
                    *([self.meta["task"]] if self.meta.get("task") else []),
                ],
            },
            body,
        )

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Features become (feature - mean) / std per dimension (std floored at 1e-8)."""
        self.shift.copy_(mean)
        self.scale.copy_(std.clamp(min=1e-8))
        self.standardized = True

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)  # always eval: frozen

    @torch.no_grad()
    def tokens(self, rgb: torch.Tensor, saliency: torch.Tensor | None = None) -> torch.Tensor:
        """rgb float [B, 3, H, W], saliency float [B, 1, H, W] (both in [0, 1]) -> encoded [B, 1+M*L, E]."""
        if "saliency" in self.inputs and saliency is None:
            raise ValueError("this encoder takes saliency: pass saliency [B, 1, H, W], or load it with inputs=('rgb',)")
        batch = {"rgb": rgb, "saliency": saliency}
        x = {}
        for m in self.inputs:
            t = batch[m].float()
            if t.shape[-1] != self.image_size or t.shape[-2] != self.image_size:
                t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            x[m] = t
        return self.model.encode(self.model.tokenize(x))  # every token, no masking, global first

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor, saliency: torch.Tensor | None = None) -> torch.Tensor:
        """rgb float [B, 3, H, W], saliency float [B, 1, H, W] (both in [0, 1]) -> [B, out_dim]."""
        feats = self.model.pool(self.tokens(rgb, saliency), self.pool)  # [B, out_dim]
        return (feats - self.shift) / self.scale
