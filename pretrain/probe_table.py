"""The linear probe's results as Markdown: printed by `pretrain.probe`, written into model cards by `pretrain.export`."""

from __future__ import annotations

import math

#: positions the probe regresses (keys of every row's "r2"), in table order
TARGET_NAMES = ("hand", "object", "goal")


def fmt_r2(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def table_header(store: str = "float16") -> str:
    cols = [f"{t} R^2" for t in TARGET_NAMES] + [f"{t}, {store}" for t in TARGET_NAMES]
    return "| features | pool | dim | " + " | ".join(cols) + " |\n|" + "---|" * (3 + len(cols))


def format_row(row: dict) -> str:
    vals = [row["r2"][t] for t in TARGET_NAMES] + [row["r2_stored"][t] for t in TARGET_NAMES]
    return f"| {row['features']} | {row['pool']} | {row['dim']} | " + " | ".join(fmt_r2(v) for v in vals) + " |"


def markdown_table(result: dict) -> str:
    return "\n".join([table_header(result["store"])] + [format_row(r) for r in result["rows"]])
