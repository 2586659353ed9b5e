"""Table V analog: `python -m saliency.study --data data/shards/reach-v3 --sizes 5,10,20,30`.

Draws max(sizes) frames (seeded) from the folder's first 500 with oracle maps, trains PiCANet on
nested subsets of 5, 10, 20, 30 of them with the same number of optimiser steps each, scores every
model on the same unseen frames, and prints a markdown table (also in results.json). Finished
sizes are reused when the study is re-run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from common.cli import run_command
from common.io import atomic_write_json
from saliency import train
from saliency.config import PRESETS, StudyConfig, TrainConfig, from_preset, presets_for
from saliency.data import build_oracle_annotations, save_annotations, split
from saliency.evaluate import score
from saliency.predictor import SaliencyPredictor


def table(rows: list[dict]) -> str:
    lines = [
        "| annotated maps | train / val | MAE | F_zeta (max) | F_zeta (adaptive) | CC |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"| {r['size']} | {r['train']} / {r['val']} | {m['mae']:.4f} | {m['f_max']:.4f} | {m['f_adaptive']:.4f} | {m['cc']:.3f} |"
        )
    return "\n".join(lines)


def run(cfg: StudyConfig) -> Path:
    """Run (or finish) the study; returns the study folder with results.json."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = cfg.size_list
    pool = build_oracle_annotations(cfg.data, max(sizes), cfg.seed, allow_incomplete=cfg.allow_incomplete)
    order = np.random.default_rng(cfg.seed).permutation(len(pool))
    base = PRESETS[cfg.train_preset]["train"]
    batch = base.get("batch_size", TrainConfig.batch_size)
    val_frac = base.get("val_frac", TrainConfig.val_frac)
    n_train_max = len(split(max(sizes), val_frac, cfg.seed)[0])
    steps = cfg.steps or base.get("epochs", TrainConfig.epochs) * math.ceil(n_train_max / batch)
    rows = []
    for size in sizes:
        run_dir = out / f"n{size}"
        result = run_dir / "study.json"
        n_train = len(split(size, val_frac, cfg.seed)[0])
        if result.exists():
            rows.append(json.loads(result.read_text()))
            continue
        ann_path = out / f"annotations-{size}.npz"
        if not ann_path.exists():
            save_annotations(ann_path, pool.subset(np.sort(order[:size])))
        epochs = max(1, round(steps / math.ceil(n_train / batch)))
        tcfg = from_preset(
            TrainConfig,
            cfg.train_preset,
            annotations=str(ann_path),
            out=str(run_dir),
            epochs=epochs,
            seed=cfg.seed,
            threads=cfg.threads,
            progress=False,
            resume=(run_dir / "last.pt").exists(),
        )
        best = train.run(tcfg)
        metrics, _ = score(SaliencyPredictor.load(best, "cpu"), cfg.data, cfg.n, cfg.allow_incomplete)
        row = {
            "size": size,
            "train": n_train,
            "val": size - n_train,
            "epochs": epochs,
            "steps": steps,
            "metrics": metrics,
        }
        atomic_write_json(result, row)
        rows.append(row)
    atomic_write_json(
        out / "results.json", {"data": cfg.data, "train_preset": cfg.train_preset, "steps": steps, "rows": rows}
    )
    print(table(rows))
    print(f"wrote {out / 'results.json'}")
    return out


def main(argv=None) -> None:
    run_command(StudyConfig, run, argv, presets=presets_for(StudyConfig))


if __name__ == "__main__":
    main()
