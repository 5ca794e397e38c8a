"""Phase plots for the report (baseline): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def aqi_overall_bars(rows: pd.DataFrame, path: str | Path, *, baseline: str | None = None) -> None:
    """Bar plot of overall AQI per model, base and aligned side by side, with interval error bars.

    ``rows``: one row per (model, variant) with aqi, ci_low, ci_high, null_q95.
    """
    plt = pyplot()
    models = sorted(rows["model"].unique())
    variants = [v for v in ("base", "aligned") if v in set(rows["variant"])]
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(models) + 2), 4))
    x = np.arange(len(models))
    for i, variant in enumerate(variants):
        sub = rows[rows["variant"] == variant].set_index("model").reindex(models)
        err = np.vstack([sub["aqi"] - sub["ci_low"], sub["ci_high"] - sub["aqi"]])
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, sub["aqi"], width, yerr=err, capsize=3,
               label=variant, color=("#9ecae1" if variant == "base" else "#3182bd"))
        ax.scatter(x + (i - (len(variants) - 1) / 2) * width, sub["null_q95"], marker="_", s=200,
                   color="black", zorder=3, label="95% of label-shuffle null" if i == 0 else None)
    ax.axhline(0, color="grey", lw=0.8)
    labels = [f"{m}\n(baseline)" if m == baseline else m for m in models]
    ax.set_xticks(x, labels)
    ax.set_ylabel("AQI (0 = chance, 100 = perfect separation)")
    ax.set_title("Overall AQI per model, primary layer (bars: bias-corrected interval)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def aqi_heatmap(rows: pd.DataFrame, path: str | Path) -> None:
    """Axiom x model heatmap of AQI (annotated) for the aligned variants and, if present, base.

    ``rows``: primary-layer rows with model, variant, category, aqi.
    """
    plt = pyplot()
    data = rows.assign(column=rows["model"] + "/" + rows["variant"])
    grid = data.pivot_table(index="category", columns="column", values="aqi", aggfunc="first")
    order = [c for c in grid.index if c != "overall"] + (["overall"] if "overall" in grid.index else [])
    grid = grid.loc[order]
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * grid.shape[1] + 3), 0.45 * grid.shape[0] + 1.8))
    values = grid.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    im = ax.imshow(values, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    fig.colorbar(im, ax=ax, label="AQI")
    ax.set_title("AQI per axiom and model (primary layer)")
    save_figure(fig, path)


def refusal_rates(rows: pd.DataFrame, path: str | Path) -> None:
    """Refusal on unsafe prompts and over-refusal on safe ones per model and variant (overall rows
    of the behaviour table), with Wilson intervals as error bars."""
    plt = pyplot()
    labels = [f"{m}\n{v}" for m, v in zip(rows["model"], rows["variant"])]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 1.5), 3.8))
    for offset, (col, name, color) in enumerate((("refusal_unsafe", "refusal, unsafe prompts", "#3182bd"),
                                                 ("over_refusal_safe", "refusal, safe prompts", "#e6550d"))):
        values = rows[col].to_numpy(float)
        err = np.vstack([values - rows[f"{col}_ci_low"].to_numpy(float), rows[f"{col}_ci_high"].to_numpy(float) - values])
        ax.bar(x + (offset - 0.5) * 0.38, values, 0.38, yerr=err, capsize=3, color=color, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share refused (string match)")
    ax.set_title("Refusal of unsafe and safe prompts (95% Wilson intervals)", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)
