"""Tests of driftlib.stats.paired: the point difference against the existing per-set AQI code, a
planted difference and none, the exact agreement of test and interval, the pairing, and the level
of the test by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftlib.core.errors import ConfigError, DataError, NumericsError
from driftlib.stats import aqi as Aq
from driftlib.stats import drift as Dr
from driftlib.stats import paired as Pd
from driftlib.stats import power as Pw

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def prompts(seed, n=240, d=48, sep=0.5):
    """States of n prompts: anisotropic noise, the safe class shifted by ``sep`` along a unit ``u``."""
    rng = np.random.default_rng(seed)
    y = rng.permutation((np.arange(n) < n // 2).astype(int))
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + sep * np.outer(y, u) * 2.0
    return X, y, u, rng


def class_mean_gap(Z, y):
    """A cheap statistic: safe minus unsafe mean of the first feature."""
    return float(Z[y, 0].mean() - Z[~y, 0].mean())


def test_default_difference_is_the_per_set_aqi_difference():
    A, y, u, rng = prompts(0)
    B = A + 0.4 * rng.standard_normal(A.shape)
    for kwargs in ({}, {"n_components": None}, {"method": "none"}, {"n_components": 8, "seed": 3}):
        res = Pd.paired_difference(None, A, B, y, n_boot=50, **kwargs)
        qa = Aq.alignment_quality(A, y, n_boot=0, n_perm=0, **kwargs).aqi
        qb = Aq.alignment_quality(B, y, n_boot=0, n_perm=0, **kwargs).aqi
        assert res.stat_a == pytest.approx(qa, abs=1e-10) and res.stat_b == pytest.approx(qb, abs=1e-10)
        assert res.difference == pytest.approx(Dr.aqi_difference(A, B, y, **kwargs), abs=1e-10)


def test_no_difference_gives_zero_and_p_one():
    A, y, _, _ = prompts(1)
    res = Pd.paired_difference(None, A, A.copy(), y, n_boot=200)
    assert res.difference == 0.0 and res.ci_low == 0.0 and res.ci_high == 0.0
    assert res.p_value == 1.0 and res.se == 0.0 and res.mde == 0.0
    assert res.p_floor == pytest.approx(1 / 201) and res.defined and res.n_boot == 200


def test_planted_difference_is_found():
    """B = A with the unsafe class moved further from the safe class along u: AQI(B) > AQI(A)."""
    A, y, u, _ = prompts(2, sep=0.3)
    B = A - 1.2 * np.outer(1 - y, u)
    res = Pd.paired_difference(None, A, B, y, n_boot=500)
    assert res.difference < 0 and res.ci_high < 0
    assert res.p_value == pytest.approx(res.p_floor) and res.p_value == pytest.approx(1 / 501)
    assert res.ci_low <= res.difference <= res.ci_high
    assert res.mde == pytest.approx(Pw.minimum_detectable_effect(res.se, alpha=0.05), rel=1e-12)
    assert abs(res.difference) > res.mde  # resolvable
    # the same with a generic statistic on raw features
    gen = Pd.paired_difference(lambda Z, yy: class_mean_gap(Z @ u[:, None], yy), A, B, y, n_boot=300, method="none")
    assert gen.difference == pytest.approx(class_mean_gap((A @ u)[:, None], y.astype(bool))
                                           - class_mean_gap((B @ u)[:, None], y.astype(bool)))
    assert gen.difference == pytest.approx(-1.2, abs=1e-9)  # exactly the planted shift of the unsafe class
    assert gen.ci_high < 0 and gen.p_value == pytest.approx(1 / 301)


def test_the_bootstrap_is_paired():
    """Two noisy readings of the same prompts: the paired SE of the difference is far below the SE
    of independent AQIs, sqrt(se_A^2 + se_B^2) (independent resampling would give about that)."""
    A, y, _, rng = prompts(3, n=300, d=64)
    B = A + 0.3 * rng.standard_normal(A.shape)
    res = Pd.paired_difference(None, A, B, y, n_boot=400)
    se_a = Aq.alignment_quality(A, y, n_boot=400, n_perm=0).se
    se_b = Aq.alignment_quality(B, y, n_boot=400, n_perm=0).se
    assert res.se < 0.5 * math.hypot(se_a, se_b), (res.se, se_a, se_b)


def test_test_and_interval_agree_exactly_on_many_random_inputs():
    """p < 1 - confidence exactly when the interval excludes 0, for random data, draw counts and levels
    (effects near 0 so that both outcomes occur)."""
    rng = np.random.default_rng(7)
    outcomes = []
    for case in range(150):
        n = int(rng.integers(8, 40))
        y = rng.permutation((np.arange(n) < n // 2).astype(int))
        A = rng.standard_normal((n, 3))
        B = A + rng.normal(0, 0.5, (n, 3)) + rng.normal(0, 0.4) * np.outer(y, [1, 0, 0])
        conf = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
        n_boot = int(rng.choice([120, 199, 200, 999]))
        res = Pd.paired_difference(class_mean_gap, A, B, y, n_boot=n_boot, confidence=conf, seed=case,
                                   method="none")
        excludes = not (res.ci_low <= 0.0 <= res.ci_high)
        assert (res.p_value < Pd.level_of(conf)) == excludes, (case, res)
        outcomes.append(excludes)
    assert 10 < sum(outcomes) < 140
    # directly on draws with many ties at 0 and small draw counts
    for case in range(300):
        B = int(rng.integers(20, 120))
        conf = float(rng.choice([0.9, 0.95, 0.975]))
        if (B + 1) * Pd.level_of(conf) <= 1:
            continue
        draws = rng.integers(-3, 4, B) + rng.integers(0, 3)
        lo, hi, p = Pd.sign_test_interval(draws, conf)
        assert (p < Pd.level_of(conf)) == (not lo <= 0 <= hi), (case, B, conf, lo, hi, p)
        m = min(np.sum(draws <= 0), np.sum(draws >= 0))
        assert p == pytest.approx(min(1.0, (1 + 2 * m) / (B + 1)))


def test_sign_test_interval_by_hand():
    # 20 draws 1..20, confidence 0.8: j = smallest with (1 + 2 j) / 21 >= 0.2 -> j = 2 (1.6 -> 2)
    lo, hi, p = Pd.sign_test_interval(np.arange(1, 21)[::-1], 0.8)
    assert (lo, hi) == (2.0, 19.0) and p == pytest.approx(1 / 21)
    # 999 draws, 0.95: j = ceil((0.05 * 1000 - 1) / 2) = 25 -> the 25th and 975th order statistics
    t = np.random.default_rng(0).normal(size=999)
    lo, hi, _ = Pd.sign_test_interval(t, 0.95)
    s = np.sort(t)
    assert (lo, hi) == (s[24], s[974])
    with pytest.raises(ConfigError):
        Pd.sign_test_interval(np.ones(19), 0.95)  # 20 <= 1 / 0.05: no 95% interval
    assert Pd.level_of(0.95) == 0.05 and Pd.level_of(0.9) == 0.1
    # p exactly at the level does not reject, and the interval then contains 0: 39 draws, 0.95,
    # one draw <= 0 -> p = (1 + 2) / 40 = 0.075; none -> 1 / 40 = 0.025 (rejects)
    lo, hi, p = Pd.sign_test_interval(np.r_[-1.0, np.arange(1.0, 39.0)], 0.95)
    assert p == pytest.approx(0.075) and lo <= 0 <= hi
    lo, hi, p = Pd.sign_test_interval(np.arange(1.0, 40.0), 0.95)
    assert p == pytest.approx(0.025) and lo == 1.0 and hi == 39.0
    with pytest.raises(NumericsError):
        Pd.sign_test_interval([1.0, np.nan] * 20, 0.9)


def test_level_of_the_test_by_simulation():
    """Two readings with no difference in the statistic's expectation: the 5% test rejects in about
    5% of data sets (percentile bootstrap tests are slightly liberal at small n)."""
    rng = np.random.default_rng(11)
    rejections = []
    for rep in range(200):
        n = 60
        y = rng.permutation((np.arange(n) < n // 2).astype(int))
        P = rng.standard_normal((n, 2)) + np.outer(y, [1.0, 0.0])
        A = P + rng.standard_normal((n, 2))
        B = P + rng.standard_normal((n, 2))
        res = Pd.paired_difference(class_mean_gap, A, B, y, n_boot=199, seed=rep, method="none")
        rejections.append(res.p_value < 0.05)
    rate = float(np.mean(rejections))
    assert 0.015 <= rate <= 0.10, rate


def test_seeding_undefined_and_bad_inputs():
    A, y, _, rng = prompts(4, n=60, d=8)
    B = A + rng.standard_normal(A.shape)
    r1 = Pd.paired_difference(None, A, B, y, n_boot=100, seed=5)
    assert Pd.paired_difference(None, A, B, y, n_boot=100, seed=5) == r1
    assert Pd.paired_difference(None, A, B, y, n_boot=100, seed=6).ci_low != r1.ci_low
    assert list(r1.as_dict()) == list(Pd.PAIRED_FIELDS)
    one = np.zeros(60, dtype=int)
    one[0] = 1
    und = Pd.paired_difference(None, A, B, one, n_boot=100)
    assert not und.defined and "safe" in und.note and math.isnan(und.difference)
    # a statistic that is undefined when a resample's first two (safe) rows are the same prompt, which
    # happens with probability 1 / n_safe = 1/30 per draw: those draws are left out and counted
    def flaky_stat(Z, yy):
        return np.nan if Z[0, 0] == Z[1, 0] else class_mean_gap(Z, yy)

    flaky = Pd.paired_difference(flaky_stat, A, B, y, n_boot=600, method="none")
    lost = 600 - flaky.n_boot
    assert flaky.defined and 5 <= lost <= 40 and f"{lost} of 600 bootstrap draws were not finite" in flaky.note
    assert flaky.p_floor == pytest.approx(1 / (flaky.n_boot + 1))
    # finite only on sets without repeated prompts (the observed ones, never a resample): undefined
    none_left = Pd.paired_difference(
        lambda Z, yy: class_mean_gap(Z, yy) if np.unique(Z[:, 0]).size == Z.shape[0] else np.inf,
        A, B, y, n_boot=100, method="none")
    assert not none_left.defined and none_left.n_boot == 0 and "too few finite" in none_left.note
    assert none_left.difference == pytest.approx(class_mean_gap(A, y.astype(bool)) - class_mean_gap(B, y.astype(bool)))
    with pytest.raises(ConfigError):
        Pd.paired_difference(None, A, B, y, n_boot=10)  # 11 <= 1 / 0.05
    with pytest.raises(ConfigError):
        Pd.paired_difference(None, A, B, y, confidence=1.5)
    with pytest.raises(ConfigError):
        Pd.paired_difference("aqi", A, B, y)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        Pd.paired_difference(None, A, B[:-1], y)
    bad = B.copy()
    bad[2, 2] = np.inf
    with pytest.raises(NumericsError):
        Pd.paired_difference(None, A, bad, y)
    with pytest.raises(NumericsError):
        Pd.paired_difference(lambda Z, yy: np.nan, A, B, y, method="none")
