"""The budget rule: a task's step budget from its state pilot's evaluations."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """A task's step budget from its state pilot: `steps` None while the pilot must run on."""

    steps: int | None
    held_at: int | None
    reason: str


def choose_budget(
    rows: Iterable[Mapping[str, object]],
    pilot_steps: int,
    threshold: float = 0.8,
    in_a_row: int = 2,
    cap: int = 500_000,
    round_to: int = 25_000,
) -> Budget:
    """The step budget from a state pilot's eval.csv rows ({"step", "success_rate"}) and the steps it ran.

    The budget is the step of the `in_a_row`-th evaluation in a row at `threshold` success or more, rounded
    up to a multiple of `round_to` (the table's evaluation grid), at most `cap`; `cap` when the pilot
    reached `cap` without that; undecided (None) while the pilot is short of `cap` and has not held it. A step
    evaluated twice (a run killed between its last row and its summary, before rl.workspace replaced such rows)
    counts once, its last row.
    """
    evals = sorted({int(float(r["step"])): float(r["success_rate"]) for r in rows}.items())
    streak = 0
    for step, success in evals:
        if step > cap:
            break
        streak = streak + 1 if success >= threshold else 0
        if streak >= in_a_row:
            steps = min(cap, math.ceil(step / round_to) * round_to)
            return Budget(
                steps,
                step,
                f"state held >= {threshold:g} over {in_a_row} evaluations in a row at {step:,} steps; budget {steps:,}",
            )
    if pilot_steps >= cap:
        return Budget(
            cap,
            None,
            f"state did not hold >= {threshold:g} over {in_a_row} evaluations in a row "
            f"by {cap:,} steps; budget = the cap, {cap:,}",
        )
    return Budget(
        None,
        None,
        f"pilot at {pilot_steps:,} steps: state has not held >= {threshold:g} over {in_a_row} evaluations in a row yet",
    )
