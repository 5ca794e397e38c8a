"""Phase 4 summary: the source x target matrix (:func:`transfer_matrix`), the baseline model's row,
the behaviour of each target under each source's mapped vector (:func:`transfer_behaviour`), and the
heatmaps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import math

import numpy as np
import pandas as pd

from driftlib.core.artifacts import json_number, read_json, read_table, write_json, write_table
from driftlib.core.errors import ConfigError
from driftlib.phases.cross_arch import plots
from driftlib.stats.selection import transfer_matrix as rank_cells

__all__ = ["BEHAVIOUR_COLUMNS", "summarize_transfer", "transfer_behaviour", "transfer_matrix"]


def transfer_matrix(fits: Sequence[str | Path], efficiencies: Sequence[str | Path], *,
                    stability_floor: float = 0.5) -> pd.DataFrame:
    """One row per (source, target, method, operator) from the ``fit_maps`` and ``transfer_efficiency``
    tables: :func:`driftlib.stats.selection.transfer_matrix` of the concatenated tables, per operator
    (so ``best`` is each cell's best method under that operator), with ``below_stability_floor``
    where the source vector's split-half stability is below ``stability_floor``."""
    fit = pd.concat([read_table(f, producer="fit_maps")[0] for f in fits], ignore_index=True)
    eff = pd.concat([read_table(f, producer="transfer_efficiency")[0] for f in efficiencies], ignore_index=True)
    if "operator" not in eff:
        eff["operator"] = "add"
    matrix = pd.concat([rank_cells(fit, rows).assign(operator=op) for op, rows in eff.groupby("operator", sort=False)],
                       ignore_index=True)
    if "vector_stability" not in matrix:
        matrix["vector_stability"] = float("nan")
    matrix["below_stability_floor"] = matrix["vector_stability"] < stability_floor
    return matrix


#: the columns of ``transfer_behaviour.parquet``
BEHAVIOUR_COLUMNS = [
    "source", "target", "method", "operator", "lam", "axiom", "n_unsafe", "refusal_unsafe", "refusal_unsafe_ci_low",
    "refusal_unsafe_ci_high", "n_safe", "over_refusal_safe", "over_refusal_safe_ci_low", "over_refusal_safe_ci_high",
    "split", "split_ci_low", "split_ci_high", "unsteered_split", "change", "change_ci_low", "change_ci_high",
    "change_se", "change_mde", "change_resolvable", "descriptive"]


def transfer_behaviour(answers: Sequence[str | Path], *, confidence: float = 0.95) -> pd.DataFrame:
    """Each target's behaviour under each source's mapped vector, against the target unsteered.

    Args:
        answers: the ``transfer-answers`` tables, one per target (rows with ``source`` ``""`` are
            the target unsteered; the others one mapped vector at its best lambda).
        confidence: coverage of the intervals; the MDE uses ``alpha = 1 − confidence`` and 80% power.

    Returns:
        One row per (source, target, method, operator) and axiom, ``overall`` first
        (:data:`BEHAVIOUR_COLUMNS`): the refusal rate on unsafe prompts and the over-refusal rate on
        safe ones (Wilson intervals), the refusal split (their difference, Newcombe interval), the
        unsteered target's split, and ``change`` = split − unsteered split with a MOVER interval, its
        Agresti-Caffo standard error, minimum detectable effect and ``change_resolvable``
        (``|change| >= MDE``). Per-axiom rows are ``descriptive`` (a few prompts a class). The
        steered and unsteered answers are to the same prompts but are treated as independent
        samples (conservative when their verdicts correlate), as phase 4.5 does.
    """
    from driftlib.stats.behaviour import refusal_rates, split_difference_interval, split_from_counts
    from driftlib.stats.power import minimum_detectable_effect

    def rates(df: pd.DataFrame) -> pd.DataFrame:
        table = refusal_rates(df["refused"].to_numpy(bool), df["safety_label"].to_numpy(), df["axiom"].to_numpy(),
                              confidence=confidence)
        order = ["overall"] + sorted(a for a in table["axiom"] if a != "overall")
        return table.set_index("axiom").loc[order]

    def split(r: pd.Series) -> dict:
        return split_from_counts(int(r["refused_unsafe"]), int(r["n_unsafe"]), int(r["refused_safe"]), int(r["n_safe"]),
                                 confidence)

    rows = []
    for path in answers:
        df = read_table(path, columns=["model", "operator", "lam", "axiom", "safety_label", "refused", "source",
                                       "method"], producer="transfer_answers")[0]
        steered = df["source"] != ""
        base = rates(df[~steered])
        for (source, method, operator), sub in df[steered].groupby(["source", "method", "operator"], sort=True):
            for axiom, r in rates(sub).iterrows():
                s, b = split(r), split(base.loc[axiom])
                lo, hi = split_difference_interval(s, b)
                se = math.hypot(s["se"], b["se"])
                mde = minimum_detectable_effect(se, alpha=1 - confidence) if np.isfinite(se) else float("nan")
                change = s["split"] - b["split"]
                rows.append({
                    "source": source, "target": str(df["model"].iloc[0]), "method": method, "operator": operator,
                    "lam": float(sub["lam"].iloc[0]), "axiom": axiom, "n_unsafe": int(r["n_unsafe"]),
                    **{c: r[c] for c in ("refusal_unsafe", "refusal_unsafe_ci_low", "refusal_unsafe_ci_high")},
                    "n_safe": int(r["n_safe"]),
                    **{c: r[c] for c in ("over_refusal_safe", "over_refusal_safe_ci_low", "over_refusal_safe_ci_high")},
                    "split": s["split"], "split_ci_low": s["ci_low"], "split_ci_high": s["ci_high"],
                    "unsteered_split": b["split"], "change": change, "change_ci_low": lo, "change_ci_high": hi,
                    "change_se": se, "change_mde": mde,
                    "change_resolvable": bool(np.isfinite(mde) and abs(change) >= mde),
                    "descriptive": axiom != "overall"})
    return pd.DataFrame(rows, columns=BEHAVIOUR_COLUMNS)


def summarize_transfer(fits: Sequence[str | Path], efficiencies: Sequence[str | Path], baseline: str | Path,
                       matchings: Sequence[str | Path], out_dir: str | Path, *, matrix_method: str = "best",
                       stability_floor: float = 0.5, answers: Sequence[str | Path] = (),
                       confidence: float = 0.95) -> dict:
    """The source x target matrix (:func:`transfer_matrix`): ``transfer_matrix.parquet``/``.csv``
    (one row per source, target, method and operator), ``transfer_summary.json`` (the baseline
    model's row under the main operator, ``baseline_row``, and under each operator,
    ``baseline_by_operator``) and the heatmaps (``transfer_matrix.png``, one row of panels per
    operator; ``transfer_fit.png``, ``layer_matching.png``). With ``answers`` (``transfer-answers``,
    one table per target), also ``transfer_behaviour.parquet``/``.csv`` (:func:`transfer_behaviour`),
    its plot ``transfer_behaviour.png`` and the count of resolvable behaviour changes per operator."""

    from driftlib.stats.maps import METHODS

    if matrix_method not in ("best", *METHODS):
        raise ConfigError(f"cross_arch.matrix_method: {matrix_method!r}; use best or one of {', '.join(METHODS)}")
    out = Path(out_dir)
    matrix = transfer_matrix(fits, efficiencies, stability_floor=stability_floor)
    main = str(read_table(efficiencies[0])[1].get("operator", matrix["operator"].iloc[0]))
    write_table(matrix, out / "transfer_matrix.parquet")
    write_table(matrix.round(4), out / "transfer_matrix.csv")

    choice = read_json(baseline, producer="baseline_summary")
    base = choice.get("baseline")
    shown = matrix[matrix["best"]] if matrix_method == "best" else matrix[matrix["method"] == matrix_method]
    by_operator = {op: _baseline_row(rows, base) for op, rows in shown.groupby("operator", sort=False)}
    main_rows = matrix[matrix["operator"] == main]
    summary = {
        "baseline": base, "matrix_method": matrix_method, "operator": main,
        "baseline_row": by_operator.get(main, {}),
        "baseline_by_operator": by_operator,
        "best_method_counts": main_rows[main_rows["best"]]["method"].value_counts().to_dict(),
        "mean_heldout_r2": main_rows.groupby("method")["r2"].mean().to_dict(),
        "mean_shuffled_r2": main_rows.groupby("method")["shuffled_r2"].mean().to_dict(),
        "stability_floor": stability_floor,
    }
    summary["note"] = _baseline_note(base, summary["baseline_row"])
    if answers:
        # the mapped vector's split-half stability travels into the behaviour rows it produced
        cell = ["source", "target", "method", "operator"]
        behaviour = transfer_behaviour(answers, confidence=confidence).merge(
            matrix[cell + ["vector_stability", "below_stability_floor"]], on=cell, how="left")
        write_table(behaviour, out / "transfer_behaviour.parquet")
        write_table(behaviour.round(4), out / "transfer_behaviour.csv")
        overall = behaviour[behaviour["axiom"] == "overall"]
        summary["behaviour"] = {
            str(op): {"cells": int(len(rows)), "resolvable_changes": int(rows["change_resolvable"].sum()),
                      "mean_change": json_number(rows["change"].mean()),
                      "median_mde": json_number(rows["change_mde"].median())}
            for op, rows in overall.groupby("operator", sort=False)}
        plots.transfer_behaviour(overall, out / "transfer_behaviour.png", main=main)
    write_json(summary, out / "transfer_summary.json")
    plots.transfer_matrix(matrix, out / "transfer_matrix.png", method=matrix_method, baseline=base, main=main)
    plots.transfer_fit(main_rows, out / "transfer_fit.png")
    plots.layer_matching([read_json(m, producer="fit_maps") for m in matchings], out / "layer_matching.png",
                         source=base)
    return summary


def _baseline_row(shown: pd.DataFrame, base: str | None) -> dict:
    return {str(r.target): {"method": r.method, "efficiency": json_number(r.efficiency),
                            "ci": [json_number(r.ci_low), json_number(r.ci_high)], "defined": bool(r.defined),
                            "r2": json_number(r.r2), "cos_own": json_number(r.cos_own),
                            "random_efficiency": json_number(r.random_efficiency),
                            "shuffled_efficiency": json_number(r.shuffled_efficiency),
                            "vector_stability": json_number(r.vector_stability),
                            "below_stability_floor": bool(r.below_stability_floor),
                            "condition_accuracy": json_number(getattr(r, "condition_accuracy", None))}
            for r in shown[shown["source"] == base].itertuples()}


def _baseline_note(base: str | None, row: dict) -> str:
    if base is None:
        return "phase 1 chose no baseline model"
    if not row:
        return f"the baseline model {base} has no transfer targets (no other model has a base variant)"
    parts = []
    for target, cell in row.items():
        if not cell["defined"]:
            parts.append(f"{target}: undefined (its own vector does not raise the AQI beyond noise)")
        else:
            lo, hi = cell["ci"]
            parts.append(f"{target}: {cell['efficiency']:.2f} [{lo if lo is None else round(lo, 2)}, "
                         f"{hi if hi is None else round(hi, 2)}] with {cell['method']}")
    return f"transfer efficiency of the baseline model {base}'s vector: " + "; ".join(parts)
