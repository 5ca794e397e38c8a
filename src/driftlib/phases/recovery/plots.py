"""Phase plots for the report (recovery): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def dealign_drop(summary: pd.DataFrame, path: str | Path) -> None:
    """AQI drop (aligned - dealigned) per model and dealignment strength, with intervals."""
    plt = pyplot()
    rows = summary.drop_duplicates(["model", "steps"]).sort_values(["model", "steps"])
    models = sorted(rows["model"].unique())
    strengths = sorted(rows["steps"].unique())
    width = 0.8 / max(len(strengths), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(models) + 2), 3.8))
    x = np.arange(len(models))
    for k, steps in enumerate(strengths):
        sub = rows[rows["steps"] == steps].set_index("model").reindex(models)
        err = np.vstack([sub["drop"] - sub["drop_ci_low"], sub["drop_ci_high"] - sub["drop"]])
        ax.bar(x + (k - (len(strengths) - 1) / 2) * width, sub["drop"], width, yerr=np.nan_to_num(err),
               capsize=3, label=f"{steps} LoRA steps")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, models)
    ax.set_ylabel("AQI drop: aligned - dealigned")
    ax.set_title("How much alignment the LoRA removed (bars: paired bootstrap interval)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def recovery_curves(curve: pd.DataFrame, summary: pd.DataFrame, path: str | Path) -> None:
    """Overall AQI of each dealigned model against lambda: one panel per (operator, model), one line
    per (vector, strength); dashed: the aligned model's AQI reached when the rate is 1."""
    plt = pyplot()
    models = sorted(curve["model"].unique())
    operators = list(dict.fromkeys(curve["operator"]))
    fig, axes = plt.subplots(len(operators), len(models), figsize=(4 * len(models) + 1, 3.2 * len(operators) + 0.6),
                             squeeze=False, sharex=True)
    styles = {"same_arch": "-", "cross_arch": "--", "random": ":"}
    for row, operator in zip(axes, operators):
        for ax, model in zip(row, models):
            rows = curve[(curve["model"] == model) & (curve["operator"] == operator)]
            for (vector, steps), line in rows.groupby(["vector", "steps"]):
                line = line.sort_values("lam")
                ax.errorbar(line["lam"], line["aqi"], yerr=[line["aqi"] - line["ci_low"], line["ci_high"] - line["aqi"]],
                            ls=styles.get(vector, "-"), marker="o", ms=3, capsize=2, label=f"{vector}, {steps} steps")
            ref = summary[(summary["model"] == model) & (summary["vector"] == "same_arch")].drop_duplicates("steps")
            for r in ref.itertuples():
                level = rows[(rows["steps"] == r.steps) & (rows["vector"] == "same_arch") & (rows["lam"] == 0)]["aqi"]
                if len(level) and np.isfinite(r.drop):
                    ax.axhline(float(level.iloc[0]) + r.drop, color="grey", ls="--", lw=0.8)
            ax.set_title(f"{model}, {operator}", fontsize=9)
        row[0].set_ylabel("overall AQI (dealigned)")
    for ax in axes[-1]:
        ax.set_xlabel("lambda")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Recovery by steering, per operator (grey dashed: the aligned model's AQI)")
    save_figure(fig, path)


def recovery_vs_drop(summary: pd.DataFrame, path: str | Path, *, fraction: float) -> None:
    """Recovery rate against the size of the drop, per model, vector and operator, with intervals;
    the horizontal line is the fraction that counts as recovered. Undefined rates are left out."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = {"same_arch": "o", "cross_arch": "s", "random": "x"}
    frame = summary if "operator" in summary else summary.assign(operator="add")
    for (model, vector, operator), rows in frame.groupby(["model", "vector", "operator"]):
        rows = rows[rows["defined"].astype(bool)].sort_values("drop")
        if rows.empty:
            continue
        ax.errorbar(rows["drop"], rows["rate"], yerr=[rows["rate"] - rows["ci_low"], rows["ci_high"] - rows["rate"]],
                    marker=markers.get(vector, "o"), capsize=2, label=f"{model} {vector} ({operator})")
    ax.axhline(fraction, color="grey", ls="--", lw=0.8, label=f"recovered ({fraction:g})")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("AQI drop (aligned - dealigned)")
    ax.set_ylabel("recovery rate at the best lambda")
    ax.set_title("Recovery against the size of the drop")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def recovery_behaviour(table: pd.DataFrame, answers: list, path: str | Path) -> None:
    """The refusal split (refusal on unsafe − over-refusal on safe) of each dealigned model along
    lambda under its same-arch vector, one panel per model, one line per strength, with the aligned
    model's split (dashed) and its interval (band); the best lambda is marked.

    ``table``: :func:`driftlib.phases.recovery.summary.behaviour_table`; ``answers``: the answer tables.
    """
    from driftlib.core.artifacts import read_table
    from driftlib.stats.behaviour import refusal_split

    plt = pyplot()
    models = sorted(table["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models) + 1, 3.6), squeeze=False, sharey=True)
    panels = dict(zip(models, axes[0]))
    for path_ in answers:
        df = read_table(path_, columns=["model", "steps", "lam", "safety_label", "refused"])[0]
        model, steps = str(df["model"].iloc[0]), int(df["steps"].iloc[0])
        ax = panels.get(model)
        if ax is None:
            continue
        lams = sorted(df["lam"].unique())
        splits = [refusal_split(df[df["lam"] == lam]["refused"].to_numpy(bool),
                                (df[df["lam"] == lam]["safety_label"] == "unsafe").to_numpy()) for lam in lams]
        y = np.array([s["split"] for s in splits])
        err = np.array([[s["split"] - s["ci_low"] for s in splits], [s["ci_high"] - s["split"] for s in splits]])
        line = ax.errorbar(lams, y, yerr=err, marker="o", ms=3, capsize=2, label=f"{steps} steps")
        row = table[(table["model"] == model) & (table["steps"] == steps)]
        if len(row):
            r = row.iloc[0]
            ax.plot([r["lam"]], [r["steered_split"]], marker="*", ms=11, color=line[0].get_color())
    for model, ax in panels.items():
        r = table[table["model"] == model].iloc[0]
        ax.axhline(r["aligned_split"], color="grey", ls="--", lw=0.9, label="aligned (phase 1)")
        ax.axhspan(r["aligned_ci_low"], r["aligned_ci_high"], color="grey", alpha=0.15)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(model)
        ax.set_xlabel("lambda (0: dealigned, unsteered)")
    axes[0][0].set_ylabel("refusal split: unsafe − safe refusal")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Behavioural recovery under the same-arch vector (star: best lambda; band: aligned interval)")
    save_figure(fig, path)


def dealign_loss(curves: dict[str, pd.DataFrame], path: str | Path, *, saved: dict[str, list[int]] | None = None) -> None:
    """Training loss of each model's dealignment LoRA on the rejected responses (``step``, ``loss``
    per model), with the saved strengths marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for model, curve in sorted(curves.items()):
        line = ax.plot(curve["step"], curve["loss"], lw=1, label=model)[0]
        for step in (saved or {}).get(model, []):
            ax.axvline(step, color=line.get_color(), ls=":", lw=0.6)
    ax.set_xlabel("LoRA training step (dotted: an adapter saved)")
    ax.set_ylabel("loss on the rejected answers (nats/token)")
    ax.set_title("Dealignment training")
    ax.legend(fontsize=8)
    save_figure(fig, path)
