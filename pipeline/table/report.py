"""`--report`: pipeline.report of the kept results, with how the table was made."""

from __future__ import annotations

import json
from pathlib import Path

from data.tasks import PAPER_TASKS
from pipeline.table.commands import PRETRAIN_VAL_FRACTION, pretrain_epochs, pretrained_images
from pipeline.table.config import REACH, TableConfig, pilot_dir, planned_seeds, results_path, run_precision
from pipeline.table.folder import pilot_budget

#: the title of the table's report
REPORT_TITLE = (
    "The CPU table (issue #30): the paper's Table I on a CPU (its settings and ours: How this table was made)"
)


def probe_beside_rows(results: Path) -> str:
    """Markdown: per task with kept probes, each frozen-encoder row's encoder probed as SAC reads it (its export,
    inputs and pool: rl.encoders.MMAEEncoder.VARIANTS) beside the same architecture at random init: R^2 of hand,
    object and goal ('' if none is kept)."""
    from pipeline.report.cells import r2_text
    from pipeline.report.runs import row_label
    from pipeline.report.tables import PROBE_TARGETS
    from rl.encoders import MMAEEncoder

    lines = []
    for task in PAPER_TASKS:
        for row, (export, inputs, pool) in MMAEEncoder.VARIANTS.items():
            path = results / f"mmae/{export}/{task}/probe_{'+'.join(inputs)}.json"
            if not path.exists():
                continue
            by_kind = {r["kind"]: r["r2"] for r in json.loads(path.read_text())["rows"] if r["pool"] == pool}
            cells = [
                " / ".join(r2_text(r2.get(t)) for t in PROBE_TARGETS) if (r2 := by_kind.get(kind)) else "-"
                for kind in ("pretrained", "random init")
            ]
            lines.append(
                f"| {task} | {row_label(row)} | {export} encoder, {'+'.join(inputs)} in, {pool} pool | "
                + " | ".join(cells)
                + " |"
            )
    header = [
        f"| Task | Row | Encoder, inputs, pool | {' / '.join(PROBE_TARGETS)} R^2, pretrained | same, at random init |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + lines) if lines else ""


def budget_text(cfg: TableConfig, results: Path) -> str:
    """Markdown: each task's step budget and why, the rule read again over the state pilot kept in <results>-pilot
    (as a new machine's table reads it: the same number)."""
    lines = [f"{REACH}: {cfg.reach_steps:,} steps, fixed (it learns there)"]
    for task in PAPER_TASKS[1:]:
        pilot = Path(f"{results}-pilot") / Path(pilot_dir(task, "state", cfg.pilot_seed)).relative_to("runs/pilot")
        budget = pilot_budget(cfg, pilot) if (pilot / "summary.json").exists() else None
        decided = budget is not None and budget.steps is not None
        lines.append(f"{task}: " + (f"{budget.steps:,} steps ({budget.reason})" if decided else "not decided yet"))
    return (
        f"- **Step budgets by the state pilot** (1 seed of `state`, seed {cfg.pilot_seed}, at these settings, "
        f"evaluated every {cfg.pilot_eval_every:,} steps on {cfg.pilot_eval_episodes} episodes; a task's budget is "
        f"the step where it held >= {cfg.budget_threshold:g} success over {cfg.budget_in_a_row} evaluations in a "
        f"row, rounded up to the table's {cfg.eval_every:,}-step evaluations, at most {cfg.budget_cap:,}; the same "
        f"for every row of the task; the pilots are kept in {cfg.results}-pilot): " + "; ".join(lines) + "."
    )


def images_text(images: float) -> str:
    """A pretraining's images as the preamble states them: in millions at the table's sizes, counted below 0.1M."""
    return f"{images / 1e6:.1f}M" if images >= 100_000 else f"{images:,.0f}"


def report_preamble(cfg: TableConfig, results: Path) -> str:
    """How the table was made, as a reader needs it beside its numbers: the saliency's source, the pretraining and
    SAC budgets and settings against the paper's, and each row's probe (issue #30's labels)."""
    epochs, images = pretrain_epochs(cfg.pretrain_images, cfg.frames), pretrained_images(cfg)
    size = "the paper's model size" if cfg.pretrain_preset == "paper" else f"the {cfg.pretrain_preset} preset's model"
    hidden = "the paper's" if cfg.hidden_dim == 1024 else "the paper's: 1024"
    features = "the paper's" if cfg.mmae_features == "raw" else "the paper's: raw"
    extra = f"; more rl.sac flags: `{cfg.sac_extra}`" if cfg.sac_extra else ""
    probes = probe_beside_rows(results)
    return "\n\n".join(
        [
            "## How this table was made",
            "\n".join(
                [
                    "- **Saliency from an oracle, not people**: `annotate_app.oracle` keeps the clicks `data.oracle` "
                    "made while collecting (about 25 per frame around the visible gripper, object and goal, "
                    f"projected from the simulator's state) on {cfg.annotate_n} frames per task; PiCANet "
                    f"({cfg.saliency_preset} preset) learns from those maps, and its distilled student labels the "
                    f"task's {cfg.frames:,} pretraining frames.",
                    f"- **Pretraining on ~{images_text(images)} images per MultiMAE** ({size}, {epochs} epochs of the "
                    f"task's frames less the {100 * PRETRAIN_VAL_FRACTION:.0f} % held out), against the paper's 40M "
                    "(its Table II: 200 epochs of 200k frames; its text says 400 epochs).",
                    f"- **SAC**: `--sac-preset paper`, hidden {cfg.hidden_dim} ({hidden}), MultiMAE features "
                    f"{cfg.mmae_features} ({features}), {run_precision(cfg)}{extra}; reach-v3 at {cfg.reach_steps:,} "
                    "steps and the other tasks at the budget their state pilot chose (at most "
                    f"{cfg.budget_cap:,}), against the paper's 1M; each run's last evaluation on "
                    f"{cfg.final_eval_episodes} episodes, those before it on {cfg.eval_episodes}, every "
                    f"{cfg.eval_every:,} steps, on fixed evaluation seeds.",
                    budget_text(cfg, results),
                ]
            ),
            *(
                [
                    "What each frozen-encoder row reads, by the linear probe (`pretrain.probe`, scored on episodes "
                    "held out from its fit; the full probe tables are further down):",
                    probes,
                ]
                if probes
                else []
            ),
        ]
    )


def write_table_report(cfg: TableConfig) -> Path:
    """pipeline.report of the kept results with each (task, row)'s planned seeds (`planned_seeds`) and how the table
    was made (`report_preamble`)."""
    from pipeline.report.config import ReportConfig
    from pipeline.report.writer import write_report

    results = results_path(cfg.results)
    if not any(results.glob("*/*/seed*/summary.json")):
        raise FileNotFoundError(
            f"no SAC run is kept in {results} yet: the table keeps each run as it finishes (`make cpu-table-status` "
            "shows where it stands)"
        )
    spec = ",".join(f"{task}/{row}={n}" for (task, row), n in planned_seeds(cfg).items())
    report = ReportConfig(str(results), cfg.report, title=REPORT_TITLE, planned_seeds=spec, seeds=cfg.report_seeds)
    report.validate()
    return write_report(report, [report_preamble(cfg, results)])
