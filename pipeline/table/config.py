"""The CPU table's settings (`TableConfig`), rows and phases, the FROZEN settings a root records, where runs go."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.cli import option, parse_config, stored_values
from common.cpuinfo import AUTO_ENV, auto_precision, cpu_bf16_units
from data.tasks import PAPER_TASKS

CHECKOUT = Path(__file__).resolve().parents[2]
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
    report_seeds: str = option(
        "",
        "--report: read only these seeds of every row, comma-separated (e.g. '0,1,2'): an interim snapshot that runs "
        "kept later do not change, so RESULTS.md can quote it while the table goes on; '' = every kept seed",
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


def table_config(argv: Sequence[str]) -> TableConfig:
    """`python -m pipeline.table`'s config from its command line, with the settings its root (or its results, on a
    new root) recorded wherever the line leaves them out (`adopt_recorded`)."""
    return adopt_recorded(parse_config(TableConfig, list(argv), module="pipeline.table"), argv)


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


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The word after `name` in argv (None when absent)."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else None
