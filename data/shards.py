"""The shard contract: WebDataset tar shards of frames, written atomically and read back checked.

A shard folder holds `manifest.json` and `shard-00000.tar`, `shard-00001.tar`, ... Each sample:

| field          | content                                                           |
|----------------|-------------------------------------------------------------------|
| `__key__`      | `<shard:05d>-<index:05d>`, unique in the folder                   |
| `rgb.png`      | uint8 [H, W, 3] upright frame, lossless                           |
| `state.npy`    | float32 [39] Meta-World state vector                              |
| `clicks.npy`   | float32 [N, 2] oracle clicks, normalised (x, y)                   |
| `meta.json`    | task, episode, step, reward, success                              |
| `saliency.png` | optional uint8 [H, W] predicted saliency x 255 (`saliency.label`) |

Maps from clicks are derived on read with `data.clicks.clicks_to_map`, never stored as the only copy.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.clicks import clicks_to_map
from data.io import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.tar"
REQUIRED_FIELDS = ("rgb.png", "state.npy", "clicks.npy", "meta.json")


class ShardError(RuntimeError):
    """A shard folder or file is missing, corrupt, or lacks a field; the message names the file."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


# -- encoding -----------------------------------------------------------------------------------
def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode_sample(key: str, sample: dict[str, Any]) -> dict[str, bytes]:
    """A sample dict (rgb, state, clicks, meta[, saliency]) -> the tar members of one sample."""
    rgb = np.asarray(sample["rgb"])
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    out = {
        "__key__": key,
        "rgb.png": _png(rgb),
        "state.npy": _npy(np.asarray(sample["state"], np.float32)),
        "clicks.npy": _npy(np.asarray(sample["clicks"], np.float32).reshape(-1, 2)),
        "meta.json": json.dumps(sample["meta"], sort_keys=True).encode(),
    }
    if sample.get("saliency") is not None:
        out["saliency.png"] = _png(saliency_to_uint8(sample["saliency"]))
    return out


def saliency_to_uint8(saliency: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (float) or [0, 255] (uint8) -> uint8 [H, W]."""
    saliency = np.asarray(saliency)
    if saliency.dtype == np.uint8:
        return saliency
    if saliency.size and (np.nanmin(saliency) < 0 or np.nanmax(saliency) > 1 or np.isnan(saliency).any()):
        raise ValueError("saliency maps must lie in [0, 1]")
    return np.round(saliency * 255.0).astype(np.uint8)


def write_shard(path: str | Path, samples: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write (key, sample) pairs as one tar, atomically: the file appears complete or not at all."""
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, sample in samples:
            members = encode_sample(key, sample)
            members.pop("__key__")
            for suffix, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
            count += 1
    atomic_write_bytes(path, buf.getvalue())
    return count


# -- decoding -----------------------------------------------------------------------------------
def decode_sample(raw: dict[str, bytes], source: str = "?") -> dict[str, Any]:
    """Tar members of one sample -> numpy fields; ShardError names the file and the missing field."""
    key = raw.get("__key__", "?")
    missing = [f for f in REQUIRED_FIELDS if f not in raw]
    if missing:
        raise ShardError(f"{source}: sample {key!r} lacks field(s) {', '.join(missing)}")
    try:
        sample = {
            "key": key,
            "rgb": np.asarray(Image.open(io.BytesIO(raw["rgb.png"])).convert("RGB")),
            "state": np.load(io.BytesIO(raw["state.npy"]), allow_pickle=False),
            "clicks": np.load(io.BytesIO(raw["clicks.npy"]), allow_pickle=False),
            "meta": json.loads(raw["meta.json"]),
        }
        if "saliency.png" in raw:
            sample["saliency"] = np.asarray(Image.open(io.BytesIO(raw["saliency.png"])).convert("L"))
    except ShardError:
        raise
    except Exception as err:
        raise ShardError(f"{source}: sample {key!r} is corrupt ({type(err).__name__}: {err})") from err
    return sample


def iter_raw(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Group a tar's members into samples (members of a sample are contiguous)."""
    path = Path(path)
    current: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = Path(member.name).name
                key, _, suffix = name.partition(".")
                if current and current["__key__"] != key:
                    yield current
                    current = {}
                current["__key__"] = key
                payload = tar.extractfile(member).read()
                if len(payload) != member.size:
                    raise tarfile.ReadError(f"member {member.name} is cut short")
                current[suffix] = payload
            if path.stat().st_size < tar.offset + 2 * tarfile.BLOCKSIZE:
                raise tarfile.ReadError("the end-of-archive marker is missing")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ShardError(f"{path}: corrupt or truncated shard ({err}); delete it and re-run the command that wrote it") from err
    if current:
        yield current


def iter_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    for raw in iter_raw(path):
        yield decode_sample(raw, source=str(path))


# -- folders --------------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ShardError(f"{path} not found: {directory} is not a shard folder (run `python -m data.collect`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: corrupt manifest ({err})") from err


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / MANIFEST, manifest)


def list_shards(directory: str | Path) -> list[Path]:
    """Complete shards of a folder in order; ShardError if the folder has none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"{directory}: no such shard folder (run `python -m data.collect --out {directory}`)")
    shards = sorted(directory.glob(SHARD_GLOB))
    if not shards:
        raise ShardError(f"{directory}: holds no {SHARD_GLOB} files (run `python -m data.collect --out {directory}`)")
    return shards


def find_shard_folders(root: str | Path) -> list[Path]:
    """`root` itself if it is a shard folder, else every shard folder below it (several tasks)."""
    root = Path(root)
    if (root / MANIFEST).exists():
        return [root]
    found = sorted(p.parent for p in root.glob(f"**/{MANIFEST}"))
    if not found:
        raise ShardError(f"{root}: no shard folders (with {MANIFEST}) found; run `python -m data.collect` first")
    return found


def load_arrays(
    directory: str | Path, limit: int | None = None, need_saliency: bool = False
) -> dict[str, Any]:
    """Load a shard folder (or its first `limit` samples) into memory as stacked arrays.

    Returns rgb uint8 [N, H, W, 3], state float32 [N, 39], clicks (list of [K, 2]), keys, meta,
    and saliency uint8 [N, H, W] when every sample has it (required if `need_saliency`).
    """
    rgb, state, clicks, keys, meta, sal = [], [], [], [], [], []
    manifest = read_manifest(directory)
    expected = {s["file"]: s["frames"] for s in manifest.get("shards", [])}
    for shard in list_shards(directory):
        start = len(rgb)
        for s in iter_samples(shard):
            rgb.append(s["rgb"]); state.append(s["state"]); clicks.append(s["clicks"])
            keys.append(s["key"]); meta.append(s["meta"]); sal.append(s.get("saliency"))
            if limit is not None and len(rgb) >= limit:
                break
        if limit is not None and len(rgb) >= limit:
            break
        if shard.name in expected and len(rgb) - start != expected[shard.name]:
            raise ShardError(f"{shard}: holds {len(rgb) - start} samples, the manifest says {expected[shard.name]}")
    out: dict[str, Any] = {
        "rgb": np.stack(rgb), "state": np.stack(state), "clicks": clicks, "keys": keys, "meta": meta,
    }
    if all(s is not None for s in sal):
        out["saliency"] = np.stack(sal)
    elif need_saliency:
        raise ShardError(
            f"{directory}: samples have no saliency.png; label them with `python -m saliency.label` "
            "or use --saliency oracle"
        )
    return out


def oracle_maps(clicks: list[np.ndarray], size: int) -> np.ndarray:
    """Oracle saliency maps float32 [N, size, size] from stored clicks (the shared click-to-map)."""
    return np.stack([clicks_to_map(c, size) for c in clicks]) if clicks else np.zeros((0, size, size), np.float32)
