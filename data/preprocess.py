"""The one image preprocessing function, used by saliency training, pseudo-labelling and RL.

The authors' release fed raw 0-255 frames at dataset resolution when pseudo-labelling but /255
upsampled frames during RL; everything here goes through `frames_to_tensor` instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def frames_to_tensor(frames, size: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 frames [N, H, W, C] (numpy or torch) -> float32 [N, C, size, size] in [0, 1].

    Resizing (when `size` differs from H) is bilinear without antialiasing on upsampling and
    with antialiasing on downsampling, identical for every caller.
    """
    x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 in [0, 255], got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be [N, H, W, C] with C in (1, 3, 4), got {tuple(x.shape)}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # [N, C, H, W]
    if size is not None and (x.shape[-2], x.shape[-1]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return x.contiguous()
