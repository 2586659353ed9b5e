"""The report's pictures: performance profiles, learning curves, and the earlier stages' pictures it collects."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report draws without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from common.figures import write_figure  # noqa: E402
from pipeline import stats  # noqa: E402
from pipeline.report.cells import FEW_RUNS, MIN_BOOTSTRAP_RUNS, count_noun, seeds_of_plan  # noqa: E402
from pipeline.report.config import PlannedSeeds  # noqa: E402
from pipeline.report.runs import encoder_matrices, evaluation_sizes, row_label, row_order  # noqa: E402

PICTURE_GLOBS = {
    "Saliency examples (the paper's Fig. 7)": ["saliency/**/fig7*.png"],
    "MultiMAE reconstructions (the paper's Fig. 6)": ["mmae/**/figures/*.png"],
    "Gaze overlays": ["sac/**/gaze*.png"],
}


def plot_profiles(runs: list[dict], out: Path, reps: int = stats.REPS, seed: int = 0) -> Path | None:
    """rliable's performance profiles (score distributions): per encoder, the fraction of its runs (all
    tasks) whose final success exceeds each threshold, with a stratified bootstrap 95 % band (its legend entry
    marked FEW_RUNS below MIN_BOOTSTRAP_RUNS runs per task, where the band is no 95 % band)."""
    matrices = encoder_matrices(runs)
    if not matrices:
        return None
    taus = np.linspace(0.0, 1.0, 101)
    profiles, bands = stats.performance_profiles({e: m for e, (_, m) in matrices.items()}, taus, reps=reps, seed=seed)
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for enc, (tasks, scores) in matrices.items():
        (line,) = ax.plot(
            taus,
            profiles[enc],
            label=f"{row_label(enc)} ({count_noun(len(scores), 'run')} x {count_noun(len(tasks), 'task')})"
            + (FEW_RUNS if len(scores) < MIN_BOOTSTRAP_RUNS else ""),
        )
        ax.fill_between(taus, bands[enc][0], bands[enc][1], alpha=0.15, color=line.get_color())
    tasks = sorted({t for ts, _ in matrices.values() for t in ts})
    ax.set(
        title=f"Performance profiles (final success, {tasks[0] if len(tasks) == 1 else 'all tasks'})",
        xlabel="success threshold tau",
        ylabel="fraction of runs with success > tau",
        ylim=(-0.02, 1.02),
    )
    ax.grid(alpha=0.3)
    below_axes(fig, ax.get_legend_handles_labels()[0], columns=2)
    return write_figure(fig, out / "performance_profiles.png")


def below_axes(fig: plt.Figure, handles: list, columns: int) -> None:
    """One legend for the whole figure, under its panels, where it covers no curve or band."""
    fig.legend(handles=handles, loc="outside lower center", ncol=min(columns, len(handles)), fontsize=8, frameon=False)


def profiles_caption(runs: list[dict]) -> str:
    """What the profiles' shaded bands are, and where they are no 95 % band (FEW_RUNS)."""
    few = sorted(row_label(e) for e, (_, m) in encoder_matrices(runs).items() if len(m) < MIN_BOOTSTRAP_RUNS)
    return "Shaded: the stratified bootstrap 95 % band of each profile (the aggregates' resampling)." + (
        f" {FEW_RUNS} fewer than {MIN_BOOTSTRAP_RUNS} runs per task ({', '.join(few)}): there the band spans little "
        "more than the runs themselves and is no 95 % band."
        if few
        else ""
    )


def plot_curves(
    runs: list[dict], out: Path, planned: PlannedSeeds = PlannedSeeds(), floors: dict[str, list[dict]] | None = None
) -> dict[str, Path]:
    """One PNG per task: evaluation success (the paper's Fig. 3) and return vs env steps, the mean across
    seeds (a marker at every evaluation) with a shaded 95 % Student-t band over seeds. The return shows
    learning long before the first success. An encoder's curve stops at the last step all its seeds
    have evaluated (dashed while any of them is still running); its legend counts its seeds of the `planned`
    ones. Evaluations with more or fewer episodes than most (the CPU table's final 50 after 10 each) are
    diamonds, named in the legend. A task's random-policy evaluations (`floors`: runs.load_random_policy) are a
    dotted gray line at their mean success and return over seeds."""
    paths, floors = {}, floors or {}
    for task in sorted({r["task"] for r in runs}):
        task_runs = [r for r in runs if r["task"] == task]
        usual, other = evaluation_sizes(task_runs)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
        for ax, key, label in ((axes[0], "curve", "success rate"), (axes[1], "return_curve", "evaluation return")):
            by_enc = defaultdict(list)
            for r in task_runs:
                if r.get(key):
                    by_enc[r["encoder"]].append(r)
            for enc, rs in sorted(by_enc.items(), key=lambda kv: row_order(kv[0])):
                curves = [r[key] for r in rs]
                running = any(r.get("running") for r in rs)
                end = min(c[-1][0] for c in curves)  # never extrapolate a seed past its last evaluation
                steps = sorted({s for c in curves for s, _ in c if s <= end})
                ys = np.array([np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in curves])  # [seeds, T]
                mean = ys.mean(0)  # [T]
                legend = (
                    f"{row_label(enc)} ({seeds_of_plan(len(ys), planned(enc, task))}{', running' if running else ''})"
                )
                (line,) = ax.plot(
                    steps, mean, marker="o", markersize=3, label=legend, linestyle="--" if running else "-"
                )
                odd = {s for steps_of_n in evaluation_sizes(rs, usual)[1].values() for s in steps_of_n}
                at = [i for i, s in enumerate(steps) if s in odd]
                ax.plot([steps[i] for i in at], mean[at], "D", markersize=6, color=line.get_color())
                if len(ys) > 1:
                    lo, hi = stats.t_interval(ys)
                    ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
            if floors.get(task):
                field = "success_rate" if key == "curve" else "return_mean"
                level = float(np.mean([f[field] for f in floors[task]]))
                ax.axhline(level, color="gray", linestyle=":", label=f"random actions ({len(floors[task])} seeds)")
            ax.set(title=f"{task}: {label}", xlabel="environment steps", ylabel=label)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))  # as the curve table's columns
            ax.grid(alpha=0.3)
        axes[0].set_ylim(-0.02, 1.02)
        handles, _ = axes[0].get_legend_handles_labels()
        if other:
            sizes = " / ".join(str(n) for n in other)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="D",
                    color="gray",
                    linestyle="none",
                    label=f"{sizes} episodes per seed (others: {usual})",
                )
            )
        below_axes(fig, handles, columns=3)
        paths[task] = write_figure(fig, out / f"curves_{task}.png")
    return paths


def collect_pictures(root: Path, out: Path) -> dict[str, list[Path]]:
    """Copy the newest picture of each kind from every run folder next to the report (self-contained)."""
    found: dict[str, list[Path]] = {}
    for title, patterns in PICTURE_GLOBS.items():
        newest_per_folder: dict[Path, Path] = {}
        for pic in sorted({p for pat in patterns for p in root.glob(pat)}):
            newest_per_folder[pic.parent] = pic  # names sort by epoch/step: keep the last of each run
        pics = sorted(newest_per_folder.values())[:6]
        copies = []
        for p in pics:
            target = out / "pictures" / "_".join(p.relative_to(root).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            copies.append(target)
        if copies:
            found[title] = copies
    return found
