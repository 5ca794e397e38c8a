"""Phase 2 summary: every model's per-layer vector figures in one table, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.phases.vectors import plots

__all__ = ["summarize_vectors"]


def summarize_vectors(tables: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Concatenate per-model statistics into ``vector_stats.parquet``/``.csv`` and draw the plots."""
    from driftlib.core.artifacts import read_table, write_table

    frames = [read_table(t, columns=["model", "kind", "layer", "relative_norm", "stability"],
                         producer="compute_vectors")[0] for t in tables]
    stats = pd.concat(frames, ignore_index=True)
    out = Path(out_dir)
    write_table(stats, out / "vector_stats.parquet")
    write_table(stats.round(4), out / "vector_stats.csv")
    plots.vector_layers(stats, out / "vector_layers.png")
    return stats
