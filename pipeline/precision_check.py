"""`python -m pipeline.precision_check RUNS --out results/precision-check`: does bf16 change what is learned?

Issue #23's learning checks for the stages trained before RL, each run in fp32 and in bf16 from the same data and
seeds (the whole stage: the student's PiCANet teacher labels in the stage's precision too), scored in fp32:
- MultiMAE (`mmae-<p>/` for seed 0, `mmae-<p>-seed<s>/` for more: pretrain.multimae runs, each with its
  probe_rgb+saliency.json): the linear probe's R^2 of hand, object and goal from the mean-pooled feature RL reads,
  the mean over seeds within 0.02; each precision's seed-to-seed spread beside it says how much one seed moves;
- the saliency student (`student-<p>/`: saliency.distill runs, each with eval/metrics.json on the same unseen
  frames): max-F against the oracle maps within 0.01.
Keeps the raw files below --out (RUNS may be that folder: then it only recomputes), writes summary.json (per check
the values of every seed, their means, the difference and the tolerance) and draws both precisions' held-out
MultiMAE losses in one figure (--figure). `make precision-check` runs the whole experiment.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from common.cli import option, run_command
from common.io import atomic_write_bytes, atomic_write_json
from pipeline.keep import PROVENANCE_KEYS

PRECISIONS = ("fp32", "bf16")
PROBE = "probe_rgb+saliency.json"
#: the files the checks read in each MultiMAE and each student folder
MMAE_FILES = ("config.json", "eval.csv", PROBE)
STUDENT_FILES = ("distill-student.csv", "distill-student-config.json", "eval/metrics.json")
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


def mmae_folders(root: Path, precision: str) -> list[str]:
    """The MultiMAE folders of one precision: seed 0's, then the other seeds' in the order of their names."""
    more = sorted(p.name for p in root.glob(f"mmae-{precision}-seed*") if p.is_dir())
    return [f"mmae-{precision}", *more]


def expected(root: Path) -> list[str]:
    """Every file the checks read below `root`, as paths relative to it."""
    return [
        f"{folder}/{name}"
        for p in PRECISIONS
        for folder, names in [*((m, MMAE_FILES) for m in mmae_folders(root, p)), (f"student-{p}", STUDENT_FILES)]
        for name in names
    ]


def keep(source: Path, out: Path) -> None:
    """Copy the files the checks read; a kept file is replaced only by one of the same run."""
    files = expected(source)
    missing = [f"{source}/{f}" for f in files if not (source / f).exists()]
    if missing:
        raise FileNotFoundError(
            "not there yet: " + ", ".join(missing) + " (run `make precision-check`, which makes them)"
        )
    if source.resolve() == out.resolve():
        return
    for f in files:
        src, dst = source / f, out / f
        if dst.exists() and not same_run(dst.read_bytes(), src.read_bytes(), f):
            raise FileExistsError(f"{dst} is kept from another run than {src}: move it away to keep the new one")
        atomic_write_bytes(dst, src.read_bytes())


def probe_r2(path: Path) -> dict[str, float]:
    """R^2 per target of the mean-pooled pretrained feature (the one RL reads), probed in fp32."""
    probe = json.loads(path.read_text())
    if probe.get("precision") != "fp32":
        raise ValueError(f"{path}: the encoders must be probed in fp32 (pretrain.probe --precision fp32)")
    (row,) = [r for r in probe["rows"] if r["kind"] == "pretrained" and r["pool"] == "mean"]
    return {t: row["r2"][t] for t in TARGETS}


def check(name: str, values: dict[str, list[float]], tolerance: float) -> dict:
    """`values`: per precision, one value per seed (the seeds in the same order)."""
    means = {p: mean(v) for p, v in values.items()}
    diff = means["bf16"] - means["fp32"]
    return {
        "check": name,
        **means,
        "per_seed": values,
        "seed_spread": {p: max(v) - min(v) for p, v in values.items()},
        "bf16_minus_fp32": diff,
        "tolerance": tolerance,
        "within": abs(diff) <= tolerance,
    }


def seeds_of(out: Path, folders: list[str]) -> list[int]:
    return [json.loads((out / f / "config.json").read_text())["seed"] for f in folders]


def summarise(out: Path) -> dict:
    folders = {p: mmae_folders(out, p) for p in PRECISIONS}
    seeds = {p: seeds_of(out, f) for p, f in folders.items()}
    if seeds["fp32"] != seeds["bf16"]:
        raise ValueError(f"the precisions must be trained from the same seeds, in the same folders: {seeds}")
    r2 = {p: [probe_r2(out / f / PROBE) for f in folders[p]] for p in PRECISIONS}
    max_f = {p: json.loads((out / f"student-{p}/eval/metrics.json").read_text()) for p in PRECISIONS}
    scored_in = {p: max_f[p]["precision"] for p in PRECISIONS}
    if set(scored_in.values()) != {"fp32"}:
        raise ValueError(f"the students must be scored in fp32 (saliency.evaluate --precision fp32), were {scored_in}")
    checks = [
        check(
            f"MultiMAE probe R^2, {t} (mean pool, rgb+saliency in)",
            {p: [r[t] for r in r2[p]] for p in PRECISIONS},
            PROBE_TOLERANCE,
        )
        for t in TARGETS
    ]
    checks.append(
        check(
            f"student max-F ({max_f['fp32']['metrics']['n']} unseen frames, oracle maps)",
            {p: [max_f[p]["metrics"]["f_max"]] for p in PRECISIONS},
            MAX_F_TOLERANCE,
        )
    )
    return {"mmae_seeds": seeds["fp32"], "checks": checks, "all_within": all(c["within"] for c in checks)}


def draw(out: Path, figure: Path) -> None:
    from common.figures import plt, write_figure  # Agg, chosen there before pyplot loads

    fig, axes = plt.subplots(1, len(LOSSES), figsize=(4.2 * len(LOSSES), 3.2))
    for p, style, color in zip(PRECISIONS, ("-o", "--s"), ("tab:blue", "tab:orange")):
        folders = mmae_folders(out, p)
        for folder, seed in zip(folders, seeds_of(out, folders)):
            with open(out / folder / "eval.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            for ax, loss in zip(axes, LOSSES):
                steps, values = [int(r["step"]) for r in rows], [float(r[loss]) for r in rows]
                ax.plot(steps, values, style, color=color, label=f"{p} seed {seed}", markersize=4, alpha=1 - 0.3 * seed)
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
    print(
        f"MultiMAE seeds {summary['mmae_seeds']}; student seed 0\n"
        "| check | fp32 (per seed) | bf16 (per seed) | fp32 | bf16 | bf16 - fp32 | tolerance | within |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    per_seed = lambda c, p: " / ".join(f"{v:.3f}" for v in c["per_seed"][p])  # noqa: E731
    for c in summary["checks"]:
        print(
            f"| {c['check']} | {per_seed(c, 'fp32')} | {per_seed(c, 'bf16')} | {c['fp32']:.4f} | {c['bf16']:.4f} | "
            f"{c['bf16_minus_fp32']:+.4f} | {c['tolerance']} | {'yes' if c['within'] else 'NO'} |"
        )
    print(f"kept in {out}; figure {cfg.figure}")


if __name__ == "__main__":
    run_command(PrecisionCheckConfig, main)
