"""driftlib.stats.gap: the share of the aligned-base gap closed, against closed forms and a simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftlib.stats.gap import fieller_interval, gap_share
from driftlib.stats.power import minimum_detectable_effect


def test_fieller_with_an_exact_denominator_is_the_scaled_normal_interval():
    # se_b = 0: the interval is (a -+ z se_a) / b
    low, high = fieller_interval(3.0, 0.5, 2.0, 0.0, 0.95)
    z = 1.959963984540054
    assert low == pytest.approx((3.0 - z * 0.5) / 2.0)
    assert high == pytest.approx((3.0 + z * 0.5) / 2.0)


def test_fieller_endpoints_solve_the_defining_equation():
    a, sa, b, sb, z = 1.2, 0.3, 2.5, 0.4, 1.959963984540054
    for rho in fieller_interval(a, sa, b, sb):
        assert (a - rho * b) ** 2 == pytest.approx(z * z * (sa * sa + rho * rho * sb * sb))


def test_unbounded_when_the_denominator_is_not_significant():
    assert fieller_interval(1.0, 0.1, 0.1, 0.2) == (-math.inf, math.inf)


def test_fieller_covers_the_true_ratio_at_its_level():
    rng = np.random.default_rng(0)
    a_true, b_true, sa, sb = 0.6, 2.0, 0.3, 0.4
    n = 4000
    hits = 0
    for a, b in zip(rng.normal(a_true, sa, n), rng.normal(b_true, sb, n)):
        low, high = fieller_interval(a, sa, b, sb)
        hits += low <= a_true / b_true <= high
    # 0.95 within 3 binomial standard errors
    assert abs(hits / n - 0.95) < 3 * math.sqrt(0.95 * 0.05 / n)


def test_share_and_undefined_cases():
    r = gap_share(1.0, 0.2, 4.0, 0.5)
    assert r.defined and r.share == pytest.approx(0.25) and r.ci_low < 0.25 < r.ci_high
    assert r.gap_mde == pytest.approx(minimum_detectable_effect(0.5))
    small = gap_share(1.0, 0.2, 1.0, 0.5)   # |gap| 1.0 < MDE 1.40
    assert not small.defined and math.isnan(small.share) and "minimum detectable effect" in small.note
    nan = gap_share(float("nan"), 0.2, 4.0, 0.5)
    assert not nan.defined and "not measured" in nan.note
