"""End to end: phase A of the CPU table (pipeline.table) at micro sizes on a fresh root, every row kept, a rerun and a
new machine's root that run nothing again, and the report of what was kept."""

import csv
import json
import subprocess
import sys

import pytest

from data.shards import pixels_sha256
from pipeline.table.config import FROZEN
from rl.encoders import ENCODER_LABELS

from tiny import MICRO_TABLE

pytestmark = pytest.mark.slow


def test_micro_cpu_table_phase_a_keeps_every_row_and_a_rerun_runs_nothing(tmp_path):
    table, results = tmp_path / "table", tmp_path / "results"
    argv = [
        sys.executable,
        "-m",
        "pipeline.table",
        "--root",
        str(table),
        "--results",
        str(results),
        "--carry",
        str(tmp_path / "carry"),
        *MICRO_TABLE,
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "every step of phase(s) A is done" in r.stdout
    rows = ("state", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs")
    for row in rows:  # both waves (seed 0, then seed 1) kept, each at the budget with its final evaluation
        for seed in (0, 1):
            summary = json.loads((results / "reach-v3" / row / f"seed{seed}" / "summary.json").read_text())
            assert (summary["encoder"], summary["seed"], summary["steps"]) == (row, seed, 1000)
            assert summary["eval_episodes"] == 2 and 0 <= summary["success_rate"] <= 1
            with open(results / "reach-v3" / row / f"seed{seed}" / "eval.csv") as f:  # one call: 1 episode, then 2
                assert [(r["step"], r["episodes"]) for r in csv.DictReader(f)] == [("500", "1"), ("1000", "2")]
    assert "kept finished runs in" in r.stdout  # each run kept as its grid ended it, before the rows' keep steps
    for seed in (0, 1):  # the floor: random actions on each seed's last-evaluation episodes, as long as the runs'
        floor = json.loads((results / f"reach-v3/random_policy/random-seed{seed}-2ep.json").read_text())
        assert (floor["policy"], floor["seed"], [e["steps"] for e in floor["episodes"]]) == ("random", seed, [100, 100])
    ran = [line.split(" | ", 1)[1] for line in r.stdout.splitlines() if "] A | " in line]
    first_rows = ran.index("reach-v3 mmae_rgbs_po,mmae_rgbs seeds 0-0 to 1,000 (last evaluation 2 episodes)")
    assert first_rows < ran.index("reach-v3: pretrain.multimae rgb (2 epochs, >= 1,000 images)")  # no rgb encoder yet
    stages = json.loads((results / "reach-v3" / "stages.json").read_text())
    commands = [s for s in stages["order"] if not s.startswith("carry ")]  # the carry steps take under 0.1 s
    assert len(commands) == 12 and all(stages["wall_seconds"][s] > 0 for s in commands)
    assert [s for s in stages["order"] if s.startswith("carry ")] == [
        "carry the rgbs encoder and saliency student",
        "carry the rgb encoder",
    ]
    for probe in (
        "rgbs/reach-v3/probe_rgb+saliency.json",
        "rgbs/reach-v3/probe_rgb.json",
        "rgb/reach-v3/probe_rgb.json",
    ):
        assert json.loads((results / "mmae" / probe).read_text()), probe
    assert 0 <= json.loads((results / "saliency/reach-v3/eval/metrics.json").read_text())["metrics"]["f_max"] <= 1

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "every step of phase(s) A is done" in again.stdout, again.stdout[-2000:]
    assert "] A | " not in again.stdout  # no step ran again
    assert sorted(json.loads((results / "settings.json").read_text())) == sorted(FROZEN)
    assert sorted(json.loads((results / "reach-v3/models.json").read_text())["sha256"]) == sorted(
        p.relative_to(tmp_path / "carry").as_posix() for p in (tmp_path / "carry").rglob("*") if p.is_file()
    )
    assert (tmp_path / "carry/mmae/rgbs/reach-v3/encoder.pt").read_bytes() == (
        table / "runs/mmae/rgbs/reach-v3/encoder.pt"
    ).read_bytes()
    record = json.loads((results / "reach-v3/models.json").read_text())
    assert record["frames"]["rgbs"] == record["frames"]["rgb"]  # both encoders learnt from the same frames
    pixels = pixels_sha256(table / "shards/reach-v3")
    assert record["pixels"] == {"rgbs": pixels, "rgb": pixels}  # and their pixels, read from the root's shards

    # a new machine: a new root beside the committed results and carried models runs no step of the table again
    elsewhere = [a if a != str(table) else str(tmp_path / "new-machine") for a in argv]
    moved = subprocess.run(elsewhere, capture_output=True, text=True, timeout=300)
    assert moved.returncode == 0 and "every step of phase(s) A is done" in moved.stdout, moved.stdout[-2000:]
    assert [line.split(" | ", 1)[1] for line in moved.stdout.splitlines() if "] A | " in line] == [
        "restore kept runs",
        "reach-v3: carried models",
    ]

    report = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(results), "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    text = (tmp_path / "report" / "REPORT.md").read_text()
    for row in rows:
        line = [x for x in text.splitlines() if x.startswith(f"| {ENCODER_LABELS[row]} |")]
        assert len(line) == 1 and "(n=2)" in line[0], row
    assert "| reach-v3 | random actions | 0, 1 (2) |" in text
