"""Transfer efficiency of a cross-architecture steering vector, with a paired bootstrap interval.

Numerical code only (numpy in, numpy out; no torch, no I/O). Three sets of hidden states of the
*same* ``n`` prompts in the target model, at the measurement layer:

* ``h_unsteered``: no steering (lambda 0);
* ``h_mapped``: steered with the source model's vector mapped into the target, at its best lambda;
* ``h_own``: steered with the target's own vector, at its best lambda.

``gain_mapped = AQI(h_mapped) - AQI(h_unsteered)``, ``gain_own = AQI(h_own) - AQI(h_unsteered)`` and
``efficiency = gain_mapped / gain_own`` (1: the mapped vector does as well as the target's own
vector; 0: it does nothing; negative: it lowers the AQI). Every AQI is the project's
(:func:`driftlib.stats.aqi.alignment_quality`), each set preprocessed on its own rows.

Because all three AQIs share ``n`` and the safe fraction ``p``, the AQI's chance correction is the
same affine map for each set, so it cancels in the ratio: the efficiency is a ratio of differences
of balanced variance shares ``0.25 / (0.25 + XB)``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError
from driftlib.stats import aqi as _aqi
from driftlib.stats.power import minimum_detectable_effect

__all__ = ["aqi_point", "transfer_efficiency"]

_SETS = ("h_unsteered", "h_mapped", "h_own")


def aqi_point(Z: Any, y: Any) -> float:
    """AQI of already-preprocessed features (no preprocessing, no interval).

    Parameters
    ----------
    Z : array [n, k]
        Features as given, e.g. from :func:`driftlib.stats.aqi.preprocess_features`.
    y : array [n]
        Labels, bool or 0/1 (1 = safe).

    Returns
    -------
    float
        ``aqi_from_xb(XB, p, n)`` with ``XB`` from :func:`driftlib.stats.aqi.chi_xb`: the point estimate
        that :func:`driftlib.stats.aqi.alignment_quality` gives on the same features. NaN when a class
        has fewer than 2 rows.
    """
    Z, yb = _aqi.check_xy(Z, y)
    n = Z.shape[0]
    n_s = int(yb.sum())
    if _aqi.undefined_note(n_s, n - n_s) is not None:
        return float("nan")
    _, xb = _aqi.chi_xb(Z, yb)
    return float(_aqi.aqi_from_xb(xb, n_s / n, n))


def transfer_efficiency(h_unsteered: Any, h_mapped: Any, h_own: Any, y: Any, *, method: str = "standardize",
                        n_components: int | None = 32, n_boot: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict[str, Any]:
    """How much of the target's own AQI gain a mapped source vector achieves, with a paired bootstrap.

    Parameters
    ----------
    h_unsteered, h_mapped, h_own : arrays [n, d]
        Hidden states of the same ``n`` prompts (same row order) in the target model at the
        measurement layer: unsteered; steered with the mapped source vector at its best lambda;
        steered with the target's own vector at its best lambda.
    y : array [n]
        Labels, bool or 0/1 (1 = safe).
    method, n_components, seed
        Preprocessing, as in :func:`driftlib.stats.aqi.alignment_quality`: each set is preprocessed once,
        fitted on its own rows (class-sorted, as ``alignment_quality`` does), and kept fixed for
        the bootstrap, so each point AQI equals ``alignment_quality(h, y, method=method,
        n_components=n_components, seed=seed).aqi``. ``seed`` also seeds the resampling (the same
        streams as ``alignment_quality``'s bootstrap).
    n_boot : int
        Paired bootstrap draws (positive).
    confidence : float in (0, 1)
        Coverage of the intervals.

    Returns
    -------
    dict
        ``gain_mapped, gain_own``: AQI differences from the unsteered set (AQI points);
        ``gain_mapped_ci, gain_own_ci``: ``[lo, hi]`` percentile intervals of the gains;
        ``gain_mapped_se, gain_own_se``: the paired draws' standard deviations, and
        ``gain_mapped_mde, gain_own_mde``: the minimum detectable effect of each gain (80% power,
        ``alpha = 1 - confidence``, :func:`driftlib.stats.power.minimum_detectable_effect`);
        ``efficiency``: ``gain_mapped / gain_own``; ``ci_low, ci_high``: percentile interval of the
        ratio draws; ``defined``: whether the efficiency means anything; ``note``: why not, or a
        remark ("" when none), in phase 4's words; ``reason``: why not as a code, for callers that
        word it for their own question (``too_few_rows``, ``no_reference_gain``,
        ``reference_gain_in_noise``; "" when defined); ``n_boot``: draws requested.

    Notes
    -----
    Bootstrap. Each draw resamples rows with replacement within each class (class sizes fixed), with
    the same row indices for all three sets (the sets are the same prompts, so the draws are paired
    and the noise shared by the sets cancels in the gains), recomputes the three AQIs, both gains
    and their ratio. Intervals are plain percentile intervals of the draws; ratio draws that are not
    finite (a draw with zero own gain) are left out and counted in the note. The AQI's small-sample
    upward bias, which ``alignment_quality`` corrects for in its own interval, largely cancels in a
    difference of AQIs of the same prompts at the same ``n``.

    Undefined (``efficiency``, ``ci_low``, ``ci_high`` NaN, ``defined`` False) when a class has fewer
    than 2 rows (then every value is NaN), or when ``gain_own <= 0`` or the lower bound of its
    interval is ``<= 0``: the target's own vector does not raise the AQI beyond noise, so there is
    no gain to compare with. The gains and their intervals are still reported in the second case.

    Raises
    ------
    DataError
        A state set that is not 2-D, sets of different shapes, or labels that do not fit.
    NumericsError
        NaN/Inf in a state set.
    ConfigError
        Bad ``method``, ``n_components``, ``n_boot`` or ``confidence``.
    """
    _aqi.check_options(method, n_components)
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer; got {n_boot!r}")
    n_boot = int(n_boot)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")

    arrays, yb = _aqi.check_paired_sets(dict(zip(_SETS, (h_unsteered, h_mapped, h_own))), y)
    n = arrays[0].shape[0]
    n_s = int(yb.sum())
    nan = float("nan")
    result: dict[str, Any] = {
        "gain_mapped": nan, "gain_own": nan, "gain_own_ci": [nan, nan], "gain_mapped_ci": [nan, nan],
        "gain_mapped_se": nan, "gain_own_se": nan, "gain_mapped_mde": nan, "gain_own_mde": nan,
        "efficiency": nan, "ci_low": nan, "ci_high": nan, "defined": False, "note": "", "reason": "",
        "n_boot": n_boot,
    }
    undefined = _aqi.undefined_note(n_s, n - n_s)
    if undefined is not None:
        result.update(note=undefined, reason="too_few_rows")
        return result

    # as alignment_quality: safe rows first (stable), float64, preprocessing fitted per set
    order = np.argsort(~yb, kind="stable")
    y_sorted = yb[order]
    p = n_s / n
    sets = []
    points = []
    for arr in arrays:
        Z = _aqi.preprocess_inplace(_aqi.ordered_float64(arr, order), method, n_components, seed)
        points.append(aqi_point(Z, y_sorted))
        c_s, c_u, rn = _aqi.two_class_moments(Z, n_s)  # Z now holds rows about their class centroids
        sets.append((Z, c_s, c_u, rn))
    a_u, a_m, a_o = points
    gain_mapped = a_m - a_u
    gain_own = a_o - a_u

    ss_s, ss_u, _ = np.random.SeedSequence(seed).spawn(3)
    xb = _aqi.paired_bootstrap_xb(sets, n_s, n_boot, ss_s, ss_u)
    boot = np.asarray(_aqi.aqi_from_xb(xb, p, n))  # [3, n_boot]
    g_m = boot[1] - boot[0]
    g_o = boot[2] - boot[0]
    gain_mapped_ci, _ = _aqi.percentile_interval(g_m, confidence)
    gain_own_ci, _ = _aqi.percentile_interval(g_o, confidence)
    result.update(gain_mapped=float(gain_mapped), gain_own=float(gain_own), gain_own_ci=gain_own_ci,
                  gain_mapped_ci=gain_mapped_ci)
    # the paired draws' standard errors, and the smallest gain each could resolve at 80% power
    for key, draws in (("gain_mapped", g_m), ("gain_own", g_o)):
        finite = draws[np.isfinite(draws)]
        se = float(np.std(finite, ddof=1)) if finite.size > 1 else nan
        result[f"{key}_se"] = se
        result[f"{key}_mde"] = minimum_detectable_effect(se, alpha=1 - confidence) if np.isfinite(se) else nan

    level = f"{100 * confidence:g}%"
    if not gain_own > 0:
        result["note"] = (f"undefined: the target's own vector does not raise the AQI (gain_own = {gain_own:.4g} "
                          "<= 0), so there is no gain to compare the mapped vector with")
        result["reason"] = "no_reference_gain"
        return result
    if not gain_own_ci[0] > 0:
        result["note"] = (f"undefined: the target's own vector does not raise the AQI beyond noise (gain_own = "
                          f"{gain_own:.4g}, {level} interval [{gain_own_ci[0]:.4g}, {gain_own_ci[1]:.4g}] "
                          "includes 0)")
        result["reason"] = "reference_gain_in_noise"
        return result

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = g_m / g_o
    (ci_low, ci_high), n_finite = _aqi.percentile_interval(ratio, confidence)
    notes = []
    if n_finite < n_boot:
        notes.append(f"{n_boot - n_finite} of {n_boot} bootstrap ratios were not finite and were left out")
    result.update(efficiency=float(gain_mapped / gain_own), ci_low=ci_low, ci_high=ci_high, defined=True,
                  note="; ".join(notes))
    return result
