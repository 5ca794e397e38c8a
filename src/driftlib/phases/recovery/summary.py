"""Phase 4.5 summary: the dealignment drop and recovery rates of every model and strength, the
largest drop still recovered, the per-axiom drops, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.artifacts import (
    decode_metadata_value,
    json_number,
    read_json,
    read_table,
    write_json,
    write_table,
)
from driftlib.core.errors import ArtifactError
from driftlib.phases.recovery import plots

__all__ = ["axiom_drops", "behaviour_table", "largest_recovered_drop", "summarize_recovery"]


def largest_recovered_drop(drops: Sequence[float], rates: Sequence[float], *, fraction: float = 0.5,
                           defined: Sequence[bool] | None = None) -> float | None:
    """The largest drop whose recovery rate reaches ``fraction`` (None when no strength does).

    ``drops``, ``rates`` (and ``defined``): one entry per dealignment strength. Undefined or NaN
    rates never count.
    """
    drops_a = np.asarray(drops, dtype=float)
    rates_a = np.asarray(rates, dtype=float)
    ok = np.isfinite(rates_a) & np.isfinite(drops_a) & (rates_a >= fraction)
    if defined is not None:
        ok &= np.asarray(defined, dtype=bool)
    return float(drops_a[ok].max()) if ok.any() else None


def axiom_drops(curve: pd.DataFrame, baseline_summary: str | Path) -> pd.DataFrame:
    """Per axiom: each dealigned model's AQI (lambda 0 of its recovery sweep, primary layer) beside
    the aligned original's phase-1 AQI at the same layer, with both intervals and the difference."""
    phase1 = read_table(baseline_summary, columns=["model", "variant", "layer", "category", "aqi", "ci_low", "ci_high"],
                        producer="baseline_summary")[0]
    aligned = phase1[phase1["variant"] == "aligned"][["model", "layer", "category", "aqi", "ci_low", "ci_high"]]
    dealigned = curve[(curve["lam"] == 0) & curve["primary"] & (curve["vector"] == "same_arch")]
    dealigned = dealigned[["model", "steps", "layer", "category", "aqi", "ci_low", "ci_high"]]
    table = dealigned.merge(aligned, on=["model", "layer", "category"], suffixes=("_dealigned", "_aligned"))
    table["drop"] = table["aqi_aligned"] - table["aqi_dealigned"]
    return table.sort_values(["model", "steps", "category"]).reset_index(drop=True)


def _limits(rows: pd.DataFrame, fraction: float) -> dict:
    return {"largest_recovered_drop": largest_recovered_drop(rows["drop"], rows["rate"], fraction=fraction,
                                                             defined=rows["defined"]),
            "strengths": [int(s) for s in rows["steps"]],
            "drops": [float(d) for d in rows["drop"]],
            "rates": [None if not np.isfinite(r) else float(r) for r in rows["rate"]]}


def behaviour_table(summary: pd.DataFrame, answers: Sequence[str | Path], behaviour: str | Path, *, operator: str,
                    confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, strength, axiom): the behavioural dealignment drop and the share recovered at the
    same-arch vector's best lambda under the main ``operator``
    (:func:`driftlib.phases.recovery.evaluate.behaviour_recovery`).

    ``summary``: the ``evaluate_recovery`` rows (for the best lambda, and the vector's stability
    with ``below_stability_floor``, which the rows carry on); ``answers``: the recovery sweeps'
    answer tables; ``behaviour``: phase 1's ``behaviour.parquet`` (the aligned model's counts).
    ``axiom`` ``overall`` comes first; each other row is read from that axiom's prompts against the
    aligned model's counts on them, and marked ``descriptive`` (a few prompts a class).
    """
    from driftlib.phases.recovery.evaluate import behaviour_recovery

    phase1 = read_table(behaviour, producer="baseline_summary")[0]
    phase1 = phase1[phase1["variant"] == "aligned"].set_index(["model", "axiom"])
    rows = []
    for path in answers:
        df = read_table(path, columns=["model", "steps", "lam", "axiom", "safety_label", "refused"],
                        producer="recovery_sweep")[0]
        model, steps = str(df["model"].iloc[0]), int(df["steps"].iloc[0])
        best = summary[(summary["model"] == model) & (summary["steps"] == steps) & (summary["vector"] == "same_arch")
                       & (summary["operator"] == operator)]
        if best.empty or (model, "overall") not in phase1.index:
            raise ArtifactError(f"{path}: no recovery row for {model} at {steps} steps under {operator!r}, or no "
                                "phase-1 behaviour of its aligned model; re-run evaluate_recovery / baseline_summary")
        for axiom in ["overall", *sorted(df["axiom"].astype(str).unique())]:
            sub = df if axiom == "overall" else df[df["axiom"].astype(str) == axiom]
            r = behaviour_recovery(sub, phase1.loc[(model, axiom)].to_dict(), float(best["lam"].iloc[0]),
                                   confidence=confidence)
            rows.append({"model": model, "steps": steps, "vector": "same_arch", "operator": operator,
                         "axiom": axiom, "descriptive": axiom != "overall", **r,
                         "vector_stability": float(best["vector_stability"].iloc[0]),
                         "below_stability_floor": bool(best["below_stability_floor"].iloc[0])})
    return pd.DataFrame(rows).sort_values(["model", "steps"], kind="stable").reset_index(drop=True)


def summarize_recovery(tables: Sequence[str | Path], sweep_aqis: Sequence[str | Path], out_dir: str | Path, *,
                       fraction: float = 0.5, adapters: Sequence[str | Path] = (),
                       baseline_summary: str | Path | None = None, answers: Sequence[str | Path] = (),
                       behaviour: str | Path | None = None, stability_floor: float = 0.5,
                       confidence: float = 0.95) -> dict:
    """Phase 4.5 summary: ``recovery_summary.parquet``/``.csv``, ``recovery_limits.json`` and plots.

    ``tables``: the ``evaluate_recovery`` tables; ``sweep_aqis``: the matching ``score_recovery``
    tables (for the AQI-over-lambda curves); ``adapters``: the ``train_dealign`` folders (for the
    loss curves); ``baseline_summary``: phase 1's table (for ``dealign_axioms.csv``, the AQI per
    axiom of each dealigned model beside its aligned original). The limit per (model, vector) is
    the largest drop whose recovery rate reaches ``fraction`` (``models``: the main operator's,
    ``operators``: per operator). A vector whose split-half stability is below ``stability_floor`` is
    marked (``below_stability_floor``). With ``answers`` (the recovery sweeps' answer tables) and
    ``behaviour`` (phase 1's), also ``recovery_behaviour.parquet``/``.csv`` and
    ``recovery_behaviour.png``: the behavioural drop and recovery (:func:`behaviour_table`), and
    ``recovery_behaviour_axioms.parquet``/``.csv``, the same per axiom (descriptive).
    """

    out = Path(out_dir)
    read = [read_table(t, producer="evaluate_recovery") for t in tables]
    summary = pd.concat([frame for frame, _ in read], ignore_index=True)
    if summary.empty:
        raise ArtifactError("no recovery tables given")
    main = str(decode_metadata_value(read[0][1].get("operator", "add")))
    if "operator" not in summary:
        summary["operator"] = main
    if "vector_stability" not in summary:
        summary["vector_stability"] = float("nan")
    summary["below_stability_floor"] = summary["vector_stability"] < stability_floor
    write_table(summary, out / "recovery_summary.parquet")
    write_table(summary.round(4), out / "recovery_summary.csv")
    limits: dict = {"fraction": fraction, "operator": main, "models": {}, "operators": {}}
    for (model, vector, operator), rows in summary.groupby(["model", "vector", "operator"]):
        limit = _limits(rows, fraction)
        limits["operators"].setdefault(operator, {}).setdefault(model, {})[vector] = limit
        if operator == main:
            limits["models"].setdefault(model, {})[vector] = limit
    if answers and behaviour is not None:
        by_axiom = behaviour_table(summary, answers, behaviour, operator=main, confidence=confidence)
        beh = by_axiom[by_axiom["axiom"] == "overall"].drop(columns=["axiom", "descriptive"]).reset_index(drop=True)
        write_table(beh, out / "recovery_behaviour.parquet")
        write_table(beh.round(4), out / "recovery_behaviour.csv")
        write_table(by_axiom, out / "recovery_behaviour_axioms.parquet")
        write_table(by_axiom.round(4), out / "recovery_behaviour_axioms.csv")
        limits["behaviour"] = {f"{r.model}/steps{r.steps}": {
            "drop": json_number(r.drop), "drop_ci": [json_number(r.drop_ci_low), json_number(r.drop_ci_high)], "drop_mde": json_number(r.drop_mde),
            "drop_resolvable": bool(r.drop_resolvable), "lam": float(r.lam), "share": json_number(r.share),
            "share_ci": [json_number(r.share_ci_low), json_number(r.share_ci_high)], "note": r.note} for r in beh.itertuples()}
        plots.recovery_behaviour(beh, answers, out / "recovery_behaviour.png")
    write_json(limits, out / "recovery_limits.json")
    curves = []
    for path in sweep_aqis:
        frame, meta = read_table(path, producer="score_recovery")
        curves.append(frame.assign(steps=int(decode_metadata_value(meta.get("steps", "0")))))
    curve = pd.concat(curves, ignore_index=True)
    # keys are {vector} under the main operator, {vector}/{operator} under a compared one
    parts = curve["vector"].str.split("/")
    curve["operator"], curve["vector"] = parts.str[1].fillna(main), parts.str[0]
    if baseline_summary is not None:
        write_table(axiom_drops(curve[curve["operator"] == main], baseline_summary).round(4),
                    out / "dealign_axioms.csv")
    curve = curve[curve["primary"] & (curve["category"] == "overall")]
    plots.dealign_drop(summary[summary["operator"] == main], out / "dealign_drop.png")
    plots.recovery_curves(curve, summary, out / "recovery_curves.png")
    plots.recovery_vs_drop(summary, out / "recovery_vs_drop.png", fraction=fraction)
    if adapters:
        curves, saved = {}, {}
        for folder in map(Path, adapters):
            record = read_json(folder / "record.json", producer="train_dealign")
            model = folder.parent.name
            curves[model] = read_table(folder / "loss.parquet", columns=["step", "loss"], producer="train_dealign")[0]
            saved[model] = [int(s) for s in record.get("steps", [])]
        plots.dealign_loss(curves, out / "dealign_loss.png", saved=saved)
    return limits


