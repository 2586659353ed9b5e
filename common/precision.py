"""One precision switch for every command that trains or infers: `--precision auto|bf16|fp32`.

bf16 is for the matmuls and convolutions only (torch.autocast): master weights, optimiser state,
loss reductions, replay contents and stored features stay float32, and the few places where 8 bits
of mantissa are too few (a Q-value of 400 is known to about +-2 in bf16) leave autocast through
`full_precision()` (the critics' and the actor's output layers, hence the TD target and the
log-probabilities).

`auto` picks bf16 where it is fast: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16 units
(oneDNN runs bf16 matmuls there at 4-30x the float32 rate, ../shared/notes/cpu.md). On other CPUs
(e.g. AVX2 only, where oneDNN has no bf16 path) bf16 runs in PyTorch's generic kernels, 2-30x slower
than float32 (BENCHMARKS.md), so `auto` stays float32 and says so once. The environment variable
VISARL_AUTO_PRECISION=bf16|fp32 overrides what `auto` picks (the test suite pins fp32: its comparisons of
two code paths hold float32's rounding, not bf16's, whatever the CPU).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from common.cli import option
from common.cpuinfo import AUTO_ENV, BF16_CPU_FLAGS, auto_precision, cpu_bf16_units  # noqa: F401 (BF16_CPU_FLAGS: re-exported)

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
PRECISION_HELP = (
    "matmul/convolution precision: bf16 (autocast; weights, optimiser state, losses and stored "
    "features stay float32), fp32, or auto (bf16 on a CUDA GPU with bf16 or a CPU with AMX/AVX512-BF16, "
    "fp32 elsewhere)"
)


def precision_field(help: str = PRECISION_HELP) -> Any:
    """The `precision` field of a command's config dataclass (`--precision`)."""
    return option("auto", help, choices=PRECISIONS)


def check_precision(requested: str) -> str:
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    return requested


_announced: set[str] = set()


def resolve_precision(requested: str, device: torch.device | str = "cpu") -> str:
    """'bf16' or 'fp32' for `requested` on `device`; `auto` that stays fp32 says why once per process."""
    check_precision(requested)
    if requested != "auto":
        return requested
    forced = os.environ.get(AUTO_ENV, "")
    device = torch.device(device)
    if device.type == "cuda" and not forced:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    runs, why = auto_precision(forced, cpu_bf16_units())
    if runs == "fp32" and not forced and device.type not in _announced:
        _announced.add(device.type)
        print(
            f"note: --precision auto runs fp32 here ({why}): bf16 would run in generic kernels, several times "
            "slower (--precision bf16 forces it)",
            flush=True,
        )
    return runs


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The autocast region of a resolved precision ('bf16' or 'fp32': then a no-op region).

    The cast cache is off: a region may span an optimiser step (SAC's update), after which cached
    bf16 copies of the weights would be stale.
    """
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"resolve the precision first (resolve_precision), got {precision!r}")
    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False
    )


def full_precision(device: torch.device | str) -> torch.autocast:
    """A float32 island inside an autocast region (inputs must be cast with `.float()` by the caller)."""
    return torch.autocast(torch.device(device).type, enabled=False)
