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
                       confidence: float = 0.95, seed: int = 0, answers: Sequence[str | Path] = (),
                       behaviour: str | Path | None = None, stability_floor: float = 0.5) -> dict:
    """Phase 3 summary: ``steering_summary.parquet``/``.csv``, ``best_lambda.json``, ``gap_closed.parquet``/
    ``.csv`` and per-model plots (with ``answers``, the steered answer tables, also ``behaviour.png`` and
    ``behaviour_along_lambda.parquet``/``.csv``: refusal rates per model, operator, lambda and axiom,
    the per-axiom rows ``descriptive``).

    For each model (primary measure layer, overall category; a model without a base variant is its
    aligned model steered with its contrastive vector, so its target is its own starting point):
    the own-vector and random-vector curves with intervals and costs, the aligned model's AQI as target, Spearman's rho with its
    interval, monotonicity within noise, and the best lambda: the highest own-vector AQI among
    lambdas whose KL and repetition stay inside the bounds (an AQI gain outside the bound is
    reported, never called a success). With ``answers`` (and phase 1's ``behaviour`` table), the own
    vector's rows carry the refusal rates along lambda; ``gap_closed`` gives, per lambda, the share of
    the base-to-aligned gap closed for the AQI, the probe AUC and the refusal split
    (:mod:`driftlib.phases.same_arch.gaps`). A vector whose split-half stability at the injection
    blocks is below ``stability_floor`` is marked (``below_stability_floor``; its curve is noise-prone).
    """
    from driftlib.phases.same_arch.gaps import GAP_COLUMNS, behaviour_along_lambda, gap_rows, phase1_gaps
    from driftlib.stats.selection import best_lambda

    out = Path(out_dir)
    phase1 = read_table(baseline_summary, columns=["model", "variant", "layer", "category", "aqi"],
                        producer="baseline_summary")[0]
    phase1_behaviour = read_table(behaviour)[0] if behaviour else None
    by_axiom = behaviour_along_lambda(answers, confidence=confidence)
    steered_behaviour = by_axiom[by_axiom["axiom"] == "overall"].drop(columns=["axiom", "descriptive"])
    rows, report, gaps = [], {}, []
    for sweep_path, cost_path in zip(sweeps, costs):
        sweep = read_table(sweep_path, columns=["model", "vector", "lam", "layer", "category", "aqi"],
                           producer="score_sweep")[0]
        cost = read_table(cost_path, columns=["vector", "lam", "kl", "repetition"], producer="capability_cost")[0]
        model = str(sweep["model"].iloc[0])
        main = sweep[sweep["primary"] & (sweep["category"] == "overall")]
        merged = main.merge(cost, on=["vector", "lam"], how="left")
        beh = steered_behaviour[steered_behaviour["model"] == model].drop(columns=["model", "operator"], errors="ignore")
        if not beh.empty:
            merged = merged.merge(beh.assign(vector="own"), on=["vector", "lam"], how="left")
        # repetition counts as a cost only where it exceeds the unsteered model's own repetition
        unsteered = merged[merged["lam"] == 0].set_index("vector")["repetition"]
        merged["repetition_increase"] = merged["repetition"] - merged["vector"].map(unsteered)
        # lambda 0 is the unsteered model: inside by definition (its repetition may be NaN when every
        # continuation ended before three tokens); a steered lambda with a NaN cost is outside
        merged["inside_bound"] = ((merged["kl"] <= max_kl) & (merged["repetition_increase"] <= max_repetition_increase)
                                  | (merged["lam"] == 0))
        if "vector_stability" not in merged:
            merged["vector_stability"] = float("nan")
        merged["below_stability_floor"] = merged["vector_stability"] < stability_floor
        stability = float(merged.loc[merged["vector"] == "own", "vector_stability"].iloc[0])
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
                         "best": best.to_dict(), "kind": read_table(sweep_path)[1].get("kind", ""),
                         "vector_stability": stability, "below_stability_floor": bool(stability < stability_floor)}
        has_base = bool(((phase1["model"] == model) & (phase1["variant"] == "base")).any())
        operator = str(sweep["operator"].iloc[0]) if "operator" in sweep else "add"
        gaps += gap_rows(own, phase1_gaps(phase1, phase1_behaviour, model, layer, confidence), model=model,
                         operator=operator, has_base=has_base, confidence=confidence)
        steered = "base model" if has_base else "aligned model (no base)"
        plots.steering_curve(merged, merged, out / f"{model}_curve.png", target=target, target_ci=target_ci,
                             bounds={"max_kl": max_kl, "max_repetition_increase": max_repetition_increase},
                             title=f"{model}: {steered} steered with its own vector"
                             + (f" (stability {stability:.2f} < floor {stability_floor:g})"
                                if stability < stability_floor else ""))
        plots.steering_axioms(sweep[sweep["primary"]], out / f"{model}_axioms.png",
                              title=f"{model}: per-axiom AQI under its own vector")
    if not rows:
        raise ArtifactError("no sweep tables given")
    summary = pd.concat(rows, ignore_index=True)
    write_table(summary, out / "steering_summary.parquet")
    write_table(summary.round(4), out / "steering_summary.csv")
    write_json(report, out / "best_lambda.json")
    gap_table = pd.DataFrame(gaps, columns=GAP_COLUMNS)
    write_table(gap_table, out / "gap_closed.parquet")
    write_table(gap_table.round(4), out / "gap_closed.csv")
    if answers:
        write_table(by_axiom, out / "behaviour_along_lambda.parquet")
        write_table(by_axiom.round(4), out / "behaviour_along_lambda.csv")
    if not steered_behaviour.empty:
        plots.behaviour_along_lambda(steered_behaviour, phase1_behaviour, out / "behaviour.png")
    return report
