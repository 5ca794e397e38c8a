"""Phase 2: steering vectors of one model from its hidden states on the preference pairs, and
the per-layer figures that say how much to trust them.

Inputs are last-real-token states at every block, ``[n, L, d]`` for the chosen and the rejected
texts of the same pairs, from the aligned variant and (where released) the base variant. Kinds:

- ``mean_diff_chosen`` / ``mean_diff_rejected`` / ``mean_diff_both``: mean over texts of
  ``h_aligned - h_base`` on the chosen texts, the rejected texts, or both (the D-STEER vector);
- ``pca``: first principal direction of the paired differences (both texts), sign and scale of
  ``mean_diff_both``;
- ``contrastive``: ``mean h(chosen) - mean h(rejected)`` inside the aligned model (the only kind
  for a model with no base, such as Phi-3-mini).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftlib.core.errors import ConfigError
from driftlib.steer import vectors as V


#: the vector kind that ``vectors.method`` / ``vectors.texts`` select for later phases
def steering_kind(method: str, texts: str, has_base: bool) -> str:
    """The kind later phases steer with; models without a base always use ``contrastive``."""
    if not has_base or method == "contrastive":
        return "contrastive"
    if method == "pca":
        return "pca"
    if method == "mean_diff":
        return f"mean_diff_{texts}"
    raise ConfigError(f"vectors.method: unknown method {method!r} (mean_diff, pca, contrastive)")


def compute_vectors(aligned_chosen: np.ndarray, aligned_rejected: np.ndarray,
                    base_chosen: np.ndarray | None = None, base_rejected: np.ndarray | None = None,
                    *, n_splits: int = 20, seed: int = 0) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """All vector kinds ``{kind: [L, d]}`` and a per-(kind, layer) statistics table.

    Statistics columns: kind, layer, relative_depth, norm, residual_norm (median per-text norm
    of the reference model's states at that layer: the base model where there is one),
    relative_norm, stability (split-half cosine, :func:`driftlib.steer.vectors.split_half_stability`),
    cos_chosen_rejected (mean-diff vectors from chosen vs rejected texts; NaN without a base),
    cos_next_layer (cosine with the same kind at the next layer; NaN at the last).
    """
    n_layers = aligned_chosen.shape[1]
    kinds: dict[str, np.ndarray] = {"contrastive": V.contrastive(aligned_chosen, aligned_rejected)}
    stability = {"contrastive": V.contrastive_stability(aligned_chosen, aligned_rejected,
                                                        n_splits=n_splits, seed=seed)}
    reference = np.concatenate([aligned_chosen, aligned_rejected])
    cos_cr = np.full(n_layers, np.nan)
    if base_chosen is not None and base_rejected is not None:
        a_both = np.concatenate([aligned_chosen, aligned_rejected])
        b_both = np.concatenate([base_chosen, base_rejected])
        kinds["mean_diff_chosen"] = V.mean_difference(aligned_chosen, base_chosen)
        kinds["mean_diff_rejected"] = V.mean_difference(aligned_rejected, base_rejected)
        kinds["mean_diff_both"] = V.mean_difference(a_both, b_both)
        kinds["pca"] = V.pca_direction(a_both, b_both)
        for kind, (a, b) in {"mean_diff_chosen": (aligned_chosen, base_chosen),
                             "mean_diff_rejected": (aligned_rejected, base_rejected),
                             "mean_diff_both": (a_both, b_both)}.items():
            stability[kind] = V.split_half_stability(a - b, n_splits=n_splits, seed=seed)
        stability["pca"] = stability["mean_diff_both"]
        cos_cr = V.cosine_per_layer(kinds["mean_diff_chosen"], kinds["mean_diff_rejected"])
        reference = b_both
    residual = V.residual_norms(reference)
    rows = []
    for kind, vec in kinds.items():
        norms = np.linalg.norm(vec, axis=1)
        nxt = np.append(V.adjacent_layer_cosines(vec), np.nan)
        rel = V.relative_norms(vec, residual)
        for layer in range(n_layers):
            rows.append({"kind": kind, "layer": layer, "relative_depth": (layer + 1) / n_layers,
                         "norm": float(norms[layer]), "residual_norm": float(residual[layer]),
                         "relative_norm": float(rel[layer]), "stability": float(stability[kind][layer]),
                         "cos_chosen_rejected": float(cos_cr[layer]), "cos_next_layer": float(nxt[layer])})
    return kinds, pd.DataFrame(rows)


