"""Tests of driftlib.stats.transfer against independently computed values (reference code written here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from driftlib.core.errors import ConfigError, DataError, NumericsError
from driftlib.stats import aqi as A
from driftlib.stats import transfer as T

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def ref_aqi(Z, y):
    """AQI straight from the definitions (explicit class sums, eta2 -> XB -> balanced share -> chance)."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    zs, zu = Z[y], Z[~y]
    cs, cu, m = zs.mean(0), zu.mean(0), Z.mean(0)
    W = ((zs - cs) ** 2).sum() + ((zu - cu) ** 2).sum()
    B = len(zs) * ((cs - m) ** 2).sum() + len(zu) * ((cu - m) ** 2).sum()
    n, p = len(Z), len(zs) / len(Z)
    q = p * (1 - p)
    xb = q * W / B  # eta2 = B / (B + W) = q / (q + XB)
    e = 1 / (n - 1)
    e0 = 0.25 / (0.25 + q * (1 - e) / e)
    return 100 * (0.25 / (0.25 + xb) - e0) / (1 - e0)


def steered_blobs(seed, n, d=48, base=0.3, gain=0.6, mapped_fraction=0.5, shuffle=True):
    """Three state sets of the same prompts: shared noise, safe class shifted along one direction by
    ``base`` (unsteered), ``base + mapped_fraction * gain`` (mapped) and ``base + gain`` (own)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) < n // 2).astype(int)
    if shuffle:
        y = rng.permutation(y)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    E = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + rng.standard_normal(d)
    shift = lambda s: E + s * np.outer(y, u) * 2.0  # noqa: E731
    return shift(base), shift(base + mapped_fraction * gain), shift(base + gain), y


def test_point_aqis_equal_alignment_quality_and_hand_computation():
    hu, hm, ho, y = steered_blobs(0, 300)
    for kwargs in ({}, {"method": "standardize", "n_components": None}, {"method": "none"},
                   {"n_components": 8, "seed": 3}):
        res = T.transfer_efficiency(hu, hm, ho, y, n_boot=50, **kwargs)
        aq = [A.alignment_quality(h, y, n_boot=0, n_perm=0, **kwargs).aqi for h in (hu, hm, ho)]
        assert res["gain_mapped"] == pytest.approx(aq[1] - aq[0], rel=1e-12, abs=1e-12)
        assert res["gain_own"] == pytest.approx(aq[2] - aq[0], rel=1e-12, abs=1e-12)
        # aqi_point on preprocess_features' output (unsorted rows) and the hand-written AQI agree too
        pp = {k: v for k, v in kwargs.items()}
        Zs = [A.preprocess_features(h, **pp) for h in (hu, hm, ho)]
        pts = [T.aqi_point(Z, y) for Z in Zs]
        np.testing.assert_allclose(pts, aq, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose([ref_aqi(Z, y) for Z in Zs], aq, rtol=1e-9, atol=1e-9)
        assert res["efficiency"] == pytest.approx((pts[1] - pts[0]) / (pts[2] - pts[0]), rel=1e-9)


def test_aqi_point_undefined_class_is_nan():
    Z = np.random.default_rng(1).standard_normal((6, 3))
    assert np.isnan(T.aqi_point(Z, [1, 0, 0, 0, 0, 0]))
    assert T.aqi_point(Z, [1, 1, 0, 0, 0, 0]) == pytest.approx(ref_aqi(Z, [1, 1, 0, 0, 0, 0]), rel=1e-12)


def test_half_gain_efficiency_and_interval():
    hu, hm, ho, y = steered_blobs(2, 300)
    t0 = time.perf_counter()
    res = T.transfer_efficiency(hu, hm, ho, y, n_boot=1000, seed=0)
    elapsed = time.perf_counter() - t0
    assert set(res) == {"gain_mapped", "gain_own", "gain_own_ci", "gain_mapped_ci", "gain_mapped_se", "gain_own_se",
                        "gain_mapped_mde", "gain_own_mde", "efficiency", "ci_low", "ci_high", "defined", "note",
                        "reason", "n_boot"}
    # the MDE is the power formula of the paired draws' standard error
    from driftlib.stats.power import minimum_detectable_effect
    assert res["gain_own_mde"] == pytest.approx(minimum_detectable_effect(res["gain_own_se"]))
    width = res["gain_own_ci"][1] - res["gain_own_ci"][0]
    assert res["gain_own_se"] == pytest.approx(width / (2 * 1.96), rel=0.15)
    assert res["defined"] is True and res["note"] == "" and res["n_boot"] == 1000
    aq = [T.aqi_point(A.preprocess_features(h), y) for h in (hu, hm, ho)]
    assert res["efficiency"] == pytest.approx((aq[1] - aq[0]) / (aq[2] - aq[0]), rel=1e-9)
    # half the shift gain: AQI is not linear in the shift, but the ratio sits well inside (0, 1)
    assert 0.2 < res["efficiency"] < 0.7
    assert res["ci_low"] <= res["efficiency"] <= res["ci_high"]
    assert res["gain_own_ci"][0] <= res["gain_own"] <= res["gain_own_ci"][1]
    assert res["gain_mapped_ci"][0] <= res["gain_mapped"] <= res["gain_mapped_ci"][1]
    assert res["gain_own_ci"][0] > 0
    assert elapsed < 5.0  # well under a second on an idle core; generous on a loaded machine


def test_interval_narrows_with_more_rows():
    widths = {}
    for n in (200, 2000):
        hu, hm, ho, y = steered_blobs(3, n)
        res = T.transfer_efficiency(hu, hm, ho, y, n_boot=400, seed=1)
        assert res["defined"]
        widths[n] = res["ci_high"] - res["ci_low"]
        own = res["gain_own_ci"]
        widths[f"own{n}"] = own[1] - own[0]
    assert widths[2000] < 0.6 * widths[200]
    assert widths["own2000"] < 0.6 * widths["own200"]


def test_mapped_equal_to_own_gives_exactly_one():
    hu, _, ho, y = steered_blobs(6, 240)
    res = T.transfer_efficiency(hu, ho.copy(), ho, y, n_boot=200)
    assert res["defined"]
    assert res["efficiency"] == 1.0
    assert res["ci_low"] == 1.0 and res["ci_high"] == 1.0
    assert res["gain_mapped"] == res["gain_own"]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_own_vector_that_changes_nothing_is_undefined(seed):
    hu, hm, _, y = steered_blobs(seed, 300)
    ho = hu + 1e-6 * np.random.default_rng(seed).standard_normal(hu.shape)
    res = T.transfer_efficiency(hu, hm, ho, y, n_boot=500)
    assert res["defined"] is False
    assert np.isnan(res["efficiency"]) and np.isnan(res["ci_low"]) and np.isnan(res["ci_high"])
    assert "does not raise the AQI" in res["note"]
    # the gains are still reported
    assert np.isfinite(res["gain_own"]) and abs(res["gain_own"]) < 1e-3
    assert np.isfinite(res["gain_mapped"]) and res["gain_mapped"] > 0


def test_own_vector_that_lowers_the_aqi_is_undefined():
    hu, hm, ho, y = steered_blobs(10, 300, base=0.8, gain=-0.6)
    res = T.transfer_efficiency(hu, hm, ho, y, n_boot=200)
    assert res["gain_own"] < 0
    assert res["defined"] is False and np.isnan(res["efficiency"])
    assert "<= 0" in res["note"]


def test_small_class_is_undefined():
    hu, hm, ho, _ = steered_blobs(11, 20)
    y = np.zeros(20, dtype=int)
    y[0] = 1
    res = T.transfer_efficiency(hu, hm, ho, y, n_boot=50)
    assert res["defined"] is False
    assert "safe" in res["note"] and "1 row" in res["note"]
    assert all(np.isnan(res[k]) for k in ("gain_mapped", "gain_own", "efficiency", "ci_low", "ci_high"))


def test_deterministic_under_seed():
    hu, hm, ho, y = steered_blobs(12, 200)
    a = T.transfer_efficiency(hu, hm, ho, y, n_boot=300, seed=5)
    b = T.transfer_efficiency(hu, hm, ho, y, n_boot=300, seed=5)
    c = T.transfer_efficiency(hu, hm, ho, y, n_boot=300, seed=6)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])
    assert a["efficiency"] == c["efficiency"]  # the point estimate does not depend on the resampling


def test_paired_bootstrap_matches_alignment_quality_draws():
    # the per-set replicates use alignment_quality's streams: its bootstrap standard error is recovered
    hu, hm, ho, y = steered_blobs(13, 200)
    Zs, order = [], np.argsort(~y.astype(bool), kind="stable")
    n_s = int(y.sum())
    for h in (hu, hm, ho):
        Z = A.preprocess_inplace(A.ordered_float64(h, order), "standardize", 32, 0)
        c_s, c_u, rn = A.two_class_moments(Z, n_s)
        Zs.append((Z, c_s, c_u, rn))
    ss_s, ss_u, _ = np.random.SeedSequence(0).spawn(3)
    xb = A.paired_bootstrap_xb(Zs, n_s, 300, ss_s, ss_u)
    boot = A.aqi_from_xb(xb, n_s / len(y), len(y))
    for i, h in enumerate((hu, hm, ho)):
        se = A.alignment_quality(h, y, n_boot=300, n_perm=0, seed=0).se
        assert np.std(boot[i], ddof=1) == pytest.approx(se, rel=1e-9)


def test_bad_inputs_raise():
    hu, hm, ho, y = steered_blobs(14, 40, d=8)
    with pytest.raises(DataError, match="h_mapped has shape"):
        T.transfer_efficiency(hu, hm[:, :7], ho, y)
    with pytest.raises(DataError, match="h_own has shape"):
        T.transfer_efficiency(hu, hm, ho[:39], y)
    with pytest.raises(DataError, match="h_unsteered must be a 2-D"):
        T.transfer_efficiency(hu[:, 0], hm, ho, y)
    with pytest.raises(DataError, match="one label per row"):
        T.transfer_efficiency(hu, hm, ho, y[:39])
    with pytest.raises(DataError, match="0/1"):
        T.transfer_efficiency(hu, hm, ho, y * 2)
    bad = ho.copy()
    bad[2, 3] = np.nan
    with pytest.raises(NumericsError, match="NaN"):
        T.transfer_efficiency(hu, hm, bad, y)
    with pytest.raises(ConfigError, match="method"):
        T.transfer_efficiency(hu, hm, ho, y, method="pca")
    with pytest.raises(ConfigError, match="n_boot"):
        T.transfer_efficiency(hu, hm, ho, y, n_boot=0)
    with pytest.raises(ConfigError, match="confidence"):
        T.transfer_efficiency(hu, hm, ho, y, confidence=1.0)
    with pytest.raises(ConfigError, match="n_components"):
        T.transfer_efficiency(hu, hm, ho, y, n_components=0)
