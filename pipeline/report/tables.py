"""Per-task tables: Table I, every seed, diverged and running runs, learning curves, probes, preparation, footer."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.keep import KEPT_MODELS, KEPT_SALIENCY_EVAL, KEPT_STAGES, PROBE_GLOB
from pipeline.report.cells import (
    duration_text,
    mean_ci_text,
    r2_text,
    running_counts,
    seed_values_text,
    seeds_of_plan,
    side_count,
    steps_text,
    waiting_cells,
)
from pipeline.report.config import PlannedSeeds
from pipeline.report.paper import paper_average, paper_cell
from pipeline.report.runs import (
    LAST_EVALS,
    final_successes,
    last_evals,
    last_evals_mean,
    row_label,
    row_order,
    runs_by_cell,
)
from rl import outcome

#: the positions pretrain.probe scores (its result files: pipeline.keep.PROBE_GLOB)
PROBE_TARGETS = ("hand", "object", "goal")


def diverged_table(runs: list[dict]) -> str:
    """Markdown: the runs that diverged, where and why (counted as success 0 from there)."""
    rows = [r for r in runs if outcome.DIVERGED in r]
    if not rows:
        return ""
    lines = ["| Task | Encoder | Seed | Diverged at step | Why | Last good checkpoint |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], row_order(r["encoder"]), r["seed"] or 0)):
        d = r[outcome.DIVERGED]
        kept = d.get("checkpoint")
        lines.append(
            f"| {r['task']} | {row_label(r['encoder'])} | {r['seed']} | {int(d.get('step') or 0):,} | {d.get('why', '?')} | "
            f"{'none' if kept is None else f'{int(kept):,}'} |"
        )
    return "\n".join(lines)


def _last_evals_steps(runs: list[dict]) -> tuple[int, str]:
    """How many evaluations the runs' 'last' scores pool (`last_evals`), and their steps where every run has them at the same
    steps ('50k, 75k, 100k': evaluations far apart reach back into training), else ''."""
    steps = {last_evals(r)[1] for r in runs}
    shared = next(iter(steps)) if len(steps) == 1 else ()
    return (len(shared), steps_text(shared)) if shared else (LAST_EVALS, "")


def table_i(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown Table I analog: per encoder and task, the final success as mean [95 % t-interval] over
    seeds, each seed's success over its last 3 evaluations (`last_evals`) averaged over seeds, the seeds (of `planned`; + those still
    `running`) and the paper's mean ± std; last, the average of the encoder's task means beside the paper's
    (`paper_average`)."""
    tasks, by = runs_by_cell(runs)
    going = running_counts(running)
    waiting = set(waiting_cells(by, going, planned, tasks))
    encoders = sorted({r["encoder"] for r in runs} | {e for e, _ in waiting}, key=row_order)
    last = {t: _last_evals_steps([r for r in runs if r["task"] == t]) for t in tasks}  # budgets differ by task
    lines = [
        "| Encoder | "
        + " | ".join(
            f"{t}: final [95 % t-CI]; last {k}{f' ({at})' if at else ''} (n) / paper" for t, (k, at) in last.items()
        )
        + " | Average of task means: final / paper |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for enc in encoders:
        cells, means = [], []
        for t in tasks:
            rs = by.get((enc, t), [])
            n = side_count(by, going, planned, enc, [t])
            if not rs:
                cells.append(f"-{f' (n={n})' if (enc, t) in waiting else ''} / {paper_cell(enc, t)}")
                continue
            lasts = [last_evals_mean(r) for r in rs]
            cells.append(
                f"{mean_ci_text(final_successes(rs))}; last {last[t][0]}: {np.mean(lasts):.2f} (n={n}) / {paper_cell(enc, t)}"
            )
            means.append(float(np.mean(final_successes(rs))))
        ran = [t for t in tasks if by.get((enc, t))]
        average = f"{np.mean(means):.2f} / {paper_average(enc, ran)}" if means else "- / -"
        lines.append(f"| {row_label(enc)} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def random_policy_table(runs: list[dict], floors: dict[str, list[dict]]) -> str:
    """Markdown: per task with random-policy evaluations (`load_random_policy`), their success and return as mean
    [95 % Student-t interval] over seeds (each seed's over its episodes), then each row's final ones beside them
    ('' where no task has any)."""
    tasks, by = runs_by_cell(runs)
    lines = [
        "| Task | Policy | Seeds (episodes each) | Final success: mean [95 % t-CI] | Final return: mean [95 % t-CI] |",
        "|---|---|---|---|---|",
    ]
    for task in [*tasks, *sorted(set(floors) - set(tasks))]:
        reports = floors.get(task)
        if not reports:
            continue
        sizes = sorted({len(r["episodes"]) for r in reports})
        won = sum(round(r["success_rate"] * len(r["episodes"])) for r in reports)  # near 0 a count says more
        lines.append(
            f"| {task} | random actions | {', '.join(str(r['seed']) for r in reports)} "
            f"({'/'.join(map(str, sizes))}) | {mean_ci_text([r['success_rate'] for r in reports])} "
            f"({won} of {sum(len(r['episodes']) for r in reports)} episodes) | "
            f"{mean_ci_text([r['return_mean'] for r in reports], '.0f')} |"
        )
        for enc in sorted({e for e, t in by if t == task}, key=row_order):
            rs = by[(enc, task)]
            returns = [r["return_mean"] for r in rs if r.get("return_mean") is not None]  # a diverged run has none
            shy = f" (n={len(returns)})" if len(returns) < len(rs) else ""
            sizes = sorted({r["eval_episodes"] for r in rs if r.get("eval_episodes")})
            lines.append(
                f"| {task} | {row_label(enc)} | {', '.join(str(r['seed']) for r in rs)} "
                f"({'/'.join(map(str, sizes))}) | {mean_ci_text(final_successes(rs))} | "
                f"{mean_ci_text(returns, '.0f')}{shy} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def seed_table(runs: list[dict], running: Sequence[dict] = (), planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown: per task and encoder, every seed's final success and its success over its last 3 evaluations
    (`last_evals`),
    each with its mean [95 % Student-t interval] over seeds; the seeds' count beside them where it is short of
    `planned` or runs are still `running` (`_count`)."""
    tasks, by = runs_by_cell(runs)
    going = running_counts(running)
    lines = [
        "| Task | Encoder | Seeds | Final success per seed | Mean [95 % t-CI] "
        "| Success over its last evaluations per seed (their steps) | Mean [95 % t-CI] | Paper (1M steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for enc in sorted({e for e, t in by if t == task}, key=row_order):
            rs = by[(enc, task)]
            final, last = final_successes(rs), [last_evals_mean(r) for r in rs]
            count, at = _last_evals_steps(rs)
            n = side_count(by, going, planned, enc, [task])
            seeds = ", ".join(str(r["seed"]) for r in rs) + (f" ({n})" if n != str(len(rs)) else "")
            lines.append(
                f"| {task} | {row_label(enc)} | {seeds} | {seed_values_text(final)} | "
                f"{mean_ci_text(final)} | {seed_values_text(last)} ({at or f'last {count}, at other steps'}) | {mean_ci_text(last)} | "
                f"{paper_cell(enc, task)} |"
            )
    return "\n".join(lines)


def progress_table(running: list[dict]) -> str:
    """Markdown: per encoder and task still running, success and return at the newest evaluation step
    that every one of its seeds has reached (mean [95 % t-interval] over those seeds, and each seed's value)."""
    groups = defaultdict(list)
    for r in running:
        groups[(r["encoder"], r["task"])].append(r)
    lines = [
        "| Encoder | Task | Evaluated at (env steps) | Success [95 % t-CI] (per seed) | Evaluation return [95 % t-CI] |",
        "|---|---|---|---|---|",
    ]
    for (enc, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], row_order(kv[0][0]))):
        step = min(r["curve"][-1][0] for r in rs)
        at = sorted(
            (r for r in rs if step in dict(r["curve"])), key=lambda r: r["seed"] or 0
        )  # other schedules left out
        success = [dict(r["curve"])[step] for r in at]
        returns = [ret[step] for ret in (dict(r["return_curve"]) for r in at) if step in ret]
        budgets = "/".join(sorted({f"{r['steps']:,}" for r in at if r["steps"]}))
        seeds = ", ".join(str(r["seed"]) for r in at)
        lines.append(
            f"| {row_label(enc)} | {task} | {step:,.0f} of {budgets or '?'} | "
            f"{mean_ci_text(success)} ({seed_values_text(success)}; n={len(success)}, seeds {seeds}) | {mean_ci_text(returns, '.0f')} |"
        )
    return "\n".join(lines)


def curve_table(runs: list[dict], task: str, max_columns: int = 10, planned: PlannedSeeds = PlannedSeeds()) -> str:
    """Markdown: the success curves of `task` as numbers, an encoder per row (its seeds, of the `planned` ones) and
    an evaluation step per column (the newest `max_columns`): mean [95 % t-interval] over the seeds evaluated at
    that step, with their count where it differs from the encoder's number of seeds."""
    by_enc = defaultdict(list)
    for r in runs:
        if r["task"] == task and r.get("curve"):
            by_enc[r["encoder"]].append(dict(r["curve"]))
    steps = sorted({s for curves in by_enc.values() for c in curves for s in c})[-max_columns:]
    lines = ["| Encoder | " + " | ".join(f"{s / 1000:g}k" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for enc, curves in sorted(by_enc.items(), key=lambda kv: row_order(kv[0])):
        cells = []
        for s in steps:
            values = [c[s] for c in curves if s in c]
            cells.append(
                mean_ci_text(values) + (f" (n={len(values)})" if values and len(values) != len(curves) else "")
            )
        lines.append(
            f"| {row_label(enc)} ({seeds_of_plan(len(curves), planned(enc, task))}) | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def load_probes(root: Path) -> list[dict]:
    """Every probe result below `root` (pretrain.probe's JSON), with "file" relative to `root`."""
    probes = []
    for path in sorted(root.glob(PROBE_GLOB)):
        result = json.loads(path.read_text())
        result["file"] = path.relative_to(root)
        probes.append(result)
    return probes


def probe_table(probes: list[dict]) -> str:
    """Markdown: R^2 of hand/object/goal per encoder, inputs and pool (the --store precision's in
    parentheses when it loses more than 0.005), then the probes' warnings."""
    lines = [
        "| Encoder | Inputs | Features | Pool | Dim | " + " | ".join(f"{t} R^2" for t in PROBE_TARGETS) + " |",
        "|---|---|---|---|---|" + "---|" * len(PROBE_TARGETS),
    ]
    warnings = []
    for probe in probes:
        encoder = probe["file"].parent / Path(probe["encoder"]).name
        for row in probe["rows"]:
            cells = []
            for t in PROBE_TARGETS:
                r2, kept = row["r2"].get(t), row.get("r2_stored", {}).get(t)
                lost = r2 is not None and kept is not None and r2 - kept > 0.005
                cells.append(f"{r2_text(r2)} ({r2_text(kept)} in {probe['store']})" if lost else r2_text(r2))
            lines.append(
                f"| {encoder} | {'+'.join(probe['inputs'])} | {row['kind']} | {row['pool']} | {row['dim']} | "
                + " | ".join(cells)
                + " |"
            )
        warnings += probe.get("warnings", [])
    return "\n".join(lines + [""] + [f"- WARNING: {w}" for w in warnings])


#: the saliency metrics the preparation table shows (saliency.evaluate's names), with their format
SALIENCY_COLUMNS = (("f_max", "max-F", ".3f"), ("mae", "MAE", ".4f"), ("cc", "CC", ".3f"), ("nss", "NSS", ".2f"))


def preparation_tables(root: Path) -> str:
    """Markdown, from what the CPU table keeps of each task's preparation below `root` (pipeline.keep.KEPT_*): the
    saliency student against the oracle maps on held-out frames, then the wall time of each preparation step per
    task (in the plan's order), with the machine that kept them and the table's precision ('' when nothing is
    kept)."""
    parts = []
    evals = sorted(root.glob(KEPT_SALIENCY_EVAL.format(task="*")))
    if evals:
        lines = [
            "| Task | Model | Frames | " + " | ".join(name for _, name, _ in SALIENCY_COLUMNS) + " | Precision |",
            "|---|---|---|" + "---|" * len(SALIENCY_COLUMNS) + "---|",
        ]
        for path in evals:
            record = json.loads(path.read_text())
            metrics = record.get("metrics", {})
            cells = [format(metrics[k], spec) if k in metrics else "n/a" for k, _, spec in SALIENCY_COLUMNS]
            lines.append(
                f"| {path.parents[1].name} | {record.get('kind', '?')} | {metrics.get('n', '?')} | "
                + " | ".join(cells)
                + f" | {record.get('precision', '?')} |"
            )
        parts.append("\n".join(lines))
    stages = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob(KEPT_STAGES.format(task="*")))}
    stages = {t: s for t, s in stages.items() if s.get("wall_seconds")}
    if stages:
        tasks = list(stages)
        steps = list(dict.fromkeys(step for s in stages.values() for step in s.get("order") or s["wall_seconds"]))
        lines = ["| Step | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for step in steps:
            cells = [stages[t].get("wall_seconds", {}).get(step) for t in tasks]
            lines.append(f"| {step} | " + " | ".join("-" if c is None else duration_text(c) for c in cells) + " |")
        ran_on = [f"{t}: {s.get('device', '?')}, {s.get('precision') or '?'}" for t, s in stages.items()]
        parts += ["\n".join(lines), "Kept on (machine, precision): " + "; ".join(ran_on) + "."]
    frames = [encoders_frames(p.parent.name, p) for p in sorted(root.glob(KEPT_MODELS.format(task="*")))]
    if frames:
        parts.append(
            "Frames the MultiMAEs learnt from (checksums of the collection, models.json): " + "; ".join(frames) + "."
        )
    return "\n\n".join(parts)


def encoders_frames(task: str, path: Path) -> str:
    """Whether `task`'s carried encoders learnt from the same collected frames (a machine lost between their
    pretrainings collects them again: the same bytes on the same machine; on another, maybe other bytes for the
    same pixels, which the record's "pixels" digests tell)."""
    record = json.loads(path.read_text())
    frames, pixels = record.get("frames", {}), record.get("pixels", {})
    carried = list(dict.fromkeys(rel.split("/")[1] for rel in record.get("sha256", {}) if rel.startswith("mmae/")))
    unknown = [name for name in carried if name not in frames]
    if unknown:
        return f"{task}: not recorded for {' and '.join(unknown)}"
    if len(frames) < 2:
        return f"{task}: only {', '.join(frames) or 'no'} encoder carried so far"
    names = " and ".join(frames)
    if len(set(frames.values())) == 1:
        return f"{task}: the same frames for {names}"
    if all(name in pixels for name in frames):
        if len({pixels[name] for name in frames}) == 1:
            return f"{task}: the same pixels for {names} (collected on two machines: their shards' other bytes differ)"
        return f"{task}: different pixels ({', '.join(f'{name} {pixels[name][:12]}' for name in frames)})"
    unread = [name for name in frames if name not in pixels]
    return (
        f"{task}: different shards ({', '.join(f'{name} {digest[:12]}' for name, digest in frames.items())}; "
        f"their pixels not recorded for {' and '.join(unread)})"
    )


def footer(runs: list[dict]) -> str:
    lines = [
        "| Run | Steps | Preset | Seed | Final eval episodes | Device | Precision | Wall time | Steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["task"], r["encoder"], r["seed"])):
        lines.append(
            f"| {r['task']}/{r['encoder']} | {r['steps']:,} | {r.get('preset') or '-'} | {r['seed']} | "
            f"{r.get('eval_episodes', '-')} | {r.get('device', '?')} | {r.get('precision', 'fp32')} | "
            f"{r.get('wall_time_s', 0) / 60:.1f} min | {r.get('steps_per_s', '-')} |"
        )
    return "\n".join(lines)


def watch_table(roots: list[Path], out: Path) -> str:
    """Markdown: per task, a clip of each encoder the runs below `roots` made (`rl.evaluate.report_clips`:
    the clip a run's evaluate/ folder holds, copied beside the report); '' when no run has one."""
    from rl.evaluate import report_clips

    clips: dict[tuple[str, str], Path] = {}
    for root in roots:
        clips.update(report_clips(root, out / "clips"))
    lines = []
    for task in sorted({t for t, _ in clips}):
        lines.append(
            f"**{task}**: "
            + " ".join(
                f"{row_label(e)} ![{e}]({clips[(task, e)].relative_to(out)})"
                for e in sorted((e for t, e in clips if t == task), key=row_order)
            )
            + "\n"
        )
    return "\n".join(lines)
