"""Statistics for few-seed RL results: honest small-n intervals, rliable aggregates, power.

Per task (a handful of seeds): Student-t intervals of the mean and Welch t-intervals of a difference,
which keep their coverage at n = 3 (a percentile bootstrap over 3 seeds is [min, max] and covers the
true mean about 74 % of the time). Across tasks and seeds: rliable's interquartile mean, mean,
probability of improvement and performance profiles with stratified bootstrap CIs (Agarwal et al.,
"Deep RL at the Edge of the Statistical Precipice", 2021). And the plain power calculation that says
whether "not resolved" means "no effect" or "too few seeds".

Score matrices are [runs, tasks] as in rliable. rliable draws its resamples from numpy's global random
state (whatever `random_state` says), so every call here seeds it and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics
from scipy import stats

LEVEL = 0.95
#: resamples of the stratified bootstrap (rliable's default for profiles; its 50,000 for intervals costs 25x the time)
REPS = 2000
#: the power of the "seeds needed" calculation (two-sided test at 1 - LEVEL)
POWER = 0.8


def key_seed(seed: int, key: str) -> int:
    """The resampling seed of one encoder's estimate: its intervals do not change when other encoders join a report."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**32


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """numpy's global random state seeded for the block and restored after (rliable resamples from it)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def t_interval(
    values: Sequence[float] | np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Student-t confidence interval of the mean over seeds (values [n] or [n, T] -> per column); NaN at n < 2."""
    x = np.asarray(values, float)
    n = len(x)
    if n < 2:
        nan = np.full(x.shape[1:], np.nan) if x.ndim > 1 else math.nan
        return nan, nan
    half = stats.t.ppf((1 + level) / 2, n - 1) * x.std(0, ddof=1) / math.sqrt(n)
    return x.mean(0) - half, x.mean(0) + half


def constant(values: Sequence[float], tolerance: float = 1e-9) -> bool:
    """Whether `values` are equal up to float rounding (means of the same numbers summed in another order differ
    in the last digit; their variance is ~1e-35, not 0)."""
    return float(np.ptp(np.asarray(values, float))) <= tolerance


def welch_interval(worse: Sequence[float], better: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """mean(better) - mean(worse) and its Welch t-interval (unequal variances); NaN bounds if a side has < 2 seeds
    or neither side varies (e.g. every seed 0.00 in both: no interval, rather than one of zero width that would
    read as certain)."""
    a, b = np.asarray(worse, float), np.asarray(better, float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    if constant(a) and constant(b):
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + level) / 2, df) * se
    return diff, diff - half, diff + half


def stratified_welch_interval(
    worse: np.ndarray, better: np.ndarray, level: float = LEVEL
) -> tuple[float, float, float]:
    """The mean over tasks of mean(better) - mean(worse) per task, from [runs, tasks] matrices (rliable's layout),
    and its Welch t-interval: the variance sums each task's and side's s^2 / n / tasks^2, the degrees of freedom
    are Welch-Satterthwaite's over those terms. Unlike a percentile bootstrap it keeps its coverage at 3 runs per
    task (`welch_coverage`). NaN bounds if a side has < 2 runs on a task or nothing varies anywhere."""
    a, b = np.asarray(worse, float), np.asarray(better, float)
    diff = float((b.mean(0) - a.mean(0)).mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    tasks = a.shape[1]
    terms = np.concatenate([a.var(0, ddof=1) / len(a), b.var(0, ddof=1) / len(b)]) / tasks**2  # [2 T]
    dfs = np.concatenate([np.full(tasks, len(a) - 1), np.full(tasks, len(b) - 1)])
    if all(constant(x) for x in (*a.T, *b.T)):
        return diff, math.nan, math.nan
    se = math.sqrt(float(terms.sum()))
    df = float(terms.sum() ** 2 / (terms**2 / dfs).sum())
    half = stats.t.ppf((1 + level) / 2, df) * se
    return diff, diff - half, diff + half


def welch_coverage(
    runs: int,
    tasks: int = 1,
    level: float = LEVEL,
    experiments: int = 4000,
    sds: Sequence[float] = (1.0,),
    seed: int = 0,
    other_sds: Sequence[float] | None = None,
    other_runs: int | None = None,
) -> float:
    """How often `stratified_welch_interval` covers the true gap (0) when each task's `runs` scores per side are
    normal, side by side with the bootstrap's `bootstrap_coverage` (a simulation). `sds`: one side's spreads, cycled
    over the tasks; `other_sds` and `other_runs`: the other side's (None: the same). Unequal spreads and sizes are
    where Welch's degrees of freedom matter."""
    rng = np.random.default_rng(seed)
    spread = np.resize(np.asarray(sds, float), tasks)
    other = spread if other_sds is None else np.resize(np.asarray(other_sds, float), tasks)
    covered = 0
    for _ in range(experiments):
        a = rng.standard_normal((runs, tasks)) * spread
        b = rng.standard_normal((other_runs or runs, tasks)) * other
        _, lo, hi = stratified_welch_interval(a, b, level)
        covered += int(lo <= 0 <= hi)
    return covered / experiments


def pooled_sd(groups: Sequence[Sequence[float]]) -> float:
    """Within-group standard deviation pooled over groups with >= 2 values (ddof 1 each); NaN if none has 2,
    0 if none varies (`constant`)."""
    usable = [np.asarray(g, float) for g in groups if len(g) >= 2]
    if not usable:
        return math.nan
    if all(constant(g) for g in usable):
        return 0.0
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in usable)
    return math.sqrt(ss / sum(len(g) - 1 for g in usable))


def power(gap: float, sd: float, seeds: int, tasks: int = 1, alpha: float = 1 - LEVEL) -> float:
    """Power of the two-sided two-sample t-test of a mean gap (averaged over `tasks`, `seeds` per arm and
    task, the same within-task spread `sd` everywhere) at level `alpha`."""
    if seeds < 2:
        return 0.0
    if sd == 0:
        return 1.0 if gap else 0.0
    df = tasks * (2 * seeds - 2)
    noncentrality = abs(gap) / (sd * math.sqrt(2 / (seeds * tasks)))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, noncentrality) + stats.nct.cdf(-crit, df, noncentrality))


def seeds_needed(gap: float, sd: float, tasks: int = 1, target: float = POWER, max_seeds: int = 1000) -> int | None:
    """Fewest seeds per arm and task whose t-test resolves `gap` with power `target`; None above max_seeds or if sd is NaN."""
    if math.isnan(sd) or math.isnan(gap):
        return None
    lo, hi = 2, max_seeds  # power rises with seeds: bisect
    if power(gap, sd, hi, tasks) < target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if power(gap, sd, mid, tasks) < target else (lo, mid)
    return lo


def detectable_gap(sd: float, seeds: int, tasks: int = 1, target: float = POWER) -> float:
    """Smallest gap that `seeds` per arm and task resolve with power `target` (the spread `sd` within tasks)."""
    if seeds < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0
    lo, hi = 0.0, 100 * sd
    for _ in range(60):  # bisection on the monotone power curve
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power(mid, sd, seeds, tasks) < target else (lo, mid)
    return hi


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all runs and tasks (rliable: the 25 % trimmed mean)."""
    return float(metrics.aggregate_iqm(np.asarray(scores, float)))


def aggregate_intervals(
    scores: Mapping[str, np.ndarray], reps: int = REPS, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per key: {"iqm": (point, lo, hi), "mean": (point, lo, hi)} over its [runs, tasks] matrix,
    percentile CIs of rliable's stratified bootstrap (runs resampled within each task; each key under its own seed, `key_seed`, so adding an encoder to a report leaves the others' intervals as they were)."""

    def both(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    points, cis = {}, {}
    for k, v in scores.items():
        with seeded_global_rng(key_seed(seed, k)):
            p, c = rly.get_interval_estimates(
                {k: np.asarray(v, float)}, both, reps=reps, confidence_interval_size=level
            )
        points[k], cis[k] = p[k], c[k]
    return {
        k: {
            name: (float(points[k][i]), float(cis[k][0, i]), float(cis[k][1, i]))
            for i, name in enumerate(("iqm", "mean"))
        }
        for k in scores
    }


def improvement_probability(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's `metrics.probability_of_improvement` (P(X > Y) + P(X = Y) / 2 per task, averaged over
    tasks), vectorised: rliable's runs scipy's Mann-Whitney test per task and resample, 20x slower."""
    pairs = x[:, None, :] - y[None, :, :]  # [runs x, runs y, tasks]
    return float(((pairs > 0) + 0.5 * (pairs == 0)).mean((0, 1)).mean())


def probability_of_improvement(
    better: np.ndarray, worse: np.ndarray, reps: int = REPS, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """P(a run of `better` beats a run of `worse` on the same task), averaged over tasks (ties count half),
    with its stratified bootstrap CI (each side's runs resampled on their own within each task)."""
    with seeded_global_rng(seed):
        points, cis = rly.get_interval_estimates(
            {"pair": (np.asarray(better, float), np.asarray(worse, float))},
            improvement_probability,
            reps=reps,
            confidence_interval_size=level,
        )
    return float(points["pair"]), float(cis["pair"][0].item()), float(cis["pair"][1].item())


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = REPS, seed: int = 0, level: float = LEVEL
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score distributions: per key the fraction of runs (all tasks) scoring above each tau [T],
    and its stratified bootstrap CI [2, T] (each key resampled under its own seed, `key_seed`)."""
    profiles, bands = {}, {}
    for k, v in scores.items():
        with seeded_global_rng(key_seed(seed, k)):
            p, b = rly.create_performance_profile(
                {k: np.asarray(v, float)},
                taus,
                custom_profile_func=score_distribution,
                reps=reps,
                confidence_interval_size=level,
            )
        profiles[k], bands[k] = p[k], b[k]
    return profiles, bands


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's `score_distributions` (the fraction of all scores above each tau) [T], vectorised over
    taus: rliable loops over them in Python, 100x slower on 101 thresholds x 2,000 resamples."""
    return (np.asarray(scores).reshape(-1, 1) > np.asarray(taus)[None]).mean(0)


def bootstrap_coverage(
    runs: int, tasks: int = 1, level: float = LEVEL, experiments: int = 2000, reps: int = 1000, seed: int = 0
) -> float:
    """How often the stratified percentile-bootstrap CI of the mean covers the true mean when each task's
    `runs` scores are normal with one spread (a simulation): 95 % is only its nominal level at small n."""
    rng = np.random.default_rng(seed)
    covered = 0
    for start in range(0, experiments, 100):  # [chunk, reps, runs, tasks] stays small
        chunk = min(100, experiments - start)
        x = rng.standard_normal((chunk, runs, tasks)).astype(np.float32)  # true mean 0 on every task
        pick = rng.integers(0, runs, (chunk, reps, runs, tasks))
        means = np.take_along_axis(x[:, None], pick, axis=2).mean((2, 3))  # [chunk, reps]
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=1)
        covered += int(((lo <= 0) & (hi >= 0)).sum())
    return covered / experiments
