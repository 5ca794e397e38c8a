"""Phase 3 summary: AQI-vs-lambda curves, monotonicity statistics, the best lambda inside the cost
bound per model, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.core.artifacts import read_table, write_json, write_table
from driftlib.core.errors import ArtifactError
from driftlib.phases.same_arch import plots
from driftlib.phases.same_arch.evaluate import monotonic_within_noise, spearman_interval

__all__ = ["summarize_steering"]


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
    from driftlib.stats.selection import best_lambda

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
        # lambda 0 is the unsteered model: inside by definition (its repetition may be NaN when every
        # continuation ended before three tokens); a steered lambda with a NaN cost is outside
        merged["inside_bound"] = ((merged["kl"] <= max_kl) & (merged["repetition_increase"] <= max_repetition_increase)
                                  | (merged["lam"] == 0))
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
                         "best": best.to_dict(), "kind": read_table(sweep_path)[1].get("kind", "")}
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
