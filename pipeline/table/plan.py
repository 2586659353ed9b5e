"""The plan (`Planner`): every step of the selected phases, done or not, for what the root holds now; and what a
task's preparation keeps (`keep_preparation`), whose stage times (`stage_times`) read the plan."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from common.cpuinfo import cpu_bf16_units, cpu_model
from common.io import atomic_write_json
from data.tasks import PAPER_TASKS
from pipeline.keep import KEPT_MODELS, KEPT_STAGES
from pipeline.table.carry import (
    CARRIED,
    KEPT_SALIENCY,
    adopt_models,
    carried_encoders,
    carried_files,
    carry_models,
    missing_kept_runs,
    model_copies,
    preparation_copies,
    restore_kept_runs,
)
from pipeline.table.commands import (
    PROBES,
    Step,
    grid_argv,
    pretrain_argv,
    pretrain_epochs,
    probe_argv,
    random_policy_argv,
    sac_flags,
    with_pack,
)
from pipeline.table.config import (
    CNN_ROWS,
    EARLY_ROWS,
    ENCODERS,
    GRID_ROWS,
    REACH,
    SPENT_EVERY_S,
    STATE_FILE,
    TableConfig,
    pilot_dir,
    results_path,
    row_plan,
    run_precision,
    table_dir,
)
from pipeline.table.folder import Folder
from pipeline.table.forecast import best_pack
from pipeline.table.runlogs import pretrain_finished
from rl import outcome


class Planner:
    """The steps of the selected phases for what the root holds now."""

    def __init__(self, folder: Folder):
        self.f, self.cfg = folder, folder.cfg
        self.budget = functools.cache(folder.budget)  # read from the pilot's eval.csv once per plan, not per use
        self.steps: list[Step] = []
        self.phase = ""

    def add(self, key: str, argv: list[str], done: bool, marker: bool = False, **kw) -> Step:
        step = Step(key, self.phase, argv, done and (not marker or self.f.marked(key)), marker=marker, made=done, **kw)
        self.steps.append(step)
        return step

    def plan(self) -> list[Step]:
        if missing_kept_runs(self.f):  # a new root beside kept runs (a new machine): first copied in
            self.phase = self.cfg.phases[0]
            self.add(
                "restore kept runs",
                [],
                False,
                action=lambda: restore_kept_runs(self.f),
                note=f"copy the runs kept in {self.cfg.results} and {self.cfg.results}-pilot that this root lacks into "
                "its runs/ (they are not run again)",
            )
        for phase in self.cfg.phases:
            self.phase = phase
            getattr(self, f"phase_{phase.lower()}")()
        return self.steps

    # -- the phases ------------------------------------------------------------------------------
    def phase_a(self) -> None:
        # RGB+S PO vs ViSaRL need only the rgb+saliency encoder: their first seeds run before the rgb MultiMAE
        # (~10 h on 2 cores) pretrains, and are kept as they end; the first wave then runs what is left
        [(_, _, (first, *_))] = row_plan(self.cfg, "A")  # its one group of rows: their first wave's seed count
        self.prepare(REACH, after_rgbs=lambda: self.table([REACH], EARLY_ROWS, range(first)))
        self.rows("A")

    def phase_b(self) -> None:
        tasks = list(PAPER_TASKS[1:])
        # a state pilot is final once it decided its task's budget: kept then, before the other tasks' next chunks
        # (a new root restores it and reads the same budget from it); undecided, after its own next chunk
        decided = [t for t in tasks if self.budget(t).steps is not None]
        self.keep_pilots(decided, "state")
        self.state_pilots(tasks)
        self.keep_pilots([t for t in tasks if t not in decided], "state")
        for task in tasks:
            self.prepare(task)
        self.by_budget(
            tasks,
            lambda group, steps: self.grid(
                f"pilot mmae_rgbs {','.join(group)} to {steps:,}",
                group,
                ["mmae_rgbs"],
                [self.cfg.pilot_seed],
                steps,
                "runs/pilot",
                self.sac_extra(),  # evaluated as the table's runs (`evaluations`)
                pilot_dir,
            ),
        )
        self.keep_pilots(tasks, "mmae_rgbs")

    def keep_pilots(self, tasks: Sequence[str], row: str) -> None:
        """Keep each task's `row` pilot once it is final: state's once the budget is decided, mmae_rgbs's at it."""
        for task in tasks:
            b, runs = self.budget(task), [pilot_dir(task, row, self.cfg.pilot_seed)]
            final = b.steps is not None and (row == "state" or self.f.finished(runs, b.steps))
            blocked = "" if final else f"the {row} pilot of {task} (budget {b.steps or 'undecided'})"
            if final and not (self.f.root / runs[0] / outcome.SUMMARY).exists():  # a hand-made state
                blocked = (
                    f"{runs[0]}/{outcome.SUMMARY}, gone though {STATE_FILE} records {task}'s budget; to pilot again, "
                    f"delete {task}'s entry under 'budgets' in {STATE_FILE}"
                )
            self.keep(task, row, runs, f"{self.cfg.results}-pilot", "runs/pilot", blocked=blocked)

    def phase_c(self) -> None:
        self.rows("C")

    def phase_d(self) -> None:
        self.rows("D")

    def phase_e(self) -> None:
        self.rows("E")

    def rows(self, phase: str) -> None:
        """The table rows of `phase` (`row_plan`) with seeds 0..n-1 for each n of their seed counts in turn, each
        wave kept before the next starts: every row's first seeds give a table while the rest run (rl.grid skips
        the finished ones)."""
        for tasks, rows, seed_counts in row_plan(self.cfg, phase):
            for n in dict.fromkeys(seed_counts):
                self.table(tasks, rows, range(n))

    # -- preparation of a task -------------------------------------------------------------------
    def prepare(self, task: str, after_rgbs: Callable[[], object] | None = None) -> None:
        """A task's steps before SAC: its frames and annotations, saliency models and labels, each encoder's
        pretraining then its carry (`after_rgbs` planned between the two encoders), the probes. A root without the
        carried models (a new machine's) first copies them in (`carried_encoders`) and prepares only what they
        leave: nothing once both encoders and the probes are kept; the frames, their labels by the carried student
        and the probes once both encoders are; and the rgb encoder too once only the rgb+saliency encoder is."""
        adopt = f"{task}: carried models"
        if self.f.marked(adopt):  # what it took then (a root that adopted before that was recorded took both)
            adopted = self.f.state.get("adopted", {}).get(task, list(CARRIED))
        else:
            names = carried_encoders(self.f, task)
            adopted = [] if all(src.exists() for src, _ in model_copies(self.f, task, names)) else names
        mine = [src for src, _ in model_copies(self.f, task, adopted)]
        if adopted:
            self.add(
                adopt,
                [],
                all(p.exists() for p in mine),
                action=lambda: (self.f.adopt(task, adopted), adopt_models(self.f, task, adopted)),
                note=f"copy {self.cfg.carry}/ -> runs/: {task}'s {' and '.join(f'{n} encoder' for n in adopted)}"
                + " and saliency student" * ("rgbs" in adopted),
            )
            if len(adopted) == len(ENCODERS) and self.probes_kept(task):
                return
        student = "rgbs" in adopted  # carried with the rgb+saliency encoder whose frames it labelled
        self.prepare_frames(task, annotate=not student)
        self.prepare_saliency(task, train=not student)
        self.prepare_encoders(task, adopted, after_rgbs)
        self.prepare_probes(task)

    def probes_kept(self, task: str) -> bool:
        return all((self.f.results / f"mmae/{name}/{task}/probe_{label}.json").exists() for name, _, label in PROBES)

    def exists(self, rel: str) -> bool:
        return (self.f.root / rel).exists()

    def prepare_frames(self, task: str, annotate: bool = True) -> None:
        """Collect the task's frames, then (`annotate`) click them with the oracle annotator and export the clicks."""
        cfg, f, shards = self.cfg, self.f, f"shards/{task}"
        collect = ["--task", task, "--frames", str(cfg.frames), "--workers", str(cfg.collect_workers)]
        self.add(
            f"{task}: collect {cfg.frames:,} frames",
            ["-m", "data.collect", *collect, "--shard-size", "1000", "--out", shards],
            f.shards_complete(shards),
        )
        if not annotate:
            return
        self.add(
            f"{task}: oracle annotator, {cfg.annotate_n} frames",
            ["-m", "annotate_app.oracle", "--task", task, "--frames", shards, "--root", "annotations"]
            + ["--n", str(cfg.annotate_n)],
            self.exists(f"annotations/{task}"),
            marker=True,
        )
        self.add(
            f"{task}: export annotations",
            ["-m", "annotate_app.export", "--task", task, "--root", "annotations"],
            self.exists(f"annotations/{task}.npz"),
            marker=True,
        )

    def prepare_saliency(self, task: str, train: bool = True) -> None:
        """Train PiCANet on the exported clicks, distil the student and evaluate it (`train`), then label every frame
        with the student."""
        cfg, shards, sal = self.cfg, f"shards/{task}", f"runs/saliency/{task}"
        preset, precision = ["--preset", cfg.saliency_preset], ["--precision", run_precision(cfg)]
        if train:
            self.train_saliency(task)
        labelled = f"shards/{task}-sal"
        self.add(
            f"{task}: saliency.label {cfg.frames:,} frames",
            ["-m", "saliency.label", "--model", f"{sal}/student.pt", "--data", shards, "--out", labelled]
            + [*preset, *precision, "--no-progress"],
            self.f.shards_complete(labelled, labelled=True),
        )

    def train_saliency(self, task: str) -> None:
        """PiCANet on the exported clicks, its student distilled on the frames, the student evaluated."""
        cfg, shards, sal = self.cfg, f"shards/{task}", f"runs/saliency/{task}"
        preset, precision = ["--preset", cfg.saliency_preset], ["--precision", run_precision(cfg)]
        resume = ["--resume", "auto", *precision, "--no-progress"]
        self.add(
            f"{task}: saliency.train (PiCANet)",
            ["-m", "saliency.train", "--annotations", f"annotations/{task}.npz", *preset, "--out", sal, *resume],
            self.exists(f"{sal}/best.pt"),
            marker=True,
        )
        self.add(
            f"{task}: saliency.distill (student)",
            ["-m", "saliency.distill", "--teacher", f"{sal}/best.pt", "--data", shards, *preset, *resume],
            self.exists(f"{sal}/student.pt"),
            marker=True,
        )
        self.add(
            f"{task}: saliency.evaluate (student)",
            ["-m", "saliency.evaluate", "--model", f"{sal}/student.pt", "--data", shards, *preset]
            + ["--out", f"{sal}/eval", *precision],
            self.exists(f"{sal}/eval/metrics.json"),
            marker=True,
        )

    def prepare_encoders(
        self, task: str, adopted: Sequence[str] = (), after_rgbs: Callable[[], object] | None = None
    ) -> None:
        """Pretrain the MultiMAE encoders on the labelled frames, RGB + saliency then RGB alone (but the `adopted`
        ones), each carried as soon as it ends: its models (`carry_models`) and what the results keep so far;
        `after_rgbs` plans its steps once the rgb+saliency encoder is there, while the rgb one is still to be made
        (a finished rgb encoder is carried at once, and its rows join the first wave)."""
        cfg = self.cfg
        epochs = pretrain_epochs(cfg.pretrain_images, cfg.frames)
        for name, modalities in ENCODERS:
            out = f"runs/mmae/{name}/{task}"
            key = f"{task}: pretrain.multimae {name} ({epochs} epochs, >= {cfg.pretrain_images:,} images)"
            pretrained = pretrain_finished(self.f.root / out)
            if name == "rgb" and after_rgbs is not None and name not in adopted:
                if not (pretrained and self.f.marked(key)):
                    after_rgbs()
            if name in adopted:
                continue
            self.add(
                key, ["-m", "pretrain.multimae", *pretrain_argv(cfg, task, modalities, out)], pretrained, marker=True
            )
            self.add(
                f"{task}: carry the {name} encoder" + " and saliency student" * (name == "rgbs"),
                [],
                # and marked: kept files lost are kept again
                all(dst.exists() for _, dst in preparation_copies(self.f, task, KEPT_SALIENCY))
                and name in carried_encoders(self.f, task),
                marker=True,
                action=lambda name=name: (carry_models(self.f, task, name), keep_preparation(self.f, task)),
                note=f"copy runs/{{{','.join(carried_files(task, [name]))}}} -> {cfg.carry}/ (their sha256 -> "
                f"{cfg.results}/{KEPT_MODELS.format(task=task)}), what {task}'s preparation keeps so far -> {cfg.results}/",
                kept=(cfg.results, cfg.carry),
            )

    def prepare_probes(self, task: str) -> None:
        """Probe each pretrained encoder, then copy the probe results into the results folder."""
        cfg = self.cfg
        for name, inputs, label in PROBES:
            enc = f"runs/mmae/{name}/{task}"
            self.add(
                f"{task}: pretrain.probe {name} ({label} in)",
                ["-m", "pretrain.probe", *probe_argv(cfg, task, enc, inputs)],
                self.exists(f"{enc}/probe_{label}.json"),
            )
        self.add(
            f"{task}: keep probes",
            [],
            all(dst.exists() for _, dst in preparation_copies(self.f, task)),  # and marked: lost kept files kept again
            marker=True,
            action=lambda: keep_preparation(self.f, task),
            note=f"copy runs/mmae/*/{task}/probe_*.json -> {cfg.results}/, {task}'s stage times -> {cfg.results}/",
            kept=(cfg.results,),
        )

    # -- SAC -------------------------------------------------------------------------------------
    def sac_extra(self) -> str:
        return sac_flags(self.cfg)

    def state_pilot_extra(self) -> str:
        return sac_flags(self.cfg, state_pilot=True)

    def grid(
        self,
        key: str,
        tasks: Sequence[str],
        rows: Sequence[str],
        seeds: Sequence[int],
        steps: int,
        out: str,
        extra: str,
        where: Callable[[str, str, int], str] = table_dir,
    ) -> Step:
        runs = [where(t, r, s) for t in tasks for r in rows for s in seeds]
        argv = ["-m", "rl.grid", *grid_argv(self.cfg, tasks, rows, seeds, steps, out, extra)]
        # CNN rows pack by --cnn-pack; the grid-pooled row's 1024-d replay outgrows RAM in packs of 4 (rl.grid refuses)
        sized = not set(rows) & {*CNN_ROWS, *GRID_ROWS} and not self.cfg.pack
        if sized:
            argv = with_pack(argv, best_pack(self.cfg, self.f, argv))
        return self.add(key, argv, self.f.finished(runs, steps), sized=sized)

    def by_budget(self, tasks: Sequence[str], make: Callable[[list[str], int], object]) -> None:
        """Call make(tasks, budget) per group of tasks sharing a budget; undecided ones get a waiting step each."""
        groups: dict[int, list[str]] = {}
        for task in tasks:
            b = self.budget(task)
            if b.steps is None:
                key = f"{task}: waits for its budget"
                if not any(s.key == key and s.phase == self.phase for s in self.steps):
                    self.steps.append(Step(key, self.phase, blocked=f"the state pilot of {task}: {b.reason}"))
            else:
                groups.setdefault(b.steps, []).append(task)
        for steps, group in groups.items():
            make(group, steps)

    def table(self, tasks: Sequence[str], rows: Sequence[str], seeds: Iterable[int]) -> None:
        """rows x seeds on tasks at their budgets, each run to its budget in one go (its last evaluation with
        --final-eval-episodes), each finished run kept as it ends (`keep_finished`), then each (task, row) kept."""
        seeds, cfg = list(seeds), self.cfg

        def run(group: list[str], steps: int) -> None:
            self.grid(
                f"{','.join(group)} {','.join(rows)} seeds 0-{seeds[-1]} to {steps:,} (last evaluation "
                f"{cfg.final_eval_episodes} episodes)",
                group,
                rows,
                seeds,
                steps,
                "runs/sac",
                self.sac_extra(),
            ).wave = (tuple(group), tuple(rows), tuple(seeds), steps)
            for task in group:
                for row in rows:
                    mine = [table_dir(task, row, s) for s in seeds]
                    self.keep(
                        task,
                        row,
                        mine,
                        cfg.results,
                        "runs/sac",
                        blocked=""
                        if self.f.finished(mine, steps)
                        else f"{task} {row} seeds 0-{seeds[-1]} at {steps:,}",
                    )
                self.random_policy(task, seeds)

        self.by_budget(tasks, run)

    def random_policy(self, task: str, seeds: Sequence[int]) -> None:
        """Uniform random actions on each seed's last-evaluation episodes of `task` (`rl.evaluate --policy random`,
        about a minute a seed), written straight into the results: the floor the task's rows read against."""
        cfg = self.cfg
        dest = results_path(cfg.results) / task / outcome.RANDOM_POLICY
        for seed in seeds:
            key = f"random policy on {task}, seed {seed} ({cfg.final_eval_episodes} episodes)"
            if any(s.key == key for s in self.steps):  # the seeds of an earlier wave
                continue
            done = (dest / outcome.random_policy_file(seed, cfg.final_eval_episodes)).exists()
            self.add(key, ["-m", "rl.evaluate", *random_policy_argv(cfg, task, seed, dest)], done, kept=(cfg.results,))

    def keep(self, task: str, row: str, runs: list[str], results: str, runs_root: str, blocked: str) -> None:
        key = f"keep {runs_root}/{task}/{row} ({len(runs)} run{'s' * (len(runs) > 1)}) -> {results}"
        if any(s.key == key for s in self.steps):  # the same runs kept by an earlier step of the plan (phase A's rows
            return  # before the rgb encoder; phase E's seeds when phase C reached them): the same step, planned once
        dest = results_path(results) / task / row
        # lost kept files: kept again; a run the root trained again (a diverged one whose summary.json was deleted):
        # kept again too, where pipeline.keep refuses to overwrite the old outcome and says what to do
        there = all(self.f.kept_as_run(self.f.root / r, dest / Path(r).name) for r in runs)
        restored = set(self.f.state.get("restored", []))
        step = self.add(
            key,
            ["-m", "pipeline.keep", f"{runs_root}/{task}/{row}", "--out", str(dest)],
            there,
            marker=not restored.issuperset(runs),  # runs copied in from their kept files: kept already
            kept=tuple(dict.fromkeys((results, self.cfg.results))),  # the latter holds settings.json
        )
        if blocked and not step.done:
            step.blocked = blocked

    def state_pilots(self, tasks: Sequence[str]) -> None:
        """The next chunk of the state pilot of every task whose budget is undecided (one grid per chunk end)."""
        cfg, chunks = self.cfg, {}
        for task in tasks:
            if self.budget(task).steps is None:
                done = self.f.summarized(pilot_dir(task, "state", cfg.pilot_seed))
                chunks.setdefault(min(cfg.budget_cap, (done // cfg.pilot_chunk + 1) * cfg.pilot_chunk), []).append(task)
        for steps, group in sorted(chunks.items()):
            self.grid(
                f"pilot state {','.join(group)} to {steps:,} (then the budget rule)",
                group,
                ["state"],
                [cfg.pilot_seed],
                steps,
                "runs/pilot",
                self.state_pilot_extra(),
                pilot_dir,
            ).decides_budget = True


def keep_preparation(folder: Folder, task: str) -> list[Path]:
    """Add the wall time of the task's finished preparation steps to <results>/<task>/stages.json (`stage_times`; a
    step already there keeps its time: the first machine that ran it), then copy what the root holds of its probes
    and saliency evaluation into <results>/ (pipeline.keep.keep_file: never overwritten)."""
    from pipeline.keep import keep_file

    kept, path = [], folder.results / KEPT_STAGES.format(task=task)
    old, new = (json.loads(path.read_text()) if path.exists() else {}), stage_times(folder, task)
    merged = {**new, **old, "wall_seconds": {**new["wall_seconds"], **old.get("wall_seconds", {})}}
    merged["order"] = list(dict.fromkeys([*old.get("order", []), *new["order"]]))
    if old.get("device") and new["device"] not in old["device"]:
        merged["device"] = f"{old['device']}; then {new['device']}"
    if merged != old:  # before the copies: once the probes are kept, a new root plans no step that would add them
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, merged)
        kept.append(path)
    return kept + [dst for src, dst in preparation_copies(folder, task) if keep_file(src, dst)]


def stage_times(folder: Folder, task: str) -> dict:
    """The wall time of each of the task's finished preparation steps (collection to probes; not the running one,
    nor one interrupted), summed over the invocations that ran it (`Folder.timed`), on this machine."""
    prefix = f"{task}: "
    plan = [s for s in Planner(folder).plan() if s.key.startswith(prefix)]
    planned = [s.key.removeprefix(prefix) for s in plan]
    with folder.lock:
        done = {k: v.get("seconds") for k, v in folder.state["done"].items()}  # steps finished before "spent"
        finished = set(done) | {s.key for s in plan if s.done}
        timed = {**done, **folder.state.get("spent", {})}
    spent = {k.removeprefix(prefix): v for k, v in timed.items() if k.startswith(prefix) and k in finished}
    return {
        "task": task,
        "wall_seconds": spent,
        "order": [k for k in planned if k in spent] + sorted(k for k in spent if k not in planned),  # the plan's
        "device": f"{cpu_model() or 'CPU'}, {os.cpu_count()} cores, bf16 units: {', '.join(cpu_bf16_units()) or 'none'}",
        "precision": folder.state.get("settings", {}).get("precision"),
        "note": f"wall seconds per step over every invocation (each interruption loses at most {SPENT_EVERY_S:.0f} s); "
        "a step run on two machines keeps the first one's; device: the machines that kept them, in order",
    }


def open_steps(folder: Folder) -> list[Step]:
    """The steps still to run, in order, for what the root holds now."""
    return [s for s in Planner(folder).plan() if not s.done]


def plan(cfg: TableConfig) -> list[Step]:
    """Every step of the selected phases, in order, each marked done or not for what the root holds now."""
    return Planner(Folder(cfg)).plan()
