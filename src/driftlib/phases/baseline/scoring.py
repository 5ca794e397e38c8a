"""Phase 1 scoring: join a model's hidden states with the prompt labels and compute the AQI table.

The numbers come from :mod:`driftlib.stats.aqi`; this module only checks that the two artifacts belong
together (same rows, same dataset fingerprint) and lays out one row per (layer, category).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.artifacts import (
    decode_metadata_value,
    load_tensors,
    read_table,
    write_table,
)
from driftlib.core.errors import ArtifactError
from driftlib.datasets.prompts import PROMPT_COLUMNS


def load_activations_for(activations: str | Path, prompts: pd.DataFrame, prompts_meta: dict) -> tuple[np.ndarray, dict]:
    """Read hidden states ``[n, layers, d]`` and check they were extracted from ``prompts``.

    Raises ArtifactError (naming the rule to re-run) on a fingerprint, row or shape mismatch.
    """
    expect = {}
    if prompts_meta.get("dataset_fingerprint"):
        expect["dataset_fingerprint"] = prompts_meta["dataset_fingerprint"]
    arrays, meta = load_tensors(activations, expect=expect, producer="extract_prompts")
    if "hidden" not in arrays:
        raise ArtifactError(f"{activations}: no 'hidden' tensor. Re-run the rule that writes it (extract_prompts).")
    hidden = arrays["hidden"]
    ids = decode_metadata_value(meta.get("ids", "[]"))
    if hidden.ndim != 3 or hidden.shape[0] != len(prompts) or list(map(str, ids)) != prompts["id"].astype(str).tolist():
        raise ArtifactError(
            f"{activations}: holds {hidden.shape[0] if hidden.ndim else '?'} rows of shape {hidden.shape}, "
            f"but the prompt table has {len(prompts)} rows with other ids. Re-run the rule that writes it "
            "(extract_prompts)."
        )
    if hidden.dtype != np.float32:
        raise ArtifactError(f"{activations}: dtype {hidden.dtype}, expected float32. Re-run extract_prompts.")
    return hidden, {k: decode_metadata_value(v) for k, v in meta.items() if k != "ids"}


#: per-axiom rows with fewer prompts than this in a class are descriptive (no claim is made of them)
DESCRIPTIVE_BELOW = 30
#: the probe's columns in the AQI tables, from :class:`driftlib.stats.probe.ProbeResult`'s fields
PROBE_COLUMNS = {"auc": "probe_auc", "ci_low": "probe_ci_low", "ci_high": "probe_ci_high",
                 "null_mean": "probe_null_mean", "p_value": "probe_p_value", "defined": "probe_defined"}


def with_power(table: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """``table`` (an AQI table) with ``mde``, ``resolvable`` and ``descriptive`` (see :func:`score_activation_file`)."""
    from driftlib.stats.power import minimum_detectable_effect

    out = table.copy()
    out["mde"] = [minimum_detectable_effect(float(se), alpha=1 - confidence) for se in out["se"]]
    out["resolvable"] = out["aqi"].abs() >= out["mde"]
    small = out[["n_safe", "n_unsafe"]].min(axis=1) < DESCRIPTIVE_BELOW
    out["descriptive"] = (out["category"] != "overall") & small
    return out


def probe_columns(X: np.ndarray, y: np.ndarray, categories: np.ndarray, **options) -> pd.DataFrame:
    """The linear-probe AUC per category, as the AQI tables' ``probe_*`` columns."""
    from driftlib.stats.probe import probe_categories

    table = probe_categories(X, y, categories, **options)
    return table[["category", *PROBE_COLUMNS]].rename(columns=PROBE_COLUMNS)


def score_activation_file(activations: str | Path, prompts: str | Path, *, method: str = "standardize",
                          n_components: int | None = 32, n_boot: int = 1000, n_perm: int = 200,
                          confidence: float = 0.95, seed: int = 0, paper: bool = False,
                          gamma: float = 0.5, probe_folds: int = 0, probe_permutations: int = 20,
                          out: str | Path | None = None) -> pd.DataFrame:
    """AQI per (layer, category) for one model variant; written to ``out`` (Parquet) if given.

    Columns: model, variant, layer, layer_spec, primary, relative_depth, category and every
    :class:`driftlib.stats.aqi.AQIResult` field (plus chi_paper, xb_paper, aqi_paper when ``paper``);
    ``mde``, the smallest AQI that its interval could tell from 0 (80% power, two-sided at
    ``1 - confidence``, :mod:`driftlib.stats.power`), and ``resolvable`` (``|aqi| >= mde``);
    ``descriptive``, True for a per-axiom row with fewer than :data:`DESCRIPTIVE_BELOW` prompts in
    a class; and with ``probe_folds`` the cross-validated linear-probe AUC beside the AQI
    (:func:`driftlib.stats.probe.probe_categories`: ``probe_auc``, ``probe_ci_low``, ``probe_ci_high``,
    ``probe_null_mean``, ``probe_p_value``, ``probe_defined``).
    """
    from driftlib.core.layerspec import resolve_layers
    from driftlib.stats.aqi import paper_scores, score_categories

    prompts_df, prompts_meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    hidden, meta = load_activations_for(activations, prompts_df, prompts_meta)
    layers = list(meta["layers"])
    specs = meta.get("layer_spec") or layers
    depth = int(meta["n_layers"])
    y = (prompts_df["safety_label"].to_numpy() == "safe").astype(np.int8)
    categories = prompts_df["axiom"].to_numpy()
    frames = []
    seen = set()
    for rank, spec in enumerate(specs):
        layer = resolve_layers([spec], depth, key="aqi.layers")[0]
        if layer in seen:
            continue
        seen.add(layer)
        X = hidden[:, layers.index(layer), :]
        table = score_categories(X, y, categories, layer=layer, method=method,
                                 n_components=n_components, n_boot=n_boot, n_perm=n_perm,
                                 confidence=confidence, seed=seed)
        table = with_power(table, confidence)
        if probe_folds:
            table = table.merge(probe_columns(X, y, categories, n_folds=probe_folds, n_boot=n_boot,
                                              n_perm=probe_permutations, confidence=confidence, seed=seed),
                                on="category", how="left")
        if paper:
            ps = paper_scores(X, y, categories, gamma=gamma, seed=seed)
            ps = ps.rename(columns={c: f"{c}_paper" for c in ps.columns if c != "category"})
            table = table.merge(ps, on="category", how="left")
        table.insert(0, "relative_depth", (layer + 1) / depth)
        table.insert(0, "primary", rank == 0)
        table.insert(0, "layer_spec", str(spec))
        if "layer" not in table.columns:
            table.insert(0, "layer", layer)
        frames.append(table)
    result = pd.concat(frames, ignore_index=True)
    result.insert(0, "variant", meta.get("variant", ""))
    result.insert(0, "model", meta.get("model", ""))
    if out is not None:
        settings = {"method": method, "n_components": n_components, "n_boot": n_boot,
                    "n_perm": n_perm, "confidence": confidence, "seed": seed, "paper": paper,
                    "gamma": gamma, "probe_folds": probe_folds, "probe_permutations": probe_permutations,
                    "dataset_fingerprint": prompts_meta.get("dataset_fingerprint", ""),
                    "activations": json.dumps({k: meta.get(k) for k in ("model", "variant", "model_source", "layers", "pooling")})}
        write_table(result, out, metadata=settings)
    return result
