"""fp32 and bf16 side by side in the benches (issue #23): the `--precision` list, the order of each
round, the machine lines and the markdown cells with the bf16/fp32 speed ratio.

Speed ratios are always "bf16 speed / fp32 speed" (> 1: bf16 is faster), whether the cells hold
rates or times.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence

import torch

from common.cpuinfo import cpu_model
from common.precision import cpu_bf16_units, resolve_precision
from common.runs import device_description

PRECISION_LIST_HELP = (
    "comma list of precisions timed side by side, alternated within each round: fp32, bf16 "
    "(auto: what `--precision auto` picks on this device)"
)


def parse_precisions(text: str, device: torch.device | str = "cpu") -> list[str]:
    """'fp32,bf16' -> ['fp32', 'bf16']: resolved (auto -> what it picks on `device`), duplicates dropped."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("--precision needs at least one of fp32, bf16, auto (e.g. --precision fp32,bf16)")
    out: list[str] = []
    for name in names:
        try:
            resolved = resolve_precision(name, device)
        except ValueError as err:
            raise ValueError(f"--precision {text!r}: {err} (e.g. --precision fp32,bf16)") from None
        if resolved not in out:
            out.append(resolved)
    return out


def round_order(precisions: Sequence[str], rnd: int) -> list[str]:
    """The order of round `rnd`: as given on even rounds, reversed on odd ones (ABBA), so a drift of the
    machine's load over a run does not favour the precision that always goes first."""
    return list(precisions) if rnd % 2 == 0 else list(reversed(precisions))


def machine_lines() -> str:
    """The device line, the CPU's native bf16 units and the load average, for the top of a bench's output."""
    units = cpu_bf16_units()
    native = (
        (", ".join(units) + " (native bf16 matmuls)")
        if units
        else "none (no AMX / AVX512-BF16: bf16 is not native here, expect it slower than fp32)"
    )
    return (
        f"device: {device_description()}; {cpu_model() or platform.processor() or 'CPU model unknown'}; "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}\n"
        f"CPU bf16 units: {native}\n"
        f"load average before (1, 5, 15 min): {load_average()}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ratio_header(precisions: Sequence[str]) -> list[str]:
    """The ratio column's header cell, when both fp32 and bf16 are timed."""
    return ["bf16/fp32 speed"] if {"fp32", "bf16"} <= set(precisions) else []


def side_by_side(
    values: dict[str, float],
    precisions: Sequence[str],
    fmt: Callable[[float], str] = "{:.1f}".format,
    time_like: bool = False,
) -> list[str]:
    """Cells: each precision's value (or '-'), then bf16/fp32 speed when both are timed.

    time_like: the values are times (ms, s/step), so the speed ratio is fp32 / bf16.
    """
    cells = [fmt(values[p]) if p in values else "-" for p in precisions]
    if ratio_header(precisions):
        fp32, bf16 = values.get("fp32"), values.get("bf16")
        if fp32 and bf16:
            cells.append(f"{(fp32 / bf16 if time_like else bf16 / fp32):.2f}x")
        else:
            cells.append("-")
    return cells


def headers(metric: str, precisions: Sequence[str]) -> list[str]:
    """Header cells matching `side_by_side`: '<metric> fp32', '<metric> bf16', 'bf16/fp32 speed'."""
    return [f"{metric} {p}" for p in precisions] + ratio_header(precisions)
