"""`python -m pipeline.table [--phase A|B|C|D|E|all] [--root ~/visarl-runs/cpu_table] [--dry-run | --status | --report DIR | --background]`:
the four-task Table I experiment on a CPU (issue #30), one resumable command.

Phases, in this order (`--phase all`), each ending in a table kept under `results/cpu-table/`:

- **A** reach-v3: frames, oracle annotations, PiCANet + student, labels, the rgb+saliency MultiMAE; mmae_rgbs_po
  and mmae_rgbs x 3 seeds (they need no rgb-only encoder: on the Zen 3's rates at hidden 1024 the PO-vs-ViSaRL
  answer at 3 seeds comes ~8 h after that MultiMAE, not ~27 h after it behind the rgb one, nor ~11 h with state's
  seeds beside them; ~4.6 h at 256);
  the rgb MultiMAE and the three probes; mmae_rgb and state x 3; then every row to 10 seeds at 100k steps. Each
  grid starts a seed's runs longest first (`longest_first`).
- **B** drawer-open-v3, faucet-open-v3, door-open-v3: the state pilot (1 seed, the table's SAC
  settings) in `--pilot-chunk` steps until the budget rule (`choose_budget`) decides each task's step
  budget; their frames, saliency, MultiMAEs and probes; then the mmae_rgbs pilot to that budget.
- **C** the three at their budgets, 3 seeds per row (a four-task aggregate exists from then on), then 5.
- **D** cnn_rgb, cnn_rgbs and gaze on faucet-open-v3 and door-open-v3, 3 seeds; then mmae_rgbs_grid2
  (ViSaRL read through the probe's better pool) on the same tasks and seeds.
- **E** more seeds of the four rows on the three tasks, up to `--max-seeds`, while compute remains.

Every step is a project command (data.collect, annotate_app.oracle/export, saliency.train/distill/
evaluate/label, pretrain.multimae --resume auto, pretrain.probe, rl.grid, pipeline.keep) run with the
root as working folder, so the stage's default paths hold (runs/saliency/<task>/student.pt,
runs/mmae/<rgbs|rgb>/<task>/encoder.pt). A step is skipped when its outputs exist (a complete shard
manifest, run summaries at the asked steps, a pretraining's encoder.pt and train.csv at its last step, a probe
file, the kept files) and, for training and keep
steps, this command recorded it finished in `<root>/table.json`; otherwise it runs, and the resumable ones
continue where they stopped. The plan is derived again after every step, so the command is safe to
rerun at the start of every session. A table run goes to its budget in one grid call, its evaluations with
`--eval-episodes`, its last one with `--final-eval-episodes` (rl.sac's option of that name).

Each run's raw results are kept as soon as it finishes (a pack's runs end together), while its grid goes on
(`keeping_finished`). Each grid's pack size (`--pack 0`, `best_pack`) is the one whose forecast ends the grid soonest
at this CPU's measured pack gains, the smallest within 5 % of that, so that runs are kept sooner where packing gains
little. After each (task,
row) finishes its seeds, `pipeline.keep` copies its raw results to
`results/cpu-table/<task>/<row>/` (pilots: `results/cpu-table-pilot/`, so the report never mixes
them into the table; probes: `results/cpu-table/mmae/`); committing is left to the person: the
command prints the git line. As soon as each of a task's MultiMAE pretrainings ends, its frozen encoder (with its
pretraining logs; the first with the saliency student that labelled its frames) is copied to `--carry`
(`artifacts/cpu-table/`), committed beside the results: a new root (a new machine) takes the settings in
`results/cpu-table/settings.json`, copies in the kept runs and the carried models, and goes on with what is left
instead of annotating, training the saliency models and pretraining those encoders again.
`--status` prints where each task and row stands, how far the running step has got and a forecast of the open
steps (`forecast_text`); `--background` starts the run detached and niced (pipeline.background) with its output
appended to `<root>/table.log`; when one started so still runs it says so and starts nothing, and it is refused
while a copy started otherwise holds the root.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import heapq
import io
import json
import math
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common.cli import fail, option, parse_config, stored_values
from common.cpuinfo import AUTO_ENV, auto_precision, cpu_bf16_units, cpu_model
from common.io import OutputError, atomic_write_bytes, atomic_write_json
from common.runs import exclusive_run_dir, nice_own_session
from data.env import PAPER_TASKS
from pipeline.background import BackgroundConfig, running_pid, start
from pipeline.keep import KEPT_MODELS, KEPT_PROBES, KEPT_SALIENCY_EVAL, KEPT_SALIENCY_PICTURE, KEPT_STAGES
from rl import outcome

CHECKOUT = Path(__file__).resolve().parent.parent
PHASES = ("A", "B", "C", "D", "E")
REACH = "reach-v3"
#: the paper's Table I rows this experiment runs on every task
TABLE_ROWS = ("state", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs")
#: the rows of phase D: the CNN rows and gaze, then ViSaRL through the 2x2 grid pool
CNN_ROWS = ("cnn_rgb", "cnn_rgbs", "gaze")
#: the MultiMAEs each task pretrains, in order: (name under runs/mmae/, modalities)
ENCODERS = (("rgbs", "rgb,saliency"), ("rgb", "rgb"))
GRID_ROWS = ("mmae_rgbs_grid2",)
#: the two sides of the paper's saliency claim (RGB+S PO < ViSaRL), which need only the rgb+saliency MultiMAE: phase
#: A runs their first seeds between the two pretrainings. State needs no encoder, but its runs would delay theirs:
#: it runs beside MMAE RGB's first seeds, where its shorter runs fill a core that would idle at that wave's end
EARLY_ROWS = ("mmae_rgbs_po", "mmae_rgbs")
#: the kinds of row (`row_kind`) by their cost per step on every CPU measured, longest first (RATES)
KIND_COST_ORDER = ("gaze", "cnn", "frozen", "state")
#: every row the table runs, in the order it lists them
ALL_ROWS = tuple(dict.fromkeys((*TABLE_ROWS, *CNN_ROWS, *GRID_ROWS)))
EPISODE_STEPS = 500
STATE_FILE = "table.json"
#: the FROZEN settings the kept results were made under, in the results folder: a new root takes them
SETTINGS_FILE = "settings.json"
SPENT_EVERY_S = 60.0  # how often a running step's wall time is saved to table.json
KEEP_FINISHED_EVERY_S = 120.0  # how often a running table grid's finished runs are looked for (`keeping_finished`)
BACKGROUND_NAME = "table"  # pipeline.background's name of the detached run: <root>/table.log, table.pid
LOG_FILE = f"{BACKGROUND_NAME}.log"
#: settings a started experiment keeps (recorded in table.json on its first run; later commands that leave them
#: out take the recorded ones, `adopt_recorded`): changing them would mix runs of different designs
FROZEN = (
    "frames",
    "annotate_n",
    "saliency_preset",
    "pretrain_images",
    "pretrain_preset",
    "pretrain_extra",
    "precision",
    "hidden_dim",
    "mmae_features",
    "reach_steps",
    "extra_tasks",
    "pilot_seed",
    "pilot_eval_every",
    "pilot_eval_episodes",
    "budget_threshold",
    "budget_in_a_row",
    "budget_cap",
    "eval_every",
    "eval_episodes",
    "final_eval_episodes",
    "sac_extra",
)
#: what a root that started before a FROZEN setting existed ran instead of its default (its runs keep it)
FROZEN_BEFORE = {"mmae_features": "raw"}
#: FROZEN settings split from another: a root that started before one existed ran it at the other's value
FROZEN_FROM = {"pilot_eval_episodes": "eval_episodes"}
#: flags of the pass-through settings that change speed, not results: a root goes on under other values of them
#: (a machine with more cores runs pretraining with more threads)
SPEED_FLAGS = ("--threads", "--torch-threads", "--workers", "--no-progress")


def design_of(setting: str, value: object) -> object:
    """What of a FROZEN setting's value a root keeps: a pass-through string less its SPEED_FLAGS (and their values)."""
    if setting not in ("pretrain_extra", "sac_extra") or not isinstance(value, str):
        return value
    words, kept = shlex.split(value), []
    while words:
        word = words.pop(0)
        name = word.split("=", 1)[0]
        if name in SPEED_FLAGS:
            if "=" not in word and name != "--no-progress" and words:
                words.pop(0)
            continue
        kept.append(word)
    return shlex.join(kept)


@dataclass
class TableConfig:
    """The four-task Table I experiment on a CPU, resumable step by step (issue #30)."""

    phase: str = option(
        "all",
        "phase to run: A (reach-v3, 3 then 10 seeds at 100k), B (the other tasks' pilots and preparation), C (their table rows, 3 then 5 seeds), D (cnn_rgb, cnn_rgbs, gaze, then mmae_rgbs_grid2 on faucet-open and door-open), E (more seeds), or all (A to E in order)",
        choices=[*PHASES, "all"],
    )
    root: str = option(
        "~/visarl-runs/cpu_table",
        "folder holding the experiment's frames, models, runs, table.json and table.log (outside the checkout: a "
        "new session's work tree does not keep git-ignored folders)",
    )
    results: str = option(
        "results/cpu-table",
        "where pipeline.keep copies each finished (task, row), relative to the checkout; pilots go to <results>-pilot; "
        "its settings.json records the settings they were made under, which a new root takes",
    )
    carry: str = option(
        "",
        "where each task's frozen MultiMAE encoders are copied as soon as each pretraining ends (the first with the "
        "saliency student), relative to the checkout (default: artifacts/<path below results/>, e.g. "
        "artifacts/cpu-table; <results>-carry beside a results folder elsewhere): committed with the results, they let "
        "a new machine's root go on without pretraining them again (~13 MB per encoder)",
    )
    dry_run: bool = option(False, "print the steps still to run and their commands, the wall-time estimate, and stop")
    status: bool = option(
        False,
        "print per task and row the stage reached, seeds done / planned, steps and the pilot's budget, the hours each "
        "open step should take here and when it ends, and stop",
    )
    report: str = option(
        "",
        "write the report of --results into this folder (pipeline.report, each (task, row)'s planned seeds read from "
        "the plan of --phase: 'n of N' where fewer are kept) and stop",
    )
    background: bool = option(
        False,
        "start this command detached and niced (output appended to <root>/table.log) and return; nothing when "
        "one started so still runs; refused while another copy runs",
    )
    nice: int = option(10, "--background: niceness of the run")
    frames: int = option(50_000, "pretraining frames collected per task")
    collect_workers: int = option(2, "data.collect worker processes")
    annotate_n: int = option(30, "frames the oracle annotator labels per task")
    saliency_preset: str = option(
        "cpu",
        "preset of saliency.train / distill / evaluate / label (the cpu PiCANet: 64 px, width 0.25)",
        choices=["micro", "demo", "cpu", "paper"],
    )
    pretrain_images: int = option(
        1_000_000,
        "images each MultiMAE trains on at the paper's model size (epochs = images / training frames, rounded up)",
    )
    pretrain_preset: str = option(
        "paper",
        "pretrain.multimae preset (model size and learning-rate rule)",
        choices=["micro", "demo", "cpu", "paper"],
    )
    pretrain_extra: str = option(
        "--batch-size 512 --warmup-epochs 2 --threads 2 --no-progress",
        "more pretrain.multimae flags (the paper's batch; the gpu preset's 2 warm-up epochs for a ~20-epoch run)",
    )
    probe_extra: str = option("", "more pretrain.probe flags (e.g. --fit-frames for a small test root)")
    precision: str = option(
        "auto",
        "--precision of every training and inference command (auto: bf16 where this CPU has AMX / AVX512-BF16, else fp32, decided once by the orchestrator and recorded; on a GPU node pass bf16)",
        choices=["auto", "bf16", "fp32"],
    )
    hidden_dim: int = option(
        1024, "SAC hidden width (the paper's 1024; the cpu preset's 256 costs ~1.5-2x less per step here)"
    )
    mmae_features: str = option(
        "standardized",
        "rl.sac --mmae-features of the MultiMAE rows: standardized (the default, measured better on reach-v3, issue #24) or raw (the paper's)",
        choices=["standardized", "raw"],
    )
    pack: int = option(
        0,
        "SAC runs per pack (rl.grid --pack) of the state and MultiMAE rows; 0: per grid, the size up to --max-pack "
        "whose forecast ends the grid soonest at this CPU's rates, the smallest within 5 % of that (a pack ends all its "
        "runs together, and a replaced machine loses it: smaller packs are kept sooner); the forecast counts "
        "each pack's measured gain (`Rates.pack_gain`, BENCHMARKS.md)",
    )
    max_pack: int = option(
        4,
        "--pack 0: the largest pack it considers (4 frozen runs hold 5.5-7.0 GiB at 100-500k steps with their env "
        "workers, rl.workspace.host_bytes; --parallel packs run at once)",
    )
    cnn_pack: int = option(
        1,
        "SAC runs per pack of the CNN rows (cnn_rgb, cnn_rgbs, gaze): their replay holds frames, 6-8 GB per run at "
        "500k steps (rl.grid refuses packs that would outgrow RAM)",
    )
    parallel: int = option(2, "SAC packs at once (rl.grid --parallel; one per core)")
    reach_steps: int = option(100_000, "phase A's step budget on reach-v3 (it learns there)")
    reach_seeds: int = option(10, "phase A's seeds per row")
    first_seeds: int = option(
        3,
        "the first seeds per row of phases A and C, kept before the rest start (a first reach table; the four-task aggregate)",
    )
    more_seeds: int = option(5, "phase C's seeds per row after the first ones")
    max_seeds: int = option(10, "phase E's seeds per row")
    extra_tasks: str = option("faucet-open-v3,door-open-v3", "phase D's tasks (the paper's largest gaps)")
    extra_seeds: int = option(3, "phase D's seeds per row")
    pilot_seed: int = option(
        100, "seed of the pilot runs (outside the table's seeds, so the budget is not chosen on a table run)"
    )
    pilot_chunk: int = option(50_000, "the state pilot runs in chunks of this many steps until the budget rule decides")
    pilot_eval_every: int = option(10_000, "pilot evaluation interval (the budget rule reads these evaluations)")
    pilot_eval_episodes: int = option(20, "episodes of every pilot evaluation (the budget rule's success rates)")
    budget_threshold: float = option(0.8, "budget rule: state's success that must hold")
    budget_in_a_row: int = option(2, "budget rule: over this many evaluations in a row")
    budget_cap: int = option(500_000, "budget rule: the most steps a task gets")
    eval_every: int = option(25_000, "table runs' evaluation interval (budgets are rounded up to a multiple of it)")
    eval_episodes: int = option(
        10,
        "episodes of a table run's evaluations before its last one (its learning curve; fewer than the last one's: "
        "at a 500k budget, 19 of them at 20 episodes would play 190k steps beside the 500k of training)",
    )
    final_eval_episodes: int = option(
        50, "episodes of a table run's last evaluation, its result (pilots: --pilot-eval-episodes at every evaluation)"
    )
    eval_envs: int = option(5, "parallel evaluation envs per run")
    checkpoint_every: int = option(25_000, "SAC checkpoint interval")
    sac_extra: str = option(
        "", "more rl.sac flags for every table and pilot run, after the paper preset and the flags above"
    )

    def validate(self) -> "TableConfig":
        self.results = str(Path(self.results))  # no trailing slash: pilots go to <results>-pilot beside it
        self.carry = str(Path(self.carry or default_carry(self.results)))
        if self.phase not in (*PHASES, "all"):
            raise ValueError(f"--phase must be one of {', '.join(PHASES)} or all, got {self.phase!r}")
        if sum((self.dry_run, self.status, bool(self.report), self.background)) > 1:
            raise ValueError("--dry-run, --status, --report and --background exclude each other; pick one")
        for name in (
            "frames",
            "pretrain_images",
            "hidden_dim",
            "max_pack",
            "cnn_pack",
            "parallel",
            "reach_steps",
            "reach_seeds",
            "first_seeds",
            "extra_seeds",
            "pilot_chunk",
            "pilot_eval_every",
            "pilot_eval_episodes",
            "budget_in_a_row",
            "budget_cap",
            "eval_every",
            "eval_episodes",
            "final_eval_episodes",
            "eval_envs",
            "checkpoint_every",
            "annotate_n",
            "collect_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.pack < 0:
            raise ValueError(f"--pack must be >= 0 (0: sized per grid), got {self.pack}")
        if not self.first_seeds <= self.more_seeds <= self.max_seeds:
            raise ValueError(
                f"seeds must grow: --first-seeds {self.first_seeds} <= --more-seeds {self.more_seeds} "
                f"<= --max-seeds {self.max_seeds}"
            )
        if not 0 < self.budget_threshold <= 1:
            raise ValueError(f"--budget-threshold must be in (0, 1], got {self.budget_threshold}")
        grids = (("reach_steps", "eval_every"), ("budget_cap", "eval_every"), ("pilot_chunk", "eval_every"))
        # a pilot's chunks end on its evaluations' grid, or two evaluations 'in a row' could stand closer than one
        grids += (("budget_cap", "pilot_eval_every"), ("pilot_chunk", "pilot_eval_every"))
        for name, every in grids:
            if getattr(self, name) % getattr(self, every):
                raise ValueError(
                    f"--{name.replace('_', '-')} ({getattr(self, name)}) must be a multiple of "
                    f"--{every.replace('_', '-')} ({getattr(self, every)})"
                )
        if self.eval_every % EPISODE_STEPS or self.pilot_eval_every % EPISODE_STEPS:
            raise ValueError(
                f"--eval-every and --pilot-eval-every must be multiples of the {EPISODE_STEPS}-step episode"
            )
        unknown = [t for t in self.extra_task_list if t not in PAPER_TASKS]
        if unknown:
            raise ValueError(f"--extra-tasks: {', '.join(unknown)} not among {', '.join(PAPER_TASKS)}")
        return self

    @property
    def extra_task_list(self) -> list[str]:
        return [t for t in self.extra_tasks.split(",") if t]

    @property
    def phases(self) -> tuple[str, ...]:
        return PHASES if self.phase == "all" else (self.phase,)


# -- the budget rule --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A task's step budget from its state pilot: `steps` None while the pilot must run on."""

    steps: int | None
    held_at: int | None
    reason: str


def choose_budget(
    rows: Iterable[Mapping[str, object]],
    pilot_steps: int,
    threshold: float = 0.8,
    in_a_row: int = 2,
    cap: int = 500_000,
    round_to: int = 25_000,
) -> Budget:
    """The step budget from a state pilot's eval.csv rows ({"step", "success_rate"}) and the steps it ran.

    The budget is the step of the `in_a_row`-th evaluation in a row at `threshold` success or more, rounded
    up to a multiple of `round_to` (the table's evaluation grid), at most `cap`; `cap` when the pilot
    reached `cap` without that; undecided (None) while the pilot is short of `cap` and has not held it. A step
    evaluated twice (a run killed between its last row and its summary, before rl.workspace replaced such rows)
    counts once, its last row.
    """
    evals = sorted({int(float(r["step"])): float(r["success_rate"]) for r in rows}.items())
    streak = 0
    for step, success in evals:
        if step > cap:
            break
        streak = streak + 1 if success >= threshold else 0
        if streak >= in_a_row:
            steps = min(cap, math.ceil(step / round_to) * round_to)
            return Budget(
                steps,
                step,
                f"state held >= {threshold:g} over {in_a_row} evaluations in a row at {step:,} steps; budget {steps:,}",
            )
    if pilot_steps >= cap:
        return Budget(
            cap,
            None,
            f"state did not hold >= {threshold:g} over {in_a_row} evaluations in a row "
            f"by {cap:,} steps; budget = the cap, {cap:,}",
        )
    return Budget(
        None,
        None,
        f"pilot at {pilot_steps:,} steps: state has not held >= {threshold:g} over {in_a_row} evaluations in a row yet",
    )


def read_eval_rows(path: Path) -> list[dict[str, str]]:
    """The whole rows of an eval.csv with a step and a success rate ([] when there is none)."""
    return [r for r in whole_rows(path) if last_numbers([r], "step", "success_rate")]


# -- what exists under the root ---------------------------------------------------------------------


def setting_changes(mine: Mapping[str, object], other: Mapping[str, object], theirs: str) -> list[str]:
    """'--flag <mine> (<theirs> <other's>)' for each FROZEN setting `other` records with another design (`design_of`)."""
    return [
        f"--{k.replace('_', '-')} {mine[k]!r} ({theirs} {other[k]!r})"
        for k in FROZEN
        if k in other and design_of(k, other[k]) != design_of(k, mine[k])
    ]


def results_settings(results: Path) -> dict:
    """The settings recorded in a results folder's SETTINGS_FILE ({} when there is none)."""
    path = results / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it with `git checkout {path}`") from err


def default_carry(results: str) -> str:
    """artifacts/<path below results/> for a results folder under the checkout's results/ (results/cpu-table ->
    artifacts/cpu-table); <results>-carry beside any other (a trial's models never land in the committed folder)."""
    kept, committed = results_path(results), (CHECKOUT / "results").resolve()
    inside = kept.is_relative_to(committed) and kept != committed
    return str(Path("artifacts") / kept.relative_to(committed)) if inside else f"{kept}-carry"


def results_path(results: str) -> Path:
    """Where kept results go: `results` relative to the checkout (where they are committed), wherever the
    command runs from."""
    return (CHECKOUT / Path(results).expanduser()).resolve()


def run_precision(cfg: TableConfig) -> str:
    """The --precision every step runs at: `auto` resolved once, here, by this CPU's bf16 units (as the root records
    it), never left to each command's own device (a GPU node would otherwise run bf16 under a root recording fp32)."""
    if cfg.precision != "auto":
        return cfg.precision
    return auto_precision(os.environ.get(AUTO_ENV, ""), cpu_bf16_units())[0]


def frozen_settings(cfg: TableConfig) -> dict:
    """The FROZEN settings of `cfg`, with `--precision auto` resolved to what it runs on this CPU (a root
    started in fp32 must not go on in bf16 on a machine with AMX)."""
    settings = {k: getattr(cfg, k) for k in FROZEN}
    settings["precision"] = run_precision(cfg)
    return settings


def as_ran(recorded: Mapping[str, object]) -> dict:
    """The FROZEN settings a root (or results folder) recorded, with those it does not record as its root ran them
    (`FROZEN_BEFORE`, `FROZEN_FROM`) where that is known; nothing recorded stays nothing (nothing ran)."""
    if not recorded:
        return {}
    split = {k: recorded[other] for k, other in FROZEN_FROM.items() if other in recorded}
    return {**FROZEN_BEFORE, **split, **recorded}


def adopt_recorded(cfg: TableConfig, argv: Sequence[str]) -> TableConfig:
    """`cfg` with the FROZEN settings its root recorded wherever `argv` does not give them: `make cpu-table`
    continues a root started with e.g. `--hidden-dim 256` as it started; a flag given otherwise is refused
    by Folder.check_settings."""
    path = Path(cfg.root).expanduser() / STATE_FILE
    if path.exists():
        try:
            recorded = json.loads(path.read_text()).get("settings", {})
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); restore it from a backup or use another --root"
            ) from err
    else:  # a new root (a new machine) goes on under the settings its results were made under
        recorded = results_settings(results_path(cfg.results))
    if not recorded:
        return cfg
    given = {a.split("=", 1)[0] for a in argv}
    config_file = flag_value(list(argv), "--config") or next(
        (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None
    )
    if config_file:  # the values of a --config file are given too: contradicting ones are refused, not replaced
        given |= {f"--{k.replace('_', '-')}" for k in stored_values(TableConfig, config_file)[0]}
    recorded = as_ran(recorded)
    adopted = {k: v for k, v in recorded.items() if k in FROZEN and f"--{k.replace('_', '-')}" not in given}
    return replace(cfg, **adopted).validate() if adopted else cfg


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
        run = pilot_dir(task, "state", cfg.pilot_seed)
        steps = self.summarized(run)  # decided at the end of a chunk, on the evaluations of finished chunks
        budget = choose_budget(
            [r for r in read_eval_rows(self.root / run / "eval.csv") if float(r["step"]) <= steps],
            steps,
            cfg.budget_threshold,
            cfg.budget_in_a_row,
            cfg.budget_cap,
            cfg.eval_every,
        )
        if budget.steps is None and outcome.diverged(self.root / run):  # it will never hold now: as at the cap
            budget = Budget(
                cfg.budget_cap,
                None,
                f"the state pilot diverged at {steps:,} steps before holding >= {cfg.budget_threshold:g}; "
                f"budget = the cap, {cfg.budget_cap:,} (piloting again would not change it: a resumed pilot repeats "
                "its steps exactly, and a new one with the recorded --pilot-seed most likely too)",
            )
        return budget

    def record_budgets(self) -> None:
        for task in PAPER_TASKS[1:]:
            b = self.budget(task)
            if b.steps is not None and task not in self.state["budgets"]:
                self.state["budgets"][task] = asdict(b)
                self.save()
                print(f"budget of {task}: {b.reason}", flush=True)


def row_plan(cfg: TableConfig, phase: str) -> list[tuple[list[str], tuple[str, ...], tuple[int, ...]]]:
    """The SAC rows a phase runs: (tasks, rows, the seed counts of their waves in turn); none for phase B's pilots."""
    others = list(PAPER_TASKS[1:])
    return {
        "A": [([REACH], TABLE_ROWS, (min(cfg.first_seeds, cfg.reach_seeds), cfg.reach_seeds))],
        "C": [(others, TABLE_ROWS, (cfg.first_seeds, cfg.more_seeds))],
        "D": [(cfg.extra_task_list, rows, (cfg.extra_seeds,)) for rows in (CNN_ROWS, GRID_ROWS)],
        "E": [(others, TABLE_ROWS, (cfg.max_seeds,))],
    }.get(phase, [])


def planned_seeds(cfg: TableConfig) -> dict[tuple[str, str], int]:
    """Per (task, row): the most seeds the selected phases plan for it (`row_plan`; budgets not needed)."""
    planned: dict[tuple[str, str], int] = {}
    for phase in cfg.phases:
        for tasks, rows, seed_counts in row_plan(cfg, phase):
            for key in ((t, r) for t in tasks for r in rows):
                planned[key] = max(planned.get(key, 0), *seed_counts)
    return planned


def table_dir(task: str, row: str, seed: int) -> str:
    return f"runs/sac/{task}/{row}/seed{seed}"


def pilot_dir(task: str, row: str, seed: int) -> str:
    return f"runs/pilot/{task}/{row}/seed{seed}"


# -- the plan ------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One idempotent step: a project command run in the root (or an in-process copy), done or not."""

    key: str
    phase: str
    argv: list[str] = field(default_factory=list)  # `python -m <module> ...` words after `python`
    done: bool = False
    blocked: str = ""  # why it cannot run yet (an undecided budget)
    marker: bool = False  # done is recorded in table.json once the command succeeds and `made` holds
    made: bool = False  # its outputs are there (what `done` is, less the marker)
    action: Callable[[], object] | None = None  # in-process step (copying probe results)
    note: str = ""  # what an in-process step does
    kept: tuple[str, ...] = ()  # the folders this step fills (the git line adding them is printed after it)
    wave: tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], int] | None = (
        None  # a table grid: tasks, rows, seeds, budget
    )
    decides_budget: bool = False  # a state pilot's chunk: the budget rule reads it, and the plan after it follows
    sized: bool = False  # an rl.grid whose --pack `best_pack` chose (--pack 0)

    def command(self) -> str:
        if self.blocked:
            return f"(waits: {self.blocked})"
        return f"python {shlex.join(self.argv)}" if self.argv else self.note


def seeds_text(seeds: Sequence[int]) -> str:
    return ",".join(map(str, seeds))


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
                self.pilot_extra(),
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

    def pilot_extra(self) -> str:
        return sac_flags(self.cfg, pilot=True)

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

        self.by_budget(tasks, run)

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
                self.pilot_extra(),
                pilot_dir,
            ).decides_budget = True


def evaluations(cfg: TableConfig, pilot: bool) -> tuple[int, int, int]:
    """(interval, episodes, episodes of the last one) of a pilot's evaluations or a table run's."""
    if pilot:  # the budget rule reads every evaluation alike
        return cfg.pilot_eval_every, cfg.pilot_eval_episodes, cfg.pilot_eval_episodes
    return cfg.eval_every, cfg.eval_episodes, cfg.final_eval_episodes


def sac_flags(cfg: TableConfig, pilot: bool = False) -> str:
    """rl.grid's --extra of a table (or pilot) grid: the table's SAC settings, then --sac-extra."""
    eval_every, episodes, last = evaluations(cfg, pilot)
    final = "" if pilot else f" --final-eval-episodes {last}"
    return (
        f"--hidden-dim {cfg.hidden_dim} --eval-every {eval_every} --eval-episodes {episodes}{final} --eval-envs "
        f"{cfg.eval_envs} --checkpoint-every {cfg.checkpoint_every} --torch-threads 1 --mmae-features {cfg.mmae_features} {cfg.sac_extra}"
    ).strip()


def grid_argv(
    cfg: TableConfig, tasks: Sequence[str], rows: Sequence[str], seeds: Sequence[int], steps: int, out: str, extra: str
) -> list[str]:
    """rl.grid's arguments for `rows` x `seeds` on `tasks` to `steps`, with rl.sac flags `extra`. The grid starts
    runs seed by seed in the order of --encoders: the rows go longest first (`longest_first`)."""
    return [
        "--tasks",
        ",".join(tasks),
        "--encoders",
        ",".join(longest_first(rows)),
        "--seeds",
        seeds_text(seeds),
        "--steps",
        str(steps),
        "--sac-preset",
        "paper",
        "--pack",
        str(cfg.cnn_pack if set(rows) & set(CNN_ROWS) else cfg.pack or 1),
        "--parallel",
        str(cfg.parallel),
        "--precision",
        run_precision(cfg),
        "--out",
        out,
        f"--extra={extra}",
    ]


def with_pack(argv: Sequence[str], pack: int) -> list[str]:
    """An rl.grid command's argv with --pack `pack`."""
    i = list(argv).index("--pack")
    return [*argv[: i + 1], str(pack), *argv[i + 2 :]]


#: --pack 0 takes the smallest pack whose forecast is within this share of the soonest end
PACK_SLACK = 0.05


def best_pack(cfg: TableConfig, folder: Folder, argv: Sequence[str], counted: set = frozenset()) -> int:
    """Runs per pack for the rl.grid command `argv` (--pack 0): the smallest size up to --max-pack whose forecast
    (`grid_hours`, at the rates of the column this CPU follows, of its runs not `counted` by an earlier step of a
    forecast) ends the grid within PACK_SLACK of the soonest; 1 where no column applies."""
    column = rate_column(run_precision(cfg), cpu_bf16_units())
    if column is None:
        return 1
    hours = {
        n: grid_hours(cfg, folder, with_pack(argv, n), RATES[column], set(counted)) for n in range(1, cfg.max_pack + 1)
    }
    soonest = min(hours.values())
    return min(n for n, h in hours.items() if h <= soonest * (1 + PACK_SLACK))


def pretrain_argv(cfg: TableConfig, task: str, modalities: str, out: str) -> list[str]:
    """pretrain.multimae's arguments for one encoder of `task` (--pretrain-extra after the table's settings)."""
    epochs = pretrain_epochs(cfg.pretrain_images, cfg.frames)
    return (
        ["--data", f"shards/{task}-sal", "--preset", cfg.pretrain_preset]
        + ["--modalities", modalities, "--epochs", str(epochs), *shlex.split(cfg.pretrain_extra)]
        + ["--precision", run_precision(cfg), "--resume", "auto", "--out", out]
    )


def probe_argv(cfg: TableConfig, task: str, encoder_dir: str, inputs: str) -> list[str]:
    """pretrain.probe's arguments for one probe of the encoder in `encoder_dir` (--probe-extra last)."""
    return ["--encoder", f"{encoder_dir}/encoder.pt", "--data", f"shards/{task}-sal"] + [
        "--inputs",
        inputs,
        "--threads",
        "2",
        "--precision",
        "fp32",  # RL's frozen encoders run in float32 whatever --precision (rl/observe.py): the probe reads the same
        *shlex.split(cfg.probe_extra),
    ]


def check_pass_through(cfg: TableConfig) -> None:
    """Parse --sac-extra, --pretrain-extra and --probe-extra inside the commands the table runs, as those
    commands will (pipeline.run's check): a typo is a ValueError naming the flag now, before any step
    runs, not hours later when its step comes (`--help` among them too). Their parsers import torch:
    `check_pass_through_apart` runs this in a process of its own."""
    try:
        check_pass_through_flags(cfg)
    except SystemExit as stop:  # argparse's --help / --version: printed, then exit
        raise ValueError(
            "--sac-extra, --pretrain-extra and --probe-extra pass flags on to the commands the table runs; --help "
            "there prints that command's help and exits (see it with `python -m rl.sac --help`, `python -m "
            "pretrain.multimae --help` or `python -m pretrain.probe --help`)"
        ) from stop


def check_pass_through_flags(cfg: TableConfig) -> None:
    """The parses of `check_pass_through`."""
    from common.cli import parse_flags
    from pretrain.config import parse_pretrain_flags
    from pretrain.probe import ProbeConfig
    from rl.grid import GridConfig, check_sac_flags

    for rows, pilot in ((ALL_ROWS, False), (["state", "mmae_rgbs"], True)):  # the table's grids, then the pilots'
        extra = sac_flags(cfg, pilot)
        argv = grid_argv(cfg, [REACH], rows, [0], cfg.eval_every, "runs/sac", extra)
        check_sac_flags(parse_flags(GridConfig, argv, command="python -m rl.grid", what="--sac-extra"), "--sac-extra")
    for name, modalities in (("rgbs", "rgb,saliency"), ("rgb", "rgb")):
        parse_pretrain_flags(pretrain_argv(cfg, REACH, modalities, f"runs/mmae/{name}/{REACH}"), "--pretrain-extra")
    for name, inputs, _ in PROBES:
        argv = probe_argv(cfg, REACH, f"runs/mmae/{name}/{REACH}", inputs)
        parse_flags(ProbeConfig, argv, command="python -m pretrain.probe", what="--probe-extra")


def check_pass_through_apart(cfg: TableConfig) -> None:
    """`check_pass_through` in a short-lived process (its error raised here): the orchestrator runs for days
    beside the jobs it starts and would otherwise hold torch (~300 MB) that no memory check counts."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            pool.submit(check_pass_through, cfg).result()
        except BrokenProcessPool as err:  # killed (e.g. out of memory) or crashed while importing
            raise RuntimeError(
                f"the check of the pass-through flags died before it answered ({err}); run it again"
            ) from err


#: (model, --inputs, probe file label) of the three probes per task: ViSaRL, PO, MMAE RGB
PROBES = (("rgbs", "", "rgb+saliency"), ("rgbs", "rgb", "rgb"), ("rgb", "", "rgb"))
#: the share of the frames pretrain.multimae holds out (whole episodes) from its training
PRETRAIN_VAL_FRACTION = 0.05


def pretrain_epochs(images: int, frames: int, val_fraction: float = PRETRAIN_VAL_FRACTION) -> int:
    """Epochs giving at least `images` training images from `frames` frames (pretrain.multimae holds out
    `val_fraction` of the episodes)."""
    return math.ceil(images / (frames * (1 - val_fraction)))


def pretrained_images(cfg: TableConfig) -> float:
    """The images each MultiMAE trains on: its `pretrain_epochs` over the frames it does not hold out."""
    return pretrain_epochs(cfg.pretrain_images, cfg.frames) * cfg.frames * (1 - PRETRAIN_VAL_FRACTION)


#: what a task's preparation leaves that its results keep (globs under the root's runs/): its saliency student's
#: evaluation against the oracle maps (metrics and the Fig. 7 picture the report shows), kept with the student, and
#: its MultiMAEs' probes
KEPT_SALIENCY = (KEPT_SALIENCY_EVAL, KEPT_SALIENCY_PICTURE)
KEPT_PREPARATION = (*KEPT_SALIENCY, KEPT_PROBES)


def preparation_copies(
    folder: Folder, task: str, patterns: Sequence[str] = KEPT_PREPARATION
) -> list[tuple[Path, Path]]:
    """(file under the root, where it is kept) of what the root holds of the task's kept preparation (`patterns`)."""
    runs = folder.root / "runs"
    found = [src for pattern in patterns for src in sorted(runs.glob(pattern.format(task=task)))]
    return [(src, folder.results / src.relative_to(runs)) for src in found]


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


#: what a new root needs of a task's preparation instead of repeating it (paths under runs/), carried per encoder as
#: soon as its pretraining ends (a machine lost during the next one keeps it): the rgb+saliency encoder with the
#: saliency student that labelled its frames (the saliency rows read it too), then the rgb-only encoder; each with
#: the logs that say its pretraining finished (`pretrain_finished`)
CARRIED = {
    name: (
        *(["saliency/{task}/student.pt"] if name == "rgbs" else []),
        *(f"mmae/{name}/{{task}}/{file}" for file in ("encoder.pt", "config.json", "data.json", "train.csv")),
    )
    for name, _ in ENCODERS
}


def carried_files(task: str, encoders: Sequence[str] = tuple(CARRIED)) -> list[str]:
    """The CARRIED paths of `task`'s `encoders` (all by default), under runs/ and under the carry folder alike."""
    return [rel.format(task=task) for name in encoders for rel in CARRIED[name]]


def model_copies(folder: Folder, task: str, encoders: Sequence[str] = tuple(CARRIED)) -> list[tuple[Path, Path]]:
    """(file under the root's runs/, its copy in the carry folder) of the task's CARRIED models."""
    return [(folder.root / "runs" / rel, folder.carry / rel) for rel in carried_files(task, encoders)]


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def write_once(path: Path, payload: bytes, conflict: str) -> bool:
    """Write `payload` to `path` unless it holds it already (True if written); a `path` holding other bytes is
    refused with the ValueError `conflict`, never written over."""
    if path.exists():
        if path.read_bytes() != payload:
            raise ValueError(conflict)
        return False
    atomic_write_bytes(path, payload)
    return True


def models_record(folder: Folder, task: str) -> dict | None:
    """The task's KEPT_MODELS record ({"sha256": {path under the carry folder: hash}, "frames": {encoder: digest}}),
    None before any of its models are carried."""
    path = folder.results / KEPT_MODELS.format(task=task)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise ValueError(
            f'{path} is not a record of carried models ({{"sha256": {{file: hash}}}}); restore it with `git checkout {path}`'
        )
    return record


def kept_models(folder: Folder, task: str) -> dict[str, str]:
    """{path under the carry folder: sha256} of the task's carried models as its results record them (empty before
    any are carried)."""
    record = models_record(folder, task)
    return record["sha256"] if record else {}


def carried_encoders(folder: Folder, task: str) -> list[str]:
    """The task's encoders (ENCODERS' names) whose models the carry folder holds and its results record."""
    recorded = kept_models(folder, task)
    return [
        name
        for name in CARRIED
        if all(rel in recorded and (folder.carry / rel).exists() for rel in carried_files(task, [name]))
    ]


def frames_digest(folder: Folder, task: str) -> str:
    """sha256 of the root's collected frames of `task`, from their shard manifest's checksums: collection writes the
    same bytes for the same seeds, so two encoders with the same digest learnt from the same frames."""
    from data.shards import read_manifest

    shards_dir = folder.root / f"shards/{task}"
    shards = read_manifest(shards_dir)["shards"]
    sums = [s.get("sha256") or sha256((shards_dir / s["file"]).read_bytes()) for s in shards]  # an older manifest's
    return sha256(json.dumps([[s["file"], s["frames"], h] for s, h in zip(shards, sums)]).encode())


def carry_models(folder: Folder, task: str, encoder: str) -> list[Path]:
    """Copy the CARRIED models of `task`'s `encoder` into the carry folder (never overwritten by other bytes), then
    add their sha256 and the digest of the frames it learnt from (`frames_digest`) to the results' record
    (KEPT_MODELS): the record ties the carried files to the results they go with."""
    copies = model_copies(folder, task, [encoder])
    payloads = {rel: src.read_bytes() for rel, (src, _) in zip(carried_files(task, [encoder]), copies)}
    hashes = {rel: sha256(payload) for rel, payload in payloads.items()}
    path = folder.results / KEPT_MODELS.format(task=task)
    old = models_record(folder, task) or {"task": task, "sha256": {}, "frames": {}}
    clash = [rel for rel, h in hashes.items() if old["sha256"].get(rel, h) != h]
    if clash:  # refused before anything is copied
        raise ValueError(
            f"{path} records other models than this root's {clash[0]}: the results belong to another root; give this "
            "one folders of its own (--results results/cpu-table-2 --carry artifacts/cpu-table-2)"
        )
    written = []
    for (rel, payload), (src, dst) in zip(payloads.items(), copies):
        conflict = f"{dst} already holds other models than this root's {src}; give this experiment a carry folder of its own (--carry)"
        if write_once(dst, payload, conflict):
            written.append(dst)
    frames = {**old.get("frames", {}), encoder: old.get("frames", {}).get(encoder) or frames_digest(folder, task)}
    record = {**old, "sha256": {**old["sha256"], **hashes}, "frames": frames}
    if record != old:
        atomic_write_json(path, record)
        written.append(path)
    return written


def adopt_models(folder: Folder, task: str, names: Sequence[str]) -> list[Path]:
    """Copy the carried models of the task's encoders `names` into the root (a new machine's root goes on from them),
    each checked against the sha256 its results record; a root holding other models of its own is refused."""
    recorded, written = kept_models(folder, task), []
    for rel, (mine, theirs) in zip(carried_files(task, names), model_copies(folder, task, names)):
        payload = theirs.read_bytes()
        if recorded.get(rel) != sha256(payload):
            raise ValueError(
                f"the carried {theirs} is not the model {folder.results / KEPT_MODELS.format(task=task)} records: "
                "that carry folder belongs to another experiment; check out the one committed with these results"
            )
        conflict = (
            f"{mine} differs from the carried {theirs}: this root made {task}'s models itself and they are not "
            f"the ones carried; move its runs/saliency/{task} and runs/mmae/*/{task} aside, or start a new --root"
        )
        if write_once(mine, payload, conflict):
            written.append(mine)
    return written


def missing_kept_runs(folder: Folder) -> list[tuple[Path, Path]]:
    """(kept run folder, where the root holds it) of every run kept in the results folders (table and pilots) that
    the root has not started: a new root restores them rather than running them again."""
    missing = []
    for kept, runs in ((folder.results, "runs/sac"), (Path(f"{folder.results}-pilot"), "runs/pilot")):
        for summary in sorted(kept.glob("*/*/seed*/summary.json")):
            dest = folder.root / runs / summary.parent.relative_to(kept)
            restoring = dest.relative_to(folder.root).as_posix() in folder.state.get("restored", [])
            if not (dest / "summary.json").exists() and (restoring or not (dest / "config.json").exists()):
                missing.append((summary.parent, dest))
    return missing


def restore_kept_runs(folder: Folder) -> list[Path]:
    """Copy the kept runs the root lacks into it (`missing_kept_runs`), each summary.json last: a copy killed midway
    is restored again (it is recorded as restored first: rl.grid would take a run folder holding only a config.json
    for one it started). rl.grid skips them as finished; pipeline.keep finds them identical."""
    from pipeline.keep import keep_file

    written = []
    for kept, dest in missing_kept_runs(folder):
        rel = dest.relative_to(folder.root).as_posix()
        with folder.lock:
            restored = folder.state.setdefault("restored", [])
            if rel not in restored:
                restored.append(rel)
                folder.save()
        files = sorted((p for p in kept.iterdir() if p.is_file()), key=lambda p: p.name == "summary.json")
        written += [dest / f.name for f in files if keep_file(f, dest / f.name)]
    return written


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

    tasks, rows, seeds, steps = wave
    written, refused = [], []
    for run in (table_dir(t, r, s) for t in tasks for r in rows for s in seeds):
        dest = folder.results / Path(run).relative_to("runs/sac")
        if not folder.finished([run], steps):
            continue  # still going
        if not folder.kept_as_run(folder.root / run, dest):  # a retrained run's old kept outcome is refused by keep
            try:
                folder.record_settings()
                written += keep(KeepConfig(source=str(folder.root / run), out=str(dest)))
            except (OSError, ValueError) as err:
                refused.append(f"{run}: {err}")
                continue
        free_replay(folder.root / run, steps)
    return written, refused


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


# -- the wall-time estimate --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Measured speeds on the project's 2-core CPUs (sources in RATE_SOURCES). SAC in ms per env-step per run on
    one core: `sac_ms` without the update, `update_ms` the update at hidden (256, 1024); evaluation (no update)."""

    collect_fps: float
    saliency_s: float
    label_fps: float
    pretrain_img_s: float  # the rgb+saliency MultiMAE's (the rgb-only one: RGB_PRETRAIN_SPEEDUP times it)
    probe_s: float
    sac_ms: Mapping[str, float]
    update_ms: tuple[float, float]
    eval_ms: Mapping[str, float]
    #: per row kind, {runs per pack: env-steps/s of --parallel such packs at once over as many packs of one}, measured
    #: at hidden GAIN_HIDDEN (at 1024 the update fills a step and packs gained <= 2 %: BENCHMARKS.md); none: 1.0
    pack_gain: Mapping[str, Mapping[int, float]] = field(default_factory=dict)

    def step_ms(self, kind: str, hidden: int) -> float:
        """ms per training env-step of one run: the update interpolated in hidden^2 between the two widths measured."""
        small, large = self.update_ms
        return self.sac_ms[kind] + small + (large - small) * (hidden**2 - 256**2) / (1024**2 - 256**2)

    def gain(self, kind: str, pack: int, hidden: int) -> float:
        """How much faster each run of a pack of `pack` goes than a run alone in its process: linear between the pack
        sizes measured, the largest one's beyond them; 1.0 where unmeasured and at widths other than GAIN_HIDDEN."""
        points = sorted({1: 1.0, **(self.pack_gain.get(kind, {}) if hidden == GAIN_HIDDEN else {})}.items())
        for (n0, g0), (n1, g1) in zip(points, points[1:]):
            if pack <= n1:
                return g0 + (g1 - g0) * (max(pack, n0) - n0) / (n1 - n0)
        return points[-1][1]


#: the SAC width the packs' gains were measured at (the CPU table's)
GAIN_HIDDEN = 256
#: how much faster the rgb-only MultiMAE pretrains than the rgb+saliency one the rates are of (2.73 against 4.27
#: GFLOP per image, 1.57x; measured 1.36x on the Zen 3 in fp32: BENCHMARKS.md), taken to hold on every CPU
RGB_PRETRAIN_SPEEDUP = 1.36
FP32_XEON, BF16_XEON, BF16_ZEN4, FP32_ZEN3 = (
    "fp32 (Xeon)",
    "bf16 (Xeon, AMX)",
    "bf16 (Zen 4, AVX512-BF16)",
    "fp32 (Zen 3, AVX2)",
)
RATES = {
    FP32_XEON: Rates(
        collect_fps=54.7,
        saliency_s=2600,
        label_fps=30.7,
        pretrain_img_s=42,
        probe_s=600,
        sac_ms={"state": 19, "frozen": 33, "cnn": 434, "gaze": 491},
        update_ms=(11, 40),
        eval_ms={"state": 1, "frozen": 32, "cnn": 40, "gaze": 45},
    ),
}
# bf16 on the same Xeon: pretraining and the SAC update; the rest of a step (frozen encoders in fp32) as in fp32
RATES[BF16_XEON] = replace(RATES[FP32_XEON], pretrain_img_s=121, update_ms=(3, 21))
# what the Zen 4 measured alone: pretraining and the step totals at hidden 1024 (frozen 49 ms, cnn 286 ms); their
# split into update and the rest, state, gaze's share over cnn, evaluation and the preparation stages are the Xeon's
RATES[BF16_ZEN4] = replace(
    RATES[BF16_XEON], pretrain_img_s=48.8, sac_ms={"state": 19, "frozen": 28, "cnn": 265, "gaze": 302}
)
# what the Zen 3 measured: its preparation in the CPU table, pretraining alone, a packed step at hidden 1024 alone
# (the update from its profile), two packs at once at hidden 256 (the table's: one run each for the totals, 2-6 runs
# each for the gains); probes, CNN rows and evaluation are the Xeon's
RATES[FP32_ZEN3] = replace(
    RATES[FP32_XEON],
    collect_fps=156.6,
    saliency_s=913,
    label_fps=147.1,
    pretrain_img_s=27.0,
    sac_ms={"state": 2.3, "frozen": 36.1, "cnn": 434, "gaze": 491},
    update_ms=(6.6, 55.8),
    pack_gain={"frozen": {2: 1.13, 3: 1.20, 4: 1.28, 6: 1.37}, "state": {2: 1.07, 3: 1.18, 4: 1.28, 6: 1.32}},
)
RATE_SOURCES = (
    "Xeon (2 cores, AMX), 2026-12-02: collection 54.7 frames/s: BENCHMARKS.md, data.collect with 2 workers (load "
    "3-7); saliency ~2,600 s per task: PiCANet cpu preset 200 epochs (~160 s, from the demo's 20 s per 25 epochs) + "
    "student 1,500 frames x 40 epochs at ~25 frames/s (saliency/config.py) + evaluation; labelling 30.7 frames/s: "
    "BENCHMARKS.md (PiCANet; the student is faster); MultiMAE paper size 42 img/s fp32, 121 img/s bf16: "
    "shared/notes/cpu.md (2 threads, attention unfused); probe ~10 min: RESULTS.md (1.5-15 min); SAC update per run "
    "at hidden 256 / 1024: fp32 11 / 40 ms (BENCHMARKS.md's packed profile, cpu.md), bf16 3 / 21 ms (cpu.md); "
    "besides the update, state 19 ms/step (BENCHMARKS.md: 16.9 env-steps/s at hidden 1024, pack of one, less its 40 "
    "ms update), frozen rows fp32 33 ms (BENCHMARKS.md's mmae_rgbs pack-of-4 profile: env 10.8, saliency + encoder "
    "21.2, act + replay 0.6), the same in bf16 (frozen encoders run in fp32 in every run: rl/observe.py; the saliency "
    "model's bf16 gain not credited); cnn_rgb 434 ms (BENCHMARKS.md: 656 ms at 1.5 env-steps/s, hidden 256, with the "
    "grouped-convolution trunk; / 1.51 for the per-run trunk, bench/conv_trunk.py on the AVX2 EPYC), gaze +13 % "
    "(BENCHMARKS.md); CNN rows in bf16 on the Xeon unmeasured (fp32 rates used). "
    "Zen 4 (AMD EPYC, 2 cores, AVX512-BF16, no AMX), 2026-12-04: MultiMAE paper size 48.8 img/s bf16 (BENCHMARKS.md, "
    "alone); a packed step per run at hidden 1024 in bf16, 1 thread: mmae_rgbs 49 ms (20.4 env-steps/s for a pack of "
    "3, frozen encoder in fp32), cnn_rgb 286 ms (3.5 env-steps/s, pack of 3), gaze = cnn_rgb + 13 %, each split into "
    "update and the rest as on the Xeon; the rest as on the Xeon (the CPU table's reach-v3 stages took collection "
    "5,129 s, saliency 1,806 s, labelling 632 s beside the gaze ablation: table.json, not rates alone). "
    "Zen 3 (AMD EPYC family 25 model 1, 2 cores, AVX2, no bf16 units), 2026-12-05, fp32: the CPU table's reach-v3 "
    "preparation (table.json: collection 319 s for 50,000 frames, annotation + PiCANet + student + evaluation 913 s, "
    "labelling 340 s); MultiMAE paper size 27.0 img/s (results/cpu-table/README.md, alone); a packed step per run at "
    "hidden 1024, pack of 5, 1 thread, alone (BENCHMARKS.md): state 58.1 ms (17.2 env-steps/s), mmae_rgbs 78.1 ms "
    "(12.8 env-steps/s; a pack of 1 within 2 % of a pack of 5: BENCHMARKS.md), of which the update 55.8 ms (state's "
    "profile), so besides it state 2.3 ms; 2026-12-06, at hidden 256, two packs at once, 1 thread each (the table's "
    "way, BENCHMARKS.md): a run alone in its pack state 8.9 ms (so the update 6.6 ms), mmae_rgbs 42.7 ms (so frozen "
    "rows 36.1 ms besides the update); each run of a pack of 2 / 3 / 4 / 6 faster by 1.13 / 1.20 / 1.28 / 1.37x "
    "(frozen) and 1.07 / 1.18 / 1.28 / 1.32x (state), not credited at 1024 (where frozen rows' 36.1 + 55.8 ms is 18 % "
    "above the 78.1 ms of a pack of 5 alone: the hidden-1024 column counts a frozen step as two at once run it); "
    "probes, CNN rows and evaluation as on the Xeon (unmeasured). "
    "An AVX2-only CPU runs bf16 slower than fp32 (BENCHMARKS.md). Every MultiMAE rate is the rgb+saliency one's; the "
    f"rgb-only one pretrains {RGB_PRETRAIN_SPEEDUP}x faster (2026-12-06 on the Zen 3, fp32: BENCHMARKS.md)"
)


def row_kind(row: str) -> str:
    return (
        "state"
        if row == "state"
        else "frozen"
        if row.startswith("mmae")
        else "gaze"
        if row.startswith("gaze")
        else "cnn"
    )


def longest_first(rows: Sequence[str]) -> list[str]:
    """`rows` with the costliest per step first (KIND_COST_ORDER), the table's order among equals: the grid starts a
    seed's runs in this order, so a wave's last runs are its short ones and a core idles least at its end (phase
    A's first wave, MMAE RGB and state x 3 on 2 cores: ~7.0 h rather than ~7.6 h at the Zen 3's rates)."""
    return sorted(rows, key=lambda row: KIND_COST_ORDER.index(row_kind(row)))


def run_seconds(
    rates: Rates, row: str, steps: int, hidden: int, eval_every: int, episodes: int, final_episodes: int
) -> float:
    """Core-seconds of one SAC run: training, the evaluations before the last, and the last one."""
    kind = row_kind(row)
    evals = max(0, math.ceil(steps / eval_every) - 1) * episodes + final_episodes
    return (steps * rates.step_ms(kind, hidden) + evals * EPISODE_STEPS * rates.eval_ms[kind]) / 1000


def estimate(cfg: TableConfig, budgets: Mapping[str, int | None]) -> dict[str, dict[str, float]]:
    """Hours of each phase from scratch, per precision: preparation on the whole machine, SAC on --parallel cores.
    Tasks without a budget yet are assumed to take the cap."""
    out: dict[str, dict[str, float]] = {}
    budget = lambda t: budgets.get(t) or cfg.budget_cap  # noqa: E731
    others = PAPER_TASKS[1:]
    for name, r in RATES.items():
        prep = (
            cfg.frames / r.collect_fps
            + r.saliency_s
            + cfg.frames / r.label_fps
            + (1 + 1 / RGB_PRETRAIN_SPEEDUP) * pretrained_images(cfg) / r.pretrain_img_s
            + 3 * r.probe_s
        )

        def packed(row: str) -> float:  # the gain of the largest pack the table may run the row in (an upper bound)
            size = cfg.cnn_pack if row in CNN_ROWS else cfg.pack or (1 if row in GRID_ROWS else cfg.max_pack)
            return r.gain(row_kind(row), size, cfg.hidden_dim)

        def sac(tasks, rows, seeds, pilot=False) -> float:
            return (
                sum(
                    seeds
                    * run_seconds(r, row, budget(t), cfg.hidden_dim, *evaluations(cfg, pilot))
                    / (1.0 if pilot else packed(row))
                    for t in tasks
                    for row in rows
                )
                / cfg.parallel
            )

        sac_reach = (
            sum(
                cfg.reach_seeds
                * run_seconds(r, row, cfg.reach_steps, cfg.hidden_dim, *evaluations(cfg, pilot=False))
                / packed(row)
                for row in TABLE_ROWS
            )
            / cfg.parallel
        )
        out[name] = {
            "A": (prep + sac_reach) / 3600,
            "B": (3 * prep + sac(others, ["state", "mmae_rgbs"], 1, pilot=True)) / 3600,
            "C": sac(others, TABLE_ROWS, cfg.more_seeds) / 3600,
            "D": sac(cfg.extra_task_list, CNN_ROWS + GRID_ROWS, cfg.extra_seeds) / 3600,
            "E": sac(others, TABLE_ROWS, cfg.max_seeds - cfg.more_seeds) / 3600,
        }
    return out


def estimate_text(cfg: TableConfig, folder: Folder) -> str:
    budgets = {t: folder.budget(t).steps for t in PAPER_TASKS}
    table = estimate(cfg, budgets)
    lines = [
        f"wall-time estimate per phase from scratch (hours on {cfg.parallel} cores, SAC hidden {cfg.hidden_dim}, "
        f"packs of {'up to ' * (not cfg.pack)}{cfg.pack or cfg.max_pack} at their measured gain, pilots alone; undecided "
        "budgets taken at the cap, "
        f"{cfg.budget_cap:,}):",
        "| phase | " + " | ".join(table) + " |",
        "|---|" + "---|" * len(table),
    ]
    for phase in PHASES:
        lines.append(f"| {phase} | " + " | ".join(f"{h[phase]:,.0f}" for h in table.values()) + " |")
    lines.append("| all | " + " | ".join(f"{sum(h.values()):,.0f}" for h in table.values()) + " |")
    lines.append(applicable_column(cfg.precision, cpu_bf16_units(), os.environ.get(AUTO_ENV, "")))
    lines.append(f"rates: {RATE_SOURCES}")
    return "\n".join(lines)


#: the most steps that take time the forecast lists one by one (the rest are summed in one line)
FORECAST_ROWS = 12


def grid_hours(cfg: TableConfig, folder: Folder, argv: Sequence[str], rates: Rates, counted: set) -> float:
    """Wall hours an rl.grid command still takes at `rates`: its runs rl.grid would not skip (`outcome.is_finished`)
    and no earlier step of the forecast runs (`counted`, which they join), in packs of its --pack as rl.grid packs
    them (`grid_packs`), started in that order on --parallel cores, each as the first core frees. A pack takes its
    runs' seconds alone (the time its row's finished runs took here, `measured_seconds`, or else `run_seconds`) over
    the pack's gain (`Rates.gain`), less the share of its steps it has run (`run_state`)."""
    steps = int(flag_value(argv, "--steps") or 0)
    every, episodes, last = evaluations(cfg, pilot=flag_value(argv, "--out") == "runs/pilot")
    todo = []
    for run in grid_runs(folder.root, argv):
        if steps < 1 or outcome.is_finished(run, steps) or (run, steps) in counted:
            continue
        counted.add((run, steps))
        todo.append(run)
    cores = [0.0] * cfg.parallel
    for pack in grid_packs(todo, int(flag_value(argv, "--pack") or 1)):
        alone = sum(
            measured_seconds(run.parent, steps, rates, cfg.hidden_dim)
            or run_seconds(rates, run.parent.name, steps, cfg.hidden_dim, every, episodes, last)
            for run in pack
        )
        left = max(1 - min(run_state(run)[0], steps) / steps for run in pack)
        gain = rates.gain(row_kind(pack[0].parent.name), len(pack), cfg.hidden_dim)
        heapq.heapreplace(cores, cores[0] + left * alone / gain)
    return max(cores) / 3600


def stack_class(row: str) -> str:
    """Rows whose runs rl.grid can pack together share it (rl.workspace.pack_key: state; the frozen rows of one
    embedding size); the CNN rows, gaze and the grid-pooled row each pack alone."""
    kind = row_kind(row)
    return kind if kind in ("state", "frozen") and row not in GRID_ROWS else row


def grid_packs(runs: Sequence[Path], pack: int) -> list[list[Path]]:
    """`runs` (in rl.grid's start order) packed as rl.grid.plan_packs packs them: up to `pack` runs of one task whose
    rows stack and whose newest checkpoints are at the same step (they resume together), the packs in the order of
    their first run."""
    groups: dict[tuple[str, str, int | None], list[Path]] = {}
    for run in runs:
        key = (run.parent.parent.name, stack_class(run.parent.name), max(outcome.checkpoint_steps(run), default=None))
        groups.setdefault(key, []).append(run)
    order = {run: i for i, run in enumerate(runs)}
    packs = [group[i : i + pack] for group in groups.values() for i in range(0, len(group), pack)]
    return sorted(packs, key=lambda members: order[members[0]])


def grid_runs(root: Path, argv: Sequence[str]) -> list[Path]:
    """The run folders of an rl.grid command, in the order rl.grid starts them: seed by seed, then task, then
    --encoders."""
    words = {name: (flag_value(argv, f"--{name}") or "").split(",") for name in ("tasks", "encoders", "seeds")}
    out = root / (flag_value(argv, "--out") or "")
    return [out / t / row / f"seed{s}" for s in words["seeds"] for t in words["tasks"] for row in words["encoders"]]


def measured_seconds(row_dir: Path, steps: int, rates: Rates, hidden: int) -> float:
    """The mean time alone of the runs under `row_dir` that ran to exactly `steps` without diverging: summary.json's
    wall_time_s (over every process that ran it) shared among its pack's runs (its "pack", 1 where absent) and times
    that pack's gain (`Rates.gain`); this machine's own time for such a run (0.0 where none has)."""
    times = []
    for summary in (outcome.read_summary(d) for d in row_dir.glob("seed*")):
        wall, pack = (summary or {}).get("wall_time_s"), (summary or {}).get("pack", 1)
        if (
            outcome.divergence(summary) is None
            and (summary or {}).get("steps") == steps
            and isinstance(wall, (int, float))
            and isinstance(pack, int)
            and pack >= 1
        ):
            times.append(float(wall) / pack * rates.gain(row_kind(row_dir.name), pack, hidden))
    return sum(times) / len(times) if times else 0.0


def step_hours(cfg: TableConfig, folder: Folder, step: Step, rates: Rates, counted: set) -> float | None:
    """Wall hours the open `step` still takes at `rates`, given what earlier steps of the forecast account for
    (`counted`: runs, as (folder, steps), and tasks whose saliency stages are counted): a pretraining that has logged
    at its own rate (`pretrain_steps`), a grid by `grid_hours`, a task's saliency stages together at the first of
    them still open; 0 for steps that copy files, and for a keep that waits only on runs an earlier grid of the
    forecast runs; None for a step that waits on anything else (an undecided budget, a lost pilot)."""
    module = step.argv[1] if step.argv else ""
    if step.blocked:
        kept = folder.root / step.argv[2] if module == "pipeline.keep" else None
        return 0.0 if kept and any(kept in run.parents for run, *_ in counted if isinstance(run, Path)) else None
    if module == "pretrain.multimae":
        logged = pretrain_steps(folder.root / (flag_value(step.argv, "--out") or ""))
        if logged and logged[3] > 0:
            done, total, batch, rate, _ = logged
            return max(total - done, 0) * batch / rate / 3600
        speedup = RGB_PRETRAIN_SPEEDUP if flag_value(step.argv, "--modalities") == "rgb" else 1.0
        return pretrained_images(cfg) / (rates.pretrain_img_s * speedup) / 3600
    if module == "rl.grid":
        return grid_hours(cfg, folder, step.argv, rates, counted)
    if module in SALIENCY_STAGES:  # annotation, PiCANet, student, evaluation: measured as one
        task = ("saliency", step.key.partition(": ")[0])
        first = task not in counted
        counted.add(task)
        return rates.saliency_s / 3600 if first else 0.0
    seconds = {"data.collect": cfg.frames / rates.collect_fps, "saliency.label": cfg.frames / rates.label_fps}
    return (rates.probe_s if module == "pretrain.probe" else seconds.get(module, 0.0)) / 3600


#: the stages a task's `saliency_s` rate covers (the oracle annotator's, PiCANet's, the student's, its evaluation)
SALIENCY_STAGES = ("annotate_app.oracle", "saliency.train", "saliency.distill", "saliency.evaluate")


def pack_cell(cfg: TableConfig, folder: Folder, step: Step, rates: Rates, counted: set) -> str:
    """The forecast's "runs per pack" of `step`: an rl.grid's --pack, and beside a pack of more its hours one run per
    process (`counted`: what the forecast counted before it); '-' for other steps."""
    if step.argv[1:2] != ["rl.grid"]:
        return "-"
    pack = int(flag_value(step.argv, "--pack") or 1)
    if pack == 1:
        return "1"
    return f"{pack} (one per process: {grid_hours(cfg, folder, with_pack(step.argv, 1), rates, counted):,.1f} h)"


def forecast_text(cfg: TableConfig, folder: Folder, todo: Sequence[Step], column: str) -> str:
    """The open steps that take time, each with its hours (`step_hours`) at the rates of estimate column `column`
    and when it ends from now, up to the first that waits, or a state pilot's chunk (the budget rule then decides
    what follows); the steps past FORECAST_ROWS summed in one line."""
    rates, end, rows, rest = RATES[column], 0.0, [], 0
    then, counted, piloted = "", set(), False
    for step in todo:
        if piloted and not step.decides_budget:
            then = "then the budget rule reads the state pilots: what follows depends on it, the forecast stops there"
            break
        piloted |= step.decides_budget
        if step.sized:  # sized by what it will run once the steps before it have run theirs
            step = replace(step, argv=with_pack(step.argv, best_pack(cfg, folder, step.argv, counted)))
        before = set(counted)
        hours_left = step_hours(cfg, folder, step, rates, counted)
        if hours_left is None:
            then = f"then {step.key} ({step.blocked}): the forecast stops there"
            break
        end += hours_left
        if hours_left > 0 and len(rows) < FORECAST_ROWS:
            rows.append(
                f"| {step.key} | {pack_cell(cfg, folder, step, rates, before)} | {hours_left:,.1f} | {end:,.1f} |"
            )
        elif hours_left > 0:
            rest += 1
    if not rows:
        return f"forecast from now: {then}" if then else ""
    if rest:
        rows.append(f"| {rest} more step{'s' * (rest > 1)} | | | {end:,.1f} |")
    lines = [
        f"forecast from now (hours at the rates of column {column!r}, a logged pretraining at its own rate, a SAC run "
        f"as long as its row's finished runs of that budget took here; grids as rl.grid packs and starts their runs "
        f"on {cfg.parallel} cores, each pack at its measured gain; a task's saliency stages counted at the first open "
        "one, copies left out):",
        "| open step | runs per pack | hours | ends in (hours from now) |",
        "|---|---|---|---|",
        *rows,
    ]
    return "\n".join(lines + ([then] if then else []))


def rate_column(runs: str, bf16_units: Sequence[str]) -> str | None:
    """The estimate column measured on a CPU like this one for runs in `runs` precision (fp32: the Xeon's with AMX,
    else the Zen 3's); None for bf16 without bf16 units, which runs slower than fp32."""
    if runs == "fp32":
        return FP32_XEON if "amx_bf16" in bf16_units else FP32_ZEN3
    if "amx_bf16" in bf16_units:
        return BF16_XEON
    return BF16_ZEN4 if "avx512_bf16" in bf16_units else None


def applicable_column(precision: str, bf16_units: Sequence[str], forced: str = "") -> str:
    """Which estimate column this CPU's runs follow at `precision` (`forced`: AUTO_ENV's value; `auto` is decided
    by common.cpuinfo.auto_precision, as for the runs), and how far its rates are this CPU's own."""
    if precision != "auto":
        runs, chosen = precision, f"--precision {precision}"
    else:
        runs, why = auto_precision(forced, bf16_units)
        chosen = f"--precision auto runs {runs} here ({why})"
    column = rate_column(runs, bf16_units)
    live = "`--status` shows the running step's own rate and hours left"
    if column is None:
        return (
            f"this CPU: {chosen}, but it has no bf16 units: bf16 runs slower than fp32 here and no column applies; "
            f"pass --precision fp32 ({live})"
        )
    other = (
        "; measured on a Zen 3 (the Zen 4 pretrains in fp32 at 25.6 img/s: BENCHMARKS.md)"
        if column == FP32_ZEN3 and bf16_units
        else ""
    )
    return f"this CPU: {chosen}, so the column {column!r} applies ({live}){other}"


# -- status -------------------------------------------------------------------------------------------


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
    column = rate_column(run_precision(cfg), cpu_bf16_units())
    forecast = forecast_text(cfg, folder, todo, column) if column else ""
    lines += ["", forecast] if forecast else []
    lines += ["", estimate_text(cfg, folder)]
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


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The word after `name` in argv (None when absent)."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def whole_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log ([] when it does not exist yet), less a last line still being written (no newline)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.splitlines(keepends=True)
    return list(csv.DictReader(io.StringIO("".join(lines if text.endswith("\n") else lines[:-1]))))


def last_numbers(rows: Sequence[dict[str, str]], *columns: str) -> dict[str, float] | None:
    """The last of `rows` whose `columns` all read as numbers, as {column: float}; None when there is none."""
    for row in reversed(rows):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return {c: float(row[c]) for c in columns}
    return None


def run_state(run: Path) -> tuple[int, bool, float]:
    """(steps, finished, env-steps/s) of a SAC run folder, for status lines. Its summary.json's steps and
    finished, unless its metrics.csv has gone past them (a later chunk of a longer budget resumed it: in
    progress); else the newest metrics row's steps, in progress; (0, False, 0.0) before either. The rate is
    the newest metrics row's."""
    rows = whole_rows(run / "metrics.csv")
    row, rated = last_numbers(rows, "step"), last_numbers(rows, "step", "steps_per_s")
    logged, rate = (int(row["step"]) if row else 0), (rated["steps_per_s"] if rated else 0.0)
    summarized = outcome.summarized_steps(run)
    if summarized and summarized >= logged:
        return summarized, True, rate
    return logged, False, rate


def hours(seconds: float) -> str:
    """Seconds as hours, e.g. '1,234.5 h'."""
    return f"{seconds / 3600:,.1f} h"


def step_progress(root: Path, step: Step) -> str:
    """How far the step's command has got, read from its own logs: a MultiMAE's steps and image rate, a SAC
    grid's runs in progress and their env-step rate, each with the time left at that rate ('' when it has
    not logged yet, or for other commands)."""
    module, out = step.argv[1:2], flag_value(step.argv, "--out")
    if out is None:
        return ""
    if module == ["pretrain.multimae"]:
        return pretrain_progress(root / out)
    if module == ["rl.grid"]:
        return sac_progress(grid_runs(root, step.argv), int(flag_value(step.argv, "--steps") or 0))
    return ""


#: status measures a running pretraining's rate over its last this many steps (train.csv logs every 10)
RECENT_STEPS = 50


def pretrain_steps(run: Path) -> tuple[int, int, int, float, int] | None:
    """(step of the last train.csv row, total steps, batch, img/s, steps the rate is measured over) of a
    pretrain.multimae run folder, from its config.json, data.json and train.csv (None before its first row). The rate
    is that of its last RECENT_STEPS steps (wall_s between rows), as the machine's load is now; with one row only, the
    row's img_per_s (since its process started; the steps are then 0)."""
    rows = whole_rows(run / "train.csv")
    row = last_numbers(rows, "step", "img_per_s")
    try:
        cfg = json.loads((run / "config.json").read_text())
        data = json.loads((run / "data.json").read_text())
        batch = int(cfg["batch_size"])
        total = int(data.get("total_steps") or int(cfg["epochs"]) * (int(data["train_frames"]) // batch))
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if row is None or total <= 0:
        return None
    step, rate, over = int(row["step"]), row["img_per_s"], 0
    timed = [t for t in (last_numbers([r], "step", "wall_s") for r in rows) if t]
    last = timed[-1] if timed else None
    window = [t for t in timed if last and last["step"] - RECENT_STEPS <= t["step"] < last["step"]]
    if last and window and window[0]["wall_s"] < last["wall_s"]:
        over = int(last["step"] - window[0]["step"])
        rate = over * batch / (last["wall_s"] - window[0]["wall_s"])
    return step, total, batch, rate, over


def pretrain_finished(run: Path) -> bool:
    """Its frozen encoder exists and its training reached its last step: pretrain.multimae exports encoder.pt at every
    checkpoint and exits 0 when stopped early (SIGTERM, --max-steps), so neither alone says it finished."""
    steps = pretrain_steps(run)
    return (run / "encoder.pt").exists() and steps is not None and steps[0] >= steps[1]


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


def sac_progress(runs: Sequence[Path], steps: int) -> str:
    """The grid's runs in progress (`run_state`): how many, their steps, the mean env-step rate per run of their
    last metrics rows, and the time the grid's remaining steps (of runs not started too) take at that rate with
    as many runs at a time as are in progress now ('' when none is)."""
    states = [run_state(run) for run in runs]
    going = [(n, rate) for n, finished, rate in states if n and not finished]
    if not going:
        return ""
    rate = sum(r for _, r in going) / len(going)
    low, high = min(n for n, _ in going), max(n for n, _ in going)
    remaining = sum(
        max(steps - n, 0) for run, (n, _, _) in zip(runs, states) if not outcome.is_finished(run, steps)
    )  # a diverged run has none left
    left = (
        f"~{hours(remaining / (rate * len(going)))} left at that rate, {len(going)} at a time"
        if rate > 0
        else "no rate logged yet"
    )
    return (
        f"{len(going)} of {len(runs)} runs in progress at {low:,}-{high:,} of {steps:,} steps, "
        f"{rate:.2f} env-steps/s per run (their last metrics rows): {left}"
    )


# -- running ---------------------------------------------------------------------------------------------


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


def git_line(folders: Sequence[str], what: str) -> str:
    return f"git add {shlex.join(folders)} && git commit -m {shlex.quote(f'{folders[0]}: {what}')}"


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


#: the title of the table's report
REPORT_TITLE = (
    "The CPU table (issue #30): the paper's Table I on a CPU (its settings and ours: How this table was made)"
)


def probe_beside_rows(results: Path) -> str:
    """Markdown: per task with kept probes, each frozen-encoder row's encoder probed as SAC reads it (its export,
    inputs and pool: rl.encoders.MMAEEncoder.VARIANTS) beside the same architecture at random init: R^2 of hand,
    object and goal ('' if none is kept)."""
    from pipeline.report import PROBE_TARGETS, _label, _r2
    from rl.encoders import MMAEEncoder

    lines = []
    for task in PAPER_TASKS:
        for row, (export, inputs, pool) in MMAEEncoder.VARIANTS.items():
            path = results / f"mmae/{export}/{task}/probe_{'+'.join(inputs)}.json"
            if not path.exists():
                continue
            by_kind = {r["kind"]: r["r2"] for r in json.loads(path.read_text())["rows"] if r["pool"] == pool}
            cells = [
                " / ".join(_r2(r2.get(t)) for t in PROBE_TARGETS) if (r2 := by_kind.get(kind)) else "-"
                for kind in ("pretrained", "random init")
            ]
            lines.append(
                f"| {task} | {_label(row)} | {export} encoder, {'+'.join(inputs)} in, {pool} pool | "
                + " | ".join(cells)
                + " |"
            )
    header = [
        f"| Task | Row | Encoder, inputs, pool | {' / '.join(PROBE_TARGETS)} R^2, pretrained | same, at random init |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + lines) if lines else ""


def report_preamble(cfg: TableConfig, results: Path) -> str:
    """How the table was made, as a reader needs it beside its numbers: the saliency's source, the pretraining and
    SAC budgets and settings against the paper's, and each row's probe (issue #30's labels)."""
    epochs, images = pretrain_epochs(cfg.pretrain_images, cfg.frames), pretrained_images(cfg)
    size = "the paper's model size" if cfg.pretrain_preset == "paper" else f"the {cfg.pretrain_preset} preset's model"
    hidden = "the paper's" if cfg.hidden_dim == 1024 else "the paper's: 1024"
    features = "the paper's" if cfg.mmae_features == "raw" else "the paper's: raw"
    extra = f"; more rl.sac flags: `{cfg.sac_extra}`" if cfg.sac_extra else ""
    probes = probe_beside_rows(results)
    return "\n\n".join(
        [
            "## How this table was made",
            "\n".join(
                [
                    "- **Saliency from an oracle, not people**: `annotate_app.oracle` keeps the clicks `data.oracle` "
                    "made while collecting (about 25 per frame around the visible gripper, object and goal, "
                    f"projected from the simulator's state) on {cfg.annotate_n} frames per task; PiCANet "
                    f"({cfg.saliency_preset} preset) learns from those maps, and its distilled student labels the "
                    f"task's {cfg.frames:,} pretraining frames.",
                    f"- **Pretraining on ~{images / 1e6:.1f}M images per MultiMAE** ({size}, {epochs} epochs of the "
                    f"task's frames less the {100 * PRETRAIN_VAL_FRACTION:.0f} % held out), against the paper's 40M "
                    "(its Table II: 200 epochs of 200k frames; its text says 400 epochs).",
                    f"- **SAC**: `--sac-preset paper`, hidden {cfg.hidden_dim} ({hidden}), MultiMAE features "
                    f"{cfg.mmae_features} ({features}), {run_precision(cfg)}{extra}; reach-v3 at {cfg.reach_steps:,} "
                    "steps and the other tasks at the budget their state pilot chose (at most "
                    f"{cfg.budget_cap:,}), against the paper's 1M; each run's last evaluation on "
                    f"{cfg.final_eval_episodes} episodes, those before it on {cfg.eval_episodes}, every "
                    f"{cfg.eval_every:,} steps, on fixed evaluation seeds.",
                ]
            ),
            *(
                [
                    "What each frozen-encoder row reads, by the linear probe (`pretrain.probe`, scored on episodes "
                    "held out from its fit; the full probe tables are further down):",
                    probes,
                ]
                if probes
                else []
            ),
        ]
    )


def write_table_report(cfg: TableConfig) -> Path:
    """pipeline.report of the kept results with each (task, row)'s planned seeds (`planned_seeds`) and how the table
    was made (`report_preamble`)."""
    from pipeline.report import ReportConfig, write_report

    results = results_path(cfg.results)
    if not any(results.glob("*/*/seed*/summary.json")):
        raise FileNotFoundError(
            f"no SAC run is kept in {results} yet: the table keeps each run as it finishes (`make cpu-table-status` "
            "shows where it stands)"
        )
    spec = ",".join(f"{task}/{row}={n}" for (task, row), n in planned_seeds(cfg).items())
    return write_report(
        ReportConfig(str(results), cfg.report, title=REPORT_TITLE, planned_seeds=spec), [report_preamble(cfg, results)]
    )


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
    cfg = parse_config(TableConfig, argv)
    try:
        cfg = adopt_recorded(cfg, argv)
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


if __name__ == "__main__":
    main()
