"""`python -m pipeline.report runs/sac [more roots] [--out runs/report]`: REPORT.md and its pictures.

Reads only what runs leave on disk: every `summary.json` below the given roots (one per finished
SAC run, beside its `eval.csv`), the `eval.csv` of runs still going (a `config.json` and no
`summary.json` yet), plus pictures the earlier stages write (saliency examples, MultiMAE
reconstructions, gaze overlays), so it works on any mix of finished and running grids.
Sections: the paper's Table I analog with the paper's numbers beside ours (finished runs only), the
runs in progress at the newest evaluation all their seeds have reached, learning curves per task
(the paper's Fig. 3; an encoder's curve ends where its least advanced seed ends), the linear probe
of every frozen MultiMAE encoder (the probe_<inputs>.json `pretrain.probe` writes beside each
encoder.pt), pictures, and a footer with the budget, seed, device
and wall time of every run.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.cli import run_command  # noqa: E402
from common.figures import write_figure  # noqa: E402
from data.env import PAPER_TASKS  # noqa: E402
from rl.encoders import ENCODER_LABELS, TABLE_I  # noqa: E402  (labels of every registered encoder, gaze ones included)

#: The paper's Table I: success over 50 rollouts and 3 seeds (mean, std), 1M steps.
PAPER_TABLE_I: dict[str, dict[str, tuple[float, float]]] = {
    "cnn_rgb": {"reach-v3": (0.39, 0.13), "drawer-open-v3": (0.18, 0.25), "faucet-open-v3": (0.82, 0.02), "door-open-v3": (0.42, 0.04)},
    "cnn_saliency": {"reach-v3": (0.04, 0.01), "drawer-open-v3": (0.04, 0.02), "faucet-open-v3": (0.01, 0.01), "door-open-v3": (0.10, 0.06)},
    "cnn_rgb_x_saliency": {"reach-v3": (0.38, 0.05), "drawer-open-v3": (0.09, 0.04), "faucet-open-v3": (0.71, 0.16), "door-open-v3": (0.22, 0.10)},
    "cnn_rgbs": {"reach-v3": (0.51, 0.07), "drawer-open-v3": (0.48, 0.07), "faucet-open-v3": (0.85, 0.01), "door-open-v3": (0.48, 0.07)},
    "mmae_rgb": {"reach-v3": (0.49, 0.03), "drawer-open-v3": (0.83, 0.20), "faucet-open-v3": (0.19, 0.03), "door-open-v3": (0.35, 0.19)},
    "mmae_rgbs_po": {"reach-v3": (0.48, 0.06), "drawer-open-v3": (0.88, 0.21), "faucet-open-v3": (0.40, 0.21), "door-open-v3": (0.52, 0.08)},
    "mmae_rgbs": {"reach-v3": (0.62, 0.05), "drawer-open-v3": (0.94, 0.03), "faucet-open-v3": (0.61, 0.16), "door-open-v3": (0.64, 0.02)},
}
#: the orderings the papers claim, (worse, better): ViSaRL's Table I, and Gaze on the Prize over CNN RGB
PAPER_ORDERINGS: tuple[tuple[str, str], ...] = (
    ("cnn_rgb", "cnn_rgbs"), ("mmae_rgb", "mmae_rgbs_po"), ("mmae_rgbs_po", "mmae_rgbs"), ("mmae_rgb", "mmae_rgbs"),
    ("cnn_rgb", "gaze"),
)
ENCODER_ORDER = ["state", *TABLE_I, *(e for e in ENCODER_LABELS if e not in TABLE_I and e != "state")]
PICTURE_GLOBS = {
    "Saliency examples (the paper's Fig. 7)": ["saliency/**/fig7*.png"],
    "MultiMAE reconstructions (the paper's Fig. 6)": ["mmae/**/figures/*.png"],
    "Gaze overlays": ["sac/**/gaze*.png"],
}
#: where pretrain.probe writes its results (below the pictures root), and the positions it scores
PROBE_GLOB = "mmae/**/probe_*.json"
PROBE_TARGETS = ("hand", "object", "goal")


@dataclass
class ReportConfig:
    """Write REPORT.md (+ PNGs) comparing every SAC run below the given roots (finished, and in progress so far)."""

    roots: str = field(default="runs/sac", metadata={"help": "comma-separated folders searched for summary.json (also as leading words: `python -m pipeline.report runs/sac runs/other`)", "positional": True})
    out: str = field(default="runs/report", metadata={"help": "folder for REPORT.md and its pictures"})
    pictures_root: str = field(default="runs", metadata={"help": "folder searched for stage pictures (saliency, mmae, gaze)"})
    title: str = field(default="ViSaRL vs Gaze on the Prize on Meta-World", metadata={"help": "report title"})


def load_runs(roots: list[Path]) -> list[dict]:
    """Every finished run: its summary.json plus the eval curve from eval.csv."""
    runs = []
    for root in roots:
        for summary in sorted(root.glob("**/summary.json")):
            run = json.loads(summary.read_text())
            run["dir"] = summary.parent
            run["curve"] = _read_curve(summary.parent / "eval.csv", "success")
            run["return_curve"] = _read_curve(summary.parent / "eval.csv", "return_mean")
            runs.append(run)
    return runs


def load_running(roots: list[Path]) -> list[dict]:
    """Every run still going (config.json and an evaluation in eval.csv, no summary.json yet): its
    task, encoder, seed, budget ("steps") and eval curves so far, with "running": True."""
    runs = []
    for root in roots:
        for config in sorted(root.glob("**/config.json")):
            run_dir = config.parent
            if (run_dir / "summary.json").exists() or not (run_dir / "eval.csv").exists():
                continue
            cfg = json.loads(config.read_text())
            curve = _read_curve(run_dir / "eval.csv", "success")
            if "encoder" in cfg and curve:  # an SAC run (other stages write config.json too)
                runs.append({"task": cfg.get("task", "?"), "encoder": cfg["encoder"], "seed": cfg.get("seed"),
                             "steps": cfg.get("steps"), "dir": run_dir, "curve": curve, "running": True,
                             "return_curve": _read_curve(run_dir / "eval.csv", "return_mean")})
    return runs


def _read_curve(path: Path, column: str) -> list[tuple[float, float]]:
    """(step, value) of the first eval.csv column whose name contains `column`."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    key = next((k for k in (rows[0] if rows else {}) if column in k), None)
    return [(float(r["step"]), float(r[key])) for r in rows if key and r.get(key) not in (None, "")]


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over seeds (values [n] or [n, T] -> per column)."""
    means = _resampled_means(np.asarray(values, float), np.random.default_rng(seed), resamples)  # [resamples(, T)]
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def _resampled_means(x: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of `resamples` resamples (with replacement) of the seeds (rows) of x."""
    return x[rng.integers(0, len(x), (resamples, len(x)))].mean(1)


def bootstrap_diff_ci(worse, better, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(better) - mean(worse), the seeds of each resampled on their own."""
    rng = np.random.default_rng(seed)
    diffs = (_resampled_means(np.asarray(better, float), rng, resamples)
             - _resampled_means(np.asarray(worse, float), rng, resamples))  # [resamples]
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ordering_table(runs: list[dict]) -> str:
    """Markdown: each ordering the papers claim (PAPER_ORDERINGS) on each task where both encoders
    finished: our difference of mean final success with its 95 % bootstrap CI, the verdict (holds
    only when the CI excludes 0), and the paper's difference."""
    tasks, by = _final_success(runs)
    lines = ["| Claim | Task | Ours: better - worse [95 % CI] | Verdict | Paper |", "|---|---|---|---|---|"]
    for worse, better in PAPER_ORDERINGS:
        for task in tasks:
            a, b = by.get((worse, task), []), by.get((better, task), [])
            if not a or not b:
                continue
            lo, hi = bootstrap_diff_ci(a, b)
            verdict = ("holds" if lo > 0 else "reversed" if hi < 0 else "not resolved (the CI contains 0)") + \
                (f" (n={len(a)} / {len(b)})" if min(len(a), len(b)) < 3 else "")
            pa, pb = PAPER_TABLE_I.get(worse, {}).get(task), PAPER_TABLE_I.get(better, {}).get(task)
            paper = f"{pb[0] - pa[0]:+.2f}" if pa and pb else "n/a"
            lines.append(f"| {ENCODER_LABELS.get(worse, worse)} < {ENCODER_LABELS.get(better, better)} | {task} | "
                         f"{np.mean(b) - np.mean(a):+.2f} [{lo:+.2f}, {hi:+.2f}] | {verdict} | {paper} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _fmt(values: list[float], spec: str = ".2f") -> str:
    """mean ± std [95 % bootstrap CI of the mean] over seeds."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    lo, hi = bootstrap_ci(values)
    return f"{np.mean(values):{spec}} ± {np.std(values):{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _final_success(runs: list[dict]) -> tuple[list[str], dict[tuple[str, str], list[float]]]:
    """The tasks of `runs` (the paper's first, in its order) and the final success of every seed by (encoder, task)."""
    tasks = [t for t in PAPER_TASKS if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    by = defaultdict(list)
    for r in runs:
        by[(r["encoder"], r["task"])].append(float(r["success_rate"]))
    return tasks, by


def table_i(runs: list[dict]) -> str:
    """Markdown Table I analog: mean ± std [95 % bootstrap CI] over seeds of the final success rate, paper beside ours."""
    tasks, by = _final_success(runs)
    encoders = sorted({r["encoder"] for r in runs}, key=_encoder_key)
    lines = ["| Encoder | " + " | ".join(f"{t} (ours / paper)" for t in tasks) + " | Average (ours) |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for enc in encoders:
        cells, means = [], []
        for t in tasks:
            vals = by.get((enc, t), [])
            paper = PAPER_TABLE_I.get(enc, {}).get(t)
            paper_s = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "n/a"
            cells.append(f"{_fmt(vals)} (n={len(vals)}) / {paper_s}")
            if vals:
                means.append(float(np.mean(vals)))
        average = f"{np.mean(means):.2f}" if means else "-"
        lines.append(f"| {ENCODER_LABELS.get(enc, enc)} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def _encoder_key(encoder: str) -> int:
    return ENCODER_ORDER.index(encoder) if encoder in ENCODER_ORDER else 99


def progress_table(running: list[dict]) -> str:
    """Markdown: per encoder and task still running, success and return at the newest evaluation step
    that every one of its seeds has reached (mean ± std [95 % bootstrap CI] over those seeds)."""
    groups = defaultdict(list)
    for r in running:
        groups[(r["encoder"], r["task"])].append(r)
    lines = ["| Encoder | Task | Evaluated at (env steps) | Success | Evaluation return |", "|---|---|---|---|---|"]
    for (enc, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], _encoder_key(kv[0][0]))):
        step = min(r["curve"][-1][0] for r in rs)
        at = [r for r in rs if step in dict(r["curve"])]  # seeds on another evaluation schedule are left out
        success = [dict(r["curve"])[step] for r in at]
        returns = [ret[step] for ret in (dict(r["return_curve"]) for r in at) if step in ret]
        budgets = "/".join(sorted({f"{r['steps']:,}" for r in at if r["steps"]}))
        seeds = ", ".join(str(r["seed"]) for r in sorted(at, key=lambda r: r["seed"] or 0))
        lines.append(f"| {ENCODER_LABELS.get(enc, enc)} | {task} | {step:,.0f} of {budgets or '?'} | "
                     f"{_fmt(success)} (n={len(success)}; seeds {seeds}) | {_fmt(returns, '.0f')} |")
    return "\n".join(lines)


def curve_table(runs: list[dict], task: str, max_columns: int = 10) -> str:
    """Markdown: the success curves of `task` as numbers, an encoder per row and an evaluation step per
    column (the newest `max_columns`): mean [95 % bootstrap CI] over the seeds evaluated at that step,
    with their count where it differs from the encoder's number of seeds."""
    by_enc = defaultdict(list)
    for r in runs:
        if r["task"] == task and r.get("curve"):
            by_enc[r["encoder"]].append(dict(r["curve"]))
    steps = sorted({s for curves in by_enc.values() for c in curves for s in c})[-max_columns:]
    lines = ["| Encoder | " + " | ".join(f"{s / 1000:g}k" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for enc, curves in sorted(by_enc.items(), key=lambda kv: _encoder_key(kv[0])):
        cells = []
        for s in steps:
            values = [c[s] for c in curves if s in c]
            if len(values) > 1:
                lo, hi = bootstrap_ci(values)
                cell = f"{np.mean(values):.2f} [{lo:.2f}, {hi:.2f}]"
            else:
                cell = f"{values[0]:.2f}" if values else "-"
            cells.append(cell + (f" (n={len(values)})" if values and len(values) != len(curves) else ""))
        lines.append(f"| {ENCODER_LABELS.get(enc, enc)} (n={len(curves)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], out: Path) -> dict[str, Path]:
    """One PNG per task: evaluation success (the paper's Fig. 3) and return vs env steps, the mean across
    seeds (a marker at every evaluation) with a shaded 95 % bootstrap confidence band over seeds. The
    return shows learning long before the first success. An encoder's curve stops at the last step
    all its seeds have evaluated (dashed while any of them is still running)."""
    paths = {}
    for task in sorted({r["task"] for r in runs}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, label in ((axes[0], "curve", "success rate"), (axes[1], "return_curve", "evaluation return")):
            by_enc, running = defaultdict(list), set()
            for r in runs:
                if r["task"] == task and r.get(key):
                    by_enc[r["encoder"]].append(r[key])
                    if r.get("running"):
                        running.add(r["encoder"])
            for enc, curves in sorted(by_enc.items(), key=lambda kv: _encoder_key(kv[0])):
                end = min(c[-1][0] for c in curves)  # never extrapolate a seed past its last evaluation
                steps = sorted({s for c in curves for s, _ in c if s <= end})
                ys = np.array([np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in curves])  # [seeds, T]
                legend = f"{ENCODER_LABELS.get(enc, enc)} (n={len(ys)}{', running' if enc in running else ''})"
                line, = ax.plot(steps, ys.mean(0), marker="o", markersize=3, label=legend,
                                linestyle="--" if enc in running else "-")
                if len(ys) > 1:
                    lo, hi = bootstrap_ci(ys)
                    ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
            ax.set(title=f"{task}: {label}", xlabel="environment steps", ylabel=label)
            ax.grid(alpha=0.3)
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].legend(fontsize=7)
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


def load_probes(root: Path) -> list[dict]:
    """Every probe result below `root` (pretrain.probe's JSON), with "file" relative to `root`."""
    probes = []
    for path in sorted(root.glob(PROBE_GLOB)):
        result = json.loads(path.read_text())
        result["file"] = path.relative_to(root)
        probes.append(result)
    return probes


def _r2(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"  # NaN: a position that never moved


def probe_table(probes: list[dict]) -> str:
    """Markdown: R^2 of hand/object/goal per encoder, inputs and pool (the replay buffer's precision in
    parentheses when it loses more than 0.005), then the probes' warnings."""
    lines = ["| Encoder | Inputs | Features | Pool | Dim | " + " | ".join(f"{t} R^2" for t in PROBE_TARGETS) + " |",
             "|---|---|---|---|---|" + "---|" * len(PROBE_TARGETS)]
    warnings = []
    for probe in probes:
        encoder = probe["file"].parent / Path(probe["encoder"]).name
        for row in probe["rows"]:
            cells = []
            for t in PROBE_TARGETS:
                r2, kept = row["r2"].get(t), row.get("r2_stored", {}).get(t)
                lost = r2 is not None and kept is not None and r2 - kept > 0.005
                cells.append(f"{_r2(r2)} ({_r2(kept)} in {probe['store']})" if lost else _r2(r2))
            lines.append(f"| {encoder} | {'+'.join(probe['inputs'])} | {row['kind']} | {row['pool']} | {row['dim']} | "
                         + " | ".join(cells) + " |")
        warnings += probe.get("warnings", [])
    return "\n".join(lines + [""] + [f"- WARNING: {w}" for w in warnings])


def footer(runs: list[dict]) -> str:
    lines = ["| Run | Steps | Preset | Seed | Eval episodes | Device | Wall time | Steps/s |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["encoder"], r["seed"])):
        lines.append(f"| {r['task']}/{r['encoder']} | {r['steps']:,} | {r.get('preset') or '-'} | {r['seed']} | "
                     f"{r.get('eval_episodes', '-')} | {r.get('device', '?')} | {r.get('wall_time_s', 0) / 60:.1f} min | "
                     f"{r.get('steps_per_s', '-')} |")
    return "\n".join(lines)


def write_report(cfg: ReportConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [Path(r) for r in cfg.roots.split(",") if r]
    runs, running = load_runs(roots), load_running(roots)
    if not runs and not running:
        raise SystemExit(f"error: no finished runs (summary.json) and no evaluated running ones (eval.csv) under {cfg.roots}; "
                         "run `python -m rl.grid` or `python -m rl.sac` first")
    curves = plot_curves(runs + running, out)
    pictures = collect_pictures(Path(cfg.pictures_root), out)
    probes = load_probes(Path(cfg.pictures_root))
    budgets = sorted({r["steps"] for r in runs + running if r["steps"]})
    devices = sorted({r.get("device", "?") for r in runs})
    parts = [
        f"# {cfg.title}\n",
        f"{len(runs)} finished SAC runs" + (f" and {len(running)} still running" if running else "")
        + f"; budgets (env steps): {', '.join(f'{b:,}' for b in budgets)}"
        + (f"; devices: {', '.join(devices)}" if devices else "") + ". The paper's numbers are at 1M steps "
        "with 3 seeds and 50 rollouts: runs with smaller budgets are not comparable in level, only in ordering.\n",
        "## Success rate (the paper's Table I)\n",
        "Final evaluation of the deterministic policy (any success within an episode), mean ± std over seeds "
        "[95 % percentile-bootstrap confidence interval of the mean over seeds].\n",
        (table_i(runs) if runs else "No run has finished yet.") + "\n",
    ]
    orderings = ordering_table(runs)
    if orderings:
        parts += ["## The papers' orderings\n",
                  "Each claimed ordering where both encoders finished: the difference of mean final success "
                  "(percentile bootstrap over each encoder's seeds); it holds only when its CI excludes 0.\n",
                  orderings + "\n"]
    if running:
        parts += ["## Runs in progress\n",
                  "Not final: each encoder at the newest evaluation all its running seeds have reached "
                  "(mean ± std [95 % bootstrap CI] over those seeds).\n",
                  progress_table(running) + "\n"]
    parts += ["## Learning curves (the paper's Fig. 3)\n"]
    for task, picture in curves.items():
        parts += [f"![{picture.stem}]({picture.relative_to(out)})\n",
                  f"Success at each evaluation on {task}, mean [95 % bootstrap CI] over seeds:\n",
                  curve_table(runs + running, task) + "\n"]
    if probes:
        parts += ["## Frozen MultiMAE probe\n",
                  "Linear-probe R^2 of the hand, object and goal positions from each frozen encoder's features, "
                  "scored on frames of held-out episodes (`python -m pretrain.probe`); random init and raw pixels "
                  "are the baselines.\n",
                  probe_table(probes) + "\n"]
    for title, pics in pictures.items():
        parts += [f"## {title}\n", *[f"![{p.stem}]({p.relative_to(out)})\n" for p in pics]]
    parts += ["## Runs\n", footer(runs) + "\n"]
    report = out / "REPORT.md"
    report.write_text("\n".join(parts))
    return report


def main(argv=None) -> None:
    print(f"report: {run_command(ReportConfig, write_report, argv)}")


if __name__ == "__main__":
    main()
