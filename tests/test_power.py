"""Tests of driftlib.stats.power: the MDE formula against hand values and against simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftlib.core.errors import ConfigError, DataError
from driftlib.stats import power as P

#: standard normal quantiles, to 7 decimals (tables): z_0.975, z_0.95, z_0.8, z_0.9
Z975, Z95, Z80, Z90 = 1.9599640, 1.6448536, 0.8416212, 1.2815516


def test_formula_against_tabulated_quantiles():
    assert P.minimum_detectable_effect(1.0) == pytest.approx(Z975 + Z80, abs=1e-6)
    assert P.minimum_detectable_effect(2.5) == pytest.approx(2.5 * (Z975 + Z80), abs=1e-6)
    assert P.minimum_detectable_effect(1.0, two_sided=False) == pytest.approx(Z95 + Z80, abs=1e-6)
    assert P.minimum_detectable_effect(1.0, power=0.9) == pytest.approx(Z975 + Z90, abs=1e-6)
    assert P.minimum_detectable_effect(0.0) == 0.0
    assert math.isnan(P.minimum_detectable_effect(float("nan")))


@pytest.mark.parametrize("two_sided", [True, False])
def test_simulated_power_at_the_mde_and_level_at_zero(two_sided):
    """Estimates ~ N(MDE, se): the z-test rejects in 80% of draws; at effect 0 in alpha of them."""
    se, alpha, power, reps = 0.7, 0.05, 0.8, 20000
    mde = P.minimum_detectable_effect(se, alpha=alpha, power=power, two_sided=two_sided)
    rng = np.random.default_rng(12345)
    z_crit = Z975 if two_sided else Z95

    def rejects(est):
        z = est / se
        return (np.abs(z) > z_crit) if two_sided else (z > z_crit)

    hit = rejects(rng.normal(mde, se, reps)).mean()
    assert abs(hit - power) < 3 * math.sqrt(power * (1 - power) / reps)
    false = rejects(rng.normal(0.0, se, reps)).mean()
    assert abs(false - alpha) < 3 * math.sqrt(alpha * (1 - alpha) / reps)
    # a quarter below the MDE the power drops clearly below 0.8 (not a test that always passes)
    low = rejects(rng.normal(0.75 * mde, se, reps)).mean()
    assert low < power - 0.1


def test_resolvable():
    mde = (Z975 + Z80) * 2.0
    assert P.resolvable(mde + 1e-6, 2.0) and P.resolvable(-(mde + 1e-6), 2.0)
    assert not P.resolvable(mde - 1e-6, 2.0)
    assert not P.resolvable(float("nan"), 2.0) and not P.resolvable(1.0, float("nan"))
    assert P.resolvable(2.0, 0.5, alpha=0.01, power=0.9)  # 0.5 * (2.5758 + 1.2816) = 1.93
    assert not P.resolvable(1.9, 0.5, alpha=0.01, power=0.9)


def test_mde_from_replicates():
    # std of [1, 2, 3, 4] with ddof 1 is sqrt(5/3)
    assert P.mde_from_replicates([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) * (Z975 + Z80), abs=1e-6)
    assert P.mde_from_replicates([1.0, np.nan, 2.0, 3.0, np.inf, 4.0]) == pytest.approx(
        math.sqrt(5 / 3) * (Z975 + Z80), abs=1e-6)
    assert math.isnan(P.mde_from_replicates([1.0]))
    draws = np.random.default_rng(0).normal(3.0, 2.0, 100000)
    assert P.mde_from_replicates(draws) == pytest.approx(2.0 * (Z975 + Z80), rel=0.01)
    with pytest.raises(DataError):
        P.mde_from_replicates(np.ones((3, 2)))


def test_independent_se():
    assert P.independent_se(3.0, 4.0) == pytest.approx(5.0)
    assert P.independent_se(1.0, 1.0) == pytest.approx(math.sqrt(2))
    # the design's figures: one AQI vs 0 at MDE 0.8 -> two independent AQIs at about 0.8 * sqrt(2) = 1.13
    se = 0.8 / (Z975 + Z80)
    assert P.minimum_detectable_effect(P.independent_se(se, se)) == pytest.approx(0.8 * math.sqrt(2), rel=1e-6)


def test_bad_options():
    for bad in (0.0, 1.0, -0.1, 1.5, True):
        with pytest.raises(ConfigError):
            P.minimum_detectable_effect(1.0, alpha=bad)
        with pytest.raises(ConfigError):
            P.minimum_detectable_effect(1.0, power=bad)
    for bad in (-1.0, float("inf"), "1"):
        with pytest.raises(DataError):
            P.minimum_detectable_effect(bad)
    with pytest.raises(DataError):
        P.independent_se()
