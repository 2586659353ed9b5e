"""pipeline.stats against hand computations: small-n intervals, rliable's aggregates, power."""

import math

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics
from scipy import stats as scipy_stats

from pipeline import stats

T_975_DF2 = 4.302652729911275  # Student t 97.5 % quantiles from the tables
T_975_DF4 = 2.7764451051977987


def test_t_interval_of_three_seeds_is_the_textbook_one_and_twice_the_bootstrap_range():
    values = [0.55, 0.15, 0.35]  # MMAE RGB on the CPU slice
    sd = math.sqrt(((0.2) ** 2 + (0.2) ** 2 + 0) / 2)  # 0.2
    lo, hi = stats.t_interval(values)
    assert lo == pytest.approx(0.35 - T_975_DF2 * sd / math.sqrt(3)) and hi == pytest.approx(
        0.35 + T_975_DF2 * sd / math.sqrt(3)
    )
    assert (round(lo, 2), round(hi, 2)) == (-0.15, 0.85)
    # rliable's percentile bootstrap over the same 3 seeds is exactly [min, max]: each extreme is drawn
    # three times in 1/27 = 3.7 % of the resamples, above the 2.5 % tail
    _, boot_lo, boot_hi = stats.aggregate_intervals({"rgb": np.array(values)[:, None]})["rgb"]["mean"]
    assert (boot_lo, boot_hi) == pytest.approx((0.15, 0.55))
    columns = stats.t_interval(np.array([[0.0, 1.0], [0.2, 1.0], [0.4, 1.0]]))  # [seeds, steps] -> per step
    assert columns[0].tolist() == pytest.approx([0.2 - T_975_DF2 * 0.2 / math.sqrt(3), 1.0])
    assert all(math.isnan(v) for v in stats.t_interval([0.5]))


def test_welch_interval_by_hand():
    worse, better = [0.10, 0.20, 0.15], [0.50, 0.60, 0.55]
    diff, lo, hi = stats.welch_interval(worse, better)
    se = math.sqrt(0.05**2 / 3 + 0.05**2 / 3)  # equal spreads: Welch's df = 2n - 2 = 4
    assert diff == pytest.approx(0.40)
    assert (lo, hi) == pytest.approx((0.40 - T_975_DF4 * se, 0.40 + T_975_DF4 * se))
    diff, lo, hi = stats.welch_interval([0.9, 0.9, 0.9], [0.4, 0.5, 0.6])  # one side without spread: df = n - 1 = 2
    assert (lo, hi) == pytest.approx((-0.40 - T_975_DF2 * 0.1 / math.sqrt(3), -0.40 + T_975_DF2 * 0.1 / math.sqrt(3)))
    assert math.isnan(stats.welch_interval([0.5], [0.2, 0.3])[1])
    diff, lo, hi = stats.welch_interval([0.0, 0.0, 0.0], [0.05, 0.05, 0.05])  # neither side varies: no interval
    assert diff == pytest.approx(0.05) and math.isnan(lo) and math.isnan(hi)
    means = [(0.1 + 0.2 + 0.3) / 3, (0.3 + 0.2 + 0.1) / 3, 0.2]  # equal up to the last digit
    assert math.isnan(stats.welch_interval(means, [0.05] * 3)[1]) and stats.pooled_sd([means, [0.05] * 3]) == 0.0


def test_iqm_is_the_mean_of_the_middle_half_of_all_runs_and_tasks():
    scores = np.array([[0.0, 0.9, 0.2, 0.5], [1.0, 0.3, 0.4, 0.6], [0.1, 0.7, 0.8, 0.05]])  # [runs, tasks]
    middle = sorted(scores.ravel())[3:9]  # 12 scores: drop the lowest 3 and the highest 3
    assert stats.iqm(scores) == pytest.approx(np.mean(middle)) == pytest.approx(0.45)
    estimates = stats.aggregate_intervals({"a": scores}, reps=500)["a"]
    assert estimates["iqm"][0] == pytest.approx(0.45) and estimates["mean"][0] == pytest.approx(scores.mean())
    for point, lo, hi in estimates.values():
        assert 0.0 <= lo < point < hi <= 1.0


def test_probability_of_improvement_by_hand_and_as_rliable_computes_it():
    better, worse = np.array([[0.5], [0.6], [0.7]]), np.array([[0.4], [0.55], [0.65]])
    # pairs won by `better`: 0.5 beats 0.4; 0.6 beats 0.4, 0.55; 0.7 beats all three: 6 of 9
    assert stats.improvement_probability(better, worse) == pytest.approx(6 / 9)
    tie = np.array([[0.5], [0.6]])
    assert stats.improvement_probability(tie, np.array([[0.5], [0.5]])) == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    rng = np.random.default_rng(0)
    for _ in range(5):  # the vectorised form is rliable's Mann-Whitney one, over tasks too
        x, y = rng.integers(0, 5, (3, 4)) / 4, rng.integers(0, 5, (4, 4)) / 4
        assert stats.improvement_probability(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    p, lo, hi = stats.probability_of_improvement(better, worse, reps=500)
    assert p == pytest.approx(6 / 9) and 0.0 <= lo < p < hi <= 1.0
    assert stats.probability_of_improvement(worse + 1, worse, reps=200) == (1.0, 1.0, 1.0)


def test_seeds_needed_matches_the_classic_power_table():
    # two-sided 5 %, 80 % power, two-sample t-test: Cohen's d = 0.5 needs 64 per group, d = 1 needs 17
    assert stats.seeds_needed(0.5, 1.0) == 64 and stats.seeds_needed(0.1, 0.1) == 17
    assert stats.seeds_needed(0.5, 1.0, tasks=4) == 16  # 4 tasks share the load (df grows: not quite 64 / 4 rounded up)
    assert stats.seeds_needed(0.01, 1.0) is None and stats.seeds_needed(0.1, math.nan) is None
    gap = stats.detectable_gap(0.2, 3)
    assert stats.power(gap, 0.2, 3) == pytest.approx(stats.POWER, abs=1e-6)
    assert stats.seeds_needed(gap, 0.2) == 3
    assert stats.pooled_sd([[0.55, 0.15, 0.35], [0.30, 0.35, 0.10], [0.7]]) == pytest.approx(
        math.sqrt((0.08 + 0.035) / 4)
    )


def test_percentile_bootstrap_undercovers_at_three_runs_and_approaches_nominal_with_more():
    assert 0.70 <= stats.bootstrap_coverage(3, 1) <= 0.80  # ~74 % (the issue said ~76 %)
    assert stats.bootstrap_coverage(3, 4) > stats.bootstrap_coverage(3, 1)  # more tasks: more runs behind the mean
    assert stats.bootstrap_coverage(30, 1, experiments=500) > 0.9


def test_resampling_is_seeded_and_leaves_the_global_random_state_alone():
    scores = {"a": np.array([[0.1, 0.4], [0.5, 0.2], [0.9, 0.7]])}
    state = np.random.get_state()[1].copy()
    first = stats.aggregate_intervals(scores, reps=300, seed=3)
    assert stats.aggregate_intervals(scores, reps=300, seed=3) == first
    assert stats.aggregate_intervals(scores, reps=300, seed=4) != first
    assert np.array_equal(np.random.get_state()[1], state)
    # an encoder's intervals do not move when another joins the report (each resamples under its own seed)
    joined = {"0": np.array([[0.3, 0.3], [0.6, 0.1], [0.2, 0.8]]), **scores}
    assert stats.aggregate_intervals(joined, reps=300, seed=3)["a"] == first["a"]
    taus = np.linspace(0, 1, 11)
    alone = stats.performance_profiles(scores, taus, reps=200)[1]["a"]
    assert np.array_equal(stats.performance_profiles(joined, taus, reps=200)[1]["a"], alone)


def test_performance_profile_is_rliables_score_distribution():
    scores, taus = np.array([[0.1, 0.4], [0.5, 0.2], [0.9, 0.7]]), np.linspace(0, 1, 11)
    assert np.array_equal(stats.score_distribution(scores, taus), rly.score_distributions(scores, taus))
    profiles, bands = stats.performance_profiles({"a": scores}, taus, reps=200)
    assert profiles["a"][[0, 5, 10]].tolist() == pytest.approx([1.0, 2 / 6, 0.0])  # > 0, > 0.5, > 1
    assert (
        bands["a"].shape == (2, 11)
        and (bands["a"][0] <= profiles["a"]).all()
        and (profiles["a"] <= bands["a"][1]).all()
    )


def test_the_stratified_welch_interval_of_a_gap_over_tasks_keeps_its_coverage_where_the_bootstrap_does_not():
    """The orderings' verdict: at one task it is the per-task Welch interval; over tasks the mean of the per-task
    gaps with each task's and side's variance. At 3 runs per task x 4 tasks it covers the true gap ~95 % of the time
    (also with unequal spreads across tasks) where the percentile bootstrap covers ~82 %."""
    a, b = np.array([[0.1], [0.2], [0.15]]), np.array([[0.5], [0.6], [0.4]])
    assert stats.stratified_welch_interval(a, b) == pytest.approx(stats.welch_interval(a[:, 0], b[:, 0]))
    worse = np.array([[0.1, 0.0], [0.2, 0.0], [0.15, 0.0]])
    better = np.array([[0.5, 0.3], [0.6, 0.1], [0.4, 0.2]])
    gap, lo, hi = stats.stratified_welch_interval(worse, better)
    terms = np.array([0.0025, 0, 0.01, 0.01]) / 3 / 4  # s^2 / n / T^2 of worse-task-0, worse-task-1, better-0, -1
    df = terms.sum() ** 2 / (terms**2 / 2).sum()
    half = scipy_stats.t.ppf(0.975, df) * np.sqrt(terms.sum())
    assert gap == pytest.approx((0.35 + 0.2) / 2) and (lo, hi) == pytest.approx((gap - half, gap + half))
    assert np.isnan(stats.stratified_welch_interval(np.zeros((3, 2)), np.ones((3, 2)))[1])  # nothing varies
    assert np.isnan(stats.stratified_welch_interval(worse[:1], better)[1])  # a side with one run
    welch = stats.welch_coverage(3, 4, experiments=1500, sds=(0.1, 0.3))
    # sides of unequal spreads (where Welch's degrees of freedom matter) at 2 runs a side: still ~95 %
    assert 0.93 <= stats.welch_coverage(2, 1, experiments=1500, sds=(0.1,), other_sds=(0.3,)) <= 0.985
    assert 0.93 <= welch <= 0.985 and stats.bootstrap_coverage(3, 4, experiments=1500) < 0.88
