"""Choices made from measured numbers (numpy and pandas only): the best lambda of a sweep under a
capability-cost bound, the baseline model of phase 1, the best map of each phase-4 cell, and the
checks of a lambda grid. Phases that need another phase's choice read that phase's output tables
and call these functions, never the other phase's modules."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.errors import ArtifactError, ConfigError, DataError

#: the vectors each phase-4 cell is swept with: the mapped vector and its two controls
TRANSFER_VECTORS = ("mapped", "shuffled", "random")


@dataclass(frozen=True)
class LambdaChoice:
    """The best lambda of a sweep inside a capability-cost bound (:func:`best_lambda`).

    Args:
        lam: the chosen lambda (None when no lambda is inside the bound or none of those inside has
            a defined AQI); ties go to the smallest ``|lambda|`` (least steering).
        aqi: its AQI (NaN when none).
        cost: its cost (NaN when none; a list for several costs).
        inside_bound: ``[m]`` bools, one per lambda of the sweep.
        steered: whether the chosen lambda is non-zero.
        best_outside: ``{"lambda", "aqi", "cost"}`` of the highest AQI outside the bound when it
            beats the chosen one, else None.
        note: a sentence saying when no steered lambda fits the bound, when steering did not beat
            lambda 0 inside it, when a cost could not be measured, or when a higher AQI outside the
            bound was reported but not chosen.
    """

    lam: float | None
    aqi: float
    cost: float | list[float]
    inside_bound: list[bool]
    steered: bool
    best_outside: dict[str, Any] | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``best_lambda.json``): the fields, with ``lam`` written as ``lambda``."""
        return {"lambda": self.lam, "aqi": self.aqi, "cost": self.cost, "inside_bound": list(self.inside_bound),
                "steered": self.steered, "best_outside": self.best_outside, "note": self.note}


def best_lambda(
    lambdas: Sequence[float], aqi: Sequence[float], cost: Sequence[float] | np.ndarray, bound: float | Sequence[float]
) -> LambdaChoice:
    """The lambda with the highest AQI among those whose capability cost stays inside the bound.

    Args:
        lambdas: the sweep's strengths ``[m]``.
        aqi: the AQI at each lambda ``[m]`` (NaN: undefined, never chosen).
        cost: the cost at each lambda, ``[m]`` (one cost, e.g. the next-token KL) or ``[m, c]``
            (several costs, e.g. KL and repetition, each with its own bound).
        bound: the largest acceptable cost: a number, or ``[c]`` numbers for a 2-D ``cost``. A
            lambda is inside the bound when every one of its costs is ``<= bound``.

    Returns:
        A :class:`LambdaChoice`.

    The rule for costs that could not be measured: ``lambda = 0`` is the unsteered model, so it is
    inside the bound by definition, whatever its cost column says (a repetition rate is NaN when
    every greedy continuation ends before three tokens, and a cost relative to lambda 0 is then NaN
    too). A steered lambda with a NaN cost is outside (it cannot be shown to be inside), and the
    note says so. A "steered" lambda is any ``lambda != 0`` (negative strengths included). An AQI
    gain outside the bound is reported, never called a success.
    """
    lams = np.asarray(check_lambdas(lambdas), dtype=np.float64)
    m = lams.shape[0]
    scores = np.asarray(aqi, dtype=np.float64)
    costs = np.asarray(cost, dtype=np.float64)
    if scores.shape != (m,):
        raise ConfigError(f"best_lambda: aqi has shape {scores.shape}; expected one value per lambda ({m})")
    if costs.ndim not in (1, 2) or costs.shape[0] != m:
        raise ConfigError(f"best_lambda: cost has shape {costs.shape}; expected [{m}] or [{m}, c]")
    limits = np.asarray(bound, dtype=np.float64)
    expected = () if costs.ndim == 1 else (costs.shape[1],)
    if limits.shape not in (expected, ()):
        raise ConfigError(f"best_lambda: bound has shape {limits.shape}; expected a number or one per cost column {expected}")
    if np.isnan(limits).any():
        raise ConfigError("best_lambda: the cost bound is NaN")
    within = costs <= limits  # NaN compares False: outside
    inside = within if costs.ndim == 1 else within.all(axis=1)
    inside = inside | (lams == 0)  # the unsteered model is inside by definition
    unmeasured = (np.isnan(costs) if costs.ndim == 1 else np.isnan(costs).any(axis=1)) & (lams != 0)

    def pick(candidates: np.ndarray) -> int | None:
        ok = candidates & np.isfinite(scores)
        if not ok.any():
            return None
        top = np.max(scores[ok])
        tied = np.flatnonzero(ok & (scores == top))
        return int(tied[np.argmin(np.abs(lams[tied]))])

    def cost_of(i: int) -> float | list[float]:
        return float(costs[i]) if costs.ndim == 1 else [float(c) for c in costs[i]]

    chosen = pick(inside)
    outside = pick(~inside)
    best_outside = None
    if outside is not None and (chosen is None or scores[outside] > scores[chosen]):
        best_outside = {"lambda": float(lams[outside]), "aqi": float(scores[outside]), "cost": cost_of(outside)}
    notes: list[str] = []
    steered_inside = inside & (lams != 0)
    if not steered_inside.any():
        notes.append(
            "no steered lambda (lambda != 0) keeps the capability cost inside the bound; their AQIs are "
            "reported, and an AQI gain outside the bound is never called a success"
        )
    elif chosen is None:
        notes.append("no lambda inside the bound has a defined AQI")
    elif lams[chosen] == 0:
        notes.append("steering did not raise the AQI above lambda 0 inside the bound")
    if chosen is None and not inside.any():
        notes.append("no lambda at all is inside the bound")
    if unmeasured.any():
        notes.append(f"the capability cost of lambda {', '.join(f'{v:g}' for v in lams[unmeasured])} could not be "
                     "measured (NaN): counted outside the bound")
    if best_outside is not None:
        notes.append(
            f"a higher AQI ({best_outside['aqi']:.4g} at lambda {best_outside['lambda']:g}, cost {best_outside['cost']}) "
            "lies outside the bound: an AQI gain outside the bound is reported, never called a success"
        )
    return LambdaChoice(
        lam=None if chosen is None else float(lams[chosen]),
        aqi=math.nan if chosen is None else float(scores[chosen]),
        cost=math.nan if chosen is None else cost_of(chosen),
        inside_bound=[bool(v) for v in inside],
        steered=chosen is not None and bool(lams[chosen] != 0),
        best_outside=best_outside,
        note="; ".join(notes),
    )


def check_lambdas(lambdas: Sequence[float]) -> list[float]:
    if isinstance(lambdas, (str, bytes)) or not hasattr(lambdas, "__iter__"):
        raise ConfigError(f"lambdas: {lambdas!r}; give a list of numbers")
    values = list(lambdas)
    if not values:
        raise ConfigError("lambdas: empty; give at least one steering strength")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ConfigError(f"lambdas: {value!r} is not a finite number")
        out.append(float(value))
    return out


def choose_baseline(summary: pd.DataFrame) -> dict:
    """The aligned variant with the highest overall AQI at the primary layer, and its margin.

    Returns a JSON-ready dict: baseline, aqi, ci, runner_up, runner_up_aqi, runner_up_ci,
    overlaps_runner_up, ranking (model keys, best first) and a one-line note.
    """
    rows = summary[(summary["primary"]) & (summary["category"] == "overall")
                   & (summary["variant"] == "aligned") & summary["defined"].astype(bool)]
    rows = rows.sort_values("aqi", ascending=False)
    if rows.empty:
        return {"baseline": None, "note": "no aligned model has a defined overall AQI"}
    best = rows.iloc[0]
    out = {"baseline": str(best["model"]), "aqi": float(best["aqi"]),
           "ci": [float(best["ci_low"]), float(best["ci_high"])], "layer": int(best["layer"]),
           "ranking": rows["model"].astype(str).tolist(), "runner_up": None,
           "overlaps_runner_up": False}
    if len(rows) > 1:
        second = rows.iloc[1]
        overlap = bool(best["ci_low"] <= second["ci_high"])
        out.update(runner_up=str(second["model"]), runner_up_aqi=float(second["aqi"]),
                   runner_up_ci=[float(second["ci_low"]), float(second["ci_high"])],
                   overlaps_runner_up=overlap)
        out["note"] = (f"{best['model']} has the highest overall AQI ({best['aqi']:.2f}); "
                       + ("its interval overlaps the runner-up's "
                          f"({second['model']}, {second['aqi']:.2f}): the two are not separable"
                          if overlap else f"clear of the runner-up ({second['model']}, {second['aqi']:.2f})"))
    else:
        out["note"] = f"{best['model']} is the only aligned model"
    return out


def transfer_matrix(fit: pd.DataFrame, eff: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target, method) from the concatenated ``fit_maps`` tables
    (``fit``) and ``transfer_efficiency`` tables (``eff``).

    Columns: the held-out fit of the map (mean over the injection layers), the mapped vector's
    cosine with the target's own vector, the efficiency of the mapped vector and of both controls
    (``shuffled_*``, ``random_*``) with intervals, and ``best``: the cell's best method, the one
    with the highest defined efficiency (ties and all-undefined cells: the highest held-out R^2).
    """
    if fit.empty or eff.empty:
        raise DataError("no phase-4 tables given")
    fit_cell = (fit.groupby(["source", "target", "method"], as_index=False)
                .agg(r2=("r2", "mean"), cosine=("cosine", "mean"), shuffled_r2=("shuffled_r2", "mean"),
                     cos_own=("cos_own", "mean"), shuffled_cos_own=("shuffled_cos_own", "mean"),
                     source_layers=("source_layer", lambda s: " ".join(map(str, s))),
                     target_layers=("target_layer", lambda s: " ".join(map(str, s)))))
    key = ["source", "target", "method"]
    wide = eff[eff["vector"] == "mapped"].drop(columns="vector")
    for control in TRANSFER_VECTORS[1:]:
        rows = eff[eff["vector"] == control][key + ["lam", "gain", "efficiency", "ci_low", "ci_high"]]
        wide = wide.merge(rows.rename(columns=lambda c: c if c in key else f"{control}_{c}"), on=key, how="left")
    matrix = fit_cell.merge(wide, on=key, how="outer")
    matrix["_score"] = matrix["efficiency"].where(matrix["defined"].fillna(False).astype(bool), -np.inf).fillna(-np.inf)
    ranked = matrix.sort_values(["source", "target", "_score", "r2"], na_position="first")
    best_idx = ranked.groupby(["source", "target"]).tail(1).index
    matrix["best"] = matrix.index.isin(best_idx)
    return matrix.drop(columns="_score").sort_values(["source", "target", "method"]).reset_index(drop=True)


def overall_curve(aqi: pd.DataFrame, vector: str) -> pd.DataFrame:
    """One vector's rows of a ``score-sweep`` table: overall category, primary layer, by lambda."""
    rows = aqi[(aqi["vector"] == vector) & aqi["primary"] & (aqi["category"] == "overall")]
    return rows.sort_values("lam")


def best_in_bound(curve: pd.DataFrame, cost: pd.DataFrame | None, max_kl: float,
                  max_repetition_increase: float) -> LambdaChoice:
    """:func:`driftlib.stats.selection.best_lambda` of one curve (``lam``, ``aqi``) with its cost table
    (``lam``, ``kl``, ``repetition``): the KL bound, and repetition counted above lambda 0's. With
    ``cost`` None (an uncosted control) every lambda is inside: the highest AQI wins."""
    lams = curve["lam"].tolist()
    if cost is None:
        return best_lambda(lams, curve["aqi"].tolist(), np.zeros(len(lams)), 0.0)
    merged = curve[["lam"]].merge(cost, on="lam", how="left")
    rep0 = merged.loc[merged["lam"] == 0, "repetition"]
    increase = merged["repetition"] - (float(rep0.iloc[0]) if len(rep0) else np.nan)
    costs = np.column_stack([merged["kl"].to_numpy(float), increase.to_numpy(float)])
    return best_lambda(lams, curve["aqi"].tolist(), costs, [max_kl, max_repetition_increase])


def states_at(arrays: dict, key: str, lambdas: list[float], lam: float, layer_index: int, path: str | Path) -> np.ndarray:
    """Hidden states ``[n, d]`` of one swept vector at one lambda and measurement-layer index."""
    if key not in arrays:
        raise ArtifactError(f"{path}: no tensor {key!r}; re-run the rule that writes it")
    return arrays[key][lambdas.index(lam), :, layer_index, :]
