"""The shard contract: WebDataset tar shards of frames, written atomically and read back checked.

Shards are written with `webdataset.TarWriter` and read with webdataset's tar iterator and
`group_by_keys` (`raw_pipeline` is the WebDataset pipeline every folder reader uses); shards written
before by hand with `tarfile` hold the same members and read the same.

A shard folder holds `manifest.json` and `shard-00000.tar`, `shard-00001.tar`, ... Each sample:

| field          | content                                                           |
|----------------|-------------------------------------------------------------------|
| `__key__`      | `<shard:05d>-<index:05d>`, unique in the folder                   |
| `rgb.png`      | uint8 [H, W, 3] upright frame, lossless                           |
| `state.npy`    | float32 [39] Meta-World state vector                              |
| `clicks.npy`   | float32 [N, 2] oracle clicks, normalised (x, y)                   |
| `meta.json`    | task, episode, step, reward, success                              |
| `saliency.png` | optional uint8 [H, W] predicted saliency x 255 (`saliency.label`) |
| `scene.npy`    | optional 0-d structured array that re-renders the frame at any size (`data.env.PixelMetaWorld.scene_state`); folders collected before it have none |

Maps from clicks are derived on read with `data.clicks.clicks_to_map`, never stored as the only copy.

`manifest.json` lists every shard with its sample count and the sha256 of its bytes (written when
the shard is renamed into place) and says whether the collection is `complete`. Every reader goes
through `verified_shards` + `iter_raw`: a missing, unlisted, truncated or changed shard, a wrong
count, a sample key of another shard or repeated (keys must be unique in the folder: annotations and
exports are keyed by them), or an incomplete folder (unless `allow_incomplete`) is a ShardError naming the file and the
command that repairs it (`repair_command`: re-running the collection regenerates only what is
missing or damaged, and adds checksums to a manifest written before they existed).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from common.cli import as_flags
from common.io import ShardError, atomic_write_bytes, atomic_write_json
from data.clicks import clicks_to_map

if TYPE_CHECKING:
    import webdataset as wds

MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.tar"
REQUIRED_FIELDS = ("rgb.png", "state.npy", "clicks.npy", "meta.json")
ALLOW_INCOMPLETE_HELP = (
    "read a shard folder whose collection is not complete (e.g. a killed run): only the shards its manifest lists"
)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


# -- encoding -----------------------------------------------------------------------------------
def png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W(, 3)] -> lossless PNG bytes (fast compression)."""
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
        "rgb.png": png_bytes(rgb),
        "state.npy": _npy(np.asarray(sample["state"], np.float32)),
        "clicks.npy": _npy(np.asarray(sample["clicks"], np.float32).reshape(-1, 2)),
        "meta.json": json.dumps(sample["meta"], sort_keys=True).encode(),
    }
    if sample.get("saliency") is not None:
        out["saliency.png"] = png_bytes(saliency_to_uint8(sample["saliency"]))
    if sample.get("scene") is not None:
        out["scene.npy"] = _npy(np.asarray(sample["scene"]))
    return out


def saliency_to_uint8(saliency: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (float) or [0, 255] (uint8) -> uint8 [H, W]."""
    saliency = np.asarray(saliency)
    if saliency.dtype == np.uint8:
        return saliency
    if saliency.size and (np.nanmin(saliency) < 0 or np.nanmax(saliency) > 1 or np.isnan(saliency).any()):
        raise ValueError("saliency maps must lie in [0, 1]")
    return np.round(saliency * 255.0).astype(np.uint8)


def tar_member_bytes(payload: bytes) -> int:
    """Bytes one member takes in a shard: a 512-byte header plus the payload padded to 512 bytes."""
    return tarfile.BLOCKSIZE * (1 + -(-len(payload) // tarfile.BLOCKSIZE))


def write_shard_entry(path: str | Path, samples: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Write (key, sample) pairs as one tar with `webdataset.TarWriter`, atomically (built in memory, then
    renamed into place complete or not at all); returns its manifest entry {"file", "frames", "sha256"}
    (the checksum of the bytes renamed into place). Members carry fixed metadata (mtime 0, mode 0644,
    no owner), so the same samples give the same bytes."""
    buf = io.BytesIO()
    count = 0
    import webdataset as wds  # here, not at the top: webdataset imports torch, which manifest readers do not need

    with wds.TarWriter(buf, user="", group="", mode=0o644, mtime=0, encoder=False) as sink:
        for key, sample in samples:
            sink.write(encode_sample(key, sample))
            count += 1
    payload = buf.getvalue()
    atomic_write_bytes(path, payload)
    return {"file": Path(path).name, "frames": count, "sha256": hashlib.sha256(payload).hexdigest()}


def write_shard(path: str | Path, samples: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """`write_shard_entry` returning only the number of samples written."""
    return write_shard_entry(path, samples)["frames"]


# -- decoding -----------------------------------------------------------------------------------
def decode_meta(raw: dict[str, bytes], source: str | None = None) -> dict[str, Any]:
    """The `meta.json` of one raw sample, its other fields checked present but not decoded; ShardError
    names the file (`source`, else the sample's `__url__`) and what is missing or corrupt."""
    source, key = source or raw.get("__url__", "?"), raw.get("__key__", "?")
    missing = [f for f in REQUIRED_FIELDS if f not in raw]
    if missing:
        raise ShardError(f"{source}: sample {key!r} lacks field(s) {', '.join(missing)}")
    try:
        return json.loads(raw["meta.json"])
    except ValueError as err:
        raise ShardError(f"{source}: sample {key!r} is corrupt ({type(err).__name__}: {err})") from err


def decode_sample(raw: dict[str, bytes], source: str | None = None) -> dict[str, Any]:
    """Tar members of one sample -> numpy fields (see `decode_meta` for the errors)."""
    source, key = source or raw.get("__url__", "?"), raw.get("__key__", "?")
    meta = decode_meta(raw, source)
    try:
        sample = {
            "key": key,
            "rgb": np.asarray(Image.open(io.BytesIO(raw["rgb.png"])).convert("RGB")),
            "state": np.load(io.BytesIO(raw["state.npy"]), allow_pickle=False),
            "clicks": np.load(io.BytesIO(raw["clicks.npy"]), allow_pickle=False),
            "meta": meta,
        }
        if "saliency.png" in raw:
            sample["saliency"] = np.asarray(Image.open(io.BytesIO(raw["saliency.png"])).convert("L"))
        if "scene.npy" in raw:
            sample["scene"] = np.load(io.BytesIO(raw["scene.npy"]), allow_pickle=False)
    except Exception as err:
        raise ShardError(f"{source}: sample {key!r} is corrupt ({type(err).__name__}: {err})") from err
    return sample


@dataclass(frozen=True)
class ShardFile:
    """One shard as its folder's manifest lists it; None where a legacy manifest does not say."""

    path: Path
    frames: int | None = None
    sha256: str | None = None
    repair: str = "delete it and re-run the command that wrote it"


def _read_checked(shard: ShardFile) -> bytes:
    try:
        payload = shard.path.read_bytes()
    except OSError as err:
        raise ShardError(f"{shard.path}: unreadable ({err.strerror or err}); {shard.repair}") from err
    if shard.sha256 and hashlib.sha256(payload).hexdigest() != shard.sha256:
        raise ShardError(
            f"{shard.path}: checksum mismatch with manifest.json (the file is damaged or was changed "
            f"after it was written); {shard.repair}"
        )
    return payload


def iter_raw(path: str | Path | ShardFile) -> Iterator[dict[str, bytes]]:
    """The raw samples of one shard ({"__key__", "__url__", "<field>": bytes}), grouped by webdataset.

    The whole file is read and checked first: its checksum and sample count against the manifest
    when `path` is a ShardFile that lists them, and always that nothing but zero padding follows the
    last member (a damaged header mid-file would otherwise read as the end of the archive).
    """
    shard = path if isinstance(path, ShardFile) else ShardFile(Path(path))
    yield from _split_samples(_read_checked(shard), shard)


def _split_samples(payload: bytes, shard: ShardFile) -> list[dict[str, bytes]]:
    """`payload` -> samples with webdataset's tar iterator and `group_by_keys`, checked. Shards are
    USTAR with short names (one 512-byte header per member), so the end of the last member read is
    known exactly: past it only the zero end-of-archive blocks may follow."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    end = 0

    def members() -> Iterator[dict[str, Any]]:
        nonlocal end
        for member in tar_file_iterator(io.BytesIO(payload)):
            end += tar_member_bytes(member["data"])
            yield {**member, "__url__": str(shard.path)}

    try:
        samples = list(group_by_keys(members()))
        if len(payload) < end + 2 * tarfile.BLOCKSIZE:
            raise tarfile.ReadError("the end-of-archive marker is missing")
        if any(payload[end:]):
            raise tarfile.ReadError(f"damaged tar header at byte {end}: the members after it are unreadable")
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        reason = " ".join(str(err.args[0] if err.args else err).split(" @ ")[0].split())
        raise ShardError(f"{shard.path}: corrupt or truncated shard ({reason}); {shard.repair}") from err
    if shard.frames is not None and len(samples) != shard.frames:
        raise ShardError(
            f"{shard.path}: holds {len(samples)} samples, manifest.json says {shard.frames}; {shard.repair}"
        )
    _check_keys(shard, [s.get("__key__", "") for s in samples])
    return samples


def _check_keys(shard: ShardFile, keys: list[str]) -> None:
    """Keys must be unique in the folder (annotations and exports are keyed by them): every key of
    `shard-<i>.tar` starts with `<i>-`, and none repeats within the shard."""
    found = re.fullmatch(r"shard-(\d+)\.tar", shard.path.name)
    prefix = f"{found.group(1)}-" if found else ""
    foreign = next((k for k in keys if not k.startswith(prefix)), None)
    if foreign is not None:
        raise ShardError(
            f"{shard.path}: sample key {foreign!r} belongs to another shard (the keys of {shard.path.name} "
            f"start with {prefix!r}): a shard copied or renamed from elsewhere, whose keys repeat another "
            f"shard's; {shard.repair}"
        )
    seen: set[str] = set()
    twice = next((k for k in keys if k in seen or seen.add(k)), None)
    if twice is not None:
        raise ShardError(f"{shard.path}: sample key {twice!r} appears twice (keys must be unique); {shard.repair}")


def _expand(by_url: dict[str, ShardFile], src: Iterable[dict[str, str]]) -> Iterator[dict[str, bytes]]:
    for item in src:
        yield from iter_raw(by_url[item["url"]])


def raw_pipeline(shards: Sequence[ShardFile]) -> wds.DataPipeline:
    """WebDataset pipeline of the raw samples of `shards` in order, split across DataLoader workers
    (`wds.split_by_worker`), every shard checked by `iter_raw`; `.compose(wds.map(decode_sample))` decodes."""
    import webdataset as wds

    by_url = {str(s.path): s for s in shards}
    return wds.DataPipeline(wds.SimpleShardList(list(by_url)), wds.split_by_worker, partial(_expand, by_url))


def iter_samples(path: str | Path | ShardFile) -> Iterator[dict[str, Any]]:
    """Decoded samples of one shard (checked like `iter_raw`)."""
    source = str(path.path if isinstance(path, ShardFile) else path)
    for raw in iter_raw(path):
        yield decode_sample(raw, source=source)


def check_shard(
    path: str | Path, frames: int | None = None, sha256: str | None = None, repair: str = ShardFile.repair
) -> dict[str, Any]:
    """Read a whole shard; its manifest entry {"file", "frames", "sha256"}, or ShardError (ending with
    `repair`) if it is damaged or disagrees with the `frames` / `sha256` it should have."""
    shard = ShardFile(Path(path), frames, sha256, repair)
    payload = _read_checked(shard)
    n = len(_split_samples(payload, shard))
    return {"file": shard.path.name, "frames": n, "sha256": sha256 or hashlib.sha256(payload).hexdigest()}


# -- folders --------------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ShardError(f"{path} not found: {directory} is not a shard folder (run `python -m data.collect`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(f"{path}: corrupt manifest ({err})") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", []), list):
        raise ShardError(f"{path}: not a shard manifest (no 'shards' list)")
    return manifest


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / MANIFEST, manifest)


#: the data.collect settings a manifest of a collection from before "flags" records (its identity)
COLLECT_SETTINGS = (
    "task",
    "frames",
    "image_size",
    "camera",
    "render_quality",
    "episode_steps",
    "goal_observable",
    "seed",
    "shard_size",
    "expert_frac",
    "random_frac",
    "noise_std_max",
)


def repair_command(directory: str | Path, manifest: dict[str, Any]) -> str:
    """The command that regenerates a folder's missing or damaged shards, and only those."""
    directory = Path(directory)
    if manifest.get("labelled_from"):
        source = directory.parent / Path(manifest["labelled_from"]).name
        return f"python -m saliency.label --model {manifest.get('saliency_model', 'MODEL')} --data {source} --out {directory}"
    # data.collect records its flags; a folder collected before it did is named by every setting it records
    flags = manifest.get("flags") or " ".join(as_flags({k: manifest[k] for k in COLLECT_SETTINGS if k in manifest}))
    return f"python -m data.collect --out {directory} {flags}"


def verified_shards(directory: str | Path, allow_incomplete: bool = False) -> list[ShardFile]:
    """The shards a folder's manifest lists, checked against the folder: the collection complete
    (unless `allow_incomplete`), every listed shard present, no unlisted one. Each ShardFile carries
    the sample count and sha256 that `iter_raw` checks on read, and how to repair it.

    Manifests written before checksums existed (no "sha256") stay readable with presence and count
    checks only; a warning says that re-running the collection adds them.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"{directory}: no such shard folder (run `python -m data.collect --out {directory}`)")
    manifest = read_manifest(directory)
    fix = f"re-run `{repair_command(directory, manifest)}` (it redoes only missing or damaged shards)"
    entries = manifest.get("shards", [])
    complete = manifest.get("status", "complete") == "complete"
    listed = {e.get("file") for e in entries if isinstance(e, dict)}
    on_disk = {p.name for p in directory.glob(SHARD_GLOB)}
    if not complete and not allow_incomplete:
        n = sum(int(e.get("frames", 0)) for e in entries)
        raise ShardError(
            f"{directory}: incomplete collection ({n} of {manifest.get('frames', '?')} frames, status "
            f"{manifest.get('status')!r}: e.g. a killed run); pass --allow-incomplete to use the frames "
            f"it holds, or finish it: {fix}"
        )
    if not entries:
        raise ShardError(f"{directory}: holds no shards (run `python -m data.collect --out {directory}`)")
    missing = sorted(listed - on_disk)
    if missing:
        raise ShardError(
            f"{directory / missing[0]}: missing ({len(missing)} shard(s) listed in manifest.json are not there); {fix}"
        )
    unlisted = sorted(on_disk - listed)
    if unlisted and complete:
        raise ShardError(
            f"{directory / unlisted[0]}: not listed in manifest.json (a stray file or a shard of another "
            f"collection); move it away, or {fix}"
        )
    try:
        shards = [
            ShardFile(directory / e["file"], int(e["frames"]), e.get("sha256"), fix)
            for e in sorted(entries, key=lambda e: e["file"])
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ShardError(f"{directory / MANIFEST}: a shard entry lacks its file name or frame count ({err})") from err
    if any(s.sha256 is None for s in shards):
        warnings.warn(
            f"{directory}: manifest.json has no checksums (written before they existed), so shards are "
            f"checked for presence and sample counts only; {fix.replace('it redoes', 'it adds them and redoes')}",
            stacklevel=2,
        )
    return shards


def list_shards(directory: str | Path, allow_incomplete: bool = False) -> list[Path]:
    """Paths of a folder's verified shards, in order (see `verified_shards`)."""
    return [s.path for s in verified_shards(directory, allow_incomplete)]


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
    directory: str | Path, limit: int | None = None, need_saliency: bool = False, allow_incomplete: bool = False
) -> dict[str, Any]:
    """Load a shard folder (or its first `limit` samples) into memory as stacked arrays, every shard
    checked against the manifest (`verified_shards`).

    Returns rgb uint8 [N, H, W, 3], state float32 [N, 39], clicks (list of [K, 2]), keys, meta,
    and saliency uint8 [N, H, W] when every sample has it (required if `need_saliency`).
    """
    import webdataset as wds

    rgb, state, clicks, keys, meta, sal = [], [], [], [], [], []
    pipeline = raw_pipeline(verified_shards(directory, allow_incomplete)).compose(wds.map(decode_sample))
    for s in islice(pipeline, limit):
        rgb.append(s["rgb"])
        state.append(s["state"])
        clicks.append(s["clicks"])
        keys.append(s["key"])
        meta.append(s["meta"])
        sal.append(s.get("saliency"))
    out: dict[str, Any] = {
        "rgb": np.stack(rgb),
        "state": np.stack(state),
        "clicks": clicks,
        "keys": keys,
        "meta": meta,
    }
    if all(s is not None for s in sal):
        out["saliency"] = np.stack(sal)
    elif need_saliency:
        raise ShardError(
            f"{directory}: samples have no saliency.png; label them with `python -m saliency.label` "
            "or use --saliency oracle"
        )
    return out


def frame_digests(rgb: np.ndarray) -> list[str]:
    """A content fingerprint of each frame of uint8 [N, H, W, 3] (16 hex digits of sha256 over shape and
    pixels): the same image has the same one in any folder, unlike its key, which is a position
    ('00000-00012') that every collection reuses."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    return [hashlib.sha256(f"{frame.shape}".encode() + frame.tobytes()).hexdigest()[:16] for frame in rgb]


def pixels_sha256(directory: str | Path) -> str:
    """sha256 of a collection's pixels: every frame's rgb.png decoded, with its shape, in shard and sample order.
    Two collections of the same frames agree here whatever else their shards' bytes hold (the rewards in meta.json
    differ in their last digits between CPUs whose BLAS kernels differ) and however their PNGs were compressed."""
    digest = hashlib.sha256()
    for shard in verified_shards(directory):
        for raw in iter_raw(shard):
            rgb = np.asarray(Image.open(io.BytesIO(raw["rgb.png"])).convert("RGB"))  # [H, W, 3]
            digest.update(f"{rgb.shape}".encode() + rgb.tobytes())
    return digest.hexdigest()


def oracle_maps(clicks: list[np.ndarray], size: int) -> np.ndarray:
    """Oracle saliency maps float32 [N, size, size] from stored clicks (the shared click-to-map)."""
    return np.stack([clicks_to_map(c, size) for c in clicks]) if clicks else np.zeros((0, size, size), np.float32)
