"""The analysis statistics against numpy/scipy oracles and constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from monitoring.perf.stats import (
    align,
    compare,
    correlate,
    hodges_lehmann,
    percentile,
    rank_biserial,
)

samples = st.lists(st.integers(0, 20).map(float), min_size=1, max_size=40)


def _brute_effect(x: np.ndarray, y: np.ndarray) -> float:
    d = np.subtract.outer(x, y)
    return float((d > 0).mean() - (d < 0).mean())


@settings(max_examples=examples(200), deadline=None)
@given(samples, samples)
def test_rank_biserial_of_u_is_the_pairwise_dominance(x: list[float], y: list[float]) -> None:
    a, b = np.array(x), np.array(y)
    u = sps.mannwhitneyu(a, b, alternative="greater").statistic
    assert rank_biserial(float(u), len(a), len(b)) == pytest.approx(_brute_effect(a, b))


@settings(max_examples=examples(100), deadline=None)
@given(samples, samples)
def test_hodges_lehmann_is_the_median_pairwise_difference(x: list[float], y: list[float]) -> None:
    a, b = np.array(x), np.array(y)
    assert hodges_lehmann(a, b) == float(np.median(np.subtract.outer(a, b)))


def test_hodges_lehmann_thins_large_inputs_and_still_finds_the_shift() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(10.3, 1, 50_000), rng.normal(10, 1, 50_000)
    assert hodges_lehmann(x, y) == pytest.approx(0.3, abs=0.05)


def test_compare_flags_a_large_significant_increase() -> None:
    rng = np.random.default_rng(2)
    base = rng.lognormal(math.log(0.05), 0.3, 400)
    cur = rng.lognormal(math.log(0.065), 0.3, 200)  # +30 % median
    c = compare(cur, base)
    oracle = sps.mannwhitneyu(cur, base, alternative="greater")
    assert c.p_value == pytest.approx(oracle.pvalue) and c.u == oracle.statistic
    assert c.regression and c.verdict() == "regression"
    assert c.relative_change == pytest.approx((np.median(cur) - np.median(base)) / np.median(base))
    assert 0.3 < c.rank_biserial < 0.7
    assert c.hodges_lehmann > 0


def test_compare_does_not_flag_noise_or_tiny_changes() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(math.log(0.05), 0.3, 400)
    same = rng.lognormal(math.log(0.05), 0.3, 200)
    c = compare(same, base)
    assert not c.significant and not c.regression and c.verdict() == "not significant"
    # a 2 % shift on 40,000 windows is significant but under the 10 % floor
    big_base = rng.normal(100, 1, 40_000)
    big_cur = rng.normal(102, 1, 40_000)
    c = compare(big_cur, big_base)
    assert c.significant and not c.regression and c.verdict() == "too small"


def test_compare_lower_is_worse_for_throughput() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(100, 5, 300)
    cur = rng.normal(70, 5, 100)
    assert compare(cur, base, worse="lower").regression
    assert not compare(cur, base, worse="higher").regression
    assert not compare(base, cur, worse="lower").regression


def test_compare_edge_cases() -> None:
    assert compare(np.array([]), np.array([1.0])).verdict() == "no data"
    assert compare(np.array([np.nan]), np.array([1.0])).verdict() == "no data"
    c = compare(np.full(10, 0.1), np.full(10, 0.1))
    assert c.p_value == 1.0 and not c.regression and c.rank_biserial == 0
    with pytest.raises(ValueError, match="alpha"):
        compare(np.ones(3), np.ones(3), alpha=0)
    with pytest.raises(ValueError, match="min_change"):
        compare(np.ones(3), np.ones(3), min_change=-1)


def test_correlate_is_spearman() -> None:
    rng = np.random.default_rng(5)
    cpu = rng.uniform(0.1, 1.0, 200)
    latency = 0.02 + 0.1 * cpu**4 + rng.normal(0, 0.002, 200)
    c = correlate(latency, cpu)
    # Spearman's rho is Pearson's r of the ranks
    r = np.corrcoef(sps.rankdata(latency), sps.rankdata(cpu))[0, 1]
    assert c.rho == pytest.approx(r) and c.rho > 0.9 and c.p_value < 1e-10 and c.n == 200
    unrelated = correlate(rng.normal(size=200), cpu)
    assert abs(unrelated.rho) < 0.2
    assert math.isnan(correlate(np.ones(5), cpu[:5]).rho)
    assert math.isnan(correlate(np.ones(2), cpu[:2]).rho)


def test_align_joins_on_common_timestamps() -> None:
    a, b = align(
        np.array([0, 60, 120, 180]),
        np.array([1.0, 2.0, np.nan, 4.0]),
        np.array([60, 120, 180, 240]),
        np.array([20.0, 30.0, 40.0, 50.0]),
    )
    assert a.tolist() == [2.0, 4.0] and b.tolist() == [20.0, 40.0]


def test_percentile_matches_numpy() -> None:
    v = np.random.default_rng(6).exponential(1, 1001)
    for q in (0.5, 0.9, 0.99):
        assert percentile(v, q) == np.quantile(v, q, method="inverted_cdf")
    assert math.isnan(percentile(np.array([np.nan]), 0.5))
