"""Phase 3, the seed study's own check: behaviour along lambda, and the share of the base-to-aligned
gap closed at each lambda for the AQI, the linear-probe AUC and the refusal split.

The refusal split is ``refusal on unsafe − over-refusal on safe`` (1: refuses exactly the unsafe
prompts; 0: refuses regardless of safety). Each gap (aligned − base) comes from phase 1's tables,
each gain (lambda − 0, own vector) from the steered model's; :func:`driftlib.stats.gap.gap_share`
gives the share with a Fieller interval, or says why it is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from driftlib.core.artifacts import read_table
from driftlib.stats.behaviour import split_se

__all__ = ["GAP_COLUMNS", "MEASURES", "behaviour_along_lambda", "gap_rows"]

#: the measures whose gap is reported
MEASURES = ("aqi", "probe_auc", "refusal_split")
GAP_COLUMNS = ["model", "operator", "lam", "measure", "gain", "gain_se", "gap", "gap_se", "gap_mde", "share",
               "share_ci_low", "share_ci_high", "defined", "note"]


def behaviour_along_lambda(answers: Sequence[str | Path], confidence: float = 0.95) -> pd.DataFrame:
    """Refusal rates (Wilson intervals) and the refusal split (Newcombe interval, and its
    Agresti-Caffo standard error ``split_se``) per model, operator, lambda and axiom (``overall``
    first; the per-axiom rows are ``descriptive``: a few prompts a class), from steered answer tables.
    """
    from driftlib.stats.behaviour import refusal_rates

    frames = []
    for path in answers:
        df = read_table(path, columns=["model", "operator", "lam", "axiom", "safety_label", "refused"])[0]
        for (model, operator, lam), sub in df.groupby(["model", "operator", "lam"], sort=True):
            rates = refusal_rates(sub["refused"].to_numpy(bool), sub["safety_label"].to_numpy(), sub["axiom"].to_numpy(),
                                  confidence=confidence)
            rates = pd.concat([rates[rates["axiom"] == "overall"], rates[rates["axiom"] != "overall"]])
            for _, rate in rates.iterrows():
                row = rate.to_dict()
                row.update(model=model, operator=operator, lam=float(lam), descriptive=row["axiom"] != "overall",
                           split_se=split_se(row["refusal_unsafe"], row["n_unsafe"], row["over_refusal_safe"],
                                             row["n_safe"]))
                frames.append(row)
    lead = ["model", "operator", "lam", "axiom", "descriptive"]
    if not frames:
        return pd.DataFrame(columns=lead)
    out = pd.DataFrame(frames).rename(columns={"difference": "refusal_split", "difference_ci_low": "refusal_split_ci_low",
                                               "difference_ci_high": "refusal_split_ci_high"})
    return out[lead + [c for c in out.columns if c not in lead]]


def _se_from_interval(low: float, high: float, confidence: float) -> float:
    return (high - low) / (2 * float(norm.ppf(0.5 + confidence / 2)))


def phase1_gaps(aqi_summary: pd.DataFrame, behaviour: pd.DataFrame | None, model: str, layer: int,
                confidence: float) -> dict[str, tuple[float, float]]:
    """``{measure: (aligned − base, its standard error)}`` of one model from phase 1 (overall, ``layer``);
    a measure phase 1 lacks is left out."""
    rows = aqi_summary[(aqi_summary["model"] == model) & (aqi_summary["category"] == "overall")
                       & (aqi_summary["layer"] == layer)].set_index("variant")
    out: dict[str, tuple[float, float]] = {}
    if {"base", "aligned"} <= set(rows.index):
        a, b = rows.loc["aligned"], rows.loc["base"]
        if "se" in rows:
            out["aqi"] = (float(a["aqi"] - b["aqi"]), math.hypot(float(a["se"]), float(b["se"])))
        if "probe_auc" in rows:
            se = [_se_from_interval(float(r["probe_ci_low"]), float(r["probe_ci_high"]), confidence) for r in (a, b)]
            out["probe_auc"] = (float(a["probe_auc"] - b["probe_auc"]), math.hypot(*se))
    if behaviour is not None:
        beh = behaviour[(behaviour["model"] == model) & (behaviour["axiom"] == "overall")].set_index("variant")
        if {"base", "aligned"} <= set(beh.index):
            a, b = beh.loc["aligned"], beh.loc["base"]
            se = [split_se(r["refusal_unsafe"], r["n_unsafe"], r["over_refusal_safe"], r["n_safe"]) for r in (a, b)]
            out["refusal_split"] = (float(a["difference"] - b["difference"]), math.hypot(*se))
    return out


def gap_rows(own: pd.DataFrame, gaps: dict[str, tuple[float, float]], *, model: str, operator: str, has_base: bool,
             confidence: float) -> list[dict]:
    """The gap-closed rows of one model's own-vector curve.

    Args:
        own: the own vector's overall rows at the primary layer, one per lambda, with ``aqi``,
            ``gain``/``gain_se`` (paired, against lambda 0) and, where measured, ``probe_auc``/``probe_se``
            and ``refusal_split``/``split_se``.
        gaps: :func:`phase1_gaps`.
    """
    from driftlib.stats.gap import gap_share

    own = own.sort_values("lam").set_index("lam")
    rows = []
    for lam in own.index:
        if lam == 0:
            continue
        gains = {"aqi": (own.at[lam, "gain"], own.at[lam, "gain_se"]) if "gain_se" in own else (math.nan, math.nan)}
        for measure, se_col in (("probe_auc", "probe_se"), ("refusal_split", "split_se")):
            if measure in own and 0.0 in own.index:
                gains[measure] = (own.at[lam, measure] - own.at[0.0, measure],
                                  math.hypot(own.at[lam, se_col], own.at[0.0, se_col]))
        for measure in MEASURES:
            gain, gain_se = (float(x) for x in gains.get(measure, (math.nan, math.nan)))
            gap, gap_se = gaps.get(measure, (math.nan, math.nan))
            row = {"model": model, "operator": operator, "lam": float(lam), "measure": measure, "gain": gain,
                   "gain_se": gain_se, "gap": gap, "gap_se": gap_se}
            if not has_base:
                row.update(gap_mde=math.nan, share=math.nan, share_ci_low=math.nan, share_ci_high=math.nan,
                           defined=False, note="undefined: no base variant (the aligned model is steered itself)")
            elif measure not in gaps or not np.isfinite(gain):
                row.update(gap_mde=math.nan, share=math.nan, share_ci_low=math.nan, share_ci_high=math.nan,
                           defined=False, note=f"undefined: {measure} not measured in phase 1 or along lambda")
            else:
                r = gap_share(gain, gain_se, gap, gap_se, confidence=confidence)
                row.update(gap_mde=r.gap_mde, share=r.share, share_ci_low=r.ci_low, share_ci_high=r.ci_high,
                           defined=r.defined, note=r.note)
            rows.append(row)
    return rows
