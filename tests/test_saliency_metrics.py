"""saliency.metrics against values computed by hand on small maps."""

import numpy as np
import pytest

from common import map_metrics as bench
from saliency.metrics import GT_THRESHOLD, f_adaptive, pr_curves, score_maps


def f_by_hand(tp, pp, gp, z2=0.3):
    p, r = tp / pp, tp / gp
    return (1 + z2) * p * r / (z2 * p + r)


def test_f_adaptive_and_mae_by_hand():
    gt = np.zeros((1, 4, 4), np.float32)
    gt[0, 0, :2] = 1.0  # two positives
    gt[0, 1, 0] = 0.6  # >= 0.5: positive
    gt[0, 3, 3] = 0.49  # < 0.5: negative
    pred = np.zeros((1, 4, 4), np.float32)
    pred[0, 0, 0], pred[0, 0, 1], pred[0, 2, 2] = 0.9, 0.8, 0.8  # mean = 2.5 / 16, threshold 0.3125
    pred[0, 1, 0] = 0.2  # below the adaptive threshold
    # binarised pred: (0,0), (0,1), (2,2) -> tp 2, predicted positives 3, GT positives 3
    assert f_adaptive(pred.astype(np.float64), gt.astype(np.float64))[0] == pytest.approx(f_by_hand(2, 3, 3), abs=1e-6)
    out = score_maps(pred, gt)
    assert out["f_adaptive"] == pytest.approx(f_by_hand(2, 3, 3), abs=1e-6)
    mae = (0.1 + 0.2 + 0.8 + 0.4 + 0.49) / 16
    assert out["mae"] == pytest.approx(mae, abs=1e-6)
    assert GT_THRESHOLD == 0.5 and out["n"] == 1 and out["n_empty_gt"] == 0


def test_adaptive_threshold_is_capped_at_one():
    pred = np.full((1, 2, 2), 0.9)  # 2 x mean = 1.8 -> threshold 1: nothing reaches it
    gt = np.array([[[1.0, 0], [0, 0]]])
    assert f_adaptive(pred, gt)[0] == pytest.approx(0.0, abs=1e-6)


def test_max_f_over_thresholds_by_hand():
    gt = np.array([[[1.0, 1.0, 0.0, 0.0]]])
    pred = np.array([[[1.0, 0.4, 0.6, 0.0]]], np.float32)
    p, r = pr_curves(pred.astype(np.float64), gt)
    assert p.shape == r.shape == (1, 256)
    k = int(np.floor(0.4 * 255 + 1e-6))  # the last threshold that still keeps 0.4
    assert p[0, k] == pytest.approx(2 / 3, abs=1e-6) and r[0, k] == pytest.approx(1.0, abs=1e-6)
    assert p[0, 200] == pytest.approx(1.0, abs=1e-6) and r[0, 200] == pytest.approx(0.5, abs=1e-6)
    # thresholds above 0.6 keep only the 1.0 pixel: P = 1, R = 0.5 -> F = 1.3 * 0.5 / (0.3 + 0.5)
    out = score_maps(pred, gt)
    assert out["f_max"] == pytest.approx(max(f_by_hand(2, 3, 2), 1.3 * 0.5 / 0.8, f_by_hand(2, 4, 2)), abs=1e-6)


def test_empty_ground_truth_left_out_of_f_and_counted():
    gt = np.zeros((2, 3, 3), np.float32)
    gt[1, 1, 1] = 1.0
    pred = np.zeros((2, 3, 3), np.float32)
    pred[1, 1, 1] = 1.0
    out = score_maps(pred, gt)
    assert out["n_empty_gt"] == 1
    assert out["f_adaptive"] == pytest.approx(1.0, abs=1e-6) and out["f_max"] == pytest.approx(1.0, abs=1e-6)


def test_benchmark_metrics_come_from_annotate_app():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((3, 8, 8)), rng.random((3, 8, 8))
    clicks = [np.array([[0.1, 0.2], [0.7, 0.7]]), np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])]
    out = score_maps(pred, gt, fixations=clicks)
    assert out["cc"] == pytest.approx(np.mean([bench.cc(p, g) for p, g in zip(pred, gt)]))
    assert out["sim"] == pytest.approx(np.mean([bench.sim(p, g) for p, g in zip(pred, gt)]))
    assert out["kld"] == pytest.approx(np.mean([bench.kld(p, g) for p, g in zip(pred, gt)]))
    masks = [bench.fixation_mask(c, 8) for c in clicks]
    assert out["nss"] == pytest.approx(np.mean([bench.nss(p, m) for p, m in zip(pred, masks)]))
    assert out["auc_judd"] == pytest.approx(np.mean([bench.auc_judd(p, m) for p, m in zip(pred, masks)]))
    assert "nss" not in score_maps(pred, gt)


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "same shape"),
        (np.full((1, 4, 4), 1.5), np.zeros((1, 4, 4)), r"\[0, 1\]"),
        (np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 4)), "float"),
        (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), r"\[N, H, W\]"),
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), "no maps"),
    ],
)
def test_bad_maps_are_refused(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        score_maps(pred, gt)
