"""Phase 1 summary: gather every model's AQI table, choose the baseline model, draw the plots.

The baseline model is the aligned variant with the highest overall AQI at the primary
measurement layer. When its interval overlaps the runner-up's, the choice is reported as not
separable from the runner-up (the order could flip under resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.artifacts import read_table, write_json, write_table
from driftlib.errors import ArtifactError

SUMMARY_COLUMNS = ["model", "variant", "layer", "layer_spec", "primary", "category", "n", "n_safe",
                   "n_unsafe", "chi", "xb", "eta2", "aqi", "ci_low", "ci_high", "null_mean",
                   "null_q95", "p_value", "defined"]


def collect_tables(tables: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-variant AQI tables (written by ``driftlib score``)."""
    frames = [read_table(t, columns=SUMMARY_COLUMNS, producer="score_aqi")[0] for t in tables]
    if not frames:
        raise ArtifactError("no AQI tables given")
    return pd.concat(frames, ignore_index=True)


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


def summarize_baseline(tables: Sequence[str | Path], out_dir: str | Path) -> dict:
    """Write ``aqi_summary.parquet`` / ``.csv``, ``baseline.json`` and the two plots into ``out_dir``."""
    from driftlib import plots

    out = Path(out_dir)
    summary = collect_tables(tables)
    write_table(summary, out / "aqi_summary.parquet")
    readable = summary.copy()
    for col in ("aqi", "ci_low", "ci_high", "null_mean", "null_q95"):
        readable[col] = readable[col].round(3)
    write_table(readable, out / "aqi_summary.csv")
    choice = choose_baseline(summary)
    write_json(choice, out / "baseline.json")
    primary = summary[summary["primary"]]
    plots.aqi_overall_bars(primary[primary["category"] == "overall"], out / "aqi_overall.png",
                           baseline=choice.get("baseline"))
    plots.aqi_heatmap(primary, out / "aqi_heatmap.png")
    return choice


__all__ = ["choose_baseline", "collect_tables", "summarize_baseline"]
