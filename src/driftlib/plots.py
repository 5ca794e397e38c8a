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


def _grid(matrix: pd.DataFrame, value: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    sources = sorted(matrix["source"].unique())
    targets = sorted(matrix["target"].unique())
    grid = matrix.pivot_table(index="source", columns="target", values=value, aggfunc="first")
    return grid.reindex(index=sources, columns=targets), sources, targets


def transfer_matrix(matrix: pd.DataFrame, path: str | Path, *, method: str = "best", baseline: str | None = None) -> None:
    """Source x target heatmap of transfer efficiency, one panel per map method plus the best one.

    ``matrix``: one row per (source, target, method) with efficiency, ci_low, ci_high, defined,
    best, random_efficiency. Cells: efficiency and interval; "undef." where the target's own vector
    does not raise the AQI beyond noise; the best method of each cell is outlined in its panel.
    ``method`` picks the first (large) panel: "best" shows each cell's best method by name.
    """
    plt = _pyplot()
    methods = sorted(matrix["method"].unique())
    panels = [method] + [m for m in methods if m != method]
    sources = sorted(matrix["source"].unique())
    targets = sorted(matrix["target"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) * max(1, len(targets) / 3) + 1,
                                                      0.9 * len(sources) + 2.2), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        rows = matrix[matrix["best"]] if panel == "best" else matrix[matrix["method"] == panel]
        cells = {(r.source, r.target): r for r in rows.itertuples()}
        values = np.full((len(sources), len(targets)), np.nan)
        for (i, s), (j, t) in ((a, b) for a in enumerate(sources) for b in enumerate(targets)):
            r = cells.get((s, t))
            if r is not None and bool(r.defined):
                values[i, j] = r.efficiency
        ax.set_facecolor("#eeeeee")  # undefined cells stay grey
        im = ax.imshow(values, cmap="RdBu_r", vmin=-1.5, vmax=1.5, aspect="auto")
        for (i, s), (j, t) in ((a, b) for a in enumerate(sources) for b in enumerate(targets)):
            r = cells.get((s, t))
            if s == t:
                text = "own"
            elif r is None:
                text = ""
            elif not bool(r.defined):
                text = f"undef.\ngain {r.gain:+.2f}"  # AQI points; the own vector's gain is in noise
            else:
                text = f"{r.efficiency:.2f}\n[{r.ci_low:.2f}, {r.ci_high:.2f}]"
                if panel == "best":
                    text += f"\n{r.method}"
                if bool(r.best) and panel != "best":
                    ax.add_patch(plt.Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, lw=2, color="black"))
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
        ax.set_yticks(range(len(sources)), [f"{s} *" if s == baseline else s for s in sources])
        ax.set_xlabel("target (base model steered)")
        ax.set_title("best method per cell" if panel == "best" else panel)
    axes[0][0].set_ylabel("source vector (* = phase-1 baseline)")
    fig.colorbar(im, ax=list(axes[0]), label="transfer efficiency (1 = as good as the target's own vector)")
    fig.suptitle("Cross-architecture transfer efficiency (outlined: the cell's best method)\ngrey: undefined (the target's own "
                 "vector gains nothing beyond noise); the cell then gives the mapped vector's AQI gain")
    _save(fig, path)


def transfer_fit(matrix: pd.DataFrame, path: str | Path) -> None:
    """Per method: held-out R^2 of the map, its shuffled-pair control, and the mapped vector's
    cosine with the target's own vector, one point per (source, target) cell."""
    plt = _pyplot()
    methods = sorted(matrix["method"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    fig.subplots_adjust(wspace=0.35)
    x = np.arange(len(methods))
    rng = np.random.default_rng(0)
    for k, m in enumerate(methods):
        rows = matrix[matrix["method"] == m]
        jitter = rng.uniform(-0.12, 0.12, len(rows))
        axes[0].scatter(k - 0.18 + jitter, rows["r2"], s=14, color="#3182bd", label="map" if k == 0 else None)
        axes[0].scatter(k + 0.18 + jitter, rows["shuffled_r2"], s=14, color="#bdbdbd",
                        label="shuffled-pair control" if k == 0 else None)
        axes[1].scatter(k + jitter, rows["cos_own"], s=14, color="#3182bd")
    axes[0].set_ylabel("held-out R² (cross-validated)")
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("cosine(mapped vector, target's own vector)")
    axes[1].axhline(0, color="grey", lw=0.8)
    for ax in axes:
        ax.set_xticks(x, methods)
    fig.suptitle("Fit of the cross-architecture maps (one point per source/target pair)")
    _save(fig, path)


def layer_matching(matchings: list[dict], path: str | Path, *, source: str | None = None) -> None:
    """Linear-CKA matrices (source layers x target layers) of one source's pairs, with the
    matched layers marked (x: by CKA, o: by relative depth)."""
    plt = _pyplot()
    chosen = [m for m in matchings if m["source"] == source] or matchings[: max(1, min(4, len(matchings)))]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen) + 1, 3.4), squeeze=False)
    for ax, m in zip(axes[0], chosen):
        cka = np.asarray(m["cka"], dtype=float)
        im = ax.imshow(cka, cmap="viridis", vmin=0, vmax=1, origin="lower", aspect="auto")
        ax.scatter(m["target_layers"], m["by_cka"], marker="x", color="red", s=40, label="CKA match")
        ax.scatter(m["target_layers"], m["by_depth"], marker="o", facecolors="none", edgecolors="white",
                   s=40, label="depth match")
        ax.set_xlabel(f"{m['target']} block")
        if ax is axes[0][0] or m["source"] != chosen[0]["source"]:
            ax.set_ylabel(f"{m['source']} block")
        ax.set_title(f"{m['source']} → {m['target']} (used: {m['used']})", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.colorbar(im, ax=list(axes[0]), label="linear CKA on the anchor texts")
    _save(fig, path)


def dealign_drop(summary: pd.DataFrame, path: str | Path) -> None:
    """AQI drop (aligned - dealigned) per model and dealignment strength, with intervals."""
    plt = _pyplot()
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
    _save(fig, path)


def recovery_curves(curve: pd.DataFrame, summary: pd.DataFrame, path: str | Path) -> None:
    """Overall AQI of each dealigned model against lambda, one panel per model, one line per
    (vector, strength); dashed: the aligned model's AQI reached when the rate is 1."""
    plt = _pyplot()
    models = sorted(curve["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models) + 1, 3.6), squeeze=False)
    styles = {"same_arch": "-", "cross_arch": "--", "random": ":"}
    for ax, model in zip(axes[0], models):
        rows = curve[curve["model"] == model]
        for (vector, steps), line in rows.groupby(["vector", "steps"]):
            line = line.sort_values("lam")
            ax.errorbar(line["lam"], line["aqi"], yerr=[line["aqi"] - line["ci_low"], line["ci_high"] - line["aqi"]],
                        ls=styles.get(vector, "-"), marker="o", ms=3, capsize=2, label=f"{vector}, {steps} steps")
        ref = summary[(summary["model"] == model) & (summary["vector"] == "same_arch")]
        for r in ref.itertuples():
            level = rows[(rows["steps"] == r.steps) & (rows["vector"] == "same_arch") & (rows["lam"] == 0)]["aqi"]
            if len(level) and np.isfinite(r.drop):
                ax.axhline(float(level.iloc[0]) + r.drop, color="grey", ls="--", lw=0.8)
        ax.set_title(model)
        ax.set_xlabel("lambda")
    axes[0][0].set_ylabel("overall AQI of the dealigned model")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Recovery by steering (grey dashed: the aligned model's AQI)")
    _save(fig, path)


def recovery_vs_drop(summary: pd.DataFrame, path: str | Path, *, fraction: float) -> None:
    """Recovery rate against the size of the drop, per model and vector, with intervals; the
    horizontal line is the fraction that counts as recovered. Undefined rates are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = {"same_arch": "o", "cross_arch": "s", "random": "x"}
    for (model, vector), rows in summary.groupby(["model", "vector"]):
        rows = rows[rows["defined"].astype(bool)].sort_values("drop")
        if rows.empty:
            continue
        ax.errorbar(rows["drop"], rows["rate"], yerr=[rows["rate"] - rows["ci_low"], rows["ci_high"] - rows["rate"]],
                    marker=markers.get(vector, "o"), capsize=2, label=f"{model} {vector}")
    ax.axhline(fraction, color="grey", ls="--", lw=0.8, label=f"recovered ({fraction:g})")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("AQI drop (aligned - dealigned)")
    ax.set_ylabel("recovery rate at the best lambda")
    ax.set_title("Recovery against the size of the drop")
    ax.legend(fontsize=7)
    _save(fig, path)


def dealign_loss(curves: dict[str, pd.DataFrame], path: str | Path, *, saved: dict[str, list[int]] | None = None) -> None:
    """Training loss of each model's dealignment LoRA on the rejected responses (``step``, ``loss``
    per model), with the saved strengths marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for model, curve in sorted(curves.items()):
        line = ax.plot(curve["step"], curve["loss"], lw=1, label=model)[0]
        for step in (saved or {}).get(model, []):
            ax.axvline(step, color=line.get_color(), ls=":", lw=0.6)
    ax.set_xlabel("LoRA training step (dotted: an adapter saved)")
    ax.set_ylabel("loss on the rejected answers (nats/token)")
    ax.set_title("Dealignment training")
    ax.legend(fontsize=8)
    _save(fig, path)


def collab_drift(table: pd.DataFrame, path: str | Path) -> None:
    """Phase 5: each agent's drift (AQI after the collaboration minus AQI after its length-matched
    control) with its interval, plain runs beside pre-steered ones, one group per (pairing, agent);
    a star marks p < 0.05.

    ``table``: the phase-5 table (``pairing, agent, condition, drift, drift_lo, drift_hi, p_value``);
    rows of condition ``game`` are left out.
    """
    plt = _pyplot()
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
    _save(fig, path)


def collab_trajectories(results: list[dict], path: str | Path) -> None:
    """Phase 5: each agent's mean projection onto its own alignment vector over the rounds, in the
    collaboration (solid) and in its solo control (dashed); one panel per run.

    ``results``: :func:`driftlib.collab_eval.score_agent` outputs (``pairing``, ``profile``, ``agent``,
    ``projection.{collab,control}.mean_projection``).
    """
    plt = _pyplot()
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
    _save(fig, path)


# =============================================================================================
# phase 6: the alignment-posture game (driftlib.game). Appended section; frames are those of
# driftlib.game.solve_pairing ("payoffs" and "sensitivity").


def _game_players(payoffs: pd.DataFrame, players: list[str] | None) -> list[str]:
    if players:
        return [str(p) for p in players]
    return [c[len("lam_"):] for c in payoffs.columns if c.startswith("lam_")]


def payoff_matrix(payoffs: pd.DataFrame, path: str | Path, *, players: list[str] | None = None,
                  title: str | None = None) -> None:
    """The game's payoffs per profile.

    ``payoffs``: one row per profile with ``profile``, ``lam_<agent>``, ``payoff_<agent>``,
    ``alignment_<agent>`` (+ ``_lo``, ``_hi``), ``total`` and the flags ``pure_equilibrium`` and
    ``social_optimum`` (``players``: the agents in player order; read from the ``lam_`` columns
    when not given). Two players: a grid (rows: player 0's lambda, columns: player 1's) coloured by
    the total payoff, each cell giving both payoffs and, smaller, both alignment intervals; pure
    equilibria outlined in black, the social optimum dashed. More players: grouped bars of each
    profile's payoffs, pure equilibria marked ``*`` and the social optimum ``(opt)``.
    """
    plt = _pyplot()
    agents = _game_players(payoffs, players)
    if len(agents) == 2:
        a, b = agents
        rows_l = sorted(payoffs[f"lam_{a}"].unique())
        cols_l = sorted(payoffs[f"lam_{b}"].unique())
        cells = {(r[f"lam_{a}"], r[f"lam_{b}"]): r for _, r in payoffs.iterrows()}
        total = np.full((len(rows_l), len(cols_l)), np.nan)
        for (i, la), (j, lb) in ((x, y) for x in enumerate(rows_l) for y in enumerate(cols_l)):
            if (la, lb) in cells:
                total[i, j] = cells[(la, lb)]["total"]
        fig, ax = plt.subplots(figsize=(2.2 * len(cols_l) + 2.5, 1.5 * len(rows_l) + 1.8))
        ax.set_facecolor("#eeeeee")
        im = ax.imshow(total, cmap="viridis", aspect="auto")
        finite = total[np.isfinite(total)]
        mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
        for (i, la), (j, lb) in ((x, y) for x in enumerate(rows_l) for y in enumerate(cols_l)):
            r = cells.get((la, lb))
            if r is None:
                ax.text(j, i, "not measured", ha="center", va="center", fontsize=7)
                continue
            color = "white" if np.isfinite(total[i, j]) and total[i, j] < mid else "black"
            ax.text(j, i - 0.12, f"{r[f'payoff_{a}']:.3f}, {r[f'payoff_{b}']:.3f}", ha="center", va="center",
                    fontsize=9, color=color, weight="bold")
            ali = "\n".join(f"A {ag}: [{r[f'alignment_{ag}_lo']:.2f}, {r[f'alignment_{ag}_hi']:.2f}]" for ag in (a, b))
            ax.text(j, i + 0.22, ali, ha="center", va="center", fontsize=6, color=color)
            if bool(r.get("pure_equilibrium", False)):
                ax.add_patch(plt.Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, lw=2.5, color="black"))
            if bool(r.get("social_optimum", False)):
                ax.add_patch(plt.Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, lw=1.5, ls="--",
                                           color="#e6550d"))
        ax.set_xticks(range(len(cols_l)), [f"{v:g}" for v in cols_l])
        ax.set_yticks(range(len(rows_l)), [f"{v:g}" for v in rows_l])
        ax.set_xlabel(f"lambda of {b} (player 1)")
        ax.set_ylabel(f"lambda of {a} (player 0)")
        fig.colorbar(im, ax=ax, label="total payoff")
        ax.set_title((title + "\n" if title else "") + f"payoffs ({a}, {b}); A = alignment interval (AQI/100)\n"
                     "black outline: pure equilibrium; orange dashed: social optimum", fontsize=8)
    else:
        order = list(payoffs["profile"])
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(order) * max(1, len(agents)) / 2 + 2), 4))
        x = np.arange(len(order))
        width = 0.8 / max(len(agents), 1)
        for k, agent in enumerate(agents):
            ax.bar(x + (k - (len(agents) - 1) / 2) * width, payoffs[f"payoff_{agent}"], width, label=agent)
        labels = []
        for _, r in payoffs.iterrows():
            label = str(r["profile"])
            if bool(r.get("pure_equilibrium", False)):
                label += " *"
            if bool(r.get("social_optimum", False)):
                label += " (opt)"
            labels.append(label)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("profile (lambda per agent: " + ", ".join(agents) + ")")
        ax.set_ylabel("payoff")
        ax.legend(fontsize=7)
        ax.set_title((title + "\n" if title else "") + "payoffs per profile (* pure equilibrium, (opt) social optimum)",
                     fontsize=8)
    _save(fig, path)


def equilibrium_sensitivity(sensitivity: pd.DataFrame, path: str | Path, *, configured: float | None = None,
                            lambdas: list[float] | None = None, title: str | None = None) -> None:
    """Equilibrium alignment level (expected lambda; mean over equilibria, band from min to max)
    against the alignment weight, the configured weight marked.

    ``sensitivity``: one row per weight with ``weight``, ``level_mean``, ``level_min``,
    ``level_max`` (and ``configured``, used when ``configured`` is not given). ``lambdas``: the
    posture grid, drawn as dotted horizontal lines.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rows = sensitivity.sort_values("weight") if len(sensitivity) else sensitivity
    if configured is None and "configured" in rows and rows["configured"].astype(bool).any():
        configured = float(rows.loc[rows["configured"].astype(bool), "weight"].iloc[0])
    for lam in lambdas or []:
        ax.axhline(lam, color="grey", ls=":", lw=0.6)
    if len(rows):
        ax.fill_between(rows["weight"], rows["level_min"], rows["level_max"], color="#3182bd", alpha=0.2,
                        label="min to max over equilibria")
        ax.plot(rows["weight"], rows["level_mean"], marker="o", color="#3182bd", label="mean over equilibria")
    else:
        ax.text(0.5, 0.5, "no sensitivity sweep", ha="center", va="center", transform=ax.transAxes)
    if configured is not None and np.isfinite(configured):
        ax.axvline(configured, color="#e6550d", ls="--", label=f"configured weight ({configured:g})")
    ax.set_xlabel("alignment weight w_alignment")
    ax.set_ylabel("equilibrium alignment level (expected lambda)")
    ax.set_title((title + ": " if title else "") + "equilibrium posture against the alignment weight", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)
