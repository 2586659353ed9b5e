"""Frames for pretraining: shard folders -> uint8 tensors in memory (on the GPU when there is one).

Under torchrun each rank decodes only its share of the shards (`load_split`); the held-out episodes
are the same for every number of processes.

Batches are gathered by index from the in-memory tensors and converted with the shared
`data.preprocess.frames_to_tensor`; there is no per-sample Python work after loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.preprocess import frames_to_tensor
from data.shards import (
    ShardError,
    ShardFile,
    decode_meta,
    decode_sample,
    find_shard_folders,
    oracle_maps,
    raw_pipeline,
    read_manifest,
    verified_shards,
)


def select_folders(root: str | Path) -> list[Path]:
    """Shard folders under `root`, where a labelled folder (manifest "labelled_from") replaces its source."""
    folders = find_shard_folders(root)
    labelled: dict[str, list[Path]] = {}
    for f in folders:
        source = read_manifest(f).get("labelled_from")
        if source:
            labelled.setdefault(Path(source).name, []).append(f)
    clash = {s: fs for s, fs in labelled.items() if len(fs) > 1}
    if clash:
        s, fs = next(iter(clash.items()))
        raise ShardError(
            f"{root}: several labelled copies of {s!r} ({', '.join(map(str, fs))}); keep one or pass one folder as --data"
        )
    return [f for f in folders if f.name not in labelled]


def folder_task(folder: Path) -> str:
    """The Meta-World task of a shard folder (its manifest's "task", else the folder name)."""
    return str(read_manifest(folder).get("task") or folder.name)


@dataclass
class Frames:
    """rgb uint8 [N, H, W, 3], saliency uint8 [N, H, W] (or None), group long [N] (episode id),
    state float32 [N, 39] (the stored Meta-World states; None when not loaded), index long [N] (each
    frame's position among all frames read, the same for every rank split; None when not known)."""

    rgb: torch.Tensor
    saliency: torch.Tensor | None
    group: torch.Tensor
    state: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def subset(self, idx: torch.Tensor) -> "Frames":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Frames(self.rgb[idx], pick(self.saliency), self.group[idx], pick(self.state), pick(self.index))

    def to(self, device: torch.device | str) -> "Frames":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Frames(
            self.rgb.to(device), move(self.saliency), self.group.to(device), move(self.state), move(self.index)
        )

    def batch(
        self, idx: torch.Tensor, modalities: tuple[str, ...], size: int, device: torch.device | str
    ) -> dict[str, torch.Tensor]:
        """Indices [B] -> {modality: float32 [B, C, size, size] in [0, 1]} on `device`."""
        idx = idx.to(self.rgb.device)
        out = {"rgb": frames_to_tensor(self.rgb[idx], size=size, device=device)}
        if "saliency" in modalities:
            out["saliency"] = frames_to_tensor(self.saliency[idx][..., None], size=size, device=device)
        return out


@dataclass
class Split:
    """One rank's view of the frames under --data: `train`, its share of the training frames (those of
    the shards i with i % world == rank); `val`, every held-out frame (on rank 0 only: empty elsewhere);
    `train_counts`, the training frames of each rank; `info`, one dict per folder."""

    train: Frames
    val: Frames
    train_counts: list[int]
    info: list[dict]


def held_out(group: torch.Tensor, val_fraction: float, seed: int = 0) -> torch.Tensor:
    """Bool [N]: the frames of about `val_fraction` of the episodes (`group` ids), chosen by `seed`."""
    groups = torch.unique(group)
    n_val = int(round(len(groups) * val_fraction))
    if val_fraction > 0 and len(groups) > 1:
        n_val = min(max(n_val, 1), len(groups) - 1)
    g = torch.Generator().manual_seed(seed)
    return torch.isin(group, groups[torch.randperm(len(groups), generator=g)[:n_val]])


def _folders(root: str | Path, task: str) -> list[Path]:
    folders = select_folders(root)
    if task:
        folders = [f for f in folders if folder_task(f) == task]
        if not folders:
            raise ShardError(
                f"{root}: no shard folder of task {task!r} (found: {', '.join(sorted({folder_task(f) for f in select_folders(root)}))})"
            )
    return folders


def folder_frames(root: str | Path, task: str = "", limit: int = 0) -> list[dict]:
    """[{"folder", "frames"}] of the folders `load_split` would read, from their manifests alone (no shard opened):
    what a finished run's data.json recorded, to tell whether --data still holds the same frames."""
    counts = []
    for folder in _folders(root, task):
        frames = sum(int(s.get("frames", 0)) for s in read_manifest(folder).get("shards", []))
        counts.append({"folder": str(folder), "frames": min(frames, limit) if limit else frames})
    return counts


def _frame(raw: dict, saliency: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """rgb uint8 [H, W, 3], state float32 [39] and the saliency map uint8 [H, W] (or None) of a raw sample."""
    s = decode_sample(raw)
    sal = s.get("saliency") if saliency == "predicted" else None
    if saliency == "oracle":
        sal = np.round(oracle_maps([s["clicks"]], s["rgb"].shape[0])[0] * 255).astype(np.uint8)
    return s["rgb"], s["state"].astype(np.float32), sal


def _shards(folders: list[Path], limit: int, allow_incomplete: bool) -> list[tuple[int, ShardFile]]:
    """(folder index, shard) of every verified shard that holds one of its folder's first `limit` frames."""
    out = []
    for i, folder in enumerate(folders):
        start = 0
        for shard in verified_shards(folder, allow_incomplete):
            if not limit or start < limit:
                out.append((i, shard))
                start += shard.frames or 0
    return out


def load_split(
    root: str | Path,
    saliency: str | None,
    val_fraction: float,
    seed: int = 0,
    limit: int = 0,
    task: str = "",
    allow_incomplete: bool = False,
    rank: int = 0,
    world: int = 1,
) -> Split:
    """Read the selected folders under `root` (only those of `task`; each folder's first `limit` frames)
    for rank `rank` of `world`; `saliency` is None, 'predicted' or 'oracle'.

    Every rank reads and checks every shard and its meta.json (`data.shards.raw_pipeline`), so the
    held-out episodes (`held_out` over all of them) are the same for every world size, and a damaged
    shard stops every rank with the same error. Images are decoded only for this rank's shards
    (`shards[rank::world]`, the rule of `wds.split_by_node`) and, on rank 0, for the held-out frames.
    """
    folders = _folders(root, task)
    shards = _shards(folders, limit, allow_incomplete)
    if len(shards) < world:
        raise ShardError(
            f"{root}: {len(shards)} shard(s) for {world} processes (each process trains on its own shards); "
            "use at most as many processes as shards, or collect with a smaller --shard-size"
        )
    ordinal = {str(s.path): j for j, (_, s) in enumerate(shards)}
    group, owner, kept, sizes = [], [], {}, {}
    counts, episodes = [0] * len(folders), [{} for _ in folders]
    for raw in raw_pipeline([s for _, s in shards]):
        j = ordinal[raw["__url__"]]
        i = shards[j][0]
        if limit and counts[i] >= limit:
            continue
        if saliency == "predicted" and "saliency.png" not in raw:
            raise ShardError(
                f"{folders[i]}: frames have no saliency.png (needed for --modalities rgb,saliency with --saliency predicted). "
                f"Label them first with `python -m saliency.label --data {folders[i]}`, train with --saliency oracle "
                "(maps from the stored oracle clicks), or use --modalities rgb"
            )
        meta = decode_meta(raw)
        episode = (meta.get("shard", 0), meta.get("episode", counts[i]))
        group.append(i * 1_000_000 + episodes[i].setdefault(episode, len(episodes[i])))
        if j % world == rank or counts[i] == 0:
            kept[len(owner)] = _frame(raw, saliency)
            sizes.setdefault(i, kept[len(owner)][0].shape[:2])
        elif rank == 0:
            kept[len(owner)] = raw  # decoded below if it is held out
        owner.append(j % world)
        counts[i] += 1
    if len(set(sizes.values())) > 1:
        raise ShardError(
            f"{root}: folders hold frames of different sizes ({json.dumps([list(s) for s in sizes.values()])}); pass one size"
        )
    group_t, owner_t = torch.tensor(group), torch.tensor(owner)
    is_val = held_out(group_t, val_fraction, seed)

    like = kept[0]  # the first frame read is always decoded

    def frames(idx: torch.Tensor) -> Frames:
        decoded = [kept[k] if isinstance(kept[k], tuple) else _frame(kept[k], saliency) for k in idx.tolist()]
        rgb, state, sal = (
            None if one is None else torch.from_numpy(np.stack(col) if col else np.empty((0, *one.shape), one.dtype))
            for col, one in zip(list(zip(*decoded)) or [()] * 3, like)
        )
        return Frames(rgb, sal, group_t[idx], state, idx)

    train = frames(torch.nonzero(~is_val & (owner_t == rank)).squeeze(1))
    val = frames(torch.nonzero(is_val).squeeze(1) if rank == 0 else torch.zeros(0, dtype=torch.long))
    info = [
        {"folder": str(f), "task": folder_task(f), "frames": n, "saliency": saliency or "none"}
        for f, n in zip(folders, counts)
    ]
    return Split(train, val, torch.bincount(owner_t[~is_val], minlength=world).tolist(), info)


def load_frames(
    root: str | Path, saliency: str | None, limit: int = 0, task: str = "", allow_incomplete: bool = False
) -> tuple[Frames, list[dict]]:
    """Every frame of the selected folders under `root` (see `load_split`), states included, and one
    info dict per folder (path, task, frames, saliency source)."""
    split = load_split(root, saliency, 0.0, limit=limit, task=task, allow_incomplete=allow_incomplete)
    return split.train, split.info


def tasks_under(root: str | Path) -> list[str]:
    """The distinct tasks of the shard folders selected under `root`, sorted."""
    return sorted({folder_task(f) for f in select_folders(root)})


def split_episodes(frames: Frames, val_fraction: float, seed: int = 0) -> tuple[Frames, Frames]:
    """Hold out whole episodes (about `val_fraction` of them), so held-out frames are unseen scenes."""
    is_val = held_out(frames.group, val_fraction, seed)
    return frames.subset(torch.nonzero(~is_val).squeeze(1)), frames.subset(torch.nonzero(is_val).squeeze(1))
