"""The one click-to-map function: normalised clicks -> saliency map at any resolution.

Shared by the annotation app, the oracle annotator and the saliency trainer, so a map means the
same thing everywhere. A click is (x, y) in [0, 1] image coordinates (x to the right, y down,
pixel centres at (i + 0.5) / size), each click a Gaussian whose standard deviation is a fraction
of the image width (default 0.025: 10 px on the paper's 400 px canvas).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SIGMA_FRAC = 0.025


def validate_clicks(clicks) -> np.ndarray:
    """Return clicks as a float64 [N, 2] array; raise ValueError naming the problem."""
    arr = np.asarray(clicks, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"clicks must have shape [N, 2] (x, y), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError("clicks must be finite normalised coordinates in [0, 1]")
    return arr


def clicks_to_map(clicks, height: int, width: int | None = None, sigma_frac: float = DEFAULT_SIGMA_FRAC) -> np.ndarray:
    """Sum one Gaussian per click and normalise to max 1; no clicks gives an all-zero map.

    Returns float32 [height, width] in [0, 1].
    """
    width = height if width is None else width
    pts = validate_clicks(clicks)
    if len(pts) == 0:
        return np.zeros((height, width), np.float32)
    sigma = sigma_frac * width  # in pixels, one sigma for both axes (clicks are isotropic)
    xs = (np.arange(width) + 0.5)[None, :] - pts[:, :1] * width  # [N, W]
    ys = (np.arange(height) + 0.5)[None, :] - pts[:, 1:] * height  # [N, H]
    gx = np.exp(-0.5 * (xs / sigma) ** 2)  # [N, W]
    gy = np.exp(-0.5 * (ys / sigma) ** 2)  # [N, H]
    saliency = gy.T @ gx  # separable sum of Gaussians: [H, W]
    return (saliency / saliency.max()).astype(np.float32)


def pixel_to_click(col: float, row: float, height: int, width: int) -> tuple[float, float]:
    """Pixel indices (column, row) of an image -> the normalised click at that pixel's centre."""
    if not (0 <= col < width and 0 <= row < height):
        raise ValueError(f"pixel ({col}, {row}) lies outside the {width}x{height} image")
    return ((col + 0.5) / width, (row + 0.5) / height)
