"""pipeline.table: the budget rule, the plan of phases for a given state of the root, status, the lock."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from common.cli import parse_config
from common.cpuinfo import AUTO_ENV
from data.env import PAPER_TASKS
from pipeline.table import forecast, runner, status
from pipeline.table.budget import Budget, choose_budget
from pipeline.table.carry import adopt_models, carried_files, carry_models, frames_digest
from pipeline.table.commands import PROBES, Step, check_pass_through, grid_argv, pretrained_images, sac_flags, with_pack
from pipeline.table.config import (
    CHECKOUT,
    EARLY_ROWS,
    LOG_FILE,
    SETTINGS_FILE,
    STATE_FILE,
    TableConfig,
    adopt_recorded,
    frozen_settings,
    pilot_dir,
    planned_seeds,
    results_path,
    run_precision,
    table_dir,
)
from pipeline.table.folder import Folder
from pipeline.table.forecast import (
    BF16_XEON,
    BF16_ZEN4,
    FP32_XEON,
    FP32_ZEN3,
    RATES,
    Rates,
    applicable_column,
    estimate,
    forecast_text,
    grid_hours,
    grid_packs,
    grid_runs,
    measured_seconds,
    rate_column,
)
from pipeline.table.plan import Planner, keep_preparation, open_steps, plan
from pipeline.table.report import REPORT_TITLE, write_table_report
from pipeline.table.runner import background_command, dry_run_text, keep_finished, keeping_finished, main
from pipeline.table.status import lock_holder, sac_progress, status_text, step_progress

ROWS = ["state", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs"]


def evals(*pairs):
    """eval.csv rows as csv.DictReader gives them (strings)."""
    return [{"step": str(step), "success_rate": str(success)} for step, success in pairs]


# -- the budget rule -----------------------------------------------------------------------------------


def test_budget_is_the_second_evaluation_in_a_row_at_threshold_rounded_up_to_the_evaluation_grid():
    rows = evals((10_000, 0.5), (20_000, 0.85), (30_000, 0.7), (40_000, 0.8), (50_000, 0.9), (60_000, 0.2))
    assert choose_budget(rows, 60_000) == Budget(50_000, 50_000, choose_budget(rows, 60_000).reason)
    late = evals((50_000, 0.9), (60_000, 0.95))  # held at 60k: the table evaluates every 25k, so 75k
    assert (choose_budget(late, 100_000).steps, choose_budget(late, 100_000).held_at) == (75_000, 60_000)
    shuffled = list(reversed(evals((10_000, 0.1), (20_000, 0.8), (30_000, 0.81))))  # order of rows does not matter
    assert choose_budget(shuffled, 30_000).steps == 50_000 and "30,000" in choose_budget(shuffled, 30_000).reason
    twice = evals((40_000, 0.5), (50_000, 0.85), (50_000, 0.85))  # one evaluation logged twice is not two in a row
    assert choose_budget(twice, 50_000).steps is None
    assert choose_budget(twice + evals((60_000, 0.9)), 60_000).held_at == 60_000


def test_budget_undecided_below_the_cap_and_the_cap_when_never_held():
    flicker = evals(*[(s, 0.9 if (s // 10_000) % 2 else 0.1) for s in range(10_000, 200_001, 10_000)])
    undecided = choose_budget(flicker, 200_000)
    assert undecided.steps is None and "200,000" in undecided.reason  # one good evaluation at a time never counts
    capped = choose_budget(flicker + evals((500_000, 0.1)), 500_000)
    assert (capped.steps, capped.held_at) == (500_000, None)
    # held only after the cap: not a budget; held at 490k: rounded up but never past the cap
    assert choose_budget(evals((510_000, 0.9), (520_000, 0.9)), 520_000).held_at is None
    assert choose_budget(evals((480_000, 0.9), (490_000, 0.9)), 490_000).steps == 500_000
    three = choose_budget(evals((10_000, 0.9), (20_000, 0.9), (30_000, 0.9)), 30_000, in_a_row=3, round_to=10_000)
    assert three.steps == 30_000
    assert choose_budget(evals((10_000, 0.7), (20_000, 0.7)), 20_000, threshold=0.6, round_to=10_000).steps == 20_000


# -- synthetic roots ------------------------------------------------------------------------------------


def config(tmp_path: Path, **kw) -> TableConfig:
    """A table on folders under tmp_path; one run per pack unless `pack` is given (--pack 0 sizes packs at this CPU's
    rates: `test_pack_0_sizes_each_grids_packs_by_the_forecast`)."""
    return TableConfig(
        root=str(tmp_path / "root"),
        results=str(tmp_path / "results"),
        carry=str(tmp_path / "carry"),
        **{"pack": 1, **kw},
    ).validate()


def folders(tmp_path: Path) -> list[str]:
    """The flags of `config`'s folders."""
    return [
        "--root",
        str(tmp_path / "root"),
        "--results",
        str(tmp_path / "results"),
        "--carry",
        str(tmp_path / "carry"),
    ]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def finish_run(run_dir: Path, steps: int, success: float = 0.5, task: str = "reach-v3") -> None:
    """A SAC run folder as rl.workspace leaves it: config, eval.csv, summary at `steps`."""
    encoder, seed = run_dir.parent.name, int(run_dir.name.removeprefix("seed"))
    write(run_dir / "config.json", json.dumps({"encoder": encoder, "seed": seed, "task": task}))
    write(
        run_dir / "eval.csv",
        "step,wall_s,success_rate\n" + "".join(f"{s},1.0,{success}\n" for s in range(25_000, steps + 1, 25_000)),
    )
    write(
        run_dir / "summary.json",
        json.dumps(
            {
                "task": task,
                "encoder": encoder,
                "seed": seed,
                "steps": steps,
                "success_rate": success,
                "eval_episodes": 50,
            }
        ),
    )


def finish_pretraining(run: Path, step: int = 1_000, total: int = 1_000) -> None:
    """The logs of a pretrain.multimae run at `step` of `total` steps (its encoder.pt is the caller's)."""
    write(run / "config.json", json.dumps({"batch_size": 512, "epochs": 22}))
    write(run / "data.json", json.dumps({"train_frames": 47_510, "total_steps": total}))
    write(run / "train.csv", f"step,wall_s,img_per_s\n{step},100,51.2\n")


def prepared(cfg: TableConfig, task: str) -> None:
    """Every preparation step of `task` done: outputs there and recorded in table.json."""
    root = Path(cfg.root)
    write(root / f"shards/{task}/manifest.json", json.dumps({"status": "complete", "shards": []}))
    write(
        root / f"shards/{task}-sal/manifest.json",
        json.dumps({"status": "complete", "shards": [], "labelled_from": task}),
    )
    for rel in (
        f"annotations/{task}/oracle/a.json",
        f"annotations/{task}.npz",
        f"runs/saliency/{task}/best.pt",
        f"runs/saliency/{task}/student.pt",
        f"runs/saliency/{task}/eval/metrics.json",
        f"runs/mmae/rgbs/{task}/encoder.pt",
        f"runs/mmae/rgb/{task}/encoder.pt",
    ):
        write(root / rel, "x")
    for name in ("rgbs", "rgb"):
        finish_pretraining(root / f"runs/mmae/{name}/{task}")
    for name, _, label in PROBES:
        write(root / f"runs/mmae/{name}/{task}/probe_{label}.json", json.dumps({"rows": [], "model": name}))
    state_path = root / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    done = state.setdefault("done", {})
    for step in Planner(Folder(cfg)).plan():
        if step.key.startswith(f"{task}: ") and step.marker and not any(w in step.key for w in ("keep", "carry")):
            done[step.key] = {"seconds": 1.0}
    write(state_path, json.dumps(state))


def modules(steps) -> list[str]:
    return [s.argv[1] if s.argv else "(in process)" for s in steps]


# -- the plan ---------------------------------------------------------------------------------------------


def test_phase_a_on_a_fresh_root_prepares_reach_then_keeps_three_then_ten_seeds_of_each_row(tmp_path):
    """Each wave (3 seeds, then 10) trains each run to 100k in one call, 10-episode evaluations then a final
    50-episode one, and keeps each row before the next wave starts: a first table of every row while the rest run.
    The two sides of the saliency claim, which need no rgb-only encoder, run their first wave before it pretrains;
    the first wave's grid then runs the rgb row and state (rl.grid skips finished runs), each grid's rows longest
    first, and each row is kept once per wave."""
    cfg = config(tmp_path, phase="A")
    steps = plan(cfg)
    assert not any(s.done for s in steps)
    early = ["rl.grid", *["pipeline.keep"] * 2]
    assert modules(steps) == [
        "data.collect",
        "annotate_app.oracle",
        "annotate_app.export",
        "saliency.train",
        "saliency.distill",
        "saliency.evaluate",
        "saliency.label",
        "pretrain.multimae",
        "(in process)",  # each encoder carried as soon as it is pretrained
        *early,
        "pretrain.multimae",
        "(in process)",
        "pretrain.probe",
        "pretrain.probe",
        "pretrain.probe",
        "(in process)",
        "rl.grid",
        *["pipeline.keep"] * 2,
        "rl.grid",
        *["pipeline.keep"] * 4,
    ]
    args = [dict(zip(s.argv[2::2], s.argv[3::2])) for s in steps]
    assert args[0]["--frames"] == "50000" and args[0]["--out"] == "shards/reach-v3"
    assert [a["--modalities"] for a in (args[7], args[12])] == ["rgb,saliency", "rgb"]
    assert args[7]["--epochs"] == "22"  # 22 x 47,500 training frames >= 1M images
    assert [s.key for s in (steps[8], steps[13])] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
    ]
    assert [(a["--encoder"], a["--inputs"]) for a in args[14:17]] == [
        ("runs/mmae/rgbs/reach-v3/encoder.pt", ""),
        ("runs/mmae/rgbs/reach-v3/encoder.pt", "rgb"),
        ("runs/mmae/rgb/reach-v3/encoder.pt", ""),
    ]
    early_rows, longest_first = ["mmae_rgbs_po", "mmae_rgbs"], "mmae_rgb,mmae_rgbs_po,mmae_rgbs,state"
    for start, rows, encoders, seeds, kept in (
        (9, early_rows, ",".join(early_rows), "0,1,2", early_rows),
        (18, ROWS, longest_first, "0,1,2", ["state", "mmae_rgb"]),
        (21, ROWS, longest_first, "0,1,2,3,4,5,6,7,8,9", ROWS),
    ):
        argv = steps[start].argv
        a = dict(zip(argv[2::2], argv[3::2]))
        assert (a["--encoders"], a["--seeds"], a["--steps"], a["--sac-preset"]) == (
            encoders,
            seeds,
            "100000",
            "paper",
        )
        extra = argv[-1].removeprefix("--extra=").split()
        flag = lambda name: extra[extra.index(name) + 1]  # noqa: E731
        assert (flag("--eval-episodes"), flag("--final-eval-episodes"), flag("--hidden-dim")) == ("10", "50", "1024")
        assert steps[start].wave == (("reach-v3",), tuple(rows), tuple(map(int, seeds.split(","))), 100_000)
        keeps = steps[start + 1 : start + 1 + len(kept)]
        assert [s.argv[2] for s in keeps] == [f"runs/sac/reach-v3/{r}" for r in kept]
        assert all(s.argv[4] == str(tmp_path / "results" / "reach-v3" / r) for s, r in zip(keeps, kept))
        assert all(s.blocked for s in keeps)  # nothing to keep before the runs end
    assert [s.key for s in steps[19:20] + steps[22:23]] == [
        f"keep runs/sac/reach-v3/state ({n} runs) -> {tmp_path / 'results'}" for n in (3, 10)
    ]
    assert not (tmp_path / "root").exists()  # planning writes nothing


def test_every_planned_command_parses_in_its_own_command(tmp_path, monkeypatch):
    """The flags each step passes are its command's flags and values (parsed as its main() would, nothing run)."""
    from annotate_app.export import ExportConfig
    from annotate_app.oracle import PRESETS as ORACLE_PRESETS
    from annotate_app.oracle import OracleConfig
    from common.cli import parse_config
    from data.collect import CollectConfig
    from pipeline.keep import KeepConfig
    from pretrain.config import PRESETS as PRETRAIN_PRESETS
    from pretrain.config import PretrainConfig
    from pretrain.probe import ProbeConfig
    from rl.grid import GridConfig, Run, run_config
    from saliency.config import DistillConfig, EvalConfig, LabelConfig, TrainConfig, presets_for

    parsers = {
        "data.collect": (CollectConfig, None),
        "annotate_app.oracle": (OracleConfig, ORACLE_PRESETS),
        "annotate_app.export": (ExportConfig, None),
        "pretrain.multimae": (PretrainConfig, PRETRAIN_PRESETS),
        "pretrain.probe": (ProbeConfig, None),
        "pipeline.keep": (KeepConfig, None),
        "rl.grid": (GridConfig, None),
        **{
            f"saliency.{name}": (cls, presets_for(cls))
            for name, cls in (
                ("train", TrainConfig),
                ("distill", DistillConfig),
                ("evaluate", EvalConfig),
                ("label", LabelConfig),
            )
        },
    }
    root = tmp_path / "root"
    for task in PAPER_TASKS[1:]:  # decided budgets, so that every phase's grids are planned
        finish_run(root / pilot_dir(task, "state", 100), 500_000, success=0.0, task=task)
    steps = [s for s in plan(config(tmp_path)) if s.argv]
    assert {s.argv[1] for s in steps} == set(parsers)
    for step in steps:
        cls, presets = parsers[step.argv[1]]
        cfg = parse_config(cls, step.argv[2:], presets=presets)
        if cls is PretrainConfig:
            assert (cfg.model.dim, cfg.model.depth, cfg.model.decoder_dim, cfg.batch_size, cfg.epochs) == (
                256,
                4,
                256,
                512,
                22,
            )
        if cls is GridConfig:  # and the SAC runs it starts take the paper's settings with the table's evaluations
            monkeypatch.chdir(root.parent)
            sac = run_config(cfg, Run(cfg.task_list[0], cfg.encoder_list[0], cfg.seed_list[0], root / "x"))
            assert (sac.hidden_dim, sac.batch_size, sac.actor_lr, sac.mmae_features, sac.eval_envs) == (
                1024,
                128,
                1e-4,
                "standardized",
                5,
            )
            assert (sac.eval_episodes, sac.last_eval_episodes) == ((10, 50) if cfg.out == "runs/sac" else (20, 20))
            assert sac.eval_every == (10_000 if cfg.out == "runs/pilot" else 25_000)
    # each grid starts a seed's runs longest first, so that its last runs are short ones and a core idles least
    encoders = {s.argv[s.argv.index("--encoders") + 1] for s in steps if s.argv[1] == "rl.grid"}
    assert {"mmae_rgbs_po,mmae_rgbs", "mmae_rgb,mmae_rgbs_po,mmae_rgbs,state", "gaze,cnn_rgb,cnn_rgbs"} <= encoders


def test_plan_skips_what_the_root_holds_and_resumes_the_rest(tmp_path):
    cfg = config(tmp_path, phase="A")
    prepared(cfg, "reach-v3")
    root = Path(cfg.root)
    for row in ROWS:
        for seed in range(10):
            finish_run(root / table_dir("reach-v3", row, seed), 100_000 if (row, seed) != ("state", 9) else 75_000)
    todo = [s for s in plan(cfg) if not s.done]
    # the preparation is skipped; the first wave's rows are kept; state seed 9 goes on to 100k; the other rows
    # of the second wave can be kept
    results = tmp_path / "results"
    assert [s.key for s in todo][:8] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
        "reach-v3: keep probes",
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in ROWS],
        "reach-v3 state,mmae_rgb,mmae_rgbs_po,mmae_rgbs seeds 0-9 to 100,000 (last evaluation 50 episodes)",
    ]
    assert not any(s.blocked for s in todo[3:7])
    keeps = {s.argv[2]: s.blocked for s in todo if s.argv and s.argv[1] == "pipeline.keep"}
    assert keeps["runs/sac/reach-v3/state"] and not keeps["runs/sac/reach-v3/mmae_rgbs"]
    # with the rgb encoder still to pretrain, the rows it does not serve are kept before it; once it is pretrained
    # (above) it is carried first and every row joins the first wave
    state = json.loads((root / STATE_FILE).read_text())
    del state["done"]["reach-v3: pretrain.multimae rgb (22 epochs, >= 1,000,000 images)"]
    (root / STATE_FILE).write_text(json.dumps(state))
    assert [s.key for s in plan(cfg) if not s.done][:4] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in EARLY_ROWS],
        "reach-v3: pretrain.multimae rgb (22 epochs, >= 1,000,000 images)",
    ]
    # an unfinished preparation step is redone even when its output file exists (its run was killed)
    del state["done"]["reach-v3: saliency.distill (student)"]
    (root / STATE_FILE).write_text(json.dumps(state))
    assert [s.key for s in plan(cfg) if not s.done][0] == "reach-v3: saliency.distill (student)"


def test_a_grid_killed_while_it_resumes_finished_runs_plans_that_grid_again(tmp_path):
    """Runs summarized short of the budget (75k: a grid to 75k, as waves once ran in two calls) were resumed by the
    grid to the budget and killed: their metrics run past their summaries. That grid is planned again; a state
    pilot killed in its second chunk is planned to that chunk's end, and the budget rule reads only the evaluations
    of finished chunks."""
    cfg = config(tmp_path, phase="A")
    prepared(cfg, "reach-v3")
    root = Path(cfg.root)
    for row in ROWS:
        for seed in range(10):
            run = root / table_dir("reach-v3", row, seed)
            finish_run(run, 75_000)
            write(run / "metrics.csv", "step,steps_per_s\n75000,4.0\n80000,4.0\n")  # resumed on, then killed
    todo = [s for s in plan(cfg) if not s.done and "reach-v3: " not in s.key]  # past the preparation's keeps
    assert todo[0].key == (
        "reach-v3 state,mmae_rgb,mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes)"
    )
    pilot = root / pilot_dir("drawer-open-v3", "state", cfg.pilot_seed)
    finish_run(pilot, 50_000, success=0.0, task="drawer-open-v3")
    write(pilot / "metrics.csv", "step,steps_per_s\n50000,4.0\n80000,4.0\n")
    write(pilot / "eval.csv", "step,success_rate\n50000,0.0\n70000,0.9\n80000,0.9\n")  # held, in the killed chunk
    folder = Folder(config(tmp_path, phase="B"))
    assert folder.budget("drawer-open-v3").steps is None  # decided when the chunk ends, not from its rows so far
    grids = [dict(zip(s.argv[2::2], s.argv[3::2])) for s in plan(config(tmp_path, phase="B")) if s.wave is None]
    assert ("drawer-open-v3", "state", "100000") in [
        (g.get("--tasks"), g.get("--encoders"), g.get("--steps")) for g in grids
    ]


def test_pilot_budgets_decide_the_pilot_chunks_and_the_steps_of_phases_b_and_c(tmp_path):
    cfg = config(tmp_path, phase="B")
    root = Path(cfg.root)
    drawer = root / pilot_dir("drawer-open-v3", "state", cfg.pilot_seed)
    finish_run(drawer, 150_000, task="drawer-open-v3")
    (drawer / "eval.csv").write_text(
        "step,success_rate\n" + "".join(f"{s},{0.9 if s >= 130_000 else 0.3}\n" for s in range(10_000, 150_001, 10_000))
    )  # holds at 140k -> 150k
    faucet = root / pilot_dir("faucet-open-v3", "state", cfg.pilot_seed)
    finish_run(faucet, 50_000, success=0.0, task="faucet-open-v3")
    door = root / pilot_dir("door-open-v3", "state", cfg.pilot_seed)
    finish_run(door, 500_000, success=0.6, task="door-open-v3")
    steps = plan(cfg)
    grids = [dict(zip(s.argv[2::2], s.argv[3::2])) for s in steps if s.argv[:2] == ["-m", "rl.grid"]]
    # faucet's pilot goes on by a chunk; the mmae_rgbs pilots run to their tasks' budgets; faucet's waits
    assert [(g["--tasks"], g["--encoders"], g["--steps"], g["--out"]) for g in grids] == [
        ("faucet-open-v3", "state", "100000", "runs/pilot"),
        ("drawer-open-v3", "mmae_rgbs", "150000", "runs/pilot"),
        ("door-open-v3", "mmae_rgbs", "500000", "runs/pilot"),
    ]
    assert all(g["--seeds"] == str(cfg.pilot_seed) for g in grids)
    assert any(s.key == "faucet-open-v3: waits for its budget" and s.blocked for s in steps)
    # a state pilot that decided its budget is kept first, before the other pilots' chunks and the preparations; one
    # still piloting after its chunk; the mmae_rgbs pilots at the end
    keeps = [(i, s) for i, s in enumerate(steps) if s.argv[1:2] == ["pipeline.keep"]]
    assert [(s.argv[2], bool(s.blocked)) for _, s in keeps] == [
        ("runs/pilot/drawer-open-v3/state", False),
        ("runs/pilot/door-open-v3/state", False),
        ("runs/pilot/faucet-open-v3/state", True),
        ("runs/pilot/drawer-open-v3/mmae_rgbs", True),
        ("runs/pilot/faucet-open-v3/mmae_rgbs", True),
        ("runs/pilot/door-open-v3/mmae_rgbs", True),
    ]
    assert [i for i, _ in keeps[:3]] == [0, 1, 3] and all(
        s.argv[4] == f"{cfg.results}-pilot/{s.argv[2].split('/')[2]}/state" for _, s in keeps[:3]
    )
    c = plan(config(tmp_path, phase="C"))
    # a recorded budget beside a state pilot whose summary.json was deleted (a re-pilot half done): its keep waits,
    # saying what to do, rather than keeping an unfinished pilot
    Folder(cfg).record_budgets()
    (drawer / "summary.json").unlink()
    (keep,) = [s for s in plan(cfg) if s.argv[2:3] == ["runs/pilot/drawer-open-v3/state"]]
    assert "gone though table.json records drawer-open-v3's budget" in keep.blocked
    with pytest.raises(ValueError, match=r"summary.json, gone though .* no step before it can end that wait"):
        runner.run(cfg)
    waves = [(s.wave[0], s.wave[2], s.wave[3]) for s in c if s.wave]
    assert waves == [
        (("drawer-open-v3",), (0, 1, 2), 150_000),
        (("door-open-v3",), (0, 1, 2), 500_000),
        (("drawer-open-v3",), (0, 1, 2, 3, 4), 150_000),
        (("door-open-v3",), (0, 1, 2, 3, 4), 500_000),
    ]
    first = next(s for s in c if s.argv[:2] == ["-m", "rl.grid"])
    assert dict(zip(first.argv[2::2], first.argv[3::2]))["--steps"] == "150000"  # in one go, its last evaluation 50
    d = plan(config(tmp_path, phase="D", pack=5))
    assert [(s.wave[0], s.wave[1]) for s in d if s.wave] == [
        (("door-open-v3",), ("cnn_rgb", "cnn_rgbs", "gaze")),
        (("door-open-v3",), ("mmae_rgbs_grid2",)),
    ]
    # CNN rows keep frames in replay (6-8 GB per run at 500k): one per pack (--cnn-pack), whatever --pack says
    packs = {s.wave[1]: dict(zip(s.argv[2::2], s.argv[3::2]))["--pack"] for s in d if s.wave}
    assert packs == {("cnn_rgb", "cnn_rgbs", "gaze"): "1", ("mmae_rgbs_grid2",): "5"}


def test_a_recorded_budget_stays_and_changed_settings_are_refused(tmp_path):
    cfg = config(tmp_path, phase="B")
    drawer = Path(cfg.root) / pilot_dir("drawer-open-v3", "state", cfg.pilot_seed)
    finish_run(drawer, 50_000, success=0.9, task="drawer-open-v3")  # holds at 25k and 50k -> 50k
    folder = Folder(cfg)
    folder.record_budgets()
    (drawer / "eval.csv").write_text("step,success_rate\n")  # whatever happens to the pilot later
    assert Folder(cfg).budget("drawer-open-v3").steps == 50_000
    folder.check_settings()
    folder.save()
    with pytest.raises(ValueError, match=r"--hidden-dim 256 \(started with 1024\)"):
        Folder(config(tmp_path, hidden_dim=256)).check_settings()


# -- running, status, the lock ------------------------------------------------------------------------------


def keep_in_process(argv, cwd, **kw):
    """subprocess.run for `python -m pipeline.keep ...` in this process (a new interpreter takes ~15 s to import it)."""
    from pipeline.keep import main as keep_main

    assert argv[:3] == [sys.executable, "-m", "pipeline.keep"], argv
    with contextlib.chdir(cwd):
        keep_main(argv[3:])
    return subprocess.CompletedProcess(argv, 0)


def test_run_keeps_finished_rows_and_probes_then_stops_with_the_git_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "run", keep_in_process)
    cfg = config(tmp_path, phase="A", reach_seeds=2)
    prepared(cfg, "reach-v3")
    for row in ROWS:
        for seed in range(2):
            finish_run(Path(cfg.root) / table_dir("reach-v3", row, seed), 100_000, success=0.25 * (seed + 1))
    ran = runner.run(cfg)
    assert ran == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
        "reach-v3: keep probes",
        *[f"keep runs/sac/reach-v3/{r} (2 runs) -> {cfg.results}" for r in ROWS],
    ]
    results = Path(cfg.results)
    assert json.loads((results / "reach-v3/mmae_rgbs/seed1/summary.json").read_text())["success_rate"] == 0.5
    assert (results / "mmae/rgbs/reach-v3/probe_rgb+saliency.json").exists()
    assert not list(results.glob("**/checkpoint*"))
    out = capsys.readouterr().out
    assert f"git add {cfg.results} && git commit -m" in out and "every step of phase(s) A is done" in out
    assert set(json.loads((Path(cfg.root) / STATE_FILE).read_text())["done"]) >= set(ran)
    assert runner.run(cfg) == []  # a rerun finds everything done
    shutil.rmtree(results / "reach-v3/state")  # kept files lost before they were committed: kept again
    (results / "mmae/rgb/reach-v3/probe_rgb.json").unlink()
    assert runner.run(cfg) == [
        "reach-v3: keep probes",
        f"keep runs/sac/reach-v3/state (2 runs) -> {cfg.results}",
    ]
    assert (results / "reach-v3/state/seed1/summary.json").exists() and (
        results / "mmae/rgb/reach-v3/probe_rgb.json"
    ).exists()
    # a run the root trained again (a diverged one whose summary.json was deleted) is not taken for kept: its row's
    # keep runs again, and pipeline.keep refuses to overwrite the kept outcome, saying what to do
    finish_run(Path(cfg.root) / table_dir("reach-v3", "state", 1), 100_000, success=0.9)
    assert [s.key for s in plan(cfg) if not s.done] == [f"keep runs/sac/reach-v3/state (2 runs) -> {cfg.results}"]
    with pytest.raises(SystemExit):
        runner.run(cfg)
    assert "delete its kept copy" in capsys.readouterr().err


def test_the_tables_report_reads_each_rows_planned_seeds_from_its_waves(tmp_path):
    """`make cpu-table-report`: the kept runs reported with each (task, row)'s seeds planned by the selected phases'
    waves, so a row short of them reads 'n of N' under the interim warning; nothing kept yet is said plainly."""
    cfg = config(tmp_path, phase="A", reach_seeds=3, first_seeds=2, report=str(tmp_path / "report"))
    with pytest.raises(FileNotFoundError, match="no SAC run is kept in .* yet"):
        write_table_report(cfg)
    assert planned_seeds(cfg) == {("reach-v3", row): 3 for row in ROWS}
    everything = planned_seeds(replace(cfg, phase="all"))  # no budget decided: the seeds are planned all the same
    assert everything[("door-open-v3", "mmae_rgbs")] == cfg.max_seeds and everything[("faucet-open-v3", "gaze")] == 3
    assert ("drawer-open-v3", "gaze") not in everything  # phase D's tasks only
    with pytest.raises(ValueError, match="exclude each other"):
        config(tmp_path, status=True, report=str(tmp_path / "report"))
    for row in ROWS:
        for seed in range(3 if row == "state" else 2):
            finish_run(Path(cfg.results) / "reach-v3" / row / f"seed{seed}", 100_000, success=0.25 * (seed + 1))
    probe = {
        "encoder": "runs/mmae/rgbs/reach-v3/encoder.pt",
        "inputs": ["rgb", "saliency"],
        "rows": [
            {"kind": kind, "pool": pool, "dim": 256, "r2": {"hand": hand, "object": 0.5, "goal": 0.4}}
            for kind, pool, hand in (
                ("pretrained", "mean", 0.95),
                ("pretrained", "grid2", 0.97),
                ("random init", "mean", 0.8),
            )
        ],
    }
    write(Path(cfg.results) / "mmae/rgbs/reach-v3/probe_rgb+saliency.json", json.dumps(probe))
    text = write_table_report(cfg).read_text()
    assert text.startswith(f"# {REPORT_TITLE}\n") and "**Interim:**" in text and "(2 of 3:" in text
    made = text.split("## How this table was made")[1].split("## Success rate")[0]  # before Table I
    assert f"on {cfg.annotate_n} frames per task" in made and "not people" in made
    assert "**Pretraining on ~1.0M images per MultiMAE**" in made and "against the paper's 40M" in made
    assert "reach-v3 at 100,000 steps" in made and "last evaluation on 50 episodes" in made
    # each frozen row beside its encoder's probe as SAC reads it (mean pool), the other rows' probes not kept yet
    assert (
        "| reach-v3 | MMAE RGB+Saliency (ViSaRL) | rgbs encoder, rgb+saliency in, mean pool | 0.95 / 0.50 / 0.40 "
        "| 0.80 / 0.50 / 0.40 |" in made
    )
    assert (
        "| MMAE RGB+Saliency, 2x2 grid pool | rgbs encoder, rgb+saliency in, grid2 pool | 0.97 / 0.50 / 0.40 | - |"
        in made
    )
    assert "| MMAE RGB |" not in made  # its probe is not kept yet
    assert "hidden 1024 (the paper's), MultiMAE features standardized (the paper's: raw)" in made
    assert "| State (sanity check) | 0.50 [" in text and "(n=3) / n/a |" in text
    assert "(n=2 of 3) / 0.49 ± 0.03 |" in text  # MMAE RGB beside the paper's reach-v3


def test_a_grid_keeps_each_run_as_it_finishes_while_the_others_go_on(tmp_path, capsys, monkeypatch):
    """A finished run of a running grid is kept at once (a machine lost later loses only the unfinished runs, whose
    checkpoints are never committed); an unfinished one is not; the rows' keep steps then find them kept."""
    monkeypatch.setattr(runner, "KEEP_FINISHED_EVERY_S", 0.02)
    cfg = config(tmp_path, phase="A", reach_seeds=2, first_seeds=2)
    prepared(cfg, "reach-v3")
    root, results = Path(cfg.root), Path(cfg.results)
    first, second = (root / table_dir("reach-v3", "state", seed) for seed in (0, 1))
    seen = {}

    def wait_for(path: Path) -> bool:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return path.exists()

    def grid(argv, cwd, **kw):
        if argv[2] != "rl.grid":
            return keep_in_process(argv, cwd, **kw)
        rows = argv[argv.index("--encoders") + 1].split(",")
        if not seen:  # the first wave's grid
            finish_run(first, 100_000, success=0.75)
            write(second / "config.json", json.dumps({"encoder": "state", "seed": 1, "task": "reach-v3"}))
            write(second / "eval.csv", "step,wall_s,success_rate\n25000,1.0,0.5\n")  # on its way
            seen["first kept meanwhile"] = wait_for(results / "reach-v3/state/seed0/summary.json")
            time.sleep(0.1)
            seen["second kept meanwhile"] = (results / "reach-v3/state/seed1").exists()
        for row in rows:
            for seed in range(2):
                finish_run(root / table_dir("reach-v3", row, seed), 100_000, success=0.75)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", grid)
    ran = runner.run(cfg)
    assert seen == {"first kept meanwhile": True, "second kept meanwhile": False}
    assert ran[4:] == [f"keep runs/sac/reach-v3/{r} (2 runs) -> {cfg.results}" for r in ROWS]
    for row in ROWS:
        for seed in range(2):
            kept = results / f"reach-v3/{row}/seed{seed}"
            assert sorted(p.name for p in kept.iterdir()) == ["config.json", "eval.csv", "summary.json"]
            run = root / table_dir("reach-v3", row, seed)
            assert all((run / p.name).read_bytes() == p.read_bytes() for p in kept.iterdir())
    out = capsys.readouterr().out
    assert f"kept finished runs in {cfg.results}: reach-v3/state/seed0\n  to commit: git add {cfg.results} &&" in out
    assert json.loads((results / SETTINGS_FILE).read_text()) == frozen_settings(cfg)
    # a kept copy the run contradicts is said once and left as it is; the runs after it are kept all the same, and
    # the grid goes on (its row's keep step, after it, stops the table)
    shutil.rmtree(results / "reach-v3/mmae_rgb/seed1")
    shutil.rmtree(results / "reach-v3/mmae_rgbs")
    write(results / "reach-v3/mmae_rgb/seed1/eval.csv", "step,wall_s,success_rate\n25000,1.0,0.1\n")
    step = next(s for s in plan(cfg) if s.wave)
    with keeping_finished(Folder(cfg), step):
        time.sleep(0.2)  # several passes
    out = capsys.readouterr().out
    assert out.count("could not keep a finished run of") == 1 and "runs/sac/reach-v3/mmae_rgb/seed1: " in out
    assert not (results / "reach-v3/mmae_rgb/seed1/summary.json").exists()
    assert all((results / f"reach-v3/mmae_rgbs/seed{seed}/summary.json").exists() for seed in range(2))
    assert "kept finished runs in" in out and "reach-v3/mmae_rgbs/seed0, reach-v3/mmae_rgbs/seed1" in out
    # a run the root trained again (its kept outcome is another run's) is refused at once, not taken as kept
    finish_run(root / table_dir("reach-v3", "mmae_rgbs", 0), 100_000, success=0.25)
    with keeping_finished(Folder(cfg), step):
        time.sleep(0.2)
    out = capsys.readouterr().out
    assert out.count("could not keep a finished run of") == 2 and "runs/sac/reach-v3/mmae_rgbs/seed0: " in out
    assert (results / "reach-v3/mmae_rgbs/seed0/summary.json").read_bytes() != (
        root / table_dir("reach-v3", "mmae_rgbs", 0) / "summary.json"
    ).read_bytes()


def test_a_kept_run_at_its_budget_gives_up_its_replay_and_a_diverged_or_running_one_keeps_it(tmp_path):
    """Budgets never grow, so nothing resumes a kept run that reached its own: its replay folders go (phases of
    hundreds of runs would fill the disk), its checkpoint stays; a diverged run keeps both for a retraining."""
    cfg = config(tmp_path, phase="A", reach_seeds=3, first_seeds=3)
    runs = [Path(cfg.root) / table_dir("reach-v3", "state", seed) for seed in range(3)]
    finish_run(runs[0], 100_000)
    finish_run(runs[1], 100_000)
    diverged = {"step": 50_000, "why": "non-finite loss", "checkpoint": 25_000, "budget": 100_000}
    summary = json.loads((runs[1] / "summary.json").read_text())
    write(runs[1] / "summary.json", json.dumps({**summary, "steps": 50_000, "success_rate": 0.0, "diverged": diverged}))
    write(runs[2] / "config.json", json.dumps({"encoder": "state", "seed": 2, "task": "reach-v3"}))  # still going
    for run in runs:
        write(run / "replay-000025000/action.npy", "replay")
        write(run / "checkpoint-000025000.pt", "checkpoint")
    wave, folder = (("reach-v3",), ("state",), (0, 1, 2), 100_000), Folder(cfg)
    folder.check_settings()  # as a table run does first
    for _ in range(2):  # kept now, then kept already: either way the replay goes
        keep_finished(folder, wave)
        assert [(run / "replay-000025000").exists() for run in runs] == [False, True, True]
        assert all((run / "checkpoint-000025000.pt").exists() for run in runs)
    assert (Path(cfg.results) / "reach-v3/state/seed0/summary.json").exists()


def test_a_new_root_goes_on_from_the_committed_results_and_carried_models(tmp_path, capsys, monkeypatch):
    """A new machine has none of the old root: its root takes the settings the results were made under
    (results' settings.json), copies the kept runs in (rl.grid skips them) and the task's carried student and
    encoders (no frames, labels or pretraining again), and runs only what is left; a flag that contradicts the
    results' settings is refused, and a root holding other models of its own is refused, not overwritten."""
    monkeypatch.setattr(subprocess, "run", keep_in_process)
    monkeypatch.setenv(AUTO_ENV, "fp32")
    old = config(tmp_path, phase="A", hidden_dim=256, reach_seeds=2)
    prepared(old, "reach-v3")
    (Path(old.root) / "runs/mmae/rgbs/reach-v3/encoder.pt").write_bytes(b"rgbs weights")
    for row in ROWS:
        for seed in range(2):
            finish_run(Path(old.root) / table_dir("reach-v3", row, seed), 100_000, success=0.5)
    runner.run(old)
    carry, results = Path(old.carry), Path(old.results)
    assert f"git add {results} {carry} && git commit" in capsys.readouterr().out
    assert sorted(p.relative_to(carry).as_posix() for p in carry.rglob("*") if p.is_file()) == sorted(
        carried_files("reach-v3")
    )
    assert json.loads((results / SETTINGS_FILE).read_text()) == frozen_settings(old)
    recorded = json.loads((results / "reach-v3/models.json").read_text())["sha256"]
    assert recorded["mmae/rgbs/reach-v3/encoder.pt"] == hashlib.sha256(b"rgbs weights").hexdigest()
    assert sorted(recorded) == sorted(carried_files("reach-v3"))

    monkeypatch.setenv(AUTO_ENV, "bf16")  # the new machine has bf16 units: the results' fp32 is kept
    base = ["--root", str(tmp_path / "new"), "--results", str(results), "--carry", str(carry), "--phase", "A"]
    new = adopt_recorded(parse_config(TableConfig, [*base, "--reach-seeds", "2"]), base)
    assert (new.hidden_dim, new.precision) == (256, "fp32")
    assert runner.run(new) == ["restore kept runs", "reach-v3: carried models"]  # nothing else runs again
    root = Path(new.root)
    assert (root / "runs/mmae/rgbs/reach-v3/encoder.pt").read_bytes() == b"rgbs weights"
    assert (root / table_dir("reach-v3", "state", 1) / "summary.json").read_bytes() == (
        results / "reach-v3/state/seed1/summary.json"
    ).read_bytes()
    assert runner.run(new) == []
    (root / "runs/saliency/reach-v3/student.pt").unlink()  # an adoption killed midway is finished, nothing prepared
    assert runner.run(new) == ["reach-v3: carried models"]
    more = [s for s in plan(replace(new, reach_seeds=3)) if not s.done]  # a third seed: only SAC is left
    assert modules(more) == ["rl.grid"] + ["pipeline.keep"] * 4
    grid = dict(zip(more[0].argv[2::2], more[0].argv[3::2]))
    assert grid["--seeds"] == "0,1,2" and grid["--precision"] == "fp32" and "--hidden-dim 256" in more[0].argv[-1]
    with pytest.raises(SystemExit) as stop:
        main([*base, "--root", str(tmp_path / "fresh"), "--hidden-dim", "1024", "--dry-run"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--hidden-dim 1024 (they have 256)" in err and "leave those flags out" in err
    settings = json.loads((results / SETTINGS_FILE).read_text())
    (results / SETTINGS_FILE).write_text(json.dumps({**settings, "hidden_dim": 1024}))  # edited by mistake
    with pytest.raises(SystemExit) as stop:  # the started root's own record disagrees: no flag to leave out
        main([*base, "--dry-run"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--hidden-dim 256 (they have 1024)" in err and "restore " in err
    (results / SETTINGS_FILE).write_text(json.dumps(settings))

    # a restore killed after a run's config.json: restored again, never taken for a run the root started
    half = Path(new.root) / table_dir("reach-v3", "mmae_rgb", 0)
    shutil.rmtree(half)
    write(half / "config.json", (results / "reach-v3/mmae_rgb/seed0/config.json").read_text())
    assert runner.run(new) == ["restore kept runs"] and (half / "summary.json").exists()

    # a carry folder that does not go with the results folder is refused before anything runs
    elsewhere = replace(new, root=str(tmp_path / "r2"), results=str(tmp_path / "results-2"), carry="").validate()
    assert elsewhere.carry == f"{tmp_path / 'results-2'}-carry"  # beside results outside the checkout's results/
    assert replace(new, results="results/cpu-table-2", carry="").validate().carry == "artifacts/cpu-table-2"
    with pytest.raises(ValueError, match="holds models of reach-v3 .* another experiment's"):
        Folder(replace(elsewhere, carry=str(carry))).check_start()
    student = carry / "saliency/reach-v3/student.pt"
    student.write_bytes(b"another student")  # not the recorded model: refused before a root would adopt it
    with pytest.raises(ValueError, match=r"saliency/reach-v3/student.pt\) other than the ones .* records"):
        Folder(replace(new, root=str(tmp_path / "r4"))).check_start()
    with pytest.raises(ValueError, match="is not the model .* records"):
        adopt_models(Folder(replace(new, root=str(tmp_path / "r4"))), "reach-v3", ["rgbs", "rgb"])
    student.write_text("x")  # as prepared() wrote it
    record = results / "reach-v3/models.json"
    kept_record = record.read_text()
    record.unlink()  # the source root killed after carrying its models, before recording them: not refused
    Folder(replace(old, precision="fp32")).check_start()
    record.write_text("{")
    with pytest.raises(ValueError, match=r"models.json is not a record of carried models.*git checkout"):
        plan(replace(new, root=str(tmp_path / "r5")))
    record.write_text(kept_record)
    (carry / "mmae/rgb/reach-v3/encoder.pt").rename(tmp_path / "encoder.pt")  # kept, but never committed
    with pytest.raises(ValueError, match=r"neither in .* nor in this root: mmae/rgb/reach-v3/encoder.pt"):
        Folder(replace(new, root=str(tmp_path / "r3"))).check_start()
    (tmp_path / "encoder.pt").rename(carry / "mmae/rgb/reach-v3/encoder.pt")

    other = replace(new, root=str(tmp_path / "other"))
    write(Path(other.root) / "runs/mmae/rgb/reach-v3/encoder.pt", "its own")
    with pytest.raises(ValueError, match="runs/mmae/rgb/reach-v3/encoder.pt is not the model .* records"):
        runner.run(other)
    assert (Path(other.root) / "runs/mmae/rgb/reach-v3/encoder.pt").read_text() == "its own"


def fail_commands(argv, cwd, **kw):
    """subprocess.run that fails every command: a run stops at its first step that is not in process."""
    return subprocess.CompletedProcess(argv, 1)


def test_each_encoder_is_carried_once_pretrained_and_a_new_root_makes_only_what_is_not(tmp_path, monkeypatch):
    """The rgb+saliency encoder and the student that labelled its frames are carried as soon as that pretraining
    ends, with the student's evaluation and the stage times so far: a machine lost during the rgb pretraining costs
    only that. A new root adopts them, collects the frames again, labels them with the carried student (no
    annotation, PiCANet or distillation), pretrains the rgb encoder and carries it; the record says whether the two
    encoders learnt from the same frames."""
    monkeypatch.setattr(subprocess, "run", fail_commands)
    old = config(tmp_path, phase="A")
    prepared(old, "reach-v3")
    root = Path(old.root)
    frames = {"status": "complete", "shards": [{"file": "shard-00000.tar", "frames": 1000, "sha256": "a" * 64}]}
    write(root / "shards/reach-v3/manifest.json", json.dumps(frames))
    (root / "runs/mmae/rgbs/reach-v3/encoder.pt").write_bytes(b"rgbs weights")
    write(root / "runs/saliency/reach-v3/eval/fig7.png", "png")
    finish_pretraining(root / "runs/mmae/rgb/reach-v3", step=500)  # the old machine is lost before it ends
    for _, _, label in PROBES:
        for path in root.glob(f"runs/mmae/*/reach-v3/probe_{label}.json"):
            path.unlink()
    state = json.loads((root / STATE_FILE).read_text())
    del state["done"]["reach-v3: pretrain.multimae rgb (22 epochs, >= 1,000,000 images)"]
    (root / STATE_FILE).write_text(json.dumps(state))
    # the first SAC rows, which need only the rgb+saliency encoder, come after its carry and fail here
    with pytest.raises(RuntimeError, match="mmae_rgbs_po,mmae_rgbs seeds 0-2 .* failed"):
        runner.run(old)
    carry, results = Path(old.carry), Path(old.results)
    assert sorted(p.relative_to(carry).as_posix() for p in carry.rglob("*") if p.is_file()) == sorted(
        carried_files("reach-v3", ["rgbs"])
    )
    record = json.loads((results / "reach-v3/models.json").read_text())
    assert sorted(record["sha256"]) == sorted(carried_files("reach-v3", ["rgbs"]))
    assert list(record["frames"]) == ["rgbs"]
    assert (results / "saliency/reach-v3/eval/fig7.png").read_text() == "png"
    assert "saliency.train (PiCANet)" in json.loads((results / "reach-v3/stages.json").read_text())["wall_seconds"]

    new = replace(old, root=str(tmp_path / "new"))
    todo = [s.key for s in plan(new) if not s.done][:12]
    early = "reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes)"
    assert todo == [
        "reach-v3: carried models",
        "reach-v3: collect 50,000 frames",
        "reach-v3: saliency.label 50,000 frames",
        early,  # the rows the carried encoder serves, before the rgb encoder pretrains
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in EARLY_ROWS],
        "reach-v3: pretrain.multimae rgb (22 epochs, >= 1,000,000 images)",
        "reach-v3: carry the rgb encoder",
        "reach-v3: pretrain.probe rgbs (rgb+saliency in)",
        "reach-v3: pretrain.probe rgbs (rgb in)",
        "reach-v3: pretrain.probe rgb (rgb in)",
        "reach-v3: keep probes",
    ]
    label = next(s for s in plan(new) if "saliency.label" in s.key).argv
    assert label[label.index("--model") + 1] == "runs/saliency/reach-v3/student.pt"
    with pytest.raises(RuntimeError, match="collect 50,000 frames failed"):
        runner.run(new)
    mine = Path(new.root)
    assert (mine / "runs/mmae/rgbs/reach-v3/encoder.pt").read_bytes() == b"rgbs weights"
    assert (mine / "runs/saliency/reach-v3/student.pt").read_text() == "x"

    # the new machine collected other bytes, labelled them and pretrained the rgb encoder on them
    other = {**frames, "shards": [{**frames["shards"][0], "sha256": "b" * 64}]}
    write(mine / "shards/reach-v3/manifest.json", json.dumps(other))
    write(mine / "shards/reach-v3-sal/manifest.json", json.dumps({**other, "labelled_from": "reach-v3"}))
    write(mine / "runs/mmae/rgb/reach-v3/encoder.pt", "rgb weights")
    finish_pretraining(mine / "runs/mmae/rgb/reach-v3")
    state = json.loads((mine / STATE_FILE).read_text())
    state["done"]["reach-v3: pretrain.multimae rgb (22 epochs, >= 1,000,000 images)"] = {"seconds": 2.0}
    state["spent"] = {"reach-v3: pretrain.probe rgbs (rgb+saliency in)": 3.0}  # begun, not finished
    (mine / STATE_FILE).write_text(json.dumps(state))
    for row in EARLY_ROWS:  # the early rows ended on this machine too
        for seed in range(3):
            finish_run(mine / table_dir("reach-v3", row, seed), 100_000)
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda argv, cwd, **kw: (keep_in_process if "pipeline.keep" in argv else fail_commands)(argv, cwd),
    )
    with pytest.raises(RuntimeError, match=r"pretrain.probe rgbs \(rgb\+saliency in\) failed"):
        runner.run(new)
    record = json.loads((results / "reach-v3/models.json").read_text())
    assert sorted(record["sha256"]) == sorted(carried_files("reach-v3"))
    assert record["sha256"]["mmae/rgbs/reach-v3/encoder.pt"] == hashlib.sha256(b"rgbs weights").hexdigest()
    assert record["frames"]["rgb"] != record["frames"]["rgbs"]  # said, not hidden: other frames than the rgbs one's
    stages = json.loads((results / "reach-v3/stages.json").read_text())["wall_seconds"]
    rgb = "pretrain.multimae rgb (22 epochs, >= 1,000,000 images)"
    assert stages["saliency.train (PiCANet)"] == 1.0 and stages[rgb] == 2.0
    assert "pretrain.probe rgbs (rgb+saliency in)" not in stages  # a step not finished keeps no time
    for name, _, label in PROBES:
        write(mine / f"runs/mmae/{name}/reach-v3/probe_{label}.json", json.dumps({"rows": [], "model": name}))
    with pytest.raises(RuntimeError, match="seeds 0-2 to 100,000 .* failed"):
        runner.run(new)
    done = json.loads((mine / STATE_FILE).read_text())["done"]
    assert {"reach-v3: carry the rgb encoder", "reach-v3: keep probes"} <= set(done)
    assert Folder(new).state["adopted"] == {"reach-v3": ["rgbs"]}  # the rgb encoder is this root's own
    assert next(s for s in plan(new) if s.key == f"reach-v3: {rgb}").done  # still its own step, done
    assert (results / "mmae/rgb/reach-v3/probe_rgb.json").exists()
    stages = json.loads((results / "reach-v3/stages.json").read_text())
    assert stages["wall_seconds"]["pretrain.probe rgbs (rgb+saliency in)"] == 3.0
    order = [stages["order"].index(k) for k in (rgb, "carry the rgb encoder", "pretrain.probe rgbs (rgb+saliency in)")]
    assert order == sorted(order)  # the plan's order: the new root's steps after the old one's
    # a third machine finds both encoders and the probes kept: nothing is prepared again
    third = replace(old, root=str(tmp_path / "third"))
    assert [s.key for s in plan(third) if s.key.startswith("reach-v3: ")] == ["reach-v3: carried models"]
    # both encoders carried but the probes not kept: the frames again, labelled by the carried student, then probes
    shutil.copytree(results, tmp_path / "results-4")
    shutil.rmtree(tmp_path / "results-4/mmae")
    fourth = replace(old, root=str(tmp_path / "fourth"), results=str(tmp_path / "results-4"))
    assert [s.key.removeprefix("reach-v3: ") for s in plan(fourth) if s.key.startswith("reach-v3: ")] == [
        "carried models",
        "collect 50,000 frames",
        "saliency.label 50,000 frames",
        "pretrain.probe rgbs (rgb+saliency in)",
        "pretrain.probe rgbs (rgb in)",
        "pretrain.probe rgb (rgb in)",
        "keep probes",
    ]

    # a root whose own model is not the recorded one is refused before anything is copied into the carry folder
    (carry / "mmae/rgb/reach-v3/encoder.pt").unlink()
    write(mine / "runs/mmae/rgb/reach-v3/encoder.pt", "other rgb weights")
    with pytest.raises(ValueError, match="runs/mmae/rgb/reach-v3/encoder.pt is not the model .* records"):
        Folder(new).check_start()
    with pytest.raises(ValueError, match="records other models than this root's mmae/rgb/reach-v3/encoder.pt"):
        carry_models(Folder(new), "reach-v3", "rgb")
    assert not (carry / "mmae/rgb/reach-v3/encoder.pt").exists()


def test_the_frames_digest_hashes_the_shards_an_older_manifest_gives_no_checksum_for(tmp_path):
    cfg = config(tmp_path)
    write(Path(cfg.root) / "shards/reach-v3/shard-00000.tar", "frames")
    entry = {"file": "shard-00000.tar", "frames": 1000}
    digests = []
    for shard in (entry, {**entry, "sha256": hashlib.sha256(b"frames").hexdigest()}):
        write(Path(cfg.root) / "shards/reach-v3/manifest.json", json.dumps({"status": "complete", "shards": [shard]}))
        digests.append(frames_digest(Folder(cfg), "reach-v3"))
    assert digests[0] == digests[1]


def test_every_step_runs_at_the_precision_the_root_records(tmp_path, monkeypatch):
    """`--precision auto` is resolved once by the orchestrator (this CPU's bf16 units, or VISARL_AUTO_PRECISION), and
    every command gets that value: none resolves auto on its own device (a GPU would run bf16 under a root that
    records fp32)."""
    monkeypatch.setenv(AUTO_ENV, "fp32")
    cfg = config(tmp_path, phase="A")
    prepared(cfg, "reach-v3")
    words = [s.argv for s in plan(config(tmp_path, phase="A")) if "--precision" in s.argv]
    assert words and {argv[argv.index("--precision") + 1] for argv in words} == {"fp32"}
    assert frozen_settings(cfg)["precision"] == "fp32"
    monkeypatch.setenv(AUTO_ENV, "bf16")
    assert run_precision(cfg) == "bf16" and run_precision(config(tmp_path, precision="fp32")) == "fp32"


def test_a_steps_wall_time_adds_up_over_the_invocations_that_ran_it(tmp_path, monkeypatch):
    """A step resumed over several sessions records its whole wall time: table.json's "spent" seconds grow while it
    runs (saved every SPENT_EVERY_S, so a session's end loses at most that), add up across invocations, and are
    what `done` records; the task's stage times are kept beside its rows with the probes."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    folder = Folder(config(tmp_path))
    folder.root.mkdir(parents=True)
    path = folder.root / STATE_FILE
    on_disk = lambda: json.loads(path.read_text()).get("spent", {}) if path.exists() else {}  # noqa: E731
    key = "reach-v3: pretrain.multimae rgbs"
    beats = threading.Event()
    with folder.timed(key, every=0.01):
        clock[0] += 90.0
        for _ in range(500):  # the heartbeat saves without the step ending
            if on_disk().get(key) == 90.0:
                beats.set()
                break
            time.sleep(0.01)
        clock[0] += 30.0
    assert beats.is_set() and on_disk()[key] == 120.0
    with pytest.raises(RuntimeError):  # a later session's invocation, killed or failing: its time counts too
        with folder.timed(key, every=60):
            clock[0] += 45.0
            raise RuntimeError("session ended")
    folder.mark(key)
    assert folder.state["done"][key]["seconds"] == 165.0
    evaluation = folder.root / "runs/saliency/reach-v3/eval"
    evaluation.mkdir(parents=True)
    (evaluation / "metrics.json").write_text('{"kind": "student", "metrics": {"max_f": 0.85}}')
    (evaluation / "fig7.png").write_bytes(b"png")
    kept = keep_preparation(folder, "reach-v3")
    stages = json.loads((Path(folder.results) / "reach-v3" / "stages.json").read_text())
    assert stages["wall_seconds"] == {"pretrain.multimae rgbs": 165.0} and stages["task"] == "reach-v3"
    assert stages["order"] == ["pretrain.multimae rgbs"]  # a key the plan lacks comes after the plan's steps
    # the student's evaluation is kept where the report finds its Fig. 7 (saliency/**/fig7*.png below the results)
    saved = Path(folder.results) / "saliency/reach-v3/eval"
    assert json.loads((saved / "metrics.json").read_text())["metrics"]["max_f"] == 0.85
    assert (saved / "fig7.png").read_bytes() == b"png" and {saved / "metrics.json", saved / "fig7.png"} <= set(kept)


def test_a_failed_step_stops_the_run_and_is_not_recorded(tmp_path, monkeypatch):
    cfg = config(tmp_path, phase="A")
    calls = []
    monkeypatch.setattr(
        subprocess, "run", lambda argv, **kw: calls.append(argv) or subprocess.CompletedProcess(argv, 3)
    )
    with pytest.raises(RuntimeError, match=r"reach-v3: collect 50,000 frames failed \(exit 3\)"):
        runner.run(cfg)
    assert calls[0][1:4] == ["-m", "data.collect", "--task"]
    assert json.loads((Path(cfg.root) / STATE_FILE).read_text())["done"] == {}


def test_status_shows_stage_budget_seeds_and_steps(tmp_path):
    cfg = config(tmp_path)
    prepared(cfg, "reach-v3")
    root = Path(cfg.root)
    for seed in range(3):
        finish_run(root / table_dir("reach-v3", "state", seed), 100_000, success=0.8)
    write(root / table_dir("reach-v3", "state", 3) / "metrics.csv", "step,wall_s\n1000,1\n42000,9\n")  # running
    finish_run(root / pilot_dir("drawer-open-v3", "state", cfg.pilot_seed), 50_000, success=0.1, task="drawer-open-v3")
    text = status_text(cfg)
    assert "not running" in text
    assert (
        "| reach-v3 | pretrain.multimae rgbs (22 epochs, >= 1,000,000 images) | carry the rgbs encoder and saliency "
        "student | fixed: 100,000 steps (it learns there) |" in text
    )
    assert (
        "| drawer-open-v3 | not started | collect 50,000 frames | pilot state at 50,000 steps; pilot at 50,000 steps: state has not held"
        in text
    )
    assert "| faucet-open-v3 | not started | collect 50,000 frames | pilot not started |" in text
    assert "| reach-v3 | state | 3/10 | 42,000-100,000 of 100,000 | 0.80 (3 seeds) |" in text
    assert "| reach-v3 | mmae_rgbs | 0/3 (then 10) | 0 of 100,000 | - |" in text  # its first wave, kept first
    assert "next step of phase(s) A,B,C,D,E: reach-v3: carry the rgbs encoder and saliency student" in text
    assert "| A |" in text and "bf16 (Xeon, AMX)" in text and "bf16 (Zen 4, AVX512-BF16)" in text


def test_status_warns_of_kept_files_the_checkout_has_not_committed(tmp_path, monkeypatch):
    """A carry step or keep ran (the orchestrator commits nothing): status names the uncommitted files and the git
    line, until they are committed; folders outside the checkout are not asked about."""
    checkout = tmp_path / "checkout"
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    monkeypatch.setattr(status, "CHECKOUT", checkout)
    cfg = replace(config(tmp_path), results=str(checkout / "results/cpu-table"), carry=str(checkout / "artifacts/t"))
    write(checkout / "results/cpu-table/reach-v3/models.json", json.dumps({"sha256": {}}))
    write(checkout / "artifacts/t/mmae/rgbs/reach-v3/encoder.pt", "weights")
    text = status_text(cfg)
    assert (
        "NOT COMMITTED: 2 kept files under results/cpu-table, artifacts/t (e.g. artifacts/t/mmae/rgbs/reach-v3/"
        "encoder.pt); a replaced machine loses them: `git add results/cpu-table artifacts/t && git commit" in text
    )
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "kept"], check=True)
    assert "NOT COMMITTED" not in status_text(cfg)
    assert "NOT COMMITTED" not in status_text(config(tmp_path))  # outside the checkout
    (checkout / "artifacts/t/mmae/rgbs/reach-v3/encoder.pt").unlink()  # deleted: git still holds it
    assert "NOT COMMITTED" not in status_text(cfg)
    monkeypatch.setenv("PATH", "")  # no git: said, not a traceback
    assert "could not check that the kept files are committed (git: " in status_text(cfg)


def test_status_says_where_a_running_pretraining_stands_and_its_time_left(tmp_path):
    cfg = config(tmp_path)
    prepared(cfg, "reach-v3")
    root = Path(cfg.root)
    (root / "runs/mmae/rgbs/reach-v3/encoder.pt").unlink()  # the rgb+saliency MultiMAE is still training
    state = json.loads((root / STATE_FILE).read_text())
    state["done"] = {k: v for k, v in state["done"].items() if "pretrain.multimae rgbs" not in k}
    write(root / STATE_FILE, json.dumps(state))
    run = root / "runs/mmae/rgbs/reach-v3"
    write(run / "config.json", json.dumps({"batch_size": 512, "epochs": 22}))
    write(run / "data.json", json.dumps({"train_frames": 47_510}))  # 92 steps of 512 per epoch: 2,024 in all
    write(run / "train.csv", "step,wall_s,img_per_s\n20,200,25.6\n")
    text = status_text(cfg)
    assert "next step of phase(s) A,B,C,D,E: reach-v3: pretrain.multimae rgbs" in text
    # one row: its own rate, since its process started; (2,024 - 20) x 512 images at 25.6 img/s = 40,080 s
    assert (
        "  where it stands: step 20 of 2,024 (1.0 %), 25.6 img/s (its last train.csv row): ~11.1 h left at that rate"
        " (not running now: its last process's rate)" in text
    )
    # more rows: the rate of the last 50 steps (a load that has changed since the process started shows at once):
    # steps 30 -> 80 in 400 s at 512 a step = 64 img/s; (2,024 - 80) x 512 / 64 = 15,552 s
    rows = "".join(f"{k},{200 + 4 * (k - 20) if k <= 30 else 240 + 8 * (k - 30)},25.6\n" for k in range(20, 81, 10))
    write(run / "train.csv", "step,wall_s,img_per_s\n" + rows)
    assert "step 80 of 2,024 (4.0 %), 64.0 img/s over its last 50 steps: ~4.3 h left at that rate" in (status_text(cfg))
    write(run / "data.json", json.dumps({"train_frames": 47_510, "total_steps": 1_000}))  # what pretrain now records
    assert "step 80 of 1,000 (8.0 %)" in status_text(cfg)


def test_status_says_where_a_running_sac_grid_stands(tmp_path):
    cfg = config(tmp_path)
    argv = grid_argv(cfg, ["reach-v3"], ["state", "mmae_rgbs"], [0, 1], 100_000, "runs/sac", "")
    step = Step("grid", "A", ["-m", "rl.grid", *argv])
    root = Path(cfg.root)
    assert step_progress(root, step) == ""  # nothing logged yet
    finish_run(root / table_dir("reach-v3", "state", 0), 100_000)
    write(root / table_dir("reach-v3", "state", 1) / "metrics.csv", "step,steps_per_s\n40000,5.0\n")
    write(root / table_dir("reach-v3", "mmae_rgbs", 0) / "metrics.csv", "step,steps_per_s\n50000,3.0\n")
    # the finished run and the one not started are not in progress; left: 60,000 + 50,000 + 100,000 (not
    # started) steps at 4.0/s per run, 2 runs at a time
    assert step_progress(root, step) == (
        "2 of 4 runs in progress at 40,000-50,000 of 100,000 steps, 4.00 env-steps/s per run "
        "(their last metrics rows): ~7.3 h left at that rate, 2 at a time"
    )


def test_the_forecast_lists_each_open_step_with_its_hours_and_when_it_ends(tmp_path, monkeypatch):
    """Rates chosen for round hours: collection 1 h, saliency 0.5 h, labelling 1 h, the rgb+saliency pretraining
    2 h and the rgb-only one 1 h (the speed-up set to 2x), a probe 0.1 h, a state run 1 h and a frozen-encoder run 2 h per 100k steps. Each grid counts its runs that no earlier
    grid of the forecast runs, less what they have run, started as rl.grid starts them on 2 cores; a pretraining
    that has logged goes at its own rate; the forecast stops at a step that waits for its budget."""
    cfg = config(tmp_path, phase="A")
    images = pretrained_images(cfg)
    zero = {"state": 0, "frozen": 0, "cnn": 0, "gaze": 0}
    rates = Rates(
        50_000 / 3600, 1800, 50_000 / 3600, images / 7200, 360, {**zero, "state": 36, "frozen": 72}, (0, 0), zero
    )
    monkeypatch.setitem(RATES, "round hours", rates)
    monkeypatch.setattr(forecast, "RGB_PRETRAIN_SPEEDUP", 2.0)
    folder = Folder(cfg)
    lines = forecast_text(cfg, folder, open_steps(folder), "round hours").splitlines()[3:]
    hours = [tuple(cell.strip() for cell in line.split(" | ")[2:]) for line in lines]
    assert [line.split(" | ")[1] for line in lines] == ["-"] * 4 + ["1"] + ["-"] * 4 + ["1", "1"]  # runs per pack
    assert hours == [
        ("1.0", "1.0 |"),  # collect
        ("0.5", "1.5 |"),  # the saliency stages
        ("1.0", "2.5 |"),  # label
        ("2.0", "4.5 |"),  # the rgb+saliency MultiMAE
        ("6.0", "10.5 |"),  # PO and ViSaRL x 3: six 2-h runs on 2 cores
        ("1.0", "11.5 |"),  # the rgb MultiMAE
        ("0.1", "11.6 |"),
        ("0.1", "11.7 |"),
        ("0.1", "11.8 |"),  # the probes
        ("5.0", "16.8 |"),  # MMAE RGB (2 h) and state (1 h) x 3, MMAE RGB first: 2 + 3 h on one core
        ("25.0", "41.8 |"),  # seeds 3-9: two seeds fill 2 cores for 7 h; the 7th takes 4 h
    ]
    assert lines[4].startswith("| reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000")
    # PO seed 0 half run, ViSaRL seed 0 finished: 1 + 2 h, then 2 h, on core 1; 2 + 2 h on core 2
    root = Path(cfg.root)
    write(root / table_dir("reach-v3", "mmae_rgbs_po", 0) / "metrics.csv", "step,steps_per_s\n50000,4.0\n")
    finish_run(root / table_dir("reach-v3", "mmae_rgbs", 0), 100_000)
    finish_pretraining(root / "runs/mmae/rgbs/reach-v3", step=500, total=1_000)  # 500 x 512 images at 51.2 img/s
    predicted = forecast_text(cfg, folder, open_steps(folder), "round hours")
    assert "| reach-v3: pretrain.multimae rgbs (22 epochs, >= 1,000,000 images) | - | 1.4 | 3.9 |" in predicted
    assert (
        "| reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes) | 1 | 5.0 | 8.9 |"
        in predicted
    )
    assert "waits" not in predicted
    # a diverged run is final (rl.grid skips it): with PO seed 1 diverged at 10k, PO seed 0's hour then PO seed 2 on
    # core 1 (1 + 2 h), ViSaRL seeds 1 and 2 on core 2 (2 + 2 h)
    write(
        root / table_dir("reach-v3", "mmae_rgbs_po", 1) / "summary.json",
        json.dumps({"steps": 10_000, "success_rate": 0.0, "diverged": {"step": 10_000}}),
    )
    predicted = forecast_text(cfg, folder, open_steps(folder), "round hours")
    assert (
        "| reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes) | 1 | 4.0 |" in predicted
    )
    # ViSaRL seed 0 took 1 h here (its summary's wall time): its other seeds take that, 1 + 1 h on core 2 (PO's
    # diverged run, 5 h to its 10k, is no run to the budget: ignored)
    visarl = root / table_dir("reach-v3", "mmae_rgbs", 0) / "summary.json"
    visarl.write_text(json.dumps({**json.loads(visarl.read_text()), "wall_time_s": 3600.0}))
    diverged = root / table_dir("reach-v3", "mmae_rgbs_po", 1) / "summary.json"
    diverged.write_text(json.dumps({**json.loads(diverged.read_text()), "wall_time_s": 18_000.0}))
    predicted = forecast_text(cfg, folder, open_steps(folder), "round hours")
    assert (
        "| reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes) | 1 | 3.0 |" in predicted
    )
    # phase B: the state pilots' first chunk, then the budget rule decides what follows
    phase_b = config(tmp_path, phase="B")
    pilots = Folder(phase_b)
    predicted = forecast_text(phase_b, pilots, open_steps(pilots), "round hours")
    assert predicted.splitlines()[3:] == [
        "| pilot state drawer-open-v3,faucet-open-v3,door-open-v3 to 50,000 (then the budget rule) | 1 | 1.0 | 1.0 |",
        "then the budget rule reads the state pilots: what follows depends on it, the forecast stops there",
    ]
    # budgets decided: each task's saliency stages count once, at the first still open; a pilot whose summary is
    # lost (its keep waits on no grid) stops the forecast
    for task in PAPER_TASKS[1:]:
        finish_run(root / pilot_dir(task, "state", 100), 500_000, success=0.0, task=task)
    lines = forecast_text(phase_b, pilots, open_steps(pilots), "round hours").splitlines()[3:6]
    assert [line.split(" | ")[0:3] for line in lines] == [
        ["| drawer-open-v3: collect 50,000 frames", "-", "1.0"],
        ["| drawer-open-v3: oracle annotator, 30 frames", "-", "0.5"],
        ["| drawer-open-v3: saliency.label 50,000 frames", "-", "1.0"],
    ]
    recorded = {"steps": 500_000, "held_at": None, "reason": "the cap"}
    write(root / STATE_FILE, json.dumps({"budgets": {"drawer-open-v3": recorded}}))
    (root / pilot_dir("drawer-open-v3", "state", 100) / "summary.json").unlink()
    pilots = Folder(phase_b)  # reads table.json anew
    predicted = forecast_text(phase_b, pilots, open_steps(pilots), "round hours")
    assert predicted.startswith("forecast from now: then keep runs/pilot/drawer-open-v3/state (1 run) -> ")
    assert predicted.endswith(": the forecast stops there")


def test_pack_0_sizes_each_grids_packs_by_the_forecast(tmp_path, monkeypatch):
    """--pack 0 gives each grid the pack size whose forecast ends it soonest (the smallest within 5 %), at the rates
    of the column this CPU follows, each pack its measured gain; the forecast times the packs rl.grid makes. Rates
    for round hours: a frozen run 2 h alone, a state run 1 h; in packs of 2 each runs 1.2x faster, of 4 1.6x."""
    zero = {"state": 0, "frozen": 0, "cnn": 0, "gaze": 0}
    gains = {"frozen": {2: 1.2, 4: 1.6}, "state": {2: 1.2, 4: 1.6}}
    rates = Rates(1, 1, 1, 1, 1, {**zero, "state": 36, "frozen": 72}, (0, 0), zero, gains)
    monkeypatch.setitem(RATES, "round hours", rates)
    monkeypatch.setattr(forecast, "rate_column", lambda precision, units: "round hours")
    cfg = config(tmp_path, phase="A", pack=0, hidden_dim=256)
    folder = Folder(cfg)
    grids = [s for s in plan(cfg) if s.wave]
    pack = lambda step: int(dict(zip(step.argv[2::2], step.argv[3::2]))["--pack"])  # noqa: E731
    hours = lambda step: grid_hours(cfg, folder, step.argv, rates, set())  # noqa: E731
    # PO and ViSaRL x 3: six 2-h runs. Alone 3 x 2 h per core (6 h); packs of 2: three 4-h packs at 1.2x (6.7 h);
    # of 3: one 6-h pack per core at 1.4x (4.3 h); of 4 and 2: 8 h at 1.6x beside 4 h at 1.2x (5 h)
    assert pack(grids[0]) == 3 and round(hours(grids[0]), 2) == round(6 / 1.4, 2)
    predicted = forecast_text(cfg, folder, open_steps(folder), "round hours")
    assert (
        "mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes) | 3 (one per process: 6.0 h) | 4.3 |"
        in predicted
    )
    # the forecast sizes a later grid by the runs left to it once the grids before it ran theirs (below)
    assert (
        "mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes) | 2 (one per process: 5.0 h) | 4.3 |" in predicted
    )
    assert [round(grid_hours(cfg, folder, with_pack(grids[0].argv, n), rates, set()), 2) for n in (1, 2, 4)] == [
        6.0,
        6.67,
        5.0,
    ]
    # state and MMAE RGB x 3 once PO and ViSaRL are done: alone (longest first) 5 h; packs of 3: 6 h at 1.4x beside
    # 3 h at 1.4x (4.29 h); of 2: 4 h at 1.2x then 1 h beside 2 h at 1.2x then 2 h (4.33 h): within 5 %, smaller
    root = Path(cfg.root)
    for row in ("mmae_rgbs_po", "mmae_rgbs"):
        for seed in range(3):
            finish_run(root / table_dir("reach-v3", row, seed), 100_000)
    second = [s for s in plan(cfg) if s.wave][1]
    assert pack(second) == 2 and round(hours(second), 2) == 4.33
    assert round(grid_hours(cfg, folder, with_pack(second.argv, 1), rates, set()), 2) == 5.0
    assert round(grid_hours(cfg, folder, with_pack(second.argv, 3), rates, set()), 2) == 4.29
    # packs never mix tasks or rows that do not stack, and keep rl.grid's order (of their first runs)
    runs = grid_runs(folder.root, grids[2].argv)
    packs = grid_packs(runs, 4)
    assert [[(r.parent.name, r.name) for r in p] for p in packs[:3]] == [
        [("mmae_rgb", "seed0"), ("mmae_rgbs_po", "seed0"), ("mmae_rgbs", "seed0"), ("mmae_rgb", "seed1")],
        [("state", "seed0"), ("state", "seed1"), ("state", "seed2"), ("state", "seed3")],
        [("mmae_rgbs_po", "seed1"), ("mmae_rgbs", "seed1"), ("mmae_rgb", "seed2"), ("mmae_rgbs_po", "seed2")],
    ]
    # a run kept from a pack of 3 that took 3 h took 3 / 3 x 1.4 = 1.4 h alone: its row's other runs are timed so
    summary = root / table_dir("reach-v3", "mmae_rgbs", 0) / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "wall_time_s": 3 * 3600.0, "pack": 3}))
    assert measured_seconds(summary.parent.parent, 100_000, rates, 256) == pytest.approx(1.4 * 3600)
    # rl.grid packs runs only with runs whose newest checkpoint is at the same step (they resume together)
    write(root / table_dir("reach-v3", "mmae_rgb", 1) / "checkpoint-000025000.pt", "")
    assert [[(r.parent.name, r.name) for r in p] for p in grid_packs(runs, 4)[:3]] == [
        [("mmae_rgb", "seed0"), ("mmae_rgbs_po", "seed0"), ("mmae_rgbs", "seed0"), ("mmae_rgbs_po", "seed1")],
        [("state", "seed0"), ("state", "seed1"), ("state", "seed2"), ("state", "seed3")],
        [("mmae_rgb", "seed1")],
    ]
    # without measured gains a pack is never sooner than its runs one per process: one it is; so at hidden 1024
    # (gains measured at 256), and where no column applies (bf16 without bf16 units)
    last = lambda c: [s for s in plan(c) if s.wave][2]  # noqa: E731  (seeds 0-9: runs open)
    assert pack(last(cfg)) > 1
    monkeypatch.setitem(RATES, "round hours", replace(rates, pack_gain={}))
    assert pack(last(cfg)) == 1
    monkeypatch.setitem(RATES, "round hours", rates)
    assert pack(last(replace(cfg, hidden_dim=1024))) == 1
    monkeypatch.setattr(forecast, "rate_column", lambda precision, units: None)
    assert pack(last(cfg)) == 1
    # the grid-pooled row (1024-d features: 9.7 GiB a pack of 3 at 500k) is not sized: one run per pack
    monkeypatch.setattr(forecast, "rate_column", lambda precision, units: "round hours")
    cfg_d = replace(cfg, phase="D")
    write(
        Path(cfg_d.root) / STATE_FILE,
        json.dumps({"budgets": {t: {"steps": 100_000, "held_at": 100_000, "reason": "r"} for t in PAPER_TASKS[1:]}}),
    )
    grid2 = [s for s in plan(cfg_d) if s.wave and s.wave[1] == ("mmae_rgbs_grid2",)]
    assert grid2 and all(pack(s) == 1 and not s.sized for s in grid2)
    # an explicit --pack is every grid's but the CNN rows' (--cnn-pack)
    assert {pack(s) for s in plan(replace(cfg, pack=2)) if s.wave} == {2}


def test_a_run_resumed_past_its_summary_is_in_progress_and_a_half_written_row_is_skipped(tmp_path):
    cfg = config(tmp_path)
    root = Path(cfg.root)
    run = table_dir("drawer-open-v3", "state", 0)
    finish_run(root / run, 75_000, task="drawer-open-v3")  # an earlier chunk of the pilot ended at 75k
    write(root / run / "metrics.csv", "step,steps_per_s\n75000,4.0\n")
    assert Folder(cfg).run_steps(run) == (75_000, True)
    write(root / run / "metrics.csv", "step,steps_per_s\n75000,4.0\n90000,2.0\n95000,")  # the next chunk runs
    assert Folder(cfg).run_steps(run) == (90_000, False)
    assert sac_progress([root / run], 100_000) == (
        "1 of 1 runs in progress at 90,000-90,000 of 100,000 steps, 2.00 env-steps/s per run "
        "(their last metrics rows): ~1.4 h left at that rate, 1 at a time"
    )


HOLDER = textwrap.dedent("""
    import sys, time
    from common.runs import exclusive_run_dir
    with exclusive_run_dir(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_copy_is_refused_while_one_holds_the_root(tmp_path, capsys):
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        for flags in (["--background"], []):
            with pytest.raises(SystemExit) as stop:
                main([*folders(tmp_path), "--phase", "A", *flags])
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {root} is in use by pid {proc.pid}") and len(err.strip().splitlines()) == 1
        assert lock_holder(root).startswith(f"pid {proc.pid}")
        assert f"running: pid {proc.pid}" in status_text(config(tmp_path))
        assert not (root / LOG_FILE).exists() and not (root / STATE_FILE).exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lock_holder(root) is None


def test_a_background_start_is_refused_at_once_for_what_its_run_would_refuse(tmp_path, capsys, monkeypatch):
    """`make cpu-table` detaches the run: changed settings, a phase waiting for budgets no selected phase
    decides, and a new root beside results another root kept are refused before it detaches (one line, exit 2),
    not in a log nobody reads; nothing is started."""
    started = []
    monkeypatch.setattr(runner, "start", lambda *a, **k: started.append(a) or 1)
    monkeypatch.setattr(runner, "check_pass_through_apart", check_pass_through)  # not a spawn per call (~5 s)
    root, results = tmp_path / "root", tmp_path / "results" / "cpu-table"
    base = ["--root", str(root), "--results", str(results), "--carry", str(tmp_path / "carry"), "--background"]

    def refused(*flags: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main([*base, *flags])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    write(results / "reach-v3/state/seed0/summary.json", "{}")  # kept by a root this machine no longer has
    assert "is a new root (no table.json), but" in refused("--phase", "A")
    assert "--results results/cpu-table-2" in refused("--phase", "A")
    (results / "reach-v3/state/seed0/summary.json").unlink()
    assert "waits for" in refused("--phase", "C") and "--phase B" in refused("--phase", "C")
    folder = Folder(config(tmp_path))
    folder.check_settings()
    folder.save()
    assert "--hidden-dim 256 (started with 1024)" in refused("--phase", "A", "--hidden-dim", "256")
    assert not started
    main([*base, "--phase", "A"])
    assert len(started) == 1


def test_a_root_continues_with_the_settings_it_recorded_unless_a_flag_changes_them(tmp_path, capsys, monkeypatch):
    """Flags left out take the root's recorded design (make cpu-table passes none); a flag that contradicts it is
    refused. `--precision auto` is recorded as what it ran: a root started in fp32 is not continued in bf16 on a
    machine where auto would mean bf16."""
    monkeypatch.setenv(AUTO_ENV, "fp32")
    folder = Folder(config(tmp_path, hidden_dim=256))
    folder.check_settings()
    folder.save()
    assert folder.state["settings"]["precision"] == "fp32" and folder.state["settings"]["hidden_dim"] == 256
    base = folders(tmp_path)
    main([*base, "--status"])
    assert "SAC hidden 256" in capsys.readouterr().out
    monkeypatch.setenv(AUTO_ENV, "bf16")  # e.g. a later session on a machine with AMX
    assert adopt_recorded(config(tmp_path), base).precision == "fp32"
    Folder(adopt_recorded(config(tmp_path), base)).check_settings()
    with pytest.raises(ValueError, match=r"--precision 'bf16' \(started with 'fp32'\)"):
        Folder(adopt_recorded(config(tmp_path), [*base, "--precision", "auto"])).check_settings()
    with pytest.raises(ValueError, match=r"--hidden-dim 1024 \(started with 256\); leave those flags out"):
        Folder(adopt_recorded(config(tmp_path), [*base, "--hidden-dim=1024"])).check_settings()
    faster = "--batch-size 512 --warmup-epochs 2 --threads=16 --no-progress"  # speed flags may differ by machine
    Folder(config(tmp_path, pretrain_extra=faster, hidden_dim=256, precision="fp32")).check_settings()
    with pytest.raises(ValueError, match=r"--pretrain-extra '--batch-size 256 --threads 16' \(started with"):
        other = "--batch-size 256 --threads 16"
        Folder(config(tmp_path, pretrain_extra=other, hidden_dim=256, precision="fp32")).check_settings()
    given = tmp_path / "design.json"  # a --config file's values are given as much as flags are
    given.write_text(json.dumps({"hidden_dim": 1024}))
    for words in (["--config", str(given)], [f"--config={given}"]):
        cfg = parse_config(TableConfig, [*base, *words])
        with pytest.raises(ValueError, match=r"--hidden-dim 1024 \(started with 256\)"):
            Folder(adopt_recorded(cfg, [*base, *words])).check_settings()


def test_a_root_started_before_mmae_features_was_recorded_goes_on_with_raw_features(tmp_path):
    """--mmae-features became a FROZEN table setting when standardised features became the default (issue #24): a root
    that recorded its settings before then ran raw features, and its later SAC grids keep them; a new root takes the
    default."""
    folder = Folder(config(tmp_path))
    folder.check_settings()
    assert folder.state["settings"]["mmae_features"] == "standardized"
    assert "--mmae-features standardized" in sac_flags(folder.cfg)
    del folder.state["settings"]["mmae_features"]  # as an older root recorded them
    folder.save()
    base = folders(tmp_path)
    older = adopt_recorded(config(tmp_path), base)
    assert older.mmae_features == "raw" and "--mmae-features raw" in sac_flags(older)
    again = Folder(older)
    again.check_settings()
    assert again.state["settings"]["mmae_features"] == "raw"
    with pytest.raises(ValueError, match=r"--mmae-features 'standardized' \(started with 'raw'\)"):
        Folder(config(tmp_path)).check_settings()


def test_a_root_started_before_pilot_eval_episodes_was_recorded_keeps_its_pilots_on_its_eval_episodes(tmp_path):
    """--pilot-eval-episodes split from --eval-episodes (the table's evaluations went to 10 episodes, the pilots'
    stayed at 20): a root, or a results folder, that recorded its settings before then ran its pilots on its
    --eval-episodes, and its pilots (resumed chunk by chunk, read by the budget rule) keep that; its settings.json
    gains the setting at that value, and nothing it recorded changes."""
    folder = Folder(config(tmp_path, eval_episodes=7))
    folder.check_settings()
    folder.record_settings()
    settings = tmp_path / "results" / SETTINGS_FILE
    assert json.loads(settings.read_text())["pilot_eval_episodes"] == 20  # a new root: the default
    for recorded in (folder.state["settings"], older := json.loads(settings.read_text())):
        del recorded["pilot_eval_episodes"]  # as an older root recorded them
    older["a_setting_no_longer_frozen"] = "kept"  # what the file records stays, whatever this version knows of
    folder.save()
    settings.write_text(json.dumps(older))
    base = folders(tmp_path)
    adopted = adopt_recorded(config(tmp_path), base)
    assert (adopted.eval_episodes, adopted.pilot_eval_episodes) == (7, 7)
    assert "--eval-episodes 7" in sac_flags(adopted, pilot=True)
    again = Folder(adopted)
    again.check_settings()
    assert again.state["settings"]["pilot_eval_episodes"] == 7
    again.record_settings()
    assert json.loads(settings.read_text()) == {**older, "pilot_eval_episodes": 7}
    with pytest.raises(ValueError, match=r"--pilot-eval-episodes 20 \(started with 7\)"):
        argv = [*base, "--pilot-eval-episodes", "20"]
        Folder(adopt_recorded(parse_config(TableConfig, argv), argv)).check_settings()
    # a new machine's root (no table.json) takes the split setting from the results folder's settings.json
    (tmp_path / "root" / STATE_FILE).unlink()
    settings.write_text(json.dumps(older))
    assert adopt_recorded(config(tmp_path), base).pilot_eval_episodes == 7
    argv = [*base, "--pilot-eval-episodes", "10"]  # and refuses another value: the results' pilots ran on 7
    with pytest.raises(ValueError, match=r"--pilot-eval-episodes 10 \(they have 7\); leave those flags out"):
        Folder(adopt_recorded(parse_config(TableConfig, argv), argv)).check_start()


def test_background_command_is_the_same_run_without_background():
    argv = ["--phase", "A", "--background", "--root", "runs/x"]
    assert background_command(argv) == [
        sys.executable,
        "-m",
        "pipeline.table",
        "--phase",
        "A",
        "--root",
        "runs/x",
    ]


def test_bad_settings_are_one_line_errors(capsys):
    for argv, words in (
        (["--reach-steps", "110000"], "--reach-steps (110000) must be a multiple of --eval-every"),
        (["--pilot-eval-every", "15000"], "--budget-cap (500000) must be a multiple of --pilot-eval-every (15000)"),
        (["--first-seeds", "6"], "seeds must grow"),
        (["--status", "--dry-run"], "exclude each other"),
        (["--extra-tasks", "pick-place-v3"], "pick-place-v3 not among"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, words, apart",
    [
        ("--sac-extra", "--actor-lr 1e-4 --hiden-dim 64", "--sac-extra: unrecognized arguments: --hiden-dim 64", True),
        (
            "--sac-extra",
            "--actor-lr inf",
            "--sac-extra: argument --actor-lr: must be a finite number, got 'inf'",
            False,
        ),
        ("--pretrain-extra", "--batch-size 512 --warmpu-epochs 2", "--pretrain-extra: unrecognized arguments", False),
        ("--probe-extra", "--fit-frames ten", "--probe-extra: argument --fit-frames: invalid int value: 'ten'", False),
    ],
)
def test_a_bad_pass_through_flag_stops_before_anything_runs(tmp_path, capsys, monkeypatch, flag, value, words, apart):
    ran = []
    monkeypatch.setattr(runner, "run", ran.append)
    if not apart:  # the same parse in this process (a spawned one imports torch again: ~5 s a call); the first case
        monkeypatch.setattr(runner, "check_pass_through_apart", check_pass_through)  # keeps the spawn
    monkeypatch.setattr(runner, "dry_run_text", lambda cfg: ran.append(cfg) or "")
    argv = [*folders(tmp_path), "--phase", "A"]
    for mode in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as stop:
            main([*argv, *mode, f"{flag}={value}"])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert ran == [] and not (tmp_path / "root").exists()
    main([*argv, "--sac-extra=--actor-lr 3e-4", "--probe-extra=--fit-frames 300", "--dry-run"])
    assert len(ran) == 1  # good flags pass


def test_the_table_offers_the_frozen_feature_choices_rl_accepts():
    """TableConfig repeats rl.encoders.MMAE_FEATURES (pipeline.table must not import torch, rl.encoders does): the
    same choices, the same default."""
    import dataclasses

    from rl.encoders import MMAE_FEATURES

    (spec,) = [f for f in dataclasses.fields(TableConfig) if f.name == "mmae_features"]
    assert tuple(spec.metadata["choices"]) == MMAE_FEATURES and spec.default == MMAE_FEATURES[0]


def test_estimate_grows_with_the_budget_and_is_cheaper_in_bf16():
    cfg = TableConfig()
    short = estimate(cfg, {t: 100_000 for t in PAPER_TASKS})
    long = estimate(cfg, {})  # undecided: the cap
    fp32, bf16, zen4 = FP32_XEON, BF16_XEON, BF16_ZEN4
    # 5x the steps: almost 5x the hours (training and the evaluations on its way grow, the last evaluation does not)
    assert 4.5 * short[bf16]["C"] < long[bf16]["C"] < 5 * short[bf16]["C"]
    assert all(long[bf16][p] < long[fp32][p] for p in "ABCE")
    assert estimate(TableConfig(hidden_dim=256), {})[bf16]["C"] < long[bf16]["C"]
    # the Zen 4 pretrains 2.5x slower than the AMX Xeon (phase A's two MultiMAEs) but runs the CNN rows faster
    assert long[zen4]["A"] > long[bf16]["A"] and long[zen4]["D"] < long[bf16]["D"]
    # the Zen 3 pretrains in fp32 slower than the Xeon (27 vs 42 img/s), and its packed frozen-row steps are slower
    zen3 = FP32_ZEN3
    assert long[zen3]["A"] > long[fp32]["A"] and long[zen3]["B"] > long[fp32]["B"]


def test_the_estimate_says_which_column_this_cpu_follows():
    """--precision auto follows the CPU's bf16 units; an explicit precision is taken as given; each column is the
    CPU measured that has the same units."""
    no_units = applicable_column("auto", ())
    assert "auto runs fp32 here (it has no AMX or AVX512-BF16 units), so the column 'fp32 (Zen 3, AVX2)'" in no_units
    assert "measured on a Zen 3" in applicable_column("fp32", ("avx512_bf16",))
    amx = applicable_column("auto", ("amx_bf16", "avx512_bf16"))
    assert "auto runs bf16 here (it has amx_bf16/avx512_bf16), so the column 'bf16 (Xeon, AMX)' applies" in amx
    assert "slower" not in amx
    assert "so the column 'fp32 (Xeon)' applies" in applicable_column("fp32", ("amx_bf16",))
    assert "so the column 'bf16 (Zen 4, AVX512-BF16)' applies" in applicable_column("auto", ("avx512_bf16",))
    forced = applicable_column("auto", (), "bf16")  # VISARL_AUTO_PRECISION decides auto, as for the runs
    assert "auto runs bf16 here (VISARL_AUTO_PRECISION=bf16), but it has no bf16 units" in forced
    assert "no column applies; pass --precision fp32" in forced
    assert set(RATES) == {
        rate_column(*case)
        for case in [("fp32", ()), ("fp32", ("amx_bf16",)), ("bf16", ("amx_bf16",)), ("bf16", ("avx512_bf16",))]
    }
    with pytest.raises(ValueError, match="VISARL_AUTO_PRECISION='fp16': set it to bf16 or fp32"):
        applicable_column("auto", ("amx_bf16",), "fp16")  # the runs would refuse it alike


def test_the_orchestrator_does_not_load_torch(tmp_path):
    """pipeline.table runs for days beside the jobs it starts: torch would hold ~300 MB for nothing. Neither
    its start (the pass-through flags are parsed in a process of their own), nor planning (shard manifests),
    nor keeping probes loads it."""
    code = (
        "import sys; from pipeline.table.runner import main; from pipeline.keep import keep_file; "
        f"main(['--root', {str(tmp_path / 'root')!r}, '--dry-run']); "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_results_are_relative_to_the_checkout_and_pilots_beside_them(tmp_path, monkeypatch):
    """Kept results land in the checkout (where they are committed) from any working directory, and a trailing
    slash does not put the pilots inside the table's folder (which the report would then read as table rows)."""
    monkeypatch.chdir(tmp_path)
    cfg = TableConfig(root=str(tmp_path / "root"), results="results/cpu-table/").validate()
    assert cfg.results == "results/cpu-table"
    assert CHECKOUT == Path(__file__).resolve().parents[1]  # the repository, whatever module holds CHECKOUT
    assert Folder(cfg).results == CHECKOUT / "results" / "cpu-table"
    assert results_path(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_help_passed_through_and_a_contradicting_dry_run_are_one_line_refusals(tmp_path, capsys):
    """`--sac-extra=--help` would print rl.sac's help and exit inside the flag check's own process (which
    once left the orchestrator waiting forever): one line naming where the help is. A dry run refuses the
    settings a run would refuse."""
    base = folders(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*base, "--dry-run", "--sac-extra=--help"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m rl.sac --help" in err
    with pytest.raises(SystemExit):  # the command is named as it is run, not by the module holding main
        main([*base, "--phase", "Z"])
    assert capsys.readouterr().err.strip().endswith("(see python -m pipeline.table --help)")
    folder = Folder(config(tmp_path))
    folder.check_settings()
    folder.save()
    with pytest.raises(ValueError, match=r"--hidden-dim 256 \(started with 1024\)"):
        dry_run_text(config(tmp_path, hidden_dim=256))


def test_a_diverged_run_is_done_and_a_diverged_pilot_sets_the_cap(tmp_path):
    """rl.outcome: a diverged run is final at any budget, so its grid is done (a table that waited for its summary
    at the budget would rerun the grid forever); status counts it as 0 and says so. A state pilot that diverged
    before holding the threshold never will: the budget is the cap, as for a pilot that reached it."""
    cfg = config(tmp_path, phase="B")
    root = Path(cfg.root)

    def diverge(run_dir: Path, step: int) -> None:
        summary = json.loads((run_dir / "summary.json").read_text())
        summary |= {"steps": step, "success_rate": 0.0, "diverged": {"step": step, "why": "nan", "checkpoint": None}}
        write(run_dir / "summary.json", json.dumps(summary))

    for seed in range(3):
        finish_run(root / table_dir("reach-v3", "state", seed), 100_000, success=0.9)
    diverge(root / table_dir("reach-v3", "state", 2), 60_000)
    folder = Folder(cfg)
    assert folder.finished([table_dir("reach-v3", "state", k) for k in range(3)], 100_000)
    assert folder.finished([table_dir("reach-v3", "state", 2)], 500_000)
    assert "| reach-v3 | state | 3/10 | 60,000-100,000 of 100,000 | 0.60 (3 seeds), 1 diverged (counted as 0) |" in (
        status_text(config(tmp_path))
    )
    pilot = root / pilot_dir("drawer-open-v3", "state", cfg.pilot_seed)
    finish_run(pilot, 50_000, success=0.3, task="drawer-open-v3")
    assert folder.budget("drawer-open-v3").steps is None  # undecided: the pilot goes on
    diverge(pilot, 65_000)
    budget = folder.budget("drawer-open-v3")
    assert budget.steps == cfg.budget_cap and "diverged at 65,000 steps before holding >= 0.8" in budget.reason


def test_a_pretraining_stopped_early_is_not_done_though_it_exited_0_with_an_encoder(tmp_path, monkeypatch):
    """pretrain.multimae exports encoder.pt at every checkpoint and exits 0 when stopped (SIGTERM, --max-steps):
    the table plans it again until its train.csv reaches the run's last step, and a run of the table that sees it
    stop so says it was stopped, rather than probing and training SAC on a half-trained encoder."""
    cfg = config(tmp_path, phase="A")
    prepared(cfg, "reach-v3")
    run = Path(cfg.root) / "runs/mmae/rgbs/reach-v3"
    finish_pretraining(run, step=160, total=2_024)
    state = json.loads((Path(cfg.root) / STATE_FILE).read_text())
    state["done"] = {k: v for k, v in state["done"].items() if "pretrain.multimae rgbs" not in k}  # still training
    write(Path(cfg.root) / STATE_FILE, json.dumps(state))
    todo = [s for s in plan(cfg) if not s.done]
    assert todo[0].key == "reach-v3: pretrain.multimae rgbs (22 epochs, >= 1,000,000 images)"
    calls = []

    def stopped_early(argv, **kw):  # exits 0 a few steps on, as a SIGTERMed pretraining does
        calls.append(argv)
        finish_pretraining(run, step=200, total=2_024)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", stopped_early)
    with pytest.raises(RuntimeError, match="is still not done.*stopped early on purpose"):
        runner.run(cfg)
    assert len(calls) == 1 and [s for s in plan(cfg) if not s.done][0].key == todo[0].key  # resumes next time
    # and it is not marked: a later run killed after its last train.csv row, before its last save, stays undone
    assert todo[0].key not in json.loads((Path(cfg.root) / STATE_FILE).read_text())["done"]
    finish_pretraining(run, step=2_024, total=2_024)  # it finished in another invocation (its own --resume run)
    (pretrain,) = [s for s in plan(cfg) if s.key == todo[0].key]
    assert (
        pretrain.made and not pretrain.done
    )  # the table runs it once more (a finished run returns at once), then marks
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0))
    with pytest.raises(
        RuntimeError, match="seeds 0-2 to 100,000 .* ran, exited 0"
    ):  # on until a fake step writes nothing
        runner.run(config(tmp_path, phase="A"))
    assert todo[0].key in json.loads((Path(cfg.root) / STATE_FILE).read_text())["done"]
