"""pipeline.table: running the steps (keeping runs and probes, carrying models, a new root going on, wall times)."""

import hashlib
import json
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from common.cli import parse_config
from common.cpuinfo import AUTO_ENV
from pipeline.table import runner
from pipeline.table.carry import adopt_models, carried_files, carry_models, frames_digest
from pipeline.table.commands import PROBES
from pipeline.table.config import (
    EARLY_ROWS,
    SETTINGS_FILE,
    STATE_FILE,
    TableConfig,
    adopt_recorded,
    frozen_settings,
    planned_seeds,
    run_precision,
    table_dir,
)
from pipeline.table.folder import Folder
from pipeline.table.plan import keep_preparation, plan
from pipeline.table.report import REPORT_TITLE, write_table_report
from pipeline.table.runner import keep_finished, keeping_finished, main

from table_roots import (
    ROWS,
    config,
    fail_commands,
    finish_pretraining,
    finish_run,
    keep_in_process,
    modules,
    prepared,
    write,
)


def test_run_keeps_finished_rows_and_probes_then_stops_with_the_git_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "run", keep_in_process)
    cfg = config(tmp_path, phase="A", reach_seeds=2)
    prepared(cfg, "reach-v3")
    runs = [Path(cfg.root) / table_dir("reach-v3", row, seed) for row in ROWS for seed in range(2)]
    for run in runs:
        finish_run(run, 100_000, success=0.25 * (int(run.name[-1]) + 1))
        write(run / "replay-000050000/action.npy", "replay")  # the grid's last keep pass did not run (a stop)
    ran = runner.run(cfg)
    assert ran == [
        "reach-v3: carry the rgbs encoder and saliency student",
        "reach-v3: carry the rgb encoder",
        "reach-v3: keep probes",
        *[f"keep runs/sac/reach-v3/{r} (2 runs) -> {cfg.results}" for r in ROWS],
        *[f"random policy on reach-v3, seed {k} (50 episodes)" for k in range(2)],
    ]
    results = Path(cfg.results)
    floor = json.loads((results / "reach-v3/random_policy/random-seed1-50ep.json").read_text())
    assert (floor["seed"], len(floor["episodes"])) == (1, 50)  # straight into the results, said in the git line
    assert json.loads((results / "reach-v3/mmae_rgbs/seed1/summary.json").read_text())["success_rate"] == 0.5
    assert (results / "mmae/rgbs/reach-v3/probe_rgb+saliency.json").exists()
    assert not list(results.glob("**/checkpoint*"))
    assert not [run for run in runs if (run / "replay-000050000").exists()]  # kept by the keep steps: freed then
    out = capsys.readouterr().out
    assert f"git add {cfg.results} && git commit -m" in out and "every step of phase(s) A is done" in out
    marked = {k for k in ran if not k.startswith("random policy")}  # the floor's done is its file, written at once
    assert set(json.loads((Path(cfg.root) / STATE_FILE).read_text())["done"]) >= marked
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


def test_the_tables_report_reads_each_rows_planned_seeds_from_its_waves(tmp_path, capsys):
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
    # the budgets as the rule reads the kept state pilots: one held at 110k and 120k, one never held by the cap
    for task, steps, held in (("drawer-open-v3", 150_000, (110_000, 120_000)), ("faucet-open-v3", 500_000, ())):
        pilot = Path(f"{cfg.results}-pilot") / task / "state" / f"seed{cfg.pilot_seed}"
        rows = "".join(f"{s},1.0,{0.9 if s in held else 0.5}\n" for s in range(10_000, steps + 1, 10_000))
        write(pilot / "eval.csv", "step,wall_s,success_rate\n" + rows)
        write(pilot / "summary.json", json.dumps({"task": task, "encoder": "state", "steps": steps}))
    text = write_table_report(cfg).read_text()
    assert text.startswith(f"# {REPORT_TITLE}\n") and "**Interim:**" in text and "(2 of 3:" in text
    made = text.split("## How this table was made")[1].split("## Success rate")[0]  # before Table I
    assert f"on {cfg.annotate_n} frames per task" in made and "not people" in made
    assert "**Pretraining on ~1.0M images per MultiMAE**" in made and "against the paper's 40M" in made
    assert "reach-v3 at 100,000 steps" in made and "last evaluation on 50 episodes" in made
    assert (
        "reach-v3: 100,000 steps, fixed (it learns there); drawer-open-v3: 125,000 steps (state held >= 0.8 over 2 "
        "evaluations in a row at 120,000 steps; budget 125,000); faucet-open-v3: 500,000 steps (state did not hold "
        ">= 0.8 over 2 evaluations in a row by 500,000 steps; budget = the cap, 500,000); door-open-v3: not decided "
        "yet." in made
    )
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
    # --report-seeds: a snapshot of seeds 0 and 1 that state's seed 2, kept later, does not change
    snapshot = write_table_report(replace(cfg, report_seeds="0,1")).read_text()
    assert "8 finished SAC runs (only seeds 0, 1 of each row)" in snapshot
    assert "| State (sanity check) | 0.38 [" in snapshot and "(n=2 of 3) / n/a |" in snapshot
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "root"), "--results", cfg.results, "--report-seeds", "0,1", "--status"])
    assert "--report-seeds chooses the seeds --report reads" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--seeds takes comma-separated integers"):
        write_table_report(replace(cfg, report_seeds="0-2"))


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
            [(key, recorded)] = json.loads((root / STATE_FILE).read_text())["running"].items()
            seen["recorded as it runs"] = recorded == argv[1:] and key.endswith(
                "seeds 0-1 to 100,000 (last evaluation 50 episodes)"
            )  # what status forecasts it by while it runs
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
    assert seen == {"recorded as it runs": True, "first kept meanwhile": True, "second kept meanwhile": False}
    assert ran[4:8] == [f"keep runs/sac/reach-v3/{r} (2 runs) -> {cfg.results}" for r in ROWS]
    assert ran[8:] == [f"random policy on reach-v3, seed {k} (50 episodes)" for k in range(2)]
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
    assert modules(more) == ["rl.grid"] + ["pipeline.keep"] * 4 + ["rl.evaluate"]  # and the floor of seed 2
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
    todo = [s.key for s in plan(new) if not s.done][:15]
    early = "reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-2 to 100,000 (last evaluation 50 episodes)"
    assert todo == [
        "reach-v3: carried models",
        "reach-v3: collect 50,000 frames",
        "reach-v3: saliency.label 50,000 frames",
        early,  # the rows the carried encoder serves, before the rgb encoder pretrains
        *[f"keep runs/sac/reach-v3/{row} (3 runs) -> {results}" for row in EARLY_ROWS],
        *[f"random policy on reach-v3, seed {k} (50 episodes)" for k in range(3)],
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
