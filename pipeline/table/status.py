"""`--status`: where each task and row stands, the running step's progress and what is not committed."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from data.tasks import PAPER_TASKS
from pipeline.table.commands import Step, git_line, grid_evaluations
from pipeline.table.config import (
    ALL_ROWS,
    CHECKOUT,
    LOG_FILE,
    REACH,
    TableConfig,
    flag_value,
    pilot_dir,
    planned_seeds,
    table_dir,
)
from pipeline.table.folder import Folder
from pipeline.table.forecast import estimate_text, forecast_text, grid_runs, this_cpus_column
from pipeline.table.plan import Planner, open_steps
from pipeline.table.runlogs import hours, last_numbers, pretrain_steps, read_eval_rows, run_state
from rl import outcome


def lock_holder(root: Path) -> str | None:
    """Who holds the root's lock (common.runs.exclusive_run_dir), or None when no run is going on."""
    path = root / ".lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # also releases the probe's shared lock
    return None


def status_text(cfg: TableConfig) -> str:
    """Per task: the preparation stage reached and the budget; per (task, row): seeds done / planned, steps, success."""
    folder = Folder(cfg)
    steps = Planner(Folder(replace(cfg, phase="all"))).plan()
    plan = planned_seeds(replace(cfg, phase="all"))
    holder = lock_holder(folder.root)
    lines = [
        f"cpu-table at {folder.root} ({'running: ' + holder if holder else 'not running'}; log {folder.root / LOG_FILE})",
        "",
        "| task | stage reached | next stage | budget |",
        "|---|---|---|---|",
    ]
    for task in PAPER_TASKS:
        prep = [s for s in steps if s.key.startswith(f"{task}: ") and s.argv[:2] != ["-m", "rl.grid"] and not s.blocked]
        first_open = next((i for i, s in enumerate(prep) if not s.done), len(prep))
        reached = prep[first_open - 1].key.removeprefix(f"{task}: ") if first_open else "not started"
        upcoming = prep[first_open].key.removeprefix(f"{task}: ") if first_open < len(prep) else "-"
        b = folder.budget(task)
        pilot = ""
        if task != REACH:
            done, final = folder.run_steps(pilot_dir(task, "state", cfg.pilot_seed))
            pilot = f"pilot state at {done:,} steps{'' if final else ' (in progress)'}" if done else "pilot not started"
        reason = "" if task != REACH and not done and b.steps is None else b.reason  # nothing to read yet
        lines.append(f"| {task} | {reached} | {upcoming} | {'; '.join(x for x in (pilot, reason) if x)} |")
    lines += [
        "",
        "| task | row | seeds done / planned | steps (min-max) of budget | final success (mean of done seeds) |",
        "|---|---|---|---|---|",
    ]
    waves: dict[tuple[str, str], list[Step]] = {}
    for s in steps:
        if s.wave:
            for task in s.wave[0]:
                for row in s.wave[1]:
                    waves.setdefault((task, row), []).append(s)
    for (task, row), mine in sorted(
        waves.items(), key=lambda kv: (PAPER_TASKS.index(kv[0][0]), ALL_ROWS.index(kv[0][1]))
    ):
        # the first wave whose runs of this row are not all finished (its grid may wait on the other rows)
        _, _, seeds, budget = next(
            (s.wave for s in mine if not folder.finished([table_dir(task, row, k) for k in s.wave[2]], s.wave[3])),
            mine[-1].wave,
        )
        planned = plan.get((task, row), len(seeds))
        then = f" (then {planned})" if planned > len(seeds) else ""
        runs = [folder.run_steps(table_dir(task, row, k)) for k in seeds]
        done = [k for k in seeds if folder.finished([table_dir(task, row, k)], budget)]
        summaries = [outcome.read_summary(folder.root / table_dir(task, row, k)) or {} for k in done]
        success = [s["success_rate"] for s in summaries if isinstance(s.get("success_rate"), (int, float))]
        diverged = sum(outcome.DIVERGED in s for s in summaries)
        started = [n for n, _ in runs if n]
        span = f"{min(started):,}-{max(started):,}" if started else "0"
        n = len(success)
        mean = f"{sum(success) / n:.2f} ({n} seed{'s' * (n != 1)})" if success else "-"
        mean += f", {diverged} diverged (counted as 0)" if diverged else ""
        lines.append(f"| {task} | {row} | {len(done)}/{len(seeds)}{then} | {span} of {budget:,} | {mean} |")
    todo = open_steps(folder)
    lines += [
        "",
        f"next step of phase(s) {','.join(cfg.phases)}: {todo[0].key}"
        if todo
        else f"every step of phase(s) {','.join(cfg.phases)} is done",
    ]
    progress = step_progress(folder.root, todo[0]) if todo else ""
    if progress:
        lines.append(
            f"  where it stands: {progress}" + ("" if holder else " (not running now: its last process's rate)")
        )
    uncommitted = uncommitted_text(folder)
    lines += ["", uncommitted] if uncommitted else []
    column = this_cpus_column(cfg)
    running = folder.state.get("running", {}) if holder else {}  # {key: argv} of the command a running table started
    forecast = forecast_text(cfg, folder, todo, column, running) if column else ""
    lines += ["", forecast] if forecast else []
    lines += ["", estimate_text(cfg, folder, sources=False)]
    return "\n".join(lines)


def uncommitted_text(folder: Folder) -> str:
    """A warning naming the kept files (results, pilots, carried models) the checkout has not committed, with the git
    line that commits them: a replaced machine loses them. '' when all are committed, or when the folders lie
    outside the checkout (git is not asked about them then); a line saying so when git cannot tell."""
    kept = [folder.results, Path(f"{folder.results}-pilot"), folder.carry]
    inside = [p for p in kept if p.is_relative_to(CHECKOUT) and p.exists()]
    if not inside:
        return ""
    command = ["git", "--no-optional-locks", "-C", str(CHECKOUT), "status", "--porcelain", "-z"]
    try:
        found = subprocess.run(
            [*command, "--untracked-files=all", "--", *map(str, inside)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"could not check that the kept files are committed (git: {err})"
    if found.returncode:
        return f"could not check that the kept files are committed (git: {found.stderr.strip()[:200]})"
    fields = found.stdout.split("\0")
    changed, i = [], 0
    while i < len(fields) and fields[i]:
        code, path = fields[i][:2], fields[i][3:]
        i += 2 if "R" in code or "C" in code else 1  # a rename's or copy's source path follows it
        if "D" not in code:  # a deleted file is still in git's history: nothing a replaced machine loses
            changed.append(path)
    if not changed:
        return ""
    folders = [str(p.relative_to(CHECKOUT)) for p in inside]
    return (
        f"NOT COMMITTED: {len(changed)} kept file{'s' * (len(changed) > 1)} under {', '.join(folders)} (e.g. "
        f"{changed[0]}); a replaced machine loses them: `{git_line(folders, 'kept by make cpu-table')}`"
    )


def step_progress(root: Path, step: Step) -> str:
    """How far the step's command has got, read from its own logs: a MultiMAE's steps, image rate and the time left
    at that rate, a SAC grid's runs in progress, their env-step rate and when they end (`sac_progress`); '' when it
    has not logged yet, or for other commands."""
    module, out = step.argv[1:2], flag_value(step.argv, "--out")
    if out is None:
        return ""
    if module == ["pretrain.multimae"]:
        return pretrain_progress(root / out)
    if module == ["rl.grid"]:
        steps = int(flag_value(step.argv, "--steps") or 0)
        return sac_progress(grid_runs(root, step.argv), steps, grid_evaluations(step.argv))
    return ""


def pretrain_progress(run: Path) -> str:
    """'step S of T (P %), R img/s over its last N steps, ~H left at that rate' from a pretrain.multimae run folder
    ('' before its first train.csv row; `pretrain_steps` says how R is measured)."""
    steps = pretrain_steps(run)
    if steps is None:
        return ""
    step, total, batch, rate, over = steps
    left = f"~{hours((total - step) * batch / rate)} left at that rate" if rate > 0 else "no rate logged yet"
    measured = f"over its last {over} steps" if over else "(its last train.csv row)"
    return f"step {step:,} of {total:,} ({100 * step / total:.1f} %), {rate:.1f} img/s {measured}: {left}"


def sac_progress(runs: Sequence[Path], steps: int, evaluations: tuple[int, int, int]) -> str:
    """The grid's runs in progress (`run_state`): how many, their steps, the mean env-step rate per run of their
    last metrics rows (each row's too where rows differ: state's runs step 2-3x as fast as a frozen encoder's), and
    when the last of them ends: its steps left at its row's rate, plus its evaluations left (`evaluations`: rl.grid's
    interval, episodes, episodes of the last) at the seconds per episode its own took (before its first, the others'
    mean); then how many runs wait ('' when none is in progress). The whole grid's time is the forecast's: it packs
    the waiting runs and counts their evaluations."""
    states = [run_state(run) for run in runs]
    going = [(run, n, rate) for run, (n, finished, rate) in zip(runs, states) if n and not finished]
    if not going:
        return ""
    rate = sum(r for *_, r in going) / len(going)
    by_row: dict[tuple[str, str], list[float]] = {}
    for run, _, r in going:
        by_row.setdefault(row_of(run), []).append(r)
    row_rates = {row: sum(rs) / len(rs) for row, rs in by_row.items()}
    evaluated = {run: evaluations_so_far(run) for run, *_ in going}
    measured = [t for _, t in evaluated.values() if t]
    fallback = sum(measured) / len(measured) if measured else 0.0
    low, high = min(n for _, n, _ in going), max(n for _, n, _ in going)
    each = "that rate" if len(row_rates) == 1 else "its row's rate"
    if all(row_rates.values()):
        ends = max(
            max(steps - n, 0) / row_rates[row_of(run)]
            + episodes_left(evaluations, steps, evaluated[run][0]) * (evaluated[run][1] or fallback)
            for run, n, _ in going
        )
        timed = "at the seconds per episode its earlier ones took" if measured else "uncounted: none timed yet"
        left = f"the last of them ends in ~{hours(ends)} (its steps at {each}, its evaluations {timed})"
    else:
        left = "no rate logged yet"
    waiting = sum(1 for run, (n, _, _) in zip(runs, states) if not n and not outcome.is_finished(run, steps))
    rows = "; " + ", ".join(f"{row} {r:.2f}" for (_, row), r in sorted(row_rates.items())) if len(row_rates) > 1 else ""
    return (
        f"{len(going)} of {len(runs)} runs in progress at {low:,}-{high:,} of {steps:,} steps, "
        f"{rate:.2f} env-steps/s per run (their last metrics rows{rows}): {left}; "
        f"{waiting} not started (the forecast below counts the whole grid)"
    )


def evaluations_so_far(run: Path) -> tuple[int, float]:
    """(step of a run's newest evaluation, wall seconds per episode of its evaluations so far: eval.csv's eval_s over
    its episodes; the runs of a pack evaluate together, so this is the pack's time); (0, 0.0) before its first."""
    rows = read_eval_rows(run / "eval.csv")
    timed = [t for t in (last_numbers([r], "eval_s", "episodes") for r in rows) if t and t["episodes"] > 0]
    per_episode = sum(t["eval_s"] for t in timed) / sum(t["episodes"] for t in timed) if timed else 0.0
    return (int(float(rows[-1]["step"])) if rows else 0), per_episode


def episodes_left(evaluations: tuple[int, int, int], steps: int, done: int) -> int:
    """Evaluation episodes a run evaluated through step `done` still plays to `steps`: one evaluation every
    `interval` steps and one at the end (`evaluations`: interval, episodes, episodes of the last)."""
    interval, episodes, last = evaluations
    points = list(range(interval, steps, interval)) if interval > 0 else []
    return sum(episodes for p in points if p > done) + (last if steps > done else 0)


def row_of(run: Path) -> tuple[str, str]:
    """(task, row) of a run folder <...>/<task>/<row>/seed<k>."""
    return run.parent.parent.name, run.parent.name
