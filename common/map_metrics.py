"""Saliency-benchmark metrics over single 2-D maps (plain numpy), as in the MIT saliency benchmark.

Defined once here and imported by the saliency stage. `pred` is a predicted (or one annotator's)
saliency map, `gt` another map, `fixations` a binary mask of fixated (clicked) pixels. All maps are
2-D arrays of equal shape; nothing is resized. Formulas (Bylinskii et al., "What do different
evaluation metrics tell us about saliency models?", TPAMI 2019; the MIT benchmark's MATLAB code):

- CC   (Pearson correlation)    cc(a, b)   = sum(za * zb) / n, z = (m - mean) / std      in [-1, 1]
- NSS  (normalised scanpath)    nss(p, f)  = mean of zp over fixated pixels                 chance 0
- SIM  (histogram intersection) sim(a, b)  = sum(min(a', b')), m' = minmax(m) / sum(minmax(m)) [0, 1]
- KLD  (KL divergence gt||pred) kld(p, g)  = sum(g' * log(eps + g' / (p' + eps))), m' = m / sum(m)
- AUC-Judd                      area under the ROC curve whose thresholds are the saliency values at
                                the fixated pixels: TPR = fixations above threshold / fixations,
                                FPR = other pixels above threshold / other pixels                 chance 0.5

Conventions where the benchmark is silent: a constant map carries no information, so CC and NSS of
a constant prediction are 0 (chance) rather than NaN; SIM of two all-zero maps is 1. Tied saliency
values are handled exactly (one ROC point per distinct threshold) instead of the MATLAB code's
random jitter, which gives the same area when there are no ties and is deterministic. std is the
population standard deviation (ddof=0).
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps, used by the benchmark's KLdiv.m


def _as_map(m, name: str) -> np.ndarray:
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D saliency map [H, W], got shape {arr.shape}")
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty map of finite values")
    return arr


def _pair(a, b, na: str, nb: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_map(a, na), _as_map(b, nb)
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape, got {a.shape} and {b.shape}; resize first")
    return a, b


def _standardise(m: np.ndarray) -> np.ndarray | None:
    std = m.std()
    if std <= 1e-12 * max(1.0, float(np.abs(m).max())):
        return None
    return (m - m.mean()) / std


def cc(a, b) -> float:
    """Pearson linear correlation coefficient between two maps (symmetric)."""
    a, b = _pair(a, b, "a", "b")
    za, zb = _standardise(a), _standardise(b)
    if za is None or zb is None:
        return 0.0
    return float(np.mean(za * zb))


def nss(pred, fixations_mask_or_map) -> float:
    """Normalised scanpath saliency: mean standardised prediction at the fixated pixels.

    A boolean (or 0/1) mask gives the benchmark's NSS. A continuous map is used as weights
    (sum(z * g) / sum(g)), which equals the standard value when the map is binary.
    """
    p, g = _pair(pred, fixations_mask_or_map, "pred", "fixations")
    if g.min() < 0 or g.sum() <= 0:
        raise ValueError("fixations must be non-negative with at least one fixated pixel")
    z = _standardise(p)
    if z is None:
        return 0.0
    return float(np.sum(z * g) / np.sum(g))


def _minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def sim(a, b) -> float:
    """Similarity (histogram intersection) of two maps, each min-max scaled then summing to 1."""
    a, b = _pair(a, b, "a", "b")
    a, b = _minmax(a), _minmax(b)
    sa, sb = a.sum(), b.sum()
    if sa == 0 and sb == 0:
        return 1.0
    if sa == 0 or sb == 0:
        return 0.0
    return float(np.minimum(a / sa, b / sb).sum())


def kld(pred, gt) -> float:
    """KL divergence KL(gt || pred) of the maps as distributions (each divided by its sum); >= 0."""
    p, g = _pair(pred, gt, "pred", "gt")
    if p.min() < 0 or g.min() < 0:
        raise ValueError("kld needs non-negative maps")
    p = p / (p.sum() + EPS)
    g = g / (g.sum() + EPS)
    return float(np.sum(g * np.log(EPS + g / (p + EPS))))


def auc_judd(pred, fixation_mask) -> float:
    """AUC-Judd: ROC area with one threshold per saliency value found at a fixated pixel."""
    s, f = _pair(pred, fixation_mask, "pred", "fixation_mask")
    fix = f > 0
    n_fix, n_pix = int(fix.sum()), fix.size
    if n_fix == 0:
        raise ValueError("fixation_mask has no fixated pixel")
    if n_fix == n_pix:
        raise ValueError("fixation_mask marks every pixel; AUC needs non-fixated pixels too")
    s = s.ravel()
    on = np.sort(s[fix.ravel()])  # saliency at fixations, ascending
    allv = np.sort(s)
    thresholds = np.unique(on)[::-1]  # descending distinct thresholds
    tp_count = len(on) - np.searchsorted(on, thresholds, side="left")  # fixations with s >= t
    above = len(allv) - np.searchsorted(allv, thresholds, side="left")  # pixels with s >= t
    tpr = np.concatenate([[0.0], tp_count / n_fix, [1.0]])
    fpr = np.concatenate([[0.0], (above - tp_count) / (n_pix - n_fix), [1.0]])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def fixation_mask(clicks, height: int, width: int | None = None) -> np.ndarray:
    """Normalised clicks [N, 2] (x, y in [0, 1]) -> bool [H, W] mask of the clicked pixels."""
    width = height if width is None else width
    pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), bool)
    cols = np.clip((pts[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip((pts[:, 1] * height).astype(int), 0, height - 1)
    mask[rows, cols] = True
    return mask


def all_metrics(pred, gt_map, fixations) -> dict[str, float]:
    """The five benchmark scores of `pred` against a reference map and its fixation mask."""
    return {
        "cc": cc(pred, gt_map),
        "nss": nss(pred, fixations),
        "sim": sim(pred, gt_map),
        "kld": kld(pred, gt_map),
        "auc": auc_judd(pred, fixations),
    }


METRIC_NAMES = ("cc", "nss", "sim", "kld", "auc")
