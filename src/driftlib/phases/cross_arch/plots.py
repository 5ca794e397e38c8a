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


def _positions(sources: list[str], targets: list[str]):
    """``(i, source, j, target)`` for every cell of a source x target grid."""
    return ((i, s, j, t) for i, s in enumerate(sources) for j, t in enumerate(targets))


def _values(cells: dict, sources: list[str], targets: list[str], value) -> np.ndarray:
    """``[sources, targets]`` of ``value(row)`` for the cells present (``value`` may return NaN), NaN elsewhere."""
    values = np.full((len(sources), len(targets)), np.nan)
    for i, s, j, t in _positions(sources, targets):
        if (s, t) in cells:
            values[i, j] = value(cells[(s, t)])
    return values


def _label_cells(ax, cells: dict, sources: list[str], targets: list[str], label, *, fontsize: float) -> None:
    """Write each cell's text on a source x target grid: "own" on the diagonal, nothing where
    ``cells`` has no row, else ``label(row, i, j)``."""
    for i, s, j, t in _positions(sources, targets):
        r = cells.get((s, t))
        text = "own" if s == t else "" if r is None else label(r, i, j)
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize)


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
            values = _values(cells, sources, targets, lambda r: r.efficiency if bool(r.defined) else np.nan)
            ax.set_facecolor("#eeeeee")  # undefined cells stay grey
            im = ax.imshow(values, cmap="RdBu_r", vmin=-1.5, vmax=1.5, aspect="auto")

            def label(r, i, j, ax=ax, panel=panel) -> str:
                if not bool(r.defined):
                    text = f"undef.\ngain {r.gain:+.2f}"  # AQI points; the own vector's gain is in noise
                else:
                    text = f"{r.efficiency:.2f}\n[{r.ci_low:.2f}, {r.ci_high:.2f}]"
                    if panel == "best":
                        text += f"\n{r.method}"
                    if bool(r.best) and panel != "best":
                        ax.add_patch(plt.Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, lw=2, color="black"))
                return text + ("\n(unstable)" if bool(getattr(r, "below_stability_floor", False)) else "")

            _label_cells(ax, cells, sources, targets, label, fontsize=7)
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


def transfer_behaviour(behaviour: pd.DataFrame, path: str | Path, *, main: str | None = None) -> None:
    """Source x target heatmaps of the change in refusal split (refusal on unsafe − over-refusal on
    safe) that each source's mapped vector makes in the target, one panel per operator.

    ``behaviour``: :func:`driftlib.phases.cross_arch.summary.transfer_behaviour`'s rows. Cells: the
    change and its interval, with the lambda it was read at; "n.r." (not resolvable) where the change
    is smaller than its minimum detectable effect (the cell is then left pale). ``main``: the operator
    of the first panel.
    """
    plt = pyplot()
    operators = list(dict.fromkeys(behaviour["operator"])) or ["add"]
    if main in operators:
        operators = [main] + [op for op in operators if op != main]
    sources = sorted(behaviour["source"].unique())
    targets = sorted(behaviour["target"].unique())
    fig, axes = plt.subplots(1, len(operators), figsize=(3.4 * len(operators) * max(1, len(targets) / 3) + 1,
                                                          0.9 * max(len(sources), 1) + 2.0), squeeze=False, sharey=True)
    im = None
    for ax, operator in zip(axes[0], operators):
        cells = {(r.source, r.target): r for r in behaviour[behaviour["operator"] == operator].itertuples()}
        values = _values(cells, sources, targets, lambda r: r.change if r.change_resolvable else 0.15 * r.change)
        ax.set_facecolor("#eeeeee")
        im = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        _label_cells(ax, cells, sources, targets, lambda r, i, j: (
            f"{r.change:+.2f}\n[{r.change_ci_low:+.2f}, {r.change_ci_high:+.2f}]\nλ={r.lam:g}"
            + ("" if r.change_resolvable else " n.r.")), fontsize=6)
        ax.set_xticks(range(len(targets)), targets, rotation=30, fontsize=7)
        ax.set_yticks(range(len(sources)), sources, fontsize=7)
        ax.set_title(f"{operator}", fontsize=9)
        ax.set_xlabel("target")
    axes[0][0].set_ylabel("source of the mapped vector")
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="change in refusal split")
    fig.suptitle("Behaviour under the mapped vector at its best lambda, against the target unsteered", fontsize=9)
    save_figure(fig, path)
