"""The grid's planning/skip/resume rules and the report's content, on synthetic run folders."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.report.config import PlannedSeeds, ReportConfig
from pipeline.report.figures import profiles_caption
from pipeline.report.paper import PAPER_TABLE_I
from pipeline.report.runs import load_runs
from pipeline.report.writer import write_report
from rl.grid import ALL_ENCODERS, GridConfig, Run, is_finished, plan, sac_command


def _fake_run(root: Path, task: str, encoder: str, seed: int, success: float, steps: int = 1000) -> Path:
    d = root / task / encoder / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(
        json.dumps(
            {
                "task": task,
                "encoder": encoder,
                "seed": seed,
                "steps": steps,
                "preset": "micro",
                "success_rate": success,
                "eval_episodes": 10,
                "wall_time_s": 60.0,
                "steps_per_s": 16.7,
                "device": "CPU test",
            }
        )
    )
    rows = ["step,wall_s,success_rate,return_mean"] + [
        f"{s},{s / 10},{success * s / steps:.3f},{100 + s / 10}" for s in range(0, steps + 1, 250)
    ]
    (d / "eval.csv").write_text("\n".join(rows) + "\n")
    return d


def test_grid_plans_every_combination_and_skips_finished_runs(tmp_path):
    cfg = GridConfig(tasks="reach-v3,door-open-v3", encoders="all", seeds="0,1", steps=1000, out=str(tmp_path))
    runs = plan(cfg)
    assert len(runs) == 2 * len(ALL_ENCODERS) * 2 == 32
    assert runs[0].run_dir == tmp_path / "reach-v3" / "cnn_rgb" / "seed0"
    done = _fake_run(tmp_path, "reach-v3", "cnn_rgb", 0, 0.5)
    assert is_finished(runs[0], 1000) and not is_finished(runs[0], 2000)
    cmd = sac_command(cfg, Run("reach-v3", "cnn_rgb", 0, done))
    assert cmd[cmd.index("--steps") + 1] == "1000" and "--resume" not in cmd
    (done / "config.json").write_text("{}")  # a started run continues from its checkpoint
    assert "--resume" in sac_command(cfg, Run("reach-v3", "cnn_rgb", 0, done))


def test_grid_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown encoder.*cnn_rgb"):
        GridConfig(encoders="cnn_typo").validate()
    with pytest.raises(ValueError, match="unknown task"):
        GridConfig(tasks="reach-v99").validate()


def test_report_has_a_row_per_encoder_with_paper_numbers_and_curves(tmp_path):
    runs = tmp_path / "sac"
    for i, enc in enumerate(ALL_ENCODERS):
        for seed in (0, 1):
            _fake_run(runs, "reach-v3", enc, seed, success=0.1 * i + 0.05 * seed)
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    )
    text = report.read_text()
    table = [line for line in text.split("## Every seed")[0].splitlines() if line.startswith("| ") and "(n=2)" in line]
    assert len(table) == len(ALL_ENCODERS)
    # CNN RGB's seeds end at 0.00 and 0.05: mean 0.025 +- t(1) 12.71 x 0.025; their last 3 evaluations
    # (success x step / steps at 500, 750, 1000) average 0.0 and 0.0375
    # on reach alone its average stands beside the paper's on reach, not the paper's four-task 0.45
    assert "| CNN RGB | 0.03 [-0.29, 0.34]; last 3: 0.02 (n=2) / 0.39 ± 0.13 | 0.03 / 0.39 (1 of 4 tasks) |" in text
    assert (
        "| reach-v3 | CNN RGB | 0, 1 | 0.00 / 0.05 | 0.03 [-0.29, 0.34] | 0.00 / 0.04 (500, 750, 1k) | 0.02 [-0.22, 0.26] "
        "| 0.39 ± 0.13 |" in text
    )
    # rliable's stratified bootstrap over 2 runs: marked, it is no 95 % interval
    assert (
        "| CNN RGB (2 x 1) | reach-v3 | 0.03 [0.00, 0.05]† | 0.03 [0.00, 0.05]† |" in text
        and "† fewer than 5 runs per task (in a comparison, on a side)" in text
    )
    assert "2 runs per task x 1 task: " in text and "performance_profiles.png" in text
    caption = next(line for line in text.splitlines() if line.startswith("Shaded: the stratified bootstrap"))
    assert "† fewer than 5 runs per task (" in caption and "CNN RGB" in caption and "no 95 % band" in caption
    assert f"{PAPER_TABLE_I['mmae_rgbs']['reach-v3'][0]:.2f} ± 0.05" in text and "Gaze on the Prize" in text
    curve = tmp_path / "report" / "curves_reach-v3.png"
    img = np.asarray(Image.open(curve).convert("L"), float)
    assert img.shape[0] > 200 and img.std() > 10  # a drawn plot, not a blank canvas
    left, right = img[:, : img.shape[1] // 2], img[:, img.shape[1] // 2 :]
    assert left.std() > 10 and right.std() > 10  # success panel and return panel both drawn
    runs = load_runs([tmp_path / "sac"])
    assert runs[0]["return_curve"][-1] == (1000.0, 200.0) and runs[0]["curve"][0] == (0.0, 0.0)
    assert "CPU test" in text and "1.0 min" in text  # footer: device and wall time of every run


def test_curves_count_seeds_against_the_plan_and_mark_the_larger_final_evaluation(tmp_path, monkeypatch):
    runs = tmp_path / "sac"
    for seed in (0, 1):
        d = _fake_run(runs, "reach-v3", "mmae_rgbs", seed, success=0.5)
        rows = (tmp_path / "sac" / "reach-v3" / "mmae_rgbs" / f"seed{seed}" / "eval.csv").read_text().splitlines()
        episodes = ["episodes"] + ["50" if row.startswith("1000,") else "10" for row in rows[1:]]
        (d / "eval.csv").write_text("\n".join(f"{r},{e}" for r, e in zip(rows, episodes)) + "\n")
    _running_run(runs, "mmae_rgbs_po", 0, [0.1, 0.2])  # no episodes column: no diamond, no claim about it
    drawn = {}

    def keep_figure(fig, path):
        drawn[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr("pipeline.report.figures.write_figure", keep_figure)
    cfg = ReportConfig(str(runs), str(tmp_path / "report"), str(tmp_path), reps=200, planned_seeds="10")
    text = write_report(cfg).read_text()
    assert "over seeds. Evaluations of 10 episodes per seed; of 50 at 1k." in text
    assert "| MMAE RGB+Saliency (ViSaRL) (n=2 of 10) | 0.00 [n/a: no spread] |" in text
    assert "| MMAE RGB+Saliency (PO) (n=1 of 10) | - | 0.10 | 0.20 | - | - |" in text
    success = drawn["curves_reach-v3.png"].axes[0]
    [legend] = drawn["curves_reach-v3.png"].legends  # one for both panels, below them
    assert [t.get_text() for t in legend.get_texts()] == [
        "MMAE RGB+Saliency (PO) (n=1 of 10, running)",
        "MMAE RGB+Saliency (ViSaRL) (n=2 of 10)",
        "50 episodes per seed (others: 10)",
    ]
    diamonds = [line for line in success.get_lines() if line.get_marker() == "D"]
    assert [list(line.get_xdata()) for line in diamonds] == [[], [1000.0]]  # ViSaRL's last point only
    assert diamonds[1].get_ydata()[0] == pytest.approx(0.5)
    assert success.xaxis.get_major_formatter()(25_000, 0) == "25k"  # steps as the curve table's columns name them


def _running_run(root: Path, encoder: str, seed: int, successes: list[float], steps: int = 1000) -> Path:
    """A run still going, as rl.workspace leaves it: config.json and eval.csv rows so far, no summary.json."""
    d = root / "reach-v3" / encoder / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"task": "reach-v3", "encoder": encoder, "seed": seed, "steps": steps}))
    rows = ["step,wall_s,success_rate,return_mean"] + [
        f"{250 * (i + 1)},1.0,{v},{1000 * v}" for i, v in enumerate(successes)
    ]
    (d / "eval.csv").write_text("\n".join(rows) + "\n")
    return d


def test_report_shows_running_runs_at_the_newest_evaluation_all_their_seeds_reached(tmp_path):
    runs = tmp_path / "sac"
    _running_run(runs, "mmae_rgb", 0, [0.1, 0.3, 0.9])  # ahead: evaluated at 250, 500, 750
    _running_run(runs, "mmae_rgb", 1, [0.2, 0.5])
    _running_run(runs, "mmae_rgbs", 0, [])  # started, not evaluated yet: nothing to show
    (tmp_path / "sac" / "mmae").mkdir()
    (tmp_path / "sac" / "mmae" / "config.json").write_text("{}")  # another stage's run folder
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    )
    text = report.read_text()
    assert "0 finished SAC runs and 2 still running" in text and "No run has finished yet." in text
    # 0.3 and 0.5: mean 0.4 +- t(1) 12.71 x 0.1 (Student t at 2 seeds: honest, hence wide)
    assert (
        "| MMAE RGB | reach-v3 | 500 of 1,000 | 0.40 [-0.87, 1.67] (0.30 / 0.50; n=2, seeds 0, 1) | 400 [-871, 1671] |"
        in text
    )
    assert "ViSaRL" not in text.split("## Runs in progress")[1].split("## Learning")[0]
    assert "| Encoder | 0.25k | 0.5k | 0.75k |" in text  # the curves as numbers: every seed's evaluations
    assert "| MMAE RGB (n=2) | 0.15 [-0.49, 0.79] | 0.40 [-0.87, 1.67] | 0.90 (n=1) |" in text
    seed1 = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "seed1"), pictures_root=str(tmp_path), reps=200, seeds="1")
    ).read_text()
    assert "0 finished SAC runs and 1 still running (only seeds 1 of each row)" in seed1
    assert "| MMAE RGB (n=1) | 0.20 | 0.50 |" in seed1  # seed 0's evaluations left out
    _fake_run(runs, "reach-v3", "state", 0, success=0.8)
    text = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert (
        "1 finished SAC runs and 2 still running" in text
        and "| State (sanity check) | 0.80; last 3: 0.60 (n=1) / n/a |" in text
    )


def test_report_without_runs_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="rl.grid"):
        write_report(ReportConfig(roots=str(tmp_path), out=str(tmp_path / "r")))


def _probe_json(path: Path, inputs: list[str], object_r2: float, object_stored: float) -> None:
    """A probe result as pretrain.probe writes it (rows per pool and baseline), warnings from its own gate."""
    from pretrain.probe import gate_warnings

    def row(
        kind: str, pool: str, dim: int, hand: float, obj: float, goal: float, obj_stored: float | None = None
    ) -> dict:
        r2 = {"hand": hand, "object": obj, "goal": goal}
        return {
            "features": f"{kind}, {'+'.join(inputs)}",
            "kind": kind,
            "pool": pool,
            "dim": dim,
            "r2": r2,
            "alpha": {t: 1.0 for t in r2},
            "r2_stored": {**r2, "object": obj if obj_stored is None else obj_stored},
        }

    result = {
        "encoder": str(path.parent / "encoder.pt"),
        "inputs": inputs,
        "store": "float16",
        "rows": [
            row("pretrained", "mean", 256, 0.96, object_r2, 0.55, object_stored),
            row("pretrained", "grid2", 1024, 0.98, 0.87, 0.61),
            row("random init", "mean", 256, 0.93, 0.25, float("nan")),
            row("pixels", "-", 768, 0.99, 0.84, 0.42),
        ],
    }
    result["warnings"] = gate_warnings(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_report_shows_the_probe_of_every_encoder(tmp_path):
    _fake_run(tmp_path / "sac", "reach-v3", "mmae_rgbs_grid2", 0, 0.5)
    cfg = ReportConfig(roots=str(tmp_path / "sac"), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    assert "probe" not in write_report(cfg).read_text().lower()  # no probe JSON: no section
    _probe_json(tmp_path / "mmae/rgbs/reach-v3/probe_rgb+saliency.json", ["rgb", "saliency"], 0.42, 0.42)
    _probe_json(tmp_path / "mmae/rgbs/reach-v3/probe_rgb.json", ["rgb"], 0.35, 0.06)
    text = write_report(cfg).read_text()
    assert "## Frozen MultiMAE probe" in text and "MMAE RGB+Saliency, 2x2 grid pool" in text
    section = text.split("## Frozen MultiMAE probe")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| Encoder | Inputs | Features | Pool | Dim | hand R^2 | object R^2 | goal R^2 |"
    assert len(table) == 1 + 2 * 4  # header + 4 rows per probe
    assert "| mmae/rgbs/reach-v3/encoder.pt | rgb+saliency | pretrained | grid2 | 1024 | 0.98 | 0.87 | 0.61 |" in table
    assert (
        "| mmae/rgbs/reach-v3/encoder.pt | rgb | pretrained | mean | 256 | 0.96 | 0.35 (0.06 in float16) | 0.55 |"
        in table
    )
    assert "| mmae/rgbs/reach-v3/encoder.pt | rgb | random init | mean | 256 | 0.93 | 0.25 | n/a |" in table
    assert "| mmae/rgbs/reach-v3/encoder.pt | rgb | pixels | - | 768 | 0.99 | 0.84 | 0.42 |" in table
    warnings = [line for line in text.splitlines() if line.startswith("- WARNING:")]
    assert len(warnings) == 1 and "drops object R^2 from 0.35 to 0.06" in warnings[0]


def test_the_papers_orderings_hold_only_when_the_interval_of_the_difference_excludes_zero(tmp_path):
    from pipeline.report.claims import improvement_table, ordering_table

    runs = tmp_path / "sac"
    for seed, (rgb, po, visarl, cnn) in enumerate(
        [(0.10, 0.50, 0.30, 0.4), (0.20, 0.60, 0.70, 0.5), (0.15, 0.55, 0.50, 0.6)]
    ):
        _fake_run(runs, "reach-v3", "mmae_rgb", seed, success=rgb)
        _fake_run(runs, "reach-v3", "mmae_rgbs_po", seed, success=po)
        _fake_run(runs, "reach-v3", "mmae_rgbs", seed, success=visarl)
        _fake_run(runs, "reach-v3", "cnn_rgbs", seed, success=cnn)
        _fake_run(runs, "reach-v3", "cnn_rgb", seed, success=0.9)  # no gaze: its claim has no row
    loaded = load_runs([runs])
    table = ordering_table(loaded)
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert set(rows) == {
        "CNN RGB < CNN RGBS",
        "MMAE RGB < MMAE RGB+Saliency (PO)",
        "MMAE RGB+Saliency (PO) < MMAE RGB+Saliency (ViSaRL)",
        "MMAE RGB < MMAE RGB+Saliency (ViSaRL)",
    }
    # Welch: sds 0.05 / 0.05 -> se 0.0408, df 4, t 2.776; sds 0 / 0.1 -> se 0.0577, df 2, t 4.303
    assert "| +0.40 [+0.29, +0.51] | holds (n=3 / 3) | -0.01 |" in rows["MMAE RGB < MMAE RGB+Saliency (PO)"]
    assert "| -0.40 [-0.65, -0.15] | reversed (n=3 / 3) | +0.12 |" in rows["CNN RGB < CNN RGBS"]
    po_visarl = rows["MMAE RGB+Saliency (PO) < MMAE RGB+Saliency (ViSaRL)"]
    assert "| -0.05 [" in po_visarl and "| not resolved (n=3 / 3) | +0.14 |" in po_visarl
    # pooled sd of (0.5, 0.6, 0.55) and (0.3, 0.7, 0.5): sqrt((0.005 + 0.08) / 4) = 0.146; the paper's 0.14 needs 19 seeds
    assert (
        "the paper's gap +0.14 needs 19 seeds per arm (too few seeds); at 80 % power the current 3 resolve gaps of 0.45 "
        "or more |" in po_visarl
    )
    improvements = improvement_table(loaded, reps=200)  # the verdict is Welch's; the 3-run bootstrap is marked
    assert (
        "| MMAE RGB < MMAE RGB+Saliency (PO) | reach-v3 | 3 / 3 | +0.40 [+0.29, +0.51] | holds | 1.00 [n/a: every resample gives 1.00] "
        "| -0.01 |" in improvements
    )
    assert (
        "| CNN RGB < CNN RGBS | reach-v3 | 3 / 3 | -0.40 [-0.65, -0.15] | reversed "
        "| 0.00 [n/a: every resample gives 0.00] | +0.12 |" in improvements
    )
    po_visarl = improvements.split("(PO) < MMAE RGB+Saliency (ViSaRL) | reach-v3 | 3 / 3 | ")[1].splitlines()[0]
    assert "| not resolved | 0.39 [" in po_visarl  # 3.5 of 9 pairs: 0.7 beats all, 0.5 ties 0.5
    assert (
        "- MMAE RGB+Saliency (PO) < MMAE RGB+Saliency (ViSaRL) over 1 task (observed spread within tasks, sd 0.15): "
        "the paper's gap +0.14 needs 19 seeds per arm (too few seeds)" in improvements
    )
    for seed in (3, 4):  # 5 runs a side: the probability of improvement gives a verdict
        _fake_run(runs, "reach-v3", "mmae_rgb", seed, success=0.1 * seed - 0.2)
        _fake_run(runs, "reach-v3", "mmae_rgbs_po", seed, success=0.55)
    text = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert "## The papers' orderings" in text
    assert "Per task:" not in text  # one task: the table across tasks is the per-task one
    assert "| MMAE RGB < MMAE RGB+Saliency (PO) | reach-v3 | 5 / 5 | +0.40 [" in text
    assert "| holds | 1.00 [n/a: every resample gives 1.00] | -0.01 |" in text  # the sides never overlap
    # the simulation behind the verdict's coverage, as it was run: each claim's sides, of unequal spreads
    assert (
        "(for the gap two sides, sd 0.1 on one side and 0.3 on the other; for the mean one side, one spread; scores "
        "bounded by 0 and 1 and diverged runs' zeros are not simulated), at 3 / 3 runs per task x 1 task the Welch "
        "interval of a gap covered the true gap in 9" in text
    )
    assert "; at 5 / 5 runs per task x 1 task the Welch interval of a gap covered the true gap in 9" in text


def test_a_partial_one_task_table_says_what_its_numbers_can_and_cannot_tell(tmp_path):
    """Phase A of the CPU table read early: cells short of their planned seeds read 'n of N' under an interim
    warning, runs still going are counted, seeds that all agree get no zero-width '95 %' interval, a bootstrap over
    one run gives none, and with one task the aggregates say they are no aggregate across tasks."""
    runs = tmp_path / "sac"
    for seed in range(3):
        _fake_run(runs, "reach-v3", "state", seed, success=1.0)  # every seed at 1.00: no spread
        _fake_run(runs, "reach-v3", "mmae_rgbs", seed, success=(0.5, 0.7, 0.6)[seed])
    _fake_run(runs, "reach-v3", "mmae_rgb", 0, success=0.2)
    _running_run(runs, "mmae_rgb", 1, [0.1])

    def report(planned: str) -> str:
        cfg = ReportConfig(str(runs), str(tmp_path / "report"), str(tmp_path), reps=200, planned_seeds=planned)
        return write_report(cfg).read_text()

    text = report("reach-v3/state=3,reach-v3/*=10")  # the first pattern that matches counts
    assert "**Interim:** some encoders have fewer finished seeds on a task than planned (1 of 10, 3 of 10:" in text
    # the last 3 evaluations' steps are named (evaluations every 250 of 1,000 steps: the last half of training)
    assert "| Encoder | reach-v3: final [95 % t-CI]; last 3 (500, 750, 1k) (n) / paper |" in text
    assert "| State (sanity check) | 1.00 [n/a: no spread]; last 3: 0.75 (n=3) / n/a |" in text
    assert "| MMAE RGB | 0.20; last 3: 0.15 (n=1 of 10, +1 running) / 0.49 ± 0.03 |" in text
    assert "| State (sanity check) (3 x 1) | reach-v3 | 1.00 [n/a: no spread] | 1.00 [n/a: no spread] |" in text
    assert "| MMAE RGB (1 x 1) | reach-v3 | 0.20 [n/a: 1 run per task] | 0.20 [n/a: 1 run per task] |" in text
    assert "One task (reach-v3): these are bootstrap intervals over its seeds, not an aggregate across tasks" in text
    claim = next(line for line in text.splitlines() if line.startswith("| MMAE RGB < MMAE RGB+Saliency (ViSaRL) |"))
    assert (
        "| 1 of 10, +1 running / 3 of 10 | +0.40 [n/a: a side has 1 seed] | n/a "
        "| 1.00 [n/a: a side has 1 run per task] |" in claim
    )
    # the spread of ViSaRL's three seeds (sd 0.1, 2 degrees of freedom) sizes the test though the other side has one,
    # beside the 10 seeds planned per side
    assert (
        "- MMAE RGB < MMAE RGB+Saliency (ViSaRL) over 1 task (observed spread within tasks, sd 0.10): a side has 1 "
        "seed (no interval yet); the paper's gap +0.13 needs 11 seeds per arm (too few seeds; the 10 planned would "
        "not)." in text
    )
    assert "Per task:" not in text  # every claim on one task: the table above is the per-task one
    # the simulation behind the verdict's coverage, as it was run: one task, two sides of unequal spreads
    assert "which gives no verdict: a percentile bootstrap covers less than 95 % at few runs." in text  # 1 vs 3
    assert "Interim" not in report("") and "of 10" not in report("")
    # a row the plan names exactly with no finished run (RGB+S PO, whose encoder is not pretrained yet) is shown
    # as not run yet, and so are the claims it is a side of, not left out
    text = report("reach-v3/mmae_rgbs_po=10,reach-v3/*=3")
    assert "| MMAE RGB+Saliency (PO) | - (n=0 of 10) / 0.48 ± 0.06 | - / - |" in text
    for claim, counts in (
        ("MMAE RGB < MMAE RGB+Saliency (PO)", "1 of 3, +1 running / 0 of 10"),
        ("MMAE RGB+Saliency (PO) < MMAE RGB+Saliency (ViSaRL)", "0 of 10 / 3"),
    ):
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim} |"))
        assert f"| reach-v3 | {counts} | - | n/a: no MMAE RGB+Saliency (PO) run finished there yet | - |" in row, row
        assert f"- {claim} on reach-v3: not read yet (no MMAE RGB+Saliency (PO) run finished there yet)." in text
    assert "| MMAE RGB+Saliency (PO) |" not in report("reach-v3/*=3")  # a pattern plans no row of its own
    assert "Interim" not in report("reach-v3/mmae_rgb=1,*=3")  # every cell has its planned seeds
    # a cell the plan names with nothing finished yet (only running, or not started) is short too
    assert (
        "(1 of 3: 'n of N' in Table I and the seed, ordering and ablation tables); planned tasks with no finished run yet: door-open-v3."
        in (report("door-open-v3/state=2, reach-v3/*=3"))
    )
    assert "Interim" not in report("door-open-v3/*=2,reach-v3/mmae_rgb=1,*=3")  # a pattern names no cell
    assert "**Interim:** planned tasks with no finished run yet: door-open-v3. The verdicts" in report(
        "reach-v3/state=3,door-open-v3/state=3"
    )
    for bad in ("reach-v3=10", "reach-v3/*=x", "=5", "reach-v3/*=²", "reach-v3/mmae_rgbs [precision=bf16]=3"):
        with pytest.raises(ValueError, match="is not N or task/encoder=N"):
            ReportConfig(str(runs), planned_seeds=bad).validate()
    planned = PlannedSeeds.parse(" reach-v3/* = 10 , 5 ")
    assert planned("mmae_rgbs [precision=bf16]", "reach-v3") == 10 and planned("state", "door-open-v3") == 5


def test_claims_say_where_a_side_has_no_finished_run_yet(tmp_path):
    """Two tasks: MMAE RGB finished on reach only, ViSaRL on neither (both planned). A claim compared on reach says
    door-open is still to come; a claim with no finished side anywhere is listed, not dropped; rows read in the
    papers' order."""
    runs = tmp_path / "sac"
    for task in ("reach-v3", "door-open-v3"):
        for seed in range(2):
            _fake_run(runs, task, "mmae_rgbs_po", seed, success=0.5 + 0.1 * seed)
    for seed in range(2):
        _fake_run(runs, "reach-v3", "mmae_rgb", seed, success=0.2 + 0.1 * seed)
    planned = "reach-v3/mmae_rgbs=3,door-open-v3/mmae_rgbs=3,door-open-v3/mmae_rgb=3,*=3"
    cfg = ReportConfig(str(runs), str(tmp_path / "report"), str(tmp_path), reps=200, planned_seeds=planned)
    text = write_report(cfg).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| MMAE RGB") and " < " in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| MMAE RGB < MMAE RGB+Saliency (PO)",
        "| MMAE RGB+Saliency (PO) < MMAE RGB+Saliency (ViSaRL)",
        "| MMAE RGB < MMAE RGB+Saliency (ViSaRL)",
    ]
    assert rows[0].startswith(
        "| MMAE RGB < MMAE RGB+Saliency (PO) | reach-v3 (not yet on door-open-v3: a side has no finished run there) "
        "| 2 of 3 / 2 of 3 | +0.30"
    )
    for row, counts in ((rows[1], "2 of 3 / 0 of 3"), (rows[2], "0 of 3 / 0 of 3")):  # MMAE RGB ran on reach only
        assert (
            f"| reach-v3, door-open-v3 | {counts} | - | n/a: no MMAE RGB+Saliency (ViSaRL) run finished there yet |"
            in row
        )
    assert (
        "| MMAE RGB | 0.25 [-0.39, 0.89]; last 3: 0.19 (n=2 of 3) / 0.49 ± 0.03 | - (n=0 of 3) / 0.35 ± 0.19 "
        "| 0.25 / 0.49 (1 of 4 tasks) |" in text
    )


def test_a_claim_whose_side_shares_no_seed_across_tasks_is_listed_and_every_table_counts_against_the_plan(tmp_path):
    """MMAE RGB finished seeds 0, 1 on reach and 2, 3 on door-open: no one seed on both, so rliable's [runs, tasks]
    matrix is empty and the aggregate claim cannot be read; it is listed saying why, not dropped, and the per-task
    table compares it on each task. Each table counts seeds against the plan (3)."""
    runs = tmp_path / "sac"
    for task, seeds in (("reach-v3", (0, 1)), ("door-open-v3", (2, 3))):
        for seed in seeds:
            _fake_run(runs, task, "mmae_rgb", seed, success=0.2 + 0.1 * (seed % 2))
        for seed in (0, 1):
            _fake_run(runs, task, "mmae_rgbs_po", seed, success=0.5 + 0.1 * seed)
    cfg = ReportConfig(str(runs), str(tmp_path / "report"), str(tmp_path), reps=200, planned_seeds="3")
    text = write_report(cfg).read_text()
    paper = np.mean(
        [PAPER_TABLE_I["mmae_rgbs_po"][t][0] - PAPER_TABLE_I["mmae_rgb"][t][0] for t in ("reach-v3", "door-open-v3")]
    )
    assert (
        "| MMAE RGB < MMAE RGB+Saliency (PO) | reach-v3, door-open-v3 | 0 of 3 / 2 of 3 | - | n/a: no MMAE RGB seed "
        f"finished on every one of these tasks | - | {paper:+.2f} |" in text
    )
    assert "- MMAE RGB < MMAE RGB+Saliency (PO) on reach-v3, door-open-v3: not read yet (no MMAE RGB seed" in text
    per_task = [line for line in text.splitlines() if line.startswith("| MMAE RGB < MMAE RGB+Saliency (PO) | ")]
    assert [line.split(" | ")[1] for line in per_task[1:]] == ["reach-v3", "door-open-v3"]
    assert all("(n=2 of 3 / 2 of 3)" in line for line in per_task[1:])
    assert "| reach-v3 | MMAE RGB | 0, 1 (2 of 3) | 0.20 / 0.30 |" in text
    assert "| door-open-v3 | MMAE RGB | 2, 3 (2 of 3) | 0.20 / 0.30 |" in text
    assert "| reach-v3 | MMAE RGB+Saliency (PO) | 0, 1 (2 of 3) |" in text
    full = write_report(replace(cfg, planned_seeds="2")).read_text()
    assert "| reach-v3 | MMAE RGB | 0, 1 | 0.20 / 0.30 |" in full and "(n=2 / 2)" in full


def test_a_row_split_by_precision_counts_toward_its_plan_with_the_other_precisions_seeds(tmp_path):
    """A plan names seeds, not precisions: 3 fp32 and 2 bf16 seeds of a row planned at 5 are all its seeds."""
    from pipeline.report.runs import split_mixed_precision
    from pipeline.report.tables import table_i
    from pipeline.report.writer import interim_note

    runs = tmp_path / "sac"
    for seed in range(5):
        _precision_run(runs, "state", seed, 0.5, "fp32" if seed < 3 else "bf16")
    loaded = load_runs([runs])
    split_mixed_precision(loaded)
    assert interim_note(loaded, [], PlannedSeeds.parse("5")) == ""
    assert "(n=3) / n/a" in table_i(loaded, planned=PlannedSeeds.parse("5"))
    assert "(n=3 of 6) / n/a" in table_i(loaded, planned=PlannedSeeds.parse("6"))
    assert "(5 of 6:" in interim_note(loaded, [], PlannedSeeds.parse("6"))
    for seed in range(3):  # the same seeds again in bf16 (#23's check): still 5 distinct seeds
        _precision_run(tmp_path / "again", "state", seed, 0.4, "bf16")
    loaded = load_runs([runs, tmp_path / "again"])
    split_mixed_precision(loaded)
    assert "(5 of 6:" in interim_note(loaded, [], PlannedSeeds.parse("6"))


def test_the_last_evaluations_are_named_per_task_with_their_own_count_and_steps(tmp_path):
    """Tasks of different budgets evaluate at different steps: each Table I column names its own; runs with fewer
    evaluations than 3 say 'last 2' in the header and the cells alike."""
    from pipeline.report.tables import table_i

    runs = tmp_path / "sac"
    _fake_run(runs, "reach-v3", "state", 0, success=0.5)  # evaluated every 250 of 1,000 steps
    _fake_run(runs, "door-open-v3", "state", 0, success=0.5, steps=2000)
    short = _fake_run(runs, "drawer-open-v3", "state", 0, success=0.5)
    (short / "eval.csv").write_text("step,wall_s,success_rate,return_mean\n500,1.0,0.2,1\n1000,2.0,0.4,2\n")
    header, _, row = table_i(load_runs([runs])).splitlines()
    assert "| reach-v3: final [95 % t-CI]; last 3 (500, 750, 1k) (n) / paper |" in header
    assert "| drawer-open-v3: final [95 % t-CI]; last 2 (500, 1k) (n) / paper |" in header
    assert "| door-open-v3: final [95 % t-CI]; last 3 (1.5k, 1.75k, 2k) (n) / paper |" in header
    assert "| 0.50; last 2: 0.30 (n=1) / n/a |" in row


def test_the_papers_gap_is_read_against_our_interval_before_any_seed_count():
    """'Too few seeds' only where our interval is unresolved and still holds the paper's gap; a gap our interval
    excludes is said to be excluded (not to need more seeds), a resolved claim says so; a spread from one seed
    pair sizes no test."""
    from pipeline.report.claims import seeds_reading

    spread = (0.15, 18)  # sd, degrees of freedom
    assert seeds_reading(0.14, spread, 10, 1, -0.18, 0.13) == (
        "the paper's gap +0.14 lies above our interval: a gap that large is not what these runs show (the paper's "
        "is at 1M steps)"
    )
    assert seeds_reading(0.62 - 0.48, spread, 3, 1, -0.34, 0.1397) == (  # both print +0.14: the end's digits say which
        "the paper's gap +0.14 lies just above our interval (its upper end: +0.1397): a gap that large is not what "
        "these runs show (the paper's is at 1M steps)"
    )
    assert seeds_reading(0.05, spread, 3, 1, 0.052, 0.3).startswith(
        "holds at these seeds; the paper's gap +0.05 lies just below our interval (its lower end: +0.052)"
    )
    assert seeds_reading(-0.2, spread, 10, 1, -0.1, 0.2).startswith("the paper's gap -0.20 lies below our interval")
    assert seeds_reading(0.13, spread, 10, 1, 0.05, 0.41) == (
        "holds at these seeds; the paper's gap +0.13 lies inside our interval"
    )
    assert seeds_reading(-0.01, spread, 10, 1, 0.06, 0.30) == (
        "holds at these seeds; the paper's gap -0.01 lies below our interval"
    )
    assert seeds_reading(0.14, spread, 10, 1, -0.05, 0.23) == (
        "the paper's gap +0.14 needs 20 seeds per arm (too few seeds); at 80 % power the current 10 resolve gaps of "
        "0.20 or more"
    )
    assert seeds_reading(0.14, (0.01, 1), 1, 1) == (
        "a side has 1 seed (no interval yet); the spread rests on 1 degree of freedom: too rough to size a test by yet"
    )
    assert seeds_reading(0.14, (float("nan"), 0), 1, 1) == "no side has 2 seeds: no spread to size a test by yet"
    assert seeds_reading(0.14, spread, 10, 1, -0.3, -0.05).startswith("reversed at these seeds; the paper's gap")
    assert seeds_reading(float("nan"), spread, 10, 1, -0.05, 0.2).startswith("the paper gives no gap here; at 80 %")
    assert "needs over 1,000 seeds per arm" in seeds_reading(0.001, spread, 10, 1, -0.05, 0.2)
    assert seeds_reading(0.14, (0.0, 4), 3, 1) == "n/a: no seed differs from another (no spread to size a test by)"
    # beside the plan: the seeds it will have, where it has more than now
    assert seeds_reading(0.14, spread, 3, 1, -0.05, 0.5, planned=10).startswith(
        "the paper's gap +0.14 needs 20 seeds per arm (too few seeds; the 10 planned would not); at 80 % power"
    )
    assert "(too few seeds; the 25 planned would do)" in seeds_reading(0.14, spread, 3, 1, -0.05, 0.5, planned=25)
    assert "(too few seeds); at" in seeds_reading(0.14, spread, 10, 1, -0.05, 0.23, planned=10)


def test_a_bootstrap_resamples_runs_within_tasks_so_its_marks_count_runs_per_task(tmp_path):
    """One run on each of two tasks is no bootstrap interval (each task's resample is that run); two runs on each of
    three tasks are marked as too few (the percentile bootstrap covers ~71 % there), ten runs of one task are not."""
    from pipeline.report.claims import aggregate_table

    runs = tmp_path / "sac"
    for task, success in (("reach-v3", 0.2), ("door-open-v3", 0.6)):
        _fake_run(runs, task, "mmae_rgb", 0, success=success)
    for task in ("reach-v3", "drawer-open-v3", "door-open-v3"):
        for seed in range(2):
            _fake_run(runs, task, "mmae_rgbs", seed, success=0.3 + 0.2 * seed)
    for seed in range(10):
        _fake_run(runs, "reach-v3", "state", seed, success=0.05 * seed)
    rows = {line.split(" | ")[0]: line for line in aggregate_table(load_runs([runs]), reps=200).splitlines()}
    assert rows["| MMAE RGB (1 x 2)"].endswith("| 0.40 [n/a: 1 run per task] | 0.40 [n/a: 1 run per task] |")
    assert rows["| MMAE RGB+Saliency (ViSaRL) (2 x 3)"].count("]†") == 2
    assert "†" not in rows["| State (sanity check) (10 x 1)"]


def test_aggregates_stratify_over_tasks_and_profiles_are_drawn(tmp_path):
    from pipeline.report.claims import aggregate_table
    from pipeline.report.tables import table_i

    runs = tmp_path / "sac"
    scores = {
        "reach-v3": (0.0, 0.9, 0.2),
        "drawer-open-v3": (0.5, 1.0, 0.3),
        "faucet-open-v3": (0.4, 0.6, 0.1),
        "door-open-v3": (0.7, 0.8, 0.05),
    }
    for task, values in scores.items():
        for seed, value in enumerate(values):
            _fake_run(runs, task, "mmae_rgbs", seed, success=value)
    _fake_run(runs, "reach-v3", "mmae_rgb", 0, success=0.3)
    _fake_run(runs, "door-open-v3", "mmae_rgb", 1, success=0.6)  # no seed on both of its tasks: no aggregate
    table = aggregate_table(load_runs([runs]), reps=300)
    # IQM of the 12 runs: the middle 6 of 0, .05, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1 -> 0.45; mean 0.4625
    row = next(line for line in table.splitlines() if line.startswith("| MMAE RGB+Saliency (ViSaRL) (3 x 4) |"))
    assert row.startswith(
        "| MMAE RGB+Saliency (ViSaRL) (3 x 4) | reach-v3, drawer-open-v3, faucet-open-v3, door-open-v3 | 0.45 ["
    )
    assert "| 0.46 [" in row
    assert not any(line.startswith("| MMAE RGB (") for line in table.splitlines())
    assert "3 runs per task x 4 tasks: 8" in table  # the simulated coverage, ~82 %, below the nominal 95 %
    assert "]†" in row  # 3 runs per task: marked
    average = {line.split(" | ")[0]: line.split(" | ")[-1] for line in table_i(load_runs([runs])).splitlines()}
    assert average["| MMAE RGB+Saliency (ViSaRL)"] == "0.46 / 0.65 |"  # all four tasks: the paper's printed average
    assert average["| MMAE RGB"] == "0.45 / 0.42 (2 of 4 tasks) |"  # the paper's reach and door: (0.49 + 0.35) / 2
    write_report(ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200))
    img = np.asarray(Image.open(tmp_path / "report" / "performance_profiles.png").convert("L"), float)
    assert img.shape[0] > 200 and img.std() > 10
    assert "† fewer than 5 runs per task (MMAE RGB+Saliency (ViSaRL)): " in profiles_caption(load_runs([runs]))
    five = tmp_path / "five"
    for seed in range(5):
        _fake_run(five, "reach-v3", "state", seed, success=0.2 * seed)
    assert profiles_caption(load_runs([five])) == (
        "Shaded: the stratified bootstrap 95 % band of each profile (the aggregates' resampling)."
    )


def test_report_reads_a_results_folder_given_as_a_word_and_names_a_missing_one(tmp_path, capsys):
    from pipeline.report.writer import main

    results = tmp_path / "results" / "exp"
    _fake_run(results / "runs" / "sac", "reach-v3", "state", 0, success=0.8)
    _probe_json(
        results / "mmae/rgbs/reach-v3/probe_rgb.json", ["rgb"], 0.35, 0.35
    )  # the pictures root is the folder itself
    main([str(results), "--out", str(tmp_path / "report"), "--reps", "200"])
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| State (sanity check) | 0.80; last 3: 0.60 (n=1) / n/a |" in text and "## Frozen MultiMAE probe" in text
    main(["--roots", str(results), "--out", str(tmp_path / "again"), "--reps", "200"])  # the flag form still works
    assert (tmp_path / "again" / "REPORT.md").read_text() == text.replace(
        str(tmp_path / "report"), str(tmp_path / "again")
    )
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "results" / "nope"), "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2 and "no such folder" in capsys.readouterr().err


def test_runs_with_a_fidelity_option_are_a_row_of_their_own(tmp_path):
    """--mmae-features raw (and the other options of README's "Faithful to the paper" table) change what a
    row measures: such runs are never pooled with the default's seeds."""
    runs = tmp_path / "sac"
    for seed in (0, 1):
        _fake_run(runs / "default", "reach-v3", "mmae_rgbs", seed, 0.2)
        variant = _fake_run(runs / "variant", "reach-v3", "mmae_rgbs", seed, 0.6)
        (variant / "config.json").write_text(
            json.dumps(
                {
                    "encoder": "mmae_rgbs",
                    "mmae_features": "raw",
                    "saliency_scale": "paper",
                    "gaze_return_discount": 1.0,
                }
            )
        )
    for seed in (0, 1):  # an option of another encoder's rows (recorded by every run) is no variant of this one
        cnn = _fake_run(runs / "cnn", "reach-v3", "cnn_rgb", seed, 0.3)
        (cnn / "config.json").write_text(json.dumps({"encoder": "cnn_rgb", "mmae_features": "raw"}))
    rows = {r["encoder"]: r for r in load_runs([runs])}
    assert set(rows) == {"mmae_rgbs", "mmae_rgbs [mmae_features=raw]", "cnn_rgb"}
    text = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert "| MMAE RGB+Saliency (ViSaRL) | 0.20" in text
    assert "| MMAE RGB+Saliency (ViSaRL) [mmae_features=raw] | 0.60" in text


def test_report_embeds_a_clip_per_task_and_encoder_and_states_the_precision(tmp_path):
    runs = tmp_path / "sac"
    for enc in ("cnn_rgb", "mmae_rgbs"):
        for seed in (0, 1):
            d = _fake_run(runs, "reach-v3", enc, seed, 0.5)
            (d / "agent.pt").write_bytes(b"weights")
            (d / "evaluate").mkdir()
            Image.new("RGB", (8, 8), (seed * 200, 0, 0)).save(d / "evaluate" / "clip.gif")
    text = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert "## Watch the agents" in text
    assert (
        "**reach-v3**: CNN RGB ![cnn_rgb](clips/reach-v3_cnn_rgb.gif) MMAE RGB+Saliency (ViSaRL) ![mmae_rgbs]" in text
    )
    clip = Image.open(tmp_path / "report" / "clips" / "reach-v3_cnn_rgb.gif").convert("RGB")
    assert clip.getpixel((0, 0)) == (0, 0, 0)  # the lowest seed's clip
    assert "| Precision |" in text and "| fp32 |" in text  # runs from before the switch ran in fp32


def _variant_run(root: Path, seed: int, success: float, encoder: str = "mmae_rgbs", **setting) -> None:
    run = _fake_run(root, "reach-v3", encoder, seed, success)
    (run / "config.json").write_text(json.dumps({"encoder": encoder, **setting}))


def test_an_ablation_is_the_settings_difference_from_the_default_with_its_welch_interval(tmp_path):
    from pipeline import stats
    from pipeline.report.claims import variant_table
    from pipeline.report.runs import last_evals_mean

    runs = tmp_path / "sac"
    default, raw, scaled = [0.10, 0.20, 0.15], [0.60, 0.70, 0.65], [0.05, 0.30, 0.15]
    for seed in range(3):
        _variant_run(runs / "default", seed, default[seed], mmae_features="standardized")
        _variant_run(runs / "variant", seed, raw[seed], mmae_features="raw")
        _variant_run(runs / "cnn", seed, default[seed], "cnn_rgbs", saliency_scale="paper")
        _variant_run(runs / "scaled", seed, scaled[seed], "cnn_rgbs", saliency_scale="authors")
    loaded = sorted(load_runs([runs]), key=lambda r: r["seed"])
    table = variant_table(loaded)
    diff, lo, hi = stats.welch_interval(default, raw)
    # the fake curves ramp to the final value: the last 3 evaluations average ~0.75 of it
    rows = ("mmae_rgbs", "mmae_rgbs [mmae_features=raw]")
    last = stats.welch_interval(*([last_evals_mean(r) for r in loaded if r["encoder"] == row] for row in rows))
    sd = stats.pooled_sd([[last_evals_mean(r) for r in loaded if r["encoder"] == row] for row in rows])
    seeds = f"{stats.seeds_needed(last[0], sd)} (the current 3 resolve {stats.detectable_gap(sd, 3):.2f} or more)"
    assert (
        f"| MMAE RGB+Saliency (ViSaRL): mmae_features=raw | reach-v3 | 3 / 3 | 0.15 / 0.65 | "
        f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}] | better | 0.11 / 0.49 (500, 750, 1k) | {last[0]:+.2f} "
        f"[{last[1]:+.2f}, {last[2]:+.2f}] | better | {seeds} |"
    ) in table
    assert lo > 0 and abs(diff - 0.50) < 1e-9
    scaled = next(line for line in table.splitlines() if "saliency_scale=authors" in line)
    assert scaled.count("not resolved") == 2  # 0.05-0.30 against 0.10-0.20: the interval spans 0
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert "## Settings against their defaults (ablations)" in report and table in report


def _precision_run(root: Path, encoder: str, seed: int, success: float, precision: str | None, **setting) -> None:
    d = _fake_run(root, "reach-v3", encoder, seed, success)
    recorded = {"precision": precision} if precision else {}  # runs from before precision was recorded: none
    summary = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**summary, **recorded}))
    (d / "config.json").write_text(json.dumps({"encoder": encoder, **recorded, **setting}))


def test_an_encoder_of_mixed_precisions_is_split_and_each_setting_compared_within_its_precision(tmp_path):
    """The same seeds in fp32 and bf16 (#23's learning check) are two rows, not one of doubled seeds, and the
    ablation table compares them; a setting is compared with the default runs of its own precision, never with the
    other precision's (which would credit the precision's effect to the setting); the precision most of an
    encoder's runs used is its reference (fp32 on a tie); an encoder of one precision keeps its name; runs
    recorded without a precision ran fp32."""
    from pipeline.report.claims import variant_table
    from pipeline.report.runs import check_distinct, split_mixed_precision

    runs = tmp_path / "sac"
    for seed in range(3):
        _precision_run(runs / "fp32", "state", seed, 0.5 + 0.1 * seed, "fp32")
        _precision_run(runs / "bf16", "state", seed, 0.4 + 0.1 * seed, "bf16")
        _precision_run(runs / "old", "mmae_rgb", seed, 0.3, None)
        _precision_run(runs / "bf16", "mmae_rgbs", seed, 0.2, "bf16")
        _precision_run(runs / "gaze-fp32", "gaze", seed, 0.4 + 0.1 * seed, "fp32")
        _precision_run(runs / "gaze-disc", "gaze", seed, 0.1 + 0.1 * seed, "bf16", gaze_return_discount=0.99)
    for seed in range(2):  # gaze's default runs: 3 fp32, 2 bf16, so fp32 is its reference, though 5 of 8 runs are bf16
        _precision_run(runs / "gaze-bf16", "gaze", seed, 0.1 + 0.1 * seed, "bf16")
    loaded = load_runs([runs])  # split as it loads: as one row, each seed would count twice
    check_distinct(loaded)
    notes = split_mixed_precision(loaded)  # again: the same rows, and the report's notes
    check_distinct(loaded)
    assert {r["encoder"] for r in loaded} == {
        "state",
        "state [precision=bf16]",
        "mmae_rgb",
        "mmae_rgbs",
        "gaze",
        "gaze [precision=bf16]",
        "gaze [gaze_return_discount=0.99, precision=bf16]",
    }
    rest = "run(s); {} (most of its default-settings runs) is the reference, the others are rows marked precision=<p>"
    assert notes == [
        "reach-v3, Gaze on the Prize: 5 bf16, 3 fp32 " + rest.format("fp32"),
        "reach-v3, State (sanity check): 3 fp32, 3 bf16 " + rest.format("fp32"),
    ]
    table = variant_table(loaded).splitlines()
    state = "| State (sanity check): precision=bf16 | reach-v3 | 3 / 3 | 0.60 / 0.50 | -0.10 ["
    discount = [line for line in table if "gaze_return_discount=0.99 |" in line]  # against gaze's 2 bf16 runs alone
    bf16 = "| Gaze on the Prize: precision=bf16 | reach-v3 | 3 / 2 | 0.50 / 0.15 |"
    assert any(line.startswith(state) for line in table) and any(line.startswith(bf16) for line in table)
    assert len(discount) == 1
    assert discount[0].startswith(
        "| Gaze on the Prize [precision=bf16]: gaze_return_discount=0.99 | reach-v3 | 2 / 3 | 0.15 / 0.20 |"
    )
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert state in report and "kept apart:\n\n- reach-v3, Gaze on the Prize: 5 bf16" in report
    # the reference is the plain row's precision, however many variant runs the other has; a variant whose own
    # precision has no default runs is named, not dropped
    mixed = tmp_path / "mixed"
    for seed in range(4):
        _precision_run(mixed / "raw", "mmae_rgbs", seed, 0.5, "fp32", mmae_features="raw")
    for seed in range(3):
        _precision_run(mixed / "plain", "mmae_rgbs", seed, 0.4, "bf16")
    rows = {r["encoder"] for r in load_runs([mixed])}
    assert rows == {"mmae_rgbs", "mmae_rgbs [mmae_features=raw, precision=fp32]"}
    assert variant_table(load_runs([mixed])) == (
        "- not compared: MMAE RGB+Saliency (ViSaRL) [mmae_features=raw, precision=fp32] on reach-v3: no "
        "mmae_rgbs [precision=fp32] runs to compare it with"
    )
    # a diverged bf16 run is counted at its own row's budget (500 steps), not at the fp32 row's (1,000)
    other = tmp_path / "diverged"
    for seed in range(2):
        _precision_run(other, "state", seed, 0.5, "fp32")
    broken = _fake_run(other / "short", "reach-v3", "state", 0, 0.0, steps=500)
    summary = json.loads((broken / "summary.json").read_text())
    (broken / "summary.json").write_text(json.dumps({**summary, "precision": "bf16", "diverged": {"step": 300}}))
    (broken / "config.json").write_text(json.dumps({"encoder": "state", "precision": "bf16", "steps": 500}))
    (counted,) = [r for r in load_runs([other]) if r["dir"] == broken]
    assert counted["encoder"] == "state [precision=bf16]" and counted["steps"] == 500


def test_an_ablation_gives_no_verdict_on_unfinished_runs_no_spread_or_evaluations_at_other_steps(tmp_path):
    """A seed still running (or one that diverged and never finished) leaves the survivors, which would favour a
    setting that breaks runs: no verdict until both sides have finished. Both sides without spread give no
    interval (not one of zero width). Last evaluations are one per step (a step evaluated twice by an interrupted
    run counts once) and must be the same steps on both sides."""
    from pipeline.report.claims import variant_table
    from pipeline.report.runs import last_evals, load_running

    runs = tmp_path / "sac"
    for seed in range(3):
        _variant_run(runs / "default", seed, 0.0, mmae_features="standardized")
        if seed < 2:
            _variant_run(runs / "variant", seed, 0.05, mmae_features="raw")
    running = runs / "variant" / "reach-v3" / "mmae_rgbs" / "seed2"
    running.mkdir(parents=True)
    config = {"encoder": "mmae_rgbs", "task": "reach-v3", "mmae_features": "raw"}
    (running / "config.json").write_text(json.dumps(config))
    (running / "eval.csv").write_text("step,wall_s,success_rate,return_mean\n250,1.0,0.0,10.0\n")
    line = variant_table(load_runs([runs]), load_running([runs])).splitlines()[-1]
    assert "| 3 / 2, +1 running |" in line and line.count("n/a: runs unfinished") == 2
    running.joinpath("eval.csv").unlink()
    _variant_run(runs / "variant2", 2, 0.05, mmae_features="raw")
    loaded = load_runs([runs])
    line = variant_table(loaded).splitlines()[-1]
    # 0.00 x 3 against 0.05 x 3: no spread on either side, so no interval and no verdict
    assert "| 0.00 / 0.05 | +0.05 [n/a: no spread in either] | n/a |" in line
    assert line.endswith("| n/a: no seed differs from another (no spread to size a test by) |")
    rerun = next(r for r in loaded if r["encoder"] != "mmae_rgbs")
    rerun["curve"] = [(500.0, 0.2), (750.0, 0.3), (1000.0, 0.1), (1000.0, 0.4)]  # the last step logged twice
    assert last_evals(rerun) == (pytest.approx(0.3), (500.0, 750.0, 1000.0))
    rerun["curve"] = [(250.0, 0.2), (500.0, 0.3), (750.0, 0.4)]  # an evaluation short of the others
    assert "| n/a: evaluated at different steps |" in variant_table(loaded).splitlines()[-1]
    rerun["steps"] = 750  # and a run shorter than the others: no verdict on final success either
    assert "| n/a: runs of other lengths |" in variant_table(loaded).splitlines()[-1]


def test_a_run_given_twice_is_refused_rather_than_counted_twice(tmp_path):
    """A kept copy and the live folder (or two experiments' folders) given as two roots would count every seed
    twice and shrink the intervals for nothing: refused, naming both folders."""
    kept, live = tmp_path / "results" / "exp", tmp_path / "runs"
    for root in (kept, live):
        _fake_run(root, "reach-v3", "state", 0, 0.5)
    _fake_run(live, "reach-v3", "state", 1, 0.5)
    with pytest.raises(ValueError, match=r"both state on reach-v3, seed 0: each would count twice"):
        write_report(ReportConfig(roots=f"{kept},{live}", out=str(tmp_path / "report"), reps=50))
    assert write_report(ReportConfig(roots=str(live), out=str(tmp_path / "report"), reps=50)).exists()


def test_a_diverged_run_counts_as_success_0_from_the_step_it_diverged(tmp_path):
    """rl.outcome: a diverged run's summary says where; the report counts it at its budget with success 0 at every
    evaluation it would have had after that step, so the ablation's last-3 rule compares it with the other side
    (rather than withholding a verdict forever or judging the survivors alone), and lists it with why."""
    from pipeline.report.claims import variant_table
    from pipeline.report.runs import last_evals

    runs = tmp_path / "sac"
    for seed in range(3):
        _variant_run(runs / "default", seed, 0.8, mmae_features="standardized")
        _variant_run(runs / "variant", seed, [0.9, 0.85, 0.95][seed], mmae_features="raw")
    broken = runs / "variant" / "reach-v3" / "mmae_rgbs" / "seed2"
    summary = json.loads((broken / "summary.json").read_text())
    summary |= {"steps": 600, "success_rate": 0.0, "diverged": {"step": 600, "why": "non-finite action at step 600"}}
    summary["diverged"]["checkpoint"] = 500
    (broken / "summary.json").write_text(json.dumps(summary))
    (broken / "eval.csv").write_text("step,wall_s,success_rate,return_mean\n250,1,0.2,10\n500,2,0.5,20\n")
    (broken / "config.json").write_text(
        json.dumps({"encoder": "mmae_rgbs", "mmae_features": "raw", "steps": 1000, "eval_every": 250})
    )
    loaded = load_runs([runs])
    run = next(r for r in loaded if r["dir"] == broken)
    assert run["steps"] == 1000 and run["success_rate"] == 0.0 and run["return_curve"] == []
    assert run["curve"] == [(250.0, 0.2), (500.0, 0.5), (750.0, 0.0), (1000.0, 0.0)]
    assert last_evals(run) == (pytest.approx(0.5 / 3), (500.0, 750.0, 1000.0))
    # the CPU table once trained a row in two grids (to 750, then 1000): one that diverged in the first keeps its
    # config.json at 750 and is never resumed; it counts to its row's budget, and an evaluation due at the very
    # step it diverged (skipped for it) counts as 0 too
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "steps": 750}))
    summary["diverged"]["step"] = 500
    (broken / "summary.json").write_text(json.dumps({**summary, "steps": 500}))
    (broken / "eval.csv").write_text("step,wall_s,success_rate,return_mean\n250,1,0.2,10\n")
    run = next(r for r in load_runs([runs]) if r["dir"] == broken)
    assert run["steps"] == 1000 and run["curve"] == [(250.0, 0.2), (500.0, 0.0), (750.0, 0.0), (1000.0, 0.0)]
    line = variant_table(loaded).splitlines()[-1]
    assert "| 3 / 3 |" in line and "unfinished" not in line and "n/a: evaluated at different steps" not in line
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert "## Diverged runs" in report
    assert (
        "| reach-v3 | MMAE RGB+Saliency (ViSaRL) [mmae_features=raw] | 2 | 500 | non-finite action at step 600 | 500 |"
        in report
    )


def test_a_seeds_last_evaluations_pool_their_episodes(tmp_path):
    """The CPU table evaluates on 10 episodes before the last evaluation's 50: a seed's success over its last 3
    evaluations counts each episode once (an equal-weight mean of 10, 10 and 50 episodes would be noisier than the
    final evaluation alone). A diverged run's evaluations it never played weigh what they would have (its
    config.json), and eval.csv files without episode counts keep the plain mean."""
    from pipeline.report.runs import last_evals
    from pipeline.report.tables import table_i

    run = _fake_run(tmp_path / "sac", "reach-v3", "mmae_rgbs", 0, 0.5, steps=1000)
    (run / "eval.csv").write_text(
        "step,wall_s,success_rate,return_mean,episodes\n"
        + "".join(
            f"{s},1,{p},10,{n}\n" for s, p, n in ((250, 0.0, 10), (500, 0.2, 10), (750, 0.4, 10), (1000, 0.5, 50))
        )
    )
    (loaded,) = load_runs([tmp_path / "sac"])
    pooled = (0.2 * 10 + 0.4 * 10 + 0.5 * 50) / 70
    assert last_evals(loaded) == (pytest.approx(pooled), (500.0, 750.0, 1000.0))
    assert f"last 3: {pooled:.2f} (n=1)" in table_i([loaded])
    (run / "eval.csv").write_text("step,wall_s,success_rate,return_mean\n500,1,0.2,10\n750,1,0.4,10\n1000,1,0.5,10\n")
    assert last_evals(load_runs([tmp_path / "sac"])[0])[0] == pytest.approx(1.1 / 3)
    # diverged at 600 of 1000: the 750 evaluation would have played 10 episodes, the final one 50
    summary = json.loads((run / "summary.json").read_text())
    summary |= {"steps": 600, "success_rate": 0.0, "diverged": {"step": 600, "why": "non-finite loss"}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.json").write_text(
        json.dumps(
            {"encoder": "mmae_rgbs", "steps": 1000, "eval_every": 250, "eval_episodes": 10, "final_eval_episodes": 50}
        )
    )
    (run / "eval.csv").write_text("step,wall_s,success_rate,return_mean,episodes\n250,1,0.2,10,10\n500,1,0.7,10,10\n")
    (diverged,) = load_runs([tmp_path / "sac"])
    assert last_evals(diverged) == (pytest.approx(0.7 * 10 / 70), (500.0, 750.0, 1000.0))


def test_rows_pooled_or_compared_across_precisions_are_named(tmp_path):
    """An aggregate over tasks whose plain rows ran in different precisions (no task holds both, so nothing is split)
    says which cells ran in which; one precision throughout says nothing; split rows are named by their own title."""
    from pipeline.report.runs import precision_mix_note

    runs = tmp_path / "sac"
    for seed in range(2):
        d = _fake_run(runs / "a", "drawer-open-v3", "state", seed, 0.5)
        (d / "config.json").write_text(json.dumps({"encoder": "state", "precision": "bf16"}))
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, "precision": "bf16"}))
        _precision_run(runs / "b", "state", seed, 0.6, "fp32")
    loaded = load_runs([runs])
    assert {r["encoder"] for r in loaded} == {"state"}
    note = precision_mix_note(loaded)
    assert note.endswith("bf16: drawer-open-v3 State (sanity check); fp32: reach-v3 State (sanity check).")
    report = write_report(
        ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    ).read_text()
    assert note in report
    assert precision_mix_note([r for r in loaded if r["task"] == "reach-v3"]) == ""
    for seed in range(2):
        _precision_run(runs / "c", "state", seed, 0.4, "bf16")  # now reach-v3 holds both: its bf16 runs are split
    assert "reach-v3" not in precision_mix_note(load_runs([runs])).split("bf16: ")[1].split(";")[0]


def test_report_shows_each_tasks_saliency_evaluation_and_preparation_times_the_cpu_table_keeps(tmp_path):
    """results/cpu-table holds <task>/stages.json and saliency/<task>/eval/metrics.json beside the runs (pipeline.table's
    keep_preparation): the report tabulates both, steps in the plan's order, with the machine and precision of each task."""
    results = tmp_path / "cpu-table"
    _fake_run(results, "reach-v3", "state", 0, 0.8)
    evaluation = results / "saliency/reach-v3/eval/metrics.json"
    evaluation.parent.mkdir(parents=True)
    metrics = {"n": 1000, "f_max": 0.84937, "mae": 0.00233, "cc": 0.96261, "nss": 12.8205, "sim": 0.8}
    evaluation.write_text(json.dumps({"kind": "student", "metrics": metrics, "precision": "bf16"}))
    seconds = {"collect 50,000 frames": 5129.2, "export annotations": 0.7, "saliency.train (PiCANet)": 382.0}
    order = ["collect 50,000 frames", "saliency.train (PiCANet)", "export annotations"]  # not the file's (sorted) order
    stages = {"task": "reach-v3", "wall_seconds": seconds, "order": order, "device": "AMD EPYC, 2 cores"}
    (results / "reach-v3/stages.json").write_text(json.dumps({**stages, "precision": "bf16"}))
    (results / "door-open-v3").mkdir()
    (results / "door-open-v3/stages.json").write_text(json.dumps({"task": "door-open-v3", "wall_seconds": {}}))
    same, other = {"rgbs": "1" * 64, "rgb": "1" * 64}, {"rgbs": "1" * 64, "rgb": "2" * 64}
    records = {  # all but reach-v3's rgb encoders pretrained after a machine change, on frames collected again
        "reach-v3": {"frames": same},
        "door-open-v3": {"frames": other, "pixels": {"rgb": "3" * 64}},  # rgbs carried before pixels were recorded
        "drawer-open-v3": {"frames": other, "pixels": same},  # other shard bytes (meta.json), the same pixels
        "pick-place-v3": {"frames": other, "pixels": other},
    }
    for task, record in records.items():
        (results / task).mkdir(exist_ok=True)
        (results / task / "models.json").write_text(json.dumps({"task": task, "sha256": {}, **record}))
    (results / "faucet-open-v3").mkdir()  # a record written before frames were recorded
    (results / "faucet-open-v3/models.json").write_text(
        json.dumps({"sha256": {"mmae/rgbs/faucet-open-v3/encoder.pt": "0"}})
    )
    report = write_report(ReportConfig(roots=str(results), out=str(tmp_path / "report"), reps=200)).read_text()
    assert "## Preparation of each task" in report
    assert "| reach-v3 | student | 1000 | 0.849 | 0.0023 | 0.963 | 12.82 | bf16 |" in report
    assert (
        "| Step | reach-v3 |\n|---|---|\n| collect 50,000 frames | 1.4 h |\n| saliency.train (PiCANet) | 6 min |\n"
        "| export annotations | 1 s |\n\n"  # the plan's order; a task with no step timed has no column
    ) in report
    assert "Kept on (machine, precision): reach-v3: AMD EPYC, 2 cores, bf16." in report
    assert (
        "Frames the MultiMAEs learnt from (checksums of the collection, models.json): door-open-v3: different shards "
        "(rgbs 111111111111, rgb 222222222222; their pixels not recorded for rgbs); drawer-open-v3: the same pixels "
        "for rgbs and rgb (collected on two machines: their shards' other bytes differ); faucet-open-v3: not "
        "recorded for rgbs; pick-place-v3: different pixels (rgbs 111111111111, rgb 222222222222); reach-v3: the "
        "same frames for rgbs and rgb." in report
    )
    assert (
        "## Preparation"
        not in write_report(
            ReportConfig(roots=str(results / "reach-v3/state"), out=str(tmp_path / "bare"), reps=200)
        ).read_text()
    )


def test_the_floor_is_random_actions_on_each_seeds_episodes_beside_each_row(tmp_path):
    """`rl.evaluate --policy random` reports kept in <task>/random_policy/: per task, their success and return over
    seeds (of a seed evaluated twice, the evaluation of more episodes; --seeds reads the seeds it reads of the runs),
    then each row's final success and return; no such files, no section."""
    from rl.outcome import random_policy_file

    runs = tmp_path / "sac"
    for seed, success in enumerate([0.5, 0.7, 0.9]):
        summary = _fake_run(runs, "reach-v3", "state", seed, success) / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "return_mean": 1000.0 * (seed + 1)}))
    config = ReportConfig(roots=str(runs), out=str(tmp_path / "report"), pictures_root=str(tmp_path), reps=200)
    assert "## The floor" not in write_report(config).read_text()
    floor = runs / "reach-v3" / "random_policy"
    floor.mkdir()
    for seed, episodes, success in ((0, 10, 0.5), (0, 50, 0.0), (1, 50, 0.02), (2, 50, 0.04), (7, 50, 0.1)):
        report = {"policy": "random", "task": "reach-v3", "seed": seed, "success_rate": success}
        report |= {"return_mean": 100.0 + seed, "episodes": [{"episode": k} for k in range(episodes)]}
        (floor / random_policy_file(seed, episodes)).write_text(json.dumps(report))
    text = write_report(replace(config, seeds="0,1,2")).read_text()
    assert "## The floor: random actions" in text
    assert (
        "| reach-v3 | random actions | 0, 1, 2 (50) | 0.02 [-0.03, 0.07] (3 of 150 episodes) | 101 [99, 103] |" in text
    )
    assert "| reach-v3 | State (sanity check) | 0, 1, 2 (10) | 0.70 [0.20, 1.20] | 2000 [-484, 4484] |" in text
    assert "| reach-v3 | random actions | 0, 1, 2, 7 (50) |" in write_report(config).read_text()
    nested = replace(config, roots=str(tmp_path), out=str(tmp_path / "nested"))  # found as deep as the runs are
    assert "| reach-v3 | random actions | 0, 1, 2, 7 (50) |" in write_report(nested).read_text()
    # the curves draw the floor as a dotted gray (#808080) line across both panels
    from pipeline.report.figures import plot_curves
    from pipeline.report.runs import load_random_policy

    def gray_pixels(out: Path, floors) -> int:
        png = plot_curves(load_runs([runs]), out, floors=floors)["reach-v3"]
        return int((np.asarray(Image.open(png).convert("RGB")) == 128).all(-1).sum())

    assert gray_pixels(tmp_path / "with", load_random_policy([runs])) > gray_pixels(tmp_path / "without", {}) + 200
