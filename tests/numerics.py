"""Comparing two float32 trainings of the same run that differ only in summation order.

Kernels differ by CPU (AVX2, AVX-512, AMX) and by shape (a pack's batched kernel, a run alone's
plain one; a reference implementation's own layers), so the same math is summed in another order and differs in the last bits
(~1e-7 relative per operation). Adam divides each gradient by its own running scale, which turns a
last-bit difference of a near-zero gradient into up to a learning rate per update: weights are
compared through what training did to them, relative to its size, not element-wise at 1e-6.
"""

from __future__ import annotations

import torch


def relative_update_difference(after_a: torch.Tensor, after_b: torch.Tensor, before: torch.Tensor) -> float:
    """||(after_a - before) - (after_b - before)|| / ||after_b - before||: 0 for identical training,
    ~1 or more for training on other data or with updates missing."""
    update_b = after_b - before
    return ((after_a - after_b).norm() / update_b.norm()).item()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, for quantities that are sums over the data themselves (Adam's moments, losses)."""
    return ((a - b).norm() / b.norm()).item()
