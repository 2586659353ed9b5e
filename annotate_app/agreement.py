"""Inter-annotator agreement: `python -m annotate_app.agreement --task reach-v3`.

For every pair of human annotators (pred = first name, reference = second, alphabetical) and for each
human against the oracle (the shards' simulator clicks), on every frame both have clicked: CC, NSS,
SIM, KLD and AUC-Judd (common.map_metrics) of the prediction's map against the reference's map
(CC, SIM, KLD) and the reference's clicked pixels (NSS, AUC). Maps are made at the frames' own
resolution with data.clicks.clicks_to_map. Prints a per-frame and a mean table, writes them as CSV,
and draws a grid of frames with every annotator's map (matplotlib).
"""

import csv
import io
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from annotate_app.store import (
    ORACLE,
    AnnotationError,
    AnnotatorStore,
    FrameSet,
    check_name,
    click_array,
    list_annotators,
    load_frameset,
    task_dir,
)
from common.cli import option, run_command
from common.figures import write_figure
from common.io import atomic_write_bytes
from common.map_metrics import METRIC_NAMES, all_metrics, fixation_mask
from data.clicks import clicks_to_map


@dataclass
class AgreementConfig:
    """Agreement between annotators and with the simulator oracle (CC, NSS, SIM, KLD, AUC-Judd)."""

    task: str = option("reach-v3", "task name")
    root: str = option("data/annotations", "annotations root folder")
    out: str = option("", "folder for agreement.csv and agreement.png (default <root>/<task>)")
    figure_frames: int = option(6, "frames shown in the picture grid (0: no picture)")

    def validate(self) -> "AgreementConfig":
        check_name(self.task, "task")
        if self.figure_frames < 0:
            raise ValueError("--figure-frames must be >= 0")
        return self


def annotator_clicks(root, frames: FrameSet) -> dict[str, list[np.ndarray]]:
    """Clicks per frame of every human annotator, and of the oracle (from the shards' stored clicks)."""
    out = {
        a: [click_array(r) for r in AnnotatorStore(root, frames, a).records()]
        for a in list_annotators(root, frames.task)
        if a != ORACLE
    }
    out[ORACLE] = [np.asarray(c, np.float32).reshape(-1, 2) for c in frames.oracle_clicks]
    return out


def agreement_rows(frames: FrameSet, clicks: dict[str, list[np.ndarray]]) -> list[dict]:
    """One row per (pred, reference, frame) where both clicked, with the five metrics."""
    humans = sorted(a for a in clicks if a != ORACLE)
    pairs = list(combinations(humans, 2)) + [(a, ORACLE) for a in humans]
    h, w = frames.height, frames.width
    rows = []
    for pred, ref in pairs:
        for i, key in enumerate(frames.keys):
            cp, cr = clicks[pred][i], clicks[ref][i]
            if len(cp) == 0 or len(cr) == 0:
                continue
            scores = all_metrics(clicks_to_map(cp, h, w), clicks_to_map(cr, h, w), fixation_mask(cr, h, w))
            rows.append({"pred": pred, "reference": ref, "frame": i, "key": key, **scores})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean of each metric per (pred, reference) pair, and over all pairs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pred"], r["reference"]), []).append(r)
    groups[("all pairs", "")] = rows
    return [
        {"pred": p, "reference": q, "frames": len(g), **{m: float(np.mean([r[m] for r in g])) for m in METRIC_NAMES}}
        for (p, q), g in groups.items()
        if g
    ]


def format_table(rows: list[dict], first: list[str]) -> str:
    head = first + [m.upper() for m in METRIC_NAMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([str(r[k]) for k in first] + [f"{r[m]:.3f}" for m in METRIC_NAMES]) + " |")
    return "\n".join(lines)


def draw_grid(frames: FrameSet, clicks: dict[str, list[np.ndarray]], path: Path, max_frames: int) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(a for a in clicks if a != ORACLE) + [ORACLE]
    shown = [i for i in range(len(frames)) if any(len(clicks[a][i]) for a in names if a != ORACLE)] or list(
        range(len(frames))
    )
    shown = shown[:max_frames]
    if not shown:
        return None
    fig, axes = plt.subplots(
        len(shown), len(names) + 1, figsize=(1.8 * (len(names) + 1), 1.8 * len(shown)), squeeze=False
    )
    for r, i in enumerate(shown):
        axes[r, 0].imshow(frames.images[i], interpolation="nearest")
        axes[r, 0].set_ylabel(frames.keys[i], fontsize=7)
        for c, a in enumerate(names, 1):
            axes[r, c].imshow(frames.images[i], interpolation="nearest")
            if len(clicks[a][i]):
                m = clicks_to_map(clicks[a][i], frames.height, frames.width)
                axes[r, c].imshow(m, cmap="jet", alpha=0.75 * np.sqrt(m), vmin=0, vmax=1, interpolation="bilinear")
        for c, title in enumerate(["frame"] + names):
            axes[0, c].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return write_figure(fig, path)


def run(cfg: AgreementConfig) -> Path:
    """Compute, print and save the agreement tables (and picture); returns the CSV path."""
    frames = load_frameset(cfg.root, cfg.task)
    clicks = annotator_clicks(cfg.root, frames)
    if len(clicks) == 1:
        raise AnnotationError(
            f"no human annotations for {cfg.task!r} under {cfg.root}; annotate with `python -m annotate_app` first"
        )
    rows = agreement_rows(frames, clicks)
    out = Path(cfg.out) if cfg.out else task_dir(cfg.root, cfg.task)
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["pred", "reference", "frame", "key", *METRIC_NAMES])
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_bytes(out / "agreement.csv", table.getvalue().encode())  # a kill keeps the previous one
    print(f"Per frame ({cfg.task}; pred's map vs reference's map / clicked pixels):\n")
    print(format_table(rows, ["pred", "reference", "frame", "key"]))
    print("\nMean over frames:\n")
    print(format_table(summarise(rows), ["pred", "reference", "frames"]))
    if cfg.figure_frames:
        fig = draw_grid(frames, clicks, out / "agreement.png", cfg.figure_frames)
        if fig:
            print(f"\npicture grid: {fig}")
    print(f"table: {csv_path}")
    return csv_path


def main(argv=None) -> None:
    run_command(AgreementConfig, run, argv, errors=(AnnotationError,))


if __name__ == "__main__":
    main()
