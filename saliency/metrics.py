"""Saliency metrics over batches of maps: `score_maps(pred, gt, fixations=None) -> dict`.

* F-measure (zeta^2 = 0.3, PiCANet / ViSaRL): the ground truth is binarised at GT_THRESHOLD = 0.5
  (everywhere in this project). `f_adaptive`: each predicted map binarised at min(2 x its mean, 1),
  F per image, averaged. `f_max`: precision and recall per image at the 256 thresholds k/255
  (pred >= k/255), averaged over images, F of the averaged curve, max over thresholds.
  P = TP / (predicted positives + eps), R = TP / (GT positives + eps); frames whose binarised GT is
  empty have no defined F and are left out of both F means (counted in `n_empty_gt`).
  PiCANet reports max-F; it is the headline F here too. The adaptive threshold was designed for
  salient-object maps; on sparse click maps (about 0.4 % of pixels >= 0.5) 2 x mean lies far out
  in the Gaussian tails, so even the oracle's own expected map scores f_adaptive ~0.2 while its
  f_max is ~0.93 (`python -m saliency.ceiling`).
* MAE: mean absolute difference over all pixels and frames.
* Saliency-benchmark metrics (CC, SIM, KLD against the GT maps; NSS, AUC-Judd against click /
  fixation points when given) come from `common.map_metrics`, implemented once there.
"""

from __future__ import annotations

import numpy as np
import torch

from common import map_metrics as bench

GT_THRESHOLD = 0.5
ZETA2 = 0.3
EPS = 1e-8
N_THRESHOLDS = 256


def _as_maps(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be maps [N, H, W] (or one [H, W] map), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be float maps in [0, 1], got dtype {x.dtype} (divide uint8 maps by 255)")
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (min {np.nanmin(x):.3g}, max {np.nanmax(x):.3g})")
    return x.astype(np.float64)


def _f(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (1 + ZETA2) * p * r / (ZETA2 * p + r + EPS)


def f_adaptive(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image F at the adaptive threshold min(2 x mean(pred), 1); NaN where the binarised GT is empty."""
    thr = np.minimum(2 * pred.mean(axis=(1, 2), keepdims=True), 1.0)
    binary, g = pred >= thr, gt >= GT_THRESHOLD
    tp = (binary & g).sum((1, 2))
    p, r = tp / (binary.sum((1, 2)) + EPS), tp / (g.sum((1, 2)) + EPS)
    return np.where(g.any((1, 2)), _f(p, r), np.nan)


def pr_curves(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image precision and recall at thresholds k/255, k = 0..255: two arrays [N, 256]."""
    n = len(pred)
    q = np.clip(np.floor(pred * 255 + 1e-6), 0, 255).astype(np.int64).reshape(n, -1)  # pred >= k/255 <=> q >= k
    g = (gt >= GT_THRESHOLD).reshape(n, -1)
    offset = np.arange(n)[:, None] * N_THRESHOLDS
    hist_all = np.bincount((q + offset).ravel(), minlength=n * N_THRESHOLDS).reshape(n, N_THRESHOLDS)
    hist_pos = np.bincount((q + offset)[g], minlength=n * N_THRESHOLDS).reshape(n, N_THRESHOLDS)
    pp = hist_all[:, ::-1].cumsum(1)[:, ::-1]  # predicted positives at threshold k: [N, 256]
    tp = hist_pos[:, ::-1].cumsum(1)[:, ::-1]
    return tp / (pp + EPS), tp / (g.sum(1, keepdims=True) + EPS)


def fixation_masks(fixations, shape: tuple[int, int, int]) -> np.ndarray:
    """Clicks per frame (list of [K, 2] normalised (x, y)) or a mask [N, H, W] -> bool mask [N, H, W]."""
    n, h, w = shape
    if isinstance(fixations, np.ndarray) and fixations.ndim == 3:
        if fixations.shape != shape:
            raise ValueError(f"fixation mask {fixations.shape} does not match maps {shape}")
        return fixations.astype(bool)
    if len(fixations) != n:
        raise ValueError(f"got fixations for {len(fixations)} frames but {n} maps")
    return np.stack([bench.fixation_mask(pts, h, w) for pts in fixations])


def score_maps(pred, gt, fixations=None) -> dict[str, float]:
    """Scores of predicted maps against ground-truth maps (both [N, H, W] float in [0, 1]).

    Returns f_adaptive, f_max, f_max_threshold, mae, cc, sim, kld, n, n_empty_gt, and nss and
    auc_judd when `fixations` (clicks per frame, or a boolean mask [N, H, W]) are given.
    """
    pred, gt = _as_maps(pred, "pred"), _as_maps(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    if len(pred) == 0:
        raise ValueError("no maps to evaluate")
    valid = (gt >= GT_THRESHOLD).any((1, 2))
    out: dict[str, float] = {
        "n": int(len(pred)),
        "n_empty_gt": int((~valid).sum()),
        "mae": float(np.abs(pred - gt).mean()),
    }
    if valid.any():
        out["f_adaptive"] = float(np.nanmean(f_adaptive(pred[valid], gt[valid])))
        p, r = pr_curves(pred[valid], gt[valid])
        curve = _f(p.mean(0), r.mean(0))
        k = int(curve.argmax())
        out["f_max"], out["f_max_threshold"] = float(curve[k]), k / 255
    else:
        out["f_adaptive"] = out["f_max"] = out["f_max_threshold"] = float("nan")
    out.update(_benchmark_metrics(pred, gt, fixations))
    return out


def _benchmark_metrics(pred: np.ndarray, gt: np.ndarray, fixations) -> dict[str, float]:
    """Mean CC, SIM, KLD (and NSS, AUC-Judd with fixations) from the shared single-map implementation."""
    out = {"cc": [], "sim": [], "kld": []}
    for p, g in zip(pred, gt):
        if g.max() > 0:
            out["cc"].append(bench.cc(p, g))
            out["sim"].append(bench.sim(p, g))
            out["kld"].append(bench.kld(p, g))
    if fixations is not None:
        mask = fixation_masks(fixations, pred.shape)
        out["nss"] = [bench.nss(p, f) for p, f in zip(pred, mask) if f.any()]
        out["auc_judd"] = [bench.auc_judd(p, f) for p, f in zip(pred, mask) if f.any() and not f.all()]
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}
