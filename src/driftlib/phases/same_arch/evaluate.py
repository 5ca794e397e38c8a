"""Phase 3: does ``h + lambda * v`` move a base model toward its aligned model?

Scores the hidden states of a lambda sweep (the model's own vector and a random vector of the
same per-layer norms), and summarises each model's curve: Spearman's rho between lambda and AQI
with an interval, whether the curve is monotonic within noise, the aligned model's AQI as the
target, the capability cost, and the best lambda inside the cost bound (design.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
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

VECTORS = ("own", "random")


def score_sweep(sweep: str | Path, prompts: str | Path, *, method: str = "standardize",
                n_components: int | None = 32, n_boot: int = 1000, n_perm: int = 200,
                confidence: float = 0.95, seed: int = 0, out: str | Path | None = None,
                producer: str = "sweep_same_arch", probe_folds: int = 0, probe_permutations: int = 0,
                probe_axioms: bool = False, probe_vectors: Sequence[str] | None = None) -> pd.DataFrame:
    """AQI per (vector, lambda, layer, category) from a sweep file.

    The sweep file (``driftlib sweep`` or ``driftlib transfer-sweep``) holds one tensor
    ``[n_lambdas, n, n_layers, d]`` per vector: the names listed in its ``vectors`` metadata
    (phase 3's files, which have none, hold ``own`` and ``random``). With ``probe_folds``, the
    overall rows of the primary layer also carry the cross-validated linear-probe AUC
    (:func:`sweep_probe`), with ``probe_permutations`` label shuffles of its null, and with
    ``probe_axioms`` the per-axiom rows of the primary layer too; ``probe_vectors`` limits the null
    and the per-axiom rows to the vectors of these names (a name before ``/`` counts: ``same_arch``
    covers ``same_arch/ablate``; None: every vector), the others keep the overall probe and its interval.
    """
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.stats.aqi import score_categories

    prompts_df, prompts_meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    expect = {"dataset_fingerprint": prompts_meta["dataset_fingerprint"]} if prompts_meta.get("dataset_fingerprint") else None
    arrays, meta = load_tensors(sweep, expect=expect, producer=producer)
    meta = {k: decode_metadata_value(v) for k, v in meta.items()}
    vectors = meta.get("vectors") or VECTORS
    lambdas, layers = list(meta["lambdas"]), list(meta["measure_layers"])
    y = (prompts_df["safety_label"].to_numpy() == "safe").astype(np.int8)
    categories = prompts_df["axiom"].to_numpy()
    frames = []
    # the same states score the same (same seed): lambda 0 steers nothing, so every vector of a sweep
    # shares it, and a transfer sweep holds over a hundred vectors; each distinct block is scored once
    scored: dict[tuple[int, bytes], pd.DataFrame] = {}
    for vector in vectors:
        h = arrays.get(vector)
        if h is None or h.shape[:3] != (len(lambdas), len(prompts_df), len(layers)):
            raise ArtifactError(f"{sweep}: tensor {vector!r} missing or of shape "
                                f"{None if h is None else h.shape}. Re-run the rule that writes it ({producer}).")
        for i, lam in enumerate(lambdas):
            for j, layer in enumerate(layers):
                x = np.ascontiguousarray(h[i, :, j, :])
                key = (j, hashlib.blake2b(x.tobytes(), digest_size=16).digest())
                if key not in scored:
                    scored[key] = score_categories(x, y, categories, layer=layer, method=method,
                                                   n_components=n_components, n_boot=n_boot, n_perm=n_perm,
                                                   confidence=confidence, seed=seed)
                table = scored[key].copy()
                table.insert(0, "lam", float(lam))
                table.insert(0, "vector", vector)
                frames.append(table)
    result = pd.concat(frames, ignore_index=True)
    if probe_folds:
        fitted: dict[tuple, Any] = {}  # as for the AQI: each distinct block is probed once

        def full(v: str) -> bool:
            return probe_vectors is None or v.split("/")[0] in probe_vectors

        probes = pd.concat([sweep_probe(arrays[v][:, :, 0, :], y, lambdas, layers[0], vector=v, n_folds=probe_folds,
                                        n_boot=n_boot, confidence=confidence, seed=seed, cache=fitted,
                                        n_perm=probe_permutations if full(v) else 0,
                                        categories=categories if probe_axioms and full(v) else None)
                            for v in vectors],
                           ignore_index=True)
        result = result.merge(probes, on=["vector", "lam", "layer", "category"], how="left")
    if "own" in vectors and 0.0 in lambdas:
        result = result.merge(paired_gains(arrays["own"], y, lambdas, layers[0], method=method,
                                           n_components=n_components, n_boot=n_boot, confidence=confidence, seed=seed),
                              on=["vector", "lam", "layer", "category"], how="left")
    stability = meta.get("stability") or {}
    # the steering vector's split-half stability at its injection blocks (phase 2), NaN for controls
    result["vector_stability"] = result["vector"].map(lambda v: float(stability.get(v, float("nan"))))
    result.insert(0, "primary", result["layer"] == layers[0])
    # a sweep of several operators (phases 4 and 4.5) names each vector's operator in its metadata
    operators = meta.get("operators") or {}
    result.insert(0, "operator", result["vector"].map(lambda v: operators.get(v, meta.get("operator", "add"))))
    result.insert(0, "model", meta.get("model", ""))
    if out is not None:
        write_table(result, out, metadata={"method": method, "n_components": n_components, "n_boot": n_boot,
                                           "n_perm": n_perm, "confidence": confidence, "seed": seed,
                                           "kind": meta.get("kind", ""), "inject_layers": meta.get("inject_layers", []),
                                           "steps": meta.get("steps", ""), "operator": meta.get("operator", "add"),
                                           "probe_folds": probe_folds, "probe_permutations": probe_permutations,
                                           "probe_axioms": probe_axioms,
                                           "probe_vectors": list(probe_vectors) if probe_vectors is not None else None})
    return result


#: the paired comparison of each lambda with lambda 0 (phase 3's own vector, primary layer, overall)
GAIN_COLUMNS = ["gain", "gain_ci_low", "gain_ci_high", "gain_se", "gain_p", "gain_p_floor", "gain_mde",
                "gain_resolvable"]


def paired_gains(h: np.ndarray, y: np.ndarray, lambdas: list[float], layer: int, *, method: str,
                 n_components: int | None, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    """AQI(lambda) − AQI(0) of the own vector on the same prompts, for every lambda, from a paired
    bootstrap (:func:`driftlib.stats.paired.paired_difference`: the interval and the test come from
    the same draws, so they agree; ``gain_p_floor`` is the smallest p the draws can give), with the
    minimum detectable effect and whether the gain reaches it.

    Args:
        h: the sweep's own-vector states ``[n_lambdas, n, n_layers, d]`` (the primary layer is index 0).
        y: ``[n]`` labels, 1 = safe.
    """
    from driftlib.stats.paired import paired_difference

    zero = lambdas.index(0.0)
    rows = []
    for i, lam in enumerate(lambdas):
        if i == zero:
            continue
        r = paired_difference(None, h[i, :, 0, :], h[zero, :, 0, :], y, n_boot=n_boot, confidence=confidence,
                              seed=seed, method=method, n_components=n_components)
        rows.append({"vector": "own", "lam": float(lam), "layer": int(layer), "category": "overall",
                     "gain": r.difference, "gain_ci_low": r.ci_low, "gain_ci_high": r.ci_high, "gain_se": r.se,
                     "gain_p": r.p_value,
                     "gain_p_floor": r.p_floor, "gain_mde": r.mde,
                     "gain_resolvable": bool(r.defined and abs(r.difference) >= r.mde)})
    return pd.DataFrame(rows, columns=["vector", "lam", "layer", "category", *GAIN_COLUMNS])


#: the linear-probe columns of a sweep's rows at the primary layer (overall, and per axiom on request)
SWEEP_PROBE_COLUMNS = ["probe_auc", "probe_ci_low", "probe_ci_high", "probe_se", "probe_p", "probe_null_mean",
                       "probe_n_perm"]


def sweep_probe(h: np.ndarray, y: np.ndarray, lambdas: Sequence[float], layer: int, *, vector: str, n_folds: int,
                n_boot: int, confidence: float, seed: int, cache: dict[tuple, Any] | None = None,
                n_perm: int = 0, categories: np.ndarray | None = None) -> pd.DataFrame:
    """Cross-validated linear-probe AUC (:func:`driftlib.stats.probe.probe_auc`) of one vector's states at
    every lambda, with its bootstrap interval, standard error and, with ``n_perm``, its label-shuffle
    null (the cross-validation refitted per shuffle, as in phase 1; ``probe_p >= 1/(n_perm+1)``).

    The null costs ``n_perm * n_folds`` fits per distinct block of states, so the workflow asks for it
    where a sweep holds a few blocks (phases 3 and 4.5) and leaves it out of phase 4's transfer sweeps
    (hundreds of blocks), where ``probe_p`` is NaN and ``probe_n_perm`` 0.

    Args:
        h: ``[n_lambdas, n, d]`` the vector's states at the primary layer.
        y: ``[n]`` labels, 1 = safe.
        lambdas: the sweep's lambdas; layer: the primary layer (recorded); vector: its name.
        cache: results by the bytes' digest of a block of states (with the null's shuffle count and
            whether axiom rows were asked for), filled and reused across calls (the same states with the same seed
            give the same result: lambda 0 is shared by every vector).
        n_perm: label shuffles of the null (0: none).
        categories: ``[n]`` each prompt's axiom: also one row per axiom, each from that axiom's prompts
            alone and without the null (descriptive: a few prompts a class). None: the ``overall`` row only.
    """
    from driftlib.stats.probe import probe_auc

    cache = {} if cache is None else cache
    options = {"n_folds": n_folds, "n_boot": n_boot, "confidence": confidence, "seed": seed}
    cats = None if categories is None else np.asarray(categories).astype(str)
    masks = {} if cats is None else {axiom: cats == axiom for axiom in sorted(set(cats.tolist()))}
    rows = []
    for i, lam in enumerate(lambdas):
        x = np.ascontiguousarray(h[i])
        key = (hashlib.blake2b(x.tobytes(), digest_size=16).digest(), int(n_perm), cats is not None)
        if key not in cache:
            found = [{"category": "overall", **probe_auc(x, y, n_perm=n_perm, **options).as_dict()}]
            for axiom, mask in masks.items():  # each from its own prompts; descriptive, so without the null's cost
                found.append({"category": axiom, **probe_auc(x[mask], y[mask], n_perm=0, **options).as_dict()})
            cache[key] = found
        for r in cache[key]:
            rows.append({"vector": vector, "lam": float(lam), "layer": int(layer), "category": r["category"],
                         "probe_auc": r["auc"], "probe_ci_low": r["ci_low"], "probe_ci_high": r["ci_high"],
                         "probe_se": r["se"], "probe_p": r["p_value"], "probe_null_mean": r["null_mean"],
                         "probe_n_perm": int(r["n_perm"])})
    return pd.DataFrame(rows, columns=["vector", "lam", "layer", "category", *SWEEP_PROBE_COLUMNS])


def spearman_interval(lams: Sequence[float], aqi: Sequence[float], se: Sequence[float], *,
                      confidence: float = 0.95, n_draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho between lambda and AQI, with an interval from a parametric bootstrap.

    Each draw replaces every AQI by ``N(aqi, se^2)`` independently and recomputes rho. The draws
    ignore the positive correlation between lambdas (they share the prompts), so the interval is
    conservative (wider than the truth). Returns ``(rho, low, high)``; NaN with fewer than 3 lambdas.
    """
    from scipy import stats  # here: scoring a sweep need not load scipy.stats

    lams, aqi, se = (np.asarray(a, dtype=float) for a in (lams, aqi, se))
    ok = np.isfinite(aqi)
    if ok.sum() < 3:
        return float("nan"), float("nan"), float("nan")
    lams, aqi, se = lams[ok], aqi[ok], np.nan_to_num(se[ok])
    rho = float(stats.spearmanr(lams, aqi).statistic)
    rng = np.random.default_rng(seed)
    draws = aqi + rng.standard_normal((n_draws, aqi.size)) * se
    rank_l = stats.rankdata(lams)
    rank_d = stats.rankdata(draws, axis=1)
    rl = rank_l - rank_l.mean()
    rd = rank_d - rank_d.mean(axis=1, keepdims=True)
    denom = np.sqrt((rl ** 2).sum() * (rd ** 2).sum(axis=1))
    rhos = np.where(denom > 0, (rd * rl).sum(axis=1) / np.where(denom > 0, denom, 1), 0.0)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(rhos, [alpha, 1 - alpha])
    return rho, float(lo), float(hi)


def monotonic_within_noise(lams: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float]) -> dict:
    """Whether the AQI curve rises (or falls) with lambda within noise.

    Increasing within noise: no larger lambda has an interval entirely below the interval of a
    smaller lambda (``ci_high[j] < ci_low[i]`` for some ``i < j`` in lambda order). Decreasing
    likewise. Returns ``{"increasing": bool, "decreasing": bool}``; a flat noisy curve is both.
    """
    order = np.argsort(np.asarray(lams, dtype=float))
    lo = np.asarray(ci_low, dtype=float)[order]
    hi = np.asarray(ci_high, dtype=float)[order]
    inc = dec = True
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            if hi[j] < lo[i]:
                inc = False
            if lo[j] > hi[i]:
                dec = False
    return {"increasing": inc, "decreasing": dec}


