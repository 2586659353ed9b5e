"""Reading the runs (finished and running): their rows, curves, last evaluations and score matrices."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from common.cli import flat_dict
from data.tasks import PAPER_TASKS
from rl import outcome
from rl.config import SACConfig
from rl.encoders import ENCODER_LABELS, TABLE_I, field_applies

ENCODER_ORDER = ["state", *TABLE_I, *(e for e in ENCODER_LABELS if e not in TABLE_I and e != "state")]


#: a seed's score beside its final evaluation: its success over its last LAST_EVALS evaluations (one is noisy)
LAST_EVALS = 3


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
            f"{task}, {row_label(encoder)}: "
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
            cells[r.get("precision", REFERENCE_PRECISION)].add(f"{r['task']} {row_label(r['encoder'])}")
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


def load_runs(roots: list[Path], running: Sequence[dict] = (), seeds: Collection[int] | None = None) -> list[dict]:
    """Every finished run (of `seeds` only, if given): its summary.json plus the eval curve from eval.csv, its row
    split by precision where its encoder has runs of both on its task among these and `running`
    (`split_mixed_precision`); then a diverged run counted as success 0 from the step it diverged (`count_diverged`,
    which reads the budget of its row)."""
    runs = []
    for root in roots:
        for summary in sorted(root.glob("**/summary.json")):
            run = json.loads(summary.read_text())
            if seeds is not None and run.get("seed") not in seeds:
                continue
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


def load_running(roots: list[Path], seeds: Collection[int] | None = None) -> list[dict]:
    """Every run still going (config.json and an evaluation in eval.csv, no summary.json yet; of `seeds` only, if
    given): its task, encoder, seed, budget ("steps") and eval curves so far, with "running": True."""
    runs = []
    for root in roots:
        for config in sorted(root.glob("**/config.json")):
            run_dir = config.parent
            if (run_dir / "summary.json").exists() or not (run_dir / "eval.csv").exists():
                continue
            cfg = json.loads(config.read_text())
            if seeds is not None and cfg.get("seed") not in seeds:
                continue
            curve, returns, episodes = _read_curves(run_dir / "eval.csv", "success", "return_mean", "episodes")
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
                        "episodes_curve": episodes,
                    }
                )
    return runs


def load_random_policy(roots: list[Path], seeds: Collection[int] | None = None) -> dict[str, list[dict]]:
    """Per task, in seed order, the random-policy evaluations kept beside its rows (`rl.evaluate --policy random`:
    <task>/random_policy/random-seed<S>-<N>ep.json at any depth below a root, as load_runs finds runs), of `seeds`
    only if given; of a seed evaluated at several lengths, the one of most episodes."""
    best: dict[tuple[str, int], dict] = {}
    for root in roots:
        for path in sorted(root.glob(f"**/{outcome.RANDOM_POLICY}/random-seed*-*ep.json")):
            report = json.loads(path.read_text())
            key = (report["task"], report["seed"])
            if (seeds is None or report["seed"] in seeds) and len(report["episodes"]) > len(
                best.get(key, {}).get("episodes", ())
            ):
                best[key] = report
    by_task: dict[str, list[dict]] = defaultdict(list)
    for (task, _), report in sorted(best.items()):
        by_task[task].append(report)
    return dict(by_task)


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


def evaluation_sizes(runs: Sequence[dict], usual: int | None = None) -> tuple[int, dict[int, list[float]]]:
    """The episodes per seed most of `runs`' evaluations played (0 where eval.csv does not count them), or `usual`
    where given, and the steps evaluated with any other count, by count (the CPU table evaluates 10 episodes every
    25k and 50 at the end: a curve's last point is then five times less noisy than the others)."""
    if usual is None:
        sizes = Counter(int(n) for r in runs for _, n in r.get("episodes_curve", []))
        usual = sizes.most_common(1)[0][0] if sizes else 0
    other: dict[int, set[float]] = defaultdict(set)
    for r in runs:
        for step, n in r.get("episodes_curve", []):
            if int(n) != usual:
                other[int(n)].add(step)
    return usual, {n: sorted(steps) for n, steps in sorted(other.items())}


def last_evals_mean(run: dict, k: int = LAST_EVALS) -> float:
    """Success of a run over its last k evaluations (`last_evals`)."""
    return last_evals(run, k)[0]


def row_label(row: str) -> str:
    encoder, _, variant = row.partition(" ")
    return ENCODER_LABELS.get(encoder, encoder) + (f" {variant}" if variant else "")


def row_order(row: str) -> tuple[int, str]:
    encoder = row.partition(" ")[0]
    return ENCODER_ORDER.index(encoder) if encoder in ENCODER_ORDER else 99, row


def runs_by_cell(runs: list[dict]) -> tuple[list[str], dict[tuple[str, str], list[dict]]]:
    """The tasks of `runs` (the paper's first, in its order) and the finished runs by (encoder, task), by seed."""
    tasks = [t for t in PAPER_TASKS if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    by = defaultdict(list)
    for r in sorted(runs, key=lambda r: (r["seed"] is None, r["seed"] or 0)):
        by[(r["encoder"], r["task"])].append(r)
    return tasks, by


def final_successes(rs: list[dict]) -> list[float]:
    return [float(r["success_rate"]) for r in rs]


def score_matrix(by: dict[tuple[str, str], list[dict]], encoder: str, tasks: list[str]) -> tuple[np.ndarray, list]:
    """Final success [runs, tasks] of `encoder` on `tasks` (rliable's layout), over the seeds it finished on
    every one of them, and those seeds."""
    per_task = [{r["seed"]: float(r["success_rate"]) for r in by.get((encoder, t), [])} for t in tasks]
    seeds = sorted(set.intersection(*(set(p) for p in per_task)), key=lambda s: (s is None, s or 0)) if per_task else []
    return np.array([[p[s] for p in per_task] for s in seeds]).reshape(len(seeds), len(tasks)), seeds


def encoder_matrices(runs: list[dict]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per finished encoder: its tasks and its [runs, tasks] final-success matrix (encoders with a run on every task)."""
    tasks, by = runs_by_cell(runs)
    matrices = {}
    for enc in sorted({r["encoder"] for r in runs}, key=row_order):
        own = [t for t in tasks if (enc, t) in by]
        scores, _ = score_matrix(by, enc, own)
        if len(scores):
            matrices[enc] = (own, scores)
    return matrices
