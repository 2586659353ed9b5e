"""A small synthetic shard folder (no simulator needed) to try the app and to test it.

Each frame is a grey floor with a red "gripper" square and a green "goal" disc at random places;
its oracle clicks sit on those two objects, like the simulator oracle's clicks on the arm and goal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.shards import shard_name, write_manifest, write_shard_entry


def synthetic_frame(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 [size, size, 3] frame and its float32 [K, 2] oracle clicks (x, y normalised)."""
    img = np.full((size, size, 3), 90, np.uint8)
    img[..., 2] = 110
    img += rng.integers(0, 12, (size, size, 1), dtype=np.uint8)
    r = max(2, size // 16)
    (gx, gy), (ax, ay) = rng.integers(r + 1, size - r - 1, (2, 2))
    yy, xx = np.mgrid[:size, :size]
    img[(xx - gx) ** 2 + (yy - gy) ** 2 <= r * r] = (40, 200, 60)
    img[ay - r : ay + r + 1, ax - r : ax + r + 1] = (210, 40, 40)
    clicks = (np.array([[ax, ay], [gx, gy]], np.float32) + 0.5) / size
    return img, clicks


def synthetic_shards(
    out: str | Path, frames: int = 60, size: int = 64, shard_size: int = 30, task: str = "reach-v3", seed: int = 0
) -> Path:
    """Write `frames` synthetic samples in the shard format (manifest + shard-*.tar) to `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    shards = []
    for s, start in enumerate(range(0, frames, shard_size)):
        samples = []
        for j in range(min(shard_size, frames - start)):
            img, clicks = synthetic_frame(rng, size)
            meta = {
                "task": task,
                "shard": s,
                "episode": 0,
                "step": start + j,
                "reward": 0.0,
                "success": 0.0,
                "policy": "synthetic",
            }
            samples.append(
                (f"{s:05d}-{j:05d}", {"rgb": img, "state": np.zeros(39, np.float32), "clicks": clicks, "meta": meta})
            )
        shards.append(write_shard_entry(out / shard_name(s), samples))
    write_manifest(
        out,
        {
            "format": "visarl-shards/1",
            "status": "complete",
            "task": task,
            "synthetic": True,
            "frames_written": frames,
            "image_size": size,
            "shards": shards,
        },
    )
    return out
