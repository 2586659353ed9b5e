"""The "oracle" annotator: fills the same click files from the simulator's geometry.

`python -m annotate_app.oracle --task reach-v3 [--frames data/shards/reach-v3]` copies each selected
frame's stored oracle clicks (written by data.collect from the simulator) into
`<root>/<task>/oracle/<key>.json`, so export, agreement and the saliency trainer run with no human.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate_app.store import (
    ORACLE,
    SELECT_METHODS,
    AnnotationError,
    AnnotatorStore,
    check_name,
    click_array,
    create_or_load_frameset,
)
from common.cli import one_line_errors, option, parse_config
from data.shards import ALLOW_INCOMPLETE_HELP

PRESETS = {"micro": {"n": 8}, "demo": {"n": 30}, "cpu": {"n": 30}, "paper": {"n": 30}}  # paper: ~30 frames per task


@dataclass
class OracleConfig:
    """Annotate a task's selected frames with the simulator's oracle clicks (annotator 'oracle')."""

    task: str = option("reach-v3", "task name")
    frames: str = option("", "shard folder (default data/shards/<task>); used if the task has no frame selection yet")
    n: int | None = option(None, "frames to choose if there is no selection yet (default 30)")
    select: str | None = option(None, f"selection method if there is none yet: {', '.join(SELECT_METHODS)}")
    seed: int | None = option(None, "selection seed if there is none yet (default 0)")
    root: str = option("data/annotations", "annotations root folder")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)

    def validate(self) -> "OracleConfig":
        check_name(self.task, "task")
        return self


def annotate_oracle(
    task: str,
    frames: str | Path | None = None,
    root: str | Path = "data/annotations",
    n: int | None = None,
    select: str | None = None,
    seed: int | None = None,
    allow_incomplete: bool = False,
) -> Path:
    """Write the oracle's click files for every selected frame (idempotent); returns their folder."""
    fs = create_or_load_frameset(root, task, frames, n, select, seed, allow_incomplete)
    store = AnnotatorStore(root, fs, ORACLE)
    for i, clicks in enumerate(fs.oracle_clicks):
        stored = store.read(i)
        if stored["revision"] and np.allclose(click_array(stored), np.asarray(clicks).reshape(-1, 2)):
            continue  # already there: keep the file (and its history) as it is
        store.write_clicks(i, clicks, session=ORACLE)
    return store.dir


def run(cfg: OracleConfig) -> Path:
    return annotate_oracle(cfg.task, cfg.frames or None, cfg.root, cfg.n, cfg.select, cfg.seed, cfg.allow_incomplete)


def main(argv=None) -> None:
    cfg = parse_config(OracleConfig, argv, presets=PRESETS)
    with one_line_errors(AnnotationError):
        out = run(cfg)
    print(f"oracle clicks for {len(list(out.glob('*.json')))} frames of {cfg.task} in {out}")


if __name__ == "__main__":
    main()
