"""Gaze on the Prize's return-guided contrastive data: the feature/return ring buffer, exact k-NN
triplet mining, and the losses on gazed features (see rl/gaze.py for the encoder that uses them).

k-NN search is exact: faiss's flat inner-product search on CPU, a matrix product + top-k in torch
on a GPU (where the keys are mirrored on the device), with identical results up to ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def knn_inner_product(queries: np.ndarray, keys: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of queries [A, D] against keys [N, D]: (sims [A, k], indices [A, k]).

    keys as a numpy array search with faiss on CPU; keys as a torch tensor search on its device.
    """
    if isinstance(keys, torch.Tensor):
        q = torch.from_numpy(np.ascontiguousarray(queries)).to(keys.device)
        sims, nbrs = (q @ keys.T).topk(k, dim=1)  # [A, k]
        return sims.cpu().numpy(), nbrs.cpu().numpy()
    import faiss

    # faiss has its own OpenMP pool: match torch's thread count (extra spinning threads stall shared cores)
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss.knn(queries, keys, k, metric=faiss.METRIC_INNER_PRODUCT)


class ReturnBuffer:
    """Ring buffer of detached trunk features with the return-to-go of their state.

    Entries of an episode still running have no return yet (`valid` False); when the episode ends,
    the (discounted, default undiscounted) return-to-go is written into those of its entries that
    the ring has not overwritten meanwhile.
    """

    def __init__(
        self,
        capacity: int,
        feat_shape: tuple[int, int, int],
        key_dim: int,
        pooled_dim: int,
        discount: float = 1.0,
        device: torch.device | str = "cpu",
    ):
        if capacity < 2:
            raise ValueError(f"gaze_buffer_size must be >= 2, got {capacity}")
        self.capacity, self.feat_shape, self.key_dim, self.discount = capacity, tuple(feat_shape), key_dim, discount
        c, h, w = self.feat_shape
        # np.zeros maps pages lazily: memory is committed only as the ring fills
        self.feats = np.zeros((capacity, c, h * w), np.float16)  # trunk maps, cells flattened
        self.cell_sq = np.zeros((capacity, h * w), np.float32)  # sum over channels of feats^2, per cell
        self.pooled = np.zeros((capacity, pooled_dim), np.float32)  # the gaze head's input
        self.keys = np.zeros((capacity, key_dim), np.float32)
        # on a GPU the keys are mirrored on the device, where the k-NN search runs
        self.keys_device = None if torch.device(device).type == "cpu" else torch.zeros(capacity, key_dim, device=device)
        self.returns = np.zeros(capacity, np.float32)
        self.valid = np.zeros(capacity, bool)
        self.write_id = np.full(capacity, -1, np.int64)
        self.written = 0  # entries ever written (the next write id)
        self.pending: dict[int, list[tuple[int, int, float]]] = {}  # env -> [(slot, write id, reward)]

    @staticmethod
    def bytes_needed(
        capacity: int, feat_shape: tuple[int, int, int], key_dim: int, pooled_dim: int, entries: int | None = None
    ) -> int:
        """Bytes the buffer's arrays hold once `entries` (default all `capacity`) slots are written."""
        c, h, w = feat_shape
        # feats (float16), cell_sq, pooled, keys, returns (float32), valid, write_id
        per_entry = c * h * w * 2 + h * w * 4 + pooled_dim * 4 + key_dim * 4 + 4 + 1 + 8
        return min(capacity, capacity if entries is None else entries) * per_entry

    @property
    def size(self) -> int:
        return min(self.written, self.capacity)

    def add(
        self, feats: np.ndarray, keys: np.ndarray, pooled: np.ndarray, rewards: np.ndarray, dones: np.ndarray
    ) -> None:
        """One vector-env step: feats [N, C, h, w], keys [N, D] (normalised), pooled [N, P], rewards [N], dones [N]."""
        feats16 = np.asarray(feats, np.float16).reshape(len(rewards), self.feats.shape[1], -1)  # [N, C, h*w]
        cell_sq = np.square(feats16, dtype=np.float32).sum(1)  # [N, h*w], of the stored (rounded) values
        for env in range(len(rewards)):
            slot = self.written % self.capacity
            self.feats[slot] = feats16[env]
            self.cell_sq[slot] = cell_sq[env]
            self.pooled[slot] = pooled[env]
            self.keys[slot] = keys[env]
            if self.keys_device is not None:
                self.keys_device[slot] = torch.from_numpy(keys[env])
            self.valid[slot] = False
            self.write_id[slot] = self.written
            self.pending.setdefault(env, []).append((slot, self.written, float(rewards[env])))
            self.written += 1
            if dones[env]:
                self._finish(self.pending.pop(env))

    def candidates(self) -> np.ndarray:
        """Indices of the filled entries whose return-to-go is known (their episode ended)."""
        return np.flatnonzero(self.valid[: self.size])

    def search_keys(self) -> np.ndarray | torch.Tensor:
        """The filled keys where the k-NN search runs (the device mirror on a GPU)."""
        n = self.size
        return self.keys[:n] if self.keys_device is None else self.keys_device[:n]

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
        if self.keys_device is not None:
            self.keys_device[:n] = state["keys"].to(self.keys_device.device)
        self.returns[:n] = state["returns"].numpy()
        self.valid[:n] = state["valid"].numpy()
        self.write_id[:n] = state["write_id"].numpy()
        self.written = int(state["written"])
        self.pending = {}


def mine_triplets(
    keys: np.ndarray | torch.Tensor,
    returns: np.ndarray,
    valid: np.ndarray,
    anchors: np.ndarray,
    k: int,
    return_margin: float,
) -> dict[str, np.ndarray]:
    """Return-guided triplets for `anchors` (indices into the first len(keys) buffer rows).

    keys [N, D] L2-normalised float32 (numpy: faiss on CPU; a tensor: torch on its device); returns, valid [N]. Among each anchor's k nearest
    neighbours (cosine, the anchor itself and entries without a return excluded), positives have
    return > anchor + margin, negatives < anchor - margin; the most similar of each is chosen.
    Returns anchor/positive/negative indices of the complete triplets and per-anchor has_pos/has_neg.
    """
    queries = (
        keys[anchors] if isinstance(keys, np.ndarray) else keys[torch.from_numpy(anchors).to(keys.device)].cpu().numpy()
    )
    sims, nbrs = knn_inner_product(queries, keys, min(k + 1, len(keys)))  # [A, k+1]
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


@dataclass
class MinedBatch:
    """One contrastive update's mining: sampled anchors and the triplets `mine_triplets` found among them."""

    sampled: np.ndarray  # [N] anchors drawn among the entries with a return
    mined: dict[str, np.ndarray]  # mine_triplets' output (buffer indices)
    margin: float  # the return difference that labelled positives and negatives
    candidates: int  # entries with a known return


def sample_and_mine(
    buf: ReturnBuffer, rng: np.random.Generator, anchors: int, k: int, return_margin: float
) -> MinedBatch | None:
    """What each contrastive update mines: `anchors` entries drawn without replacement among those with a
    return, their return-guided triplets among k neighbours, with margin `return_margin` (0: automatic,
    0.1 x the standard deviation of the stored returns). None while fewer than 2 entries have a return."""
    candidates = buf.candidates()
    if len(candidates) < 2:
        return None
    n = buf.size
    sampled = rng.choice(candidates, min(anchors, len(candidates)), replace=False)
    margin = return_margin or 0.1 * float(buf.returns[candidates].std())
    mined = mine_triplets(buf.search_keys(), buf.returns[:n], buf.valid[:n], sampled, k, margin)
    return MinedBatch(sampled, mined, margin, len(candidates))


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
