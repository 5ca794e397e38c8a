"""Phase 3, the steering operators side by side: for each model and operator, the AQI of the prompts
along the lambda grid with the model's own vector (and the random control), the best lambda inside
the cost bound, the gain over lambda 0, and, for ``conditional``, how well the condition picks
the unsafe prompts (its accuracy on the evaluation prompts, with a Wilson interval).

What to expect (docs/steering.md): ``add`` cannot move a shift-invariant measure at the injection
layer and only drifts it towards the injection layer's value downstream; ``conditional`` moves the
prompts its condition selects, so its gain is bought by the condition's accuracy; ``ablate``
removes one direction from every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.artifacts import read_table, write_table
from driftlib.core.errors import ArtifactError
from driftlib.stats.selection import best_in_bound, overall_curve

__all__ = ["COMPARISON_COLUMNS", "compare_operators"]

#: one row per (model, operator)
COMPARISON_COLUMNS = [
    "model", "operator", "aqi_0", "aqi_0_ci_low", "aqi_0_ci_high", "best_lam", "aqi_best", "aqi_best_ci_low",
    "aqi_best_ci_high", "gain", "gain_ci_low", "gain_ci_high", "gain_p", "gain_mde", "gain_resolvable",
    "random_aqi_at_best", "max_aqi", "max_aqi_lam",
    "condition_accuracy", "condition_ci_low", "condition_ci_high", "condition_n",
    "gap", "gap_share", "gap_share_ci_low", "gap_share_ci_high", "gap_note", "note",
]


def _conditions(paths: Sequence[str | Path]) -> dict[str, dict]:
    from driftlib.stats.condition import load_condition

    out = {}
    for path in paths:
        _, meta = load_condition(path)
        out[str(meta.get("model", ""))] = meta
    return out


def _flag(value: object) -> bool:
    """A bool column's value (a missing one, NaN after a merge, is False)."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


def _gap_share(row: dict, best: pd.Series, aqi_summary: pd.DataFrame | None, confidence: float) -> dict:
    """The share of the model's phase-1 AQI gap (aligned − base, at the primary layer) that the
    gain at the best lambda closes (:func:`driftlib.stats.gap.gap_share`, Fieller interval)."""
    from driftlib.phases.same_arch.gaps import phase1_gaps
    from driftlib.stats.gap import gap_share

    nan = {"gap": np.nan, "gap_share": np.nan, "gap_share_ci_low": np.nan, "gap_share_ci_high": np.nan}
    if aqi_summary is None:
        return {**nan, "gap_note": "undefined: no phase-1 table given"}
    gaps = phase1_gaps(aqi_summary, None, row["model"], int(best["layer"]), confidence)
    if "aqi" not in gaps:
        return {**nan, "gap_note": "undefined: no base and aligned AQI in phase 1"}
    gap, gap_se = gaps["aqi"]
    if row["best_lam"] == 0.0:
        return {**nan, "gap": gap, "gap_share": 0.0, "gap_note": "lambda 0: no gain"}
    r = gap_share(float(row["gain"]), float(best.get("gain_se", np.nan)), gap, gap_se, confidence=confidence)
    return {"gap": gap, "gap_share": r.share, "gap_share_ci_low": r.ci_low, "gap_share_ci_high": r.ci_high,
            "gap_note": r.note}


def _row(aqi: pd.DataFrame, cost: pd.DataFrame, conditions: dict[str, dict], max_kl: float,
         max_repetition_increase: float, aqi_summary: pd.DataFrame | None = None,
         confidence: float = 0.95) -> tuple[dict, pd.DataFrame]:
    model, operator = str(aqi["model"].iloc[0]), str(aqi["operator"].iloc[0])
    own, rnd = overall_curve(aqi, "own"), overall_curve(aqi, "random")
    choice = best_in_bound(own, cost[cost["vector"] == "own"], max_kl, max_repetition_increase)
    at = own.set_index("lam")
    zero = at.loc[0.0]
    best_lam = choice.lam if choice.lam is not None else 0.0
    best = at.loc[best_lam]
    top = own.loc[own["aqi"].idxmax()] if own["aqi"].notna().any() else None
    cond = conditions.get(model, {}) if operator == "conditional" else {}
    row = {
        "model": model, "operator": operator, "aqi_0": zero["aqi"], "aqi_0_ci_low": zero["ci_low"],
        "aqi_0_ci_high": zero["ci_high"], "best_lam": best_lam, "aqi_best": best["aqi"],
        "aqi_best_ci_low": best["ci_low"], "aqi_best_ci_high": best["ci_high"], "gain": best["aqi"] - zero["aqi"],
        # the paired comparison with lambda 0 on the same prompts (score-sweep's gain columns)
        "gain_ci_low": best.get("gain_ci_low", np.nan), "gain_ci_high": best.get("gain_ci_high", np.nan),
        "gain_p": best.get("gain_p", np.nan), "gain_mde": best.get("gain_mde", np.nan),
        "gain_resolvable": bool(best_lam != 0.0 and _flag(best.get("gain_resolvable"))),
        "random_aqi_at_best": float(rnd.set_index("lam")["aqi"].get(best_lam, np.nan)),
        "max_aqi": np.nan if top is None else top["aqi"], "max_aqi_lam": np.nan if top is None else top["lam"],
        "condition_accuracy": cond.get("condition_accuracy", np.nan),
        "condition_ci_low": cond.get("condition_ci_low", np.nan),
        "condition_ci_high": cond.get("condition_ci_high", np.nan), "condition_n": cond.get("condition_n", np.nan),
        "note": choice.note,
    }
    row.update(_gap_share(row, best, aqi_summary, confidence))
    curves = pd.concat([own.assign(vector="own"), rnd.assign(vector="random")], ignore_index=True)
    return row, curves[["model", "operator", "vector", "lam", "aqi", "ci_low", "ci_high"]]


def compare_operators(sweep_aqis: Sequence[str | Path], costs: Sequence[str | Path], conditions: Sequence[str | Path],
                      out_dir: str | Path, *, max_kl: float, max_repetition_increase: float,
                      aqi_summary: str | Path | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """``operator_comparison.parquet``/``.csv`` (:data:`COMPARISON_COLUMNS`), the curves
    (``operator_curves.parquet``) and ``operators.png`` (AQI against lambda per operator, one
    panel per model).

    Args:
        sweep_aqis: ``score-sweep`` tables of phase-3 sweeps, one per (model, operator).
        costs: their cost tables, in the same order.
        conditions: ``fit-condition`` files (for the conditional operator's accuracy).
        out_dir: where the files go.
        max_kl, max_repetition_increase: the capability-cost bound.
        aqi_summary: phase 1's ``aqi_summary.parquet``: with it, each row's ``gap_share`` is the share
            of the model's aligned − base AQI gap (primary layer) its gain at the best lambda closes,
            with a Fieller interval at ``confidence`` (``gap_note`` says why where it is undefined).
    """
    from driftlib.phases.same_arch import plots

    if len(sweep_aqis) != len(costs) or not sweep_aqis:
        raise ArtifactError(f"summarize-operators: {len(sweep_aqis)} AQI tables and {len(costs)} cost tables; "
                            "give one cost table per AQI table, in the same order")
    found = _conditions(conditions)
    phase1 = None if aqi_summary is None else read_table(
        aqi_summary, columns=["model", "variant", "category", "layer", "aqi", "se"], producer="baseline_summary")[0]
    rows, curves = [], []
    for aqi_path, cost_path in zip(sweep_aqis, costs):
        aqi = read_table(aqi_path, columns=["model", "operator", "vector", "lam", "category", "layer", "aqi", "ci_low",
                                            "ci_high", "primary", "gain", "gain_se"], producer="score_sweep")[0]
        cost = read_table(cost_path, columns=["vector", "lam", "kl", "repetition"], producer="capability_cost")[0]
        row, curve = _row(aqi, cost, found, max_kl, max_repetition_increase, phase1, confidence)
        rows.append(row)
        curves.append(curve)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS).sort_values(["model", "operator"]).reset_index(drop=True)
    curve = pd.concat(curves, ignore_index=True)
    out = Path(out_dir)
    write_table(table, out / "operator_comparison.parquet")
    write_table(table.round(4), out / "operator_comparison.csv")
    write_table(curve, out / "operator_curves.parquet")
    plots.operator_curves(curve, table, out / "operators.png")
    return table
