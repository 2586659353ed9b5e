"""`python -m pipeline.report results/<experiment> [more roots] [--out runs/report]`: REPORT.md and its pictures.

Reads only what runs leave on disk: every `summary.json` below the given roots (one per finished
SAC run, beside its `eval.csv`), the `eval.csv` of runs still going (a `config.json` and no
`summary.json` yet), plus pictures the earlier stages write (saliency examples, MultiMAE
reconstructions, gaze overlays), so it works on a run tree (`runs/sac`), on the raw results
committed under `results/<experiment>` (`pipeline.keep` copies them there), and on any mix of
finished and running grids.
Sections: the paper's Table I analog with the paper's numbers beside ours (final evaluation with a
Student-t interval over seeds, and the success over the last 3 evaluations), every seed's value per task,
rliable's aggregates across tasks and seeds (IQM and mean with stratified bootstrap CIs, performance
profiles), the papers' orderings (across tasks the mean per-task gap with a stratified Welch t-interval,
which decides, beside rliable's probability of improvement; Welch t-intervals per task; and how many seeds
the observed spread needs to resolve the paper's gap), settings against their defaults, diverged runs
(counted as success 0 from where they diverged), the runs in progress,
learning curves per task (the paper's Fig. 3, t-interval bands), the linear probe of every frozen
MultiMAE encoder, pictures, and a footer with the budget, seed, device and wall time of every run.
Intervals over seeds are Student-t, never a percentile bootstrap (at 3 seeds that is [min, max],
~74 % coverage); bootstrap intervals appear only in rliable's aggregates and probabilities of improvement, with
their simulated coverage. `--planned-seeds` marks cells short of their planned seeds ('n of N', interim).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.cli import flat_dict, option, run_command  # noqa: E402
from common.figures import write_figure  # noqa: E402
from common.io import atomic_write_bytes  # noqa: E402
from data.env import PAPER_TASKS  # noqa: E402
from pipeline import stats  # noqa: E402
from pipeline.keep import KEPT_MODELS, KEPT_SALIENCY_EVAL, KEPT_STAGES, PROBE_GLOB  # noqa: E402
from rl import outcome  # noqa: E402
from rl.config import SACConfig  # noqa: E402
from rl.encoders import ENCODER_LABELS, TABLE_I, field_applies  # noqa: E402  (labels of every registered encoder, gaze ones included)

#: The paper's Table I: success over 50 rollouts and 3 seeds (mean, std), 1M steps.
PAPER_TABLE_I: dict[str, dict[str, tuple[float, float]]] = {
    "cnn_rgb": {
        "reach-v3": (0.39, 0.13),
        "drawer-open-v3": (0.18, 0.25),
        "faucet-open-v3": (0.82, 0.02),
        "door-open-v3": (0.42, 0.04),
    },
    "cnn_saliency": {
        "reach-v3": (0.04, 0.01),
        "drawer-open-v3": (0.04, 0.02),
        "faucet-open-v3": (0.01, 0.01),
        "door-open-v3": (0.10, 0.06),
    },
    "cnn_rgb_x_saliency": {
        "reach-v3": (0.38, 0.05),
        "drawer-open-v3": (0.09, 0.04),
        "faucet-open-v3": (0.71, 0.16),
        "door-open-v3": (0.22, 0.10),
    },
    "cnn_rgbs": {
        "reach-v3": (0.51, 0.07),
        "drawer-open-v3": (0.48, 0.07),
        "faucet-open-v3": (0.85, 0.01),
        "door-open-v3": (0.48, 0.07),
    },
    "mmae_rgb": {
        "reach-v3": (0.49, 0.03),
        "drawer-open-v3": (0.83, 0.20),
        "faucet-open-v3": (0.19, 0.03),
        "door-open-v3": (0.35, 0.19),
    },
    "mmae_rgbs_po": {
        "reach-v3": (0.48, 0.06),
        "drawer-open-v3": (0.88, 0.21),
        "faucet-open-v3": (0.40, 0.21),
        "door-open-v3": (0.52, 0.08),
    },
    "mmae_rgbs": {
        "reach-v3": (0.62, 0.05),
        "drawer-open-v3": (0.94, 0.03),
        "faucet-open-v3": (0.61, 0.16),
        "door-open-v3": (0.64, 0.02),
    },
}
#: Table I's printed "Average" column (ViSaRL's 0.65 is not the mean of its four tasks, 0.70; the report
#: computes the paper's gaps from the per-task numbers)
PAPER_TABLE_I_AVERAGE: dict[str, float] = {
    "cnn_rgb": 0.45,
    "cnn_saliency": 0.05,
    "cnn_rgb_x_saliency": 0.35,
    "cnn_rgbs": 0.58,
    "mmae_rgb": 0.47,
    "mmae_rgbs_po": 0.57,
    "mmae_rgbs": 0.65,
}
#: the orderings the papers claim, (worse, better): ViSaRL's Table I, and Gaze on the Prize over CNN RGB
PAPER_ORDERINGS: tuple[tuple[str, str], ...] = (
    ("cnn_rgb", "cnn_rgbs"),
    ("mmae_rgb", "mmae_rgbs_po"),
    ("mmae_rgbs_po", "mmae_rgbs"),
    ("mmae_rgb", "mmae_rgbs"),
    ("cnn_rgb", "gaze"),
)
ENCODER_ORDER = ["state", *TABLE_I, *(e for e in ENCODER_LABELS if e not in TABLE_I and e != "state")]
PICTURE_GLOBS = {
    "Saliency examples (the paper's Fig. 7)": ["saliency/**/fig7*.png"],
    "MultiMAE reconstructions (the paper's Fig. 6)": ["mmae/**/figures/*.png"],
    "Gaze overlays": ["sac/**/gaze*.png"],
}
#: the positions pretrain.probe scores (its result files: pipeline.keep.PROBE_GLOB)
PROBE_TARGETS = ("hand", "object", "goal")
#: a seed's score beside its final evaluation: its success over its last LAST_EVALS evaluations (one is noisy)
LAST_EVALS = 3
#: simulated experiments behind the coverage the report states for its bootstrap intervals
COVERAGE_EXPERIMENTS = 2000
#: below this many runs per task (on a side, in a comparison) a percentile bootstrap, which resamples within each
#: task, is no 95 % interval (at 3 runs it is [min, max]): such intervals are marked (none decides a verdict)
MIN_BOOTSTRAP_RUNS = 5
FEW_RUNS = "†"
FEW_RUNS_NOTE = (
    f"{FEW_RUNS} fewer than {MIN_BOOTSTRAP_RUNS} runs per task (in a comparison, on a side): the percentile "
    "bootstrap, which resamples within each task, is not a 95 % interval here (over 3 runs it is [min, max]); read "
    "the Student-t and Welch intervals instead."
)
#: the spreads (sd of final success over seeds) of the two sides in the simulation behind the Welch coverage stated
WELCH_SPREADS = ((0.1, 0.3), (0.3, 0.1))


@dataclass(frozen=True)
class PlannedSeeds:
    """--planned-seeds parsed: 'N' for every (encoder, task), or 'task/encoder=N' entries whose fnmatch patterns are
    tried in order (an encoder row with settings, 'mmae_rgbs [precision=bf16]', is matched as its encoder)."""

    entries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> PlannedSeeds:
        entries = []
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            pattern, _, count = entry.rpartition("=") if "=" in entry else ("*", "", entry)
            pattern, count = pattern.strip(), count.strip()
            if not count.isdecimal() or not (pattern == "*" or re.fullmatch(r"[\w.*?-]+/[\w.*?-]+", pattern)):
                raise ValueError(
                    f"--planned-seeds entry {entry!r} is not N or task/encoder=N (fnmatch patterns of a task and an "
                    "encoder without its settings, e.g. 'reach-v3/*=10,*=5'): give the seeds planned per encoder and task"
                )
            entries.append((pattern, int(count)))
        return cls(tuple(entries))

    def __call__(self, encoder: str, task: str) -> int:
        """The seeds planned for `encoder` on `task` (0: not stated)."""
        cell = f"{task}/{encoder.partition(' ')[0]}"
        return next((n for pattern, n in self.entries if pattern == "*" or fnmatch.fnmatchcase(cell, pattern)), 0)

    def cells(self) -> list[tuple[str, str]]:
        """The (encoder, task) the entries name exactly (no pattern): planned whether or not they have runs."""
        named = [p.split("/") for p, _ in self.entries if not any(c in p for c in "*?")]
        return [(encoder, task) for task, encoder in named]


@dataclass
class ReportConfig:
    """Write REPORT.md (+ PNGs) comparing every SAC run below the given roots (finished, and in progress so far)."""

    roots: str = option(
        "runs/sac",
        "comma-separated folders searched for summary.json (also as leading words: `python -m pipeline.report results/cpu-table runs/sac`)",
        positional=True,
    )
    out: str = option("runs/report", "folder for REPORT.md and its pictures")
    pictures_root: str = option(
        "",
        "folder searched for stage pictures (saliency, mmae, gaze) and probe results; '' = the folder above the first root when that is a `sac` folder (runs/sac -> runs), else the first root",
    )
    title: str = option("ViSaRL vs Gaze on the Prize on Meta-World", "report title")
    reps: int = option(
        stats.REPS,
        "stratified bootstrap resamples (rliable) for the aggregates, probabilities of improvement and profiles",
    )
    seed: int = option(0, "seed of the bootstrap resamples (the same seed regenerates the same report)")
    planned_seeds: str = option(
        "",
        "seeds planned per encoder and task: N for all, or 'task/encoder=N' entries (fnmatch patterns, the first "
        "that matches counts; an encoder's settings are not part of it), e.g. 'reach-v3/*=10,*/cnn_rgb=3,*=5'; '' = "
        "not stated. A cell with fewer reads 'n of N' and the report says its verdicts are interim "
        "(`make cpu-table-report` gives the CPU table's plan)",
    )

    def validate(self) -> None:
        if not [r for r in self.roots.split(",") if r]:
            raise ValueError(
                "--roots is empty: name the folders holding the runs, e.g. `python -m pipeline.report results/cpu-table`"
            )
        PlannedSeeds.parse(self.planned_seeds)  # a malformed spec is refused before anything is read
        if self.reps < 100:
            raise ValueError(
                f"--reps {self.reps} is too few for a 95 % interval's tails: use >= 100 (default {stats.REPS})"
            )

    def picture_folder(self) -> Path:
        """The folder searched for pictures and probes (see pictures_root)."""
        if self.pictures_root:
            return Path(self.pictures_root)
        first = Path(self.roots.split(",")[0])
        return first.parent if first.name == "sac" else first


#: config fields that change what a row measures (README, "Faithful to the paper"), with rl.sac's defaults: a run
#: that sets one otherwise is a row of its own, e.g. "mmae_rgbs [mmae_features=raw]"
VARIANT_FIELDS: dict[str, object] = {
    name: default
    for name, default in flat_dict(SACConfig()).items()
    if name in ("mmae_features", "saliency_scale", "gaze_return_discount")
}


def row_name(config: dict) -> str:
    """The run's encoder, with the variant fields it sets otherwise than their defaults (of those that apply to its
    encoder: a CNN run's recorded --mmae-features changes nothing it does)."""
    changed = [
        f"{k}={config[k]}"
        for k, default in VARIANT_FIELDS.items()
        if k in config and config[k] != default and field_applies(k, config["encoder"])
    ]
    return with_settings(config["encoder"], changed)


def with_settings(encoder: str, settings: Sequence[str]) -> str:
    """A row's name: "mmae_rgbs", "mmae_rgbs [mmae_features=raw, precision=bf16]"."""
    return encoder + (f" [{', '.join(settings)}]" if settings else "")


def settings_of(row: str) -> list[str]:
    rest = row.partition(" ")[2]
    return rest.strip("[]").split(", ") if rest else []


def settings_but_precision(row: str) -> list[str]:
    return [x for x in settings_of(row) if not x.startswith("precision=")]


#: runs recorded before precision existed ran in it; it is the reference of a tie
REFERENCE_PRECISION = "fp32"


def split_mixed_precision(runs: list[dict]) -> list[str]:
    """Where one encoder on one task holds runs of both precisions (config.json records the resolved one), the runs
    outside its reference precision gain a "precision=<p>" setting, e.g. "state [precision=bf16]", in every row of
    that encoder there: no mean pools the two unnoticed, the ablation table compares them with the reference's runs,
    and each other setting against the default of its own precision (`default_row`). The reference is the precision
    most of its default-settings runs used (all its runs' when it has none; fp32 on a tie), so Table I's plain row
    stays whole. Returns one line per split for the report; splitting split runs again changes nothing."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        r.setdefault("precision", REFERENCE_PRECISION)
        cells[(r["task"], r["encoder"].partition(" ")[0])].append(r)
    notes = []
    for (task, encoder), rs in sorted(cells.items()):
        counts = Counter(r["precision"] for r in rs)
        if len(counts) < 2:
            continue
        # the reference is decided by the encoder's default-settings runs where it has any: the plain row (Table I's)
        plain = Counter(r["precision"] for r in rs if not settings_but_precision(r["encoder"]))
        votes = plain or counts
        reference = max(votes, key=lambda p: (votes[p], p == REFERENCE_PRECISION))
        for r in rs:
            if r["precision"] != reference:
                settings = [*settings_but_precision(r["encoder"]), f"precision={r['precision']}"]
                r["encoder"] = with_settings(r["encoder"].partition(" ")[0], settings)
        notes.append(
            f"{task}, {_label(encoder)}: "
            + ", ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda pn: (-pn[1], pn[0] != reference)))
            + f" run(s); {reference} (most of its default-settings runs) is the reference, the others are rows marked "
            "precision=<p>"
        )
    return notes


def default_row(row: str) -> str:
    """What a variant row is compared against: its encoder at the defaults in the row's own precision; a row that
    differs in precision alone is compared against the reference precision's."""
    precision = [s for s in settings_of(row) if s.startswith("precision=")]
    return with_settings(row.partition(" ")[0], precision if settings_but_precision(row) else [])


def precision_mix_note(runs: list[dict]) -> str:
    """A line naming each precision's (task, row) cells when the rows these tables pool across tasks or compare with
    each other ran in more than one precision (rows already marked precision=<p> are named by their own title), else
    "": an aggregate over tasks, or a gap between two rows, would otherwise mix bf16 and fp32 unnoticed."""
    cells: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        if not any(s.startswith("precision=") for s in settings_of(r["encoder"])):
            cells[r.get("precision", REFERENCE_PRECISION)].add(f"{r['task']} {_label(r['encoder'])}")
    if len(cells) < 2:
        return ""
    return (
        "These rows ran in different precisions, so the aggregates and gaps below mix them: "
        + "; ".join(f"{p}: {', '.join(sorted(c))}" for p, c in sorted(cells.items()))
        + "."
    )


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_runs(roots: list[Path], running: Sequence[dict] = ()) -> list[dict]:
    """Every finished run: its summary.json plus the eval curve from eval.csv, its row split by precision where its
    encoder has runs of both on its task among these and `running` (`split_mixed_precision`); then a diverged run
    counted as success 0 from the step it diverged (`count_diverged`, which reads the budget of its row)."""
    runs = []
    for root in roots:
        for summary in sorted(root.glob("**/summary.json")):
            run = json.loads(summary.read_text())
            config = _run_config(summary.parent)
            run["dir"] = summary.parent
            run["encoder"] = row_name({**config, "encoder": run["encoder"]})
            run["curve"], run["return_curve"], run["episodes_curve"] = _read_curves(
                summary.parent / "eval.csv", "success", "return_mean", "episodes"
            )
            run["config"] = config
            runs.append(run)
    split_mixed_precision([*runs, *running])
    for run in runs:
        if outcome.divergence(run):
            count_diverged(run, runs)
    return runs


def count_diverged(run: dict, runs: list[dict]) -> None:
    """A diverged run (rl.outcome) as the report counts it: at its row's budget (the largest of the steps it was
    asked for, its config.json's, and its row's finished runs' on the task: the CPU table once trained a row in two
    grids, and never resumes a run that diverged in the first), with success 0 at its final evaluation and at every
    scheduled evaluation (config.json's eval_every, and the budget) from the step it diverged that it lacks, so
    means, last evaluations and verdicts include it rather than judging the survivors alone. Its return curve is
    left out (a policy that cannot act has none)."""
    record, config = outcome.divergence(run), run.get("config", {})
    at = int(record.get("step") or run.get("steps") or 0)
    row = [r["steps"] for r in runs if (r["task"], r["encoder"]) == (run["task"], run["encoder"]) and r is not run]
    budget = max(int(config.get("steps") or 0), int(record.get("budget") or 0), *(int(s) for s in row), at)
    every = int(config.get("eval_every") or 0)
    scheduled = {*(range(-(-at // every) * every, budget + 1, every) if every else ()), budget}
    evaluated = dict(run["curve"])
    missing = {float(s): 0.0 for s in scheduled if s >= at and float(s) not in evaluated}
    run["steps"], run["success_rate"] = budget, 0.0
    run["curve"] = sorted({**evaluated, **missing}.items())
    run["return_curve"] = []
    per_eval = int(config.get("eval_episodes") or 0)  # the episodes its missing evaluations would have played
    last = int(config.get("final_eval_episodes") or 0) or per_eval
    counts = {s: float(last if s == budget else per_eval) for s in missing} if per_eval else {}
    run["episodes_curve"] = sorted({**counts, **dict(run.get("episodes_curve", []))}.items())


def diverged_table(runs: list[dict]) -> str:
    """Markdown: the runs that diverged, where and why (counted as success 0 from there)."""
    rows = [r for r in runs if outcome.DIVERGED in r]
    if not rows:
        return ""
    lines = ["| Task | Encoder | Seed | Diverged at step | Why | Last good checkpoint |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], _encoder_key(r["encoder"]), r["seed"] or 0)):
        d = r[outcome.DIVERGED]
        kept = d.get("checkpoint")
        lines.append(
            f"| {r['task']} | {_label(r['encoder'])} | {r['seed']} | {int(d.get('step') or 0):,} | {d.get('why', '?')} | "
            f"{'none' if kept is None else f'{int(kept):,}'} |"
        )
    return "\n".join(lines)


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
            curve, returns = _read_curves(run_dir / "eval.csv", "success", "return_mean")
            if "encoder" in cfg and curve:  # an SAC run (other stages write config.json too)
                runs.append(
                    {
                        "task": cfg.get("task", "?"),
                        "encoder": row_name(cfg),
                        "precision": cfg.get("precision", REFERENCE_PRECISION),
                        "seed": cfg.get("seed"),
                        "steps": cfg.get("steps"),
                        "dir": run_dir,
                        "curve": curve,
                        "running": True,
                        "return_curve": returns,
                    }
                )
    return runs


def check_distinct(runs: list[dict]) -> None:
    """Refuse two runs of one row, task and seed (e.g. a kept copy and the live folder given as two roots, or two
    experiments' folders): each would count twice, and intervals would shrink by ~1/sqrt(2) for nothing."""
    seen: dict[tuple, Path] = {}
    for r in runs:
        key = (r["encoder"], r["task"], r["seed"])
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {r['dir']} are both {key[0]} on {key[1]}, seed {key[2]}: each would count twice; "
                "give the report one copy of each experiment (e.g. results/<experiment> or its live folder, not both)"
            )
        seen[key] = r["dir"]


def _read_curves(path: Path, *columns: str) -> list[list[tuple[float, float]]]:
    """Per name in `columns`, (step, value) of the first eval.csv column whose name contains it ([] without one),
    the file read once."""
    if not path.exists():
        return [[] for _ in columns]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    curves = []
    for column in columns:
        key = next((k for k in (rows[0] if rows else {}) if column in k), None)
        curves.append([(float(r["step"]), float(r[key])) for r in rows if key and r.get(key) not in (None, "")])
    return curves


def last_evals(run: dict, k: int = LAST_EVALS) -> tuple[float, tuple[float, ...]]:
    """Success of a run over its last k evaluations (eval.csv; the final one included), one per step (a step an
    interrupted run evaluated twice counts once, its last row), and their steps; its final success and no steps
    without a curve. Pooled over their episodes where eval.csv counts them all (a final evaluation of 50 episodes
    weighs five times one of 10 before it: an equal-weight mean would be noisier than the final one alone), else
    the mean of the k."""
    by_step = dict(run.get("curve", []))
    steps = tuple(sorted(by_step)[-k:])
    if not steps:
        return float(run["success_rate"]), ()
    counts = dict(run.get("episodes_curve", []))
    weights = [counts[s] for s in steps] if all(counts.get(s, 0) > 0 for s in steps) else None
    return float(np.average([by_step[s] for s in steps], weights=weights)), steps


def last_evals_mean(run: dict, k: int = LAST_EVALS) -> float:
    """Success of a run over its last k evaluations (`last_evals`)."""
    return last_evals(run, k)[0]


def _ci(values: list[float], spec: str = ".2f") -> str:
    """mean [95 % Student-t interval of the mean over seeds]; the value alone for one seed."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    if stats.constant(values):  # a zero-width interval is no 95 % interval
        return f"{np.mean(values):{spec}} [n/a: no spread]"
    lo, hi = stats.t_interval(values)
    return f"{np.mean(values):{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _resampled(point: float, lo: float, hi: float, sides: Sequence[np.ndarray]) -> str:
    """A bootstrap estimate over the [runs, tasks] score matrices `sides` (one: an aggregate, two: a comparison) as
    'point [lo, hi]', marked FEW_RUNS below MIN_BOOTSTRAP_RUNS runs per task (on a side), or why it has no interval:
    one run per task (on a side), no spread within any task of any side (the stratified bootstrap resamples
    within tasks: equal values give a zero-width interval), or resamples that all agree."""
    runs = min(len(m) for m in sides)  # per task
    if runs < 2:
        why = "1 run per task" if len(sides) == 1 else "a side has 1 run per task"
    elif all(stats.constant(m[:, j]) for m in sides for j in range(m.shape[1])):
        why = "no spread"
    elif hi - lo <= 1e-9:  # e.g. sides that never overlap: every resample gives the same probability
        why = f"every resample gives {point:.2f}"
    else:
        return f"{point:.2f} [{lo:.2f}, {hi:.2f}]" + (FEW_RUNS if runs < MIN_BOOTSTRAP_RUNS else "")
    return f"{point:.2f} [n/a: {why}]"


def _count(have: int, planned: int = 0, running: int = 0, toward: int | None = None) -> str:
    """A cell's number of finished seeds: '3', '3 of 10' (fewer than the seeds planned count `toward` them: `have`
    unless the row is split by precision), '3, +1 running'."""
    short = (have if toward is None else toward) < planned
    return f"{have}" + (f" of {planned}" if short else "") + (f", +{running} running" if running else "")


def _toward_plan(by: dict[tuple[str, str], list[dict]], encoder: str, task: str) -> int:
    """The distinct finished seeds of `encoder` on `task` as a plan counts them: a row split by precision
    (`split_mixed_precision`) with its other precisions' runs (a plan names seeds, not precisions)."""
    key = (encoder.partition(" ")[0], settings_but_precision(encoder))
    mine = [rs for (e, t), rs in by.items() if t == task and (e.partition(" ")[0], settings_but_precision(e)) == key]
    return len({r["seed"] for rs in mine for r in rs})  # a seed run in both precisions (#23's check) counts once


def _running_counts(running: Sequence[dict]) -> Counter[tuple[str, str]]:
    """Runs still going per (encoder, task)."""
    return Counter((r["encoder"], r["task"]) for r in running)


def _waiting(
    by: dict[tuple[str, str], list[dict]], going: Counter[tuple[str, str]], planned: PlannedSeeds, tasks: Sequence[str]
) -> list[tuple[str, str]]:
    """(encoder, task) on `tasks` that `planned` names exactly or that has runs going, with no finished run of that
    encoder (this very row: a row split by precision counts apart) there yet: a row not run yet reads '0 of N', it
    is not left out (`going`: `_running_counts`)."""
    return [
        (e, t)
        for e, t in _plan_cells(going, planned)
        if t in tasks and (e, t) not in by and (planned(e, t) or going[(e, t)])
    ]


def _plan_cells(going: Counter[tuple[str, str]], planned: PlannedSeeds) -> list[tuple[str, str]]:
    """The (encoder, task) that `planned` names exactly or that have runs `going`."""
    return list(dict.fromkeys([*planned.cells(), *going]))


def _side_count(
    by: dict[tuple[str, str], list[dict]],
    going: Counter[tuple[str, str]],
    planned: PlannedSeeds,
    encoder: str,
    tasks: Sequence[str],
    have: int | None = None,
) -> str:
    """A claim's side's runs per task over `tasks` (`_count`): `have` finished on all of them (default: the fewest
    on one), of the most planned there, + the most running there."""
    return _count(
        min(len(by.get((encoder, t), [])) for t in tasks) if have is None else have,
        max(planned(encoder, t) for t in tasks),
        max(going[(encoder, t)] for t in tasks),
        min(_toward_plan(by, encoder, t) for t in tasks),
    )


def _seeds(values: list[float], spec: str = ".2f") -> str:
    return " / ".join(f"{v:{spec}}" for v in values)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _label(row: str) -> str:
    encoder, _, variant = row.partition(" ")
    return ENCODER_LABELS.get(encoder, encoder) + (f" {variant}" if variant else "")


def _encoder_key(row: str) -> tuple[int, str]:
    encoder = row.partition(" ")[0]
    return ENCODER_ORDER.index(encoder) if encoder in ENCODER_ORDER else 99, row


def _cells(runs: list[dict]) -> tuple[list[str], dict[tuple[str, str], list[dict]]]:
    """The tasks of `runs` (the paper's first, in its order) and the finished runs by (encoder, task), by seed."""
    tasks = [t for t in PAPER_TASKS if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    by = defaultdict(list)
    for r in sorted(runs, key=lambda r: (r["seed"] is None, r["seed"] or 0)):
        by[(r["encoder"], r["task"])].append(r)
    return tasks, by


def _final(rs: list[dict]) -> list[float]:
    return [float(r["success_rate"]) for r in rs]


def _paper(encoder: str, task: str) -> str:
    paper = PAPER_TABLE_I.get(encoder, {}).get(task)
    return f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "n/a"


def paper_average(encoder: str, tasks: list[str]) -> str:
    """The paper's average to set beside a row's average over `tasks`: its printed one where `tasks` are its four,
    else the mean of its numbers on `tasks`, marked (a row run on fewer tasks is not compared with all four)."""
    paper = PAPER_TABLE_I.get(encoder, {})
    if not paper or not tasks or any(t not in paper for t in tasks):
        return "n/a"
    if set(tasks) == set(paper):
        return f"{PAPER_TABLE_I_AVERAGE[encoder]:.2f}"
    return f"{np.mean([paper[t][0] for t in tasks]):.2f} ({len(tasks)} of {len(paper)} tasks)"


def _last_evals_steps(runs: list[dict]) -> tuple[int, str]:
    """How many evaluations the runs' 'last' scores pool (`last_evals`), and their steps where every run has them at the same
    steps ('50k, 75k, 100k': evaluations far apart reach back into training), else ''."""
    steps = {last_evals(r)[1] for r in runs}
    shared = next(iter(steps)) if len(steps) == 1 else ()
    return (len(shared), _steps_text(shared)) if shared else (LAST_EVALS, "")


def table_i(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown Table I analog: per encoder and task, the final success as mean [95 % t-interval] over
    seeds, each seed's success over its last 3 evaluations (`last_evals`) averaged over seeds, the seeds (of `planned`; + those still
    `running`) and the paper's mean ± std; last, the average of the encoder's task means beside the paper's
    (`paper_average`)."""
    tasks, by = _cells(runs)
    going = _running_counts(running)
    waiting = set(_waiting(by, going, planned, tasks))
    encoders = sorted({r["encoder"] for r in runs} | {e for e, _ in waiting}, key=_encoder_key)
    last = {t: _last_evals_steps([r for r in runs if r["task"] == t]) for t in tasks}  # budgets differ by task
    lines = [
        "| Encoder | "
        + " | ".join(
            f"{t}: final [95 % t-CI]; last {k}{f' ({at})' if at else ''} (n) / paper" for t, (k, at) in last.items()
        )
        + " | Average of task means: final / paper |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for enc in encoders:
        cells, means = [], []
        for t in tasks:
            rs = by.get((enc, t), [])
            n = _side_count(by, going, planned, enc, [t])
            if not rs:
                cells.append(f"-{f' (n={n})' if (enc, t) in waiting else ''} / {_paper(enc, t)}")
                continue
            lasts = [last_evals_mean(r) for r in rs]
            cells.append(f"{_ci(_final(rs))}; last {last[t][0]}: {np.mean(lasts):.2f} (n={n}) / {_paper(enc, t)}")
            means.append(float(np.mean(_final(rs))))
        ran = [t for t in tasks if by.get((enc, t))]
        average = f"{np.mean(means):.2f} / {paper_average(enc, ran)}" if means else "- / -"
        lines.append(f"| {_label(enc)} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def seed_table(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown: per task and encoder, every seed's final success and its success over its last 3 evaluations
    (`last_evals`),
    each with its mean [95 % Student-t interval] over seeds; the seeds' count beside them where it is short of
    `planned` or runs are still `running` (`_count`)."""
    tasks, by = _cells(runs)
    going = _running_counts(running)
    lines = [
        "| Task | Encoder | Seeds | Final success per seed | Mean [95 % t-CI] "
        "| Success over its last evaluations per seed (their steps) | Mean [95 % t-CI] | Paper (1M steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for enc in sorted({e for e, t in by if t == task}, key=_encoder_key):
            rs = by[(enc, task)]
            final, last = _final(rs), [last_evals_mean(r) for r in rs]
            count, at = _last_evals_steps(rs)
            n = _side_count(by, going, planned, enc, [task])
            seeds = ", ".join(str(r["seed"]) for r in rs) + (f" ({n})" if n != str(len(rs)) else "")
            lines.append(
                f"| {task} | {_label(enc)} | {seeds} | {_seeds(final)} | "
                f"{_ci(final)} | {_seeds(last)} ({at or f'last {count}, at other steps'}) | {_ci(last)} | "
                f"{_paper(enc, task)} |"
            )
    return "\n".join(lines)


def score_matrix(by: dict[tuple[str, str], list[dict]], encoder: str, tasks: list[str]) -> tuple[np.ndarray, list]:
    """Final success [runs, tasks] of `encoder` on `tasks` (rliable's layout), over the seeds it finished on
    every one of them, and those seeds."""
    per_task = [{r["seed"]: float(r["success_rate"]) for r in by.get((encoder, t), [])} for t in tasks]
    seeds = sorted(set.intersection(*(set(p) for p in per_task)), key=lambda s: (s is None, s or 0)) if per_task else []
    return np.array([[p[s] for p in per_task] for s in seeds]).reshape(len(seeds), len(tasks)), seeds


def _encoder_matrices(runs: list[dict]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per finished encoder: its tasks and its [runs, tasks] final-success matrix (encoders with a run on every task)."""
    tasks, by = _cells(runs)
    matrices = {}
    for enc in sorted({r["encoder"] for r in runs}, key=_encoder_key):
        own = [t for t in tasks if (enc, t) in by]
        scores, _ = score_matrix(by, enc, own)
        if len(scores):
            matrices[enc] = (own, scores)
    return matrices


def _coverage_note(designs: set[tuple[int, int]]) -> str:
    """What the nominal 95 % of a percentile bootstrap is worth at each (runs per task, tasks) design."""
    parts = [
        f"{_n(runs, 'run')} per task x {_n(tasks, 'task')}: "
        f"{100 * stats.bootstrap_coverage(runs, tasks, experiments=COVERAGE_EXPERIMENTS):.0f} %"
        for runs, tasks in sorted(designs)
        if runs > 1
    ]
    return (
        (
            "Percentile-bootstrap intervals cover less than their nominal 95 % at few runs: the interval of the mean "
            f"covered the true mean in this share of {COVERAGE_EXPERIMENTS:,} simulated experiments (normal scores, one "
            "spread) at " + "; ".join(parts) + "."
        )
        if parts
        else ""
    )


def _welch_note(runs: list[dict]) -> str:
    """The coverage of the verdict's interval against the bootstrap's at each design (runs per task of each side,
    tasks) of the orderings that have a Welch interval."""
    designs = {(len(a), len(b), len(common)) for _, _, common, a, b in _claims(runs) if min(len(a), len(b)) > 1}
    if not designs:
        return "a percentile bootstrap covers less than 95 % at few runs."
    (one, other) = WELCH_SPREADS
    parts = [
        f"at {ra} / {rb} runs per task x {_n(t, 'task')} the Welch interval of a gap covered the true gap in "
        f"{100 * stats.welch_coverage(ra, t, experiments=COVERAGE_EXPERIMENTS, sds=one, other_sds=other, other_runs=rb):.0f}"
        f" %, the bootstrap interval of a mean over {min(ra, rb)} runs per task the true mean in "
        f"{100 * stats.bootstrap_coverage(min(ra, rb), t, experiments=COVERAGE_EXPERIMENTS):.0f} %"
        for ra, rb, t in sorted(designs)
    ]
    spreads = f"sd {one[0]:g} on one side and {other[0]:g} on the other" + (
        f", then {one[1]:g} and {other[1]:g} on the next task, in turn" if max(t for *_, t in designs) > 1 else ""
    )
    return (
        f"in {COVERAGE_EXPERIMENTS:,} simulated experiments of normal scores (for the gap two sides, {spreads}; for "
        "the mean one side, one spread; scores bounded by 0 and 1 and diverged runs' zeros are not simulated), "
        + "; ".join(parts)
        + "."
    )


def aggregate_table(runs: list[dict], reps: int = stats.REPS, seed: int = 0) -> str:
    """Markdown: per encoder, rliable's IQM and mean of the final success over all its runs and tasks,
    each with its stratified bootstrap 95 % CI, and the coverage those intervals really have."""
    matrices = _encoder_matrices(runs)
    if not matrices:
        return ""
    estimates = stats.aggregate_intervals({e: m for e, (_, m) in matrices.items()}, reps=reps, seed=seed)
    lines = ["| Encoder (runs per task x tasks) | Tasks | IQM [95 % CI] | Mean [95 % CI] |", "|---|---|---|---|"]
    for enc, (tasks, scores) in matrices.items():
        cells = [_resampled(*estimates[enc][name], [scores]) for name in ("iqm", "mean")]
        lines.append(
            f"| {_label(enc)} ({len(scores)} x {len(tasks)}) | {', '.join(tasks)} | " + " | ".join(cells) + " |"
        )
    notes = [_coverage_note({(len(m), len(t)) for t, m in matrices.values()})]
    notes += [FEW_RUNS_NOTE] if any(FEW_RUNS in line for line in lines) else []
    return "\n\n".join(["\n".join(lines), *(n for n in notes if n)])


def plot_profiles(runs: list[dict], out: Path, reps: int = stats.REPS, seed: int = 0) -> Path | None:
    """rliable's performance profiles (score distributions): per encoder, the fraction of its runs (all
    tasks) whose final success exceeds each threshold, with a stratified bootstrap 95 % band."""
    matrices = _encoder_matrices(runs)
    if not matrices:
        return None
    taus = np.linspace(0.0, 1.0, 101)
    profiles, bands = stats.performance_profiles({e: m for e, (_, m) in matrices.items()}, taus, reps=reps, seed=seed)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for enc, (tasks, scores) in matrices.items():
        (line,) = ax.plot(
            taus, profiles[enc], label=f"{_label(enc)} ({_n(len(scores), 'run')} x {_n(len(tasks), 'task')})"
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
    ax.legend(fontsize=7)
    return write_figure(fig, out / "performance_profiles.png")


def _claim(worse: str, better: str) -> str:
    return f"{_label(worse)} < {_label(better)}"


def _verdict(lo: float, hi: float, null: float = 0.0) -> str:
    return "holds" if lo > null else "reversed" if hi < null else "not resolved"


def _interval(lo: float, hi: float, sides: Sequence[Sequence[float]] = ()) -> str:
    """A Welch interval as '[lo, hi]', or why there is none (stats.welch_interval: a side with one seed, or no
    spread in either side)."""
    if not math.isnan(lo):
        return f"[{lo:+.2f}, {hi:+.2f}]"
    return "[n/a: a side has 1 seed]" if any(len(v) < 2 for v in sides) or not sides else "[n/a: no spread in either]"


def _paper_gap(worse: str, better: str, tasks: list[str]) -> float:
    """The paper's mean over `tasks` of better - worse (NaN where the paper has no number)."""
    pairs = [(PAPER_TABLE_I.get(worse, {}).get(t), PAPER_TABLE_I.get(better, {}).get(t)) for t in tasks]
    return float(np.mean([b[0] - a[0] for a, b in pairs])) if pairs and all(a and b for a, b in pairs) else math.nan


def _pooled(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The within-group spread pooled over groups (`stats.pooled_sd`) and its degrees of freedom."""
    return stats.pooled_sd(groups), sum(len(g) - 1 for g in groups if len(g) >= 2)


#: the fewest degrees of freedom of a pooled spread that sizes a test (one df: a spread from a single seed pair)
MIN_SPREAD_DF = 2


def _seeds_reading(
    gap: float, spread: tuple[float, int], have: int, tasks: int, lo: float = math.nan, hi: float = math.nan
) -> str:
    """What `have` seeds per arm (and task) say of the paper's `gap`, given our interval [lo, hi] of it (NaN: none)
    and the observed spread (sd, its degrees of freedom): resolved (the interval excludes 0), or the paper's gap
    outside our interval, or the seeds a test of it needs (too few only where the interval is unresolved and still
    holds the paper's gap; none from a spread of fewer than MIN_SPREAD_DF degrees of freedom)."""
    sd, df = spread
    if math.isnan(sd):
        return "no side has 2 seeds: no spread to size a test by yet"
    if sd == 0:
        return "n/a: no seed differs from another (no spread to size a test by)"
    if not math.isnan(gap) and not math.isnan(lo):
        where_gap = "inside" if lo <= gap <= hi else "above" if gap > hi else "below"
        if lo > 0 or hi < 0:
            return f"{_verdict(lo, hi)} at these seeds; the paper's gap {gap:+.2f} lies {where_gap} our interval"
        if where_gap != "inside":
            return (
                f"the paper's gap {gap:+.2f} lies {where_gap} our interval: a gap that large is not what these runs "
                "show (the paper's is at 1M steps)"
            )
    one_seed = "a side has 1 seed (no interval yet); " if have < 2 else ""
    if df < MIN_SPREAD_DF:
        return f"{one_seed}the spread rests on {_n(df, 'degree')} of freedom: too rough to size a test by yet"
    smallest = (
        ""
        if have < 2
        else f"; at {100 * stats.POWER:.0f} % power the current {have} resolve gaps of "
        f"{stats.detectable_gap(sd, have, tasks):.2f} or more"
    )
    if math.isnan(gap):
        return f"{one_seed}the paper gives no gap here{smallest}"
    where = " per task" if tasks > 1 else ""
    needed = stats.seeds_needed(gap, sd, tasks)
    if needed is None:
        return f"{one_seed}the paper's gap {gap:+.2f} needs over 1,000 seeds per arm{where}{smallest}"
    reading = "too few seeds" if needed > have else "enough seeds: a gap that large would likely have been resolved"
    return f"{one_seed}the paper's gap {gap:+.2f} needs {needed} seeds per arm{where} ({reading}){smallest}"


def _both_finished(by: dict[tuple[str, str], list[dict]], tasks: Sequence[str], worse: str, better: str) -> list[str]:
    """The tasks where both sides of a claim have finished runs."""
    return [t for t in tasks if (worse, t) in by and (better, t) in by]


def _claims(runs: list[dict]) -> list[tuple[str, str, list[str], np.ndarray, np.ndarray]]:
    """Each ordering the papers claim that `runs` can compare: (worse, better, the tasks both finished runs on, and
    each one's [runs, tasks] final-success matrix over its seeds finished on all of them)."""
    tasks, by = _cells(runs)
    claims = []
    for worse, better in PAPER_ORDERINGS:
        common = _both_finished(by, tasks, worse, better)
        a, b = (score_matrix(by, encoder, common)[0] for encoder in (worse, better))
        if common and len(a) and len(b):
            claims.append((worse, better, common, a, b))
    return claims


def improvement_table(
    runs: list[dict],
    reps: int = stats.REPS,
    seed: int = 0,
    running: Sequence[dict] = (),
    planned: PlannedSeeds = PlannedSeeds(),
) -> str:
    """Markdown: each ordering the papers claim, across the tasks both encoders finished: the runs per task (of
    `planned`; + those `running`), the mean over tasks of the per-task gap with its stratified Welch t-interval,
    which gives the verdict (holds when it lies above 0; it keeps its coverage at 3 runs per task, a percentile
    bootstrap does not: `stats.welch_coverage`), rliable's probability of improvement with its stratified bootstrap
    95 % CI, the paper's gap, then a line per claim reading the paper's gap against ours (`_seeds_reading`). Tasks
    where a side planned or running has no finished run yet are named beside the claim, and a claim with no task
    where both finished (`_waiting`), or whose side has no seed finished on every task both finished, has a row
    saying so, in the papers' order."""
    tasks, by = _cells(runs)
    going = _running_counts(running)
    waiting = set(_waiting(by, going, planned, tasks))
    claims = {(worse, better): rest for worse, better, *rest in _claims(runs)}
    lines = [
        "| Claim | Tasks | Runs per task (worse / better) | Mean gap, ours [95 % Welch t-CI] | Verdict "
        "| P(better > worse) [95 % bootstrap CI] | Mean gap, paper |",
        "|---|---|---|---|---|---|---|",
    ]
    readings, few_runs = [], False
    for worse, better in PAPER_ORDERINGS:
        common, a, b = claims.get((worse, better), ([], None, None))
        # tasks where a side planned or running has no finished run yet, the other side finished or waiting too
        pending = [
            t
            for t in tasks
            if t not in common
            and all(c in by or c in waiting for c in ((worse, t), (better, t)))
            and ((worse, t) in waiting or (better, t) in waiting)
        ]
        later = f" (not yet on {', '.join(pending)}: a side has no finished run there)" if pending else ""
        if not common:
            # both finished on `shared`, but a side on no one seed across all of them (rliable's matrices need one)
            shared = _both_finished(by, tasks, worse, better)
            have = {e: len(score_matrix(by, e, shared)[0]) for e in (worse, better)}  # seeds on every shared task
            if shared:
                apart = [_label(e) for e in (worse, better) if not have[e]]
                why = (
                    f"neither {apart[0]} nor {apart[1]} has" if len(apart) == 2 else f"no {apart[0]}"
                ) + " seed finished on every one of these tasks"
            else:
                absent = [_label(e) for e in (worse, better) if all((e, t) not in by for t in pending)]
                why = (
                    f"no {' or '.join(absent)} run finished there yet" if absent else "no task where both finished yet"
                )
            on = shared or pending
            if on:
                counts = [_side_count(by, going, planned, e, on, have[e] if shared else None) for e in (worse, better)]
                paper = _paper_gap(worse, better, on)
                lines.append(
                    f"| {_claim(worse, better)} | {', '.join(on)}{later if shared else ''} | {' / '.join(counts)} | - "
                    f"| n/a: {why} | - "
                    f"| {'n/a' if math.isnan(paper) else f'{paper:+.2f}'} |"
                )
                readings.append(f"- {_claim(worse, better)} on {', '.join(on)}: not read yet ({why}).")
            continue
        p, p_lo, p_hi = stats.probability_of_improvement(b, a, reps=reps, seed=seed)
        gap, lo, hi = stats.stratified_welch_interval(a, b)
        paper = _paper_gap(worse, better, common)
        paper_s = "n/a" if math.isnan(paper) else f"{paper:+.2f}"
        probability = _resampled(p, p_lo, p_hi, [a, b])
        few_runs |= FEW_RUNS in probability
        sides = [list(a[:, 0]), list(b[:, 0])]
        counts = [_side_count(by, going, planned, e, common, len(m)) for e, m in ((worse, a), (better, b))]
        lines.append(
            f"| {_claim(worse, better)} | {', '.join(common)}{later} | {' / '.join(counts)} | {gap:+.2f} "
            f"{_interval(lo, hi, sides)} | {'n/a' if math.isnan(lo) else _verdict(lo, hi)} | {probability} "
            f"| {paper_s} |"
        )
        spread = _pooled([a[:, j] for j in range(len(common))] + [b[:, j] for j in range(len(common))])
        sd = "n/a" if math.isnan(spread[0]) else f"{spread[0]:.2f}"
        readings.append(
            f"- {_claim(worse, better)} over {_n(len(common), 'task')} (observed spread within tasks, sd {sd}): "
            + _seeds_reading(paper, spread, min(len(a), len(b)), len(common), lo, hi)
            + "."
        )
    if len(lines) == 2:
        return ""
    seeds_needed = (
        "The paper's gap against ours: outside our interval, or the seeds a test of it needs (two-sided "
        f"pooled-variance t-test at 5 %, {100 * stats.POWER:.0f} % power, the observed spread; 'not resolved' with "
        "too few seeds means too few, not no effect):"
    )
    return "\n\n".join(["\n".join(lines), *([FEW_RUNS_NOTE] if few_runs else []), seeds_needed, "\n".join(readings)])


def ordering_table(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown: each ordering the papers claim (PAPER_ORDERINGS) on each task where both encoders
    finished: our difference of mean final success with its 95 % Welch t-interval, the verdict (holds
    only when the interval excludes 0) with each side's runs (of `planned`; + those `running`), the paper's
    difference, and the seeds the spread needs for it."""
    tasks, by = _cells(runs)
    going = _running_counts(running)
    lines = [
        "| Claim | Task | Ours: better - worse [95 % Welch t-CI] | Verdict | Paper | The paper's gap against ours |",
        "|---|---|---|---|---|---|",
    ]
    for worse, better in PAPER_ORDERINGS:
        for task in tasks:
            a, b = _final(by.get((worse, task), [])), _final(by.get((better, task), []))
            if not a or not b:
                continue
            diff, lo, hi = stats.welch_interval(a, b)
            interval = _interval(lo, hi, (a, b))
            counts = " / ".join(_side_count(by, going, planned, e, [task]) for e in (worse, better))
            verdict = (_verdict(lo, hi) if not math.isnan(lo) else "n/a") + f" (n={counts})"
            paper = _paper_gap(worse, better, [task])
            lines.append(
                f"| {_claim(worse, better)} | {task} | {diff:+.2f} {interval} | {verdict} | "
                f"{'n/a' if math.isnan(paper) else f'{paper:+.2f}'} | "
                f"{_seeds_reading(paper, _pooled([a, b]), min(len(a), len(b)), 1, lo, hi)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def _steps_text(steps: Sequence[float]) -> str:
    return ", ".join(f"{s / 1000:g}k" if s >= 1000 else f"{s:g}" for s in steps)


def _seeds_for(diff: float, sd: float, have: int) -> str:
    """Seeds per arm whose t-test would resolve a difference `diff` at the spread `sd`, and the smallest
    difference the `have` seeds resolve."""
    if have < 2 or math.isnan(sd):
        return "n/a: the spread needs 2 seeds per arm to estimate"
    if sd == 0:
        return "n/a: no seed differs from another (no spread to size a test by)"
    smallest = f"the current {have} resolve {stats.detectable_gap(sd, have):.2f} or more"
    needed = stats.seeds_needed(diff, sd) if diff else None
    return f"{'over 1,000' if needed is None else needed} ({smallest})"


def variant_table(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown: each setting a run changed from its default (VARIANT_FIELDS: an ablation) against the default
    row of the same encoder and task: per side the mean final success and the mean of each seed's success over
    its last LAST_EVALS evaluations (`last_evals`, at the steps shown), then variant - default of each with its 95 % Welch
    t-interval and verdict (the variant is better / worse only when the interval excludes 0), and the seeds per
    arm that would resolve the last evaluations' difference. No verdict while a run of either side is unfinished
    (`running`: judging the survivors alone would favour a setting that breaks runs), nor on last evaluations
    taken at different steps. Each side's runs read as `_count` does (of `planned`, + those running)."""
    tasks, by = _cells(runs)
    unfinished = _running_counts(running)
    lines = [
        f"| Setting | Task | Runs (default / setting) | Final success: default / setting | Setting - default, final "
        f"[95 % Welch t-CI] | Verdict | Last {LAST_EVALS} evaluations (steps): default / setting | Setting - default, "
        f"last {LAST_EVALS} [95 % Welch t-CI] | Verdict | Seeds per arm for that difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []  # variant rows whose default row has no runs in their precision, where other runs of theirs exist
    for row in sorted({r["encoder"] for r in runs if " [" in r["encoder"]}, key=_encoder_key):
        default = default_row(row)
        for task in tasks:
            base, changed = by.get((default, task), []), by.get((row, task), [])
            if changed and not base and by.get((row.partition(" ")[0], task)):
                missing.append(f"{_label(row)} on {task}: no {default} runs to compare it with")
            if not base or not changed:
                continue
            pending = unfinished[(default, task)] + unfinished[(row, task)]
            evals = [[last_evals(r) for r in rs] for rs in (base, changed)]  # [side][run] -> (mean, steps)
            steps, budgets = {s for side in evals for _, s in side}, {r["steps"] for r in base + changed}
            measures = {"final": (_final(base), _final(changed)), "last": tuple([m for m, _ in side] for side in evals)}
            cells = []
            for measure, (a, b) in measures.items():
                diff, lo, hi = stats.welch_interval(a, b)
                if pending:
                    verdict = "n/a: runs unfinished"
                elif measure == "final" and len(budgets) > 1:
                    verdict = "n/a: runs of other lengths"
                elif measure == "last" and len(steps) > 1:
                    verdict = "n/a: evaluated at different steps"
                elif math.isnan(lo):
                    verdict = "n/a"
                else:
                    verdict = {"holds": "better", "reversed": "worse"}.get(_verdict(lo, hi), "not resolved")
                at = (
                    ""
                    if measure == "final"
                    else f" ({_steps_text(next(iter(steps)))})"
                    if len(steps) == 1
                    else " (differ)"
                )
                cells += [
                    f"{np.mean(a):.2f} / {np.mean(b):.2f}{at}",
                    f"{diff:+.2f} {_interval(lo, hi, (a, b))}",
                    verdict,
                ]
            last_a, last_b = measures["last"]  # what the rule decides on
            diff = float(np.mean(last_b) - np.mean(last_a))
            cells.append(_seeds_for(diff, stats.pooled_sd([last_a, last_b]), min(len(last_a), len(last_b))))
            setting = ", ".join(x for x in settings_of(row) if x not in settings_of(default))
            count = " / ".join(_side_count(by, unfinished, planned, e, [task]) for e in (default, row))
            lines.append(f"| {_label(default)}: {setting} | {task} | {count} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) if len(lines) > 2 else ""
    return "\n".join([table, *(f"- not compared: {m}" for m in missing)]).strip()


def progress_table(running: list[dict]) -> str:
    """Markdown: per encoder and task still running, success and return at the newest evaluation step
    that every one of its seeds has reached (mean [95 % t-interval] over those seeds, and each seed's value)."""
    groups = defaultdict(list)
    for r in running:
        groups[(r["encoder"], r["task"])].append(r)
    lines = [
        "| Encoder | Task | Evaluated at (env steps) | Success [95 % t-CI] (per seed) | Evaluation return [95 % t-CI] |",
        "|---|---|---|---|---|",
    ]
    for (enc, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], _encoder_key(kv[0][0]))):
        step = min(r["curve"][-1][0] for r in rs)
        at = sorted(
            (r for r in rs if step in dict(r["curve"])), key=lambda r: r["seed"] or 0
        )  # other schedules left out
        success = [dict(r["curve"])[step] for r in at]
        returns = [ret[step] for ret in (dict(r["return_curve"]) for r in at) if step in ret]
        budgets = "/".join(sorted({f"{r['steps']:,}" for r in at if r["steps"]}))
        seeds = ", ".join(str(r["seed"]) for r in at)
        lines.append(
            f"| {_label(enc)} | {task} | {step:,.0f} of {budgets or '?'} | "
            f"{_ci(success)} ({_seeds(success)}; n={len(success)}, seeds {seeds}) | {_ci(returns, '.0f')} |"
        )
    return "\n".join(lines)


def curve_table(runs: list[dict], task: str, max_columns: int = 10) -> str:
    """Markdown: the success curves of `task` as numbers, an encoder per row and an evaluation step per
    column (the newest `max_columns`): mean [95 % t-interval] over the seeds evaluated at that step,
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
            cells.append(_ci(values) + (f" (n={len(values)})" if values and len(values) != len(curves) else ""))
        lines.append(f"| {_label(enc)} (n={len(curves)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], out: Path) -> dict[str, Path]:
    """One PNG per task: evaluation success (the paper's Fig. 3) and return vs env steps, the mean across
    seeds (a marker at every evaluation) with a shaded 95 % Student-t band over seeds. The return shows
    learning long before the first success. An encoder's curve stops at the last step all its seeds
    have evaluated (dashed while any of them is still running)."""
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
                legend = f"{_label(enc)} (n={len(ys)}{', running' if enc in running else ''})"
                (line,) = ax.plot(
                    steps, ys.mean(0), marker="o", markersize=3, label=legend, linestyle="--" if enc in running else "-"
                )
                if len(ys) > 1:
                    lo, hi = stats.t_interval(ys)
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
    """Markdown: R^2 of hand/object/goal per encoder, inputs and pool (the --store precision's in
    parentheses when it loses more than 0.005), then the probes' warnings."""
    lines = [
        "| Encoder | Inputs | Features | Pool | Dim | " + " | ".join(f"{t} R^2" for t in PROBE_TARGETS) + " |",
        "|---|---|---|---|---|" + "---|" * len(PROBE_TARGETS),
    ]
    warnings = []
    for probe in probes:
        encoder = probe["file"].parent / Path(probe["encoder"]).name
        for row in probe["rows"]:
            cells = []
            for t in PROBE_TARGETS:
                r2, kept = row["r2"].get(t), row.get("r2_stored", {}).get(t)
                lost = r2 is not None and kept is not None and r2 - kept > 0.005
                cells.append(f"{_r2(r2)} ({_r2(kept)} in {probe['store']})" if lost else _r2(r2))
            lines.append(
                f"| {encoder} | {'+'.join(probe['inputs'])} | {row['kind']} | {row['pool']} | {row['dim']} | "
                + " | ".join(cells)
                + " |"
            )
        warnings += probe.get("warnings", [])
    return "\n".join(lines + [""] + [f"- WARNING: {w}" for w in warnings])


#: the saliency metrics the preparation table shows (saliency.evaluate's names), with their format
SALIENCY_COLUMNS = (("f_max", "max-F", ".3f"), ("mae", "MAE", ".4f"), ("cc", "CC", ".3f"), ("nss", "NSS", ".2f"))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def preparation_tables(root: Path) -> str:
    """Markdown, from what the CPU table keeps of each task's preparation below `root` (pipeline.keep.KEPT_*): the
    saliency student against the oracle maps on held-out frames, then the wall time of each preparation step per
    task (in the plan's order), with the machine that kept them and the table's precision ('' when nothing is
    kept)."""
    parts = []
    evals = sorted(root.glob(KEPT_SALIENCY_EVAL.format(task="*")))
    if evals:
        lines = [
            "| Task | Model | Frames | " + " | ".join(name for _, name, _ in SALIENCY_COLUMNS) + " | Precision |",
            "|---|---|---|" + "---|" * len(SALIENCY_COLUMNS) + "---|",
        ]
        for path in evals:
            record = json.loads(path.read_text())
            metrics = record.get("metrics", {})
            cells = [format(metrics[k], spec) if k in metrics else "n/a" for k, _, spec in SALIENCY_COLUMNS]
            lines.append(
                f"| {path.parents[1].name} | {record.get('kind', '?')} | {metrics.get('n', '?')} | "
                + " | ".join(cells)
                + f" | {record.get('precision', '?')} |"
            )
        parts.append("\n".join(lines))
    stages = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob(KEPT_STAGES.format(task="*")))}
    stages = {t: s for t, s in stages.items() if s.get("wall_seconds")}
    if stages:
        tasks = list(stages)
        steps = list(dict.fromkeys(step for s in stages.values() for step in s.get("order") or s["wall_seconds"]))
        lines = ["| Step | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for step in steps:
            cells = [stages[t].get("wall_seconds", {}).get(step) for t in tasks]
            lines.append(f"| {step} | " + " | ".join("-" if c is None else _duration(c) for c in cells) + " |")
        ran_on = [f"{t}: {s.get('device', '?')}, {s.get('precision') or '?'}" for t, s in stages.items()]
        parts += ["\n".join(lines), "Kept on (machine, precision): " + "; ".join(ran_on) + "."]
    frames = [encoders_frames(p.parent.name, p) for p in sorted(root.glob(KEPT_MODELS.format(task="*")))]
    if frames:
        parts.append(
            "Frames the MultiMAEs learnt from (checksums of the collection, models.json): " + "; ".join(frames) + "."
        )
    return "\n\n".join(parts)


def encoders_frames(task: str, path: Path) -> str:
    """Whether `task`'s carried encoders learnt from the same collected frames (a machine lost between their
    pretrainings collects them again: the same bytes on the same software, maybe not on another)."""
    record = json.loads(path.read_text())
    frames = record.get("frames", {})
    carried = list(dict.fromkeys(rel.split("/")[1] for rel in record.get("sha256", {}) if rel.startswith("mmae/")))
    unknown = [name for name in carried if name not in frames]
    if unknown:
        return f"{task}: not recorded for {' and '.join(unknown)}"
    if len(frames) < 2:
        return f"{task}: only {', '.join(frames) or 'no'} encoder carried so far"
    if len(set(frames.values())) == 1:
        return f"{task}: the same frames for {' and '.join(frames)}"
    return f"{task}: different frames ({', '.join(f'{name} {digest[:12]}' for name, digest in frames.items())})"


def footer(runs: list[dict]) -> str:
    lines = [
        "| Run | Steps | Preset | Seed | Final eval episodes | Device | Precision | Wall time | Steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["task"], r["encoder"], r["seed"])):
        lines.append(
            f"| {r['task']}/{r['encoder']} | {r['steps']:,} | {r.get('preset') or '-'} | {r['seed']} | "
            f"{r.get('eval_episodes', '-')} | {r.get('device', '?')} | {r.get('precision', 'fp32')} | "
            f"{r.get('wall_time_s', 0) / 60:.1f} min | {r.get('steps_per_s', '-')} |"
        )
    return "\n".join(lines)


def watch_table(roots: list[Path], out: Path) -> str:
    """Markdown: per task, a clip of each encoder the runs below `roots` made (`rl.evaluate.report_clips`:
    the clip a run's evaluate/ folder holds, copied beside the report); '' when no run has one."""
    from rl.evaluate import report_clips

    clips: dict[tuple[str, str], Path] = {}
    for root in roots:
        clips.update(report_clips(root, out / "clips"))
    lines = []
    for task in sorted({t for t, _ in clips}):
        lines.append(
            f"**{task}**: "
            + " ".join(
                f"{_label(e)} ![{e}]({clips[(task, e)].relative_to(out)})"
                for e in sorted((e for t, e in clips if t == task), key=_encoder_key)
            )
            + "\n"
        )
    return "\n".join(lines)


def statistics_sections(
    runs: list[dict], running: list[dict], out: Path, cfg: ReportConfig, planned: PlannedSeeds
) -> list[str]:
    """The report's statistics beyond Table I: every seed per task, the rliable aggregates and profiles, the
    papers' orderings (counts of `planned`), and the runs still going."""
    parts: list[str] = []
    tasks, by = _cells(runs)
    if runs:
        profile = plot_profiles(runs, out, cfg.reps, cfg.seed)
        one_task = (
            f"One task ({tasks[0]}): these are bootstrap intervals over its seeds, not an aggregate across tasks; the "
            "Student-t intervals above are the better ones at this number of seeds.\n"
            if len(tasks) == 1
            else ""
        )
        parts += [
            "## Every seed, per task\n",
            "The seeds' own values (in seed order), their mean and 95 % Student-t interval: at 3 seeds a "
            "percentile bootstrap would be [min, max] and cover the true mean ~74 % of the time (simulated).\n",
            seed_table(runs, running, planned) + "\n",
            "## Across tasks and seeds (rliable)\n",
            "Interquartile mean (IQM: the mean of the middle 50 % of all runs' final success, over tasks and "
            "seeds; a 25 % trimmed mean of all (run, task) scores: below 4 scores in all it is the mean) and mean, with "
            f"stratified bootstrap 95 % CIs (rliable, {cfg.reps:,} resamples of the runs within each task; Agarwal "
            "et al., 2021).\n",
            one_task,
            (precision_mix_note(runs) + "\n").lstrip(),
            aggregate_table(runs, cfg.reps, cfg.seed) + "\n",
            f"![performance profiles]({profile.relative_to(out)})\n" if profile else "",
        ]
    improvements = improvement_table(runs, cfg.reps, cfg.seed, running, planned)
    per_task = (
        [
            "Per task: the difference of mean final success with its 95 % Welch t-interval (holds only when it "
            "excludes 0).\n",
            ordering_table(runs, running, planned) + "\n",
        ]
        if any(len(_both_finished(by, tasks, w, b)) > 1 for w, b in PAPER_ORDERINGS)
        else []  # every claim on one task: the table above is the per-task one
    )
    if improvements:
        parts += [
            "## The papers' orderings\n",
            "Across the tasks both encoders finished: the mean over tasks of each task's gap in mean final success "
            "(the paper's average over its tasks), with its 95 % Welch t-interval (stratified: each task's and "
            "side's own variance, Welch-Satterthwaite degrees of freedom); the claim holds when the interval lies "
            "above 0, is reversed below it. Beside it rliable's probability of improvement (a run of the "
            "better-claimed encoder beats a run of the other on the same task, ties count half) with its "
            "stratified bootstrap 95 % CI, which gives no verdict: " + _welch_note(runs) + "\n",
            improvements + "\n",
            *per_task,
        ]
    variants = variant_table(runs, running, planned)
    if variants:
        parts += [
            "## Settings against their defaults (ablations)\n",
            'Runs that set an option otherwise than its default (README, "Faithful to the paper") against the '
            "default runs of the same encoder and task: the difference of means with its 95 % Welch t-interval; "
            "a setting is better or worse only when the interval excludes 0, and no verdict is given while a run "
            "of either side is unfinished. Seeds per arm: what a two-sided two-sample t-test (pooled variance) at "
            f"5 % with {100 * stats.POWER:.0f} % power needs for the last evaluations' difference at their spread "
            "(Welch's interval, which the verdict uses, needs somewhat more at small n).\n",
            variants + "\n",
        ]
    diverged = diverged_table(runs)
    if diverged:
        parts += [
            "## Diverged runs\n",
            "Their weights, losses or actions turned non-finite: each counts as success 0 at its final evaluation "
            "and at every evaluation after the step it diverged, in every table above (a mean over the survivors "
            "alone would favour a setting that breaks runs). Deleting a run's summary.json retrains it from its "
            "last good checkpoint.\n",
            diverged + "\n",
        ]
    if running:
        parts += [
            "## Runs in progress\n",
            "Not final: each encoder at the newest evaluation all its running seeds have reached "
            "(mean [95 % Student-t interval] over those seeds, and each seed's value).\n",
            progress_table(running) + "\n",
        ]
    return parts


def interim_note(runs: list[dict], running: Sequence[dict], planned: PlannedSeeds) -> str:
    """A warning where an (encoder, task) with runs finished or going, or named by `planned`, has fewer finished
    seeds than planned, the tasks without a finished run named apart (they have no column) ('' where none has)."""
    tasks, finished = _cells(runs)
    cells = [
        c
        for c in dict.fromkeys([*finished, *_plan_cells(_running_counts(running), planned)])
        if _toward_plan(finished, *c) < planned(*c)
    ]
    short = sorted({(_toward_plan(finished, *c), planned(*c)) for c in cells if c[1] in tasks})
    missing = {t for _, t in cells if t not in tasks}
    later = [t for t in PAPER_TASKS if t in missing] + sorted(missing - set(PAPER_TASKS))
    if not short and not later:
        return ""
    parts = []
    if short:
        counts = ", ".join(f"{n} of {of}" for n, of in short)
        parts.append(
            f"some encoders have fewer finished seeds on a task than planned ({counts}: 'n of N' in Table "
            "I and the seed, ordering and ablation tables)"
        )
    if later:
        parts.append(f"planned tasks with no finished run yet: {', '.join(later)}")
    return (
        f"**Interim:** {'; '.join(parts)}. The "
        "verdicts below are read on the seeds finished so far and may change as seeds come; a reading that stops at "
        "the first 'holds' overstates the evidence. The verdicts at the planned seeds are the answer."
    )


def write_report(cfg: ReportConfig, preamble: Sequence[str] = ()) -> Path:
    """REPORT.md of the runs below cfg.roots, with `preamble` (markdown sections of the caller's, e.g. how a table
    was made) before its Table I."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [Path(r) for r in cfg.roots.split(",") if r]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no such folder: {', '.join(missing)}; give the folders holding the run folders "
            "(e.g. `python -m pipeline.report results/cpu-table` or `runs/sac`)"
        )
    running = load_running(roots)
    runs = load_runs(roots, running)
    precision_splits = split_mixed_precision(runs + running)  # the notes of the split load_runs made
    check_distinct(runs + running)
    if not runs and not running:
        raise FileNotFoundError(
            f"no finished runs (summary.json) and no evaluated running ones (eval.csv) under {cfg.roots}; "
            "run `python -m rl.grid` or `python -m rl.sac` first"
        )
    curves = plot_curves(runs + running, out)
    pictures_root = cfg.picture_folder()
    pictures = collect_pictures(pictures_root, out)
    probes = load_probes(pictures_root)
    budgets = sorted({r["steps"] for r in runs + running if r["steps"]})
    devices = sorted({r.get("device", "?") for r in runs})
    planned = PlannedSeeds.parse(cfg.planned_seeds)
    parts = [
        f"# {cfg.title}\n",
        f"{len(runs)} finished SAC runs"
        + (f" and {len(running)} still running" if running else "")
        + f"; budgets (env steps): {', '.join(f'{b:,}' for b in budgets)}"
        + (f"; devices: {', '.join(devices)}" if devices else "")
        + ". The paper's numbers are at 1M steps "
        "with 3 seeds and 50 rollouts: runs with smaller budgets are not comparable in level, only in ordering.\n",
        (interim_note(runs, running, planned) + "\n").lstrip(),
        *(section.rstrip("\n") + "\n" for section in preamble),
        "## Success rate (the paper's Table I)\n",
        "Final evaluation of the deterministic policy (any success within an episode): mean over seeds [95 % "
        f"Student-t confidence interval of the mean, unclipped: at few seeds it can pass 0 or 1]; beside it the mean over seeds of each seed's success over its last {LAST_EVALS} "
        "evaluations, pooled over their episodes (one evaluation of a seed is noisy; their steps are in the header where all runs share them: "
        "evaluations far apart reach back into training), the number of seeds, and the paper's mean ± std. The last "
        "column averages a row's task means over the tasks it ran; beside it the paper's printed average where the row "
        "ran all four of the paper's tasks, else the mean of the paper's numbers on the same tasks (marked; n/a where the paper has no number for one).\n",
        (table_i(runs, running, planned) if runs else "No run has finished yet.") + "\n",
    ]
    if precision_splits:
        parts += ["Runs of one encoder and task in different precisions, kept apart:\n"]
        parts += ["\n".join(f"- {note}" for note in precision_splits) + "\n"]
    parts += statistics_sections(runs, running, out, cfg, planned)
    parts += ["## Learning curves (the paper's Fig. 3)\n"]
    for task, picture in curves.items():
        parts += [
            f"![{picture.stem}]({picture.relative_to(out)})\n",
            f"Success at each evaluation on {task}, mean [95 % Student-t interval] over seeds:\n",
            curve_table(runs + running, task) + "\n",
        ]
    if probes:
        parts += [
            "## Frozen MultiMAE probe\n",
            "Linear-probe R^2 of the hand, object and goal positions from each frozen encoder's features, "
            "scored on frames of held-out episodes (`python -m pretrain.probe`); random init and raw pixels "
            "are the baselines.\n",
            probe_table(probes) + "\n",
        ]
    preparation = preparation_tables(pictures_root)
    if preparation:
        parts += [
            "## Preparation of each task\n",
            "The saliency student against the oracle annotator's maps on frames it never saw "
            "(`python -m saliency.evaluate`), and the wall time of each step before SAC, summed over the sessions "
            "that ran it (shared machines: other jobs ran beside some).\n",
            preparation + "\n",
        ]
    clips = watch_table(roots, out)
    if clips:
        parts += [
            "## Watch the agents\n",
            "One episode of each encoder's deterministic policy (its lowest seed with weights; "
            "`python -m rl.evaluate --run <run> --video` makes more).\n",
            clips + "\n",
        ]
    for title, pics in pictures.items():
        parts += [f"## {title}\n", *[f"![{p.stem}]({p.relative_to(out)})\n" for p in pics]]
    parts += ["## Runs\n", footer(runs) + "\n"]
    return atomic_write_bytes(out / "REPORT.md", "\n".join(p for p in parts if p).encode())


def main(argv=None) -> None:
    print(f"report: {run_command(ReportConfig, write_report, argv)}")


if __name__ == "__main__":
    main()
