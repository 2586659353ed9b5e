"""Gaze on the Prize (arXiv 2510.08442) as SAC encoders: foveal attention on the CNN feature map,
shaped by return-guided contrastive learning.

    pixels -> ConvTrunk -> F [B, 32, 11, 11] -> gaze head (pooled F -> MLP -> Gaussian params)
           -> attention A [B, 11, 11] (sums to 1) -> F * A * (11 * 11) -> Projection -> policy / critic

The critic trains trunk, head and projection as in the CNN baseline (`cnn_rgb`). Beside it, a
`ReturnBuffer` keeps detached trunk feature maps with the return-to-go of their state; each
contrastive update samples anchors, finds their k nearest neighbours by cosine similarity (exact
inner-product search on L2-normalised keys: FAISS on CPU, torch on a GPU), takes the most similar neighbour whose return
is higher by more than a margin as positive and the most similar one whose return is lower as
negative, and applies a triplet loss on the *gazed* stored features (the attention recomputed by
the current head) plus a log-space spread regulariser on sigma. That loss reaches only the gaze
head: stored features are detached and the head has its own optimiser.

Choices (documented, not from the paper, which has no public code):
- The head reads the trunk map average-pooled to `--gaze-pool` x `--gaze-pool` cells (default 3,
  288 numbers); `--gaze-pool 1` is the paper's global pooling, which is translation invariant on
  this padding-free trunk and so cannot follow an object that moves between episodes.
- The FAISS keys are the globally average-pooled trunk features, L2-normalised (32-d). Exact flat
  search cost grows with the key size: at 288-d (3x3-pooled) it would dominate a SAC update
  (BENCHMARKS.md, Gaze on the Prize). The buffer also stores the full map in float16, its
  per-cell squared norms and the head's pooled input (9.4 kB per entry, 0.94 GB at 100k, memory
  committed only as it fills), so that the gaze is recomputed with the current head and the
  cosine of two gazed maps comes exactly from per-cell sums (`gazed_cosine`). Search uses `faiss.knn` with METRIC_INNER_PRODUCT over the
  key array in place: the same exact flat search as IndexFlatIP.search, without re-adding the
  ring buffer's overwritten rows to an index.
- The attention map sums to 1 over the grid and is multiplied by the number of cells, so a uniform
  gaze leaves the features unchanged and the initial (wide) gaze keeps the baseline's scale.
- `--gaze-return-margin 0` means automatic: 0.1 x the standard deviation of stored returns
  (0 when all returns are equal, so constant returns mine nothing).

Packing: every network is packed over R runs (rl/nets.py); each run keeps its own ReturnBuffer,
mining rng and triplets, and one optimiser step of the stacked head parameters is R independent
head steps (buffers and mining live in rl/gaze_buffer.py). That holds while the runs of a pack
finish episodes at the same steps (Meta-World's episodes end only at the time limit): a run with no
finished episode yet while another has would still see its head's Adam step counter advance.

Encoders registered here: `gaze` (1 Gaussian + contrastive), `gaze_nocontrast` (1 Gaussian, RL
only), `gaze_patch` (softmax over cells instead of a Gaussian, + contrastive; its spread term acts
on the map's spatial standard deviation), `gaze_mix` (mixture of max(2, --gaze-components)
Gaussians + contrastive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.cli import option
from rl.encoder_base import Encoder, image_input, register_encoder
from rl.gaze_buffer import (  # noqa: F401  (re-exported: the gaze API in one place)
    ReturnBuffer,
    cosine_triplet_loss,
    gazed_cosine,
    mine_triplets,
    sample_and_mine,
    spread_loss,
)
from rl.nets import PackedConvTrunk, PackedMLP, PackedProjection, slice_state, stack_states


@dataclass
class GazeConfig:
    """Settings of the gaze encoders; `SACConfig.gaze`, whose fields are the flags `--gaze-<name>`."""

    components: int = option(1, "gaze: number of Gaussian gaze components")
    contrast_weight: float = option(0.1, "gaze: weight of the return-guided triplet loss")
    spread_weight: float = option(0.01, "gaze: weight of the spread regulariser")
    k: int = option(16, "gaze: nearest neighbours searched per anchor")
    triplet_margin: float = option(0.2, "gaze: triplet margin on cosine distance")
    return_margin: float = option(0.0, "gaze: return difference that makes a positive/negative (0: automatic)")
    buffer_size: int = option(100_000, "gaze: capacity of the feature/return buffer")
    update_every: int = option(1, "gaze: contrastive update every this many SAC updates")
    anchors: int = option(128, "gaze: anchors per contrastive update")
    return_discount: float = option(1.0, "gaze: discount of the return-to-go (1.0: undiscounted)")
    sigma_floor: float = option(0.15, "gaze: minimum standard deviation of a gaze Gaussian (grid units)")
    spread_target: float = option(0.5, "gaze: target standard deviation s0 of the spread regulariser")
    pool: int = option(
        3, "gaze: the head reads the trunk map average-pooled to pool x pool cells (1: the paper's global pooling)"
    )
    lr: float = option(1e-4, "gaze: learning rate (Adam) of the gaze head's contrastive and spread losses")

    def validate(self) -> "GazeConfig":
        checks = [
            ("k", self.k >= 1, ">= 1"),
            ("anchors", self.anchors >= 1, ">= 1"),
            ("update_every", self.update_every >= 1, ">= 1"),
            ("buffer_size", self.buffer_size >= 1, ">= 1"),
            ("components", self.components >= 1, ">= 1"),
            ("return_discount", 0 < self.return_discount <= 1, "in (0, 1]"),
            ("sigma_floor", self.sigma_floor > 0, "> 0"),
            ("spread_target", self.spread_target > 0, "> 0"),
            ("return_margin", self.return_margin >= 0, ">= 0 (0 = automatic)"),
            ("pool", self.pool >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"--gaze-{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        return self


#: what auxiliary_update returns for the contrastive encoders (gaze_nocontrast: only gaze/sigma)
METRIC_KEYS = (
    "gaze/sigma",  # mean sigma of the anchors' gaze (grid units; patch head: the map's spatial std)
    "gaze/buffer",  # buffer entries with a known return-to-go
    "gaze/triplets",  # complete triplets mined in the last update
    "gaze/pos_frac",  # fraction of anchors with a valid positive among their k neighbours
    "gaze/neg_frac",  # ... with a valid negative
    "gaze/contrast_loss",  # triplet loss (0 when no triplet was mined)
    "gaze/spread_loss",  # log-space spread regulariser
    "gaze/return_margin",  # return difference used to label positives/negatives
)


def gaze_config(cfg: Any) -> GazeConfig:
    """The gaze settings of a run config (its `.gaze`), validated; defaults without one."""
    return (getattr(cfg, "gaze", None) or GazeConfig()).validate()


def grid_coords(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres on [-1, 1]: x [1, 1, W] (columns), y [1, H, 1] (rows)."""
    xs = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, width)
    ys = torch.linspace(-1.0, 1.0, height, device=device).view(1, height, 1)
    return xs, ys


def gaussian_map(mu: torch.Tensor, sigma: torch.Tensor, rho: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bivariate Gaussians on the [-1, 1] cell grid, each normalised to sum 1 over the cells.

    mu, sigma: [..., 2] (x, y); rho: [...] in (-1, 1). Returns [..., H, W].
    """
    lead = mu.shape[:-1]
    mu, sigma, rho = mu.reshape(-1, 2), sigma.reshape(-1, 2), rho.reshape(-1)
    xs, ys = grid_coords(height, width, mu.device)
    dx = (xs - mu[:, 0, None, None]) / sigma[:, 0, None, None]  # [N, 1, W]
    dy = (ys - mu[:, 1, None, None]) / sigma[:, 1, None, None]  # [N, H, 1]
    r = rho[:, None, None]
    q = (dx**2 + dy**2 - 2 * r * dx * dy) / (2 * (1 - r**2))  # [N, H, W]
    attn = torch.softmax(-q.flatten(1), dim=1)  # [N, H*W]: exp(-q) / sum exp(-q)
    return attn.view(*lead, height, width)


def map_spread(attn: torch.Tensor) -> torch.Tensor:
    """Spatial standard deviation (x, y) of attention maps [..., H, W] on the [-1, 1] grid -> [..., 2]."""
    xs, ys = grid_coords(attn.shape[-2], attn.shape[-1], attn.device)
    px, py = attn.sum(-2), attn.sum(-1)  # [..., W], [..., H]
    mx, my = (px * xs[0, 0]).sum(-1, keepdim=True), (py * ys[0, :, 0]).sum(-1, keepdim=True)
    vx = (px * (xs[0, 0] - mx) ** 2).sum(-1)
    vy = (py * (ys[0, :, 0] - my) ** 2).sum(-1)
    return torch.stack([vx, vy], -1).clamp_min(1e-12).sqrt()


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def pool_features(feat: torch.Tensor, pool: int) -> torch.Tensor:
    """feat [R, B, C, h, w] -> a gaze head's input [R, B, C*pool*pool] (average-pooled cells)."""
    return F.adaptive_avg_pool2d(feat.flatten(0, 1), pool).flatten(1).view(*feat.shape[:2], -1)


class GaussianGazeHead(nn.Module):
    """Pooled features -> MLP -> K Gaussians (mu via tanh, sigma = softplus + floor, rho = 0.95 tanh)
    and, for K > 1, softmax mixture weights. Starts centred (K = 1) and wide (sigma = 1)."""

    def __init__(
        self,
        channels: int,
        grid: tuple[int, int],
        components: int = 1,
        pool: int = 3,
        sigma_floor: float = 0.15,
        hidden: int = 64,
        sigma_init: float = 1.0,
        runs: int = 1,
    ):
        super().__init__()
        if sigma_init <= sigma_floor:
            raise ValueError(f"sigma_init {sigma_init} must exceed gaze_sigma_floor {sigma_floor}")
        self.grid, self.components, self.pool, self.sigma_floor = grid, components, pool, sigma_floor
        out = 5 * components + (components if components > 1 else 0)
        self.mlp = PackedMLP(runs, [channels * pool * pool, hidden, out], init="default")
        last = self.mlp.layers[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            bias = torch.zeros(out)
            params = bias[: 5 * components].view(components, 5)
            if components > 1:  # spread the initial means on a circle of radius 0.4 to break symmetry
                angle = torch.arange(components) * (2 * math.pi / components)
                params[:, 0] = torch.atanh(0.4 * torch.cos(angle))
                params[:, 1] = torch.atanh(0.4 * torch.sin(angle))
            params[:, 2:4] = _inverse_softplus(sigma_init - sigma_floor)
            last.bias.copy_(bias.expand_as(last.bias))

    def pool_input(self, feat: torch.Tensor) -> torch.Tensor:
        """feat [R, B, C, h, w] -> the head's input [R, B, C*pool*pool]."""
        return pool_features(feat, self.pool)

    def params(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """pooled [R, B, P] -> mu [R, B, K, 2], sigma [R, B, K, 2], rho [R, B, K], weight [R, B, K]."""
        out = self.mlp(pooled)  # [R, B, 5K (+K)]
        k = self.components
        p = out[..., : 5 * k].unflatten(-1, (k, 5))  # [R, B, K, 5]
        weight = torch.softmax(out[..., 5 * k :], -1) if k > 1 else out.new_ones(*out.shape[:-1], 1)
        return {
            "mu": torch.tanh(p[..., 0:2]),
            "sigma": F.softplus(p[..., 2:4]) + self.sigma_floor,
            "rho": 0.95 * torch.tanh(p[..., 4]),
            "weight": weight,
        }

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """feat [R, B, C, h, w] -> attention [R, B, h, w] (sums to 1), sigma [R, B, K, 2] (for the spread term), params."""
        return self.from_pooled(self.pool_input(feat))

    def from_pooled(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params(pooled)
        maps = gaussian_map(p["mu"], p["sigma"], p["rho"], *self.grid)  # [R, B, K, h, w]
        attn = (p["weight"][..., None, None] * maps).sum(-3)  # [R, B, h, w]
        return attn, p["sigma"], p


class PatchGazeHead(nn.Module):
    """The patch-attention ablation: pooled features -> MLP -> one logit per cell -> softmax over
    cells. Starts uniform. Its 'sigma' is the map's spatial standard deviation."""

    def __init__(self, channels: int, grid: tuple[int, int], pool: int = 3, hidden: int = 64, runs: int = 1):
        super().__init__()
        self.grid, self.pool = grid, pool
        self.mlp = PackedMLP(runs, [channels * pool * pool, hidden, grid[0] * grid[1]], init="default")
        nn.init.normal_(self.mlp.layers[-1].weight, std=1e-3)
        nn.init.zeros_(self.mlp.layers[-1].bias)

    def pool_input(self, feat: torch.Tensor) -> torch.Tensor:
        return pool_features(feat, self.pool)  # [R, B, C*pool*pool]

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.from_pooled(self.pool_input(feat))

    def from_pooled(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        attn = torch.softmax(self.mlp(pooled), -1).unflatten(-1, self.grid)  # [R, B, h, w]
        sigma = map_spread(attn)[..., None, :]  # [R, B, 1, 2]
        return attn, sigma, {}


@dataclass
class Triplets:
    """One run's contrastive batch. The head runs once on its distinct buffer rows (`rows`); every index
    tensor points into those rows: `sampled` are the anchors drawn for the spread term, `anchor`,
    `positive` and `negative` the complete return-guided triplets mined among their neighbours."""

    rows: np.ndarray  # [U] distinct buffer rows
    sampled: torch.Tensor  # [N] the sampled anchors
    anchor: torch.Tensor  # [T] each triplet's anchor
    positive: torch.Tensor  # [T] its most similar neighbour with a higher return
    negative: torch.Tensor  # [T] its most similar neighbour with a lower return
    dots_ap: torch.Tensor  # [T, S] per-cell dot products of anchor and positive stored maps
    dots_an: torch.Tensor  # [T, S] the same for anchor and negative
    cell_sq: torch.Tensor  # [U, S] per-cell squared norms of the rows' stored maps
    metrics: dict[str, float]  # what mining found (buffer size, triplets, positive/negative shares, margin)

    @classmethod
    def gather(
        cls,
        buf: ReturnBuffer,
        sampled: np.ndarray,
        mined: dict[str, np.ndarray],
        margin: float,
        candidates: int,
        device: torch.device,
    ) -> "Triplets":
        """From `mine_triplets`' buffer indices to positions in the distinct rows, with the stored maps' sums."""
        rows, position = np.unique(
            np.concatenate([sampled, mined["anchor"], mined["positive"], mined["negative"]]), return_inverse=True
        )
        n, t = len(sampled), len(mined["anchor"])
        at = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        stored = {k: buf.feats[mined[k]].astype(np.float32) for k in ("anchor", "positive", "negative")}  # [T, C, S]
        return cls(
            rows=rows,
            sampled=at(position[:n]),
            anchor=at(position[n : n + t]),
            positive=at(position[n + t : n + 2 * t]),
            negative=at(position[n + 2 * t :]),
            dots_ap=at((stored["anchor"] * stored["positive"]).sum(1)),
            dots_an=at((stored["anchor"] * stored["negative"]).sum(1)),
            cell_sq=at(buf.cell_sq[rows]),
            metrics={
                "gaze/buffer": float(candidates),
                "gaze/triplets": float(t),
                "gaze/pos_frac": float(mined["has_pos"].mean()),
                "gaze/neg_frac": float(mined["has_neg"].mean()),
                "gaze/return_margin": margin,
            },
        )


class GazeEncoder(Encoder):
    """ConvTrunk -> gaze head -> attention-weighted feature map -> Projection, for R runs (see module doc)."""

    obs_keys = ("pixels",)
    graph_safe = False  # forward records sigma on the host and caches acting features

    def __init__(
        self,
        cfg: Any,
        image_size: int,
        runs: int = 1,
        head: str = "gaussian",
        components: int = 1,
        contrastive: bool = True,
    ):
        super().__init__()
        self.runs = runs
        self.trunk = PackedConvTrunk(runs, 3)
        c, h, w = self.trunk.feature_shape(image_size)
        self.feat_shape, self.grid = (c, h, w), (h, w)
        self.settings = settings = gaze_config(cfg)
        pool = settings.pool
        if head == "gaussian":
            self.head = GaussianGazeHead(c, self.grid, components, pool, settings.sigma_floor, runs=runs)
        elif head == "patch":
            self.head = PatchGazeHead(c, self.grid, pool, runs=runs)
        else:
            raise ValueError(f"unknown gaze head {head!r}: use 'gaussian' or 'patch'")
        self.kind = (head, components, contrastive)
        self.out_dim = int(getattr(cfg, "feature_dim", 100))
        self.projection = PackedProjection(runs, c * h * w, self.out_dim)
        self.contrastive = contrastive
        self._last_sigma = [float("nan")] * runs
        self._act_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._metrics = [dict.fromkeys(METRIC_KEYS, 0.0) | {"gaze/sigma": float("nan")} for _ in range(runs)]
        if contrastive:
            self.buffers = [self._new_buffer("cpu") for _ in range(runs)]
            # a pack is built from packs of one, whose rngs (seeded by their run) load_extra_state brings in
            self.rngs = [np.random.default_rng(int(getattr(cfg, "seed", 0)) + 7919) for _ in range(runs)]
            self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=settings.lr)

    def _buffer_shape(self) -> tuple[int, tuple[int, int, int], int, int]:
        """A run's return buffer: capacity, trunk map shape, key size (the channels), pooled head input size."""
        c = self.feat_shape[0]
        return self.settings.buffer_size, self.feat_shape, c, c * self.head.pool * self.head.pool

    def _new_buffer(self, device: torch.device | str) -> ReturnBuffer:
        return ReturnBuffer(*self._buffer_shape(), self.settings.return_discount, device=device)

    def host_memory(self, steps: int) -> int:
        """A run's return buffer (CPU) after `steps` env steps: one entry per step, up to its size."""
        return ReturnBuffer.bytes_needed(*self._buffer_shape(), steps) if self.contrastive else 0

    def _apply(self, fn, recurse: bool = True):
        """Moving the encoder moves the buffers' k-NN key mirrors too (torch search on a GPU)."""
        out = super()._apply(fn, recurse)
        if self.contrastive:
            device = self.projection.linear.weight.device
            if (self.buffers[0].keys_device is None) != (device.type == "cpu"):
                states = [b.state_dict() for b in self.buffers]
                self.buffers = [self._new_buffer(device) for _ in range(self.runs)]
                for b, s in zip(self.buffers, states):
                    b.load_state_dict(s)
        return out

    def pack_signature(self) -> tuple:
        return ("gaze", *self.kind, self.out_dim)

    # -- forward ---------------------------------------------------------------------------------
    def gaze(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feat [R, B, C, h, w] -> gazed features [R, B, C*h*w], attention [R, B, h, w], sigma [R, B, K, 2]."""
        attn, sigma, _ = self.head(feat)
        gazed = feat * (attn * (self.grid[0] * self.grid[1])).unsqueeze(2)  # [R, B, C, h, w]
        return gazed.flatten(2), attn, sigma

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [R, B, out_dim]
        """detach=True stops gradients at the gazed features (trunk and head), as `cnn_rgb` does at its
        trunk output: the projection still trains, the attention does not."""
        pixels = obs["pixels"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            feat = self.trunk(image_input(pixels))  # [R, B, C, h, w]
            gazed, _, sigma = self.gaze(feat)  # [R, B, C*h*w]
        if not gazed.requires_grad:
            self._last_sigma = sigma.mean((1, 2, 3)).tolist()
            if self.contrastive and pixels.shape[1] <= 64:  # acting: on_env_step can reuse these features
                self._act_cache = (pixels, feat)
        return self.projection(gazed)

    @torch.no_grad()
    def attention(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """For pictures: uint8 pixels [R, B, 3, H, W] -> attention [R, B, h, w] and the head's parameters."""
        feat = self.trunk(image_input(pixels))
        attn, sigma, params = self.head(feat)
        return {"attention": attn, "sigma": sigma, **params}

    # -- contrastive learning --------------------------------------------------------------------
    def on_env_step(self, obs: dict[str, torch.Tensor], rewards: np.ndarray, dones: np.ndarray) -> None:
        if not self.contrastive:
            return
        pixels = torch.as_tensor(obs["pixels"])
        if pixels.ndim != 5 or pixels.shape[2] != 3:
            raise ValueError(f"on_env_step expects pixels [R, N, 3, H, W], got {tuple(pixels.shape)}")
        device = self.projection.linear.weight.device
        pixels = pixels.to(device)
        cache = self._act_cache
        if cache is not None and cache[0].shape == pixels.shape and torch.equal(cache[0], pixels):
            feat = cache[1]
        else:
            with torch.no_grad():
                feat = self.trunk(image_input(pixels))
        self._act_cache = None
        feat, keys, pooled = self.buffer_entries(feat)
        rewards, dones = np.asarray(rewards, np.float32), np.asarray(dones, bool)
        for r, buf in enumerate(self.buffers):
            buf.add(feat[r], keys[r], pooled[r], rewards[r], dones[r])

    @torch.no_grad()
    def buffer_entries(self, feat: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trunk maps feat [R, N, C, h, w] -> what a ReturnBuffer stores of them, as numpy: the maps, the k-NN
        keys [R, N, C] (globally average-pooled, L2-normalised) and the head's pooled input [R, N, P], in float32
        whatever precision the trunk ran in (numpy and faiss have no bf16)."""
        feat = feat.float()
        keys = F.normalize(feat.mean((3, 4)), dim=-1)  # [R, N, C]
        pooled = self.head.pool_input(feat)  # [R, N, P]
        return feat.cpu().numpy(), keys.cpu().numpy(), pooled.cpu().numpy()

    def auxiliary_update(self, step: int) -> list[dict[str, float]]:
        """Every `gaze_update_every` calls: one contrastive step of every run's gaze head. Always returns
        the same keys (the latest values between updates), so a CSV logger's header fits every row."""
        if not self.contrastive:
            return [{"gaze/sigma": s} for s in self._last_sigma]
        if step % self.settings.update_every:
            return [dict(m) for m in self._metrics]
        batches = [self.mine(r) for r in range(self.runs)]
        if all(b is None for b in batches):  # no finished episode yet
            return [dict(m) for m in self._metrics]
        # the head runs once on the distinct buffer rows of every run (padded to the widest run)
        width = max(len(b.rows) for b in batches if b is not None)
        pooled = np.zeros((self.runs, width, self.buffers[0].pooled.shape[1]), np.float32)  # [R, U, P]
        for r, b in enumerate(batches):
            if b is not None:
                pooled[r, : len(b.rows)] = self.buffers[r].pooled[b.rows]
        device = self.projection.linear.weight.device
        with torch.enable_grad():
            attn, sigma, _ = self.head.from_pooled(torch.from_numpy(pooled).to(device))  # [R, U, h, w], [R, U, K, 2]
            attn = attn.flatten(2)  # [R, U, S]
            loss = torch.zeros((), device=device)
            for r, b in enumerate(batches):
                if b is None:
                    continue
                spread, spread_metrics = self.spread_loss(sigma[r], b)
                contrast, contrast_metrics = self.contrast_loss(attn[r], b)
                loss = loss + self.settings.spread_weight * spread + self.settings.contrast_weight * contrast
                self._metrics[r] = {**b.metrics, **contrast_metrics, **spread_metrics}
            # the head's own optimiser owns its parameters' gradients here: SAC's critic step (which also
            # trains the head) zeroes them before its next backward, so nothing it needs is overwritten
            self.head_optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.head.parameters()))
        self.head_optimizer.step()
        return [dict(m) for m in self._metrics]

    def mine(self, r: int) -> Triplets | None:
        """Run r's sampled anchors and return-guided triplets (None while it has no finished episode)."""
        buf, s = self.buffers[r], self.settings
        batch = sample_and_mine(buf, self.rngs[r], s.anchors, s.k, s.return_margin)
        if batch is None:
            self._metrics[r].update({"gaze/sigma": self._last_sigma[r], "gaze/buffer": float(buf.candidates().size)})
            return None
        return Triplets.gather(
            buf, batch.sampled, batch.mined, batch.margin, batch.candidates, self.projection.linear.weight.device
        )

    def spread_loss(self, sigma: torch.Tensor, batch: Triplets) -> tuple[torch.Tensor, dict[str, float]]:
        """The spread regulariser on the sampled anchors' gaze widths; sigma [U, K, 2] over the batch's rows."""
        anchor_sigma = sigma[batch.sampled]  # [N, K, 2]
        loss = spread_loss(anchor_sigma, self.settings.spread_target)
        return loss, {"gaze/spread_loss": loss.item(), "gaze/sigma": anchor_sigma.mean().item()}

    def contrast_loss(self, attn: torch.Tensor, batch: Triplets) -> tuple[torch.Tensor, dict[str, float]]:
        """The triplet loss on cosine distances of gazed stored maps; attn [U, S] over the batch's rows."""
        if not len(batch.anchor):
            return torch.zeros((), device=attn.device), {"gaze/contrast_loss": 0.0}
        a, p, n = batch.anchor, batch.positive, batch.negative
        cos_ap = gazed_cosine(attn[a], attn[p], batch.dots_ap, batch.cell_sq[a], batch.cell_sq[p])  # [T]
        cos_an = gazed_cosine(attn[a], attn[n], batch.dots_an, batch.cell_sq[a], batch.cell_sq[n])  # [T]
        loss = cosine_triplet_loss(cos_ap, cos_an, self.settings.triplet_margin)
        return loss, {"gaze/contrast_loss": loss.item()}

    def extra_state(self, run: int) -> dict[str, Any]:
        if not self.contrastive:
            return {}
        return {
            "head_optimizer": slice_state(self.head_optimizer.state_dict(), run, self.runs),
            "buffer": self.buffers[run].state_dict(),
            "rng": self.rngs[run].bit_generator.state,
        }

    def load_extra_state(self, states: list[dict[str, Any]]) -> None:
        if not self.contrastive or not any(states):
            return
        self.head_optimizer.load_state_dict(stack_states([s["head_optimizer"] for s in states]))
        for buf, rng, s in zip(self.buffers, self.rngs, states):
            buf.load_state_dict(s["buffer"])
            if "rng" in s:
                rng.bit_generator.state = s["rng"]


@register_encoder("gaze", "Gaze on the Prize")
def make_gaze(cfg: Any, image_size: int = 64, runs: int = 1) -> GazeEncoder:
    """One Gaussian, trained by RL and by return-guided contrastive learning (the paper's method)."""
    return GazeEncoder(cfg, image_size, runs, head="gaussian", components=1, contrastive=True)


@register_encoder("gaze_nocontrast", "Gaze, no contrastive loss")
def make_gaze_nocontrast(cfg: Any, image_size: int = 64, runs: int = 1) -> GazeEncoder:
    """One Gaussian trained by RL only."""
    return GazeEncoder(cfg, image_size, runs, head="gaussian", components=1, contrastive=False)


@register_encoder("gaze_patch", "Gaze, patch attention")
def make_gaze_patch(cfg: Any, image_size: int = 64, runs: int = 1) -> GazeEncoder:
    """Unconstrained per-cell attention (softmax over cells) + contrastive learning."""
    return GazeEncoder(cfg, image_size, runs, head="patch", contrastive=True)


@register_encoder("gaze_mix", "Gaze, Gaussian mixture")
def make_gaze_mix(cfg: Any, image_size: int = 64, runs: int = 1) -> GazeEncoder:
    """A mixture of max(2, gaze_components) Gaussians + contrastive learning."""
    k = max(2, gaze_config(cfg).components)
    return GazeEncoder(cfg, image_size, runs, head="gaussian", components=k, contrastive=True)
