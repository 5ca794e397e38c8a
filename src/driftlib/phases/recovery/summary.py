"""Phase 4.5 summary: the dealignment drop and recovery rates of every model and strength, the
largest drop still recovered, the per-axiom drops, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.artifacts import (
    decode_metadata_value,
    read_json,
    read_table,
    write_json,
    write_table,
)
from driftlib.core.errors import ArtifactError
from driftlib.phases.recovery import plots

__all__ = ["axiom_drops", "largest_recovered_drop", "summarize_recovery"]


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


def summarize_recovery(tables: Sequence[str | Path], sweep_aqis: Sequence[str | Path], out_dir: str | Path, *,
                       fraction: float = 0.5, adapters: Sequence[str | Path] = (),
                       baseline_summary: str | Path | None = None) -> dict:
    """Phase 4.5 summary: ``recovery_summary.parquet``/``.csv``, ``recovery_limits.json`` and plots.

    ``tables``: the ``evaluate_recovery`` tables; ``sweep_aqis``: the matching ``score_recovery``
    tables (for the AQI-over-lambda curves); ``adapters``: the ``train_dealign`` folders (for the
    loss curves); ``baseline_summary``: phase 1's table (for ``dealign_axioms.csv``, the AQI per
    axiom of each dealigned model beside its aligned original). The limit per (model, vector) is
    the largest drop whose recovery rate reaches ``fraction``.
    """

    out = Path(out_dir)
    summary = pd.concat([read_table(t, producer="evaluate_recovery")[0] for t in tables], ignore_index=True)
    if summary.empty:
        raise ArtifactError("no recovery tables given")
    write_table(summary, out / "recovery_summary.parquet")
    write_table(summary.round(4), out / "recovery_summary.csv")
    limits: dict = {"fraction": fraction, "models": {}}
    for (model, vector), rows in summary.groupby(["model", "vector"]):
        limits["models"].setdefault(model, {})[vector] = {
            "largest_recovered_drop": largest_recovered_drop(rows["drop"], rows["rate"], fraction=fraction,
                                                             defined=rows["defined"]),
            "strengths": [int(s) for s in rows["steps"]],
            "drops": [float(d) for d in rows["drop"]],
            "rates": [None if not np.isfinite(r) else float(r) for r in rows["rate"]],
        }
    write_json(limits, out / "recovery_limits.json")
    curves = []
    for path in sweep_aqis:
        frame, meta = read_table(path, producer="score_recovery")
        curves.append(frame.assign(steps=int(decode_metadata_value(meta.get("steps", "0")))))
    curve = pd.concat(curves, ignore_index=True)
    if baseline_summary is not None:
        write_table(axiom_drops(curve, baseline_summary).round(4), out / "dealign_axioms.csv")
    curve = curve[curve["primary"] & (curve["category"] == "overall")]
    plots.dealign_drop(summary, out / "dealign_drop.png")
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
