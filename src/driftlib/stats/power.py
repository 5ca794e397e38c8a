"""Minimum detectable effect (MDE): the smallest true effect a comparison would detect.

Numerical code only (numpy/scipy in, floats out; no torch, no I/O). For an estimate that is
approximately normal with standard error ``se``, a two-sided level-``alpha`` z-test rejects when
``|estimate / se| > z_{1 - alpha/2}``. A true effect ``delta`` is detected with probability
``Phi(delta / se - z_{1 - alpha/2}) + Phi(-delta / se - z_{1 - alpha/2})``; neglecting the second
term (rejections in the wrong direction, below 1e-5 at the usual ``alpha`` and ``power``) and
solving ``Phi(delta / se - z_{1 - alpha/2}) = power`` gives

    MDE = (z_{1 - alpha/2} + z_{power}) * se        (one-sided: z_{1 - alpha} in place of z_{1 - alpha/2})

e.g. ``2.8016 se`` at ``alpha = 0.05`` and ``power = 0.8``. The formula rests on the normal
approximation of the estimate's sampling distribution and on ``se`` being known; with a bootstrap
``se`` (:func:`mde_from_replicates`) it is an estimate itself. An observed difference smaller than
the MDE is not evidence of no effect: the comparison could not have resolved it.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy.special import ndtri  # the standard normal quantile; scipy.stats is slow to import

from driftlib.core.errors import ConfigError, DataError

__all__ = ["minimum_detectable_effect", "resolvable", "mde_from_replicates", "independent_se"]


def _check_level(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must lie strictly between 0 and 1; got {value!r}")
    return float(value)


def _check_se(se: Any) -> float:
    if isinstance(se, bool) or not isinstance(se, numbers.Real):
        raise DataError(f"se must be a real number; got {se!r}")
    se = float(se)
    if se < 0.0 or se == np.inf:
        raise DataError(f"se must be a finite non-negative number (or NaN when undefined); got {se!r}")
    return se


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8,
                              two_sided: bool = True) -> float:
    """The smallest true effect detected with probability ``power`` by a level-``alpha`` z-test.

    Args:
        se: Standard error of the estimate (>= 0; NaN gives NaN, for undefined estimates).
        alpha: Level of the test, in (0, 1).
        power: Required probability of detection, in (0, 1).
        two_sided: Two-sided test (``z_{1 - alpha/2}``) or one-sided (``z_{1 - alpha}``).

    Returns:
        ``(z_crit + z_power) * se`` (normal approximation; see the module docstring), in the units of
        ``se``.

    Raises:
        ConfigError: ``alpha`` or ``power`` outside (0, 1).
        DataError: ``se`` negative, infinite or not a number.
    """
    alpha = _check_level("alpha", alpha)
    power = _check_level("power", power)
    se = _check_se(se)
    z_crit = ndtri(1.0 - alpha / 2.0) if two_sided else ndtri(1.0 - alpha)
    return float((z_crit + ndtri(power)) * se)


def resolvable(effect: float, se: float, **kwargs: Any) -> bool:
    """Whether ``|effect| >= minimum_detectable_effect(se, **kwargs)``.

    Args:
        effect: An observed or hypothesised effect (same units as ``se``).
        se: Its standard error.
        **kwargs: ``alpha``, ``power``, ``two_sided`` of :func:`minimum_detectable_effect`.

    Returns:
        False when ``effect`` or ``se`` is NaN.
    """
    mde = minimum_detectable_effect(se, **kwargs)
    effect = float(effect)
    if not (np.isfinite(mde) and np.isfinite(effect)):
        return False
    return bool(abs(effect) >= mde)


def mde_from_replicates(draws: Any, **kwargs: Any) -> float:
    """MDE from bootstrap (or other) replicates of an estimate: ``se = std(draws, ddof=1)``.

    Args:
        draws: Array ``[B]`` of replicate estimates; non-finite draws are left out.
        **kwargs: ``alpha``, ``power``, ``two_sided`` of :func:`minimum_detectable_effect`.

    Returns:
        The MDE; NaN when fewer than 2 finite draws remain.

    Raises:
        DataError: ``draws`` not one-dimensional.
    """
    t = np.asarray(draws, dtype=np.float64)
    if t.ndim != 1:
        raise DataError(f"draws must be a 1-D array; got shape {t.shape}")
    t = t[np.isfinite(t)]
    se = float(np.std(t, ddof=1)) if t.size >= 2 else float("nan")
    return minimum_detectable_effect(se, **kwargs)


def independent_se(*se: float) -> float:
    """Standard error of a sum or difference of independent estimates: ``sqrt(sum se_i^2)``.

    E.g. two independent AQIs with the same ``se`` differ with standard error ``sqrt(2) se``, so
    their MDE is ``sqrt(2)`` times that of one AQI against a fixed value.
    """
    if not se:
        raise DataError("independent_se needs at least one standard error")
    vals = [_check_se(s) for s in se]
    return float(np.sqrt(np.sum(np.square(vals))))
