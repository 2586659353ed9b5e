"""Writing REPORT.md from its sections, and `main`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.cli import run_command
from common.io import atomic_write_bytes
from data.tasks import PAPER_TASKS
from pipeline import stats
from pipeline.report.cells import evaluation_sizes_text, plan_cells, running_counts, seeds_toward_plan
from pipeline.report.claims import (
    aggregate_table,
    both_finished,
    improvement_table,
    ordering_table,
    variant_table,
    welch_note,
)
from pipeline.report.config import PlannedSeeds, ReportConfig
from pipeline.report.figures import collect_pictures, plot_curves, plot_profiles, profiles_caption
from pipeline.report.paper import PAPER_ORDERINGS
from pipeline.report.runs import (
    LAST_EVALS,
    check_distinct,
    evaluation_sizes,
    load_random_policy,
    load_running,
    load_runs,
    precision_mix_note,
    runs_by_cell,
    split_mixed_precision,
)
from pipeline.report.tables import (
    curve_table,
    diverged_table,
    footer,
    load_probes,
    preparation_tables,
    probe_table,
    progress_table,
    random_policy_table,
    seed_table,
    table_i,
    watch_table,
)


def statistics_sections(
    runs: list[dict], running: list[dict], out: Path, cfg: ReportConfig, planned: PlannedSeeds
) -> list[str]:
    """The report's statistics beyond Table I: every seed per task, the rliable aggregates and profiles, the
    papers' orderings (counts of `planned`), and the runs still going."""
    parts: list[str] = []
    tasks, by = runs_by_cell(runs)
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
            f"![performance profiles]({profile.relative_to(out)})\n\n{profiles_caption(runs)}\n" if profile else "",
        ]
    improvements = improvement_table(runs, cfg.reps, cfg.seed, running, planned)
    per_task = (
        [
            "Per task: the difference of mean final success with its 95 % Welch t-interval (holds only when it "
            "excludes 0).\n",
            ordering_table(runs, running, planned) + "\n",
        ]
        if any(len(both_finished(by, tasks, w, b)) > 1 for w, b in PAPER_ORDERINGS)
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
            "stratified bootstrap 95 % CI, which gives no verdict: " + welch_note(runs) + "\n",
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
    tasks, finished = runs_by_cell(runs)
    cells = [
        c
        for c in dict.fromkeys([*finished, *plan_cells(running_counts(running), planned)])
        if seeds_toward_plan(finished, *c) < planned(*c)
    ]
    short = sorted({(seeds_toward_plan(finished, *c), planned(*c)) for c in cells if c[1] in tasks})
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
    seeds = cfg.seed_filter
    running = load_running(roots, seeds)
    runs = load_runs(roots, running, seeds)
    precision_splits = split_mixed_precision(runs + running)  # the notes of the split load_runs made
    check_distinct(runs + running)
    if not runs and not running:
        raise FileNotFoundError(
            f"no finished runs (summary.json) and no evaluated running ones (eval.csv) under {cfg.roots}; "
            "run `python -m rl.grid` or `python -m rl.sac` first"
        )
    planned = PlannedSeeds.parse(cfg.planned_seeds)
    floors = load_random_policy(roots, seeds)
    curves = plot_curves(runs + running, out, planned, floors)
    pictures_root = cfg.picture_folder()
    pictures = collect_pictures(pictures_root, out)
    probes = load_probes(pictures_root)
    budgets = sorted({r["steps"] for r in runs + running if r["steps"]})
    devices = sorted({r.get("device", "?") for r in runs})
    parts = [
        f"# {cfg.title}\n",
        f"{len(runs)} finished SAC runs"
        + (f" and {len(running)} still running" if running else "")
        + (f" (only seeds {', '.join(map(str, sorted(seeds)))} of each row)" if seeds is not None else "")
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
    floor = random_policy_table(runs, floors)
    if floor:
        parts += [
            "## The floor: random actions\n",
            "Uniform random actions in [-1, 1] (SAC's exploration before it learns; `python -m rl.evaluate --policy "
            "random`) on the episodes of each seed's final evaluation (the same starts and goals), beside each row's "
            "final evaluation: what a row's success and return read against. Mean [95 % Student-t interval] over "
            "seeds of each seed's mean over its episodes.\n",
            floor + "\n",
        ]
    parts += statistics_sections(runs, running, out, cfg, planned)
    parts += ["## Learning curves (the paper's Fig. 3)\n"]
    for task, picture in curves.items():
        parts += [
            f"![{picture.stem}]({picture.relative_to(out)})\n",
            f"Success at each evaluation on {task}, mean [95 % Student-t interval] over seeds"
            + ("; dotted gray: random actions (the floor above). " if floors.get(task) else ". ")
            + evaluation_sizes_text(*evaluation_sizes([r for r in runs + running if r["task"] == task]))
            + "\n",
            curve_table(runs + running, task, planned=planned) + "\n",
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
    print(f"report: {run_command(ReportConfig, write_report, argv, module='pipeline.report')}")
