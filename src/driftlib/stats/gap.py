"""The share of the base-to-aligned gap that steering closes, with a Fieller interval.

Phase 3 asks the seed study's question directly: steering the base model with ``lambda * v``, how
much of the way from the base model to the aligned model does a measure move? With ``gain`` the
steered model's change from the unsteered base (lambda against 0) and ``gap`` the aligned model's
value minus the base model's, the share is ``gain / gap`` (0: nothing closed; 1: the aligned
model's value reached; above 1: overshoot; negative: away from it).

A ratio of two estimates has no symmetric standard error worth the name when the denominator is
noisy, so the interval is Fieller's (the exact confidence set for a ratio of two normal estimates):
the ``rho`` with ``(gain - rho * gap)^2 <= z^2 (se_gain^2 + rho^2 se_gap^2)``. It is a bounded
interval only when the gap itself is significant (``gap^2 > z^2 se_gap^2``). The share is reported
as undefined, with the reason, when the gap is smaller than its minimum detectable effect (80% power,
:func:`driftlib.stats.power.minimum_detectable_effect`): then aligned and base do not differ beyond
what this sample size can resolve, and any share would be a ratio of noise. scipy has no Fieller
interval, and the closed form is four lines, hence written here.

The two estimates are treated as independent (the gap comes from two other models, the gain from the
steered one); covariance between them would only matter through the shared prompts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import norm

from driftlib.stats.power import minimum_detectable_effect

__all__ = ["GapShare", "fieller_interval", "gap_share"]


@dataclass(frozen=True)
class GapShare:
    """The share of the gap closed: ``share = gain / gap`` with its Fieller interval.

    ``defined`` is False (share and interval NaN) with the reason in ``note`` when the gap is not
    resolvable (``|gap| < gap_mde``) or an input is not finite.
    """

    gain: float
    gap: float
    gap_mde: float
    share: float
    ci_low: float
    ci_high: float
    defined: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fieller_interval(a: float, se_a: float, b: float, se_b: float, confidence: float = 0.95) -> tuple[float, float]:
    """Fieller's interval for ``a / b`` from independent normal estimates ``a`` and ``b``.

    Args:
        a, se_a: numerator and its standard error.
        b, se_b: denominator and its standard error.
        confidence: coverage, in (0, 1).

    Returns:
        ``(low, high)``; ``(-inf, inf)`` when ``b`` is not significantly different from 0 at this level
        (the confidence set is then unbounded).
    """
    z = float(norm.ppf(0.5 + confidence / 2))
    qa = b * b - z * z * se_b * se_b
    if qa <= 0:
        return -math.inf, math.inf
    qb = -2.0 * a * b
    qc = a * a - z * z * se_a * se_a
    disc = qb * qb - 4 * qa * qc
    disc = max(disc, 0.0)  # qa > 0 makes disc >= 4 qa z^2 se_a^2 >= 0 up to rounding
    root = math.sqrt(disc)
    return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


def gap_share(gain: float, se_gain: float, gap: float, se_gap: float, *, confidence: float = 0.95) -> GapShare:
    """The share of ``gap`` (aligned − base) that ``gain`` (steered − unsteered) closes.

    Args:
        gain, se_gain: the steered model's change and its standard error.
        gap, se_gap: aligned minus base and its standard error.
        confidence: coverage of the interval; the gap's MDE uses ``alpha = 1 - confidence``.

    Returns:
        GapShare.
    """
    values = (gain, se_gain, gap, se_gap)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return GapShare(gain, gap, math.nan, math.nan, math.nan, math.nan, False,
                        "undefined: the gain or the aligned-base gap is not measured")
    mde = minimum_detectable_effect(se_gap, alpha=1 - confidence)
    if abs(gap) < mde or gap == 0:
        return GapShare(gain, gap, mde, math.nan, math.nan, math.nan, False,
                        f"undefined: aligned and base do not differ beyond their minimum detectable effect "
                        f"(|gap| {abs(gap):.3g} < MDE {mde:.3g})")
    low, high = fieller_interval(gain, se_gain, gap, se_gap, confidence)
    return GapShare(gain, gap, mde, gain / gap, low, high, True, "")
