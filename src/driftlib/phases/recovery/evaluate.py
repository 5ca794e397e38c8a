"""Phase 4.5: can steering recover alignment that was deliberately broken, and how much of it?

Each aligned model is dealigned by LoRA adapters trained on the rejected responses of the
preference pairs (:mod:`driftlib.phases.recovery.dealign`), at several strengths (training step counts). Each
dealigned model is then steered over the lambda grid with (a) its own family's vector
(``same_arch``), (b) the phase-1 baseline model's vector mapped into it with the best phase-4 map
(``cross_arch``, where phase 4 has that pair) and (c) a random vector with the same-arch vector's
norms (``random``, the control).

The recovery rate at the best lambda is::

    rate = (AQI_steered - AQI_dealigned) / (AQI_aligned - AQI_dealigned)

with a paired bootstrap interval over prompts (the same structure as phase 4's transfer
efficiency, so :func:`driftlib.stats.transfer.transfer_efficiency` computes it: the dealigned model is
the unsteered state, the aligned model the reference). It is undefined when the drop
``AQI_aligned - AQI_dealigned`` is inside the noise (its interval reaches 0).

Each vector is also swept under every operator of ``steering.compare`` (a conditional operator
gated by the model key's phase-3 condition), so the rates come per (vector, operator). Behaviour:
the recovery sweep writes the dealigned model's greedy answers under the same-arch vector at every
lambda; :func:`behaviour_recovery` gives the behavioural drop (the aligned model's refusal split
from phase 1 minus the dealigned model's) and the share of it recovered at the best lambda.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def recovery_rate(aqi_aligned: float, aqi_dealigned: float, aqi_steered: float) -> float:
    """``(steered - dealigned) / (aligned - dealigned)``; NaN when there is no drop (``<= 0``).

    1 means steering brought the model back to the aligned model's AQI, 0 that it did nothing,
    above 1 that it overshot, below 0 that it made things worse.
    """
    drop = float(aqi_aligned) - float(aqi_dealigned)
    if not math.isfinite(drop) or drop <= 0 or not math.isfinite(float(aqi_steered)):
        return float("nan")
    return (float(aqi_steered) - float(aqi_dealigned)) / drop


def recovery_note(r: dict, confidence: float) -> str:
    """Why a recovery rate is undefined (or a remark), in phase 4.5's words, from
    :func:`driftlib.stats.transfer.transfer_efficiency`'s result (the aligned model is its reference)."""
    drop, (lo, hi) = r["gain_own"], r["gain_own_ci"]
    if r["reason"] == "no_reference_gain":
        return f"undefined: the dealignment did not lower the AQI (drop = {drop:.4g} <= 0), so there is nothing to recover"
    if r["reason"] == "reference_gain_in_noise":
        return (f"undefined: the dealignment drop is inside the noise (drop = {drop:.4g}, {100 * confidence:g}% "
                f"interval [{lo:.4g}, {hi:.4g}] includes 0), so a recovery rate would divide by noise")
    return r["note"]


def recovery_key(vector: str, operator: str | None = None) -> str:
    """The name of one swept vector in a recovery sweep: ``same_arch``, ``cross_arch`` or ``random``
    under the main operator (``steering.operator``), ``{vector}/{operator}`` under a compared one."""
    return vector + (f"/{operator}" if operator else "")


def evaluate_recovery(sweep: str | Path, sweep_aqi: str | Path, cost: str | Path, aligned: str | Path,
                      prompts: str | Path, *, steps: int, max_kl: float, max_repetition_increase: float,
                      method: str = "standardize", n_components: int | None = 32, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """Recovery of one dealigned model (one strength) by each swept vector under each operator, with intervals.

    ``aligned``: the aligned model's phase-1 hidden states (``extract_prompts``), read at the
    primary measurement layer of the sweep. The same-arch and cross-arch vectors are taken at their
    best lambda inside the capability-cost bound (measured under the same operator); the random
    control at its highest AQI. One row per (vector, operator): ``vector`` is ``same_arch``,
    ``cross_arch`` or ``random``, ``operator`` the operator it was steered under (every operator
    shares the unsteered dealigned state, so the drop is the same in each). Rows carry the swept
    vector's split-half ``vector_stability`` (NaN for the random control) and, under the
    conditional operator, the condition's accuracy in the dealigned model.
    """
    from driftlib.datasets.prompts import PROMPT_COLUMNS
    from driftlib.stats.selection import best_in_bound, overall_curve, states_at
    from driftlib.stats.transfer import transfer_efficiency

    prompts_df, _ = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    y = (prompts_df["safety_label"].to_numpy() == "safe").astype(np.int8)
    arrays, raw = load_tensors(sweep, producer="recovery_sweep")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    a_arrays, a_raw = load_tensors(aligned, producer="extract_prompts")
    a_meta = {k: decode_metadata_value(v) for k, v in a_raw.items()}
    layer = int(meta["measure_layers"][0])
    if layer not in a_meta.get("layers", []):
        raise ArtifactError(f"{aligned}: has layers {a_meta.get('layers')}, not the measurement layer {layer}; "
                            "steering.measure_layers must be listed in aqi.layers (re-run extract_prompts)")
    if a_meta.get("dataset_fingerprint") != meta.get("dataset_fingerprint"):
        raise ArtifactError(f"{aligned} and {sweep} were computed on different prompts; re-run recovery_sweep")
    h_aligned = a_arrays["hidden"][:, a_meta["layers"].index(layer), :]
    table = read_table(sweep_aqi, columns=["vector", "lam", "layer", "category", "aqi"], producer="score_recovery")[0]
    costs = read_table(cost, columns=["vector", "lam", "kl", "repetition"], producer="recovery_sweep")[0]
    lambdas = list(meta["lambdas"])
    main = meta.get("operator", "add")
    operators, stability = meta.get("operators") or {}, meta.get("stability") or {}
    condition = meta.get("condition") or {}
    h0 = states_at(arrays, "same_arch", lambdas, 0.0, 0, sweep)
    rows = []
    for key in meta["vectors"]:
        costed = costs[costs["vector"] == key]
        best = best_in_bound(overall_curve(table, key), costed if len(costed) else None, max_kl, max_repetition_increase)
        lam = best.lam if best.lam is not None else 0.0
        h = states_at(arrays, key, lambdas, lam, 0, sweep)
        r = transfer_efficiency(h0, h, h_aligned, y, method=method, n_components=n_components,
                                n_boot=n_boot, confidence=confidence, seed=seed)
        note = recovery_note(r, confidence)
        operator = operators.get(key, main)
        cond = condition if operator == "conditional" else {}
        vector = key.split("/")[0]
        rows.append({"model": meta.get("model", ""), "steps": int(steps), "vector": vector, "operator": operator,
                     "source": meta.get("sources", {}).get(key, ""), "lam": float(lam), "layer": layer,
                     "drop": r["gain_own"], "drop_ci_low": r["gain_own_ci"][0], "drop_ci_high": r["gain_own_ci"][1],
                     "drop_mde": r["gain_own_mde"], "drop_resolvable": bool(abs(r["gain_own"]) >= r["gain_own_mde"]),
                     "gain": r["gain_mapped"], "gain_ci_low": r["gain_mapped_ci"][0],
                     "gain_ci_high": r["gain_mapped_ci"][1], "gain_mde": r["gain_mapped_mde"],
                     "gain_resolvable": bool(abs(r["gain_mapped"]) >= r["gain_mapped_mde"]), "rate": r["efficiency"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "defined": bool(r["defined"]),
                     "vector_stability": float(stability.get(key, float("nan"))),
                     "condition_accuracy": float(cond.get("condition_accuracy", float("nan"))),
                     "condition_ci_low": float(cond.get("condition_ci_low", float("nan"))),
                     "condition_ci_high": float(cond.get("condition_ci_high", float("nan"))),
                     "note": "; ".join(x for x in (note, best.note if len(costed) else "") if x)})
    result = pd.DataFrame(rows)
    if out is not None:
        write_table(result, out, metadata={"model": meta.get("model", ""), "steps": int(steps), "operator": main,
                                           "n_boot": n_boot, "confidence": confidence, "seed": seed})
    return result


# --------------------------------------------------------------------------------------------
# behaviour: the refusal split of the aligned, dealigned and steered dealigned model


def behaviour_recovery(answers: pd.DataFrame, aligned: dict, best_lam: float, *, confidence: float = 0.95) -> dict:
    """The behavioural dealignment drop and the share of it that steering recovers at ``best_lam``.

    Args:
        answers: one dealigned model's answer rows (``answer_rows``: ``lam``, ``safety_label``,
            ``refused``) along lambda; lambda 0 is the dealigned model unsteered.
        aligned: the aligned model's counts from phase 1's behaviour table (overall row:
            ``refused_unsafe``, ``n_unsafe``, ``refused_safe``, ``n_safe``).
        best_lam: the lambda the recovery is read at (the same-arch vector's best lambda).
        confidence: coverage; the MDEs use ``alpha = 1 − confidence`` and 80% power.

    Returns:
        ``aligned_split``, ``dealigned_split``, ``steered_split`` (refusal on unsafe − over-refusal
        on safe) with their Newcombe intervals; ``drop`` = aligned − dealigned with a MOVER interval
        (:func:`driftlib.stats.behaviour.split_difference_interval`), its Agresti-Caffo ``drop_se``, ``drop_mde`` and ``drop_resolvable``;
        ``gain`` = steered − dealigned with ``gain_se``; ``share`` = gain / drop with its Fieller
        interval and ``defined``/``note`` (:func:`driftlib.stats.gap.gap_share`: undefined when the
        drop is below its MDE). Aligned and dealigned answers are treated as independent samples
        (they answer the same prompts, so this is conservative when their verdicts correlate).
    """
    from driftlib.stats.behaviour import refusal_split, split_difference_interval, split_from_counts
    from driftlib.stats.gap import gap_share
    from driftlib.stats.power import minimum_detectable_effect

    lams = answers["lam"].astype(float)
    if not (lams == 0.0).any() or not (lams == float(best_lam)).any():
        raise ArtifactError(f"the answers hold lambdas {sorted(set(lams))}, not 0 and the best lambda {best_lam}; "
                            "re-run recovery_sweep")

    def at(lam: float) -> dict:
        rows = answers[lams == lam]
        return refusal_split(rows["refused"].to_numpy(bool), (rows["safety_label"] == "unsafe").to_numpy(), confidence)

    a = split_from_counts(int(aligned["refused_unsafe"]), int(aligned["n_unsafe"]), int(aligned["refused_safe"]),
                          int(aligned["n_safe"]), confidence)
    d0, s = at(0.0), at(float(best_lam))
    drop, (lo, hi) = a["split"] - d0["split"], split_difference_interval(a, d0)
    drop_se = math.hypot(a["se"], d0["se"])
    mde = minimum_detectable_effect(drop_se, alpha=1 - confidence) if np.isfinite(drop_se) else float("nan")
    gain, gain_se = s["split"] - d0["split"], math.hypot(s["se"], d0["se"])
    share = gap_share(gain, gain_se, drop, drop_se, confidence=confidence)
    note = share.note.replace("aligned and base do not differ", "aligned and dealigned do not differ")
    return {"aligned_split": a["split"], "aligned_ci_low": a["ci_low"], "aligned_ci_high": a["ci_high"],
            "dealigned_split": d0["split"], "dealigned_ci_low": d0["ci_low"], "dealigned_ci_high": d0["ci_high"],
            "drop": drop, "drop_ci_low": lo, "drop_ci_high": hi, "drop_se": drop_se, "drop_mde": mde,
            "drop_resolvable": bool(abs(drop) >= mde) if np.isfinite(mde) else False,
            "lam": float(best_lam), "steered_split": s["split"], "steered_ci_low": s["ci_low"],
            "steered_ci_high": s["ci_high"], "gain": gain, "gain_se": gain_se, "share": share.share,
            "share_ci_low": share.ci_low, "share_ci_high": share.ci_high, "defined": share.defined, "note": note}


__all__ = ["behaviour_recovery", "evaluate_recovery", "recovery_key", "recovery_note", "recovery_rate"]
