"""What this CPU offers `--precision auto`, read without importing torch (for light processes such as
pipeline.table's orchestrator)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

#: CPU flags (/proc/cpuinfo) of units that run bf16 matmuls natively
BF16_CPU_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
#: environment variable that decides what `auto` means (bf16 or fp32) instead of the device
AUTO_ENV = "VISARL_AUTO_PRECISION"


@functools.cache
def cpu_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The CPU's native bf16 matmul units among BF16_CPU_FLAGS (empty where unknown, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ('' where unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")


def auto_precision(forced: str, bf16_units: Sequence[str]) -> tuple[str, str]:
    """What `--precision auto` runs on a CPU with `bf16_units` ('bf16' or 'fp32') and why, unless AUTO_ENV holds
    `forced` ('' when unset), which decides it on any device."""
    if forced:
        if forced not in ("bf16", "fp32"):
            raise ValueError(f"{AUTO_ENV}={forced!r}: set it to bf16 or fp32, or unset it to let auto decide")
        return forced, f"{AUTO_ENV}={forced}"
    if bf16_units:
        return "bf16", f"it has {'/'.join(bf16_units)}"
    return "fp32", "it has no AMX or AVX512-BF16 units"
