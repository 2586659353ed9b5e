"""What the committed folders keep of a root: carried models, kept preparation, kept runs restored into a new root."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.io import ShardError, atomic_write_bytes, atomic_write_json
from pipeline.keep import KEPT_MODELS, KEPT_PROBES, KEPT_SALIENCY_EVAL, KEPT_SALIENCY_PICTURE
from pipeline.table.config import ENCODERS

if TYPE_CHECKING:  # folder.py imports this module
    from pipeline.table.folder import Folder


#: what a task's preparation leaves that its results keep (globs under the root's runs/): its saliency student's
#: evaluation against the oracle maps (metrics and the Fig. 7 picture the report shows), kept with the student, and
#: its MultiMAEs' probes
KEPT_SALIENCY = (KEPT_SALIENCY_EVAL, KEPT_SALIENCY_PICTURE)
KEPT_PREPARATION = (*KEPT_SALIENCY, KEPT_PROBES)


def preparation_copies(
    folder: Folder, task: str, patterns: Sequence[str] = KEPT_PREPARATION
) -> list[tuple[Path, Path]]:
    """(file under the root, where it is kept) of what the root holds of the task's kept preparation (`patterns`)."""
    runs = folder.root / "runs"
    found = [src for pattern in patterns for src in sorted(runs.glob(pattern.format(task=task)))]
    return [(src, folder.results / src.relative_to(runs)) for src in found]


#: what a new root needs of a task's preparation instead of repeating it (paths under runs/), carried per encoder as
#: soon as its pretraining ends (a machine lost during the next one keeps it): the rgb+saliency encoder with the
#: saliency student that labelled its frames (the saliency rows read it too), then the rgb-only encoder; each with
#: the logs that say its pretraining finished (`pretrain_finished`)
CARRIED = {
    name: (
        *(["saliency/{task}/student.pt"] if name == "rgbs" else []),
        *(f"mmae/{name}/{{task}}/{file}" for file in ("encoder.pt", "config.json", "data.json", "train.csv")),
    )
    for name, _ in ENCODERS
}


def carried_files(task: str, encoders: Sequence[str] = tuple(CARRIED)) -> list[str]:
    """The CARRIED paths of `task`'s `encoders` (all by default), under runs/ and under the carry folder alike."""
    return [rel.format(task=task) for name in encoders for rel in CARRIED[name]]


def model_copies(folder: Folder, task: str, encoders: Sequence[str] = tuple(CARRIED)) -> list[tuple[Path, Path]]:
    """(file under the root's runs/, its copy in the carry folder) of the task's CARRIED models."""
    return [(folder.root / "runs" / rel, folder.carry / rel) for rel in carried_files(task, encoders)]


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def write_once(path: Path, payload: bytes, conflict: str) -> bool:
    """Write `payload` to `path` unless it holds it already (True if written); a `path` holding other bytes is
    refused with the ValueError `conflict`, never written over."""
    if path.exists():
        if path.read_bytes() != payload:
            raise ValueError(conflict)
        return False
    atomic_write_bytes(path, payload)
    return True


def models_record(folder: Folder, task: str) -> dict | None:
    """The task's KEPT_MODELS record ({"sha256": {path under the carry folder: hash}, "frames": {encoder: digest},
    "pixels": {encoder: digest}}), None before any of its models are carried."""
    path = folder.results / KEPT_MODELS.format(task=task)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise ValueError(
            f'{path} is not a record of carried models ({{"sha256": {{file: hash}}}}); restore it with `git checkout {path}`'
        )
    return record


def kept_models(folder: Folder, task: str) -> dict[str, str]:
    """{path under the carry folder: sha256} of the task's carried models as its results record them (empty before
    any are carried)."""
    record = models_record(folder, task)
    return record["sha256"] if record else {}


def carried_encoders(folder: Folder, task: str) -> list[str]:
    """The task's encoders (ENCODERS' names) whose models the carry folder holds and its results record."""
    recorded = kept_models(folder, task)
    return [
        name
        for name in CARRIED
        if all(rel in recorded and (folder.carry / rel).exists() for rel in carried_files(task, [name]))
    ]


def frames_digest(folder: Folder, task: str) -> str:
    """sha256 of the root's collected frames of `task`, from their shard manifest's checksums: collection writes the
    same bytes for the same seeds on one machine, so two encoders with the same digest learnt from the same frames
    (on another CPU the rewards in meta.json may round otherwise: `pixels_digest` tells then)."""
    from data.shards import read_manifest

    shards_dir = folder.root / f"shards/{task}"
    shards = read_manifest(shards_dir)["shards"]
    sums = [s.get("sha256") or sha256((shards_dir / s["file"]).read_bytes()) for s in shards]  # an older manifest's
    return sha256(json.dumps([[s["file"], s["frames"], h] for s, h in zip(shards, sums)]).encode())


def pixels_digest(folder: Folder, task: str) -> str | None:
    """`data.shards.pixels_sha256` of the root's collected frames of `task` (what its encoders learnt from, however
    the shards' other bytes differ between machines); None where the frames can no longer be read."""
    from data.shards import pixels_sha256

    try:
        return pixels_sha256(folder.root / f"shards/{task}")
    except (ShardError, OSError):
        return None


def carry_models(folder: Folder, task: str, encoder: str) -> list[Path]:
    """Copy the CARRIED models of `task`'s `encoder` into the carry folder (never overwritten by other bytes), then
    add their sha256 and the digests of the frames it learnt from (`frames_digest`, `pixels_digest`) to the
    results' record (KEPT_MODELS): the record ties the carried files to the results they go with."""
    copies = model_copies(folder, task, [encoder])
    payloads = {rel: src.read_bytes() for rel, (src, _) in zip(carried_files(task, [encoder]), copies)}
    hashes = {rel: sha256(payload) for rel, payload in payloads.items()}
    path = folder.results / KEPT_MODELS.format(task=task)
    old = models_record(folder, task) or {"task": task, "sha256": {}, "frames": {}}
    clash = [rel for rel, h in hashes.items() if old["sha256"].get(rel, h) != h]
    if clash:  # refused before anything is copied
        raise ValueError(
            f"{path} records other models than this root's {clash[0]}: the results belong to another root; give this "
            "one folders of its own (--results results/cpu-table-2 --carry artifacts/cpu-table-2)"
        )
    written = []
    for (rel, payload), (src, dst) in zip(payloads.items(), copies):
        conflict = f"{dst} already holds other models than this root's {src}; give this experiment a carry folder of its own (--carry)"
        if write_once(dst, payload, conflict):
            written.append(dst)
    frames = {**old.get("frames", {}), encoder: old.get("frames", {}).get(encoder) or frames_digest(folder, task)}
    pixels = dict(old.get("pixels", {}))
    if encoder not in pixels and (digest := pixels_digest(folder, task)):
        pixels[encoder] = digest
    record = {**old, "sha256": {**old["sha256"], **hashes}, "frames": frames, **({"pixels": pixels} if pixels else {})}
    if record != old:
        atomic_write_json(path, record)
        written.append(path)
    return written


def adopt_models(folder: Folder, task: str, names: Sequence[str]) -> list[Path]:
    """Copy the carried models of the task's encoders `names` into the root (a new machine's root goes on from them),
    each checked against the sha256 its results record; a root holding other models of its own is refused."""
    recorded, written = kept_models(folder, task), []
    for rel, (mine, theirs) in zip(carried_files(task, names), model_copies(folder, task, names)):
        payload = theirs.read_bytes()
        if recorded.get(rel) != sha256(payload):
            raise ValueError(
                f"the carried {theirs} is not the model {folder.results / KEPT_MODELS.format(task=task)} records: "
                "that carry folder belongs to another experiment; check out the one committed with these results"
            )
        conflict = (
            f"{mine} differs from the carried {theirs}: this root made {task}'s models itself and they are not "
            f"the ones carried; move its runs/saliency/{task} and runs/mmae/*/{task} aside, or start a new --root"
        )
        if write_once(mine, payload, conflict):
            written.append(mine)
    return written


def missing_kept_runs(folder: Folder) -> list[tuple[Path, Path]]:
    """(kept run folder, where the root holds it) of every run kept in the results folders (table and pilots) that
    the root has not started: a new root restores them rather than running them again."""
    missing = []
    for kept, runs in ((folder.results, "runs/sac"), (Path(f"{folder.results}-pilot"), "runs/pilot")):
        for summary in sorted(kept.glob("*/*/seed*/summary.json")):
            dest = folder.root / runs / summary.parent.relative_to(kept)
            restoring = dest.relative_to(folder.root).as_posix() in folder.state.get("restored", [])
            if not (dest / "summary.json").exists() and (restoring or not (dest / "config.json").exists()):
                missing.append((summary.parent, dest))
    return missing


def restore_kept_runs(folder: Folder) -> list[Path]:
    """Copy the kept runs the root lacks into it (`missing_kept_runs`), each summary.json last: a copy killed midway
    is restored again (it is recorded as restored first: rl.grid would take a run folder holding only a config.json
    for one it started). rl.grid skips them as finished; pipeline.keep finds them identical."""
    from pipeline.keep import keep_file

    written = []
    for kept, dest in missing_kept_runs(folder):
        rel = dest.relative_to(folder.root).as_posix()
        with folder.lock:
            restored = folder.state.setdefault("restored", [])
            if rel not in restored:
                restored.append(rel)
                folder.save()
        files = sorted((p for p in kept.iterdir() if p.is_file()), key=lambda p: p.name == "summary.json")
        written += [dest / f.name for f in files if keep_file(f, dest / f.name)]
    return written
