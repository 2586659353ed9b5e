"""Statistics across tasks: rliable aggregates, the papers' orderings, the seeds that resolve them, variant rows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline import stats
from pipeline.report.cells import (
    FEW_RUNS,
    FEW_RUNS_NOTE,
    count_noun,
    resampled_text,
    running_counts,
    side_count,
    steps_text,
    waiting_cells,
)
from pipeline.report.config import PlannedSeeds
from pipeline.report.paper import PAPER_ORDERINGS, paper_gap
from pipeline.report.runs import (
    LAST_EVALS,
    default_row,
    encoder_matrices,
    final_successes,
    last_evals,
    row_label,
    row_order,
    runs_by_cell,
    score_matrix,
    settings_of,
)

#: simulated experiments behind the coverage the report states for its bootstrap intervals
COVERAGE_EXPERIMENTS = 2000


#: the spreads (sd of final success over seeds) of the two sides in the simulation behind the Welch coverage stated
WELCH_SPREADS = ((0.1, 0.3), (0.3, 0.1))


def _coverage_note(designs: set[tuple[int, int]]) -> str:
    """What the nominal 95 % of a percentile bootstrap is worth at each (runs per task, tasks) design."""
    parts = [
        f"{count_noun(runs, 'run')} per task x {count_noun(tasks, 'task')}: "
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


def welch_note(runs: list[dict]) -> str:
    """The coverage of the verdict's interval against the bootstrap's at each design (runs per task of each side,
    tasks) of the orderings that have a Welch interval."""
    designs = {(len(a), len(b), len(common)) for _, _, common, a, b in _claims(runs) if min(len(a), len(b)) > 1}
    if not designs:
        return "a percentile bootstrap covers less than 95 % at few runs."
    (one, other) = WELCH_SPREADS
    parts = [
        f"at {ra} / {rb} runs per task x {count_noun(t, 'task')} the Welch interval of a gap covered the true gap in "
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
    matrices = encoder_matrices(runs)
    if not matrices:
        return ""
    estimates = stats.aggregate_intervals({e: m for e, (_, m) in matrices.items()}, reps=reps, seed=seed)
    lines = ["| Encoder (runs per task x tasks) | Tasks | IQM [95 % CI] | Mean [95 % CI] |", "|---|---|---|---|"]
    for enc, (tasks, scores) in matrices.items():
        cells = [resampled_text(*estimates[enc][name], [scores]) for name in ("iqm", "mean")]
        lines.append(
            f"| {row_label(enc)} ({len(scores)} x {len(tasks)}) | {', '.join(tasks)} | " + " | ".join(cells) + " |"
        )
    notes = [_coverage_note({(len(m), len(t)) for t, m in matrices.values()})]
    notes += [FEW_RUNS_NOTE] if any(FEW_RUNS in line for line in lines) else []
    return "\n\n".join(["\n".join(lines), *(n for n in notes if n)])


def _claim(worse: str, better: str) -> str:
    return f"{row_label(worse)} < {row_label(better)}"


def _verdict(lo: float, hi: float, null: float = 0.0) -> str:
    return "holds" if lo > null else "reversed" if hi < null else "not resolved"


def _interval(lo: float, hi: float, sides: Sequence[Sequence[float]] = ()) -> str:
    """A Welch interval as '[lo, hi]', or why there is none (stats.welch_interval: a side with one seed, or no
    spread in either side)."""
    if not math.isnan(lo):
        return f"[{lo:+.2f}, {hi:+.2f}]"
    return "[n/a: a side has 1 seed]" if any(len(v) < 2 for v in sides) or not sides else "[n/a: no spread in either]"


def _pooled(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The within-group spread pooled over groups (`stats.pooled_sd`) and its degrees of freedom."""
    return stats.pooled_sd(groups), sum(len(g) - 1 for g in groups if len(g) >= 2)


def _edge(gap: float, lo: float, hi: float) -> str:
    """' (its upper end: +0.1397)' where the paper's gap and the nearer end of our interval print alike at two
    decimals, the end at the decimals that tell them apart ('' otherwise): a reader of '+0.14 lies above [-0.34,
    +0.14]' should not have to guess which side of the line it falls."""
    end, name = min(((lo, "lower"), (hi, "upper")), key=lambda e: abs(e[0] - gap))
    if f"{gap:+.2f}" != f"{end:+.2f}":
        return ""
    digits = next((d for d in range(3, 7) if f"{gap:+.{d}f}" != f"{end:+.{d}f}"), 6)
    return f" (its {name} end: {end:+.{digits}f})"


#: the fewest degrees of freedom of a pooled spread that sizes a test (one df: a spread from a single seed pair)
MIN_SPREAD_DF = 2


def seeds_reading(
    gap: float,
    spread: tuple[float, int],
    have: int,
    tasks: int,
    lo: float = math.nan,
    hi: float = math.nan,
    planned: int = 0,
) -> str:
    """What `have` seeds per arm (and task) say of the paper's `gap`, given our interval [lo, hi] of it (NaN: none)
    and the observed spread (sd, its degrees of freedom): resolved (the interval excludes 0), or the paper's gap
    outside our interval, or the seeds a test of it needs (too few only where the interval is unresolved and still
    holds the paper's gap; none from a spread of fewer than MIN_SPREAD_DF degrees of freedom), and whether the
    `planned` seeds per arm (0: not stated) would be enough."""
    sd, df = spread
    if math.isnan(sd):
        return "no side has 2 seeds: no spread to size a test by yet"
    if sd == 0:
        return "n/a: no seed differs from another (no spread to size a test by)"
    if not math.isnan(gap) and not math.isnan(lo):
        where_gap = "inside" if lo <= gap <= hi else "above" if gap > hi else "below"
        edge = _edge(gap, lo, hi)
        lies = f"lies {'just ' * bool(edge)}{where_gap} our interval{edge}"
        if lo > 0 or hi < 0:
            return f"{_verdict(lo, hi)} at these seeds; the paper's gap {gap:+.2f} {lies}"
        if where_gap != "inside":
            return (
                f"the paper's gap {gap:+.2f} {lies}: a gap that large is not what these runs show (the paper's is at "
                "1M steps)"
            )
    one_seed = "a side has 1 seed (no interval yet); " if have < 2 else ""
    if df < MIN_SPREAD_DF:
        return f"{one_seed}the spread rests on {count_noun(df, 'degree')} of freedom: too rough to size a test by yet"
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
    if needed > have and planned > have:
        reading += f"; the {planned} planned " + ("would do" if planned >= needed else "would not")
    return f"{one_seed}the paper's gap {gap:+.2f} needs {needed} seeds per arm{where} ({reading}){smallest}"


def both_finished(by: dict[tuple[str, str], list[dict]], tasks: Sequence[str], worse: str, better: str) -> list[str]:
    """The tasks where both sides of a claim have finished runs."""
    return [t for t in tasks if (worse, t) in by and (better, t) in by]


def _claims(runs: list[dict]) -> list[tuple[str, str, list[str], np.ndarray, np.ndarray]]:
    """Each ordering the papers claim that `runs` can compare: (worse, better, the tasks both finished runs on, and
    each one's [runs, tasks] final-success matrix over its seeds finished on all of them)."""
    tasks, by = runs_by_cell(runs)
    claims = []
    for worse, better in PAPER_ORDERINGS:
        common = both_finished(by, tasks, worse, better)
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
    95 % CI, the paper's gap, then a line per claim reading the paper's gap against ours (`seeds_reading`). Tasks
    where a side planned or running has no finished run yet are named beside the claim, and a claim with no task
    where both finished (`waiting_cells`), or whose side has no seed finished on every task both finished, has a row
    saying so, in the papers' order."""
    tasks, by = runs_by_cell(runs)
    going = running_counts(running)
    waiting = set(waiting_cells(by, going, planned, tasks))
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
            shared = both_finished(by, tasks, worse, better)
            have = {e: len(score_matrix(by, e, shared)[0]) for e in (worse, better)}  # seeds on every shared task
            if shared:
                apart = [row_label(e) for e in (worse, better) if not have[e]]
                why = (
                    f"neither {apart[0]} nor {apart[1]} has" if len(apart) == 2 else f"no {apart[0]}"
                ) + " seed finished on every one of these tasks"
            else:
                absent = [row_label(e) for e in (worse, better) if all((e, t) not in by for t in pending)]
                why = (
                    f"no {' or '.join(absent)} run finished there yet" if absent else "no task where both finished yet"
                )
            on = shared or pending
            if on:
                counts = [side_count(by, going, planned, e, on, have[e] if shared else None) for e in (worse, better)]
                paper = paper_gap(worse, better, on)
                lines.append(
                    f"| {_claim(worse, better)} | {', '.join(on)}{later if shared else ''} | {' / '.join(counts)} | - "
                    f"| n/a: {why} | - "
                    f"| {'n/a' if math.isnan(paper) else f'{paper:+.2f}'} |"
                )
                readings.append(f"- {_claim(worse, better)} on {', '.join(on)}: not read yet ({why}).")
            continue
        p, p_lo, p_hi = stats.probability_of_improvement(b, a, reps=reps, seed=seed)
        gap, lo, hi = stats.stratified_welch_interval(a, b)
        paper = paper_gap(worse, better, common)
        paper_s = "n/a" if math.isnan(paper) else f"{paper:+.2f}"
        probability = resampled_text(p, p_lo, p_hi, [a, b])
        few_runs |= FEW_RUNS in probability
        sides = [list(a[:, 0]), list(b[:, 0])]
        counts = [side_count(by, going, planned, e, common, len(m)) for e, m in ((worse, a), (better, b))]
        lines.append(
            f"| {_claim(worse, better)} | {', '.join(common)}{later} | {' / '.join(counts)} | {gap:+.2f} "
            f"{_interval(lo, hi, sides)} | {'n/a' if math.isnan(lo) else _verdict(lo, hi)} | {probability} "
            f"| {paper_s} |"
        )
        spread = _pooled([a[:, j] for j in range(len(common))] + [b[:, j] for j in range(len(common))])
        sd = "n/a" if math.isnan(spread[0]) else f"{spread[0]:.2f}"
        readings.append(
            f"- {_claim(worse, better)} over {count_noun(len(common), 'task')} (observed spread within tasks, sd {sd}): "
            + seeds_reading(
                paper,
                spread,
                min(len(a), len(b)),
                len(common),
                lo,
                hi,
                min(planned(e, t) for e in (worse, better) for t in common),
            )
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
    tasks, by = runs_by_cell(runs)
    going = running_counts(running)
    lines = [
        "| Claim | Task | Ours: better - worse [95 % Welch t-CI] | Verdict | Paper | The paper's gap against ours |",
        "|---|---|---|---|---|---|",
    ]
    for worse, better in PAPER_ORDERINGS:
        for task in tasks:
            a, b = final_successes(by.get((worse, task), [])), final_successes(by.get((better, task), []))
            if not a or not b:
                continue
            diff, lo, hi = stats.welch_interval(a, b)
            interval = _interval(lo, hi, (a, b))
            counts = " / ".join(side_count(by, going, planned, e, [task]) for e in (worse, better))
            verdict = (_verdict(lo, hi) if not math.isnan(lo) else "n/a") + f" (n={counts})"
            paper = paper_gap(worse, better, [task])
            lines.append(
                f"| {_claim(worse, better)} | {task} | {diff:+.2f} {interval} | {verdict} | "
                f"{'n/a' if math.isnan(paper) else f'{paper:+.2f}'} | "
                f"{seeds_reading(paper, _pooled([a, b]), min(len(a), len(b)), 1, lo, hi, min(planned(worse, task), planned(better, task)))} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


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
    tasks, by = runs_by_cell(runs)
    unfinished = running_counts(running)
    lines = [
        f"| Setting | Task | Runs (default / setting) | Final success: default / setting | Setting - default, final "
        f"[95 % Welch t-CI] | Verdict | Last {LAST_EVALS} evaluations (steps): default / setting | Setting - default, "
        f"last {LAST_EVALS} [95 % Welch t-CI] | Verdict | Seeds per arm for that difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []  # variant rows whose default row has no runs in their precision, where other runs of theirs exist
    for row in sorted({r["encoder"] for r in runs if " [" in r["encoder"]}, key=row_order):
        default = default_row(row)
        for task in tasks:
            base, changed = by.get((default, task), []), by.get((row, task), [])
            if changed and not base and by.get((row.partition(" ")[0], task)):
                missing.append(f"{row_label(row)} on {task}: no {default} runs to compare it with")
            if not base or not changed:
                continue
            pending = unfinished[(default, task)] + unfinished[(row, task)]
            evals = [[last_evals(r) for r in rs] for rs in (base, changed)]  # [side][run] -> (mean, steps)
            steps, budgets = {s for side in evals for _, s in side}, {r["steps"] for r in base + changed}
            measures = {
                "final": (final_successes(base), final_successes(changed)),
                "last": tuple([m for m, _ in side] for side in evals),
            }
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
                    else f" ({steps_text(next(iter(steps)))})"
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
            count = " / ".join(side_count(by, unfinished, planned, e, [task]) for e in (default, row))
            lines.append(f"| {row_label(default)}: {setting} | {task} | {count} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) if len(lines) > 2 else ""
    return "\n".join([table, *(f"- not compared: {m}" for m in missing)]).strip()
