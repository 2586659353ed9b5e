"""Saliency training data: the annotation export (.npz), its seeded split, and augmentation.

The export (written by the annotation app, or by `build_oracle_annotations` from a shard folder
with the simulator oracle standing in for the human) holds images (N, H, W, 3) uint8, maps
(N, H, W) float32 in [0, 1], keys (N,) and annotators (N,).
`python -m saliency.data --data runs/saliency/data/reach-v3 --n 30 --out data/annotations/reach-v3.npz`
writes an oracle export.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from common.cli import fail, option, parse_config
from common.io import atomic_write_bytes
from data.shards import ALLOW_INCOMPLETE_HELP, load_arrays, oracle_maps


@dataclass
class Annotations:
    images: np.ndarray  # [N, H, W, 3] uint8
    maps: np.ndarray  # [N, H, W] float32 in [0, 1]
    keys: np.ndarray  # [N] str
    annotators: np.ndarray  # [N] str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "Annotations":
        return Annotations(self.images[idx], self.maps[idx], self.keys[idx], self.annotators[idx])


def check_maps(maps: np.ndarray, name: str = "maps") -> np.ndarray:
    """float [N, H, W] in [0, 1] or raise ValueError naming the problem."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W], got shape {maps.shape}")
    if not np.issubdtype(maps.dtype, np.floating):
        raise ValueError(f"{name} must be float in [0, 1], got dtype {maps.dtype} (divide uint8 maps by 255)")
    if maps.size and (not np.isfinite(maps).all() or maps.min() < 0 or maps.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (got min {np.nanmin(maps):.3g}, max {np.nanmax(maps):.3g})")
    return maps.astype(np.float32, copy=False)


def load_annotations(path: str | Path) -> Annotations:
    """Read and check an annotation export; errors name the file, the problem and the fix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: export annotations from the annotation app, or build oracle ones with "
            f"`python -m saliency.data --data data/shards/<task> --n 30 --out {path}`"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "maps") if k not in z.files]
            if missing:
                raise ValueError(f"{path} lacks array(s) {missing}; expected images, maps, keys, annotators")
            images, maps = z["images"], z["maps"]
            keys = z["keys"] if "keys" in z.files else np.array([f"{path.stem}-{i}" for i in range(len(images))])
            annotators = z["annotators"] if "annotators" in z.files else np.array(["unknown"] * len(images))
    except (OSError, ValueError, EOFError) as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise
        raise ValueError(f"{path} is not a readable .npz annotation export ({err})") from err
    if len(images) == 0:
        raise ValueError(f"{path} holds no annotated frames; annotate some first")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    maps = check_maps(maps, f"{path}: maps")
    if maps.shape != images.shape[:3]:
        raise ValueError(f"{path}: maps {maps.shape} do not match images {images.shape[:3]} (one [H, W] map per frame)")
    if len(keys) != len(images) or len(annotators) != len(images):
        raise ValueError(
            f"{path}: keys ({len(keys)}) / annotators ({len(annotators)}) do not match {len(images)} images"
        )
    return Annotations(images, maps, keys.astype(str), annotators.astype(str))


def split(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation index split; at least one frame on each side when n >= 2."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * val_frac)), n - 1) if n >= 2 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def save_annotations(path: str | Path, ann: Annotations) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(
        buf, images=ann.images, maps=ann.maps, keys=ann.keys.astype(str), annotators=ann.annotators.astype(str)
    )
    return atomic_write_bytes(path, buf.getvalue())


def build_oracle_annotations(
    shard_dir: str | Path, n: int, seed: int = 0, pool: int = 500, allow_incomplete: bool = False
) -> Annotations:
    """`n` frames drawn (seeded) from the first `pool` frames of a shard folder, with oracle maps from
    their stored clicks at the frames' resolution (the simulator oracle stands in for the human)."""
    arrays = load_arrays(shard_dir, limit=max(pool, n), allow_incomplete=allow_incomplete)
    if len(arrays["keys"]) < n:
        raise ValueError(f"{shard_dir} holds {len(arrays['keys'])} frames, fewer than the {n} requested")
    idx = np.sort(np.random.default_rng(seed).choice(len(arrays["keys"]), n, replace=False))
    images = arrays["rgb"][idx]
    maps = oracle_maps([arrays["clicks"][i] for i in idx], images.shape[1])
    return Annotations(images, maps, np.array(arrays["keys"])[idx].astype(str), np.array(["oracle"] * n))


@dataclass
class Augment:
    """Joint random horizontal flip of frame and map, and colour jitter of the frame only."""

    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, S, S] in [0, 1], y [B, 1, S, S] -> augmented copies (per-sample random draws)."""
        x, y = x.clone(), y.clone()
        b = x.shape[0]
        if self.flip:
            flip = torch.rand(b, generator=gen) < 0.5
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        u = torch.rand(b, 4, generator=gen) * 2 - 1  # [B, 4] in [-1, 1]
        for i in range(b):
            img = x[i]
            if self.brightness:
                img = TF.adjust_brightness(img, 1 + self.brightness * float(u[i, 0]))
            if self.contrast:
                img = TF.adjust_contrast(img, 1 + self.contrast * float(u[i, 1]))
            if self.saturation:
                img = TF.adjust_saturation(img, 1 + self.saturation * float(u[i, 2]))
            if self.hue:
                img = TF.adjust_hue(img, self.hue * float(u[i, 3]))
            x[i] = img.clamp(0, 1)
        return x, y


@dataclass
class OracleExportConfig:
    """Write an oracle annotation export (.npz) from a shard folder: the oracle stands in for the human."""

    data: str = option("data/shards/reach-v3", "shard folder to draw frames from")
    n: int = option(30, "number of annotated frames")
    out: str = option("data/annotations/reach-v3.npz", "output .npz")
    seed: int = option(0, "seed of the frame draw")
    pool: int = option(500, "draw from the first `pool` frames of the folder")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)


def main(argv=None) -> None:
    cfg = parse_config(OracleExportConfig, argv)
    out = Path(cfg.out)
    if out.exists():
        fail(f"{out} exists; refusing to overwrite an annotation export (choose another --out)")
    from common.cli import one_line_errors

    with one_line_errors():
        ann = build_oracle_annotations(cfg.data, cfg.n, cfg.seed, cfg.pool, cfg.allow_incomplete)
        save_annotations(out, ann)
    print(f"wrote {len(ann)} oracle-annotated frames to {out}")


if __name__ == "__main__":
    main()
