"""Tests of driftlib.stats.drift: null calibration, power, agreement with the AQI definition and with a
slow reference that refits the preprocessing for every swap, projection drift, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftlib.core.errors import ConfigError, DataError, NumericsError
from driftlib.stats import aqi as A
from driftlib.stats import drift as DS
from driftlib.stats.transfer import aqi_point

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def paired_states(seed: int, n: int = 60, d: int = 8, sep: float = 0.8, noise: float = 0.7,
                  shift_a: float = 0.0):
    """Two conditions of the same prompts: a shared per-prompt state (safe class shifted by ``sep`` along
    axis 1) plus independent noise per condition, features on different scales. ``shift_a`` moves
    condition a's safe rows by that many per-feature sds along axis 0 (a separation gain)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation((np.arange(n) < n // 2).astype(int))
    scale = rng.uniform(0.5, 3.0, d)
    base = rng.standard_normal((n, d))
    base[:, 1] += sep * y
    h_a = base + noise * rng.standard_normal((n, d))
    h_b = base + noise * rng.standard_normal((n, d))
    sd = np.sqrt(1.0 + noise**2)
    h_a[:, 0] += shift_a * sd * y
    return h_a * scale + 5.0, h_b * scale + 5.0, y


def slow_pooled_differences(h_a, h_b, y, coins, method, n_components, seed=0):
    """The pooled statistic the slow way: build each swapped pair, refit the pooled preprocessing on it
    with the public preprocess_features, then the AQI of each half with transfer.aqi_point."""
    n = h_a.shape[0]
    out = []
    for c in coins:
        a2 = np.where(c[:, None], h_b, h_a)
        b2 = np.where(c[:, None], h_a, h_b)
        Z = A.preprocess_features(np.vstack([a2, b2]), method=method, n_components=n_components, seed=seed)
        out.append(aqi_point(Z[:n], y) - aqi_point(Z[n:], y))
    return np.array(out)


# --------------------------------------------------------------------------------------------
# the permutation test


def test_null_p_values_are_uniform():
    ps = np.array([DS.paired_permutation_test(*paired_states(seed), n_perm=199, n_components=4, seed=seed)["p_value"]
                   for seed in range(200)])
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert np.all((ps >= 1 / 200) & (ps <= 1.0))


def test_null_distribution_is_centred():
    res = DS.paired_permutation_test(*paired_states(3, n=80), n_perm=999)
    # swapping every prompt negates the statistic, so the null is symmetric about 0
    assert abs(res["null_mean"]) < 3 * res["null_sd"] / np.sqrt(999)
    assert res["null_sd"] > 0


def test_constructed_shift_is_detected():
    h_a, h_b, y = paired_states(7, n=100, shift_a=1.5)
    res = DS.paired_permutation_test(h_a, h_b, y, n_perm=999, seed=1)
    assert res["difference"] > 0
    assert res["p_value"] < 0.01
    assert res["alternative"] == "two-sided" and res["n_perm"] == 999
    assert DS.aqi_difference(h_a, h_b, y) > 0
    assert DS.paired_permutation_test(h_a, h_b, y, n_perm=999, seed=1, alternative="greater")["p_value"] < 0.01
    assert DS.paired_permutation_test(h_a, h_b, y, n_perm=999, seed=1, alternative="less")["p_value"] > 0.9
    # the conditions' roles swapped: the difference flips sign exactly, the two-sided p stays small
    rev = DS.paired_permutation_test(h_b, h_a, y, n_perm=999, seed=1)
    assert rev["difference"] == pytest.approx(-res["difference"], rel=1e-9)
    assert rev["p_value"] < 0.01


def test_p_value_counts_match_the_formula():
    h_a, h_b, y = paired_states(11, n=40, shift_a=0.5)
    n_perm = 300
    coins = DS._swap_coins(40, n_perm, 5)
    null = slow_pooled_differences(h_a, h_b, y, coins, "standardize", 32, seed=5)
    T = slow_pooled_differences(h_a, h_b, y, np.zeros((1, 40), dtype=bool), "standardize", 32, seed=5)[0]
    for alt, hits in (("two-sided", np.sum(np.abs(null) >= abs(T))), ("greater", np.sum(null >= T)),
                      ("less", np.sum(null <= T))):
        res = DS.paired_permutation_test(h_a, h_b, y, n_perm=n_perm, seed=5, alternative=alt)
        assert res["difference"] == pytest.approx(T, abs=1e-10)
        assert res["p_value"] == pytest.approx((1 + hits) / (1 + n_perm))
        assert res["null_mean"] == pytest.approx(null.mean(), abs=1e-10)
        assert res["null_sd"] == pytest.approx(null.std(ddof=1), rel=1e-9)


@pytest.mark.parametrize("method,n_components", [("standardize", 3), ("standardize", None), ("standardize", 32),
                                                 ("none", 32)])
def test_fast_pooled_statistic_equals_slow_refit(method, n_components):
    rng = np.random.default_rng(2)
    n, d = 18, 7
    y = (np.arange(n) % 3 == 0).astype(int)  # unbalanced: 6 safe, 12 unsafe
    h_a = rng.standard_normal((n, d)) * rng.uniform(0.2, 4.0, d) + 0.6 * np.outer(y, np.arange(d) % 2)
    h_b = 1.5 * rng.standard_normal((n, d)) + 10.0
    coins = DS._swap_coins(n, 64, 0)
    coins[0] = False
    coins[1] = True
    U = DS._pooled_features(h_a, h_b, method, n_components, 0)
    fast = DS._pooled_differences(U, y.astype(bool), coins)
    slow = slow_pooled_differences(h_a, h_b, y, coins, method, n_components)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
    assert fast[1] == pytest.approx(-fast[0], abs=1e-9)  # swapping every prompt negates T


def test_swap_coins_are_fair_and_do_not_depend_on_blocking(monkeypatch):
    coins = DS._swap_coins(50, 3000, 4)
    assert coins.shape == (3000, 50) and coins.dtype == bool
    assert abs(coins.mean() - 0.5) < 0.01
    monkeypatch.setattr(DS, "_COIN_BLOCK", 7)
    np.testing.assert_array_equal(DS._swap_coins(50, 3000, 4), coins)


# --------------------------------------------------------------------------------------------
# agreement with the per-set AQI definition


@pytest.mark.parametrize("kwargs", [{}, {"n_components": None}, {"n_components": 5, "seed": 3}, {"method": "none"}])
def test_aqi_difference_equals_alignment_quality(kwargs):
    h_a, h_b, y = paired_states(5, n=120, d=40, shift_a=1.5)
    diff = DS.aqi_difference(h_a, h_b, y, **kwargs)
    ref = (A.alignment_quality(h_a, y, n_boot=0, n_perm=0, **kwargs).aqi
           - A.alignment_quality(h_b, y, n_boot=0, n_perm=0, **kwargs).aqi)
    assert diff == ref
    assert diff > 0


def test_pooled_difference_equals_per_set_where_they_must_agree():
    # raw features: no preprocessing to fit, so pooled and per-set AQIs are the same numbers
    h_a, h_b, y = paired_states(6, n=50, d=12, shift_a=1.0)
    pooled = DS.paired_permutation_test(h_a, h_b, y, n_perm=10, method="none")["difference"]
    assert pooled == pytest.approx(DS.aqi_difference(h_a, h_b, y, method="none"), abs=1e-10)
    # h_b a row permutation of h_a: the pooled rows are h_a's twice, so pooled mean, sd and principal
    # axes are each set's own, with the PCA reducing (d = 12 > 4 components) or not
    perm = np.random.default_rng(0).permutation(50)
    h_b = h_a[perm]
    for nc in (4, None):
        per_set = DS.aqi_difference(h_a, h_b, y, n_components=nc)
        assert abs(per_set) > 1.0  # a real difference: b's rows no longer line up with the labels
        res = DS.paired_permutation_test(h_a, h_b, y, n_perm=10, n_components=nc)
        assert res["difference"] == pytest.approx(per_set, abs=1e-8)
        assert res["n_features"] == (4 if nc else 12)


def test_pooled_and_per_set_differences_are_close_on_typical_data():
    h_a, h_b, y = paired_states(8, n=200, d=30, shift_a=1.0)
    pooled = DS.paired_permutation_test(h_a, h_b, y, n_perm=10, n_components=None)["difference"]
    per_set = DS.aqi_difference(h_a, h_b, y, n_components=None)
    assert pooled > 0 and per_set > 0
    assert pooled == pytest.approx(per_set, rel=0.15)


def test_large_dimension_runs_fast():
    import time

    rng = np.random.default_rng(0)
    n, d = 300, 1024
    y = np.arange(n) % 2
    h_a = rng.standard_normal((n, d)).astype(np.float32)
    h_b = h_a + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    t0 = time.perf_counter()
    res = DS.paired_permutation_test(h_a, h_b, y, n_perm=1000)
    assert time.perf_counter() - t0 < 10.0
    assert res["n_features"] == 32 and 0.0 < res["p_value"] <= 1.0


# --------------------------------------------------------------------------------------------
# projection drift


def drifting_rounds(seed, slope, r=6, n=80, d=16, noise=0.5):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d) * 3.0
    u = v / np.linalg.norm(v)
    items = rng.standard_normal((n, d)) * 2.0
    t = np.arange(r)[:, None, None]
    H = items[None] + slope * t * u + noise * rng.standard_normal((r, n, d))
    return H, v


def test_projection_drift_recovers_a_planted_slope():
    H, v = drifting_rounds(0, slope=-0.3)
    res = DS.projection_drift(H, v, seed=1)
    lo, hi = res["slope_ci"]
    assert lo <= -0.3 <= hi and hi < 0
    assert lo <= res["slope"] <= hi
    assert res["slope"] == pytest.approx(-0.3, abs=0.05)
    assert res["n"] == 80
    mp = (H @ (v / np.linalg.norm(v))).mean(axis=1)
    np.testing.assert_allclose(res["mean_projection"], mp, rtol=1e-12)
    np.testing.assert_allclose(res["change"], mp - mp[0], rtol=1e-12, atol=1e-12)
    assert res["slope"] == pytest.approx(np.polyfit(np.arange(6), mp, 1)[0], rel=1e-10)
    assert res["change"][-1] == pytest.approx(-1.5, abs=0.25)


def test_projection_drift_without_drift_has_an_interval_around_zero():
    covered = 0
    for seed in range(20):
        H, v = drifting_rounds(seed, slope=0.0)
        lo, hi = DS.projection_drift(H, v, seed=seed, n_boot=500)["slope_ci"]
        covered += lo <= 0.0 <= hi
    assert covered >= 16  # 95% intervals: 19 expected
    H, v = drifting_rounds(0, slope=0.0)
    lo, hi = DS.projection_drift(H, v)["slope_ci"]
    assert lo < 0.0 < hi


def test_projection_drift_is_scale_free_in_the_vector_and_seeded():
    H, v = drifting_rounds(1, slope=0.2)
    a = DS.projection_drift(H, v, seed=3)
    b = DS.projection_drift(H, 7.0 * v, seed=3)
    assert a["slope"] == pytest.approx(b["slope"], rel=1e-12)
    np.testing.assert_allclose(a["slope_ci"], b["slope_ci"], rtol=1e-10)
    assert DS.projection_drift(H, v, seed=3)["slope_ci"] == a["slope_ci"]
    assert DS.projection_drift(H, v, seed=4)["slope_ci"] != a["slope_ci"]


# --------------------------------------------------------------------------------------------
# determinism and input checks


def test_deterministic_under_seed():
    h_a, h_b, y = paired_states(9, shift_a=0.4)
    r1 = DS.paired_permutation_test(h_a, h_b, y, n_perm=199, seed=12)
    r2 = DS.paired_permutation_test(h_a, h_b, y, n_perm=199, seed=12)
    r3 = DS.paired_permutation_test(h_a, h_b, y, n_perm=199, seed=13)
    assert r1 == r2
    assert r3["null_mean"] != r1["null_mean"]
    assert DS.aqi_difference(h_a, h_b, y, seed=2) == DS.aqi_difference(h_a, h_b, y, seed=2)


def test_undefined_when_a_class_is_too_small():
    h_a, h_b, _ = paired_states(0, n=20)
    y = np.zeros(20, dtype=int)
    y[0] = 1
    res = DS.paired_permutation_test(h_a, h_b, y, n_perm=10)
    assert np.isnan(res["difference"]) and np.isnan(res["p_value"]) and "safe" in res["note"]
    assert np.isnan(DS.aqi_difference(h_a, h_b, y))


def test_bad_inputs_raise():
    h_a, h_b, y = paired_states(0, n=20, d=4)
    for fn in (DS.aqi_difference, DS.paired_permutation_test):
        with pytest.raises(DataError, match="h_a"):
            fn(h_a[:, 0], h_b, y)
        with pytest.raises(DataError, match="shape"):
            fn(h_a, h_b[:-1], y)
        with pytest.raises(DataError, match="shape"):
            fn(h_a, h_b[:, :3], y)
        with pytest.raises(DataError, match="y must be 1-D"):
            fn(h_a, h_b, y[:-1])
        with pytest.raises(DataError, match="labels"):
            fn(h_a, h_b, np.where(y == 1, 2, 0))
        with pytest.raises(DataError, match="numeric"):
            fn(h_a.astype(str), h_b, y)
        bad = h_b.copy()
        bad[3, 1] = np.nan
        with pytest.raises(NumericsError):
            fn(h_a, bad, y)
        with pytest.raises(ConfigError):
            fn(h_a, h_b, y, method="tsne")
        with pytest.raises(ConfigError):
            fn(h_a, h_b, y, n_components=0)
    for n_perm in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="n_perm"):
            DS.paired_permutation_test(h_a, h_b, y, n_perm=n_perm)
    with pytest.raises(ConfigError, match="alternative"):
        DS.paired_permutation_test(h_a, h_b, y, alternative="two_sided")

    H, v = drifting_rounds(0, slope=0.1, r=3, n=10, d=4)
    with pytest.raises(DataError, match="3-D"):
        DS.projection_drift(H[0], v)
    with pytest.raises(DataError, match="2 rounds"):
        DS.projection_drift(H[:1], v)
    with pytest.raises(DataError, match="2 items"):
        DS.projection_drift(H[:, :1], v)
    with pytest.raises(DataError, match="length"):
        DS.projection_drift(H, v[:3])
    with pytest.raises(DataError, match="length"):
        DS.projection_drift(H, v[None, :])
    with pytest.raises(DataError, match="zero norm"):
        DS.projection_drift(H, np.zeros(4))
    with pytest.raises(DataError, match="numeric"):
        DS.projection_drift(H.astype(str), v)
    bad = H.copy()
    bad[1, 2, 0] = np.inf
    with pytest.raises(NumericsError):
        DS.projection_drift(bad, v)
    with pytest.raises(ConfigError, match="n_boot"):
        DS.projection_drift(H, v, n_boot=0)
    with pytest.raises(ConfigError, match="confidence"):
        DS.projection_drift(H, v, confidence=1.0)


def test_drift_interval_brackets_the_difference_and_excludes_zero_for_a_shift():
    shifted = DS.paired_permutation_test(*paired_states(7, n=100, shift_a=1.5), n_perm=200, seed=1, n_boot=500)
    lo, hi = shifted["ci"]
    assert lo <= shifted["difference"] <= hi and lo > 0
    same = DS.paired_permutation_test(*paired_states(8, n=100), n_perm=200, seed=1, n_boot=500)
    assert same["ci"][0] < 0 < same["ci"][1]
    # a wider coverage gives a wider interval from the same draws
    wide = DS.paired_permutation_test(*paired_states(8, n=100), n_perm=200, seed=1, n_boot=500, confidence=0.99)
    assert wide["ci"][0] <= same["ci"][0] and wide["ci"][1] >= same["ci"][1]
    # identical conditions: every draw is 0
    h, _, y = paired_states(9, n=40)
    np.testing.assert_allclose(DS.paired_permutation_test(h, h, y, n_perm=50, n_boot=100)["ci"], [0.0, 0.0], atol=1e-9)
