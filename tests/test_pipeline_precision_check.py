"""pipeline.precision_check: the fp32-vs-bf16 learning checks read, kept and summarised from run files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import from_flat
from pipeline.precision_check import PrecisionCheckConfig, main

R2 = {"fp32": {"hand": 0.94, "object": 0.59, "goal": 0.52}, "bf16": {"hand": 0.93, "object": 0.62, "goal": 0.51}}
MAX_F = {"fp32": 0.850, "bf16": 0.845}


def write_mmae(root: Path, p: str, seed: int, r2: dict[str, float]) -> None:
    mmae = root / (f"mmae-{p}" if seed == 0 else f"mmae-{p}-seed{seed}")
    mmae.mkdir(parents=True)
    (mmae / "config.json").write_text(json.dumps({"precision": p, "seed": seed}))
    (mmae / "eval.csv").write_text(
        "step,rgb_mse,saliency_l1\n" + "".join(f"{s},{0.02 / s},{0.04 / s}\n" for s in (1, 2, 3))
    )
    rows = [
        {"kind": "pretrained", "pool": "mean", "r2": r2},
        {"kind": "pretrained", "pool": "grid2", "r2": {"hand": 0.0, "object": 0.0, "goal": 0.0}},
        {"kind": "random", "pool": "mean", "r2": {"hand": 0.0, "object": 0.0, "goal": 0.0}},
    ]
    (mmae / "probe_rgb+saliency.json").write_text(json.dumps({"precision": "fp32", "rows": rows}))


def write_arm(root: Path, p: str, eval_precision: str = "fp32") -> None:
    write_mmae(root, p, 0, R2[p])
    student = root / f"student-{p}"
    (student / "eval").mkdir(parents=True)
    (student / "distill-student.csv").write_text("step,loss\n1,0.02\n")
    (student / "distill-student-config.json").write_text(json.dumps({"precision": p}))
    metrics = {"precision": eval_precision, "metrics": {"f_max": MAX_F[p], "n": 1000}}
    (student / "eval" / "metrics.json").write_text(json.dumps(metrics))


def run(source: Path, out: Path, figure: Path) -> None:
    main(from_flat(PrecisionCheckConfig, source=str(source), out=str(out), figure=str(figure)))


def test_checks_are_kept_summarised_and_drawn(tmp_path, capsys):
    runs, out, figure = tmp_path / "runs", tmp_path / "kept", tmp_path / "losses.png"
    for p in ("fp32", "bf16"):
        write_arm(runs, p)
    run(runs, out, figure)
    summary = json.loads((out / "summary.json").read_text())
    hand, obj, goal, max_f = summary["checks"]  # the order of TARGETS, then the student
    assert "hand" in hand["check"] and "max-F" in max_f["check"]
    assert hand["bf16_minus_fp32"] == pytest.approx(-0.01) and hand["within"]
    assert obj["bf16_minus_fp32"] == pytest.approx(0.03) and not obj["within"]
    assert max_f["bf16_minus_fp32"] == pytest.approx(-0.005) and max_f["within"]
    assert summary["all_within"] is False and summary["mmae_seeds"] == [0]
    assert "| NO |" in capsys.readouterr().out
    assert (out / "mmae-bf16" / "probe_rgb+saliency.json").read_bytes() == (
        runs / "mmae-bf16" / "probe_rgb+saliency.json"
    ).read_bytes()
    pixels = np.asarray(Image.open(figure).convert("L"))
    assert pixels.shape[1] > pixels.shape[0] > 200 and pixels.std() > 10  # two panels with curves, not blank
    run(out, out, tmp_path / "again.png")  # from the kept files alone: the same summary
    assert json.loads((out / "summary.json").read_text()) == summary


def test_missing_arms_differing_kept_files_and_bf16_scoring_are_refused(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "kept"
    write_arm(runs, "fp32")
    with pytest.raises(FileNotFoundError, match="mmae-bf16/config.json.*make precision-check"):
        run(runs, out, tmp_path / "f.png")
    write_arm(runs, "bf16")
    run(runs, out, tmp_path / "f.png")
    (runs / "mmae-bf16" / "config.json").write_text(
        json.dumps({"precision": "bf16", "seed": 0, "code_version": "later"})
    )
    run(runs, out, tmp_path / "f.png")  # a --resume auto of the finished run rewrote its config: the same run
    assert "later" in (out / "mmae-bf16" / "config.json").read_text()
    (runs / "student-bf16" / "distill-student.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(FileExistsError, match="another run"):
        run(runs, out, tmp_path / "f.png")
    runs2 = tmp_path / "runs2"
    write_arm(runs2, "fp32")
    write_arm(runs2, "bf16", eval_precision="bf16")
    with pytest.raises(ValueError, match="scored in fp32"):
        run(runs2, tmp_path / "kept2", tmp_path / "f.png")


def test_more_seeds_are_averaged_and_their_spread_shown(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "kept"
    for p in ("fp32", "bf16"):
        write_arm(runs, p)
    write_mmae(runs, "fp32", 1, {"hand": 0.92, "object": 0.63, "goal": 0.44})
    with pytest.raises(ValueError, match="same seeds"):  # bf16 lacks seed 1
        run(runs, out, tmp_path / "f.png")
    write_mmae(runs, "bf16", 1, {"hand": 0.95, "object": 0.60, "goal": 0.47})
    run(runs, out, tmp_path / "f.png")
    summary = json.loads((out / "summary.json").read_text())
    hand, obj, goal, max_f = summary["checks"]
    assert summary["mmae_seeds"] == [0, 1] and goal["per_seed"] == {"fp32": [0.52, 0.44], "bf16": [0.51, 0.47]}
    assert goal["fp32"] == pytest.approx(0.48) and goal["bf16_minus_fp32"] == pytest.approx(0.01) and goal["within"]
    assert goal["seed_spread"]["fp32"] == pytest.approx(0.08)
    assert obj["bf16_minus_fp32"] == pytest.approx(0.0) and max_f["per_seed"]["fp32"] == [0.85]
    assert (out / "mmae-bf16-seed1" / "probe_rgb+saliency.json").exists()
