"""What a root holds (`Folder`): its record of finished steps (table.json), its settings, budgets and run folders."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from common.io import atomic_write_json
from data.tasks import PAPER_TASKS
from pipeline.keep import KEPT_MODELS
from pipeline.table.budget import Budget, choose_budget
from pipeline.table.carry import carried_files, kept_models, model_copies, sha256
from pipeline.table.config import (
    FROZEN,
    REACH,
    SETTINGS_FILE,
    SPENT_EVERY_S,
    STATE_FILE,
    TableConfig,
    as_ran,
    frozen_settings,
    pilot_dir,
    results_path,
    results_settings,
    setting_changes,
)
from pipeline.table.runlogs import read_eval_rows, run_state
from rl import outcome


@contextlib.contextmanager
def repeating(every: float, name: str, tick: Callable[[], None]):
    """Call `tick` before the block, every `every` seconds in a thread of its own while it runs, and once more
    after it (a process killed without its `finally`, e.g. the table stopped by SIGTERM, ticks again at the next
    start)."""
    tick()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            tick()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        tick()


class Folder:
    """What the root holds: run steps, shard manifests, and the record of finished steps (table.json)."""

    def __init__(self, cfg: TableConfig):
        self.cfg = cfg
        self.root = Path(cfg.root).expanduser().resolve()
        self.results = results_path(cfg.results)
        self.carry = results_path(cfg.carry)
        path = self.root / STATE_FILE
        self.state: dict = json.loads(path.read_text()) if path.exists() else {}
        self.started = "settings" in self.state  # recorded by an earlier run of this root
        self.state.setdefault("done", {})
        self.state.setdefault("budgets", {})
        self.lock = threading.RLock()

    def save(self) -> None:
        with self.lock:  # one writer at a time: `timed`'s heartbeat saves from its own thread
            atomic_write_json(self.root / STATE_FILE, self.state)

    def check_settings(self) -> None:
        """Record the FROZEN settings on the first run (a setting made FROZEN since the root started: on this
        run, as `as_ran` says the root ran it, else as given); refuse a run that changes them."""
        mine = frozen_settings(self.cfg)
        kept = self.state.setdefault("settings", {})
        before = as_ran(kept)
        for k in FROZEN:
            kept.setdefault(k, before.get(k, mine[k]))
        changed = setting_changes(mine, kept, "started with")
        if changed:
            raise ValueError(
                f"{self.root} was started with other settings: {'; '.join(changed)}; leave those flags out to "
                "continue with the settings it recorded, or use another --root"
            )

    def check_start(self) -> None:
        """Refusals no step needs to run for (made before a background run detaches, and again by the run):
        changed FROZEN settings; results made under other settings (their SETTINGS_FILE), whose runs this root's
        would be pooled with; a new root (no table.json) beside kept runs that no SETTINGS_FILE describes."""
        self.check_settings()
        theirs = as_ran(results_settings(self.results))
        changed = setting_changes(self.state["settings"], theirs, "they have")
        if changed:
            fix = (  # a started root's flags met its own record first (check_settings): the two records disagree
                f"this root's {STATE_FILE} and {self.results / SETTINGS_FILE} disagree: restore the latter from git "
                f"if it was edited, else set the former's settings to the committed ones"
                if self.started
                else f"leave those flags out (a new root takes them from {self.results / SETTINGS_FILE})"
            )
            raise ValueError(
                f"{self.results} holds results made under other settings than this root's: {'; '.join(changed)}; "
                f"{fix}, or give this root folders of its own (--results results/cpu-table-2 --carry "
                "artifacts/cpu-table-2)"
            )
        self.check_carry()
        if theirs or (self.root / STATE_FILE).exists():
            return
        kept = [d for d in (self.results, Path(f"{self.results}-pilot")) if d.is_dir() and any(d.rglob("*.json"))]
        if kept:
            raise ValueError(
                f"{self.root} is a new root (no {STATE_FILE}), but {' and '.join(map(str, kept))} already hold runs "
                f"whose settings no {SETTINGS_FILE} records, which this one's could contradict when kept; restore the "
                "root that made them, or give this one folders of its own (--results results/cpu-table-2 --carry "
                "artifacts/cpu-table-2)"
            )

    def check_carry(self) -> None:
        """Refuse a carry folder that does not go with the results folder: models of a task the results hold no
        record of (KEPT_MODELS; another experiment's, unless they are this root's own, carried before the record
        was written), models other than the recorded ones, or recorded models neither carried nor in this root
        (its frames, labels and pretraining would run again, then contradict what the results kept)."""
        for task in PAPER_TASKS:
            recorded, lacking = kept_models(self, task), []
            for rel, (src, dst) in zip(carried_files(task), model_copies(self, task)):
                if rel not in recorded:
                    if dst.exists() and not (src.exists() and src.read_bytes() == dst.read_bytes()):
                        raise ValueError(
                            f"{self.carry} holds models of {task} ({rel}) that {self.results} does not record "
                            f"({KEPT_MODELS.format(task=task)}): another experiment's; give this one a carry folder "
                            "of its own (--carry <another folder>)"
                        )
                elif dst.exists() and recorded[rel] != sha256(dst.read_bytes()):
                    raise ValueError(
                        f"{self.carry} holds models of {task} ({rel}) other than the ones "
                        f"{self.results / KEPT_MODELS.format(task=task)} records; check out the carry folder "
                        "committed with these results"
                    )
                elif not dst.exists() and not src.exists():
                    lacking.append(rel)
                elif src.exists() and recorded[rel] != sha256(src.read_bytes()):
                    raise ValueError(
                        f"this root's runs/{rel} is not the model {self.results / KEPT_MODELS.format(task=task)} "
                        "records: another root made these results; give this root folders of its own (--results "
                        "results/cpu-table-2 --carry artifacts/cpu-table-2), or move its model aside to adopt the "
                        "recorded one"
                    )
            if lacking:
                raise ValueError(
                    f"{self.results} recorded {task}'s carried models, but some are neither in {self.carry} nor in "
                    f"this root: {', '.join(lacking)}; check out the commit that added them to {self.carry} (the git "
                    "line printed after each carry step adds both folders)"
                )

    def record_settings(self) -> None:
        """Write this root's settings to the results folder's SETTINGS_FILE before anything is kept there (committed
        with them: a new machine's root takes them, `adopt_recorded`); to one written before a FROZEN setting
        existed, add it (as the root ran it), never changing a recorded one."""
        path = self.results / SETTINGS_FILE
        recorded = results_settings(self.results)
        if not path.exists() or set(FROZEN) - set(recorded):
            mine = {k: self.state["settings"][k] for k in FROZEN}
            atomic_write_json(path, {**mine, **as_ran(recorded)})

    def marked(self, key: str) -> bool:
        return key in self.state["done"]

    def adopt(self, task: str, encoders: Sequence[str]) -> None:
        """Record that this root takes `task`'s carried `encoders` (their step marked) before it copies them: a copy
        killed midway is finished by the next run, never mistaken for a root to prepare from scratch, and encoders
        this root carries later are not taken for adopted ones."""
        with self.lock:
            self.state.setdefault("adopted", {})[task] = list(encoders)
        self.mark(f"{task}: carried models")

    def mark(self, key: str) -> None:
        """Record `key` done, with the wall seconds every invocation that ran it spent (`timed`)."""
        with self.lock:  # `timed`'s heartbeat may be saving the state from its thread (a carry marks inside it)
            seconds = self.state.get("spent", {}).get(key, 0.0)
            self.state["done"][key] = {"seconds": round(seconds, 1), "at": time.strftime("%Y-%m-%d %H:%M:%S")}
            self.save()

    @contextlib.contextmanager
    def timed(self, key: str, every: float = SPENT_EVERY_S):
        """Add the wall time of the block to table.json's "spent" seconds of step `key`, saved every `every`
        seconds meanwhile: a step resumed over several sessions (each ending kills it) records its whole time,
        less at most `every` per interruption."""
        last = [time.monotonic()]

        def add() -> None:
            try:
                with self.lock:
                    now = time.monotonic()
                    spent = self.state.setdefault("spent", {})
                    spent[key] = round(spent.get(key, 0.0) + now - last[0], 1)
                    last[0] = now
                    self.save()
            except OSError as err:  # e.g. a full disk: the step goes on (its outcome is never hidden by a save)
                print(f"cpu-table: could not save {key}'s time to {STATE_FILE} ({err})", flush=True)

        with repeating(every, f"spent {key}", add):
            yield

    def shards_complete(self, rel: str, labelled: bool = False) -> bool:
        from data.shards import ShardError, read_manifest

        try:
            manifest = read_manifest(self.root / rel)
        except ShardError:
            return False
        return manifest.get("status", "complete") == "complete" and (not labelled or "labelled_from" in manifest)

    def run_steps(self, run_dir: str) -> tuple[int, bool]:
        """(steps, finished) of a SAC run folder as status shows it (`run_state`: a run resumed past its summary
        is in progress); whether a grid is done is `finished`'s."""
        steps, finished, _ = run_state(self.root / run_dir)
        return steps, finished

    @staticmethod
    def kept_as_run(run: Path, kept: Path) -> bool:
        """The kept copy of a run holds its outcome (summary.json), the root's own where the root has one."""
        summary = kept / outcome.SUMMARY
        mine = run / outcome.SUMMARY
        return summary.exists() and (not mine.exists() or mine.read_bytes() == summary.read_bytes())

    def summarized(self, run_dir: str) -> int:
        """The steps a SAC run folder's summary.json reports (`rl.outcome.summarized_steps`)."""
        return outcome.summarized_steps(self.root / run_dir)

    def finished(self, run_dirs: Iterable[str], steps: int) -> bool:
        """Every run's summary reports at least `steps` or that it diverged (rl.grid skips it then:
        `rl.outcome.is_finished`), whether or not a longer grid has resumed it since."""
        return all(outcome.is_finished(self.root / d, steps) for d in run_dirs)

    def budget(self, task: str) -> Budget:
        """The task's budget: reach's fixed one, the recorded one, or the rule over its state pilot."""
        cfg = self.cfg
        if task == REACH:
            return Budget(cfg.reach_steps, None, f"fixed: {cfg.reach_steps:,} steps (it learns there)")
        if task in self.state["budgets"]:
            b = self.state["budgets"][task]
            return Budget(b["steps"], b["held_at"], b["reason"])
        return pilot_budget(cfg, self.root / pilot_dir(task, "state", cfg.pilot_seed))

    def record_budgets(self) -> None:
        for task in PAPER_TASKS[1:]:
            b = self.budget(task)
            if b.steps is not None and task not in self.state["budgets"]:
                self.state["budgets"][task] = asdict(b)
                self.save()
                print(f"budget of {task}: {b.reason}", flush=True)


def pilot_budget(cfg: TableConfig, run: Path) -> Budget:
    """The budget rule (`choose_budget`) over the state pilot in `run` (a root's or its kept copy): decided at the end
    of a chunk, on the evaluations of finished chunks; the cap when it diverged before holding."""
    steps = outcome.summarized_steps(run)
    budget = choose_budget(
        [r for r in read_eval_rows(run / "eval.csv") if float(r["step"]) <= steps],
        steps,
        cfg.budget_threshold,
        cfg.budget_in_a_row,
        cfg.budget_cap,
        cfg.eval_every,
    )
    if budget.steps is None and outcome.diverged(run):  # it will never hold now: as at the cap
        budget = Budget(
            cfg.budget_cap,
            None,
            f"the state pilot diverged at {steps:,} steps before holding >= {cfg.budget_threshold:g}; "
            f"budget = the cap, {cfg.budget_cap:,} (piloting again would not change it: a resumed pilot repeats "
            "its steps exactly, and a new one with the recorded --pilot-seed most likely too)",
        )
    return budget
