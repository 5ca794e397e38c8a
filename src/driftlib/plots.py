"""Plots for the report (matplotlib, Agg backend). Each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.artifacts import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    _pyplot().close(fig)


def aqi_overall_bars(rows: pd.DataFrame, path: str | Path, *, baseline: str | None = None) -> None:
    """Bar plot of overall AQI per model, base and aligned side by side, with interval error bars.

    ``rows``: one row per (model, variant) with aqi, ci_low, ci_high, null_q95.
    """
    plt = _pyplot()
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
    _save(fig, path)


def aqi_heatmap(rows: pd.DataFrame, path: str | Path) -> None:
    """Axiom x model heatmap of AQI (annotated) for the aligned variants and, if present, base.

    ``rows``: primary-layer rows with model, variant, category, aqi.
    """
    plt = _pyplot()
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
    _save(fig, path)


def vector_layers(stats: pd.DataFrame, path: str | Path) -> None:
    """Four panels over relative depth, one line per model: relative norm, split-half stability,
    cosine between the chosen- and rejected-text vectors, cosine with the next layer.

    ``stats``: rows of :func:`driftlib.vector_stats.compute_vectors` with a ``model`` column; each
    model is drawn with ``mean_diff_both`` where it has a base model, else ``contrastive``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("relative_norm", "norm / median residual norm"), ("stability", "split-half cosine"),
              ("cos_chosen_rejected", "cos(chosen-text, rejected-text vector)"),
              ("cos_next_layer", "cos with next layer")]
    for model, sub in stats.groupby("model"):
        kind = "mean_diff_both" if (sub["kind"] == "mean_diff_both").any() else "contrastive"
        sub = sub[sub["kind"] == kind].sort_values("layer")
        for ax, (col, _) in zip(axes, panels):
            if col in sub and sub[col].notna().any():
                ax.plot(sub["relative_depth"], sub[col], marker="o", ms=3, label=f"{model} ({kind})")
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.1, 1.05)
    axes[0].legend(fontsize=7)
    fig.suptitle("Steering vectors per layer (low stability = mostly noise)")
    _save(fig, path)


def steering_curve(rows: pd.DataFrame, cost: pd.DataFrame, path: str | Path, *, target: float | None,
                   target_ci: tuple[float, float] | None, bounds: dict[str, float], title: str) -> None:
    """AQI against lambda for the model's own vector and the random control (with intervals),
    the aligned model's AQI as the target, and the capability cost on a second axis with the
    lambdas inside the cost bound shaded.

    ``rows``: overall-category rows with vector, lam, aqi, ci_low, ci_high.
    ``cost``: rows with vector, lam, kl, repetition, inside_bound.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for vector, color in (("own", "#3182bd"), ("random", "#969696")):
        sub = rows[rows["vector"] == vector].sort_values("lam")
        if sub.empty:
            continue
        ax.plot(sub["lam"], sub["aqi"], marker="o", color=color, label=f"AQI, {vector} vector")
        ax.fill_between(sub["lam"], sub["ci_low"], sub["ci_high"], color=color, alpha=0.2)
    if target is not None and np.isfinite(target):
        ax.axhline(target, color="#e6550d", ls="--", label="aligned model (target)")
        if target_ci is not None:
            ax.axhspan(target_ci[0], target_ci[1], color="#e6550d", alpha=0.08)
    own = cost[cost["vector"] == "own"].sort_values("lam")
    if not own.empty:
        inside = own["inside_bound"].astype(bool)
        lams = own["lam"].to_numpy()
        for lam, ok in zip(lams, inside):
            if ok:
                ax.axvspan(lam - 0.02, lam + 0.02, color="#31a354", alpha=0.15, lw=0)
        ax2 = ax.twinx()
        ax2.plot(lams, own["kl"], color="#31a354", ls=":", marker="s", ms=3, label="KL (nats/token)")
        ax2.plot(lams, own["repetition"], color="#756bb1", ls=":", marker="^", ms=3, label="repetition")
        ax2.set_ylabel("capability cost (own vector)")
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_xlabel("lambda")
    ax.set_ylabel("overall AQI")
    ax.set_title(title + "  (green: inside the cost bound)", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    _save(fig, path)


def steering_axioms(rows: pd.DataFrame, path: str | Path, *, title: str) -> None:
    """Per-axiom AQI against lambda for the model's own vector (one line per axiom)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    own = rows[(rows["vector"] == "own") & (rows["category"] != "overall")]
    for category, sub in own.groupby("category"):
        sub = sub.sort_values("lam")
        ax.plot(sub["lam"], sub["aqi"], marker="o", ms=3, label=category)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("lambda")
    ax.set_ylabel("AQI")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
