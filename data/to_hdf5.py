"""`python -m data.to_hdf5 --shards data/shards/reach-v3 --out reach-v3.h5`: shards -> HDF5 for random access.

Datasets: frames [N, H, W, 3] uint8 (chunked per 256 frames, gzip), states [N, 39] float32,
episode/step/reward/success [N], keys [N] (strings), saliency [N, H, W] uint8 when the shards
have it, oracle clicks as a flat [M, 2] array with per-sample offsets [N + 1]. The manifest is
stored as a JSON string attribute. Every shard is checked against the manifest first (a damaged,
missing or incomplete folder is refused, see data.shards), and the file appears only when complete:
it is written to a hidden temp file of its own (`.<out>.*.tmp`, deleted on any error: a full disk is
a one-line error) and renamed into place; without --overwrite an --out written meanwhile is kept.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from common.cli import one_line_errors, option, parse_config
from common.io import OutputError, check_writable_dir, disk_full_error, is_disk_full
from common.progress import progress as progress_bar
from data.shards import ALLOW_INCOMPLETE_HELP, ShardFile, iter_samples, read_manifest, verified_shards

CHUNK = 256


@dataclass
class ToHdf5Config:
    """Convert a shard folder into one HDF5 file."""

    shards: str = option("data/shards/reach-v3", "shard folder to convert")
    out: str = option("", "output .h5 path (default: <shards>.h5)")
    overwrite: bool = option(False, "replace an existing output file")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)


def _create_datasets(h5: h5py.File, block: dict[str, np.ndarray]) -> dict[str, h5py.Dataset]:
    """Resizable, chunked datasets shaped like one block's arrays (images gzip-compressed)."""
    ds = {}
    for name, values in block.items():
        dtype = h5py.string_dtype() if values.dtype == object else values.dtype
        rows = CHUNK if values.ndim > 1 else CHUNK * 16
        extra = dict(compression="gzip", compression_opts=4) if values.ndim > 1 else {}
        ds[name] = h5.create_dataset(
            name,
            (0, *values.shape[1:]),
            dtype,
            maxshape=(None, *values.shape[1:]),
            chunks=(rows, *values.shape[1:]),
            **extra,
        )
    return ds


class _StopOnError(io.FileIO):
    """The HDF5 file's bytes, through Python: the first failed write (a full disk) is recorded in
    `failed` and every write, flush and truncate after it is dropped; the writer checks `failed` and
    stops. HDF5 never sees the failure: when it did (a flush or a freed dataset writing onto a full
    disk), it was left with a half-closed file that it crashed on at exit (SIGSEGV/SIGBUS) after the
    error was printed. The file is deleted anyway."""

    failed: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while not self.failed and done < len(view):
                done += os.write(self.fileno(), view[done:])
        except OSError as err:
            self.failed = err
        return len(view)

    def flush(self) -> None:
        if not self.failed:
            super().flush()

    def truncate(self, size: int | None = None) -> int:
        if self.failed:
            return size or 0
        return super().truncate(size)

    def check(self) -> None:
        if self.failed:
            raise self.failed


def convert(cfg: ToHdf5Config, progress: bool = True) -> Path:
    manifest = read_manifest(cfg.shards)
    shards = verified_shards(cfg.shards, cfg.allow_incomplete)
    out = Path(cfg.out or str(Path(cfg.shards).with_suffix(".h5")))
    if out.exists() and not cfg.overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    check_writable_dir(out.parent)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)  # this process's own
    tmp = Path(name)
    try:
        with _StopOnError(fd, "r+") as f:
            _write(f, manifest, shards, progress)
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        _publish(tmp, out, cfg.overwrite)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(out, err) from err
        raise
    return out


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished `tmp` to `out`; without `overwrite` only if `out` is still absent (a hard
    link fails if it exists), so of two conversions to one --out the second never replaces the first."""
    if overwrite:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise OutputError(
            f"{out} was written meanwhile (another data.to_hdf5 to the same --out?); it is "
            "kept: pass --overwrite to replace it"
        ) from None
    tmp.unlink()


def _write(file: _StopOnError, manifest: dict, shards: list[ShardFile], progress: bool) -> None:
    with h5py.File(file, "w") as h5:
        _fill(h5, manifest, shards, progress, file.check)
    file.check()


def _fill(h5: h5py.File, manifest: dict, shards: list[ShardFile], progress: bool, check: Callable[[], None]) -> None:
    """Write the datasets; `check()` after each shard raises a write error HDF5 was not told of."""
    total = sum(s.frames for s in shards) or None
    h5.attrs["manifest"] = json.dumps(manifest)
    ds: dict[str, h5py.Dataset] = {}
    clicks, offsets, n = [], [0], 0
    with progress_bar(total=total, unit="frame", desc="to_hdf5", disable=not progress) as bar:  # closed on errors too
        for shard in shards:
            samples = list(iter_samples(shard))
            if not samples:
                continue
            block = {
                "frames": np.stack([s["rgb"] for s in samples]),
                "states": np.stack([s["state"] for s in samples]),
                "keys": np.array([s["key"] for s in samples], dtype=object),
                **{k: np.array([s["meta"][k] for s in samples]) for k in ("episode", "step", "reward", "success")},
            }
            if all("saliency" in s for s in samples):
                block["saliency"] = np.stack([s["saliency"] for s in samples])
            if not ds:
                ds = _create_datasets(h5, block)
            if set(block) != set(ds):
                raise ValueError(f"{shard.path} has fields {sorted(block)}, earlier shards {sorted(ds)}")
            for name, values in block.items():
                ds[name].resize(n + len(samples), axis=0)
                ds[name][n:] = values
            for s in samples:
                clicks.append(s["clicks"].reshape(-1, 2))
                offsets.append(offsets[-1] + len(clicks[-1]))
            n += len(samples)
            bar.update(len(samples))
            check()
    h5.create_dataset("clicks", data=np.concatenate(clicks) if clicks else np.zeros((0, 2), np.float32))
    h5.create_dataset("click_offsets", data=np.asarray(offsets, np.int64))


def main(argv=None) -> None:
    cfg = parse_config(ToHdf5Config, argv)
    with one_line_errors():
        out = convert(cfg)
    with h5py.File(out) as h5:
        print(f"wrote {out}: {h5['frames'].shape[0]} frames {h5['frames'].shape[1:]}")


if __name__ == "__main__":
    main()
