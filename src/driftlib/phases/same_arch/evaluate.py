"""Phase 3: does ``h + lambda * v`` move a base model toward its aligned model?

Scores the hidden states of a lambda sweep (the model's own vector and a random vector of the
same per-layer norms), and summarises each model's curve: Spearman's rho between lambda and AQI
with an interval, whether the curve is monotonic within noise, the aligned model's AQI as the
target, the capability cost, and the best lambda inside the cost bound (design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

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
                producer: str = "sweep_same_arch") -> pd.DataFrame:
    """AQI per (vector, lambda, layer, category) from a sweep file.

    The sweep file (``driftlib sweep`` or ``driftlib transfer-sweep``) holds one tensor
    ``[n_lambdas, n, n_layers, d]`` per vector: the names listed in its ``vectors`` metadata
    (phase 3's files, which have none, hold ``own`` and ``random``).
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
    for vector in vectors:
        h = arrays.get(vector)
        if h is None or h.shape[:3] != (len(lambdas), len(prompts_df), len(layers)):
            raise ArtifactError(f"{sweep}: tensor {vector!r} missing or of shape "
                                f"{None if h is None else h.shape}. Re-run the rule that writes it ({producer}).")
        for i, lam in enumerate(lambdas):
            for j, layer in enumerate(layers):
                table = score_categories(h[i, :, j, :], y, categories, layer=layer, method=method,
                                         n_components=n_components, n_boot=n_boot, n_perm=n_perm,
                                         confidence=confidence, seed=seed)
                table.insert(0, "lam", float(lam))
                table.insert(0, "vector", vector)
                frames.append(table)
    result = pd.concat(frames, ignore_index=True)
    result.insert(0, "primary", result["layer"] == layers[0])
    result.insert(0, "operator", meta.get("operator", "add"))
    result.insert(0, "model", meta.get("model", ""))
    if out is not None:
        write_table(result, out, metadata={"method": method, "n_components": n_components, "n_boot": n_boot,
                                           "n_perm": n_perm, "confidence": confidence, "seed": seed,
                                           "kind": meta.get("kind", ""), "inject_layers": meta.get("inject_layers", []),
                                           "steps": meta.get("steps", ""), "operator": meta.get("operator", "add")})
    return result


def spearman_interval(lams: Sequence[float], aqi: Sequence[float], se: Sequence[float], *,
                      confidence: float = 0.95, n_draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho between lambda and AQI, with an interval from a parametric bootstrap.

    Each draw replaces every AQI by ``N(aqi, se^2)`` independently and recomputes rho. The draws
    ignore the positive correlation between lambdas (they share the prompts), so the interval is
    conservative (wider than the truth). Returns ``(rho, low, high)``; NaN with fewer than 3 lambdas.
    """
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


