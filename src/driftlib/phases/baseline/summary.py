"""Phase 1 summary: gather every model's AQI table, choose the baseline model, draw the plots.

The baseline model is the aligned variant with the highest overall AQI at the primary
measurement layer. When its interval overlaps the runner-up's, the choice is reported as not
separable from the runner-up (the order could flip under resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.core.artifacts import read_table, write_json, write_table
from driftlib.core.errors import ArtifactError
from driftlib.phases.baseline.scoring import DESCRIPTIVE_BELOW
from driftlib.stats.selection import choose_baseline

SUMMARY_COLUMNS = ["model", "variant", "layer", "layer_spec", "primary", "category", "n", "n_safe",
                   "n_unsafe", "chi", "xb", "eta2", "aqi", "ci_low", "ci_high", "null_mean",
                   "null_q95", "p_value", "defined"]


def collect_tables(tables: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-variant AQI tables (written by ``driftlib score``)."""
    frames = [read_table(t, columns=SUMMARY_COLUMNS, producer="score_aqi")[0] for t in tables]
    if not frames:
        raise ArtifactError("no AQI tables given")
    return pd.concat(frames, ignore_index=True)


def aligned_vs_base(summary: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Aligned minus base, per model (with a base variant), layer and category.

    The difference's standard error treats the two AQIs as independent (``sqrt(se_a^2 + se_b^2)``,
    :func:`driftlib.stats.power.independent_se`; they are read from different models, on the same
    prompts, so a paired resampling would be tighter); ``mde`` is the smallest difference that
    could have been resolved at 80% power, and ``resolvable`` says whether ``|difference| >= mde``.
    ``descriptive`` marks per-axiom rows too small for a claim; the probe AUCs are carried when the
    tables have them.
    """
    from driftlib.stats.power import independent_se, minimum_detectable_effect

    keys = ["model", "layer", "category"]
    carry = ["aqi", "se", "ci_low", "ci_high", "n_safe", "n_unsafe"] + [c for c in ("probe_auc",) if c in summary]
    base = summary[summary["variant"] == "base"][keys + carry]
    aligned = summary[summary["variant"] == "aligned"][keys + carry + ["primary"]]
    both = aligned.merge(base, on=keys, suffixes=("_aligned", "_base"))
    rows = []
    for r in both.to_dict("records"):
        se = independent_se(r["se_aligned"], r["se_base"])
        mde = minimum_detectable_effect(se, alpha=1 - confidence)
        diff = r["aqi_aligned"] - r["aqi_base"]
        row = {**{k: r[k] for k in keys}, "primary": bool(r["primary"]), "aqi_base": r["aqi_base"],
               "aqi_aligned": r["aqi_aligned"], "difference": diff, "se": se, "mde": mde,
               "resolvable": bool(abs(diff) >= mde),
               "descriptive": bool(r["category"] != "overall"
                                   and min(r["n_safe_aligned"], r["n_unsafe_aligned"]) < DESCRIPTIVE_BELOW)}
        if "probe_auc_aligned" in r:
            row.update(probe_auc_base=r["probe_auc_base"], probe_auc_aligned=r["probe_auc_aligned"])
        rows.append(row)
    return pd.DataFrame(rows)


def behaviour_table(answers: Sequence[str | Path], confidence: float = 0.95) -> pd.DataFrame:
    """Refusal on unsafe prompts and over-refusal on safe ones, per model, variant and axiom (and
    overall), with Wilson intervals (:func:`driftlib.stats.behaviour.refusal_rates`), from the
    ``answer`` tables."""
    from driftlib.stats.behaviour import refusal_rates

    frames = []
    for path in answers:
        df = read_table(path, columns=["model", "variant", "axiom", "safety_label", "refused"], producer="answer_prompts")[0]
        rates = refusal_rates(df["refused"].to_numpy(bool), df["safety_label"].to_numpy(), df["axiom"].to_numpy(),
                              confidence=confidence)
        rates.insert(0, "variant", str(df["variant"].iloc[0]))
        rates.insert(0, "model", str(df["model"].iloc[0]))
        frames.append(rates)
    if not frames:
        raise ArtifactError("no answer tables given")
    return pd.concat(frames, ignore_index=True)


def summarize_baseline(tables: Sequence[str | Path], out_dir: str | Path,
                       answers: Sequence[str | Path] = ()) -> dict:
    """Write ``aqi_summary.parquet`` / ``.csv``, ``baseline.json``, ``aligned_vs_base.parquet`` /
    ``.csv`` (:func:`aligned_vs_base`) and the two plots into ``out_dir``; with ``answers``, also
    ``behaviour.parquet`` / ``.csv`` (:func:`behaviour_table`) and ``refusal.png``."""
    from driftlib.phases.baseline import plots

    out = Path(out_dir)
    summary = collect_tables(tables)
    write_table(summary, out / "aqi_summary.parquet")
    readable = summary.copy()
    for col in ("aqi", "ci_low", "ci_high", "null_mean", "null_q95"):
        readable[col] = readable[col].round(3)
    write_table(readable, out / "aqi_summary.csv")
    choice = choose_baseline(summary)
    write_json(choice, out / "baseline.json")
    if "se" in summary:
        comparison = aligned_vs_base(summary)
        write_table(comparison, out / "aligned_vs_base.parquet")
        write_table(comparison.round(4), out / "aligned_vs_base.csv")
    if answers:
        behaviour = behaviour_table(answers)
        write_table(behaviour, out / "behaviour.parquet")
        write_table(behaviour.round(4), out / "behaviour.csv")
        plots.refusal_rates(behaviour[behaviour["axiom"] == "overall"], out / "refusal.png")
    primary = summary[summary["primary"]]
    plots.aqi_overall_bars(primary[primary["category"] == "overall"], out / "aqi_overall.png",
                           baseline=choice.get("baseline"))
    plots.aqi_heatmap(primary, out / "aqi_heatmap.png")
    return choice


__all__ = ["SUMMARY_COLUMNS", "aligned_vs_base", "behaviour_table", "collect_tables", "summarize_baseline"]
