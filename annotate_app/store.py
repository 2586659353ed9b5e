"""Annotation storage: the list of clicks is the source of truth, one JSON file per frame.

Layout under the annotations root (default `data/annotations`):

    <task>/selection.json            which frames (keys from the shard folder), how they were chosen
    <task>/frames.npz                those frames' pixels, the shards' oracle clicks and, where the shards
                                     have them, the frames' scene states (no pickle)
    <task>/renders/<quality>-<size>px/<key>.png   the frames re-rendered at the display size (a cache)
    <task>/<annotator>/<key>.json    one annotator's clicks on one frame
    <task>/<annotator>/.lock         flock taken around every read-modify-write

A frame file holds `clicks` (x, y normalised to [0, 1], unix time `t`, unique `id`, `session`),
`removed` (every click taken away by undo or clear, with when and how: nothing saved is lost),
`done` (the annotator moved on from the frame with clicks on it), `seconds` (time spent on it)
and a `revision` counter. Every change re-reads the file under the lock, applies one operation
and writes it back atomically (temp + rename), so two browser sessions on the same files merge
instead of overwriting each other, and a SIGKILL at any moment leaves the old or the new file.
A file is parsed again only when it changed: views trust its size, mtime and inode (a handler costs
one stat per frame, not one read), changes compare its bytes' hash under the lock (so a write by
another process is never missed); a frame takes at most MAX_CLICKS clicks.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.io import atomic_write_bytes, atomic_write_json
from data.shards import ShardError, ShardFile, decode_sample, iter_raw, read_manifest, verified_shards

FORMAT = "visarl-annotation/1"
SELECTION_FORMAT = "visarl-selection/1"
ORACLE = "oracle"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IDLE_CAP_S = 120.0  # longer pauses between actions on a frame are not counted as work on it
SELECT_METHODS = ("random", "diverse")
MAX_CLICKS = 1000  # per frame; the paper's annotators clicked 25 +- 5.8 times


class AnnotationError(RuntimeError):
    """Bad annotation input or storage; the message names the file or value and the fix."""


class BadNameError(AnnotationError, ValueError):
    """A task, annotator or frame-key name that may not become a path; a ValueError too, so a config's
    validate() refuses the flag with it as it stands (exit 2 at parse time)."""


def check_name(name: str, what: str = "name") -> str:
    """Accept only letters, digits, '-' and '_' (1-64 chars); never let a name reach a path otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadNameError(f"invalid {what} {name!r}: use 1-64 letters, digits, '-' or '_' (no '/', '.', spaces)")
    return name


def task_dir(root: str | Path, task: str) -> Path:
    return Path(root) / check_name(task, "task")


def annotator_dir(root: str | Path, task: str, annotator: str) -> Path:
    return task_dir(root, task) / check_name(annotator, "annotator")


# -- frame selection ------------------------------------------------------------------------------
@dataclass
class FrameSet:
    """The N frames of a task every annotator sees, in order."""

    task: str
    keys: list[str]
    images: np.ndarray  # uint8 [N, H, W, 3]
    oracle_clicks: list[np.ndarray]  # N x float32 [K, 2]
    info: dict[str, Any]
    scenes: np.ndarray | None = None  # [N] structured scene states (`PixelMetaWorld.scene_state`); None: none stored
    has_scene: np.ndarray | None = None  # bool [N]: which entries of `scenes` are real

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])


def _read_samples(shards: list[ShardFile], wanted: np.ndarray) -> list[dict[str, Any]]:
    """Decode only the samples at the given global indices (sorted order of the folder); the shards
    read are checked against the manifest (checksum, count)."""
    want = set(int(i) for i in wanted)
    out: dict[int, dict[str, Any]] = {}
    start = 0
    try:
        for shard in shards:
            if want & set(range(start, start + shard.frames)):
                for j, raw in enumerate(iter_raw(shard)):
                    if start + j in want:
                        out[start + j] = decode_sample(raw, source=str(shard.path))
            start += shard.frames
    except ShardError as err:
        raise AnnotationError(str(err)) from err
    missing = want - set(out)
    if missing:
        raise AnnotationError(
            f"frames {sorted(missing)[:5]} not found: the shard manifest's counts disagree with the shards"
        )
    return [out[int(i)] for i in wanted]


def _kmeans_pick(features: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """k-means (k-means++ init) on rows of `features`; returns the row nearest each centre, distinct."""
    n = len(features)
    centres = [features[rng.integers(n)]]
    d2 = ((features - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(features[rng.choice(n, p=p)])
        d2 = np.minimum(d2, ((features - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)  # [k, D]
    for _ in range(iters):
        dist = ((features[:, None, :] - c[None]) ** 2).sum(-1)  # [n, k]
        assign = dist.argmin(1)
        new = np.stack([features[assign == j].mean(0) if np.any(assign == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    dist = ((features[:, None, :] - c[None]) ** 2).sum(-1)  # [n, k]
    picks: list[int] = []
    for j in np.argsort(dist.min(0)):  # centres with the closest member first
        for i in np.argsort(dist[:, j]):
            if int(i) not in picks:
                picks.append(int(i))
                break
    return np.array(picks)


def select_frames(
    frames_dir: str | Path,
    n: int,
    method: str = "random",
    seed: int = 0,
    pool: int = 4000,
    allow_incomplete: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Choose `n` samples from a shard folder: seeded random, or k-means-diverse on 16x16 thumbnails.

    Returns the decoded samples (in folder order) and a description of the choice.
    """
    if method not in SELECT_METHODS:
        raise AnnotationError(f"unknown selection method {method!r}; use one of {', '.join(SELECT_METHODS)}")
    frames_dir = Path(frames_dir)
    try:
        shards = verified_shards(frames_dir, allow_incomplete)
    except ShardError as err:
        raise AnnotationError(str(err)) from err
    total = sum(s.frames for s in shards)
    if total < n:
        raise AnnotationError(f"{frames_dir} holds {total} frames, fewer than --n {n}; collect more or lower --n")
    rng = np.random.default_rng(seed)
    if method == "random":
        wanted = np.sort(rng.choice(total, size=n, replace=False))
        samples = _read_samples(shards, wanted)
    else:
        cand = np.sort(rng.choice(total, size=min(total, max(pool, n)), replace=False))
        samples_all = _read_samples(shards, cand)
        thumbs = np.stack([_thumbnail(s["rgb"]) for s in samples_all])  # [P, 16*16*3]
        picked = np.sort(_kmeans_pick(thumbs, n, rng))
        wanted = cand[picked]
        samples = [samples_all[i] for i in picked]
    info = {"method": method, "seed": seed, "n": n, "source_frames": total, "indices": [int(i) for i in wanted]}
    return samples, info


def _thumbnail(rgb: np.ndarray, size: int = 16) -> np.ndarray:
    h, w = rgb.shape[:2]
    rows = (np.arange(size) * h) // size
    cols = (np.arange(size) * w) // size
    return rgb[rows][:, cols].astype(np.float32).ravel() / 255.0


def create_or_load_frameset(
    root: str | Path,
    task: str,
    frames_dir: str | Path | None = None,
    n: int | None = None,
    method: str | None = None,
    seed: int | None = None,
    allow_incomplete: bool = False,
) -> FrameSet:
    """Load the task's stored selection, or choose and store it (once) from `frames_dir`.

    Settings given explicitly must match a stored selection: every annotator of a task sees the
    same frames in the same order.
    """
    tdir = task_dir(root, task)
    if (tdir / "selection.json").exists():
        fs = load_frameset(root, task)
        asked = {"n": n, "method": method, "seed": seed}
        diff = {k: (fs.info[k], v) for k, v in asked.items() if v is not None and fs.info.get(k) != v}
        stored_dir = fs.info.get("frames_dir")
        if frames_dir is not None and stored_dir and Path(stored_dir).resolve() != Path(frames_dir).resolve():
            diff["frames_dir"] = (stored_dir, str(frames_dir))  # --frames would be ignored: say so
        if diff:
            raise AnnotationError(
                f"{tdir / 'selection.json'} already fixes this task's frames (stored vs asked: {diff}); every "
                "annotator must see the same frames: drop those flags, or move the task folder away to start over"
            )
        return fs
    frames_dir = Path(frames_dir) if frames_dir else Path("data/shards") / task
    n = 30 if n is None else n
    if n < 1:
        raise AnnotationError(f"--n must be >= 1, got {n}")
    method = method or "random"
    seed = 0 if seed is None else seed
    try:
        manifest = read_manifest(frames_dir)
    except ShardError:
        manifest = {}
    manifest_task = manifest.get("task")
    if manifest_task is not None and manifest_task != task:
        raise AnnotationError(
            f"{frames_dir} holds frames of task {manifest_task!r}, not {task!r}; pass the right --frames"
        )
    samples, info = select_frames(frames_dir, n, method, seed, allow_incomplete=allow_incomplete)
    shapes = {s["rgb"].shape for s in samples}
    if len(shapes) != 1:
        raise AnnotationError(f"{frames_dir}: frames have different sizes {sorted(shapes)}")
    clicks = [np.asarray(s["clicks"], np.float32).reshape(-1, 2) for s in samples]
    offsets = np.cumsum([0] + [len(c) for c in clicks])
    info = {
        "format": SELECTION_FORMAT,
        "task": task,
        "frames_dir": str(frames_dir),
        **info,
        "keys": [s["key"] for s in samples],
        "image_size": list(samples[0]["rgb"].shape[:2]),
        "created": time.time(),
    }
    arrays = {
        "images": np.stack([s["rgb"] for s in samples]),
        "oracle_clicks": np.concatenate(clicks) if offsets[-1] else np.zeros((0, 2), np.float32),
        "oracle_offsets": offsets,
        **_scene_arrays(samples),
    }
    if "scenes" in arrays:  # how the collection rendered: what a re-render must use besides the size
        info["render"] = {
            "camera": manifest.get("camera", "corner"),
            "render_quality": manifest.get("render_quality", "fast"),
        }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(tdir / "frames.npz", buf.getvalue())
    atomic_write_json(tdir / "selection.json", info)  # written last: its presence means complete
    return load_frameset(root, task)


def _scene_arrays(samples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """`scenes` [N] and `has_scene` bool [N] when some samples carry a scene state (all of one layout)."""
    scenes = [s.get("scene") for s in samples]
    dtypes = {sc.dtype for sc in scenes if sc is not None}
    if len(dtypes) != 1:
        return {}  # none (a folder collected before scene states), or a mix no re-render could use
    dtype = dtypes.pop()
    return {
        "scenes": np.stack([np.zeros((), dtype) if sc is None else sc for sc in scenes]),
        "has_scene": np.array([sc is not None for sc in scenes]),
    }


def load_frameset(root: str | Path, task: str) -> FrameSet:
    tdir = task_dir(root, task)
    sel_path = tdir / "selection.json"
    if not sel_path.exists():
        raise AnnotationError(
            f"{sel_path} not found: no frames chosen for task {task!r} yet; start the app or "
            f"`python -m annotate_app.oracle --task {task} --frames data/shards/{task}` first"
        )
    try:
        info = json.loads(sel_path.read_text())
        with np.load(tdir / "frames.npz", allow_pickle=False) as z:
            images, oc, off = z["images"], z["oracle_clicks"], z["oracle_offsets"]
            scenes, has_scene = (z["scenes"], z["has_scene"]) if "scenes" in z.files else (None, None)
    except (OSError, ValueError, KeyError) as err:
        raise AnnotationError(
            f"{tdir}: selection.json or frames.npz is unreadable ({err}); move the task folder away and re-create it"
        ) from err
    keys = info.get("keys", [])
    scenes_fit = scenes is None or len(scenes) == len(has_scene) == len(keys)
    if (
        info.get("format") != SELECTION_FORMAT
        or len(keys) != len(images)
        or len(off) != len(keys) + 1
        or not scenes_fit
    ):
        raise AnnotationError(
            f"{sel_path} does not match {tdir / 'frames.npz'}; move the task folder away and re-create it"
        )
    clicks = [oc[off[i] : off[i + 1]] for i in range(len(keys))]
    return FrameSet(
        task=task, keys=list(keys), images=images, oracle_clicks=clicks, info=info, scenes=scenes, has_scene=has_scene
    )


# -- per-frame click files ------------------------------------------------------------------------
def empty_record(task: str, annotator: str, key: str, index: int, size: tuple[int, int]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "task": task,
        "annotator": annotator,
        "key": key,
        "frame_index": index,
        "image_size": list(size),
        "clicks": [],
        "removed": [],
        "done": False,
        "seconds": 0.0,
        "revision": 0,
        "updated": None,
    }


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


MISSING = object()
RECORD_FIELDS: tuple[tuple[str, Any, Any, str], ...] = (  # (field, default if absent, check, what it must be)
    ("clicks", MISSING, lambda v: isinstance(v, list), "a list of clicks"),
    ("removed", [], lambda v: isinstance(v, list), "a list of removed clicks"),
    ("done", False, lambda v: isinstance(v, bool), "true or false"),
    ("seconds", 0.0, lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("revision", 0, _count, "an integer >= 0"),
    ("updated", None, lambda v: v is None or _number(v), "a time in seconds or null"),
    ("frame_index", None, lambda v: v is None or _count(v), "an integer >= 0"),
    (
        "image_size",
        None,
        lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(_count(x) for x in v)),
        "[height, width]",
    ),
)
CLICK_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("x", lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    ("y", lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    ("t", _number, "a time in seconds"),
    ("id", lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    ("session", lambda v: isinstance(v, str), "a string"),
)


def validate_record(rec: Any, path: Path, task: str, annotator: str, key: str) -> dict[str, Any]:
    """Check a frame file read from disk (it may be stale or edited by hand) field by field; the
    AnnotationError names the file and the first bad field."""
    fix = f"fix {path} by hand or move it away (its clicks are then not shown)"

    def bad(name: str, want: str, value: Any, what: str = "field") -> AnnotationError:
        return AnnotationError(f"{path}: {what} {name!r} must be {want}, got {value!r}; {fix}")

    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise AnnotationError(f"{path}: not a {FORMAT} file; {fix}")
    for field, want in (("task", task), ("annotator", annotator), ("key", key)):
        if rec.get(field) != want:
            raise AnnotationError(
                f"{path}: {field} is {rec.get(field)!r}, expected {want!r} (a stale or copied file); {fix}"
            )
    for name, default, ok, want in RECORD_FIELDS:
        if name not in rec and default is not MISSING:
            rec[name] = list(default) if isinstance(default, list) else default
        if not ok(rec.get(name, MISSING)):
            raise bad(name, want, rec.get(name, "nothing (missing)"))
    for list_name in ("clicks", "removed"):
        for i, c in enumerate(rec[list_name]):
            what = "bad click: field" if list_name == "clicks" else "field"
            if not isinstance(c, dict):
                raise bad(f"{list_name}[{i}]", "an object with x, y, t", c, what)
            c.setdefault("id", uuid.uuid4().hex)
            c.setdefault("session", "")
            for name, ok, want in CLICK_FIELDS:
                if not ok(c.get(name)):
                    raise bad(f"{list_name}[{i}].{name}", want, c.get(name, "nothing (missing)"), what)
    rec["seconds"] = float(rec["seconds"])
    return rec


class AnnotatorStore:
    """One annotator's files for one task; every change is a locked read-modify-write of one frame."""

    def __init__(self, root: str | Path, frames: FrameSet, annotator: str):
        self.frames = frames
        self.task = frames.task
        self.annotator = check_name(annotator, "annotator")
        self.dir = annotator_dir(root, self.task, annotator)
        self.dir.mkdir(parents=True, exist_ok=True)
        # per frame: the file's (size, mtime, inode) and bytes' hash when parsed, and its record or error
        self._parsed: dict[int, tuple[tuple[int, int, int], bytes, dict[str, Any] | AnnotationError]] = {}

    def path(self, index: int) -> Path:
        return self.dir / f"{check_name(self.frames.keys[index], 'frame key')}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self, index: int, verify: bool = False) -> dict[str, Any]:
        """The frame's checked record (do not modify it: it is shared until the file changes).

        Parsed again only if the file's size, mtime or inode changed; `verify` also compares the
        bytes' hash (what a read-modify-write needs: equal stat fields do not prove equal content).
        """
        path = self.path(index)
        key = self.frames.keys[index]
        try:
            st = path.stat()
        except FileNotFoundError:
            return empty_record(self.task, self.annotator, key, index, (self.frames.height, self.frames.width))
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._parsed.get(index)
        if cached is None or cached[0] != signature or verify:
            try:
                payload = path.read_bytes()
            except OSError as err:
                raise AnnotationError(f"{path}: unreadable ({err}); fix it by hand or move it away") from err
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            if cached is None or cached[1] != digest:
                try:
                    result: dict[str, Any] | AnnotationError = validate_record(
                        json.loads(payload), path, self.task, self.annotator, key
                    )
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    result = AnnotationError(f"{path}: unreadable JSON ({err}); fix it by hand or move it away")
                except AnnotationError as err:
                    result = err
                cached = (signature, digest, result)
            self._parsed[index] = cached = (signature, digest, cached[2])
        if isinstance(cached[2], AnnotationError):
            raise cached[2]
        return cached[2]

    def check_all(self) -> list[str]:
        """Problems with any stored frame file (empty if all are readable)."""
        problems = []
        for i in range(len(self.frames)):
            try:
                self.read(i)
            except AnnotationError as err:
                problems.append(str(err))
        return problems

    def _update(self, index: int, op, seconds: float = 0.0) -> dict[str, Any]:
        with self._locked():
            stored = self.read(index, verify=True)
            rec = {
                **stored,
                "clicks": list(stored["clicks"]),
                "removed": list(stored["removed"]),
            }  # the cache stays as read
            if op(rec) is False:  # nothing to change (undo or clear with nothing to remove): no write
                return stored
            rec["seconds"] += max(0.0, float(seconds))
            rec["revision"] += 1
            rec["updated"] = time.time()
            atomic_write_json(self.path(index), rec)
            self._parsed.pop(index, None)  # the next read parses what was written
            return rec

    # operations -------------------------------------------------------------------------------
    def add_click(
        self, index: int, x: float, y: float, session: str = "", t: float | None = None, seconds: float = 0.0
    ) -> dict[str, Any]:
        if not (np.isfinite(x) and np.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise AnnotationError(f"click ({x}, {y}) lies outside the image (coordinates must be in [0, 1])")
        click = {
            "x": float(x),
            "y": float(y),
            "t": time.time() if t is None else t,
            "id": uuid.uuid4().hex,
            "session": session,
        }

        def op(rec):
            if len(rec["clicks"]) >= MAX_CLICKS:
                raise AnnotationError(
                    f"frame {rec['key']} already holds {len(rec['clicks'])} clicks, at most {MAX_CLICKS} "
                    "are kept per frame; undo or clear some first"
                )
            rec["clicks"].append(click)

        return self._update(index, op, seconds)

    def undo(self, index: int, known_ids: list[str] | None = None, seconds: float = 0.0) -> dict[str, Any]:
        """Remove the newest click (of those in `known_ids`, the clicks this session has seen)."""

        def op(rec):
            cand = [c for c in rec["clicks"] if known_ids is None or c["id"] in known_ids]
            if not cand:
                return False
            last = max(cand, key=lambda c: c["t"])
            rec["clicks"].remove(last)
            rec["removed"].append({**last, "removed_at": time.time(), "how": "undo"})
            if not rec["clicks"]:
                rec["done"] = False

        return self._update(index, op, seconds)

    def clear(self, index: int, known_ids: list[str] | None = None, seconds: float = 0.0) -> dict[str, Any]:
        """Remove every click this session has seen; clicks another session added meanwhile stay."""

        def op(rec):
            now = time.time()
            gone = [c for c in rec["clicks"] if known_ids is None or c["id"] in known_ids]
            if not gone:
                return False
            rec["clicks"] = [c for c in rec["clicks"] if c not in gone]
            rec["removed"].extend({**c, "removed_at": now, "how": "clear"} for c in gone)
            if not rec["clicks"]:
                rec["done"] = False

        return self._update(index, op, seconds)

    def leave(self, index: int, seconds: float) -> dict[str, Any]:
        """The annotator moves on: add the time spent and mark the frame done if it has clicks."""
        return self._update(index, lambda rec: rec.__setitem__("done", bool(rec["clicks"])), seconds)

    def write_clicks(self, index: int, clicks: np.ndarray, session: str = "oracle") -> dict[str, Any]:
        """Replace a frame's clicks wholesale (the oracle); old clicks go to `removed`, done = True."""
        now = time.time()
        new = [
            {"x": float(x), "y": float(y), "t": now, "id": uuid.uuid4().hex, "session": session}
            for x, y in np.asarray(clicks).reshape(-1, 2)
        ]

        def op(rec):
            rec["removed"].extend({**c, "removed_at": now, "how": "replaced"} for c in rec["clicks"])
            rec["clicks"] = new
            rec["done"] = bool(new)

        return self._update(index, op)

    # views ------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return [self.read(i) for i in range(len(self.frames))]

    def done_flags(self) -> list[bool | None]:
        """Per frame: done or not, None where the file cannot be read (reported when that frame is opened)."""
        flags: list[bool | None] = []
        for i in range(len(self.frames)):
            try:
                flags.append(bool(self.read(i)["done"]))
            except AnnotationError:
                flags.append(None)
        return flags

    def resume_index(self) -> int:
        """The first frame not finished (0 if all are); an unreadable file counts as unfinished."""
        flags = self.done_flags()
        return next((i for i, f in enumerate(flags) if not f), 0)

    def next_unfinished(self, index: int) -> int | None:
        flags = self.done_flags()
        n = len(flags)
        return next(((index + k) % n for k in range(1, n + 1) if not flags[(index + k) % n]), None)


def click_array(rec: dict[str, Any]) -> np.ndarray:
    """A frame record's clicks as float32 [K, 2] (x, y)."""
    return np.array([[c["x"], c["y"]] for c in rec["clicks"]], np.float32).reshape(-1, 2)


def list_annotators(root: str | Path, task: str) -> list[str]:
    tdir = task_dir(root, task)
    return sorted(p.name for p in tdir.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)) if tdir.is_dir() else []
