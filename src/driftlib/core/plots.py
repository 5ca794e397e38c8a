"""What every phase's plots share: matplotlib on the Agg backend, and an atomic save. The plots
themselves live with their phase (``driftlib/phases/<phase>/plots.py``)."""

from __future__ import annotations

from pathlib import Path

from driftlib.core.artifacts import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Save ``fig`` to ``path`` atomically (the format from the suffix) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    pyplot().close(fig)
