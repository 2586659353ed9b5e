"""The wall-time estimate per phase and the forecast of the open steps, from measured rates (`RATES`)."""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.cpuinfo import AUTO_ENV, auto_precision, cpu_bf16_units
from data.tasks import PAPER_TASKS
from pipeline.table.commands import Step, evaluations, grid_evaluations, pretrained_images, with_pack
from pipeline.table.config import (
    CNN_ROWS,
    EPISODE_STEPS,
    GRID_ROWS,
    PHASES,
    TABLE_ROWS,
    TableConfig,
    flag_value,
    row_kind,
    run_precision,
)
from pipeline.table.folder import Folder
from pipeline.table.runlogs import pretrain_steps, run_state
from rl import outcome

#: --pack 0 takes the smallest pack whose forecast is within this share of the soonest end
PACK_SLACK = 0.05


def best_pack(cfg: TableConfig, folder: Folder, argv: Sequence[str], counted: set = frozenset()) -> int:
    """Runs per pack for the rl.grid command `argv` (--pack 0): the smallest size up to --max-pack whose forecast
    (`grid_hours`, at the rates of the column this CPU follows, of its runs not `counted` by an earlier step of a
    forecast) ends the grid within PACK_SLACK of the soonest; 1 where no column applies."""
    column = this_cpus_column(cfg)
    if column is None:
        return 1
    hours = {
        n: grid_hours(cfg, folder, with_pack(argv, n), RATES[column], set(counted)) for n in range(1, cfg.max_pack + 1)
    }
    soonest = min(hours.values())
    return min(n for n, h in hours.items() if h <= soonest * (1 + PACK_SLACK))


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
#: img/s of reach-v3's rgb-only MultiMAE in the CPU table on a Zen 4 in fp32 (2026-12-07, its train.csv in
#: artifacts/cpu-table/), for the fp32 column's footnote on a CPU with bf16 units
ZEN4_FP32_RGB_IMG_S = 41.1
#: seconds per probe on the EPYCs: the mean of the CPU table's three reach-v3 probes on a Zen 4 in fp32 (2026-12-07,
#: 136-191 s: results/cpu-table/reach-v3/stages.json); the Xeon's columns keep their estimate (unmeasured there)
TABLE_PROBE_S = 154.7
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
# what the Zen 4 measured alone: pretraining and the step totals at hidden 1024 (frozen 49 ms, cnn 286 ms), the
# table's probes (in fp32, so at most what bf16 takes); their split into update and the rest, state, gaze's share
# over cnn, evaluation and the preparation stages are the Xeon's
RATES[BF16_ZEN4] = replace(
    RATES[BF16_XEON],
    pretrain_img_s=48.8,
    probe_s=TABLE_PROBE_S,
    sac_ms={"state": 19, "frozen": 28, "cnn": 265, "gaze": 302},
)
# what the Zen 3 measured: its preparation in the CPU table, pretraining alone, a packed step at hidden 1024 alone
# (the update from its profile), two packs at once at hidden 256 (the table's: one run each for the totals, 2-6 runs
# each for the gains), the probes the table's on the Zen 4; CNN rows and evaluation are the Xeon's
RATES[FP32_ZEN3] = replace(
    RATES[FP32_XEON],
    collect_fps=156.6,
    saliency_s=913,
    label_fps=147.1,
    pretrain_img_s=27.0,
    probe_s=TABLE_PROBE_S,
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
    "CNN rows and evaluation as on the Xeon (unmeasured). "
    f"Probes on both EPYCs {TABLE_PROBE_S:.0f} s: the mean of the CPU table's three reach-v3 probes on the Zen 4 in fp32 "
    "(2026-12-07, 136-191 s: results/cpu-table/reach-v3/stages.json). "
    "An AVX2-only CPU runs bf16 slower than fp32 (BENCHMARKS.md). Every MultiMAE rate is the rgb+saliency one's; the "
    f"rgb-only one pretrains {RGB_PRETRAIN_SPEEDUP}x faster (2026-12-06 on the Zen 3, fp32: BENCHMARKS.md)"
)


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

        def sac(tasks, rows, seeds, pilot=False) -> float:  # a pilot runs alone, the state pilot's evaluations often
            return (
                sum(
                    seeds
                    * run_seconds(r, row, budget(t), cfg.hidden_dim, *evaluations(cfg, pilot and row == "state"))
                    / (1.0 if pilot else packed(row))
                    for t in tasks
                    for row in rows
                )
                / cfg.parallel
            )

        sac_reach = (
            sum(
                cfg.reach_seeds
                * run_seconds(r, row, cfg.reach_steps, cfg.hidden_dim, *evaluations(cfg, state_pilot=False))
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


def estimate_text(cfg: TableConfig, folder: Folder, sources: bool = True) -> str:
    """The wall-time estimate per phase from scratch, one column per CPU kind, with where each rate was measured
    (`sources`; else a pointer to them: the status keeps to what changes)."""
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
    lines.append(
        f"rates: {RATE_SOURCES}"
        if sources
        else "rates: where each was measured is listed in the table's log (table.log) at every start, and in "
        "pipeline/table/forecast.py (RATE_SOURCES)"
    )
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
    every, episodes, last = grid_evaluations(argv)
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
    them still open; 0 for steps that copy files, for the floor's random-policy evaluations (a minute a seed), and
    for a keep that waits only on runs an earlier grid of the forecast runs; None for a step that waits on anything
    else (an undecided budget, a lost pilot)."""
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


def forecast_text(
    cfg: TableConfig,
    folder: Folder,
    todo: Sequence[Step],
    column: str,
    running: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The open steps that take time, each with its hours (`step_hours`) at the rates of estimate column `column`
    and when it ends from now, up to the first that waits, or a state pilot's chunk (the budget rule then decides
    what follows); the steps past FORECAST_ROWS summed in one line. `running`: {key: argv} of the step the table runs
    now, forecast as it runs (its packs), not as a start would size it now."""
    rates, end, rows, rest, running = RATES[column], 0.0, [], 0, running or {}
    then, counted, piloted = "", set(), False
    for step in todo:
        if piloted and not step.decides_budget:
            then = "then the budget rule reads the state pilots: what follows depends on it, the forecast stops there"
            break
        piloted |= step.decides_budget
        if step.key in running:
            step = replace(step, argv=list(running[step.key]))
        elif step.sized:  # sized by what it will run once the steps before it have run theirs
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


def this_cpus_column(cfg: TableConfig) -> str | None:
    """The estimate column (`rate_column`) of this CPU for the precision the table's runs take."""
    return rate_column(run_precision(cfg), cpu_bf16_units())


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
    rgb_only = RATES[FP32_ZEN3].pretrain_img_s * RGB_PRETRAIN_SPEEDUP
    other = (
        f"; measured on a Zen 3 (a Zen 4 ran the table's rgb-only MultiMAE in fp32 at {ZEN4_FP32_RGB_IMG_S} img/s, "
        f"{ZEN4_FP32_RGB_IMG_S / rgb_only:.2f}x the column's {rgb_only:.1f}: results/cpu-table/README.md)"
        if column == FP32_ZEN3 and bf16_units
        else ""
    )
    return f"this CPU: {chosen}, so the column {column!r} applies ({live}){other}"
