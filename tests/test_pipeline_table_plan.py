"""pipeline.table: the budget rule and the plan of phases for a given state of the root."""

import json
from pathlib import Path

import pytest

from common.cli import parse_config
from data.tasks import PAPER_TASKS
from pipeline.table import runner
from pipeline.table.budget import Budget, choose_budget
from pipeline.table.commands import grid_evaluations
from pipeline.table.config import EARLY_ROWS, STATE_FILE, pilot_dir, table_dir
from pipeline.table.folder import Folder
from pipeline.table.plan import plan
from pipeline.table.status import status_text

from table_roots import ROWS, config, evals, finish_run, modules, prepared, write


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
        *["rl.evaluate"] * 3,  # random actions on the wave's seeds' last-evaluation episodes: the floor
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
        *["rl.evaluate"] * 7,  # the seeds no earlier wave had
    ]
    args = [dict(zip(s.argv[2::2], s.argv[3::2])) for s in steps]
    assert args[0]["--frames"] == "50000" and args[0]["--out"] == "shards/reach-v3"
    assert [a["--modalities"] for a in (args[7], args[15])] == ["rgb,saliency", "rgb"]
    assert args[7]["--epochs"] == "22"  # 22 x 47,500 training frames >= 1M images
    assert [s.key for s in (steps[8], steps[16])] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
    ]
    assert [(a["--encoder"], a["--inputs"]) for a in args[17:20]] == [
        ("runs/mmae/rgbs/reach-v3/encoder.pt", ""),
        ("runs/mmae/rgbs/reach-v3/encoder.pt", "rgb"),
        ("runs/mmae/rgb/reach-v3/encoder.pt", ""),
    ]
    early_rows, longest_first = ["mmae_rgbs_po", "mmae_rgbs"], "mmae_rgb,mmae_rgbs_po,mmae_rgbs,state"
    for start, rows, encoders, seeds, kept in (
        (9, early_rows, ",".join(early_rows), "0,1,2", early_rows),
        (21, ROWS, longest_first, "0,1,2", ["state", "mmae_rgb"]),
        (24, ROWS, longest_first, "0,1,2,3,4,5,6,7,8,9", ROWS),
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
    assert [s.key for s in steps[22:23] + steps[25:26]] == [
        f"keep runs/sac/reach-v3/state ({n} runs) -> {tmp_path / 'results'}" for n in (3, 10)
    ]
    floor = [s for s in steps if s.argv[1:2] == ["rl.evaluate"]]
    assert [s.key for s in floor] == [f"random policy on reach-v3, seed {k} (50 episodes)" for k in range(10)]
    assert floor[3].argv[2:] == [
        *("--policy", "random", "--task", "reach-v3", "--seed", "3", "--episodes", "50"),
        *("--out", str(tmp_path / "results/reach-v3/random_policy")),
    ]
    assert all(s.kept == (str(tmp_path / "results"),) for s in floor)
    assert not (tmp_path / "root").exists()  # planning writes nothing


def test_every_planned_command_parses_in_its_own_command(tmp_path, monkeypatch):
    """The flags each step passes are its command's flags and values (parsed as its main() would, nothing run)."""
    from annotate_app.export import ExportConfig
    from annotate_app.oracle import PRESETS as ORACLE_PRESETS
    from annotate_app.oracle import OracleConfig
    from data.collect import CollectConfig
    from pipeline.keep import KeepConfig
    from pretrain.config import PRESETS as PRETRAIN_PRESETS
    from pretrain.config import PretrainConfig
    from pretrain.probe import ProbeConfig
    from rl.evaluate import EvaluateConfig
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
        "rl.evaluate": (EvaluateConfig, None),
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
            # the state pilot's evaluations are the budget rule's; every other run, the mmae_rgbs pilot's too, the table's
            state_pilot = cfg.out == "runs/pilot" and cfg.encoder_list == ["state"]
            evaluations = (sac.eval_every, sac.eval_episodes, sac.last_eval_episodes)
            assert evaluations == ((10_000, 20, 20) if state_pilot else (25_000, 10, 50))
            assert grid_evaluations(step.argv) == evaluations  # as the forecast prices them
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
    floor = [f"random policy on reach-v3, seed {k} (50 episodes)" for k in range(3)]
    assert [s.key for s in todo][:11] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
        "reach-v3: keep probes",
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in ROWS],
        *floor,
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
    assert [s.key for s in plan(cfg) if not s.done][:7] == [
        "reach-v3: carry the rgbs encoder and saliency student",
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in EARLY_ROWS],
        *floor,
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


def test_a_grids_evaluations_are_read_from_its_rl_sac_flags_as_rl_sac_reads_them():
    """The forecast prices a grid's evaluations by its own --extra flags: either spelling, the last of a repeated
    flag, and no (or 0) --final-eval-episodes meaning the others' count."""
    assert grid_evaluations(["--extra=--eval-every 25000 --eval-episodes 10 --final-eval-episodes 50"]) == (
        25_000,
        10,
        50,
    )
    assert grid_evaluations(["--extra=--eval-every=10000 --eval-episodes 20 --final-eval-episodes 0"]) == (
        10_000,
        20,
        20,
    )
    assert grid_evaluations(["--extra=--eval-every 5 --eval-episodes 2 --eval-every 3"]) == (3, 2, 2)
