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

from driftlib.artifacts import decode_metadata_value, load_tensors, read_table, write_json, write_table
from driftlib.errors import ArtifactError

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
    from driftlib.aqi import score_categories
    from driftlib.scoring import PROMPT_COLUMNS

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
    result.insert(0, "model", meta.get("model", ""))
    if out is not None:
        write_table(result, out, metadata={"method": method, "n_components": n_components, "n_boot": n_boot,
                                           "n_perm": n_perm, "confidence": confidence, "seed": seed,
                                           "kind": meta.get("kind", ""), "inject_layers": meta.get("inject_layers", []),
                                           "steps": meta.get("steps", "")})
    return result


def overall_curve(aqi: pd.DataFrame, vector: str) -> pd.DataFrame:
    """One vector's rows of a ``score-sweep`` table: overall category, primary layer, by lambda."""
    rows = aqi[(aqi["vector"] == vector) & aqi["primary"] & (aqi["category"] == "overall")]
    return rows.sort_values("lam")


def best_in_bound(curve: pd.DataFrame, cost: pd.DataFrame | None, max_kl: float,
                  max_repetition_increase: float) -> dict:
    """:func:`driftlib.capability.best_lambda` of one curve (``lam``, ``aqi``) with its cost table
    (``lam``, ``kl``, ``repetition``): the KL bound, and repetition counted above lambda 0's. With
    ``cost`` None (an uncosted control) every lambda is inside: the highest AQI wins."""
    from driftlib.capability import best_lambda

    lams = curve["lam"].tolist()
    if cost is None:
        return best_lambda(lams, curve["aqi"].tolist(), np.zeros(len(lams)), 0.0)
    merged = curve[["lam"]].merge(cost, on="lam", how="left")
    rep0 = merged.loc[merged["lam"] == 0, "repetition"]
    increase = merged["repetition"] - (float(rep0.iloc[0]) if len(rep0) else np.nan)
    costs = np.column_stack([merged["kl"].to_numpy(float), increase.to_numpy(float)])
    return best_lambda(lams, curve["aqi"].tolist(), costs, [max_kl, max_repetition_increase])


def states_at(arrays: dict, key: str, lambdas: list[float], lam: float, layer_index: int, path: str | Path) -> np.ndarray:
    """Hidden states ``[n, d]`` of one swept vector at one lambda and measurement-layer index."""
    if key not in arrays:
        raise ArtifactError(f"{path}: no tensor {key!r}; re-run the rule that writes it")
    return arrays[key][lambdas.index(lam), :, layer_index, :]


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


def summarize_steering(sweeps: Sequence[str | Path], costs: Sequence[str | Path], baseline_summary: str | Path,
                       out_dir: str | Path, *, max_kl: float, max_repetition_increase: float,
                       confidence: float = 0.95, seed: int = 0) -> dict:
    """Phase 3 summary: ``steering_summary.parquet``/``.csv``, ``best_lambda.json`` and per-model plots.

    For each model (primary measure layer, overall category; a model without a base variant is its
    aligned model steered with its contrastive vector, so its target is its own starting point):
    the own-vector and random-vector curves with intervals and costs, the aligned model's AQI as target, Spearman's rho with its
    interval, monotonicity within noise, and the best lambda: the highest own-vector AQI among
    lambdas whose KL and repetition stay inside the bounds (an AQI gain outside the bound is
    reported, never called a success).
    """
    from driftlib import plots
    from driftlib.capability import best_lambda

    out = Path(out_dir)
    phase1 = read_table(baseline_summary, columns=["model", "variant", "layer", "category", "aqi"],
                        producer="baseline_summary")[0]
    rows, report = [], {}
    for sweep_path, cost_path in zip(sweeps, costs):
        sweep = read_table(sweep_path, columns=["model", "vector", "lam", "layer", "category", "aqi"],
                           producer="score_sweep")[0]
        cost = read_table(cost_path, columns=["vector", "lam", "kl", "repetition"], producer="capability_cost")[0]
        model = str(sweep["model"].iloc[0])
        main = sweep[sweep["primary"] & (sweep["category"] == "overall")]
        merged = main.merge(cost, on=["vector", "lam"], how="left")
        # repetition counts as a cost only where it exceeds the unsteered model's own repetition
        unsteered = merged[merged["lam"] == 0].set_index("vector")["repetition"]
        merged["repetition_increase"] = merged["repetition"] - merged["vector"].map(unsteered)
        merged["inside_bound"] = (merged["kl"] <= max_kl) & (merged["repetition_increase"] <= max_repetition_increase)
        rows.append(merged)
        layer = int(main["layer"].iloc[0])
        tgt = phase1[(phase1["model"] == model) & (phase1["variant"] == "aligned") &
                     (phase1["category"] == "overall") & (phase1["layer"] == layer)]
        target = float(tgt["aqi"].iloc[0]) if len(tgt) else float("nan")
        target_ci = (float(tgt["ci_low"].iloc[0]), float(tgt["ci_high"].iloc[0])) if len(tgt) else None
        own = merged[merged["vector"] == "own"].sort_values("lam")
        rnd = merged[merged["vector"] == "random"].sort_values("lam")
        rho, rlo, rhi = spearman_interval(own["lam"], own["aqi"], own["se"], confidence=confidence, seed=seed)
        mono = monotonic_within_noise(own["lam"], own["ci_low"], own["ci_high"])
        best = best_lambda(own["lam"].tolist(), own["aqi"].tolist(),
                           own[["kl", "repetition_increase"]].to_numpy(dtype=float),
                           [max_kl, max_repetition_increase])
        r_rho = spearman_interval(rnd["lam"], rnd["aqi"], rnd["se"], confidence=confidence, seed=seed)
        report[model] = {"layer": layer, "target_aqi": target, "spearman_rho": rho, "spearman_ci": [rlo, rhi],
                         "monotonic": mono, "random_spearman_rho": r_rho[0], "random_spearman_ci": list(r_rho[1:]),
                         "best": best, "kind": read_table(sweep_path)[1].get("kind", "")}
        has_base = bool(((phase1["model"] == model) & (phase1["variant"] == "base")).any())
        steered = "base model" if has_base else "aligned model (no base)"
        plots.steering_curve(merged, merged, out / f"{model}_curve.png", target=target, target_ci=target_ci,
                             bounds={"max_kl": max_kl, "max_repetition_increase": max_repetition_increase},
                             title=f"{model}: {steered} steered with its own vector")
        plots.steering_axioms(sweep[sweep["primary"]], out / f"{model}_axioms.png",
                              title=f"{model}: per-axiom AQI under its own vector")
    if not rows:
        raise ArtifactError("no sweep tables given")
    summary = pd.concat(rows, ignore_index=True)
    write_table(summary, out / "steering_summary.parquet")
    write_table(summary.round(4), out / "steering_summary.csv")
    write_json(report, out / "best_lambda.json")
    return report
