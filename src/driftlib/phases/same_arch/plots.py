"""Phase plots for the report (same-arch): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def steering_curve(rows: pd.DataFrame, cost: pd.DataFrame, path: str | Path, *, target: float | None,
                   target_ci: tuple[float, float] | None, bounds: dict[str, float], title: str) -> None:
    """AQI against lambda for the model's own vector and the random control (with intervals),
    the aligned model's AQI as the target, and the capability cost on a second axis with the
    lambdas inside the cost bound shaded.

    ``rows``: overall-category rows with vector, lam, aqi, ci_low, ci_high.
    ``cost``: rows with vector, lam, kl, repetition, inside_bound.
    """
    plt = pyplot()
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
    save_figure(fig, path)


def steering_axioms(rows: pd.DataFrame, path: str | Path, *, title: str) -> None:
    """Per-axiom AQI against lambda for the model's own vector (one line per axiom)."""
    plt = pyplot()
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
    save_figure(fig, path)


#: a colour per steering operator
OPERATOR_COLORS = {"add": "#3182bd", "conditional": "#e6550d", "ablate": "#31a354", "ablate_add": "#756bb1"}


def operator_curves(curves: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> None:
    """AQI against lambda per steering operator (own vector, with intervals; the random control
    dashed), one panel per model; a conditional curve's label carries its condition's accuracy."""
    plt = pyplot()
    models = sorted(curves["model"].unique())
    cols = min(3, len(models))
    rows = int(np.ceil(len(models) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        for (operator, vector), sub in curves[curves["model"] == model].groupby(["operator", "vector"]):
            sub = sub.sort_values("lam")
            color = OPERATOR_COLORS.get(operator, "#636363")
            label = None
            if vector == "own":
                label = operator
                acc = table[(table["model"] == model) & (table["operator"] == operator)]["condition_accuracy"]
                if operator == "conditional" and len(acc) and np.isfinite(acc.iloc[0]):
                    label += f" (condition acc. {acc.iloc[0]:.2f})"
                ax.fill_between(sub["lam"], sub["ci_low"], sub["ci_high"], color=color, alpha=0.15)
            ax.plot(sub["lam"], sub["aqi"], color=color, ls="-" if vector == "own" else "--",
                    marker="o" if vector == "own" else None, ms=3, label=label)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("lambda")
        ax.set_ylabel("overall AQI")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("AQI against lambda per steering operator (dashed: random vector of the same norms)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def behaviour_along_lambda(steered: pd.DataFrame, phase1: pd.DataFrame | None, path: str | Path) -> None:
    """Refusal on unsafe prompts and over-refusal on safe prompts against lambda (Wilson intervals),
    one panel per model, with phase 1's aligned model as reference lines (and its base, dotted).

    ``steered``: :func:`driftlib.phases.same_arch.gaps.behaviour_along_lambda`'s rows;
    ``phase1``: phase 1's ``behaviour`` table (per model, variant and axiom), or None.
    """
    plt = pyplot()
    models = sorted(steered["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 0.8, 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        sub = steered[steered["model"] == model].sort_values("lam")
        for col, color, label in (("refusal_unsafe", "#de2d26", "refusal, unsafe"),
                                  ("over_refusal_safe", "#3182bd", "refusal, safe")):
            ax.plot(sub["lam"], sub[col], marker="o", color=color, label=label)
            ax.fill_between(sub["lam"], sub[f"{col}_ci_low"], sub[f"{col}_ci_high"], color=color, alpha=0.15)
            if phase1 is not None:
                ref = phase1[(phase1["model"] == model) & (phase1["axiom"] == "overall")].set_index("variant")
                for variant, ls in (("aligned", "--"), ("base", ":")):
                    if variant in ref.index:
                        ax.axhline(float(ref.at[variant, col]), color=color, ls=ls, lw=1)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("lambda")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("share of prompts refused")
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle("Behaviour under the own vector (dashed: aligned model, dotted: base model, phase 1)", fontsize=9)
    save_figure(fig, path)
