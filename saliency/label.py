"""Pseudo-label a shard folder: `python -m saliency.label --model runs/saliency/reach-v3/best.pt --data data/shards/reach-v3`.

Every source shard becomes a shard of the same name in `--out` (default `<data>-sal`) holding the
same samples plus `saliency.png` (uint8 map from `SaliencyPredictor`, the path RL uses), written
atomically. Source shards are checked against their manifest (see data.shards); finished output
shards that pass their checks are skipped, damaged ones are redone, so a killed run resumes where it
stopped; a marker file ties the folder to one model and to the source shards' checksums, so labels
from two models, or of a source re-collected under the same name, never mix (the rerun is refused;
labels made before the marker recorded checksums are compared with the source frame by frame).
An existing folder that labelling did not write (a collection) is refused. Under torchrun each rank
takes the shards i with i % WORLD_SIZE == RANK (GPU LOCAL_RANK); whichever rank finds every shard done
writes the manifest (the source's, with the labelled shards' own counts and sha256, plus
"labelled_from" and "saliency_model").
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from common.cli import run_command
from common.hub import file_sha256
from common.io import OutputError, atomic_write_json, check_writable_dir
from common.progress import progress
from common.runs import exclusive_run_dir, prepare_run_dir
from data.shards import (
    SHARD_GLOB,
    ShardError,
    ShardFile,
    check_shard,
    iter_samples,
    read_manifest,
    verified_shards,
    write_manifest,
    write_shard_entry,
)
from saliency.config import LabelConfig, presets_for
from saliency.predictor import SaliencyPredictor, resolve_device

MARKER = "labelling.json"


def dist_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, (0, 1, 0) when run directly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def label_shard(predictor: SaliencyPredictor, src: ShardFile | Path, dst: Path) -> dict:
    """Copy every sample of `src` into `dst` (atomically) with its predicted saliency added; returns
    the new shard's manifest entry."""
    samples = list(iter_samples(src))
    if not samples:
        return write_shard_entry(dst, [])
    maps = predictor(np.stack([s["rgb"] for s in samples]))  # [N, H, W] float32 in [0, 1]
    return write_shard_entry(
        dst,
        (
            (
                s["key"],
                {
                    "rgb": s["rgb"],
                    "state": s["state"],
                    "clicks": s["clicks"],
                    "meta": s["meta"],
                    "saliency": m,
                    "scene": s.get("scene"),
                },
            )  # scene states (re-rendering) travel with the frames
            for s, m in zip(samples, maps)
        ),
    )


def run(cfg: LabelConfig) -> Path:
    """Label the folder (this rank's share of it); returns the output folder."""
    src, out = Path(cfg.data), cfg.out_dir
    if src.resolve() == out.resolve():
        raise ValueError(f"--out must differ from --data ({src}); labelled shards go to a new folder")
    rank = dist_rank()[0]
    with (
        exclusive_run_dir(out) if rank == 0 else contextlib.nullcontext()
    ):  # one labelling job per folder (its ranks share it)
        return _label(cfg, src, out)


def _label(cfg: LabelConfig, src: Path, out: Path) -> Path:
    manifest = read_manifest(src)
    shards = verified_shards(src, cfg.allow_incomplete)
    rank, world, local_rank = dist_rank()
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    check_writable_dir(out)
    identity = {
        "saliency_model": str(cfg.model),
        "model_sha256": file_sha256(cfg.model)[:16],  # 16 hex digits: what labelled sets have always recorded
        "labelled_from": src.name,
        "source_shards": {s.path.name: [s.frames, s.sha256 or file_sha256(s.path)] for s in shards},
    }
    marker = out / MARKER
    if marker.exists():
        identity = _resumable_identity(out, json.loads(marker.read_text()), identity, src, shards)
    elif (out / "manifest.json").exists() or any(out.glob(SHARD_GLOB)):
        raise OutputError(
            f"{out} holds shards that saliency.label did not write (a collection?); labelled "
            "shards go to a folder of their own: choose another --out"
        )
    predictor = SaliencyPredictor.load(
        cfg.model, device, cfg.batch_size, cfg.precision
    )  # before the marker: a bad --model leaves no trace
    atomic_write_json(marker, identity)
    if rank == 0:  # the marker ties the folder to this model and source: the other flags may change on a rerun
        prepare_run_dir(out, cfg, allow_existing=True)
    mine = [s for i, s in enumerate(shards) if i % world == rank]
    done = _labelled_shards(out, mine)
    todo = [s for s in mine if s.path.name not in done]
    print(
        f"rank {rank}/{world}: {len(mine) - len(todo)} of {len(mine)} shards already labelled; "
        f"{predictor.kind} on {device}, {predictor.precision}"
    )
    t0, frames = time.time(), 0
    with progress(
        total=sum(s.frames for s in todo) or None, desc=f"label r{rank}", unit="frame", disable=not cfg.progress
    ) as bar:
        for shard in todo:
            done[shard.path.name] = entry = label_shard(predictor, shard, out / shard.path.name)
            frames += entry["frames"]
            bar.update(entry["frames"])
    if frames:
        print(f"rank {rank}: labelled {frames} frames at {frames / (time.time() - t0):.1f} frames/s")
    if all((out / s.path.name).exists() for s in shards):
        entries = [done.get(s.path.name) or check_shard(out / s.path.name, s.frames) for s in shards]
        fields = list(dict.fromkeys([*manifest.get("fields", []), "saliency.png"]))
        write_manifest(
            out,
            {
                **manifest,
                "shards": entries,
                "fields": fields,
                "labelled_from": src.name,
                "saliency_model": str(cfg.model),
                "saliency_model_kind": predictor.kind,
                "saliency_model_sha256": identity["model_sha256"],
            },
        )
        print(f"labelled folder complete: {out}")
    return out


def _resumable_identity(out: Path, old: dict, new: dict, src: Path, shards: list[ShardFile]) -> dict:
    """The marker to keep when labelling into `out` again: the old one plus shards new to it, or an
    error if `out` holds labels of another model or of frames that have changed since. A source
    re-collected under the same name has other shards; its labels are never mixed with the old ones
    nor silently replaced (nothing saved is lost): the user deletes `out` or picks another.

    A labelled shard whose source checksum the old marker lacks (labelled before markers recorded
    them, or from a source without checksums) is compared by content: its keys and frames must be
    the source shard's now. The returned marker records the checksums, so the next run compares those."""
    if old.get("model_sha256") != new["model_sha256"] or old.get("labelled_from") != new["labelled_from"]:
        raise OutputError(
            f"{out} holds labels of {old.get('labelled_from')} by {old.get('saliency_model')} "
            f"(sha {old.get('model_sha256')}); choose another --out or delete it"
        )
    before = old.get("source_shards", {})
    changed, by_content = [], []
    for shard in shards:
        name = shard.path.name
        frames, sha = new["source_shards"][name]
        old_frames, old_sha = before.get(name, (None, None))
        if old_frames is not None and old_frames != frames:
            changed.append(name)
        elif old_sha:
            if old_sha != sha:
                changed.append(name)
        elif (out / name).exists():
            by_content.append(shard)
    if by_content:
        print(
            f"{out}: comparing {len(by_content)} labelled shards with {src} frame by frame (labelled "
            "before their source's checksums were recorded; they are recorded now)"
        )
        changed += [s.path.name for s in by_content if _same_frames(out / s.path.name, s) is False]
    if changed:
        raise OutputError(
            f"{out} holds labels of other frames than {src} has now ({src / sorted(changed)[0]} and "
            f"{len(changed) - 1} more changed since: re-collected?); its labels are kept: delete {out} or "
            "choose another --out to label the new frames"
        )
    return {**new, "source_shards": {**before, **new["source_shards"]}}


def _same_frames(labelled: Path, source: ShardFile) -> bool | None:
    """Whether the labelled shard holds the source shard's samples: the same keys and frames (rgb), in
    order. None when the labelled shard is damaged: it is deleted and labelled again anyway."""
    try:
        ours = [(s["key"], s["rgb"]) for s in iter_samples(labelled)]
    except ShardError:
        return None
    theirs = iter_samples(source)
    for key, rgb in ours:
        sample = next(theirs, None)
        if sample is None or sample["key"] != key or not np.array_equal(sample["rgb"], rgb):
            return False
    return next(theirs, None) is None


def _labelled_shards(out: Path, shards: list[ShardFile]) -> dict[str, dict]:
    """Manifest entries of the output shards already written for `shards` that pass their checks
    (count, and checksum once the output manifest lists it); damaged ones are deleted to be redone."""
    try:
        listed = {e.get("file"): e.get("sha256") for e in read_manifest(out).get("shards", [])}
    except ShardError:
        listed = {}
    done = {}
    for s in shards:
        path = out / s.path.name
        if path.exists():
            try:
                done[path.name] = check_shard(path, s.frames, listed.get(path.name), repair="labelling it again")
            except ShardError as err:
                print(err)
                path.unlink()
    return done


def main(argv=None) -> None:
    run_command(LabelConfig, run, argv, presets=presets_for(LabelConfig))


if __name__ == "__main__":
    main()
