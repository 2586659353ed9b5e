"""Table cells: Student-t and bootstrap intervals, seed counts against the plan, plurals and durations."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from pipeline import stats
from pipeline.report.config import PlannedSeeds
from pipeline.report.runs import settings_but_precision

#: below this many runs per task (on a side, in a comparison) a percentile bootstrap, which resamples within each
#: task, is no 95 % interval (at 3 runs it is [min, max]): such intervals are marked (none decides a verdict)
MIN_BOOTSTRAP_RUNS = 5
FEW_RUNS = "†"
FEW_RUNS_NOTE = (
    f"{FEW_RUNS} fewer than {MIN_BOOTSTRAP_RUNS} runs per task (in a comparison, on a side): the percentile "
    "bootstrap, which resamples within each task, is not a 95 % interval here (over 3 runs it is [min, max]); read "
    "the Student-t and Welch intervals instead."
)


def mean_ci_text(values: list[float], spec: str = ".2f") -> str:
    """mean [95 % Student-t interval of the mean over seeds]; the value alone for one seed."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    if stats.constant(values):  # a zero-width interval is no 95 % interval
        return f"{np.mean(values):{spec}} [n/a: no spread]"
    lo, hi = stats.t_interval(values)
    return f"{np.mean(values):{spec}} [{lo:{spec}}, {hi:{spec}}]"


def resampled_text(point: float, lo: float, hi: float, sides: Sequence[np.ndarray]) -> str:
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


def seeds_toward_plan(by: dict[tuple[str, str], list[dict]], encoder: str, task: str) -> int:
    """The distinct finished seeds of `encoder` on `task` as a plan counts them: a row split by precision
    (`split_mixed_precision`) with its other precisions' runs (a plan names seeds, not precisions)."""
    key = (encoder.partition(" ")[0], settings_but_precision(encoder))
    mine = [rs for (e, t), rs in by.items() if t == task and (e.partition(" ")[0], settings_but_precision(e)) == key]
    return len({r["seed"] for rs in mine for r in rs})  # a seed run in both precisions (#23's check) counts once


def running_counts(running: Sequence[dict]) -> Counter[tuple[str, str]]:
    """Runs still going per (encoder, task)."""
    return Counter((r["encoder"], r["task"]) for r in running)


def waiting_cells(
    by: dict[tuple[str, str], list[dict]], going: Counter[tuple[str, str]], planned: PlannedSeeds, tasks: Sequence[str]
) -> list[tuple[str, str]]:
    """(encoder, task) on `tasks` that `planned` names exactly or that has runs going, with no finished run of that
    encoder (this very row: a row split by precision counts apart) there yet: a row not run yet reads '0 of N', it
    is not left out (`going`: `running_counts`)."""
    return [
        (e, t)
        for e, t in plan_cells(going, planned)
        if t in tasks and (e, t) not in by and (planned(e, t) or going[(e, t)])
    ]


def plan_cells(going: Counter[tuple[str, str]], planned: PlannedSeeds) -> list[tuple[str, str]]:
    """The (encoder, task) that `planned` names exactly or that have runs `going`."""
    return list(dict.fromkeys([*planned.cells(), *going]))


def side_count(
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
        min(seeds_toward_plan(by, encoder, t) for t in tasks),
    )


def seed_values_text(values: list[float], spec: str = ".2f") -> str:
    return " / ".join(f"{v:{spec}}" for v in values)


def seeds_of_plan(count: int, planned: int) -> str:
    """ "n=3", or "n=3 of 10" while fewer seeds than `planned` are in (`_count`)."""
    return f"n={_count(count, planned)}"


def evaluation_sizes_text(usual: int, other: dict[int, list[float]]) -> str:
    """`runs.evaluation_sizes` in words: "Evaluations of 10 episodes per seed; of 50 at 100k." ("" without counts)."""
    if not usual:
        return ""
    return (
        f"Evaluations of {count_noun(usual, 'episode')} per seed"
        + "".join(f"; of {n} at {steps_text(steps)}" for n, steps in other.items())
        + "."
    )


def count_noun(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def steps_text(steps: Sequence[float]) -> str:
    return ", ".join(f"{s / 1000:g}k" if s >= 1000 else f"{s:g}" for s in steps)


def r2_text(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"  # NaN: a position that never moved


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"
