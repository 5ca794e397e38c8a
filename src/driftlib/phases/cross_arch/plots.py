"""Phase plots for the report (cross-arch): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def _grid(matrix: pd.DataFrame, value: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    sources = sorted(matrix["source"].unique())
    targets = sorted(matrix["target"].unique())
    grid = matrix.pivot_table(index="source", columns="target", values=value, aggfunc="first")
    return grid.reindex(index=sources, columns=targets), sources, targets


def transfer_matrix(matrix: pd.DataFrame, path: str | Path, *, method: str = "best", baseline: str | None = None,
                    main: str | None = None) -> None:
    """Source x target heatmaps of transfer efficiency: one row of panels per operator (the main one
    first), one panel per map method plus the best one.

    ``matrix``: one row per (source, target, method, operator) with efficiency, ci_low, ci_high,
    defined, best, random_efficiency (and ``below_stability_floor``). Cells: efficiency and
    interval; "undef." where the target's own vector (under the same operator) does not raise the
    AQI beyond noise; the best method of each cell is outlined in its panel; "(unstable)" where the
    source vector's split-half stability is below the floor. ``method`` picks the first panel of each
    row: "best" shows each cell's best method by name.
    """
    plt = pyplot()
    frame = matrix if "operator" in matrix else matrix.assign(operator="add")
    operators = list(dict.fromkeys(frame["operator"]))
    if main in operators:
        operators = [main] + [op for op in operators if op != main]
    methods = sorted(frame["method"].unique())
    panels = [method] + [m for m in methods if m != method]
    sources = sorted(frame["source"].unique())
    targets = sorted(frame["target"].unique())
    fig, axes = plt.subplots(len(operators), len(panels),
                             figsize=(3.2 * len(panels) * max(1, len(targets) / 3) + 1,
                                      (0.9 * len(sources) + 1.6) * len(operators) + 0.8),
                             squeeze=False, sharey=True)
    for row, operator in zip(axes, operators):
        sub = frame[frame["operator"] == operator]
        for ax, panel in zip(row, panels):
            rows = sub[sub["best"]] if panel == "best" else sub[sub["method"] == panel]
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
                if r is not None and s != t and bool(getattr(r, "below_stability_floor", False)):
                    text += "\n(unstable)"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
            ax.set_yticks(range(len(sources)), [f"{s} *" if s == baseline else s for s in sources])
            ax.set_title(f"{'best method per cell' if panel == 'best' else panel} · {operator}", fontsize=9)
        row[0].set_ylabel("source vector (* = phase-1 baseline)")
    for ax in axes[-1]:
        ax.set_xlabel("target (base model steered)")
    fig.colorbar(im, ax=list(axes.ravel()), label="transfer efficiency (1 = as good as the target's own vector "
                                                  "under the same operator)")
    fig.suptitle("Cross-architecture transfer efficiency per operator (outlined: the cell's best method)\ngrey: "
                 "undefined (the target's own vector gains nothing beyond noise); the cell then gives the mapped "
                 "vector's AQI gain")
    save_figure(fig, path)


def transfer_fit(matrix: pd.DataFrame, path: str | Path) -> None:
    """Per method: held-out R^2 of the map, its shuffled-pair control, and the mapped vector's
    cosine with the target's own vector, one point per (source, target) cell."""
    plt = pyplot()
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
    save_figure(fig, path)


def layer_matching(matchings: list[dict], path: str | Path, *, source: str | None = None) -> None:
    """Linear-CKA matrices (source layers x target layers) of one source's pairs, with the
    matched layers marked (x: by CKA, o: by relative depth)."""
    plt = pyplot()
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
    save_figure(fig, path)
