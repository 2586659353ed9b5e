"""Replay buffer storing each env's trajectory once, so next_obs is simply the following slot.

Every env e has its own ring of `capacity // num_envs` slots. Slot t holds an observation and,
once the policy has acted on it, the action, reward and terminal flag of the transition leaving
it. The transition's next observation is slot t + 1: no observation is stored twice. When an
episode ends, its final observation takes the next slot (with no action) and the next episode's
first observation the slot after it, so the last transition of every episode is complete.

`valid[e, t]` marks slots whose transition can be sampled: an action has been stored at t and
slot t + 1 holds its successor. Writing an observation into a slot clears that slot's flag; the
only transition whose successor slot is overwritten is then the one at the overwritten slot
itself, so every valid slot's successor is always its own next observation, across episode
boundaries and ring wrap-around (the authors' release paired obs[i - 1] with action[i] and never
stored the final observation).

Observation fields are stored in their own dtype: uint8 frames, float32 state, or float16
embeddings of a frozen encoder (computed once per env step, never again at update time).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

FieldSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


class ReplayBuffer:
    def __init__(self, fields: FieldSpec, action_dim: int, capacity: int, num_envs: int = 1, seed: int = 0):
        if capacity // num_envs < 3:
            raise ValueError(f"capacity {capacity} is too small for {num_envs} envs")
        self.num_envs, self.slots = num_envs, capacity // num_envs
        self.fields = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
        e, s = num_envs, self.slots
        self.obs = {k: np.zeros((e, s, *shape), dtype) for k, (shape, dtype) in self.fields.items()}
        self.action = np.zeros((e, s, action_dim), np.float32)
        self.reward = np.zeros((e, s), np.float32)
        self.terminal = np.zeros((e, s), np.float32)
        self.valid = np.zeros((e, s), bool)
        self.pos = np.full(e, -1, np.int64)  # slot of each env's current observation (-1: not started)
        self.filled = np.zeros(e, np.int64)  # slots written so far per env (<= slots)
        self.rng = np.random.default_rng(seed)
        self._rows = np.arange(e)

    # -- writing -----------------------------------------------------------------------------
    def _write_obs(self, rows: np.ndarray, slots: np.ndarray, obs: dict[str, np.ndarray], src: np.ndarray) -> None:
        for k in self.fields:
            self.obs[k][rows, slots] = obs[k][src]
        self.valid[rows, slots] = False
        self.filled[rows] = np.maximum(self.filled[rows], slots + 1)

    def start(self, obs: dict[str, np.ndarray]) -> None:
        """Store each env's current observation after a reset.

        A fresh buffer writes slot 0. A restored buffer (resume at an episode boundary) already
        holds that observation, without an action, in its current slot: it is written there again.
        """
        slots = np.maximum(self.pos, 0)
        self._write_obs(self._rows, slots, obs, self._rows)
        self.pos = slots

    def add(
        self,
        action: np.ndarray,  # [E, A] taken in each env's current observation
        reward: np.ndarray,  # [E]
        terminated: np.ndarray,  # [E] true terminal states (no bootstrap); time limits are not terminal
        next_obs: dict[str, np.ndarray],  # [E, ...] observations returned by the step
        done: np.ndarray | None = None,  # [E] episode ended (terminated or truncated): next_obs is a new episode's first
        final_obs: dict[str, np.ndarray] | None = None,  # [E, ...] last observation of each ended episode (rows where done)
    ) -> None:
        if (self.pos < 0).any():
            raise RuntimeError("call start(obs) with the first observations before add()")
        rows, p = self._rows, self.pos
        self.action[rows, p] = action
        self.reward[rows, p] = reward
        self.terminal[rows, p] = terminated
        self.valid[rows, p] = True
        nxt = (p + 1) % self.slots
        if done is not None and np.any(done):
            ended = np.flatnonzero(done)
            if final_obs is None:
                raise ValueError("final_obs is required where an episode ended")
            self._write_obs(ended, nxt[ended], final_obs, ended)
            nxt = np.where(done, (nxt + 1) % self.slots, nxt)
        self._write_obs(rows, nxt, next_obs, rows)
        self.pos = nxt

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.valid.sum())

    def sample_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over valid transitions: (env rows, slots)."""
        total = int(self.filled.sum())
        if not self.valid.any():
            raise RuntimeError("the replay buffer holds no complete transition yet")
        bounds = np.cumsum(self.filled)
        rows_out, slots_out, have = [], [], 0
        while have < batch_size:
            flat = self.rng.integers(0, total, size=2 * (batch_size - have) + 8)
            rows = np.searchsorted(bounds, flat, side="right")
            slots = flat - (bounds[rows] - self.filled[rows])
            keep = self.valid[rows, slots]
            rows_out.append(rows[keep])
            slots_out.append(slots[keep])
            have += int(keep.sum())
        return np.concatenate(rows_out)[:batch_size], np.concatenate(slots_out)[:batch_size]

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        """A batch: obs / next_obs (dicts of tensors in stored dtype), action, reward, terminal."""
        rows, slots = self.sample_indices(batch_size)
        nxt = (slots + 1) % self.slots

        def get(arr: np.ndarray, s: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(arr[rows, s]).to(device, non_blocking=True)

        return {
            "obs": {k: get(v, slots) for k, v in self.obs.items()},
            "action": get(self.action, slots),
            "reward": get(self.reward, slots),
            "terminal": get(self.terminal, slots),
            "next_obs": {k: get(v, nxt) for k, v in self.obs.items()},
        }

    # -- size and checkpoints -------------------------------------------------------------------
    def bytes_per_slot(self) -> int:
        """Bytes one stored transition occupies (its observation, action, reward, flags)."""
        obs = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.fields.values())
        return obs + self.action.shape[-1] * 4 + 4 + 4 + 1

    def state_dict(self) -> dict[str, Any]:
        n = int(self.filled.max())
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :n]))  # noqa: E731
        return {
            "obs": {k: t(v) for k, v in self.obs.items()},
            "action": t(self.action), "reward": t(self.reward), "terminal": t(self.terminal), "valid": t(self.valid),
            "pos": torch.from_numpy(self.pos.copy()), "filled": torch.from_numpy(self.filled.copy()),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["valid"].shape[1]
        if state["valid"].shape[0] != self.num_envs or n > self.slots or set(state["obs"]) != set(self.obs):
            raise ValueError("replay state does not match this buffer (envs, capacity or fields differ)")
        for k, v in state["obs"].items():
            self.obs[k][:, :n] = v.numpy()
        for name in ("action", "reward", "terminal", "valid"):
            getattr(self, name)[:, :n] = state[name].numpy()
        self.pos = state["pos"].numpy().copy()
        self.filled = state["filled"].numpy().copy()
        self.rng.bit_generator.state = state["rng"]
