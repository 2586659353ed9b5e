"""A SAC run folder's outcome, as its summary.json records it: finished at some step count, or diverged.

A run whose weights, losses or actions turned non-finite has diverged: its summary.json (written the moment
it is caught, rl.workspace) says so under "diverged" ({"step", "why", "checkpoint", "budget"}), and reports success 0,
the success a policy that cannot act has. That outcome is final at any budget: rl.grid skips the run, a longer
grid does not resume it, and the report counts it as 0 from the step it diverged (a survivors-only mean would
favour a setting that breaks runs). Deleting the summary.json retrains it from its last good checkpoint (and,
where pipeline.keep kept it, its kept copy too: a kept result is never overwritten); resumes are exact, so under
the same settings it most likely diverges there again.

Torch-free: rl.grid, the CPU table's orchestrator (pipeline.table, which never imports torch), pipeline.keep
and pipeline.report read runs through it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SUMMARY = "summary.json"
#: the summary.json key of a diverged run
DIVERGED = "diverged"


#: a SAC run's checkpoint file name (rl.workspace writes them; kept here so torch-free readers share it)
CHECKPOINT = re.compile(r"checkpoint-(\d+)\.pt$")


#: the folder beside a task's row folders holding its random-policy evaluations (the floor the rows read against:
#: `python -m rl.evaluate --policy random`, on each seed's evaluation episodes), and their file names
RANDOM_POLICY = "random_policy"


def random_policy_file(seed: int, episodes: int) -> str:
    """The file `rl.evaluate --policy random --seed <seed> --episodes <episodes>` writes its evaluation to."""
    return f"random-seed{seed}-{episodes}ep.json"


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps at which `run_dir` holds a complete checkpoint, oldest first."""
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := CHECKPOINT.match(p.name)))


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None before it is written (or when it cannot be read)."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def _steps(summary: dict | None) -> int:
    try:
        return int((summary or {}).get("steps", 0))
    except (TypeError, ValueError):
        return 0


def summarized_steps(run_dir: Path) -> int:
    """The steps its summary.json reports: what its last finished grid ran it to, or where it diverged (0 before)."""
    return _steps(read_summary(run_dir))


def divergence(summary: dict | None) -> dict | None:
    """{"step", "why", "checkpoint", "budget"} of a summary that records a divergence, else None (the one test of it)."""
    record = (summary or {}).get(DIVERGED)
    return record if isinstance(record, dict) else None


def diverged(run_dir: Path) -> dict | None:
    """`divergence` of the run folder's summary.json."""
    return divergence(read_summary(run_dir))


def is_finished(run_dir: Path, steps: int) -> bool:
    """The run needs no more training for a budget of `steps`: its summary reaches them, or it diverged."""
    summary = read_summary(run_dir)
    return summary is not None and (divergence(summary) is not None or _steps(summary) >= steps)
