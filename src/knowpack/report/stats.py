"""Statistics for study results: t-intervals across seeds and paired tests between two cells.

Paired tests work on per-fact outcomes (a bool per held-out fact, e.g. "had a negative shift")
for the facts both cells hold out, so differences come from the mixture, not the fact sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Interval:
    """Mean with a two-sided confidence interval (NaN bounds when it cannot be estimated)."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t confidence interval for the mean of ``values`` (NaNs dropped).

    One value gives no spread, so its bounds are NaN; identical values give a zero-width interval.
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(_st.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``only_a`` = pairs where only A's outcome is true, ``only_b`` likewise."""

    only_a: int
    only_b: int
    n: int
    pvalue: float


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(a, b) -> McNemar:
    """Two-sided exact McNemar test on paired bool outcomes (binomial test on discordant pairs).

    Only pairs where the two cells disagree carry information; under H0 each such pair is
    equally likely to favour A or B, so the count favouring A is Binomial(discordant, 1/2).
    """
    a, b = _paired(a, b)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(_st.binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a=only_a, only_b=only_b, n=len(a), pvalue=min(1.0, p))


@dataclass(frozen=True)
class Difference:
    """Difference of rates (A − B) with a paired bootstrap confidence interval."""

    diff: float
    low: float
    high: float
    n: int


def paired_bootstrap(a, b, *, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Difference:
    """Percentile bootstrap CI for mean(a) − mean(b), resampling facts (pairs) with replacement.

    Resampling pairs keeps the correlation between the two cells' outcomes on the same fact,
    which is what makes the interval narrower than for two independent samples.
    """
    a, b = _paired(a, b)
    n = len(a)
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, 0)
    d = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(seed)
    # Draw index blocks to bound memory on large fact sets (n_boot x n would be 200M for 20k facts).
    means = np.empty(n_boot)
    block = max(1, 2_000_000 // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Difference(float(d.mean()), float(low), float(high), n)
