"""Export annotations as the saliency trainer's input.

`python -m annotate_app.export --task reach-v3 [--annotator alice|all] --out data/annotations/reach-v3.npz`
writes `images` uint8 [N, H, W, 3], `maps` float32 [N, H, W] in [0, 1] (from the clicks, with
data.clicks.clicks_to_map), `keys` [N] frame keys, `annotators` [N] who made each map, and
`n_clicks` [N]. With `--annotator all` the clicks of every human annotator of a frame are pooled
into one map (as saliency benchmarks pool observers' fixations); `--combine rows` gives one row
per (frame, annotator) instead. Frames nobody clicked on are left out.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate_app.store import ORACLE, AnnotationError, AnnotatorStore, check_name, list_annotators, load_frameset
from common.cli import one_line_errors, option, parse_config
from common.io import atomic_write_bytes
from data.clicks import clicks_to_map

COMBINE = ("pool", "rows")


@dataclass
class ExportConfig:
    """Export a task's click annotations as images + saliency maps (.npz) for the saliency trainer."""

    task: str = option("reach-v3", "task name")
    annotator: str = option("all", "one annotator, or 'all' (every human; the oracle if there is none)")
    combine: str = option("pool", "with several annotators: pool (one map per frame) or rows (one row per annotator)")
    root: str = option("data/annotations", "annotations root folder")
    out: str = option("", "output .npz (default: <root>/<task>.npz)")
    overwrite: bool = option(False, "replace an existing export even if it holds more maps")

    def validate(self) -> "ExportConfig":
        check_name(self.task, "task")
        if self.annotator != "all":
            check_name(self.annotator, "annotator")
        if self.combine not in COMBINE:
            raise ValueError(f"--combine must be one of {', '.join(COMBINE)}")
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.root) / f"{self.task}.npz"


def resolve_annotators(root, task: str, annotator: str) -> list[str]:
    found = list_annotators(root, task)
    if annotator != "all":
        if annotator not in found:
            raise AnnotationError(
                f"no annotations by {annotator!r} for task {task!r} under {root} (found: {', '.join(found) or 'none'})"
            )
        return [annotator]
    humans = [a for a in found if a != ORACLE]
    if humans:
        return humans
    if ORACLE in found:
        return [ORACLE]
    raise AnnotationError(
        f"no annotations for task {task!r} under {root}; annotate with `python -m annotate_app` "
        f"or fill them from the simulator with `python -m annotate_app.oracle --task {task}`"
    )


def collect_maps(root, task: str, annotator: str = "all", combine: str = "pool") -> dict[str, np.ndarray]:
    """The export arrays in memory (see module docstring)."""
    frames = load_frameset(root, task)
    names = resolve_annotators(root, task, annotator)
    stores = [AnnotatorStore(root, frames, a) for a in names]
    h, w = frames.height, frames.width
    images, maps, keys, who, counts = [], [], [], [], []
    for i, key in enumerate(frames.keys):
        per = [(s.annotator, [[c["x"], c["y"]] for c in s.read(i)["clicks"]]) for s in stores]
        per = [(a, c) for a, c in per if c]
        rows = [(",".join(a for a, _ in per), [xy for _, c in per for xy in c])] if combine == "pool" and per else per
        for name, clicks in rows:
            images.append(frames.images[i])
            keys.append(key)
            who.append(name)
            counts.append(len(clicks))
            maps.append(clicks_to_map(np.asarray(clicks, np.float64), h, w))
    if not maps:
        raise AnnotationError(f"annotators {', '.join(names)} have no clicks on any frame of {task!r} yet")
    return {
        "images": np.stack(images),
        "maps": np.stack(maps).astype(np.float32),
        "keys": np.array(keys),
        "annotators": np.array(who),
        "n_clicks": np.array(counts, np.int32),
    }


def export(cfg: ExportConfig) -> Path:
    """Write the export atomically; refuse to replace a larger one unless cfg.overwrite."""
    arrays = collect_maps(cfg.root, cfg.task, cfg.annotator, cfg.combine)
    out = cfg.out_path
    if out.exists() and not cfg.overwrite:
        try:
            with np.load(out, allow_pickle=False) as old:
                n_old = len(old["maps"])
        except (OSError, ValueError, KeyError):
            n_old = None
        if n_old is None or n_old > len(arrays["maps"]):
            what = (
                "is not a readable export"
                if n_old is None
                else f"holds {n_old} maps, more than the {len(arrays['maps'])} now"
            )
            raise AnnotationError(f"{out} {what}; pass --overwrite to replace it or choose another --out")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out, buf.getvalue())
    return out


run = export  # the pipeline's programmatic entry: run(ExportConfig(...)) -> Path


def main(argv=None) -> None:
    cfg = parse_config(ExportConfig, argv)
    with one_line_errors(AnnotationError):
        out = export(cfg)
    with np.load(out) as z:
        print(
            f"wrote {len(z['maps'])} maps of {cfg.task} ({', '.join(sorted(set(z['annotators'])))}) "
            f"{z['images'].shape[1]}x{z['images'].shape[2]} to {out}"
        )


if __name__ == "__main__":
    main()
