"""`python -m pipeline.precision_check RUNS --out results/precision-check`: does bf16 change what is learned?

Issue #23's learning checks for the stages trained before RL, each run twice from the same data and seed, once
in fp32 and once in bf16 (the whole stage: the student's PiCANet teacher labels in the stage's precision too), and
scored in fp32:
- MultiMAE (`mmae-fp32/`, `mmae-bf16/`: pretrain.multimae runs, each with its probe_rgb+saliency.json): the
  linear probe's R^2 of hand, object and goal from the mean-pooled feature RL reads, within 0.02;
- the saliency student (`student-fp32/`, `student-bf16/`: saliency.distill runs, each with eval/metrics.json
  on the same unseen frames): max-F against the oracle maps within 0.01.
Keeps the raw files below --out (RUNS may be that folder: then it only recomputes), writes summary.json
(both values, the difference and the tolerance of each check) and draws both precisions' held-out MultiMAE
losses in one figure (--figure). `make precision-check` runs the whole experiment.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from common.cli import option, run_command
from common.io import atomic_write_bytes, atomic_write_json
from pipeline.keep import PROVENANCE_KEYS

PRECISIONS = ("fp32", "bf16")
PROBE = "probe_rgb+saliency.json"
#: (arm folder, file below it) that the checks read, for each precision
KEPT = (
    ("mmae", "config.json"),
    ("mmae", "eval.csv"),
    ("mmae", PROBE),
    ("student", "distill-student.csv"),
    ("student", "distill-student-config.json"),
    ("student", "eval/metrics.json"),
)
TARGETS = ("hand", "object", "goal")
PROBE_TOLERANCE, MAX_F_TOLERANCE = 0.02, 0.01
LOSSES = ("rgb_mse", "saliency_l1")


@dataclass
class PrecisionCheckConfig:
    """Compare the fp32 and bf16 trainings of MultiMAE and the saliency student; keep and summarise them."""

    source: str = option(
        "runs/precision", "folder with mmae-<p>/ and student-<p>/ for p in fp32, bf16", positional=True
    )
    out: str = option("results/precision-check", "where the raw files and summary.json are kept")
    figure: str = option("docs/precision_check_losses.png", "the held-out loss curves of both precisions")


def same_run(kept: bytes, new: bytes, name: str) -> bool:
    """Whether a kept file and the source's say the same: a config.json is rewritten with the code version by every
    `--resume auto` of a finished run, so configs are compared without it."""
    if not name.endswith("config.json"):
        return kept == new
    drop = lambda raw: {k: v for k, v in json.loads(raw).items() if k not in PROVENANCE_KEYS}  # noqa: E731
    return drop(kept) == drop(new)


def keep(source: Path, out: Path) -> None:
    """Copy the files the checks read; a kept file is replaced only by one of the same run."""
    missing = [
        f"{source}/{arm}-{p}/{name}"
        for p in PRECISIONS
        for arm, name in KEPT
        if not (source / f"{arm}-{p}" / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            "not there yet: " + ", ".join(missing) + " (run `make precision-check`, which makes them)"
        )
    if source.resolve() == out.resolve():
        return
    for p in PRECISIONS:
        for arm, name in KEPT:
            src, dst = source / f"{arm}-{p}" / name, out / f"{arm}-{p}" / name
            if dst.exists() and not same_run(dst.read_bytes(), src.read_bytes(), name):
                raise FileExistsError(f"{dst} is kept from another run than {src}: move it away to keep the new one")
            atomic_write_bytes(dst, src.read_bytes())


def probe_r2(path: Path) -> dict[str, float]:
    """R^2 per target of the mean-pooled pretrained feature (the one RL reads), probed in fp32."""
    probe = json.loads(path.read_text())
    if probe.get("precision") != "fp32":
        raise ValueError(f"{path}: the encoders must be probed in fp32 (pretrain.probe --precision fp32)")
    (row,) = [r for r in probe["rows"] if r["kind"] == "pretrained" and r["pool"] == "mean"]
    return {t: row["r2"][t] for t in TARGETS}


def check(name: str, values: dict[str, float], tolerance: float) -> dict:
    diff = values["bf16"] - values["fp32"]
    return {"check": name, **values, "bf16_minus_fp32": diff, "tolerance": tolerance, "within": abs(diff) <= tolerance}


def summarise(out: Path) -> dict:
    r2 = {p: probe_r2(out / f"mmae-{p}" / PROBE) for p in PRECISIONS}
    max_f = {p: json.loads((out / f"student-{p}/eval/metrics.json").read_text()) for p in PRECISIONS}
    checks = [
        check(
            f"MultiMAE probe R^2, {t} (mean pool, rgb+saliency in)", {p: r2[p][t] for p in PRECISIONS}, PROBE_TOLERANCE
        )
        for t in TARGETS
    ]
    checks.append(
        check(
            f"student max-F ({max_f['fp32']['metrics']['n']} unseen frames, oracle maps)",
            {p: max_f[p]["metrics"]["f_max"] for p in PRECISIONS},
            MAX_F_TOLERANCE,
        )
    )
    scored_in = {p: max_f[p]["precision"] for p in PRECISIONS}
    if set(scored_in.values()) != {"fp32"}:
        raise ValueError(f"the students must be scored in fp32 (saliency.evaluate --precision fp32), were {scored_in}")
    return {"checks": checks, "all_within": all(c["within"] for c in checks)}


def draw(out: Path, figure: Path) -> None:
    from common.figures import plt, write_figure  # Agg, chosen there before pyplot loads

    fig, axes = plt.subplots(1, len(LOSSES), figsize=(4.2 * len(LOSSES), 3.2))
    for p, style in zip(PRECISIONS, ("-o", "--s")):
        with open(out / f"mmae-{p}" / "eval.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for ax, loss in zip(axes, LOSSES):
            ax.plot([int(r["step"]) for r in rows], [float(r[loss]) for r in rows], style, label=p, markersize=4)
    for ax, loss in zip(axes, LOSSES):
        ax.set(xlabel="step", ylabel=f"held-out {loss}", title=f"MultiMAE {loss}")
        ax.legend()
    write_figure(fig, figure)


def main(cfg: PrecisionCheckConfig) -> None:
    source, out = Path(cfg.source), Path(cfg.out)
    keep(source, out)
    summary = summarise(out)
    atomic_write_json(out / "summary.json", summary)
    draw(out, Path(cfg.figure))
    print("| check | fp32 | bf16 | bf16 - fp32 | tolerance | within |\n|---|---|---|---|---|---|")
    for c in summary["checks"]:
        print(
            f"| {c['check']} | {c['fp32']:.4f} | {c['bf16']:.4f} | {c['bf16_minus_fp32']:+.4f} | {c['tolerance']} | "
            f"{'yes' if c['within'] else 'NO'} |"
        )
    print(f"kept in {out}; figure {cfg.figure}")


if __name__ == "__main__":
    run_command(PrecisionCheckConfig, main)
