"""End to end: the micro pipeline on a fresh root, and a two-run micro grid on a local Ray instance."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.presets import PRESETS
from pipeline.report import ENCODER_LABELS

pytestmark = pytest.mark.slow


def test_micro_pipeline_reports_a_row_for_every_encoder(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "--preset", "micro", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = tmp_path / "runs" / "report" / "REPORT.md"
    assert f"report: {report}" in r.stdout
    text = report.read_text()
    for enc in PRESETS["micro"]["encoders"].split(","):
        row = [line for line in text.splitlines() if line.startswith(f"| {ENCODER_LABELS[enc]} |")]
        assert len(row) == 1, f"no Table I row for {enc}"
        assert "(n=1)" in row[0]
    assert (tmp_path / "runs" / "report" / "curves_reach-v3.png").stat().st_size > 10_000
    for must in (
        "data/shards/reach-v3-sal/manifest.json",
        "runs/saliency/reach-v3/student.pt",
        "runs/mmae/rgbs/reach-v3/encoder.pt",
        "runs/mmae/rgb/reach-v3/encoder.pt",
    ):
        assert (tmp_path / must).exists(), must
    for enc in PRESETS["micro"]["encoders"].split(","):  # a clip of every trained agent (rl.evaluate.clip)
        clip = tmp_path / "runs" / "sac" / "reach-v3" / enc / "seed0" / "evaluate" / "clip.gif"
        assert clip.read_bytes()[:6] == b"GIF89a", enc
    # A second run skips every stage whose outputs exist.
    again = subprocess.run(
        [sys.executable, "-m", "pipeline", "--preset", "micro", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and again.stdout.count("skipped") >= 8, again.stdout[-2000:]
    assert "0 to run" in again.stdout


def test_two_run_micro_grid_on_local_ray(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl.grid",
            "--tasks",
            "reach-v3",
            "--encoders",
            "state",
            "--seeds",
            "0,1",
            "--steps",
            "200",
            "--sac-preset",
            "micro",
            "--backend",
            "ray",
            "--parallel",
            "2",
            "--out",
            str(tmp_path / "sac"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for seed in (0, 1):
        summary = json.loads((tmp_path / "sac" / "reach-v3" / "state" / f"seed{seed}" / "summary.json").read_text())
        assert summary["steps"] == 200 and summary["seed"] == seed
        assert (Path(tmp_path) / "sac" / "reach-v3" / "state" / f"seed{seed}" / "eval.csv").exists()
    assert (
        "2 ok, 0 diverged (final: counted as 0 success), 0 paused (run again to continue), 0 failed" in r.stdout
        and "in 1 pack(s)" in r.stdout
    )
