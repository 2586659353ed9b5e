"""Replay for a pack of R runs, storing each env's trajectory once, so next_obs is simply the following slot.

Run r owns env rows r*E ... r*E + E - 1 (E envs per run), each a ring of `capacity // E` slots.
Slot t holds an observation and, once the policy has acted on it, the action, reward and terminal
flag of the transition leaving it. The transition's next observation is slot t + 1: no observation
is stored twice. When an episode ends, its final observation takes the next slot (with no action)
and the next episode's first observation the slot after it, so the last transition of every
episode is complete.

`valid[row, t]` marks slots whose transition can be sampled: an action has been stored at t and
slot t + 1 holds its successor. Writing an observation into a slot clears that slot's flag; the
only transition whose successor slot is overwritten is then the one at the overwritten slot
itself, so every valid slot's successor is always its own next observation, across episode
boundaries and ring wrap-around (the authors' release paired obs[i - 1] with action[i] and never
stored the final observation).

Sampling draws each run's indices from that run's own seeded generator, over that run's rows only,
so a run's replay stream does not depend on the runs beside it. Storage is torch tensors on
`storage` (the GPU where the buffer fits, e.g. frozen-encoder embeddings; else CPU). On the CPU they
wrap calloc'd numpy arrays, whose pages the kernel maps on first write: a buffer holds memory for
the slots written so far, not its capacity (a CNN run's 1M-slot frame buffer is ~12 GB; a run of
100k steps touches a tenth of it), and `bytes_needed(..., steps=)` says what a run of that length
holds at its end. Observation
fields keep their own dtype: uint8 frames, float32 state, float32 embeddings of a frozen encoder
(computed once per env step, never again at update time). Checkpoints stream a run's filled slots
to .npy files in chunks (`save_run`), never copying the whole buffer in memory.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.io import disk_full_error, is_disk_full

FieldSpec = dict[str, tuple[tuple[int, ...], Any]]
CHUNK_BYTES = 64 << 20  # checkpoint streaming granularity

_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(bool): torch.bool,
}


class ReplayBuffer:
    def __init__(
        self,
        fields: FieldSpec,
        action_dim: int,
        capacity: int,
        num_envs: int = 1,
        seeds: list[int] | int = 0,
        storage: torch.device | str = "cpu",
    ):
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        if capacity // num_envs < 3:
            raise ValueError(f"capacity {capacity} is too small for {num_envs} envs")
        self.runs, self.num_envs, self.slots = len(seeds), num_envs, capacity // num_envs
        self.fields = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
        self.storage = torch.device(storage)
        rows, s = self.runs * num_envs, self.slots
        zeros = lambda *shape, dtype: _zeros(shape, dtype, self.storage)  # noqa: E731
        self.obs = {k: zeros(rows, s, *shape, dtype=dtype) for k, (shape, dtype) in self.fields.items()}
        self.action = zeros(rows, s, action_dim, dtype=np.float32)
        self.reward = zeros(rows, s, dtype=np.float32)
        self.terminal = zeros(rows, s, dtype=np.float32)
        self.valid = np.zeros((rows, s), bool)  # bookkeeping stays on the host, where indices are drawn
        self.pos = np.full(rows, -1, np.int64)  # slot of each row's current observation (-1: not started)
        self.filled = np.zeros(rows, np.int64)  # slots written so far per row (<= slots)
        self.rngs = [np.random.default_rng(s) for s in seeds]
        self._rows = np.arange(rows)

    @staticmethod
    def bytes_needed(
        fields: FieldSpec,
        action_dim: int,
        capacity: int,
        runs: int,
        num_envs: int = 1,
        steps: int | None = None,
        episode_steps: int = 500,
    ) -> int:
        """Storage bytes of a buffer of `runs` runs: all of it, or (`steps` given) the slots a run of `steps`
        env-steps writes, in episodes of `episode_steps`: what a CPU buffer holds at the run's end."""
        per_slot = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in fields.values())
        slots = capacity // num_envs
        if steps is not None:  # each env: its steps, plus one slot per episode for the episode's final observation
            per_env = math.ceil(steps / num_envs)
            slots = min(slots, per_env + math.ceil(per_env / episode_steps) + 1)
        return runs * num_envs * slots * (per_slot + action_dim * 4 + 8)

    # -- writing -----------------------------------------------------------------------------
    def _put(self, rows: np.ndarray, slots: np.ndarray, obs: dict[str, Any], src: np.ndarray) -> None:
        r, s = torch.from_numpy(rows).to(self.storage), torch.from_numpy(slots).to(self.storage)
        for k in self.fields:
            value = torch.as_tensor(obs[k])
            self.obs[k][r, s] = value[torch.from_numpy(src).to(value.device)].to(self.storage, non_blocking=True)
        self.valid[rows, slots] = False
        self.filled[rows] = np.maximum(self.filled[rows], slots + 1)

    def start(self, obs: dict[str, Any]) -> None:
        """Store each row's current observation [R*E, ...] after a reset.

        A fresh buffer writes slot 0. A restored buffer (resume at an episode boundary) already
        holds that observation, without an action, in its current slot: it is written there again.
        """
        slots = np.maximum(self.pos, 0)
        self._put(self._rows, slots, obs, self._rows)
        self.pos = slots

    def add(
        self,
        action: np.ndarray,  # [R*E, A] taken in each row's current observation
        reward: np.ndarray,  # [R*E]
        terminated: np.ndarray,  # [R*E] true terminal states (no bootstrap); time limits are not terminal
        next_obs: dict[str, Any],  # [R*E, ...] observations returned by the step
        done: np.ndarray
        | None = None,  # [R*E] episode ended (terminated or truncated): next_obs is a new episode's first
        final_obs: dict[str, Any] | None = None,  # [R*E, ...] last observation of each ended episode (rows where done)
    ) -> None:
        if (self.pos < 0).any():
            raise RuntimeError("call start(obs) with the first observations before add()")
        rows, p = self._rows, self.pos
        r, s = torch.from_numpy(rows).to(self.storage), torch.from_numpy(p).to(self.storage)
        self.action[r, s] = torch.as_tensor(action, dtype=torch.float32).to(self.storage)
        self.reward[r, s] = torch.as_tensor(reward, dtype=torch.float32).to(self.storage)
        self.terminal[r, s] = torch.as_tensor(terminated, dtype=torch.float32).to(self.storage)
        self.valid[rows, p] = True
        nxt = (p + 1) % self.slots
        if done is not None and np.any(done):
            ended = np.flatnonzero(done)
            if final_obs is None:
                raise ValueError("final_obs is required where an episode ended")
            self._put(ended, nxt[ended], final_obs, ended)
            nxt = np.where(done, (nxt + 1) % self.slots, nxt)
        self._put(rows, nxt, next_obs, rows)
        self.pos = nxt

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.valid.sum())

    def _run_rows(self, run: int) -> slice:
        return slice(run * self.num_envs, (run + 1) * self.num_envs)

    def sample_indices(self, batch_size: int, run: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over run `run`'s valid transitions, from its own generator: (rows, slots)."""
        block = self._run_rows(run)
        filled, valid = self.filled[block], self.valid[block]
        total = int(filled.sum())
        if not valid.any():
            raise RuntimeError("the replay buffer holds no complete transition yet")
        bounds = np.cumsum(filled)
        rows_out, slots_out, have = [], [], 0
        while have < batch_size:
            flat = self.rngs[run].integers(0, total, size=2 * (batch_size - have) + 8)
            rows = np.searchsorted(bounds, flat, side="right")
            slots = flat - (bounds[rows] - filled[rows])
            keep = valid[rows, slots]
            rows_out.append(rows[keep])
            slots_out.append(slots[keep])
            have += int(keep.sum())
        rows = np.concatenate(rows_out)[:batch_size] + block.start
        return rows, np.concatenate(slots_out)[:batch_size]

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        """A batch of every run: obs / next_obs (dicts of [R, B, ...] tensors in stored dtype), action, reward, terminal."""
        idx = [self.sample_indices(batch_size, r) for r in range(self.runs)]
        rows = torch.from_numpy(np.stack([i[0] for i in idx])).to(self.storage)  # [R, B]
        slots = torch.from_numpy(np.stack([i[1] for i in idx])).to(self.storage)  # [R, B]
        nxt = (slots + 1) % self.slots

        def get(arr: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return arr[rows, s].to(device, non_blocking=True)

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

    def _arrays(self) -> dict[str, torch.Tensor]:
        return {
            **{f"obs.{k}": v for k, v in self.obs.items()},
            "action": self.action,
            "reward": self.reward,
            "terminal": self.terminal,
        }

    def save_run(self, run: int, folder: Path) -> dict[str, Any]:
        """Stream run `run`'s filled slots to `folder`/<array>.npy in chunks; returns the bookkeeping
        (tensors and numbers, for the checkpoint) including the bytes written.

        The files are written into a hidden `.<folder name>.tmp` beside `folder` and renamed to it
        once complete (replacing an orphan of a checkpoint cut off at this step), so `folder` is
        whole or absent. Each file's blocks are allocated before it is filled: a disk without room
        is a DiskFullError naming the file (a memory map of a sparse file would die with SIGBUS),
        and nothing of this save is left behind."""
        block = self._run_rows(run)
        n = int(self.filled[block].max())
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        written = 0
        try:
            for name, arr in self._arrays().items():
                written += _stream_to_npy(
                    arr[block, :n], tmp / f"{name}.npy", folder / f"{name}.npy"
                )  # a view: nothing copied yet
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {
            "valid": torch.from_numpy(self.valid[block, :n].copy()),
            "pos": torch.from_numpy(self.pos[block].copy()),
            "filled": torch.from_numpy(self.filled[block].copy()),
            "rng": self.rngs[run].bit_generator.state,
            "fields": sorted(self.obs),
            "bytes": written,
        }

    def load_run(self, run: int, folder: Path, meta: dict[str, Any]) -> None:
        """Restore run `run` from `save_run`'s files and bookkeeping (memory-mapped, copied in chunks)."""
        block = self._run_rows(run)
        n = meta["valid"].shape[1]
        if meta["valid"].shape[0] != self.num_envs or n > self.slots or list(meta["fields"]) != sorted(self.obs):
            raise ValueError(f"replay in {folder} does not match this buffer (envs, capacity or fields differ)")
        for name, arr in self._arrays().items():
            src = np.load(folder / f"{name}.npy", mmap_mode="r")
            step = max(1, CHUNK_BYTES // max(1, src[:, :1].nbytes))
            for t in range(0, n, step):
                end = min(t + step, n)
                arr[block, t:end] = torch.from_numpy(np.array(src[:, t:end])).to(self.storage)
        self.valid[block, :n] = meta["valid"].numpy()
        self.pos[block] = meta["pos"].numpy()
        self.filled[block] = meta["filled"].numpy()
        self.rngs[run].bit_generator.state = meta["rng"]


def _zeros(shape: tuple[int, ...], dtype: Any, storage: torch.device) -> torch.Tensor:
    """A zeroed tensor on `storage`; on the CPU over np.zeros (calloc): pages are committed when first written."""
    if storage.type == "cpu":
        return torch.from_numpy(np.zeros(shape, np.dtype(dtype)))
    return torch.zeros(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], device=storage)


#: where a container or batch system caps this process's memory (cgroup v2, then v1)
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory(limits: Sequence[str | Path] = CGROUP_MEMORY_LIMITS) -> int:
    """Bytes of RAM this process may use: the machine's, or less where a cgroup (Docker, Slurm) caps it."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in limits:
        try:
            ram = min(ram, int(Path(path).read_text().strip()))  # v2 says "max" when uncapped
        except (OSError, ValueError):
            continue
    return ram


#: share of the machine's RAM the packs running at once may fill by their last step (their processes, replay,
#: buffers, env workers)
HOST_MEMORY_SHARE = 0.85


def check_host_memory(need: int, what: str, fix: str) -> None:
    """Refuse, before anything runs, runs whose host memory (processes, replay, encoder buffers, env workers) would outgrow
    this machine's RAM: CPU buffers fill as they run, so an oversized one would otherwise be killed hours or days
    in, by the kernel."""
    ram = physical_memory()
    if need > HOST_MEMORY_SHARE * ram:
        raise ValueError(
            f"{what} would hold {need / 2**30:.1f} GiB (processes, replay, encoder buffers, env workers) by its last step, more than "
            f"{HOST_MEMORY_SHARE:.0%} of this machine's {ram / 2**30:.1f} GiB of RAM; {fix}"
        )


def remove_replays_except(run_dir: Path, keep: str) -> list[Path]:
    """Delete every `replay-<step>/` folder of `run_dir` but `keep` (the checkpoint's): the previous
    checkpoint's and orphans of a checkpoint cut off after its replay was saved (a kill, a full disk
    while writing the .pt), which no later checkpoint's step would name. Returns what was removed."""
    gone = [d for d in sorted(Path(run_dir).glob("replay-*")) if d.is_dir() and d.name != keep]
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def _stream_to_npy(part: torch.Tensor, path: Path, named: Path) -> int:
    """Write tensor `part` [rows, n, ...] to the .npy file `path` in chunks of about CHUNK_BYTES; its
    blocks are allocated first, so a full disk raises DiskFullError naming `named` (where the file
    goes). Returns the bytes of data written."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=_numpy_dtype(part.dtype), shape=tuple(part.shape))
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as err:
        del out
        if is_disk_full(err):
            raise disk_full_error(named, err, size) from err
        raise
    n = part.shape[1]
    step = max(1, CHUNK_BYTES // max(1, part[:, :1].numel() * part.element_size()))
    for t in range(0, n, step):
        out[:, t : t + step] = part[:, t : t + step].cpu().numpy()
    out.flush()
    written = out.nbytes
    del out
    return written


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return {v: k for k, v in _TORCH_DTYPES.items()}[dtype]
