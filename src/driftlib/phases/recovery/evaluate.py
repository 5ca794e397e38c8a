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
"""

from __future__ import annotations

import math
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


def evaluate_recovery(sweep: str | Path, sweep_aqi: str | Path, cost: str | Path, aligned: str | Path,
                      prompts: str | Path, *, steps: int, max_kl: float, max_repetition_increase: float,
                      method: str = "standardize", n_components: int | None = 32, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """Recovery of one dealigned model (one strength) by each swept vector, with intervals.

    ``aligned``: the aligned model's phase-1 hidden states (``extract_prompts``), read at the
    primary measurement layer of the sweep. The same-arch and cross-arch vectors are taken at their
    best lambda inside the capability-cost bound; the random control at its highest AQI.
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
    h0 = states_at(arrays, "same_arch", lambdas, 0.0, 0, sweep)
    rows = []
    for vector in meta["vectors"]:
        costed = costs[costs["vector"] == vector]
        best = best_in_bound(overall_curve(table, vector), costed if len(costed) else None, max_kl, max_repetition_increase)
        lam = best.lam if best.lam is not None else 0.0
        h = states_at(arrays, vector, lambdas, lam, 0, sweep)
        r = transfer_efficiency(h0, h, h_aligned, y, method=method, n_components=n_components,
                                n_boot=n_boot, confidence=confidence, seed=seed)
        note = recovery_note(r, confidence)
        rows.append({"model": meta.get("model", ""), "steps": int(steps), "vector": vector,
                     "operator": meta.get("operator", "add"),
                     "source": meta.get("sources", {}).get(vector, ""), "lam": float(lam), "layer": layer,
                     "drop": r["gain_own"], "drop_ci_low": r["gain_own_ci"][0], "drop_ci_high": r["gain_own_ci"][1],
                     "gain": r["gain_mapped"], "gain_ci_low": r["gain_mapped_ci"][0],
                     "gain_ci_high": r["gain_mapped_ci"][1], "rate": r["efficiency"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "defined": bool(r["defined"]),
                     "note": "; ".join(x for x in (note, best.note if len(costed) else "") if x)})
    result = pd.DataFrame(rows)
    if out is not None:
        write_table(result, out, metadata={"model": meta.get("model", ""), "steps": int(steps), "n_boot": n_boot,
                                           "confidence": confidence, "seed": seed})
    return result


__all__ = ["evaluate_recovery", "recovery_note", "recovery_rate"]
