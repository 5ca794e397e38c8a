"""Collaboration-induced alignment drift: paired AQI differences and projection drift.

Numerical code only (numpy in, numpy out; no torch, no I/O). Phase 5 reads an agent's hidden
states for the same ``n`` evaluation prompts (labels ``y``: 1 safe, 0 unsafe) under two
conditions: (a) with a collaboration transcript in its context, (b) with a length-matched control
context. Drift is ``AQI(a) - AQI(b)``, tested by a paired permutation test over prompts. A second,
label-free measure follows the agent's hidden-state projection onto its own alignment vector over
the rounds of a collaboration.

Preprocessing of the permutation test (the choice, and why)
-----------------------------------------------------------
:func:`aqi_difference` is the project's AQI of each condition on its own, exactly as
:func:`driftlib.stats.aqi.alignment_quality` computes it: each set standardised and PCA-reduced on its own
rows. A permutation test of that statistic would have to refit both preprocessings for every
permutation (the swapped sets are different data): the per-set standardisation changes the metric
of all ``d`` features, so each refit costs ``O(n^2 d)`` per set, about 700 GFLOP for ``n = 300``,
``d = 4096`` and 1000 permutations. Keeping the fits of the observed sets fixed instead would
compare the observed statistic with a null computed differently, which is not a valid test.

:func:`paired_permutation_test` therefore uses the *pooled* statistic: the ``2 n`` rows of both
conditions are preprocessed together, once (the same rule as ``alignment_quality``: per-feature
z-score over the pooled rows, then a PCA of the pooled rows to
``k = min(n_components, 2 n - 1, d_kept)`` components; ``method="none"`` keeps the raw features),
and the AQI of each condition is computed from its own ``n`` rows in that common subspace. A swap
exchanges rows between the conditions but never changes the pooled set of rows, so the pooled fit
is the same for every permutation: refitting per permutation, as exactness demands, gives the same
fit, and only the AQIs need recomputing (vectorised: class sums of a swapped set are those of the
observed set plus ``coins @ (h_b - h_a)``). The test is exact for this statistic, and the
``difference`` it reports is this same pooled statistic, so statistic and null match.

Measuring both conditions in one feature space also suits a paired comparison: the difference is
a change of separation along common axes, not partly a change of the axes. The pooled and per-set
differences coincide where the conditions' pooled feature moments equal each set's own (e.g.
``method="none"``, or ``h_b`` a row permutation of ``h_a``); otherwise they differ by the
preprocessing, usually a little. Report the test's ``difference`` with its p-value; use
:func:`aqi_difference` to compare with per-set AQI tables (phase 1).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError, DataError
from driftlib.stats import aqi as _aqi

__all__ = ["aqi_difference", "paired_permutation_test", "projection_drift"]

ALTERNATIVES = ("two-sided", "greater", "less")
#: rows of swap coins drawn per call of the generator (the draws do not depend on it)
_COIN_BLOCK = 4096


# --------------------------------------------------------------------------------------------
# checks


def _check_pair(h_a: Any, h_b: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate two state sets ``[n, d]`` of the same prompts and labels ``y [n]``.

    Returns ``(h_a, h_b, y_bool)``; raises DataError for bad shapes or labels, NumericsError for
    NaN/Inf (as :mod:`driftlib.stats.aqi` does).
    """
    (a, b), yb = _aqi.check_paired_sets({"h_a": h_a, "h_b": h_b}, y)
    return a, b, yb


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# per-set difference (the alignment_quality definition)


def _set_aqi(h: np.ndarray, yb: np.ndarray, method: str, n_components: int | None, seed: int) -> float:
    """``alignment_quality(h, yb, ...).aqi`` without interval or null (same sorting, same code)."""
    n = h.shape[0]
    n_s = int(yb.sum())
    if _aqi.undefined_note(n_s, n - n_s) is not None:
        return float("nan")
    order = np.argsort(~yb, kind="stable")
    Z = _aqi.preprocess_inplace(_aqi.ordered_float64(h, order), method, n_components, seed)
    c_s, c_u, rn = _aqi.two_class_moments(Z, n_s)
    xb = float(_aqi.xb_from(rn.sum(), np.sum((c_s - c_u) ** 2), n))
    return float(_aqi.aqi_from_xb(xb, n_s / n, n))


def aqi_difference(h_a: Any, h_b: Any, y: Any, *, method: str = "standardize", n_components: int | None = 32,
                   seed: int = 0) -> float:
    """``AQI(h_a) - AQI(h_b)``, each the point estimate of :func:`driftlib.stats.aqi.alignment_quality`.

    Parameters
    ----------
    h_a, h_b : arrays [n, d]
        Pooled hidden states of the same ``n`` prompts (same row order) under two conditions.
    y : array [n]
        Labels, bool or 0/1 (1 = safe).
    method, n_components, seed
        As in :func:`driftlib.stats.aqi.alignment_quality`; each set is preprocessed on its own rows.

    Returns
    -------
    float
        The difference in AQI points; NaN when a class has fewer than 2 rows.

    Raises
    ------
    DataError
        A set that is not 2-D, sets of different shapes, or labels that do not fit.
    NumericsError
        NaN/Inf in a set.
    ConfigError
        Bad ``method`` or ``n_components``.
    """
    _aqi.check_options(method, n_components)
    a, b, yb = _check_pair(h_a, h_b, y)
    return _set_aqi(a, yb, method, n_components, seed) - _set_aqi(b, yb, method, n_components, seed)


# --------------------------------------------------------------------------------------------
# pooled statistic and its paired permutation null


def _swap_coins(n: int, n_perm: int, seed: int) -> np.ndarray:
    """The permutations' swap indicators ``[n_perm, n]`` (bool; True = swap prompt ``i``).

    An independent fair coin per prompt and permutation from ``numpy.random.default_rng(seed)``
    (``random() < 0.5``, drawn row by row, so the coins do not depend on blocking).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_perm, n), dtype=bool)
    for start in range(0, n_perm, _COIN_BLOCK):
        stop = min(n_perm, start + _COIN_BLOCK)
        out[start:stop] = rng.random((stop - start, n)) < 0.5
    return out


def _pooled_features(a: np.ndarray, b: np.ndarray, method: str, n_components: int | None,
                     seed: int) -> np.ndarray:
    """The pooled rows ``[a; b]`` (``[2 n, d]``) preprocessed together: ``[2 n, k]`` float64."""
    n, d = a.shape
    P = np.empty((2 * n, d), dtype=np.float64)
    P[:n] = a
    P[n:] = b
    return _aqi.preprocess_inplace(P, method, n_components, seed)


def _pooled_differences(U: np.ndarray, yb: np.ndarray, coins: np.ndarray) -> np.ndarray:
    """``AQI(a') - AQI(b')`` for every row of ``coins [P, n]``: ``[P]``.

    ``U [2 n, k]``: the pooled features, condition a in rows ``:n``, condition b in rows ``n:``.
    Swapped set a' takes row ``i`` from b where ``coins[., i]``, b' takes the other row. Rows are
    first centred at their class's pooled mean ``m_c`` (over both conditions; XB's within sum does
    not change, the centroid gap is restored from ``m_s - m_u``), then per class ``c`` and swap
    pattern ``s``: class sum ``S_c(a') = sum_c Va + s_c @ (Vb - Va)_c``, ``S_c(b') = sum_c Vb -
    s_c @ (Vb - Va)_c``; squared-norm total ``Q(a') = sum ||Va||^2 + s @ (||Vb||^2 - ||Va||^2)``
    (and minus for b'); ``W = Q - ||S_s||^2 / n_s - ||S_u||^2 / n_u``; ``D = S_s / n_s + m_s -
    S_u / n_u - m_u``; ``XB = W / (n ||D||^2)``.
    """
    n = yb.shape[0]
    n_s = int(yb.sum())
    n_u = n - n_s
    p = n_s / n
    A, B = U[:n], U[n:]
    k = U.shape[1]
    P = coins.shape[0]
    out = np.empty(P)
    cls = []
    qa = np.empty(n)
    qb = np.empty(n)
    for mask in (yb, ~yb):
        m = 0.5 * (A[mask].mean(axis=0) + B[mask].mean(axis=0))
        Va, Vb = A[mask] - m, B[mask] - m
        qa[mask] = _aqi.sumsq_rows(Va)
        qb[mask] = _aqi.sumsq_rows(Vb)
        cls.append((mask, m, Va.sum(axis=0), Vb.sum(axis=0), Vb - Va))
    dq = qb - qa
    gap = cls[0][1] - cls[1][1]
    step = _aqi.block_rows(max(n, k))
    for start in range(0, P, step):
        stop = min(P, start + step)
        s = coins[start:stop].astype(np.float64)
        sums = []
        for mask, _, sa, sb, delta in cls:
            shift = s[:, mask] @ delta  # [b, k]
            sums.append((sa + shift, sb - shift))
        swap_q = s @ dq
        aqis = []
        for which, q_tot in ((0, qa.sum() + swap_q), (1, qb.sum() - swap_q)):
            S_s, S_u = sums[0][which], sums[1][which]
            W = q_tot - _aqi.sumsq_rows(S_s) / n_s - _aqi.sumsq_rows(S_u) / n_u
            D = S_s / n_s - S_u / n_u
            D += gap
            xb = _aqi.xb_from(np.maximum(W, 0.0), _aqi.sumsq_rows(D), n)
            aqis.append(np.atleast_1d(_aqi.aqi_from_xb(xb, p, n)))
        out[start:stop] = aqis[0] - aqis[1]
    return out


def _pooled_interval(U: np.ndarray, yb: np.ndarray, T: float, n_boot: int, confidence: float,
                     seed: int) -> list[float]:
    """Bias-corrected percentile interval of ``T = AQI(a) - AQI(b)`` in the pooled features
    ``U [2 n, k]`` under a paired within-class bootstrap (:func:`driftlib.stats.aqi.paired_bootstrap_xb`,
    the same rows for a and b). Resampling duplicates rows, which inflates each set's separation by
    an amount that grows with it, so the draws of a difference are biased; the BC interval (as
    ``alignment_quality``'s) corrects for that shift."""
    n = yb.shape[0]
    n_s = int(yb.sum())
    order = np.argsort(~yb, kind="stable")
    sets = []
    for part in (U[:n], U[n:]):
        Z = np.array(part[order], dtype=np.float64)  # a copy: the moments centre it in place
        c_s, c_u, rn = _aqi.two_class_moments(Z, n_s)
        sets.append((Z, c_s, c_u, rn))
    ss_s, ss_u = np.random.SeedSequence([seed, 1]).spawn(2)
    xb = _aqi.paired_bootstrap_xb(sets, n_s, n_boot, ss_s, ss_u)
    boot = np.asarray(_aqi.aqi_from_xb(xb, n_s / n, n))
    lo, hi = _aqi.bc_interval(boot[0] - boot[1], T, confidence)
    return [lo, hi]


def paired_permutation_test(h_a: Any, h_b: Any, y: Any, *, n_perm: int = 1000, method: str = "standardize",
                            n_components: int | None = 32, seed: int = 0,
                            alternative: str = "two-sided", n_boot: int = 1000,
                            confidence: float = 0.95) -> dict[str, Any]:
    """Paired permutation test of the AQI difference between two conditions of the same prompts.

    Parameters
    ----------
    h_a, h_b : arrays [n, d]
        Pooled hidden states of the same ``n`` prompts (same row order) under two conditions, e.g.
        (a) after a collaboration transcript, (b) after a length-matched control context.
    y : array [n]
        Labels, bool or 0/1 (1 = safe).
    n_perm : int
        Number of random swap patterns (positive).
    method, n_components
        Preprocessing rule of :func:`driftlib.stats.aqi.preprocess_features`, applied ONCE to the ``2 n``
        pooled rows of both conditions (see the module docstring): ``k = min(n_components,
        2 n - 1, d_kept)`` components.
    seed : int
        Seeds the swap coins (``numpy.random.default_rng(seed)``) and the randomized PCA solver.
    alternative : {"two-sided", "greater", "less"}
        ``"greater"``: drift raises the AQI of condition a.
    n_boot : int
        Paired bootstrap draws for the interval of the difference (positive).
    confidence : float in (0, 1)
        Coverage of that interval.

    Returns
    -------
    dict
        ``difference``: ``AQI(a) - AQI(b)`` with both AQIs in the pooled subspace (the statistic
        that is tested); ``p_value``: ``(1 + #{|T*| >= |T|}) / (1 + n_perm)`` for two-sided,
        ``#{T* >= T}`` for "greater", ``#{T* <= T}`` for "less" (ties within ``1e-9 (1 + |T|)``
        count); ``n_perm``; ``null_mean, null_sd``: mean and standard deviation (ddof 1; NaN for
        one permutation) of the permuted differences ``T*``; ``ci``: ``[lo, hi]`` bias-corrected
        percentile interval of the difference from a paired bootstrap (prompts resampled within class, the
        same rows for both conditions, in the same pooled subspace); ``alternative``; ``n_features``:
        ``k``; ``note``: why a result is undefined, or "" (NaN results when a class has fewer
        than 2 rows).

    Notes
    -----
    Null: the condition label is exchangeable within each prompt (the two states of a prompt are
    equally likely to have come from either condition). Each permutation swaps ``(h_a[i], h_b[i])``
    for the prompts whose fair coin (independent per prompt, seeded) came up, and recomputes the
    difference; the pooled preprocessing is the same for every swap, so nothing else changes.

    Raises
    ------
    DataError
        A set that is not 2-D, sets of different shapes, or labels that do not fit.
    NumericsError
        NaN/Inf in a set.
    ConfigError
        Bad ``n_perm``, ``method``, ``n_components``, ``alternative``, ``n_boot`` or ``confidence``.
    """
    _aqi.check_options(method, n_components)
    n_perm = _check_positive_int("n_perm", n_perm)
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {ALTERNATIVES}; got {alternative!r}")
    a, b, yb = _check_pair(h_a, h_b, y)
    n = a.shape[0]
    n_s = int(yb.sum())
    nan = float("nan")
    n_boot = _check_positive_int("n_boot", n_boot)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    result: dict[str, Any] = {"difference": nan, "p_value": nan, "n_perm": n_perm, "null_mean": nan,
                              "null_sd": nan, "ci": [nan, nan], "alternative": alternative, "n_features": 0,
                              "note": ""}
    undefined = _aqi.undefined_note(n_s, n - n_s)
    if undefined is not None:
        result["note"] = undefined
        return result

    U = _pooled_features(a, b, method, n_components, seed)
    T = float(_pooled_differences(U, yb, np.zeros((1, n), dtype=bool))[0])
    null = _pooled_differences(U, yb, _swap_coins(n, n_perm, seed))
    tol = 1e-9 * (1.0 + abs(T))
    if alternative == "two-sided":
        hits = np.count_nonzero(np.abs(null) >= abs(T) - tol)
    elif alternative == "greater":
        hits = np.count_nonzero(null >= T - tol)
    else:
        hits = np.count_nonzero(null <= T + tol)
    result.update(difference=T, p_value=float((1 + hits) / (1 + n_perm)), null_mean=float(null.mean()),
                  ci=_pooled_interval(U, yb, T, n_boot, confidence, seed),
                  null_sd=float(null.std(ddof=1)) if n_perm > 1 else nan, n_features=int(U.shape[1]),
                  note="" if U.shape[1] else "no non-constant feature: no separation")
    return result


# --------------------------------------------------------------------------------------------
# label-free drift: projection onto the agent's alignment vector


def projection_drift(h_rounds: Any, vector: Any, *, n_boot: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """Drift of the hidden states' projection onto the agent's alignment vector over rounds.

    Parameters
    ----------
    h_rounds : array [r, n, d]
        Pooled states of the same ``n`` items (prompts, or turns; item ``i`` is the same in every
        round) after each of ``r >= 2`` rounds, round 0 first.
    vector : array [d]
        The agent's alignment vector (nonzero; only its direction matters).
    n_boot : int
        Bootstrap draws over the items (positive).
    confidence : float in (0, 1)
        Coverage of the slope interval.
    seed : int
        Seeds the bootstrap (``numpy.random.default_rng(seed)``).

    Returns
    -------
    dict
        ``mean_projection [r]``: mean over items of ``p[t, i] = h_rounds[t, i] . v / ||v||``;
        ``change [r]``: ``mean_projection - mean_projection[0]``; ``slope``: OLS slope of
        ``mean_projection`` on the round index ``0 .. r-1`` (projection units per round);
        ``slope_ci``: ``[lo, hi]`` percentile interval from resampling the items with replacement
        (the same items in every round, so each draw keeps the items' pairing across rounds);
        ``n``: the number of items.

    Raises
    ------
    DataError
        ``h_rounds`` not 3-D, fewer than 2 rounds or items, a vector of the wrong shape or zero.
    NumericsError
        NaN/Inf in the states or the vector.
    ConfigError
        Bad ``n_boot`` or ``confidence``.
    """
    n_boot = _check_positive_int("n_boot", n_boot)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    H = np.asarray(h_rounds)
    if H.ndim != 3:
        raise DataError(f"h_rounds must be a 3-D array [rounds, n, d]; got shape {H.shape}")
    r, n, d = H.shape
    if r < 2:
        raise DataError(f"h_rounds needs at least 2 rounds for a slope; got {r}")
    if n < 2:
        raise DataError(f"h_rounds needs at least 2 items per round for a bootstrap; got {n}")
    v = np.asarray(vector)
    if v.ndim != 1 or v.shape[0] != d:
        raise DataError(f"vector must be 1-D of length d = {d}; got shape {v.shape}")
    for name, arr in (("h_rounds", H), ("vector", v)):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{name} must be numeric; got dtype {arr.dtype}")
    v = v.astype(np.float64)
    _aqi.check_finite(v[None, :])
    _aqi.check_finite(H.reshape(r * n, d))
    norm = float(np.linalg.norm(v))
    if not norm > 0.0:
        raise DataError("vector has zero norm: no direction to project on")

    proj = np.einsum("tid,d->ti", H, v / norm, dtype=np.float64)  # [r, n]
    mean_proj = proj.mean(axis=1)
    t = np.arange(r, dtype=np.float64)
    tc = t - t.mean()
    weights = tc / np.sum(tc**2)  # OLS slope = weights @ series
    item_slopes = weights @ proj  # [n]; the slope of the mean is their mean
    slope = float(weights @ mean_proj)

    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    step = _aqi.block_rows(n)
    pv = np.full(n, 1.0 / n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        counts = rng.multinomial(n, pv, size=stop - start).astype(np.float64)
        draws[start:stop] = counts @ item_slopes / n
    alpha = 1.0 - confidence
    lo, hi = np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"mean_projection": mean_proj, "change": mean_proj - mean_proj[0], "slope": slope,
            "slope_ci": [float(lo), float(hi)], "n": int(n)}
