"""RandomResizedCrop for pretraining batches (the paper's Table II augmentation), on the batch's device.

Crop boxes follow torchvision's `RandomResizedCrop.get_params` (area share ~ U(scale), log aspect
ratio ~ U(log ratio), up to 10 tries, else the whole frame), drawn per sample from `generator`, and
are applied identically to every modality of a sample (as MultiMAE does) by bilinear resampling
back to the input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRIES = 10


def crop_boxes(
    batch: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boxes float [B, 4] = (x0, y0, w, h) as fractions of the frame side."""
    u = torch.rand(batch, TRIES, 4, generator=generator, device=device)  # [B, T, 4]
    area = scale[0] + (scale[1] - scale[0]) * u[..., 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    w, h = (area * log_r.exp()).sqrt(), (area / log_r.exp()).sqrt()  # [B, T]
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(ok[:, 0], TRIES, dtype=torch.long))  # [B]
    pick = first.clamp(max=TRIES - 1)[:, None]
    w, h = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
    x0 = (1 - w) * u[..., 2].gather(1, pick)[:, 0]
    y0 = (1 - h) * u[..., 3].gather(1, pick)[:, 0]
    fallback = first == TRIES  # no valid try: the whole frame (torchvision: a centre crop of the allowed ratio)
    one, zero = torch.ones_like(w), torch.zeros_like(w)
    return torch.stack(
        [
            torch.where(fallback, zero, x0),
            torch.where(fallback, zero, y0),
            torch.where(fallback, one, w),
            torch.where(fallback, one, h),
        ],
        dim=1,
    )


def apply_crops(inputs: dict[str, torch.Tensor], boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """{modality: [B, C, H, W]} -> the same shapes, each sample resampled from its box [B, 4]."""
    x0, y0, w, h = boxes.unbind(1)  # [B] each
    B = boxes.shape[0]
    theta = torch.zeros(B, 2, 3, device=boxes.device, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * x0 + w - 1  # output x in [-1, 1] -> input x in the box
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    out = {}
    for m, x in inputs.items():
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # [B, H, W, 2]
        out[m] = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out


def random_resized_crop(
    inputs: dict[str, torch.Tensor],
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One random crop per sample, shared by its modalities, resized back to the input size."""
    first = next(iter(inputs.values()))
    return apply_crops(inputs, crop_boxes(first.shape[0], scale, ratio, generator, first.device))
