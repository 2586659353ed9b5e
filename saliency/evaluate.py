"""Score a saliency model on unseen frames: `python -m saliency.evaluate --model runs/saliency/reach-v3/best.pt --data data/shards/reach-v3 --n 1000`.

Ground truth = oracle maps from the clicks stored with each frame (data.shards.oracle_maps at the
frames' resolution). Frames the model (or its teacher) was trained or validated on are excluded by
content (their digests, so a fresh folder whose keys repeat the training folder's positions keeps its
frames); the last `n` remaining frames of the folder are scored. Writes metrics.json and a Fig. 7-like
grid (frame, oracle map, predicted map, frame x predicted map) to `--out`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import run_command
from common.figures import write_figure
from common.io import atomic_write_json
from common.runs import code_version, device_description
from data.shards import frame_digests, load_arrays, oracle_maps
from saliency.config import EvalConfig, presets_for
from saliency.metrics import GT_THRESHOLD, score_maps
from saliency.predictor import SaliencyPredictor


def unseen_frames(
    data: str | Path, n: int, seen_frames: set[str], seen_keys: set[str] = frozenset(), allow_incomplete: bool = False
) -> dict[str, Any]:
    """The last `n` frames of a shard folder that are not among `seen_frames` (frame digests), with
    their oracle maps. `seen_keys` excludes by key instead, for checkpoints without digests: keys are
    positions every collection reuses, so a fresh folder would lose the frames at those positions."""
    arrays = load_arrays(data, allow_incomplete=allow_incomplete)
    digests = frame_digests(arrays["rgb"])
    keep = [i for i, (k, d) in enumerate(zip(arrays["keys"], digests)) if d not in seen_frames and k not in seen_keys]
    if not keep:
        raise ValueError(f"every frame of {data} was seen in training; evaluate on another folder")
    if len(keep) < n:
        print(f"note: only {len(keep)} unseen frames in {data} (asked for {n})")
    keep = keep[-n:]
    clicks = [arrays["clicks"][i] for i in keep]
    frames = arrays["rgb"][keep]
    return {
        "frames": frames,
        "clicks": clicks,
        "keys": [arrays["keys"][i] for i in keep],
        "digests": [digests[i] for i in keep],
        "gt": oracle_maps(clicks, frames.shape[1]),
    }


def score(
    predictor: SaliencyPredictor, data: str | Path, n: int, allow_incomplete: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, {frames, clicks, keys, gt, pred}) of `predictor` on `n` unseen frames of `data`."""
    seen_frames = predictor.seen_frames
    seen_keys = set() if seen_frames else predictor.seen_keys  # a checkpoint from before frame digests: by key
    sample = unseen_frames(data, n, seen_frames, seen_keys, allow_incomplete)
    overlap = (set(sample["digests"]) & seen_frames) | (set(sample["keys"]) & seen_keys)
    assert not overlap, f"evaluation frames overlap the training frames: {sorted(overlap)[:3]}"
    t0 = time.perf_counter()
    pred = predictor(sample["frames"])
    elapsed = time.perf_counter() - t0
    metrics = score_maps(pred, sample["gt"], fixations=sample["clicks"])
    metrics.update(
        {"frames_per_s": len(pred) / elapsed, "first_key": sample["keys"][0], "last_key": sample["keys"][-1]}
    )
    return metrics, {**sample, "pred": pred}


def save_figure(sample: dict[str, Any], path: Path, rows: int, title: str) -> Path:
    """Fig. 7 analog: per row the frame, its oracle map, the predicted map and frame x prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.linspace(0, len(sample["frames"]) - 1, rows).round().astype(int)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows + 0.4), squeeze=False)
    for r, i in enumerate(idx):
        frame = sample["frames"][i].astype(np.float32) / 255
        pred = sample["pred"][i]
        panels = [
            (frame, None, "frame"),
            (sample["gt"][i], "inferno", "oracle map"),
            (pred, "inferno", "predicted"),
            (frame * pred[..., None], None, "frame x predicted"),
        ]
        for c, (img, cmap, name) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        axes[r, 0].set_ylabel(sample["keys"][i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return write_figure(fig, path)


def run(cfg: EvalConfig) -> Path:
    """Score and draw; returns the output folder (metrics.json, fig7.png)."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    predictor = SaliencyPredictor.load(cfg.model, cfg.device, cfg.batch_size, cfg.precision)
    out = Path(cfg.out) if cfg.out else Path(cfg.model).parent / f"eval-{Path(cfg.model).stem}-{Path(cfg.data).name}"
    metrics, sample = score(predictor, cfg.data, cfg.n, cfg.allow_incomplete)
    record = {
        "model": str(cfg.model),
        "kind": predictor.kind,
        "data": str(cfg.data),
        "gt": f"oracle maps, binarised at {GT_THRESHOLD} for F",
        "metrics": metrics,
        "device": device_description(),
        "precision": predictor.precision,
        "code_version": code_version(),
    }
    atomic_write_json(out / "metrics.json", record)
    if cfg.figure_rows:
        save_figure(
            sample,
            out / "fig7.png",
            cfg.figure_rows,
            f"{predictor.kind} on {Path(cfg.data).name}: max-F {metrics['f_max']:.3f}, MAE {metrics['mae']:.4f}",
        )
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
    print(f"wrote {out / 'metrics.json'}" + (f" and {out / 'fig7.png'}" if cfg.figure_rows else ""))
    return out


def main(argv=None) -> None:
    run_command(EvalConfig, run, argv, presets=presets_for(EvalConfig))


if __name__ == "__main__":
    main()
