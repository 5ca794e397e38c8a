"""The condition of conditional steering (CAST, Lee et al. 2024): a direction read at one layer and a
threshold that picks the prompts to steer (numpy only).

A prompt's *score* is its pooled state at the condition layer projected on the unit direction
``c``; it passes when ``score > threshold``. :func:`fit_condition` takes ``c`` as the unsafe-minus-
safe difference of class means on calibration prompts (disjoint from the evaluation prompts) and
the threshold that maximises balanced accuracy on them; :func:`condition_accuracy` reports how
well the condition picks the unsafe prompts of another set, with a Wilson interval. The gain
that conditional steering can buy in a separation measure is bought by this accuracy
(design.md), so it is reported beside every result the condition produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftlib.core.errors import DataError
from driftlib.stats.behaviour import wilson_interval

__all__ = ["Condition", "ConditionAccuracy", "condition_accuracy", "condition_arrays", "fit_condition", "load_condition",
           "load_mapped_conditions", "map_condition", "save_condition"]


@dataclass(frozen=True)
class Condition:
    """Which prompts conditional steering acts on.

    Args:
        layer: the block whose output is read (0-based; at or before the first injection block).
        direction: the unit direction ``c [d]`` (float32).
        threshold: a prompt is steered when ``state · c > threshold``.
        pooling: how the prompt's state is pooled: ``last`` (its last real token).
        calibration_accuracy: balanced accuracy on the calibration prompts.
        n_calibration: how many calibration prompts it was fitted on.
    """

    layer: int
    direction: np.ndarray
    threshold: float
    pooling: str = "last"
    calibration_accuracy: float = math.nan
    n_calibration: int = 0

    def scores(self, states: np.ndarray) -> np.ndarray:
        """``[n]`` projections of pooled states ``[n, d]`` on the direction."""
        return np.asarray(states, dtype=np.float64) @ np.asarray(self.direction, dtype=np.float64)

    def passes(self, states: np.ndarray) -> np.ndarray:
        """``[n]`` bools: the prompts steered."""
        return self.scores(states) > self.threshold


@dataclass(frozen=True)
class ConditionAccuracy:
    """How well a condition picks the unsafe prompts of a set.

    Args:
        accuracy: share of prompts classified right (passes = unsafe), with its Wilson interval
            ``ci_low``, ``ci_high``.
        balanced: the mean of the true-positive and true-negative rates.
        tpr, tnr: unsafe prompts passed, safe prompts not passed.
        n: prompts.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    balanced: float
    tpr: float
    tnr: float
    n: int

    def record(self) -> dict[str, Any]:
        return {"condition_accuracy": self.accuracy, "condition_ci_low": self.ci_low,
                "condition_ci_high": self.ci_high, "condition_balanced": self.balanced, "condition_n": self.n}


def _check(states: Any, unsafe: Any) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(states, dtype=np.float64)
    u = np.asarray(unsafe).astype(bool)
    if X.ndim != 2 or u.shape != (X.shape[0],):
        raise DataError(f"condition: states {X.shape} and labels {u.shape} do not fit ([n, d] and [n])")
    if not np.isfinite(X).all():
        raise DataError("condition: the calibration states hold NaN or Inf")
    if u.sum() < 1 or (~u).sum() < 1:
        raise DataError(f"condition: the calibration prompts need both classes ({int(u.sum())} unsafe, "
                        f"{int((~u).sum())} safe)")
    return X, u


def _balanced(passes: np.ndarray, unsafe: np.ndarray) -> tuple[float, float, float]:
    tpr = float(passes[unsafe].mean())
    tnr = float((~passes[~unsafe]).mean())
    return (tpr + tnr) / 2, tpr, tnr


def fit_condition(states: Any, unsafe: Any, *, layer: int) -> Condition:
    """The condition that picks unsafe prompts, from calibration states.

    Args:
        states: ``[n, d]`` pooled states of the calibration prompts at ``layer``.
        unsafe: ``[n]`` bools (True: unsafe).
        layer: the block the states were read at.

    Returns:
        A :class:`Condition`: ``c`` the unit difference of class means (unsafe minus safe); the
        threshold the midpoint between consecutive sorted scores with the highest balanced
        accuracy (ties: the one nearest the midpoint of the class-mean scores).
    """
    X, u = _check(states, unsafe)
    diff = X[u].mean(axis=0) - X[~u].mean(axis=0)
    length = float(np.linalg.norm(diff))
    if not length > 0:
        raise DataError("condition: the calibration classes have the same mean state; no direction to read")
    c = diff / length
    s = X @ c
    values = np.unique(s)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2])
    # the share of each class at or below each cut, from sorted scores (no [cuts, n] matrix)
    tpr = 1.0 - np.searchsorted(np.sort(s[u]), cuts, side="right") / u.sum()
    tnr = np.searchsorted(np.sort(s[~u]), cuts, side="right") / (~u).sum()
    bal = (tpr + tnr) / 2
    best = np.flatnonzero(bal == bal.max())
    middle = (s[u].mean() + s[~u].mean()) / 2
    pick = best[np.argmin(np.abs(cuts[best] - middle))]
    return Condition(layer=int(layer), direction=c.astype(np.float32), threshold=float(cuts[pick]),
                     calibration_accuracy=float(bal[pick]), n_calibration=int(len(u)))


def map_condition(unsafe_mean: Any, safe_mean: Any, affine: Any, *, layer: int, n_calibration: int = 0) -> Condition:
    """A source model's condition carried into a target model by an affine map of states.

    The class means of the source's calibration prompts (at the source block the map reads) are
    mapped into the target (``affine.transform``, :class:`driftlib.stats.maps.LinearMap`); the
    direction is their unit difference (unsafe minus safe), as :func:`fit_condition` takes it, and
    the threshold the projection of their midpoint. No target label is used: the condition is the
    source's, seen through the map.

    Args:
        unsafe_mean, safe_mean: ``[d_s]`` the source's calibration class means.
        affine: the map source -> target (``transform([n, d_s]) -> [n, d_t]``).
        layer: the target block the mapped condition is read at (the map's target layer).
        n_calibration: how many source calibration prompts the means came from (recorded).

    Raises:
        DataError: the mapped means coincide (no direction).
    """
    means = affine.transform(np.stack([np.asarray(unsafe_mean, np.float64), np.asarray(safe_mean, np.float64)]))
    diff = means[0] - means[1]
    length = float(np.linalg.norm(diff))
    if not length > 0:
        raise DataError("condition: the mapped class means coincide; no direction to read")
    c = diff / length
    return Condition(layer=int(layer), direction=c.astype(np.float32), threshold=float(means.mean(axis=0) @ c),
                     n_calibration=int(n_calibration))


def condition_accuracy(condition: Condition, states: Any, unsafe: Any, *, confidence: float = 0.95) -> ConditionAccuracy:
    """How well ``condition`` picks the unsafe prompts among ``states [n, d]`` (labels ``unsafe [n]``)."""
    X, u = _check(states, unsafe)
    passes = condition.passes(X)
    right = int((passes == u).sum())
    lo, hi = wilson_interval(right, len(u), confidence)
    bal, tpr, tnr = _balanced(passes, u)
    return ConditionAccuracy(accuracy=right / len(u), ci_low=lo, ci_high=hi, balanced=bal, tpr=tpr, tnr=tnr,
                             n=int(len(u)))


def save_condition(path: Any, condition: Condition, metadata: dict[str, Any] | None = None,
                   arrays: dict[str, Any] | None = None) -> None:
    """Write a condition (its direction as a tensor, the rest as metadata), atomically; ``arrays``:
    further float32 tensors kept beside it (:func:`condition_arrays` reads them)."""
    from driftlib.core.artifacts import save_tensors

    extra = {k: np.asarray(v, dtype=np.float32) for k, v in (arrays or {}).items()}
    save_tensors(path, {"direction": np.asarray(condition.direction, dtype=np.float32), **extra}, metadata={
        **(metadata or {}), "layer": condition.layer, "threshold": condition.threshold,
        "pooling": condition.pooling, "calibration_accuracy": condition.calibration_accuracy,
        "n_calibration": condition.n_calibration})


def load_condition(path: Any, *, producer: str | None = "fit_condition") -> tuple[Condition, dict[str, Any]]:
    """``(condition, metadata)`` from a file written by :func:`save_condition`."""
    from driftlib.core.artifacts import decode_metadata_value, load_tensors
    from driftlib.core.errors import ArtifactError

    arrays, raw = load_tensors(path, producer=producer)
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    if "direction" not in arrays or "layer" not in meta or "threshold" not in meta:
        raise ArtifactError(f"{path}: not a condition file (no direction, layer or threshold). Re-run {producer}.")
    cond = Condition(layer=int(meta["layer"]), direction=np.asarray(arrays["direction"], dtype=np.float32),
                     threshold=float(meta["threshold"]), pooling=str(meta.get("pooling", "last")),
                     calibration_accuracy=float(meta.get("calibration_accuracy", math.nan)),
                     n_calibration=int(meta.get("n_calibration", 0)))
    return cond, meta


def condition_arrays(path: Any, names: Any, *, producer: str | None = "fit_condition") -> dict[str, np.ndarray]:
    """The tensors ``names`` kept beside a condition (:func:`save_condition`'s ``arrays``)."""
    from driftlib.core.artifacts import load_tensors
    from driftlib.core.errors import ArtifactError

    arrays, _ = load_tensors(path, producer=producer)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ArtifactError(f"{path}: no {', '.join(missing)} beside the condition. Re-run {producer}.")
    return {n: arrays[n] for n in names}


def load_mapped_conditions(path: Any, *, producer: str | None = "map_condition") -> tuple[str, dict[str, tuple[Condition, dict]]]:
    """``(source, {method: (Condition, accuracy record)})`` from a phase-4 mapped-condition file (one
    ``{method}.direction`` tensor per map method; ``source``, ``layer`` and per-method ``conditions``
    with the threshold and the accuracy record in its metadata)."""
    from driftlib.core.artifacts import decode_metadata_value, load_tensors

    arrays, raw = load_tensors(path, producer=producer)
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    out = {}
    for method, rec in (meta.get("conditions") or {}).items():
        cond = Condition(layer=int(meta["layer"]), direction=arrays[f"{method}.direction"],
                         threshold=float(rec["threshold"]))
        out[method] = (cond, {k: v for k, v in rec.items() if k != "threshold"})
    return str(meta.get("source", "")), out
