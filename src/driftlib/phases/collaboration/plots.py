"""Phase plots for the report (collaboration): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def collab_drift(table: pd.DataFrame, path: str | Path) -> None:
    """Phase 5: each agent's drift (AQI after the collaboration minus AQI after its length-matched
    control) with its interval, plain runs beside pre-steered ones, one group per (pairing, agent);
    a star marks p < 0.05.

    ``table``: the phase-5 table (``pairing, agent, condition, drift, drift_lo, drift_hi, p_value``);
    rows of condition ``game`` are left out.
    """
    plt = pyplot()
    rows = table[table["condition"] != "game"]
    groups = list(dict.fromkeys(zip(rows["pairing"], rows["agent"], strict=True)))
    conditions = [c for c in ("plain", "prevention") if c in set(rows["condition"])]
    colours = {"plain": "#de2d26", "prevention": "#3182bd"}
    labels = {"plain": "plain agents", "prevention": "pre-steered agents"}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) + 2), 4))
    width = 0.8 / max(len(conditions), 1)
    x = np.arange(len(groups))
    for i, cond in enumerate(conditions):
        sub = rows[rows["condition"] == cond].set_index(["pairing", "agent"]).reindex(groups)
        pos = x + (i - (len(conditions) - 1) / 2) * width
        err = np.vstack([sub["drift"] - sub["drift_lo"], sub["drift_hi"] - sub["drift"]])
        ax.errorbar(pos, sub["drift"], yerr=np.nan_to_num(err), fmt="o", capsize=4, color=colours[cond],
                    label=labels[cond])
        for xp, d, hi, p in zip(pos, sub["drift"], sub["drift_hi"], sub["p_value"], strict=True):
            if np.isfinite(p) and p < 0.05:
                ax.annotate("*", (xp, hi), ha="center", va="bottom", fontsize=12)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [f"{a}\nin {p}" for p, a in groups], fontsize=8)
    ax.set_ylabel("drift: AQI(collaboration) - AQI(control)")
    ax.set_title("Collaboration drift per agent (bars: paired bootstrap interval; *: p < 0.05)")
    if conditions:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def collab_trajectories(results: list[dict], path: str | Path) -> None:
    """Phase 5: each agent's mean projection onto its own alignment vector over the rounds, in the
    collaboration (solid) and in its solo control (dashed); one panel per run.

    ``results``: :func:`driftlib.phases.collaboration.evaluate.score_agent` outputs (``pairing``, ``profile``, ``agent``,
    ``projection.{collab,control}.mean_projection``).
    """
    plt = pyplot()
    runs = list(dict.fromkeys((r["pairing"], r["profile"]) for r in results)) or [("", "")]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, (pairing, profile) in zip(axes[0], runs, strict=True):
        for j, r in enumerate(x for x in results if (x["pairing"], x["profile"]) == (pairing, profile)):
            colour = f"C{j}"
            for cond, style in (("collab", "-"), ("control", "--")):
                series = (r.get("projection", {}).get(cond) or {}).get("mean_projection")
                if series:
                    ax.plot(np.arange(1, len(series) + 1), series, style, marker="o", color=colour,
                            label=f"{r['agent']} ({'collaboration' if cond == 'collab' else 'alone'})")
        ax.set_title(f"{pairing}, lambdas {profile}", fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean projection on own vector")
    save_figure(fig, path)
