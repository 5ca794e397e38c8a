"""Phase plots for the report (game): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.plots import pyplot, save_figure


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
    plt = pyplot()
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
    save_figure(fig, path)


def equilibrium_sensitivity(sensitivity: pd.DataFrame, path: str | Path, *, configured: float | None = None,
                            lambdas: list[float] | None = None, title: str | None = None) -> None:
    """Equilibrium alignment level (expected lambda; mean over equilibria, band from min to max)
    against the alignment weight, the configured weight marked.

    ``sensitivity``: one row per weight with ``weight``, ``level_mean``, ``level_min``,
    ``level_max`` (and ``configured``, used when ``configured`` is not given). ``lambdas``: the
    posture grid, drawn as dotted horizontal lines.
    """
    plt = pyplot()
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
    save_figure(fig, path)
