"""End to end: phases B and C of the CPU table (pipeline.table) at micro sizes on a fresh root: the state pilots and
their budget rule, each other task's preparation and carried models, the mmae_rgbs pilots, then every row of the three
tasks at its budget, kept with its floor, a rerun that runs nothing, and the table's report over the three tasks."""

import json
import subprocess
import sys

import pytest

from data.tasks import PAPER_TASKS

from tiny import MICRO_TABLE

pytestmark = pytest.mark.slow

TASKS = PAPER_TASKS[1:]  # drawer-open, faucet-open, door-open: what phases B and C run
ROWS = ("state", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs")
#: phase A's micro sizes, then pilots of one 500-step chunk that the cap decides, and one seed per row in phase C
MICRO_BC = [
    *(a for a in MICRO_TABLE if a not in ("--phase", "A")),
    *("--pilot-chunk", "500", "--pilot-eval-every", "500", "--pilot-eval-episodes", "1", "--budget-cap", "500"),
    *("--first-seeds", "1", "--more-seeds", "1"),
]


def _table(tmp_path, phase: str, *more: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pipeline.table", "--root", str(tmp_path / "table"), "--results"]
    argv += [str(tmp_path / "results"), "--carry", str(tmp_path / "carry"), *MICRO_BC, "--phase", phase, *more]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _ran(stdout: str, phase: str) -> list[str]:
    return [line.split(" | ", 1)[1] for line in stdout.splitlines() if f"] {phase} | " in line]


def test_micro_cpu_table_phases_b_and_c_pilot_prepare_and_keep_every_task(tmp_path):
    results, pilots, carry = tmp_path / "results", tmp_path / "results-pilot", tmp_path / "carry"
    b = _table(tmp_path, "B")
    assert "every step of phase(s) B is done" in b.stdout
    ran = _ran(b.stdout, "B")
    first_pilot = "pilot state drawer-open-v3,faucet-open-v3,door-open-v3 to 500 (then the budget rule)"
    # the state pilots first (minutes: they decide the budgets), then each task's preparation, then mmae_rgbs's pilots
    assert ran.index(first_pilot) < ran.index("drawer-open-v3: collect 1,000 frames")
    assert ran.index("door-open-v3: keep probes") < ran.index(
        "pilot mmae_rgbs drawer-open-v3,faucet-open-v3,door-open-v3 to 500"
    )
    budgets = json.loads((tmp_path / "table" / "table.json").read_text())["budgets"]
    for task in TASKS:  # state learns nothing in 500 micro steps: every budget is the cap, and says so
        assert (budgets[task]["steps"], budgets[task]["held_at"]) == (500, None) and "the cap" in budgets[task][
            "reason"
        ]
        for row in ("state", "mmae_rgbs"):
            summary = json.loads((pilots / task / row / "seed100" / "summary.json").read_text())
            assert (summary["task"], summary["encoder"], summary["steps"]) == (task, row, 500)
        for model in (f"mmae/rgb/{task}/encoder.pt", f"mmae/rgbs/{task}/encoder.pt", f"saliency/{task}/student.pt"):
            assert (carry / model).read_bytes() == (tmp_path / "table" / "runs" / model).read_bytes(), model
        record = json.loads((results / task / "models.json").read_text())
        assert record["frames"]["rgbs"] == record["frames"]["rgb"]  # a task's two encoders learnt from its frames
        assert json.loads((results / "mmae" / "rgbs" / task / "probe_rgb+saliency.json").read_text())

    c = _table(tmp_path, "C")
    assert "every step of phase(s) C is done" in c.stdout
    for task in TASKS:
        for row in ROWS:  # every row at its task's budget, its final evaluation the larger one
            run = results / task / row / "seed0"
            summary = json.loads((run / "summary.json").read_text())
            assert (summary["encoder"], summary["steps"], summary["eval_episodes"]) == (row, 500, 2)
        floor = json.loads((results / task / "random_policy" / "random-seed0-2ep.json").read_text())
        assert (floor["policy"], floor["task"], len(floor["episodes"])) == ("random", task, 2)

    again = _table(tmp_path, "C", timeout=300)
    assert "every step of phase(s) C is done" in again.stdout and not _ran(again.stdout, "C")

    _table(tmp_path, "C", "--report", str(tmp_path / "report"), timeout=300)
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "**Pretraining on ~1,900 images per MultiMAE** (the micro preset's model, 2 epochs" in text
    tasks = ", ".join(TASKS)
    for row in ("MMAE RGB", "MMAE RGB+Saliency (PO)", "MMAE RGB+Saliency (ViSaRL)"):  # aggregated over the 3 tasks
        assert f"| {row} (1 x 3) | {tasks} |" in text, row
    assert (
        f"| MMAE RGB < MMAE RGB+Saliency (ViSaRL) | {tasks} | 1 / 1 |" in text and "**Interim:**" not in text
    )  # its planned seed, kept
    assert all((tmp_path / "report" / f"curves_{task}.png").stat().st_size > 10_000 for task in TASKS)
