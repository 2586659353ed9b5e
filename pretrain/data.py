"""Frames for pretraining: shard folders -> uint8 tensors in memory (on the GPU when there is one).

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
from data.shards import ShardError, find_shard_folders, load_arrays, oracle_maps, read_manifest


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
        raise ShardError(f"{root}: several labelled copies of {s!r} ({', '.join(map(str, fs))}); keep one or pass one folder as --data")
    return [f for f in folders if f.name not in labelled]


def folder_task(folder: Path) -> str:
    """The Meta-World task of a shard folder (its manifest's "task", else the folder name)."""
    return str(read_manifest(folder).get("task") or folder.name)


@dataclass
class Frames:
    """rgb uint8 [N, H, W, 3], saliency uint8 [N, H, W] (or None), group long [N] (episode id),
    state float32 [N, 39] (the stored Meta-World states; None when not loaded)."""

    rgb: torch.Tensor
    saliency: torch.Tensor | None
    group: torch.Tensor
    state: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def subset(self, idx: torch.Tensor) -> "Frames":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Frames(self.rgb[idx], pick(self.saliency), self.group[idx], pick(self.state))

    def to(self, device: torch.device | str) -> "Frames":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Frames(self.rgb.to(device), move(self.saliency), self.group.to(device), move(self.state))

    def batch(self, idx: torch.Tensor, modalities: tuple[str, ...], size: int, device: torch.device | str) -> dict[str, torch.Tensor]:
        """Indices [B] -> {modality: float32 [B, C, size, size] in [0, 1]} on `device`."""
        idx = idx.to(self.rgb.device)
        out = {"rgb": frames_to_tensor(self.rgb[idx], size=size, device=device)}
        if "saliency" in modalities:
            out["saliency"] = frames_to_tensor(self.saliency[idx][..., None], size=size, device=device)
        return out


def load_frames(root: str | Path, saliency: str | None, limit: int = 0, task: str = "",
                allow_incomplete: bool = False) -> tuple[Frames, list[dict]]:
    """Load every selected folder under `root` (only those of `task` when given); `saliency` is None,
    'predicted' or 'oracle'.

    Returns the frames (states included) and one info dict per folder (path, task, frames, saliency source).
    """
    rgbs, sals, groups, states, info = [], [], [], [], []
    folders = select_folders(root)
    if task:
        folders = [f for f in folders if folder_task(f) == task]
        if not folders:
            raise ShardError(f"{root}: no shard folder of task {task!r} (found: {', '.join(sorted({folder_task(f) for f in select_folders(root)}))})")
    for i, folder in enumerate(folders):
        try:
            arrays = load_arrays(folder, limit=limit or None, need_saliency=saliency == "predicted",
                                 allow_incomplete=allow_incomplete)
        except ShardError as err:
            if saliency == "predicted" and "saliency" in str(err):
                raise ShardError(
                    f"{folder}: frames have no saliency.png (needed for --modalities rgb,saliency with --saliency predicted). "
                    f"Label them first with `python -m saliency.label --data {folder}`, train with --saliency oracle "
                    "(maps from the stored oracle clicks), or use --modalities rgb"
                ) from err
            raise
        n, h = arrays["rgb"].shape[0], arrays["rgb"].shape[1]
        rgbs.append(torch.from_numpy(arrays["rgb"]))
        states.append(torch.from_numpy(arrays["state"]).float())
        if saliency == "predicted":
            sals.append(torch.from_numpy(arrays["saliency"]))
        elif saliency == "oracle":
            sals.append(torch.from_numpy(np.round(oracle_maps(arrays["clicks"], h) * 255).astype(np.uint8)))
        episodes = [(m.get("shard", 0), m.get("episode", j)) for j, m in enumerate(arrays["meta"])]
        ids = {e: k for k, e in enumerate(dict.fromkeys(episodes))}
        groups.append(torch.tensor([i * 1_000_000 + ids[e] for e in episodes]))
        info.append({"folder": str(folder), "task": folder_task(folder), "frames": n, "saliency": saliency or "none"})
    if len({tuple(r.shape[1:]) for r in rgbs}) > 1:
        raise ShardError(f"{root}: folders hold frames of different sizes ({json.dumps([list(r.shape[1:3]) for r in rgbs])}); pass one size")
    frames = Frames(torch.cat(rgbs), torch.cat(sals) if sals else None, torch.cat(groups), torch.cat(states))
    return frames, info


def tasks_under(root: str | Path) -> list[str]:
    """The distinct tasks of the shard folders selected under `root`, sorted."""
    return sorted({folder_task(f) for f in select_folders(root)})


def split_episodes(frames: Frames, val_fraction: float, seed: int = 0) -> tuple[Frames, Frames]:
    """Hold out whole episodes (about `val_fraction` of them), so held-out frames are unseen scenes."""
    groups = torch.unique(frames.group)
    n_val = int(round(len(groups) * val_fraction))
    if val_fraction > 0 and len(groups) > 1:
        n_val = min(max(n_val, 1), len(groups) - 1)
    g = torch.Generator().manual_seed(seed)
    val_groups = groups[torch.randperm(len(groups), generator=g)[:n_val]]
    is_val = torch.isin(frames.group, val_groups)
    return frames.subset(torch.nonzero(~is_val).squeeze(1)), frames.subset(torch.nonzero(is_val).squeeze(1))
