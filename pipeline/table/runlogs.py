"""Reading what the runs wrote: CSV logs, a SAC run's steps and rate, a pretraining's steps and rate."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from rl import outcome


def read_eval_rows(path: Path) -> list[dict[str, str]]:
    """The whole rows of an eval.csv with a step and a success rate ([] when there is none)."""
    return [r for r in whole_rows(path) if last_numbers([r], "step", "success_rate")]


def whole_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log ([] when it does not exist yet), less a last line still being written (no newline)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.splitlines(keepends=True)
    return list(csv.DictReader(io.StringIO("".join(lines if text.endswith("\n") else lines[:-1]))))


def last_numbers(rows: Sequence[dict[str, str]], *columns: str) -> dict[str, float] | None:
    """The last of `rows` whose `columns` all read as numbers, as {column: float}; None when there is none."""
    for row in reversed(rows):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return {c: float(row[c]) for c in columns}
    return None


def run_state(run: Path) -> tuple[int, bool, float]:
    """(steps, finished, env-steps/s) of a SAC run folder, for status lines. Its summary.json's steps and
    finished, unless its metrics.csv has gone past them (a later chunk of a longer budget resumed it: in
    progress); else the newest metrics row's steps, in progress; (0, False, 0.0) before either. The rate is
    the newest metrics row's."""
    rows = whole_rows(run / "metrics.csv")
    row, rated = last_numbers(rows, "step"), last_numbers(rows, "step", "steps_per_s")
    logged, rate = (int(row["step"]) if row else 0), (rated["steps_per_s"] if rated else 0.0)
    summarized = outcome.summarized_steps(run)
    if summarized and summarized >= logged:
        return summarized, True, rate
    return logged, False, rate


def hours(seconds: float) -> str:
    """Seconds as hours, e.g. '1,234.5 h'."""
    return f"{seconds / 3600:,.1f} h"


#: status measures a running pretraining's rate over its last this many steps (train.csv logs every 10)
RECENT_STEPS = 50


def pretrain_steps(run: Path) -> tuple[int, int, int, float, int] | None:
    """(step of the last train.csv row, total steps, batch, img/s, steps the rate is measured over) of a
    pretrain.multimae run folder, from its config.json, data.json and train.csv (None before its first row). The rate
    is that of its last RECENT_STEPS steps (wall_s between rows), as the machine's load is now; with one row only, the
    row's img_per_s (since its process started; the steps are then 0)."""
    rows = whole_rows(run / "train.csv")
    row = last_numbers(rows, "step", "img_per_s")
    try:
        cfg = json.loads((run / "config.json").read_text())
        data = json.loads((run / "data.json").read_text())
        batch = int(cfg["batch_size"])
        total = int(data.get("total_steps") or int(cfg["epochs"]) * (int(data["train_frames"]) // batch))
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if row is None or total <= 0:
        return None
    step, rate, over = int(row["step"]), row["img_per_s"], 0
    timed = [t for t in (last_numbers([r], "step", "wall_s") for r in rows) if t]
    last = timed[-1] if timed else None
    window = [t for t in timed if last and last["step"] - RECENT_STEPS <= t["step"] < last["step"]]
    if last and window and window[0]["wall_s"] < last["wall_s"]:
        over = int(last["step"] - window[0]["step"])
        rate = over * batch / (last["wall_s"] - window[0]["wall_s"])
    return step, total, batch, rate, over


def pretrain_finished(run: Path) -> bool:
    """Its frozen encoder exists and its training reached its last step: pretrain.multimae exports encoder.pt at every
    checkpoint and exits 0 when stopped early (SIGTERM, --max-steps), so neither alone says it finished."""
    steps = pretrain_steps(run)
    return (run / "encoder.pt").exists() and steps is not None and steps[0] >= steps[1]
