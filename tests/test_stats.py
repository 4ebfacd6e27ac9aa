"""benchmarks.stats: IQM, stratified bootstrap, probability of improvement, profiles, scores."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import trim_mean

from benchmarks import stats

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def rng_scores(runs, conditions, seed=0, loc=1.0):
    return np.random.default_rng(seed).normal(loc, 0.3, size=(runs, conditions))


# ---------------------------------------------------------------- IQM


def test_iqm_by_hand():
    assert stats.iqm(np.arange(1.0, 9.0)) == 4.5  # mean of 3, 4, 5, 6
    assert stats.iqm(np.array([[8.0, 1.0], [3.0, 6.0], [5.0, 2.0], [7.0, 4.0]])) == 4.5
    # Outliers at both ends are dropped: middle of [-1000, 1, 2, 3, 4, 5, 6, 1e9] is 2..5.
    assert stats.iqm(np.array([1e9, 1, 2, 3, 4, 5, 6, -1000.0])) == 3.5
    # n = 10: floor(10 / 4) = 2 dropped from each end, mean of 3..8.
    assert stats.iqm(np.arange(1.0, 11.0)) == 5.5
    assert stats.iqm(np.array([7.0])) == 7.0
    # A diverged (infinite) run is an outlier like any other.
    assert stats.iqm(np.array([1.0, 2.0, 3.0, np.inf])) == 2.5


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(float, st.integers(1, 12).map(lambda k: (4 * k,)), elements=FINITE))
def test_iqm_equals_trim_mean_divisible_by_4(x):
    assert stats.iqm(x) == pytest.approx(trim_mean(x, 0.25), rel=1e-9, abs=1e-6)
    assert stats.iqm(x.reshape(-1, 4)) == pytest.approx(trim_mean(x, 0.25), rel=1e-9, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(float, st.integers(1, 30), elements=FINITE))
def test_iqm_equals_trim_mean_any_size(x):
    # rliable's definition is trim_mean(x, 0.25) whatever the size.
    assert stats.iqm(x) == pytest.approx(trim_mean(x, 0.25), rel=1e-9, abs=1e-6)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_point_estimate():
    for seed in range(5):
        scores = rng_scores(10, 12, seed=seed)
        point, low, high = stats.stratified_bootstrap_ci(scores, seed=seed)
        assert point == stats.iqm(scores)
        assert low < point < high


def test_bootstrap_ci_degenerate_for_constant_data():
    point, low, high = stats.stratified_bootstrap_ci(np.full((5, 3), 0.3))
    assert point == low == high == 0.3


def test_bootstrap_ci_shrinks_with_more_runs():
    widths = []
    for runs in (5, 20, 80):
        _, low, high = stats.stratified_bootstrap_ci(rng_scores(runs, 4, seed=runs))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[2] < 0.5 * widths[0]


def test_bootstrap_ci_reproducible():
    scores = rng_scores(10, 12)
    assert stats.stratified_bootstrap_ci(scores, seed=3) == stats.stratified_bootstrap_ci(
        scores, seed=3
    )
    assert stats.stratified_bootstrap_ci(scores, seed=3) != stats.stratified_bootstrap_ci(
        scores, seed=4
    )


def test_bootstrap_ci_confidence_widens_interval():
    scores = rng_scores(10, 12)
    _, low90, high90 = stats.stratified_bootstrap_ci(scores, confidence=0.90)
    _, low99, high99 = stats.stratified_bootstrap_ci(scores, confidence=0.99)
    assert low99 < low90 < high90 < high99


def test_bootstrap_is_stratified_by_condition():
    # Condition j has values in [100 j, 100 j + 1): disjoint ranges per column.
    runs, conditions = 6, 4
    rng = np.random.default_rng(0)
    scores = rng.random((runs, conditions)) + 100.0 * np.arange(conditions)
    seen = []

    def stays_in_column(m):
        seen.append(m.copy())
        return float(all(set(m[:, j]) <= set(scores[:, j]) for j in range(conditions)))

    # The check can fail: a non-stratified resample (whole rows mixed across columns) fails it.
    mixed = rng.choice(scores.ravel(), size=scores.shape)
    assert stays_in_column(mixed) == 0.0
    seen.clear()

    assert stats.stratified_bootstrap_ci(scores, stays_in_column, reps=300) == (1.0, 1.0, 1.0)
    replicates = seen[:-1]  # the last call is the point estimate on the data itself
    assert len(replicates) == 300
    assert all(m.shape == scores.shape for m in replicates)
    # Runs really are drawn with replacement, independently per column (not whole rows).
    assert any(len(set(m[:, 0])) < runs for m in replicates)
    # Values are distinct, so each resampled value names the run it was drawn from.
    rows = [
        [[int(np.flatnonzero(scores[:, j] == v)[0]) for v in m[:, j]] for j in range(conditions)]
        for m in replicates
    ]
    assert any(r[0] != r[1] for r in rows)


def test_bootstrap_is_fast():
    scores = rng_scores(10, 12)
    start = time.perf_counter()
    stats.stratified_bootstrap_ci(scores, reps=2000)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------- probability of improvement


def test_poi_extremes():
    x = np.array([[1.0, 10.0], [2.0, 11.0]])
    y = np.array([[3.0, 12.0], [4.0, 13.0], [5.0, 14.0]])
    assert stats.probability_of_improvement(x, y) == 1.0
    assert stats.probability_of_improvement(y, x) == 0.0
    assert stats.probability_of_improvement(x, y, lower_is_better=False) == 0.0
    assert stats.probability_of_improvement(y, x, lower_is_better=False) == 1.0


def test_poi_ties_and_identical():
    x = np.full((3, 2), 5.0)
    assert stats.probability_of_improvement(x, np.full((4, 2), 5.0)) == 0.5
    z = rng_scores(7, 3)
    assert stats.probability_of_improvement(z, z) == 0.5
    assert stats.probability_of_improvement(z, z, lower_is_better=False) == 0.5


def test_poi_by_hand():
    col = lambda v: np.array(v, dtype=float)[:, None]  # noqa: E731
    assert stats.probability_of_improvement(col([1, 3]), col([2, 2])) == 0.5
    assert stats.probability_of_improvement(col([1, 2, 3]), col([2])) == pytest.approx(1.5 / 3)
    # Pairs (x, y): (1,2) win, (1,4) win, (5,2) loss, (5,4) loss, (4,2) loss, (4,4) tie.
    assert stats.probability_of_improvement(col([1, 5, 4]), col([2, 4])) == pytest.approx(2.5 / 6)
    assert stats.probability_of_improvement(
        col([1, 5, 4]), col([2, 4]), lower_is_better=False
    ) == pytest.approx(3.5 / 6)


def test_poi_averages_over_conditions():
    x = np.array([[1.0, 9.0, 1.0], [1.0, 9.0, 3.0]])
    y = np.array([[5.0, 5.0, 2.0], [5.0, 5.0, 2.0]])
    # Condition 0: 1.0, condition 1: 0.0, condition 2: 0.5.
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.5)
    x[:, 1] = 4.0  # now condition 1: 1.0
    assert stats.probability_of_improvement(x, y) == pytest.approx(2.5 / 3)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(float, st.tuples(st.integers(1, 5), st.just(3)), elements=st.integers(0, 4)),
    hnp.arrays(float, st.tuples(st.integers(1, 5), st.just(3)), elements=st.integers(0, 4)),
)
def test_poi_complement_and_mann_whitney(x, y):
    from scipy.stats import mannwhitneyu

    p = stats.probability_of_improvement(x, y)
    assert p + stats.probability_of_improvement(y, x) == pytest.approx(1.0)
    assert stats.probability_of_improvement(x, y, lower_is_better=False) == pytest.approx(1 - p)
    u = [mannwhitneyu(y[:, j], x[:, j]).statistic / (len(x) * len(y)) for j in range(3)]
    assert p == pytest.approx(np.mean(u))


def test_poi_ci():
    x, y = rng_scores(10, 5, seed=1, loc=0.8), rng_scores(8, 5, seed=2, loc=1.0)
    point, low, high = stats.probability_of_improvement_ci(x, y)
    assert point == stats.probability_of_improvement(x, y)
    assert 0.5 < low < point < high <= 1.0
    assert stats.probability_of_improvement_ci(x, y) == (point, low, high)
    assert stats.probability_of_improvement_ci(x, y, seed=1) != (point, low, high)
    # Flipping the direction mirrors the interval around 1/2.
    p2, low2, high2 = stats.probability_of_improvement_ci(x, y, lower_is_better=False)
    assert (p2, low2, high2) == pytest.approx((1 - point, 1 - high, 1 - low))
    # Both sides are resampled: a constant x leaves all the uncertainty to y, and y against
    # itself is uncertain only if the two copies are resampled independently.
    _, low, high = stats.probability_of_improvement_ci(np.ones((5, 5)), y)
    assert low < high
    _, low, high = stats.probability_of_improvement_ci(x, np.ones((5, 5)))
    assert low < high
    _, low, high = stats.probability_of_improvement_ci(y, y)
    assert low < 0.5 < high
    # All ties: no uncertainty.
    assert stats.probability_of_improvement_ci(np.ones((3, 2)), np.ones((4, 2))) == (0.5, 0.5, 0.5)


def test_poi_condition_mismatch():
    with pytest.raises(ValueError, match="conditions"):
        stats.probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))


# ---------------------------------------------------------------- performance profile


def test_performance_profile_by_hand():
    scores = np.array([[0.1, 0.4], [0.2, 0.5], [0.3, 0.6], [0.3, 0.9]])
    taus = np.array([0.0, 0.2, 0.3, 0.55, 1.0])
    np.testing.assert_allclose(stats.performance_profile(scores, taus), [0, 2 / 8, 4 / 8, 6 / 8, 1])
    np.testing.assert_allclose(
        stats.performance_profile(scores, taus, lower_is_better=False),
        [1, 7 / 8, 6 / 8, 2 / 8, 0],
    )


def test_performance_profile_monotone():
    scores = rng_scores(10, 12)
    taus = np.linspace(-1, 3, 101)
    lower = stats.performance_profile(scores, taus)
    higher = stats.performance_profile(scores, taus, lower_is_better=False)
    assert np.all(np.diff(lower) >= 0) and lower[0] == 0 and lower[-1] == 1
    assert np.all(np.diff(higher) <= 0) and higher[0] == 1 and higher[-1] == 0


def test_performance_profile_ci_brackets():
    scores = rng_scores(10, 12)
    taus = np.linspace(0, 2, 21)
    point, low, high = stats.performance_profile_ci(scores, taus)
    np.testing.assert_array_equal(point, stats.performance_profile(scores, taus))
    assert point.shape == low.shape == high.shape == taus.shape
    assert np.all(low <= point) and np.all(point <= high)
    assert np.any(low < high)  # the band is not trivially zero-width
    inside = (taus > 0.8) & (taus < 1.2)  # near the median the profile is uncertain
    assert np.all(low[inside] < point[inside]) and np.all(point[inside] < high[inside])
    # Far outside the data the band collapses to 0 or 1.
    assert low[0] == high[0] == 0.0 and low[-1] == high[-1] == 1.0


# ---------------------------------------------------------------- normalized score


def test_normalized_score():
    reference = np.array([0.1, 1.0])
    worst = np.array([2.1, 3.0])
    scores = np.array([[0.1, 1.0], [2.1, 3.0], [1.1, 2.0], [3.1, 0.0]])
    np.testing.assert_allclose(
        stats.normalized_score(scores, reference, worst),
        [[1.0, 1.0], [0.0, 0.0], [0.5, 0.5], [-0.5, 1.5]],
    )
    # The same formula serves scores where higher is better (worst < reference).
    np.testing.assert_allclose(
        stats.normalized_score(np.array([5.0, 0.0, 2.5]), np.array([5.0] * 3), np.zeros(3)),
        [1.0, 0.0, 0.5],
    )


def test_normalized_score_zero_span():
    reference = worst = np.array([1.0, 2.0])
    scores = np.array([[1.0, 2.5], [0.5, 1.5]])
    with np.errstate(all="raise"):
        out = stats.normalized_score(scores, reference, worst)
    np.testing.assert_array_equal(out, [[1.0, 0.0], [1.0, 1.0]])
    out_hi = stats.normalized_score(scores, reference, worst, lower_is_better=False)
    np.testing.assert_array_equal(out_hi, [[1.0, 1.0], [0.0, 0.0]])


def test_normalized_score_shape_mismatch():
    with pytest.raises(ValueError, match="conditions"):
        stats.normalized_score(np.ones((3, 2)), np.ones(3), np.zeros(3))


# ---------------------------------------------------------------- aggregate


def test_aggregate():
    table = {"cosine": rng_scores(10, 12, seed=1, loc=0.5), "constant": rng_scores(10, 12, seed=2)}
    out = stats.aggregate(table, reps=500)
    assert list(out) == ["cosine", "constant"]
    for name, scores in table.items():
        row = out[name]
        assert set(row) == {"iqm", "iqm_low", "iqm_high", "mean", "median"}
        assert row["iqm"] == stats.iqm(scores)
        assert row["iqm_low"] < row["iqm"] < row["iqm_high"]
        assert row["mean"] == pytest.approx(scores.mean())
        assert row["median"] == pytest.approx(np.median(scores.mean(axis=0)))
        assert (row["iqm"], row["iqm_low"], row["iqm_high"]) == stats.stratified_bootstrap_ci(
            scores, reps=500
        )
    assert out["cosine"]["iqm_high"] < out["constant"]["iqm_low"]
    # Independent of the order of the table.
    assert stats.aggregate(dict(reversed(table.items())), reps=500) == out


# ---------------------------------------------------------------- input checks


def test_nan_raises():
    bad = np.ones((3, 2))
    bad[1, 1] = np.nan
    good = np.ones((3, 2))
    with pytest.raises(ValueError, match="NaN"):
        stats.iqm(bad)
    with pytest.raises(ValueError, match=r"NaN"):
        stats.stratified_bootstrap_ci(bad)
    with pytest.raises(ValueError, match=r"y: .*\(3, 2\).*NaN"):
        stats.probability_of_improvement(good, bad)
    with pytest.raises(ValueError, match="NaN"):
        stats.probability_of_improvement_ci(bad, good)
    with pytest.raises(ValueError, match="NaN"):
        stats.performance_profile(bad, np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        stats.performance_profile_ci(bad, np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        stats.normalized_score(bad, np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"controller 'cosine'.*\(3, 2\).*NaN"):
        stats.aggregate({"constant": good, "cosine": bad})


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match="runs, conditions"):
        stats.stratified_bootstrap_ci(np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        stats.iqm(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        stats.stratified_bootstrap_ci(np.ones((3, 2)), confidence=1.5)
    with pytest.raises(ValueError, match="reps"):
        stats.stratified_bootstrap_ci(np.ones((3, 2)), reps=0)


def test_infinite_scores_do_not_poison_intervals():
    scores = rng_scores(8, 3)
    scores[0, 0] = np.inf  # one diverged run
    point, low, high = stats.stratified_bootstrap_ci(scores)
    assert np.isfinite([point, low, high]).all() and low <= point <= high
    scores[:6, 0] = np.inf  # nearly every replicate has a diverged run: max is inf
    _, low, high = stats.stratified_bootstrap_ci(scores, statistic=np.max)
    assert low == high == np.inf
