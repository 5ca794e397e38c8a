"""Phase plots for the report (vectors): each function takes a tidy frame and a path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from driftlib.core.plots import pyplot, save_figure


def vector_layers(stats: pd.DataFrame, path: str | Path) -> None:
    """Four panels over relative depth, one line per model: relative norm, split-half stability,
    cosine between the chosen- and rejected-text vectors, cosine with the next layer.

    ``stats``: rows of :func:`driftlib.phases.vectors.evaluate.compute_vectors` with a ``model`` column; each
    model is drawn with ``mean_diff_both`` where it has a base model, else ``contrastive``.
    """
    plt = pyplot()
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
    save_figure(fig, path)
