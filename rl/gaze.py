"""Gaze on the Prize (arXiv 2510.08442) as SAC encoders: foveal attention on the CNN feature map,
shaped by return-guided contrastive learning.

    pixels -> ConvTrunk -> F [B, 32, 11, 11] -> gaze head (pooled F -> MLP -> Gaussian params)
           -> attention A [B, 11, 11] (sums to 1) -> F * A * (11 * 11) -> Projection -> policy / critic

The critic trains trunk, head and projection as in the CNN baseline (`cnn_rgb`). Beside it, a
`ReturnBuffer` keeps detached trunk feature maps with the return-to-go of their state; each
contrastive update samples anchors, finds their k nearest neighbours by cosine similarity (FAISS
exact inner-product search on L2-normalised keys), takes the most similar neighbour whose return
is higher by more than a margin as positive and the most similar one whose return is lower as
negative, and applies a triplet loss on the *gazed* stored features (the attention recomputed by
the current head) plus a log-space spread regulariser on sigma. That loss reaches only the gaze
head: stored features are detached and the head has its own optimiser.

Choices (documented, not from the paper, which has no public code):
- The head reads the trunk map average-pooled to `gaze_pool` x `gaze_pool` cells (default 3,
  288 numbers); `gaze_pool=1` is the paper's global pooling, which is translation invariant on
  this padding-free trunk and so cannot follow an object that moves between episodes.
- The FAISS keys are the globally average-pooled trunk features, L2-normalised (32-d). Exact flat
  search cost grows with the key size, and faiss-cpu 1.15's flat search measured here ~10x slower
  at 288-d (3x3-pooled) than at 32-d (100k entries, 128 queries: ~2.7 s vs ~0.2 s on 2 loaded
  cores), which would dominate a SAC update. The buffer also stores the full map in float16, its
  per-cell squared norms and the head's pooled input (9.4 kB per entry, 0.94 GB at 100k, memory
  committed only as it fills), so that the gaze is recomputed with the current head and the
  cosine of two gazed maps comes exactly from per-cell sums (`gazed_cosine`). Search uses `faiss.knn` with METRIC_INNER_PRODUCT over the
  key array in place: the same exact flat search as IndexFlatIP.search, without re-adding the
  ring buffer's overwritten rows to an index.
- The attention map sums to 1 over the grid and is multiplied by the number of cells, so a uniform
  gaze leaves the features unchanged and the initial (wide) gaze keeps the baseline's scale.
- `gaze_return_margin = 0` means automatic: 0.1 x the standard deviation of stored returns
  (0 when all returns are equal, so constant returns mine nothing).

Encoders registered here: `gaze` (1 Gaussian + contrastive), `gaze_nocontrast` (1 Gaussian, RL
only), `gaze_patch` (softmax over cells instead of a Gaussian, + contrastive; its spread term acts
on the map's spatial standard deviation), `gaze_mix` (mixture of max(2, gaze_components)
Gaussians + contrastive).
"""
from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.preprocess import frames_to_tensor
from rl.encoders import ConvTrunk, Encoder, Projection, register_encoder

#: defaults of the flat gaze_* fields of SACConfig (read with getattr so any config object works)
GAZE_DEFAULTS: dict[str, Any] = {
    "gaze_components": 1,
    "gaze_contrast_weight": 0.1,
    "gaze_spread_weight": 0.01,
    "gaze_k": 16,
    "gaze_triplet_margin": 0.2,
    "gaze_return_margin": 0.0,
    "gaze_buffer_size": 100_000,
    "gaze_update_every": 1,
    "gaze_anchors": 128,
    "gaze_return_discount": 1.0,
    "gaze_sigma_floor": 0.15,
    "gaze_spread_target": 0.5,
    "gaze_pool": 3,
    "gaze_lr": 1e-4,
}


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


def gaze_setting(cfg: Any, name: str) -> Any:
    """`cfg.<name>` if the config has it, else this module's default."""
    return getattr(cfg, name, GAZE_DEFAULTS[name]) if cfg is not None else GAZE_DEFAULTS[name]


def image_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W] in [0, 1] through the one preprocessing function."""
    return frames_to_tensor(pixels.permute(0, 2, 3, 1))


def grid_coords(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres on [-1, 1]: x [1, 1, W] (columns), y [1, H, 1] (rows)."""
    xs = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, width)
    ys = torch.linspace(-1.0, 1.0, height, device=device).view(1, height, 1)
    return xs, ys


def gaussian_map(
    mu: torch.Tensor, sigma: torch.Tensor, rho: torch.Tensor, height: int, width: int
) -> torch.Tensor:
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
    """Spatial standard deviation (x, y) of attention maps [B, H, W] on the [-1, 1] grid -> [B, 2]."""
    xs, ys = grid_coords(attn.shape[-2], attn.shape[-1], attn.device)
    px, py = attn.sum(1), attn.sum(2)  # [B, W], [B, H]
    mx, my = (px * xs[0]).sum(1), (py * ys[0, :, 0]).sum(1)
    vx = (px * (xs[0] - mx[:, None]) ** 2).sum(1)
    vy = (py * (ys[0, :, 0] - my[:, None]) ** 2).sum(1)
    return torch.stack([vx, vy], 1).clamp_min(1e-12).sqrt()


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


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
    ):
        super().__init__()
        if sigma_init <= sigma_floor:
            raise ValueError(f"sigma_init {sigma_init} must exceed gaze_sigma_floor {sigma_floor}")
        self.grid, self.components, self.pool, self.sigma_floor = grid, components, pool, sigma_floor
        out = 5 * components + (components if components > 1 else 0)
        self.mlp = nn.Sequential(nn.Linear(channels * pool * pool, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))
        last = self.mlp[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            bias = torch.zeros(out)
            params = bias[: 5 * components].view(components, 5)
            if components > 1:  # spread the initial means on a circle of radius 0.4 to break symmetry
                angle = torch.arange(components) * (2 * math.pi / components)
                params[:, 0] = torch.atanh(0.4 * torch.cos(angle))
                params[:, 1] = torch.atanh(0.4 * torch.sin(angle))
            params[:, 2:4] = _inverse_softplus(sigma_init - sigma_floor)
            last.bias.copy_(bias)

    def pool_input(self, feat: torch.Tensor) -> torch.Tensor:
        """feat [B, C, h, w] -> the head's input [B, C*pool*pool]."""
        return F.adaptive_avg_pool2d(feat, self.pool).flatten(1)

    def params(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """pooled [B, C*pool*pool] -> mu [B, K, 2], sigma [B, K, 2], rho [B, K], weight [B, K]."""
        out = self.mlp(pooled)  # [B, 5K (+K)]
        k = self.components
        p = out[:, : 5 * k].view(-1, k, 5)  # [B, K, 5]
        weight = torch.softmax(out[:, 5 * k :], 1) if k > 1 else out.new_ones(out.shape[0], 1)
        return {
            "mu": torch.tanh(p[..., 0:2]),
            "sigma": F.softplus(p[..., 2:4]) + self.sigma_floor,
            "rho": 0.95 * torch.tanh(p[..., 4]),
            "weight": weight,
        }

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """feat [B, C, h, w] -> attention [B, h, w] (sums to 1), sigma [B, K, 2] (for the spread term), params."""
        return self.from_pooled(self.pool_input(feat))

    def from_pooled(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params(pooled)
        maps = gaussian_map(p["mu"], p["sigma"], p["rho"], *self.grid)  # [B, K, h, w]
        attn = (p["weight"][..., None, None] * maps).sum(1)  # [B, h, w]
        return attn, p["sigma"], p


class PatchGazeHead(nn.Module):
    """The patch-attention ablation: pooled features -> MLP -> one logit per cell -> softmax over
    cells. Starts uniform. Its 'sigma' is the map's spatial standard deviation."""

    def __init__(self, channels: int, grid: tuple[int, int], pool: int = 3, hidden: int = 64):
        super().__init__()
        self.grid, self.pool = grid, pool
        self.mlp = nn.Sequential(
            nn.Linear(channels * pool * pool, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, grid[0] * grid[1])
        )
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)
        nn.init.zeros_(self.mlp[-1].bias)

    def pool_input(self, feat: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(feat, self.pool).flatten(1)  # [B, C*pool*pool]

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.from_pooled(self.pool_input(feat))

    def from_pooled(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        attn = torch.softmax(self.mlp(pooled), 1).view(-1, *self.grid)  # [B, h, w]
        sigma = map_spread(attn)[:, None]  # [B, 1, 2]
        return attn, sigma, {}


class ReturnBuffer:
    """Ring buffer of detached trunk features with the return-to-go of their state.

    Entries of an episode still running have no return yet (`valid` False); when the episode ends,
    the (discounted, default undiscounted) return-to-go is written into those of its entries that
    the ring has not overwritten meanwhile.
    """

    def __init__(self, capacity: int, feat_shape: tuple[int, int, int], key_dim: int, pooled_dim: int, discount: float = 1.0):
        if capacity < 2:
            raise ValueError(f"gaze_buffer_size must be >= 2, got {capacity}")
        self.capacity, self.feat_shape, self.key_dim, self.discount = capacity, tuple(feat_shape), key_dim, discount
        c, h, w = self.feat_shape
        # np.zeros maps pages lazily: memory is committed only as the ring fills
        self.feats = np.zeros((capacity, c, h * w), np.float16)  # trunk maps, cells flattened
        self.cell_sq = np.zeros((capacity, h * w), np.float32)  # sum over channels of feats^2, per cell
        self.pooled = np.zeros((capacity, pooled_dim), np.float32)  # the gaze head's input
        self.keys = np.zeros((capacity, key_dim), np.float32)
        self.returns = np.zeros(capacity, np.float32)
        self.valid = np.zeros(capacity, bool)
        self.write_id = np.full(capacity, -1, np.int64)
        self.written = 0  # entries ever written (the next write id)
        self.pending: dict[int, list[tuple[int, int, float]]] = {}  # env -> [(slot, write id, reward)]

    @property
    def size(self) -> int:
        return min(self.written, self.capacity)

    def add(self, feats: np.ndarray, keys: np.ndarray, pooled: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        """One vector-env step: feats [N, C, h, w], keys [N, D] (normalised), pooled [N, P], rewards [N], dones [N]."""
        feats16 = np.asarray(feats, np.float16).reshape(len(rewards), self.feats.shape[1], -1)  # [N, C, h*w]
        cell_sq = np.square(feats16, dtype=np.float32).sum(1)  # [N, h*w], of the stored (rounded) values
        for env in range(len(rewards)):
            slot = self.written % self.capacity
            self.feats[slot] = feats16[env]
            self.cell_sq[slot] = cell_sq[env]
            self.pooled[slot] = pooled[env]
            self.keys[slot] = keys[env]
            self.valid[slot] = False
            self.write_id[slot] = self.written
            self.pending.setdefault(env, []).append((slot, self.written, float(rewards[env])))
            self.written += 1
            if dones[env]:
                self._finish(self.pending.pop(env))

    def _finish(self, episode: list[tuple[int, int, float]]) -> None:
        ret = 0.0
        for slot, wid, reward in reversed(episode):
            ret = reward + self.discount * ret
            if self.write_id[slot] == wid:
                self.returns[slot] = ret
                self.valid[slot] = True

    def state_dict(self) -> dict[str, Any]:
        """Filled part as tensors (episodes still running are not kept: they restart on resume)."""
        n = self.size
        return {
            "feats": torch.from_numpy(self.feats[:n].copy()),
            "pooled": torch.from_numpy(self.pooled[:n].copy()),
            "keys": torch.from_numpy(self.keys[:n].copy()),
            "returns": torch.from_numpy(self.returns[:n].copy()),
            "valid": torch.from_numpy(self.valid[:n].copy()),
            "write_id": torch.from_numpy(self.write_id[:n].copy()),
            "written": self.written,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["feats"].shape[0]
        if n > self.capacity or tuple(state["feats"].shape[1:]) != self.feats.shape[1:]:
            raise ValueError(
                f"gaze buffer checkpoint holds {tuple(state['feats'].shape)}, this encoder expects at most "
                f"({self.capacity}, {self.feats.shape[1:]}): resume with the same gaze_buffer_size and image size"
            )
        self.feats[:n] = state["feats"].numpy()
        self.cell_sq[:n] = np.square(self.feats[:n], dtype=np.float32).sum(1)
        self.pooled[:n] = state["pooled"].numpy()
        self.keys[:n] = state["keys"].numpy()
        self.returns[:n] = state["returns"].numpy()
        self.valid[:n] = state["valid"].numpy()
        self.write_id[:n] = state["write_id"].numpy()
        self.written = int(state["written"])
        self.pending = {}


def mine_triplets(
    keys: np.ndarray,
    returns: np.ndarray,
    valid: np.ndarray,
    anchors: np.ndarray,
    k: int,
    return_margin: float,
) -> dict[str, np.ndarray]:
    """Return-guided triplets for `anchors` (indices into the first len(keys) buffer rows).

    keys [N, D] L2-normalised float32; returns, valid [N]. Among each anchor's k nearest
    neighbours (cosine, the anchor itself and entries without a return excluded), positives have
    return > anchor + margin, negatives < anchor - margin; the most similar of each is chosen.
    Returns anchor/positive/negative indices of the complete triplets and per-anchor has_pos/has_neg.
    """
    sims, nbrs = faiss.knn(keys[anchors], keys, min(k + 1, len(keys)), metric=faiss.METRIC_INNER_PRODUCT)  # [A, k+1]
    ok = (nbrs >= 0) & (nbrs != anchors[:, None])
    ok &= valid[np.where(ok, nbrs, 0)]
    r_anchor = returns[anchors][:, None]
    r_nbr = returns[np.where(ok, nbrs, 0)]
    pos = ok & (r_nbr > r_anchor + return_margin)  # [A, k+1]
    neg = ok & (r_nbr < r_anchor - return_margin)
    best_pos = np.where(pos, sims, -np.inf).argmax(1)
    best_neg = np.where(neg, sims, -np.inf).argmax(1)
    has_pos, has_neg = pos.any(1), neg.any(1)
    both = has_pos & has_neg
    rows = np.flatnonzero(both)
    return {
        "anchor": anchors[rows],
        "positive": nbrs[rows, best_pos[rows]],
        "negative": nbrs[rows, best_neg[rows]],
        "has_pos": has_pos,
        "has_neg": has_neg,
    }


def gazed_cosine(
    attn_a: torch.Tensor, attn_b: torch.Tensor, dots: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor
) -> torch.Tensor:
    """Cosine similarity of gazed maps flatten(F_a * A_a) and flatten(F_b * A_b), from per-cell sums.

    attn_*: [T, S] attention over the S cells; dots: [T, S] sum over channels of F_a * F_b;
    sq_*: [T, S] sum over channels of F^2. Exact, and ~C times cheaper than on [T, C*S] maps
    (the attention is shared by all channels of a cell). Returns [T].
    """
    num = (attn_a * attn_b * dots).sum(1)
    den = ((attn_a**2 * sq_a).sum(1) * (attn_b**2 * sq_b).sum(1)).sqrt().clamp_min(1e-12)
    return num / den


def cosine_triplet_loss(cos_ap: torch.Tensor, cos_an: torch.Tensor, margin: float) -> torch.Tensor:
    """mean max(0, d(a, p) - d(a, n) + margin) with cosine distance d = 1 - cos; cos_* [T]."""
    return F.relu((1 - cos_ap) - (1 - cos_an) + margin).mean()


def spread_loss(sigma: torch.Tensor, target: float) -> torch.Tensor:
    """mean over samples/components of (log sx - log s0)^2 + (log sy - log s0)^2; sigma [B, K, 2]."""
    return ((sigma.log() - math.log(target)) ** 2).sum(-1).mean()


class GazeEncoder(Encoder):
    """ConvTrunk -> gaze head -> attention-weighted feature map -> Projection (see module doc)."""

    obs_keys = ("pixels",)

    def __init__(self, cfg: Any, image_size: int, state_dim: int, head: str = "gaussian", components: int = 1, contrastive: bool = True):
        super().__init__()
        self.trunk = ConvTrunk(3)
        c, h, w = self.trunk.feature_shape(image_size)
        self.feat_shape, self.grid = (c, h, w), (h, w)
        pool = int(gaze_setting(cfg, "gaze_pool"))
        if head == "gaussian":
            self.head = GaussianGazeHead(c, self.grid, components, pool, float(gaze_setting(cfg, "gaze_sigma_floor")))
        elif head == "patch":
            self.head = PatchGazeHead(c, self.grid, pool)
        else:
            raise ValueError(f"unknown gaze head {head!r}: use 'gaussian' or 'patch'")
        self.out_dim = int(getattr(cfg, "feature_dim", 100))
        self.projection = Projection(c * h * w, self.out_dim)
        self.contrastive = contrastive
        self.settings = {name: gaze_setting(cfg, name) for name in GAZE_DEFAULTS}
        self._check_settings()
        self._last_sigma = float("nan")
        self._act_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._metrics = dict.fromkeys(METRIC_KEYS, 0.0) | {"gaze/sigma": float("nan")}
        if contrastive:
            self.buffer = ReturnBuffer(
                int(self.settings["gaze_buffer_size"]), self.feat_shape, c, c * pool * pool,
                float(self.settings["gaze_return_discount"]),
            )
            self.rng = np.random.default_rng(int(getattr(cfg, "seed", 0)) + 7919)
            self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=float(self.settings["gaze_lr"]))

    def _check_settings(self) -> None:
        c = self.settings
        checks = [
            ("gaze_k", c["gaze_k"] >= 1, ">= 1"),
            ("gaze_anchors", c["gaze_anchors"] >= 1, ">= 1"),
            ("gaze_update_every", c["gaze_update_every"] >= 1, ">= 1"),
            ("gaze_return_discount", 0 < c["gaze_return_discount"] <= 1, "in (0, 1]"),
            ("gaze_sigma_floor", c["gaze_sigma_floor"] > 0, "> 0"),
            ("gaze_spread_target", c["gaze_spread_target"] > 0, "> 0"),
            ("gaze_return_margin", c["gaze_return_margin"] >= 0, ">= 0 (0 = automatic)"),
            ("gaze_pool", c["gaze_pool"] >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be {rule}, got {c[name]}")

    # -- forward ---------------------------------------------------------------------------------
    def gaze(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feat [B, C, h, w] -> gazed features [B, C*h*w], attention [B, h, w], sigma [B, K, 2]."""
        attn, sigma, _ = self.head(feat)
        gazed = feat * (attn * (self.grid[0] * self.grid[1]))[:, None]  # [B, C, h, w]
        return gazed.flatten(1), attn, sigma

    def forward(self, obs: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:  # [B, out_dim]
        """detach=True stops gradients at the gazed features (trunk and head), as `cnn_rgb` does at its
        trunk output: the projection still trains, the attention does not."""
        pixels = obs["pixels"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            feat = self.trunk(image_input(pixels))  # [B, C, h, w]
            gazed, _, sigma = self.gaze(feat)  # [B, C*h*w]
        if not gazed.requires_grad:
            self._last_sigma = float(sigma.mean())
            if self.contrastive and pixels.shape[0] <= 64:  # acting: on_env_step can reuse these features
                self._act_cache = (pixels, feat)
        return self.projection(gazed)

    @torch.no_grad()
    def attention(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """For pictures: uint8 pixels [B, 3, H, W] -> attention [B, h, w] and the head's parameters."""
        feat = self.trunk(image_input(pixels))
        attn, sigma, params = self.head(feat)
        return {"attention": attn, "sigma": sigma, **params}

    # -- contrastive learning --------------------------------------------------------------------
    def _keys(self, feat: torch.Tensor) -> torch.Tensor:
        return F.normalize(feat.mean((2, 3)), dim=1)  # [B, C]

    def on_env_step(self, obs: dict[str, np.ndarray], rewards: np.ndarray, dones: np.ndarray) -> None:
        if not self.contrastive:
            return
        pixels = torch.as_tensor(np.asarray(obs["pixels"]))
        if pixels.ndim != 4 or 3 not in (pixels.shape[1], pixels.shape[-1]):
            raise ValueError(f"on_env_step expects pixels [N, 3, H, W] or [N, H, W, 3], got {tuple(pixels.shape)}")
        if pixels.shape[1] != 3:
            pixels = pixels.permute(0, 3, 1, 2)
        device = next(self.parameters()).device
        cache = self._act_cache
        if cache is not None and cache[0].shape == pixels.shape and torch.equal(cache[0].cpu(), pixels):
            feat = cache[1]
        else:
            with torch.no_grad():
                feat = self.trunk(image_input(pixels.to(device)))
        self._act_cache = None
        with torch.no_grad():
            keys, pooled = self._keys(feat), self.head.pool_input(feat)
        self.buffer.add(
            feat.cpu().numpy(), keys.cpu().numpy(), pooled.cpu().numpy(),
            np.asarray(rewards, np.float32), np.asarray(dones, bool),
        )

    def auxiliary_update(self, step: int) -> dict[str, float]:
        """Every `gaze_update_every` calls: one contrastive step of the gaze head. Always returns the same
        keys (the latest values between updates), so a CSV logger's header fits every row."""
        if not self.contrastive:
            return {"gaze/sigma": self._last_sigma}
        if step % int(self.settings["gaze_update_every"]):
            return dict(self._metrics)
        buf = self.buffer
        n = buf.size
        valid = buf.valid[:n]
        candidates = np.flatnonzero(valid)
        if len(candidates) < 2:  # no finished episode yet
            self._metrics.update({"gaze/sigma": self._last_sigma, "gaze/buffer": float(len(candidates))})
            return dict(self._metrics)
        anchors = self.rng.choice(candidates, min(int(self.settings["gaze_anchors"]), len(candidates)), replace=False)
        margin = float(self.settings["gaze_return_margin"]) or 0.1 * float(buf.returns[:n][valid].std())
        # faiss has its own OpenMP pool: match torch's thread count (extra spinning threads stall shared cores)
        faiss.omp_set_num_threads(torch.get_num_threads())
        mined = mine_triplets(buf.keys[:n], buf.returns[:n], valid, anchors, int(self.settings["gaze_k"]), margin)
        n_trip = len(mined["anchor"])
        device = next(self.parameters()).device
        # the head runs once per distinct entry: anchors (spread term) and the triplets' positives/negatives
        rows, inverse = np.unique(np.concatenate([anchors, mined["positive"], mined["negative"]]), return_inverse=True)
        at = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        slot = dict(zip(rows.tolist(), range(len(rows))))
        i_a = at(np.array([slot[i] for i in mined["anchor"]], np.int64))
        i_p, i_n = at(inverse[len(anchors) : len(anchors) + n_trip]), at(inverse[len(anchors) + n_trip :])
        params = list(self.head.parameters())
        with torch.enable_grad():
            attn, sigma, _ = self.head.from_pooled(at(buf.pooled[rows]))  # [U, h, w], [U, K, 2]
            attn = attn.flatten(1)  # [U, S]
            spread = spread_loss(sigma[at(inverse[: len(anchors)])], float(self.settings["gaze_spread_target"]))
            loss = float(self.settings["gaze_spread_weight"]) * spread
            if n_trip:
                fa, fp, fn = (buf.feats[mined[k]].astype(np.float32) for k in ("anchor", "positive", "negative"))
                dots_ap, dots_an = at((fa * fp).sum(1)), at((fa * fn).sum(1))  # [T, S]
                sq = at(buf.cell_sq[rows])  # [U, S]
                cos_ap = gazed_cosine(attn[i_a], attn[i_p], dots_ap, sq[i_a], sq[i_p])
                cos_an = gazed_cosine(attn[i_a], attn[i_n], dots_an, sq[i_a], sq[i_n])
                triplet = cosine_triplet_loss(cos_ap, cos_an, float(self.settings["gaze_triplet_margin"]))
                loss = loss + float(self.settings["gaze_contrast_weight"]) * triplet
            grads = torch.autograd.grad(loss, params)
        # step the head's own optimiser without touching .grad that the SAC optimisers may hold
        saved = [p.grad for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        self.head_optimizer.step()
        for p, g in zip(params, saved):
            p.grad = g
        self._metrics = {
            "gaze/buffer": float(len(candidates)),
            "gaze/triplets": float(n_trip),
            "gaze/pos_frac": float(mined["has_pos"].mean()),
            "gaze/neg_frac": float(mined["has_neg"].mean()),
            "gaze/contrast_loss": triplet.item() if n_trip else 0.0,
            "gaze/spread_loss": spread.item(),
            "gaze/sigma": sigma[at(inverse[: len(anchors)])].mean().item(),
            "gaze/return_margin": margin,
        }
        return dict(self._metrics)

    def extra_state(self) -> dict[str, Any]:
        if not self.contrastive:
            return {}
        return {"head_optimizer": self.head_optimizer.state_dict(), "buffer": self.buffer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.contrastive and state:
            self.head_optimizer.load_state_dict(state["head_optimizer"])
            self.buffer.load_state_dict(state["buffer"])


@register_encoder("gaze")
def make_gaze(cfg: Any, image_size: int, state_dim: int) -> GazeEncoder:
    """One Gaussian, trained by RL and by return-guided contrastive learning (the paper's method)."""
    return GazeEncoder(cfg, image_size, state_dim, head="gaussian", components=1, contrastive=True)


@register_encoder("gaze_nocontrast")
def make_gaze_nocontrast(cfg: Any, image_size: int, state_dim: int) -> GazeEncoder:
    """One Gaussian trained by RL only."""
    return GazeEncoder(cfg, image_size, state_dim, head="gaussian", components=1, contrastive=False)


@register_encoder("gaze_patch")
def make_gaze_patch(cfg: Any, image_size: int, state_dim: int) -> GazeEncoder:
    """Unconstrained per-cell attention (softmax over cells) + contrastive learning."""
    return GazeEncoder(cfg, image_size, state_dim, head="patch", contrastive=True)


@register_encoder("gaze_mix")
def make_gaze_mix(cfg: Any, image_size: int, state_dim: int) -> GazeEncoder:
    """A mixture of max(2, gaze_components) Gaussians + contrastive learning."""
    k = max(2, int(gaze_setting(cfg, "gaze_components")))
    return GazeEncoder(cfg, image_size, state_dim, head="gaussian", components=k, contrastive=True)
