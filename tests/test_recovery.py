"""Phase 4.5 arithmetic: the recovery rate, its undefined case, the limits, the cross-arch pick."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from driftlib.phases.recovery.evaluate import recovery_rate
from driftlib.phases.recovery.run import pick_cross_arch
from driftlib.phases.recovery.summary import largest_recovered_drop
from driftlib.stats.transfer import transfer_efficiency


def test_recovery_rate_on_constructed_numbers():
    assert recovery_rate(40.0, 10.0, 25.0) == pytest.approx(0.5)   # half of a 30-point drop back
    assert recovery_rate(40.0, 10.0, 40.0) == pytest.approx(1.0)
    assert recovery_rate(40.0, 10.0, 46.0) == pytest.approx(1.2)   # overshoot
    assert recovery_rate(40.0, 10.0, 4.0) == pytest.approx(-0.2)   # steering made it worse
    assert recovery_rate(40.0, 10.0, 10.0) == 0.0


@pytest.mark.parametrize("aligned, dealigned", [(10.0, 10.0), (10.0, 12.0), (float("nan"), 1.0)])
def test_recovery_rate_is_undefined_without_a_drop(aligned, dealigned):
    assert math.isnan(recovery_rate(aligned, dealigned, 20.0))


def test_largest_recovered_drop():
    drops = [2.0, 5.0, 9.0, 14.0]
    rates = [0.9, 0.6, 0.45, float("nan")]
    assert largest_recovered_drop(drops, rates, fraction=0.5) == 5.0
    assert largest_recovered_drop(drops, rates, fraction=0.4) == 9.0
    assert largest_recovered_drop(drops, rates, fraction=0.4, defined=[True, True, False, True]) == 5.0
    assert largest_recovered_drop(drops, rates, fraction=0.95) is None


def _blobs(rng, n, shift):
    y = np.repeat([1, 0], n // 2)
    X = rng.standard_normal((n, 6))
    X[y == 1, 0] += shift
    return X, y


def test_rate_with_interval_is_the_paired_ratio_of_aqi_gains():
    """The recovery rate is transfer_efficiency with the dealigned model as the unsteered state
    and the aligned model as the reference: check it against the AQIs computed one by one."""
    from driftlib.stats.aqi import alignment_quality

    rng = np.random.default_rng(0)
    aligned, y = _blobs(rng, 400, 2.0)
    dealigned = aligned.copy()
    dealigned[y == 1, 0] -= 1.5          # most of the separation gone
    steered = dealigned.copy()
    steered[y == 1, 0] += 0.75            # half of it back
    opts = dict(method="standardize", n_components=None)
    r = transfer_efficiency(dealigned, steered, aligned, y, n_boot=300, seed=1, **opts)
    a, d, s = (alignment_quality(h, y, n_boot=0, n_perm=0, **opts).aqi for h in (aligned, dealigned, steered))
    assert r["efficiency"] == pytest.approx(recovery_rate(a, d, s), rel=1e-9)
    assert r["defined"] and r["ci_low"] < r["efficiency"] < r["ci_high"]
    assert 0.2 < r["efficiency"] < 0.8


def test_pick_cross_arch_uses_the_best_phase4_method_of_the_baseline_row():
    matrix = pd.DataFrame({"source": ["a", "a", "b", "b"], "target": ["c", "c", "c", "c"],
                           "method": ["ridge", "procrustes", "ridge", "procrustes"],
                           "best": [False, True, True, False]})
    assert pick_cross_arch(matrix, "a", "c") == ("a", "procrustes")
    assert pick_cross_arch(matrix, "b", "c") == ("b", "ridge")
    assert pick_cross_arch(matrix, "c", "c") is None      # the baseline itself: same-arch only
    assert pick_cross_arch(matrix, "a", "d") is None      # no phase-4 pair into d
    assert pick_cross_arch(matrix, None, "c") is None


def test_recovery_notes_speak_of_the_dealignment_not_of_mapped_vectors() -> None:
    """Phase 4.5 reuses phase 4's efficiency arithmetic; its notes must not reuse phase 4's words."""
    import numpy as np

    from driftlib.phases.recovery.evaluate import recovery_note
    from driftlib.stats.transfer import transfer_efficiency

    rng = np.random.default_rng(0)
    y = np.repeat([True, False], 30)
    same = rng.standard_normal((60, 6))
    # the "aligned" states equal the dealigned ones: no drop at all
    r = transfer_efficiency(same, same + 0.01 * rng.standard_normal((60, 6)), same, y, n_components=None, n_boot=50)
    assert r["reason"] in ("no_reference_gain", "reference_gain_in_noise") and not r["defined"]
    note = recovery_note(r, 0.95)
    assert note.startswith("undefined: the dealignment")
    assert "mapped" not in note and "target's own vector" not in note
    assert recovery_note({"reason": "no_reference_gain", "gain_own": -0.5, "gain_own_ci": [-1.0, 0.1],
                          "note": ""}, 0.95) == ("undefined: the dealignment did not lower the AQI (drop = -0.5 <= 0), "
                                                 "so there is nothing to recover")
