"""Phase plots for the report (collaboration): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def collab_drift(table: pd.DataFrame, path: str | Path, *, main: str | None = None) -> None:
    """Phase 5: each agent's drift (AQI after the collaboration minus AQI after its length-matched
    control) with its interval, plain runs beside pre-steered ones, one group per (pairing, agent);
    a star marks p < 0.05; a hollow marker a drift smaller than its minimum detectable effect ("not
    resolvable at this size").

    ``table``: the phase-5 table (``pairing, agent, condition, drift, drift_lo, drift_hi, p_value``,
    and ``drift_resolvable`` and ``operator`` when present); rows of condition ``game`` are left out.
    A pre-steered run under a compared operator (``operator`` other than ``main``) is its own series.
    """
    plt = pyplot()
    rows = table[table["condition"] != "game"]
    rows = rows if "operator" in rows else rows.assign(operator=main or "add")
    main = main or (str(rows["operator"].iloc[0]) if len(rows) else "add")
    groups = list(dict.fromkeys(zip(rows["pairing"], rows["agent"], strict=True)))
    series = [(c, main) for c in ("plain", "prevention") if ((rows["condition"] == c) & (rows["operator"] == main)).any()]
    series += sorted({(c, op) for c, op in zip(rows["condition"], rows["operator"], strict=True) if op != main})
    colours = {("plain", main): "#de2d26", ("prevention", main): "#3182bd"}
    labels = {("plain", main): "plain agents", ("prevention", main): f"pre-steered agents ({main})"}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) * max(1, len(series) / 2) + 2), 4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, key in enumerate(series):
        cond, op = key
        colours.setdefault(key, f"C{i + 2}")
        labels.setdefault(key, f"{'pre-steered' if cond == 'prevention' else cond} agents ({op})")
        sub = rows[(rows["condition"] == cond) & (rows["operator"] == op)].set_index(["pairing", "agent"]).reindex(groups)
        pos = x + (i - (len(series) - 1) / 2) * width
        err = np.vstack([sub["drift"] - sub["drift_lo"], sub["drift_hi"] - sub["drift"]])
        ax.errorbar(pos, sub["drift"], yerr=np.nan_to_num(err), fmt="none", capsize=4, color=colours[key])
        _points(ax, pos, sub["drift"], _resolved(sub, "drift_resolvable"), colours[key], labels[key])
        for xp, d, hi, p in zip(pos, sub["drift"], sub["drift_hi"], sub["p_value"], strict=True):
            if np.isfinite(p) and p < 0.05:
                ax.annotate("*", (xp, hi), ha="center", va="bottom", fontsize=12)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [f"{a}\nin {p}" for p, a in groups], fontsize=8)
    ax.set_ylabel("drift: AQI(collaboration) - AQI(control)")
    ax.set_title("Collaboration drift per agent (bars: paired bootstrap interval; *: p < 0.05;\n"
                 "hollow: not resolvable at this size, |drift| < MDE)", fontsize=9)
    if series:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def _resolved(sub: pd.DataFrame, column: str) -> np.ndarray:
    if column not in sub:
        return np.ones(len(sub), dtype=bool)
    return sub[column].fillna(False).astype(bool).to_numpy()


def _points(ax, x, y, resolved: np.ndarray, colour: str, label: str) -> None:
    """Filled markers where the effect is resolvable, hollow ones where it is smaller than its MDE."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ax.plot(x[resolved], y[resolved], "o", color=colour, label=label if resolved.any() else None)
    ax.plot(x[~resolved], y[~resolved], "o", mfc="white", color=colour,
            label=None if resolved.any() else label)  # one legend entry a series


def collab_behaviour(table: pd.DataFrame, path: str | Path) -> None:
    """Phase 5's behaviour: per (pairing, agent, plain or pre-steered run), the refusal rate on unsafe
    prompts and the over-refusal rate on safe ones alone, after the collaboration and after the
    control (Wilson intervals; top), and the behavioural drift, the refusal split after the
    collaboration minus after the control (paired bootstrap interval; bottom). A hollow marker is a
    drift smaller than its MDE, labelled "not resolvable at this size".

    ``table``: the phase-5 table with the behaviour columns
    (:data:`driftlib.phases.collaboration.summary.EXTRA_COLUMNS`); NaN everywhere (behaviour not
    measured) gives a figure that says so.
    """
    plt = pyplot()
    rows = table[table["condition"] != "game"]
    rows = rows[np.isfinite(rows["behaviour_drift"].astype(float))] if "behaviour_drift" in rows else rows.iloc[:0]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "behaviour not measured (behaviour.enabled: false)", ha="center", va="center")
        save_figure(fig, path)
        return
    ops = rows["operator"] if "operator" in rows else [""] * len(rows)
    labels = [f"{a}\nin {p}\n({c}{', ' + o if o and c != 'plain' else ''})"
              for p, a, c, o in zip(rows["pairing"], rows["agent"], rows["condition"], ops, strict=True)]
    x = np.arange(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(rows) + 2), 7), sharex=True)
    styles = {"solo": ("#636363", -0.25), "collab": ("#de2d26", 0.0), "control": ("#3182bd", 0.25)}
    for cond, (colour, shift) in styles.items():
        for rate, marker, name in (("refusal_unsafe", "o", "refusal on unsafe"),
                                   ("over_refusal_safe", "s", "over-refusal on safe")):
            v = rows[f"{rate}_{cond}"].to_numpy(float)
            err = np.vstack([v - rows[f"{rate}_{cond}_lo"].to_numpy(float), rows[f"{rate}_{cond}_hi"].to_numpy(float) - v])
            top.errorbar(x + shift, v, yerr=np.nan_to_num(err), fmt=marker, capsize=3, color=colour,
                         mfc=colour if marker == "o" else "white", label=f"{name}, {cond}")
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel("share of prompts")
    top.set_title("Refusal per condition (Wilson intervals)", fontsize=9)
    top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    d = rows["behaviour_drift"].to_numpy(float)
    err = np.vstack([d - rows["behaviour_drift_lo"].to_numpy(float), rows["behaviour_drift_hi"].to_numpy(float) - d])
    resolved = _resolved(rows, "behaviour_resolvable")
    bottom.errorbar(x, d, yerr=np.nan_to_num(err), fmt="none", capsize=4, color="#756bb1")
    _points(bottom, x, d, resolved, "#756bb1", "behavioural drift")
    for xp, dv, ok, mde in zip(x, d, resolved, rows["behaviour_mde"].to_numpy(float), strict=True):
        if not ok:
            bottom.annotate(f"not resolvable\nat this size\n(MDE {mde:.2f})", (xp, dv), textcoords="offset points",
                            xytext=(6, 0), fontsize=6, va="center")
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_ylabel("refusal split: collab - control")
    bottom.set_title("Behavioural drift (paired bootstrap interval over prompts; hollow: |drift| < MDE)", fontsize=9)
    bottom.set_xticks(x, labels, fontsize=7)
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
