"""pipeline.table: --status, the forecast of the open steps and the wall-time estimate."""

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from data.tasks import PAPER_TASKS
from pipeline.table import config as table_config
from pipeline.table import forecast, status
from pipeline.table.commands import Step, grid_argv, pretrained_images, with_pack
from pipeline.table.config import STATE_FILE, TableConfig, pilot_dir, table_dir
from pipeline.table.folder import Folder
from pipeline.table.forecast import (
    BF16_XEON,
    BF16_ZEN4,
    FP32_XEON,
    FP32_ZEN3,
    RATES,
    Rates,
    applicable_column,
    best_pack,
    estimate,
    forecast_text,
    grid_hours,
    grid_packs,
    grid_runs,
    measured_seconds,
    rate_column,
)
from pipeline.table.plan import open_steps, plan
from pipeline.table.status import sac_progress, status_text, step_progress

from table_roots import config, finish_pretraining, finish_run, prepared, write


def test_status_shows_stage_budget_seeds_and_steps(tmp_path, monkeypatch):
    for module in (forecast, table_config):  # a CPU without bf16 units, whatever this one has (a Zen 4's adds a note)
        monkeypatch.setattr(module, "cpu_bf16_units", lambda: ())
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
    assert "so the column 'fp32 (Zen 3, AVX2)' applies" in text  # auto runs fp32 without bf16 units
    assert "BENCHMARKS.md" not in text and "listed in the table's log (table.log)" in text  # rates' sources: a pointer


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
    extra = "--eval-every 25000 --eval-episodes 10 --final-eval-episodes 50"
    argv = grid_argv(cfg, ["reach-v3"], ["state", "mmae_rgbs"], [0, 1], 100_000, "runs/sac", extra)
    step = Step("grid", "A", ["-m", "rl.grid", *argv])
    root = Path(cfg.root)
    assert step_progress(root, step) == ""  # nothing logged yet
    finish_run(root / table_dir("reach-v3", "state", 0), 100_000)
    state, frozen = root / table_dir("reach-v3", "state", 1), root / table_dir("reach-v3", "mmae_rgbs", 0)
    write(state / "metrics.csv", "step,steps_per_s\n40000,5.0\n")
    write(state / "eval.csv", "step,wall_s,success_rate,episodes,eval_s\n25000,9.0,0.1,10,100.0\n")
    write(frozen / "metrics.csv", "step,steps_per_s\n20000,3.0\n")
    # the finished run is not in progress, mmae_rgbs seed 1 waits. State's run ends in 60,000 steps at 5.0/s plus
    # its evaluations at 50k, 75k (10 episodes each) and 100k (50) at its 10 s per episode: 12,700 s; mmae_rgbs's in
    # 80,000 steps at 3.0/s plus 80 episodes at state's 10 s (it has timed none): 27,467 s, the last to end
    assert step_progress(root, step) == (
        "2 of 4 runs in progress at 20,000-40,000 of 100,000 steps, 4.00 env-steps/s per run "
        "(their last metrics rows; mmae_rgbs 3.00, state 5.00): the last of them ends in ~7.6 h (its steps at its "
        "row's rate, its evaluations at the seconds per episode its earlier ones took); 1 not started (the forecast "
        "below counts the whole grid)"
    )
    # at 30,000 after its first evaluation (25k), which took 20 s per episode: 70,000 steps at 3.0/s plus the
    # evaluations at 50k, 75k and 100k, 70 episodes at 20 s
    write(frozen / "metrics.csv", "step,steps_per_s\n20000,3.0\n30000,3.0\n")
    write(frozen / "eval.csv", "step,wall_s,success_rate,episodes,eval_s\n25000,9.0,0.1,10,200.0\n")
    assert "ends in ~6.9 h" in step_progress(root, step)


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
    # a grid the table runs now is forecast at the packs it started with (here 4 and 2: 5.0 h), not sized again
    running = {grids[0].key: with_pack(grids[0].argv, 4)}
    assert f"| {grids[0].key} | 4 (one per process: 6.0 h) | 5.0 |" in forecast_text(
        cfg, folder, open_steps(folder), "round hours", running
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
    assert sac_progress([root / run], 100_000, (25_000, 10, 50)) == (
        "1 of 1 runs in progress at 90,000-90,000 of 100,000 steps, 2.00 env-steps/s per run "
        "(their last metrics rows): the last of them ends in ~1.4 h (its steps at that rate, its evaluations "
        "uncounted: none timed yet); 0 not started (the forecast below counts the whole grid)"
    )


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


def test_readmes_wall_time_estimates_are_the_estimates_of_the_code():
    """README's "Wall time" table (hidden 1024) and its hidden-256 sentence are what `--dry-run` prints from
    scratch: a rate or a setting that changes the estimate has to change the README with it."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("- **Wall time**") :]
    columns = list(RATES)
    assert f"| phase | {' | '.join(columns)} |" in section
    rounded = lambda table: {p: [f"{table[c][p]:,.0f}" for c in columns] for p in "ABCDE"}  # noqa: E731
    wide = rounded(estimate(TableConfig(), {}))
    for phase, hours in wide.items():
        assert f"| {phase} | {' | '.join(hours)} |" in section, phase
    narrow = rounded(estimate(TableConfig(hidden_dim=256), {}))
    sentence = " ".join(section.split())  # the sentence wraps
    assert f"A takes {' / '.join(narrow['A'])} h and C {' / '.join(narrow['C'])} h" in sentence


def test_the_zen4_footnote_rate_is_the_carried_rgb_pretrainings_own():
    """The fp32 column's footnote on a CPU with bf16 units quotes the Zen 4's rate from the carried train.csv of
    reach-v3's rgb-only MultiMAE: images over training seconds (wall_s adds up every resumed session)."""
    run = Path(__file__).parents[1] / "artifacts/cpu-table/mmae/rgb/reach-v3"
    last = (run / "train.csv").read_text().splitlines()[-1].split(",")
    batch = json.loads((run / "config.json").read_text())["batch_size"]
    assert int(last[0]) == json.loads((run / "data.json").read_text())["total_steps"]
    assert round(int(last[0]) * batch / float(last[1]), 1) == forecast.ZEN4_FP32_RGB_IMG_S
    assert f"at {forecast.ZEN4_FP32_RGB_IMG_S} img/s, 1.12x the column's 36.7" in applicable_column(
        "fp32", ("avx512_bf16",)
    )


def test_the_epyc_columns_probe_time_is_the_committed_probes_mean():
    """Both EPYC columns price a probe at the mean wall time of the CPU table's reach-v3 probes (stages.json); the
    Xeon's columns keep their estimate."""
    stages = Path(__file__).parents[1] / "results/cpu-table/reach-v3/stages.json"
    seconds = json.loads(stages.read_text())["wall_seconds"]
    probes = [s for step, s in seconds.items() if step.startswith("pretrain.probe ")]
    assert len(probes) == 3 and round(sum(probes) / len(probes), 1) == forecast.TABLE_PROBE_S
    assert RATES[FP32_ZEN3].probe_s == RATES[BF16_ZEN4].probe_s == forecast.TABLE_PROBE_S < RATES[FP32_XEON].probe_s


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


def test_status_forecasts_the_grid_a_running_table_runs_at_its_packs(tmp_path, monkeypatch):
    """A grid keeps the packs it started with while it runs (a start sizes them from the runs left then): while the
    table runs, status forecasts that grid by the command the runner recorded in table.json; when it does not run,
    as a start would size it. Rates as in `test_pack_0_sizes_each_grids_packs_by_the_forecast`."""
    zero = {"state": 0, "frozen": 0, "cnn": 0, "gaze": 0}
    gains = {"frozen": {2: 1.2, 4: 1.6}, "state": {2: 1.2, 4: 1.6}}
    rates = Rates(1, 1, 1, 1, 1, {**zero, "state": 36, "frozen": 72}, (0, 0), zero, gains)
    monkeypatch.setitem(RATES, "round hours", rates)
    monkeypatch.setattr(forecast, "rate_column", lambda precision, units: "round hours")
    cfg = config(tmp_path, phase="A", pack=0, hidden_dim=256)
    prepared(cfg, "reach-v3")
    grid = next(s for s in open_steps(Folder(cfg)) if s.wave)
    path = Path(cfg.root) / STATE_FILE
    write(
        path,
        json.dumps({**json.loads(path.read_text()), "running": {grid.key: with_pack(grid.argv, 1)}}),
    )
    packs = lambda: next(  # noqa: E731  (the grid's "runs per pack" cell)
        line for line in status_text(cfg).splitlines() if line.startswith(f"| {grid.key} |")
    ).split(" | ")[1]
    monkeypatch.setattr(status, "lock_holder", lambda root: "pid 1 on test")
    assert packs() == "1"  # as it runs
    monkeypatch.setattr(status, "lock_holder", lambda root: None)
    sized = best_pack(cfg, Folder(cfg), grid.argv)
    assert sized > 1 and packs().startswith(f"{sized} (one per process: ")  # as a start would size it
