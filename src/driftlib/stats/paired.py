"""Paired comparison of an AQI-type statistic between two readings of the same prompts.

Numerical code only (numpy in, numpy out; no torch, no I/O). ``A`` and ``B`` hold the states of the
same ``n`` prompts (same rows, same order, labels ``y``: 1 safe, 0 unsafe) under two conditions
(base vs aligned variant, unsteered vs steered, control vs collaboration context). The estimate is
``stat(A) - stat(B)``; its uncertainty comes from a **paired** bootstrap over prompts: each draw
resamples prompt indices within each class once (class sizes fixed) and applies the same indices
to ``A`` and ``B``, so what the two conditions share (the prompts) cancels in the difference.

Interval and test from the same draws
-------------------------------------
With ``B`` finite draws ``t*`` of the difference and ``m = min(#(t* <= 0), #(t* >= 0))``:

* ``p_value = min(1, (1 + 2 m) / (B + 1))``: twice the smaller bootstrap tail at 0, with the
  ``+1`` convention, so the smallest possible value is ``p_floor = 1 / (B + 1)`` (reported);
* the interval is the **percentile** interval taken at order statistics: ``[t*_(j), t*_(B+1-j)]``
  (1-based ranks of the sorted draws) with ``j`` the smallest count at which the test does not
  reject, ``(1 + 2 j) / (B + 1) >= alpha``; ``j`` is about ``alpha (B + 1) / 2``, the usual
  percentile ranks.

Then ``p_value < alpha`` exactly when the ``1 - alpha`` interval excludes 0 (``t*_(j) > 0`` means
fewer than ``j`` draws are ``<= 0``, and likewise above), so the test and the interval never
disagree. A bias-corrected interval (as :func:`driftlib.stats.aqi.bc_interval`) would shift the
bounds by an estimated bias that the sign count does not see and break this correspondence; the
bias it corrects is small for a difference of two AQIs of the same prompts (each AQI's resampling
bias depends on its own ``n`` and ``p``, which ``A`` and ``B`` share, so it nearly cancels).
``n_boot`` must exceed ``1 / alpha - 1`` for the interval to exist. ``alpha`` is ``1 - confidence``
rounded to 12 decimals (:func:`level_of`), so that ``confidence=0.95`` means ``p_value < 0.05``. ``se`` is the standard deviation
of the draws and ``mde`` the minimum detectable effect from it (:mod:`driftlib.stats.power`, two-sided
at ``alpha = 1 - confidence``, power 0.8): a difference below ``mde`` could not have been resolved.

The statistic
-------------
``stat_fn(Z, y) -> float`` takes features ``Z [n, k]`` and labels ``y [n]`` (bool). Each set is first
preprocessed ONCE, on its own rows, by :func:`driftlib.stats.aqi.preprocess_features`'s rule
(``method``, ``n_components``; the rows class-sorted as ``alignment_quality`` does), and the
preprocessing is kept fixed for the draws, as :func:`driftlib.stats.transfer.transfer_efficiency`
does. The default ``stat_fn`` is :func:`driftlib.stats.transfer.aqi_point`, so with the default
preprocessing the difference is ``alignment_quality(A).aqi - alignment_quality(B).aqi`` (the same
as :func:`driftlib.stats.drift.aqi_difference`). Pass ``method="none"`` to give ``stat_fn`` the raw
features. ``stat_fn`` is called ``2 (n_boot + 1)`` times.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError, NumericsError
from driftlib.stats import aqi as _aqi
from driftlib.stats.power import minimum_detectable_effect
from driftlib.stats.transfer import aqi_point

__all__ = ["PairedDifference", "PAIRED_FIELDS", "paired_difference", "sign_test_interval", "level_of"]

StatFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class PairedDifference:
    """``stat(A) - stat(B)`` over the same prompts, with a paired bootstrap interval and test.

    ``n, n_safe, n_unsafe``: row counts; ``stat_a, stat_b``: the statistic of each set;
    ``difference``: ``stat_a - stat_b``; ``ci_low, ci_high``: percentile interval of the paired
    bootstrap differences (order statistics ``j`` and ``B + 1 - j``, see the module docstring);
    ``se``: their standard deviation (ddof 1); ``p_value``: ``min(1, (1 + 2 m) / (B + 1))`` from the
    same draws (``p_value < alpha`` exactly when the interval excludes 0, ``alpha = level_of(confidence)``); ``p_floor``:
    ``1 / (B + 1)``, its smallest possible value; ``mde``: minimum detectable effect from ``se``
    (two-sided, ``alpha = 1 - confidence``, power 0.8); ``n_boot``: finite draws used;
    ``confidence``; ``defined``: False when a class has fewer than 2 rows or too few finite draws
    (statistics NaN); ``note``: why, or another remark ("" when none).
    """

    n: int
    n_safe: int
    n_unsafe: int
    stat_a: float
    stat_b: float
    difference: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    p_floor: float
    mde: float
    n_boot: int
    confidence: float
    defined: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` (field order kept)."""
        return asdict(self)


PAIRED_FIELDS = tuple(f.name for f in fields(PairedDifference))


def level_of(confidence: float) -> float:
    """The test's level ``alpha = 1 - confidence``, rounded to 12 decimals, so that ``confidence=0.95``
    gives exactly the float ``0.05`` (``1 - 0.95`` is ``0.05000000000000004``) and ``p_value < 0.05``
    written by a reader agrees with the interval also where ``p_value`` equals 0.05."""
    return round(1.0 - float(confidence), 12)


def _rejects(m: int, B: int, alpha: float) -> bool:
    return (1 + 2 * m) / (B + 1) < alpha


def sign_test_interval(draws: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """The percentile interval and bootstrap p-value of ``draws`` at 0, consistent by construction.

    Args:
        draws: Bootstrap draws ``[B]`` of a difference (finite).
        confidence: Coverage, in (0, 1); ``alpha = level_of(confidence)`` (``1 - confidence``).

    Returns:
        ``(lo, hi, p_value)``: ``p_value = min(1, (1 + 2 m) / (B + 1))`` with
        ``m = min(#(t <= 0), #(t >= 0))``; ``lo, hi`` the ``j``-th smallest and ``j``-th largest draw,
        ``j`` the smallest count with ``(1 + 2 j) / (B + 1) >= alpha``. ``p_value < alpha`` exactly when
        ``0`` lies outside ``[lo, hi]``.

    Raises:
        ConfigError: ``confidence`` outside (0, 1), or ``B + 1 <= 1 / alpha`` (then every p-value is
        at least ``alpha`` and no ``1 - alpha`` interval can exclude anything).
        NumericsError: non-finite draws.
    """
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    t = np.sort(np.asarray(draws, dtype=np.float64).ravel())
    if not np.isfinite(t).all():
        raise NumericsError("sign_test_interval: the draws hold NaN/Inf")
    B = t.size
    alpha = level_of(confidence)
    if not _rejects(0, B, alpha):
        raise ConfigError(f"{B} draws are too few for a {confidence:g} interval: need n_boot + 1 > "
                          f"1 / (1 - confidence) = {1 / alpha:.4g}")
    # j from the closed form, then nudged so that it agrees with _rejects in floating point
    j = max(1, int(np.ceil((alpha * (B + 1) - 1) / 2)))
    while j > 1 and not _rejects(j - 1, B, alpha):
        j -= 1
    while _rejects(j, B, alpha):
        j += 1
    m = min(int(np.count_nonzero(t <= 0)), int(np.count_nonzero(t >= 0)))
    p = min(1.0, (1 + 2 * m) / (B + 1))
    return float(t[j - 1]), float(t[B - j]), float(p)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def paired_difference(stat_fn: StatFn | None, A: Any, B: Any, y: Any, *, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0, method: str = "standardize",
                      n_components: int | None = 32) -> PairedDifference:
    """``stat(A) - stat(B)`` for two readings of the same prompts, with a paired bootstrap.

    Args:
        stat_fn: ``stat_fn(Z [n, k], y [n] bool) -> float`` on preprocessed features; None for the AQI
            point estimate (:func:`driftlib.stats.transfer.aqi_point`).
        A: States ``[n, d]`` of the prompts under condition a.
        B: States ``[n, d]`` of the same prompts (same rows, same order) under condition b.
        y: Labels ``[n]``, bool or 0/1 (1 = safe).
        n_boot: Paired draws: each resamples the prompts within each class once (class sizes fixed)
            and applies the same indices to both sets; must exceed ``1 / (1 - confidence) - 1``.
        confidence: Coverage of the interval, in (0, 1); the test's level is ``1 - confidence``.
        seed: Seeds the preprocessing's randomized PCA and the root ``numpy.random.SeedSequence``
            whose two children draw the safe and the unsafe indices.
        method, n_components: Preprocessing of each set, fitted once on its own rows
            (:func:`driftlib.stats.aqi.preprocess_features`); ``method="none"`` passes the raw features.

    Returns:
        PairedDifference (see the module docstring for the interval and the test).

    Raises:
        DataError: sets of different shapes, labels that do not fit. NumericsError: NaN/Inf in a set,
        or a non-finite statistic of the observed sets. ConfigError: bad options.
    """
    _aqi.check_options(method, n_components)
    n_boot = _check_int("n_boot", n_boot, 1)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    alpha = level_of(confidence)
    if not _rejects(0, n_boot, alpha):
        raise ConfigError(f"n_boot = {n_boot} is too small for a {confidence:g} interval: need n_boot + 1 > "
                          f"1 / (1 - confidence) = {1 / alpha:.4g}")
    if stat_fn is None:
        stat_fn = aqi_point
    elif not callable(stat_fn):
        raise ConfigError("stat_fn must be callable: stat_fn(Z, y) -> float, or None for the AQI")
    (a, b), yb = _aqi.check_paired_sets({"A": A, "B": B}, y)
    n = a.shape[0]
    n_s = int(yb.sum())
    n_u = n - n_s
    nan = float("nan")

    def result(**kw: Any) -> PairedDifference:
        base = dict(n=n, n_safe=n_s, n_unsafe=n_u, stat_a=nan, stat_b=nan, difference=nan, ci_low=nan,
                    ci_high=nan, se=nan, p_value=nan, p_floor=nan, mde=nan, n_boot=0,
                    confidence=float(confidence), defined=False, note="")
        base.update(kw)
        return PairedDifference(**base)

    note = _aqi.undefined_note(n_s, n_u)
    if note is not None:
        return result(note=note)

    # as alignment_quality: safe rows first (stable), float64, preprocessing fitted once per set
    order = np.argsort(~yb, kind="stable")
    ys = yb[order]
    Za = _aqi.preprocess_inplace(_aqi.ordered_float64(a, order), method, n_components, seed)
    Zb = _aqi.preprocess_inplace(_aqi.ordered_float64(b, order), method, n_components, seed)
    stat_a, stat_b = float(stat_fn(Za, ys)), float(stat_fn(Zb, ys))
    if not (np.isfinite(stat_a) and np.isfinite(stat_b)):
        raise NumericsError(f"stat_fn gave a non-finite value on the observed sets: A {stat_a}, B {stat_b}")
    diff = stat_a - stat_b

    ss_s, ss_u = np.random.SeedSequence(seed).spawn(2)
    rng_s, rng_u = np.random.default_rng(ss_s), np.random.default_rng(ss_u)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rng_s.integers(0, n_s, n_s), n_s + rng_u.integers(0, n_u, n_u)])
        yi = ys[idx]
        draws[i] = float(stat_fn(Za[idx], yi)) - float(stat_fn(Zb[idx], yi))
    finite = draws[np.isfinite(draws)]
    notes = []
    if finite.size < n_boot:
        notes.append(f"{n_boot - finite.size} of {n_boot} bootstrap draws were not finite and were left out")
    B_ok = int(finite.size)
    if not _rejects(0, B_ok, alpha):
        notes.insert(0, "undefined: too few finite bootstrap draws for the interval")
        return result(stat_a=stat_a, stat_b=stat_b, difference=diff, n_boot=B_ok, note="; ".join(notes))
    lo, hi, p = sign_test_interval(finite, confidence)
    se = float(np.std(finite, ddof=1))
    mde = minimum_detectable_effect(se, alpha=alpha)
    return result(stat_a=stat_a, stat_b=stat_b, difference=diff, ci_low=lo, ci_high=hi, se=se, p_value=p,
                  p_floor=1.0 / (B_ok + 1), mde=mde, n_boot=B_ok, defined=True, note="; ".join(notes))
