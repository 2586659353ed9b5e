"""End to end: the micro pipeline on a fresh root, every stage with real outputs between them, and a rerun that
skips them all. (Phase A of the CPU table at micro sizes is tests/test_pipeline_table_e2e.py; the micro grid on a
local Ray instance is in tests/test_cluster_ray.py, with the other Ray tests.)"""

import json
import subprocess
import sys

import pytest

from pipeline.presets import PRESETS
from rl.encoders import ENCODER_LABELS

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
    # the floor: random actions on seed 0's final-evaluation episodes, as many and as long as the runs', in the report
    run_cfg = json.loads(
        (tmp_path / "runs/sac/reach-v3" / PRESETS["micro"]["encoders"].split(",")[0] / "seed0/config.json").read_text()
    )
    episodes = run_cfg["final_eval_episodes"] or run_cfg["eval_episodes"]
    floor = json.loads((tmp_path / f"runs/sac/reach-v3/random_policy/random-seed0-{episodes}ep.json").read_text())
    assert floor["policy"] == "random" and {e["steps"] for e in floor["episodes"]} == {run_cfg["max_episode_steps"]}
    assert "| reach-v3 | random actions | 0 (" in text
    # A second run skips every stage whose outputs exist.
    again = subprocess.run(
        [sys.executable, "-m", "pipeline", "--preset", "micro", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and again.stdout.count("skipped") >= 8, again.stdout[-2000:]
    assert "0 to run" in again.stdout
