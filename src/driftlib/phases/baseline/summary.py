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


def summarize_baseline(tables: Sequence[str | Path], out_dir: str | Path) -> dict:
    """Write ``aqi_summary.parquet`` / ``.csv``, ``baseline.json`` and the two plots into ``out_dir``."""
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
    primary = summary[summary["primary"]]
    plots.aqi_overall_bars(primary[primary["category"] == "overall"], out / "aqi_overall.png",
                           baseline=choice.get("baseline"))
    plots.aqi_heatmap(primary, out / "aqi_heatmap.png")
    return choice


__all__ = ["SUMMARY_COLUMNS", "collect_tables", "summarize_baseline"]
