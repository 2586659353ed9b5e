"""The RL stage's encoders: state, the CNN and frozen MultiMAE encoders, and (imported at the end) the
gaze encoders; the interface and the registry live in rl/encoder_base.py, re-exported here.

Every encoder of the paper's Table I (and the gaze method) is an `Encoder` for a pack of R runs:
it declares which observation fields it consumes, its output size, and whether it is frozen. The
SAC loop only talks to this interface; methods with extra learning (the gaze head's contrastive
loss) use the hooks, which are no-ops by default, so the loop has no special cases.

Observation fields (batched tensors on the agent's device, one row block per run):
  "pixels":    uint8 [R, B, 3, H, W]
  "saliency":  uint8 [R, B, 1, H, W]   (predicted or oracle map x 255)
  "state":     float32 [R, B, 39]
  "embedding": float32 [R, B, D]       (a frozen encoder's output, computed once per env step)

Every list of encoder names derives from `ENCODERS` (registration order), `TABLE_I` and `EXTRA`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rl.encoder_base import ENCODER_LABELS, ENCODERS, Encoder, encoder_names, image_input, register_encoder  # noqa: F401
from rl.nets import PackedConvTrunk, PackedProjection

#: the encoders of the paper's Table I, in its order
TABLE_I: tuple[str, ...] = (
    "cnn_rgb",
    "cnn_saliency",
    "cnn_rgb_x_saliency",
    "cnn_rgbs",
    "mmae_rgb",
    "mmae_rgbs_po",
    "mmae_rgbs",
)
#: --saliency-scale -> factor on the CNN Saliency / RGBS rows' saliency channel: the paper's text feeds the map
#: in [0, 1]; the authors' public code divides it by 255 a second time ([0, 0.004])
SALIENCY_SCALES: dict[str, float] = {"paper": 1.0, "authors": 1.0 / 255}
#: --mmae-features: what a frozen MultiMAE hands SAC (the default first)
MMAE_FEATURES = ("standardized", "raw")
#: the CNN rows fed the saliency channel that --saliency-scale scales (the paper's Saliency and RGBS rows)
SALIENCY_SCALED = ("cnn_saliency", "cnn_rgbs")
#: encoders beyond Table I (and the gaze ones), selectable with --encoder: name -> what it is
EXTRA: dict[str, str] = {
    "mmae_rgbs_grid2": "mmae_rgbs read through a 2x2 grid of mean patch tokens (4x the features; object R^2 0.87 vs 0.42)",
}


@register_encoder("state", "State (sanity check)")
class StateEncoder(Encoder):
    """The 39-d simulator state as the feature (the sanity check: no vision)."""

    obs_keys = ("state",)

    def __init__(self, cfg: Any = None, image_size: int = 64, runs: int = 1, state_dim: int = 39):
        super().__init__()
        self.out_dim = state_dim

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [R, B, 39]
        return obs["state"].float()


class CNNEncoder(Encoder):
    """PackedConvTrunk + PackedProjection, trained through the critic; the actor reads its detached output."""

    #: name -> (observation fields, input channels)
    VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
        "cnn_rgb": (("pixels",), 3),
        "cnn_saliency": (("saliency",), 1),
        "cnn_rgb_x_saliency": (("pixels", "saliency"), 3),
        "cnn_rgbs": (("pixels", "saliency"), 4),
    }

    def __init__(self, variant: str, image_size: int, feature_dim: int, runs: int = 1, saliency_scale: str = "paper"):
        super().__init__()
        self.variant = variant
        # the authors' public code divides the saliency channel of the Saliency and RGBS rows by 255 twice
        self.saliency_factor = SALIENCY_SCALES[saliency_scale] if variant in SALIENCY_SCALED else 1.0
        self.obs_keys, channels = self.VARIANTS[variant]
        self.trunk = PackedConvTrunk(runs, channels)
        c, h, w = self.trunk.feature_shape(image_size)
        self.projection = PackedProjection(runs, c * h * w, feature_dim)
        self.out_dim = feature_dim

    def pack_signature(self) -> tuple:
        return (self.variant, self.out_dim, self.saliency_factor)

    def inputs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # [R, B, C, H, W] float in [0, 1]
        if self.variant == "cnn_rgb":
            return image_input(obs["pixels"])
        sal = image_input(obs["saliency"]) * self.saliency_factor
        if self.variant == "cnn_saliency":
            return sal
        rgb = image_input(obs["pixels"])
        return rgb * sal if self.variant == "cnn_rgb_x_saliency" else torch.cat([rgb, sal], dim=2)

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [R, B, feature_dim]
        h = self.trunk(self.inputs(obs)).flatten(2)  # [R, B, 32 * 11 * 11]
        if detach:
            h = h.detach()
        return self.projection(h)


CNN_LABELS = {
    "cnn_rgb": "CNN RGB",
    "cnn_saliency": "CNN Saliency",
    "cnn_rgb_x_saliency": "CNN RGB x Saliency",
    "cnn_rgbs": "CNN RGBS",
}
for _name in CNNEncoder.VARIANTS:
    register_encoder(_name, CNN_LABELS[_name])(
        lambda cfg, image_size=64, runs=1, _n=_name: CNNEncoder(
            _n, image_size, cfg.feature_dim, runs, getattr(cfg, "saliency_scale", "paper")
        )
    )


class MMAEEncoder(Encoder):
    """A frozen pretrained MultiMAE encoder (its tokens pooled); the replay buffer stores its output.

    One module serves every run of a pack that names the same export, inputs and pool: it runs once
    per env step on all their frames. Frozen encoders of equal output size share a pack whatever
    their pool (their embeddings are just vectors to the SAC networks).
    """

    frozen = True

    #: name -> (default export folder under runs/mmae, inputs fed to the encoder, pool of pretrain.model.POOLS)
    VARIANTS: dict[str, tuple[str, tuple[str, ...], str]] = {
        "mmae_rgb": ("rgb", ("rgb",), "mean"),
        "mmae_rgbs_po": ("rgbs", ("rgb",), "mean"),
        "mmae_rgbs": ("rgbs", ("rgb", "saliency"), "mean"),
        "mmae_rgbs_grid2": ("rgbs", ("rgb", "saliency"), "grid2"),
    }

    def __init__(
        self, module: nn.Module, inputs: tuple[str, ...], source: str = "", provenance: dict[str, Any] | None = None
    ):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.inputs = tuple(inputs)
        self.obs_keys = ("pixels", "saliency") if "saliency" in self.inputs else ("pixels",)
        self.out_dim = int(module.out_dim)
        self.size = int(getattr(module, "image_size", 64))
        self.source = source  # the export it was loaded from (runs sharing it share this module)
        #: the file it was loaded from: {"path" (resolved), "sha256", "inputs", "pool", "chosen_by"} (rl/provenance.py)
        self.provenance = dict(provenance or {})

    def pack_signature(self) -> tuple:
        return ("frozen", self.out_dim)

    def train(self, mode: bool = True) -> "MMAEEncoder":
        super().train(mode)
        self.module.eval()  # frozen: dropout/norm layers always in inference mode
        return self

    @torch.no_grad()
    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [..., out_dim]
        lead = obs["pixels"].shape[:-3]
        rgb = image_input(obs["pixels"], self.size).flatten(0, -4)  # [N, 3, s, s]
        sal = image_input(obs["saliency"], self.size).flatten(0, -4) if "saliency" in self.inputs else None
        return self.module(rgb, sal).view(*lead, self.out_dim)


def mmae_command(folder: str, task: str = "") -> str:
    """The pretraining command whose output is runs/mmae/<folder>/<task>/encoder.pt (runs/mmae/<folder>/encoder.pt without a task)."""
    modalities = "rgb,saliency" if folder == "rgbs" else "rgb"
    where = f" --task {task} --out runs/mmae/{folder}/{task}" if task else ""
    return f"python -m pretrain.multimae --modalities {modalities}{where}"


def mmae_path(cfg: Any) -> Path:
    """The frozen export a mmae_* run reads: --mmae, else the task's own model runs/mmae/<name>/<task>/encoder.pt
    (the paper's default). Never a pooled model silently: that one is read only when --mmae names it."""
    if cfg.mmae:
        return Path(cfg.mmae)
    return Path("runs/mmae") / MMAEEncoder.VARIANTS[cfg.encoder][0] / cfg.env.task / "encoder.pt"


def missing_mmae_message(cfg: Any) -> str:
    """Why a mmae_* run has no frozen encoder, and the command (or flag) that gives it one."""
    folder = MMAEEncoder.VARIANTS[cfg.encoder][0]
    path = mmae_path(cfg)
    if cfg.mmae:
        return (
            f"encoder {cfg.encoder!r}: --mmae {path} does not exist; produce it with `{mmae_command(folder)} --out "
            f"{path.parent}` or pass the path of an existing encoder.pt"
        )
    pooled = path.parent.parent / "encoder.pt"
    alternative = (
        f"; or, to use the pooled model {pooled} that exists, name it: --mmae {pooled}"
        if pooled.exists()
        else "; or pass --mmae PATH"
    )
    return (
        f"encoder {cfg.encoder!r} needs the task's own frozen MultiMAE {path}, which does not exist; produce it "
        f"with `{mmae_command(folder, cfg.env.task)}`{alternative}"
    )


def _mmae_factory(name: str):
    folder, inputs, pool = MMAEEncoder.VARIANTS[name]

    def factory(cfg: Any, image_size: int = 64, runs: int = 1) -> MMAEEncoder:
        path = mmae_path(cfg)
        if not path.exists():
            raise FileNotFoundError(missing_mmae_message(cfg))
        from common.hub import file_sha256
        from pretrain.frozen import FrozenEncoder, MissingStatisticsError

        standardize = cfg.mmae_features == "standardized"
        try:
            module = FrozenEncoder.load(str(path), inputs=inputs, pool=pool, standardize=standardize)
        except MissingStatisticsError as err:
            raise MissingStatisticsError(
                f"--mmae-features standardized (the default) needs the export's feature statistics: {err}. "
                "Pass --mmae-features raw to feed its raw features, or use an export of `python -m pretrain.multimae`, "
                "which stores them"
            ) from None
        provenance = {
            "path": str(path.resolve()),
            "sha256": file_sha256(path),
            "inputs": list(inputs),
            "pool": pool,
            "features": "standardized" if standardize else "raw",
            "chosen_by": "--mmae" if cfg.mmae else "default (the task's own)",
        }
        return MMAEEncoder(module, inputs, f"{path}:{','.join(inputs)}|{pool}", provenance)

    return factory


MMAE_LABELS = {
    "mmae_rgb": "MMAE RGB",
    "mmae_rgbs_po": "MMAE RGB+Saliency (PO)",
    "mmae_rgbs": "MMAE RGB+Saliency (ViSaRL)",
    "mmae_rgbs_grid2": "MMAE RGB+Saliency, 2x2 grid pool",
}
for _name in MMAEEncoder.VARIANTS:
    register_encoder(_name, MMAE_LABELS[_name])(_mmae_factory(_name))


def build_encoder(cfg: Any, image_size: int = 64, runs: int = 1) -> Encoder:
    """The encoder named by cfg.encoder for a pack of `runs` runs."""
    names = encoder_names()
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; valid encoders: {', '.join(sorted(names))}")
    return ENCODERS[cfg.encoder](cfg, image_size, runs)


def field_applies(field: str, encoder: str) -> bool:
    """Whether the rl.sac option `field` (its flat name) changes what a run of `encoder` does: the frozen-MultiMAE
    options only MultiMAE rows, --saliency-scale only SALIENCY_SCALED, the gaze options only gaze rows, every other
    option every row. A run is not resumed differently, nor reported as another row, by a field that does not apply."""
    if field in ("mmae", "mmae_features"):
        return encoder in MMAEEncoder.VARIANTS
    if field == "saliency_scale":
        return encoder in SALIENCY_SCALED
    if field.startswith("gaze_"):
        return encoder.startswith("gaze")
    return True


# The gaze encoders (rl/gaze.py, built on rl.encoder_base) register themselves on import: last, so the
# registry lists them after the paper's encoders, and every reader of this module sees them.
from rl import gaze  # noqa: E402, F401
