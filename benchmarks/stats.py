"""Robust aggregate statistics for benchmark scores (Agarwal et al. 2021, "Deep RL at the Edge of
the Statistical Precipice"), in plain numpy because ``rliable`` does not install with our pins.

Why: a benchmark has few seeds per (controller, condition), so a plain mean of final losses is
noisy and dominated by a diverged run, and a point estimate alone hides that noise. Following
the paper we report

* the interquartile mean (IQM): the mean of the middle 50% of all runs of all conditions, robust
  to outliers yet using far more runs than a median;
* percentile confidence intervals from the *stratified* bootstrap: each replicate resamples the
  runs with replacement independently within each condition, so every replicate keeps every
  condition with its number of runs (conditions are fixed by the benchmark; seeds are the noise);
* the probability of improvement P(X better than Y), the Mann-Whitney U statistic over n*m
  (ties count 1/2) averaged over conditions;
* performance profiles: the fraction of runs whose score reaches each threshold.

A score matrix for one controller is ``[num_runs, num_conditions]`` (rliable's layout). Our main
score is the final test loss, where lower is better; every function whose answer depends on the
direction takes ``lower_is_better``. NaN scores raise ``ValueError``; infinite ones (a diverged
run) are allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = [
    "aggregate",
    "iqm",
    "normalized_score",
    "performance_profile",
    "performance_profile_ci",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "stratified_bootstrap_ci",
]

# Upper bound on the number of resampled values held at once (a few tens of MB as float64);
# replicates are drawn and evaluated in chunks of at most this many values.
_CHUNK_VALUES = 1 << 22


def _check(scores: np.ndarray, name: str = "scores", matrix: bool = True) -> np.ndarray:
    """Scores as a float array; NaN, empty or (if ``matrix``) non-2-D input raises ValueError."""
    arr = np.asarray(scores, dtype=float)
    if matrix and arr.ndim != 2:
        raise ValueError(f"{name}: expected a [runs, conditions] matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: scores of shape {arr.shape} are empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: scores of shape {arr.shape} contain NaN")
    return arr


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Stratified bootstrap replicates of ``scores`` [runs, conditions], in chunks [k, runs, cond].

    Each replicate draws ``runs`` row indices with replacement independently for each column, so
    a value never leaves its condition and every condition keeps its number of runs.
    """
    runs, conditions = scores.shape
    chunk = max(1, _CHUNK_VALUES // scores.size)
    cols = np.arange(conditions)
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        idx = rng.integers(0, runs, size=(k, runs, conditions))
        yield scores[idx, cols]  # [k, runs, conditions]: column j only reads column j


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``values`` [reps, ...] along axis 0.

    Linear interpolation between two equal infinities gives NaN (inf - inf); there the lower
    order statistic, that same infinity, is the right answer.
    """
    alpha = 100.0 * (1.0 - confidence) / 2.0
    q = [alpha, 100.0 - alpha]
    with np.errstate(invalid="ignore"):
        linear = np.percentile(values, q, axis=0)
    bad = np.isnan(linear)
    if bad.any():
        lower = np.percentile(values, q, axis=0, method="lower")
        linear = np.where(bad, lower, linear)
    return linear[0], linear[1]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries: the mean of the middle 50% after sorting.

    Like rliable (``scipy.stats.trim_mean(x, 0.25, axis=None)``) it drops ``floor(n / 4)``
    entries from each end; robust to a few diverged runs, less noisy than the median.
    """
    x = np.sort(_check(scores, matrix=False), axis=None)
    cut = int(0.25 * x.size)
    return float(np.mean(x[cut : x.size - cut]))


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high) of ``statistic`` over ``scores`` [runs, conditions].

    Percentile interval of the stratified bootstrap: ``statistic`` is applied to ``reps``
    resampled [runs, conditions] matrices in which the runs of each condition are drawn with
    replacement from that condition only, so the uncertainty comes from seeds, not from which
    conditions happen to be drawn.
    """
    scores = _check(scores)
    _check_bootstrap_args(reps, confidence)
    rng = np.random.default_rng(seed)
    values = np.array(
        [statistic(m) for chunk in _resample(scores, reps, rng) for m in chunk], dtype=float
    )
    low, high = _percentile_ci(values, confidence)
    return float(statistic(scores)), float(low), float(high)


def _poi_batch(x: np.ndarray, y: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """P(X better than Y) for batches x [k, n, c], y [k, m, c] -> [k]."""
    a = x[:, :, None, :]
    b = y[:, None, :, :]
    wins = (a < b) if lower_is_better else (a > b)
    ties = a == b
    per_condition = (wins + 0.5 * ties).mean(axis=(1, 2))  # [k, c]: U / (n * m)
    return per_condition.mean(axis=1)


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _check(x, "x"), _check(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must share their conditions, got shapes {x.shape} and {y.shape}")
    return x, y


def probability_of_improvement(x: np.ndarray, y: np.ndarray, lower_is_better: bool = True) -> float:
    """P(X better than Y), averaged over conditions.

    For each condition: the Mann-Whitney U statistic over n * m, i.e. the fraction of pairs
    (run of x, run of y) in which x is better, a tie counting 1/2. It says how likely x beats y
    on a random run of a condition, not by how much. x [n, c] and y [m, c] may differ in runs.
    """
    x, y = _check_pair(x, y)
    return float(_poi_batch(x[None], y[None], lower_is_better)[0])


def probability_of_improvement_ci(
    x: np.ndarray,
    y: np.ndarray,
    lower_is_better: bool = True,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high) of P(X better than Y); x and y are bootstrapped independently.

    Each replicate resamples the runs of x and of y (each stratified by condition) on its own,
    since the two controllers' seeds are independent samples.
    """
    x, y = _check_pair(x, y)
    _check_bootstrap_args(reps, confidence)
    rng = np.random.default_rng(seed)
    # Chunk so that the [k, n, m, c] comparison stays bounded too.
    per_rep = max(x.size, y.size, x.shape[0] * y.shape[0] * x.shape[1])
    chunk = max(1, _CHUNK_VALUES // per_rep)
    values = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        (xb,) = _resample(x, k, rng)  # k <= chunk, so each yields a single chunk
        (yb,) = _resample(y, k, rng)
        values.append(_poi_batch(xb, yb, lower_is_better))
    low, high = _percentile_ci(np.concatenate(values), confidence)
    return probability_of_improvement(x, y, lower_is_better), float(low), float(high)


def _profile_batch(flat: np.ndarray, thresholds: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Profiles of batches flat [k, N] at thresholds [T] -> [k, T], via sorting + searchsorted."""
    flat = np.sort(flat, axis=1)
    n = flat.shape[1]
    out = np.empty((flat.shape[0], thresholds.size))
    for i, row in enumerate(flat):
        if lower_is_better:  # count of scores <= tau
            out[i] = np.searchsorted(row, thresholds, side="right")
        else:  # count of scores >= tau
            out[i] = n - np.searchsorted(row, thresholds, side="left")
    return out / n


def _check_thresholds(thresholds: np.ndarray) -> np.ndarray:
    t = np.asarray(thresholds, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"thresholds must be a 1-D array, got shape {t.shape}")
    if np.isnan(t).any():
        raise ValueError(f"thresholds of shape {t.shape} contain NaN")
    return t


def performance_profile(
    scores: np.ndarray, thresholds: np.ndarray, lower_is_better: bool = True
) -> np.ndarray:
    """Fraction of all runs with score <= tau (or >= tau if higher is better), per threshold.

    The whole score distribution of a controller, not just one summary: one curve dominating
    another means better at every level of quality.
    """
    scores = _check(scores)
    t = _check_thresholds(thresholds)
    return _profile_batch(scores.reshape(1, -1), t, lower_is_better)[0]


def performance_profile_ci(
    scores: np.ndarray,
    thresholds: np.ndarray,
    lower_is_better: bool = True,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile, low, high), each [thresholds]: pointwise stratified-bootstrap percentile bands."""
    scores = _check(scores)
    t = _check_thresholds(thresholds)
    _check_bootstrap_args(reps, confidence)
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            _profile_batch(chunk.reshape(chunk.shape[0], -1), t, lower_is_better)
            for chunk in _resample(scores, reps, rng)
        ]
    )
    low, high = _percentile_ci(values, confidence)
    return performance_profile(scores, t, lower_is_better), low, high


def normalized_score(
    scores: np.ndarray,
    reference: np.ndarray,
    worst: np.ndarray,
    lower_is_better: bool = True,
) -> np.ndarray:
    """Per condition: (worst - score) / (worst - reference); reference -> 1, worst -> 0.

    Puts conditions whose losses live on different scales on one scale before aggregating
    (e.g. reference = an oracle schedule's loss, worst = the initial loss). ``reference`` and
    ``worst`` are [conditions] vectors, broadcast over the last axis of ``scores``. The formula
    serves either direction; only where ``worst == reference`` (no scale) it depends on it: then
    a score at least as good as the reference gets 1.0, any other 0.0.
    """
    s = _check(scores, matrix=False)
    ref = _check(reference, "reference", matrix=False)
    bad = _check(worst, "worst", matrix=False)
    if ref.shape != bad.shape or ref.ndim != 1 or s.shape[-1:] != ref.shape:
        raise ValueError(
            f"reference {ref.shape} and worst {bad.shape} must be [conditions] vectors matching "
            f"the last axis of scores {s.shape}"
        )
    span = bad - ref
    degenerate = span == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (bad - s) / np.where(degenerate, 1.0, span)
    at_least_ref = (s <= ref) if lower_is_better else (s >= ref)
    return np.where(degenerate, np.where(at_least_ref, 1.0, 0.0), out)


def aggregate(
    table: dict[str, np.ndarray],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Per controller: {"iqm", "iqm_low", "iqm_high", "mean", "median"} of its [runs, conds].

    IQM with its stratified-bootstrap CI is the headline number; "mean" is the mean over all
    runs and "median" is, as in rliable, the median over conditions of the per-condition mean.
    Every controller uses the same ``seed``, so results do not depend on the order of ``table``.
    """
    out = {}
    for name, scores in table.items():
        arr = _check(scores, f"controller {name!r}")
        point, low, high = stratified_bootstrap_ci(arr, iqm, reps, confidence, seed)
        out[name] = {
            "iqm": point,
            "iqm_low": low,
            "iqm_high": high,
            "mean": float(np.mean(arr)),
            "median": float(np.median(np.mean(arr, axis=0))),
        }
    return out
