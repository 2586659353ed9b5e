"""Running the table: the step loop, keeping finished runs as a grid goes on, --dry-run, --background and `main`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from common.cli import fail
from common.io import OutputError
from common.runs import exclusive_run_dir, nice_own_session
from pipeline.background import BackgroundConfig, running_pid, start
from pipeline.table.commands import Step, check_pass_through_apart, git_line
from pipeline.table.config import (
    BACKGROUND_NAME,
    CHECKOUT,
    KEEP_FINISHED_EVERY_S,
    LOG_FILE,
    TableConfig,
    table_config,
    table_dir,
)
from pipeline.table.folder import Folder, repeating
from pipeline.table.forecast import estimate_text
from pipeline.table.plan import Planner, open_steps
from pipeline.table.report import write_table_report
from pipeline.table.status import status_text
from rl import outcome


def keep_finished(
    folder: Folder, wave: tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], int]
) -> tuple[list[Path], list[str]]:
    """Keep each run of a table grid's `wave` (tasks, rows, seeds, budget) that has finished and the results folder
    lacks, as its (task, row)'s keep step will after the grid (same files, same layout; that step then finds them
    kept). A finished run is never written again by the grid, so it is kept while the other runs go on. Returns
    the files written and a line per run that could not be kept (the others are kept all the same), such as a run
    the root trained again beside another run's kept outcome (`Folder.kept_as_run`, as the keep steps check).
    A kept run that reached its budget gives up its replay (`free_replay`)."""
    from pipeline.keep import KeepConfig, keep

    written, refused = [], []
    for run, dest in wave_runs(folder, wave):
        if not outcome.is_finished(run, wave[3]):
            continue  # still going
        if not folder.kept_as_run(run, dest):  # a retrained run's old kept outcome is refused by keep
            try:
                folder.record_settings()
                written += keep(KeepConfig(source=str(run), out=str(dest)))
            except (OSError, ValueError) as err:
                refused.append(f"{run.relative_to(folder.root)}: {err}")
                continue
        free_replay(run, wave[3])
    return written, refused


def wave_runs(
    folder: Folder, wave: tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], int]
) -> Iterator[tuple[Path, Path]]:
    """(run folder in the root, its kept copy in the results) of each run of a grid's `wave` (tasks, rows, seeds,
    budget)."""
    tasks, rows, seeds, _ = wave
    for run in (table_dir(t, r, s) for t in tasks for r in rows for s in seeds):
        yield folder.root / run, folder.results / Path(run).relative_to("runs/sac")


def free_kept_replays(folder: Folder) -> None:
    """Free the replay of each kept run of the plan's grids (`free_replay`): those the grid's last keep pass did not
    free (the table stopped between the grid's end and that pass) once their row's keep step has kept them."""
    for step in Planner(folder).plan():
        for run, dest in wave_runs(folder, step.wave) if step.wave else ():
            if folder.kept_as_run(run, dest):
                free_replay(run, step.wave[3])


def free_replay(run: Path, steps: int) -> None:
    """Delete the replay folders of a kept table run whose summary reports its budget, `steps` (not of one that
    diverged: retraining it from its last good checkpoint needs that). A table's budgets never grow, so nothing
    resumes it; its checkpoint .pt stays. A frozen-encoder run's replay is ~0.1 GiB per 100k steps and a CNN row's
    GiBs: kept, a phase's hundreds of runs would fill the disk."""
    summary = outcome.read_summary(run)
    if summary and outcome.divergence(summary) is None and outcome.summarized_steps(run) >= steps:
        for replay in (d for d in run.glob("replay-*") if d.is_dir()):
            shutil.rmtree(replay, ignore_errors=True)  # what stays is freed at the next pass


@contextlib.contextmanager
def keeping_finished(folder: Folder, step: Step):
    """While a table grid (`Step.wave`) runs, keep each of its runs as it finishes (`keep_finished`, every
    KEEP_FINISHED_EVERY_S and once at the end) and print the git line: a machine lost mid-grid loses only the
    unfinished runs (their checkpoints are not committed), not the runs finished hours before the grid's last one.
    A run that cannot be kept is said once; neither it nor any other error stops the grid or replaces its outcome
    (the row's keep step, after the grid, meets it again and stops the table)."""
    if step.wave is None:
        yield
        return
    wave, said = step.wave, set()

    def once() -> None:
        try:
            written, refused = keep_finished(folder, wave)
        except Exception:  # noqa: BLE001 - a defect here must not end the grid it watches
            written, refused = [], [traceback.format_exc().rstrip()]
        for line in refused:
            if line not in said:
                said.add(line)
                print(f"cpu-table: could not keep a finished run of {step.key}: {line}", flush=True)
        if written:
            runs = ", ".join(sorted({f.parent.relative_to(folder.results).as_posix() for f in written}))
            print(
                f"[{time.strftime('%H:%M:%S')}] kept finished runs in {folder.cfg.results}: {runs}\n"
                f"  to commit: {git_line((folder.cfg.results,), f'finished runs {runs}')}",
                flush=True,
            )

    with repeating(KEEP_FINISHED_EVERY_S, f"keep {step.key}", once):
        yield


def hold_root(stack: contextlib.ExitStack, root: Path) -> None:
    """Take the root's lock for this process; a second copy stops with one line and exit status 2."""
    try:
        stack.enter_context(exclusive_run_dir(root))
    except OutputError as err:
        fail(str(err))


def child_env() -> dict[str, str]:
    """The steps' environment: this checkout first on the path, headless GL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MUJOCO_GL", "egl")
    return env


def refuse_blocked(cfg: TableConfig, step: Step) -> None:
    """The next step waits for a decision (a budget) that the selected phases never make: say which phase does.
    With phase B selected (it decides the budgets) nothing before a waiting step can end its wait: say that."""
    if not step.blocked:
        return
    if "B" in cfg.phases:
        raise ValueError(f"{step.key} waits for {step.blocked}, and no step before it can end that wait")
    raise ValueError(
        f"{step.key} waits for {step.blocked}, which phase(s) {','.join(cfg.phases)} do not run; "
        "run the phase that decides it first (--phase B), or --phase all"
    )


def run(cfg: TableConfig) -> list[str]:
    """Run the selected phases' steps in order until every one is done; returns the keys of the steps run."""
    folder = Folder(cfg)
    ran: list[str] = []
    with contextlib.ExitStack() as stack:
        hold_root(stack, folder.root)
        folder.check_start()
        folder.save()
        print(estimate_text(cfg, folder), flush=True)
        while True:
            folder.record_budgets()
            todo = open_steps(folder)
            if not todo:
                print(
                    f"cpu-table: every step of phase(s) {','.join(cfg.phases)} is done; `make cpu-table-report` "
                    f"(`python -m pipeline.table --report DIR`) reports {cfg.results}",
                    flush=True,
                )
                return ran
            step = todo[0]
            refuse_blocked(cfg, step)
            if ran and ran[-1] == step.key:
                raise RuntimeError(
                    f"{step.key} ran, exited 0 and is still not done: what it wrote (above in "
                    f"{folder.root / LOG_FILE}) is not what the table checks for (a summary.json at the step count, a "
                    "complete shard manifest, a pretraining's train.csv at its last step, a probe file); a step stopped "
                    "early on purpose (SIGTERM, --max-steps) continues with `make cpu-table`, "
                    "any other case is a defect to report with that log"
                )
            print(f"\n[{time.strftime('%H:%M:%S')}] {step.phase} | {step.key}\n  {step.command()}", flush=True)
            start = time.time()
            with folder.lock:  # the command as it runs (a sized grid's packs): status forecasts it so while it runs
                folder.state["running"] = {step.key: step.argv} if step.argv else {}  # {} while an action runs
            folder.save()
            if step.kept:
                folder.record_settings()
            with folder.timed(step.key), keeping_finished(folder, step):
                if step.action is not None:
                    step.action()
                else:
                    code = subprocess.run([sys.executable, *step.argv], cwd=folder.root, env=child_env()).returncode
                    if code:
                        raise RuntimeError(
                            f"{step.key} failed (exit {code}); its output is above in {folder.root / LOG_FILE}; "
                            "rerun `make cpu-table` once fixed: finished steps are skipped, started ones resume"
                        )
            # marked only with its outputs there: a command stopped early exits 0 (a SIGTERMed pretraining), and a
            # later run killed before its last save must not find it marked beside outputs that look finished
            if step.marker and any(s.made for s in Planner(folder).plan() if s.key == step.key):
                folder.mark(step.key)
            if step.argv[:2] == ["-m", "pipeline.keep"]:
                free_kept_replays(folder)
            ran.append(step.key)
            print(f"  done in {(time.time() - start) / 60:.1f} min", flush=True)
            if step.kept:
                print(f"  to commit: {git_line(step.kept, step.key)}", flush=True)


def dry_run_text(cfg: TableConfig) -> str:
    folder = Folder(cfg)
    folder.check_start()  # what a run would refuse, a dry run refuses (nothing is saved)
    steps = Planner(folder).plan()
    lines = [f"cpu-table dry run, phase(s) {','.join(cfg.phases)}, root {folder.root} (commands run there):"]
    for s in steps:
        if not s.done:
            sized = "\n    (--pack sized again from the runs left when it starts: --status shows it)" if s.sized else ""
            lines.append(f"[{s.phase}] {s.key}\n    {s.command()}{sized}")
    done = sum(s.done for s in steps)
    lines += [f"{done} of {len(steps)} steps already done", estimate_text(cfg, folder)]
    return "\n".join(lines)


def background_command(argv: Sequence[str]) -> list[str]:
    """The detached run: the same flags without --background."""
    return [sys.executable, "-m", "pipeline.table", *(a for a in argv if a != "--background")]


def start_background(cfg: TableConfig, argv: Sequence[str]) -> int:
    """Start the run detached (pipeline.background: niced, its output appended to <root>/table.log); when one
    started so still runs, say so; refused while another copy holds the root. Returns the run's pid."""
    root = Path(cfg.root).expanduser().resolve()
    pid = running_pid(root / f"{BACKGROUND_NAME}.pid")
    if pid is not None:
        print(
            f"cpu-table already runs (pid {pid}); log: {root / LOG_FILE}\n  make cpu-table-status    # where it stands"
        )
        return pid
    with contextlib.ExitStack() as stack:  # a copy started otherwise is refused here, before anything starts
        hold_root(stack, root)
        folder = Folder(cfg)  # and what the run would refuse at once is refused here, not only in its log
        folder.check_start()
        todo = open_steps(folder)
        if todo:
            refuse_blocked(cfg, todo[0])
    pid = start(
        BackgroundConfig(name=BACKGROUND_NAME, nice=cfg.nice, logs=str(root)), background_command(argv), child_env()
    )
    print("  make cpu-table-status    # where it stands")
    return pid


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = table_config(argv)
        if cfg.report_seeds and not cfg.report:  # checked here: pipeline.quotes parses a quote's flags less --report
            raise ValueError("--report-seeds chooses the seeds --report reads: give --report FOLDER with it")
        if not (cfg.status or cfg.report):  # these two read; a dry run shows what would run, the others start it
            check_pass_through_apart(cfg)
        if cfg.status:
            print(status_text(cfg))
        elif cfg.report:
            print(f"report: {write_table_report(cfg)}")
        elif cfg.dry_run:
            print(dry_run_text(cfg))
        elif cfg.background:
            start_background(cfg, argv)
        else:
            nice_own_session()  # detached by --background: nice then ranks it below other sessions too
            run(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err))
